"""Generate scripted demonstrations: OUT/<task>/{train,test}/<traj>/<i>.png + OUT/<task>/metadata.json.

    python scripts/generate_expert_demos.py --tasks drawer-open door-open --num_train 50 --num_test 10 --out data/mw_demos --seed 0

Each task's frames (image size, episode length, action repeat, render quality), seed and counts default
to its DrM config (DrM/cfgs/task/<task>.yaml over the defaults of drm/schema.py), so that train_mw.py
takes the demos as they are; a flag given replaces the setting for every task.
Re-running the same command resumes: finished trajectories are kept, missing ones are added.
Non-expert data for evaluating a reward model: ``--noise 0.5`` (Gaussian action noise on the
expert) or ``--policy random``; these keep unsuccessful episodes, marked in metadata.json.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import NamedTuple

from drm.demos import POLICIES, DemoSettings, generate_demos
from drm.envs import ML45_TEST_TASKS, ML45_TRAIN_TASKS, MW_TASKS, PAPER_TASKS, RENDER_QUALITIES, TASKS, canonical_task
from video2reward.errors import one_line_errors
from video2reward.flags import check_at_least


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS),
                   help="task names (drawer-open; -v3 accepted), 'all' for the 50 Meta-World tasks, "
                        "'ml45-train' / 'ml45-test' for Meta-World's ML45 split (45 / 5 tasks), "
                        "toy-reach for the toy task; default: the paper's six")
    p.add_argument("--num_train", type=int, help="trajectories per task in train/ (default: demos.num_train)")
    p.add_argument("--num_test", type=int, help="trajectories per task in test/ (default: demos.num_test)")
    p.add_argument("--out", required=True, help="output root folder")
    p.add_argument("--seed", type=int,
                   help="base seed (>= 0); trajectory seeds derive from it (default: demos.seed)")
    p.add_argument("--policy", choices=POLICIES, default="expert",
                   help="scripted expert or uniform random actions")
    p.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on the expert's actions")
    p.add_argument("--keep_failures", action="store_true", default=None,
                   help="keep unsuccessful expert episodes instead of trying new seeds "
                        "(default: demos.keep_failures)")
    p.add_argument("--max_attempts", type=int, default=10,
                   help="seeds tried per trajectory before giving up on a successful expert episode")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--image_size", type=int, help="frame height and width in pixels (default: the task's)")
    p.add_argument("--episode_length", type=int, help="agent steps per trajectory (default: the task's)")
    p.add_argument("--action_repeat", type=int, help="env steps per agent step (default: the task's)")
    p.add_argument("--render_quality", choices=RENDER_QUALITIES,
                   help="fast: no shadows / MSAA (several times faster on CPU); RL must use the same "
                        "(default: the task's)")
    args = p.parse_args(argv)
    check_at_least(p, args, dict(num_train=1, num_test=0, max_attempts=1, workers=1, image_size=8, episode_length=1,
                                 action_repeat=1))
    groups = {"all": MW_TASKS, "ml45-train": ML45_TRAIN_TASKS, "ml45-test": ML45_TEST_TASKS}
    args.tasks = [t for name in args.tasks for t in groups.get(name, (name,))]
    try:
        args.tasks = [canonical_task(t, TASKS) for t in args.tasks]
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    """Errors end the script with one line (``PROGRESSOR_DEBUG=1``: with the traceback)."""
    args = parse_args(argv)
    with one_line_errors():
        return generate(args)


class Request(NamedTuple):
    """What to generate for a group of tasks."""

    settings: DemoSettings
    num_train: int
    num_test: int


SETTING_FLAGS = ("seed", "keep_failures", "image_size", "episode_length", "action_repeat", "render_quality")


def requests(args: argparse.Namespace) -> dict[Request, list[str]]:
    """The tasks of ``args`` grouped by what to generate for them: each task's DrM config (as
    ``train_mw.py task=<task>`` composes it), with the flags given in its place."""
    from drm.config import compose_config  # hydra and torch: not for the worker processes, which import this file

    given = {k: getattr(args, k) for k in SETTING_FLAGS if getattr(args, k) is not None}
    groups: dict[Request, list[str]] = {}
    for task in args.tasks:
        cfg = compose_config(f"task={task}")
        settings = DemoSettings.from_config(cfg, policy=args.policy, noise=args.noise, **given)
        request = Request(settings, cfg.demos.num_train if args.num_train is None else args.num_train,
                          cfg.demos.num_test if args.num_test is None else args.num_test)
        groups.setdefault(request, []).append(task)
    return groups


def generate(args: argparse.Namespace) -> int:
    metas = {}
    for request, tasks in requests(args).items():
        metas.update(generate_demos(args.out, tasks, num_train=request.num_train, num_test=request.num_test,
                                    settings=request.settings, workers=args.workers, max_attempts=args.max_attempts))
    for task, meta in metas.items():
        print(f"{task}: {meta['num_trajectories']} trajectories, {meta['num_success']} successful "
              f"-> {os.path.join(args.out, task)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

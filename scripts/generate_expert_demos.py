"""Generate scripted demonstrations: OUT/<task>/{train,test}/<traj>/<i>.png + OUT/<task>/metadata.json.

    python scripts/generate_expert_demos.py --tasks drawer-open door-open --num_train 50 --num_test 10 --out data/mw_demos --seed 0

Re-running the same command resumes: finished trajectories are kept, missing ones are added.
Non-expert data for evaluating a reward model: ``--noise 0.5`` (Gaussian action noise on the
expert) or ``--policy random``; these keep unsuccessful episodes, marked in metadata.json.
"""
from __future__ import annotations

import argparse
import os
import sys

from drm.demos import POLICIES, DemoSettings, generate_demos
from drm.envs import ML45_TEST_TASKS, ML45_TRAIN_TASKS, MW_TASKS, PAPER_TASKS, RENDER_QUALITIES, TASKS, canonical_task
from video2reward.errors import one_line_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS),
                   help="task names (drawer-open; -v3 accepted), 'all' for the 50 Meta-World tasks, "
                        "'ml45-train' / 'ml45-test' for Meta-World's ML45 split (45 / 5 tasks), "
                        "toy-reach for the toy task; default: the paper's six")
    p.add_argument("--num_train", type=int, default=50, help="trajectories per task in train/")
    p.add_argument("--num_test", type=int, default=10, help="trajectories per task in test/")
    p.add_argument("--out", required=True, help="output root folder")
    p.add_argument("--seed", type=int, default=0, help="base seed (>= 0); trajectory seeds derive from it")
    p.add_argument("--policy", choices=POLICIES, default="expert",
                   help="scripted expert or uniform random actions")
    p.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on the expert's actions")
    p.add_argument("--keep_failures", action="store_true",
                   help="keep unsuccessful expert episodes instead of trying new seeds")
    p.add_argument("--max_attempts", type=int, default=10,
                   help="seeds tried per trajectory before giving up on a successful expert episode")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--image_size", type=int, default=84, help="frame height and width in pixels")
    p.add_argument("--episode_length", type=int, default=100, help="agent steps per trajectory")
    p.add_argument("--action_repeat", type=int, default=2, help="env steps per agent step")
    p.add_argument("--render_quality", choices=RENDER_QUALITIES, default="fast",
                   help="fast: no shadows / MSAA (several times faster on CPU); RL must use the same")
    args = p.parse_args(argv)
    for name, low in (("num_train", 1), ("num_test", 0), ("max_attempts", 1), ("workers", 1), ("image_size", 8),
                      ("episode_length", 1), ("action_repeat", 1)):
        if getattr(args, name) < low:
            p.error(f"--{name} must be >= {low}, got {getattr(args, name)}")
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


def generate(args: argparse.Namespace) -> int:
    settings = DemoSettings(seed=args.seed, policy=args.policy, noise=args.noise,
                            keep_failures=args.keep_failures, image_size=args.image_size,
                            episode_length=args.episode_length, action_repeat=args.action_repeat,
                            render_quality=args.render_quality)
    metas = generate_demos(args.out, args.tasks, num_train=args.num_train, num_test=args.num_test,
                           settings=settings, workers=args.workers, max_attempts=args.max_attempts)
    for task, meta in metas.items():
        print(f"{task}: {meta['num_trajectories']} trajectories, {meta['num_success']} successful "
              f"-> {os.path.join(args.out, task)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

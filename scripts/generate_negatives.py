"""Generate PROGRESSOR's pretraining negatives: NEG/<kind>/<task>/train/<i>/<t>.png + metadata.json.

    python scripts/generate_negatives.py --out NEG --tasks plate-slide door-open --num 20 --seed 0
    python Video2Reward/main_ours.py --data_path DEMOS --negatives NEG ...

The kinds are the evaluation suite's rollout groups (parked, random, noise-1.0, noise-0.3; the
metadata records each one's policy), rolled out from the demos' *train* placements: rollout ``i``
starts where expert demo ``i`` of the same ``--seed`` starts (its first attempt), and the
evaluation's test placements are never used. Rewound and reversed expert videos and another task's
video are made at sampling time, not stored. Re-running the same command resumes.
"""
from __future__ import annotations

import argparse
import os
import sys

from drm.demos import DemoSettings
from drm.envs import PAPER_TASKS, RENDER_QUALITIES, TASKS, canonical_task
from drm.lab.eval_data import generate_eval_sets
from video2reward.errors import one_line_errors
from video2reward.flags import check_at_least
from video2reward.negatives import STORED_KINDS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output root folder")
    p.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS), help="task names (default: the paper's six)")
    p.add_argument("--num", type=int, default=20, help="rollouts per kind and task (default 20)")
    p.add_argument("--kinds", nargs="+", choices=STORED_KINDS, default=list(STORED_KINDS),
                   help=f"which kinds (default: all, {' '.join(STORED_KINDS)})")
    p.add_argument("--seed", type=int, default=0, help="the demos' base seed: the placements are its train ones")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--image_size", type=int, default=84, help="frame height and width in pixels")
    p.add_argument("--episode_length", type=int, default=100, help="agent steps per trajectory")
    p.add_argument("--action_repeat", type=int, default=2, help="env steps per agent step")
    p.add_argument("--render_quality", choices=RENDER_QUALITIES, default="fast", help="as the demos'")
    args = p.parse_args(argv)
    check_at_least(p, args, dict(num=1, workers=1, image_size=8, episode_length=1, action_repeat=1))
    try:
        args.tasks = list(dict.fromkeys(canonical_task(t, TASKS) for t in args.tasks))
    except ValueError as e:
        p.error(f"--tasks: {e}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Errors end the script with one line (``PROGRESSOR_DEBUG=1``: with the traceback)."""
    args = parse_args(argv)
    with one_line_errors():
        settings = DemoSettings(seed=args.seed, image_size=args.image_size, episode_length=args.episode_length,
                                action_repeat=args.action_repeat, render_quality=args.render_quality)
        generate_eval_sets(args.out, args.tasks, [], args.num, settings, workers=args.workers, groups=args.kinds,
                           split="train")
        print(f"negatives in {args.out}: {', '.join(args.kinds)} x {len(args.tasks)} task(s) x {args.num}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

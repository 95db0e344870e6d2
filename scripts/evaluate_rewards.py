"""Evaluate reward models side by side: VOC, success detection, ranking, unseen tasks, OOD, confusion.

    python scripts/evaluate_rewards.py --checkpoints A.pth [B.pth | RUN_DIR ...] --eval_data DIR --out OUT \
        [--tasks ...] [--unseen_tasks ...] [--num_per_set 20] [--seed 0]

Rollout sets missing from DIR are generated first with the scripted experts (seeded, resumable,
rendered like the checkpoints' training data; see docs/evaluation.md). An RL run directory
(holding snapshot.pt) adds its refined reward model and the checkpoint it started from. Writes
OUT/metrics.json, OUT/report.md and plots.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from drm.envs import PAPER_TASKS, RENDER_QUALITIES, TASKS, canonical_task
from drm.lab.eval_data import ML45_TEST_TASKS, generate_eval_sets
from drm.lab.eval_suite import compute_metrics, load_models, pooled_table, resolve_settings, score, write_report
from video2reward.errors import one_line_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", required=True,
                   help="reward checkpoints (any format load_reward_model reads) and/or RL run directories")
    p.add_argument("--eval_data", required=True, help="folder of rollout sets; missing ones are generated")
    p.add_argument("--out", required=True, help="output folder: metrics.json, report.md, plots")
    p.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS), help="tasks with every rollout group (parked, random, noise-1.0, noise-0.3, expert)")
    p.add_argument("--unseen_tasks", nargs="*", default=list(ML45_TEST_TASKS),
                   help="tasks scored on expert rollouts only (unseen_voc); give the flag alone for none")
    p.add_argument("--num_per_set", type=int, default=20, help="rollouts per task and group")
    p.add_argument("--seed", type=int, default=0, help="base seed of the rollouts' placements and noise")
    p.add_argument("--image_size", type=int, default=None,
                   help="frame size of generated rollouts (default: the existing sets', else the largest of the "
                        "models' and their training data's; each model gets them resized to its input)")
    p.add_argument("--episode_length", type=int, default=None,
                   help="agent steps (default: the training data's, else 100)")
    p.add_argument("--action_repeat", type=int, default=None,
                   help="env steps per agent step (default: as trained, else 2)")
    p.add_argument("--render_quality", choices=RENDER_QUALITIES, default=None,
                   help="default: the training data's, else fast")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="generation processes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch_size", type=int, default=256, help="frames per encoder call")
    args = p.parse_args(argv)
    if args.num_per_set < 2:
        p.error(f"--num_per_set must be >= 2, got {args.num_per_set}")
    try:
        args.tasks = list(dict.fromkeys(canonical_task(t, TASKS) for t in args.tasks))
        args.unseen_tasks = [t for t in dict.fromkeys(canonical_task(t, TASKS) for t in args.unseen_tasks)
                             if t not in args.tasks]
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    """Errors end the script with one line (``PROGRESSOR_DEBUG=1``: with the traceback)."""
    args = parse_args(argv)
    with one_line_errors():
        return run(args)


def run(args: argparse.Namespace) -> int:
    root, out = Path(args.eval_data), Path(args.out)
    entries = load_models(args.checkpoints, args.device)
    requested = {k: getattr(args, k) for k in ("image_size", "episode_length", "action_repeat", "render_quality")}
    settings = resolve_settings(entries, requested, root, args.seed, args.tasks[0])
    generate_eval_sets(root, args.tasks, args.unseen_tasks, args.num_per_set, settings, workers=args.workers)
    all_scores = score(entries, root, args.tasks, args.unseen_tasks, args.num_per_set, args.batch_size)
    frames = {k: getattr(settings, k) for k in requested}
    results = {
        "eval_data": {"path": str(root), "tasks": args.tasks, "unseen_tasks": args.unseen_tasks,
                      "num_per_set": args.num_per_set, "seed": args.seed, "settings": frames},
        "models": {e.name: {"source": e.source, "trained_from": e.trained_from,
                            **compute_metrics(all_scores[e.name], args.tasks, args.unseen_tasks)}
                   for e in entries},
    }
    write_report(out, results, all_scores)
    print("\n".join(pooled_table(results)))
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'} and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())

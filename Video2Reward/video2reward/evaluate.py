"""Evaluate a reward model on held-out trajectories (PROGRESSOR §2.3), from the command line:

``python -m video2reward.evaluate --checkpoint C --data_path D [--split test] --output_dir O``

The evaluation itself is :mod:`video2reward.evaluation` (re-exported here).
"""
from __future__ import annotations

import argparse
from typing import Any

from .checkpoint import load_reward_model
from .data import load_dataset
from .evaluation import (Evaluation, evaluate, evaluation, format_table, plot_progress,  # noqa: F401  (where they were)
                         score_trajectory, write_evaluation)
from .metrics import rankdata, spearman  # noqa: F401  re-exported: their home is metrics.py


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="Evaluate a reward model (PROGRESSOR or a baseline) on held-out trajectories.")
    p.add_argument("--checkpoint", required=True, help="reward model file (any supported format) or hf:// URI")
    p.add_argument("--data_path", required=True, help="dataset root (see video2reward.data for layouts)")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--tasks", nargs="+", default=None, help="only these task folders")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--cache_dir", default=None, help="decoded-frame cache folder (default: <data_path>/.v2r_cache)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    model = load_reward_model(args.checkpoint, args.device)
    dataset = load_dataset(args.data_path, args.split, model.image_size, args.tasks, args.cache_dir)
    results = evaluate(model, dataset, progress=True)
    write_evaluation(results, args.output_dir, checkpoint=str(args.checkpoint), split=args.split)
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()


__all__ = ["Evaluation", "evaluate", "evaluation", "format_table", "main", "plot_progress", "rankdata", "score_trajectory",
           "spearman", "write_evaluation"]

"""The command line of ``Video2Reward/decompose.py``: UVD subgoals of a demo folder or video
(:mod:`video2reward.uvd` does the decomposition)."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checkpoint import load_reward_model
from .data import IMAGE_EXTENSIONS, discover_trajectories
from .errors import one_line_errors
from .flags import check_at_least
from .io import atomic_write_json
from .scoring import add_encoding_flags, device_of, iter_frames
from .uvd import add_uvd_flags, config_from_args, decompose, write_decomposition


def _videos(data: Path, split: str, tasks: Sequence[str] | None) -> list[tuple[str, Path]]:
    """``(name, video file or frame folder)`` of every trajectory ``data`` holds (itself if it is one)."""
    if data.is_file() or (data.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in data.iterdir())):
        return [(data.stem if data.is_file() else data.name, data)]
    return [(s.name, s.paths[0] if s.is_video else s.paths[0].parent)
            for s in discover_trajectories(data, split, tasks)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decompose.py", description="UVD: subgoals of demonstrations found by a "
                                     "reward model's frozen frame embedding (docs/baselines.md, section UVD).")
    parser.add_argument("--checkpoint", required=True, help="reward model whose encode() is the embedding: a .pth "
                        "file of any method, or hf://<owner>/<repo>[@rev]/<file>")
    parser.add_argument("--data", required=True, help="a demo folder (<task>/<split>/<traj>/<i>.png or any layout "
                        "of video2reward.data), or one video file / frame folder")
    parser.add_argument("--out", required=True, help="output folder: <trajectory>/subgoals.{json,png}, "
                        "<trajectory>/distance.png and subgoals.json (all trajectories)")
    parser.add_argument("--split", default="test", help="which split of a demo folder (default test)")
    parser.add_argument("--tasks", nargs="+", default=None, help="task folders of a demo folder (default all)")
    parser.add_argument("--max_trajectories", type=int, default=None, help="at most this many per run")
    add_uvd_flags(parser)
    add_encoding_flags(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``Video2Reward/decompose.py``; errors are one line (:mod:`video2reward.errors`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_at_least(parser, args, {"batch_size": 1})
    with one_line_errors():
        config = config_from_args(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        model = load_reward_model(args.checkpoint, device=device_of(args.device))
        videos = _videos(Path(args.data).expanduser(), args.split, args.tasks)[:args.max_trajectories]
        out, summary = Path(args.out), {}
        for name, source in videos:
            frames = torch.from_numpy(np.stack(list(iter_frames(source, model.image_size))))
            decomposition = decompose(model, frames, config, args.batch_size)
            write_decomposition(out / name, frames, decomposition, name=name, source=str(source),
                                checkpoint=str(args.checkpoint))
            summary[name] = list(decomposition.subgoals)
            print(f"{name}: {len(frames)} frames -> subgoals {list(decomposition.subgoals)}", flush=True)
        atomic_write_json(out / "subgoals.json", {"checkpoint": str(args.checkpoint),
                                                  "config": dataclasses.asdict(config), "subgoals": summary})
        print(f"{len(summary)} trajectories decomposed; wrote {out}")
    return 0


__all__ = ["build_parser", "main"]

"""Replay persistence cost: the whole buffer in every snapshot (``state_dict``) against the
append-only segments of ``ReplayBuffer.save``.

    python scripts/measure_snapshot.py --transitions 100000 --more 25000 --out /tmp/snap

Fills a buffer with ``--transitions`` transitions of ``--size`` px frames (100-step episodes), then
saves it both ways, adds ``--more`` transitions (the default ``snapshot_every_frames=50000`` at
``action_repeat=2``) and saves again. Prints bytes written and seconds per snapshot.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from drm.replay_buffer import ReplayBuffer
from video2reward.io import atomic_torch_save


def fill(buffer: ReplayBuffer, transitions: int, size: int, episode_length: int = 100) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (3, size, size), dtype=np.uint8)  # content does not matter
    action = np.zeros(4, np.float32)
    for _ in range(transitions // episode_length):
        buffer.add_first(frame, goal_frame=frame)
        for t in range(episode_length):
            buffer.add(action, frame, 0.0, False, last=t == episode_length - 1)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transitions", type=int, default=100_000)
    p.add_argument("--more", type=int, default=25_000, help="transitions collected before the next snapshot")
    p.add_argument("--size", type=int, default=84)
    p.add_argument("--out", type=Path, required=True, help="scratch folder (deleted at the end)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    buffer = ReplayBuffer(2 * (args.transitions + args.more), (3, args.size, args.size), (4,))
    fill(buffer, args.transitions, args.size)
    segments = args.out / "replay"
    for snapshot in range(2):
        if snapshot:
            fill(buffer, args.more, args.size)
        label = f"snapshot {snapshot + 1} at {len(buffer)} transitions"
        start = time.perf_counter()
        atomic_torch_save(buffer.state_dict(), args.out / "whole.pt")
        whole_s, whole_b = time.perf_counter() - start, (args.out / "whole.pt").stat().st_size
        before = folder_bytes(segments) if segments.exists() else 0
        start = time.perf_counter()
        state = buffer.save(segments)
        atomic_torch_save({"replay": state}, args.out / "snapshot.pt")
        ReplayBuffer.prune(segments, state)
        seg_s = time.perf_counter() - start
        seg_b = folder_bytes(segments) - before + (args.out / "snapshot.pt").stat().st_size
        print(f"{label}: whole buffer {whole_b / 2**20:8.1f} MiB in {whole_s:6.2f} s | "
              f"segments: wrote {seg_b / 2**20:8.1f} MiB in {seg_s:6.2f} s")
    shutil.rmtree(args.out)


if __name__ == "__main__":
    main()

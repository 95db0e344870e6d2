"""Run logging: ``train.csv`` / ``eval.csv`` (one row per log call), TensorBoard, a console line.

CSV files are appended row by row; a resumed run keeps the rows up to its snapshot's frame and
drops the rest, so the files never hold a frame twice.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Mapping

from torch.utils.tensorboard import SummaryWriter


class MeterGroup:
    """Running means of metrics between two log calls."""

    def __init__(self) -> None:
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)

    def update(self, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            self._sum[k] += float(v)
            self._count[k] += 1

    def pop(self) -> dict[str, float]:
        out = {k: self._sum[k] / self._count[k] for k in self._sum}
        self._sum.clear()
        self._count.clear()
        return out


class CSVLog:
    """A CSV file whose columns grow as new metrics appear (the file is rewritten then)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, float]] = []
        if path.exists():
            with path.open(newline="") as f:
                self.rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
        self.fields: list[str] = list(dict.fromkeys(k for row in self.rows for k in row))

    def truncate(self, max_frame: int) -> None:
        """Drop rows logged after ``max_frame`` (a resumed run replays them)."""
        self.rows = [r for r in self.rows if r.get("frame", 0) <= max_frame]
        self._rewrite()

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(self.rows)

    def append(self, row: Mapping[str, float]) -> None:
        row = {k: float(v) for k, v in row.items()}
        self.rows.append(row)
        new = [k for k in row if k not in self.fields]
        if new or not self.path.exists():
            self.fields += new
            self._rewrite()
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(row)


class Logger:
    """``log(kind, metrics, frame)`` with ``kind`` in {"train", "eval"}."""

    CONSOLE_KEYS = ("frame", "episode", "success_rate", "episode_reward", "episode_env_reward", "fps",
                    "critic_loss", "refine_expert_loss", "total_time")

    def __init__(self, run_dir: Path, use_tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.csv = {kind: CSVLog(self.run_dir / f"{kind}.csv") for kind in ("train", "eval")}
        self.writer = SummaryWriter(str(self.run_dir / "tb")) if use_tensorboard else None

    def truncate(self, max_frame: int) -> None:
        for log in self.csv.values():
            log.truncate(max_frame)

    def log(self, kind: str, metrics: Mapping[str, float], frame: int) -> None:
        row = {"frame": frame, **metrics}
        self.csv[kind].append(row)
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{kind}/{k}", v, frame)
        shown = " | ".join(f"{k}: {row[k]:.4g}" for k in self.CONSOLE_KEYS if k in row)
        print(f"[{kind}] {shown}", flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

"""The learning-curve PNG of a run: eval success rate, PROGRESSOR reward and env reward vs frames."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from video2reward.io import save_figure  # noqa: E402

PANELS = (("success_rate", "eval success rate"), ("episode_reward", "learner reward / episode"),
          ("episode_env_reward", "env reward / episode"))


def read_csv(path: Path) -> list[dict[str, float]]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def plot_learning_curve(run_dir: Path, title: str = "") -> Path | None:
    """Write ``run_dir/learning_curve.png`` from ``eval.csv`` (and ``train.csv`` episode returns)."""
    run_dir = Path(run_dir)
    evals, train = read_csv(run_dir / "eval.csv"), read_csv(run_dir / "train.csv")
    if not evals and not train:
        return None
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for ax, (key, label) in zip(axes, PANELS):
        for rows, style, name in ((train, "-", "train"), (evals, "o-", "eval")):
            pts = [(r["frame"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), style, ms=3, lw=1.2, label=name, alpha=0.6 if name == "train" else 1.0)
        ax.set_xlabel("frames")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if key == "success_rate":
            ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, run_dir / "learning_curve.png", dpi=110, format="png")

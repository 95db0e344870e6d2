"""Evaluation of a reward model on held-out trajectories (PROGRESSOR §2.3): VOC and the progress plots.

For every trajectory the model scores each frame with the trajectory's own first frame as the
initial frame and its last frame as the goal (fixed endpoints); every frame is encoded once. A
progress model (PROGRESSOR: ``predict_from_features``) is scored by its ``mu``; any other model of
:mod:`video2reward.methods` by its per-frame value ``reward_from_features`` (for VIP, whose reward is
a difference of values, the value itself). Reported per task and overall:

* VOC, value-order correlation: Spearman correlation of ``mu`` (or the value) with the frame index,
  per trajectory, then averaged (1.0 = it rises monotonically);
* MAE (progress models only): mean ``|mu - t/(L-1)|`` (label = normalised time);
* curves: mean +- std over normalised time of ``mu`` and of the reward ``mu - alpha H`` (or of the
  value), plotted by :func:`plot_progress`.

``python -m video2reward.evaluate --checkpoint C --data_path D [--split test] --output_dir O``
writes ``O/metrics.json`` and ``O/progress.png``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from .progress import progress as tqdm

from .data import VideoDataset
from .io import atomic_write_json, save_figure
from .metrics import spearman
from .reward_fn import frame_reward

CURVE_POINTS = 101  # normalised-time grid of the progress curves


class Evaluation(NamedTuple):
    """What a model's :meth:`~PretrainedModel.evaluate` gives the pretraining loop."""

    metrics: dict[str, float]  # eval_log.csv / TensorBoard; keys with "/" (per task) are not printed
    provenance: dict[str, Any]  # recorded in the checkpoint's provenance after the final evaluation
    table: str  # printed after the final evaluation


def score_trajectory(model: Any, frames: torch.Tensor, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per-frame scores ``(L,)`` of a trajectory with init = frame 0 and goal = the last frame, from
    the reward interface (every frame encoded once): ``mu`` and ``reward`` (``mu - alpha H``) for a
    progress model, ``value`` for the others. The first entry is the one VOC is computed on."""
    scores = frame_reward(model).score_trajectory(frames, batch_size=batch_size)
    if scores.progress is None:
        return {"value": scores.value}
    return {"mu": scores.progress, "reward": scores.reward}


def _curve(values: list[np.ndarray]) -> tuple[list[float], list[float]]:
    grid = np.linspace(0, 1, CURVE_POINTS)
    stacked = np.stack([np.interp(grid, np.linspace(0, 1, len(v)), v) for v in values])
    return stacked.mean(0).tolist(), stacked.std(0).tolist()


def evaluate(model: Any, dataset: VideoDataset, batch_size: int = 256,
             max_trajectories_per_task: int | None = None, progress: bool = False) -> dict[str, Any]:
    """VOC, MAE and progress curves of ``model`` on ``dataset`` (see module doc).

    Returns ``{"overall": {...}, "tasks": {task: {...}}, "trajectories": [...], "curves": {task: {...}}}``
    (+ ``"alpha"`` for a progress model); the summaries hold ``voc`` (mean over trajectories),
    ``voc_std``, ``voc_min``, ``mae`` (progress models) and ``num_trajectories``; a task's curves hold
    ``time`` and ``<score>_mean`` / ``<score>_std`` for each score of :func:`score_trajectory`. The
    model's training mode is restored afterwards.
    """
    per_task: dict[str, list[dict[str, Any]]] = {}
    curves_of: dict[str, dict[str, list[np.ndarray]]] = {}
    order = [i for i in range(len(dataset))]
    if max_trajectories_per_task is not None:
        seen: dict[str, int] = {}
        kept = []
        for i in order:
            task = dataset.task_names[dataset.task_ids[i]]
            if seen.get(task, 0) < max_trajectories_per_task:
                kept.append(i)
                seen[task] = seen.get(task, 0) + 1
        order = kept
    for i in tqdm(order, desc="evaluating", unit="traj", disable=not progress, dynamic_ncols=True):
        task = dataset.task_names[dataset.task_ids[i]]
        scores = score_trajectory(model, dataset.trajectory(i), batch_size)
        ranked = next(iter(scores.values()))
        time = np.arange(len(ranked)) / (len(ranked) - 1)
        row = {"name": dataset.names[i], "task": task, "voc": spearman(ranked, time)}
        if "mu" in scores:
            row["mae"] = float(np.abs(scores["mu"] - time).mean())
        per_task.setdefault(task, []).append({**row, "length": len(ranked)})
        for key, values in scores.items():
            curves_of.setdefault(task, {}).setdefault(key, []).append(values)

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        voc = np.array([r["voc"] for r in rows])
        out = {"voc": float(voc.mean()), "voc_std": float(voc.std()), "voc_min": float(voc.min())}
        if "mae" in rows[0]:
            out["mae"] = float(np.mean([r["mae"] for r in rows]))
        return {**out, "num_trajectories": len(rows)}

    curves = {}
    for task, by_score in curves_of.items():
        curves[task] = {"time": np.linspace(0, 1, CURVE_POINTS).tolist()}
        for key, values in by_score.items():
            curves[task][f"{key}_mean"], curves[task][f"{key}_std"] = _curve(values)
    rows = [r for task in per_task for r in per_task[task]]
    results = {"overall": summary(rows), "tasks": {t: summary(r) for t, r in sorted(per_task.items())},
               "trajectories": rows, "curves": curves}
    if model.predicts_progress:
        results["alpha"] = model.alpha
    return results


def plot_progress(results: dict[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """One panel per task: mean +- std of predicted ``mu`` and of the reward (or of the value)
    against normalised time, with the ideal diagonal for ``mu``; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["curves"])
    cols = min(3, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        c = results["curves"][task]
        t = np.asarray(c["time"])
        labels = {"mu": "mu (progress)", "reward": f"reward (alpha={results.get('alpha', 0):g})", "value": "value"}
        for color, key in zip(("C0", "C1"), [k for k in labels if f"{k}_mean" in c]):
            mean, std = np.asarray(c[f"{key}_mean"]), np.asarray(c[f"{key}_std"])
            ax.plot(t, mean, color=color, label=labels[key])
            ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.25)
        if "mu_mean" in c:
            ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="ideal")
        s = results["tasks"][task]
        ax.set_title(f"{task}  VOC {s['voc']:.3f}  (n={s['num_trajectories']})", fontsize=9)
        ax.set_xlabel("normalised time")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    overall = results["overall"]
    mae = f", MAE {overall['mae']:.3f}" if "mae" in overall else ""
    fig.suptitle(title or f"mean VOC {overall['voc']:.3f}{mae}", fontsize=10)
    return save_figure(fig, path, format="png", dpi=110)


def write_evaluation(results: dict[str, Any], output_dir: str | os.PathLike, **extra: Any) -> Path:
    """``metrics.json`` (summaries + per-trajectory rows, not the curves) and ``progress.png``."""
    out = Path(output_dir)
    metrics = {k: results[k] for k in ("overall", "tasks", "trajectories")}
    atomic_write_json(out / "metrics.json", {**metrics, **extra})
    plot_progress(results, out / "progress.png")
    return out / "metrics.json"


def evaluation(model: Any, dataset: VideoDataset, output_dir: str | os.PathLike | None = None,
               progress: bool = False, **extra: Any) -> Evaluation:
    """A reward model's evaluation for the pretraining loop (:meth:`RewardModel.evaluate`): VOC (and
    MAE) overall and per task; with ``output_dir`` also :func:`write_evaluation` there."""
    results = evaluate(model, dataset, progress=progress)
    metrics = {key: results["overall"][key] for key in ("voc", "mae") if key in results["overall"]}
    metrics.update({f"voc/{task}": s["voc"] for task, s in results["tasks"].items()})
    if output_dir is not None:
        write_evaluation(results, output_dir, **extra)
    return Evaluation(metrics, {"heldout_voc": float(results["overall"]["voc"])}, format_table(results))


def format_table(results: dict[str, Any]) -> str:
    """A plain-text per-task VOC / MAE table (no MAE column for value models)."""
    with_mae = "mae" in results["overall"]
    lines = [f"{'task':<20} {'n':>4} {'VOC':>7} {'VOC min':>8}" + (f" {'MAE':>7}" if with_mae else "")]
    for task, s in list(results["tasks"].items()) + [("overall", results["overall"])]:
        lines.append(f"{task:<20} {s['num_trajectories']:>4} {s['voc']:>7.4f} {s['voc_min']:>8.4f}"
                     + (f" {s['mae']:>7.4f}" if with_mae else ""))
    return "\n".join(lines)


__all__ = ["Evaluation", "score_trajectory", "evaluate", "plot_progress", "write_evaluation", "evaluation", "format_table"]

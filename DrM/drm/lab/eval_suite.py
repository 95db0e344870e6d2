"""The reward-model evaluation suite: models, scoring, metrics, report and plots (docs/evaluation.md).

``scripts/evaluate_rewards.py`` is the command; this module holds what it composes:

* :func:`load_models` reads reward checkpoints and RL run directories (the run's refined model next
  to the checkpoint it started from) and what each knows about its training frames;
* :func:`resolve_settings` picks the eval data's rendering from them, refusing mismatches;
* :func:`score` encodes every rollout's frames once per model and scores them against the goal
  image of their placement; :func:`compute_metrics` turns the scores into the metrics of
  :mod:`video2reward.metrics`; :func:`write_report` writes ``metrics.json``, ``report.md`` and plots.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from video2reward.progress import progress as tqdm

from video2reward import load_reward_model
from video2reward.methods import PROGRESSOR, build_model, method_class
from video2reward.reward_fn import frame_reward
from video2reward.checkpoint import load_state_dict_strict, read_checkpoint, read_provenance
from video2reward.data import load_dataset
from video2reward.io import atomic_write_json, atomic_write_text, save_figure
from video2reward import metrics as M

from drm.demos import RL_RELEVANT, DemoSettings, demo_env, read_metadata, settings_record
from drm.lab.eval_data import GROUPS, EvalDataError, QUALITY, SPLIT, existing_settings, load_records

SNAPSHOT = "snapshot.pt"  # an RL run directory's snapshot (drm.workspace)
FRAME_KEYS = ("image_size", "episode_length", "action_repeat", "render_quality")  # flags of the command
THRESHOLD = 0.5  # success_accuracy: final mu >= 0.5 predicts success


# ---- models ----------------------------------------------------------------------------------
@dataclass
class Entry:
    """One model of the comparison and what is known of the frames it was trained on."""

    name: str
    source: str
    model: Any  # a reward model of any method (video2reward.methods)
    trained_on: dict[str, Any] = field(default_factory=dict)  # recorded frame settings (may be empty)
    trained_from: str = "unknown"  # where ``trained_on`` was read


def _training_frames(path: Path) -> tuple[dict[str, Any], str]:
    """Settings of the demos a checkpoint was trained on: their ``metadata.json`` when the recorded
    data folder still exists, else DrM's request; ``({}, "unknown")`` without provenance."""
    prov = read_provenance(path) or {}
    data = Path(prov.get("data_path", "")) if prov.get("data_path") else None
    if data is not None:
        for task in prov.get("tasks", []):
            meta = read_metadata(data / task)
            if meta is not None:
                return meta, str(data / task / "metadata.json")
    request = prov.get("drm_request")
    if request:
        return {k: request[k] for k in ("render_quality", "episode_length", "action_repeat") if k in request}, \
            f"{path} (drm_request)"
    return {}, "unknown"


def _run_entries(run: Path, device: str) -> list[Entry]:
    """An RL run's refined reward model and the checkpoint it started from."""
    state = read_checkpoint(run / SNAPSHOT, what="snapshot")
    cfg = state.get("config", {})
    if "reward_model" not in state:
        raise EvalDataError(f"{run / SNAPSHOT}: the run has no reward model (reward_model={cfg.get('reward_model')!r})")
    rm = state["reward_model"]
    method = str(rm.get("method") or rm["config"].get("method") or PROGRESSOR)
    if not method_class(method).predicts_progress:
        raise EvalDataError(f"{run / SNAPSHOT}: the suite scores a predicted progress; runs with "
                            f"reward_model={cfg.get('reward_model')!r} are not supported yet")
    model = build_model(method, rm["config"])
    load_state_dict_strict(model, rm["state_dict"], str(run / SNAPSHOT))
    model.eval()
    run_frames = {k: cfg[k] for k in ("render_quality", "episode_length", "action_repeat", "image_size") if k in cfg}
    start = Path(str(cfg.get("reward", {}).get("checkpoint", ""))).expanduser()
    if not start.is_absolute() and not start.exists():
        start = run / start
    if not start.is_file():
        raise FileNotFoundError(f"{run}: the checkpoint the run started from (reward.checkpoint) is not found: {start}")
    trained, where = _training_frames(start)
    start_model = load_reward_model(start, device, alpha=model.alpha)  # the run's alpha for both
    return [Entry(f"{run.name}:start", str(start), start_model, trained, where),
            Entry(f"{run.name}:refined", str(run / SNAPSHOT), model.to(device), {**trained, **run_frames},
                  f"{run / SNAPSHOT} (config)")]


def load_models(sources: Sequence[str], device: str = "cpu") -> list[Entry]:
    """Reward checkpoints (any format ``load_reward_model`` reads) and RL run directories."""
    entries: list[Entry] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            if not (path / SNAPSHOT).is_file():
                raise FileNotFoundError(f"{path}: a directory given as a checkpoint must be an RL run with {SNAPSHOT}")
            entries += _run_entries(path, device)
        else:
            trained, where = _training_frames(path) if path.is_file() else ({}, "unknown")
            entries.append(Entry(path.stem, source, load_reward_model(source, device), trained, where))
    seen: set[str] = set()
    unique = []
    for e in entries:  # a start checkpoint also given on its own is evaluated once
        key = str(Path(e.source).resolve()) if Path(e.source).exists() else e.source
        if key not in seen:
            seen.add(key)
            unique.append(e)
    names = [e.name for e in unique]
    for e in unique:
        if names.count(e.name) > 1:
            e.name = f"{Path(e.source).parent.name}/{e.name}"
    return unique


def resolve_settings(entries: Sequence[Entry], requested: dict[str, Any], eval_data: Path, seed: int,
                     first_task: str) -> DemoSettings:
    """The eval data's rendering: each of ``FRAME_KEYS`` from the flag, else the models' training
    frames, else the sets already in ``eval_data``, else the demo defaults. The image size: the flag,
    else the existing sets', else the largest of the models' and their training frames'. Raises a
    one-line :class:`EvalDataError` when a model was trained on frames made otherwise."""
    existing = existing_settings(eval_data) or {}
    chosen: dict[str, Any] = {}
    for key in FRAME_KEYS:
        trained = [e.trained_on[key] for e in entries if key in e.trained_on]
        if requested.get(key) is not None:
            chosen[key] = requested[key]
        elif key == "image_size":  # any size works (each model resizes); the largest loses least
            chosen[key] = existing.get(key) or max(trained + [e.model.image_size for e in entries])
        elif trained:
            chosen[key] = trained[0]
        elif key in existing:
            chosen[key] = existing[key]
    settings = DemoSettings(seed=seed, **chosen)
    env = demo_env(first_task, settings)
    fresh = settings_record(settings, env)
    env.close()
    for e in entries:
        keys = [k for k in RL_RELEVANT if k in e.trained_on and k in fresh]
        diff = {k: (e.trained_on[k], fresh[k]) for k in keys if e.trained_on[k] != fresh[k]}
        if diff:
            raise EvalDataError(f"{e.name} was trained on frames made with other settings than the eval data "
                             f"(trained, eval): {diff} (from {e.trained_from}); pass matching --render_quality / "
                             f"--episode_length / --action_repeat and another --eval_data")
    return settings


# ---- scoring ---------------------------------------------------------------------------------
@dataclass
class Scored:
    """One rollout under one model, per frame ``(L,)``: ``mu`` is PROGRESSOR's progress, or a
    baseline's per-frame value (its own scale); ``sigma`` PROGRESSOR's std (zeros for baselines);
    ``reward`` the per-step reward (``mu - alpha H``; a baseline's value, or its change for VIP)."""

    group: str
    task: str
    index: int
    success: bool
    step_reward: np.ndarray  # (L - 1,) the env's dense reward per agent step
    mu: np.ndarray
    sigma: np.ndarray
    reward: np.ndarray  # mu - alpha H


@dataclass
class Scores:
    rollouts: list[Scored]
    confusion_tasks: list[str]
    confusion: np.ndarray  # (T, T): mean final mu of task-i expert rollouts under task-j goal images
    progress_scale: bool = True  # mu is progress in [0, 1] (PROGRESSOR); False: a baseline's own scale


def score(entries: Sequence[Entry], root: Path, tasks: Sequence[str], unseen: Sequence[str], num: int,
          batch_size: int = 256, progress: bool = True) -> dict[str, Scores]:
    """Every model's scores of every rollout; each trajectory is decoded once per image size (the
    frame cache of ``video2reward.data``) and encoded once per model."""
    wanted = [(g, t) for g in GROUPS for t in tasks] + [("expert", t) for t in unseen if t not in tasks]
    feats: dict[str, dict[tuple[str, str, int], torch.Tensor]] = {e.name: {} for e in entries}
    sizes = sorted({e.model.image_size for e in entries})
    total = len(wanted) * num * len(sizes)
    bar = tqdm(total=total, desc="encoding", unit="traj", disable=not progress)
    for group in GROUPS:
        group_tasks = sorted({t for g, t in wanted if g == group})
        if not group_tasks:
            continue
        for size in sizes:
            data = load_dataset(root / group, SPLIT, size, group_tasks, verbose=False)
            users = [e for e in entries if e.model.image_size == size]
            for i, name in enumerate(data.names):
                task, _, index = name.split("/")
                if int(index) >= num:
                    continue
                frames = data.trajectory(i)
                for e in users:
                    feats[e.name][(group, task, int(index))] = e.model.encode(frames, batch_size)
                bar.update()
    bar.close()
    records = {(g, t): load_records(root, g, t, num) for g, t in wanted}
    conf_tasks = list(dict.fromkeys([*tasks, *unseen]))
    out = {}
    for e in entries:
        f = feats[e.name]
        reward_fn = frame_reward(e.model)
        progress_scale = reward_fn.model.predicts_progress
        rollouts = []
        for (group, task), recs in records.items():
            for r in recs:
                fr, goal = f[(group, task, r.index)], f[("expert", task, r.index)][-1:]
                scores = reward_fn.score_features(fr[:1], fr, goal)
                rollouts.append(_scored(group, task, r, scores))
        experts = {t: [f[("expert", t, k)] for k in range(num)] for t in conf_tasks}
        out[e.name] = Scores(rollouts, conf_tasks, confusion_matrix(reward_fn, experts), progress_scale)
    return out


def _scored(group: str, task: str, record: Any, scores: Any) -> Scored:
    """A rollout's :class:`Scored` from a reward's :class:`~video2reward.reward_fn.TrajectoryScores`."""
    sigma = np.zeros_like(scores.value) if scores.sigma is None else scores.sigma
    return Scored(group, task, record.index, record.success, record.step_reward, scores.value, sigma, scores.reward)


def confusion_matrix(reward_fn: Any, experts: dict[str, list[torch.Tensor]]) -> np.ndarray:
    """``(T, T)``: entry ``[i, j]`` is the mean final mu (a baseline's value) of task i's expert
    rollouts (features ``(L, D)`` each) scored with init = their reset frame and goal = the goal image
    of task j's rollout with the same index (its expert's final frame)."""
    tasks = list(experts)
    conf = np.zeros((len(tasks), len(tasks)))
    for i, ti in enumerate(tasks):
        init = torch.cat([f[:1] for f in experts[ti]])
        final = torch.cat([f[-1:] for f in experts[ti]])
        for j, tj in enumerate(tasks):
            goal = torch.cat([f[-1:] for f in experts[tj]])
            scores = reward_fn.score_features(init, final, goal)
            conf[i, j] = float(scores.value.mean())
    return conf


# ---- metrics ---------------------------------------------------------------------------------
def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def _group_gap(rs: list[Scored], final: np.ndarray, better: str, worse: str) -> float:
    """Mean final mu of group ``better`` minus that of ``worse`` (where a ranking fails: the
    closest two groups)."""
    groups = np.array([r.group for r in rs])
    if not ((groups == better).any() and (groups == worse).any()):
        return float("nan")
    return float(final[groups == better].mean() - final[groups == worse].mean())


def _task_metrics(rs: list[Scored], progress_scale: bool = True) -> dict[str, Any]:
    """The metrics of one task's rollouts (or of all tasks' rollouts pooled). Without
    ``progress_scale`` (a baseline's values) the metrics that read mu as progress in [0, 1]
    (``success_accuracy``, ``succ_fail_diff``, ``ood_mu``) are left out (NaN)."""
    experts = [r for r in rs if r.group == "expert" and r.success]
    final = np.array([r.mu[-1] for r in rs])
    success = np.array([r.success for r in rs], dtype=bool)
    quality = np.array([QUALITY[r.group] for r in rs])
    def ood(group: str) -> float:  # mean mu over every frame of the group's rollouts
        mus = [r.mu for r in rs if r.group == group]
        return float(np.concatenate(mus).mean()) if mus else float("nan")

    dense = [M.spearman(r.reward[1:], r.step_reward) for r in rs if r.group != "expert"
             and np.ptp(r.reward[1:]) > 0 and np.ptp(r.step_reward) > 0]
    return {
        "voc": M.nanmean([M.voc(r.mu) for r in experts]),
        "voc_min": min((M.voc(r.mu) for r in experts), default=float("nan")),
        "voc_r": M.nanmean([M.voc_r(r.mu) for r in experts]),
        "success_auroc": M.auroc(final, success),
        "success_accuracy": M.accuracy_at(final, success, THRESHOLD),
        "ranking_tau": M.kendall_tau_a(quality, final),
        "ranking_tau_reward": M.kendall_tau_a(quality, np.array([r.reward[1:].sum() for r in rs])),
        "ranking_tau_max": M.kendall_tau_a(quality, quality),
        "succ_fail_diff": M.mean_difference(final, success),
        "ood_mu": ood("random"),
        "ood_mu_parked": ood("parked"),
        "expert_noise03_gap": _group_gap(rs, final, "expert", "noise-0.3"),
        "dense_alignment": M.nanmean(dense),
        **({} if progress_scale else dict.fromkeys(("success_accuracy", "succ_fail_diff", "ood_mu", "ood_mu_parked"),
                                                      float("nan"))),
        "num_rollouts": {g: sum(r.group == g for r in rs) for g in GROUPS},
        "num_success": {g: sum(r.group == g and r.success for r in rs) for g in GROUPS},
    }


def compute_metrics(scores: Scores, tasks: Sequence[str], unseen: Sequence[str]) -> dict[str, Any]:
    """Per-task, unseen-task and pooled values of every metric (docs/evaluation.md), JSON-ready."""
    seen = [r for r in scores.rollouts if r.task in tasks]
    per_task = {t: _task_metrics([r for r in seen if r.task == t], scores.progress_scale) for t in tasks}
    pooled = _task_metrics(seen, scores.progress_scale)
    for key in ("ranking_tau", "ranking_tau_reward", "ranking_tau_max"):  # a within-task ranking: mean of tasks
        pooled[key] = M.nanmean([per_task[t][key] for t in tasks])
    task_vocs = [per_task[t]["voc"] for t in tasks if math.isfinite(per_task[t]["voc"])]
    pooled["voc_worst_task"] = min(task_vocs, default=float("nan"))
    unseen_rows = {t: M.nanmean([M.voc(r.mu) for r in scores.rollouts
                                 if r.task == t and r.group == "expert" and r.success]) for t in unseen}
    pooled["unseen_voc"] = M.nanmean([M.voc(r.mu) for r in scores.rollouts
                                      if r.task in unseen and r.group == "expert" and r.success])
    gap = M.confusion_gap(scores.confusion)
    pooled.update({"confusion_diagonal": gap["diagonal"], "confusion_off_diagonal": gap["off_diagonal"],
                   "confusion_gap": gap["gap"]})

    def clean(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v if isinstance(v, dict) else _clean(v) for k, v in d.items()}

    return {"pooled": clean(pooled), "tasks": {t: clean(v) for t, v in per_task.items()},
            "unseen_voc": {t: _clean(v) for t, v in unseen_rows.items()},
            "confusion": {"tasks": scores.confusion_tasks, "matrix": np.round(scores.confusion, 6).tolist(),
                          **{k: _clean(v) for k, v in gap.items()}}}


# ---- report and plots ------------------------------------------------------------------------
POOLED_ROWS = ("voc", "voc_worst_task", "voc_r", "unseen_voc", "success_auroc", "success_accuracy", "ranking_tau",
               "ranking_tau_reward", "ranking_tau_max", "expert_noise03_gap", "succ_fail_diff", "ood_mu",
               "ood_mu_parked", "dense_alignment", "confusion_diagonal", "confusion_off_diagonal", "confusion_gap")
TASK_ROWS = ("voc", "voc_r", "success_auroc", "success_accuracy", "ranking_tau", "succ_fail_diff", "ood_mu",
             "ood_mu_parked", "dense_alignment")


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def pooled_table(results: dict[str, Any]) -> list[str]:
    """The pooled metrics as markdown table lines, one column per model."""
    models = list(results["models"])
    return _table(["metric", *models], [[k, *(_fmt(results["models"][m]["pooled"].get(k)) for m in models)]
                                        for k in POOLED_ROWS])


def format_report(results: dict[str, Any]) -> str:
    """``report.md``: the pooled table and per-task tables, models side by side."""
    models = list(results["models"])
    info = results["eval_data"]
    lines = ["# Reward-model evaluation", "",
             f"Eval data `{info['path']}`: tasks {', '.join(info['tasks'])}; unseen "
             f"{', '.join(info['unseen_tasks']) or 'none'}; {info['num_per_set']} rollouts per set, seed "
             f"{info['seed']}; frames {info['settings']}.", "",
             *(f"- `{m}`: {results['models'][m]['source']} (trained on: {results['models'][m]['trained_from']})"
               for m in models), "", "## Pooled", ""]
    lines += pooled_table(results)
    lines += ["", "`ranking_tau` is Kendall tau-a (tied pairs stay in the denominator); `ranking_tau_max` is the "
              "tau-a of the quality order with itself, the most it can reach with these group sizes.", ""]
    tasks = info["tasks"]
    for key in TASK_ROWS:
        lines += [f"## {key} per task", ""]
        lines += _table(["task", *models], [[t, *(_fmt(results["models"][m]["tasks"][t][key]) for m in models)]
                                            for t in tasks])
        lines.append("")
    if info["unseen_tasks"]:
        lines += ["## unseen_voc per task", ""]
        lines += _table(["task", *models], [[t, *(_fmt(results["models"][m]["unseen_voc"][t]) for m in models)]
                                            for t in info["unseen_tasks"]])
        lines.append("")
    lines += ["Plots: `progress_<model>.png` (mean ± std of mu per rollout group), `roc.png`, "
              "`confusion_<model>.png`.", ""]
    return "\n".join(lines)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_progress_groups(scores: Scores, path: Path, title: str) -> None:
    """One panel per task: mean ± std of mu against normalised time, one line per rollout group."""
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in scores.rollouts))
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    grid = np.linspace(0, 1, 101)
    for ax, task in zip(axes.flat, tasks):
        for n, group in enumerate(reversed(GROUPS)):
            mus = [r.mu for r in scores.rollouts if r.task == task and r.group == group]
            if not mus:
                continue
            curves = np.stack([np.interp(grid, np.linspace(0, 1, len(m)), m) for m in mus])
            mean, std = curves.mean(0), curves.std(0)
            ax.plot(grid, mean, color=f"C{n}", label=f"{group} ({len(mus)})")
            ax.fill_between(grid, mean - std, mean + std, color=f"C{n}", alpha=0.2)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("normalised time")
        ax.set_ylabel("mu")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, format="png", dpi=100)


def plot_roc(all_scores: dict[str, Scores], tasks: Sequence[str], path: Path) -> None:
    """ROC of final mu against env success: pooled and per task, one line per model."""
    import matplotlib.pyplot as plt

    panels = ["pooled", *tasks]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for n, (name, s) in enumerate(all_scores.items()):
            rs = [r for r in s.rollouts if r.task in tasks and (panel == "pooled" or r.task == panel)]
            final, ok = np.array([r.mu[-1] for r in rs]), np.array([r.success for r in rs])
            fpr, tpr = M.roc_curve(final, ok)
            if len(fpr):
                ax.plot(fpr, tpr, color=f"C{n}", label=f"{name} {M.auroc(final, ok):.3f}")
        ax.plot([0, 1], [0, 1], "k--", lw=0.7)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=6, loc="lower right")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    save_figure(fig, path, format="png", dpi=100)


def plot_confusion(scores: Scores, path: Path, title: str) -> None:
    """Heat-map of the cross-task confusion matrix (rows: trajectory task, columns: goal task)."""
    import matplotlib.pyplot as plt

    t = scores.confusion_tasks
    fig, ax = plt.subplots(figsize=(max(4.0, 1.8 + 0.7 * len(t)), max(3.2, 1.2 + 0.6 * len(t))))
    im = ax.imshow(scores.confusion, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(t)), t, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(t)), t, fontsize=7)
    ax.set_xlabel("goal image of task")
    ax.set_ylabel("expert rollout of task")
    for i in range(len(t)):
        for j in range(len(t)):
            ax.text(j, i, f"{scores.confusion[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(im, ax=ax, label="final mu")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, format="png", dpi=100)


def write_report(out: Path, results: dict[str, Any], all_scores: dict[str, Scores]) -> None:
    """``metrics.json``, ``report.md`` and the plots under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", results)
    atomic_write_text(out / "report.md", format_report(results))
    for name, s in all_scores.items():
        plot_progress_groups(s, out / f"progress_{_slug(name)}.png", f"{name}: progress per rollout group")
        plot_confusion(s, out / f"confusion_{_slug(name)}.png", name)
    plot_roc(all_scores, results["eval_data"]["tasks"], out / "roc.png")


__all__ = ["Entry", "Scored", "Scores", "compute_metrics", "confusion_matrix", "format_report", "load_models",
           "pooled_table", "resolve_settings", "score", "write_report"]

"""The RL results table: a resumable task x reward_model x seed sweep of ``train_mw.py``, and its report.

A sweep folder ``SWEEP`` holds::

    sweep.json                              the grid and the frame budget (written by ``run_sweep``)
    runs/<task>/<reward_model>/s<seed>/     one train_mw.py run dir per cell, plus console.log (its output)
    results.json, results.md, curves.png    the report (``report``)

**Done and final value.** A run is done when its ``eval.csv`` has a row at frame >= the budget. Its
final value is the eval ``success_rate`` of the first such row: the eval the run made on reaching
the budget. Training stops at the first episode boundary at or past ``num_train_frames`` and
evaluates there, so when the budget is not a multiple of an episode's frames that eval lies up to
one episode past the budget (the last row at or below the budget would then be an eval made up to
``eval_every_frames`` earlier); in a run trained longer than the budget it is the first eval at or
after the budget. Runs that are not done enter no statistic and are listed with their last eval.

**Statistics** (rliable; Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", 2021).
Per (task, reward_model): the final values of the done seeds, their mean and IQM (25 % trimmed
mean), each with a 95 % percentile bootstrap CI over seeds. Per reward_model, "all tasks": the same
on the runs x tasks score matrix of the seeds done on every task, with rliable's stratified
bootstrap (seeds resampled within each task). Every bootstrap is seeded, so the same files give the
same numbers.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import matplotlib
import numpy as np
import rliable.library as rly
import rliable.metrics as rly_metrics
from tqdm.auto import tqdm

from video2reward.progress import progress as progress_bar

from drm import DRM_ROOT
from video2reward.io import atomic_write_json, atomic_write_text, save_figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RUNS = "runs"
SWEEP_FILE = "sweep.json"
LOG_FILE = "console.log"  # not train_mw.log: Hydra writes that one into the run dir itself
TRAIN_SCRIPT = DRM_ROOT / "train_mw.py"
# set by the sweep for every cell; an --extra override may not change them
SWEEP_KEYS = ("task", "reward_model", "seed", "num_train_frames", "num_threads", "hydra.run.dir")
DEFAULT_REPS = 2000
MISSING = "—"


def _union(a: Sequence, b: Sequence) -> list:
    """``a`` then the items of ``b`` not in it, in order."""
    return list(dict.fromkeys([*a, *b]))


class RLTableError(ValueError):
    """A sweep folder or run file that cannot be read (the message names the file)."""


@dataclass(frozen=True)
class Cell:
    """One run of the sweep."""

    task: str
    reward_model: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.task}/{self.reward_model}/s{self.seed}"

    def run_dir(self, root: Path) -> Path:
        return Path(root) / RUNS / self.task / self.reward_model / f"s{self.seed}"


@dataclass
class Sweep:
    """The grid and the frame budget; kept in ``SWEEP/sweep.json`` so a report needs only the folder."""

    tasks: list[str]
    reward_models: list[str]
    seeds: list[int]
    frames: int                                       # the budget: num_train_frames of every run
    extra: list[str] = field(default_factory=list)    # further train_mw.py overrides, the same for every run
    # row label -> [reward_model, its own overrides...]: e.g. "ours_delta": ["ours", "reward.form=delta"]
    variants: dict[str, list[str]] = field(default_factory=dict)

    def overrides(self, row: str) -> list[str]:
        """``reward_model=...`` and the overrides of the row ``row`` (a reward model, or a variant's label)."""
        base, *own = self.variants.get(row, [row])
        return [f"reward_model={base}", *own]

    def cells(self) -> list[Cell]:
        return [Cell(t, r, s) for t in self.tasks for r in self.reward_models for s in self.seeds]

    def merged(self, old: Sweep | None) -> Sweep:
        """This sweep's budget and overrides on the union of both grids (an earlier ``run`` with other
        tasks or seeds stays in the report)."""
        if old is None:
            return self
        for label, spec in old.variants.items():
            if label in self.variants and self.variants[label] != spec:
                raise RLTableError(f"variant {label!r} was {' '.join(spec)} in this sweep, now "
                                   f"{' '.join(self.variants[label])}: give the new one another name")
        return Sweep(_union(old.tasks, self.tasks), _union(old.reward_models, self.reward_models),
                     _union(old.seeds, self.seeds), self.frames, self.extra, {**old.variants, **self.variants})

    def save(self, root: Path) -> None:
        atomic_write_json(Path(root) / SWEEP_FILE, asdict(self))

    @classmethod
    def load(cls, root: Path) -> Sweep | None:
        path = Path(root) / SWEEP_FILE
        if not path.exists():
            return None
        try:
            d = json.loads(path.read_text())
            return cls([str(t) for t in d["tasks"]], [str(r) for r in d["reward_models"]],
                       [int(s) for s in d["seeds"]], int(d["frames"]), [str(e) for e in d.get("extra", [])],
                       {str(k): [str(x) for x in v] for k, v in d.get("variants", {}).items()})
        except (ValueError, KeyError, TypeError) as e:
            raise RLTableError(f"{path}: not a sweep file ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------- run files
def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, float]]:
    """Rows of a workspace CSV (``eval.csv`` / ``train.csv``) sorted by frame; empty cells are left out.

    A file without a ``required`` column, with a row lacking one, or with a value that is not a
    number is an :class:`RLTableError` naming the file.
    """
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            lacking = [k for k in required if k not in (reader.fieldnames or [])]
            if lacking:
                raise RLTableError(f"{path}: malformed, no column {', '.join(map(repr, lacking))}"
                                   f" (header: {','.join(reader.fieldnames or [])})")
            rows = []
            for line, raw in enumerate(reader, start=2):
                if None in raw:
                    raise RLTableError(f"{path}: malformed, line {line} has more fields than the header")
                try:
                    row = {k: float(v) for k, v in raw.items() if v not in ("", None)}
                except ValueError as e:
                    raise RLTableError(f"{path}: malformed, line {line}: {e}") from None
                absent = [k for k in required if k not in row]
                if absent:
                    raise RLTableError(f"{path}: malformed, line {line} has no {', '.join(absent)}")
                rows.append(row)
    except (UnicodeDecodeError, csv.Error) as e:
        raise RLTableError(f"{path}: malformed ({e})") from None
    return sorted(rows, key=lambda r: r["frame"])


@dataclass
class Run:
    """A cell's eval rows and, when it is done, its final row (module docstring)."""

    cell: Cell
    evals: list[dict[str, float]]
    final: dict[str, float] | None
    total_time: float | None  # seconds of training + eval up to the final row (or the last row)

    @property
    def done(self) -> bool:
        return self.final is not None

    @property
    def last_frame(self) -> int | None:
        return int(self.evals[-1]["frame"]) if self.evals else None


def final_row(evals: Sequence[dict[str, float]], budget: int) -> dict[str, float] | None:
    """The first eval row at frame >= ``budget`` (``evals`` sorted by frame), or None: not done."""
    return next((r for r in evals if r["frame"] >= budget), None)


def load_run(cell: Cell, root: Path, budget: int) -> Run | None:
    """The run of ``cell`` under ``root``; None when it has no ``eval.csv``."""
    run_dir = cell.run_dir(root)
    if not (run_dir / "eval.csv").exists():
        return None
    evals = read_csv(run_dir / "eval.csv", ("frame", "success_rate"))
    final = final_row(evals, budget)
    end = final or (evals[-1] if evals else None)
    total_time = end.get("total_time") if end else None
    if end is not None and total_time is None and (run_dir / "train.csv").exists():
        timed = [r for r in read_csv(run_dir / "train.csv", ("frame",))
                 if "total_time" in r and r["frame"] <= end["frame"]]
        total_time = timed[-1]["total_time"] if timed else None
    return Run(cell, evals, final, total_time)


def discover(root: Path) -> list[Cell]:
    """Cells present under ``root/runs/`` (``<task>/<reward_model>/s<seed>``)."""
    cells = []
    for d in sorted(Path(root, RUNS).glob("*/*/s*")):
        if d.is_dir() and re.fullmatch(r"s\d+", d.name):
            cells.append(Cell(d.parent.parent.name, d.parent.name, int(d.name[1:])))
    return cells


# ------------------------------------------------------------------------------------------ sweep
def hydra_value(text: str) -> str:
    """``text`` as a Hydra override value: quoted when it has characters Hydra's grammar reads
    (``,`` would make a sweep, a space or ``=`` a parse error)."""
    if re.fullmatch(r"[\w./:+@-]+", text):
        return text
    return "'" + text.replace("'", "\\'") + "'"


def train_command(cell: Cell, root: Path, frames: int, threads: int | None, extra: Sequence[str],
                  train_cmd: Sequence[str] | None = None, row: Sequence[str] | None = None) -> list[str]:
    """The command line of one cell: ``train_cmd`` (default ``python DrM/train_mw.py``) + overrides;
    ``row``: the row's own (``Sweep.overrides``; default ``reward_model=<the cell's>``), after ``extra``."""
    prefix = list(train_cmd) if train_cmd else [sys.executable, str(TRAIN_SCRIPT)]
    row = list(row) if row is not None else [f"reward_model={cell.reward_model}"]
    return [*prefix, f"task={cell.task}", row[0], f"seed={cell.seed}",
            f"num_train_frames={frames}", *([f"num_threads={threads}"] if threads else []),
            f"hydra.run.dir={hydra_value(str(cell.run_dir(root).resolve()))}", *extra, *row[1:]]


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (a failed train_mw.py run ends with ``error: ...``)."""
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 4096))
        lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


@dataclass
class _Job:
    cell: Cell
    proc: subprocess.Popen
    log: Any  # the open log file


def _outcome(job: _Job, root: Path, frames: int) -> tuple[bool, str]:
    """Whether the ended ``job`` finished its cell, and its status line."""
    log_path = job.cell.run_dir(root) / LOG_FILE
    if job.proc.returncode != 0:
        return False, f"failed   {job.cell.name} (exit {job.proc.returncode}): {_last_line(log_path)}; log {log_path}"
    run = load_run(job.cell, root, frames)
    if run is None or not run.done:
        return False, f"failed   {job.cell.name}: exited 0 without an eval at >= {frames} frames; log {log_path}"
    final = run.final
    return True, f"finished {job.cell.name}: success {final['success_rate']:.2f} at {int(final['frame'])} frames"


def run_sweep(root: str | os.PathLike, sweep: Sweep, parallel: int = 1, threads_per_run: int | None = None,
              train_cmd: Sequence[str] | None = None, progress: bool = True, poll_s: float = 1.0) -> list[Cell]:
    """Run every cell of ``sweep`` that is not done, at most ``parallel`` at a time; returns the failed cells.

    Each cell is ``train_command(...)`` in its own subprocess with stdout and stderr appended to
    ``<run dir>/console.log``. A rerun resumes: done cells are skipped, the others restart and the
    workspace continues them from their ``snapshot.pt``. ``threads_per_run`` (default: the CPU count
    / ``parallel``) sets ``num_threads`` and the child's OMP/MKL thread counts. A cell fails when its
    process exits nonzero or ends without an eval at the budget; the others go on.
    """
    root = Path(root)
    sweep.merged(Sweep.load(root)).save(root)
    threads = threads_per_run or max(1, (os.cpu_count() or 1) // parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cells = sweep.cells()
    say = tqdm.write
    todo = []
    for cell in cells:  # every file is checked before any run starts
        run = load_run(cell, root, sweep.frames)
        if run is not None and run.done:
            say(f"done     {cell.name} (eval at {int(run.final['frame'])} frames)")
        else:
            todo.append(cell)
    bar = progress_bar(total=len(cells), initial=len(cells) - len(todo), desc="sweep", unit="run", disable=not progress)
    running: list[_Job] = []
    failed: list[Cell] = []
    try:
        while todo or running:
            while todo and len(running) < parallel:
                cell = todo.pop(0)
                run_dir = cell.run_dir(root)
                run_dir.mkdir(parents=True, exist_ok=True)
                cmd = train_command(cell, root, sweep.frames, threads, sweep.extra, train_cmd,
                                    sweep.overrides(cell.reward_model))
                resumes = " (resumes from snapshot.pt)" if (run_dir / "snapshot.pt").exists() else ""
                log = open(run_dir / LOG_FILE, "a")
                log.write(f"\n=== {datetime.datetime.now().isoformat(timespec='seconds')} {' '.join(cmd)}\n")
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                running.append(_Job(cell, proc, log))
                say(f"started  {cell.name}{resumes}: log {run_dir / LOG_FILE}")
            time.sleep(poll_s)
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                job.log.close()
                bar.update(1)
                ok, line = _outcome(job, root, sweep.frames)
                if not ok:
                    failed.append(job.cell)
                say(line)
    finally:
        for job in running:  # interrupted: stop our children; their snapshots let a rerun continue
            job.proc.terminate()
        for job in running:
            try:
                job.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()
            job.log.close()
        bar.close()
    return failed


# ------------------------------------------------------------------------------------- statistics
@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """rliable's bootstrap draws its resampling indices from numpy's global RNG (its ``random_state``
    argument does not reach them): seed that for the block and give the caller's state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _iqm_and_mean(scores: np.ndarray) -> np.ndarray:
    return np.array([rly_metrics.aggregate_iqm(scores), rly_metrics.aggregate_mean(scores)])


def interval_estimates(scores: np.ndarray, reps: int = DEFAULT_REPS, seed: int = 0) -> dict[str, Any]:
    """IQM and mean of a ``(runs, tasks)`` score matrix, each with a 95 % stratified bootstrap CI
    (percentile method, ``reps`` resamples of the runs within each task, seeded with ``seed``)."""
    with _seeded_numpy(seed):
        point, interval = rly.get_interval_estimates({"x": np.asarray(scores, dtype=float)}, _iqm_and_mean, reps=reps)
    (iqm, mean), ci = point["x"], interval["x"]
    return {"iqm": float(iqm), "iqm_ci": [float(ci[0, 0]), float(ci[1, 0])],
            "mean": float(mean), "mean_ci": [float(ci[0, 1]), float(ci[1, 1])]}


def curve(runs: Sequence[Run], reps: int = DEFAULT_REPS, seed: int = 0) -> dict[str, Any]:
    """Success rate vs frames of done ``runs``, mean across seeds with a band.

    The grid is every frame any run evaluated at, up to the earliest final frame; a run without an
    eval at a grid frame is interpolated linearly there. The band is a 95 % bootstrap CI of the mean
    (percentile, seeded) with 3 or more runs, else the min-max range.
    """
    end = min(r.final["frame"] for r in runs)
    grid = np.array(sorted({r["frame"] for run in runs for r in run.evals if r["frame"] <= end}))
    values = np.stack([np.interp(grid, [r["frame"] for r in run.evals], [r["success_rate"] for r in run.evals])
                       for run in runs])  # (runs, frames)
    if len(runs) >= 3:
        with _seeded_numpy(seed):
            _, interval = rly.get_interval_estimates({"x": values[:, None, :]}, lambda s: s.mean(axis=(0, 1)),
                                                     reps=reps)
        lo, hi, band = interval["x"][0], interval["x"][1], "95% bootstrap CI"
    else:
        lo, hi, band = values.min(0), values.max(0), "min-max"
    return {"frames": grid.astype(int).tolist(), "mean": values.mean(0).tolist(), "lo": lo.tolist(),
            "hi": hi.tolist(), "band": band, "num_seeds": len(runs)}


# ------------------------------------------------------------------------------------------ report
def summarize(root: str | os.PathLike, sweep: Sweep, reps: int = DEFAULT_REPS, seed: int = 0) -> dict[str, Any]:
    """The report's content (what ``results.json`` holds) for the cells of ``sweep`` found under ``root``."""
    root = Path(root)
    runs = {cell: load_run(cell, root, sweep.frames) for cell in sweep.cells()}
    cells: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, Any]] = {}
    done: dict[tuple[str, str], dict[int, Run]] = {}
    for task in sweep.tasks:
        cells[task], curves[task] = {}, {}
        for rm in sweep.reward_models:
            present = {s: runs[Cell(task, rm, s)] for s in sweep.seeds if runs[Cell(task, rm, s)] is not None}
            done[task, rm] = {s: run for s, run in present.items() if run.done}
            entry: dict[str, Any] = {"runs": {f"s{s}": _run_entry(run) for s, run in present.items()},
                                     "num_seeds": len(done[task, rm])}
            if done[task, rm]:
                finals = np.array([[r.final["success_rate"]] for r in done[task, rm].values()])
                entry.update(interval_estimates(finals, reps, seed))
                curves[task][rm] = curve(list(done[task, rm].values()), reps, seed)
            cells[task][rm] = entry
    all_tasks = {}
    for rm in sweep.reward_models:
        common = [s for s in sweep.seeds if all(s in done[t, rm] for t in sweep.tasks)]
        entry = {"seeds": common, "num_seeds": len(common)}
        if common:
            scores = np.array([[done[t, rm][s].final["success_rate"] for t in sweep.tasks] for s in common])
            entry.update(interval_estimates(scores, reps, seed))
        all_tasks[rm] = entry
    return {
        "budget_frames": sweep.frames, "tasks": sweep.tasks, "reward_models": sweep.reward_models,
        "seeds": sweep.seeds, "extra_overrides": sweep.extra, "variants": sweep.variants,
        "final_value": "eval success_rate of the first eval at frame >= budget_frames (runs without one: not done)",
        "bootstrap": {"reps": reps, "seed": seed, "confidence": 0.95, "method": "percentile",
                      "resampled": "seeds, within each task (rliable StratifiedBootstrap)"},
        "cells": cells, "all_tasks": all_tasks, "curves": curves,
        "missing": [c.name for c, r in runs.items() if r is None],
        "not_done": [c.name for c, r in runs.items() if r is not None and not r.done],
    }


def _run_entry(run: Run) -> dict[str, Any]:
    row = run.final or {}
    return {"done": run.done, "success_rate": row.get("success_rate"), "env_return": row.get("episode_env_reward"),
            "frame": int(row["frame"]) if row else None, "last_eval_frame": run.last_frame,
            "total_time": run.total_time}


def _fmt(entry: dict[str, Any], key: str = "iqm") -> str:
    if not entry.get("num_seeds") or key not in entry:
        return MISSING
    lo, hi = entry[f"{key}_ci"]
    n = entry["num_seeds"]
    return f"{entry[key]:.2f} [{lo:.2f}, {hi:.2f}] ({n} seed{'' if n == 1 else 's'})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(r)} |" for r in rows)]


def summary_table(results: dict[str, Any], key: str = "iqm") -> list[str]:
    """Markdown lines of ``key`` (iqm | mean) with CIs: a row per task and "all tasks", a column per reward model."""
    rms = results["reward_models"]
    rows = [[t, *(_fmt(results["cells"][t][rm], key) for rm in rms)] for t in results["tasks"]]
    rows.append(["**all tasks**", *(_fmt(results["all_tasks"][rm], key) for rm in rms)])
    return _table(["task", *rms], rows)


def markdown(results: dict[str, Any]) -> str:
    """``results.md``: IQM and mean tables, per-seed finals, wall times, missing and unfinished runs."""
    rms, tasks = results["reward_models"], results["tasks"]
    bs = results["bootstrap"]
    out = ["# RL results", "",
           f"Eval success rate at **{results['budget_frames']} frames**: per run the first eval at or after the "
           f"budget. Seeds {', '.join(map(str, results['seeds']))}"
           + (f"; overrides `{' '.join(results['extra_overrides'])}`" if results["extra_overrides"] else "") + "."
           + "".join(f" Row `{label}`: `reward_model={spec[0]}{''.join(' ' + o for o in spec[1:])}`."
                     for label, spec in results.get("variants", {}).items()),
           f"Cells: point estimate [95 % CI] (seeds done); CI: stratified bootstrap over seeds, {bs['method']}, "
           f"{bs['reps']} resamples, seed {bs['seed']} (rliable). \"all tasks\": the runs x tasks score matrix "
           "of the seeds done on every task.", ""]
    for key, title in (("iqm", "IQM across seeds"), ("mean", "Mean across seeds")):
        out += [f"## {title}", "", *summary_table(results, key), ""]
    out += ["## Final success rate per seed", "",
            "In brackets: the eval episodes' mean return of Meta-World's own dense reward at that eval, a "
            "shaped measure of how far the policy gets when no run succeeds.", ""]
    seeds = results["seeds"]
    rows = []
    for t in tasks:
        for rm in rms:
            per = results["cells"][t][rm]["runs"]
            rows.append([t, rm, *(_seed_cell(per.get(f"s{s}")) for s in seeds)])
    out += [*_table(["task", "reward_model", *(f"s{s}" for s in seeds)], rows), ""]
    times = [[t, *(_wall_time(results["cells"][t][rm]) for rm in rms)] for t in tasks]
    if any(c != MISSING for row in times for c in row[1:]):
        out += ["## Wall time per run (hours, mean over done seeds)", "", *_table(["task", *rms], times), ""]
    if results["missing"]:
        out += [f"**Missing** (no eval.csv): {', '.join(results['missing'])}", ""]
    if results["not_done"]:
        out += [f"**Not done** (no eval at >= {results['budget_frames']} frames; last eval frame in the table "
                f"above): {', '.join(results['not_done'])}", ""]
    return "\n".join(out)


def _seed_cell(run: dict[str, Any] | None) -> str:
    if run is None:
        return MISSING
    if not run["done"]:
        return f"not done ({run['last_eval_frame']} frames)" if run["last_eval_frame"] is not None else "not done"
    env = run.get("env_return")
    return f"{run['success_rate']:.2f}" + ("" if env is None or math.isnan(env) else f" (env {env:.0f})")


def _wall_time(entry: dict[str, Any]) -> str:
    hours = [r["total_time"] / 3600 for r in entry["runs"].values() if r["done"] and r["total_time"] is not None]
    return f"{np.mean(hours):.2f}" if hours else MISSING


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """``curves.png``: one panel per task, success rate vs frames per reward model."""
    tasks, rms = results["tasks"], results["reward_models"]
    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.5 * nrows), squeeze=False)
    colors = {rm: plt.get_cmap("tab10")(i % 10) for i, rm in enumerate(rms)}
    for ax, task in zip(axes.flat, tasks):
        for rm in rms:
            c = results["curves"][task].get(rm)
            if c is None:
                continue
            band = "95% CI" if c["band"].startswith("95") else "min-max"
            n = c["num_seeds"]
            ax.plot(c["frames"], c["mean"], "-", color=colors[rm], lw=1.5,
                    label=f"{rm} ({n} seed{'' if n == 1 else 's'}, {band})")
            ax.fill_between(c["frames"], c["lo"], c["hi"], color=colors[rm], alpha=0.2, lw=0)
        if not results["curves"][task]:
            ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
        ax.axvline(results["budget_frames"], color="gray", ls=":", lw=1)
        ax.set_title(task)
        ax.set_xlabel("frames")
        ax.set_ylabel("eval success rate")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        if results["curves"][task]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle("mean across seeds; shaded: bootstrap 95% CI of the mean (3+ seeds) or min-max (fewer)",
                 fontsize=9)
    save_figure(fig, path, dpi=110, format="png")


def report(root: str | os.PathLike, budget: int | None = None, reps: int = DEFAULT_REPS,
           seed: int = 0) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and ``curves.png`` into ``root``; returns the results.

    The grid comes from ``root/sweep.json`` together with the cells found under ``root/runs/``;
    ``budget`` (default: the sweep's frames) sets the frame at which final values are taken.
    """
    root = Path(root)
    sweep, found = Sweep.load(root), discover(root)
    if sweep is None:
        if budget is None:
            raise RLTableError(f"{root / SWEEP_FILE} not found: give the frame budget (--frames)")
        if not found:
            raise RLTableError(f"{root}: no {SWEEP_FILE} and no runs under {root / RUNS}")
        sweep = Sweep([], [], [], budget)
    sweep = Sweep(_union(sweep.tasks, [c.task for c in found]),
                  _union(sweep.reward_models, [c.reward_model for c in found]),
                  _union(sweep.seeds, sorted({c.seed for c in found})), budget or sweep.frames, sweep.extra,
                  sweep.variants)
    results = summarize(root, sweep, reps, seed)
    atomic_write_json(root / "results.json", results)
    atomic_write_text(root / "results.md", markdown(results))
    plot_curves(results, root / "curves.png")
    return results


__all__ = ["Cell", "RLTableError", "Run", "Sweep", "discover", "final_row", "interval_estimates", "load_run",
           "markdown", "read_csv", "report", "run_sweep", "summarize", "summary_table", "train_command"]

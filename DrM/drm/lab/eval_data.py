"""Rollout sets for evaluating a reward model (docs/evaluation.md), made with the demo generator.

``root/<set>/<task>/test/<i>/<t>.png`` plus ``root/<set>/<task>/metadata.json``, one set per policy:

* ``expert``: the scripted expert (failed episodes kept, so every placement is there);
* ``noise-0.3``, ``noise-1.0``: the expert's action + Gaussian noise of that std, clipped;
* ``random``: uniform random actions;
* ``parked``: one uniform random action held for the whole episode: the arm driven into a pose and
  kept there, the failure PROGRESSOR's RL runs fell into.

The same sets from the ``train`` split's seeds (never the evaluation's) are the generated negatives
of PROGRESSOR's pretraining (``split="train"``, ``scripts/generate_negatives.py``).

Rollout ``i`` of a task has the same seed, so the same placement, in every set
(``drm.demos.trajectory_seed(seed, task, "test", i)``). Its goal image is the last frame of expert
rollout ``i`` (what ``env.goal_frame()`` renders for that placement), never its own last frame.
Each trajectory's metadata record adds the env's dense reward and success flag per agent step
(``step_reward``, ``step_success``). Generation is seeded and resumable as the demos' is; a set
made with other settings is refused in one line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from drm.demos import (DemoSettings, env_for, job_results, prepare_task, read_metadata, rollout, trajectory_seed,
                       write_frames, write_metadata)
from drm.envs import ML45_TEST_TASKS, TASKS, canonical_task

SPLIT = "test"  # every eval rollout lives in the demos' test split (its seeds; never trained on)
# Rollout groups, worst to best, and their rank in the quality order of ranking_tau (parked ties with random).
GROUPS: dict[str, dict[str, Any]] = {
    "parked": {"policy": "parked"},
    "random": {"policy": "random"},
    "noise-1.0": {"noise": 1.0},
    "noise-0.3": {"noise": 0.3},
    "expert": {"keep_failures": True},
}
QUALITY = {"parked": 0, "random": 0, "noise-1.0": 1, "noise-0.3": 2, "expert": 3}


class EvalDataError(ValueError):
    """Eval data that cannot be used as asked; the message names the folder and what to do."""


def group_settings(base: DemoSettings, group: str) -> DemoSettings:
    """The demo settings of ``group``: ``base``'s seed and rendering with that group's policy."""
    return replace(base, **{"policy": "expert", "noise": 0.0, "keep_failures": False, **GROUPS[group]})


class _StepRecorder:
    """Wraps an env for ``drm.demos.rollout``: records each agent step's dense reward and success."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.rewards: list[float] = []
        self.successes: list[bool] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, **kwargs: Any) -> Any:
        self.rewards, self.successes = [], []
        return self.env.reset(**kwargs)

    def step(self, action: np.ndarray) -> Any:
        out = self.env.step(action)
        self.rewards.append(float(out[1]))
        self.successes.append(bool(out[4]["success"]))
        return out


@dataclass(frozen=True)
class _Job:
    root: str
    task: str
    index: int
    settings: DemoSettings
    split: str = SPLIT


def _run_job(job: _Job) -> dict[str, Any]:
    env = _StepRecorder(env_for(job.task, job.settings))
    seed = trajectory_seed(job.settings.seed, job.task, job.split, job.index)
    result = rollout(env, seed, job.settings.policy, job.settings.noise)
    write_frames(result.frames, Path(job.root) / job.task / job.split / str(job.index))
    return {"task": job.task, "root": job.root, "index": job.index, "seed": seed, "success": result.success,
            "env_return": result.env_return, "failed_seeds": [], "step_reward": env.rewards,
            "step_success": env.successes}


def generate_eval_sets(root: str | os.PathLike, tasks: Sequence[str], unseen_tasks: Sequence[str],
                       num_per_set: int, settings: DemoSettings, workers: int | None = None,
                       progress: bool = True, groups: Sequence[str] = tuple(GROUPS), split: str = SPLIT) -> None:
    """Make (or complete) the ``groups`` of ``tasks`` and the expert set of ``unseen_tasks`` under ``root``.

    ``settings`` gives the seed and rendering (its policy fields are ignored). ``split="train"``
    draws the placements from the demos' train seeds (pretraining negatives). Finished rollouts are
    kept; a set made with other settings raises a one-line :class:`EvalDataError`.
    """
    from video2reward.progress import progress as progress_bar

    root = Path(root)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise EvalDataError(f"unknown rollout group(s) {unknown}; choose from {', '.join(GROUPS)}")
    wanted = [(g, t) for t in tasks for g in groups] + [("expert", t) for t in unseen_tasks if t not in tasks]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    metas: dict[tuple[str, str], dict[str, Any]] = {}
    jobs: list[_Job] = []
    for group, task in wanted:
        task = canonical_task(task, TASKS)
        s = group_settings(settings, group)
        try:
            meta, missing = prepare_task(root / group, task, {"train": 0, "test": 0, split: num_per_set}, s)
        except ValueError as exc:  # a set made with other settings
            raise EvalDataError(str(exc)) from None
        write_metadata(root / group, task, meta)
        metas[(str(root / group), task)] = meta
        jobs += [_Job(str(root / group), task, i, s, split) for _, i in missing]
    bar = progress_bar(total=len(jobs), desc=f"{split} rollouts", unit="traj", disable=not progress or not jobs)
    with job_results(jobs, workers, _run_job) as results:
        for record in results:
            task, out, index = record.pop("task"), record.pop("root"), record.pop("index")
            meta = metas[(out, task)]
            meta["trajectories"][split][str(index)] = record
            write_metadata(Path(out), task, meta)
            bar.update()
    bar.close()


@dataclass
class RolloutRecord:
    group: str
    task: str
    index: int
    seed: int
    success: bool  # the task was solved at some agent step
    step_reward: np.ndarray  # (T,) the env's dense reward per agent step
    step_success: np.ndarray  # (T,) bool


def load_records(root: str | os.PathLike, group: str, task: str, num: int) -> list[RolloutRecord]:
    """Records of rollouts ``0 .. num - 1`` of ``group`` / ``task``; a one-line error if any is missing."""
    task_dir = Path(root) / group / task
    meta = read_metadata(task_dir)
    trajs = (meta or {}).get("trajectories", {}).get(SPLIT, {})
    out = []
    for i in range(num):
        r = trajs.get(str(i))
        if r is None or "step_reward" not in r:
            raise EvalDataError(f"{task_dir}: rollout {i} is missing or has no per-step rewards (not written by "
                             f"drm.lab.eval_data); regenerate it or use another --eval_data")
        out.append(RolloutRecord(group, task, i, int(r["seed"]), bool(r["success"]),
                                 np.asarray(r["step_reward"], dtype=np.float64),
                                 np.asarray(r["step_success"], dtype=bool)))
    return out


def goal_frame_file(root: str | os.PathLike, task: str, index: int) -> Path:
    """The goal image of placement ``index`` of ``task``: the last frame of expert rollout ``index``."""
    traj = Path(root) / "expert" / task / SPLIT / str(index)
    return traj / f"{len(list(traj.glob('*.png'))) - 1}.png"


def existing_settings(root: str | os.PathLike) -> dict[str, Any] | None:
    """The recorded settings of any set already under ``root`` (``None``: nothing there yet)."""
    for group in GROUPS:
        for meta_file in sorted((Path(root) / group).glob("*/metadata.json")):
            return read_metadata(meta_file.parent)
    return None


__all__ = ["EvalDataError", "GROUPS", "ML45_TEST_TASKS", "QUALITY", "RolloutRecord", "SPLIT", "existing_settings",
           "generate_eval_sets", "goal_frame_file", "group_settings", "load_records"]

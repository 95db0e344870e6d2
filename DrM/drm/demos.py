"""Scripted demonstrations written as image folders (the layout Video2Reward reads).

``out/<task>/{train,test}/<traj>/<i>.png``: ``i = 0`` is the reset frame, then one frame per
agent step (101 frames at the default 100 steps), RGB, rendered by the same env (camera, flip,
render quality, action repeat) that RL uses. ``out/<task>/metadata.json`` records the settings,
versions and, per trajectory, its seed and whether the task was solved.

Trajectory ``k`` of split ``s`` of task ``t`` tries the seeds ``trajectory_seed(seed, t, s, k, a)``
for attempts ``a = 0, 1, ...``: the first one is kept, or, for the noise-free expert (unless
``keep_failures``), the first successful one. So the same command gives the same frames, and
``make_env(t).reset(seed=<recorded seed>)`` then ``goal_frame()`` gives the demo's last frame.

Resumable and safe to kill: a trajectory is written into a hidden temporary folder that is
renamed into place when complete, and ``metadata.json`` (rewritten atomically after each one)
is the journal of finished trajectories; anything on disk it does not list is redone.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from drm.envs import PAPER_TASKS, TASKS, PixelEnv, canonical_task, make_env

SPLITS = ("train", "test")
POLICIES = ("expert", "random", "parked")
METADATA = "metadata.json"
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class DemoSettings:
    """Everything that determines the frames of a demo set (checked again on resume)."""

    seed: int = 0  # base seed; every trajectory's seed is derived from it
    policy: str = "expert"  # expert: metaworld.policies / the toy's expert; random: uniform actions; parked:
                            # one uniform action held for the whole episode (the arm driven to a pose, kept there)
    noise: float = 0.0  # std of Gaussian noise added to the expert's action (then clipped to [-1, 1])
    keep_failures: bool = False  # keep unsuccessful noise-free expert episodes instead of re-seeding
    image_size: int = 84
    episode_length: int = 100  # agent steps; a trajectory has episode_length + 1 frames
    action_repeat: int = 2
    render_quality: str = "fast"  # see drm.envs.metaworld_env.configure_render_quality

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.noise < 0 or (self.noise > 0 and self.policy != "expert"):
            raise ValueError(f"noise must be >= 0 and applies to the expert only, got {self.noise}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @classmethod
    def from_config(cls, cfg: Any, **changes: Any) -> DemoSettings:
        """The demos a DrM run's (composed) config asks for: its env's frames, ``demos.seed`` and
        ``demos.keep_failures``; ``changes`` replace any of them."""
        taken = {"seed": cfg.demos.seed, "keep_failures": cfg.demos.keep_failures, "image_size": cfg.image_size,
                 "episode_length": cfg.episode_length, "action_repeat": cfg.action_repeat,
                 "render_quality": cfg.render_quality}
        return cls(**{**taken, **changes})

    @property
    def skips_failures(self) -> bool:
        """Only the noise-free expert is re-seeded until it succeeds; other policies keep all."""
        return self.policy == "expert" and self.noise == 0 and not self.keep_failures


@dataclass
class Rollout:
    frames: np.ndarray  # (episode_length + 1, S, S, 3) uint8, the reset frame first
    success: bool  # the task was solved at some step
    env_return: float  # sum of the env's dense reward


def trajectory_seed(seed: int, task: str, split: str, index: int, attempt: int = 0) -> int:
    """Seed of attempt ``attempt`` at trajectory ``index`` of ``split`` of ``task`` (in [0, 2^31))."""
    key = [seed, zlib.crc32(task.encode()), SPLITS.index(split), index, attempt]
    return int(np.random.SeedSequence(key).generate_state(1)[0] & 0x7FFFFFFF)


def rollout(env: PixelEnv, seed: int, policy: str = "expert", noise: float = 0.0) -> Rollout:
    """One episode from ``env.reset(seed=seed)``; the policy's randomness is seeded from ``seed``."""
    rng = np.random.default_rng([seed, 1])
    env.reset(seed=seed)
    frames, success, env_return = [env.render()], False, 0.0
    held = rng.uniform(-1.0, 1.0, env.action_space.shape)  # the parked policy's one action
    for _ in range(env.episode_length):
        if policy == "random":
            action = rng.uniform(-1.0, 1.0, env.action_space.shape)
        elif policy == "parked":
            action = held
        else:
            action = env.expert_action()
            if noise > 0:
                action = action + noise * rng.standard_normal(action.shape)
        _, reward, _, _, info = env.step(np.clip(action, -1.0, 1.0).astype(np.float32))
        frames.append(env.render())
        success |= info["success"]
        env_return += reward
    return Rollout(np.stack(frames), bool(success), float(env_return))


def write_frames(frames: np.ndarray, traj_dir: Path) -> None:
    """Write ``frames`` as ``traj_dir/<i>.png`` all at once: into a temporary folder, then renamed."""
    tmp = traj_dir.parent / f"{_TMP_PREFIX}{traj_dir.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"{i}.png")
        os.rename(tmp, traj_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_metadata(task_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(task_dir) / METADATA
    return json.loads(path.read_text()) if path.is_file() else None


def read_render_quality(demo_dir: str | os.PathLike) -> str | None:
    """The render quality the demos at ``demo_dir`` were made with, for ``make_env``.

    ``demo_dir`` is a task folder or a root of task folders (all must agree). None when no
    ``metadata.json`` exists (e.g. the released Meta-World v2 dataset, rendered with mujoco-py).
    """
    root = Path(demo_dir)
    files = [root / METADATA] if (root / METADATA).is_file() else sorted(root.glob(f"*/{METADATA}"))
    if not files:
        return None
    found = {str(f): json.loads(f.read_text()).get("render_quality") for f in files}
    qualities = set(found.values())
    if len(qualities) != 1 or None in qualities:
        raise ValueError(f"demos under {root} disagree on render_quality: {found}")
    return qualities.pop()


# ---- generation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    out: str
    task: str
    split: str
    index: int
    settings: DemoSettings
    max_attempts: int


def demo_env(task: str, settings: DemoSettings) -> PixelEnv:
    """A new env for ``task`` that renders as ``settings`` say; the caller closes it."""
    return make_env(task, seed=settings.seed, image_size=settings.image_size,
                    action_repeat=settings.action_repeat, episode_length=settings.episode_length,
                    render_quality=settings.render_quality)


_worker_env: dict[tuple[str, DemoSettings], PixelEnv] = {}  # one per process, kept while the task stays


def env_for(task: str, settings: DemoSettings) -> PixelEnv:
    """This process's env for ``task`` and ``settings``, reused while they stay the same."""
    key = (task, settings)
    if key not in _worker_env:
        for env in _worker_env.values():
            env.close()
        _worker_env.clear()
        _worker_env[key] = demo_env(task, settings)
    return _worker_env[key]


def _run_job(job: _Job) -> dict[str, Any]:
    """Generate one trajectory; return its metadata record (with ``error`` if none was kept)."""
    s = job.settings
    env = env_for(job.task, s)
    failed: list[int] = []
    for attempt in range(job.max_attempts):
        seed = trajectory_seed(s.seed, job.task, job.split, job.index, attempt)
        result = rollout(env, seed, s.policy, s.noise)
        if result.success or not s.skips_failures:
            write_frames(result.frames, Path(job.out) / job.task / job.split / str(job.index))
            return {"task": job.task, "split": job.split, "index": job.index, "seed": seed,
                    "success": result.success, "env_return": result.env_return,
                    "failed_seeds": failed}
        failed.append(seed)
    return {"task": job.task, "split": job.split, "index": job.index, "failed_seeds": failed,
            "error": f"{job.task} {job.split}/{job.index}: the expert failed on all "
                     f"{job.max_attempts} seeds {failed}"}


def settings_record(settings: DemoSettings, env: PixelEnv) -> dict[str, Any]:
    """What ``metadata.json`` records of the settings and of the env that renders them."""
    desc = env.describe()
    desc.pop("frame_stack")  # an RL-side setting; demos store single frames
    record = {**desc, **asdict(settings)}
    record["frames_per_trajectory"] = settings.episode_length + 1
    return record


# What a reward model learns from demos must match the RL env: episode timing (progress labels
# and goal frames), rendering, and the toy's dynamics and expert. Seed, counts, image size: free.
RL_RELEVANT = ("suite", "camera", "episode_length", "action_repeat", "render_quality", "expert", "step_size",
               "success_radius", "min_start_goal_distance", "goal")


def _check_settings(task_dir: Path, meta: dict[str, Any], fresh: dict[str, Any],
                    keys: Iterable[str] | None = None,
                    hint: str = "use another folder or the same settings") -> None:
    keys = [k for k in fresh if k != "versions"] if keys is None else [k for k in keys if k in fresh]
    diff = {k: (meta.get(k), fresh[k]) for k in keys if meta.get(k) != fresh[k]}
    if diff:
        raise ValueError(f"{task_dir} holds demos made with other settings (existing, requested): "
                         f"{diff}; {hint}")


def check_demo_settings(task_dir: str | os.PathLike, settings: DemoSettings,
                        keys: Iterable[str] = RL_RELEVANT) -> None:
    """Raise a one-line ``ValueError`` when the demos in ``task_dir`` (a task folder with a
    ``metadata.json``) were made with other ``keys`` than ``settings`` and its env give;
    no metadata (e.g. the released dataset): no check."""
    task_dir = Path(task_dir)
    meta = read_metadata(task_dir)
    if meta is not None:
        env = demo_env(task_dir.name, settings)
        fresh = settings_record(settings, env)
        env.close()
        _check_settings(task_dir, meta, fresh, keys, hint="delete that folder to have them regenerated, "
                        "or point exp_data_path elsewhere")


def prepare_task(out: Path, task: str, counts: dict[str, int], settings: DemoSettings
                 ) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """Load or start ``task``'s metadata, clear unfinished work, and list what is still missing."""
    env = demo_env(task, settings)
    fresh = settings_record(settings, env)
    env.close()
    task_dir = out / task
    meta = read_metadata(task_dir)
    if meta is None:
        meta = {**fresh, "trajectories": {split: {} for split in SPLITS}}
    else:
        _check_settings(task_dir, meta, fresh)
    missing = []
    for split in SPLITS:
        records = meta["trajectories"].setdefault(split, {})
        split_dir = task_dir / split
        if split_dir.is_dir():
            for entry in split_dir.iterdir():
                if entry.name.startswith(_TMP_PREFIX) or (entry.name.isdigit() and entry.name not in records):
                    shutil.rmtree(entry)  # left by a killed run: never listed, so redone
        for index in list(records):
            if not (split_dir / index).is_dir():
                del records[index]
        missing += [(split, i) for i in range(counts[split]) if str(i) not in records]
    return meta, missing


def write_metadata(out: Path, task: str, meta: dict[str, Any]) -> None:
    """Write ``out/task/metadata.json`` atomically, trajectories sorted and counted."""
    # Imported here: the video2reward package pulls in torch, which worker processes never need.
    from video2reward.io import atomic_write_json

    trajs = meta["trajectories"]
    for split in SPLITS:
        trajs[split] = dict(sorted(trajs[split].items(), key=lambda kv: int(kv[0])))
    meta["num_trajectories"] = {split: len(trajs[split]) for split in SPLITS}
    meta["num_success"] = {split: sum(r["success"] for r in trajs[split].values()) for split in SPLITS}
    atomic_write_json(out / task / METADATA, meta)


def generate_demos(out: str | os.PathLike, tasks: Iterable[str] = PAPER_TASKS, num_train: int = 50,
                   num_test: int = 10, settings: DemoSettings = DemoSettings(),
                   workers: int | None = None, max_attempts: int = 10,
                   progress: bool = True) -> dict[str, dict[str, Any]]:
    """Generate (or complete) the demos of ``tasks`` under ``out``; return each task's metadata.

    Finished trajectories are kept, so re-running the same command only adds what is missing.
    ``workers`` processes (default ``min(2, cpu_count)``; 1 runs in this process). Raises
    ``RuntimeError`` after writing everything else if some trajectory found no successful
    expert episode in ``max_attempts`` seeds.
    """
    from video2reward.progress import progress as progress_bar  # as _write_metadata: not in the workers

    out = Path(out)
    tasks = list(dict.fromkeys(canonical_task(t, TASKS) for t in tasks))
    counts = {"train": num_train, "test": num_test}
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    metas: dict[str, dict[str, Any]] = {}
    jobs: list[_Job] = []
    for task in tasks:
        metas[task], missing = prepare_task(out, task, counts, settings)
        write_metadata(out, task, metas[task])
        jobs += [_Job(str(out), task, split, i, settings, max_attempts) for split, i in missing]

    errors = []
    bar = progress_bar(total=len(jobs), desc="demos", unit="traj", disable=not progress)
    with job_results(jobs, workers) as results:
        for record in results:
            task, split, index = record.pop("task"), record.pop("split"), record.pop("index")
            bar.set_postfix_str(f"{task} {split}", refresh=False)  # drawn by update(), as often as it redraws
            bar.update()
            if "error" in record:
                errors.append(record["error"])
                continue
            metas[task]["trajectories"][split][str(index)] = record
            write_metadata(out, task, metas[task])
    bar.close()
    if errors:
        raise RuntimeError(f"{len(errors)} trajectories found no successful expert episode "
                           f"(raise max_attempts or keep failures): " + "; ".join(errors))
    return metas


@contextlib.contextmanager
def job_results(jobs: Sequence[Any], workers: int,
                run: Callable[[Any], dict[str, Any]] | None = None) -> Iterator[Iterable[dict[str, Any]]]:
    """Records of ``jobs`` as they finish, ``run(job)`` (a picklable module-level function; default:
    one demo trajectory) computed here or by a pool of worker processes sharing the env cache."""
    run = _run_job if run is None else run
    if workers <= 1 or len(jobs) <= 1:
        try:
            yield map(run, jobs)
        finally:
            for env in _worker_env.values():
                env.close()
            _worker_env.clear()
        return
    # spawn: a forked child would inherit the parent's GL / OpenMP state
    with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        yield pool.imap_unordered(run, jobs)

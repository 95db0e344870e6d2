"""Pretraining of the progress model on expert videos, and its command line (``main_ours.py``).

One optimiser step: draw a :class:`~video2reward.triplets.TripletBatch` (batch ``step`` is a pure
function of ``(seed, rank, step)``), augment it (photometric per frame, one crop per group),
encode all its frames in ONE backbone call, run the head on the triplets (plus the negatives, plus
every frame of each group between the group's first and last frame for the order loss), minimise
the KL loss (+ ``rank_weight`` x the order loss) with AdamW (linear warm-up, then constant or
cosine), clip the gradient norm.

Outputs in ``output_dir`` (rank 0 only): ``checkpoint_last.pth`` (+ the last ``keep_last``
``checkpoint_<step>.pth``), readable by :func:`video2reward.load_reward_model` and resumable exactly
with ``--resume``; ``train_log.csv``, ``eval_log.csv``, TensorBoard events in ``tb/``,
``config.json``, and after training the held-out evaluation ``metrics.json`` + ``progress.png``.

Kill-safety: ``checkpoint_last.pth`` is rewritten (atomically) every ``save_minutes`` of training
and when SIGTERM / SIGINT arrive (the step in progress finishes first), so a killed run loses at
most ``save_minutes``. Every checkpoint carries its provenance (data, tasks, demo counts, steps,
held-out VOC once evaluated), see :func:`provenance`.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from . import augment as aug
from .checkpoint import read_checkpoint, save_reward_model, split_checkpoint, load_state_dict_strict
from .data import RESIZES, DataError, VideoDataset, discover_trajectories, load_dataset
from .errors import one_line_errors
from .evaluate import evaluate, format_table, write_evaluation
from .io import atomic_write_json, atomic_write_text
from .losses import NEGATIVE_WEIGHT, negative_kl_loss, progress_kl_loss, ranking_loss
from .model import BACKBONES, HEAD_INPUTS, ProgressModel, autocast
from .precision import PRECISIONS, add_precision_flag, resolve_precision
from .triplets import TripletBatch, TripletSampler, parse_label_std

RANK_WEIGHT = 100.0  # default weight of the order loss (shared-embedding batches); see docs/video2reward.md
AUGMENTATIONS = {"metaworld": aug.METAWORLD, "epic": aug.EPIC, "crop": aug.CROP_ONLY, "shift": aug.SHIFT}


@dataclass
class TrainConfig:
    """Every setting of a pretraining run; the defaults are the ``metaworld-cpu`` preset."""

    data_path: str = ""  # dataset root; layouts in video2reward.data
    output_dir: str = "outputs/reward_model"  # checkpoints, logs and evaluation
    tasks: list[str] | None = None  # only these task folders (default: all)
    cache_dir: str | None = None  # decoded-frame cache (default: <data_path>/.v2r_cache)
    backbone: str = "convnet_spatial"  # a key of video2reward.model.BACKBONES
    image_size: int | None = None  # frame size fed to the model (default: the backbone's, 84 for convnet)
    resize: str = "fit"  # frames of another size: fit (bicubic) | epic (bilinear + centre crop, the released EPIC input)
    head: str = "distance"  # head input, a key of video2reward.model.HEAD_INPUTS ("concat": the released layout)
    batch_size: int = 1024  # triplets per optimiser step and process (the head is cheap; frames are what cost)
    steps: int | None = 2000  # optimiser steps; None: derived from `epochs`
    epochs: float = 1.0  # used when steps is None; one epoch = one triplet per training frame
    time_limit: float | None = None  # stop after this many minutes of training (then save + evaluate as usual)
    lr: float = 3e-4  # AdamW learning rate (EPIC script 2e-4, released Meta-World pretraining 5e-5)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    warmup_steps: int | None = 100  # linear warm-up from 0; None: from warmup_epochs
    warmup_epochs: float = 0.0
    lr_schedule: str = "cosine"  # after warm-up: constant | cosine (decays to 0 at the last step)
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    randomize: bool = True  # randomised triplet endpoints (else init = first, goal = last frame)
    fixed_fraction: float = 0.0  # with randomize: share of triplets that still get fixed endpoints
    max_gap: int | None = None  # randomised endpoints: goal - init < max_gap (None: whole trajectory)
    label_std: str | float = 0.025  # a constant std, or "delta": sqrt(1/(goal-init))
    sigma_power: float = 0.0  # weight each triplet's KL by sigma^p (detached); 2 = beta-NLL with beta 1, 0 = plain KL
    rank_weight: float | None = None  # weight of the order loss on each group's K frames (None: RANK_WEIGHT with shared embedding, else 0)
    rank_temperature: float = 0.02  # margin scale of that loss (progress units)
    negatives: bool = False  # add negatives (middle frame from another video) toward N(-1, 0.1)
    negative_weight: float = NEGATIVE_WEIGHT
    augment: bool = True  # augment training frames with `augmentation` (one geometric draw per triplet/group)
    augmentation: str = "shift"  # metaworld (crop 0.8-1) | epic (crop 0.2-1 + flip) | crop (crop only) | shift (+-shift_pixels)
    shift_pixels: int = 2  # augmentation "shift": largest translation in pixels
    shared_embedding: bool = True  # encode K frames per trajectory once, build many triplets from them
    frames_per_traj: int = 16  # shared embedding: K frames encoded per trajectory
    trajs_per_batch: int = 16  # shared embedding: trajectories per step (batch_size triplets spread over them)
    balance_tasks: bool = True  # draw a task uniformly, then one of its trajectories
    precision: str = "auto"  # auto (bf16 only where the hardware runs it natively) | bf16 | fp32 (--no_amp)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 1  # background processes preparing (sampling + augmenting) batches; 0 = inline
    threads: int | None = None  # torch intra-op threads of the training process (None: torch's default)
    eval_every: int = 0  # evaluate on the test split every N steps (0: only at the end)
    save_every: int = 0  # also write checkpoint_<step>.pth every N steps (0: only checkpoint_last.pth)
    keep_last: int = 3  # periodic checkpoint_<step>.pth files kept (older ones are deleted)
    save_minutes: float = 5.0  # rewrite checkpoint_last.pth every N minutes of training (0: off)
    log_every: int = 10  # train_log.csv / TensorBoard interval in steps
    resume: str | None = None  # checkpoint to continue from; "auto": output_dir/checkpoint_last.pth if present
    distributed: bool = False  # DDP under torchrun (gloo on CPU, nccl on GPU)
    push_to_hub: str | None = None  # Hugging Face repo id to upload checkpoint_last.pth to at the end
    normalize_prediction: bool = True  # labels are progress fractions in [0, 1]; always on (see docs)
    final_eval: bool = True  # evaluate on the test split (train split if none) at the end
    progress_bar: bool = True

    def __post_init__(self) -> None:
        self.label_std = parse_label_std(self.label_std)
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.head not in HEAD_INPUTS:
            raise ValueError(f"head must be one of {', '.join(HEAD_INPUTS)}, got {self.head!r}")
        for name, low in (("batch_size", 1), ("frames_per_traj", 2), ("trajs_per_batch", 1), ("log_every", 1),
                          ("keep_last", 1), ("num_workers", 0), ("eval_every", 0), ("save_every", 0),
                          ("image_size", 8), ("steps", 1), ("warmup_steps", 0), ("max_gap", 2), ("threads", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, positive in (("lr", True), ("epochs", True), ("rank_temperature", True), ("time_limit", True),
                               ("weight_decay", False), ("warmup_epochs", False), ("grad_clip", False),
                               ("save_minutes", False), ("negative_weight", False)):
            value = getattr(self, name)
            if value is not None and not (value > 0 if positive else value >= 0):
                raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
        if not 0 <= self.fixed_fraction <= 1:
            raise ValueError(f"fixed_fraction must be in [0, 1], got {self.fixed_fraction}")
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {self.resize!r}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)}, got {self.augmentation!r}")
        if self.sigma_power < 0:
            raise ValueError(f"sigma_power must be >= 0, got {self.sigma_power}")
        if self.rank_weight is None:
            self.rank_weight = RANK_WEIGHT if self.shared_embedding else 0.0
        self.rank_weight = float(self.rank_weight)
        if self.rank_weight < 0 or self.rank_temperature <= 0:
            raise ValueError(f"rank_weight must be >= 0 and rank_temperature > 0, got {self.rank_weight}, {self.rank_temperature}")
        if self.rank_weight and not self.shared_embedding:
            raise ValueError("rank_weight needs shared_embedding (the order loss runs on each group's K frames)")
        if self.shift_pixels < 0:
            raise ValueError(f"shift_pixels must be >= 0, got {self.shift_pixels}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.normalize_prediction:
            raise ValueError("normalize_prediction=False is not supported: progress labels are fractions in [0, 1]")


# Named recipes; explicit flags override them. "metaworld-cpu" is TrainConfig's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "metaworld-cpu": {},
    "metaworld-paper": dict(backbone="resnet18_84", head="concat", batch_size=256, steps=10_000, lr=5e-5, warmup_steps=500,
                            lr_schedule="constant", randomize=True, label_std="delta", grad_clip=1.0,
                            augmentation="metaworld", shared_embedding=False),
    "epic": dict(backbone="resnet34_224", head="concat", batch_size=256, lr=2e-4, lr_schedule="constant", label_std=0.1,
                 negatives=True, augmentation="epic", grad_clip=0.0, shared_embedding=False, steps=None, epochs=100,
                 warmup_epochs=1.0, warmup_steps=None, balance_tasks=False),
}
# the released EPIC pipeline's input: 224 px by bilinear resize + centre crop (`epic` keeps our bicubic fit)
PRESETS["epic-release"] = {**PRESETS["epic"], "resize": "epic"}


# ------------------------------------------------------------------------------------ one step
class ProgressObjective(nn.Module):
    """Wraps the model so one ``forward`` (what DDP hooks) encodes all frames once and runs the head
    on index triplets into them."""

    def __init__(self, model: ProgressModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, init: torch.Tensor, current: torch.Tensor,
                goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model.features(frames)
        return self.model.head(f[init], f[current], f[goal])


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int | None = None,
          schedule: str = "constant") -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up over ``warmup_steps``, then
    constant, or a cosine decay that reaches 0 after ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "cosine" and total_steps:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return base_lr


def augmentation_config(cfg: TrainConfig) -> aug.AugmentConfig:
    """The named augmentation of ``cfg``, with ``shift_pixels`` applied to the shift recipe."""
    base = AUGMENTATIONS[cfg.augmentation]
    return dataclasses.replace(base, shift=cfg.shift_pixels) if cfg.augmentation == "shift" else base


def prepare_batch(sampler: TripletSampler, step: int, rank: int, cfg: TrainConfig, image_size: int) -> TripletBatch:
    """Batch ``step`` of process ``rank``, augmented; deterministic in ``(seed, rank, step)``."""
    generator = sampler.generator_at(step, rank)
    batch = sampler.sample(generator)
    if cfg.augment:
        batch = batch._replace(frames=aug.augment(batch.frames, augmentation_config(cfg), image_size, generator))
    return batch


def train_step(objective: nn.Module, optimizer: torch.optim.Optimizer, batch: TripletBatch, cfg: TrainConfig,
               device: torch.device, amp: bool = False) -> dict[str, float]:
    """One AdamW step on a (prepared) batch, under bf16 autocast if ``amp``; returns scalar metrics."""
    batch = batch.to(device)
    b = batch.init.shape[0]
    init, current, goal = batch.init, batch.current, batch.goal
    if cfg.negatives:
        init, current, goal = torch.cat([init, init]), torch.cat([current, batch.negative]), torch.cat([goal, goal])
    n = init.shape[0]
    if cfg.rank_weight:  # every frame of a group between the group's first and last frame
        g, k = batch.frames.shape[:2]
        first = (torch.arange(g, device=device) * k).repeat_interleave(k)
        init = torch.cat([init, first])
        current = torch.cat([current, torch.arange(g * k, device=device)])
        goal = torch.cat([goal, first + k - 1])
    objective.train()
    with autocast(device, amp):
        mu, sigma = objective(batch.flat_frames, init, current, goal)
    loss = progress_kl_loss(mu[:b], sigma[:b], batch.label_mean, batch.label_std, cfg.sigma_power)
    kl = progress_kl_loss(mu[:b].detach(), sigma[:b].detach(), batch.label_mean, batch.label_std) \
        if cfg.sigma_power else loss
    metrics = {}
    if cfg.negatives:
        kl_neg = negative_kl_loss(mu[b:n], sigma[b:n])
        loss = loss + cfg.negative_weight * kl_neg
        metrics["kl_negative"] = kl_neg.item()
    if cfg.rank_weight:
        rank = ranking_loss(mu[n:].view(g, k), cfg.rank_temperature)
        loss = loss + cfg.rank_weight * rank
        metrics["rank"] = rank.item()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    with torch.no_grad():
        mae = (mu[:b].detach().float() - batch.label_mean).abs().mean().item()
    metrics.update(loss=loss.item(), kl=kl.item(), mae=mae, sigma=sigma[:b].detach().float().mean().item(),
                   grad_norm=float(grad_norm))
    return metrics


class _StepBatches(torch.utils.data.Dataset):
    """Map-style view ``step -> prepared batch`` so a DataLoader can prefetch in worker processes."""

    def __init__(self, sampler: TripletSampler, rank: int, cfg: TrainConfig, image_size: int) -> None:
        self.sampler, self.rank, self.cfg, self.image_size = sampler, rank, cfg, image_size

    def __getitem__(self, step: int) -> TripletBatch:
        return prepare_batch(self.sampler, step, self.rank, self.cfg, self.image_size)


def _single_thread_worker(_: int) -> None:
    torch.set_num_threads(1)


def batch_stream(sampler: TripletSampler, start: int, stop: int, rank: int, cfg: TrainConfig,
                 image_size: int) -> Iterator[TripletBatch]:
    """Prepared batches for steps ``start .. stop-1`` in order (prefetched when ``num_workers > 0``)."""
    if cfg.num_workers <= 0:
        return (prepare_batch(sampler, s, rank, cfg, image_size) for s in range(start, stop))
    loader = torch.utils.data.DataLoader(_StepBatches(sampler, rank, cfg, image_size), batch_size=None,
                                         sampler=range(start, stop), num_workers=cfg.num_workers,
                                         worker_init_fn=_single_thread_worker, prefetch_factor=2)
    return iter(loader)


# ------------------------------------------------------------------------------------ run setup
@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _setup_distributed(cfg: TrainConfig) -> tuple[_Dist, torch.device]:
    want_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.distributed and "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        info = _Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)), True)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo")
        device = torch.device(f"cuda:{info.local_rank}") if want_cuda else torch.device("cpu")
        if want_cuda:
            torch.cuda.set_device(device)
        return info, device
    if cfg.distributed:
        print("[video2reward] --distributed without a multi-process torchrun launch: training in one process")
    return _Dist(), torch.device("cuda" if want_cuda and cfg.device == "auto" else ("cpu" if cfg.device == "auto" else cfg.device))


def _load_split(cfg: TrainConfig, split: str, image_size: int, info: _Dist) -> VideoDataset | None:
    """The decoded ``split``; rank 0 decodes (and caches) it first, the other ranks then read the cache.
    A missing or unusable test split is reported and gives ``None`` (evaluation falls back to train)."""
    if split != "train":
        try:
            discover_trajectories(cfg.data_path, split, cfg.tasks)
        except DataError as exc:
            if info.is_main:
                print(f"[video2reward] no usable '{split}' split ({exc}); evaluating on the train split")
            return None
    data, error = None, None
    if info.is_main:
        try:
            data = load_dataset(cfg.data_path, split, image_size, cfg.tasks, cfg.cache_dir, resize=cfg.resize)
        except Exception as exc:  # re-raised below, after releasing the ranks waiting for the cache
            error = exc
    info.barrier()
    if error is not None:
        raise error
    if not info.is_main:
        data = load_dataset(cfg.data_path, split, image_size, cfg.tasks, cfg.cache_dir, verbose=False, resize=cfg.resize)
    return data


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _plain(value: Any) -> Any:
    """Config values as weights_only-loadable primitives."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Logger:
    """CSV + TensorBoard scalars (rank 0). Rows after ``start_step`` (left by a run that went further
    than the checkpoint it is resumed from, or by an earlier run in the same folder) are dropped."""

    def __init__(self, out: Path, enabled: bool, start_step: int = 0) -> None:
        self.out, self.enabled, self._tb = out, enabled, None
        if enabled:
            self._truncate(start_step)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1)
            except ImportError:
                print("[video2reward] tensorboard not installed: CSV logs only")

    def _truncate(self, step: int) -> None:
        for path in sorted(self.out.glob("*_log*.csv")):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if not rows:
                continue
            kept = [rows[0]] + [r for r in rows[1:] if r and (_int_or_none(r[0]) or 0) <= step]
            if len(kept) < len(rows):
                text = StringIO()
                csv.writer(text).writerows(kept)
                atomic_write_text(path, text.getvalue())
                print(f"[video2reward] {path.name}: dropped {len(rows) - len(kept)} row(s) after step {step}")

    def log(self, name: str, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        path = self.out / f"{name}_log.csv"
        row = {"step": step, **metrics}
        new = not path.exists()
        if not new:
            with open(path, newline="") as f:
                header = next(csv.reader(f), [])
            if header != list(row):
                new = True
                path = self.out / f"{name}_log_{len(list(self.out.glob(f'{name}_log*.csv')))}.csv"
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new or path.stat().st_size == 0:
                writer.writeheader()
            writer.writerow(row)
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(f"{name}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _past(deadline: float, info: _Dist, device: torch.device) -> bool:
    """Whether rank 0's clock passed ``deadline`` (all ranks agree, so they stop at the same step)."""
    flag = torch.tensor([float(time.perf_counter() > deadline)], device=device)
    if info.enabled:
        dist.broadcast(flag, 0)
    return bool(flag.item())


def _agreed_signal(signum: int | None, device: torch.device) -> int | None:
    """The largest signal number any rank received (0 = none), so that all ranks stop together."""
    flag = torch.tensor([signum or 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def _eval_metrics(results: dict[str, Any]) -> dict[str, float]:
    row = {"voc": results["overall"]["voc"], "mae": results["overall"]["mae"]}
    for task, s in results["tasks"].items():
        row[f"voc/{task}"] = s["voc"]
    return row


# ------------------------------------------------------------------------------------ the run
def pretrain(config: TrainConfig) -> Path:
    """Train a progress model as configured; returns the path of ``checkpoint_last.pth``.

    Single process by default; under ``torchrun ... --distributed`` every process trains on its
    own batches with DDP gradient averaging and only rank 0 writes files.
    """
    cfg = config
    if not cfg.data_path:
        raise DataError("no data path given (--data_path)")
    info, device = _setup_distributed(cfg)
    out = Path(cfg.output_dir).expanduser()
    try:
        return _run(cfg, info, device, out)
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _resume_path(cfg: TrainConfig, out: Path, is_main: bool) -> Path | None:
    last = out / "checkpoint_last.pth"
    if cfg.resume is None:
        if is_main and last.is_file():
            print(f"[video2reward] {last} exists; starting over at step 0 (continue it instead with --resume)")
        return None
    if cfg.resume == "auto":
        if not last.is_file():
            if is_main:
                print(f"[video2reward] --resume: nothing to resume ({last} does not exist); starting at step 0")
            return None
        return last
    path = Path(cfg.resume).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--resume checkpoint not found: {path}")
    return path


class TrainingStopped(Exception):
    """Training was stopped by a signal after saving ``checkpoint_last.pth``; rerun with ``--resume``."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class _StopSignals:
    """While active, SIGTERM / SIGINT only set :attr:`signum`: the loop finishes its step, saves and
    stops. A second Ctrl-C interrupts at once. Inactive outside the main thread (signals cannot be
    caught there)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def provenance(cfg: TrainConfig, train_set: VideoDataset, test_set: VideoDataset | None, image_size: int,
               step: int, total_steps: int) -> dict[str, Any]:
    """Where a checkpoint's weights come from, stored beside them (plain types, weights_only-loadable):
    the data, its tasks and trajectory counts per split, the image size and the steps trained."""
    counts = {task: {"train": n} for task, n in sorted(Counter(train_set.tasks).items())}
    for task, n in Counter(test_set.tasks if test_set is not None else []).items():
        counts.setdefault(task, {})["test"] = n
    return {"data_path": str(Path(cfg.data_path).expanduser().resolve()), "tasks": list(train_set.task_names),
            "trajectories": counts, "image_size": int(image_size), "backbone": cfg.backbone, "head": cfg.head,
            "steps": int(step), "total_steps": int(total_steps), "seed": int(cfg.seed),
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


class SaveError(RuntimeError):
    """A checkpoint could not be written (disk full, no permission); the previous one is intact."""


def _prune(out: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` periodic ``checkpoint_<step>.pth`` files."""
    periodic = sorted((int(m.group(1)), path) for path in out.glob("checkpoint_*.pth")
                      if (m := re.fullmatch(r"checkpoint_(\d+)\.pth", path.name)))
    for _, path in periodic[:-keep]:
        path.unlink(missing_ok=True)


def _run(cfg: TrainConfig, info: _Dist, device: torch.device, out: Path) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    precision = resolve_precision(cfg.precision, device)
    if info.is_main:
        print(f"[video2reward] {precision.describe()}", flush=True)
    model = ProgressModel(cfg.backbone, cfg.image_size, head=cfg.head, amp=precision.amp,
                          channels_last=precision.channels_last).to(device)
    image_size = model.image_size
    train_set = _load_split(cfg, "train", image_size, info)
    test_set = _load_split(cfg, "test", image_size, info) if (cfg.final_eval or cfg.eval_every) else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(train_set.num_frames / cfg.batch_size))
    total_steps = int(cfg.steps) if cfg.steps is not None else max(1, math.ceil(cfg.epochs * steps_per_epoch))
    warmup = int(cfg.warmup_steps) if cfg.warmup_steps is not None else round(cfg.warmup_epochs * steps_per_epoch)

    step = 0
    resume_from = _resume_path(cfg, out, info.is_main)
    if resume_from is not None:
        ckpt = read_checkpoint(resume_from)
        ckpt_cfg, state_dict = split_checkpoint(ckpt, str(resume_from))
        if ckpt_cfg != model.config:
            raise ValueError(f"{resume_from}: checkpoint holds {ckpt_cfg} but the run builds {model.config}")
        load_state_dict_strict(model, state_dict, str(resume_from))
        if "optimizer" not in ckpt or "step" not in ckpt:
            raise ValueError(f"{resume_from}: has no optimizer/step state, cannot resume (it is a weights-only file)")
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        if "rng" in ckpt:
            _set_rng_state(ckpt["rng"], device)
        if info.is_main:
            saved_at = (ckpt.get("provenance") or {}).get("saved_at") or datetime.fromtimestamp(
                resume_from.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
            print(f"[video2reward] resumed from {resume_from}: step {step} of {total_steps}, saved {saved_at}")

    objective: nn.Module = ProgressObjective(model)
    if info.enabled:
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = TripletSampler(train_set, cfg.batch_size, cfg.randomize, cfg.max_gap, cfg.label_std, cfg.shared_embedding,
                             cfg.frames_per_traj, cfg.trajs_per_batch, cfg.balance_tasks, cfg.seed, cfg.fixed_fraction)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    logger = _Logger(out, info.is_main, step)
    if info.is_main:
        atomic_write_json(out / "config.json", {k: _plain(v) for k, v in asdict(cfg).items()})
        print(f"[video2reward] train: {train_set}; test: {test_set if test_set is not None else 'none'}")
        print(f"[video2reward] {total_steps} steps x {cfg.batch_size} triplets x {info.world_size} process(es) "
              f"({steps_per_epoch} steps/epoch), {cfg.backbone} at {image_size}px on {device}, "
              f"{'shared-embedding' if cfg.shared_embedding else 'per-triplet'} batches, {precision.name}")

    def save(path: Path, **extra: Any) -> None:
        origin = {**provenance(cfg, train_set, test_set, image_size, step, total_steps), **extra}
        try:
            save_reward_model(model, path, optimizer=optimizer.state_dict(), step=step, rng=_rng_state(device),
                              train_config={k: _plain(v) for k, v in asdict(cfg).items()}, provenance=origin)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as "RuntimeError: ... unexpected pos"
            free = shutil.disk_usage(path.parent).free / 2**20
            raise SaveError(f"{path}: could not write the checkpoint at step {step} ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:120]}); {free:.0f} MiB free on that disk; the previous "
                            f"checkpoint is intact") from None

    last = out / "checkpoint_last.pth"
    bar = tqdm(total=total_steps, initial=step, desc="pretraining", unit="step", dynamic_ncols=True,
               disable=not (info.is_main and cfg.progress_bar))
    tic, tic_step = time.perf_counter(), step
    deadline = time.perf_counter() + 60 * cfg.time_limit if cfg.time_limit else None
    next_save = time.perf_counter() + 60 * cfg.save_minutes if cfg.save_minutes else None
    sums: dict[str, float] = {}
    with _StopSignals() as stop:
        try:
            batches = batch_stream(sampler, step, total_steps, info.rank, cfg, image_size)
            while step < total_steps and stop.signum is None:
                try:
                    batch = next(batches)
                except Exception:
                    if stop.signum is not None:  # a data worker got the same Ctrl-C and died: not an error
                        break
                    raise
                lr = lr_at(step, cfg.lr, warmup, total_steps, cfg.lr_schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                metrics = train_step(objective, optimizer, batch, cfg, device, precision.amp)
                step += 1
                if info.enabled:  # every rank must stop after the same step
                    stop.signum = _agreed_signal(stop.signum, device)
                bar.update(1)
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
                if step % cfg.log_every == 0 or step == total_steps:
                    n = step - tic_step
                    means = {key: value / n for key, value in sums.items()}
                    rate = n * cfg.batch_size * info.world_size / max(time.perf_counter() - tic, 1e-9)
                    logger.log("train", step, {**means, "lr": lr, "epoch": step / steps_per_epoch, "triplets_per_s": rate})
                    bar.set_postfix(loss=f"{means['loss']:.3f}", mae=f"{means['mae']:.3f}", refresh=False)
                    tic, tic_step, sums = time.perf_counter(), step, {}
                if info.is_main and cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps and test_set is not None:
                    eval_start = time.perf_counter()
                    results = evaluate(model, test_set)
                    if deadline is not None:  # periodic evaluation does not count as training time
                        deadline += time.perf_counter() - eval_start
                    logger.log("eval", step, _eval_metrics(results))
                    bar.write(f"[video2reward] step {step}: test VOC {results['overall']['voc']:.4f}, "
                              f"MAE {results['overall']['mae']:.4f}")
                if info.is_main and cfg.save_every and step % cfg.save_every == 0:
                    save(out / f"checkpoint_{step}.pth")
                    _prune(out, cfg.keep_last)
                    save(last)
                elif info.is_main and next_save is not None and time.perf_counter() >= next_save:
                    save(last)
                if next_save is not None and time.perf_counter() >= next_save:
                    next_save = time.perf_counter() + 60 * cfg.save_minutes
                if deadline is not None and _past(deadline, info, device) and step < total_steps:
                    if info.is_main:
                        bar.write(f"[video2reward] time limit of {cfg.time_limit:g} min reached at step {step}")
                    break
        finally:
            bar.close()
        if stop.signum is not None:
            name = signal.Signals(stop.signum).name
            if info.is_main:
                save(last)
            logger.close()
            raise TrainingStopped(stop.signum, f"stopped by {name} at step {step} of {total_steps}; saved {last}")
    if info.is_main:
        save(last)
        print(f"[video2reward] saved {last}")
    info.barrier()
    if info.is_main and cfg.final_eval:
        eval_set, split = (test_set, "test") if test_set is not None else (train_set, "train")
        results = evaluate(model, eval_set, progress=cfg.progress_bar)
        logger.log("eval", step, _eval_metrics(results))
        write_evaluation(results, out, split=split, step=step, checkpoint=str(last))
        save(last, heldout_voc=float(results["overall"]["voc"]), heldout_split=split)  # provenance gets the VOC
        print(f"[video2reward] {split} split evaluation (metrics.json, progress.png in {out}):\n{format_table(results)}")
    logger.close()
    if info.is_main and cfg.push_to_hub:
        from .hub import push_to_hub
        push_to_hub(last, cfg.push_to_hub)
    return last


# ------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    """The flags of the released ``main_ours.py`` plus ours. Unset flags take the preset's value."""
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="main_ours.py", argument_default=argparse.SUPPRESS,
        description="Pretrain the PROGRESSOR progress model on expert videos.",
        epilog="Presets: " + "; ".join(f"{k}: {v or 'the defaults shown'}" for k, v in PRESETS.items()))
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--data_path", required=True, help="dataset root (Meta-World demos, EPIC-style frame folders or videos)")
    p.add_argument("--output_dir", help=f"checkpoints, logs, metrics (default {d.output_dir})")
    p.add_argument("--preset", choices=sorted(PRESETS), default="metaworld-cpu", help="named recipe (default metaworld-cpu)")
    p.add_argument("--tasks", nargs="+", help="only these task folders")
    p.add_argument("--cache_dir", help="decoded-frame cache (default <data_path>/.v2r_cache)")
    p.add_argument("--backbone", help=f"{' | '.join(BACKBONES)} (default {d.backbone})")
    p.add_argument("--image_size", type=int, help="model input size (default: the backbone's)")
    p.add_argument("--resize", choices=RESIZES, help="frames of another size: fit = bicubic resize + centre crop; "
                   f"epic = bilinear resize + centre crop, the released EPIC input (default {d.resize})")
    p.add_argument("--head", choices=sorted(HEAD_INPUTS), help="head input: concat = the three features (released layout); "
                   f"distance = + their log distances (default {d.head})")
    p.add_argument("--batch_size", type=int, help=f"triplets per step per process (default {d.batch_size})")
    p.add_argument("--steps", type=int, help=f"optimiser steps (default {d.steps}); overrides --epochs")
    p.add_argument("--time_limit", type=float, help="stop training after this many minutes (then save and evaluate)")
    p.add_argument("--epochs", type=float, help="training length in epochs (one triplet per training frame) when --steps is not given")
    p.add_argument("--lr", type=float, help=f"AdamW learning rate (default {d.lr})")
    p.add_argument("--weight_decay", type=float, help=f"AdamW weight decay (default {d.weight_decay})")
    p.add_argument("--warmup_steps", type=int, help=f"linear warm-up steps (default {d.warmup_steps})")
    p.add_argument("--warmup_epochs", type=float, help="linear warm-up in epochs (used when --warmup_steps is not given)")
    p.add_argument("--lr_schedule", choices=("constant", "cosine"), help=f"after warm-up: constant or cosine decay to 0 at --steps (default {d.lr_schedule})")
    p.add_argument("--grad_clip", type=float, help=f"gradient-norm clip, 0 = off (default {d.grad_clip})")
    p.add_argument("--normalize_prediction", action=bool_flag,
                   help="progress labels are fractions (mid-init)/(goal-init) in [0, 1]; always on, kept for the released flag set")
    p.add_argument("--randomize", action=bool_flag, help=f"randomised triplet endpoints; --no-randomize: first/last frame (default {d.randomize})")
    p.add_argument("--fixed_fraction", type=float, help=f"with --randomize: share of triplets that keep fixed endpoints (default {d.fixed_fraction})")
    p.add_argument("--max_gap", type=int, help="randomised endpoints: goal - init < max_gap")
    p.add_argument("--label_std", help=f"label std: 'delta' = sqrt(1/(goal-init)) or a number such as 0.1 (default {d.label_std})")
    p.add_argument("--sigma_power", type=float, help="weight each triplet's KL by sigma^P (detached, batch mean 1): hard triplets "
                   f"cannot be dodged with a wide sigma; 2 = beta-NLL with beta 1 (default {d.sigma_power}: plain KL)")
    p.add_argument("--rank_weight", type=float, help="shared embedding: add this weight times a pairwise order loss on each group's K "
                   f"frames (first/last frame as endpoints), which asks for time order, what VOC measures "
                   f"(default {RANK_WEIGHT:g} with shared-embedding batches, else 0)")
    p.add_argument("--rank_temperature", type=float, help=f"margin scale of the order loss (default {d.rank_temperature})")
    p.add_argument("--negatives", action=bool_flag, help="add negatives (middle frame from another video, target N(-1, 0.1), weight 0.05)")
    p.add_argument("--negative_weight", type=float, help=f"loss weight of the negatives (default {d.negative_weight})")
    p.add_argument("--augment", action=bool_flag, help=f"augment training frames, see --augmentation (default {d.augment})")
    p.add_argument("--augmentation", choices=sorted(AUGMENTATIONS), help=f"metaworld: photometric + crop 0.8-1; epic: + crop 0.2-1 and flips; crop: crop only; "
                        f"shift: +-N px translation, N = --shift_pixels (default {d.augmentation})")
    p.add_argument("--shift_pixels", type=int, help=f"largest translation of the shift augmentation (default {d.shift_pixels})")
    p.add_argument("--shared_embedding", action=bool_flag, help=f"encode K frames per trajectory once, many triplets from them (default {d.shared_embedding})")
    p.add_argument("--frames_per_traj", type=int, help=f"shared embedding: frames per trajectory K (default {d.frames_per_traj})")
    p.add_argument("--trajs_per_batch", type=int, help=f"shared embedding: trajectories per step (default {d.trajs_per_batch})")
    p.add_argument("--balance_tasks", action=bool_flag, help=f"draw tasks uniformly, then trajectories (default {d.balance_tasks})")
    add_precision_flag(p, default=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=f"seed of model init and batch sampling (default {d.seed})")
    p.add_argument("--device", help=f"auto | cpu | cuda | cuda:N (default {d.device})")
    p.add_argument("--num_workers", type=int, help=f"batch-preparing worker processes, 0 = inline (default {d.num_workers})")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; 1 is faster on a busy CPU)")
    p.add_argument("--eval_every", type=int, help="evaluate on the test split every N steps (default 0: only at the end)")
    p.add_argument("--no_progress_bar", dest="progress_bar", action="store_false", help="no tqdm bars (for log files)")
    p.add_argument("--no_final_eval", dest="final_eval", action="store_false", help="skip the evaluation after training")
    p.add_argument("--save_every", type=int, help="also write checkpoint_<step>.pth every N steps")
    p.add_argument("--keep_last", type=int, help=f"periodic checkpoint_<step>.pth files kept (default {d.keep_last})")
    p.add_argument("--save_minutes", type=float, help="rewrite checkpoint_last.pth every N minutes of training, "
                   f"so a killed run loses at most that much; 0 = off (default {d.save_minutes:g}); "
                   "SIGTERM / Ctrl-C always save")
    p.add_argument("--log_every", type=int, help=f"log interval in steps (default {d.log_every})")
    p.add_argument("--resume", nargs="?", const="auto",
                   help="continue exactly from a checkpoint (no value: <output_dir>/checkpoint_last.pth if it exists)")
    p.add_argument("--distributed", action="store_true", help="DDP; launch with torchrun --nproc_per_node=N")
    p.add_argument("--push_to_hub", metavar="REPO", help="upload checkpoint_last.pth to this Hugging Face repo at the end")
    return p


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Preset values, overridden by the flags given on the command line."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    values = dict(PRESETS[args.pop("preset", "metaworld-cpu")])
    if "steps" not in args and ("epochs" in args):
        values["steps"] = None  # --epochs given alone: let it define the length
    if "warmup_steps" not in args and "warmup_epochs" in args:
        values["warmup_steps"] = None
    values.update(args)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig(**{k: v for k, v in values.items() if k in known})
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> Path:
    """Entry point of ``Video2Reward/main_ours.py``: errors end it with one line (see
    :mod:`video2reward.errors`); SIGTERM / Ctrl-C save ``checkpoint_last.pth`` and exit 128 + signal."""
    cfg = config_from_args(argv)
    with one_line_errors():
        try:
            return pretrain(cfg)
        except TrainingStopped as stopped:
            print(f"[video2reward] {stopped} (continue with --resume)", flush=True)
            raise SystemExit(128 + stopped.signum) from None


__all__ = ["PRESETS", "RANK_WEIGHT", "ProgressObjective", "SaveError", "TrainConfig", "TrainingStopped", "provenance", "batch_stream", "build_parser", "config_from_args",
           "lr_at", "main", "prepare_batch", "pretrain", "train_step"]

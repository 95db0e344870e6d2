"""Pretraining of a reward model (or of another model of :data:`video2reward.methods.MODELS`, such as
VIPER's frame tokenizer) on expert videos: the training loop. Its configuration and
command line are :mod:`video2reward.config`, one optimiser step of each method is
:mod:`video2reward.steps` (both re-exported here).

The method (``TrainConfig.method``) gives the model, the batch sampler and the loss
(:func:`~video2reward.steps.method_parts`): PROGRESSOR's triplets with the KL loss, or a baseline's
frame tuples with its own loss (:mod:`video2reward.methods`). Everything else is shared: data and
its frame cache, augmentation (photometric per frame, one crop per triplet / tuple), AdamW with
warm-up then constant or cosine, gradient clipping, batches that are a pure function of
``(seed, rank, step)``, checkpoints, resume, logging, time limit, DDP and the evaluation.

Outputs in ``output_dir`` (rank 0 only): ``checkpoint_last.pth`` (+ the last ``keep_last``
``checkpoint_<step>.pth``), readable by :func:`video2reward.load_reward_model` and resumable exactly
with ``--resume``; ``train_log.csv``, ``eval_log.csv``, TensorBoard events in ``tb/``,
``config.json``, and after training the model's held-out evaluation
(:meth:`~video2reward.methods.PretrainedModel.evaluate`: a reward model's ``metrics.json`` +
``progress.png``, the tokenizer's ``metrics.json`` + ``reconstructions.png``).

Kill-safety: ``checkpoint_last.pth`` is rewritten (atomically) every ``save_minutes`` of training
and when SIGTERM / SIGINT arrive (the step in progress finishes first), so a killed run loses at
most ``save_minutes``. Every checkpoint carries its provenance (data, tasks, demo counts, steps,
held-out VOC or the model's own metrics once evaluated), see :func:`provenance`.
"""
from __future__ import annotations

import csv
import math
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from .progress import progress as tqdm

from .checkpoint import read_checkpoint, save_reward_model, split_checkpoint, load_state_dict_strict
from .config import (AUGMENTATIONS, METHOD_BATCH_SIZES, PRESETS, RANK_WEIGHT, TrainConfig, augmentation_config,
                     build_parser, config_from_args)
from .data import DataError, VideoDataset, discover_trajectories, load_dataset, recorded_image_size
from .errors import one_line_errors
from .io import atomic_write_json, atomic_write_text
from .methods.base import TupleObjective, optimizer_step, tuple_train_step
from .methods.progressor import ProgressObjective, train_step
from .precision import resolve_precision
from .steps import Batch, build_method, lr_at, method_parts, prepare_batch
from .triplets import TripletSampler

class _StepBatches(torch.utils.data.Dataset):
    """Map-style view ``step -> prepared batch`` so a DataLoader can prefetch in worker processes."""

    def __init__(self, sampler: TripletSampler, rank: int, cfg: TrainConfig, image_size: int) -> None:
        self.sampler, self.rank, self.cfg, self.image_size = sampler, rank, cfg, image_size

    def __getitem__(self, step: int) -> Batch:
        return prepare_batch(self.sampler, step, self.rank, self.cfg, self.image_size)


def _single_thread_worker(_: int) -> None:
    torch.set_num_threads(1)


def batch_stream(sampler: TripletSampler, start: int, stop: int, rank: int, cfg: TrainConfig,
                 image_size: int) -> Iterator[Batch]:
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


# ------------------------------------------------------------------------------------ the run
def pretrain(config: TrainConfig) -> Path:
    """Train the model ``config`` names as configured; returns the path of ``checkpoint_last.pth``.

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
            "trajectories": counts, "image_size": int(image_size), "method": cfg.method, "backbone": cfg.backbone,
            "head": cfg.head,
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
    if cfg.image_size is None and (recorded := recorded_image_size(cfg.data_path, cfg.tasks)):
        cfg = replace(cfg, image_size=recorded)  # the frames' own size, not an upscaled copy
        if info.is_main:
            print(f"[video2reward] image size {recorded}px: the size {cfg.data_path} records (metadata.json)")
    model = build_method(cfg, precision).to(device)
    image_size = model.image_size
    train_set = _load_split(cfg, "train", image_size, info)
    model.fit_data(train_set)  # settings a method reads off the data (HOLD-R's horizon)
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

    parts = method_parts(cfg, model, train_set)
    objective, sampler = parts.objective, parts.sampler
    if info.enabled:
        # a baseline may hold parts trained only online (Rank2Reward's discriminator): no gradient here
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                                        find_unused_parameters=parts.find_unused_parameters)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    logger = _Logger(out, info.is_main, step)
    if info.is_main:
        atomic_write_json(out / "config.json", {k: _plain(v) for k, v in asdict(cfg).items()})
        print(f"[video2reward] train: {train_set}; test: {test_set if test_set is not None else 'none'}")
        print(f"[video2reward] {total_steps} steps x {cfg.batch_size} {parts.unit} x {info.world_size} process(es) "
              f"({steps_per_epoch} steps/epoch), {model.summary()} on {device}, {parts.batches} batches, "
              f"{precision.name}")

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
    rate_key = f"{parts.unit.split()[-1]}_per_s"  # triplets_per_s, tuples_per_s
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
                metrics = parts.step(objective, optimizer, batch, device, precision.amp, cfg.grad_clip)
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
                    logger.log("train", step, {**means, "lr": lr, "epoch": step / steps_per_epoch, rate_key: rate})
                    bar.set_postfix({k: f"{means[k]:.3f}" for k in ("loss", "mae") if k in means}, refresh=False)
                    tic, tic_step, sums = time.perf_counter(), step, {}
                if info.is_main and cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps and test_set is not None:
                    eval_start = time.perf_counter()
                    held_out = model.evaluate(test_set).metrics
                    if deadline is not None:  # periodic evaluation does not count as training time
                        deadline += time.perf_counter() - eval_start
                    logger.log("eval", step, held_out)
                    bar.write(f"[video2reward] step {step}: test " + ", ".join(
                        f"{k.upper()} {v:.4f}" for k, v in held_out.items() if "/" not in k))
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
        result = model.evaluate(eval_set, out, progress=cfg.progress_bar, split=split, step=step, checkpoint=str(last))
        logger.log("eval", step, result.metrics)
        save(last, **result.provenance, heldout_split=split)  # provenance gets the held-out metrics (VOC)
        print(f"[video2reward] {split} split evaluation (metrics.json and figures in {out}):\n{result.table}")
    logger.close()
    if info.is_main and cfg.push_to_hub:
        from .hub import push_to_hub
        push_to_hub(last, cfg.push_to_hub)
    return last


def main(argv: Sequence[str] | None = None, methods: bool = False) -> Path:
    """Entry point of ``Video2Reward/main_ours.py`` (``methods``: of ``Video2Reward/main.py``, which adds
    ``--method``): errors end it with one line (see :mod:`video2reward.errors`); SIGTERM / Ctrl-C save
    ``checkpoint_last.pth`` and exit 128 + signal."""
    cfg = config_from_args(argv, methods)
    with one_line_errors():
        try:
            return pretrain(cfg)
        except TrainingStopped as stopped:
            print(f"[video2reward] {stopped} (continue with --resume)", flush=True)
            raise SystemExit(128 + stopped.signum) from None


__all__ = ["AUGMENTATIONS", "METHOD_BATCH_SIZES", "PRESETS", "RANK_WEIGHT", "ProgressObjective", "SaveError", "TrainConfig",
           "TrainingStopped", "TupleObjective", "augmentation_config", "batch_stream", "build_method", "build_parser",
           "config_from_args", "lr_at", "main", "method_parts", "optimizer_step", "prepare_batch", "pretrain",
           "provenance", "train_step", "tuple_train_step"]

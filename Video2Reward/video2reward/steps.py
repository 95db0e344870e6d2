"""What the pretraining loop (:mod:`video2reward.train`) asks of the method it trains, and the
pieces every method's loop shares.

:func:`build_method` makes the fresh model; :func:`method_parts` is the method's own
:class:`~video2reward.methods.Pretraining` (its training forward, sampler and step function: PROGRESSOR's
triplets with the KL loss, or a baseline's frame tuples with its loss). Batches are prepared by
:func:`prepare_batch` (a pure function of ``(seed, rank, step)``), with the learning rate of :func:`lr_at`.
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any


from . import augment as aug
from .config import TrainConfig, augmentation_config
from .data import VideoDataset
from .methods import FrameTuples, PretrainedModel, Pretraining, Sampling, model_class
from .precision import Precision
from .triplets import TripletBatch, TripletSampler

Batch = TripletBatch | FrameTuples


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


def prepare_batch(sampler: TripletSampler, step: int, rank: int, cfg: TrainConfig, image_size: int) -> Batch:
    """Batch ``step`` of process ``rank``, augmented; deterministic in ``(seed, rank, step)``."""
    generator = sampler.generator_at(step, rank)
    batch = sampler.sample(generator)
    if cfg.augment:
        recipe = augmentation_config(cfg)
        batch = batch.with_frames(lambda frames: aug.augment(frames, recipe, image_size, generator))
    return batch


def method_settings(cfg: TrainConfig, cls: type[PretrainedModel]) -> Any:
    """The model's own settings (an instance of its ``training_class``, built from the run's flags), or ``None``."""
    settings_class = cls.training_class
    return None if settings_class is None else \
        settings_class(**{f.name: getattr(cfg, f.name) for f in fields(settings_class)})


def build_method(cfg: TrainConfig, precision: Precision) -> PretrainedModel:
    """The fresh model ``cfg`` trains (seeded by the caller)."""
    cls = model_class(cfg.method)
    return cls.for_training(cfg.model_config(), method_settings(cfg, cls), amp=precision.amp,
                            channels_last=precision.channels_last)


def method_parts(cfg: TrainConfig, model: PretrainedModel, train_set: VideoDataset) -> Pretraining:
    """What the method puts in the loop, given its own settings and what every sampler reads."""
    return model.pretraining(train_set, Sampling(cfg.batch_size, cfg.balance_tasks, cfg.seed),
                             method_settings(cfg, type(model)))


__all__ = ["Batch", "build_method", "lr_at", "method_parts", "method_settings", "prepare_batch"]

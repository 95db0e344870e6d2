"""One optimiser step of each method, and what a method puts in the training loop.

* PROGRESSOR: :class:`ProgressObjective` encodes all frames of a
  :class:`~video2reward.triplets.TripletBatch` once and runs the head on index triplets into them;
  :func:`train_step` minimises the KL loss (+ negatives, + the order loss).
* a baseline (:mod:`video2reward.methods`): :class:`TupleObjective` encodes all frames of the
  :class:`~video2reward.methods.FrameTuples` once and returns the method's loss on their features;
  :func:`tuple_train_step` minimises it.

Both go through :func:`optimizer_step` (backward, gradient-norm clip, AdamW step). Batches are
prepared by :func:`prepare_batch` (a pure function of ``(seed, rank, step)``), with the learning rate
of :func:`lr_at`. The loop around them is :mod:`video2reward.train`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from . import augment as aug
from .config import TrainConfig, augmentation_config
from .data import VideoDataset
from .losses import negative_kl_loss, progress_kl_loss, ranking_loss
from .methods import PROGRESSOR, FrameTuples, TupleSampler, build_model
from .model import ProgressModel, autocast
from .precision import Precision
from .triplets import TripletBatch, TripletSampler

Batch = TripletBatch | FrameTuples
StepFn = Callable[..., dict[str, float]]


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


def prepare_batch(sampler: TripletSampler, step: int, rank: int, cfg: TrainConfig, image_size: int) -> Batch:
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
    grad_norm = optimizer_step(optimizer, loss, cfg.grad_clip)
    with torch.no_grad():
        mae = (mu[:b].detach().float() - batch.label_mean).abs().mean().item()
    metrics.update(loss=loss.item(), kl=kl.item(), mae=mae, sigma=sigma[:b].detach().float().mean().item(),
                   grad_norm=grad_norm)
    return metrics


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> float:
    """Backward, clip the gradient norm of all optimised parameters at ``grad_clip`` (0: no clip),
    step; returns the norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    return float(grad_norm)


class TupleObjective(nn.Module):
    """A baseline's training forward (what DDP hooks): encode all frames of the tuples in one backbone
    call, then the method's loss on the features ``(B, K, 128)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, index: torch.Tensor, traj: torch.Tensor,
                length: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b, k = frames.shape[:2]
        f = self.model.features(frames.flatten(0, 1)).view(b, k, -1)
        return self.model.loss(f, FrameTuples(frames, index, traj, length))


def tuple_train_step(objective: nn.Module, optimizer: torch.optim.Optimizer, batch: FrameTuples, cfg: TrainConfig,
                     device: torch.device, amp: bool = False) -> dict[str, float]:
    """One AdamW step of a baseline on a (prepared) batch, under bf16 autocast if ``amp``; returns
    ``loss``, the method's metrics and ``grad_norm``."""
    batch = batch.to(device)
    objective.train()
    with autocast(device, amp):
        loss, metrics = objective(*batch)
    grad_norm = optimizer_step(optimizer, loss, cfg.grad_clip)
    return {"loss": loss.item(), **{k: float(v) for k, v in metrics.items()}, "grad_norm": grad_norm}


def build_method(cfg: TrainConfig, precision: Precision) -> nn.Module:
    """The fresh model ``cfg`` trains (seeded by the caller)."""
    if cfg.method == PROGRESSOR:
        return ProgressModel(cfg.backbone, cfg.image_size, head=cfg.head, amp=precision.amp,
                             channels_last=precision.channels_last)
    return build_model(cfg.method, cfg.model_config(), amp=precision.amp, channels_last=precision.channels_last)


def method_parts(cfg: TrainConfig, model: nn.Module, train_set: VideoDataset) -> tuple[nn.Module, TripletSampler, StepFn]:
    """What the method puts in the loop: the training forward, the batch sampler and the step function."""
    if cfg.method == PROGRESSOR:
        sampler = TripletSampler(train_set, cfg.batch_size, cfg.randomize, cfg.max_gap, cfg.label_std,
                                 cfg.shared_embedding, cfg.frames_per_traj, cfg.trajs_per_batch, cfg.balance_tasks,
                                 cfg.seed, cfg.fixed_fraction)
        return ProgressObjective(model), sampler, train_step
    sampler = TupleSampler(train_set, model.sample_indices, model.config, cfg.batch_size, cfg.balance_tasks, cfg.seed)
    return TupleObjective(model), sampler, tuple_train_step


__all__ = ["Batch", "ProgressObjective", "StepFn", "TupleObjective", "build_method", "lr_at", "method_parts",
           "optimizer_step", "prepare_batch", "train_step", "tuple_train_step"]

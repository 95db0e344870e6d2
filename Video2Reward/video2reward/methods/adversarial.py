"""What the two adversarial baselines share: an expert-vs-agent frame discriminator and its online update.

``D(s) = sigmoid(logit(s))`` is the probability that frame ``s`` comes from an expert video. Its
logit head starts at zero (``D = 1/2`` for every frame until it has seen data), and it is
trained during RL by binary cross-entropy, expert frames (label 1) against the agent's frames from
replay (label 0):

    loss = -mean(log D(s_expert)) - mean(log(1 - D(s_agent)))

GAIL uses it as the whole reward (:mod:`.gail`); Rank2Reward adds it to the ranking reward as a
pessimism term (:mod:`.rank2reward`). A model that has a discriminator exposes it as
``model.discriminator`` with ``features(frames) -> (N, 128)`` and ``head(features) -> (N,)`` logits.

:class:`DiscriminatorFinetuner` is constructed and called like :class:`~.pushback.PushBackFinetuner`:
``update(init, current, goal)`` takes a batch of agent frames from replay (only ``current`` is
used: the discriminator looks at single frames), draws as many expert frames itself (uniformly
over the expert videos, then over their frames), gives every frame a random-resized crop (area
``crop_scale``) and takes one AdamW step on the discriminator's parameters only. What it shares
with push-back (construction, optimiser, generator, crop, state) is :class:`~.base.OnlineFinetuner`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..augment import augment
from ..data import VideoDataset
from ..model import autocast
from ..triplets import randint_below
from .base import FrameEncoder, OnlineFinetuner, ScalarHead


class Discriminator(FrameEncoder):
    """Its own backbone and a logit head: ``head(features(frames))`` is ``logit D`` ``(N,)``."""

    def __init__(self, backbone: str, image_size: int, amp: bool = False, channels_last: bool = True,
                 hidden: int = 256) -> None:
        super().__init__(backbone, image_size, amp, channels_last)
        self.head = ScalarHead(hidden=hidden, zero_output=True)


def discriminator_loss(expert_logits: torch.Tensor, agent_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy: expert frames toward 1, agent frames toward 0 (each class averaged)."""
    return (F.binary_cross_entropy_with_logits(expert_logits.float(), torch.ones_like(expert_logits, dtype=torch.float32))
            + F.binary_cross_entropy_with_logits(agent_logits.float(), torch.zeros_like(agent_logits, dtype=torch.float32)))


@dataclass(frozen=True)
class DiscriminatorConfig:
    lr: float = 3e-4  # AdamW learning rate of the discriminator
    expert_batch_size: int | None = None  # expert frames per update (None: as many as agent frames)
    crop_scale: tuple[float, float] = (0.8, 1.0)  # random-resized crop area of every frame (as push-back)
    clip_grad: float = 1.0  # gradient-norm clip


class DiscriminatorFinetuner(OnlineFinetuner):
    """Owns the discriminator's optimiser; :meth:`finetune` is one online step (see the module doc)."""

    config_class = DiscriminatorConfig
    config_keys = ("expert_batch_size", "crop_scale", "clip_grad")  # its learning rate is its own

    what = "the discriminator"

    def __init__(self, model: Any, expert: VideoDataset, config: DiscriminatorConfig = DiscriminatorConfig(),
                 amp: bool = False, seed: int = 0) -> None:
        if not hasattr(model, "discriminator"):
            raise TypeError(f"{type(model).__name__} has no discriminator to train online")
        super().__init__(model, expert, config, amp, seed)

    def trained_parameters(self, model: Any) -> Any:
        return model.discriminator.parameters()

    def expert_frames(self, n: int) -> torch.Tensor:
        """``n`` expert frames ``(n, 3, S, S)``: a video uniformly, then one of its frames."""
        traj = randint_below(torch.full((n,), len(self.expert)), self.generator)
        return self.expert.gather(traj, randint_below(self.lengths[traj], self.generator))

    def finetune(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor) -> dict[str, float]:
        """One step on agent frames ``current`` (uint8 ``(B, 3, S, S)``); ``init`` and ``goal`` are unused."""
        agent = current.cpu()
        n = self.config.expert_batch_size or len(agent)
        frames = augment(torch.cat([self.expert_frames(n), agent]), self.augment_config, generator=self.generator)
        disc = self.model.discriminator
        was_training = disc.training
        disc.train()
        try:
            with autocast(disc.device, self.amp):
                logits = disc.head(disc.features(frames))
            loss = discriminator_loss(logits[:n], logits[n:])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(disc.parameters(), self.config.clip_grad)
            self.optimizer.step()
        finally:
            disc.train(was_training)
        logits = logits.detach().float()
        return {"disc_loss": loss.item(), "disc_grad_norm": float(grad_norm),
                "disc_logit_expert": logits[:n].mean().item(), "disc_logit_agent": logits[n:].mean().item(),
                "disc_accuracy": torch.cat([logits[:n] > 0, logits[n:] <= 0]).float().mean().item()}


__all__ = ["Discriminator", "DiscriminatorConfig", "DiscriminatorFinetuner", "discriminator_loss"]

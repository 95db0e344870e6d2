"""Adversarial online refinement of the reward model ("push-back", PROGRESSOR §3.3).

Every ``online_finetune_every_step`` agent steps, one AdamW step on

    KL( N(label, sqrt(1/delta)) || E(expert triplet) )                       expert frames of the task
  + pushback_weight * KL( N(beta * mu.detach(), sigma_scale * sigma.detach()) || N(mu, sigma) )
                                                                            the agent's own frames

where ``(mu, sigma) = E(o_init, o_t, o_goal)`` on triplets from the agent's replay episodes. Expert
triplets use fixed endpoints (first and last frame, middle frame uniform). Both kinds get the same
random-resized crop (area 0.8-1, one crop shared by the three frames of a triplet). The gradient
norm is clipped at ``clip_grad``. The model is in train mode only inside :meth:`update`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Normal, kl_divergence

from video2reward import ProgressModel, autocast
from video2reward.augment import AugmentConfig, augment
from video2reward.data import VideoDataset


@dataclass(frozen=True)
class RefineConfig:
    lr: float = 5e-5
    beta: float = 0.9
    sigma_scale: float = 1.0
    pushback_weight: float = 0.01
    expert_batch_size: int = 32
    replay_batch_size: int = 32
    crop_scale: tuple[float, float] = (0.8, 1.0)
    clip_grad: float = 1.0


def pushback_target(mu: torch.Tensor, sigma: torch.Tensor, beta: float, sigma_scale: float = 1.0) -> Normal:
    """``N(beta * mu, sigma_scale * sigma)`` with no gradient: where agent frames are pushed to."""
    return Normal(beta * mu.detach(), sigma_scale * sigma.detach())


class PushBackRefiner:
    """Owns the reward model's refinement optimiser; :meth:`update` is one refinement step."""

    def __init__(self, model: ProgressModel, expert: VideoDataset, config: RefineConfig = RefineConfig(),
                 amp: bool = False, seed: int = 0) -> None:
        if len(expert) == 0:
            raise ValueError("push-back refinement needs at least one expert trajectory")
        if expert.image_size != model.image_size:
            raise ValueError(f"expert frames are {expert.image_size}px but the reward model takes {model.image_size}px")
        self.model = model
        self.expert = expert
        self.config = config
        self.amp = amp
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.augment_config = AugmentConfig(photometric=False, crop_scale=tuple(config.crop_scale))

    def expert_triplets(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(frames (n, 3, 3, S, S), label mean (n,), label std (n,))`` with fixed endpoints."""
        traj = self.rng.integers(0, len(self.expert), n)
        last = self.expert.lengths[traj] - 1
        mid = self.rng.integers(0, last + 1)
        idx = np.stack([np.zeros_like(last), mid, last], axis=1)
        frames = self.expert.gather(traj[:, None], idx)
        delta = torch.as_tensor(last, dtype=torch.float32)
        return frames, torch.as_tensor(mid, dtype=torch.float32) / delta, torch.sqrt(1.0 / delta)

    def update(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor) -> dict[str, float]:
        """One refinement step; ``init``/``current``/``goal`` are uint8 ``(B, 3, S, S)`` agent frames."""
        cfg = self.config
        frames, label_mu, label_std = self.expert_triplets(cfg.expert_batch_size)
        agent = torch.stack([init.cpu(), current.cpu(), goal.cpu()], dim=1)
        triplets = augment(torch.cat([frames, agent]), self.augment_config, generator=self.generator)
        n_exp = frames.shape[0]
        self.model.train()
        try:
            with autocast(self.model.device, self.amp):
                mu, sigma = self.model(triplets[:, 0], triplets[:, 1], triplets[:, 2])
            device = mu.device
            expert_loss = kl_divergence(Normal(label_mu.to(device), label_std.to(device)),
                                        Normal(mu[:n_exp], sigma[:n_exp])).mean()
            mu_a, sigma_a = mu[n_exp:], sigma[n_exp:]
            target = pushback_target(mu_a, sigma_a, cfg.beta, cfg.sigma_scale)
            pushback_loss = kl_divergence(target, Normal(mu_a, sigma_a)).mean()
            loss = expert_loss + cfg.pushback_weight * pushback_loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
            self.optimizer.step()
        finally:
            self.model.eval()
        return {
            "refine_loss": loss.item(),
            "refine_expert_loss": expert_loss.item(),
            "refine_pushback_loss": pushback_loss.item(),
            "refine_grad_norm": float(grad_norm),
            "refine_mu_expert": mu[:n_exp].mean().item(),
            "refine_mu_replay": mu_a.mean().item(),
        }

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]


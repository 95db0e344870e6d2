"""Adversarial online refinement of the reward model ("push-back", PROGRESSOR §3.3).

Every ``online_finetune_every_step`` agent steps, one AdamW step on

    KL( N(label, sqrt(1/delta)) || E(expert triplet) )                       expert frames of the task
  + pushback_weight * KL( N(beta * mu.detach(), sigma_scale * sigma.detach()) || N(mu, sigma) )
                                                                            the agent's own frames

where ``(mu, sigma) = E(o_init, o_t, o_goal)`` on triplets from the agent's replay episodes. Expert
triplets use fixed endpoints (first and last frame, middle frame uniform). Both kinds get a
random-resized crop (area 0.8-1, one crop shared by the three frames of a triplet; ``crop="per_batch"``:
one crop for all agent triplets, as the released code). The gradient norm is clipped at
``clip_grad``. The model is in train mode only inside :meth:`update`.

``params="head"`` (the CPU preset, docs/rl.md): only the head after the frame encoder is trained.
The encoder's features never change, so the RL loop keeps every frame's features for the whole run and
a refinement step only invalidates the (cheap) head values; expert features are computed once, and
frames are not cropped (a crop is there to regularise the encoder, which is frozen).

Release options (``variant=release``, docs/rl.md): ``crop="per_batch"``, ``round_label_std`` (the
released loader rounds ``sqrt(1/delta)`` to 3 decimals) and :meth:`load_optimizer_state` (AdamW
continues from the checkpoint's saved state).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch.distributions import Normal

from ..augment import augment
from ..data import VideoDataset
from ..losses import progress_kl_loss
from ..model import autocast
from ..triplets import progress_labels, randint_below, sample_endpoints
from .base import OnlineFinetuner


@dataclass(frozen=True)
class PushBackConfig:
    lr: float = 5e-5
    beta: float = 0.9
    sigma_scale: float = 1.0
    pushback_weight: float = 0.01
    expert_batch_size: int = 32
    replay_batch_size: int = 32
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop: str = "per_triplet"  # per_triplet | per_batch (one crop for all agent triplets, released)
    round_label_std: bool = False  # round the expert label std to 3 decimals (released)
    clip_grad: float = 1.0
    params: str = "all"  # all (every weight, as released) | head (the encoder frozen: cached features stay valid)

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.params not in PARAMS:
            raise ValueError(f"params must be one of {PARAMS}, got {self.params!r}")


CROPS = ("per_triplet", "per_batch")
PARAMS = ("all", "head")
# where a checkpoint keeps its optimiser state: ours, the released Meta-World file, the released EPIC file
OPTIMIZER_KEYS = ("optimizer", "optim_state_dict", "optimizer_state_dict")


def saved_optimizer_state(checkpoint: Mapping[str, Any]) -> dict | None:
    """The optimiser state stored in a reward checkpoint's dict, or ``None`` if it has none."""
    return next((checkpoint[k] for k in OPTIMIZER_KEYS if isinstance(checkpoint.get(k), Mapping)), None)


def pushback_target(mu: torch.Tensor, sigma: torch.Tensor, beta: float, sigma_scale: float = 1.0) -> Normal:
    """``N(beta * mu, sigma_scale * sigma)`` with no gradient: where agent frames are pushed to."""
    return Normal(beta * mu.detach(), sigma_scale * sigma.detach())


class PushBackFinetuner(OnlineFinetuner):
    """Owns the reward model's refinement optimiser (:class:`~video2reward.methods.base.OnlineFinetuner`:
    AdamW over all weights, one generator, the crop); :meth:`update` is one refinement step."""

    what = "push-back fine-tuning"
    config_class = PushBackConfig

    def __init__(self, model: Any, expert: VideoDataset, config: PushBackConfig = PushBackConfig(), amp: bool = False,
                 seed: int = 0) -> None:
        super().__init__(model, expert, config, amp, seed)
        self._expert_features: torch.Tensor | None = None  # params="head": every expert frame, encoded once

    @property
    def frozen_features(self) -> bool:
        """Whether the frame encoder stays fixed, so features computed before an update stay valid."""
        return self.config.params == "head"

    def trained_parameters(self, model: Any) -> Any:
        return model.head_parameters() if self.frozen_features else model.parameters()

    def expert_triplets(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(frames (n, 3, 3, S, S), label mean (n,), label std (n,))``: fixed endpoints (first and
        last frame), the middle frame uniform, labels as in pretraining with std ``sqrt(1/delta)``."""
        traj, idx, mean, std = self._expert_triplet_indices(n)
        return self.expert.gather(traj[:, None], idx), mean, std

    def _augment(self, expert: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
        """Expert ``(E, 3, 3, S, S)`` and agent ``(A, 3, 3, S, S)`` triplets, cropped, concatenated."""
        if self.config.crop == "per_triplet":
            return augment(torch.cat([expert, agent]), self.augment_config, generator=self.generator)
        expert = augment(expert, self.augment_config, generator=self.generator)
        one = augment(agent.flatten(0, 1)[None], self.augment_config, generator=self.generator)[0]
        return torch.cat([expert, one.view_as(agent)])

    def _expert_triplet_indices(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        traj = randint_below(torch.full((n,), len(self.expert)), self.generator)
        idx = torch.stack(sample_endpoints(self.lengths[traj], randomize=False, generator=self.generator), 1)
        mean, std = progress_labels(*idx.unbind(1), label_std="delta")
        if self.config.round_label_std:
            std = torch.round(std, decimals=3)
        return traj, idx, mean, std

    def _head_outputs(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor,
                      agent_features: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``params="head"``: (mu, sigma) of expert then agent triplets from fixed features, labels;
        the agent frames are encoded unless their ``(B, 3, D)`` features are given."""
        if self._expert_features is None:
            self._expert_features = self.model.encode(torch.from_numpy(np.array(self.expert.frames)))
        traj, idx, label_mu, label_std = self._expert_triplet_indices(self.config.expert_batch_size)
        expert = self._expert_features[torch.as_tensor(self.expert.starts)[traj][:, None] + idx]  # (E, 3, D)
        agent = agent_features if agent_features is not None else \
            self.model.encode(torch.cat([init, current, goal])).view(3, init.shape[0], -1).transpose(0, 1)
        f = torch.cat([expert, agent.to(expert.device, expert.dtype)])
        self.model.train()
        mu, sigma = self.model.head(f[:, 0], f[:, 1], f[:, 2])
        return mu, sigma, label_mu, label_std, expert.shape[0]

    def _full_outputs(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(mu, sigma) of cropped expert then agent triplets through the whole model, labels."""
        frames, label_mu, label_std = self.expert_triplets(self.config.expert_batch_size)
        agent = torch.stack([init.cpu(), current.cpu(), goal.cpu()], dim=1)
        triplets = self._augment(frames, agent)
        self.model.train()
        with autocast(self.model.device, self.amp):
            mu, sigma = self.model(triplets[:, 0], triplets[:, 1], triplets[:, 2])
        return mu, sigma, label_mu, label_std, frames.shape[0]

    def finetune(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor,
               agent_features: torch.Tensor | None = None) -> dict[str, float]:
        """One refinement step; ``init``/``current``/``goal`` are uint8 ``(B, 3, S, S)`` agent frames.
        ``agent_features``: their ``(B, 3, D)`` encoder features, if known (used when the encoder is
        frozen, ``params="head"``, where they cannot have changed)."""
        cfg = self.config
        try:
            if self.frozen_features:
                mu, sigma, label_mu, label_std, n_exp = self._head_outputs(init, current, goal, agent_features)
            else:
                mu, sigma, label_mu, label_std, n_exp = self._full_outputs(init, current, goal)
            device = mu.device
            expert_loss = progress_kl_loss(mu[:n_exp], sigma[:n_exp], label_mu.to(device), label_std.to(device))
            mu_a, sigma_a = mu[n_exp:], sigma[n_exp:]
            target = pushback_target(mu_a, sigma_a, cfg.beta, cfg.sigma_scale)
            pushback_loss = progress_kl_loss(mu_a, sigma_a, target.loc, target.scale)
            loss = expert_loss + cfg.pushback_weight * pushback_loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trained_parameters(self.model), cfg.clip_grad)
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

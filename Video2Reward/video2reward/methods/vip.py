"""VIP: value-implicit pre-training (Ma et al., 2023).

Embedding ``phi(o)``: a linear map of the backbone's unit feature (unnormalised, so distances can
grow to the ~1/(1-gamma) a value needs). Goal-conditioned value ``S(o, g) = -|phi(o) - phi(g)|``.
Objective, the dual of offline goal-conditioned RL with reward -1 per step, on sub-trajectories
``(o_0, o_t, o_{t+1}, g)`` of one video (``o_0 < g`` random, ``o_t`` uniform in ``[o_0, g)``):

    (1 - gamma) E[-S(o_0, g)] + log E[ exp( S(o_t, g) + 1 - gamma S(o_{t+1}, g) ) ]

(the ``+1`` is ``-r``: ``o_t`` is never the goal here, so ``r = -1``). The second expectation is
over the batch, computed as a log-sum-exp.

Reward: a difference of values, ``S(o_{t+1}, g) - S(o_t, g)`` (``reward_kind = "difference"``);
:meth:`VIPModel.reward_from_features` returns the per-frame value ``S(o, g)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model import FEATURE_DIM
from ..triplets import randint_below, sample_endpoints
from .base import DIFFERENCE, FrameTuples, LinearEmbedding, MethodConfig, Metrics, RewardModel, distance


@dataclass
class VIPConfig(MethodConfig):
    method: str = "vip"
    gamma: float = 0.98  # discount of the implicit value (the paper's)
    embedding_dim: int = FEATURE_DIM  # width of phi

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.gamma < 1:
            raise ValueError(f"vip needs 0 < gamma < 1, got {self.gamma}")


def vip_loss(f_start: torch.Tensor, f_cur: torch.Tensor, f_next: torch.Tensor, f_goal: torch.Tensor,
             gamma: float) -> torch.Tensor:
    """VIP's objective on embeddings ``(B, D)`` of ``(o_0, o_t, o_{t+1}, g)`` (see the module doc)."""
    s_start, s_cur, s_next = (-distance(f, f_goal) for f in (f_start, f_cur, f_next))
    start_term = (1 - gamma) * (-s_start).mean()
    return start_term + torch.logsumexp(s_cur + 1 - gamma * s_next, 0) - math.log(len(s_cur))


class VIPModel(RewardModel):
    """VIP embedding; value ``S(o, g) = -|phi(o) - phi(g)|``, reward its change over a step."""

    method = "vip"
    default_batch_size = 64  # tuples per step: about the 256 frames of the CPU preset's PROGRESSOR batch
    reward_kind = DIFFERENCE
    config_class = VIPConfig

    def __init__(self, config: VIPConfig | None = None, amp: bool = False, channels_last: bool = True, **fields) -> None:
        super().__init__(config, amp, channels_last, **fields)
        self.phi = LinearEmbedding(self.config.embedding_dim)

    def value(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        return -distance(self.phi(f_cur), self.phi(f_goal))

    @staticmethod
    def sample_indices(config: VIPConfig, lengths: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Columns ``(start, t, t + 1, goal)`` with ``start <= t < goal``."""
        start, _, goal = sample_endpoints(lengths, randomize=True, generator=generator)
        t = start + randint_below(goal - start, generator)
        return torch.stack([start, t, t + 1, goal], 1)

    def loss(self, f: torch.Tensor, batch: FrameTuples) -> tuple[torch.Tensor, Metrics]:
        start, cur, nxt, goal = self.phi(f).unbind(1)
        with torch.no_grad():
            gap = distance(cur, goal) - distance(nxt, goal)  # ~1 step of value when trained
        return vip_loss(start, cur, nxt, goal, self.config.gamma), {
            "value_start": -distance(start, goal).detach().mean(), "value_step": gap.mean()}


__all__ = ["VIPConfig", "VIPModel", "vip_loss"]

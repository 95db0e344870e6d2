"""TCN: single-view time-contrastive networks (Sermanet et al., 2018), as a goal-image reward.

Embedding ``phi(o)``: the backbone's L2-normalised 128-d feature. Objective on triplets of one
trajectory: an anchor frame, a positive at most ``positive_window`` steps away, a negative more
than ``negative_gap`` steps away,

    mean( max(0, |phi(a) - phi(p)|^2 - |phi(a) - phi(n)|^2 + margin) ).

Reward (a value of the current frame): ``-|phi(o) - phi(g)|``, the distance to the goal image. The
paper tracked a demonstration frame by frame (a Euclidean + Huber-style distance to the demo's frame
at the same time); with a goal image there is one target frame, the goal.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..triplets import randint_below
from .base import FrameTuples, MethodConfig, Metrics, RewardModel, distance, squared_distance


@dataclass
class TCNConfig(MethodConfig):
    method: str = "tcn"
    margin: float = 0.2  # triplet margin, on squared distances between unit embeddings (<= 4)
    positive_window: int = 3  # a positive is at most this many steps from its anchor
    negative_gap: int = 10  # a negative is more than this many steps away (capped at L//2 - 1 for short videos)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.positive_window < 1 or self.negative_gap < 0 or self.margin < 0:
            raise ValueError(f"tcn needs positive_window >= 1, negative_gap >= 0, margin >= 0; got "
                             f"{self.positive_window}, {self.negative_gap}, {self.margin}")


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """``mean(max(0, |a - p|^2 - |a - n|^2 + margin))`` over rows ``(B, D)``."""
    return F.relu(squared_distance(anchor, positive) - squared_distance(anchor, negative) + margin).mean()


def near_frame(anchor: torch.Tensor, lengths: torch.Tensor, window: int, generator: torch.Generator | None) -> torch.Tensor:
    """A frame other than ``anchor`` at most ``window`` steps from it, uniformly (``L >= 2``)."""
    lo = (anchor - window).clamp_min(0)
    hi = torch.minimum(anchor + window, lengths - 1)
    near = lo + randint_below(hi - lo, generator)
    return near + (near >= anchor).long()


def far_frame(anchor: torch.Tensor, lengths: torch.Tensor, gap: int, generator: torch.Generator | None) -> torch.Tensor:
    """A frame more than ``gap`` steps from ``anchor``, uniformly; ``gap`` is capped at ``L//2 - 1`` so
    that every anchor has one."""
    gap_t = torch.clamp(torch.minimum(torch.full_like(lengths, gap), lengths // 2 - 1), min=0)
    before = (anchor - gap_t).clamp_min(0)  # frames 0 .. anchor-gap-1
    after = (lengths - 1 - anchor - gap_t).clamp_min(0)  # frames anchor+gap+1 .. L-1
    u = randint_below(before + after, generator)
    return torch.where(u < before, u, anchor + gap_t + 1 + (u - before))


class TCNModel(RewardModel):
    """Time-contrastive embedding; value ``-|phi(o) - phi(g)|``."""

    method = "tcn"
    default_batch_size = 64  # tuples per step: about the 256 frames of the CPU preset's PROGRESSOR batch
    config_class = TCNConfig

    def value(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        return -distance(f_cur, f_goal)

    @staticmethod
    def sample_indices(config: TCNConfig, lengths: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Columns ``(anchor, positive, negative)``."""
        anchor = randint_below(lengths, generator)
        positive = near_frame(anchor, lengths, config.positive_window, generator)
        negative = far_frame(anchor, lengths, config.negative_gap, generator)
        return torch.stack([anchor, positive, negative], 1)

    def loss(self, f: torch.Tensor, batch: FrameTuples) -> tuple[torch.Tensor, Metrics]:
        anchor, positive, negative = f.unbind(1)
        with torch.no_grad():
            d_pos, d_neg = squared_distance(anchor, positive), squared_distance(anchor, negative)
        return triplet_loss(anchor, positive, negative, self.config.margin), {
            "distance_positive": d_pos.mean(), "distance_negative": d_neg.mean(),
            "violations": (d_pos + self.config.margin > d_neg).float().mean()}


__all__ = ["TCNConfig", "TCNModel", "far_frame", "near_frame", "triplet_loss"]

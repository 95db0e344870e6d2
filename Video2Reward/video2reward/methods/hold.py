"""HOLD: functional distances to a goal image learned from videos (Alakuijala et al., 2023).

A distance ``d(s, g)`` should track ``delta(s, g)``, the number of steps an expert needs from ``s``
to ``g``. Both variants reward a step by how far its new frame still is from the goal,

    r = -max(0, d(s_{t+1}, g) - d(g, g)) / T,

where subtracting ``d(g, g)`` makes the goal itself the best state (a regressor need not predict 0
there) and ``T`` normalises the scale (see each config).

* **HOLD-R** regresses the step count: ``d_theta(s, g)`` is a head on the two frames' features,
  trained with ``(d_theta(s_t, s_{t+delta}) - delta)^2`` over all pairs ``t < t + delta`` of a video
  (uniformly over pairs, as the paper's sum over ``t`` and ``delta``), in units of ``T``.
* **HOLD-C** learns a time-contrastive embedding ``phi`` and uses ``d = |phi(s) - phi(g)|``. Its
  objective is the single-view time-contrastive triplet loss with semi-hard negatives over a batch
  of clips: every pair of frames of one video at most ``positive_radius`` steps apart is a positive
  pair; the negatives of an anchor are frames of its video more than ``negative_radius`` steps away
  and all frames of other videos; each positive pair is matched with the closest negative that is
  still farther than the positive (the farthest negative if there is none).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data import VideoDataset
from ..model import FEATURE_DIM
from .base import (FrameTuples, LinearEmbedding, MethodConfig, Metrics, RewardModel, ScalarHead, distance,
                   ordered_pair, pairwise_squared_distance, sorted_frames)

DEFAULT_HORIZON = 100.0  # HOLD-R's T before training sets it: a Meta-World episode (100 agent steps)


def hold_reward(d_state: torch.Tensor, d_goal: torch.Tensor, scale: float) -> torch.Tensor:
    """``-max(0, d(s, g) - d(g, g)) / T``."""
    return -F.relu(d_state - d_goal) / scale


# ------------------------------------------------------------------------------------ HOLD-R
@dataclass
class HoldRConfig(MethodConfig):
    method: str = "hold_r"
    hidden: int = 256  # width of the distance head
    # T, and the unit d is predicted in: the training videos' mean length - 1 (in steps), set from the
    # data when training starts; DEFAULT_HORIZON until then
    horizon: float | None = None


def hold_r_loss(d_pred: torch.Tensor, steps: torch.Tensor, horizon: float) -> torch.Tensor:
    """``mean(((d_pred - delta) / T)^2)``: the paper's squared error on step counts, in units of ``T``."""
    return ((d_pred.float() - steps.float()) / horizon).square().mean()


class HoldRModel(RewardModel):
    """HOLD-R: ``d(s, g) = T head([f_s, f_g])`` steps."""

    method = "hold_r"
    default_batch_size = 128  # tuples per step: about the 256 frames of the CPU preset's PROGRESSOR batch
    config_class = HoldRConfig

    def __init__(self, config: HoldRConfig | None = None, amp: bool = False, channels_last: bool = True, **fields) -> None:
        super().__init__(config, amp, channels_last, **fields)
        self.head = ScalarHead(2 * FEATURE_DIM, self.config.hidden)

    @property
    def horizon(self) -> float:
        return float(self.config.horizon or DEFAULT_HORIZON)

    def steps(self, f_state: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        """Predicted steps ``(N,)`` from each state to its goal (a plain regression output, in units of
        ``T``: a positivity squash such as softplus has a flat side the regression can get stuck on)."""
        return self.horizon * self.head(torch.cat([f_state, f_goal], -1))

    def value(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        return hold_reward(self.steps(f_cur, f_goal), self.steps(f_goal, f_goal), self.horizon)

    @staticmethod
    def sample_indices(config: HoldRConfig, lengths: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Columns ``(state, goal)``, a uniform pair ``state < goal``."""
        return ordered_pair(lengths, generator)

    def loss(self, f: torch.Tensor, batch: FrameTuples) -> tuple[torch.Tensor, Metrics]:
        state, goal = f.unbind(1)
        steps = (batch.index[:, 1] - batch.index[:, 0]).float()
        pred = self.steps(state, goal)
        return hold_r_loss(pred, steps, self.horizon), {"mae_steps": (pred.detach() - steps).abs().mean()}

    def fit_data(self, dataset: VideoDataset) -> None:
        if self.config.horizon is None:
            self.config.horizon = float(np.mean(dataset.lengths) - 1)


# ------------------------------------------------------------------------------------ HOLD-C
@dataclass
class HoldCConfig(MethodConfig):
    method: str = "hold_c"
    margin: float = 0.2  # triplet margin on squared embedding distances
    positive_radius: int = 6  # frames of one video at most this many steps apart are positives
    negative_radius: int = 12  # ... more than this many steps apart (or from another video) are negatives
    clip_frames: int = 16  # frames per sampled clip (distinct, sorted, spread over the video)
    embedding_dim: int = FEATURE_DIM  # width of phi
    scale: float = 1.0  # T: the reward is -|phi(s) - phi(g)| / T (embedding units)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 <= self.positive_radius < self.negative_radius) or self.clip_frames < 2 or self.scale <= 0:
            raise ValueError(f"hold_c needs 0 <= positive_radius < negative_radius, clip_frames >= 2, scale > 0; got "
                             f"{self.positive_radius}, {self.negative_radius}, {self.clip_frames}, {self.scale}")


def semi_hard_triplet_loss(embeddings: torch.Tensor, time: torch.Tensor, video: torch.Tensor, positive_radius: int,
                           negative_radius: int, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-contrastive triplet loss with semi-hard negatives over ``N`` frames (see the module doc).

    ``embeddings (N, D)``, ``time (N,)`` frame indices and ``video (N,)`` ids. Returns the mean of
    ``max(0, margin + d_ap - d_an)`` over positive pairs (squared distances; 0 if there are none) and
    the number of positive pairs that have a negative."""
    n = embeddings.shape[0]
    d = pairwise_squared_distance(embeddings)
    same = video[:, None] == video[None, :]
    gap = (time[:, None] - time[None, :]).abs()
    positive = same & (gap <= positive_radius) & ~torch.eye(n, dtype=torch.bool, device=d.device)
    negative = ~same | (gap > negative_radius)
    count = negative.sum(1, keepdim=True)  # (N, 1) negatives per anchor
    ranked = d.masked_fill(~negative, float("inf")).sort(dim=1).values  # each anchor's negatives, nearest first
    # first negative strictly farther than the positive; if none, the farthest negative
    idx = torch.searchsorted(ranked.detach(), d.detach(), right=True)
    idx = torch.where(idx < count, idx, (count - 1).clamp_min(0).expand(n, n))
    pairs = positive & (count > 0)
    losses = F.relu(margin + d - ranked.gather(1, idx))[pairs]
    return (losses.mean() if len(losses) else d.sum() * 0.0), pairs.sum()


class HoldCModel(RewardModel):
    """HOLD-C: time-contrastive embedding ``phi``; ``d(s, g) = |phi(s) - phi(g)|``."""

    method = "hold_c"
    default_batch_size = 16  # tuples per step: about the 256 frames of the CPU preset's PROGRESSOR batch
    config_class = HoldCConfig

    def __init__(self, config: HoldCConfig | None = None, amp: bool = False, channels_last: bool = True, **fields) -> None:
        super().__init__(config, amp, channels_last, **fields)
        self.phi = LinearEmbedding(self.config.embedding_dim)

    def value(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        e_cur, e_goal = self.phi(f_cur), self.phi(f_goal)
        return hold_reward(distance(e_cur, e_goal), distance(e_goal, e_goal), self.config.scale)

    @staticmethod
    def sample_indices(config: HoldCConfig, lengths: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``clip_frames`` distinct sorted frames per video (fewer if a video is shorter)."""
        return sorted_frames(lengths, config.clip_frames, generator)

    def loss(self, f: torch.Tensor, batch: FrameTuples) -> tuple[torch.Tensor, Metrics]:
        b, k = batch.index.shape
        cfg = self.config
        loss, pairs = semi_hard_triplet_loss(self.phi(f).flatten(0, 1), batch.index.flatten(),
                                             batch.traj[:, None].expand(b, k).flatten(), cfg.positive_radius,
                                             cfg.negative_radius, cfg.margin)
        return loss, {"positive_pairs": pairs.float()}


__all__ = ["DEFAULT_HORIZON", "HoldCConfig", "HoldCModel", "HoldRConfig", "HoldRModel", "hold_r_loss", "hold_reward",
           "semi_hard_triplet_loss"]

"""Rank2Reward: progress from ranking video frames, plus a pessimistic discriminator term
(Yang et al., 2024).

A utility ``u(s)`` (a head on the backbone's feature) is trained on expert videos alone with a
Bradley-Terry model in which the later of two frames of one video is preferred,

    P(s_j > s_i) = sigmoid(u(s_j) - u(s_i)),   loss = -mean(log sigmoid(u(s_later) - u(s_earlier))),

over pairs drawn uniformly among all frame pairs of a video. The "likelihood of making progress"
is ``p_RF(s) = P(s > s_0) = sigmoid(u(s) - u(s_0))``, with ``s_0`` the episode's initial frame (the
paper sets ``u(s_0) = 0``; we anchor at the initial frame the reward call receives). The reward is

    r(s) = log p_RF(s) + alpha * (log D(s) - log(1 - D(s))),

``D`` the expert-vs-agent discriminator (:mod:`.adversarial`) trained online during RL, so states
unlike the expert's are penalised however well they rank. Before any online update ``D``'s head is
zero, so the term is exactly 0 (``D = 1/2``) and the offline reward is the ranking term alone. (A
randomly initialised head makes the untrained term a random function of the frame of about unit
scale, while ``log p_RF`` spans only ``log 1/2 .. 0`` over an episode: the noise swamps the
ranking.) The goal frame is not used: the ranking and the discriminator
are per frame, as in the paper's Meta-World experiments.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model import FEATURE_DIM
from .adversarial import Discriminator, DiscriminatorFinetuner
from .base import FrameTuples, MethodConfig, Metrics, RewardModel, ScalarHead, ordered_pair


@dataclass
class Rank2RewardConfig(MethodConfig):
    method: str = "rank2reward"
    hidden: int = 256  # width of the utility head and of the discriminator's head
    alpha: float = 1.0  # weight of the discriminator term (the KL weight of the paper's objective)


def bradley_terry_loss(u_earlier: torch.Tensor, u_later: torch.Tensor) -> torch.Tensor:
    """``-mean(log sigmoid(u_later - u_earlier))``: the later frame of each pair is preferred."""
    return F.softplus(u_earlier.float() - u_later.float()).mean()


class Rank2RewardModel(RewardModel):
    """Utility ``u`` on the ranking backbone, and a :class:`~.adversarial.Discriminator` with its own
    backbone; :meth:`encode` gives both features side by side ``(N, 256)``."""

    method = "rank2reward"
    goal_conditioned = False  # the paper's ranking is per task and goal-free
    default_batch_size = 128  # tuples per step: about the 256 frames of the CPU preset's PROGRESSOR batch
    finetuner_class = DiscriminatorFinetuner  # its discriminator learns online, expert vs agent frames
    config_class = Rank2RewardConfig

    def __init__(self, config: Rank2RewardConfig | None = None, amp: bool = False, channels_last: bool = True,
                 **fields) -> None:
        super().__init__(config, amp, channels_last, **fields)
        self.utility = ScalarHead(hidden=self.config.hidden)
        self.discriminator = Discriminator(self.config.backbone, self.config.image_size, amp, channels_last,
                                           self.config.hidden)

    @property
    def feature_dim(self) -> int:
        return 2 * FEATURE_DIM

    def inference_features(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.features(frames), self.discriminator.features(frames)], -1)

    def value(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        rank, disc = f_cur[..., :FEATURE_DIM], f_cur[..., FEATURE_DIM:]
        log_progress = F.logsigmoid(self.utility(rank) - self.utility(f_init[..., :FEATURE_DIM]))
        return log_progress + self.config.alpha * self.discriminator.head(disc)

    @staticmethod
    def sample_indices(config: Rank2RewardConfig, lengths: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Columns ``(earlier, later)``."""
        return ordered_pair(lengths, generator)

    def loss(self, f: torch.Tensor, batch: FrameTuples) -> tuple[torch.Tensor, Metrics]:
        u_earlier, u_later = self.utility(f).unbind(1)
        return bradley_terry_loss(u_earlier, u_later), {"accuracy": (u_later > u_earlier).float().mean()}


__all__ = ["Rank2RewardConfig", "Rank2RewardModel", "bradley_terry_loss"]

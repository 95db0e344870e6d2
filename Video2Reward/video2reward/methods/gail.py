"""GAIL-style discriminator reward, the adversarial baseline of the PROGRESSOR paper (after Ho &
Ermon, 2016, on observations only).

The model is an expert-vs-agent frame discriminator ``D(s)`` (:mod:`.adversarial`), trained online
during RL by :class:`~.adversarial.DiscriminatorFinetuner`; it has no offline pretraining. Reward of
a frame: ``-log(1 - D(s)) = softplus(logit D(s))``, high where the frame looks like the expert's.
Init and goal frames are not used.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .adversarial import DiscriminatorFinetuner
from .base import MethodConfig, RewardModel, ScalarHead


@dataclass
class GAILConfig(MethodConfig):
    method: str = "gail"
    hidden: int = 256  # width of the logit head


class GAILModel(RewardModel):
    """The discriminator itself: backbone ``model`` and logit ``head``; :attr:`discriminator` is ``self``."""

    method = "gail"
    finetuner_class = DiscriminatorFinetuner  # its discriminator learns online, expert vs agent frames
    pretrainable = False  # the discriminator has nothing to learn from before RL
    goal_conditioned = False  # -log(1 - D(o)): neither init nor goal is read
    config_class = GAILConfig

    def __init__(self, config: GAILConfig | None = None, amp: bool = False, channels_last: bool = True, **fields) -> None:
        super().__init__(config, amp, channels_last, **fields)
        self.head = ScalarHead(hidden=self.config.hidden, zero_output=True)  # untrained: D = 1/2 everywhere

    @property
    def discriminator(self) -> "GAILModel":
        return self

    def value(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.head(f_cur))


__all__ = ["GAILConfig", "GAILModel"]

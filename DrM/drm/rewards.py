"""The learner's reward for a replay batch, whatever the reward is (:mod:`video2reward.reward_fn`).

The run's :class:`~video2reward.reward_fn.RewardFunction` (built by :func:`drm.reward_setup.build_reward`)
scores every collected step and may recompute a sampled batch's rewards with its current model
(``reward.relabel``: ``window``, ``paper`` or ``stored``, see :mod:`video2reward.reward_fn`).
"""
from __future__ import annotations

import dataclasses

from video2reward.reward_fn import RELABEL_MODES, REWARD_FORMS, RewardFunction

from .replay_buffer import Batch, discounted_sum

# reward_model choices: PROGRESSOR, the env's dense reward, the success flag, and the video-reward
# baselines of video2reward.methods (docs/baselines.md)
ENV_REWARDS = ("env", "sparse")
BASELINES = ("tcn", "vip", "hold_r", "hold_c", "rank2reward", "gail")
REWARD_MODELS = ("ours", *ENV_REWARDS, *BASELINES)

__all__ = ["BASELINES", "ENV_REWARDS", "RELABEL_MODES", "REWARD_FORMS", "REWARD_MODELS", "relabel", "reward_method"]


def reward_method(reward_model: str) -> str:
    """The :mod:`video2reward.methods` name of a learned ``reward_model`` (``ours`` is PROGRESSOR)."""
    return "progressor" if reward_model == "ours" else reward_model


def relabel(batch: Batch, reward: RewardFunction) -> Batch:
    """The torch ``batch`` with ``reward`` replaced by what the learner should see: the discounted
    sum of the per-step rewards ``reward`` recomputes, or the stored n-step sum when it keeps them."""
    per_step = reward.score_batch(batch)
    if per_step is None:
        return batch
    return dataclasses.replace(batch, reward=discounted_sum(per_step, batch.gamma))

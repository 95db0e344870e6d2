"""DrQ-v2 (Yarats et al. 2021) and its DrM extension (Xu et al. 2024) as one agent with options.

DrQ-v2: pixel DDPG with a conv encoder trained only through the critic, twin Q with a Polyak
target, n-step returns (already summed by the replay buffer), random-shift augmentation, a
scheduled truncated-normal exploration std and uniform random actions for the first
``num_expl_steps`` agent steps.

DrM (``use_drm=True``) adds:

- Q heads with Dropout + LayerNorm;
- an expectile value network ``V(s)`` regressed on ``min(Q1, Q2)(s, a)`` of replay actions, and the
  critic target ``r + gamma^n (lambda V(s') + (1 - lambda) min Q'(s', a'))``;
- "awaken" exploration: ``std = sigmoid(dormant_temp * (dormant - target_dormant_ratio))`` until
  the actor's dormant ratio first falls below ``target_dormant_ratio``; from then on
  ``max(that, schedule(step - awaken_step))`` (the schedule restarts at the awakening, as in the
  DrM reference code);
- every ``perturb_every`` agent steps: ``theta <- p theta + (1 - p) theta_fresh`` for every Linear
  layer (actor, critic, critic target, value net; the encoder's convs too if
  ``perturb_encoder``), ``p = clip(1 - perturb_rate * dormant, min_perturb_factor,
  max_perturb_factor)``, and all optimisers reset. The critic and its target move toward the
  *same* fresh weights so that the target stays a lagged copy of the critic.

The actor's dormant ratio is read from the actor update's own forward pass (hooks, no extra pass)
and is logged for both agents. It therefore lags the critic update of the same step by one update.

Mixed precision: with ``amp=True`` every forward runs under ``torch.autocast(bfloat16)`` (CPU and
CUDA) and the encoder uses channels_last memory format; network outputs are cast to fp32 and the
losses, targets and Adam states are fp32.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..schedules import schedule
from .dormant import DormantMonitor, fresh_copy, perturb, perturb_factor, reset_optimizer
from .networks import (Actor, Critic, RandomShiftsAug, ValueNet, expectile_loss, make_encoder,
                       soft_update, weight_init)


def _as_tensor(x: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.as_tensor(x, device=device, dtype=dtype)


class DrQV2Agent:
    """DrQ-v2 agent; ``use_drm=True`` turns it into DrM (module docstring).

    Args:
        obs_shape: ``(3 * frame_stack, S, S)`` of the uint8 image observation, or ``(D,)`` of a state
            observation (``obs_type=state``: an MLP encoder, no augmentation).
        action_shape: ``(A,)``; actions lie in [-1, 1].
        device: torch device for the networks.
        lr: Adam learning rate of every network.
        feature_dim: width of the Linear -> LayerNorm -> Tanh trunks.
        hidden_dim: width of the actor / critic / value MLPs.
        critic_target_tau: Polyak rate of the target critic.
        num_expl_steps: agent steps of uniform random actions at the start of training.
        update_every_steps: the caller updates when :meth:`should_update` says so.
        stddev_schedule: exploration std, see :func:`drm.schedules.schedule`.
        stddev_clip: bound of the target-policy / actor-update noise.
        aug_pad: random-shift padding in pixels.
        use_drm: enable the DrM components below.
        dropout: DrM Q-head dropout probability.
        expectile: DrM value-network expectile.
        target_lambda: DrM weight of ``V(s')`` in the critic target.
        dormant_threshold: fraction of the layer mean below which a neuron is dormant.
        target_dormant_ratio: DrM awakening threshold and centre of the awaken-std sigmoid.
        dormant_temp: temperature of the awaken-std sigmoid.
        perturb_every: DrM perturbation period in agent steps (0 disables).
        perturb_rate, min_perturb_factor, max_perturb_factor: ``p = clip(1 - rate * dormant, min, max)``.
        perturb_encoder: also perturb the encoder's convs (off, as in the DrM reference, whose
            perturbation only touches Linear layers).
        amp: bf16 autocast for all forwards (``False``: plain fp32).
        channels_last: NHWC memory format for the encoder (pays off together with ``amp``).
        state_repr_dim: width of the state encoder's output (state observations only).
    """

    def __init__(self, obs_shape: tuple[int, ...], action_shape: tuple[int, ...],
                 device: str | torch.device = "cpu", lr: float = 1e-4, feature_dim: int = 50,
                 hidden_dim: int = 1024, critic_target_tau: float = 0.01,
                 num_expl_steps: int = 2000, update_every_steps: int = 2,
                 stddev_schedule: str | float = "linear(1.0,0.1,500000)", stddev_clip: float = 0.3,
                 aug_pad: int = 4, use_drm: bool = False, dropout: float = 0.01,
                 expectile: float = 0.9, target_lambda: float = 0.5,
                 dormant_threshold: float = 0.025, target_dormant_ratio: float = 0.2,
                 dormant_temp: float = 10.0, perturb_every: int = 100_000,
                 perturb_rate: float = 2.0, min_perturb_factor: float = 0.2,
                 max_perturb_factor: float = 0.95, perturb_encoder: bool = False,
                 amp: bool = False, channels_last: bool = True, state_repr_dim: int = 256) -> None:
        self.device = torch.device(device)
        self.action_dim = int(action_shape[0])
        self.critic_target_tau = critic_target_tau
        self.num_expl_steps = num_expl_steps
        self.update_every_steps = update_every_steps
        self.stddev_schedule = stddev_schedule
        self.stddev_clip = stddev_clip
        self.use_drm = use_drm
        self.expectile = expectile
        self.target_lambda = target_lambda
        self.dormant_threshold = dormant_threshold
        self.target_dormant_ratio = target_dormant_ratio
        self.dormant_temp = dormant_temp
        self.perturb_every = perturb_every
        self.perturb_rate = perturb_rate
        self.min_perturb_factor = min_perturb_factor
        self.max_perturb_factor = max_perturb_factor
        self.perturb_encoder = perturb_encoder
        self.amp = amp

        # DrM state: the latest actor dormant ratio (1 before any update, so the awaken std starts
        # near 1), the step at which it first fell below target, and the next perturbation step.
        self.dormant_ratio = 1.0
        self.awaken_step: int | None = None
        self.next_perturb_step = perturb_every

        self.pixels = len(obs_shape) == 3
        self.encoder = make_encoder(tuple(obs_shape), channels_last, state_repr_dim).to(self.device)
        repr_dim = self.encoder.repr_dim
        self.actor = Actor(repr_dim, self.action_dim, feature_dim, hidden_dim).to(self.device)
        q_dropout = dropout if use_drm else 0.0
        self.critic = Critic(repr_dim, self.action_dim, feature_dim, hidden_dim,
                             dropout=q_dropout, layer_norm=use_drm).to(self.device)
        self.critic_target = Critic(repr_dim, self.action_dim, feature_dim, hidden_dim,
                                    dropout=q_dropout, layer_norm=use_drm).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.value = ValueNet(repr_dim, feature_dim, hidden_dim).to(self.device) if use_drm else None

        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=lr) if use_drm else None

        self.aug = RandomShiftsAug(aug_pad) if self.pixels else torch.nn.Identity()  # no augmentation of states
        self.train()
        self.critic_target.train()  # as in DrQ-v2 / DrM: target Q heads keep their dropout

    # ------------------------------------------------------------------ helpers
    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _networks(self) -> dict[str, torch.nn.Module]:
        nets = {"encoder": self.encoder, "actor": self.actor, "critic": self.critic,
                "critic_target": self.critic_target}
        if self.value is not None:
            nets["value"] = self.value
        return nets

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"encoder_opt": self.encoder_opt, "actor_opt": self.actor_opt,
                "critic_opt": self.critic_opt}
        if self.value_opt is not None:
            opts["value_opt"] = self.value_opt
        return opts

    def train(self, training: bool = True) -> None:
        """Train / eval mode of the online networks (the target critic stays in train mode)."""
        self.training = training
        for name, net in self._networks().items():
            if name != "critic_target":
                net.train(training)

    def should_update(self, step: int) -> bool:
        """Whether the workspace should sample a batch and call :meth:`update` at ``step``."""
        return step % self.update_every_steps == 0

    @property
    def awake_std(self) -> float:
        """DrM's dormant-ratio-driven std ``sigmoid(temp * (dormant - target))``."""
        x = self.dormant_temp * (self.dormant_ratio - self.target_dormant_ratio)
        return 1.0 / (1.0 + math.exp(-x))

    def stddev(self, step: int) -> float:
        """Exploration std at agent step ``step`` (schedule for DrQ-v2, awaken rule for DrM)."""
        if not self.use_drm:
            return schedule(self.stddev_schedule, step)
        if self.awaken_step is None:
            return self.awake_std
        return max(self.awake_std, schedule(self.stddev_schedule, step - self.awaken_step))

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """Action for one uint8 observation ``(3k, S, S)`` -> float32 ``(A,)`` in [-1, 1].

        ``eval_mode``: the policy mean; otherwise a sample with the current std, or a uniform
        random action while ``step < num_expl_steps`` (without running the networks). Uses
        torch's global RNG.
        """
        if not eval_mode and step < self.num_expl_steps:
            return torch.empty(self.action_dim).uniform_(-1.0, 1.0).numpy()
        obs_t = _as_tensor(obs, self.device).unsqueeze(0)
        with self._autocast():
            dist = self.actor(self.encoder(obs_t), self.stddev(step))
        action = dist.mean if eval_mode else dist.sample(clip=None)
        return action[0].float().cpu().numpy()

    # ------------------------------------------------------------------ learning
    def update_value(self, h: torch.Tensor, action: torch.Tensor) -> dict[str, float]:
        """DrM: expectile regression of ``V(s)`` on ``min(Q1, Q2)(s, a)`` (``h`` detached)."""
        assert self.value is not None and self.value_opt is not None
        with torch.no_grad(), self._autocast():
            q1, q2 = self.critic(h, action)
        with self._autocast():
            v = self.value(h)
        loss = expectile_loss(torch.min(q1, q2) - v, self.expectile)
        self.value_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.value_opt.step()
        return {"value_loss": loss.item(), "value": v.mean().item()}

    def update_critic(self, h: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                      discount: torch.Tensor, next_h: torch.Tensor, step: int) -> dict[str, float]:
        """TD step of the twin critic and the encoder (``h`` carries the encoder's graph).

        ``reward`` is the n-step return, ``discount`` the bootstrap factor ``gamma^n``, both (B, 1).
        """
        with torch.no_grad(), self._autocast():
            next_action = self.actor(next_h, self.stddev(step)).sample(clip=self.stddev_clip)
            target_q1, target_q2 = self.critic_target(next_h, next_action)
            target_v = torch.min(target_q1, target_q2)
            if self.use_drm:
                assert self.value is not None
                lam = self.target_lambda
                target_v = lam * self.value(next_h) + (1.0 - lam) * target_v
        target_q = reward + discount * target_v.float()
        with self._autocast():
            q1, q2 = self.critic(h, action)
        loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()
        return {"critic_target_q": target_q.mean().item(), "critic_q1": q1.mean().item(),
                "critic_q2": q2.mean().item(), "critic_loss": loss.item()}

    def update_actor(self, h: torch.Tensor, step: int) -> dict[str, float]:
        """DDPG actor step on detached features; also measures the actor's dormant ratio."""
        std = self.stddev(step)
        with DormantMonitor(self.actor, self.dormant_threshold) as monitor, self._autocast():
            dist = self.actor(h, std)
        self.dormant_ratio = monitor.ratio()
        action = dist.sample(clip=self.stddev_clip)
        log_prob = dist.log_prob(action).sum(-1, keepdim=True)
        with self._autocast():
            q1, q2 = self.critic(h, action)
        loss = -torch.min(q1, q2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        return {"actor_loss": loss.item(), "actor_logprob": log_prob.mean().item(),
                "actor_ent": dist.entropy().sum(-1).mean().item(), "actor_stddev": std,
                "actor_dormant_ratio": self.dormant_ratio}

    def update(self, batch: Any, step: int) -> dict[str, float]:
        """One gradient step of every network on ``batch`` at agent step ``step``.

        ``batch`` has fields ``obs`` (B, 3k, S, S) uint8, ``action`` (B, A), ``reward`` (B, 1)
        n-step return, ``discount`` (B, 1) ``gamma^n``, ``next_obs`` (B, 3k, S, S) uint8, as numpy
        arrays or tensors (e.g. :class:`drm.replay_buffer.Batch`, possibly with a relabelled
        ``reward``). The caller decides when to update (see :meth:`should_update`).
        """
        metrics: dict[str, float] = {}
        if self.use_drm and self.perturb_every > 0 and step >= self.next_perturb_step:
            metrics["perturb_factor"] = self.perturb()
            while self.next_perturb_step <= step:
                self.next_perturb_step += self.perturb_every

        obs = self.aug(_as_tensor(batch.obs, self.device))
        next_obs = self.aug(_as_tensor(batch.next_obs, self.device))
        action = _as_tensor(batch.action, self.device, torch.float32)
        reward = _as_tensor(batch.reward, self.device, torch.float32).reshape(-1, 1)
        discount = _as_tensor(batch.discount, self.device, torch.float32).reshape(-1, 1)

        with self._autocast():
            h = self.encoder(obs)
            with torch.no_grad():
                next_h = self.encoder(next_obs)
        metrics["batch_reward"] = reward.mean().item()
        if self.use_drm:
            metrics.update(self.update_value(h.detach(), action))
        metrics.update(self.update_critic(h, action, reward, discount, next_h, step))
        metrics.update(self.update_actor(h.detach(), step))
        soft_update(self.critic, self.critic_target, self.critic_target_tau)

        if self.use_drm:
            if self.awaken_step is None and self.dormant_ratio < self.target_dormant_ratio:
                self.awaken_step = step
            metrics["awake"] = float(self.awaken_step is not None)
        return metrics

    def perturb(self) -> float:
        """DrM perturbation of all networks with the current dormant ratio; resets every
        optimiser. Returns the interpolation factor ``p`` used."""
        factor = perturb_factor(self.dormant_ratio, self.perturb_rate, self.min_perturb_factor,
                                self.max_perturb_factor)
        linear = (torch.nn.Linear,)
        perturb(self.actor, fresh_copy(self.actor, weight_init), factor, linear)
        fresh_critic = fresh_copy(self.critic, weight_init)
        perturb(self.critic, fresh_critic, factor, linear)
        perturb(self.critic_target, fresh_critic, factor, linear)
        if self.value is not None:
            perturb(self.value, fresh_copy(self.value, weight_init), factor, linear)
        if self.perturb_encoder:
            perturb(self.encoder, fresh_copy(self.encoder, weight_init), factor, (torch.nn.Conv2d,))
        for opt in self._optimizers().values():
            reset_optimizer(opt)
        return factor

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers and DrM counters; plain tensors / dicts / numbers, loadable with
        ``torch.load(weights_only=True)``."""
        state: dict[str, Any] = {name: net.state_dict() for name, net in self._networks().items()}
        state.update({name: opt.state_dict() for name, opt in self._optimizers().items()})
        state["counters"] = {"dormant_ratio": float(self.dormant_ratio),
                             "awaken_step": self.awaken_step,
                             "next_perturb_step": int(self.next_perturb_step)}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (the agent must be built with the same options)."""
        for name, net in self._networks().items():
            net.load_state_dict(state[name])
        for name, opt in self._optimizers().items():
            opt.load_state_dict(state[name])
        counters = state["counters"]
        self.dormant_ratio = float(counters["dormant_ratio"])
        awaken = counters["awaken_step"]
        self.awaken_step = None if awaken is None else int(awaken)
        self.next_perturb_step = int(counters["next_perturb_step"])


class DrMAgent(DrQV2Agent):
    """:class:`DrQV2Agent` with ``use_drm=True`` (for Hydra ``_target_``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("use_drm", True)
        super().__init__(*args, **kwargs)

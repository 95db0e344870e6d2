"""A learned video reward for any Gymnasium environment that can show a frame.

>>> env = ProgressorReward(gymnasium.make("MyEnv-v0", render_mode="rgb_array"), model, goal=goal_image)
>>> obs, info = env.reset(seed=0)
>>> obs, reward, terminated, truncated, info = env.step(action)   # reward = mu - alpha * H
>>> info["env_reward"], info["progress_mu"], info["progress_sigma"]

:class:`RewardWrapper` takes any :class:`~video2reward.reward_fn.RewardFunction` (PROGRESSOR, a
baseline, the env's own reward); :class:`ProgressorReward` is it with PROGRESSOR. The wrapper only
*uses* the reward (inference, eval mode); training it online (push-back refinement) belongs to the
caller, which can collect the agent's frames through the ``pushback`` hook.
"""
from __future__ import annotations

from typing import Any, Callable, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

from .data import fit_frame
from .methods.progressor import ProgressModel, ProgressReward
from .reward_fn import RewardFunction

PushbackHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def fit_to_model(frame: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """An RGB frame, uint8 ``(H, W, 3)`` or ``(3, H, W)`` (numpy or torch), as uint8 ``(3, size, size)``.

    Frames of another size are resized like the evaluation transform: shorter side to ``size``,
    then centre-cropped (:func:`video2reward.data.fit_frame`).
    """
    arr = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or 3 not in (arr.shape[0], arr.shape[-1]):
        raise ValueError(f"expected an RGB uint8 frame (H, W, 3) or (3, H, W), got {arr.dtype} {arr.shape}")
    if arr.shape[0] == 3 and arr.shape[-1] != 3:
        if arr.shape[1:] == (size, size):
            return torch.from_numpy(arr.copy())  # a copy: envs may reuse their render buffer
        arr = arr.transpose(1, 2, 0)
    return torch.from_numpy(fit_frame(Image.fromarray(np.ascontiguousarray(arr)), size))


class RewardWrapper(gym.Wrapper):
    """Replace an environment's reward with ``reward``'s.

    Args:
        env: a Gymnasium env that renders RGB frames (``render_mode="rgb_array"``), or any env when
            ``frame_fn`` is given.
        reward: the reward; it is only used for inference.
        goal: the goal image, uint8 ``(H, W, 3)`` or ``(3, H, W)``. ``None``: the env's
            ``goal_frame()`` (which returns ``frame`` or ``(frame, expert_success)``) is called after
            every reset, so the goal can follow the episode's random placement.
        frame_fn: ``frame_fn(env) -> frame`` to read the current frame instead of ``env.render()``.
        pushback: optional hook ``pushback(init, frames, goal)`` receiving the agent's frames at the
            reward's size — ``init`` and ``goal`` uint8 ``(3, S, S)``, ``frames`` uint8 ``(T, 3, S, S)`` —
            e.g. to fill the replay of a push-back refinement. See ``pushback_every``.
        pushback_every: ``"step"``: the hook gets every step's frame (``T = 1``) right after it is
            scored; ``"episode"``: it gets all frames of an episode (those after each step, not the
            reset frame, which is ``init``) once it terminates or is truncated, or at the next
            ``reset()`` / ``close()`` if it was cut short.

    Each step encodes one frame: the reward keeps the init (reset) frame's and the goal's features
    for the episode. They are re-encoded at every reset, so a model refined between episodes is used
    consistently.

    ``info`` of every step gains ``env_reward`` (the wrapped env's reward) and, for rewards that
    estimate progress, ``progress_mu`` and ``progress_sigma``; ``info`` of a reset gains
    ``goal_expert_success`` when the env reports it.
    """

    def __init__(self, env: gym.Env, reward: RewardFunction, goal: np.ndarray | torch.Tensor | None = None,
                 frame_fn: Callable[[gym.Env], Any] | None = None, pushback: PushbackHook | None = None,
                 pushback_every: Literal["step", "episode"] = "episode") -> None:
        super().__init__(env)
        if reward.image_size is None:
            raise ValueError(f"RewardWrapper needs a reward that scores frames; {reward.name!r} does not")
        if frame_fn is None and env.render_mode != "rgb_array":
            raise ValueError(f"{type(self).__name__} needs RGB frames: make the env with render_mode='rgb_array' "
                             f"(it has {env.render_mode!r}) or pass frame_fn=lambda env: <uint8 frame>")
        if goal is None and not self._env_has_goal_frame():
            raise ValueError(f"{type(self).__name__} needs a goal: pass goal=<uint8 image> or wrap an env with "
                             f"goal_frame()")
        if pushback_every not in ("step", "episode"):
            raise ValueError(f"pushback_every must be 'step' or 'episode', got {pushback_every!r}")
        self.reward = reward
        self.frame_fn = frame_fn
        self.pushback = pushback
        self.pushback_every = pushback_every
        self._fixed_goal = None if goal is None else fit_to_model(goal, reward.image_size)
        self.episode_init: torch.Tensor | None = None  # (3, S, S) uint8, the reset frame
        self.episode_goal: torch.Tensor | None = None  # (3, S, S) uint8
        self._frames: list[torch.Tensor] = []  # episode frames awaiting the push-back hook

    def _env_has_goal_frame(self) -> bool:
        try:
            return callable(self.env.get_wrapper_attr("goal_frame"))
        except AttributeError:
            return False

    def frame(self) -> torch.Tensor:
        """The env's current frame at the reward's size, uint8 ``(3, S, S)``."""
        raw = self.frame_fn(self.env) if self.frame_fn is not None else self.env.render()
        if raw is None:
            raise RuntimeError("the env returned no frame (render() gave None); use render_mode='rgb_array'")
        return fit_to_model(raw, self.reward.image_size)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._flush_episode()
        obs, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        self.episode_init = self.frame()
        if self._fixed_goal is not None:
            self.episode_goal = self._fixed_goal
        else:
            goal = self.env.get_wrapper_attr("goal_frame")()
            if isinstance(goal, tuple):
                goal, info["goal_expert_success"] = goal
            self.episode_goal = fit_to_model(goal, self.reward.image_size)
        self.reward.start_episode(self.episode_init, self.episode_goal)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self.episode_init is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        frame = self.frame()
        scored = self.reward.step(frame, float(env_reward), bool(info.get("success", False)))
        info = dict(info, env_reward=env_reward)
        if scored.progress is not None:
            info.update(progress_mu=scored.progress, progress_sigma=scored.sigma)
        if self.pushback is not None:
            if self.pushback_every == "step":
                self.pushback(self.episode_init, frame.unsqueeze(0), self.episode_goal)
            else:
                self._frames.append(frame)
                if terminated or truncated:
                    self._flush_episode()
        return obs, scored.reward, terminated, truncated, info

    def _flush_episode(self) -> None:
        if self._frames and self.pushback is not None:
            frames, self._frames = torch.stack(self._frames), []
            self.pushback(self.episode_init, frames, self.episode_goal)
        self._frames = []

    def close(self) -> None:
        self._flush_episode()
        super().close()


class ProgressorReward(RewardWrapper):
    """:class:`RewardWrapper` with PROGRESSOR's ``mu - alpha * H(N(mu, sigma^2))``; ``alpha``
    defaults to ``model.alpha``. See :class:`RewardWrapper` for the other arguments."""

    def __init__(self, env: gym.Env, model: ProgressModel, goal: np.ndarray | torch.Tensor | None = None,
                 alpha: float | None = None, frame_fn: Callable[[gym.Env], Any] | None = None,
                 pushback: PushbackHook | None = None,
                 pushback_every: Literal["step", "episode"] = "episode") -> None:
        super().__init__(env, ProgressReward(model, alpha, relabel="stored"), goal, frame_fn, pushback,
                         pushback_every)
        self.model = model

    @property
    def alpha(self) -> float:
        return self.reward.alpha

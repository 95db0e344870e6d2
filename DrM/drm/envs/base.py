"""Shared pixel-env logic: action repeat, episode length, frame stacking, expert goal frames.

A concrete env (Meta-World, the toy) only says how to place a scene, step the simulator once,
render one upright RGB frame and act as the scripted expert; everything an agent sees is built
here, so both envs follow exactly the same step semantics.
"""
from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

RENDER_QUALITIES = ("fast", "default")


def canonical_task(task: str, valid: Sequence[str]) -> str:
    """Plain task name (``drawer-open``); ``drawer-open-v3`` is accepted too."""
    name = task.removesuffix("-v3")
    if name not in valid:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(valid)}")
    return name


OBS_TYPES = ("pixels", "state")


class _ExpertGoal(NamedTuple):
    """The episode's expert goal rollout, as far as it was asked for."""

    frames: np.ndarray  # (L, 3, S, S) uint8: the goal frame only (L = 1), or every frame when recorded
    success: bool
    recorded: bool


class PixelEnv(gym.Env):
    """Pixel observations of a task with a scripted expert.

    Observations are ``(3 * frame_stack, S, S)`` uint8, channels first, the newest frame last; at
    reset the stack holds ``frame_stack`` copies of the reset frame (as DrQ-v2 does). One agent
    step repeats the action ``action_repeat`` times: the env reward is summed and ``success`` is
    true if any repeat succeeded. There are no terminal states; ``truncated`` is true after
    ``episode_length`` agent steps. ``reward`` is the env's own dense reward, also returned as
    ``info["env_reward"]`` so a learner that replaces it keeps the original.

    ``obs_type="state"``: observations are the simulator's low-dimensional state ``(D,)`` float32
    instead (Meta-World's 39-d observation; the toy's position and goal); frames are still rendered
    every step and returned in ``info["frame"]`` for the reward, unless :attr:`render_frames` is
    switched off (a reward that reads no frames): ``info["frame"]`` is then a black frame and
    nothing is rendered.
    """

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, task: str, *, seed: int | None, image_size: int, action_repeat: int,
                 episode_length: int, frame_stack: int, render_quality: str, action_dim: int,
                 obs_type: str = "pixels"):
        if render_quality not in RENDER_QUALITIES:
            raise ValueError(f"render_quality must be one of {RENDER_QUALITIES}, got {render_quality!r}")
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
        if min(image_size, action_repeat, episode_length, frame_stack) < 1:
            raise ValueError("image_size, action_repeat, episode_length and frame_stack must be >= 1")
        self.task = task
        self.image_size = int(image_size)
        self.action_repeat = int(action_repeat)
        self.episode_length = int(episode_length)
        self.frame_stack = int(frame_stack)
        self.render_quality = render_quality
        self.obs_type = obs_type
        s = self.image_size
        self.observation_space = (spaces.Box(0, 255, (3 * self.frame_stack, s, s), np.uint8) if obs_type == "pixels"
                                  else spaces.Box(-np.inf, np.inf, (self.STATE_DIM,), np.float32))
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self._np_random, _ = seeding.np_random(seed)
        self.action_space.seed(seed)
        self._frames: deque[np.ndarray] = deque(maxlen=self.frame_stack)
        self._frame: np.ndarray | None = None  # (S, S, 3) newest frame
        self._t: int | None = None  # agent steps taken in this episode; None before reset
        self._placement: np.ndarray | None = None
        self._goal: _ExpertGoal | None = None
        self._actions: list[np.ndarray] = []  # this episode's actions, replayed by the goal rollout
        self._twin: PixelEnv | None = None
        self._render_frames = True
        self._blank: np.ndarray | None = None

    @property
    def render_frames(self) -> bool:
        """Whether steps render frames (always for pixel observations; a state env may skip them)."""
        return self._render_frames

    @render_frames.setter
    def render_frames(self, on: bool) -> None:
        if not on and self.obs_type == "pixels":
            raise ValueError("render_frames=False needs obs_type='state': pixel observations are frames")
        self._render_frames = bool(on)

    # ---- what a concrete env provides -------------------------------------------------------
    def _sample_placement(self, rng: np.random.Generator) -> np.ndarray:
        """Draw a random scene placement (object/goal positions) from ``rng``."""
        raise NotImplementedError

    def _reset_to(self, placement: np.ndarray) -> None:
        """Put the simulator deterministically in the initial state of ``placement``."""
        raise NotImplementedError

    def _sim_step(self, action: np.ndarray) -> tuple[float, bool]:
        """Advance the simulator by one (un-repeated) step; return (env reward, success)."""
        raise NotImplementedError

    def _render_rgb(self) -> np.ndarray:
        """The current scene as an upright ``(S, S, 3)`` uint8 image."""
        raise NotImplementedError

    def _expert_action(self) -> np.ndarray:
        raise NotImplementedError

    STATE_DIM = 0  # size of the state observation

    def _state(self) -> np.ndarray:
        """The simulator's state observation ``(STATE_DIM,)``."""
        raise NotImplementedError

    def _make_twin(self) -> PixelEnv:
        """A second env with the same settings (renders goal frames; never shares a simulator)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Settings that determine the frames (saved next to demos and runs)."""
        return {"task": self.task, "image_size": self.image_size, "action_repeat": self.action_repeat,
                "episode_length": self.episode_length, "frame_stack": self.frame_stack,
                "render_quality": self.render_quality}

    # ---- gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode with a fresh random placement drawn from the env's seeded RNG.

        ``seed`` re-seeds that RNG, so ``reset(seed=s)`` gives the same placement and frames
        for the same ``s`` on any instance with the same settings. ``options={"placement": p}``
        starts from a given placement instead (``p`` as returned by ``placement``).
        """
        super().reset(seed=seed)
        if options and "placement" in options:
            self._placement = np.array(options["placement"], dtype=np.float64)
        else:
            self._placement = self._sample_placement(self.np_random)
        self._reset_to(self._placement)
        self._t = 0
        self._goal = None
        self._actions = []
        frame = self._observe()
        for _ in range(self.frame_stack):
            self._frames.append(frame)
        return self._observation(), {"frame": frame, "success": False, "env_reward": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._t is None or self._t >= self.episode_length:
            raise RuntimeError("call reset() before step(): the episode has not started or is over")
        reward, success = self._repeat(action)
        self._actions.append(np.array(action, np.float32))
        self._t += 1
        frame = self._observe()
        self._frames.append(frame)
        truncated = self._t >= self.episode_length
        return self._observation(), reward, False, truncated, {
            "frame": frame, "success": success, "env_reward": reward}

    @property
    def placement(self) -> np.ndarray | None:
        """This episode's placement (Meta-World's random reset vector; the toy's start and goal)."""
        return None if self._placement is None else self._placement.copy()

    def render(self) -> np.ndarray:
        """The newest frame, ``(S, S, 3)`` uint8."""
        if self._frame is None:
            raise RuntimeError("call reset() before render()")
        return self._frame.copy()

    # ---- expert -------------------------------------------------------------------------------
    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state, float32 in [-1, 1]."""
        if self._t is None:
            raise RuntimeError("call reset() before expert_action()")
        return np.clip(np.asarray(self._expert_action(), np.float32), -1.0, 1.0)

    def goal_frame(self) -> tuple[np.ndarray, bool]:
        """``(frame (3, S, S) uint8, expert_success)`` for the current episode.

        The final frame of the scripted expert run to the end of the episode (``episode_length``
        agent steps in all) from this episode's state at the first call, in a second env placed
        identically that first replays the actions taken so far (never a copy of this simulator).
        Called right after ``reset`` (the default) the expert starts from the initial state; after
        the first step it starts where the released code's goal rollout did. Computed on the first
        call of an episode and cached.
        """
        frames, success = self._expert_goal(record=False)
        return frames[-1].copy(), success

    def goal_rollout(self) -> tuple[np.ndarray, bool]:
        """``(frames (L, 3, S, S) uint8, expert_success)``: every frame of :meth:`goal_frame`'s expert
        rollout, from the state it starts in (``L = episode_length + 1`` after ``reset``) to the goal
        frame, for rewards that decompose it into subgoals (UVD). Renders a frame per agent step
        once per episode; cached like the goal frame, which is its last frame."""
        frames, success = self._expert_goal(record=True)
        return frames.copy(), success

    def _expert_goal(self, record: bool) -> tuple[np.ndarray, bool]:
        if self._t is None:
            raise RuntimeError("call reset() before goal_frame()")
        if self._goal is None or (record and not self._goal.recorded):
            if self._twin is None:
                self._twin = self._make_twin()
            self._goal = _ExpertGoal(*self._twin.rollout_expert(self._placement, self._actions, record), record)
        return self._goal.frames, self._goal.success

    def rollout_expert(self, placement: np.ndarray, prefix: Sequence[np.ndarray] = (),
                       record: bool = False) -> tuple[np.ndarray, bool]:
        """Reset to ``placement``, take the ``prefix`` actions, then let the expert finish the episode;
        return (frames ``(L, 3, S, S)``, success of any step): the last frame only (``L = 1``), or with
        ``record`` every frame from the one the expert starts at."""
        self._reset_to(placement)
        self._placement, self._goal, self._t = placement, None, 0
        success = False
        for action in prefix:
            success |= self._repeat(action)[1]
            self._t += 1
        frames = [self._observe()] if record else []
        while self._t < self.episode_length:
            success |= self._repeat(self.expert_action())[1]
            self._t += 1
            if record:
                frames.append(self._observe())
        return np.stack(frames if record else [self._observe()]), success

    # ---- internals ----------------------------------------------------------------------------
    def _repeat(self, action: np.ndarray) -> tuple[float, bool]:
        action = np.clip(np.asarray(action, np.float32).reshape(self.action_space.shape), -1.0, 1.0)
        reward, success = 0.0, False
        for _ in range(self.action_repeat):
            r, s = self._sim_step(action)
            reward += r
            success |= s
        return reward, success

    def _observe(self) -> np.ndarray:
        """Render the current scene (a black frame when :attr:`render_frames` is off); keep it for
        ``render()``; return it channels first."""
        if not self._render_frames:
            if self._blank is None:
                self._blank = np.zeros((3, self.image_size, self.image_size), np.uint8)
                self._blank.flags.writeable = False  # one shared black frame: nobody may draw on it
            self._frame = self._blank.transpose(1, 2, 0)
            return self._blank
        self._frame = self._render_rgb()
        return np.ascontiguousarray(self._frame.transpose(2, 0, 1))

    def _observation(self) -> np.ndarray:
        """The stacked frames, or the state (``obs_type``)."""
        if self.obs_type == "state":
            return np.asarray(self._state(), np.float32).reshape(self.STATE_DIM)
        return np.concatenate(self._frames, axis=0)

    def close(self) -> None:
        if self._twin is not None:
            self._twin.close()
            self._twin = None

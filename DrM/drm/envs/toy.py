"""``toy-reach``: a tiny pixel task with the Meta-World env's interface, rendered with numpy.

A point (red disc) in the unit square moves by ``step_size * action`` per sub-step (action in
[-1, 1]^2, so at most ``step_size * action_repeat`` per axis per agent step) and must reach the
goal (green square). The start is drawn from the seeded RNG at least ``min_start_goal_distance``
from the goal; the goal sits at the centre (``goal="center"``, default, distance >= 0.3) or is drawn
too (``goal="random"``, distance >= 0.6). The centre goal keeps the built-in RL demo within a
30-minute CPU budget: with random goals a pixel DDPG agent must learn a relation between two
objects, which (like DMC reacher) takes on the order of 100k frames; with a fixed goal it only has
to locate the disc.

The scripted expert is *steady* by default: it moves straight to the goal at the constant speed
that lands on it at the episode's last step, so every demo frame shows a different state and the
time-linear progress labels of PROGRESSOR equal the fraction of the distance covered. (A full-speed
expert arrives after about 10 agent steps and then sits still: the rest of the demo is identical
frames labelled with progress anywhere from 1/3 to 1, which blurs the learned reward exactly at
the goal.) ``expert="fast"`` gives the full-speed one.
Dense reward: minus the distance to the goal, per sub-step. Success: distance <= ``success_radius``.
Thousands of steps per second on one CPU core: for smoke tests and quick RL checks.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from drm.envs.base import PixelEnv

TOY_TASK = "toy-reach"
_BACKGROUND = np.array([32, 36, 48], np.uint8)
_BORDER = np.array([160, 160, 170], np.uint8)
_AGENT = np.array([230, 60, 50], np.uint8)
_GOAL = np.array([60, 200, 90], np.uint8)
_AGENT_RADIUS = 0.05
_GOAL_HALF_SIZE = 0.06
_MARGIN = 0.1  # start, goal and the disc's reach: [margin, 1 - margin]^2


class ToyReachEnv(PixelEnv):
    def __init__(self, task: str = TOY_TASK, seed: int | None = 0, image_size: int = 84,
                 action_repeat: int = 2, episode_length: int = 100, frame_stack: int = 3,
                 render_quality: str = "fast", step_size: float = 0.03, success_radius: float = 0.1,
                 min_start_goal_distance: float | None = None, expert: str = "steady",
                 goal: str = "center", obs_type: str = "pixels"):
        if task != TOY_TASK:
            raise ValueError(f"ToyReachEnv only implements {TOY_TASK!r}, got {task!r}")
        if goal not in ("center", "random"):
            raise ValueError(f"goal must be 'center' or 'random', got {goal!r}")
        if min_start_goal_distance is None:
            min_start_goal_distance = 0.3 if goal == "center" else 0.6
        if expert not in ("steady", "fast"):
            raise ValueError(f"expert must be 'steady' or 'fast', got {expert!r}")
        super().__init__(TOY_TASK, seed=seed, image_size=image_size, action_repeat=action_repeat,
                         episode_length=episode_length, frame_stack=frame_stack,
                         render_quality=render_quality, action_dim=2, obs_type=obs_type)
        self._kwargs = dict(seed=seed, image_size=image_size, action_repeat=action_repeat,
                            episode_length=episode_length, frame_stack=frame_stack,
                            render_quality=render_quality, step_size=step_size,
                            success_radius=success_radius,
                            min_start_goal_distance=min_start_goal_distance, expert=expert, goal=goal)
        self.goal = goal
        self.expert = expert
        self.step_size = float(step_size)
        self.success_radius = float(success_radius)
        self.min_start_goal_distance = float(min_start_goal_distance)
        self._pos = np.zeros(2)
        self._goal_pos = np.zeros(2)
        s = self.image_size
        centres = (np.arange(s) + 0.5) / s
        self._px = centres  # x of each column
        self._py = centres[::-1].copy()  # y of each row: y points up, so row 0 is the top
        self._background = np.empty((s, s, 3), np.uint8)
        self._background[:] = _BACKGROUND
        border = max(1, s // 42)
        for edge in (np.s_[:border], np.s_[-border:]):
            self._background[edge, :] = _BORDER
            self._background[:, edge] = _BORDER
        self.metadata = {**PixelEnv.metadata, **self.describe(), "render_fps": 20}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "camera": None, "suite": "toy", "renderer": "numpy",
                "step_size": self.step_size, "success_radius": self.success_radius,
                "min_start_goal_distance": self.min_start_goal_distance, "expert": self.expert,
                "goal": self.goal}

    @property
    def position(self) -> np.ndarray:
        return self._pos.copy()

    @property
    def goal_position(self) -> np.ndarray:
        return self._goal_pos.copy()

    def _sample_placement(self, rng: np.random.Generator) -> np.ndarray:
        while True:
            start, goal = rng.uniform(_MARGIN, 1.0 - _MARGIN, size=(2, 2))
            if self.goal == "center":
                goal = np.full(2, 0.5)
            if np.linalg.norm(goal - start) >= self.min_start_goal_distance:
                return np.concatenate([start, goal])

    STATE_DIM = 4  # position and goal position

    def _state(self) -> np.ndarray:
        return np.concatenate([self._pos, self._goal_pos])

    def _reset_to(self, placement: np.ndarray) -> None:
        self._pos = np.array(placement[:2], dtype=np.float64)
        self._goal_pos = np.array(placement[2:], dtype=np.float64)

    def _sim_step(self, action: np.ndarray) -> tuple[float, bool]:
        # the disc stays inside the square where starts and goals are drawn (never at the image border,
        # which no demo shows): frames off the demos' support would get arbitrary progress
        self._pos = np.clip(self._pos + self.step_size * action, _MARGIN, 1.0 - _MARGIN)
        distance = float(np.linalg.norm(self._goal_pos - self._pos))
        return -distance, distance <= self.success_radius

    def _render_rgb(self) -> np.ndarray:
        img = self._background.copy()
        img[self._box(self._goal_pos, _GOAL_HALF_SIZE)] = _GOAL
        rows, cols = self._box(self._pos, _AGENT_RADIUS)
        ax, ay = self._pos
        disc = (self._py[rows, None] - ay) ** 2 + (self._px[None, cols] - ax) ** 2 <= _AGENT_RADIUS ** 2
        img[rows, cols][disc] = _AGENT
        return img

    def _box(self, centre: np.ndarray, half: float) -> tuple[slice, slice]:
        """Rows and columns of the pixels whose centres lie within ``half`` of ``centre`` per axis."""
        s = self.image_size
        x, y = centre
        cols = slice(max(0, math.ceil((x - half) * s - 0.5)), max(0, math.floor((x + half) * s - 0.5) + 1))
        rows = slice(max(0, math.ceil((1 - y - half) * s - 0.5)),
                     max(0, math.floor((1 - y + half) * s - 0.5) + 1))
        return rows, cols

    def _expert_action(self) -> np.ndarray:
        # Straight toward the goal; "fast": full speed, scaled down on the last step so it lands on
        # it; "steady": spread the remaining distance evenly over the remaining agent steps.
        steps_left = max(1, self.episode_length - self._t) if self.expert == "steady" else 1
        return (self._goal_pos - self._pos) / (self.step_size * self.action_repeat * steps_left)

    def _make_twin(self) -> ToyReachEnv:
        return ToyReachEnv(**self._kwargs)

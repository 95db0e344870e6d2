"""Pixel environments: Meta-World 3 tasks and the built-in ``toy-reach``, one constructor for both.

>>> env = make_env("drawer-open", seed=0)
>>> obs, info = env.reset(seed=1)            # obs (9, 84, 84) uint8, newest frame last
>>> goal, expert_ok = env.goal_frame()       # (3, 84, 84) uint8, final frame of the expert
>>> obs, reward, terminated, truncated, info = env.step(env.expert_action())
"""
from __future__ import annotations

from drm.envs.base import OBS_TYPES, RENDER_QUALITIES, PixelEnv, canonical_task
from drm.envs.metaworld_env import CAMERA, MW_TASKS, MetaWorldEnv
from drm.envs.toy import TOY_TASK, ToyReachEnv

TASKS: tuple[str, ...] = MW_TASKS + (TOY_TASK,)
PAPER_TASKS: tuple[str, ...] = ("door-open", "drawer-open", "hammer", "peg-insert-side", "pick-place",
                                "reach")
# Meta-World's ML45 split: 45 training tasks, and these five held out for meta-testing.
ML45_TEST_TASKS: tuple[str, ...] = ("bin-picking", "box-close", "door-lock", "door-unlock", "hand-insert")
ML45_TRAIN_TASKS: tuple[str, ...] = tuple(t for t in MW_TASKS if t not in ML45_TEST_TASKS)


def make_env(task: str, seed: int | None = 0, image_size: int = 84, action_repeat: int = 2,
             episode_length: int = 100, frame_stack: int = 3, render_quality: str = "fast",
             obs_type: str = "pixels") -> PixelEnv:
    """The env for ``task`` (a name in ``TASKS``; a ``-v3`` suffix is accepted).

    ``render_quality`` ("fast" or "default", see ``configure_render_quality``) must match the
    demos the reward model saw: read it with ``drm.demos.read_render_quality(demo_dir)``.
    ``obs_type``: ``pixels`` (stacked frames) or ``state`` (the simulator's state vector; frames
    still come in ``info["frame"]``).
    """
    name = canonical_task(task, TASKS)
    cls = ToyReachEnv if name == TOY_TASK else MetaWorldEnv
    return cls(name, seed=seed, image_size=image_size, action_repeat=action_repeat,
               episode_length=episode_length, frame_stack=frame_stack, render_quality=render_quality,
               obs_type=obs_type)


__all__ = ["CAMERA", "ML45_TEST_TASKS", "ML45_TRAIN_TASKS", "MW_TASKS", "OBS_TYPES", "PAPER_TASKS",
           "RENDER_QUALITIES", "TASKS", "TOY_TASK", "MetaWorldEnv", "PixelEnv", "ToyReachEnv", "canonical_task", "make_env"]

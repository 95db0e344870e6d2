"""Meta-World 3 tasks as pixel envs: camera ``corner4``, fresh seeded placement at every reset."""
from __future__ import annotations

import atexit
import importlib
import importlib.util
import os
import sys
import warnings
import weakref

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must be set before mujoco is imported

from importlib.metadata import version  # noqa: E402
from typing import Any  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from metaworld.env_dict import ALL_V3_ENVIRONMENTS, ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE  # noqa: E402
from metaworld.policies import ENV_POLICY_MAP  # noqa: E402

from drm.envs.base import PixelEnv, canonical_task  # noqa: E402

MW_TASKS: tuple[str, ...] = tuple(name.removesuffix("-v3") for name in ALL_V3_ENVIRONMENTS)
CAMERA = "corner4"  # v3's copy of the pose the original moved corner2 to: pos (0.75, 0.075, 0.7)


def configure_render_quality(model: mujoco.MjModel, quality: str) -> None:
    """``default``: the model's own settings (4096 shadow map, 4x MSAA). ``fast``: both off.

    On a CPU (Mesa llvmpipe) ``fast`` renders several times faster; frames differ slightly at
    edges and in shadows, so demos and RL must use the same setting. Call before creating a
    ``mujoco.Renderer`` (the offscreen buffer is allocated with these settings); the scene flags
    of :func:`configure_scene` go with it.
    """
    if quality == "fast":
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0


def configure_scene(renderer: mujoco.Renderer, quality: str) -> None:
    """``fast``: no reflection pass. No Meta-World surface is reflective from ``corner4`` once
    shadows and MSAA are off, so every pixel stays the same (``tests/drm/test_envs.py`` checks it on
    every task) while a frame costs about a quarter less (docs/envs.md)."""
    if quality == "fast":
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


_live_renderers: weakref.WeakSet[mujoco.Renderer] = weakref.WeakSet()


def _close_live_renderers() -> None:
    for renderer in list(_live_renderers):
        renderer.close()


def _preload_triton() -> None:
    """Load triton's LLVM before a software (Mesa) GL context loads Mesa's.

    Mesa puts its LLVM in the global symbol scope; triton (imported by torch.compile and
    torch._dynamo) loaded after that binds to those symbols and segfaults. Loaded first, it is
    safe. Costs ~0.3 s once; a no-op where triton is not installed.
    """
    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


def _make_renderer(model: mujoco.MjModel, size: int, quality: str) -> mujoco.Renderer:
    _preload_triton()
    renderer = mujoco.Renderer(model, size, size)
    configure_scene(renderer, quality)
    _live_renderers.add(renderer)
    # mujoco terminates the EGL display at exit (registered with its first GL context); atexit
    # runs last-in first-out, so re-registering here frees our contexts before that happens.
    atexit.unregister(_close_live_renderers)
    atexit.register(_close_live_renderers)
    return renderer


class MetaWorldEnv(PixelEnv):
    """A Meta-World 3 goal-observable task rendered from ``corner4``, upright, ``S x S`` RGB.

    Every reset draws a new object/goal placement from the env's seeded RNG (not the 50 fixed
    placements of ``Meta-World/MT1``). The placement is Meta-World's random reset vector; the
    simulator is always reset with it frozen, so the same vector reproduces the same state.
    """

    def __init__(self, task: str, seed: int | None = 0, image_size: int = 84, action_repeat: int = 2,
                 episode_length: int = 100, frame_stack: int = 3, render_quality: str = "fast",
                 obs_type: str = "pixels"):
        name = canonical_task(task, MW_TASKS)
        super().__init__(name, seed=seed, image_size=image_size, action_repeat=action_repeat,
                         episode_length=episode_length, frame_stack=frame_stack,
                         render_quality=render_quality, action_dim=4, obs_type=obs_type)
        self._kwargs = dict(task=name, seed=seed, image_size=image_size, action_repeat=action_repeat,
                            episode_length=episode_length, frame_stack=frame_stack,
                            render_quality=render_quality)
        self._mw = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{name}-v3-goal-observable"](seed=seed)
        self._mw.seeded_rand_vec = True  # draw placements from the env's RNG, not np.random
        # Meta-World raises past max_path_length (500) sub-steps; allow longer episodes.
        self._mw.max_path_length = max(self._mw.max_path_length, action_repeat * episode_length)
        self._policy = ENV_POLICY_MAP[f"{name}-v3"]()
        self._mw_obs: np.ndarray | None = None
        model = self._mw.model
        configure_render_quality(model, render_quality)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.image_size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.image_size)
        self._camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA)
        self._renderer: mujoco.Renderer | None = None
        self.metadata = {**PixelEnv.metadata, **self.describe(),
                         "render_fps": round(1 / (self._mw.dt * action_repeat))}

    @property
    def unwrapped_mw(self):
        """The Meta-World env underneath (model, data, observation vector)."""
        return self._mw

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "camera": CAMERA, "suite": "metaworld",
                "versions": {"metaworld": version("metaworld"), "mujoco": mujoco.__version__}}

    def _sample_placement(self, rng: np.random.Generator) -> np.ndarray:
        # Meta-World's own reset draws the vector (with its per-task rejection loops).
        self._mw.np_random = rng
        self._mw._freeze_rand_vec = False
        self._mw.reset()
        return np.array(self._mw._last_rand_vec, dtype=np.float64)

    def _reset_to(self, placement: np.ndarray) -> None:
        # A frozen-vector reset is a pure function of the vector: MuJoCo data is reset and every
        # model field the task moves is rewritten from it, so a second env lands in the same state.
        self._mw._last_rand_vec = np.array(placement, dtype=np.float64)
        self._mw._freeze_rand_vec = True
        self._mw_obs, _ = self._mw.reset()

    def _sim_step(self, action: np.ndarray) -> tuple[float, bool]:
        self._mw_obs, reward, _, _, info = self._mw.step(action)
        return float(reward), bool(info["success"])

    STATE_DIM = 39  # hand and object poses now and one step before, and the goal position

    def _state(self) -> np.ndarray:
        return self._mw_obs

    def _render_rgb(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = _make_renderer(self._mw.model, self.image_size, self.render_quality)
        self._renderer.update_scene(self._mw.data, camera=self._camera_id)
        # corner4 looks at the table upside down; a vertical flip puts the table at the bottom
        # (the same image mujoco-py's bottom-up readout gave the original Meta-World v2 data).
        return np.ascontiguousarray(self._renderer.render()[::-1])

    def _expert_action(self) -> np.ndarray:
        with warnings.catch_warnings():  # the policies warn whenever they saturate an action
            warnings.filterwarnings("ignore", "Constant", UserWarning)
            return self._policy.get_action(self._mw_obs)

    def _make_twin(self) -> MetaWorldEnv:
        return MetaWorldEnv(**self._kwargs)

    def close(self) -> None:
        super().close()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._mw.close()

"""The RL workspace: composes env, agent, replay and the run's reward.

The reward is a :class:`~video2reward.reward_fn.RewardFunction` (PROGRESSOR with push-back, or the
env's dense / sparse reward; :func:`drm.reward_setup.build_reward`); the workspace never asks which.
One agent step = ``action_repeat`` env frames. The loop (as DrQ-v2's ``train.py``):

1. act (uniform random for the first ``num_seed_frames``), step the env, score the new frame
   (``reward.step``), store it in the replay buffer;
2. every ``update_every_steps`` after the seed phase: sample an n-step batch, relabel its rewards
   with the current reward model (:func:`drm.rewards.relabel`), update the agent;
3. every ``online_finetune_every_step`` after the seed phase: the reward's online update on agent
   frames (``reward.finetune``: PROGRESSOR's push-back, :mod:`video2reward.methods.pushback`);
4. every ``eval_every_frames``: deterministic eval episodes, video, reward plots, learning curve.

Snapshots are written at episode boundaries; a rerun in the same run directory resumes exactly
(env placements are seeded per episode, so the remaining episodes replay identically) when its
configuration matches the snapshot's (:func:`drm.config.check_resume`). ``snapshot.pt`` holds the
networks, counters and RNG states; the replay buffer's frames go to ``replay/`` as append-only
segments, so a snapshot writes only what was collected since the previous one.
"""
from __future__ import annotations

import math
import os
import random
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from video2reward.checkpoint import read_checkpoint
from video2reward.io import atomic_torch_save
from video2reward.precision import resolve_precision
from video2reward.reward_fn import StepReward

from .config import check_config, check_resume
from .envs import make_env
from .logger import Logger, MeterGroup
from .plots import plot_learning_curve
from .replay_buffer import Batch, ReplayBuffer
from .reward_setup import build_reward
from .rewards import relabel
from .schedules import discount_at, nstep_at
from .video import VideoRecorder

SNAPSHOT = "snapshot.pt"
REPLAY_DIR = "replay"  # the replay buffer's segments, beside the snapshot


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpisodeStart(NamedTuple):
    """What an episode is scored against: its init frame, its goal frame (``None`` when the reward reads
    no frames) and whether the scripted expert reached the goal (``nan`` then)."""

    init: np.ndarray
    goal: np.ndarray | None
    expert_success: float


class Timers:
    """Wall-clock seconds per phase, for the time split in train.csv and the benchmark."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.total[name] += time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        out = {f"time_{k}": v for k, v in self.total.items()}
        self.total.clear()
        return out


class Workspace:
    """One run in ``run_dir``. ``checkpoint_given``: ``reward.checkpoint`` was given on the command
    line, so a missing file is an error instead of a reason to pretrain (:mod:`drm.reward_setup`)."""

    def __init__(self, cfg: DictConfig, run_dir: str | os.PathLike, checkpoint_given: bool = False) -> None:
        check_config(cfg)  # before any work: types, ranges, choices
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        snapshot = None
        if (self.run_dir / SNAPSHOT).exists():  # a rerun continues this run only if it is the same run
            snapshot = read_checkpoint(self.run_dir / SNAPSHOT, what="snapshot")
            check_resume(snapshot.get("config", {}), cfg, str(self.run_dir / SNAPSHOT))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.num_threads:
            torch.set_num_threads(int(cfg.num_threads))
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision if cfg.get("amp") is None else cfg.amp, self.device)
        print(self.precision.describe(), flush=True)
        # first: it may pretrain a reward model, which must not shift this run's RNG streams
        self.reward = build_reward(cfg, self.device, self.precision, checkpoint_given)
        seed_everything(cfg.seed)

        env_kwargs = dict(image_size=cfg.image_size, action_repeat=cfg.action_repeat,
                          episode_length=cfg.episode_length, frame_stack=cfg.frame_stack,
                          render_quality=cfg.render_quality, obs_type=cfg.obs_type)
        self.train_env = make_env(cfg.task_name, seed=cfg.seed, **env_kwargs)
        self.eval_env = make_env(cfg.task_name, seed=cfg.seed + 1_000_000, **env_kwargs)
        obs_shape = self.train_env.observation_space.shape
        action_shape = self.train_env.action_space.shape
        agent_cfg = OmegaConf.to_container(cfg.agent, resolve=True)
        agent_cfg.update(obs_shape=list(obs_shape), action_shape=list(action_shape), device=str(self.device),
                         amp=self.precision.amp, channels_last=self.precision.channels_last)
        self.agent = hydra.utils.instantiate(agent_cfg)
        self.states = cfg.obs_type == "state"  # the agent sees states; frames are for the reward
        # A reward that reads no frames (env, sparse) with a state policy: nothing needs a rendered
        # frame on training steps, nor the expert's goal rollout (eval still renders for its video).
        self.reads_frames = self.reward.image_size is not None
        if self.states and not self.reads_frames:
            self.train_env.render_frames = False
            self.eval_env.render_frames = bool(cfg.save_video)
        self.replay = ReplayBuffer(cfg.replay_buffer_size, (3, cfg.image_size, cfg.image_size), action_shape,
                                   frame_stack=cfg.frame_stack, rng=cfg.seed,
                                   state_shape=obs_shape if self.states else None)

        self.logger = Logger(self.run_dir)
        self.video = VideoRecorder(self.run_dir / "eval_video" if cfg.save_video else None)
        self.timers = Timers()
        self.global_step = 0  # agent steps
        self.global_episode = 0
        self._start_time = time.time()
        self._elapsed_before = 0.0
        if snapshot is not None:
            self.load_snapshot(snapshot)
            self.logger.truncate(self.global_frame)
            print(f"resumed from {self.run_dir / SNAPSHOT} at frame {self.global_frame}", flush=True)

    # ------------------------------------------------------------------ counters
    @property
    def global_frame(self) -> int:
        return self.global_step * self.cfg.action_repeat

    @property
    def seed_steps(self) -> int:
        return self.cfg.num_seed_frames // self.cfg.action_repeat

    def nstep(self) -> int:
        return nstep_at(self.cfg.nstep, self.global_step)

    def discount(self) -> float:
        return discount_at(self.cfg.discount, self.global_step)

    def _episode_seed(self, episode: int, eval_episode: bool = False) -> int:
        """Placements are a function of (seed, episode): reproducible and resumable."""
        return (self.cfg.seed * 1_000_003 + episode + (500_000_000 if eval_episode else 0)) % 2**31

    # ------------------------------------------------------------------ episodes
    def _reset(self, env, seed: int) -> tuple[np.ndarray, np.ndarray, EpisodeStart | None]:
        """(obs, reset frame, :meth:`_begin`'s result) of a new episode; the last is ``None`` with
        ``first_frame=after_first_action``, where the caller begins the episode after its first step."""
        obs, info = env.reset(seed=seed)
        begun = self._begin(env, info["frame"]) if self.cfg.first_frame == "reset" else None
        return obs, info["frame"], begun

    def _begin(self, env, init: np.ndarray) -> EpisodeStart:
        """Fix the episode's init frame and render its goal (the expert finishes the episode from the
        env's current state): at reset, or after the first action (``first_frame``, as released).
        A reward that reads no frames with a state policy gets no goal frame (``None``, stored as
        zeros) and ``nan`` for the expert."""
        if self.states and not self.reads_frames:
            self.reward.start_episode(init, init)
            return EpisodeStart(init, None, math.nan)
        if self.reward.wants_goal_rollout:  # subgoals of the expert's whole rollout (reward.subgoals=uvd)
            rollout, expert_success = env.goal_rollout()
            self.reward.start_episode(init, rollout)
            return EpisodeStart(init, rollout[-1], float(expert_success))
        goal, expert_success = env.goal_frame()
        self.reward.start_episode(init, goal)
        return EpisodeStart(init, goal, float(expert_success))

    def _score(self, info: dict[str, Any], env_reward: float) -> StepReward:
        with self.timers("reward"):
            return self.reward.step(info["frame"], env_reward, bool(info["success"]))

    def eval(self) -> dict[str, float]:
        cfg = self.cfg
        successes, rewards, env_rewards, goal_ok = [], [], [], []
        curves: list[tuple[list[float], bool]] = []
        for i in range(cfg.num_eval_episodes):
            obs, _, begun = self._reset(self.eval_env, self._episode_seed(i, eval_episode=True))
            self.video.init(self.eval_env.render(), enabled=(i == 0))
            success, total, total_env, mus = False, 0.0, 0.0, []
            truncated = False
            while not truncated:
                action = self.agent.act(obs, self.global_step, eval_mode=True)
                obs, env_reward, _, truncated, info = self.eval_env.step(action)
                if begun is None:
                    begun = self._begin(self.eval_env, info["frame"])
                scored = self._score(info, env_reward)
                success |= bool(info["success"])
                total += scored.reward
                total_env += env_reward
                caption = f"env r {env_reward:6.2f}  success {int(success)}"
                if scored.progress is not None:
                    mus.append(scored.progress)
                    caption = f"progress {scored.progress:5.2f}  r {scored.reward:6.2f}  " + caption
                self.video.record(info["frame"], caption)
            self.video.save(f"frame_{self.global_frame}")
            successes.append(success)
            rewards.append(total)
            env_rewards.append(total_env)
            goal_ok.append(begun.expert_success)
            if mus:
                curves.append((mus, success))
        if curves:
            self._plot_eval_progress(curves)
        return {"success_rate": float(np.mean(successes)), "episode_reward": float(np.mean(rewards)),
                "episode_env_reward": float(np.mean(env_rewards)), "goal_expert_success": float(np.mean(goal_ok)),
                "episode": self.global_episode, "step": self.global_step}

    def _plot_eval_progress(self, curves: list[tuple[list[float], bool]]) -> None:
        """Predicted progress over the eval episodes (green: success, red: failure)."""
        import matplotlib.pyplot as plt

        from video2reward.io import save_figure
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for mus, success in curves:
            ax.plot(np.arange(1, len(mus) + 1), mus, color="tab:green" if success else "tab:red", alpha=0.6, lw=1)
        ax.set_xlabel("agent step")
        ax.set_ylabel("predicted progress mu")
        ax.set_title(f"{self.cfg.task_name} eval @ {self.global_frame} frames (green = success)")
        ax.grid(alpha=0.3)
        save_figure(fig, self.run_dir / "reward_eval" / f"frame_{self.global_frame}.png", dpi=100, format="png")

    # ------------------------------------------------------------------ training
    def _update(self, meters: MeterGroup, finetune: bool = False) -> None:
        """One agent update; ``finetune``: first a push-back step on this batch's agent frames
        (``finetune.agent_frames=update_batch``, as released)."""
        cfg = self.cfg
        with self.timers("sample"):
            batch = self.replay.sample(cfg.batch_size, self.nstep(), self.discount(), window=self.reward.needs_window)
            batch = batch.to_torch(self.device)
        if finetune:
            self._finetune(meters, batch)
        with self.timers("relabel"):
            batch = relabel(batch, self.reward)
        with self.timers("update"):
            metrics = self.agent.update(batch, self.global_step)
        metrics.update(batch_reward=float(batch.reward.mean()), nstep=batch.nstep, discount=batch.gamma)
        meters.update(metrics)

    def _finetune(self, meters: MeterGroup, batch: Batch | None = None) -> None:
        """The reward's online update on agent triplets: the newest frame of a separate replay sample,
        or the oldest stacked frame of the agent's update ``batch`` (``finetune.agent_frames``)."""
        with self.timers("refine"):
            keys = {}
            if batch is None:
                batch = self.replay.sample(self.cfg.finetune.replay_batch_size, 1, 1.0, window=False)
                current, keys = batch.newest_frame, {"episodes": batch.episode, "steps": batch.step}
            else:
                current = batch.oldest_frame
            metrics = self.reward.finetune(torch.as_tensor(batch.init_frame), torch.as_tensor(current),
                                         torch.as_tensor(batch.goal_frame), **keys)
        meters.update(metrics)

    def train(self) -> dict[str, float]:
        cfg = self.cfg
        meters = MeterGroup()
        last_eval = last_snapshot = last_log = self.global_frame
        final_eval: dict[str, float] = {}
        if self.global_frame == 0:
            final_eval = self._evaluate_and_log()
        from_batch = cfg.finetune.agent_frames == "update_batch"
        while self.global_frame < cfg.num_train_frames:
            obs, reset_frame, begun = self._reset(self.train_env, self._episode_seed(self.global_episode))
            reset_state = obs if self.states else None
            if begun is not None:
                self.replay.add_first(reset_frame, goal_frame=begun.goal, state=reset_state)
            self.reward.forget(self.replay.oldest_episode)  # what the buffer evicted need not be kept
            ep_reward, ep_env_reward, ep_success, truncated = 0.0, 0.0, False, False
            while not truncated:
                with self.timers("act"):
                    action = self.agent.act(obs, self.global_step, eval_mode=False)
                if self.global_step >= self.seed_steps:
                    self.reward.begin_learning()  # reward.train_mode: the released code's first update sets eval mode
                    finetune = self.reward.online and self.global_step % cfg.online_finetune_every_step == 0
                    if self.agent.should_update(self.global_step):
                        self._update(meters, finetune=finetune and from_batch)
                    if finetune and not from_batch:
                        self._finetune(meters)
                with self.timers("env"):
                    obs, env_reward, _, truncated, info = self.train_env.step(action)
                if begun is None:  # first_frame=after_first_action
                    begun = self._begin(self.train_env, info["frame"])
                    self.replay.add_first(reset_frame, init_frame=begun.init, goal_frame=begun.goal, state=reset_state)
                reward = self._score(info, env_reward).reward
                key = self.replay.add(action, info["frame"], reward, bool(info["success"]), last=truncated,
                                      state=obs if self.states else None)
                self.reward.keep(*key)
                ep_reward += reward
                ep_env_reward += env_reward
                ep_success |= bool(info["success"])
                self.global_step += 1
            self.global_episode += 1
            meters.update({"episode_reward": ep_reward, "episode_env_reward": ep_env_reward,
                           "episode_success": float(ep_success), "goal_expert_success": float(begun.expert_success)})

            frame = self.global_frame
            if frame - last_log >= cfg.log_every_frames or frame >= cfg.num_train_frames:
                elapsed = self.elapsed()
                row = meters.pop()
                row.update(self.timers.pop(), episode=self.global_episode, step=self.global_step,
                           buffer_size=len(self.replay), total_time=elapsed,
                           fps=(frame - last_log) / max(elapsed - self._last_log_time, 1e-9))
                self._last_log_time = elapsed
                self.logger.log("train", row, frame)
                last_log = frame
            if frame - last_eval >= cfg.eval_every_frames or frame >= cfg.num_train_frames:
                final_eval = self._evaluate_and_log()
                last_eval = frame
            if cfg.save_snapshot and (frame - last_snapshot >= cfg.snapshot_every_frames
                                      or frame >= cfg.num_train_frames):
                self.save_snapshot()
                last_snapshot = frame
        self.logger.close()
        return final_eval

    _last_log_time = 0.0

    def elapsed(self) -> float:
        return self._elapsed_before + time.time() - self._start_time

    def _evaluate_and_log(self) -> dict[str, float]:
        if self.cfg.num_eval_episodes <= 0:
            return {}
        with self.timers("eval"):
            metrics = self.eval()
        metrics["total_time"] = self.elapsed()
        self.logger.log("eval", metrics, self.global_frame)
        plot_learning_curve(self.run_dir, f"{self.cfg.task_name} ({self.cfg.reward_model}, seed {self.cfg.seed})")
        return metrics

    # ------------------------------------------------------------------ snapshots
    def save_snapshot(self) -> Path:
        replay = self.replay.save(self.run_dir / REPLAY_DIR)  # appends what is new since the last snapshot
        state: dict[str, Any] = {
            "agent": self.agent.state_dict(),
            "replay": replay,
            "counters": {"global_step": self.global_step, "global_episode": self.global_episode,
                         "elapsed": self.elapsed()},
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_global_state(),
                    "python": list(random.getstate()[1])},
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }
        state["reward"] = self.reward.state_dict()
        model = getattr(self.reward, "model", None)
        if model is not None:  # self-describing: the run's (refined) reward model loads from here alone
            state["reward_model"] = {"config": dict(vars(model.config)), "state_dict": state["reward"].pop("model")}
        path = self.run_dir / SNAPSHOT
        atomic_torch_save(state, path)
        ReplayBuffer.prune(self.run_dir / REPLAY_DIR, replay)  # only after the snapshot that drops them
        return path

    def load_snapshot(self, state: dict[str, Any] | Path) -> None:
        """Restore a snapshot (its dict, or the path of ``snapshot.pt``)."""
        if not isinstance(state, dict):
            state = read_checkpoint(state, what="snapshot")
        self.agent.load_state_dict(state["agent"])
        if "segments" in state["replay"]:
            self.replay.load(self.run_dir / REPLAY_DIR, state["replay"])
        else:  # snapshots written before replay segments hold the whole buffer
            self.replay.load_state_dict(state["replay"])
        counters = state["counters"]
        self.global_step = int(counters["global_step"])
        self.global_episode = int(counters["global_episode"])
        self._elapsed_before = float(counters["elapsed"])
        self._start_time = time.time()
        self._last_log_time = self._elapsed_before
        torch.set_rng_state(state["rng"]["torch"])
        _set_numpy_global_state(state["rng"]["numpy"])
        random.setstate((3, tuple(state["rng"]["python"]), None))
        reward = dict(state.get("reward") or _reward_state_before_reward_fn(state))
        if "reward_model" in state:
            reward["model"] = state["reward_model"]["state_dict"]
        self.reward.load_state_dict(reward)


def _reward_state_before_reward_fn(state: dict[str, Any]) -> dict[str, Any]:
    """The reward's state from a snapshot written before :mod:`video2reward.reward_fn` (separate
    ``refiner`` and ``rewarder`` entries)."""
    if "rewarder" not in state:
        return {}
    cache = state["rewarder"]
    return {"finetuner": state.get("refiner"), "feature_episodes": cache["feature_episodes"],
            "features": cache["features"], "value_keys": cache["reward_keys"], "values": cache["rewards"],
            "train_mode": bool(cache.get("train_mode", False))}


def _numpy_global_state() -> dict[str, Any]:
    _, key, pos, has_gauss, cached = np.random.get_state()
    return {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


def _set_numpy_global_state(state: dict[str, Any]) -> None:
    np.random.set_state(("MT19937", state["key"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                         state["cached_gaussian"]))


def run(cfg: DictConfig, run_dir: str | os.PathLike, checkpoint_given: bool = False) -> dict[str, float]:
    """Train (or resume) one run; returns the final eval metrics."""
    workspace = Workspace(cfg, run_dir, checkpoint_given)
    result = workspace.train()
    print(f"done: {result.get('success_rate', math.nan):.2f} eval success; outputs in {workspace.run_dir}", flush=True)
    return result

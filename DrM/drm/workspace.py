"""The RL workspace: composes env, agent, replay, PROGRESSOR rewards and push-back refinement.

One agent step = ``action_repeat`` env frames. The loop (as DrQ-v2's ``train.py``):

1. act (uniform random for the first ``num_seed_frames``), step the env, score the new frame
   with PROGRESSOR (init/goal embeddings cached per episode), store it in the replay buffer;
2. every ``update_every_steps`` after the seed phase: sample an n-step batch, relabel its rewards
   with the current reward model (:mod:`drm.rewards`), update the agent;
3. every ``online_finetune_every_step`` after the seed phase: one push-back refinement step
   (:mod:`drm.refine`);
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
from typing import Any, Iterator

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from video2reward import ProgressModel
from video2reward.checkpoint import read_checkpoint
from video2reward.io import atomic_torch_save
from video2reward.precision import resolve_precision

from .config import check_config, check_resume
from .envs import make_env
from .logger import Logger, MeterGroup
from .plots import plot_learning_curve
from .refine import PushBackRefiner, RefineConfig, saved_optimizer_state
from .replay_buffer import Batch, ReplayBuffer
from .reward_setup import load_expert_demos, resolve_reward_model
from .rewards import ProgressRewarder, collected_reward, relabel
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
        self.reward_model: ProgressModel | None = None
        if cfg.reward_model == "ours":  # first: it may pretrain, which must not shift this run's RNG streams
            self.reward_model = resolve_reward_model(cfg, self.device, self.precision, checkpoint_given)
            if self.reward_model.image_size != cfg.image_size:
                raise ValueError(f"reward model takes {self.reward_model.image_size}px frames but image_size="
                                 f"{cfg.image_size}; set image_size to match the checkpoint")
        seed_everything(cfg.seed)

        env_kwargs = dict(image_size=cfg.image_size, action_repeat=cfg.action_repeat,
                          episode_length=cfg.episode_length, frame_stack=cfg.frame_stack,
                          render_quality=cfg.render_quality)
        self.train_env = make_env(cfg.task_name, seed=cfg.seed, **env_kwargs)
        self.eval_env = make_env(cfg.task_name, seed=cfg.seed + 1_000_000, **env_kwargs)
        obs_shape = self.train_env.observation_space.shape
        action_shape = self.train_env.action_space.shape
        agent_cfg = OmegaConf.to_container(cfg.agent, resolve=True)
        agent_cfg.update(obs_shape=list(obs_shape), action_shape=list(action_shape), device=str(self.device),
                         amp=self.precision.amp, channels_last=self.precision.channels_last)
        self.agent = hydra.utils.instantiate(agent_cfg)
        self.replay = ReplayBuffer(cfg.replay_buffer_size, (3, cfg.image_size, cfg.image_size), action_shape,
                                   frame_stack=cfg.frame_stack, rng=cfg.seed)

        self.rewarder: ProgressRewarder | None = None
        self.refiner: PushBackRefiner | None = None
        if self.reward_model is not None:
            self.rewarder = ProgressRewarder(self.reward_model, cfg.reward.alpha, train_mode=cfg.reward.train_mode)
            if cfg.online_finetune:
                expert = load_expert_demos(cfg, self.reward_model.image_size)
                fc = cfg.finetune
                self.refiner = PushBackRefiner(self.reward_model, expert, RefineConfig(
                    lr=fc.lr, beta=fc.beta, sigma_scale=fc.sigma_scale, pushback_weight=fc.pushback_weight,
                    expert_batch_size=fc.expert_batch_size, replay_batch_size=fc.replay_batch_size,
                    crop_scale=tuple(fc.crop_scale), crop=fc.crop, round_label_std=fc.round_label_std,
                    clip_grad=fc.clip_grad), amp=self.precision.amp, seed=cfg.seed)
                if fc.resume_optimizer:
                    self._resume_refine_optimizer()

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

    def _resume_refine_optimizer(self) -> None:
        """``finetune.resume_optimizer``: AdamW continues from the reward checkpoint's optimiser state
        (the released code loads ``optim_state_dict``); a checkpoint without one keeps a fresh AdamW."""
        source = str(self.cfg.reward.checkpoint)
        state = None if source.startswith("hf://") else saved_optimizer_state(read_checkpoint(Path(source).expanduser()))
        if state is None:
            print(f"finetune.resume_optimizer: {source} holds no optimiser state; refinement starts a fresh AdamW",
                  flush=True)
            return
        self.refiner.load_optimizer_state(state)
        print(f"finetune.resume_optimizer: refinement AdamW continues from the state saved in {source}", flush=True)

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
    def _reset(self, env, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, bool] | None]:
        """(obs, reset frame, :meth:`_begin`'s result) of a new episode; the last is ``None`` with
        ``first_frame=after_first_action``, where the caller begins the episode after its first step."""
        obs, info = env.reset(seed=seed)
        begun = self._begin(env, info["frame"]) if self.cfg.first_frame == "reset" else None
        return obs, info["frame"], begun

    def _begin(self, env, init: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Fix the episode's init frame and render its goal (the expert finishes the episode from the
        env's current state): at reset, or after the first action (``first_frame``, as released).
        Returns (init frame, goal frame, expert reached the goal)."""
        goal, expert_success = env.goal_frame()
        if self.rewarder is not None:
            self.rewarder.start_episode(init, goal)
        return init, goal, expert_success

    def _score(self, frame: np.ndarray) -> tuple[float | None, float | None]:
        """(PROGRESSOR reward, mu) of a frame, or (None, None) without a reward model."""
        if self.rewarder is None:
            return None, None
        with self.timers("reward"):
            reward, mu, _ = self.rewarder.step(frame)
        return reward, mu

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
                progress, mu = self._score(info["frame"])
                success |= bool(info["success"])
                total += collected_reward(cfg.reward_model, env_reward, info["success"], progress)
                total_env += env_reward
                if mu is not None:
                    mus.append(mu)
                caption = f"env r {env_reward:6.2f}  success {int(success)}"
                if progress is not None:
                    caption = f"progress {mu:5.2f}  r {progress:6.2f}  " + caption
                self.video.record(info["frame"], caption)
            self.video.save(f"frame_{self.global_frame}")
            successes.append(success)
            rewards.append(total)
            env_rewards.append(total_env)
            goal_ok.append(begun[2])
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

        from video2reward.io import atomic_path
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for mus, success in curves:
            ax.plot(np.arange(1, len(mus) + 1), mus, color="tab:green" if success else "tab:red", alpha=0.6, lw=1)
        ax.set_xlabel("agent step")
        ax.set_ylabel("predicted progress mu")
        ax.set_title(f"{self.cfg.task_name} eval @ {self.global_frame} frames (green = success)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.run_dir / "reward_eval" / f"frame_{self.global_frame}.png"
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)

    # ------------------------------------------------------------------ training
    def _update(self, meters: MeterGroup, refine: bool = False) -> None:
        """One agent update; ``refine``: first a push-back step on this batch's agent frames
        (``finetune.agent_frames=update_batch``, as released)."""
        cfg = self.cfg
        window = cfg.reward_model == "ours" and cfg.reward.relabel == "window"
        with self.timers("sample"):
            batch = self.replay.sample(cfg.batch_size, self.nstep(), self.discount(), window=window)
            batch = batch.to_torch(self.device)
        if refine:
            self._refine(meters, batch)
        with self.timers("relabel"):
            batch = relabel(batch, cfg.reward_model, cfg.reward.relabel, self.rewarder)
        with self.timers("update"):
            metrics = self.agent.update(batch, self.global_step)
        metrics.update(batch_reward=float(batch.reward.mean()), nstep=batch.nstep, discount=batch.gamma)
        meters.update(metrics)

    def _refine(self, meters: MeterGroup, batch: Batch | None = None) -> None:
        """One push-back step on agent triplets: the newest frame of a separate replay sample, or the
        oldest stacked frame of the agent's update ``batch``."""
        with self.timers("refine"):
            if batch is None:
                batch = self.replay.sample(self.refiner.config.replay_batch_size, 1, 1.0, window=False)
                current = torch.as_tensor(batch.obs[:, -3:])
            else:
                current = torch.as_tensor(batch.oldest_frame)
            metrics = self.refiner.update(torch.as_tensor(batch.init_frame), current,
                                          torch.as_tensor(batch.goal_frame))
            self.rewarder.refresh()  # the cached embeddings belong to the old model
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
            if begun is not None:
                self.replay.add_first(reset_frame, goal_frame=begun[1])
            ep_reward, ep_env_reward, ep_success, truncated = 0.0, 0.0, False, False
            while not truncated:
                with self.timers("act"):
                    action = self.agent.act(obs, self.global_step, eval_mode=False)
                if self.global_step >= self.seed_steps:
                    if self.rewarder is not None and self.rewarder.train_mode:
                        self.rewarder.end_train_mode()  # the released code's first update sets eval mode
                    refine = self.refiner is not None and self.global_step % cfg.online_finetune_every_step == 0
                    if self.agent.should_update(self.global_step):
                        self._update(meters, refine=refine and from_batch)
                    if refine and not from_batch:
                        self._refine(meters)
                with self.timers("env"):
                    obs, env_reward, _, truncated, info = self.train_env.step(action)
                if begun is None:  # first_frame=after_first_action
                    begun = self._begin(self.train_env, info["frame"])
                    self.replay.add_first(reset_frame, init_frame=begun[0], goal_frame=begun[1])
                progress, _ = self._score(info["frame"])
                reward = collected_reward(cfg.reward_model, env_reward, info["success"], progress)
                self.replay.add(action, info["frame"], reward, bool(info["success"]), last=truncated)
                ep_reward += reward
                ep_env_reward += env_reward
                ep_success |= bool(info["success"])
                self.global_step += 1
            self.global_episode += 1
            meters.update({"episode_reward": ep_reward, "episode_env_reward": ep_env_reward,
                           "episode_success": float(ep_success), "goal_expert_success": float(begun[2])})

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
        if self.reward_model is not None:
            state["reward_model"] = {"config": dict(vars(self.reward_model.config)),
                                     "state_dict": self.reward_model.state_dict()}
        if self.refiner is not None:
            state["refiner"] = self.refiner.state_dict()
        if self.rewarder is not None:
            state["rewarder"] = self.rewarder.state_dict()
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
        if self.reward_model is not None and "reward_model" in state:
            self.reward_model.load_state_dict(state["reward_model"]["state_dict"])
        if self.refiner is not None and "refiner" in state:
            self.refiner.load_state_dict(state["refiner"])
        if self.rewarder is not None and "rewarder" in state:
            self.rewarder.load_state_dict(state["rewarder"])


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

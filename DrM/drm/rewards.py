"""Where the learner's reward comes from.

* :class:`ProgressRewarder` — PROGRESSOR at every env step, with the episode's init and goal
  embeddings cached (one frame encoded per step), and relabelling of sampled batches with the
  current model.
* :func:`relabel` — the reward the learner sees for a replay batch, for each ``reward_model`` /
  ``reward.relabel`` choice.

Relabel modes (``reward_model=ours``):

``window``  (default) every step of the n-step window is rescored with the current model, on the
            newest frame of that step (``o_{t+1} .. o_{t+n}``), and the rewards summed with discount:
            ``R = sum_i gamma^i r(o_init, o_{t+1+i}, o_goal)``. A frame's reward is computed once
            per model version (kept until the next refinement step), so the cost is the frames
            not scored since, not ``batch x n`` encodes per update.
``paper``   the released code: one reward on the OLDEST frame of the observation stack of ``o_t``,
            used in place of the whole n-step return.
``stored``  no recomputation: the n-step sum of the rewards computed when the steps were collected
            (cheapest; the rewards lag the refined model).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from video2reward import ProgressModel, autocast

from .replay_buffer import Batch, discounted_sum

REWARD_MODELS = ("ours", "env", "sparse")
RELABEL_MODES = ("window", "paper", "stored")


class ProgressRewarder:
    """PROGRESSOR rewards for one episode at a time; the model runs in eval mode, except that with
    ``train_mode`` set :meth:`step` runs it as the released code did before its first agent update:
    in train mode, BatchNorm normalising each frame with its own statistics and updating the running
    ones, the init, current and goal frames encoded one at a time at every step (nothing cached).
    The workspace calls :meth:`end_train_mode` at the first agent update.

    Everything cached (init/goal features per episode, rewards per replay frame) belongs to the
    model as it was at the last :meth:`refresh`: call it whenever the weights change (the workspace
    does after each push-back refinement step).
    """

    MAX_CACHED_REWARDS = 4_000_000  # bound on the per-frame reward cache (dropped whole beyond it)

    def __init__(self, model: ProgressModel, alpha: float | None = None, train_mode: bool = False) -> None:
        self.model = model
        self.alpha = model.alpha if alpha is None else float(alpha)
        self.train_mode = bool(train_mode)
        self._f_init: torch.Tensor | None = None
        self._f_goal: torch.Tensor | None = None
        self._frames_init_goal: tuple[torch.Tensor, torch.Tensor] | None = None
        # episode id -> (2, D) init/goal features under the current weights; cleared by refresh()
        self._episode_features: dict[int, torch.Tensor] = {}
        # frame key (episode id, step) -> reward under the current weights; cleared by refresh()
        self._rewards: dict[tuple[int, int], float] = {}

    def _frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(frames)
        return x.unsqueeze(0) if x.dim() == 3 else x

    def start_episode(self, init_frame: np.ndarray, goal_frame: np.ndarray) -> None:
        """Encode and cache the episode's init and goal frames ``(3, S, S)`` uint8."""
        self._frames_init_goal = (self._frames(init_frame), self._frames(goal_frame))
        if self.train_mode:  # encoded at every step instead (their BatchNorm updates are part of it)
            self._f_init = self._f_goal = None
            return
        f = self.model.encode(torch.cat(self._frames_init_goal))
        self._f_init, self._f_goal = f[:1], f[1:]

    def end_train_mode(self) -> None:
        """Score in eval mode from now on (the released code's first agent update); the running
        statistics moved, so every cache is rebuilt."""
        self.train_mode = False
        self.refresh()

    def _train_mode_features(self, frame: torch.Tensor) -> torch.Tensor:
        """Features of one frame ``(1, 3, S, S)`` with the model in train mode (running stats updated)."""
        was_training = self.model.training
        self.model.train()
        try:
            with torch.no_grad(), autocast(self.model.device, self.model.amp):
                return self.model.features(frame)
        finally:
            self.model.train(was_training)

    def refresh(self, init_frame: np.ndarray | None = None, goal_frame: np.ndarray | None = None) -> None:
        """The model changed (push-back refinement): re-encode the episode cache (the current
        episode's frames by default), drop the per-episode features :meth:`score` kept."""
        self._episode_features.clear()
        self._rewards.clear()
        if init_frame is not None:
            self.start_episode(init_frame, goal_frame)
        elif self._frames_init_goal is not None:
            self.start_episode(*self._frames_init_goal)

    def step(self, frame: np.ndarray) -> tuple[float, float, float]:
        """``(reward, mu, sigma)`` of the current frame ``(3, S, S)``: one frame encoded (three in
        ``train_mode``)."""
        if self._frames_init_goal is None:
            raise RuntimeError("call start_episode(init_frame, goal_frame) before step()")
        if self.train_mode:
            init, goal = self._frames_init_goal
            f_init, f_cur, f_goal = (self._train_mode_features(x) for x in (init, self._frames(frame), goal))
            dist = self.model.predict_from_features(f_init, f_cur, f_goal)
        else:
            dist = self.model.predict_from_features(self._f_init, self.model.encode(self._frames(frame)), self._f_goal)
        reward = self.model.reward_from_normal(dist, self.alpha)
        return float(reward[0]), float(dist.loc[0]), float(dist.scale[0])

    def score(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor,
              episodes: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """Rewards for ``(B, 3, S, S)`` init/goal and ``(B, n, 3, S, S)`` or ``(B, 3, S, S)`` current
        frames -> ``(B, n)`` or ``(B,)``.

        With ``episodes`` (``(B,)`` replay episode ids) the init/goal features are kept per episode
        until :meth:`refresh` (the model changed), so a batch encodes only the init/goal frames of
        episodes not seen since; without, they are encoded once per sample.
        """
        b = init.shape[0]
        window = current.dim() == 5
        cur = current.flatten(0, 1) if window else current
        if episodes is None:
            f = self.model.encode(torch.cat([init, goal, cur]))
            f_init, f_goal, f_cur = f[:b], f[b:2 * b], f[2 * b:]
        else:
            ids = [int(e) for e in torch.as_tensor(episodes).tolist()]
            first = {e: i for i, e in reversed(list(enumerate(ids)))}  # one sample per episode
            new = [i for e, i in first.items() if e not in self._episode_features]
            f = self.model.encode(torch.cat([init[new], goal[new], cur]))
            for j, i in enumerate(new):
                self._episode_features[ids[i]] = torch.stack([f[j], f[len(new) + j]])
            f_cur = f[2 * len(new):]
            pairs = torch.stack([self._episode_features[e] for e in ids])
            f_init, f_goal = pairs[:, 0], pairs[:, 1]
        if window:
            n = current.shape[1]
            f_init = f_init.repeat_interleave(n, 0)
            f_goal = f_goal.repeat_interleave(n, 0)
        r = self.model.reward_from_features(f_init, f_cur, f_goal, self.alpha)
        return r.view(b, -1) if window else r

    def score_window(self, init: torch.Tensor, window: torch.Tensor, goal: torch.Tensor,
                     episodes: torch.Tensor | np.ndarray, steps: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Rewards ``(B, n)`` of the window frames ``(B, n, 3, S, S)``, frame ``i`` of sample ``b``
        being step ``steps[b] + 1 + i`` of episode ``episodes[b]``.

        A frame's reward depends only on the weights and its episode's init/goal frames, so it is
        kept per (episode, step) until :meth:`refresh`: only frames not scored since the last
        refinement are encoded (relabelling samples each frame many times between refinements).
        The values are the ones :meth:`score` computes.
        """
        b, n = window.shape[:2]
        eps = torch.as_tensor(episodes).tolist()
        first = torch.as_tensor(steps).tolist()
        keys = [(int(e), int(t) + 1 + i) for e, t in zip(eps, first) for i in range(n)]
        last = dict(zip(keys, range(len(keys))))  # one position per distinct frame
        missing = [j for key, j in last.items() if key not in self._rewards]
        if missing:
            rows = torch.as_tensor([j // n for j in missing])
            cols = torch.as_tensor([j % n for j in missing])
            scored = self.score(init[rows], window[rows, cols], goal[rows], torch.as_tensor(eps)[rows])
            if len(self._rewards) + len(missing) > self.MAX_CACHED_REWARDS:
                self._rewards.clear()
            self._rewards.update(zip((keys[j] for j in missing), scored.tolist()))
        out = torch.tensor([self._rewards[key] for key in keys], dtype=torch.float32, device=init.device)
        return out.view(b, n)


    def state_dict(self) -> dict[str, torch.Tensor]:
        """The caches (per-episode features, per-frame rewards), so that a resumed run scores
        exactly as the uninterrupted one (encoding a different batch can change the last bits)."""
        eps = sorted(self._episode_features)
        keys = list(self._rewards)
        return {"feature_episodes": torch.tensor(eps, dtype=torch.int64),
                "features": torch.stack([self._episode_features[e].cpu() for e in eps]) if eps
                else torch.zeros(0, 2, 0),
                "reward_keys": torch.tensor(keys, dtype=torch.int64).view(-1, 2),
                "rewards": torch.tensor([self._rewards[k] for k in keys], dtype=torch.float64),
                "train_mode": torch.tensor(self.train_mode)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.model.device
        self._episode_features = {int(e): f.to(device) for e, f in zip(state["feature_episodes"], state["features"])}
        self._rewards = {(int(e), int(t)): float(r)
                         for (e, t), r in zip(state["reward_keys"].tolist(), state["rewards"].tolist())}
        if "train_mode" in state:
            self.train_mode = bool(state["train_mode"])


def collected_reward(reward_model: str, env_reward: float, success: bool, progress_reward: float | None) -> float:
    """The reward written to the replay buffer when a step is collected (the ``stored`` reward)."""
    if reward_model == "ours":
        return float(progress_reward)
    if reward_model == "env":
        return float(env_reward)
    if reward_model == "sparse":
        return float(success)
    raise ValueError(f"unknown reward_model {reward_model!r}; choose one of {REWARD_MODELS}")


def relabel(batch: Batch, reward_model: str, mode: str = "window",
            rewarder: ProgressRewarder | None = None) -> Batch:
    """The batch with ``reward`` replaced by what the learner should see (module docstring).

    ``batch`` is a torch batch (:meth:`Batch.to_torch`) whose ``reward`` already holds the n-step sum
    of the collected rewards (:func:`collected_reward`): that is the answer for ``env``, ``sparse``
    and ``stored``.
    """
    if mode not in RELABEL_MODES:
        raise ValueError(f"unknown reward.relabel {mode!r}; choose one of {RELABEL_MODES}")
    if reward_model != "ours" or mode == "stored":
        return batch
    if rewarder is None:
        raise ValueError("reward_model=ours needs a ProgressRewarder")
    if mode == "window":
        rewards = rewarder.score_window(batch.init_frame, batch.window_frames, batch.goal_frame, batch.episode,
                                        batch.step)
        return dataclasses.replace(batch, reward=discounted_sum(rewards, batch.gamma))
    rewards = rewarder.score(batch.init_frame, batch.oldest_frame, batch.goal_frame, batch.episode)  # paper
    return dataclasses.replace(batch, reward=rewards.unsqueeze(1))

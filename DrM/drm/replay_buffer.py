"""In-memory replay buffer that stores every frame once and stacks frames at sampling time.

Layout: a ring of ``capacity`` *slots*, one per frame. An episode of ``T`` agent steps occupies
``T + 1`` consecutive slots (mod ``capacity``): slot 0 holds the reset frame ``o_0``; slot ``i >= 1``
holds the frame ``o_i`` observed after action ``a_{i-1}``, together with that action, the env
reward ``r_i`` and the success flag of that step. Each episode also keeps its init frame (the
reset frame unless given) and its goal frame, for reward relabelling.

Frames are stored once so that a transition costs one frame plus a few bytes, a third of DrQ-v2's
stored 9-channel stack (:attr:`ReplayBuffer.bytes_per_transition`; the sizes at 84 px in docs/rl.md).

Writing (one episode at a time)::

    buffer.add_first(frame, init_frame=None, goal_frame=goal)   # at reset
    buffer.add(action, frame, env_reward, success)              # after every agent step
    buffer.add(action, frame, env_reward, success, last=True)   # optionally on the final step

``add_first`` starts a new episode (closing any open one); ``last=True`` closes the episode so
that a stray ``add`` raises. Episodes have no terminal states (time limits only), so there is no
``done`` flag in the targets: ``discount`` is always ``gamma^n``.

Sampling: transition ``t`` of an episode is sampled only if the episode already holds the ``n``
following steps, so an n-step window never crosses an episode end (in-progress episodes are
sampled too). Observation stacks repeat the reset frame at the episode start (``[o_0, o_0, o_0]``,
``[o_0, o_0, o_1]``, ...), exactly like a frame-stack wrapper filled at reset, oldest frame first.

Persistence (:meth:`ReplayBuffer.save` / :meth:`ReplayBuffer.load`): each save appends ONE
segment file to a folder holding only the slots and episodes added since the previous save, and
returns a small state (counters, live episodes, RNG, the list of segments) for the snapshot; what
is already on disk is never rewritten, and segments whose slots have all been overwritten since
are deleted after the snapshot that no longer needs them is committed (:meth:`prune`).
:meth:`state_dict` / :meth:`load_state_dict` keep the whole buffer in one object instead.

Eviction: when the ring is full the oldest episode is dropped *whole* as soon as its first slot
is overwritten, so every stored transition always has its full stack and its episode frames.
Sampling is uniform over valid transitions, drawn with the buffer's ``np.random.Generator``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from video2reward.checkpoint import read_checkpoint
from video2reward.io import atomic_torch_save


def discounted_sum(rewards: np.ndarray | torch.Tensor, gamma: float) -> np.ndarray | torch.Tensor:
    """``sum_i gamma^i rewards[:, i]``: ``(B, n) -> (B, 1)`` float32, numpy or torch in, same out."""
    n = rewards.shape[1]
    if isinstance(rewards, torch.Tensor):
        weights = gamma ** torch.arange(n, dtype=torch.float64, device=rewards.device)
        return (rewards.double() @ weights).unsqueeze(1).float()
    weights = gamma ** np.arange(n, dtype=np.float64)
    return (np.asarray(rewards, dtype=np.float64) @ weights)[:, None].astype(np.float32)


class FrameWindow:
    """The frames of a batch's n-step windows, gathered from the buffer only where indexed.

    ``window[index]`` indexes like a ``(B, n, 3, S, S)`` uint8 array (``shape``) and gathers just those
    frames: a numpy array, or a tensor on ``device`` after :meth:`to`. A reward that keeps what it
    computed per frame (``FrameReward``) looks at the few frames it has not scored since its model
    last changed, where gathering every window (2,560 frames of 21 KB for batch 256, n = 10) took
    most of a sample. It reads the buffer when indexed: use it before the buffer is written again.
    """

    def __init__(self, frames: np.ndarray, slots: np.ndarray, device: torch.device | str | None = None) -> None:
        self._frames, self._slots, self.device = frames, slots, device
        self.shape = (*slots.shape, *frames.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray | torch.Tensor:
        if isinstance(index, tuple):
            index = tuple(i.cpu().numpy() if isinstance(i, torch.Tensor) else i for i in index)
        elif isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        frames = self._frames[self._slots[index]]
        return frames if self.device is None else torch.as_tensor(frames, device=self.device)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        frames = self._frames[self._slots]
        return frames if dtype is None else frames.astype(dtype)

    def to(self, device: torch.device | str) -> "FrameWindow":
        return FrameWindow(self._frames, self._slots, device)


@dataclass
class Batch:
    """A sampled batch of n-step transitions ``(o_t, a_t, R, gamma^n, o_{t+n})`` plus what reward
    relabelling needs. Arrays are numpy (from :meth:`ReplayBuffer.sample`) or torch tensors (after
    :meth:`to_torch`). Replace fields with ``dataclasses.replace(batch, reward=...)``.

    Shapes: ``B`` batch, ``k`` frame stack, ``n`` n-step, ``S`` image side, ``A`` action dim.
    """

    obs: Any  # (B, 3k, S, S) uint8: stack at step t, oldest frame first, o_t in obs[:, -3:]
    #           or (B, D) float32: the state s_t (a buffer with state_shape)
    action: Any  # (B, A) float32: a_t
    reward: Any  # (B, 1) float32: sum_{i<n} gamma^i r_{t+1+i} of the env rewards
    discount: Any  # (B, 1) float32: gamma^n (no terminal states)
    next_obs: Any  # (B, 3k, S, S) uint8: stack at step t+n
    init_frame: Any  # (B, 3, S, S) uint8: the episode's init (reset) frame
    goal_frame: Any  # (B, 3, S, S) uint8: the episode's goal frame (zeros if none was given)
    window_frames: Any  # (B, n, 3, S, S) uint8: o_{t+1} .. o_{t+n} (a FrameWindow), or None if not requested
    env_reward_window: Any  # (B, n) float32: r_{t+1} .. r_{t+n}
    success_window: Any  # (B, n) bool: success flags of those steps
    episode: Any  # (B,) int64: episode ids
    step: Any  # (B,) int64: t, the step of obs inside its episode
    nstep: int  # n
    gamma: float  # per-step discount used for reward / discount
    newest_frame: Any = None  # (B, 3, S, S) uint8: o_t, the frame of step t
    oldest_frame: Any = None  # (B, 3, S, S) uint8: the oldest frame of o_t's stack, what the released
    #                            PROGRESSOR code scored (reward.relabel=paper)

    def to_torch(self, device: str | torch.device) -> "Batch":
        """Copy with every array field moved to ``device`` as a tensor (dtypes kept)."""
        def convert(x: Any) -> Any:
            if isinstance(x, FrameWindow):
                return x.to(device)
            return torch.as_tensor(x, device=device) if isinstance(x, (np.ndarray, torch.Tensor)) else x
        return dataclasses.replace(self, **{f.name: convert(getattr(self, f.name))
                                            for f in dataclasses.fields(self)})


@dataclass
class _Episode:
    start: int  # slot of the reset frame
    length: int  # frames stored so far (agent steps + 1)
    init: np.ndarray  # (3, S, S) uint8
    goal: np.ndarray  # (3, S, S) uint8


class ReplayBuffer:
    """Frame-once ring buffer (module docstring).

    Args:
        capacity: number of frame slots (= transitions + one reset frame per episode).
        frame_shape: ``(3, S, S)`` of a single uint8 frame.
        action_shape: ``(A,)``.
        frame_stack: ``k``, frames per observation.
        rng: ``np.random.Generator`` (or a seed) that drives sampling; part of the state dict.
        state_shape: ``(D,)`` to also store a float32 state per slot (``obs_type=state``): then the
            batch's ``obs`` / ``next_obs`` are the states ``s_t`` / ``s_{t+n}`` (no stacking), and
            the frames serve the reward only. ``add_first`` / ``add`` take the ``state``.
    """

    _MAX_REJECTION_ROUNDS = 8

    def __init__(self, capacity: int, frame_shape: tuple[int, int, int], action_shape: tuple[int, ...],
                 frame_stack: int = 3, rng: np.random.Generator | int | None = None,
                 state_shape: tuple[int, ...] | None = None) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity}")
        self.capacity = int(capacity)
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.action_shape = tuple(int(d) for d in action_shape)
        self.frame_stack = int(frame_stack)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        # np.empty: pages are only committed once written, so a large capacity costs nothing upfront
        self._frames = np.empty((self.capacity, *self.frame_shape), dtype=np.uint8)
        self.state_shape = None if state_shape is None else tuple(int(d) for d in state_shape)
        self._states = None if state_shape is None else np.zeros((self.capacity, *self.state_shape), np.float32)
        self._action = np.zeros((self.capacity, *self.action_shape), dtype=np.float32)
        self._reward = np.zeros(self.capacity, dtype=np.float32)
        self._success = np.zeros(self.capacity, dtype=bool)
        self._episode = np.full(self.capacity, -1, dtype=np.int64)  # -1: free / evicted slot
        self._step = np.zeros(self.capacity, dtype=np.int64)
        self._episodes: dict[int, _Episode] = {}  # live episodes, oldest first
        self._ptr = 0  # next slot to write
        self._filled = 0  # slots written at least once
        self._written = 0  # slots written ever (global slot index of the next write; _ptr = _written % capacity)
        self._saved_written = 0  # _written at the last save()
        self._saved_episodes = 0  # _next_episode_id at the last save()
        self._segments: list[list] = []  # [file name, first global slot, end global slot] of each saved segment
        self._current: int | None = None  # id of the open episode
        self._next_episode_id = 0
        self._num_transitions = 0

    # ------------------------------------------------------------------ writing
    def _check_frame(self, frame: np.ndarray, name: str) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.shape != self.frame_shape or frame.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 {self.frame_shape}, got {frame.dtype} {frame.shape}")
        return frame

    def _evict(self, episode_id: int) -> None:
        ep = self._episodes.pop(episode_id)
        self._episode[(ep.start + np.arange(ep.length)) % self.capacity] = -1
        self._num_transitions -= ep.length - 1

    def _check_state(self, state: np.ndarray | None) -> np.ndarray | None:
        if self.state_shape is None:
            return None
        if state is None:
            raise ValueError(f"this buffer stores states {self.state_shape}: pass state=")
        return np.asarray(state, np.float32).reshape(self.state_shape)

    def _write(self, frame: np.ndarray, action: np.ndarray, reward: float, success: bool,
               state: np.ndarray | None = None) -> int:
        slot = self._ptr
        owner = int(self._episode[slot])
        if owner >= 0:
            if owner == self._current:
                raise ValueError(f"episode longer than the buffer capacity ({self.capacity} slots)")
            self._evict(owner)
        self._frames[slot] = frame
        if self._states is not None:
            self._states[slot] = state
        self._action[slot] = action
        self._reward[slot] = reward
        self._success[slot] = success
        self._ptr = (slot + 1) % self.capacity
        self._filled = min(self._filled + 1, self.capacity)
        self._written += 1
        return slot

    def add_first(self, frame: np.ndarray, init_frame: np.ndarray | None = None,
                  goal_frame: np.ndarray | None = None, state: np.ndarray | None = None) -> tuple[int, int]:
        """Start an episode with its reset frame ``(3, S, S)`` uint8 (and reset state). ``init_frame``
        defaults to ``frame``; ``goal_frame`` to zeros (env / sparse rewards need none). Returns the
        frame's key ``(episode id, 0)``."""
        frame = self._check_frame(frame, "frame")
        state = self._check_state(state)
        init = frame if init_frame is None else self._check_frame(init_frame, "init_frame")
        goal = (np.zeros(self.frame_shape, np.uint8) if goal_frame is None
                else self._check_frame(goal_frame, "goal_frame"))
        self._current = None
        slot = self._write(frame, np.zeros(self.action_shape, np.float32), 0.0, False, state)
        episode_id = self._next_episode_id
        self._next_episode_id += 1
        self._episode[slot] = episode_id
        self._step[slot] = 0
        self._episodes[episode_id] = _Episode(slot, 1, init.copy(), goal.copy())
        self._current = episode_id
        return episode_id, 0

    def add(self, action: np.ndarray, frame: np.ndarray, env_reward: float, success: bool,
            last: bool = False, state: np.ndarray | None = None) -> tuple[int, int]:
        """Append one agent step: the action taken, the frame (and state) observed after it, the
        env reward and success flag of that step; ``last=True`` closes the episode. Returns the
        frame's key ``(episode id, step)``, as batches name it."""
        if self._current is None:
            raise RuntimeError("add() without an open episode: call add_first() at reset")
        frame = self._check_frame(frame, "frame")
        state = self._check_state(state)
        action = np.asarray(action, dtype=np.float32).reshape(self.action_shape)
        ep = self._episodes[self._current]
        slot = self._write(frame, action, float(env_reward), bool(success), state)
        self._episode[slot] = self._current
        self._step[slot] = ep.length
        key = (self._current, ep.length)
        ep.length += 1
        self._num_transitions += 1
        if last:
            self._current = None
        return key

    # ------------------------------------------------------------------ reading
    @property
    def oldest_episode(self) -> int:
        """Id of the oldest episode still stored (every older one was evicted); the next id when empty."""
        return min(self._episodes, default=self._next_episode_id)

    def __len__(self) -> int:
        """Number of stored transitions (agent steps)."""
        return self._num_transitions

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def bytes_per_transition(self) -> float:
        """Bytes stored per transition, with the reset-frame slot and the init / goal frames of each
        episode amortised over its transitions (slot bytes only while empty)."""
        frame_bytes = int(np.prod(self.frame_shape))
        slot_bytes = (frame_bytes + self._action.itemsize * int(np.prod(self.action_shape))
                      + self._reward.itemsize + self._success.itemsize + self._episode.itemsize
                      + self._step.itemsize + (0 if self._states is None else self._states[0].nbytes))
        if self._num_transitions == 0:
            return float(slot_bytes)
        episodes = len(self._episodes)
        total = slot_bytes * (self._num_transitions + episodes) + 2 * frame_bytes * episodes
        return total / self._num_transitions

    def _valid(self, idx: np.ndarray, nstep: int) -> np.ndarray:
        ahead = (idx + nstep) % self.capacity
        ep = self._episode[idx]
        return (ep >= 0) & (self._episode[ahead] == ep) & (self._step[ahead] == self._step[idx] + nstep)

    def _sample_indices(self, batch_size: int, nstep: int) -> np.ndarray:
        """Uniform over valid slots: rejection sampling, then an exact fallback if it stalls."""
        if self._num_transitions == 0:
            raise ValueError("the replay buffer holds no transitions yet")
        chosen: list[np.ndarray] = []
        missing = batch_size
        for _ in range(self._MAX_REJECTION_ROUNDS):
            cand = self.rng.integers(0, self._filled, size=missing)
            cand = cand[self._valid(cand, nstep)]
            chosen.append(cand)
            missing -= cand.size
            if missing == 0:
                return np.concatenate(chosen)
        valid = np.flatnonzero(self._valid(np.arange(self._filled), nstep))
        if valid.size == 0:
            raise ValueError(f"no transition with {nstep} following steps in the buffer yet")
        chosen.append(valid[self.rng.integers(0, valid.size, size=missing)])
        return np.concatenate(chosen)

    def sample(self, batch_size: int, nstep: int, discount: float, window: bool = True) -> Batch:
        """Sample ``batch_size`` n-step transitions uniformly (see :class:`Batch`).

        ``window_frames`` gathers its frames when indexed (:class:`FrameWindow`); ``window=False``
        leaves it ``None``, for callers that do not relabel with them.
        """
        if nstep < 1:
            raise ValueError(f"nstep must be >= 1, got {nstep}")
        idx = self._sample_indices(batch_size, nstep)
        cap, k = self.capacity, self.frame_stack
        t = self._step[idx]
        back = np.arange(k - 1, -1, -1)[None]  # k-1 .. 0 frames behind the newest
        obs_slots = (idx[:, None] - np.minimum(back, t[:, None])) % cap
        next_slots = (idx[:, None] + nstep - np.minimum(back, t[:, None] + nstep)) % cap
        win = (idx[:, None] + np.arange(1, nstep + 1)[None]) % cap
        stack_shape = (len(idx), k * self.frame_shape[0], *self.frame_shape[1:])
        rewards = self._reward[win]
        episodes = self._episode[idx]
        records = [self._episodes[int(e)] for e in episodes]
        if self._states is not None:
            obs, next_obs = self._states[idx], self._states[(idx + nstep) % cap]
        else:
            obs, next_obs = self._frames[obs_slots].reshape(stack_shape), self._frames[next_slots].reshape(stack_shape)
        return Batch(
            obs=obs,
            action=self._action[win[:, 0]],
            reward=discounted_sum(rewards, discount),
            discount=np.full((len(idx), 1), discount ** nstep, dtype=np.float32),
            next_obs=next_obs,
            init_frame=np.stack([r.init for r in records]),
            goal_frame=np.stack([r.goal for r in records]),
            window_frames=FrameWindow(self._frames, win) if window else None,
            env_reward_window=rewards,
            success_window=self._success[win],
            episode=episodes,
            step=t.copy(),
            nstep=int(nstep),
            gamma=float(discount),
            newest_frame=self._frames[idx],
            oldest_frame=self._frames[obs_slots[:, 0]],
        )

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything for an exact resume (contents, write position, open episode, RNG), as
        tensors / ints / dicts loadable with ``torch.load(weights_only=True)``. Only written slots
        are included; at capacity this is the whole buffer (~21 KB per transition at 84 px). The
        large tensors share memory with the buffer (no 2x peak at save time): save the result
        before adding more data."""
        n = self._filled
        eps = list(self._episodes.items())
        empty_frames = np.zeros((0, *self.frame_shape), np.uint8)
        return {
            "config": self._config(),
            **{name: torch.from_numpy(getattr(self, f"_{name}")[:n]) for name in self._slot_fields() + ("episode", "step")},
            "episodes": {
                "id": torch.tensor([e for e, _ in eps], dtype=torch.int64),
                "start": torch.tensor([r.start for _, r in eps], dtype=torch.int64),
                "length": torch.tensor([r.length for _, r in eps], dtype=torch.int64),
                "init": torch.from_numpy(np.stack([r.init for _, r in eps]) if eps else empty_frames),
                "goal": torch.from_numpy(np.stack([r.goal for _, r in eps]) if eps else empty_frames),
            },
            "ptr": self._ptr, "filled": self._filled,
            "current": -1 if self._current is None else self._current,
            "next_episode_id": self._next_episode_id, "num_transitions": self._num_transitions,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into a buffer built with the same configuration."""
        config, mine = state["config"], self._config()
        if dict(config) != mine:
            raise ValueError(f"replay buffer configuration mismatch: saved {dict(config)}, this {mine}")
        n = int(state["filled"])
        for name in self._slot_fields() + ("episode", "step"):
            getattr(self, f"_{name}")[:n] = state[name].numpy()
        self._episode[n:] = -1
        eps = state["episodes"]
        self._episodes = {
            int(e): _Episode(int(s), int(length), init.numpy().copy(), goal.numpy().copy())
            for e, s, length, init, goal in zip(eps["id"], eps["start"], eps["length"],
                                                 eps["init"], eps["goal"])}
        self._ptr, self._filled = int(state["ptr"]), n
        current = int(state["current"])
        self._current = None if current < 0 else current
        self._next_episode_id = int(state["next_episode_id"])
        self._num_transitions = int(state["num_transitions"])
        self.rng.bit_generator.state = state["rng"]
        # a later save() writes every slot again: nothing of this buffer is on disk as segments
        self._written = n if n < self.capacity else self.capacity + self._ptr
        self._saved_written, self._saved_episodes, self._segments = 0, 0, []

    # ------------------------------------------------------------------ incremental persistence
    def _config(self) -> dict[str, Any]:
        config = {"capacity": self.capacity, "frame_shape": list(self.frame_shape),
                  "action_shape": list(self.action_shape), "frame_stack": self.frame_stack}
        if self.state_shape is not None:
            config["state_shape"] = list(self.state_shape)
        return config

    def _slot_fields(self) -> tuple[str, ...]:
        """The per-slot arrays written by :meth:`save` besides episode ids and steps."""
        return ("frames", "action", "reward", "success") + (() if self._states is None else ("states",))

    def save(self, folder: str | os.PathLike) -> dict[str, Any]:
        """Append the slots and episodes added since the last save to ``folder`` as one new segment
        file (written atomically) and return the state that, with the segments, restores this buffer
        exactly (see :meth:`load`). Store the state (e.g. in the snapshot), then call :meth:`prune`."""
        folder = Path(folder)
        start = max(self._saved_written, self._written - self.capacity)  # older new slots were overwritten
        end = self._written
        if end > start:
            slots = self._ring_range(start, end)
            new_eps = [e for e in range(self._saved_episodes, self._next_episode_id) if e in self._episodes]
            empty = np.zeros((0, *self.frame_shape), np.uint8)
            segment = {
                **{name: torch.from_numpy(getattr(self, f"_{name}")[slots]) for name in self._slot_fields()},
                "episode_ids": torch.tensor(new_eps, dtype=torch.int64),
                "init": torch.from_numpy(np.stack([self._episodes[e].init for e in new_eps]) if new_eps else empty),
                "goal": torch.from_numpy(np.stack([self._episodes[e].goal for e in new_eps]) if new_eps else empty),
            }
            name = f"{start:012d}-{end:012d}.pt"
            atomic_torch_save(segment, folder / name)
            self._segments.append([name, start, end])
        self._saved_written, self._saved_episodes = end, self._next_episode_id
        # segments whose slots have all been overwritten since are no longer needed
        self._segments = [seg for seg in self._segments if seg[2] > self._written - self.capacity]
        eps = list(self._episodes.items())
        return {
            "config": self._config(), "segments": [list(seg) for seg in self._segments],
            "episodes": {"id": torch.tensor([e for e, _ in eps], dtype=torch.int64),
                         "start": torch.tensor([r.start for _, r in eps], dtype=torch.int64),
                         "length": torch.tensor([r.length for _, r in eps], dtype=torch.int64)},
            "ptr": self._ptr, "filled": self._filled, "written": self._written,
            "current": -1 if self._current is None else self._current,
            "next_episode_id": self._next_episode_id, "num_transitions": self._num_transitions,
            "rng": self.rng.bit_generator.state,
        }

    def _ring_range(self, start: int, end: int) -> slice | np.ndarray:
        """The slots of global write indices ``start .. end-1`` (a view when they do not wrap)."""
        a, b = start % self.capacity, (end - 1) % self.capacity + 1
        return slice(a, b) if a < b and end - start == b - a else np.arange(start, end) % self.capacity

    @staticmethod
    def prune(folder: str | os.PathLike, state: Mapping[str, Any]) -> None:
        """Delete the segment files in ``folder`` that ``state`` (the last committed save) does not
        list: fully overwritten ones, and leftovers of a run killed between two saves."""
        keep = {seg[0] for seg in state["segments"]}
        for path in Path(folder).glob("*.pt"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def load(self, folder: str | os.PathLike, state: Mapping[str, Any]) -> None:
        """Restore a buffer from ``state`` (returned by :meth:`save`) and the segments in ``folder``."""
        if dict(state["config"]) != self._config():
            raise ValueError(f"replay buffer configuration mismatch: saved {dict(state['config'])}, this {self._config()}")
        folder = Path(folder)
        live = {int(e) for e in state["episodes"]["id"]}
        frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for name, start, end in state["segments"]:
            seg = read_checkpoint(folder / name, what="replay segment")
            slots = self._ring_range(int(start), int(end))
            for field in self._slot_fields():
                getattr(self, f"_{field}")[slots] = seg[field].numpy()
            for e, init, goal in zip(seg["episode_ids"].tolist(), seg["init"], seg["goal"]):
                if e in live:
                    frames[e] = (init.numpy().copy(), goal.numpy().copy())
        eps = state["episodes"]
        self._episodes = {int(e): _Episode(int(s), int(n), *frames[int(e)])
                          for e, s, n in zip(eps["id"], eps["start"], eps["length"])}
        self._episode[:] = -1
        for e, ep in self._episodes.items():
            slots = (ep.start + np.arange(ep.length)) % self.capacity
            self._episode[slots] = e
            self._step[slots] = np.arange(ep.length)
        self._ptr, self._filled, self._written = int(state["ptr"]), int(state["filled"]), int(state["written"])
        current = int(state["current"])
        self._current = None if current < 0 else current
        self._next_episode_id = int(state["next_episode_id"])
        self._num_transitions = int(state["num_transitions"])
        self.rng.bit_generator.state = state["rng"]
        self._saved_written, self._saved_episodes = self._written, self._next_episode_id
        self._segments = [list(seg) for seg in state["segments"]]

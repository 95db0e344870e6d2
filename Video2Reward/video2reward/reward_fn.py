"""One interface for "a reward the RL loop uses", and its implementations.

A :class:`RewardFunction` is what the RL workspace, the Gymnasium wrapper, ``score.py`` and the
evaluation suite talk to; none of them knows which reward it is::

    reward.start_episode(init_frame, goal_frame)        # at reset: the episode's endpoints
    step = reward.step(frame, env_reward, success)      # every env step -> StepReward(reward, progress, sigma)
    reward.keep(episode, step)                          # that frame is replay frame (episode, step): keep its scores
    per_step = reward.score_batch(batch)                # relabel a replay batch: (B, n) rewards, or None
    metrics = reward.finetune(init, current, goal[, episodes, steps])  # online update on agent frames ({} if none)
    reward.begin_learning()                             # agent updates start (after the seed phase)
    reward.state_dict() / reward.load_state_dict(state) # everything a resumed run needs

Implementations:

* :class:`EnvReward` / :class:`SparseReward`: the environment's dense reward / its success flag.
* :class:`FrameReward`: any reward model scoring frames against the episode's init and goal frames
  through ``encode`` and ``reward_from_features`` (each frame is encoded once per model version);
  ``reward_kind = "difference"`` models (VIP) reward a step by the change of a per-frame value. An
  optional *finetuner* trains the model online from the agent's frames (push-back for PROGRESSOR,
  :mod:`video2reward.methods.pushback`; discriminators for the adversarial baselines).
* :class:`ProgressReward`: PROGRESSOR, ``mu - alpha * H``, also reporting ``mu`` and ``sigma``.

Subgoals (``subgoals``, a :class:`~video2reward.uvd.SubgoalConfig`; ``train_mw.py reward.subgoals=uvd``): a
goal-conditioned reward scored against UVD subgoals of the expert's goal rollout, which
:meth:`RewardFunction.start_episode` then receives whole (``wants_goal_rollout``) in place of the goal
frame; phase ``k`` is scored with init = its start frame and goal = its subgoal, plus a per-phase
offset, and moves on when the subgoal is reached (both rules: :mod:`video2reward.uvd`). A replay frame
is relabelled against the phase it was collected in, under the current model. The online update
(push-back, discriminators) still trains on the episode's own init and final goal frames.

Relabelling (``relabel``): how a replay batch's reward is recomputed with the current model.

``window``  every step of the n-step window, on its newest frame (``o_{t+1} .. o_{t+n}``); the
            caller sums them with discount. A frame's reward is computed once per model version.
``paper``   the released code: one reward on the OLDEST frame of ``o_t``'s stack, used in place of
            the whole n-step return.
``stored``  none: the rewards computed when the steps were collected.

Reward forms (``form``, any learned reward): ``default`` is the method's own (PROGRESSOR, HOLD,
Rank2Reward, GAIL: the value of the new frame; VIP, TCN: the value's change). ``value`` and ``delta``
force one: ``delta`` rewards a step by ``V(o_{t+1}) - V(o_t)``, potential-based shaping with the
method's value as the potential (for PROGRESSOR ``V = mu - alpha * H``, so the entropy term enters as
its change: a step earns for becoming surer, and a parked arm earns nothing). ``success_bonus=lam``
adds ``lam * success`` to every step's learned reward (HOLD, TimeRewarder, Diffusion Reward).

Refreshing values (``refresh_budget``, a frozen encoder only): ``0`` keeps ``window`` exact, every
value dropped at each model change and recomputed when next sampled, so after a refinement step a
batch of distinct frames costs a head pass each and a large buffer repeats few frames. ``B > 0``
keeps every value with the model version that computed it; a change of the head makes them stale
instead of dropping them, and each relabelled batch first recomputes the next ``B`` stale values in
round-robin (episode, step) order. A relabel then costs ``B`` head passes (plus the frames never
scored), whatever the buffer holds, and no value is older than ``ceil(N / B)`` relabelled batches
(``N`` values kept): it was computed by the model of at most that many agent updates ago.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from .frame_table import FrameTable
from .model import autocast
from .uvd import SubgoalConfig, SubgoalPhases, decompose

RELABEL_MODES = ("window", "paper", "stored")
REWARD_FORMS = ("default", "value", "delta")


@dataclass(frozen=True)
class StepReward:
    """The reward of one env step; ``progress`` / ``sigma``: PROGRESSOR's ``mu`` / ``sigma`` (``None``
    for rewards that do not estimate progress)."""

    reward: float
    progress: float | None = None
    sigma: float | None = None


@dataclass(frozen=True)
class TrajectoryScores:
    """Scores ``(L,)`` of every frame of a trajectory (in order) against fixed init and goal frames.

    ``value``: what the model rates each frame (PROGRESSOR: the mean progress ``mu``; the others their
    own scale). ``reward``: the RL reward of reaching each frame (``mu - alpha H``; the value itself;
    for a "difference" model the value's change since the previous frame, 0 at the first).
    ``progress`` / ``sigma``: PROGRESSOR's ``mu`` / ``sigma``, ``None`` for models without them.
    """

    value: np.ndarray
    reward: np.ndarray
    progress: np.ndarray | None = None
    sigma: np.ndarray | None = None


class ReplayWindow(Protocol):
    """What :meth:`RewardFunction.score_batch` reads of a replay batch (torch tensors)."""

    init_frame: torch.Tensor  # (B, 3, S, S) uint8
    goal_frame: torch.Tensor  # (B, 3, S, S) uint8
    window_frames: Any  # (B, n, 3, S, S) uint8: o_{t+1} .. o_{t+n}; a tensor, or anything with ``shape``
    #                    whose ``[rows, cols]`` gives those frames as a tensor (drm's FrameWindow)
    episode: torch.Tensor  # (B,) replay episode ids
    step: torch.Tensor  # (B,) t

    @property
    def oldest_frame(self) -> torch.Tensor: ...  # (B, 3, S, S): the oldest stacked frame of o_t

    @property
    def newest_frame(self) -> torch.Tensor: ...  # (B, 3, S, S): o_t


def as_frames(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A frame ``(3, S, S)`` or a batch ``(N, 3, S, S)`` as a uint8 batch tensor."""
    x = torch.as_tensor(x)
    return x.unsqueeze(0) if x.dim() == 3 else x


class RewardFunction:
    """Base class: a reward that needs no frames and keeps nothing (see the module docstring).

    ``image_size``: the frame size :meth:`step` takes (``None``: frames are not looked at);
    ``relabel``: whether :meth:`score_batch` recomputes replay rewards; ``online``: whether
    :meth:`update` trains anything.
    """

    name = "reward"
    image_size: int | None = None
    relabel = "stored"
    online = False
    wants_goal_rollout = False  # start_episode takes the expert's whole goal rollout (L, 3, S, S) as its goal

    def start_episode(self, init_frame: np.ndarray | torch.Tensor, goal_frame: np.ndarray | torch.Tensor) -> None:
        """A new episode with these init and goal frames, uint8 ``(3, S, S)`` (with ``wants_goal_rollout``
        the goal is every frame of the expert's goal rollout, ``(L, 3, S, S)``, the goal frame last)."""

    def step(self, frame: np.ndarray | torch.Tensor | None, env_reward: float = 0.0,
             success: bool = False) -> StepReward:
        raise NotImplementedError

    @property
    def needs_window(self) -> bool:
        """Whether :meth:`score_batch` reads the batch's window frames."""
        return self.relabel == "window"

    def keep(self, episode: int, step: int) -> None:
        """The frame the last :meth:`step` scored is stored in replay as ``(episode, step)``: a reward
        may keep what it computed for it, so relabelling does not compute it again."""

    def score_batch(self, batch: ReplayWindow) -> torch.Tensor | None:
        """Per-step rewards ``(B, n)`` (``(B, 1)`` for ``paper``) of a replay batch under the current
        model, or ``None`` to keep the rewards stored when the steps were collected."""
        return None

    def finetune(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor,
               episodes: Any = None, steps: Any = None) -> dict[str, float]:
        """One online update on agent triplets uint8 ``(B, 3, S, S)``; returns its metrics. ``episodes`` /
        ``steps`` ``(B,)``, when given, name ``current``'s replay frames, so a reward may reuse what it
        kept for them."""
        return {}

    def forget(self, before_episode: int) -> None:
        """Replay episodes older than ``before_episode`` were evicted: nothing kept for them is needed."""

    def begin_learning(self) -> None:
        """The agent's updates start (called at every step after the seed phase; cheap when idle)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class EnvReward(RewardFunction):
    """The environment's own (dense) reward."""

    name = "env"

    def step(self, frame=None, env_reward: float = 0.0, success: bool = False) -> StepReward:
        return StepReward(float(env_reward))


class SparseReward(RewardFunction):
    """1 on steps where the task is solved, else 0."""

    name = "sparse"

    def step(self, frame=None, env_reward: float = 0.0, success: bool = False) -> StepReward:
        return StepReward(float(bool(success)))


class FrameReward(RewardFunction):
    """A reward model scoring frames against the episode's init and goal frames.

    ``model`` needs ``image_size``, ``encode(frames) -> features`` and
    ``reward_from_features(f_init, f_cur, f_goal) -> (N,)``; its ``reward_kind`` is ``"value"`` (a
    step's reward is the value of its new frame) or ``"difference"`` (the value's change since the
    previous frame); ``form`` overrides it (module docstring), ``success_bonus`` adds ``lam * success``
    to every step. ``finetuner``: an online trainer of ``model`` with ``update(init, current, goal)``,
    ``state_dict`` and ``load_state_dict``. ``refresh_budget``: values recomputed per relabelled batch
    when the model changes (``0``: exact; module docstring). ``subgoals``: score against UVD subgoals of
    the goal rollout (module docstring).

    Everything cached (the episode's init/goal features, features per replay episode, values per
    replay frame) belongs to the model as it was at the last :meth:`refresh`, which :meth:`update`
    calls after changing the weights. An finetuner whose ``frozen_features`` is true (push-back with
    ``params="head"``) leaves the encoder alone: features are then kept per replay frame for the whole
    run, and a refresh drops only the values, which the head recomputes from them cheaply.
    """

    MAX_CACHED_VALUES = 4_000_000  # slots of the per-frame value table (dropped whole beyond it)
    MAX_CACHED_FEATURES = 1_000_000  # slots of the per-frame feature table (frozen encoder only)

    def __init__(self, model: Any, finetuner: Any = None, relabel: str = "window", name: str | None = None,
                 form: str = "default", success_bonus: float = 0.0, refresh_budget: int = 0,
                 subgoals: SubgoalConfig | None = None) -> None:
        if relabel not in RELABEL_MODES:
            raise ValueError(f"unknown relabel mode {relabel!r}; choose one of {RELABEL_MODES}")
        if form not in REWARD_FORMS:
            raise ValueError(f"unknown reward form {form!r}; choose one of {REWARD_FORMS}")
        native = getattr(model, "reward_kind", "value")
        if native not in ("value", "difference"):
            raise ValueError(f"reward_kind must be 'value' or 'difference', got {native!r}")
        self.kind = native if form == "default" else {"value": "value", "delta": "difference"}[form]
        if self.kind == "difference" and relabel == "paper":
            raise ValueError("relabel=paper scores one frame per transition; a difference (delta) reward needs two")
        if success_bonus and relabel == "paper":
            raise ValueError("relabel=paper has no per-step success flags for success_bonus; use relabel=window")
        if refresh_budget < 0:
            raise ValueError(f"refresh_budget must be >= 0, got {refresh_budget}")
        if subgoals is not None and relabel == "paper":
            raise ValueError("relabel=paper scores the oldest stacked frame against the episode's goal; subgoals need "
                             "relabel=window or stored")
        if subgoals is not None and not getattr(model, "goal_conditioned", True):
            raise ValueError(f"subgoals replace the goal frame, which a {getattr(model, 'method', 'this')} model does "
                             f"not read")
        self.model = model
        self.finetuner = finetuner
        self.relabel = relabel
        self.online = finetuner is not None
        self.success_bonus = float(success_bonus)
        self.refresh_budget = int(refresh_budget)
        if self.refresh_budget and self.online and not self.keeps_features:
            raise ValueError("refresh_budget > 0 keeps values across model changes, which needs an finetuner that "
                             "leaves the encoder alone (push-back with finetune.params=head)")
        self._pending: tuple[torch.Tensor, float] | None = None  # the last step()'s features and value
        self._version = 0  # model version: refresh() counts it up when values are kept stale
        self._cursor = (0, 0)  # (episode, step) where the next refresh sweep starts
        self._forgotten = 0  # replay episodes below this id were evicted (forget)
        self.name = name or getattr(model, "method", type(model).__name__.lower())
        self._endpoints: tuple[torch.Tensor, torch.Tensor] | None = None  # the episode's init, goal frames
        self._f_init: torch.Tensor | None = None
        self._f_goal: torch.Tensor | None = None
        self._last_value: float | None = None  # "difference": value of the previous frame
        self._episode_features: dict[int, torch.Tensor] = {}  # replay episode -> (2, D) init/goal features
        self._values = FrameTable(self.MAX_CACHED_VALUES)  # (replay episode, step) -> (value, version), CPU
        self._frame_features = FrameTable(self.MAX_CACHED_FEATURES)  # (replay episode, step) -> (D,)
        self.subgoals = None if subgoals is None else SubgoalPhases(subgoals, self.model.encode, self.values)
        self.wants_goal_rollout = subgoals is not None

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # ------------------------------------------------------------------ what a model computes
    def values(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        """Per-frame values ``(N,)`` from features (init/goal broadcast)."""
        return self.model.reward_from_features(f_init, f_cur, f_goal)

    def _step_scores(self, f_cur: torch.Tensor) -> StepReward:
        """Value of the current frame's features under the episode's init/goal features."""
        return StepReward(float(self.values(self._f_init, f_cur, self._f_goal)[0]))

    def score_features(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> TrajectoryScores:
        """Every frame's value and reward against init/goal features (``(1, D)`` broadcast, or one
        row per frame); rows of ``f_cur`` are a trajectory in order."""
        value = self.values(f_init, f_cur, f_goal).float().cpu().numpy()
        return TrajectoryScores(value, self._rewards_of(value))

    def _rewards_of(self, value: np.ndarray) -> np.ndarray:
        """A trajectory's per-frame rewards from its per-frame values: the values, or their change
        (``difference``: 0 at the first frame)."""
        return np.diff(value, prepend=value[:1]) if self.kind == "difference" else value

    def score_trajectory(self, frames: torch.Tensor, init: torch.Tensor | None = None,
                         goal: torch.Tensor | None = None, batch_size: int = 256) -> TrajectoryScores:
        """Scores of uint8 ``frames (L, 3, S, S)`` against ``init`` / ``goal`` ``(3, S, S)`` (default:
        the first / last frame); every frame is encoded once."""
        feats = self.model.encode(frames, batch_size)
        f_init = feats[:1] if init is None else self.model.encode(as_frames(init))
        f_goal = feats[-1:] if goal is None else self.model.encode(as_frames(goal))
        return self.score_features(f_init, feats, f_goal)

    # ------------------------------------------------------------------ one episode at a time
    def start_episode(self, init_frame, goal_frame) -> None:
        self._endpoints = (as_frames(init_frame), as_frames(goal_frame))
        if self.subgoals is not None:  # goal_frame: the goal rollout, decomposed into subgoals
            rollout = self._endpoints[1]
            found = decompose(self.model, rollout, self.subgoals.config.uvd)
            features = torch.cat([self.model.encode(self._endpoints[0]), found.features[list(found.subgoals)]])
            self.subgoals.begin(torch.cat([self._endpoints[0], rollout[list(found.subgoals)]]), features)
            self._f_init, self._f_goal = self.subgoals.endpoint_features()
            self._last_value = float(self.subgoals.plan.start_values[0]) if self.kind == "difference" else None
            return
        f = self.model.encode(torch.cat(self._endpoints))
        self._f_init, self._f_goal = f[:1], f[1:]
        self._last_value = self._step_scores(f[:1]).reward if self.kind == "difference" else None

    def step(self, frame, env_reward: float = 0.0, success: bool = False) -> StepReward:
        if self._endpoints is None:
            raise RuntimeError("call start_episode(init_frame, goal_frame) before step()")
        f_cur = self.model.encode(as_frames(frame))
        scores = self._step_scores(f_cur)
        value = scores.reward
        if self.subgoals is not None:  # the phase's offset; then on to the next subgoal if this one is reached
            value += self.subgoals.offset
            if self.subgoals.scored(f_cur, scores.reward, scores.progress):
                self._f_init, self._f_goal = self.subgoals.endpoint_features()
        self._pending = (f_cur, value)
        reward = value
        if self.kind == "difference":
            previous, self._last_value = self._last_value, value
            reward -= previous
        return StepReward(reward + self.success_bonus * bool(success), scores.progress, scores.sigma)

    def keep(self, episode: int, step: int) -> None:
        """With a frozen encoder, the last step's features and value (and the episode's init / goal
        features) go into the per-frame tables under the frame's replay key; the value is the current
        model's, so a batch that samples the frame before the next model change neither encodes nor
        scores it."""
        pending, self._pending = self._pending, None
        if self.subgoals is not None:
            self.subgoals.keep(int(episode), int(step))
        if pending is None or not self.keeps_features or self._f_init is None:
            return
        f_cur, value = pending
        ep, st = torch.tensor([int(episode)]), torch.tensor([int(step)])
        self._frame_features.put(ep, st, f_cur)
        if int(episode) not in self._episode_features and self.subgoals is None:  # (with subgoals these are
            self._episode_features[int(episode)] = torch.stack([self._f_init[0], self._f_goal[0]])  # the phase's)
        self._put_values(ep, st, torch.tensor([float(value)]))

    def forget(self, before_episode: int) -> None:
        """Drop the kept features, values and endpoints of evicted replay episodes, so tables span the
        live buffer and the refresh sweep spends its budget on frames that can still be sampled."""
        if before_episode <= self._forgotten:
            return
        self._forgotten = int(before_episode)
        self._values.drop_before(self._forgotten)
        self._frame_features.drop_before(self._forgotten)
        for e in [e for e in self._episode_features if e < self._forgotten]:
            del self._episode_features[e]
        if self.subgoals is not None:
            self.subgoals.forget(self._forgotten)

    @property
    def keeps_features(self) -> bool:
        """Whether features outlive a model update (the finetuner never changes the encoder)."""
        return bool(getattr(self.finetuner, "frozen_features", False))

    def refresh(self) -> None:
        """The model changed: drop every cache (the values only, when the encoder is frozen; with a
        ``refresh_budget`` the values stay, stale, for the round-robin sweep) and re-score the
        current episode's endpoints."""
        if not self.keeps_features:
            self._episode_features.clear()
            self._frame_features.clear()
        if self.refresh_budget:
            self._version += 1
        else:
            self._values.clear()
        if self.subgoals is not None:  # the episode keeps its subgoals and phase; offsets follow the new model
            self.subgoals.refresh(features_kept=self.keeps_features)
            if self.subgoals.plan is not None:
                self._f_init, self._f_goal = self.subgoals.endpoint_features()
        elif self._endpoints is not None and (not self.keeps_features or self._f_init is None):
            # (a frozen encoder's endpoint features stay valid: only a first encoding is needed)
            last = self._last_value
            self.start_episode(*self._endpoints)
            self._last_value = last  # the episode's previous frame keeps its value

    # ------------------------------------------------------------------ replay batches
    def score(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor,
              episodes: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """Values for ``(B, 3, S, S)`` init/goal and ``(B, 3, S, S)`` current frames -> ``(B,)``.

        With ``episodes`` (``(B,)`` replay episode ids) the init/goal features are kept per episode
        until :meth:`refresh`, so a batch encodes only the endpoints of episodes not seen since.
        """
        b = init.shape[0]
        if episodes is None:
            f = self.model.encode(torch.cat([init, goal, current]))
            return self.values(f[:b], f[2 * b:], f[b:2 * b])
        pairs = self._endpoint_features(torch.as_tensor(episodes).tolist(), lambda i: (init[i], goal[i]))
        return self.values(pairs[:, 0], self.model.encode(current), pairs[:, 1])

    def _endpoint_features(self, episodes: list[int], endpoints: Any) -> torch.Tensor:
        """``(B, 2, D)`` init/goal features of replay ``episodes``, kept per episode; ``endpoints(rows)``
        gives the uint8 init and goal frames of those batch rows, asked only for episodes not kept."""
        ids = torch.as_tensor([int(e) for e in episodes], dtype=torch.int64)
        distinct, inverse = torch.unique(ids, return_inverse=True)
        distinct = distinct.tolist()
        new = [(i, e) for i, e in enumerate(distinct) if e not in self._episode_features]
        if new:
            first = torch.full((len(distinct),), len(ids)).scatter_reduce_(0, inverse, torch.arange(len(ids)), "amin")
            f = self.model.encode(torch.cat(endpoints(first[[i for i, _ in new]])))  # one sample per new episode
            for j, (_, e) in enumerate(new):
                self._episode_features[e] = torch.stack([f[j], f[len(new) + j]])
        table = torch.stack([self._episode_features[e] for e in distinct])
        return table[inverse.to(table.device)]

    def cached_values(self, init: torch.Tensor, frames: torch.Tensor, goal: torch.Tensor,
                      episodes: torch.Tensor | np.ndarray, first_steps: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Values ``(B, m)`` of ``frames (B, m, 3, S, S)``, frame ``i`` of sample ``b`` being step
        ``first_steps[b] + i`` of replay episode ``episodes[b]``.

        A frame's value depends only on the weights and its episode's init/goal frames, so it is
        kept per (episode, step) until :meth:`refresh`: only frames not scored since the last model
        change are looked at (``frames`` may gather lazily: it is indexed at those only). The values
        are the ones :meth:`score` computes.
        """
        b, m = frames.shape[:2]
        eps = torch.as_tensor(episodes).to("cpu", torch.int64)
        ep_keys = eps[:, None].expand(b, m).reshape(-1)
        step_keys = (torch.as_tensor(first_steps).to("cpu", torch.int64)[:, None] + torch.arange(m)).reshape(-1)
        kept, found = self._values.get(ep_keys, step_keys)
        out = torch.zeros(b * m) if kept is None else kept[:, 0].float()
        if not bool(found.all()):
            missing = (~found).nonzero().squeeze(1)
            flat = ep_keys[missing] * (int(step_keys.max()) + 1) + step_keys[missing]
            distinct, inverse = torch.unique(flat, return_inverse=True)  # score each distinct frame once
            first = torch.full((len(distinct),), len(flat)).scatter_reduce_(0, inverse, torch.arange(len(flat)), "amin")
            pick = missing[first]
            rows, cols = pick // m, pick % m
            if self.subgoals is not None:
                f_cur = (self._kept_features(ep_keys[pick], step_keys[pick],
                                             lambda i: torch.as_tensor(frames[rows[i], cols[i]]).to(init.device))
                         if self.keeps_features else self.model.encode(torch.as_tensor(frames[rows, cols]).to(init.device)))
                scored = self._phase_values(ep_keys[pick], step_keys[pick], f_cur)
            elif self.keeps_features:
                scored = self._score_keeping_features(ep_keys[pick], step_keys[pick], rows, cols, init, frames, goal,
                                                      eps[rows].tolist())
            else:
                scored = self.score(init[rows], torch.as_tensor(frames[rows, cols]).to(init.device), goal[rows],
                                    eps[rows])
            scored = scored.float().cpu()
            self._put_values(ep_keys[pick], step_keys[pick], scored)
            out[missing] = scored[inverse]
        return out.view(b, m).to(init.device)

    def _phase_values(self, episodes: torch.Tensor, steps: torch.Tensor, f_cur: torch.Tensor) -> torch.Tensor:
        """Values ``(N,)`` of replay frames ``(episodes, steps)`` with features ``f_cur (N, D)``, each
        against the subgoal phase it was collected in, offset included."""
        f_start, f_goal, offsets = self.subgoals.endpoints(episodes, steps)
        return self.values(f_start, f_cur, f_goal) + offsets.to(f_cur.device)

    def _stamped(self, values: torch.Tensor) -> torch.Tensor:
        """``(N, 2)`` rows of the value table: each value beside the current model version."""
        return torch.stack([values.double(), torch.full_like(values, self._version, dtype=torch.float64)], 1)

    def _put_values(self, ep_keys: torch.Tensor, step_keys: torch.Tensor, values: torch.Tensor) -> None:
        self._values.put(ep_keys, step_keys, self._stamped(values))

    def sweep(self) -> int:
        """Recompute up to ``refresh_budget`` stale values (computed by an older model version), in
        round-robin (episode, step) order from where the last sweep stopped; returns how many."""
        if not self.refresh_budget:
            return 0
        version = self._version
        keys, self._cursor = self._values.next_keys(self._cursor, self.refresh_budget,
                                                    where=lambda data: data[..., 1] < version)
        if len(keys) == 0:
            return 0
        ep_keys, step_keys = keys[:, 0], keys[:, 1]
        feats, have = self._frame_features.get(ep_keys, step_keys)
        episodes = ep_keys.tolist()
        if feats is None or not bool(have.all()) or (self.subgoals is None and any(
                e not in self._episode_features for e in set(episodes))):
            self._values.clear()  # the feature table was dropped (beyond its budget): recompute on demand
            return 0
        if self.subgoals is not None:
            values = self._phase_values(ep_keys, step_keys, feats)
        else:
            pairs = self._endpoint_features(episodes, None)
            values = self.values(pairs[:, 0], feats, pairs[:, 1])
        self._put_values(ep_keys, step_keys, values.float().cpu())
        return len(keys)

    def _score_keeping_features(self, ep_keys: torch.Tensor, step_keys: torch.Tensor, rows: torch.Tensor,
                                cols: torch.Tensor, init: torch.Tensor, frames: torch.Tensor, goal: torch.Tensor,
                                episodes: list[int]) -> torch.Tensor:
        """:meth:`score` of ``frames[rows, cols]`` (replay frames ``(ep_keys, step_keys)``, of replay
        ``episodes``) for a frozen encoder: only frames and episode endpoints without kept features
        are gathered and encoded."""
        feats = self._kept_features(ep_keys, step_keys,
                                    lambda i: torch.as_tensor(frames[rows[i], cols[i]]).to(init.device))
        pairs = self._endpoint_features(episodes, lambda i: (init[rows[i]], goal[rows[i]]))
        return self.values(pairs[:, 0], feats, pairs[:, 1])

    def _kept_features(self, ep_keys: torch.Tensor, step_keys: torch.Tensor, frames_at: Any) -> torch.Tensor:
        """Features ``(N, D)`` of replay frames ``(ep_keys, step_keys)`` from the per-frame table;
        ``frames_at(positions)`` gives the uint8 frames of the positions not kept, which are encoded
        and kept."""
        feats, have = self._frame_features.get(ep_keys, step_keys)
        if not bool(have.all()):
            new = (~have).nonzero().squeeze(1)
            f_new = self.model.encode(frames_at(new))
            self._frame_features.put(ep_keys[new], step_keys[new], f_new)
            if feats is None:
                feats = f_new.new_zeros((len(have), *f_new.shape[1:]))
            feats[new.to(feats.device)] = f_new.to(feats.dtype)
        return feats

    def score_batch(self, batch: ReplayWindow) -> torch.Tensor | None:
        if self.relabel == "stored":
            return None
        if self.relabel == "paper":
            return self.score(batch.init_frame, batch.oldest_frame, batch.goal_frame, batch.episode).unsqueeze(1)
        self.sweep()
        if self.kind == "difference":  # values of o_t .. o_{t+n}, rewards their differences
            values = torch.cat([
                self.cached_values(batch.init_frame, batch.newest_frame.unsqueeze(1), batch.goal_frame, batch.episode,
                                   batch.step),
                self.cached_values(batch.init_frame, batch.window_frames, batch.goal_frame, batch.episode,
                                   torch.as_tensor(batch.step) + 1)], dim=1)
            rewards = values[:, 1:] - values[:, :-1]
        else:
            rewards = self.cached_values(batch.init_frame, batch.window_frames, batch.goal_frame, batch.episode,
                                         torch.as_tensor(batch.step) + 1)
        if self.success_bonus:
            rewards = rewards + self.success_bonus * torch.as_tensor(batch.success_window).to(rewards)
        return rewards

    # ------------------------------------------------------------------ online training
    def finetune(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor,
               episodes: Any = None, steps: Any = None) -> dict[str, float]:
        """The finetuner's step. With a frozen encoder and the frames' replay keys, the finetuner gets the
        kept ``(B, 3, D)`` features of the triplets (``agent_features``) and encodes none of them."""
        if self.finetuner is None:
            return {}
        if self.keeps_features and episodes is not None and steps is not None:
            eps = torch.as_tensor(episodes).to("cpu", torch.int64)
            f_cur = self._kept_features(eps, torch.as_tensor(steps).to("cpu", torch.int64),
                                        lambda i: current[i.to(current.device)])
            pairs = self._endpoint_features(eps.tolist(), lambda i: (init[i], goal[i]))
            metrics = self.finetuner.finetune(init, current, goal,
                                          agent_features=torch.stack([pairs[:, 0], f_cur, pairs[:, 1]], 1))
        else:
            metrics = self.finetuner.finetune(init, current, goal)
        self.refresh()  # the cached features and values belong to the old weights
        return metrics

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The model's weights, the finetuner's state and the caches, so that a resumed run scores
        exactly as the uninterrupted one (encoding a different batch can change the last bits)."""
        eps = sorted(self._episode_features)
        value_keys, values = self._values.items()
        feature_keys, features = self._frame_features.items()
        return {"model": self.model.state_dict(),
                "finetuner": None if self.finetuner is None else self.finetuner.state_dict(),
                "feature_episodes": torch.tensor(eps, dtype=torch.int64),
                "features": torch.stack([self._episode_features[e].cpu() for e in eps]) if eps
                else torch.zeros(0, 2, 0),
                "value_keys": value_keys,
                "values": torch.zeros(0, 2, dtype=torch.float64) if values is None else values.double(),
                "value_version": self._version, "sweep_cursor": list(self._cursor),
                "frame_feature_keys": feature_keys,
                "frame_features": torch.zeros(0, 0) if features is None else features,
                "last_value": self._last_value,
                **({} if self.subgoals is None else {"subgoals": self.subgoals.state_dict()})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("model") is not None:
            self.model.load_state_dict(state["model"])
        saved = state.get("finetuner", state.get("updater"))  # "updater": snapshots before the rename
        if self.finetuner is not None and saved is not None:
            self.finetuner.load_state_dict(saved)
        device = self.model.device
        self._episode_features = {int(e): f.to(device)
                                  for e, f in zip(state.get("feature_episodes", []), state.get("features", []))}
        self._version = int(state.get("value_version", 0))
        self._cursor = tuple(int(x) for x in state.get("sweep_cursor", (0, 0)))
        values = state.get("values")
        if values is not None and values.dim() == 1:  # snapshots before value versions: current values
            values = self._stamped(values)
        self._values.load(state.get("value_keys"), values)
        self._frame_features.load(state.get("frame_feature_keys"), state.get("frame_features"), device)
        self._last_value = state.get("last_value")
        if self.subgoals is not None and state.get("subgoals") is not None:
            self.subgoals.load_state_dict(state["subgoals"], device)


def frame_reward(model: Any, **options: Any) -> FrameReward:
    """The RL reward function of a reward model: its method's ``reward_class`` (PROGRESSOR:
    ``ProgressReward``; the baselines: :class:`FrameReward`), given those of ``options`` it takes
    (``finetuner``, ``relabel``, ``form``, ``success_bonus``, ``refresh_budget``; PROGRESSOR also
    ``alpha`` and ``train_mode``; ``subgoals``)."""
    cls = model.reward_class
    accepted = {name for c in cls.__mro__ if "__init__" in vars(c) for name in inspect.signature(c.__init__).parameters}
    return cls(model, **{k: v for k, v in options.items() if k in accepted})


__all__ = ["EnvReward", "FrameReward", "RELABEL_MODES", "REWARD_FORMS", "ReplayWindow", "RewardFunction",
           "SparseReward", "StepReward", "TrajectoryScores", "frame_reward"]

"""UVD, the Universal Visual Decomposer (Zhang et al., 2023, "Long-Horizon Manipulation Made Easy"):
subgoals of a demonstration found by a frozen visual embedding, without training.

Any reward model of :mod:`video2reward.methods` is the embedding, through the method contract's
``encode(frames) -> (L, D)`` (PROGRESSOR's, TCN's, VIP's, HOLD-C's unit backbone features). On a
video of ``L`` frames (:func:`decompose_features`):

1. the current goal is the last frame, ``g = L - 1``;
2. every frame ``t <= g`` gets its embedding distance to the goal, ``d(t) = dist(f_t, f_g)``
   (``l2`` or ``cosine``), divided by its largest value (UVD divides by ``d(0)``, which is near 0
   when a video comes back to where it started; neither moves a maximum);
3. the curve is smoothed by RBF kernel regression over frame indices (Nadaraya-Watson, weights
   ``exp(-gamma (t - t')^2)``, ``gamma`` 0.08 in UVD's ``decomp.py``);
4. the latest strict local maximum ``t*`` of the smoothed curve with ``g - t* > min_gap`` and
   ``t* > min_gap`` (18 in UVD) becomes the new goal: approaching a subgoal the distance to it falls,
   so the frame where the distance to ``g`` last peaked is where the phase that ends at ``g`` began;
5. repeat from 2 with ``g = t*`` until no maximum qualifies.

The subgoals are the chosen frames in time order, the last frame included. Phase ``k`` is the part
of the video that leads to subgoal ``k``: frames ``(s_{k-1}, s_k]`` (phase 0 starts at frame 0).

**Subgoal-conditioned rewards** (:class:`SubgoalPhases`, used by
:class:`~video2reward.reward_fn.FrameReward` with ``subgoals=``, ``train_mw.py reward.subgoals=uvd``):
at the start of an episode the expert's goal rollout is decomposed; phase ``k`` of the episode is
scored by the reward model with init = the phase's start frame ``e_k`` (the episode's init frame,
then the previous subgoal) and goal = its subgoal ``e_{k+1}``. Two rules live here:

* **Advance** (:meth:`SubgoalConfig.reached`): after a step is scored, the episode moves on to the
  next subgoal when the current one is reached: ``advance="progress"``, the model's progress toward
  it is at least ``threshold`` (PROGRESSOR's ``mu``; for the other methods their value normalised
  between the phase's start and its subgoal, ``(V(o) - V(e_k)) / (V(e_{k+1}) - V(e_k))``);
  ``advance="distance"``, the embedding distance to the subgoal is at most ``(1 - threshold)`` times
  the phase start's. The step that reaches a subgoal is rewarded in its phase; phases never go back.
* **Offset** (:func:`phase_offsets`): the reward in phase ``k`` is ``offset_k + V_k(o)``, with
  ``offset_0 = 0`` and ``offset_{k+1} = offset_k + max(0, V_k(e_{k+1}) - V_{k+1}(e_{k+1}))``: the
  subgoal frame's value at the end of its phase minus its value as the start of the next. Along the
  expert's rollout the reward therefore never drops at a phase change: each phase starts where the
  previous one ended (PROGRESSOR: an offset of about 1 per phase, ``mu`` going 0 -> 1 in each).

``python Video2Reward/decompose.py --checkpoint C --data D --out O`` decomposes every trajectory of a
demo folder (or one video / frame folder); ``score.py --subgoals`` adds the same outputs to a scored
video: ``subgoals.json`` (the frame indices), ``subgoals.png`` (the start frame and each subgoal
frame) and ``distance.png`` (each iteration's distance curve, smoothed, with the chosen maximum).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch

from .frame_table import FrameTable
from .io import atomic_write_json, save_figure

DISTANCES = ("l2", "cosine")
ADVANCE_RULES = ("progress", "distance")


@dataclass(frozen=True)
class UVDConfig:
    """Settings of the decomposition (UVD's defaults)."""

    gamma: float = 0.08  # RBF kernel width over frame indices: weights exp(-gamma (t - t')^2)
    min_gap: int = 18  # frames a new subgoal must lie before the current goal, and after frame 0
    distance: str = "l2"  # embedding distance to the goal: l2 (Euclidean) | cosine (1 - cosine similarity)

    def __post_init__(self) -> None:
        if not self.gamma > 0:
            raise ValueError(f"uvd gamma (RBF kernel width) must be > 0, got {self.gamma}")
        if isinstance(self.min_gap, bool) or not isinstance(self.min_gap, int) or self.min_gap < 0:
            raise ValueError(f"uvd min_gap must be an integer >= 0, got {self.min_gap!r}")
        if self.distance not in DISTANCES:
            raise ValueError(f"uvd distance must be one of {DISTANCES}, got {self.distance!r}")


# ---------------------------------------------------------------------------------------- the curve
def embedding_distance(features: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
                       distance: str = "l2") -> np.ndarray:
    """``(N,)`` distances of the rows of ``features (N, D)`` to ``target`` ``(D,)`` (or ``(N, D)``)."""
    f = np.asarray(torch.as_tensor(features).detach().cpu().float(), np.float64)
    g = np.asarray(torch.as_tensor(target).detach().cpu().float(), np.float64)
    if distance == "l2":
        return np.linalg.norm(f - g, axis=-1)
    if distance == "cosine":
        norms = np.linalg.norm(f, axis=-1) * np.linalg.norm(g, axis=-1)
        return 1.0 - (f * g).sum(-1) / np.maximum(norms, 1e-12)
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def rbf_smooth(y: np.ndarray, gamma: float) -> np.ndarray:
    """Nadaraya-Watson kernel regression of ``y (T,)`` on its indices, evaluated at them:
    ``sum_s w(t, s) y(s) / sum_s w(t, s)`` with ``w(t, s) = exp(-gamma (t - s)^2)``."""
    y = np.asarray(y, np.float64)
    t = np.arange(len(y), dtype=np.float64)
    weights = np.exp(-gamma * (t[:, None] - t[None, :]) ** 2)
    return weights @ y / weights.sum(1)


def local_maxima(y: np.ndarray) -> np.ndarray:
    """Indices of the strict interior local maxima of ``y (T,)`` (``y[t-1] < y[t] > y[t+1]``), increasing."""
    y = np.asarray(y)
    if len(y) < 3:
        return np.zeros(0, np.int64)
    return np.flatnonzero((y[1:-1] > y[:-2]) & (y[1:-1] > y[2:])) + 1


# ---------------------------------------------------------------------------------------- decomposition
class Curve(NamedTuple):
    """One backward iteration of the decomposition."""

    goal: int  # the current goal's frame index
    distance: np.ndarray  # (goal + 1,) distance of frames 0..goal to it, divided by the largest
    smoothed: np.ndarray  # (goal + 1,) the RBF-smoothed curve
    maxima: np.ndarray  # its local maxima (frame indices)
    chosen: int | None  # the maximum that became the next goal (None: the decomposition ends here)


@dataclass(frozen=True)
class Decomposition:
    """Subgoal frame indices of a video of ``num_frames`` frames, increasing, the last frame last,
    and the curves that chose them (in the order computed: from the last frame backwards)."""

    subgoals: tuple[int, ...]
    num_frames: int
    curves: tuple[Curve, ...] = ()
    config: UVDConfig = UVDConfig()
    features: torch.Tensor | None = dataclasses.field(default=None, compare=False, repr=False)  # (L, D), from decompose()

    @property
    def num_phases(self) -> int:
        return len(self.subgoals)

    def phase_starts(self) -> tuple[int, ...]:
        """The frame each phase starts from: 0, then the previous phase's subgoal."""
        return (0, *self.subgoals[:-1])

    def phase_of(self, frames: Sequence[int] | np.ndarray) -> np.ndarray:
        """The phase of each frame index: ``k`` for frames in ``(s_{k-1}, s_k]``, 0 for frame 0."""
        return np.searchsorted(np.asarray(self.subgoals), np.asarray(frames), side="left")

    def to_json(self) -> dict[str, Any]:
        return {"subgoals": list(self.subgoals), "num_frames": self.num_frames,
                "phase_starts": list(self.phase_starts()), "config": dataclasses.asdict(self.config)}


def decompose_features(features: np.ndarray | torch.Tensor, config: UVDConfig = UVDConfig()) -> Decomposition:
    """UVD on a video's frame features ``(L, D)`` (module docstring)."""
    f = torch.as_tensor(features)
    if f.dim() != 2 or len(f) == 0:
        raise ValueError(f"features must have shape (L, D) with L >= 1, got {tuple(f.shape)}")
    goal = len(f) - 1
    subgoals, curves = [goal], []
    while goal > config.min_gap:
        d = embedding_distance(f[:goal + 1], f[goal], config.distance)
        d = d / d.max() if d.max() > 0 else d
        smoothed = rbf_smooth(d, config.gamma)
        maxima = local_maxima(smoothed)
        valid = maxima[(goal - maxima > config.min_gap) & (maxima > config.min_gap)]
        chosen = int(valid[-1]) if len(valid) else None
        curves.append(Curve(goal, d, smoothed, maxima, chosen))
        if chosen is None:
            break
        goal = chosen
        subgoals.append(goal)
    return Decomposition(tuple(reversed(subgoals)), len(f), tuple(curves), config)


def decompose(model: Any, frames: torch.Tensor, config: UVDConfig = UVDConfig(), batch_size: int = 256) -> Decomposition:
    """UVD on uint8 ``frames (L, 3, S, S)`` with ``model.encode`` (any reward model) as the embedding."""
    features = model.encode(torch.as_tensor(frames), batch_size)
    return dataclasses.replace(decompose_features(features, config), features=features)


# ---------------------------------------------------------------------------------------- subgoal rewards
@dataclass(frozen=True)
class SubgoalConfig:
    """A subgoal-conditioned reward: how the goal rollout is decomposed and when a subgoal is reached."""

    uvd: UVDConfig = UVDConfig()
    advance: str = "progress"  # progress: the model's progress >= threshold | distance: d(o, g) <= (1 - threshold) d(start, g)
    threshold: float = 0.9  # the fraction of a phase that counts as reaching its subgoal

    def __post_init__(self) -> None:
        if self.advance not in ADVANCE_RULES:
            raise ValueError(f"subgoal advance must be one of {ADVANCE_RULES}, got {self.advance!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"subgoal threshold must be in (0, 1], got {self.threshold}")

    def reached(self, progress: float, distance: float, start_distance: float) -> bool:
        """Whether a frame reached the phase's subgoal: its ``progress`` toward it, or its embedding
        ``distance`` to it against the phase start's ``start_distance`` (the module docstring)."""
        if self.advance == "progress":
            return progress >= self.threshold
        return distance <= (1 - self.threshold) * start_distance


def phase_offsets(start_values: torch.Tensor, end_values: torch.Tensor) -> torch.Tensor:
    """``(K,)`` reward offsets of ``K`` phases from each phase's value at its start frame and at its
    subgoal: ``offset_0 = 0``, ``offset_{k+1} = offset_k + max(0, end_k - start_{k+1})``."""
    steps = (end_values[:-1] - start_values[1:]).clamp_min(0)
    return torch.cat([steps.new_zeros(1), steps.cumsum(0)])


def phase_progress(value: float, start_value: float, end_value: float) -> float:
    """A value's progress through a phase whose start frame is worth ``start_value`` and whose subgoal
    ``end_value`` (1 at or beyond the subgoal's value when the model rates the subgoal no higher)."""
    span = end_value - start_value
    if span > 0:
        return (value - start_value) / span
    return 1.0 if value >= end_value else 0.0


class PhasePlan(NamedTuple):
    """An episode's phases under one model version; phase ``k`` runs from endpoint ``k`` to ``k + 1``."""

    features: torch.Tensor  # (K + 1, D): the episode's init frame, then the K subgoal frames (the goal last)
    start_values: torch.Tensor  # (K,) V_k(e_k): each phase's start frame in that phase
    end_values: torch.Tensor  # (K,) V_k(e_{k+1}): each subgoal in its phase
    offsets: torch.Tensor  # (K,) phase_offsets(start_values, end_values)

    @property
    def num_phases(self) -> int:
        return len(self.offsets)


Values = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (f_init, f_cur, f_goal) -> (N,)


def plan_phases(features: torch.Tensor, values: Values) -> PhasePlan:
    """The :class:`PhasePlan` of endpoint features ``(K + 1, D)`` under a reward's ``values``."""
    f_start, f_end = features[:-1], features[1:]
    start, end = values(f_start, f_start, f_end).float(), values(f_start, f_end, f_end).float()
    return PhasePlan(features, start, end, phase_offsets(start, end))


class SubgoalPhases:
    """The subgoal state of a reward: the current episode's phase, and for every replay episode its
    endpoint frames and the phase each kept frame was scored in (so relabelling scores a frame against
    the subgoal it was collected under, with the current model). ``encode(frames) -> (K + 1, D)`` embeds
    an episode's endpoint frames ``(K + 1, 3, S, S)`` and ``values`` scores them (:func:`plan_phases`).

    Plans belong to the model as it was at the last :meth:`refresh`; the endpoint frames and phases
    are kept until :meth:`forget` (about ``K + 1`` frames per replay episode). A refresh that keeps the
    features (a frozen encoder) re-scores the kept features instead of encoding the frames again."""

    MAX_PHASE_SLOTS = 2**62  # the phase table is never dropped: phases cannot be recomputed

    def __init__(self, config: SubgoalConfig, encode: Callable[[torch.Tensor], torch.Tensor], values: Values) -> None:
        self.config = config
        self._encode, self._values = encode, values
        self._frames: dict[int, torch.Tensor] = {}  # replay episode -> (K + 1, 3, S, S) uint8 endpoint frames
        self._plans: dict[int, PhasePlan] = {}  # replay episode -> its plan under the current model
        self._phases = FrameTable(self.MAX_PHASE_SLOTS)  # (replay episode, step) -> phase, int16
        self.frames: torch.Tensor | None = None  # the current episode's endpoint frames
        self.plan: PhasePlan | None = None
        self.phase = 0
        self._scored_phase: int | None = None  # the phase the last scored frame was in

    # ------------------------------------------------------------------ the current episode
    def begin(self, endpoints: torch.Tensor, features: torch.Tensor | None = None) -> None:
        """A new episode whose phases run between ``endpoints`` (init frame, then the subgoal frames);
        ``features``: their ``(K + 1, D)`` embedding, if already computed."""
        self.frames = endpoints.cpu()
        self.plan = plan_phases(self._encode(endpoints) if features is None else features, self._values)
        self.phase, self._scored_phase = 0, None

    def endpoint_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1, D)`` features of the current phase's start frame and subgoal."""
        return self.plan.features[self.phase:self.phase + 1], self.plan.features[self.phase + 1:self.phase + 2]

    @property
    def offset(self) -> float:
        return float(self.plan.offsets[self.phase])

    def scored(self, f_cur: torch.Tensor, value: float, progress: float | None) -> bool:
        """A frame ``(1, D)`` was scored in the current phase with ``value`` (before the offset) and the
        model's ``progress`` (``None``: the value normalised through the phase); move on to the next
        phase if it reached the subgoal. Returns whether the phase changed."""
        k, plan = self.phase, self.plan
        self._scored_phase = k
        if k + 1 >= plan.num_phases:
            return False
        if progress is None:
            progress = phase_progress(value, float(plan.start_values[k]), float(plan.end_values[k]))
        distance = self.config.uvd.distance
        goal = plan.features[k + 1]
        reached = self.config.reached(float(progress), float(embedding_distance(f_cur, goal, distance)[0]),
                                      float(embedding_distance(plan.features[k:k + 1], goal, distance)[0]))
        if reached:
            self.phase += 1
        return reached

    # ------------------------------------------------------------------ replay episodes
    def keep(self, episode: int, step: int) -> None:
        """The frame last scored is replay frame ``(episode, step)`` of the current episode."""
        if self._scored_phase is None:
            return
        if episode not in self._frames:
            self._frames[episode], self._plans[episode] = self.frames, self.plan
        self._phases.put(torch.tensor([episode]), torch.tensor([step]), torch.tensor([self._scored_phase],
                                                                                    dtype=torch.int16))
        self._scored_phase = None

    def endpoints(self, episodes: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For replay frames ``(episodes, steps)`` (int64 CPU ``(N,)``): the start and subgoal features
        ``(N, D)`` of the phase each was scored in, and its offset ``(N,)`` (frames never kept, such as an
        episode's reset frame, are in phase 0)."""
        phases, _ = self._phases.get(episodes, steps)
        phases = torch.zeros(len(episodes), dtype=torch.int64) if phases is None else phases.long()
        distinct, inverse = torch.unique(episodes, return_inverse=True)
        plans = [self._plan(int(e)) for e in distinct]
        first = torch.tensor([0, *[p.num_phases + 1 for p in plans]]).cumsum(0)[:-1]  # row of each plan's endpoint 0
        features = torch.cat([p.features for p in plans])
        offsets = torch.cat([torch.cat([p.offsets, p.offsets.new_zeros(1)]) for p in plans])
        row = (first[inverse] + phases).to(features.device)
        return features[row], features[row + 1], offsets[row]

    def _plan(self, episode: int) -> PhasePlan:
        if episode not in self._plans:
            if episode not in self._frames:
                raise RuntimeError(f"replay episode {episode} has no subgoals kept (was it collected with "
                                   f"reward.subgoals=uvd?)")
            self._plans[episode] = plan_phases(self._encode(self._frames[episode]), self._values)
        return self._plans[episode]

    def refresh(self, features_kept: bool = False) -> None:
        """The model changed: plans are rebuilt, the current episode's at once, the others when next
        needed; with ``features_kept`` (the encoder did not change) from their features, re-scored."""
        if features_kept:
            self._plans = {e: plan_phases(p.features, self._values) for e, p in self._plans.items()}
        else:
            self._plans.clear()
        if self.plan is not None:
            self.plan = plan_phases(self.plan.features if features_kept else self._encode(self.frames), self._values)

    def forget(self, before_episode: int) -> None:
        for e in [e for e in self._frames if e < before_episode]:
            del self._frames[e]
            self._plans.pop(e, None)
        self._phases.drop_before(before_episode)

    # ------------------------------------------------------------------ resume (between episodes)
    def state_dict(self) -> dict[str, Any]:
        episodes = sorted(self._frames)
        planned = sorted(self._plans)
        phase_keys, phases = self._phases.items()
        return {"episodes": torch.tensor(episodes, dtype=torch.int64),
                "counts": torch.tensor([len(self._frames[e]) for e in episodes], dtype=torch.int64),
                "frames": torch.cat([self._frames[e] for e in episodes]) if episodes else torch.zeros(0, dtype=torch.uint8),
                "planned": torch.tensor(planned, dtype=torch.int64),
                "plans": [tuple(t.cpu() for t in self._plans[e]) for e in planned],
                "phase_keys": phase_keys, "phases": phases}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str | None = None) -> None:
        counts = state["counts"].tolist()
        chunks = state["frames"].split(counts) if counts else []
        self._frames = {int(e): f for e, f in zip(state["episodes"].tolist(), chunks)}
        self._plans = {int(e): PhasePlan(*(t.to(device) for t in plan))
                       for e, plan in zip(state["planned"].tolist(), state["plans"])}
        self._phases.load(state["phase_keys"], state["phases"])
        self.frames, self.plan, self.phase, self._scored_phase = None, None, 0, None


# ---------------------------------------------------------------------------------------- outputs
def plot_distances(decomposition: Decomposition, path: str | Path, title: str | None = None) -> Path:
    """Each iteration's distance-to-goal curve (raw faint, smoothed solid) with its chosen maximum,
    and the subgoals as vertical lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, curve in enumerate(decomposition.curves):
        t = np.arange(curve.goal + 1)
        color = f"C{i % 10}"
        ax.plot(t, curve.distance, color=color, alpha=0.3, lw=1)
        ax.plot(t, curve.smoothed, color=color, lw=1.6, label=f"to frame {curve.goal}")
        if curve.chosen is not None:
            ax.plot([curve.chosen], [curve.smoothed[curve.chosen]], "v", color=color, ms=9)
    for s in decomposition.subgoals:
        ax.axvline(s, color="k", ls="--", lw=0.8, alpha=0.6)
    ax.set_xlabel("frame")
    ax.set_ylabel("distance to goal (/ max)")
    ax.set_xlim(0, max(decomposition.num_frames - 1, 1))
    ax.set_title(title or f"UVD subgoals {list(decomposition.subgoals)} (gamma {decomposition.config.gamma:g}, "
                 f"min gap {decomposition.config.min_gap})", fontsize=10)
    ax.grid(alpha=0.3)
    if decomposition.curves:
        ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, path)


def plot_subgoal_strip(frames: torch.Tensor | np.ndarray, decomposition: Decomposition, path: str | Path) -> Path:
    """The start frame and every subgoal frame of ``frames (L, 3, S, S)`` side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [0, *decomposition.subgoals]
    fig = Figure(figsize=(1.6 * len(shown), 1.9), dpi=100)
    FigureCanvasAgg(fig)
    for i, t in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        ax.imshow(np.asarray(torch.as_tensor(frames[t]).cpu()).transpose(1, 2, 0))
        ax.set_title("start 0" if i == 0 else f"subgoal {i}: {t}", fontsize=8)
        ax.axis("off")
    return save_figure(fig, path)


def write_decomposition(out_dir: str | Path, frames: torch.Tensor | np.ndarray, decomposition: Decomposition,
                        **info: Any) -> dict[str, Any]:
    """``subgoals.json`` (the decomposition, plus ``info``), ``subgoals.png`` and ``distance.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    record = {**info, **decomposition.to_json()}
    atomic_write_json(out_dir / "subgoals.json", record)
    plot_subgoal_strip(frames, decomposition, out_dir / "subgoals.png")
    plot_distances(decomposition, out_dir / "distance.png", title=info.get("name") and
                   f"{info['name']}: subgoals {list(decomposition.subgoals)}")
    return record


# ---------------------------------------------------------------------------------------- CLI
def add_uvd_flags(parser: argparse.ArgumentParser) -> None:
    """``--gamma``, ``--min_gap``, ``--distance`` (the fields of :class:`UVDConfig`)."""
    default = UVDConfig()
    parser.add_argument("--gamma", type=float, default=default.gamma,
                        help=f"UVD: RBF kernel width over frame indices, exp(-gamma dt^2) (default {default.gamma})")
    parser.add_argument("--min_gap", type=int, default=default.min_gap,
                        help=f"UVD: frames a subgoal must lie before the next one and after the start "
                        f"(default {default.min_gap})")
    parser.add_argument("--distance", choices=DISTANCES, default=default.distance,
                        help=f"UVD: embedding distance to the goal (default {default.distance})")


def config_from_args(args: argparse.Namespace) -> UVDConfig:
    return UVDConfig(gamma=args.gamma, min_gap=args.min_gap, distance=args.distance)


__all__ = ["ADVANCE_RULES", "Curve", "DISTANCES", "Decomposition", "PhasePlan", "SubgoalConfig", "SubgoalPhases",
           "UVDConfig", "decompose", "decompose_features", "embedding_distance", "local_maxima", "phase_offsets",
           "phase_progress", "plan_phases", "plot_distances", "plot_subgoal_strip", "rbf_smooth",
           "write_decomposition"]

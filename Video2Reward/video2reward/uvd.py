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
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from .io import atomic_write_json, save_figure

DISTANCES = ("l2", "cosine")


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
    return decompose_features(model.encode(torch.as_tensor(frames), batch_size), config)


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


def _videos(data: Path, split: str, tasks: Sequence[str] | None) -> list[tuple[str, Path]]:
    """``(name, video file or frame folder)`` of every trajectory ``data`` holds (itself if it is one)."""
    from .data import IMAGE_EXTENSIONS, discover_trajectories

    if data.is_file() or (data.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in data.iterdir())):
        return [(data.stem if data.is_file() else data.name, data)]
    return [(s.name, s.paths[0] if s.is_video else s.paths[0].parent)
            for s in discover_trajectories(data, split, tasks)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decompose.py", description="UVD: subgoals of demonstrations found by a "
                                     "reward model's frozen frame embedding (docs/baselines.md, section UVD).")
    parser.add_argument("--checkpoint", required=True, help="reward model whose encode() is the embedding: a .pth "
                        "file of any method, or hf://<owner>/<repo>[@rev]/<file>")
    parser.add_argument("--data", required=True, help="a demo folder (<task>/<split>/<traj>/<i>.png or any layout "
                        "of video2reward.data), or one video file / frame folder")
    parser.add_argument("--out", required=True, help="output folder: <trajectory>/subgoals.{json,png}, "
                        "<trajectory>/distance.png and subgoals.json (all trajectories)")
    parser.add_argument("--split", default="test", help="which split of a demo folder (default test)")
    parser.add_argument("--tasks", nargs="+", default=None, help="task folders of a demo folder (default all)")
    parser.add_argument("--max_trajectories", type=int, default=None, help="at most this many per run")
    add_uvd_flags(parser)
    parser.add_argument("--batch_size", type=int, default=64, help="frames encoded per forward pass")
    parser.add_argument("--device", default="auto", help="torch device; auto = cuda if available, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``Video2Reward/decompose.py``; errors are one line (:mod:`video2reward.errors`)."""
    from .checkpoint import load_reward_model
    from .errors import one_line_errors
    from .scoring import iter_frames

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    with one_line_errors():
        config = config_from_args(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        model = load_reward_model(args.checkpoint, device=device)
        videos = _videos(Path(args.data).expanduser(), args.split, args.tasks)[:args.max_trajectories]
        out, summary = Path(args.out), {}
        for name, source in videos:
            frames = torch.from_numpy(np.stack(list(iter_frames(source, model.image_size))))
            decomposition = decompose(model, frames, config, args.batch_size)
            write_decomposition(out / name, frames, decomposition, name=name, source=str(source),
                                checkpoint=str(args.checkpoint))
            summary[name] = list(decomposition.subgoals)
            print(f"{name}: {len(frames)} frames -> subgoals {list(decomposition.subgoals)}", flush=True)
        atomic_write_json(out / "subgoals.json", {"checkpoint": str(args.checkpoint),
                                                  "config": dataclasses.asdict(config), "subgoals": summary})
        print(f"{len(summary)} trajectories decomposed; wrote {out}")
    return 0


__all__ = ["Curve", "DISTANCES", "Decomposition", "UVDConfig", "decompose", "decompose_features",
           "embedding_distance", "local_maxima", "plot_distances", "plot_subgoal_strip", "rbf_smooth",
           "write_decomposition"]

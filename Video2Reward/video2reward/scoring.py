"""Score your own video with a reward model: its value (PROGRESSOR: progress ``N(mu, sigma^2)``) and
reward per frame. Any method :func:`video2reward.checkpoint.load_reward_model` reads works.

``python Video2Reward/score.py VIDEO_OR_FRAME_DIR --checkpoint C --out DIR [--goal IMG] [--init IMG] [--video]``

* Input: a video file (``.mp4``, ``.webm``, ... via imageio-ffmpeg) or a folder of images
  (``.png``/``.jpg``/..., sorted numerically: ``2.png`` before ``10.png``).
* Every frame (and ``--init`` / ``--goal`` images) is fitted to the model's input the way the
  evaluation transform does it (:func:`video2reward.data.fit_frame`): the shorter side is resized to
  the model's ``image_size`` and the centre is cropped, so any resolution or aspect ratio works;
  the borders of the longer side are not seen by the model.
* The init frame defaults to the first frame and the goal to the last one. Frames are decoded and
  encoded in batches as a stream (memory does not grow with the video's length); each frame is
  encoded once and the init/goal features are computed once and broadcast to every frame.

Outputs in ``--out``: ``progress.csv`` (``frame, mu, sigma, reward`` for PROGRESSOR, ``frame, value,
reward`` for the other methods), ``progress.png`` (the value, with a ±``sigma`` band for PROGRESSOR,
and the reward over frames, beside the init and goal frames) and, with
``--video``, ``progress.mp4``: each frame as the model sees it (its centre crop) next to the curve
with a cursor at that frame. ``--subgoals`` adds UVD's decomposition of the video under the same
model's embedding (:mod:`video2reward.uvd`): ``subgoals.json``, ``subgoals.png`` and ``distance.png``.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageDraw
from .progress import progress as tqdm

from .data import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, DataError, iter_video, load_image, natural_key
from .methods import method_of
from .metrics import spearman
from .errors import debug, error_line
from .flags import check_at_least
from .io import save_figure
from .precision import add_precision_flag, resolve_precision
from .reward_fn import frame_reward
from .uvd import UVDConfig, add_uvd_flags, config_from_args, decompose, write_decomposition

DEFAULT_FPS = 10.0  # output video rate for image folders (videos keep their own rate)
DISPLAY_SIZE = 256  # side of the frame panel in the output video


@dataclass
class ProgressCurve:
    """Per-frame scores of one video under one reward model; arrays are float ``(T,)``, frames uint8
    ``(3, S, S)``.

    ``value``: what the model rates each frame against the init and goal frames (PROGRESSOR: the
    mean progress ``mu``; TCN/VIP/HOLD: the negative distance to the goal; Rank2Reward: its utility).
    ``reward``: the RL reward of reaching that frame (PROGRESSOR ``mu - alpha H``; a "difference"
    model such as VIP: the value's change since the previous frame, 0 at the first). ``sigma``:
    PROGRESSOR's uncertainty, ``None`` for the others.
    """

    value: np.ndarray
    reward: np.ndarray
    init_frame: torch.Tensor
    goal_frame: torch.Tensor
    method: str = "progressor"
    sigma: np.ndarray | None = None
    alpha: float | None = None

    def __len__(self) -> int:
        return len(self.value)

    @property
    def mu(self) -> np.ndarray:
        """PROGRESSOR's name for :attr:`value`."""
        return self.value

    @property
    def value_name(self) -> str:
        return "mu" if self.sigma is not None else "value"

    @property
    def voc(self) -> float:
        """Value-order correlation: Spearman correlation of the value with the frame index (NaN for
        a single frame, where no order exists)."""
        if len(self.value) < 2:
            return math.nan
        return spearman(self.value, np.arange(len(self.value)))


# ---------------------------------------------------------------------------------------- reading
def frame_files(folder: Path) -> list[Path]:
    """Image files of ``folder`` in natural order (``2.png`` before ``10.png``)."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def iter_frames(source: str | os.PathLike, size: int) -> Iterator[np.ndarray]:
    """Frames of a video file or an image folder, each fitted to uint8 ``(3, size, size)``."""
    source = Path(source).expanduser()
    if source.is_dir():
        files = frame_files(source)
        if not files:
            raise DataError(f"{source}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return (load_image(p, size) for p in files)
    if source.is_file():
        if source.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(f"{source}: not a video ({', '.join(sorted(VIDEO_EXTENSIONS))}) or a folder of images")
        return iter_video(source, size)
    raise DataError(f"video or frame folder not found: {source}")


def source_fps(source: str | os.PathLike) -> float:
    """Frame rate of a video file; :data:`DEFAULT_FPS` for an image folder or an unknown rate."""
    source = Path(source)
    if source.is_file():
        import imageio.v3 as iio

        fps = iio.immeta(source).get("fps")
        if fps and np.isfinite(fps) and fps > 0:
            return float(fps)
    return DEFAULT_FPS


def read_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """One image file fitted to uint8 ``(3, size, size)``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    return torch.from_numpy(load_image(path, size))


# ---------------------------------------------------------------------------------------- scoring
def _batches(frames: Iterable, batch_size: int) -> Iterator[torch.Tensor]:
    batch: list[torch.Tensor] = []
    for frame in frames:
        batch.append(torch.as_tensor(frame))
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def score_frames(model: Any, frames: Iterable[np.ndarray | torch.Tensor] | torch.Tensor,
                 init: torch.Tensor | None = None, goal: torch.Tensor | None = None, *, batch_size: int = 64,
                 alpha: float | None = None, progress: bool = False) -> ProgressCurve:
    """Value and reward of every frame against fixed init and goal frames, under any reward model
    :func:`video2reward.checkpoint.load_reward_model` reads (scored through its
    :func:`~video2reward.reward_fn.frame_reward`).

    ``frames``: uint8 ``(T, 3, S, S)`` or any iterable of ``(3, S, S)`` frames at ``S =
    model.image_size`` (consumed once, ``batch_size`` at a time). ``init`` / ``goal``: uint8 ``(3, S,
    S)``, default the first / last frame. ``alpha`` (PROGRESSOR only) defaults to the model's.
    """
    reward_fn = frame_reward(model, alpha=alpha)
    if alpha is not None and not model.predicts_progress:
        raise DataError(f"--alpha weights PROGRESSOR's entropy term; a {reward_fn.name} model has none")
    f_chunks: list[torch.Tensor] = []
    first = last = None
    bar = tqdm(total=len(frames) if hasattr(frames, "__len__") else None, unit="frame", desc="scoring",
               disable=not progress)
    for batch in _batches(frames, batch_size):
        f_chunks.append(model.encode(batch, batch_size=batch_size))
        first = batch[0] if first is None else first
        last = batch[-1]
        bar.update(len(batch))
    bar.close()
    if first is None:
        raise DataError("no frames to score")
    feats = torch.cat(f_chunks)
    f_init = feats[:1] if init is None else model.encode(init.unsqueeze(0))
    f_goal = feats[-1:] if goal is None else model.encode(goal.unsqueeze(0))
    scores = reward_fn.score_features(f_init, feats, f_goal)
    init_frame = (first if init is None else init).cpu()
    goal_frame = (last if goal is None else goal).cpu()
    return ProgressCurve(value=scores.value, reward=scores.reward, init_frame=init_frame, goal_frame=goal_frame,
                         method=method_of(model), sigma=scores.sigma,
                         alpha=getattr(reward_fn, "alpha", None))


# ---------------------------------------------------------------------------------------- outputs
def write_csv(curve: ProgressCurve, path: str | os.PathLike) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        columns = {curve.value_name: curve.value, **({} if curve.sigma is None else {"sigma": curve.sigma}),
                   "reward": curve.reward}
        writer.writerow(["frame", *columns])
        for t in range(len(curve)):
            writer.writerow([t, *(f"{c[t]:.6f}" for c in columns.values())])
    return path


def _hwc(frame: torch.Tensor) -> np.ndarray:
    return frame.permute(1, 2, 0).numpy()


def _curve_figure(curve: ProgressCurve, width: float, height: float, thumbnails: bool):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    if thumbnails:
        grid = fig.add_gridspec(2, 2, width_ratios=(4, 1))
        ax = fig.add_subplot(grid[:, 0])
        for row, (name, frame) in enumerate((("init", curve.init_frame), ("goal", curve.goal_frame))):
            thumb = fig.add_subplot(grid[row, 1])
            thumb.imshow(_hwc(frame))
            thumb.set_title(f"{name} frame", fontsize=9)
            thumb.axis("off")
    else:
        ax = fig.add_subplot(1, 1, 1)
    t = np.arange(len(curve))
    if curve.sigma is not None:
        ax.fill_between(t, curve.mu - curve.sigma, curve.mu + curve.sigma, color="tab:blue", alpha=0.25,
                        label="mu ± sigma")
        ax.plot(t, curve.mu, color="tab:blue", label="progress mu")
        ax.plot(t, curve.reward, color="tab:orange", label=f"reward (alpha={curve.alpha:g})")
    else:
        ax.plot(t, curve.value, color="tab:blue", label=f"{curve.method} value")
        if not np.array_equal(curve.reward, curve.value):
            ax.plot(t, curve.reward, color="tab:orange", label="reward (value change)")
    ax.set_xlabel("frame")
    ax.set_xlim(0, max(len(curve) - 1, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig, ax


def plot_curve(curve: ProgressCurve, path: str | os.PathLike, title: str | None = None) -> Path:
    """The value (``mu`` ± ``sigma`` for PROGRESSOR) and the reward over frames, with the init and goal
    frames as thumbnails."""
    fig, ax = _curve_figure(curve, 10, 4.5, thumbnails=True)
    ax.set_title(title or f"VOC (Spearman {curve.value_name} vs frame) = {curve.voc:.3f}")
    return save_figure(fig, path)


def write_video(frames: Iterable[np.ndarray], curve: ProgressCurve, path: str | os.PathLike,
                fps: float = DEFAULT_FPS, progress: bool = False) -> Path:
    """An mp4 of each frame (uint8 ``(3, D, D)``, D a multiple of 16) beside the curve with a cursor.

    The curve is drawn once; per frame only the cursor is painted, so this costs little more than
    encoding the video.
    """
    import imageio.v2 as imageio

    frames = iter(frames)
    first = np.asarray(next(frames))
    size = first.shape[-1]
    fig, ax = _curve_figure(curve, 1.75 * size / 100, size / 100, thumbnails=False)
    fig.canvas.draw()
    background = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    height = background.shape[0]
    box = ax.get_window_extent()
    top, bottom = int(height - box.y1), int(height - box.y0)
    xs = ax.transData.transform(np.stack([np.arange(len(curve)), curve.value], axis=1))
    width = background.shape[1] // 16 * 16
    writer = imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=16)
    try:
        bar = tqdm(itertools.chain([first], frames), total=len(curve), unit="frame", desc="video", disable=not progress)
        for t, frame in enumerate(bar):
            if t >= len(curve):
                break
            panel = Image.fromarray(np.ascontiguousarray(np.asarray(frame).transpose(1, 2, 0)))
            draw = ImageDraw.Draw(panel)
            label = f"{t}  {curve.value_name} {curve.value[t]:.2f}  r {curve.reward[t]:.2f}"
            draw.rectangle(draw.textbbox((4, 2), label), fill=(0, 0, 0))
            draw.text((4, 2), label, fill=(255, 255, 0))
            plot = background.copy()
            x = int(round(xs[t, 0]))
            y = int(round(height - xs[t, 1]))
            plot[top:bottom, max(x - 1, 0):x + 1] = (220, 30, 30)
            plot[max(y - 3, top):min(y + 4, bottom), max(x - 3, 0):x + 4] = (220, 30, 30)
            writer.append_data(np.concatenate([np.asarray(panel), plot[:size, :width]], axis=1))
    finally:
        writer.close()
    return Path(path)


# ---------------------------------------------------------------------------------------- the job
def score_video(source: str | os.PathLike, model: Any, out_dir: str | os.PathLike, *,
                init: str | os.PathLike | None = None, goal: str | os.PathLike | None = None,
                video: bool = False, batch_size: int = 64, alpha: float | None = None,
                fps: float | None = None, progress: bool = True, subgoals: UVDConfig | None = None) -> ProgressCurve:
    """Score ``source`` (video file or image folder) and write the outputs to ``out_dir``; with
    ``subgoals``, also its UVD decomposition under the model's embedding."""
    size = model.image_size
    init_frame = read_image(init, size) if init is not None else None
    goal_frame = read_image(goal, size) if goal is not None else None
    curve = score_frames(model, iter_frames(source, size), init_frame, goal_frame, batch_size=batch_size,
                         alpha=alpha, progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(curve, out_dir / "progress.csv")
    plot_curve(curve, out_dir / "progress.png", title=f"{Path(source).name}: VOC = {curve.voc:.3f}"
               if len(curve) > 1 else f"{Path(source).name}: one frame (no VOC)")
    if video:
        write_video(iter_frames(source, DISPLAY_SIZE), curve, out_dir / "progress.mp4",
                    fps=fps or source_fps(source), progress=progress)
    if subgoals is not None:
        frames = torch.from_numpy(np.stack(list(iter_frames(source, size))))
        write_decomposition(out_dir, frames, decompose(model, frames, subgoals, batch_size), name=Path(source).name,
                            source=str(source))
    return curve


# ---------------------------------------------------------------------------------------- CLI
def add_encoding_flags(parser: argparse.ArgumentParser) -> None:
    """``--batch_size`` and ``--device``, as every tool that encodes frames with a reward model takes them."""
    parser.add_argument("--batch_size", type=int, default=64, help="frames encoded per forward pass")
    parser.add_argument("--device", default="auto", help="torch device; auto = cuda if available, else cpu")


def device_of(spec: str) -> str:
    """``--device``: ``auto`` is cuda when available, else cpu."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if spec == "auto" else spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="score.py", description="Score a video or a folder of frames with a "
                                     "reward model (PROGRESSOR or a baseline): value (PROGRESSOR: progress "
                                     "mu/sigma) and reward per frame.")
    parser.add_argument("source", help="video file (.mp4, .webm, ...) or folder of images (sorted numerically)")
    parser.add_argument("--checkpoint", required=True,
                        help="reward model: a .pth file (PROGRESSOR, released or ours, or any method of "
                        "Video2Reward/main.py) or hf://<owner>/<repo>[@rev]/<file>")
    parser.add_argument("--out", required=True, help="output folder for progress.csv, progress.png, progress.mp4")
    parser.add_argument("--init", default=None, help="initial-frame image (default: the first frame)")
    parser.add_argument("--goal", default=None, help="goal image (default: the last frame)")
    parser.add_argument("--video", action="store_true", help="also write progress.mp4 (frames beside the curve)")
    add_encoding_flags(parser)
    add_precision_flag(parser, default="fp32")  # fp32: exact scores, the released code's numbers
    parser.add_argument("--alpha", type=float, default=None,
                        help="PROGRESSOR only: entropy weight of the reward mu - alpha * H (default: the model's, 0.4)")
    parser.add_argument("--fps", type=float, default=None,
                        help=f"rate of progress.mp4 (default: the video's, {DEFAULT_FPS:g} for image folders)")
    parser.add_argument("--subgoals", action="store_true", help="also decompose the video into UVD subgoals with "
                        "the model's embedding: subgoals.json, subgoals.png, distance.png")
    add_uvd_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``Video2Reward/score.py``; errors are one line (see :mod:`video2reward.errors`)."""
    from .checkpoint import load_reward_model

    parser = build_parser()
    args = parser.parse_args(argv)
    check_at_least(parser, args, {"batch_size": 1})
    if args.fps is not None and not args.fps > 0:
        parser.error(f"--fps must be > 0, got {args.fps}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is an existing file; give a folder (it is created if missing)")
    device = device_of(args.device)
    try:
        precision = resolve_precision(args.precision, device)
        print(precision.describe())
        model = load_reward_model(args.checkpoint, device=device, precision=args.precision)
        curve = score_video(args.source, model, args.out, init=args.init, goal=args.goal, video=args.video,
                            batch_size=args.batch_size, alpha=args.alpha, fps=args.fps,
                            subgoals=config_from_args(args) if args.subgoals else None)
    except Exception as exc:
        if debug():
            raise
        print(f"score.py: {error_line(exc)}", file=sys.stderr)
        return 1
    voc = f"VOC {curve.voc:.3f}" if len(curve) > 1 else "VOC undefined (a single frame has no order)"
    print(f"{len(curve)} frames ({curve.method}): {curve.value_name} {curve.value[0]:.3f} -> {curve.value[-1]:.3f}, {voc}, "
          f"mean reward {curve.reward.mean():.3f}; wrote {args.out}")
    return 0

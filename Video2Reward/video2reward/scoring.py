"""Score your own video with a reward model: progress ``N(mu, sigma^2)`` and reward per frame.

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

Outputs in ``--out``: ``progress.csv`` (``frame, mu, sigma, reward``), ``progress.png`` (``mu`` with
a ±``sigma`` band and the reward over frames, beside the init and goal frames) and, with
``--video``, ``progress.mp4``: each frame as the model sees it (its centre crop) next to the curve
with a cursor at that frame.
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
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .data import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, DataError, iter_video, load_image, natural_key
from .metrics import spearman
from .errors import debug, error_line
from .model import ProgressModel
from .precision import add_precision_flag, resolve_precision
from .reward_fn import ProgressReward

DEFAULT_FPS = 10.0  # output video rate for image folders (videos keep their own rate)
DISPLAY_SIZE = 256  # side of the frame panel in the output video


@dataclass
class ProgressCurve:
    """Per-frame predictions for one video; arrays are float ``(T,)``, frames uint8 ``(3, S, S)``."""

    mu: np.ndarray
    sigma: np.ndarray
    reward: np.ndarray
    alpha: float
    init_frame: torch.Tensor
    goal_frame: torch.Tensor

    def __len__(self) -> int:
        return len(self.mu)

    @property
    def voc(self) -> float:
        """Value-order correlation: Spearman correlation of ``mu`` with the frame index (NaN for a
        single frame, where no order exists)."""
        if len(self.mu) < 2:
            return math.nan
        return spearman(self.mu, np.arange(len(self.mu)))


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


def score_frames(model: ProgressModel, frames: Iterable[np.ndarray | torch.Tensor] | torch.Tensor,
                 init: torch.Tensor | None = None, goal: torch.Tensor | None = None, *, batch_size: int = 64,
                 alpha: float | None = None, progress: bool = False) -> ProgressCurve:
    """Progress and reward of every frame against fixed init and goal frames.

    ``frames``: uint8 ``(T, 3, S, S)`` or any iterable of ``(3, S, S)`` frames at ``S =
    model.image_size`` (consumed once, ``batch_size`` at a time). ``init`` / ``goal``: uint8 ``(3, S,
    S)``, default the first / last frame. ``alpha`` defaults to the model's.
    """
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
    reward = ProgressReward(model, alpha)
    scores = reward.score_features(f_init, feats, f_goal)
    return ProgressCurve(mu=scores.progress, sigma=scores.sigma, reward=scores.reward, alpha=reward.alpha,
                         init_frame=(first if init is None else init).cpu(),
                         goal_frame=(last if goal is None else goal).cpu())


# ---------------------------------------------------------------------------------------- outputs
def write_csv(curve: ProgressCurve, path: str | os.PathLike) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["frame", "mu", "sigma", "reward"])
        for t in range(len(curve)):
            writer.writerow([t, f"{curve.mu[t]:.6f}", f"{curve.sigma[t]:.6f}", f"{curve.reward[t]:.6f}"])
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
    ax.fill_between(t, curve.mu - curve.sigma, curve.mu + curve.sigma, color="tab:blue", alpha=0.25,
                    label="mu ± sigma")
    ax.plot(t, curve.mu, color="tab:blue", label="progress mu")
    ax.plot(t, curve.reward, color="tab:orange", label=f"reward (alpha={curve.alpha:g})")
    ax.set_xlabel("frame")
    ax.set_xlim(0, max(len(curve) - 1, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig, ax


def plot_curve(curve: ProgressCurve, path: str | os.PathLike, title: str | None = None) -> Path:
    """``mu`` ± ``sigma`` and the reward over frames, with the init and goal frames as thumbnails."""
    fig, ax = _curve_figure(curve, 10, 4.5, thumbnails=True)
    ax.set_title(title or f"VOC (Spearman mu vs frame) = {curve.voc:.3f}")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


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
    xs = ax.transData.transform(np.stack([np.arange(len(curve)), curve.mu], axis=1))
    width = background.shape[1] // 16 * 16
    writer = imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=16)
    try:
        bar = tqdm(itertools.chain([first], frames), total=len(curve), unit="frame", desc="video", disable=not progress)
        for t, frame in enumerate(bar):
            if t >= len(curve):
                break
            panel = Image.fromarray(np.ascontiguousarray(np.asarray(frame).transpose(1, 2, 0)))
            draw = ImageDraw.Draw(panel)
            label = f"{t}  mu {curve.mu[t]:.2f}  r {curve.reward[t]:.2f}"
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
def score_video(source: str | os.PathLike, model: ProgressModel, out_dir: str | os.PathLike, *,
                init: str | os.PathLike | None = None, goal: str | os.PathLike | None = None,
                video: bool = False, batch_size: int = 64, alpha: float | None = None,
                fps: float | None = None, progress: bool = True) -> ProgressCurve:
    """Score ``source`` (video file or image folder) and write the outputs to ``out_dir``."""
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
    return curve


# ---------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="score.py", description="Score a video or a folder of frames with a "
                                     "PROGRESSOR reward model: progress mu/sigma and reward per frame.")
    parser.add_argument("source", help="video file (.mp4, .webm, ...) or folder of images (sorted numerically)")
    parser.add_argument("--checkpoint", required=True,
                        help="reward model: a .pth file (ours or a released one) or hf://<owner>/<repo>[@rev]/<file>")
    parser.add_argument("--out", required=True, help="output folder for progress.csv, progress.png, progress.mp4")
    parser.add_argument("--init", default=None, help="initial-frame image (default: the first frame)")
    parser.add_argument("--goal", default=None, help="goal image (default: the last frame)")
    parser.add_argument("--video", action="store_true", help="also write progress.mp4 (frames beside the curve)")
    parser.add_argument("--batch_size", type=int, default=64, help="frames encoded per forward pass")
    parser.add_argument("--device", default="auto", help="torch device; auto = cuda if available, else cpu")
    add_precision_flag(parser, default="fp32")  # fp32: exact scores, the released code's numbers
    parser.add_argument("--alpha", type=float, default=None,
                        help="entropy weight of the reward mu - alpha * H (default: the model's, 0.4)")
    parser.add_argument("--fps", type=float, default=None,
                        help=f"rate of progress.mp4 (default: the video's, {DEFAULT_FPS:g} for image folders)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``Video2Reward/score.py``; errors are one line (see :mod:`video2reward.errors`)."""
    from .checkpoint import load_reward_model

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.fps is not None and not args.fps > 0:
        parser.error(f"--fps must be > 0, got {args.fps}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is an existing file; give a folder (it is created if missing)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        precision = resolve_precision(args.precision, device)
        print(precision.describe())
        model = load_reward_model(args.checkpoint, device=device, precision=args.precision)
        curve = score_video(args.source, model, args.out, init=args.init, goal=args.goal, video=args.video,
                            batch_size=args.batch_size, alpha=args.alpha, fps=args.fps)
    except Exception as exc:
        if debug():
            raise
        print(f"score.py: {error_line(exc)}", file=sys.stderr)
        return 1
    voc = f"VOC {curve.voc:.3f}" if len(curve) > 1 else "VOC undefined (a single frame has no order)"
    print(f"{len(curve)} frames: mu {curve.mu[0]:.3f} -> {curve.mu[-1]:.3f}, {voc}, "
          f"mean reward {curve.reward.mean():.3f}; wrote {args.out}")
    return 0

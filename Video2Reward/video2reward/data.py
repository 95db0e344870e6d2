"""Expert videos: discovery of the supported layouts and a decode-once uint8 frame store.

Layouts under ``root`` (hidden entries such as ``.v2r_cache`` are ignored):

* Meta-World demos: ``root/<task>/{train,test}/<traj>/<i>.png`` — frames are sorted numerically
  (``2.png`` before ``10.png``); the task name is the folder name (``drawer-open``).
* A single task: ``root/{train,test}/<traj>/...`` — the task name is ``root``'s name.
* EPIC-KITCHENS style: ``root/<video>/*.jpg`` (zero-padded names, sorted) — there is no split
  folder, so the sorted trajectories are split: the first 90 % are ``train``, the rest ``test``.
* Video files (``.mp4``, ``.webm``, ``.avi``, ``.mov``, ``.mkv``, decoded with imageio-ffmpeg):
  ``root/*.mp4`` or ``root/<task>/*.mp4`` (90/10 split as above), or inside ``{train,test}``
  folders, where each file is one trajectory. Image folders and video files may be mixed.

Every frame is decoded once into a uint8 array ``(N, 3, S, S)`` at the model's image size ``S``
and kept in a memory-mapped cache file (``<root>/.v2r_cache/`` by default). The cache is keyed by
the list of source files with their sizes and modification times and by ``S``, so changing, adding
or removing a file rebuilds it; a rebuilt cache replaces the stale one. A cache that fails to open
(a truncated ``.u8``, an unreadable index) is rebuilt too, with a message.

Conversions (documented choices):

* Colour: RGBA / LA images lose their alpha channel (the stored colours are kept, not composited);
  grayscale and palette images are expanded to RGB.
* Size: each frame is resized on its own so that its shorter side is ``S`` and centre-cropped to
  ``S x S`` (the evaluation transform). Frames of different sizes, even within one trajectory, are
  therefore accepted; non-square frames lose the borders of their longer side. ``resize="fit"``
  (default) resamples bicubic (``ImageOps.fit``); ``resize="epic"`` is the released EPIC pipeline,
  ``Resize(S)`` (bilinear, shorter side to ``S``) then ``CenterCrop(S)``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from .progress import progress as tqdm

from .io import atomic_path, atomic_write_json

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".avi", ".mov", ".mkv"})
SPLITS = ("train", "test")
TRAIN_FRACTION = 0.9  # layouts without split folders: the first 90 % of sorted trajectories train
CACHE_DIR_NAME = ".v2r_cache"
CACHE_VERSION = 1


class DataError(ValueError):
    """Unusable input data; the one-line message names the file or folder and the problem."""


@dataclass(frozen=True)
class TrajectorySource:
    """Where one trajectory's frames come from: ordered image files, or one video file."""

    task: str
    name: str  # unique, e.g. "drawer-open/train/3"
    paths: tuple[Path, ...]
    is_video: bool = False


# ---------------------------------------------------------------------------------------- discovery
def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically: ``2.png`` < ``10.png``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def _visible(d: Path) -> list[Path]:
    return sorted((p for p in d.iterdir() if not p.name.startswith(".")), key=lambda p: natural_key(p.name))


def _images_in(d: Path) -> list[Path]:
    return [p for p in _visible(d) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]


def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS


def _is_trajectory_dir(d: Path) -> bool:
    return d.is_dir() and bool(_images_in(d))


def _has_split_dirs(d: Path) -> bool:
    return any((d / s).is_dir() for s in SPLITS)


def _holds_trajectories(d: Path) -> bool:
    """True for a folder whose entries are trajectories (image folders or video files)."""
    return any(_is_video(p) or _is_trajectory_dir(p) for p in _visible(d))


def _trajectory_entries(d: Path) -> list[Path]:
    """Every subfolder and video file of ``d`` is a trajectory (other files, e.g. json, are skipped)."""
    return [p for p in _visible(d) if p.is_dir() or _is_video(p)]


def _source(task: str, name: str, entry: Path) -> TrajectorySource:
    if _is_video(entry):
        return TrajectorySource(task, name, (entry,), is_video=True)
    frames = _images_in(entry)
    if len(frames) < 2:
        raise DataError(f"{entry}: trajectory has {len(frames)} image frame(s); at least 2 are needed")
    return TrajectorySource(task, name, tuple(frames))


def _task_trajectories(task: str, d: Path, split: str, train_fraction: float) -> list[TrajectorySource]:
    if _has_split_dirs(d):
        split_dir = d / split
        if not split_dir.is_dir():
            raise DataError(f"{d}: has no '{split}' folder (found {[s for s in SPLITS if (d / s).is_dir()]})")
        entries = _trajectory_entries(split_dir)
    else:
        entries = _trajectory_entries(d)
        n_train = max(1, int(len(entries) * train_fraction))
        entries = entries[:n_train] if split == "train" else entries[n_train:]
    return [_source(task, f"{task}/{split}/{e.name}", e) for e in entries]


def discover_trajectories(root: str | os.PathLike, split: str = "train", tasks: Sequence[str] | None = None,
                          train_fraction: float = TRAIN_FRACTION) -> list[TrajectorySource]:
    """The trajectories of ``split`` under ``root`` in a stable order (tasks sorted, then trajectories
    in natural order). Raises :class:`DataError` for a missing/empty path or unknown ``tasks``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data path not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root}")
    if not _visible(root):
        raise DataError(f"data path is empty: {root}")
    if _images_in(root):
        raise DataError(f"{root}: holds image frames directly; pass the folder that contains the trajectory folders")
    if _has_split_dirs(root) or _holds_trajectories(root):
        task_dirs = {root.resolve().name: root}
    else:
        task_dirs = {p.name: p for p in _visible(root) if p.is_dir()}
    if tasks is not None:
        unknown = sorted(set(tasks) - set(task_dirs))
        if unknown:
            raise DataError(f"{root}: unknown task(s) {unknown}; available: {sorted(task_dirs)}")
        task_dirs = {t: task_dirs[t] for t in tasks}
    sources: list[TrajectorySource] = []
    for task in sorted(task_dirs):
        task_dir = task_dirs[task]
        if not (_has_split_dirs(task_dir) or _holds_trajectories(task_dir)):
            raise DataError(f"{task_dir}: no trajectories (expected {{train,test}}/<traj>/<i>.png, "
                            f"<video>/*.jpg folders or video files)")
        sources += _task_trajectories(task, task_dir, split, train_fraction)
    if not sources:
        raise DataError(f"{root}: no '{split}' trajectories found")
    return sources


# ---------------------------------------------------------------------------------------- decoding
def to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of any PIL image: alpha is dropped, grayscale/palette are expanded (see module doc)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "RGBX", "RGBa"):
        return img.convert("RGBA").convert("RGB")
    if img.mode == "P":
        return img.convert("RGBA").convert("RGB")
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


RESIZES = ("fit", "epic")  # fit: bicubic ImageOps.fit; epic: bilinear shorter side, then centre crop (released EPIC)


def fit_frame(img: Image.Image, size: int, resize: str = "fit") -> np.ndarray:
    """RGB image -> uint8 ``(3, size, size)``: shorter side resized to ``size``, centre-cropped
    (``resize``: see :data:`RESIZES`)."""
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
    if img.size != (size, size):
        if resize == "fit":
            img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
        else:
            w, h = img.size
            if w <= h:
                new = (size, int(size * h / w))
            else:
                new = (int(size * w / h), size)
            img = img.resize(new, Image.Resampling.BILINEAR)
            left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
            img = img.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def load_image(path: Path, size: int, resize: str = "fit") -> np.ndarray:
    """One image file -> uint8 ``(3, size, size)``; :class:`DataError` if it cannot be decoded."""
    try:
        with Image.open(path) as img:
            img.load()
            return fit_frame(to_rgb(img), size, resize)
    except Image.DecompressionBombError as exc:  # Pillow's guard against huge images; not an OSError
        raise DataError(f"{path}: image too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {str(exc).strip() or 'no detail'})") from None


def iter_video(path: Path, size: int, resize: str = "fit") -> Iterator[np.ndarray]:
    """Frames of a video file as uint8 ``(3, size, size)``; :class:`DataError` if it cannot be decoded."""
    import imageio.v3 as iio  # imageio-ffmpeg backend; imported lazily, only videos need it

    try:
        for frame in iio.imiter(path):
            yield fit_frame(to_rgb(Image.fromarray(np.asarray(frame))), size, resize)
    except (OSError, RuntimeError, ValueError, StopIteration) as exc:
        first = (str(exc).strip().splitlines() or ["no detail"])[0]
        raise DataError(f"{path}: unreadable video ({type(exc).__name__}: {first})") from None


# ---------------------------------------------------------------------------------------- the store
class VideoDataset:
    """Trajectories of uint8 frames, stored back to back in one ``(N, 3, S, S)`` array.

    ``frames`` may be a read-only memory map (the decode cache) or an in-memory array. Trajectory
    ``i`` is ``frames[starts[i] : starts[i] + lengths[i]]``; its task is ``tasks[task_ids[i]]``.
    """

    def __init__(self, frames: np.ndarray, starts: Sequence[int], lengths: Sequence[int], tasks: Sequence[str],
                 names: Sequence[str] | None = None) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[2] != frames.shape[3]:
            raise ValueError(f"frames must be uint8 (N, 3, S, S), got {frames.dtype} {tuple(frames.shape)}")
        self.frames = frames
        self.starts = np.asarray(starts, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if not (len(self.starts) == len(self.lengths) == len(tasks)):
            raise ValueError("starts, lengths and tasks must have one entry per trajectory")
        if len(self.lengths) and self.lengths.min() < 2:
            raise DataError(f"trajectory {int(np.argmin(self.lengths))} has fewer than 2 frames")
        self.task_names: list[str] = sorted(set(tasks))
        index = {t: i for i, t in enumerate(self.task_names)}
        self.task_ids = np.array([index[t] for t in tasks], dtype=np.int64)
        self.names: list[str] = list(names) if names is not None else [f"{t}/{i}" for i, t in enumerate(tasks)]

    @classmethod
    def from_trajectories(cls, trajectories: Sequence[np.ndarray | torch.Tensor], tasks: Sequence[str] | str,
                          names: Sequence[str] | None = None) -> "VideoDataset":
        """An in-memory dataset from uint8 arrays ``(L, 3, S, S)`` (e.g. replay or synthetic frames)."""
        arrays = [t.cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in trajectories]
        if not arrays:
            raise DataError("no trajectories given")
        tasks = [tasks] * len(arrays) if isinstance(tasks, str) else list(tasks)
        lengths = [len(a) for a in arrays]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return cls(np.ascontiguousarray(np.concatenate(arrays)), starts, lengths, tasks, names)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.trajectory(i)

    def __repr__(self) -> str:
        return (f"VideoDataset({len(self)} trajectories, {self.num_frames} frames at {self.image_size}px, "
                f"tasks={self.task_names})")

    @property
    def image_size(self) -> int:
        return int(self.frames.shape[-1])

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    @property
    def tasks(self) -> list[str]:
        """The task name of every trajectory."""
        return [self.task_names[i] for i in self.task_ids]

    def trajectory(self, i: int) -> torch.Tensor:
        """Frames of trajectory ``i`` as a uint8 tensor ``(L, 3, S, S)`` (a copy)."""
        s = int(self.starts[i])
        return torch.from_numpy(np.array(self.frames[s:s + int(self.lengths[i])]))

    def gather(self, traj: np.ndarray | torch.Tensor, frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames ``frame`` of trajectories ``traj`` (broadcast index arrays of any shape ``X``) ->
        uint8 ``(*X, 3, S, S)``."""
        traj = np.asarray(traj, dtype=np.int64)
        frame = np.asarray(frame, dtype=np.int64)
        flat = self.starts[traj] + frame
        order = np.argsort(flat, axis=None)  # sorted reads are kinder to the memory map
        out = np.empty((flat.size, *self.frames.shape[1:]), dtype=np.uint8)
        out[order] = self.frames[flat.reshape(-1)[order]]
        return torch.from_numpy(out).view(*flat.shape, *self.frames.shape[1:])

    def select(self, tasks: Sequence[str] | str) -> "VideoDataset":
        """The trajectories of the given task(s); shares the frame store (no copy)."""
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        unknown = sorted(set(tasks) - set(self.task_names))
        if unknown:
            raise DataError(f"unknown task(s) {unknown}; available: {self.task_names}")
        keep = [i for i, t in enumerate(self.tasks) if t in tasks]
        return VideoDataset(self.frames, self.starts[keep], self.lengths[keep], [self.tasks[i] for i in keep],
                            [self.names[i] for i in keep])


def recorded_image_size(root: str | os.PathLike, tasks: Sequence[str] | None = None) -> int | None:
    """The frame size a dataset records: the ``image_size`` of the ``<root>/<task>/metadata.json``
    files the demo generator writes (of ``tasks`` only, when given), if they all record the same one."""
    root = Path(root)
    files = [root / "metadata.json"] + sorted(root.glob("*/metadata.json"))
    sizes = set()
    for path in files:
        if not path.is_file() or (tasks and path.parent != root and path.parent.name not in tasks):
            continue
        try:
            size = json.loads(path.read_text()).get("image_size")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(size, int):
            sizes.add(size)
    return sizes.pop() if len(sizes) == 1 else None


# ---------------------------------------------------------------------------------------- the cache
def _fingerprint(root: Path, sources: Sequence[TrajectorySource], image_size: int) -> str:
    """Hash of everything the decoded store depends on: files, their sizes and mtimes, the size."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{image_size}".encode())
    for src in sources:
        h.update(f"|{src.task}|{src.name}".encode())
        for p in src.paths:
            st = p.stat()
            h.update(f"|{os.path.relpath(p, root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _default_cache_dir(root: Path) -> Path:
    cache = root / CACHE_DIR_NAME
    if os.access(cache if cache.exists() else root, os.W_OK):
        return cache
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "video2reward" / \
        hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    warnings.warn(f"{root} is not writable; caching decoded frames in {fallback}", stacklevel=3)
    return fallback


def _decode_all(sources: Sequence[TrajectorySource], image_size: int, out, num_workers: int,
                desc: str, resize: str = "fit") -> list[int]:
    """Decode every frame into the open binary file ``out``; returns the trajectory lengths."""
    lengths: list[int] = []
    total = sum(len(s.paths) for s in sources if not s.is_video)
    with tqdm(total=total or None, desc=desc, unit="frame", dynamic_ncols=True) as bar, \
            ThreadPoolExecutor(max(1, num_workers)) as pool:
        for src in sources:
            if src.is_video:
                n = 0
                for frame in iter_video(src.paths[0], image_size, resize):
                    out.write(frame.tobytes())
                    n += 1
                    bar.update(1)
                if n < 2:
                    raise DataError(f"{src.paths[0]}: video has {n} decodable frame(s); at least 2 are needed")
            else:
                for frame in pool.map(lambda p: load_image(p, image_size, resize), src.paths):
                    out.write(frame.tobytes())
                    bar.update(1)
                n = len(src.paths)
            lengths.append(n)
    return lengths


def load_dataset(root: str | os.PathLike, split: str = "train", image_size: int = 84,
                 tasks: Sequence[str] | None = None, cache_dir: str | os.PathLike | None = None,
                 train_fraction: float = TRAIN_FRACTION, num_workers: int = 2, verbose: bool = True,
                 resize: str = "fit") -> VideoDataset:
    """Discover the ``split`` trajectories under ``root`` and return them decoded at ``image_size``
    (``resize``: how frames of another size are brought to it, :data:`RESIZES`).

    The first call decodes every frame (tqdm bar) into ``<cache_dir>/<split>-<S>px-<key>.u8`` plus an
    index ``.json`` (both written atomically); later calls memory-map that file. ``cache_dir``
    defaults to ``<root>/.v2r_cache`` (or a user cache folder when ``root`` is read-only).
    ``tasks`` restricts to some task folders. Raises :class:`DataError` for unusable data.
    """
    root = Path(root).expanduser()
    sources = discover_trajectories(root, split, tasks, train_fraction)
    key = _fingerprint(root, sources, image_size)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir(root)
    selection = "all" if tasks is None else hashlib.sha256("|".join(sorted(tasks)).encode()).hexdigest()[:8]
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
    prefix = f"{split}-{image_size}px-{selection}" if resize == "fit" else f"{split}-{image_size}px-{resize}-{selection}"
    data_path, index_path = cache / f"{prefix}-{key}.u8", cache / f"{prefix}-{key}.json"
    if index_path.is_file() and data_path.is_file():
        try:
            return _open_cache(data_path, index_path, image_size, split, verbose)
        except _CacheDamaged as exc:  # a killed copy, a full disk, a hand edit: decode again
            print(f"[video2reward] {split}: frame cache {exc}; rebuilding it", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(data_path) as tmp:
        with open(tmp, "wb") as out:
            lengths = _decode_all(sources, image_size, out, num_workers,
                                  desc=f"decoding {root.name}/{split} -> {image_size}px", resize=resize)
    atomic_write_json(index_path, {"version": CACHE_VERSION, "root": str(root.resolve()), "split": split,
                                   "image_size": image_size, "lengths": lengths,
                                   "tasks": [s.task for s in sources], "names": [s.name for s in sources]})
    for stale in cache.glob(f"{prefix}-*"):
        if stale.name not in (data_path.name, index_path.name) and not stale.name.startswith("."):
            stale.unlink(missing_ok=True)
    return _open_cache(data_path, index_path, image_size, split, verbose=False)


class _CacheDamaged(Exception):
    """A cache file pair that cannot be used as it is; the message says what is wrong."""


def _open_cache(data_path: Path, index_path: Path, image_size: int, split: str, verbose: bool) -> VideoDataset:
    """Memory-map a cache written by :func:`load_dataset`; :class:`_CacheDamaged` if it is inconsistent."""
    try:
        index = json.loads(index_path.read_text())
        lengths = [int(n) for n in index["lengths"]]
        tasks, names = list(index["tasks"]), list(index["names"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _CacheDamaged(f"index {index_path} is unreadable ({type(exc).__name__})") from None
    n = int(sum(lengths))
    expected = n * 3 * image_size * image_size
    size = data_path.stat().st_size
    if size != expected or not (len(lengths) == len(tasks) == len(names)) or n == 0:
        raise _CacheDamaged(f"{data_path} holds {size} bytes where its index promises {expected}")
    if verbose:
        print(f"[video2reward] {split}: using cached frames {data_path}")
    frames = np.memmap(data_path, dtype=np.uint8, mode="r", shape=(n, 3, image_size, image_size))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return VideoDataset(frames, starts, lengths, tasks, names)


__all__ = ["DataError", "IMAGE_EXTENSIONS", "SPLITS", "TrajectorySource", "VIDEO_EXTENSIONS", "VideoDataset",
           "discover_trajectories", "load_dataset", "load_image", "natural_key"]

"""Eval videos: the agent's frames upscaled, with the step's PROGRESSOR reward / progress and the
env reward written under each frame, saved as mp4 (atomically)."""
from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw

from video2reward.io import atomic_path

SIDE = 256  # output frame side; with the 32-px caption bar both sides are multiples of 16 (codec-friendly)
BAR = 32


class VideoRecorder:
    """Collects captioned frames of one episode; ``save`` writes ``<dir>/<name>.mp4``."""

    def __init__(self, out_dir: Path | None, fps: int = 20) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.fps = fps
        self.frames: list[np.ndarray] = []
        self.enabled = False

    def init(self, frame: np.ndarray, enabled: bool = True, caption: str = "reset") -> None:
        self.frames = []
        self.enabled = enabled and self.out_dir is not None
        self.record(frame, caption)

    def record(self, frame: np.ndarray, caption: str) -> None:
        """``frame`` is (3, S, S) or (S, S, 3) uint8."""
        if not self.enabled:
            return
        img = frame.transpose(1, 2, 0) if frame.shape[0] == 3 else frame
        canvas = Image.new("RGB", (SIDE, SIDE + BAR), (20, 20, 20))
        canvas.paste(Image.fromarray(np.ascontiguousarray(img)).resize((SIDE, SIDE), Image.NEAREST), (0, 0))
        ImageDraw.Draw(canvas).text((4, SIDE + 4), caption, fill=(255, 255, 255))
        self.frames.append(np.asarray(canvas))

    def save(self, name: str) -> Path | None:
        if not self.enabled or not self.frames:
            return None
        path = self.out_dir / f"{name}.mp4"
        with atomic_path(path) as tmp:
            iio.imwrite(tmp, np.stack(self.frames), extension=".mp4", fps=self.fps, codec="libx264",
                        macro_block_size=16)
        return path

"""Progress bars that keep log files readable.

On a terminal :func:`progress` is a plain tqdm bar, redrawn in place. Anywhere else (a log file, a pipe,
a CI job) tqdm's redraws would pile up as one ``\\r``-separated line of many kilobytes, so the bar is
then printed as a line of its own at most every :data:`LOG_INTERVAL` seconds, and once at the end.
"""
from __future__ import annotations

import sys
from typing import IO, Any, Iterable

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0  # seconds between two lines of a bar written to a log


class _Lines:
    """A text stream for tqdm that turns each redraw (``"\\r" + status``) into a line of its own."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``; when its stream (``file``, default stderr) is not a terminal, a
    line at most every :data:`LOG_INTERVAL` seconds instead of a redraw at every update."""
    stream = kwargs.pop("file", None) or sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        kwargs.setdefault("mininterval", LOG_INTERVAL)
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL, kwargs["mininterval"]))  # tqdm's monitor: no earlier
        stream = _Lines(stream)
    return tqdm(iterable, file=stream, **kwargs)


__all__ = ["LOG_INTERVAL", "progress"]

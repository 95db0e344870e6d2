"""One-line errors for the command-line tools.

A user-facing failure ends the program with ``error: <what went wrong, naming the file>`` on
stderr and exit status 1, without a traceback. ``PROGRESSOR_DEBUG=1`` in the environment lets the
exception through with its full traceback instead (as ``HYDRA_FULL_ERROR=1`` does for Hydra).
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Iterator

DEBUG_ENV = "PROGRESSOR_DEBUG"


def debug() -> bool:
    """Whether tracebacks were asked for (``PROGRESSOR_DEBUG`` set to anything but ``""`` / ``0``)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: our messages as they are; others prefixed with their type."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = exc.filename or ""
        return f"no space left on device{f' writing {where}' if where else ''}; free some space and rerun"
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    if _ours(exc):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ours(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("video2reward", "drm")


def error_line(exc: BaseException) -> str:
    """``error: <one line>``; unexpected exception types add how to get their traceback."""
    hint = "" if _ours(exc) or isinstance(exc, OSError) else f" (traceback: {DEBUG_ENV}=1)"
    return f"error: {one_line(exc)}{hint}"


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn an exception raised in the block into ``SystemExit("error: ...")`` (exit status 1);
    Ctrl-C into a one-line note and exit status 130. With ``PROGRESSOR_DEBUG=1`` both pass through."""
    try:
        yield
    except KeyboardInterrupt:
        if debug():
            raise
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except Exception as exc:
        if debug():
            raise
        raise SystemExit(error_line(exc)) from None


__all__ = ["DEBUG_ENV", "debug", "error_line", "one_line", "one_line_errors"]

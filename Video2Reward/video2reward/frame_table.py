"""Per-frame storage keyed by (replay episode id, step), looked up a whole batch at a time.

Replay episode ids are consecutive integers and steps run from 0 to the episode's length, so a dense
``(episodes, steps, *shape)`` tensor with a "filled" mask holds one row per frame and answers a
batch of keys with one gather, where a Python dict would need a lookup per key (10 per sample of an
n-step window, 2,560 per batch of 256): that lookup was the largest part of relabelling a batch.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["FrameTable"]


class FrameTable:
    """Values of shape ``shape`` per ``(episode, step)`` key, dropped whole beyond ``max_entries``
    slots (the table spans the episodes from the oldest to the newest key put since the last clear).

    The storage takes its dtype and device from the first :meth:`put` after a clear; :meth:`get`
    returns rows in that dtype on that device.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = int(max_entries)
        self.clear()

    def clear(self) -> None:
        self._data: torch.Tensor | None = None  # (rows, cols, *shape)
        self._filled = torch.zeros(0, 0, dtype=torch.bool)  # (rows, cols), on the CPU
        self._base = 0  # episode id of row 0

    def __len__(self) -> int:
        return int(self._filled.sum())

    def _rows_cols(self, episodes: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, cols = episodes - self._base, steps
        inside = (rows >= 0) & (rows < self._filled.shape[0]) & (cols >= 0) & (cols < self._filled.shape[1])
        return rows, cols, inside

    def get(self, episodes: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Rows ``(N, *shape)`` for int64 CPU keys ``(N,)`` and whether each was stored (rows of keys
        not stored are zeros). Before anything was stored the rows are ``None``."""
        rows, cols, inside = self._rows_cols(episodes, steps)
        found = torch.zeros(len(episodes), dtype=torch.bool)
        found[inside] = self._filled[rows[inside], cols[inside]]
        if self._data is None:
            return None, found
        out = self._data.new_zeros((len(episodes), *self._data.shape[2:]))
        hit = found.nonzero().squeeze(1)
        out[hit.to(out.device)] = self._data[rows[hit].to(out.device), cols[hit].to(out.device)]
        return out, found

    def put(self, episodes: torch.Tensor, steps: torch.Tensor, data: torch.Tensor) -> None:
        """Store ``data (N, *shape)`` under int64 CPU keys ``(N,)`` (a key stored again is overwritten)."""
        if len(episodes) == 0:
            return
        if self._data is not None and (data.shape[1:] != self._data.shape[2:] or data.device != self._data.device):
            raise ValueError(f"rows of shape {tuple(data.shape[1:])} on {data.device} do not fit a table of "
                             f"{tuple(self._data.shape[2:])} on {self._data.device}")
        lo, hi, width = int(episodes.min()), int(episodes.max()) + 1, int(steps.max()) + 1
        if self._data is None or lo < self._base or hi > self._base + self._filled.shape[0] \
                or width > self._filled.shape[1]:
            self._grow(lo, hi, width, data)
            if self._data is None:  # the keys alone span more than max_entries: keep nothing
                return
        rows, cols = (episodes - self._base).to(self._data.device), steps.to(self._data.device)
        self._data[rows, cols] = data.to(self._data.dtype)
        self._filled[episodes - self._base, steps] = True

    def _grow(self, lo: int, hi: int, width: int, like: torch.Tensor) -> None:
        """Reallocate to cover episodes ``[lo, hi)`` and steps ``[0, width)`` besides what is stored,
        doubling a dimension that grows; start over when that would exceed ``max_entries``."""
        old_rows, old_cols = self._filled.shape
        if self._data is not None:
            new_lo, new_hi = min(lo, self._base), max(hi, self._base + old_rows)
            n_rows = max(new_hi - new_lo, 2 * old_rows if hi > self._base + old_rows else 0)
            n_cols = max(width, 2 * old_cols if width > old_cols else old_cols)
            if n_rows * n_cols > self.max_entries:
                n_rows = new_hi - new_lo
            if n_rows * n_cols > self.max_entries:
                self.clear()
        if self._data is None:
            new_lo, n_rows, n_cols = lo, hi - lo, width
            if n_rows * n_cols > self.max_entries:
                return
        data = like.new_zeros((n_rows, n_cols, *like.shape[1:]))
        filled = torch.zeros(n_rows, n_cols, dtype=torch.bool)
        if self._data is not None:
            shift = self._base - new_lo
            data[shift:shift + old_rows, :old_cols] = self._data
            filled[shift:shift + old_rows, :old_cols] = self._filled
        self._data, self._filled, self._base = data, filled, new_lo

    def drop_before(self, episode: int) -> None:
        """Forget every key of an episode older than ``episode``; the rows are reclaimed once they
        are half of the table."""
        if self._data is None or episode <= self._base:
            return
        cut = episode - self._base
        if cut >= self._filled.shape[0]:
            self.clear()
            return
        self._filled[:cut] = False
        if 2 * cut >= self._filled.shape[0]:
            self._data, self._filled = self._data[cut:].clone(), self._filled[cut:].clone()
            self._base = episode

    def next_keys(self, start: tuple[int, int], count: int,
                  where: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Up to ``count`` stored keys ``(N, 2)`` in (episode, step) order from the key ``start`` on,
        wrapping around once, and the key just after the last one (where the next call starts).
        ``where(data) -> (rows, cols) bool`` narrows them (default: every stored key)."""
        empty = torch.zeros(0, 2, dtype=torch.int64)
        if self._data is None or count <= 0:
            return empty, start
        n_cols = self._filled.shape[1]
        mask = self._filled if where is None else self._filled & where(self._data).cpu()
        flat = mask.view(-1)
        first = min(max((start[0] - self._base) * n_cols + start[1], 0), len(flat))
        picked = flat[first:].nonzero().squeeze(1)[:count] + first
        if len(picked) < count:
            picked = torch.cat([picked, flat[:first].nonzero().squeeze(1)[:count - len(picked)]])
        if len(picked) == 0:
            return empty, start
        keys = torch.stack([picked // n_cols + self._base, picked % n_cols], dim=1)
        last = int(picked[-1]) + 1
        return keys, (last // n_cols + self._base, last % n_cols)

    def items(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every stored key ``(N, 2)`` int64 (episode, step) and its row ``(N, *shape)`` on the CPU."""
        where = self._filled.nonzero()
        if self._data is None or len(where) == 0:
            return torch.zeros(0, 2, dtype=torch.int64), None
        rows = self._data[where[:, 0].to(self._data.device), where[:, 1].to(self._data.device)].cpu()
        where[:, 0] += self._base
        return where, rows

    def load(self, keys: Any, rows: Any, device: torch.device | str | None = None) -> None:
        """Start over with ``keys (N, 2)`` and ``rows (N, *shape)`` (from :meth:`items`)."""
        self.clear()
        if keys is None or rows is None or len(keys) == 0:
            return
        keys = torch.as_tensor(keys, dtype=torch.int64).view(-1, 2)
        rows = torch.as_tensor(rows)
        self.put(keys[:, 0], keys[:, 1], rows if device is None else rows.to(device))

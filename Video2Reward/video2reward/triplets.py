"""Triplet sampling and progress labels (PROGRESSOR §2.2).

A triplet is (initial, current, goal) frame indices ``i <= j <= g`` of one trajectory of length
``L``; its label is ``N(m, s^2)`` with ``m = (j - i) / (g - i)`` (always in [0, 1]) and
``s = 0.1`` or ``s = sqrt(1 / (g - i))`` ("delta": far-apart endpoints give a sharper label).

* Randomised endpoints: ``i ~ U{0..L-2}``, ``g ~ U{i+1 .. min(L, i+max_gap)-1}``, ``j ~ U{i..g}``.
* Fixed endpoints: ``i = 0``, ``g = L-1``, ``j ~ U{0..L-1}``.
* Mixed (``randomize`` with ``fixed_fraction`` f): each triplet has fixed endpoints with
  probability f, randomised ones otherwise.

Two batch layouts, both a :class:`TripletBatch` whose ``frames`` are ``(G, K, 3, S, S)`` groups
(a group shares one geometric augmentation) and whose triplets index into the flattened frames:

* per-triplet (plain): ``G = B`` groups of ``K = 3`` frames (init, current, goal);
* shared embedding: ``G`` trajectories x ``K`` frames each. The ``K`` frames (sorted, distinct)
  are drawn inside one window of ``min(L, max_gap)`` frames (randomised) or always include the
  first and last frame (fixed); the batch's ``B`` triplets are then drawn among each group's ``K``
  frames with the same endpoint rules applied to positions, and labelled from the true frame
  indices. The encoder then runs on ``G*K`` frames instead of ``3B``.

Triplet ``b`` belongs to group ``b % G``, so rolling the batch by one gives every triplet a middle
frame from another group: that is the negative (:attr:`TripletBatch.negative`).
Every draw comes from a ``torch.Generator``; :meth:`TripletSampler.sample_at` makes batch ``step``
a pure function of ``(seed, rank, step)``, which is what makes resumed training exact.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from .data import VideoDataset

LabelStd = float | str  # a constant std, or "delta" for sqrt(1 / (goal - init))


def parse_label_std(value: LabelStd) -> LabelStd:
    """``"delta"`` or a positive float (strings such as ``"0.1"`` are converted)."""
    if isinstance(value, str) and value.strip().lower() == "delta":
        return "delta"
    try:
        std = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"label std must be 'delta' or a positive number, got {value!r}") from None
    if not std > 0:
        raise ValueError(f"label std must be positive, got {std}")
    return std


def randint_below(high: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform integers in ``{0 .. high-1}`` for every element of ``high`` (int64, ``high >= 1``)."""
    u = torch.rand(high.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((u * high).long(), high - 1)


def sample_endpoints(lengths: torch.Tensor, randomize: bool = True, max_gap: int | None = None,
                     generator: torch.Generator | None = None, fixed_fraction: float = 0.0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(init, current, goal)`` int64 indices, one triplet per entry of ``lengths`` (each ``>= 2``);
    with ``randomize``, a ``fixed_fraction`` of them (drawn per triplet) still gets fixed endpoints."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    init = torch.zeros_like(lengths)
    goal = lengths - 1
    if randomize:
        r_init = randint_below(lengths - 1, generator)
        hi = lengths if max_gap is None else torch.minimum(lengths, r_init + max(int(max_gap), 2))
        r_goal = r_init + 1 + randint_below(hi - 1 - r_init, generator)
        fixed = torch.rand(lengths.shape, generator=generator) < fixed_fraction
        init, goal = torch.where(fixed, init, r_init), torch.where(fixed, goal, r_goal)
    current = init + randint_below(goal - init + 1, generator)
    return init, current, goal


def progress_labels(init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor,
                    label_std: LabelStd = "delta") -> tuple[torch.Tensor, torch.Tensor]:
    """Label mean ``(current - init) / (goal - init)`` and std (constant, or ``sqrt(1/(goal-init))``)."""
    delta = (goal - init).double()
    mean = ((current - init).double() / delta).float()
    std = torch.sqrt(1.0 / delta).float() if parse_label_std(label_std) == "delta" else \
        torch.full_like(mean, float(label_std))
    return mean, std


class TripletBatch(NamedTuple):
    """A training batch; index fields point into ``frames.flatten(0, 1)``."""

    frames: torch.Tensor  # (G, K, 3, S, S) uint8, groups sharing one geometric augmentation
    init: torch.Tensor  # (B,) int64
    current: torch.Tensor  # (B,) int64
    goal: torch.Tensor  # (B,) int64
    label_mean: torch.Tensor  # (B,) float32 in [0, 1]
    label_std: torch.Tensor  # (B,) float32
    traj: torch.Tensor  # (B,) int64 trajectory index in the dataset
    negative: torch.Tensor  # (B,) int64 a middle frame from another group (replaces `current`)
    negatives: Any = None  # a video2reward.negatives.NegativeBatch when pretraining with generated negatives

    @property
    def flat_frames(self) -> torch.Tensor:
        """All frames ``(G*K, 3, S, S)``."""
        return self.frames.flatten(0, 1)

    def with_frames(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "TripletBatch":
        """The batch with ``fn`` (an augmentation) applied to its frame groups (and its negatives')."""
        return self._replace(frames=fn(self.frames),
                             negatives=None if self.negatives is None else self.negatives.with_frames(fn))

    def to(self, device: torch.device | str) -> "TripletBatch":
        return TripletBatch(*(None if t is None else t.to(device, non_blocking=True) for t in self))


class TripletSampler:
    """Draws :class:`TripletBatch` es from a :class:`~video2reward.data.VideoDataset`.

    Trajectories are drawn task-balanced (a task uniformly, then one of its trajectories) unless
    ``balance_tasks`` is False. ``batch_size`` is the number of triplets per batch in both modes.
    """

    def __init__(self, dataset: VideoDataset, batch_size: int = 256, randomize: bool = True,
                 max_gap: int | None = None, label_std: LabelStd = "delta", shared_embedding: bool = False,
                 frames_per_traj: int = 16, trajs_per_batch: int = 16, balance_tasks: bool = True,
                 seed: int = 0, fixed_fraction: float = 0.0) -> None:
        if len(dataset) == 0:
            raise ValueError("empty dataset")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.randomize = bool(randomize)
        self.max_gap = None if max_gap is None else max(int(max_gap), 2)
        self.label_std = parse_label_std(label_std)
        self.shared_embedding = bool(shared_embedding)
        self.frames_per_traj = max(int(frames_per_traj), 2)
        self.trajs_per_batch = max(1, min(int(trajs_per_batch), self.batch_size))
        self.seed = int(seed)
        self.fixed_fraction = float(fixed_fraction) if self.randomize else 1.0
        if not 0.0 <= self.fixed_fraction <= 1.0:
            raise ValueError(f"fixed_fraction must be in [0, 1], got {fixed_fraction}")
        self.lengths = torch.as_tensor(dataset.lengths, dtype=torch.int64)
        tasks = torch.as_tensor(dataset.task_ids if balance_tasks else np.zeros(len(dataset), np.int64))
        groups = [torch.nonzero(tasks == t).flatten() for t in torch.unique(tasks)]
        self._counts = torch.tensor([len(g) for g in groups])
        self._members = torch.nn.utils.rnn.pad_sequence(groups, batch_first=True)

    # ------------------------------------------------------------------ drawing
    def generator_at(self, step: int, rank: int = 0) -> torch.Generator:
        """The generator of batch ``step`` on process ``rank`` (independent streams by hashing)."""
        seed = int(np.random.SeedSequence([self.seed, int(rank), int(step)]).generate_state(1, np.uint64)[0])
        return torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)

    def sample_at(self, step: int, rank: int = 0) -> TripletBatch:
        """Batch number ``step`` (deterministic)."""
        return self.sample(self.generator_at(step, rank))

    def sample_trajectories(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        task = randint_below(torch.full((n,), len(self._counts)), generator)
        return self._members[task, randint_below(self._counts[task], generator)]

    def sample(self, generator: torch.Generator | None = None) -> TripletBatch:
        if self.shared_embedding:
            return self._sample_shared(generator)
        return self._sample_plain(generator)

    def _sample_plain(self, generator: torch.Generator | None) -> TripletBatch:
        b = self.batch_size
        traj = self.sample_trajectories(b, generator)
        init, current, goal = sample_endpoints(self.lengths[traj], self.randomize, self.max_gap, generator,
                                               self.fixed_fraction)
        frames = self.dataset.gather(traj[:, None], torch.stack([init, current, goal], 1))
        mean, std = progress_labels(init, current, goal, self.label_std)
        base = 3 * torch.arange(b)
        return TripletBatch(frames, base, base + 1, base + 2, mean, std, traj, (base + 1).roll(1))

    def _sample_shared(self, generator: torch.Generator | None) -> TripletBatch:
        g, b = self.trajs_per_batch, self.batch_size
        traj = self.sample_trajectories(g, generator)
        lengths = self.lengths[traj]
        with_ends = self.fixed_fraction > 0  # fixed-endpoint triplets need the first and last frame
        window = lengths if (with_ends or not self.max_gap) else torch.clamp(lengths, max=self.max_gap)
        k = int(min(self.frames_per_traj, int(window.min())))
        start = randint_below(lengths - window + 1, generator)
        # K distinct sorted positions inside each window: the K smallest of uniform scores, with
        # out-of-window positions excluded and (fixed endpoints) the window's ends forced in.
        width = int(window.max())
        scores = torch.rand(g, width, generator=generator)
        pos = torch.arange(width)[None].expand(g, -1)
        scores = torch.where(pos >= window[:, None], torch.full_like(scores, 2.0), scores)
        if with_ends:
            ends = (pos == 0) | (pos == window[:, None] - 1)
            scores = torch.where(ends, torch.full_like(scores, -1.0), scores)
        chosen = torch.sort(torch.topk(scores, k, dim=1, largest=False).indices, dim=1).values
        frame_idx = start[:, None] + chosen  # (G, K)
        frames = self.dataset.gather(traj[:, None], frame_idx)
        group = torch.arange(b) % g
        p_init, p_cur, p_goal = sample_endpoints(torch.full((b,), k), self.randomize, None, generator,
                                                 self.fixed_fraction)
        init, current, goal = (frame_idx[group, p] for p in (p_init, p_cur, p_goal))
        mean, std = progress_labels(init, current, goal, self.label_std)
        flat_cur = group * k + p_cur
        return TripletBatch(frames, group * k + p_init, flat_cur, group * k + p_goal, mean, std, traj[group],
                            flat_cur.roll(1))


__all__ = ["LabelStd", "TripletBatch", "TripletSampler", "parse_label_std", "progress_labels", "randint_below",
           "sample_endpoints"]

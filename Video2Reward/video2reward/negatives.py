"""Negatives for PROGRESSOR's pretraining: what a progress model must learn is *not* progress
(Robometer's objective, seed 004), beside the expert videos it learns time from.

Kinds, each with a rank in the quality order the preference loss asks for (expert 3):

=============== ===== =============================================================== ============
kind            rank  what                                                            made
=============== ===== =============================================================== ============
``noise-0.3``   2     the expert's actions + Gaussian noise 0.3, from a demo placement stored
``noise-1.0``   1     the same with noise 1.0                                         stored
``rewound``     1     an expert video up to frame ``t``, then played back to ``t - r`` sampling
``random``      0     uniform random actions                                          stored
``parked``      0     one random action held for the episode (the arm parked)         stored
``reversed``    0     an expert video played backwards                                sampling
``other-task``  0     another task's expert video against this task's goal            sampling
=============== ===== =============================================================== ============

Stored kinds come from ``scripts/generate_negatives.py`` (``NEG/<kind>/<task>/train/<i>``, rollout
``i`` from the placement of expert demo ``i``); the others are built from the expert videos when a
batch is drawn. A :class:`NegativeBatch` holds ``N`` negative trajectories, each with the expert
trajectory of its placement (same task and index, or another demo of its task): ``K`` frames of each,
sorted, the first frame first (the init), and the placement's goal (the expert's last frame) as
column ``K``. What the loss does with them: :func:`negative_losses`.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import DataError, VideoDataset, load_dataset
from .losses import progress_kl_loss
from .triplets import randint_below

STORED_KINDS = ("parked", "random", "noise-1.0", "noise-0.3")
MADE_KINDS = ("rewound", "reversed", "other-task")
QUALITY = {"expert": 3, "noise-0.3": 2, "noise-1.0": 1, "rewound": 1, "random": 0, "parked": 0, "reversed": 0,
           "other-task": 0}
NOT_PROGRESS = tuple(k for k, q in QUALITY.items() if q == 0)  # kinds whose frames get the frame-level target
TARGETS = ("pushback", "low")
LOW_TARGET = (0.0, 0.1)  # target "low": N(0, 0.1^2)


class NegativeBatch(NamedTuple):
    """``N`` negatives and their placements' expert trajectories (module doc)."""

    frames: torch.Tensor  # (2N, K + 1, 3, S, S) uint8: rows :N the negatives, N: their experts; column K: the goal
    quality: torch.Tensor  # (N,) int64 rank of each negative (the experts' is 3)
    task: torch.Tensor  # (N,) int64 task id (the expert dataset's)
    not_progress: torch.Tensor  # (N,) bool: frames that get the frame-level target

    def with_frames(self, fn) -> "NegativeBatch":
        return self._replace(frames=fn(self.frames))

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "NegativeBatch":
        return NegativeBatch(*(t.to(device, non_blocking=non_blocking) for t in self))


class NegativeSet:
    """The negatives of one expert dataset: the stored kinds found under ``root`` (those of the
    expert data's tasks), and the kinds made from the expert videos (``other-task`` needs two tasks)."""

    def __init__(self, expert: VideoDataset, root: str | Path | None, kinds: Sequence[str] | None = None,
                 cache_dir: str | None = None, resize: str = "fit") -> None:
        self.expert = expert
        self.stored: dict[str, VideoDataset] = {}
        wanted = list(kinds) if kinds else [*STORED_KINDS, *MADE_KINDS]
        unknown = sorted(set(wanted) - set(QUALITY) - {"expert"})
        if unknown:
            raise DataError(f"unknown negative kind(s) {unknown}; choose from {', '.join([*STORED_KINDS, *MADE_KINDS])}")
        for kind in (k for k in wanted if k in STORED_KINDS):
            folder = Path(root) / kind if root is not None else None
            if folder is None or not folder.is_dir():
                if kinds:  # asked for by name: it must be there
                    raise DataError(f"{folder}: no {kind!r} negatives (make them with scripts/generate_negatives.py)")
                continue
            tasks = [t for t in expert.task_names if (folder / t).is_dir()]
            if tasks:
                self.stored[kind] = load_dataset(folder, "train", expert.image_size, tasks, cache_dir, verbose=False,
                                                 resize=resize)
        self.made = [k for k in wanted if k in MADE_KINDS and (k != "other-task" or len(expert.task_names) > 1)]
        self.kinds = [*self.stored, *self.made]
        if not self.kinds:
            raise DataError(f"{root}: no negatives of the tasks {expert.task_names} (make them with "
                            f"scripts/generate_negatives.py)")
        # the expert trajectory of each placement: (task, demo index) -> expert trajectory
        self._expert_of = {(t, n): i for i, (t, n) in enumerate(zip(expert.tasks, expert.names))}
        self._by_task = {t: np.flatnonzero(np.array(expert.tasks) == t) for t in expert.task_names}

    def __repr__(self) -> str:
        stored = ", ".join(f"{k} {len(d)}" for k, d in self.stored.items())
        return f"NegativeSet(stored: {stored or 'none'}; made: {', '.join(self.made) or 'none'})"

    def _pair(self, task: str, name: str, generator: torch.Generator) -> int:
        """The expert trajectory of a placement: the demo of that index, else one of the task's."""
        if (task, name) in self._expert_of:
            return self._expert_of[(task, name)]
        members = self._by_task[task]
        return int(members[int(randint_below(torch.tensor([len(members)]), generator))])

    def sample(self, n: int, k: int, generator: torch.Generator) -> NegativeBatch:
        """``n`` negatives of kinds drawn uniformly, ``k`` frames each (module doc)."""
        kinds = [self.kinds[int(i)] for i in randint_below(torch.full((n,), len(self.kinds)), generator)]
        neg_rows, exp_rows, quality, task = [], [], [], []
        for kind in kinds:
            if kind in self.stored:
                data = self.stored[kind]
                j = int(randint_below(torch.tensor([len(data)]), generator))
                name = data.tasks[j]
                e = self._pair(name, data.names[j], generator)
                order = torch.arange(int(data.lengths[j]))
            else:
                e = int(randint_below(torch.tensor([len(self.expert)]), generator))
                name = self.expert.tasks[e]
                data, j, order = self._made(kind, e, generator)
            negative = data.gather(j, order[_positions(len(order), k, generator)])  # only the frames used are read
            length = int(self.expert.lengths[e])
            expert = self.expert.gather(e, torch.cat([_positions(length, k, generator), torch.tensor([length - 1])]))
            neg_rows.append(torch.cat([negative, expert[-1:]]))  # the placement's goal: the expert's last frame
            exp_rows.append(expert)
            quality.append(QUALITY[kind])
            task.append(self.expert.task_names.index(name))
        quality_t = torch.tensor(quality, dtype=torch.int64)
        return NegativeBatch(torch.stack(neg_rows + exp_rows), quality_t, torch.tensor(task, dtype=torch.int64),
                             torch.tensor([kind in NOT_PROGRESS for kind in kinds]))

    def _made(self, kind: str, e: int, generator: torch.Generator) -> tuple[VideoDataset, int, torch.Tensor]:
        """A sampling-time negative from expert trajectory ``e``: ``(dataset, trajectory, frame order)``."""
        length = int(self.expert.lengths[e])
        if kind == "reversed":
            return self.expert, e, torch.arange(length - 1, -1, -1)
        if kind == "rewound":
            return self.expert, e, rewind_order(length, generator)
        task = self.expert.tasks[e]  # other-task: a video of another task (its own frames, this task's goal)
        others = np.flatnonzero(np.array(self.expert.tasks) != task)
        other = int(others[int(randint_below(torch.tensor([len(others)]), generator))])
        return self.expert, other, torch.arange(int(self.expert.lengths[other]))

def rewind_order(length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Frame order of a rewound copy of a ``length``-frame video: ``0 .. t`` then back ``t-1 .. t-r``,
    with ``t`` uniform in ``[1, length-1]`` and ``r`` uniform in ``[1, t]``."""
    t = 1 + int(randint_below(torch.tensor([length - 1]), generator))
    r = 1 + int(randint_below(torch.tensor([t]), generator))
    return torch.cat([torch.arange(t + 1), torch.arange(t - 1, t - r - 1, -1)])


def _positions(length: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` sorted distinct frame positions of a ``length``-frame video, the first frame always in
    (the init); fewer frames than ``k``: positions repeat the last."""
    if length <= k:
        return torch.cat([torch.arange(length), torch.full((k - length,), length - 1)])
    rest = torch.randperm(length - 1, generator=generator)[: k - 1] + 1
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.sort(rest).values])


def preference_loss(better: torch.Tensor, worse: torch.Tensor, temperature: float) -> torch.Tensor:
    """Bradley-Terry: mean of ``-log sigmoid((s_better - s_worse) / temperature)`` over the pairs."""
    return F.softplus(-(better.float() - worse.float()) / temperature).mean()


def preference_pairs(quality: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs ``(better, worse)`` among ``2N`` scored trajectories (the ``N`` negatives, then
    their ``N`` experts of rank 3): every negative below its own expert, and every two of the same
    task whose ranks differ."""
    n = len(quality)
    q = torch.cat([quality, torch.full_like(quality, QUALITY["expert"])])
    t = torch.cat([task, task])
    own = torch.arange(n)
    same_task = (t[:, None] == t[None, :]) & (q[:, None] > q[None, :])
    same_task[n + own, own] = False  # counted once, as the own-expert pair below
    b, w = torch.nonzero(same_task, as_tuple=True)
    return torch.cat([n + own, b]), torch.cat([own, w])


def negative_losses(mu: torch.Tensor, sigma: torch.Tensor, batch: NegativeBatch, target: str, beta: float,
                    temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frame-level loss, preference loss)`` from the head's ``(mu, sigma)`` ``(2N, K)`` on every
    row's frames against its first frame and its goal.

    * frame-level, on the not-progress kinds' frames after the first: KL to ``N(beta * mu, sigma)``
      (detached, push-back's target; ``target="pushback"``) or to ``N(0, 0.1^2)`` (``"low"``);
    * preference: Bradley-Terry on each trajectory's score, the mean ``mu`` of its frames after the
      first (:func:`preference_pairs`)."""
    n = len(batch.quality)
    frames_mu, frames_sigma = mu[:n, 1:][batch.not_progress], sigma[:n, 1:][batch.not_progress]
    if frames_mu.numel() == 0:
        frame_loss = mu.new_zeros(())
    elif target == "pushback":
        frame_loss = progress_kl_loss(frames_mu, frames_sigma, beta * frames_mu.detach(), frames_sigma.detach())
    else:
        frame_loss = progress_kl_loss(frames_mu, frames_sigma, *LOW_TARGET)
    score = mu[:, 1:].float().mean(1)
    better, worse = preference_pairs(batch.quality.cpu(), batch.task.cpu())
    pref = preference_loss(score[better.to(score.device)], score[worse.to(score.device)], temperature)
    return frame_loss, pref


__all__ = ["MADE_KINDS", "NOT_PROGRESS", "NegativeBatch", "NegativeSet", "QUALITY", "STORED_KINDS", "TARGETS",
           "negative_losses", "preference_loss", "preference_pairs", "rewind_order"]

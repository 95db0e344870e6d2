"""VIPER (Escontrela et al., 2023): a video prediction model of expert videos as the reward.

* **Codes.** A trained frame tokenizer (:mod:`.tokenizer`, ``main.py --method tokenizer``) turns every
  frame ``x_t`` into a grid of codes ``z_t`` ``(g, g)``; it is frozen and its weights travel in this
  model's checkpoint.
* **Video model.** An autoregressive transformer over a window of ``context`` frames (``frame_skip``
  apart): the window's codes are flattened in (time, row, column) order into ``T g^2`` tokens, shifted
  right behind a learnt start token, given learnt time, row and column embeddings (and a task
  embedding when the training data has several tasks), and passed through ``layers`` pre-norm blocks
  of causal self-attention and an MLP; a linear head gives every position's logits over the codes.
  Trained by maximum likelihood, ``max sum_t sum_i log p(z_t^i | z_t^{<i}, z_{<t})``, on windows of
  the expert videos (the mean cross-entropy per code).
* **Reward.** ``r_t = ln p(x_t | x_{t-1}, ...)``: the sum of frame ``t``'s code log-likelihoods given
  the ``context - 1`` frames before it (fewer at the start of an episode; the first frame's is its
  unconditional likelihood). All windows of a trajectory are scored in one batched pass
  (:meth:`ViperModel.score_sequence`); a step's reward is the value of its new frame.
* **Exploration.** ``r^KL = r^VIPER + beta * r^expl`` with ``beta = novelty_weight`` (default 0: off):
  ``r^expl`` is an RND novelty (Burda et al., 2019) on the frame's code vectors, the squared error of
  a predictor trained online to match a fixed random network (:class:`Novelty`; its online training
  belongs to the RL reward function).

Contract: a :class:`~.base.PretrainedModel` that scores frame sequences (``scores =``
:data:`~.base.SEQUENCES`), trained by ``main.py --method viper --tokenizer CKPT``. Sizes against
the official ones and what is not done yet: docs/baselines.md, section VIPER.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import VideoDataset
from ..flags import setting
from ..io import atomic_write_json, save_figure
from ..triplets import randint_below
from .base import (SEQUENCES, VALUE, Evaluation, Metrics, PretrainedConfig, PretrainedModel, Pretraining, Sampling,
                   TupleSampler, inference_mode, tuple_train_step)
from .tokenizer import TokenizerConfig, TokenizerModel


@dataclass
class ViperTraining:
    """VIPER's own pretraining setting, a flag of the pretraining command
    (:class:`~video2reward.config.TrainConfig` inherits it)."""

    tokenizer: str | None = setting(None, "viper: the frame tokenizer checkpoint whose codes it models (main.py "
                                          "trains one as method tokenizer)", metavar="CKPT")


@dataclass
class ViperConfig(PretrainedConfig):
    """Everything needed to rebuild a :class:`ViperModel`; saved beside the weights."""

    method: str = "viper"
    tokenizer_config: dict[str, Any] = field(default_factory=dict)  # the frozen tokenizer's (TokenizerConfig fields)
    context: int = 4  # frames per window (official 16)
    frame_skip: int = 1  # steps between a window's frames (official 1 on DMC, 4 on RLBench)
    layers: int = 2  # transformer blocks (official 8)
    heads: int = 4  # attention heads (official 8)
    width: int = 128  # token width (official 256)
    mlp_width: int = 512  # hidden width of a block's MLP (official 1024)
    dropout: float = 0.1  # on attention weights and residual branches (official 0.1)
    tasks: tuple[str, ...] | None = None  # the training data's tasks (task embedding rows); read off the data
    novelty_weight: float = 0.0  # beta of the RND novelty term of the reward; 0: none

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tokenizer_config = asdict(TokenizerConfig(**self.tokenizer_config))
        if self.tasks is not None:
            self.tasks = tuple(self.tasks)
        if self.context < 1 or self.frame_skip < 1 or self.layers < 1 or self.width % self.heads:
            raise ValueError(f"viper needs context >= 1, frame_skip >= 1, layers >= 1 and width a multiple of heads; "
                             f"got {self.context}, {self.frame_skip}, {self.layers}, {self.width}/{self.heads}")
        if not 0 <= self.dropout < 1 or self.novelty_weight < 0:
            raise ValueError(f"viper needs 0 <= dropout < 1 and novelty_weight >= 0, got {self.dropout}, "
                             f"{self.novelty_weight}")


# ------------------------------------------------------------------------------------ networks
class Block(nn.Module):
    """Pre-norm causal self-attention, then a GELU MLP, each residual; ``(B, L, W)`` -> ``(B, L, W)``."""

    def __init__(self, width: int, heads: int, mlp_width: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_width), nn.GELU(), nn.Linear(mlp_width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # token i sees tokens <= i
        x = x + F.dropout(self.proj(y.transpose(1, 2).reshape(b, n, w)), p, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), p, self.training)


class VideoTransformer(nn.Module):
    """Codes ``(B, T, g, g)`` -> logits ``(B, T, g, g, K)``: at every position the distribution of its
    code given all codes before it in (time, row, column) order (and the task)."""

    def __init__(self, codes: int, grid: int, context: int, layers: int, heads: int, width: int, mlp_width: int,
                 dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.embed = nn.Embedding(codes, width)
        self.start = nn.Parameter(torch.randn(width) * 0.02)
        self.time = nn.Parameter(torch.randn(context, width) * 0.02)
        self.row = nn.Parameter(torch.randn(grid, width) * 0.02)
        self.col = nn.Parameter(torch.randn(grid, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_width, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, codes)

    def forward(self, codes: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """``task``: ``(B, W)`` task embeddings added to every token, or ``None``."""
        b, t, g, _ = codes.shape
        x = self.embed(codes.flatten(1))
        x = torch.cat([self.start.expand(b, 1, -1), x[:, :-1]], dim=1)  # position i reads the codes before i
        x = x + (self.time[:t, None, None] + self.row[None, :, None] + self.col[None, None, :]).flatten(0, 2)
        if task is not None:
            x = x + task[:, None]
        x = F.dropout(x, self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)).view(b, t, g, g, -1)


class Novelty(nn.Module):
    """RND on a frame's code vectors ``(N, g, g, D)``: a fixed random ``target`` MLP and a ``predictor``
    MLP; the novelty of a frame is their mean squared difference (:meth:`forward`), which training the
    predictor on the frames seen (minimising it) lowers for frames like them."""

    def __init__(self, in_dim: int, width: int = 256, out_dim: int = 64) -> None:
        super().__init__()

        def mlp() -> nn.Sequential:
            return nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, out_dim))

        self.target, self.predictor = mlp(), mlp()
        self.target.requires_grad_(False)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return (self.predictor(vectors) - self.target(vectors)).square().mean(-1)


# ------------------------------------------------------------------------------------ the model
class ViperModel(PretrainedModel):
    """The video model over a frozen tokenizer's codes; rewards by :meth:`score_sequence` (module doc)."""

    method = "viper"
    config_class = ViperConfig
    training_class = ViperTraining
    default_batch_size = 16  # windows per step
    scores: ClassVar[str] = SEQUENCES  # a reward call reads the episode's frames so far
    reward_kind: ClassVar[str] = VALUE  # a step's reward is the value (log-likelihood) of its new frame

    def __init__(self, config: ViperConfig | None = None, amp: bool = False, channels_last: bool = False,
                 **fields: Any) -> None:
        super().__init__()
        self.config = config if config is not None else ViperConfig(**fields)
        c = self.config
        self.amp = amp
        self.tokenizer = TokenizerModel(TokenizerConfig(**c.tokenizer_config), channels_last=channels_last)
        self.tokenizer.requires_grad_(False)  # frozen: trained by main.py --method tokenizer
        grid, codes = self.tokenizer.config.latent_size, self.tokenizer.config.codes
        self.video = VideoTransformer(codes, grid, c.context, c.layers, c.heads, c.width, c.mlp_width, c.dropout)
        self.task_embedding = self._task_embedding()
        dim = grid * grid * self.tokenizer.config.code_dim
        self.novelty = Novelty(dim) if c.novelty_weight > 0 else None

    def _task_embedding(self) -> nn.Embedding | None:
        tasks = self.config.tasks or ()
        return nn.Embedding(len(tasks), self.config.width).to(self.tokenizer.device) if len(tasks) > 1 else None

    @classmethod
    def for_training(cls, config: ViperConfig, settings: ViperTraining | None = None, **kwargs: Any) -> "ViperModel":
        """The model on the tokenizer of ``settings.tokenizer`` (its config and weights)."""
        path = getattr(settings, "tokenizer", None)
        if not path:
            raise ValueError("viper models a tokenizer's codes: give --tokenizer CKPT (train one with "
                             "main.py --method tokenizer)")
        tokenizer = TokenizerModel.load(path)
        model = cls.from_config(ViperConfig(**{**asdict(config), "tokenizer_config": asdict(tokenizer.config)}),
                                **kwargs)
        model.tokenizer.load_state_dict(tokenizer.state_dict())
        return model

    @property
    def image_size(self) -> int:
        return self.tokenizer.image_size

    @property
    def device(self) -> torch.device:
        return self.tokenizer.device

    def summary(self) -> str:
        c = self.config
        return f"viper: {c.layers} x {c.width} transformer over {c.context} frames of {self.tokenizer.summary()}"

    def fit_data(self, dataset: VideoDataset) -> None:
        """The task embedding's rows: the training data's tasks."""
        if self.config.tasks is None:
            self.config.tasks = tuple(dataset.task_names)
            self.task_embedding = self._task_embedding()
        elif not set(dataset.task_names) <= set(self.config.tasks):
            raise ValueError(f"the data's tasks {dataset.task_names} are not all among the model's {self.config.tasks}")

    def task_row(self, task: str | None) -> torch.Tensor | None:
        """The task embedding row ``(1,)`` of a task name; ``None`` for a model without task embedding."""
        if self.task_embedding is None:
            return None
        if task not in self.config.tasks:
            raise ValueError(f"this viper model is conditioned on the task: name one of {self.config.tasks}, got {task!r}")
        return torch.tensor([self.config.tasks.index(task)], device=self.device)

    # ------------------------------------------------------------------ likelihoods
    def logits(self, codes: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Codes ``(B, T, g, g)`` (``T <= context``), task rows ``(B,)`` -> logits ``(B, T, g, g, K)``."""
        if codes.shape[1] > self.config.context:
            raise ValueError(f"a window holds at most {self.config.context} frames, got {codes.shape[1]}")
        return self.video(codes, None if task is None else self.task_embedding(task))

    def log_likelihood(self, codes: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T)``: ``ln p(z_t | z_{<t})`` of every frame of each window, the sum of its codes' log-likelihoods."""
        logp = self.logits(codes, task).float().log_softmax(-1)
        return logp.gather(-1, codes[..., None]).squeeze(-1).flatten(2).sum(-1)

    def windows(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """How :meth:`score_sequence` reads a trajectory of ``length`` frames: frame indices ``(W, T)`` of
        the windows scored and, for every frame, ``(L, 2)`` its (window, position). A frame with a full
        window behind it is the last of its own; an earlier one sits in the window that starts at its
        first predecessor (past the end, windows repeat the last frame: causal attention ignores it)."""
        c, s = self.config.context, self.config.frame_skip
        offsets = s * torch.arange(c)
        span = s * (c - 1)
        starts = list(range(min(s, length)))  # the windows of the first frames, one per residue mod s
        ends = list(range(max(span, 0), length))
        frames = [torch.clamp(r + offsets, max=length - 1) for r in starts] + [t - span + offsets for t in ends]
        where = torch.empty(length, 2, dtype=torch.int64)
        for t in range(length):
            if t >= span:
                where[t] = torch.tensor([len(starts) + t - span, c - 1])
            else:
                where[t] = torch.tensor([t % s, t // s])
        return torch.stack(frames), where

    def score_codes(self, codes: torch.Tensor, task: str | None = None, batch_size: int = 64) -> torch.Tensor:
        """Per-frame rewards ``(L,)`` of a trajectory's codes ``(L, g, g)`` (see :meth:`score_sequence`)."""
        frames, where = self.windows(len(codes))
        row = self.task_row(task)
        with inference_mode(self, self.device, self.amp):
            ll = torch.cat([self.log_likelihood(codes[chunk], None if row is None else row.expand(len(chunk)))
                            for chunk in frames.to(codes.device).split(batch_size)])
            reward = ll[where[:, 0], where[:, 1]]
            if self.novelty is not None:
                reward = reward + self.config.novelty_weight * self.novelty(self.tokenizer.lookup(codes))
        return reward.float()

    def score_sequence(self, frames: torch.Tensor, task: str | None = None, batch_size: int = 64) -> torch.Tensor:
        """VIPER's reward of every frame of a trajectory, uint8 ``(L, 3, S, S)`` -> ``(L,)``:
        ``ln p(x_t | x_{t-1}, ...)`` over up to ``context`` frames (+ ``beta`` x novelty); every frame is
        encoded once and all windows scored in batches of ``batch_size``."""
        return self.score_codes(self.tokenizer.encode(frames), task, batch_size)

    # ------------------------------------------------------------------ pretraining
    @staticmethod
    def sample_indices(config: ViperConfig, lengths: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A window ``(B, context)``: ``context`` frames ``frame_skip`` apart from a uniform start (in a
        trajectory shorter than the window, the last frame repeats)."""
        span = config.frame_skip * (config.context - 1)
        start = randint_below((lengths - span).clamp_min(1), generator)
        index = start[:, None] + config.frame_skip * torch.arange(config.context)
        return torch.minimum(index, lengths[:, None] - 1)

    def loss(self, frames: torch.Tensor, task: torch.Tensor | None) -> tuple[torch.Tensor, Metrics]:
        """Mean cross-entropy per code of windows of uint8 frames ``(B, T, 3, S, S)``."""
        b, t = frames.shape[:2]
        codes = self.tokenizer.encode(frames.flatten(0, 1)).view(b, t, *self.tokenizer.latent_shape)
        logits = self.logits(codes, task).float()
        nll = F.cross_entropy(logits.flatten(0, -2), codes.flatten())
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == codes).float().mean()
        return nll, {"accuracy": accuracy}  # the loss is the NLL per code, in nats

    def pretraining(self, dataset: VideoDataset, sampling: Sampling, settings: Any = None) -> Pretraining:
        sampler = TupleSampler(dataset, self.sample_indices, self.config, sampling.batch_size, sampling.balance_tasks,
                               sampling.seed)
        return Pretraining(WindowObjective(self, dataset), sampler, tuple_train_step, "windows",
                           f"{self.config.context}-frame-window", find_unused_parameters=False)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, dataset: VideoDataset, output_dir: str | os.PathLike | None = None, progress: bool = False,
                 **extra: Any) -> Evaluation:
        """Held-out per-frame log-likelihood (nats) of the expert trajectories and of the same frames in
        reverse order (a video model of the task should prefer the real order: ``order_gap`` > 0), per
        task and overall; with ``output_dir``, ``metrics.json`` and ``log_likelihood.png`` there."""
        rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for i in range(len(dataset)):
            task = dataset.task_names[dataset.task_ids[i]]
            codes = self.tokenizer.encode(dataset.trajectory(i))
            named = task if self.task_embedding is not None else None
            rows.setdefault(task, []).append((self.score_codes(codes, named).cpu().numpy(),
                                              self.score_codes(codes.flip(0), named).cpu().numpy()[::-1]))

        def summary(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
            forward, backward = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
            return {"log_likelihood": float(forward.mean()), "reversed_log_likelihood": float(backward.mean()),
                    "order_gap": float(forward.mean() - backward.mean()), "num_trajectories": len(pairs)}

        tasks = {t: summary(p) for t, p in sorted(rows.items())}
        overall = summary([p for t in rows for p in rows[t]])
        metrics = {k: overall[k] for k in ("log_likelihood", "order_gap")}
        metrics.update({f"order_gap/{t}": s["order_gap"] for t, s in tasks.items()})
        if output_dir is not None:
            out = Path(output_dir)
            atomic_write_json(out / "metrics.json", {"overall": overall, "tasks": tasks, **extra})
            plot_log_likelihood(rows, out / "log_likelihood.png")
        lines = [f"{'task':<20} {'n':>4} {'ln p / frame':>12} {'reversed':>10} {'order gap':>10}"]
        for task, s in [*tasks.items(), ("overall", overall)]:
            lines.append(f"{task:<20} {s['num_trajectories']:>4} {s['log_likelihood']:>12.2f} "
                         f"{s['reversed_log_likelihood']:>10.2f} {s['order_gap']:>10.2f}")
        return Evaluation(metrics, {"heldout_log_likelihood": overall["log_likelihood"],
                                    "heldout_order_gap": overall["order_gap"]}, "\n".join(lines))


def plot_log_likelihood(rows: dict[str, list[tuple[np.ndarray, np.ndarray]]], path: Path) -> Path:
    """One panel per task: the per-frame log-likelihood of each trajectory against normalised time,
    in the real order and reversed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.2), squeeze=False)
    for ax, (task, pairs) in zip(axes.flat, rows.items()):
        for j, (forward, backward) in enumerate(pairs):
            time = np.linspace(0, 1, len(forward))
            ax.plot(time, forward, color="C0", alpha=0.6, label="expert" if j == 0 else None)
            ax.plot(time, backward, color="C3", alpha=0.6, label="reversed" if j == 0 else None)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("normalised time")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("ln p(frame | previous frames)")
    axes.flat[0].legend(fontsize=7)
    return save_figure(fig, path, format="png", dpi=110)


class WindowObjective(nn.Module):
    """VIPER's training forward (what DDP wraps): the loss of windows of :class:`~.base.FrameTuples`,
    with each trajectory's task row read off the dataset."""

    def __init__(self, model: ViperModel, dataset: VideoDataset) -> None:
        super().__init__()
        self.model = model
        rows = [model.config.tasks.index(t) if model.task_embedding is not None else 0 for t in dataset.task_names]
        self.register_buffer("task_of_traj", torch.tensor(rows, device=model.device)[torch.as_tensor(dataset.task_ids)])

    def forward(self, frames: torch.Tensor, index: torch.Tensor, traj: torch.Tensor,
                length: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        task = self.task_of_traj[traj] if self.model.task_embedding is not None else None
        return self.model.loss(frames, task)


__all__ = ["Block", "Novelty", "VideoTransformer", "ViperConfig", "ViperModel", "ViperTraining", "WindowObjective"]

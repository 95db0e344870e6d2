"""What the video-reward methods share: the frame encoder, the model contract, scalar heads,
distances, and a sampler of frame tuples.

Every method's model is a :class:`RewardModel`: a backbone of :data:`video2reward.model.BACKBONES`
behind PROGRESSOR's input contract (uint8 frames ``(N, 3, S, S)``, ImageNet normalisation inside,
L2-normalised 128-d features, eval mode and no gradient in inference), plus

* ``encode(frames) -> (N, D)`` inference features, and ``reward_from_features(f_init, f_cur, f_goal)
  -> (N,)`` the value of each current frame (a ``(1, D)`` init or goal broadcasts against ``(N, D)``);
  ``reward_kind`` says how RL turns values into step rewards (:data:`VALUE` or :data:`DIFFERENCE`);
* for offline pretraining: ``sample_indices(config, lengths, generator) -> (B, K)`` (which K frames of
  a trajectory make one training tuple, in the method's column order) and ``loss(f, batch)`` on
  the tuples' features ``(B, K, 128)``.

A method's config is a dataclass (:class:`MethodConfig`) holding its name; its dict form rebuilds
the model (:meth:`RewardModel.from_config`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple

import torch
from torch import nn

from ..augment import AugmentConfig
from ..data import VideoDataset
from ..model import (BACKBONES, FEATURE_DIM, FEATURE_SCALE, IMAGENET_MEAN, IMAGENET_STD, ProgressModel, ResidualBlock,
                     autocast, build_backbone)
from ..triplets import TripletSampler, randint_below

VALUE = "value"  # the reward of a step is the value of the newly observed frame
DIFFERENCE = "difference"  # the reward of step t+1 is value(o_{t+1}) - value(o_t) (VIP)
REWARD_KINDS = (VALUE, DIFFERENCE)

Metrics = dict[str, torch.Tensor]  # scalar tensors, logged by the training loop


@dataclass
class MethodConfig:
    """Fields every method's model has; a method's config subclasses it and fixes ``method``."""

    method: str = ""  # the method's registry name; saved so that a checkpoint knows what to rebuild
    backbone: str = "resnet18_84"  # a key of video2reward.model.BACKBONES
    image_size: int | None = None  # default: the backbone's native size

    def __post_init__(self) -> None:
        expected = type(self).__dataclass_fields__["method"].default
        if self.method != expected:
            raise ValueError(f"{type(self).__name__} is the config of {expected!r}, got method={self.method!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONES)}")
        self.image_size = int(self.image_size or BACKBONES[self.backbone].image_size)


# ------------------------------------------------------------------------------------ networks
class FrameEncoder(nn.Module):
    """A backbone behind PROGRESSOR's input contract; ``features`` gives L2-normalised ``(N, 128)``.

    The frame checks, the feature computation and the inference context are
    :class:`~video2reward.model.ProgressModel`'s own functions, so every method reads frames the same way.
    """

    check_frames = ProgressModel.check_frames
    features = ProgressModel.features  # uint8 (N, 3, S, S) -> (N, 128) unit features, differentiable
    inference = ProgressModel.inference  # eval mode, no grad, bf16 autocast if amp; restores the mode

    def __init__(self, backbone: str, image_size: int, amp: bool = False, channels_last: bool = True) -> None:
        super().__init__()
        self._image_size = int(image_size)
        self.amp = amp
        self.channels_last = channels_last
        self.model = build_backbone(backbone)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device


class ScalarHead(nn.Module):
    """``(N, in_dim)`` unit features -> ``(N,)`` scalars: the features scaled by 16 (as PROGRESSOR's
    head), one residual MLP block, a linear output. Runs in fp32 even under autocast.

    ``zero_output``: the output layer starts at zero, so the untrained head gives 0 for every frame
    (a discriminator's ``logit D = 0``: ``D = 1/2``, no evidence either way) instead of a random
    function of the frame."""

    def __init__(self, in_dim: int = FEATURE_DIM, hidden: int = 256, zero_output: bool = False) -> None:
        super().__init__()
        self.block = ResidualBlock(in_dim, hidden)
        self.out = nn.Linear(hidden, 1)
        if zero_output:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        with autocast(f.device, enabled=False):
            return self.out(self.block(f.float() * FEATURE_SCALE)).squeeze(-1)


class LinearEmbedding(nn.Module):
    """``phi``: unit features ``(..., 128)`` -> an unnormalised embedding ``(..., dim)`` (a linear map,
    in fp32), for methods whose distances must grow beyond the unit sphere's 2."""

    def __init__(self, dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.linear = nn.Linear(FEATURE_DIM, dim)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        with autocast(f.device, enabled=False):
            return self.linear(f.float())


class RewardModel(FrameEncoder):
    """Base of the baselines' models (see the module doc for the contract)."""

    method: ClassVar[str]
    reward_kind: ClassVar[str] = VALUE
    config_class: ClassVar[type[MethodConfig]]

    def __init__(self, config: MethodConfig | None = None, amp: bool = False, channels_last: bool = True,
                 **fields: Any) -> None:
        if config is None:
            config = self.config_class(**fields)
        elif fields:
            raise TypeError(f"pass either a config or its fields, not both ({sorted(fields)})")
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        super().__init__(config.backbone, config.image_size, amp, channels_last)
        self.config = config

    @classmethod
    def from_config(cls, config: dict | MethodConfig, **kwargs: Any) -> "RewardModel":
        """The model of a config or of its dict form (``dataclasses.asdict``); ``kwargs``: ``amp``, ``channels_last``."""
        if not isinstance(config, MethodConfig):
            config = cls.config_class(**{"method": cls.method, **dict(config)})
        return cls(config, **kwargs)

    @property
    def feature_dim(self) -> int:
        """Width ``D`` of :meth:`encode`'s features."""
        return FEATURE_DIM

    # ------------------------------------------------------------------ inference
    def inference_features(self, frames: torch.Tensor) -> torch.Tensor:
        """What :meth:`encode` returns for one chunk (inside the inference context)."""
        return self.features(frames)

    def encode(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Inference features for uint8 frames ``(N, 3, S, S)`` -> ``(N, D)``, in chunks of ``batch_size``."""
        self.check_frames(frames)
        with self.inference():
            chunks = [self.inference_features(chunk) for chunk in frames.split(batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.feature_dim, device=self.device)

    def reward_from_features(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        """The value ``(N,)`` of each current frame given the episode's init and goal features."""
        f_init, f_cur, f_goal = torch.broadcast_tensors(f_init, f_cur, f_goal)
        with self.inference():
            return self.value(f_init, f_cur, f_goal).float()

    def value(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        """The method's per-frame value on features of equal shape ``(N, D)`` -> ``(N,)``."""
        raise NotImplementedError

    def reward(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """:meth:`reward_from_features` on uint8 frame batches ``(B, 3, S, S)``."""
        return self.reward_from_features(self.encode(init), self.encode(current), self.encode(goal))

    # ------------------------------------------------------------------ pretraining
    @staticmethod
    def sample_indices(config: MethodConfig, lengths: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Frame indices ``(B, K)`` of one training tuple per trajectory length in ``lengths``."""
        raise NotImplementedError

    def loss(self, f: torch.Tensor, batch: "FrameTuples") -> tuple[torch.Tensor, Metrics]:
        """The training objective on the tuples' features ``(B, K, 128)``: ``(loss, metrics)``."""
        raise NotImplementedError

    def fit_data(self, dataset: VideoDataset) -> None:
        """Settings read off the training data before the first step (none by default)."""


# ------------------------------------------------------------------------------------ distances
def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance ``|a - b|`` over the last dimension (gradient 0 where a == b)."""
    return torch.linalg.vector_norm(a.float() - b.float(), dim=-1)


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a - b|^2`` over the last dimension."""
    return (a.float() - b.float()).square().sum(-1)


def pairwise_squared_distance(x: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` squared distances between the rows of ``x`` ``(N, D)`` (clamped at 0)."""
    x = x.float()
    norms = x.square().sum(-1)
    return (norms[:, None] + norms[None, :] - 2 * x @ x.T).clamp_min(0)


# ------------------------------------------------------------------------------------ tuples
def ordered_pair(lengths: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, 2)`` frame indices ``i < j`` drawn uniformly among all pairs of each trajectory (``L >= 2``)."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    i = randint_below(lengths, generator)
    j = randint_below(lengths - 1, generator)
    j = j + (j >= i).long()
    return torch.stack([torch.minimum(i, j), torch.maximum(i, j)], 1)


def sorted_frames(lengths: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, k)`` distinct frame indices in increasing order, uniform over each trajectory
    (``k`` is capped at the shortest length)."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    k = int(min(k, int(lengths.min())))
    width = int(lengths.max())
    scores = torch.rand(len(lengths), width, generator=generator)
    scores = scores.masked_fill(torch.arange(width)[None] >= lengths[:, None], 2.0)  # past the end: never chosen
    return torch.sort(torch.topk(scores, k, dim=1, largest=False).indices, dim=1).values


class FrameTuples(NamedTuple):
    """A training batch of a baseline: ``B`` tuples of ``K`` frames, each tuple from one trajectory,
    in the column order of the method's ``sample_indices``."""

    frames: torch.Tensor  # (B, K, 3, S, S) uint8; a tuple's frames share one geometric augmentation
    index: torch.Tensor  # (B, K) int64 frame index inside the trajectory
    traj: torch.Tensor  # (B,) int64 trajectory index in the dataset
    length: torch.Tensor  # (B,) int64 trajectory length

    def to(self, device: torch.device | str) -> "FrameTuples":
        return FrameTuples(*(t.to(device, non_blocking=True) for t in self))


IndexRule = Callable[[MethodConfig, torch.Tensor, torch.Generator | None], torch.Tensor]


class TupleSampler(TripletSampler):
    """Draws :class:`FrameTuples`: trajectories as :class:`~video2reward.triplets.TripletSampler` draws
    them (task-balanced, batch ``step`` a pure function of ``(seed, rank, step)``), frames by the
    method's rule ``rule(config, lengths, generator) -> (B, K)``. ``rule`` and ``config`` must be
    picklable (a model's static ``sample_indices`` and its config dataclass are): batches may be
    prepared in worker processes."""

    def __init__(self, dataset: VideoDataset, rule: IndexRule, config: MethodConfig, batch_size: int = 64,
                 balance_tasks: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, batch_size, balance_tasks=balance_tasks, seed=seed)
        self.rule = rule
        self.config = config

    def sample(self, generator: torch.Generator | None = None) -> FrameTuples:
        traj = self.sample_trajectories(self.batch_size, generator)
        length = self.lengths[traj]
        index = self.rule(self.config, length, generator)
        return FrameTuples(self.dataset.gather(traj[:, None], index), index, traj, length)


# ------------------------------------------------------------------------------------ online updates
class OnlineUpdater:
    """What an online update of a reward model during RL owns, built as ``Updater(model, expert, config,
    amp=False, seed=0)``: the task's expert videos, an AdamW optimiser over :meth:`trained_parameters`
    (learning rate ``config.lr``), one ``torch.Generator`` for all its draws, and the random-resized
    crop (area ``config.crop_scale``) its frames get. Subclasses add ``update(init, current, goal) ->
    metrics``; :meth:`state_dict` holds the optimiser and the generator."""

    what: ClassVar[str] = "an online update"  # for error messages

    def __init__(self, model: nn.Module, expert: VideoDataset, config: Any, amp: bool = False, seed: int = 0) -> None:
        if len(expert) == 0:
            raise ValueError(f"{self.what} needs at least one expert trajectory")
        if expert.image_size != model.image_size:
            raise ValueError(f"expert frames are {expert.image_size}px but the reward model takes {model.image_size}px")
        self.model = model
        self.expert = expert
        self.config = config
        self.amp = amp
        self.optimizer = torch.optim.AdamW(self.trained_parameters(model), lr=config.lr)
        self.lengths = torch.as_tensor(expert.lengths, dtype=torch.int64)
        self.generator = torch.Generator().manual_seed(seed)
        self.augment_config = AugmentConfig(photometric=False, crop_scale=tuple(config.crop_scale))

    def trained_parameters(self, model: nn.Module) -> Any:
        """The parameters the update trains (all of the model's by default)."""
        return model.parameters()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


__all__ = ["DIFFERENCE", "FrameEncoder", "FrameTuples", "LinearEmbedding", "OnlineUpdater", "MethodConfig", "Metrics", "REWARD_KINDS", "RewardModel",
           "ScalarHead", "TupleSampler", "VALUE", "distance", "ordered_pair", "pairwise_squared_distance",
           "sorted_frames", "squared_distance"]

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

What the pretraining loop (:mod:`video2reward.train`) needs is the smaller contract of
:class:`PretrainedModel`, which :class:`RewardModel` extends: a registry name, a config
(:class:`PretrainedConfig`), :meth:`~PretrainedModel.fit_data`, :meth:`~PretrainedModel.pretraining` and
:meth:`~PretrainedModel.evaluate` (held-out metrics and figures; a reward model's is VOC). A trained
model that is not a reward, such as the frame tokenizer of VIPER (:mod:`.tokenizer`), is a
:class:`PretrainedModel` only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import AugmentConfig
from ..data import VideoDataset
from ..model import BACKBONES, FEATURE_DIM, FEATURE_SCALE, IMAGENET_MEAN, IMAGENET_STD, ResidualBlock, autocast, build_backbone
from ..evaluation import Evaluation
from ..reward_fn import FrameReward
from ..triplets import TripletSampler, randint_below

VALUE = "value"  # the reward of a step is the value of the newly observed frame
DIFFERENCE = "difference"  # the reward of step t+1 is value(o_{t+1}) - value(o_t) (VIP)
REWARD_KINDS = (VALUE, DIFFERENCE)
TRIPLETS = "triplets"  # a reward call reads (init, current, goal) frames: a RewardModel's encode / reward_from_features
SEQUENCES = "sequences"  # a reward call reads the episode's frames so far: a video model's score_sequence (VIPER)
SCORES = (TRIPLETS, SEQUENCES)

Metrics = dict[str, torch.Tensor]  # scalar tensors, logged by the training loop


@dataclass
class PretrainedConfig:
    """The field every trained model's config has; a model's config subclasses it and fixes ``method``."""

    method: str = ""  # the registry name; saved so that a checkpoint knows what to rebuild

    def __post_init__(self) -> None:
        expected = type(self).__dataclass_fields__["method"].default
        if self.method != expected:
            raise ValueError(f"{type(self).__name__} is the config of {expected!r}, got method={self.method!r}")


@dataclass
class MethodConfig(PretrainedConfig):
    """Fields every reward method's model has (the shared frame encoder's)."""

    backbone: str = "resnet18_84"  # a key of video2reward.model.BACKBONES
    image_size: int | None = None  # default: the backbone's native size

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONES)}")
        self.image_size = int(self.image_size or BACKBONES[self.backbone].image_size)


# ------------------------------------------------------------------------------------ networks
def check_frames(frames: torch.Tensor, size: int) -> None:
    """Raise a one-line error unless ``frames`` is uint8 ``(N, 3, size, size)``."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 in [0, 255] (the model normalises them), got {frames.dtype}")
    if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[2:] != (size, size):
        raise ValueError(f"frames must have shape (N, 3, {size}, {size}), got {tuple(frames.shape)}")


@contextlib.contextmanager
def inference_mode(module: nn.Module, device: torch.device, amp: bool = False) -> Iterator[None]:
    """Eval mode, no grad, bf16 autocast on ``device`` if ``amp``; restores the module's mode after."""
    was_training = module.training  # modes are set on the whole model: eval() walks every module,
    if was_training:                 # a cost per call that a model already in eval mode need not pay
        module.eval()
    try:
        with torch.no_grad(), autocast(device, amp):
            yield
    finally:
        if was_training:
            module.train()


class FrameEncoder(nn.Module):
    """A backbone of :data:`~video2reward.model.BACKBONES` behind the input contract every method
    shares: uint8 frames ``(N, 3, S, S)`` in [0, 255] at ``image_size``, ImageNet normalisation
    inside, L2-normalised float32 features ``(N, 128)``. Inference runs in eval mode (BatchNorm uses
    its running statistics) without gradients; :meth:`features` is for training and follows the
    module's mode. The backbone is the submodule ``model`` (the released checkpoints' name)."""

    def __init__(self, backbone: str, image_size: int, amp: bool = False, channels_last: bool = True) -> None:
        super().__init__()
        self._image_size = int(image_size)
        # bf16 autocast in the inference methods; off by default so scores are exact (fp32). Training
        # code sets its own; video2reward.precision decides where bf16 pays.
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

    def check_frames(self, frames: torch.Tensor) -> None:
        """Raise a one-line error unless ``frames`` is uint8 ``(N, 3, S, S)`` at the model's size."""
        check_frames(frames, self.image_size)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, S, S)`` -> L2-normalised float32 features ``(N, 128)`` (differentiable)."""
        self.check_frames(frames)
        x = frames.to(self.device, non_blocking=True).float()
        x = (x - self.pixel_mean) / self.pixel_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.normalize(self.model(x).float(), dim=-1)

    def inference(self) -> contextlib.AbstractContextManager[None]:
        """Eval mode (BatchNorm running stats), no grad, bf16 autocast if ``amp``; restores the mode after."""
        return inference_mode(self, self.device, self.amp)


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


class PretrainedModel(nn.Module):
    """What ``main.py --method`` trains: the contract of the pretraining loop (:mod:`video2reward.train`),
    which every trained model keeps, reward or not. A subclass declares ``method`` and
    ``config_class``; :meth:`__init_subclass__` refuses one that does not, or whose config names
    another model, where the class is defined (``abstract=True`` in the class statement exempts an
    intermediate base), then runs the kind's own :meth:`check_contract`.

    The loop builds it with :meth:`for_training` (``amp``, ``channels_last``), loads frames at its
    ``image_size``, calls :meth:`fit_data`, trains what :meth:`pretraining` returns with AdamW over
    ``parameters()``, and calls :meth:`evaluate` every ``--eval_every`` steps and after training."""

    # --- what every model declares
    method: ClassVar[str]  # the registry name, saved in checkpoints
    config_class: ClassVar[type[PretrainedConfig]]  # its config; the dict form rebuilds the model
    # --- what it may declare
    pretrainable: ClassVar[bool] = True  # trained on expert videos by `main.py --method`
    default_batch_size: ClassVar[int | None] = None  # samples per pretraining step without --batch_size
    training_class: ClassVar[type | None] = None  # its own pretraining settings (flags of TrainConfig)

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        name = getattr(cls, "method", None)
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(name, str) or not name:
            raise TypeError(f"{where}: a method declares its registry name (method = '...')")
        config_class = getattr(cls, "config_class", None)
        if not (isinstance(config_class, type) and issubclass(config_class, PretrainedConfig)):
            raise TypeError(f"{where}: config_class must be a PretrainedConfig dataclass, got {config_class!r}")
        named = config_class.__dataclass_fields__["method"].default
        if named != name:
            raise TypeError(f"{where}: config_class {config_class.__name__} is the config of {named!r}, not {name!r}")
        cls.check_contract(where)

    @classmethod
    def check_contract(cls, where: str) -> None:
        """What a kind of model must declare beyond its name and config (a ``TypeError`` naming ``where``)."""
        if cls.pretrainable and cls.pretraining is PretrainedModel.pretraining:
            raise TypeError(f"{where}: a pretrainable model defines pretraining")

    @classmethod
    def from_config(cls, config: dict | PretrainedConfig, **kwargs: Any) -> "PretrainedModel":
        """The model of a config or of its dict form (``dataclasses.asdict``); ``kwargs``: ``amp``, ``channels_last``."""
        if not isinstance(config, PretrainedConfig):
            config = cls.config_class(**{"method": cls.method, **dict(config)})
        return cls(config, **kwargs)

    @classmethod
    def for_training(cls, config: PretrainedConfig, settings: Any = None, **kwargs: Any) -> "PretrainedModel":
        """The fresh model a pretraining run trains (:meth:`from_config` by default); ``settings``: its
        :attr:`training_class` instance, where a model built on another trained one (VIPER on its
        tokenizer) finds that one."""
        return cls.from_config(config, **kwargs)

    def summary(self) -> str:
        """What the model is, in a few words (the training banner)."""
        return self.method

    def fit_data(self, dataset: VideoDataset) -> None:
        """Settings read off the training data before the first step (none by default)."""

    def pretraining(self, dataset: VideoDataset, sampling: "Sampling", settings: Any = None) -> "Pretraining":
        """What the model puts in the pretraining loop: its objective, sampler and step function.
        ``settings``: the model's :attr:`training_class` instance built from the run's flags."""
        raise NotImplementedError

    def evaluate(self, dataset: VideoDataset, output_dir: str | os.PathLike | None = None, progress: bool = False,
                 **extra: Any) -> "Evaluation":
        """Held-out metrics on ``dataset``; with ``output_dir``, also its files there (``metrics.json``
        with the ``extra`` entries, and its figures)."""
        raise NotImplementedError


class RewardModel(FrameEncoder, PretrainedModel, abstract=True):
    """Base of every reward method's model (the contract: the module doc): a :class:`PretrainedModel`
    on the shared frame encoder that scores frames. A subclass declares the class attributes below;
    :meth:`check_contract` refuses one that does not."""

    # --- what every method declares (besides method and config_class)
    config_class: ClassVar[type[MethodConfig]]
    scores: ClassVar[str] = TRIPLETS  # what a reward call reads: the frame encoder's interface scores triplets
    reward_kind: ClassVar[str] = VALUE  # how RL turns values into step rewards (:data:`REWARD_KINDS`)
    # --- what it may declare
    finetuner_class: ClassVar[type | None] = None  # its online fine-tuning during RL (an OnlineFinetuner)
    reward_class: ClassVar[type] = FrameReward  # its RL reward function (video2reward.reward_fn)
    predicts_progress: ClassVar[bool] = False  # predict_from_features gives N(mu, sigma) over progress
    goal_conditioned: ClassVar[bool] = True  # its value reads the goal frame (so subgoals can replace it: UVD)

    @classmethod
    def check_contract(cls, where: str) -> None:
        if not issubclass(cls.config_class, MethodConfig):
            raise TypeError(f"{where}: config_class must be a MethodConfig dataclass, got {cls.config_class!r}")
        if cls.scores != TRIPLETS or cls.reward_kind not in REWARD_KINDS:
            raise TypeError(f"{where}: scores must be one of {(TRIPLETS,)} and reward_kind one of {REWARD_KINDS}, got "
                            f"{cls.scores!r}, {cls.reward_kind!r} (a model scoring {SEQUENCES} is a PretrainedModel)")
        if cls.pretrainable and cls.pretraining is RewardModel.pretraining and (
                cls.sample_indices is RewardModel.sample_indices or cls.loss is RewardModel.loss):
            raise TypeError(f"{where}: a pretrainable method defines sample_indices and loss, or pretraining")

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

    def summary(self) -> str:
        return f"{self.method}: {self.config.backbone} at {self.image_size}px"

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

    def pretraining(self, dataset: VideoDataset, sampling: Sampling, settings: Any = None) -> "Pretraining":
        """The default: :class:`FrameTuples` drawn by :meth:`sample_indices`, :meth:`loss` on their
        features, :func:`tuple_train_step`."""
        sampler = TupleSampler(dataset, self.sample_indices, self.config, sampling.batch_size, sampling.balance_tasks,
                               sampling.seed)
        return Pretraining(TupleObjective(self), sampler, tuple_train_step, f"{self.method} tuples", "per-tuple")

    def evaluate(self, dataset: VideoDataset, output_dir: str | os.PathLike | None = None, progress: bool = False,
                 **extra: Any) -> "Evaluation":
        """VOC (and MAE, for a progress model) on ``dataset``; files: ``metrics.json`` and ``progress.png``
        (:func:`video2reward.evaluation.evaluation`)."""
        from ..evaluation import evaluation
        return evaluation(self, dataset, output_dir, progress, **extra)


class Sampling(NamedTuple):
    """What every method's pretraining sampler reads from the run's settings."""

    batch_size: int  # tuples (or triplets) per optimiser step and process
    balance_tasks: bool  # draw a task uniformly, then one of its trajectories
    seed: int  # batch ``step`` of process ``rank`` is a pure function of (seed, rank, step)


# ``step(objective, optimizer, batch, device, amp, grad_clip) -> metrics``: one optimiser step
StepFn = Callable[..., dict[str, float]]


class Pretraining(NamedTuple):
    """A method's part of the pretraining loop (:meth:`RewardModel.pretraining`)."""

    objective: nn.Module  # the training forward, what DDP wraps
    sampler: TripletSampler  # batch ``step`` of process ``rank``: ``sampler.generator_at(step, rank)``
    step: StepFn
    unit: str  # what a batch holds, for logs: "triplets", "tcn tuples", ...
    batches: str  # how batches are built, for the start banner
    find_unused_parameters: bool = True  # DDP: parts trained only online get no gradient here


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

    def with_frames(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "FrameTuples":
        """The batch with ``fn`` (an augmentation) applied to its frames."""
        return self._replace(frames=fn(self.frames))

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


# ------------------------------------------------------------------------------------ pretraining steps
def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> float:
    """Backward, clip the gradient norm of all optimised parameters at ``grad_clip`` (0: no clip),
    step; returns the norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    return float(grad_norm)


class TupleObjective(nn.Module):
    """A baseline's training forward (what DDP hooks): encode all frames of the tuples in one backbone
    call, then the method's loss on the features ``(B, K, 128)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, index: torch.Tensor, traj: torch.Tensor,
                length: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b, k = frames.shape[:2]
        f = self.model.features(frames.flatten(0, 1)).view(b, k, -1)
        return self.model.loss(f, FrameTuples(frames, index, traj, length))


def tuple_train_step(objective: nn.Module, optimizer: torch.optim.Optimizer, batch: FrameTuples,
                     device: torch.device, amp: bool = False, grad_clip: float = 0.0) -> dict[str, float]:
    """One AdamW step of a baseline on a (prepared) batch, under bf16 autocast if ``amp``; returns
    ``loss``, the method's metrics and ``grad_norm``."""
    batch = batch.to(device)
    objective.train()
    with autocast(device, amp):
        loss, metrics = objective(*batch)
    grad_norm = optimizer_step(optimizer, loss, grad_clip)
    return {"loss": loss.item(), **{k: float(v) for k, v in metrics.items()}, "grad_norm": grad_norm}


# ------------------------------------------------------------------------------------ online updates
class OnlineFinetuner:
    """What an online update of a reward model during RL owns, built as ``Updater(model, expert, config,
    amp=False, seed=0)``: the task's expert videos, an AdamW optimiser over :meth:`trained_parameters`
    (learning rate ``config.lr``), one ``torch.Generator`` for all its draws, and the random-resized
    crop (area ``config.crop_scale``) its frames get. Subclasses add ``update(init, current, goal) ->
    metrics``; :meth:`state_dict` holds the optimiser and the generator."""

    what: ClassVar[str] = "an online fine-tuning"  # for error messages
    config_class: ClassVar[type]  # its config dataclass, read from the RL config's ``finetune`` section
    config_keys: ClassVar[tuple[str, ...] | None] = None  # the ``finetune`` keys it reads (None: all its fields)

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

    @classmethod
    def config_from(cls, section: Mapping[str, Any]) -> Any:
        """Its config from the ``finetune`` section of an RL config: the keys it reads that the
        section has (sequences become tuples); the others keep the dataclass defaults."""
        keys = cls.config_keys or tuple(f.name for f in dataclasses.fields(cls.config_class))
        values = {k: section[k] for k in keys if k in section}
        return cls.config_class(**{k: v if isinstance(v, (str, int, float, bool)) or v is None else tuple(v)
                                   for k, v in values.items()})

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """Continue AdamW from a saved state (moments, step counts); the learning rate stays ``lr``."""
        try:
            self.optimizer.load_state_dict(state)
        except (ValueError, KeyError) as e:
            raise ValueError(f"the checkpoint's optimiser state does not fit the reward model: {e}") from e
        for param, slots in self.optimizer.state.items():  # load_state_dict checks counts, not shapes
            bad = [v for v in slots.values() if torch.is_tensor(v) and v.dim() and v.shape != param.shape]
            if bad:
                self.optimizer.state.clear()
                raise ValueError(f"the checkpoint's optimiser state does not fit the reward model: a moment of "
                                 f"shape {tuple(bad[0].shape)} for a parameter of shape {tuple(param.shape)}")
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


__all__ = ["DIFFERENCE", "Evaluation", "FrameEncoder", "FrameTuples", "LinearEmbedding", "MethodConfig", "Metrics",
           "OnlineFinetuner", "PretrainedConfig", "PretrainedModel", "REWARD_KINDS", "RewardModel", "SCORES", "SEQUENCES",
           "ScalarHead", "TRIPLETS", "TupleSampler", "VALUE", "check_frames", "distance", "inference_mode",
           "ordered_pair", "pairwise_squared_distance", "sorted_frames", "squared_distance"]

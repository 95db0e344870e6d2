"""The PROGRESSOR progress model.

``E(o_i, o_j, o_g) = N(mu, sigma^2)``: one visual backbone encodes each frame to a 128-d
L2-normalised feature, the three features are concatenated (384-d) and scaled by 16, two residual
MLP blocks project them to 256-d and two linear heads give ``mu`` and an unconstrained ``s`` with
``sigma = softplus(s; beta=0.693)``. The reward is ``mu - alpha * H(N(mu, sigma^2))``.

Input contract: frames are ``uint8`` tensors ``(B, 3, H, W)`` in [0, 255] with ``H = W =
model.image_size``; the model applies ImageNet normalisation itself. Inference methods
(:meth:`encode`, :meth:`predict`, :meth:`reward`, ...) always run in eval mode (BatchNorm uses its
running statistics) without gradients; :meth:`forward` and :meth:`features` are for training and
follow the module's current mode.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import ClassVar, Iterator

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.distributions import Normal

FEATURE_DIM = 128  # per-frame embedding size
FEATURE_SCALE = 16.0  # sqrt(256): the concatenated unit features are scaled before the MLP
SIGMA_BETA = 0.693  # softplus sharpness of the std head
DISTANCE_EPS = 0.01  # "distance" head: log(sqrt(d^2 + eps^2)), so equal frames give a finite log(eps)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


@dataclass(frozen=True)
class BackboneSpec:
    """How a named backbone is built; ``proj_hidden`` is the width of the first residual block."""

    image_size: int
    proj_hidden: int
    description: str


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18_84": BackboneSpec(84, 512, "released Meta-World model: ResNet-18, 3x3 stride-1 stem"),
    "resnet34_224": BackboneSpec(224, 2048, "released EPIC-KITCHENS model: ResNet-34, standard stem"),
    "resnet18": BackboneSpec(84, 512, "ResNet-18 with the standard stem (3.5x cheaper at 84 px)"),
    "convnet": BackboneSpec(84, 512, "4-layer conv net, global average pooling"),
    "convnet_spatial": BackboneSpec(84, 512, "4-layer conv net keeping a 6x6 feature map (where things are)"),
    "convnet_spatial_deep": BackboneSpec(84, 512, "convnet_spatial + a stride-1 conv on the 6x6 map (1.1-1.3x the cost)"),
}


# What the head's MLP sees, and its width. "concat": the three unit features side by side (the
# released models). "distance": the same + the log feature distances current-goal, current-init and
# init-goal, so nearly equal frames (a hand hovering at the goal) stay far apart on the log scale.
HEAD_INPUTS: dict[str, int] = {"concat": 3 * FEATURE_DIM, "distance": 3 * FEATURE_DIM + 3}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`ProgressModel`; saved beside the weights."""

    backbone: str = "resnet18_84"
    image_size: int | None = None  # default: the backbone's native size
    alpha: float = 0.4  # entropy weight of the reward
    proj_hidden: int | None = None  # default: the backbone's
    head: str = "concat"  # head input: a key of HEAD_INPUTS ("concat" is the released layout)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONES)}")
        if self.head not in HEAD_INPUTS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {sorted(HEAD_INPUTS)}")
        spec = BACKBONES[self.backbone]
        self.image_size = int(self.image_size or spec.image_size)
        self.proj_hidden = int(self.proj_hidden or spec.proj_hidden)
        self.alpha = float(self.alpha)


def _resnet_head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, FEATURE_DIM))


class ConvNet(nn.Module):
    """Small conv net (3x3 convs + BatchNorm + ReLU, mostly stride 2), ~30x cheaper than ``resnet18_84``.

    ``grid=1`` averages the last feature map away (what is in the image); ``grid=g`` pools it to
    ``g x g`` cells and flattens them, so the features also say *where* things are (at 84 px the
    last map of four stride-2 layers is 6 x 6, so ``grid=6`` keeps it whole). ``strides`` (default:
    all 2) lets a layer keep its input's resolution.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), grid: int = 1,
                 strides: tuple[int, ...] | None = None) -> None:
        super().__init__()
        strides = strides or (2,) * len(widths)
        if len(strides) != len(widths):
            raise ValueError(f"one stride per layer: {len(widths)} widths, {len(strides)} strides")
        layers: list[nn.Module] = []
        in_ch = 3
        for w, stride in zip(widths, strides):
            layers += [nn.Conv2d(in_ch, w, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True)]
            in_ch = w
        self.body = nn.Sequential(*layers)
        self.grid = grid
        self.fc = nn.Sequential(nn.Linear(in_ch * grid * grid, 512), nn.ReLU(inplace=True),
                                nn.Linear(512, FEATURE_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(self.body(x), self.grid), 1)
        # The fc layers run in fp32 even under autocast: bf16 would round each feature by up to 0.4 %,
        # a fifth of the smallest distance between frames of a hand hovering at the goal.
        with torch.autocast(x.device.type, enabled=False):
            return self.fc(x.float())


# The conv-net backbones, as ConvNet arguments (checkpoint.infer_config tells them apart by shapes).
CONVNETS: dict[str, dict] = {
    "convnet": dict(widths=(32, 64, 128, 256), grid=1),
    "convnet_spatial": dict(widths=(32, 64, 128, 128), grid=6),
    "convnet_spatial_deep": dict(widths=(32, 64, 128, 128, 128), strides=(2, 2, 2, 2, 1), grid=6),
}


def build_backbone(name: str) -> nn.Module:
    """A randomly initialised backbone mapping normalised images to ``(N, 128)``; nothing is downloaded."""
    if name == "resnet18_84":
        net = torchvision.models.resnet18(weights=None)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    elif name == "resnet18":
        net = torchvision.models.resnet18(weights=None)
    elif name == "resnet34_224":
        net = torchvision.models.resnet34(weights=None)
    elif name in CONVNETS:
        return ConvNet(**CONVNETS[name])
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    net.fc = _resnet_head()
    return net


class ResidualBlock(nn.Module):
    """``fc2(LayerNorm(ReLU(fc1(x)))) + skip(x)``."""

    def __init__(self, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.skip = nn.Linear(in_dim, hidden_dim) if in_dim != hidden_dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(F.relu(self.fc1(x)))) + self.skip(x)


def log_distance(a: torch.Tensor, b: torch.Tensor, eps: float = DISTANCE_EPS) -> torch.Tensor:
    """``(B, 1)`` smooth log Euclidean distance ``0.5 ln(|a - b|^2 + eps^2)`` (finite gradient at a == b)."""
    return 0.5 * torch.log((a - b).square().sum(-1, keepdim=True) + eps * eps)


def gaussian_entropy(sigma: torch.Tensor) -> torch.Tensor:
    """Differential entropy of ``N(mu, sigma^2)``: ``0.5 ln(2 pi e) + ln sigma``."""
    return _HALF_LOG_2PI_E + torch.log(sigma)


class ProgressModel(nn.Module):
    """PROGRESSOR: a Gaussian over task progress from (initial, current, goal) frames.

    Module names (``model``, ``proj.0``, ``proj.1``, ``fc_mu``, ``fc_log_var``) match the released
    checkpoints, which load with ``strict=True``. ``fc_log_var`` is not a log-variance: it gives the
    pre-softplus ``s``.
    """

    method: ClassVar[str] = "progressor"  # registry name (video2reward.methods)
    reward_kind: ClassVar[str] = "value"  # a step's reward is the value of its new frame

    def __init__(self, backbone: str = "resnet18_84", image_size: int | None = None, alpha: float = 0.4,
                 proj_hidden: int | None = None, head: str = "concat", amp: bool = False,
                 channels_last: bool = True) -> None:
        super().__init__()
        self.config = ModelConfig(backbone, image_size, alpha, proj_hidden, head)
        # bf16 autocast in the inference methods; off by default so scores are exact (fp32). Training
        # code sets its own; video2reward.precision decides where bf16 pays.
        self.amp = amp
        self.channels_last = channels_last
        self.model = build_backbone(backbone)
        hidden = self.config.proj_hidden
        self.proj = nn.ModuleList([ResidualBlock(HEAD_INPUTS[self.config.head], hidden), ResidualBlock(hidden, 256)])
        self.fc_mu = nn.Linear(256, 1)
        self.fc_log_var = nn.Linear(256, 1)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, config: dict | ModelConfig, **kwargs) -> "ProgressModel":
        cfg = asdict(config) if isinstance(config, ModelConfig) else dict(config)
        return cls(**cfg, **kwargs)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def alpha(self) -> float:
        return self.config.alpha

    @property
    def device(self) -> torch.device:
        return self.fc_mu.weight.device

    # ------------------------------------------------------------------ training path
    def check_frames(self, frames: torch.Tensor) -> None:
        """Raise a one-line error unless ``frames`` is uint8 ``(N, 3, S, S)`` at the model's size."""
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
        size = self.image_size
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 in [0, 255] (the model normalises them), got {frames.dtype}")
        if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[2:] != (size, size):
            raise ValueError(f"frames must have shape (N, 3, {size}, {size}), got {tuple(frames.shape)}")

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, S, S)`` -> L2-normalised float32 features ``(N, 128)`` (differentiable)."""
        self.check_frames(frames)
        x = frames.to(self.device, non_blocking=True).float()
        x = (x - self.pixel_mean) / self.pixel_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.normalize(self.model(x).float(), dim=-1)

    def head_parameters(self) -> list[nn.Parameter]:
        """The weights after the frame encoder (what :meth:`head` uses): refined alone, they leave
        every frame's features unchanged."""
        return [*self.proj.parameters(), *self.fc_mu.parameters(), *self.fc_log_var.parameters()]

    def head(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(B, 128)`` x 3 -> ``(mu, sigma)``, each ``(B,)`` float32."""
        # The head is tiny and precision-sensitive (softplus std): always fp32, even under autocast.
        with autocast(self.device, enabled=False):
            f_init, f_cur, f_goal = f_init.float(), f_cur.float(), f_goal.float()
            parts = [f_init * FEATURE_SCALE, f_cur * FEATURE_SCALE, f_goal * FEATURE_SCALE]
            if self.config.head == "distance":
                parts += [log_distance(f_cur, f_goal), log_distance(f_cur, f_init), log_distance(f_init, f_goal)]
            x = torch.cat(parts, dim=-1)
            for block in self.proj:
                x = block(x)
            mu = self.fc_mu(x).squeeze(-1)
            sigma = F.softplus(self.fc_log_var(x).squeeze(-1), beta=SIGMA_BETA)
        return mu, sigma.clamp_min(1e-6)

    def forward(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: the three frame batches are encoded in one backbone call."""
        b = init.shape[0]
        f = self.features(torch.cat([init, current, goal], dim=0))
        return self.head(f[:b], f[b:2 * b], f[2 * b:])

    # ------------------------------------------------------------------ inference path
    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode (BatchNorm running stats), no grad, bf16 autocast if ``amp``; restores the mode after."""
        was_training = self.training  # modes are set on the whole model: eval() walks every module,
        if was_training:               # a cost per call that a model already in eval mode need not pay
            self.eval()
        try:
            with torch.no_grad(), autocast(self.device, self.amp):
                yield
        finally:
            if was_training:
                self.train()

    def encode(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Inference features for uint8 frames ``(N, 3, S, S)`` -> ``(N, 128)``, in chunks of ``batch_size``."""
        self.check_frames(frames)
        with self.inference():
            return torch.cat([self.features(chunk) for chunk in frames.split(batch_size)]) if len(frames) else \
                torch.zeros(0, FEATURE_DIM, device=self.device)

    def predict_from_features(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> Normal:
        """The cheap head on cached features; batch shape ``(B,)``. Single features broadcast."""
        f_init, f_cur, f_goal = torch.broadcast_tensors(f_init, f_cur, f_goal)
        with self.inference():
            mu, sigma = self.head(f_init, f_cur, f_goal)
        return Normal(mu, sigma)

    def predict(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor) -> Normal:
        """``N(mu, sigma^2)`` over progress for uint8 frame batches ``(B, 3, S, S)``; batch shape ``(B,)``."""
        if not (init.shape[0] == current.shape[0] == goal.shape[0]):
            raise ValueError(f"init/current/goal batch sizes differ: {init.shape[0]}, {current.shape[0]}, {goal.shape[0]}")
        b = init.shape[0]
        f = self.encode(torch.cat([init, current, goal], dim=0))
        return self.predict_from_features(f[:b], f[b:2 * b], f[2 * b:])

    def reward_from_normal(self, dist: Normal, alpha: float | None = None) -> torch.Tensor:
        """``mu - alpha * H``; ``alpha`` defaults to the model's configured value."""
        alpha = self.alpha if alpha is None else float(alpha)
        return dist.loc - alpha * gaussian_entropy(dist.scale)

    def reward(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """PROGRESSOR reward ``(B,)`` for uint8 frame batches."""
        return self.reward_from_normal(self.predict(init, current, goal), alpha)

    def reward_from_features(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor,
                             alpha: float | None = None) -> torch.Tensor:
        return self.reward_from_normal(self.predict_from_features(f_init, f_cur, f_goal), alpha)

    def compute_reward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reward for a dict with ``init``, ``current`` and ``goal`` uint8 frame batches."""
        return self.reward(batch["init"], batch["current"], batch["goal"])


def autocast(device: torch.device | str, enabled: bool = True):
    """bf16 autocast on CPU and CUDA (a no-op context when disabled or unsupported)."""
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda"):
        enabled = False
    return torch.autocast(device_type=device_type if device_type in ("cpu", "cuda") else "cpu",
                          dtype=torch.bfloat16, enabled=enabled)

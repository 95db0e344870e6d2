"""The frame backbones every reward method builds on (:data:`BACKBONES`), and the pieces their heads share.

A backbone maps ImageNet-normalised images to ``(N, 128)`` features; the methods
(:mod:`video2reward.methods`) wrap one in :class:`~video2reward.methods.base.FrameEncoder`, which
owns the input contract (uint8 frames, normalisation inside, L2-normalised features).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

FEATURE_DIM = 128  # per-frame embedding size
FEATURE_SCALE = 16.0  # sqrt(256): the concatenated unit features are scaled before the MLP
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def autocast(device: torch.device | str, enabled: bool = True):
    """bf16 autocast on CPU and CUDA (a no-op context when disabled or unsupported)."""
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda"):
        enabled = False
    return torch.autocast(device_type=device_type if device_type in ("cpu", "cuda") else "cpu",
                          dtype=torch.bfloat16, enabled=enabled)

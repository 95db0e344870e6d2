"""Batched augmentation of uint8 frames with per-sample random parameters.

PROGRESSOR augments a triplet in two stages: photometric changes drawn independently for every
frame (ColorJitter(0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale with p=0.2, Gaussian blur with
sigma in [0.1, 2]), then ONE geometric transform shared by the frames of the triplet (a
RandomResizedCrop back to the model size, scale (0.8, 1) for Meta-World and (0.2, 1) plus a
horizontal flip for EPIC-KITCHENS), so the frames stay spatially comparable. :data:`SHIFT` is the
DrQ-v2-style alternative: a whole-pixel random translation (no resampling blur).

torchvision's transforms draw one set of parameters per call, i.e. per batch. Here every frame (or
group, for the geometric part) gets its own parameters, all drawn from an explicit
``torch.Generator`` so a batch is reproducible, and the whole pipeline is three batched linear
maps: the colour ops are one affine colour map per frame, and blur + crop + flip are separable, so
they become a row matrix ``A (S, H)`` and a column matrix ``C (S, W)`` per frame:
``out = clip(A (M x + t) C^T)``. Differences from torchvision, all for that speed: the jitter ops
are composed without clipping in between (clipped once at the end), hue is rotated in YIQ space
rather than shifted in HSV, the order of the four jitter ops is shuffled once per call (not per
frame), and an out-of-range crop aspect is clamped instead of re-drawn.

Evaluation needs no transform here: the frame store already holds frames resized and centre-cropped
to the model size (see :mod:`video2reward.data`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LUMA = (0.299, 0.587, 0.114)
# RGB -> YIQ; a hue shift is a rotation of the (I, Q) chroma plane.
_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of :func:`augment`; the defaults are the Meta-World recipe."""

    photometric: bool = True  # False: geometric transform only
    brightness: float = 0.4  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1  # hue shift drawn from [-h, h] (fraction of the colour circle)
    jitter_p: float = 0.8  # probability that a frame is colour-jittered
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # Gaussian blur sigma range, in pixels of the input
    blur_p: float = 1.0
    crop_scale: tuple[float, float] = (0.8, 1.0)  # RandomResizedCrop area fraction
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect ratio range
    hflip_p: float = 0.0
    shift: int = 0  # extra random translation of up to this many input pixels (integer, border replicated)


METAWORLD = AugmentConfig()
EPIC = AugmentConfig(crop_scale=(0.2, 1.0), hflip_p=0.5)
CROP_ONLY = AugmentConfig(photometric=False)  # RL push-back refinement on replay frames
# DrQ-style random shift: whole-pixel translations only, so frames are not resampled (no blur)
SHIFT = AugmentConfig(photometric=False, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), shift=4)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _bernoulli(n: int, p: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator) < p


# ------------------------------------------------------------------------------------ colour
def hue_matrix(shift: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` RGB matrices rotating hue by ``shift`` (fraction of the colour circle); luma is kept."""
    yiq = torch.tensor(_YIQ, dtype=torch.float32)
    angle = 2 * math.pi * shift.float()
    rot = torch.zeros(len(shift), 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    return torch.linalg.inv(yiq) @ rot @ yiq


def color_transform(mean_rgb: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame colour jitter (probability ``jitter_p``) then random grayscale as one affine colour
    map ``y = M x + t``; ``mean_rgb (N, 3)`` is each frame's mean colour (for the contrast blend).

    Brightness (scale), contrast (blend with the frame's mean luma), saturation (blend with the
    pixel's luma), hue (rotation in YIQ space) and grayscale are all linear in the colour, so
    their composition, in an order shuffled once per call, is exact up to clipping.
    Returns ``M (N, 3, 3)`` and ``t (N, 3)`` (``t`` in the units of ``mean_rgb``).
    """
    n = mean_rgb.shape[0]
    mean_rgb = mean_rgb.float().cpu()
    eye = torch.eye(3).expand(n, 3, 3)
    luma = torch.tensor(LUMA)
    to_luma = torch.ones(3, 1) * luma[None]  # every channel <- the pixel's luma
    m, t = eye.clone(), torch.zeros(n, 3)
    on = _bernoulli(n, cfg.jitter_p, generator).float().view(n, 1, 1)
    b = _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, generator).view(n, 1, 1)
    c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, generator).view(n, 1, 1)
    s = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, generator).view(n, 1, 1)
    h = _uniform(n, -cfg.hue, cfg.hue, generator)
    for op in torch.randperm(4, generator=generator).tolist():
        op_t = torch.zeros(n, 3)
        if op == 0:
            op_m = b * eye
        elif op == 1:
            mean_luma = ((m @ mean_rgb[:, :, None]).squeeze(-1) + t) @ luma
            op_m, op_t = c * eye, (1 - c.view(n, 1)) * mean_luma[:, None].expand(n, 3)
        elif op == 2:
            op_m = s * eye + (1 - s) * to_luma
        else:
            op_m = hue_matrix(h)
        m, t = op_m @ m, (op_m @ t[:, :, None]).squeeze(-1) + op_t
    m, t = on * m + (1 - on) * eye, on.view(n, 1) * t
    gray = _bernoulli(n, cfg.grayscale_p, generator).float().view(n, 1, 1)
    m = gray * (to_luma @ m) + (1 - gray) * m
    t = gray.view(n, 1) * (t @ to_luma.T) + (1 - gray.view(n, 1)) * t
    return m, t


# ------------------------------------------------------------------------------------ geometry
def blur_matrix(sigma: torch.Tensor, size: int, radius: int) -> torch.Tensor:
    """``(N, size, size)`` matrices of a 1-D Gaussian blur with reflect padding; ``sigma <= 0`` is
    the identity. Rows sum to one."""
    n = sigma.shape[0]
    radius = max(0, min(radius, size - 1))
    offs = torch.arange(-radius, radius + 1)
    safe = sigma.float().clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (offs[None].float() / safe) ** 2)
    k = torch.where(sigma[:, None] > 0, k, (offs[None] == 0).float())
    k = k / k.sum(1, keepdim=True)
    idx = (torch.arange(size)[:, None] + offs[None]).abs()
    idx = torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)  # reflect
    mat = torch.zeros(n, size, size)
    mat.scatter_add_(2, idx[None].expand(n, -1, -1), k[:, None, :].expand(-1, size, -1).contiguous())
    return mat


def resample_matrix(scale: torch.Tensor, center: torch.Tensor, size_out: int, size_in: int) -> torch.Tensor:
    """``(N, size_out, size_in)`` bilinear resampling matrices along one axis: output pixel ``i``
    reads the input at normalised coordinate ``scale * x_i + center`` (``x_i`` the pixel centre in
    [-1, 1], as ``grid_sample(align_corners=False)``); negative ``scale`` flips. Border-clamped."""
    x_out = (2 * torch.arange(size_out, dtype=torch.float32) + 1) / size_out - 1
    x_in = scale.float()[:, None] * x_out[None] + center.float()[:, None]
    u = (((x_in + 1) * size_in - 1) / 2).clamp(0, size_in - 1)
    u0 = torch.floor(u).clamp(max=max(size_in - 2, 0))
    w1 = u - u0
    u0 = u0.long()
    mat = torch.zeros(len(scale), size_out, size_in)
    mat.scatter_add_(2, u0[..., None], (1 - w1)[..., None])
    mat.scatter_add_(2, (u0 + 1).clamp(max=size_in - 1)[..., None], w1[..., None])
    return mat


def crop_params(n: int, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` RandomResizedCrop(+flip) draws as ``(n, 4)`` rows ``(scale_x, center_x, scale_y, center_y)``
    in normalised coordinates (a crop of relative width ``w`` centred at ``cx`` reads ``w x + cx``;
    a flip negates ``scale_x``)."""
    area = _uniform(n, *cfg.crop_scale, generator)
    ratio = torch.exp(_uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator))
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    flip = _bernoulli(n, cfg.hflip_p, generator)
    return torch.stack([torch.where(flip, -w, w), cx, h, cy], 1)


# ------------------------------------------------------------------------------------ pipeline
def augment(frames: torch.Tensor, cfg: AugmentConfig = METAWORLD, size: int | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment uint8 frames; returns uint8 frames at ``size`` (default: the input size).

    ``frames`` is ``(G, K, 3, H, W)``: the ``K`` frames of a group (a triplet, or a trajectory's
    frames in shared-embedding training) share one geometric transform while every frame gets its
    own photometric parameters. A ``(N, 3, H, W)`` batch is ``N`` groups of one frame.
    Runs on the frames' device; random draws come from ``generator`` (a CPU generator).
    """
    if frames.dtype != torch.uint8:
        raise TypeError(f"augment expects uint8 frames, got {frames.dtype}")
    single = frames.dim() == 4
    if single:
        frames = frames[:, None]
    if frames.dim() != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (N, 3, H, W) or (G, K, 3, H, W), got {tuple(frames.shape)}")
    g, k, _, hgt, wid = frames.shape
    n, size = g * k, int(size or hgt)
    x = frames.reshape(n, 3, hgt, wid).float()
    if cfg.photometric:
        m, t = color_transform(x.mean((2, 3)), cfg, generator)
        x = torch.einsum("nij,njhw->nihw", m.to(x), x).add_(t.to(x)[:, :, None, None]).clamp_(0, 255)
    crop = crop_params(g, cfg, generator)
    if cfg.shift > 0:
        offsets = torch.randint(-cfg.shift, cfg.shift + 1, (g, 2), generator=generator).float()
        crop[:, 1] += 2 * offsets[:, 0] / wid
        crop[:, 3] += 2 * offsets[:, 1] / hgt
    crop = crop.repeat_interleave(k, 0)
    rows = resample_matrix(crop[:, 2], crop[:, 3], size, hgt)
    cols = resample_matrix(crop[:, 0], crop[:, 1], size, wid)
    if cfg.photometric and cfg.blur_p > 0:
        sigma = _uniform(n, *cfg.blur_sigma, generator)
        sigma = torch.where(_bernoulli(n, cfg.blur_p, generator), sigma, torch.zeros_like(sigma))
        radius = int(math.ceil(2 * cfg.blur_sigma[1]))
        rows = rows @ blur_matrix(sigma, hgt, radius)
        cols = cols @ blur_matrix(sigma, wid, radius)
    y = rows.to(x)[:, None] @ x @ cols.to(x).transpose(1, 2)[:, None]
    out = y.round_().clamp_(0, 255).to(torch.uint8).view(g, k, 3, size, size)
    return out[:, 0] if single else out


__all__ = ["AugmentConfig", "CROP_ONLY", "EPIC", "LUMA", "METAWORLD", "SHIFT", "augment", "blur_matrix",
           "color_transform", "crop_params", "hue_matrix", "resample_matrix"]

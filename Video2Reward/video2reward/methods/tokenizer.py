"""The frame tokenizer of VIPER (and of Diffusion Reward): a VQ-GAN-style autoencoder that turns a
frame into a grid of discrete codes and back. It is a trained model, not a reward
(:class:`~.base.PretrainedModel`): ``main.py --method tokenizer`` trains it, the video models read its codes.

* **Input.** uint8 frames ``(N, 3, S, S)`` at ``image_size`` (the data's size: 84 px for the Meta-World
  demos), resized inside the model to ``resolution`` (64 px, the official size) by antialiased
  bilinear interpolation and scaled to [-1, 1]. Resizing inside lets the RL loop, which renders 84 px,
  feed its frames as they are.
* **Encoder.** A 3x3 conv, then per resolution level ``res_blocks`` residual blocks (GroupNorm, SiLU,
  two 3x3 convs) and a stride-2 conv to the next level's width, a middle block (residual, one
  self-attention over the latent grid, residual), a 3x3 conv to ``code_dim``: ``(N, code_dim, g, g)``
  with ``g = latent_size``.
* **Quantiser.** Each latent vector becomes its nearest codebook vector (Euclidean). The encoder gets
  the straight-through gradient and the commitment loss ``beta |z_e - sg(z_q)|^2``; the codebook is
  not trained by gradient but by exponential moving averages of the vectors assigned to each code
  (``ema_decay``, the k-means update of VQ-VAE's appendix), and a code whose average use falls below
  ``dead_threshold`` vectors per step is restarted on a random latent vector of the batch. Both keep
  the codebook in use (the official code trains it by gradient with a codebook loss).
* **Decoder.** The mirror image: a 3x3 conv, the middle block, per level ``res_blocks`` residual
  blocks and a nearest-neighbour x2 upsampling + 3x3 conv, GroupNorm, SiLU, a 3x3 conv to RGB.
* **Loss.** ``L1(x, x_hat) + gradient_weight * L1(grad x, grad x_hat) + commitment``, where ``grad``
  is the finite difference along x and along y: a cheap "perceptual-lite" term that keeps edges
  sharp where L1 alone blurs them (the official code uses LPIPS, a VGG net too slow for a 2-core CPU).
  With ``adversarial_weight > 0`` a patch discriminator adds a hinge GAN loss (off by default: it
  costs about another encoder per step); it is trained in the same optimiser step, its own loss
  reaching only its weights and the generator's term reaching only the autoencoder's.

Evaluation (:meth:`TokenizerModel.evaluate`): held-out reconstruction PSNR at ``resolution`` (uint8
original resized as the model sees it vs uint8 reconstruction, mean over frames), the share of codes
used and the codes' perplexity, per task and overall, and ``reconstructions.png`` (originals above
their reconstructions). Sizes against the official ``viper_rl`` DMC configuration: docs/baselines.md.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import VideoDataset
from ..io import atomic_path, atomic_write_json
from ..triplets import randint_below
from .base import (Evaluation, Metrics, PretrainedConfig, PretrainedModel, Pretraining, Sampling,
                   TupleSampler, check_frames, inference_mode, tuple_train_step)

GROUPS = 8  # GroupNorm groups; every width is a multiple of it


@dataclass
class TokenizerConfig(PretrainedConfig):
    """Everything needed to rebuild a :class:`TokenizerModel`; saved beside the weights."""

    method: str = "tokenizer"
    image_size: int | None = None  # size of the frames it reads (the data's); default: resolution
    resolution: int = 64  # the autoencoder's input, frames resized to it inside (official 64)
    latent_size: int = 8  # side of the code grid (official 8 x 8 at 64 px); resolution / latent_size a power of 2
    codes: int = 256  # codebook size (official 256)
    code_dim: int = 64  # width of a codebook vector (official 64)
    channels: tuple[int, ...] = (16, 32, 64, 64)  # width per level, resolution down to latent_size (official 128 x (1, 2, 2, 2))
    res_blocks: int = 1  # residual blocks per level (official 1 in the encoder, 2 in the decoder)
    commitment: float = 0.25  # beta of the commitment loss (official 0.25)
    ema_decay: float = 0.99  # decay of the codebook's moving averages
    dead_threshold: float = 1.0  # restart a code used by fewer vectors per step than this, on average
    gradient_weight: float = 1.0  # weight of the image-gradient L1 term (the perceptual-lite loss)
    adversarial_weight: float = 0.0  # weight of the generator's hinge GAN loss; 0: no discriminator (official 0.1)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.channels = tuple(int(c) for c in self.channels)
        self.image_size = int(self.image_size or self.resolution)
        ratio = self.resolution // self.latent_size if self.latent_size > 0 else 0
        if ratio < 1 or ratio * self.latent_size != self.resolution or ratio & (ratio - 1):
            raise ValueError(f"resolution / latent_size must be a power of 2, got {self.resolution} / {self.latent_size}")
        if len(self.channels) != int(math.log2(ratio)) + 1:
            raise ValueError(f"channels needs one width per level ({int(math.log2(ratio)) + 1} from {self.resolution} "
                             f"to {self.latent_size} px), got {self.channels}")
        if any(c <= 0 or c % GROUPS for c in (*self.channels, self.code_dim)):
            raise ValueError(f"channels and code_dim must be positive multiples of {GROUPS}, got {self.channels}, "
                             f"{self.code_dim}")
        if self.codes < 2 or self.res_blocks < 0 or not 0 < self.ema_decay < 1:
            raise ValueError(f"tokenizer needs codes >= 2, res_blocks >= 0, 0 < ema_decay < 1; got {self.codes}, "
                             f"{self.res_blocks}, {self.ema_decay}")
        for name in ("commitment", "dead_threshold", "gradient_weight", "adversarial_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


# ------------------------------------------------------------------------------------ networks
def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels)


class ResBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))))))`` at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AttentionBlock(nn.Module):
    """One single-head self-attention over the positions of a feature map, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=-1)  # (N, hw, C) each
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(1, 2).reshape(n, c, h, w))


def middle(channels: int) -> nn.Sequential:
    return nn.Sequential(ResBlock(channels), AttentionBlock(channels), ResBlock(channels))


def encoder(config: TokenizerConfig) -> nn.Sequential:
    """uint8-scaled frames ``(N, 3, R, R)`` in [-1, 1] -> latents ``(N, code_dim, g, g)``."""
    ch, layers = config.channels, [nn.Conv2d(3, config.channels[0], 3, padding=1)]
    for i, c in enumerate(ch):
        layers += [ResBlock(c) for _ in range(config.res_blocks)]
        if i + 1 < len(ch):
            layers.append(nn.Conv2d(c, ch[i + 1], 3, stride=2, padding=1))
    return nn.Sequential(*layers, middle(ch[-1]), norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], config.code_dim, 3, padding=1))


def decoder(config: TokenizerConfig) -> nn.Sequential:
    """Quantised latents ``(N, code_dim, g, g)`` -> images ``(N, 3, R, R)`` (about [-1, 1])."""
    ch, layers = config.channels, [nn.Conv2d(config.code_dim, config.channels[-1], 3, padding=1), middle(config.channels[-1])]
    for i in reversed(range(len(ch))):
        layers += [ResBlock(ch[i]) for _ in range(config.res_blocks)]
        if i > 0:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i], ch[i - 1], 3, padding=1)]
    return nn.Sequential(*layers, norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1))


class PatchDiscriminator(nn.Module):
    """Images ``(N, 3, R, R)`` -> a logit per patch ``(N, 1, R/4, R/4)`` (PatchGAN, three convs)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(width, 2 * width, 4, 2, 1), norm(2 * width), nn.LeakyReLU(0.2),
                                 nn.Conv2d(2 * width, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Codebook(nn.Module):
    """``codes`` vectors of ``dim``, learnt by moving averages (no gradient), with dead-code restarts.

    Buffers: ``vectors`` ``(K, D)``, and the moving averages ``count`` ``(K,)`` (vectors per step
    assigned to each code) and ``total`` ``(K, D)`` (their sum), ``vectors = total / count``. Every
    code starts dead (count 0), so the first training step places all of them on latent vectors."""

    def __init__(self, codes: int, dim: int, decay: float, dead_threshold: float) -> None:
        super().__init__()
        self.decay, self.dead_threshold = decay, dead_threshold
        self.register_buffer("vectors", torch.randn(codes, dim) * 0.1)
        self.register_buffer("count", torch.zeros(codes))
        self.register_buffer("total", self.vectors.clone())
        self.restarted = 0  # codes restarted by the last update (a training metric)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices ``(M,)`` of the nearest code of every row of ``z`` ``(M, D)``."""
        z = z.float()
        d = z.square().sum(1, keepdim=True) - 2 * z @ self.vectors.T + self.vectors.square().sum(1)[None]
        return d.argmin(1)

    @torch.no_grad()
    def update(self, z: torch.Tensor, index: torch.Tensor) -> None:
        """One moving-average step on the batch's latents ``z`` ``(M, D)`` and their codes, then the
        restart of dead codes on random rows of ``z``."""
        z = z.float()
        k = len(self.vectors)
        self.count.mul_(self.decay).add_(torch.bincount(index, minlength=k).float(), alpha=1 - self.decay)
        self.total.mul_(self.decay).index_add_(0, index, z, alpha=1 - self.decay)
        alive = self.count >= self.dead_threshold
        self.vectors.copy_(torch.where(alive[:, None], self.total / self.count.clamp_min(1e-6)[:, None], self.vectors))
        dead = (~alive).nonzero().squeeze(1)
        if len(dead):
            rows = z[torch.randint(len(z), (len(dead),), device=z.device)]
            self.vectors[dead] = rows
            self.total[dead] = rows * self.dead_threshold
            self.count[dead] = self.dead_threshold
        self.restarted = len(dead)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents ``(N, D, g, g)`` -> (straight-through quantised latents ``(N, D, g, g)``, codes
        ``(N, g, g)``, commitment ``mean |z - sg(z_q)|^2``); updates the codebook in training mode."""
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        index = self.nearest(flat.detach())
        z_q = self.vectors[index].view(n, h, w, d).permute(0, 3, 1, 2).to(z.dtype)
        commitment = (z.float() - z_q.detach().float()).square().mean()
        if self.training:
            self.update(flat.detach(), index)
        return z + (z_q - z).detach(), index.view(n, h, w), commitment


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 [0, 255]."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite differences of ``(N, C, H, W)`` images along y and along x."""
    return x[:, :, 1:] - x[:, :, :-1], x[:, :, :, 1:] - x[:, :, :, :-1]


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR ``(N,)`` in dB between uint8 images ``(N, 3, H, W)`` (capped at 100 dB for equal images)."""
    mse = (a.float() - b.float()).square().flatten(1).mean(1)
    return (10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-10))).clamp_max(100.0)


def perplexity(counts: torch.Tensor) -> float:
    """``exp(entropy)`` of a histogram of codes: the number of equally used codes it amounts to."""
    p = counts.float() / counts.sum().clamp_min(1)
    return float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))


# ------------------------------------------------------------------------------------ the model
class TokenizerModel(PretrainedModel):
    """Frames <-> codes ``(N, g, g)`` in ``[0, codes)`` (the module doc). Inference methods
    (:meth:`encode`, :meth:`decode`, :meth:`reconstruct`, :meth:`lookup`) run in eval mode without
    gradients; :meth:`loss` is for training."""

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TokenizerModel":
        """A tokenizer from the checkpoint ``main.py --method tokenizer`` wrote (eval mode), read
        without the checkpoint registry (that module imports this package)."""
        try:
            obj = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ValueError(f"--tokenizer {path}: not a readable checkpoint ({type(exc).__name__})") from None
        method = obj.get("method") if isinstance(obj, dict) else None
        if method != cls.method:
            raise ValueError(f"--tokenizer {path}: holds a {method or 'released PROGRESSOR'} model, not a tokenizer")
        model = cls.from_config(dict(obj["config"]))
        model.load_state_dict(obj["state_dict"], strict=True)
        return model.eval()

    method = "tokenizer"
    config_class = TokenizerConfig
    default_batch_size = 32  # frames per step

    def __init__(self, config: TokenizerConfig | None = None, amp: bool = False, channels_last: bool = False,
                 **fields: Any) -> None:
        super().__init__()
        self.config = config if config is not None else TokenizerConfig(**fields)
        self.amp = amp
        self.channels_last = channels_last  # NHWC convolutions (faster on CPU)
        self.encoder = encoder(self.config)
        self.codebook = Codebook(self.config.codes, self.config.code_dim, self.config.ema_decay,
                                 self.config.dead_threshold)
        self.decoder = decoder(self.config)
        self.discriminator = PatchDiscriminator() if self.config.adversarial_weight > 0 else None
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return self.codebook.vectors.device

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.config.latent_size, self.config.latent_size

    def summary(self) -> str:
        c = self.config
        return (f"tokenizer: {c.codes} codes x {c.code_dim}, {c.latent_size}x{c.latent_size} grid at {c.resolution}px "
                f"(from {c.image_size}px frames)")

    # ------------------------------------------------------------------ the autoencoder
    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(N, 3, S, S)`` -> float ``(N, 3, R, R)`` in [-1, 1] on the model's device."""
        check_frames(frames, self.image_size)
        x = frames.to(self.device, non_blocking=True).float()
        if self.image_size != self.config.resolution:
            x = F.interpolate(x, size=self.config.resolution, mode="bilinear", antialias=True, align_corners=False)
        x = x / 127.5 - 1
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images ``(N, 3, R, R)`` in [-1, 1] -> (quantised latents, codes ``(N, g, g)``, commitment)."""
        return self.codebook(self.encoder(x))

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_q.contiguous(memory_format=torch.channels_last) if self.channels_last else z_q)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The codebook vectors ``(..., code_dim)`` of integer codes of any shape ``(...)``."""
        return self.codebook.vectors[codes]

    def encode(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 frames ``(N, 3, S, S)`` -> int64 codes ``(N, g, g)``, in chunks of ``batch_size``."""
        check_frames(frames, self.image_size)
        with inference_mode(self, self.device, self.amp):
            chunks = [self.quantise(self.prepare(chunk))[1] for chunk in frames.split(batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, *self.latent_shape, dtype=torch.int64, device=self.device)

    def decode(self, codes: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Codes ``(N, g, g)`` -> uint8 frames ``(N, 3, R, R)``, in chunks of ``batch_size``."""
        if codes.dim() != 3 or tuple(codes.shape[1:]) != self.latent_shape:
            raise ValueError(f"codes must have shape (N, {self.config.latent_size}, {self.config.latent_size}), got "
                             f"{tuple(codes.shape)}")
        codes = codes.to(self.device)
        with inference_mode(self, self.device, self.amp):
            chunks = [to_uint8(self.decode_latents(self.lookup(chunk).permute(0, 3, 1, 2)))
                      for chunk in codes.split(batch_size)]
        r = self.config.resolution
        return torch.cat(chunks) if chunks else torch.zeros(0, 3, r, r, dtype=torch.uint8, device=self.device)

    def reconstruct(self, frames: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 frames ``(N, 3, S, S)`` -> (the uint8 originals at ``resolution`` ``(N, 3, R, R)``, their
        codes ``(N, g, g)``, the uint8 reconstructions ``(N, 3, R, R)``)."""
        check_frames(frames, self.image_size)
        parts = []
        with inference_mode(self, self.device, self.amp):
            for chunk in frames.split(batch_size):
                x = self.prepare(chunk)
                z_q, codes, _ = self.quantise(x)
                parts.append((to_uint8(x), codes, to_uint8(self.decode_latents(z_q))))
        return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]

    # ------------------------------------------------------------------ pretraining
    @staticmethod
    def sample_indices(config: TokenizerConfig, lengths: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One frame ``(B, 1)`` uniformly from each trajectory."""
        return randint_below(lengths, generator)[:, None]

    def loss(self, frames: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        """The training objective on uint8 frames ``(B, 3, S, S)``: ``(loss, metrics)`` (see the module doc)."""
        c = self.config
        x = self.prepare(frames)
        z_q, codes, commitment = self.quantise(x)
        x_hat = self.decode_latents(z_q).float()
        l1 = (x_hat - x).abs().mean()
        gradient = sum((a - b).abs().mean() for a, b in zip(image_gradients(x_hat), image_gradients(x)))
        loss = l1 + c.gradient_weight * gradient + c.commitment * commitment
        counts = torch.bincount(codes.flatten(), minlength=c.codes)
        with torch.no_grad():
            metrics: Metrics = {"l1": l1.detach(), "gradient": gradient.detach(), "commitment": commitment.detach(),
                                "psnr": psnr(to_uint8(x_hat), to_uint8(x)).mean(),
                                "code_usage": (counts > 0).float().mean(), "perplexity": torch.tensor(perplexity(counts)),
                                "restarted": torch.tensor(float(self.codebook.restarted) / c.codes)}
        if self.discriminator is not None:
            frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
            generator = -torch.func.functional_call(self.discriminator, frozen, (x_hat,)).mean()  # D's weights get no gradient
            critic = (F.relu(1 - self.discriminator(x.detach())).mean()
                      + F.relu(1 + self.discriminator(x_hat.detach())).mean())
            loss = loss + c.adversarial_weight * generator + critic
            metrics.update(adversarial=generator.detach(), discriminator=critic.detach())
        return loss, metrics

    def pretraining(self, dataset: VideoDataset, sampling: Sampling, settings: Any = None) -> Pretraining:
        sampler = TupleSampler(dataset, self.sample_indices, self.config, sampling.batch_size, sampling.balance_tasks,
                               sampling.seed)
        return Pretraining(FrameObjective(self), sampler, tuple_train_step, "frames", "uniform-frame",
                           find_unused_parameters=False)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, dataset: VideoDataset, output_dir: str | os.PathLike | None = None, progress: bool = False,
                 **extra: Any) -> Evaluation:
        """Reconstruction PSNR, code usage and perplexity per task and overall; with ``output_dir``,
        ``metrics.json`` (with ``extra``) and ``reconstructions.png`` there."""
        k = self.config.codes
        psnrs: dict[str, list[torch.Tensor]] = {}
        counts: dict[str, torch.Tensor] = {}
        for i in range(len(dataset)):
            task = dataset.task_names[dataset.task_ids[i]]
            original, codes, recon = self.reconstruct(dataset.trajectory(i))
            psnrs.setdefault(task, []).append(psnr(original, recon).cpu())
            histogram = torch.bincount(codes.flatten().cpu(), minlength=k)
            counts[task] = counts.get(task, torch.zeros(k, dtype=torch.int64)) + histogram

        def summary(values: torch.Tensor, histogram: torch.Tensor) -> dict[str, float]:
            return {"psnr": float(values.mean()), "psnr_min": float(values.min()), "frames": int(len(values)),
                    "code_usage": float((histogram > 0).float().mean()), "perplexity": perplexity(histogram)}

        tasks = {t: summary(torch.cat(psnrs[t]), counts[t]) for t in sorted(psnrs)}
        overall = summary(torch.cat([v for t in psnrs for v in psnrs[t]]), sum(counts.values()))
        metrics = {"psnr": overall["psnr"], "code_usage": overall["code_usage"], "perplexity": overall["perplexity"],
                   **{f"psnr/{t}": s["psnr"] for t, s in tasks.items()}}
        if output_dir is not None:
            out = Path(output_dir)
            atomic_write_json(out / "metrics.json", {"overall": overall, "tasks": tasks, **extra})
            self.write_reconstructions(dataset, out / "reconstructions.png")
        lines = [f"{'task':<20} {'frames':>6} {'PSNR':>7} {'PSNR min':>8} {'codes used':>10} {'perplexity':>10}"]
        for task, s in [*tasks.items(), ("overall", overall)]:
            lines.append(f"{task:<20} {s['frames']:>6} {s['psnr']:>7.2f} {s['psnr_min']:>8.2f} "
                         f"{s['code_usage']:>10.1%} {s['perplexity']:>10.1f}")
        return Evaluation(metrics, {"heldout_psnr": overall["psnr"], "heldout_code_usage": overall["code_usage"]},
                          "\n".join(lines))

    def write_reconstructions(self, dataset: VideoDataset, path: str | os.PathLike, columns: int = 8,
                              scale: int = 2) -> Path:
        """A PNG of ``columns`` frames spread over the trajectories and their time (originals at
        ``resolution`` in the top row, reconstructions below), upscaled ``scale`` x."""
        from PIL import Image

        trajs = np.linspace(0, len(dataset) - 1, columns).round().astype(np.int64)
        when = np.linspace(0, 1, columns)
        frames = dataset.gather(trajs, np.round(when * (dataset.lengths[trajs] - 1)).astype(np.int64))
        original, _, recon = self.reconstruct(frames)
        grid = torch.cat([torch.cat(list(original), dim=2), torch.cat(list(recon), dim=2)], dim=1)  # (3, 2R, columns R)
        image = Image.fromarray(grid.permute(1, 2, 0).cpu().numpy())
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        return Path(path)


class FrameObjective(nn.Module):
    """The tokenizer's training forward (what DDP wraps): its loss on a batch of
    :class:`~.base.FrameTuples` of one frame each."""

    def __init__(self, model: TokenizerModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, index: torch.Tensor, traj: torch.Tensor,
                length: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        return self.model.loss(frames.flatten(0, 1))


__all__ = ["Codebook", "FrameObjective", "PatchDiscriminator", "TokenizerConfig", "TokenizerModel", "image_gradients",
           "perplexity", "psnr", "to_uint8"]

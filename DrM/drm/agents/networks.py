"""Networks of the DrQ-v2 / DrM agents, shared by both (DrM differs by options, not copies).

Shapes: ``B`` batch, ``C = 3 * frame_stack`` stacked RGB channels, ``S`` image side,
``A`` action dimension. Observations are ``uint8`` in [0, 255]; actions lie in [-1, 1].
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal


def weight_init(module: nn.Module) -> None:
    """Orthogonal init (gain 1 for Linear, ReLU gain for convs), zero biases.

    Safe for channels_last conv weights: the orthogonal matrix is drawn into a contiguous buffer
    and copied, since ``orthogonal_`` needs a viewable tensor.
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        gain = 1.0 if isinstance(module, nn.Linear) else nn.init.calculate_gain("relu")
        weight = torch.empty(module.weight.shape, dtype=module.weight.dtype, device=module.weight.device)
        nn.init.orthogonal_(weight, gain)
        with torch.no_grad():
            module.weight.copy_(weight)
            if module.bias is not None:
                module.bias.zero_()


class RandomShiftsAug(nn.Module):
    """DrQ random shift: replicate-pad by ``pad`` pixels, then crop back to ``S x S`` at a random
    integer offset per sample (one offset for all channels of a sample).

    Implemented as one gather with clamped row / column indices, which equals pad-then-crop, works
    on any dtype (so it runs on the ``uint8`` batch before the float conversion) and does no
    interpolation. ``(B, C, H, W) -> (B, C, H, W)``, same dtype and device; the result is laid out
    channels_last (NHWC), which is what the fast encoder wants anyway.
    """

    def __init__(self, pad: int = 4) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad == 0:
            return x
        b, _, h, w = x.shape
        shift = torch.randint(0, 2 * self.pad + 1, (b, 2), device=x.device) - self.pad
        rows = (torch.arange(h, device=x.device) + shift[:, :1]).clamp_(0, h - 1)  # (B, H)
        cols = (torch.arange(w, device=x.device) + shift[:, 1:]).clamp_(0, w - 1)  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        nhwc = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return nhwc.permute(0, 3, 1, 2)


def conv_output_side(side: int) -> int:
    """Side of the encoder's feature map for an input side: one stride-2 and three stride-1 3x3
    convs without padding (84 -> 35)."""
    out = (side - 3) // 2 + 1 - 3 * 2
    if out < 1:
        raise ValueError(f"image side {side} is too small for the DrQ-v2 encoder (needs >= 10)")
    return out


class Encoder(nn.Module):
    """DrQ-v2 conv encoder: ``(B, C, S, S) uint8 -> (B, repr_dim)`` with
    ``repr_dim = 32 * s * s``, ``s = conv_output_side(S)`` (39200 at 84 px).

    ``obs / 255 - 0.5`` happens here, in the autocast dtype when autocast is on (the first conv
    would round its input to it anyway; bf16 halves the memory traffic of this step). With
    ``channels_last`` the convs run in NHWC memory format (much faster with bf16 on CPU); the
    flattened feature is in NCHW order either way.
    """

    def __init__(self, obs_shape: tuple[int, ...], channels_last: bool = False) -> None:
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"obs_shape must be (C, H, W), got {obs_shape}")
        channels, height, width = obs_shape
        self.repr_dim = 32 * conv_output_side(height) * conv_output_side(width)
        self.channels_last = channels_last
        self.convnet = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
        )
        self.apply(weight_init)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        obs = obs.contiguous(memory_format=layout)  # on uint8, before the 4x larger float copy
        device_type = obs.device.type
        dtype = (torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type)
                 else torch.float32)
        x = obs.to(dtype).mul(1.0 / 255.0).sub_(0.5)
        return self.convnet(x).flatten(1)


class StateEncoder(nn.Module):
    """The state-policy encoder (``obs_type=state``): an MLP ``(B, D) float -> (B, repr_dim)``,
    Linear -> LayerNorm -> ReLU, trained by the critic like the conv encoder it replaces."""

    def __init__(self, obs_shape: tuple[int, ...], repr_dim: int = 256) -> None:
        super().__init__()
        if len(obs_shape) != 1:
            raise ValueError(f"obs_shape of a state observation must be (D,), got {obs_shape}")
        self.repr_dim = int(repr_dim)
        self.net = nn.Sequential(nn.Linear(int(obs_shape[0]), self.repr_dim), nn.LayerNorm(self.repr_dim),
                                 nn.ReLU(inplace=True))
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


def make_encoder(obs_shape: tuple[int, ...], channels_last: bool = False, state_repr_dim: int = 256) -> nn.Module:
    """The conv :class:`Encoder` for image observations ``(C, H, W)``, :class:`StateEncoder` for ``(D,)``."""
    if len(obs_shape) == 1:
        return StateEncoder(obs_shape, state_repr_dim)
    return Encoder(obs_shape, channels_last=channels_last)


def _trunk(repr_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0,
         layer_norm: bool = False) -> nn.Sequential:
    """Two hidden layers; DrM's Q heads put Dropout + LayerNorm between each Linear and its ReLU."""
    layers: list[nn.Module] = []
    for dim in (in_dim, hidden_dim):
        layers.append(nn.Linear(dim, hidden_dim))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


class TruncatedNormal(Normal):
    """Normal whose samples are clamped to ``(low + eps, high - eps)``; the clamp passes
    gradients straight through so the actor still gets a gradient at the bounds."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, low: float = -1.0,
                 high: float = 1.0, eps: float = 1e-6) -> None:
        super().__init__(loc, scale, validate_args=False)
        self.low, self.high, self.eps = low, high, eps

    def sample(self, clip: float | None = None, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Draw ``loc + noise``; ``clip`` bounds the noise to ``[-clip, clip]`` first.
        Differentiable with respect to ``loc`` (reparameterised)."""
        shape = self._extended_shape(sample_shape)
        noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device) * self.scale
        if clip is not None:
            noise = noise.clamp(-clip, clip)
        x = self.loc + noise
        clamped = x.clamp(self.low + self.eps, self.high - self.eps)
        return x + (clamped - x).detach()


def _fp32(x: torch.Tensor) -> torch.autocast:
    """Autocast off: the actor / critic / value MLPs run in fp32 even inside a bf16 region.

    They are a small share of the cost (the encoder's convolutions dominate), and bf16's 8-bit
    mantissa would quantise Q-values of magnitude ~20 in steps of 0.125 - as large as the
    differences between actions that the actor follows."""
    return torch.autocast(device_type=x.device.type, enabled=False)


class Actor(nn.Module):
    """Deterministic policy with fixed-std exploration noise.

    ``forward(h (B, repr_dim), std: float) -> TruncatedNormal`` with ``mean = tanh(policy(trunk(h)))``
    of shape ``(B, A)``; runs in fp32 even under autocast (see ``_fp32``).
    """

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = _trunk(repr_dim, feature_dim)
        self.policy = _mlp(feature_dim, hidden_dim, action_dim)
        self.apply(weight_init)

    def forward(self, h: torch.Tensor, std: float) -> TruncatedNormal:
        with _fp32(h):
            mu = torch.tanh(self.policy(self.trunk(h.float())))
        return TruncatedNormal(mu, torch.full_like(mu, std))


class Critic(nn.Module):
    """Twin Q: ``forward(h (B, repr_dim), action (B, A)) -> (q1, q2)``, each ``(B, 1)``, computed in fp32.

    ``dropout > 0`` / ``layer_norm`` give DrM's Q heads (Linear -> Dropout -> LayerNorm -> ReLU).
    """

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int,
                 dropout: float = 0.0, layer_norm: bool = False) -> None:
        super().__init__()
        self.trunk = _trunk(repr_dim, feature_dim)
        self.Q1 = _mlp(feature_dim + action_dim, hidden_dim, 1, dropout, layer_norm)
        self.Q2 = _mlp(feature_dim + action_dim, hidden_dim, 1, dropout, layer_norm)
        self.apply(weight_init)

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _fp32(h):
            z = torch.cat([self.trunk(h.float()), action.float()], dim=-1)
            return self.Q1(z), self.Q2(z)


class ValueNet(nn.Module):
    """DrM's state value ``V(s)``: ``forward(h (B, repr_dim)) -> (B, 1)`` fp32, own trunk."""

    def __init__(self, repr_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = _trunk(repr_dim, feature_dim)
        self.V = _mlp(feature_dim, hidden_dim, 1)
        self.apply(weight_init)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        with _fp32(h):
            return self.V(self.trunk(h.float()))


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric squared loss ``mean(|tau - 1(diff < 0)| * diff^2)`` with ``diff = target - pred``:
    with ``tau > 0.5`` under-estimates cost more, so the prediction tracks an upper expectile."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.square()).mean()


def soft_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- tau * net + (1 - tau) * target`` (parameters only)."""
    with torch.no_grad():
        for param, target_param in zip(net.parameters(), target.parameters()):
            target_param.lerp_(param, tau)


__all__ = ["Actor", "Critic", "Encoder", "RandomShiftsAug", "TruncatedNormal", "ValueNet",
           "conv_output_side", "expectile_loss", "soft_update", "weight_init"]

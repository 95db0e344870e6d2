"""DrM's dormant-neuron ratio and dormant-ratio-guided weight perturbation.

Dormant ratio (DrM, Xu et al. 2024): hook the outputs of every ``nn.Linear`` of a network; for one
batch, a neuron (output unit) is *dormant* when its mean ``|activation|`` over the batch is below
``threshold`` times the mean of that quantity over its layer. The ratio is the number of dormant
neurons over the number of neurons of all hooked layers (every Linear, output layer included, as
in the DrM reference code).

Perturbation: ``theta <- p * theta + (1 - p) * theta_fresh`` for the weights and biases of the
selected layer types, where ``theta_fresh`` comes from a freshly initialised copy of the network
and ``p = clip(1 - rate * dormant_ratio, min_factor, max_factor)``. Other parameters (LayerNorm)
are kept.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn


class DormantMonitor:
    """Context manager that records the per-neuron mean ``|output|`` of every Linear layer of
    ``model`` during the forward passes run inside it, so a ratio can be read from a forward pass
    the caller runs anyway (e.g. the actor update)::

        with DormantMonitor(actor, threshold=0.025) as monitor:
            dist = actor(h, std)
        ratio = monitor.ratio()
    """

    def __init__(self, model: nn.Module, threshold: float = 0.025) -> None:
        self.model = model
        self.threshold = threshold
        self._stats: list[torch.Tensor] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        out = output.detach().float().abs()
        self._stats.append(out.reshape(-1, out.shape[-1]).mean(0))

    def __enter__(self) -> "DormantMonitor":
        self._stats.clear()
        self._handles = [m.register_forward_hook(self._hook)
                         for m in self.model.modules() if isinstance(m, nn.Linear)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def counts(self) -> tuple[int, int]:
        """``(dormant neurons, neurons)`` summed over the recorded layer calls."""
        dormant = total = 0
        for mean_abs in self._stats:
            dormant += int((mean_abs < self.threshold * mean_abs.mean()).sum())
            total += mean_abs.numel()
        return dormant, total

    def ratio(self) -> float:
        """Dormant ratio of the recorded forward passes (0 when nothing was recorded)."""
        dormant, total = self.counts()
        return dormant / total if total else 0.0


@torch.no_grad()
def dormant_ratio(model: nn.Module, *inputs: object, threshold: float = 0.025) -> float:
    """Run ``model(*inputs)`` without gradients and return its Linear-layer dormant ratio."""
    with DormantMonitor(model, threshold) as monitor:
        model(*inputs)
    return monitor.ratio()


def perturb_factor(ratio: float, rate: float = 2.0, min_factor: float = 0.2,
                   max_factor: float = 0.95) -> float:
    """DrM's interpolation weight of the old parameters: ``clip(1 - rate * ratio, min, max)``."""
    return min(max(1.0 - rate * ratio, min_factor), max_factor)


def fresh_copy(net: nn.Module, init: Callable[[nn.Module], None]) -> nn.Module:
    """A copy of ``net`` (same structure, device, memory format) re-initialised with ``init``."""
    fresh = copy.deepcopy(net)
    fresh.apply(init)
    return fresh


@torch.no_grad()
def perturb(net: nn.Module, fresh: nn.Module, factor: float,
            layer_types: tuple[type[nn.Module], ...] = (nn.Linear,)) -> None:
    """In place: ``theta <- factor * theta + (1 - factor) * theta_fresh`` for the weight and bias of
    every module of ``layer_types`` in ``net``; ``fresh`` must have the same structure."""
    for (name, module), (fresh_name, fresh_module) in zip(net.named_modules(), fresh.named_modules()):
        if name != fresh_name:
            raise ValueError(f"structure mismatch: {name!r} vs {fresh_name!r}")
        if not isinstance(module, layer_types):
            continue
        for pname, param in module.named_parameters(recurse=False):
            param.mul_(factor).add_(getattr(fresh_module, pname), alpha=1.0 - factor)


def reset_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Forget the optimiser's per-parameter state (Adam moments and step counts)."""
    optimizer.state.clear()

"""PROGRESSOR's Gaussian math: the KL objective from a target Gaussian to the predicted one, and the entropy.

The model predicts ``N(mu, sigma^2)`` over progress; a triplet's label is a Gaussian ``N(m, s^2)``
(mean: where the middle frame sits between the endpoints; std: 0.1 or ``sqrt(1/delta)``, see
:mod:`video2reward.triplets`). The loss is the mean of ``KL(N(m, s^2) || N(mu, sigma^2))`` in
closed form. Negatives (EPIC recipe) target ``N(-1, 0.1^2)`` with weight 0.05; the RL push-back
refinement uses the same loss with the detached target ``N(beta * mu, sigma)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NEGATIVE_MEAN = -1.0  # target of a triplet whose middle frame comes from another video
NEGATIVE_STD = 0.1
NEGATIVE_WEIGHT = 0.05
_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


def gaussian_entropy(sigma: torch.Tensor) -> torch.Tensor:
    """Differential entropy of ``N(mu, sigma^2)``: ``0.5 ln(2 pi e) + ln sigma``."""
    return _HALF_LOG_2PI_E + torch.log(sigma)


def gaussian_kl(mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(N(mean_p, std_p^2) || N(mean_q, std_q^2))``
    ``= log(std_q / std_p) + (std_p^2 + (mean_p - mean_q)^2) / (2 std_q^2) - 1/2``."""
    var_q = std_q.pow(2)
    return torch.log(std_q / std_p) + (std_p.pow(2) + (mean_p - mean_q).pow(2)) / (2 * var_q) - 0.5


def progress_kl_loss(mu: torch.Tensor, sigma: torch.Tensor, label_mean: torch.Tensor | float,
                     label_std: torch.Tensor | float, sigma_power: float = 0.0) -> torch.Tensor:
    """Mean over the batch of ``KL(N(label_mean, label_std^2) || N(mu, sigma^2))``; labels broadcast.
    Computed in float32 whatever the autocast dtype of ``mu`` and ``sigma``.

    ``sigma_power = p > 0`` weights each triplet's KL by ``sigma^p`` (no gradient through the weight;
    weights normalised to mean 1 over the batch). The mean-squared part of the KL is divided by
    ``sigma^2``, so with plain KL a model can make hard triplets cheap by predicting a wide ``sigma``
    and stop fitting their ``mu``; ``p = 2`` gives every triplet's ``mu`` the same weight again
    (the "beta-NLL" of Seitzer et al., 2022, with ``p = 2 beta``)."""
    mu, sigma = mu.float(), sigma.float()
    label_mean = torch.as_tensor(label_mean, dtype=torch.float32, device=mu.device).expand_as(mu)
    label_std = torch.as_tensor(label_std, dtype=torch.float32, device=mu.device).expand_as(mu)
    kl = gaussian_kl(label_mean, label_std, mu, sigma)
    if sigma_power:
        weight = sigma.detach().pow(sigma_power)
        kl = kl * (weight / weight.mean())
    return kl.mean()


def ranking_loss(mu: torch.Tensor, temperature: float = 0.02) -> torch.Tensor:
    """Pairwise order loss on predictions ``mu`` ``(G, K)`` whose K columns are in time order.

    Mean over groups and pairs ``p < q`` of ``t * softplus(-(mu_q - mu_p) / t)``: a smooth hinge
    that is ~0 once a later frame scores more than ``t`` above an earlier one and grows linearly
    (slope 1) when they are out of order. Unlike the KL it does not weaken where the model
    predicts a wide sigma, and it asks only for order, the thing VOC measures."""
    mu = mu.float()
    k = mu.shape[-1]
    diff = mu[..., None, :] - mu[..., :, None]  # diff[..., p, q] = mu_q - mu_p
    later = torch.triu(torch.ones(k, k, dtype=torch.bool, device=mu.device), diagonal=1)
    return temperature * F.softplus(-diff[..., later] / temperature).mean()


def negative_kl_loss(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """:func:`progress_kl_loss` toward ``N(-1, 0.1^2)`` (unweighted; multiply by :data:`NEGATIVE_WEIGHT`)."""
    return progress_kl_loss(mu, sigma, NEGATIVE_MEAN, NEGATIVE_STD)


__all__ = ["NEGATIVE_MEAN", "NEGATIVE_STD", "NEGATIVE_WEIGHT", "gaussian_entropy", "gaussian_kl", "negative_kl_loss", "progress_kl_loss", "ranking_loss"]

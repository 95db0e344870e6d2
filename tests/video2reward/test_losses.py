"""The KL objective (video2reward.losses)."""
import torch
from torch.distributions import Normal, kl_divergence

from video2reward.losses import (NEGATIVE_MEAN, NEGATIVE_STD, NEGATIVE_WEIGHT, gaussian_kl, negative_kl_loss,
                                 progress_kl_loss)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mp, mq = torch.randn(50, generator=g), torch.randn(50, generator=g)
    sp, sq = torch.rand(50, generator=g) + 0.05, torch.rand(50, generator=g) + 0.05
    expect = kl_divergence(Normal(mp, sp), Normal(mq, sq))
    assert torch.allclose(gaussian_kl(mp, sp, mq, sq), expect, atol=1e-5)


def test_hand_computed_values():
    # KL(N(0.5, 0.1) || N(0.3, 0.2)) = ln 2 + (0.01 + 0.04) / 0.08 - 0.5
    value = gaussian_kl(torch.tensor(0.5), torch.tensor(0.1), torch.tensor(0.3), torch.tensor(0.2))
    assert abs(value.item() - (0.6931472 + 0.625 - 0.5)) < 1e-6
    assert gaussian_kl(torch.tensor(0.2), torch.tensor(0.3), torch.tensor(0.2), torch.tensor(0.3)).abs() < 1e-7


def test_progress_loss_direction_and_dtype():
    """KL(label || prediction): the label is the first argument; gradients pull mu to the label."""
    mu = torch.tensor([0.0, 1.0], requires_grad=True)
    sigma = torch.tensor([0.2, 0.2], requires_grad=True)
    loss = progress_kl_loss(mu, sigma, torch.tensor([0.5, 0.5]), 0.1)
    expect = kl_divergence(Normal(torch.tensor(0.5), torch.tensor(0.1)), Normal(mu, sigma)).mean()
    assert torch.allclose(loss, expect)
    loss.backward()
    assert mu.grad[0] < 0 < mu.grad[1]
    bf = progress_kl_loss(mu.detach().bfloat16(), sigma.detach().bfloat16(), 0.5, 0.1)
    assert bf.dtype == torch.float32


def test_negative_loss_targets_minus_one():
    mu, sigma = torch.tensor([NEGATIVE_MEAN, 0.5]), torch.full((2,), NEGATIVE_STD)
    per = gaussian_kl(torch.tensor(-1.0), torch.tensor(0.1), mu, sigma)
    assert per[0].abs() < 1e-6 and per[1] > 1
    assert torch.allclose(negative_kl_loss(mu, sigma), per.mean())
    assert NEGATIVE_WEIGHT == 0.05

"""The KL objective (video2reward.losses)."""
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from video2reward.losses import (NEGATIVE_MEAN, NEGATIVE_STD, NEGATIVE_WEIGHT, gaussian_kl, negative_kl_loss,
                                 progress_kl_loss, ranking_loss)


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


def test_sigma_power_evens_out_the_mu_gradients():
    """Plain KL divides a triplet's squared error by sigma^2, so a wide sigma hides a wrong mu;
    with sigma_power=2 two triplets with the same error pull on mu equally whatever their sigma."""
    sigma = torch.tensor([0.05, 0.5])
    label = torch.tensor([0.5, 0.5])
    grads = {}
    for power in (0.0, 1.0, 2.0):
        mu = torch.tensor([0.7, 0.7], requires_grad=True)
        progress_kl_loss(mu, sigma, label, 0.025, sigma_power=power).backward()
        grads[power] = mu.grad
    assert grads[0.0][0] / grads[0.0][1] == pytest.approx(100.0, rel=1e-4)  # (0.5 / 0.05)^2
    assert grads[1.0][0] / grads[1.0][1] == pytest.approx(10.0, rel=1e-4)
    assert grads[2.0][0] == pytest.approx(grads[2.0][1].item(), rel=1e-5)
    # power 0 is the plain mean KL; the weights never carry a gradient into sigma
    mu = torch.tensor([0.7, 0.7])
    assert progress_kl_loss(mu, sigma, label, 0.025, 0.0) == progress_kl_loss(mu, sigma, label, 0.025)
    s = sigma.clone().requires_grad_(True)
    progress_kl_loss(mu, s, label, 0.025, sigma_power=2.0).backward()
    w = sigma.pow(2) / sigma.pow(2).mean()
    s2 = sigma.clone().requires_grad_(True)
    (gaussian_kl(label, torch.full((2,), 0.025), mu, s2) * w).mean().backward()
    assert torch.allclose(s.grad, s2.grad)


def test_ranking_loss_counts_out_of_order_pairs():
    """Later frames scoring well above earlier ones cost ~nothing; each reversed pair costs its gap."""
    t = 0.02
    rising = torch.tensor([[0.0, 0.5, 1.0]])
    assert ranking_loss(rising, t) < 1e-10
    falling = torch.tensor([[1.0, 0.5, 0.0]])  # pairs reversed by 0.5, 0.5 and 1.0: mean ~ 2/3
    assert ranking_loss(falling, t).item() == pytest.approx(2 / 3, rel=1e-3)
    # one reversed pair out of three in the second group: the mean runs over groups and pairs
    two = torch.tensor([[0.0, 0.5, 1.0], [0.0, 1.0, 0.7]])
    assert ranking_loss(two, t).item() == pytest.approx(0.3 / 6, rel=1e-2)
    # the gradient pushes the reversed pair apart and leaves well-ordered ones alone
    mu = two.clone().requires_grad_(True)
    ranking_loss(mu, t).backward()
    assert mu.grad[1, 1] > 0 > mu.grad[1, 2]  # lower the middle frame, raise the last
    assert mu.grad[0].abs().max() < 1e-6
    # ties cost t*ln2 per pair, whatever the temperature scale of the hinge
    assert ranking_loss(torch.zeros(1, 4), 0.1).item() == pytest.approx(0.1 * 0.6931, rel=1e-3)

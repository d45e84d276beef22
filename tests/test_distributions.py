"""The distributions against closed forms and torch.distributions."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaekit.distributions import Bernoulli, DiagonalGaussian, Gaussian, StandardNormal


def test_kl_matches_torch_distributions():
    mu, log_sigma = torch.randn(5, 3), torch.randn(5, 3) * 0.5
    q = DiagonalGaussian(mu, log_sigma)
    reference = kl_divergence(
        Independent(Normal(mu, log_sigma.exp()), 1), Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    )
    torch.testing.assert_close(q.kl_standard_normal(), reference)


def test_kl_is_zero_only_at_the_prior():
    assert torch.all(DiagonalGaussian(torch.zeros(2, 4), torch.zeros(2, 4)).kl_standard_normal() == 0)
    assert torch.all(DiagonalGaussian(torch.ones(2, 4), torch.zeros(2, 4)).kl_standard_normal() > 0)


def test_gaussian_log_prob_matches_torch():
    mu, log_sigma, z = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    expected = Normal(mu, log_sigma.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(DiagonalGaussian(mu, log_sigma).log_prob(z), expected)
    torch.testing.assert_close(StandardNormal(6).log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_rsample_has_the_right_moments_and_shape():
    q = DiagonalGaussian(torch.tensor([[1.0, -2.0]]), torch.log(torch.tensor([[0.5, 2.0]])))
    z = q.rsample(200_000)
    assert z.shape == (200_000, 1, 2)
    torch.testing.assert_close(z.mean(0), q.mu, atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), q.sigma, atol=0.02, rtol=0)


def test_bernoulli_log_prob_matches_the_direct_formula():
    logits = torch.randn(3, 10) * 3
    x = torch.rand(3, 10)  # continuous targets in [0, 1], as MNIST grey levels
    p = torch.sigmoid(logits)
    expected = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)
    torch.testing.assert_close(Bernoulli(logits).log_prob(x), expected, rtol=1e-5, atol=1e-5)


def test_bernoulli_is_stable_for_extreme_logits():
    logits = torch.tensor([[100.0, -100.0]])
    log_prob = Bernoulli(logits).log_prob(torch.tensor([[0.0, 1.0]]))
    assert torch.isfinite(log_prob).all()
    assert math.isclose(log_prob.item(), -200.0, rel_tol=1e-6)


def test_a_gaussian_with_an_identity_mean_is_the_normal_density_of_real_values():
    logits, x, sigma = torch.tensor([[-2.5, 0.0, 3.0]]), torch.tensor([[-2.0, 0.5, 7.0]]), 0.7
    p = Gaussian(logits, torch.tensor(math.log(sigma)), identity_mean=True)
    expected = sum(-0.5 * ((b - a) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi)) for a, b in zip([-2.5, 0.0, 3.0], [-2.0, 0.5, 7.0]))
    assert torch.equal(p.mean, logits) and p.log_prob(x).item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(Gaussian(logits, torch.tensor(0.0)).mean, torch.sigmoid(logits))  # the default: pixels in [0, 1]

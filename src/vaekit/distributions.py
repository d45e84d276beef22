"""The two distributions of a VAE, each formula written once.

q(z|x) is a diagonal Gaussian, p(x|z) a Bernoulli on logits; the prior p(z) is N(0, I).
Names follow Kingma & Welling (2014), "Auto-Encoding Variational Bayes" (appendix B for the KL).
All log-densities are summed over the event dimensions and are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


class DiagonalGaussian:
    """N(mu, diag(sigma^2)), parameterised by mu and log_sigma of shape (..., D)."""

    def __init__(self, mu: torch.Tensor, log_sigma: torch.Tensor, noise: Callable | None = None):
        self.mu = mu
        self.log_sigma = log_sigma
        self.noise = noise  # (shape, dtype) -> eps; None: torch.randn (distributed training shares it)

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def mode(self) -> torch.Tensor:
        return self.mu

    def rsample(self, k: int | None = None) -> torch.Tensor:
        """Reparameterised draw z = mu + sigma * eps; with k, shape (k, ..., D)."""
        shape = self.mu.shape if k is None else (k, *self.mu.shape)
        if self.noise is not None:
            eps = self.noise(shape, self.mu.dtype)
        else:
            eps = torch.randn(shape, dtype=self.mu.dtype, device=self.mu.device)
        return self.mu + self.sigma * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mu, sigma^2) summed over the last dimension."""
        standardized = (z - self.mu) * torch.exp(-self.log_sigma)
        return -0.5 * (standardized.pow(2) + LOG_2PI).sum(-1) - self.log_sigma.sum(-1)

    def kl_standard_normal(self) -> torch.Tensor:
        """Closed-form KL(q || N(0, I)) = 1/2 sum(mu^2 + sigma^2 - 1 - 2 log_sigma)."""
        return 0.5 * (self.mu.pow(2) + torch.exp(2 * self.log_sigma) - 1 - 2 * self.log_sigma).sum(-1)


class StandardNormal:
    """The prior p(z) = N(0, I) in D dimensions."""

    def __init__(self, latent_size: int):
        self.latent_size = latent_size

    def sample(self, n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(n, self.latent_size, device=device, dtype=dtype)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


class Bernoulli:
    """p(x|z) with independent Bernoulli pixels, parameterised by logits of shape (..., D) for stability."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """sum_i x_i log p_i + (1 - x_i) log(1 - p_i): minus the cross-entropy, for x in [0, 1]."""
        x = x.to(self.logits.dtype)
        return -F.binary_cross_entropy_with_logits(self.logits, x, reduction="none").sum(-1)

"""The distributions of a VAE, each formula written once.

q(z|x) is a diagonal Gaussian; p(x|z) a Bernoulli on logits or a Gaussian with a fixed or
learned standard deviation; the prior p(z) is N(0, I) or a VampPrior, a mixture of the
posteriors of K learned pseudo-inputs (Tomczak & Welling 2018, "VAE with a VampPrior").
Names follow Kingma & Welling (2014), "Auto-Encoding Variational Bayes" (appendix B for the KL).
All log-densities are summed over the event dimensions and are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)
HALF_PRECISION = (torch.bfloat16, torch.float16)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """t as float32 if it is a half-precision network output (mixed-precision training), else unchanged.

    The log-densities sum hundreds of terms: in bfloat16 (8 significant bits) they would be off by nats.
    """
    return t.float() if t.dtype in HALF_PRECISION else t


class DiagonalGaussian:
    """N(mu, diag(sigma^2)), parameterised by mu and log_sigma of shape (..., D)."""

    def __init__(self, mu: torch.Tensor, log_sigma: torch.Tensor, noise: Callable | None = None):
        self.mu = full_precision(mu)
        self.log_sigma = full_precision(log_sigma)
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

    def log_prob_pairwise(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z_m; mu_c, sigma_c^2) for every point m of z (..., D) and component c of this (C, D): (..., C).

        The square (z - mu)^2 / sigma^2 is expanded into three matrix products, so memory is
        points x components rather than points x components x D. The products run in float64:
        each term is of order (z / sigma)^2 and they cancel down to order D near a component, so
        in float32 narrow components (sigma = 0.01 in 50 dimensions) would be off by a nat.
        """
        with torch.autocast(z.device.type, enabled=False):
            z64, mu, log_sigma = z.double(), self.mu.double(), self.log_sigma.double()
            precision = torch.exp(-2 * log_sigma)  # (C, D)
            square = z64.pow(2) @ precision.T - 2 * z64 @ (mu * precision).T + (mu.pow(2) * precision).sum(-1)
            log_q = -0.5 * (square + mu.shape[-1] * LOG_2PI) - log_sigma.sum(-1)
        return log_q.to(self.mu.dtype)

    def kl_standard_normal_per_dim(self) -> torch.Tensor:
        """Closed-form KL(q || N(0, I)) per latent dimension: 1/2 (mu^2 + sigma^2 - 1 - 2 log_sigma), (..., D)."""
        return 0.5 * (self.mu.pow(2) + torch.exp(2 * self.log_sigma) - 1 - 2 * self.log_sigma)

    def kl_standard_normal(self) -> torch.Tensor:
        """Closed-form KL(q || N(0, I)), summed over the latent dimensions."""
        return self.kl_standard_normal_per_dim().sum(-1)


class StandardNormal(nn.Module):
    """The prior p(z) = N(0, I) in D dimensions; a module only so that it follows the model's device."""

    def __init__(self, latent_size: int):
        super().__init__()
        self.latent_size = latent_size
        self.register_buffer("anchor", torch.zeros(()), persistent=False)  # carries device and dtype

    def sample(self, n: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """n draws, (n, D), on the prior's device unless another is given."""
        return torch.randn(n, self.latent_size, device=device or self.anchor.device, dtype=dtype or self.anchor.dtype)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


class VampPrior(nn.Module):
    """p(z) = 1/K sum_k q(z | u_k): the encoder's posteriors at K learned pseudo-inputs u_k.

    The pseudo-inputs live in data space, clamped to [0, 1] like the images (unless `unit_interval`
    is false: real-valued data), and start near 0.05 as in the paper's code. The encoder is the VAE's
    own: this prior holds a function that encodes with it (`model.make_prior`: without dropout), not
    a copy of its weights.
    """

    def __init__(self, encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], n_pseudo_inputs: int, input_size: int,
                 unit_interval: bool = True):
        super().__init__()
        self.encode = encode
        self.pseudo_inputs_raw = nn.Parameter(0.05 + 0.01 * torch.randn(n_pseudo_inputs, input_size))
        self.unit_interval = unit_interval
        self.held: DiagonalGaussian | None = None  # the components, while `components_held`

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The K pseudo-inputs u_k, (K, input_size), in [0, 1] for data there."""
        return self.pseudo_inputs_raw.clamp(0.0, 1.0) if self.unit_interval else self.pseudo_inputs_raw

    def components(self) -> DiagonalGaussian:
        """q(z | u_k) for the K pseudo-inputs: mu and log_sigma of shape (K, D)."""
        if self.held is not None:
            return self.held
        return DiagonalGaussian(*self.encode(self.pseudo_inputs))

    @contextmanager
    def components_held(self) -> Iterator[None]:
        """Within, the components are encoded once, not at every call: for evaluation without gradients, where
        the weights stay as they are (the k = 5000 NLL encoded them again for every chunk of draws)."""
        with torch.no_grad():
            self.held = self.components()
        try:
            yield
        finally:
            self.held = None

    def sample(self, n: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """n draws, (n, D): pick a component uniformly, then draw from it."""
        components = self.components()
        index = torch.randint(len(self.pseudo_inputs_raw), (n,), device=self.pseudo_inputs_raw.device)
        z = DiagonalGaussian(components.mu[index], components.log_sigma[index]).rsample()
        return z.to(device=device, dtype=dtype)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = logsumexp_k log q(z | u_k) - log K, for z of shape (..., D)."""
        log_q = self.components().log_prob_pairwise(z)
        return torch.logsumexp(log_q, dim=-1) - math.log(log_q.shape[-1])


class Bernoulli:
    """p(x|z) with independent Bernoulli pixels, parameterised by logits of shape (..., D) for stability."""

    def __init__(self, logits: torch.Tensor):
        self.logits = full_precision(logits)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """sum_i x_i log p_i + (1 - x_i) log(1 - p_i): minus the cross-entropy, for x in [0, 1].

        x (N, D) broadcasts against logits (k, N, D) when several z were drawn per example.
        """
        x = x.to(self.logits.dtype).expand_as(self.logits)
        return -F.binary_cross_entropy_with_logits(self.logits, x, reduction="none").sum(-1)


class Gaussian(DiagonalGaussian):
    """p(x|z) = N(x; sigmoid(logits), sigma^2) (or N(x; logits, sigma^2)) for independent values, logits (..., D).

    The mean goes through a sigmoid so that decoded images lie in [0, 1] as with the Bernoulli, or,
    with `identity_mean`, is the decoder's output itself, for real-valued data of any range;
    log_sigma is one value shared by all pixels (a tensor that broadcasts: fixed, or a learned
    parameter as in Rybkin et al. 2021, "Simple and Effective VAE Training with Calibrated Decoders").
    With `levels`, log_prob first dequantises x (see `dequantize`): the density is then that of
    continuous data in [0, 1], from which `bits_per_dim` gives a bound for the discrete pixels.
    """

    def __init__(self, logits: torch.Tensor, log_sigma: torch.Tensor, levels: int | None = None, identity_mean: bool = False):
        logits = full_precision(logits)
        mean = logits if identity_mean else torch.sigmoid(logits)
        super().__init__(mean, log_sigma.to(logits.dtype).expand_as(logits))
        self.logits = logits
        self.levels = levels

    @property
    def mean(self) -> torch.Tensor:
        return self.mu

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; mean, sigma^2) summed over the pixels, in nats (of x dequantised first when `levels` is set).

        x (N, D) broadcasts against a mean (k, N, D) of several z per example; dequantised, each of the k
        gets its own draw of u, so that k importance samples of (z, u) estimate the discrete likelihood,
        however the draws are split into chunks (Ho et al. 2019, "Flow++", section 3.1).
        """
        x = x.to(self.mu.dtype)
        if self.levels is not None:
            x = dequantize(x.expand(self.mu.shape), self.levels)
        return super().log_prob(x)


def dequantize(x: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """Uniform dequantisation of pixels stored as k / (levels - 1): (k + u) / levels with u ~ U(0, 1).

    The result fills [0, 1) continuously, so a density on it cannot pile up on the `levels`
    values, and E_u[log p((k + u) / levels)] - D log(levels) <= log P(k) (Theis et al. 2016).
    A u for every element of x, expanded (broadcast) ones included.
    """
    k = torch.round(x * (levels - 1))
    return (k + torch.rand(x.shape, dtype=x.dtype, device=x.device)) / levels


def bits_per_dim(nll_nats: float, num_dims: int, levels: int | None = None) -> float:
    """A per-example negative log-likelihood (nats) in bits per dimension.

    For a probability of discrete values (a Bernoulli on binary pixels), levels=None:
        bits_per_dim = nll_nats / (D log 2).
    For a density on [0, 1]^D of data dequantised from `levels` values per pixel (see `dequantize`),
    the density of the same data on the scale 0..levels is p / levels^D, so
        bits_per_dim = (nll_nats + D log(levels)) / (D log 2),
    which for 8-bit images (levels=256) is the figure reported for image models (Theis, van den Oord
    & Bethge 2016, "A note on the evaluation of generative models"). From the ELBO it is an upper bound,
    and from a k-sample estimate of log p(x) one in expectation, which tightens as k grows.
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be positive, got {num_dims}")
    offset = num_dims * math.log(levels) if levels is not None else 0.0
    return (nll_nats + offset) / (num_dims * math.log(2))

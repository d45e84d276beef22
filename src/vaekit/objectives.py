"""Training objectives: pure functions of a model and a batch, per-example, in nats.

elbo = E_q[log p(x|z)] - KL(q(z|x) || p(z))          (Kingma & Welling 2014, eq. 3 and appendix B)
iwae_bound = E[log 1/k sum_i w_i],  w_i = p(x, z_i) / q(z_i|x),  z_i ~ q(z|x)   (Burda et al. 2015, eq. 8)

The log-weights `log_w` are computed in one place, `log_weights`, which the IWAE bound and the
importance-sampled estimate of log p(x) in `evaluate.py` share. The KL is in closed form for the
standard normal prior and a one-sample Monte Carlo estimate log q(z|x) - log p(z) otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vaekit.distributions import DiagonalGaussian, StandardNormal
from vaekit.errors import VaekitError
from vaekit.model import VAE

BatchMean = Callable[[torch.Tensor], torch.Tensor]  # per-example values (N, ...) -> their mean over the batch (...)


@dataclass
class ElboTerms:
    """Per-example terms of the bound, each of shape (N,), in nats."""

    reconstruction: torch.Tensor  # -log p(x|z) for one z ~ q(z|x): the cross-entropy
    kl: torch.Tensor  # KL(q(z|x) || p(z)): closed form, or one-sample Monte Carlo for other priors

    @property
    def elbo(self) -> torch.Tensor:
        return -(self.reconstruction + self.kl)


@dataclass
class LogWeights:
    """The parts of log w = log p(x|z) + log p(z) - log q(z|x) for k draws per example, each (k, N)."""

    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_qz_x: torch.Tensor

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_px_z + self.log_pz - self.log_qz_x


def log_weights(model: VAE, x: torch.Tensor, k: int, q: DiagonalGaussian | None = None,
                log_likelihood: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> LogWeights:
    """Draw k codes z ~ q(z|x) per example of x (N, D) and return the parts of their log-weights, (k, N).

    Pass q (the posterior of x) to reuse an encoding across several calls, and log_likelihood(z, x)
    to compute log p(x|z) other than as model.likelihood(z).log_prob(x) (compiled, say).
    """
    q = model.posterior(x) if q is None else q
    z = q.rsample(k)  # (k, N, latent)
    log_px_z = model.likelihood(z).log_prob(x) if log_likelihood is None else log_likelihood(z, x)
    return LogWeights(log_px_z=log_px_z, log_pz=model.prior.log_prob(z), log_qz_x=q.log_prob(z))


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/k) sum exp(log_w) along dim, stable for log-weights of any size."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def iwae_bound(model: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-sample importance-weighted bound on log p(x), per example (N,), in nats; k=1 is an ELBO."""
    if k < 1:
        raise VaekitError(f"the IWAE bound needs k >= 1 samples, got {k}")
    return log_mean_exp(log_weights(model, x, k).log_w, dim=0)


def kl_divergence(model: VAE, q: DiagonalGaussian, z: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per example: closed form for N(0, I), else log q(z|x) - log p(z) at the draw z."""
    if isinstance(model.prior, StandardNormal):
        return q.kl_standard_normal()
    return q.log_prob(z) - model.prior.log_prob(z)


def encode_and_elbo_terms(model: VAE, x: torch.Tensor) -> tuple[DiagonalGaussian, ElboTerms]:
    """q(z|x) and the ELBO's two terms for a batch x (N, D), one reparameterised draw of z per example."""
    q = model.posterior(x)
    z = q.rsample()
    return q, ElboTerms(reconstruction=-model.likelihood(z).log_prob(x), kl=kl_divergence(model, q, z))


def elbo_terms(model: VAE, x: torch.Tensor) -> ElboTerms:
    """The ELBO's two terms for a batch x (N, D), one reparameterised draw of z per example."""
    return encode_and_elbo_terms(model, x)[1]


def elbo(model: VAE, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """E_q[log p(x|z)] - beta * KL per example (N,); beta = 1 is the bound on log p(x) (Higgins et al. 2017)."""
    terms = elbo_terms(model, x)
    return -(terms.reconstruction + beta * terms.kl)


def free_bits_kl(model: VAE, q: DiagonalGaussian, free_bits: float, batch_mean: BatchMean | None = None) -> torch.Tensor:
    """sum_j max(free_bits, mean over the batch of KL_j), the KL term with free bits (Kingma et al. 2016, eq. 15).

    Each latent dimension j gets `free_bits` nats it can spend without cost, which keeps units
    from collapsing early. It needs a KL that splits over dimensions: the standard normal prior's.

    With several processes, batch_mean gives the mean of per-example values over the global batch (every
    rank's examples), so that each dimension is floored where the whole batch's KL is, as one process
    would floor it. The result is then the whole batch's value, and its gradient, through this rank's
    examples, is the KL's where that is above the floor: averaged over the ranks as DDP averages (with
    each rank's cost scaled by its share of the batch), the gradient of the whole batch's term.
    """
    if not isinstance(model.prior, StandardNormal):
        raise VaekitError("free bits need the standard normal prior, whose KL splits over latent dimensions")
    per_example = q.kl_standard_normal_per_dim()  # (N, latent)
    kl = per_example.mean(0)
    if batch_mean is None:
        return kl.clamp(min=free_bits).sum()
    whole_batch_kl = batch_mean(per_example.detach())
    above_floor = (kl * (whole_batch_kl > free_bits)).sum()
    return above_floor + (whole_batch_kl.clamp(min=free_bits).sum() - above_floor).detach()


# -- the minibatch cost of training -------------------------------------------------------------------


def l2_penalty(model: torch.nn.Module) -> torch.Tensor:
    """sum(w**2) / 2 over weight matrices (not biases), as TensorFlow's l2_loss in the original."""
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    return sum(w.pow(2).sum() for w in weights) / 2


def elbo_cost(model: VAE, x: torch.Tensor, beta: float = 1.0, free_bits: float = 0.0,
              batch_mean: BatchMean | None = None) -> tuple[torch.Tensor, ElboTerms]:
    """-mean(elbo) with the KL weighted by beta (and floored per dimension by free bits, see `free_bits_kl`), and its terms."""
    q, terms = encode_and_elbo_terms(model, x)
    kl = free_bits_kl(model, q, free_bits, batch_mean) if free_bits > 0 else terms.kl.mean()
    return terms.reconstruction.mean() + beta * kl, terms


def iwae_cost(model: VAE, x: torch.Tensor, k: int = 50) -> tuple[torch.Tensor, ElboTerms]:
    """-mean(iwae_bound) with k samples, and the ELBO terms of its first sample (for logging)."""
    parts = log_weights(model, x, k)
    terms = ElboTerms(reconstruction=-parts.log_px_z[0].detach(), kl=(parts.log_qz_x[0] - parts.log_pz[0]).detach())
    return -log_mean_exp(parts.log_w, dim=0).mean(), terms


# Each objective's cost, and the settings of `loss` it takes (by name: a new objective names its own here).
OBJECTIVES: dict[str, tuple[Callable[..., tuple[torch.Tensor, ElboTerms]], tuple[str, ...]]] = {
    "elbo": (elbo_cost, ("beta", "free_bits", "batch_mean")),
    "iwae": (iwae_cost, ("k",)),
}


def loss(
    model: VAE, x: torch.Tensor, *, objective: str = "elbo", beta: float = 1.0, free_bits: float = 0.0, k: int = 1,
    batch_mean: BatchMean | None = None,
) -> tuple[torch.Tensor, ElboTerms]:
    """The minibatch cost (-mean of the objective; the trainer adds the L2 penalty, `l2_penalty`) and the ELBO
    terms it came from (batch_mean: with several processes, see `free_bits_kl`)."""
    cost, takes = OBJECTIVES[objective]
    settings = {"beta": beta, "free_bits": free_bits, "k": k, "batch_mean": batch_mean}
    return cost(model, x, **{name: settings[name] for name in takes})

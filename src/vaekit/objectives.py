"""Training objectives: pure functions of a model and a batch, per-example, in nats.

elbo = E_q[log p(x|z)] - KL(q(z|x) || p(z))   (Kingma & Welling 2014, eq. 3 and appendix B)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaekit.model import VAE


@dataclass
class ElboTerms:
    """Per-example terms of the bound, each of shape (N,), in nats."""

    reconstruction: torch.Tensor  # -log p(x|z) for one z ~ q(z|x): the cross-entropy
    kl: torch.Tensor  # KL(q(z|x) || p(z)), closed form

    @property
    def elbo(self) -> torch.Tensor:
        return -(self.reconstruction + self.kl)


def elbo_terms(model: VAE, x: torch.Tensor) -> ElboTerms:
    """The ELBO's two terms for a batch x (N, D), one reparameterised draw of z per example."""
    q = model.posterior(x)
    z = q.rsample()
    log_px_z = model.likelihood(z).log_prob(x)
    return ElboTerms(reconstruction=-log_px_z, kl=q.kl_standard_normal())


def l2_penalty(model: torch.nn.Module) -> torch.Tensor:
    """sum(w**2) / 2 over weight matrices (not biases), as TensorFlow's l2_loss in the original."""
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    return sum(w.pow(2).sum() for w in weights) / 2


def loss(model: VAE, x: torch.Tensor, l2: float = 0.0) -> tuple[torch.Tensor, ElboTerms]:
    """The minibatch cost -mean(elbo) (+ the L2 penalty), and the terms it came from."""
    terms = elbo_terms(model, x)
    cost = -terms.elbo.mean()
    if l2 > 0:
        cost = cost + l2 * l2_penalty(model)
    return cost, terms

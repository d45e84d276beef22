"""Measure a trained model: per-example ELBO terms in nats, averaged over a data split."""

from __future__ import annotations

import torch

from vaekit.model import VAE, evaluating
from vaekit.objectives import elbo_terms

EVAL_BATCH = 1000


def average_elbo_terms(model: VAE, x: torch.Tensor, batch_size: int = EVAL_BATCH, seed: int = 0) -> dict[str, float]:
    """Mean elbo, reconstruction and kl over x, in nats per example (one z per example).

    The noise comes from its own seeded stream, so the figure is repeatable and the
    caller's random state (a training run's, say) is left exactly as it was.
    """
    device = model.device
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), evaluating(model), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device, torch.float32, non_blocking=True)
            terms = elbo_terms(model, batch)
            totals += torch.stack([terms.reconstruction.sum(), terms.kl.sum()]).double()
    reconstruction, kl = (totals / len(x)).tolist()
    return {"elbo": -(reconstruction + kl), "reconstruction": reconstruction, "kl": kl, "n": len(x)}

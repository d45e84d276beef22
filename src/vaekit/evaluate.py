"""Measure a trained model, in nats per example: the ELBO, and log p(x) by importance sampling.

log p(x) ~= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x)      (Burda et al. 2015, eq. 8)

is the k-sample IWAE bound: it rises towards log p(x) as k grows, and papers report its
negation at k = 5000 as the test "NLL". The log-weights come from `objectives.log_weights`;
here they are drawn in chunks of (k-chunk x examples) rows, so each decoder matrix product is
large and memory is bounded by `max_rows` whatever k is, and a running log-sum-exp carries the
sum across chunks. Everything is float32, accumulated in float64. With compile=True, log p(x|z)
(the decoder and the likelihood's sum) runs through torch.compile (`vaekit.compiling`, which gives
its speed), on the same draws.

A model here is anything with `posterior(x)`, `likelihood(z)`, `prior` and `as_examples(data)` (which
turns the caller's data into (N, D) float32 rows, as `VAE.as_examples` does, or refuses them); with
`compile=True`, also the `config` that `vaekit.compiling` builds the compiled decoder from.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit.compiling import Compiled
from vaekit.config import SEED_RULE, is_seed
from vaekit.distributions import VampPrior
from vaekit.errors import VaekitError
from vaekit.model import VAE, ArrayLike, evaluating, seeded, whole_number
from vaekit.objectives import elbo_terms, log_weights

EVAL_BATCH = 1000
# Codes decoded at once by the estimator (k-chunk x examples). Small enough that a chunk's tensors
# (about 15 MB for a 784-500-500 decoder) mostly stay in the heap that glibc's malloc reuses: at
# 8192 rows they were returned to the OS and page-faulted back every chunk (13,000 faults per
# example at k = 5000, 300 at 1024 rows), about 25% slower on a 2-core CPU. The vaekit command's
# `cli.keep_freed_memory()` stops that at any size (there, 1024 and 2048 rows ran alike).
MAX_ROWS = 1024
# On a GPU a chunk's kernels take microseconds and launching them is the cost: 16x the rows, 16x fewer
# launches per example (not measured: no GPU has been lent to this project yet).
MAX_ROWS_CUDA = 16384
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015, section 5.2


def elbo(model: VAE, x: ArrayLike) -> ArrayLike:
    """Per-example evidence lower bound on log p(x) in nats, one draw of z each (from the caller's random
    stream), shape (N,); x as the model's methods take it, numpy in, numpy out. A measurement, in eval mode
    and without gradients: the differentiable bound to train on is `vaekit.objectives.elbo`."""
    (bound,) = model.batched(x, model.input_size, lambda batch: (elbo_terms(model, batch).elbo,))
    return bound


def average_elbo_terms(model: nn.Module, x: ArrayLike, batch_size: int = EVAL_BATCH, seed: int = 0) -> dict[str, float]:
    """Mean elbo, reconstruction and kl over x, in nats per example (one z per example).

    The noise comes from its own seeded stream, so the figure is repeatable and the
    caller's random state (a training run's, say) is left exactly as it was. At most batch_size rows at a
    time, fewer where the model's activations are large (`VAE.rows_per_batch`: a conv model's feature maps).
    """
    x = model.as_examples(x)
    batch_size = rows_at_once(model, batch_size)
    device = model_device(model)
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    with seeded(seed, device), evaluating(model), torch.no_grad(), prior_held(model):
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device, torch.float32, non_blocking=True)
            terms = elbo_terms(model, batch)
            totals += torch.stack([terms.reconstruction.sum(), terms.kl.sum()]).double()
    reconstruction, kl = (totals / len(x)).tolist()
    return {"elbo": -(reconstruction + kl), "reconstruction": reconstruction, "kl": kl, "n": len(x)}


@dataclass
class ImportanceSampled:
    """Per-example results of the estimator, each (N,) float64 in nats."""

    log_px: torch.Tensor  # log (1/k) sum_i w_i: the k-sample bound, our estimate of log p(x)
    reconstruction: torch.Tensor  # mean over the k draws of -log p(x|z)
    kl: torch.Tensor  # mean over the k draws of log q(z|x) - log p(z): a Monte Carlo KL
    mu: torch.Tensor  # (N, latent) posterior means E_q[z], for the active units
    compiled: bool = False  # whether log p(x|z) ran compiled (False where compiling was not asked for, or failed)

    @property
    def elbo(self) -> torch.Tensor:
        return -(self.reconstruction + self.kl)


def importance_sampled_log_px(
    model: nn.Module, x: ArrayLike, k: int, max_rows: int | None = None, seed: int = 0, progress: bool = False,
    compile: bool = False,
) -> ImportanceSampled:
    """log p(x) per example of x (N, D) or (N, C, H, W) from k importance samples, with the ELBO terms averaged over the same draws.

    Examples are taken max(1, max_rows // k) at a time and their k draws in chunks of at
    most max_rows (default: `default_max_rows` of the model and its device), so at most max_rows
    codes are decoded at once for any k.
    """
    device = model_device(model)
    max_rows = default_max_rows(model, device) if max_rows is None else max_rows
    k, max_rows, seed = whole_number(k, "k"), whole_number(max_rows, "max_rows"), whole_number(seed, "seed")
    for name, value in (("k", k), ("max_rows", max_rows)):
        if value < 1:
            raise VaekitError(f"{name} must be a whole number of at least 1, got {value!r}")
    if not is_seed(seed):
        raise VaekitError(f"seed must be {SEED_RULE}, got {seed!r}")
    x = model.as_examples(x)
    check_float32(model)
    from tqdm.auto import tqdm

    k_chunk = min(k, max_rows)
    batch_size = max(1, max_rows // k_chunk)
    log_likelihood = Compiled(log_likelihood_of(model), model.config) if compile else None
    # The results go into tensors allocated once: thousands of small per-batch tensors kept alive
    # between the chunks' large ones fragmented the heap until it grew without bound (23 GB at k = 5000).
    columns: list[torch.Tensor] = []  # log_px, reconstruction, kl, mu
    bar = tqdm(total=len(x), unit="example", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    with seeded(seed, device), evaluating(model), torch.no_grad(), torch.autocast(device.type, enabled=False), prior_held(model):
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device, torch.float32, non_blocking=True)
            values = log_mean_weight(model, batch, k, k_chunk, log_likelihood)
            if not columns:
                columns = [torch.empty((len(x), *v.shape[1:]), dtype=v.dtype, device=device) for v in values]
            for column, value in zip(columns, values):
                column[start : start + len(batch)] = value
            bar.update(len(batch))
    bar.close()
    ran_compiled = log_likelihood is not None and not log_likelihood.fell_back
    return ImportanceSampled(*(column.cpu() for column in columns), compiled=ran_compiled)


def prior_held(model: nn.Module) -> contextlib.AbstractContextManager:
    """A VampPrior's components encoded once for the whole evaluation (they do not change); nothing for other priors."""
    prior = getattr(model, "prior", None)
    return prior.components_held() if isinstance(prior, VampPrior) else contextlib.nullcontext()


def default_max_rows(model: nn.Module, device: torch.device) -> int:
    """Codes the estimator decodes at once by default: MAX_ROWS on a CPU, MAX_ROWS_CUDA on a GPU, fewer where
    the model's activations are large (`VAE.rows_per_batch`: a conv model's feature maps at full resolution)."""
    return rows_at_once(model, MAX_ROWS_CUDA if device.type == "cuda" else MAX_ROWS)


def rows_at_once(model: nn.Module, most: int) -> int:
    """most, or fewer where the model says its activations are large (a VAE's `rows_per_batch`)."""
    return min(most, model.rows_per_batch()) if hasattr(model, "rows_per_batch") else most


def log_likelihood_of(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(z, x) -> log p(x|z) of the model, as one function of tensors for torch.compile."""

    def log_likelihood(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return model.likelihood(z).log_prob(x)

    return log_likelihood


def log_mean_weight(model: nn.Module, x: torch.Tensor, k: int, k_chunk: int,
                    log_likelihood: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    """(log mean w, mean -log p(x|z), mean log q - log p) over k draws for a batch x, k_chunk draws at a time; and mu."""
    q = model.posterior(x)  # encoded once, shared by every chunk
    log_sum_w = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
    sums = torch.zeros(2, len(x), dtype=torch.float64, device=x.device)
    for start in range(0, k, k_chunk):
        parts = log_weights(model, x, min(k_chunk, k - start), q=q, log_likelihood=log_likelihood)  # each (k_chunk, N)
        log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(parts.log_w, dim=0).double())
        sums += torch.stack([-parts.log_px_z.sum(0), (parts.log_qz_x - parts.log_pz).sum(0)]).double()
    return log_sum_w - math.log(k), sums[0] / k, sums[1] / k, q.mu


def average_iwae_bound(model: nn.Module, x: torch.Tensor, k: int, seed: int = 0) -> float:
    """Mean k-sample IWAE bound over x, in nats per example (repeatable: its own seeded noise)."""
    return importance_sampled_log_px(model, x, k, seed=seed).log_px.mean().item()


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int | None:
    """Latent dimensions u with Cov_x(E_q[u]) > threshold, from posterior means mu (N, latent) (Burda et al. 2015,
    section 5.2); None for fewer than two examples, which have no covariance."""
    if len(mu) < 2:
        return None
    return int((mu.double().var(dim=0) > threshold).sum())


def estimate_nll(
    model: nn.Module, x: ArrayLike, k: int = 5000, max_rows: int | None = None, seed: int = 0, progress: bool = False,
    compile: bool = False, reset_peak_memory: bool = False,
) -> dict[str, Any]:
    """The importance-sampled negative log-likelihood of x and the ELBO terms, in nats per example.

    reset_peak_memory: reset the process's peak-memory counter (on Linux its peak RSS; on a GPU the allocator's)
    so that peak_memory_mb is the estimate's own; by default it is the peak over the process's life, and
    the caller's counters stay as they were. The vaekit command, a process of its own, resets them.

    Keys: nll (= -log p(x), k-sample estimate; positive for discrete data, of any sign for a Gaussian's
    density), nll_std_error (its standard error over examples), elbo, reconstruction, kl (means over the
    same k draws), active_units, latent_size, k, n, seed, max_rows and device (which fix the draws: CPU and
    GPU generators differ), compiled, seconds, peak_memory_mb and memory_measure.
    """
    x = model.as_examples(x)
    device = model_device(model)
    max_rows = default_max_rows(model, device) if max_rows is None else max_rows
    peak_is_this_estimates = reset_peak_memory and reset_peak_memory_counter(device)
    started = time.perf_counter()
    result = importance_sampled_log_px(model, x, k, max_rows=max_rows, seed=seed, progress=progress, compile=compile)
    seconds = time.perf_counter() - started
    report = {
        "nll": -result.log_px.mean().item(),
        "nll_std_error": (result.log_px.std() / math.sqrt(len(x))).item() if len(x) > 1 else None,  # null in JSON, not NaN
        "elbo": result.elbo.mean().item(),
        "reconstruction": result.reconstruction.mean().item(),
        "kl": result.kl.mean().item(),
        "active_units": active_units(result.mu),
        "latent_size": result.mu.shape[1],
        "k": k,
        "n": len(x),
        "seed": seed,
        "max_rows": max_rows,  # with the seed and the device, fixes the draws: the same figure again
        "device": device_name(device),
        "compiled": result.compiled,  # the same draws; log p(x|z) rounded differently (differences ~1e-5 nats)
        "units": "nats per example",
        "seconds": seconds,
    }
    report.update(peak_memory(device, peak_is_this_estimates))
    return report


# -- helpers ------------------------------------------------------------------------------------------


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def device_name(device: torch.device) -> str:
    """"cpu", or the GPU's model ("cuda: NVIDIA H100 80GB HBM3"): a GPU's random draws depend on it."""
    return f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def check_float32(model: nn.Module) -> None:
    """The reported likelihood is a float32 figure: refuse half-precision weights rather than round silently."""
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise VaekitError(f"log p(x) is estimated in float32; the model's weights are {sorted(map(str, dtypes))}")


def reset_peak_memory_counter(device: torch.device) -> bool:
    """Start measuring a peak from here: CUDA's allocator peak, or on Linux the process's peak RSS (VmHWM,
    which writing 5 to /proc/self/clear_refs resets). False where only the process's lifetime peak is known."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory(device: torch.device, since_reset: bool) -> dict[str, Any]:
    """The peak memory since `reset_peak_memory_counter` (or over the process's life): CUDA's allocator peak,
    or on the CPU the process's peak RSS."""
    if device.type == "cuda":
        since = "during the estimate" if since_reset else "over the process's life"
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20, "memory_measure": f"CUDA max allocated {since}"}
    if since_reset:
        status = Path("/proc/self/status").read_text()
        rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
        return {"peak_memory_mb": rss_kb / 1024, "memory_measure": "process peak RSS during the estimate (includes the data and Python)"}
    try:
        import resource  # Unix only
    except ImportError:
        return {"peak_memory_mb": None, "memory_measure": "not measured on this system"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    rss_mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    return {"peak_memory_mb": rss_mb, "memory_measure": "process peak RSS over its life (includes the data and Python)"}

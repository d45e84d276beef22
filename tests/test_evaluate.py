"""The importance-sampled log p(x): exact where it can be, bounded in memory, finite, and on the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import vaekit
from vaekit import VAE
from vaekit.cli import main
from vaekit.distributions import DiagonalGaussian, StandardNormal
from vaekit.errors import VaekitError
from vaekit.evaluate import active_units, estimate_nll, importance_sampled_log_px, log_mean_weight
from vaekit.objectives import iwae_bound

from helpers import break_torch_compile


class LinearGaussian(nn.Module):
    """z ~ N(0, I_L), x|z ~ N(W z + b, s^2 I_D): log p(x) = log N(x; b, W W^T + s^2 I) in closed form.

    W has orthogonal columns, so the true posterior is a diagonal Gaussian; `widen` and `shift`
    make the encoder's q(z|x) deliberately worse than the true posterior.
    """

    def __init__(self, data_size: int = 5, latent_size: int = 2, widen: float = 1.0, shift: float = 0.0):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(data_size, latent_size, dtype=torch.float64))
        self.W = nn.Parameter((q * torch.tensor([2.0, 0.7], dtype=torch.float64)[:latent_size]).float())
        self.b = nn.Parameter(torch.randn(data_size) * 0.3)
        self.log_s = nn.Parameter(torch.tensor(math.log(0.5)))
        self.prior = StandardNormal(latent_size)
        self.widen, self.shift = widen, shift

    def as_examples(self, data: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(data, dtype=torch.float32)  # any real x: a Gaussian density

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        s2 = torch.exp(2 * self.log_s)
        column_norms = self.W.pow(2).sum(0)  # W^T W is diagonal
        variance = 1 / (1 + column_norms / s2)
        mu = variance * ((x - self.b) @ self.W) / s2 + self.shift
        return DiagonalGaussian(mu, 0.5 * torch.log(variance) + math.log(self.widen))

    def likelihood(self, z: torch.Tensor) -> DiagonalGaussian:
        mean = z @ self.W.T + self.b
        return DiagonalGaussian(mean, self.log_s.expand_as(mean))

    def exact_log_px(self, x: torch.Tensor) -> torch.Tensor:
        W, b, s = self.W.double(), self.b.double(), self.log_s.double().exp()
        covariance = W @ W.T + s**2 * torch.eye(len(b), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(b, covariance).log_prob(x.double())


def test_estimate_is_exact_when_q_is_the_true_posterior() -> None:
    model = LinearGaussian()
    x = torch.randn(37, 5) * 2
    exact = model.exact_log_px(x)
    for k, max_rows in [(1, 8), (7, 8), (50, 16)]:  # several example batches and k-chunks
        estimate = importance_sampled_log_px(model, x, k=k, max_rows=max_rows).log_px
        torch.testing.assert_close(estimate, exact, atol=2e-4, rtol=0)


def test_estimate_converges_to_log_px_from_below_with_a_poor_posterior() -> None:
    model = LinearGaussian(widen=1.6, shift=0.3)
    x = torch.randn(20, 5) * 2
    exact = model.exact_log_px(x).mean().item()
    k1 = importance_sampled_log_px(model, x, k=1).log_px.mean().item()
    k4000 = importance_sampled_log_px(model, x, k=4000, max_rows=1000).log_px.mean().item()
    assert k1 < exact - 0.3  # a loose bound at k = 1 ...
    assert abs(k4000 - exact) < 0.02  # ... and tight at k = 4000


def test_elbo_terms_of_the_estimate_match_the_closed_form_kl() -> None:
    model = LinearGaussian(widen=1.3)
    x = torch.randn(10, 5)
    result = importance_sampled_log_px(model, x, k=20000, max_rows=5000)
    closed_form_kl = model.posterior(x).kl_standard_normal().double()
    torch.testing.assert_close(result.kl, closed_form_kl.detach(), atol=0.03, rtol=0)
    assert (result.elbo <= result.log_px + 1e-9).all()  # Jensen: the ELBO is below the k-sample bound


def test_memory_is_bounded_by_max_rows_whatever_k() -> None:
    model = VAE([16, 8, 3])
    rows: list[int] = []
    model.decoder.register_forward_hook(lambda module, args, out: rows.append(out.shape[:-1].numel()))
    x = (torch.rand(5, 16) > 0.5).float()
    importance_sampled_log_px(model, x, k=1000, max_rows=128)
    assert max(rows) <= 128
    assert sum(rows) == 5 * 1000  # every draw decoded exactly once


def test_estimator_and_iwae_bound_share_their_log_weights() -> None:
    model = LinearGaussian(widen=2.0, shift=0.5)
    x = torch.randn(6, 5)
    torch.manual_seed(3)
    estimate = log_mean_weight(model, x, k=30, k_chunk=30)[0]
    torch.manual_seed(3)
    bound = iwae_bound(model, x, k=30)
    torch.testing.assert_close(estimate, bound.double(), atol=1e-5, rtol=0)


def test_extreme_log_weights_stay_finite() -> None:
    model = VAE([16, 8, 3])
    with torch.no_grad():
        model.decoder.logits.bias.fill_(-60.0)  # every pixel that is on costs about 60 nats
        model.encoder.log_sigma.bias.fill_(-8.0)  # a posterior far narrower than the prior
    x = torch.ones(4, 16)
    report = estimate_nll(model, x, k=300)
    assert math.isfinite(report["nll"]) and report["nll"] > 16 * 55


def test_report_has_the_documented_keys_and_signs() -> None:
    model = VAE([16, 8, 3])
    x = (torch.rand(30, 16) > 0.5).float()
    report = vaekit.estimate_nll(model, x, k=40)  # the public name
    assert {"nll", "elbo", "reconstruction", "kl", "active_units", "k", "n", "peak_memory_mb"} <= set(report)
    assert report["nll"] > 0 and report["k"] == 40 and report["n"] == 30
    assert report["max_rows"] == 1024 and report["device"] == "cpu"  # with the seed, what fixes the draws
    assert report["nll"] <= -report["elbo"] + 1e-6  # -log p(x) estimate is below -ELBO
    assert report["elbo"] == pytest.approx(-(report["reconstruction"] + report["kl"]))
    assert 0 <= report["active_units"] <= 3


def test_the_standard_error_is_the_spread_of_log_px_over_root_n() -> None:
    model = LinearGaussian()  # q is the true posterior: every draw gives each example's exact log p(x)
    x = torch.randn(40, 5) * 2
    report = estimate_nll(model, x, k=3)
    assert report["nll_std_error"] == pytest.approx(float(model.exact_log_px(x).detach().std() / math.sqrt(40)), rel=1e-4)


def test_one_example_has_no_spread_and_no_active_units_and_still_gives_strict_json() -> None:
    report = estimate_nll(VAE([16, 8, 3]), torch.ones(1, 16), k=10)
    assert report["nll_std_error"] is None and report["active_units"] is None
    json.loads(json.dumps(report), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


def test_dropout_is_off_while_evaluating_and_the_mode_is_restored() -> None:
    torch.manual_seed(0)
    with_dropout = VAE([16, 8, 3], dropout=0.5)
    without = VAE([16, 8, 3])
    without.load_state_dict(with_dropout.state_dict())
    x = (torch.rand(20, 16) > 0.5).float()
    assert with_dropout.training
    assert estimate_nll(with_dropout, x, k=10)["nll"] == estimate_nll(without, x, k=10)["nll"]
    assert vaekit.evaluate.average_elbo_terms(with_dropout, x) == vaekit.evaluate.average_elbo_terms(without, x)
    assert with_dropout.training


def test_compiled_it_gives_the_same_estimate_from_the_same_draws(recwarn) -> None:
    """--compile: log p(x|z) through torch.compile, over chunks of two shapes (32 draws, then 6)."""
    model = VAE([16, 8, 3])
    x = (torch.rand(5, 16) > 0.5).float()
    eager = estimate_nll(model, x, k=70, max_rows=32)
    compiled = estimate_nll(model, x, k=70, max_rows=32, compile=True)
    assert compiled["compiled"] and not eager["compiled"]
    assert not [w for w in recwarn if "torch.compile failed" in str(w.message)]  # it compiled, and ran compiled
    for key in ("nll", "elbo", "reconstruction", "kl"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-6, abs=1e-4), key


def test_compiled_it_falls_back_to_eager_where_compiling_fails(monkeypatch) -> None:
    model = VAE([16, 8, 3])
    x = (torch.rand(5, 16) > 0.5).float()
    eager = importance_sampled_log_px(model, x, k=40, max_rows=16)
    break_torch_compile(monkeypatch)
    with pytest.warns(UserWarning, match="torch.compile failed .*InvalidCxxCompiler.*going on without it"):
        fallen_back = importance_sampled_log_px(model, x, k=40, max_rows=16, compile=True)
    torch.testing.assert_close(fallen_back.log_px, eager.log_px, rtol=0, atol=0)
    assert not fallen_back.compiled  # and the report says so
    with pytest.warns(UserWarning, match="going on without it"):
        assert estimate_nll(model, x, k=40, max_rows=16, compile=True)["compiled"] is False


def test_active_units_follow_burdas_threshold() -> None:
    mu = torch.stack([torch.randn(2000) * 0.5, torch.randn(2000) * 0.05, torch.zeros(2000)], dim=1)
    assert active_units(mu) == 1  # variances 0.25, 0.0025 and 0
    assert active_units(mu, threshold=0.001) == 2


def test_half_precision_models_are_refused() -> None:
    model = VAE([16, 8, 3]).to(torch.bfloat16)
    with pytest.raises(VaekitError, match="float32"):
        estimate_nll(model, torch.ones(2, 16), k=2)


def test_cli_evaluate_nll_json(tmp_path, capsys) -> None:
    assert main(["train", "--arch", "64,16,2", "--max-steps", "3", "--out", str(tmp_path), "--no-progress"]) == 0
    run = next(tmp_path.iterdir())
    capsys.readouterr()
    assert main(["evaluate", str(run), "--nll", "--k", "20", "--limit", "25", "--split", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["k"] == 20 and report["n"] == 25 and report["split"] == "test" and not report["compiled"]
    assert report["nll"] > 0 and {"elbo", "reconstruction", "kl", "active_units"} <= set(report)


def test_cli_evaluate_nll_compiled(tmp_path, capsys) -> None:
    assert main(["train", "--arch", "64,16,2", "--max-steps", "3", "--out", str(tmp_path), "--no-progress"]) == 0
    run = next(tmp_path.iterdir())
    capsys.readouterr()
    assert main(["evaluate", str(run), "--nll", "--k", "20", "--limit", "25", "--json", "--compile"]) == 0
    assert json.loads(capsys.readouterr().out)["compiled"]


def test_cli_rejects_a_bad_k(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(tmp_path), "--nll", "--k", "0"])
    assert exit_info.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_images_and_arrays_are_taken_as_the_models_own_methods_take_them() -> None:
    conv = VAE([48, 2], model="conv", image_shape=(3, 4, 4), conv_channels=(4,), conv_kernels=(3,), conv_strides=(2,))
    images = torch.rand(3, 3, 4, 4)
    flat = importance_sampled_log_px(conv, images.reshape(3, 48), k=5).log_px
    assert torch.equal(importance_sampled_log_px(conv, images, k=5).log_px, flat)
    assert torch.equal(importance_sampled_log_px(conv, images.numpy(), k=5).log_px, flat)
    pixels = (images * 255).round().to(torch.uint8)
    assert estimate_nll(conv, pixels, k=5)["nll"] == pytest.approx(estimate_nll(conv, pixels / 255, k=5)["nll"], abs=1e-4)
    with pytest.raises(VaekitError, match=r"the model takes values in \[0, 1\]"):
        estimate_nll(conv, pixels.float(), k=5)  # 0-255 floats: a positive Bernoulli log-likelihood otherwise


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's /proc resets the peak RSS")
def test_the_reported_peak_memory_is_the_estimates_own_not_the_processs_lifetime(tmp_path):
    script = (
        "import resource, torch, vaekit\n"
        "big = torch.ones(200_000_000); del big\n"  # 800 MB before the estimate, handed back to the system
        "lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "model, x = vaekit.VAE([64, 32, 2]), torch.zeros(10, 64)\n"
        "kept = vaekit.estimate_nll(model, x, k=100)['peak_memory_mb']\n"  # the caller's counter is left alone
        "still = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "report = vaekit.estimate_nll(model, x, k=100, reset_peak_memory=True)\n"
        "print(report['peak_memory_mb'], lifetime, kept, still)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    estimate, lifetime, kept, still = map(float, result.stdout.split())
    assert lifetime > 900 and estimate < lifetime - 500
    assert kept >= lifetime and still >= lifetime


def test_a_vampprior_is_encoded_once_per_estimate_with_the_same_numbers(monkeypatch) -> None:
    import contextlib

    import vaekit.evaluate

    model = VAE([16, 8, 3], prior="vamp", pseudo_inputs=5)
    x = (torch.rand(6, 16) > 0.5).float()
    calls = []
    encode = model.prior.encode
    model.prior.encode = lambda u: calls.append(len(u)) or encode(u)
    held = estimate_nll(model, x, k=40, max_rows=16)  # 6 examples, 3 chunks of draws each
    assert calls == [5] and model.prior.held is None  # encoded once, nothing held after
    monkeypatch.setattr(vaekit.evaluate, "prior_held", lambda model: contextlib.nullcontext())
    assert estimate_nll(model, x, k=40, max_rows=16)["nll"] == held["nll"] and len(calls) == 1 + 6 * 3


def test_a_conv_model_with_large_feature_maps_is_evaluated_in_fewer_rows_at_a_time(monkeypatch):
    import vaekit.evaluate as evaluate

    model = VAE([3 * 64 * 64, 8, 2], model="conv", image_shape=(3, 64, 64), conv_channels=(16,))
    rows = model.rows_per_batch()
    assert 1 < rows < evaluate.EVAL_BATCH and rows < evaluate.MAX_ROWS  # 16 maps at 64 x 64 per example: 256 rows
    seen = []
    real = evaluate.elbo_terms
    monkeypatch.setattr(evaluate, "elbo_terms", lambda model, x: seen.append(len(x)) or real(model, x))
    x = torch.rand(rows + 5, 3 * 64 * 64)
    evaluate.average_elbo_terms(model, x)
    assert seen == [rows, 5]
    assert estimate_nll(model, x[:2], k=3 * rows)["max_rows"] == rows  # the codes decoded at once, too
    dense = VAE([64, 16, 2])
    assert estimate_nll(dense, torch.rand(2, 64).round(), k=4)["max_rows"] == evaluate.MAX_ROWS  # as before for dense models

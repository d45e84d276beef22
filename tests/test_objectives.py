"""Objectives against closed forms: the ELBO, the IWAE bound, beta, free bits, and the VampPrior."""

from __future__ import annotations

import math

import pytest
import torch

import vaekit
from vaekit import VAE, TrainConfig
from vaekit.distributed import SharedNoise
from vaekit.distributions import DiagonalGaussian, StandardNormal, VampPrior
from vaekit.errors import VaekitError
from vaekit.objectives import elbo, elbo_terms, free_bits_kl, iwae_bound, kl_divergence, log_mean_exp, loss


@pytest.fixture
def model() -> VAE:
    return VAE([12, 10, 3])


@pytest.fixture
def x() -> torch.Tensor:
    return (torch.rand(4, 12) > 0.5).float()


def test_iwae_with_one_sample_equals_the_elbo_in_expectation(model: VAE, x: torch.Tensor) -> None:
    repeats = x.repeat(4000, 1)  # many independent draws per example
    with torch.no_grad():
        bound = iwae_bound(model, repeats, k=1).view(4000, 4)
        reference = elbo(model, repeats).view(4000, 4)  # closed-form KL
    difference = (bound - reference).mean(0)
    standard_error = (bound - reference).std(0) / math.sqrt(4000)
    assert (difference.abs() < 4 * standard_error + 1e-3).all()


def test_iwae_with_one_sample_is_the_monte_carlo_elbo_draw_for_draw(x: torch.Tensor) -> None:
    model = VAE([12, 10, 3], prior="vamp", pseudo_inputs=5)  # a prior with a Monte Carlo KL
    torch.manual_seed(1)
    bound = iwae_bound(model, x, k=1)
    torch.manual_seed(1)
    reference = elbo_terms(model, x).elbo
    torch.testing.assert_close(bound, reference)


def test_the_bound_does_not_decrease_with_k(model: VAE, x: torch.Tensor) -> None:
    repeats = x.repeat(500, 1)
    with torch.no_grad():
        bounds = [iwae_bound(model, repeats, k=k).mean().item() for k in (1, 5, 50)]
    assert bounds[0] < bounds[1] < bounds[2]


def test_log_mean_exp_is_exact_and_finite_for_extreme_log_weights() -> None:
    log_w = torch.tensor([[-1e4, 800.0, -3e38], [-1e4, 800.0 + math.log(3), -3e38]])
    result = log_mean_exp(log_w, dim=0)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result[:2], torch.tensor([-1e4, 800.0 + math.log(2)]))
    assert torch.isfinite(log_mean_exp(torch.full((10, 2), -3e38), dim=0)).all()  # every weight tiny


def test_closed_form_kl_matches_torch_distributions() -> None:
    mu, log_sigma = torch.randn(6, 4), torch.randn(6, 4) * 0.5
    q = DiagonalGaussian(mu, log_sigma)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, log_sigma.exp()), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    torch.testing.assert_close(q.kl_standard_normal(), reference)


def test_beta_weights_the_kl(model: VAE, x: torch.Tensor) -> None:
    torch.manual_seed(2)
    terms = elbo_terms(model, x)
    torch.manual_seed(2)
    cost, _ = loss(model, x, beta=0.25)
    torch.testing.assert_close(cost, (terms.reconstruction + 0.25 * terms.kl).mean())


def test_free_bits_floor_the_kl_of_each_dimension(model: VAE, x: torch.Tensor) -> None:
    q = model.posterior(x)
    per_dim = q.kl_standard_normal_per_dim().mean(0)
    expected = torch.maximum(per_dim, torch.tensor(0.5)).sum()
    torch.testing.assert_close(free_bits_kl(model, q, 0.5), expected)
    # the floor applies to the batch's mean KL of a dimension, not to each example's: here 1.0, not (2 + 0.5) / 2
    spread = DiagonalGaussian(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), torch.zeros(2, 3))
    assert free_bits_kl(model, spread, 0.5).item() == pytest.approx(1.0 + 0.5 + 0.5)
    huge = free_bits_kl(model, q, 1e3)  # every dimension under the floor: a constant, no gradient
    assert huge.item() == pytest.approx(3e3)
    huge.backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.encoder.parameters())


def test_free_bits_split_over_two_ranks_train_as_the_whole_batch() -> None:
    # two ranks of a torchrun job, simulated: each floors the whole batch's KL per dimension (batch_mean), its
    # cost is scaled by its share of the batch and DDP averages the gradients: the gradient of one process
    torch.manual_seed(0)
    model, x = VAE([16, 8, 4]), (torch.rand(12, 16) > 0.5).float()
    halves = [slice(0, 6), slice(6, 12)]
    with torch.no_grad():
        per_example = model.posterior(x).kl_standard_normal_per_dim()
    whole, first = per_example.mean(0), per_example[halves[0]].mean(0)
    j = int((whole - first).abs().argmax())
    free_bits = float(whole[j] + first[j]) / 2  # dimension j is floored on the whole batch or on one half, not both

    def gradient(rows: slice, batch_mean) -> torch.Tensor:
        model.zero_grad()
        with SharedNoise(0, torch.device("cpu")).batch(model, len(x), rows):  # each rank its rows of the same draws
            cost, _ = loss(model, x[rows], free_bits=free_bits, batch_mean=batch_mean)
        (cost * (6 * 2 / 12)).backward() if batch_mean else cost.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    one_process = gradient(slice(None), None)
    two_ranks = sum(gradient(rows, lambda values: whole) for rows in halves) / 2
    torch.testing.assert_close(two_ranks, one_process, rtol=1e-5, atol=1e-6)


def test_free_bits_refuse_a_vampprior(x: torch.Tensor) -> None:
    model = VAE([12, 10, 3], prior="vamp", pseudo_inputs=5)
    with pytest.raises(VaekitError, match="standard normal"):
        loss(model, x, free_bits=0.1)


def test_iwae_cost_is_the_negated_mean_bound(model: VAE, x: torch.Tensor) -> None:
    torch.manual_seed(4)
    cost, terms = loss(model, x, objective="iwae", k=7)
    torch.manual_seed(4)
    torch.testing.assert_close(cost, -iwae_bound(model, x, k=7).mean())
    assert terms.reconstruction.shape == (4,)


# -- the VampPrior ---------------------------------------------------------------------------------------


def test_vampprior_log_prob_is_the_mixture_of_encoder_posteriors() -> None:
    model = VAE([12, 10, 3], prior="vamp", pseudo_inputs=7)
    z = torch.randn(5, 2, 3)
    mu, log_sigma = model.encoder(model.prior.pseudo_inputs)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(7)),
        torch.distributions.Independent(torch.distributions.Normal(mu, log_sigma.exp()), 1),
    )
    torch.testing.assert_close(model.prior.log_prob(z), mixture.log_prob(z), atol=1e-4, rtol=1e-5)


def test_pairwise_log_prob_matches_the_broadcast_formula() -> None:
    components = DiagonalGaussian(torch.randn(6, 4), torch.randn(6, 4) * 0.3)
    z = torch.randn(3, 5, 4)
    torch.testing.assert_close(components.log_prob_pairwise(z), components.log_prob(z.unsqueeze(-2)), atol=1e-4, rtol=1e-5)


def test_pairwise_log_prob_keeps_its_precision_for_narrow_components() -> None:
    # near a component of sigma = 0.01 in 50 dimensions the expanded terms are ~1e6 and cancel to ~50
    torch.manual_seed(0)
    mu, log_sigma = torch.randn(20, 50), torch.full((20, 50), math.log(0.01))
    z = mu[torch.randint(20, (64,))] + 0.01 * torch.randn(64, 50)
    exact = DiagonalGaussian(mu.double(), log_sigma.double()).log_prob(z.double().unsqueeze(-2))
    pairwise = DiagonalGaussian(mu, log_sigma).log_prob_pairwise(z)
    assert pairwise.dtype == torch.float32
    torch.testing.assert_close(pairwise.double(), exact, rtol=1e-6, atol=1e-3)  # float32's own rounding, no more


def test_vampprior_learns_its_pseudo_inputs_and_uses_the_kl_estimate(x: torch.Tensor) -> None:
    model = VAE([12, 10, 3], prior="vamp", pseudo_inputs=5)
    assert isinstance(model.prior, VampPrior) and not isinstance(model.prior, StandardNormal)
    cost, _ = loss(model, x)
    cost.backward()
    assert model.prior.pseudo_inputs_raw.grad.abs().sum() > 0
    q = model.posterior(x)
    z = q.rsample()
    mu, log_sigma = model.encoder(model.prior.pseudo_inputs)
    prior = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(5)),
        torch.distributions.Independent(torch.distributions.Normal(mu, log_sigma.exp()), 1),
    )
    posterior = torch.distributions.Independent(torch.distributions.Normal(q.mu, q.sigma), 1)
    torch.testing.assert_close(kl_divergence(model, q, z), posterior.log_prob(z) - prior.log_prob(z))  # the one-draw estimate
    assert model.sample(9).shape == (9, 12)


def test_the_vampprior_is_one_distribution_in_training_too() -> None:
    # dropout is for the data's passes through the encoder: the pseudo-inputs' would make p(z) random at every step
    model = VAE([12, 10, 3], prior="vamp", pseudo_inputs=5, dropout=0.5).train()
    z = torch.randn(7, 3)
    in_training = [model.prior.log_prob(z) for _ in range(3)]
    in_evaluation = model.eval().prior.log_prob(z)
    assert all(torch.equal(log_p, in_evaluation) for log_p in in_training)
    assert model.train().encoder.training  # and the encoder is left in the mode it was in


def test_vampprior_pseudo_inputs_stay_in_the_data_range() -> None:
    model = VAE([4, 10, 3], prior="vamp", pseudo_inputs=2)
    with torch.no_grad():
        model.prior.pseudo_inputs_raw.copy_(torch.tensor([[-1.0, 0.3, 2.0, 1.0], [0.0, -0.2, 0.7, 5.0]]))
    assert model.prior.pseudo_inputs.tolist() == [[0.0, pytest.approx(0.3), 1.0, 1.0], [0.0, 0.0, pytest.approx(0.7), 1.0]]


def test_vampprior_draws_from_every_component_alike() -> None:
    model = VAE([12, 4, 2], prior="vamp", pseudo_inputs=2, nonlinearity="relu")
    with torch.no_grad():
        model.prior.pseudo_inputs_raw.copy_(torch.tensor([[-20.0] * 12, [20.0] * 12]))  # u_1 = 0, u_2 = 1 after the clamp
        (hidden,) = [m for m in model.encoder.hidden if isinstance(m, torch.nn.Linear)]
        hidden.weight.fill_(1.0 / 12)  # h = (mean of u) in every unit
        hidden.bias.zero_()
        model.encoder.mu.weight.fill_(10.0 / 4)  # mu = 10 * mean of u
        model.encoder.mu.bias.zero_()
        model.encoder.log_sigma.weight.zero_()
        model.encoder.log_sigma.bias.fill_(-5.0)
    components = model.prior.components()
    assert torch.allclose(components.mu, torch.tensor([[0.0, 0.0], [10.0, 10.0]]), atol=1e-4)
    torch.manual_seed(0)
    z = model.prior.sample(4000)
    near_second = (z[:, 0] > 5).float().mean()
    assert abs(float(near_second) - 0.5) < 0.05  # 4000 fair coin flips: 0.05 is 6 standard deviations
    assert ((z - 5).abs() > 4.9).all()  # every draw sits at one of the two components


def test_the_l2_penalty_is_half_the_squared_weights_and_leaves_biases_alone() -> None:
    from vaekit.objectives import l2_penalty

    model = VAE([12, 10, 3])
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    assert torch.allclose(l2_penalty(model), sum(w.pow(2).sum() for w in weights) / 2)
    with torch.no_grad():
        for w in weights:
            w.zero_()
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.fill_(3.0)
    assert l2_penalty(model).item() == 0.0


def test_the_prior_is_saved_and_rebuilt(tmp_path) -> None:
    model = VAE([12, 10, 3], prior="vamp", pseudo_inputs=5)
    with torch.no_grad():
        model.prior.pseudo_inputs_raw.uniform_()
    loaded = vaekit.load(model.save(tmp_path / "run"))
    assert loaded.config.prior == "vamp"
    torch.testing.assert_close(loaded.prior.pseudo_inputs, model.prior.pseudo_inputs)
    z = torch.randn(4, 3)
    torch.testing.assert_close(loaded.prior.log_prob(z), model.prior.log_prob(z))
    torch.manual_seed(0)
    assert torch.isfinite(loaded.sample(3)).all()


def test_a_loaded_prior_keeps_using_its_own_encoder(tmp_path) -> None:
    import copy

    model = VAE([12, 10, 3], prior="vamp", pseudo_inputs=5)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.encoder.mu.bias.add_(5.0)
    z = torch.randn(4, 3)
    assert not torch.allclose(twin.prior.log_prob(z), model.prior.log_prob(z))


def test_objective_options_are_checked() -> None:
    with pytest.raises(VaekitError, match="objective elbo"):
        TrainConfig(objective="iwae", warmup_epochs=5)
    with pytest.raises(VaekitError, match="iwae-k"):
        TrainConfig(objective="iwae", iwae_k=0)
    with pytest.raises(VaekitError, match="lr-decay"):
        TrainConfig(lr_schedule="plateau", lr_decay=1.5)
    with pytest.raises(VaekitError, match="--dist-timeout must be positive and at most 1e\\+07 seconds"):
        TrainConfig(dist_timeout=1e20)  # torch.distributed overflows: "internal error: OverflowError"
    with pytest.raises(VaekitError, match="prior"):
        vaekit.ModelConfig(architecture=(12, 10, 3), prior="gaussian-mixture")

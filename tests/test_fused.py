"""The hand-written dense ELBO and its gradient (vaekit.fused) against autograd's, and when the trainer uses it."""

import functools
import warnings

import pytest
import torch
import torch._dynamo

from vaekit import VAE, TrainConfig, train
from vaekit.distributed import Cluster
from vaekit.fused import HAND_WRITTEN_ACTIVATIONS, DenseElbo, applies, why_not
from vaekit.train import BatchCost, make_batch_cost
from vaekit.objectives import l2_penalty, loss

from helpers import break_torch_compile, quick_config


def fixed_noise(model: VAE, seed: int = 3) -> None:
    """Make every draw of eps the same tensor, so both paths see the same z."""
    eps = {}

    def noise(shape, dtype):
        if shape not in eps:
            eps[shape] = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(model.device)
        return eps[shape]

    model.noise = noise


def autograd_gradients(model: VAE, x: torch.Tensor, beta: float, l2: float, bf16: bool = False) -> tuple[torch.Tensor, list]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        cost, _ = loss(model, x, objective="elbo", beta=beta)
        cost = cost + l2 * l2_penalty(model)
    cost.backward()
    return cost.detach(), [p.grad.clone() for p in model.parameters()]


def fused_gradients(model: VAE, x: torch.Tensor, beta: float, l2: float, precision: str = "fp32") -> tuple[torch.Tensor, list]:
    """The hand-written cost and gradient, unclipped."""
    cost, _, _, finite = DenseElbo(model, TrainConfig(l2=l2, precision=precision))(x, beta, clip=0)
    assert finite
    return cost, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("nonlinearity", ["elu", "relu", "tanh"])
@pytest.mark.parametrize("architecture", [[64, 32, 16, 4], [64, 8, 2]])
def test_the_gradient_is_autograds(digits, nonlinearity, architecture):
    model = VAE(architecture, nonlinearity=nonlinearity)
    assert_same_cost_and_gradient(model, digits.train.x[:50], beta=0.7, l2=0.01, tolerances=((1e-6, 1e-5), (1e-5, 1e-7)))


def assert_same_cost_and_gradient(model: VAE, x: torch.Tensor, beta: float, l2: float, tolerances: tuple) -> None:
    """The hand-written cost and gradient against autograd's, on the same draws; tolerances: (rtol, atol) of each."""
    fixed_noise(model)
    expected_cost, expected = autograd_gradients(model, x, beta=beta, l2=l2)
    cost, grads = fused_gradients(model, x, beta=beta, l2=l2)
    (cost_rtol, cost_atol), (rtol, atol) = tolerances
    torch.testing.assert_close(cost, expected_cost, rtol=cost_rtol, atol=cost_atol)
    for (name, _), got, want in zip(model.named_parameters(), grads, expected):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN_ACTIVATIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_nonlinearitys_derivative_is_autograds_on_saturated_units_too(name, dtype):
    activation, activation_grad = HAND_WRITTEN_ACTIVATIONS[name]
    a = torch.linspace(-8, 3, 45, dtype=dtype).requires_grad_()  # elu's derivative exp(a) is 3e-4 at -8
    h = activation(a)
    grad = torch.rand(45, dtype=dtype) + 0.5
    (expected,) = torch.autograd.grad(h, a, grad)
    assert torch.equal(activation_grad(grad, a.detach(), h.detach()), expected)


def test_the_terms_are_the_elbos(digits):
    model = VAE([64, 16, 2])
    fixed_noise(model)
    x = digits.train.x[:40]
    _, reconstruction, kl, _ = DenseElbo(model, TrainConfig())(x, beta=0.25, clip=5.0)
    from vaekit.objectives import elbo_terms

    terms = elbo_terms(model, x)
    torch.testing.assert_close(reconstruction, terms.reconstruction.mean().detach())
    torch.testing.assert_close(kl, terms.kl.mean().detach())


def test_bf16_agrees_with_autocast_to_its_rounding(digits):
    model = VAE([64, 32, 4])
    fixed_noise(model)
    x = digits.train.x[:64]
    expected_cost, expected = autograd_gradients(model, x, beta=1.0, l2=0.0, bf16=True)
    cost, grads = fused_gradients(model, x, beta=1.0, l2=0.0, precision="bf16")
    torch.testing.assert_close(cost, expected_cost, rtol=1e-4, atol=1e-3)  # the same bf16 forward pass
    for (name, _), got, want in zip(model.named_parameters(), grads, expected):
        scale = want.abs().max()
        assert (got - want).abs().max() <= 0.02 * scale, name  # bfloat16 keeps 8 significant bits


def test_it_clips_each_gradient_value_as_the_trainer_would(digits):
    model = VAE([64, 16, 2])
    fixed_noise(model)
    x = digits.train.x[:30]
    _, unclipped = fused_gradients(model, x, beta=1.0, l2=0.01)
    clip = 0.5 * min(g.abs().max() for g in unclipped)  # every tensor has values beyond it
    _, _, _, finite = DenseElbo(model, TrainConfig(l2=0.01))(x, 1.0, clip)
    assert finite
    for got, want in zip([p.grad for p in model.parameters()], unclipped):
        torch.testing.assert_close(got, want.clamp(-clip, clip), rtol=0, atol=0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_it_says_whether_the_cost_and_gradient_were_finite(digits, precision):
    model = VAE([64, 16, 2])
    step = DenseElbo(model, TrainConfig(precision=precision))
    x = digits.train.x[:30].clone()
    assert step(x, 1.0, 5.0)[3]
    x[7, 5] = float("nan")
    assert not step(x, 1.0, 5.0)[3]
    with torch.no_grad():  # a gradient that overflows: clipped, it would look finite, but the check saw it before
        model.decoder.logits.weight[0, 0] = 3e38
    cost, _, _, finite = step(digits.train.x[:30], 1.0, 5.0)
    assert not finite


def test_each_call_overwrites_the_gradient(digits):
    model = VAE([64, 16, 2])
    fixed_noise(model)
    step = DenseElbo(model, TrainConfig())
    x = digits.train.x[:30]
    step(x, 1.0, 5.0)
    first = [p.grad.clone() for p in model.parameters()]
    step(x, 1.0, 5.0)
    assert all(torch.equal(a, p.grad) for a, p in zip(first, model.parameters()))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_it_computes_the_same_gradient(digits, precision, recwarn):
    """--compile: torch.compile's kernels give the eager numbers, also as beta changes (the second beta
    recompiles with beta symbolic, which the third then uses)."""
    model = VAE([64, 32, 4])
    fixed_noise(model)
    x = digits.train.x[:64]
    step = DenseElbo(model, TrainConfig(l2=1e-3, precision=precision, compile=True))
    tolerance = 1e-4 if precision == "fp32" else 0.02  # fused kernels round bf16 intermediates differently
    for beta in (1.0, 0.25, 0.5):
        expected_cost, expected = fused_gradients(model, x, beta=beta, l2=1e-3, precision=precision)
        cost, _, _, _ = step(x, beta, 0)
        torch.testing.assert_close(cost, expected_cost, rtol=tolerance / 10, atol=0)
        for got, want in zip([p.grad for p in model.parameters()], expected):
            assert (got - want).abs().max() <= tolerance * want.abs().max()
    assert not [w for w in recwarn if "torch.compile failed" in str(w.message)]  # it compiled, and ran compiled


def test_compiled_models_of_other_architectures_compile_their_own_and_the_same_reuses(digits, recwarn):
    """A sweep in one process: each architecture has torch.compile's recompiles to itself (here one each),
    and a second model of an architecture already compiled (a resumed run, say) compiles nothing."""
    from torch._dynamo.utils import counters

    x = digits.train.x[:32]
    before = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(recompile_limit=1):
        for sizes in ([64, 16, 2], [64, 20, 3], [64, 16, 2]):
            DenseElbo(VAE(sizes), TrainConfig(compile=True))(x, 1.0, 0)
    assert counters["stats"]["unique_graphs"] - before == 2
    assert not [w for w in recwarn if "torch.compile failed" in str(w.message)]


def test_compiled_it_falls_back_to_eager_where_compiling_fails(digits, monkeypatch):
    break_torch_compile(monkeypatch)
    model = VAE([64, 16, 2])
    fixed_noise(model)
    x = digits.train.x[:32]
    expected_cost, expected = fused_gradients(model, x, beta=1.0, l2=0.0)
    step = DenseElbo(model, TrainConfig(compile=True))
    with pytest.warns(UserWarning, match="torch.compile failed .*InvalidCxxCompiler.*going on without it"):
        cost, _, _, _ = step(x, 1.0, 0)
    torch.testing.assert_close(cost, expected_cost)
    for got, want in zip([p.grad for p in model.parameters()], expected):
        torch.testing.assert_close(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning, not one per step
        step(x, 1.0, 0)


def test_it_applies_to_vae_tfs_model_alone():
    dense = VAE([64, 16, 2])
    assert applies(dense, TrainConfig(), world_size=1)
    assert applies(VAE([64, 16, 2], nonlinearity="tanh"), TrainConfig(precision="bf16", l2=0.1, beta=0.5), world_size=1)
    assert not applies(dense, TrainConfig(fused=False), world_size=1)
    assert not applies(dense, TrainConfig(), world_size=2)
    assert not applies(dense, TrainConfig(objective="iwae"), world_size=1)
    assert not applies(dense, TrainConfig(free_bits=0.1), world_size=1)
    for options, reason in ((dict(dropout=0.1), "--dropout"), (dict(nonlinearity="softplus"), "--nonlinearity softplus"),
                            (dict(prior="vamp", pseudo_inputs=4), "--prior vamp"), (dict(likelihood="gaussian"), "--likelihood gaussian")):
        assert not applies(VAE([64, 16, 2], **options), TrainConfig(), world_size=1), options
        assert why_not(VAE([64, 16, 2], **options), TrainConfig(), world_size=1).startswith(reason)
    assert why_not(dense, TrainConfig(), world_size=1) is None
    conv = VAE([64, 4], model="conv", image_shape=(1, 8, 8), conv_channels=(4,))
    assert not applies(conv, TrainConfig(), world_size=1)


class TemperedVAE(VAE):
    def likelihood(self, z):
        return super().likelihood(z * 0.5)


def frozen_decoder() -> VAE:
    model = VAE([64, 16, 2])
    model.decoder.requires_grad_(False)
    return model


def with_layer_norm() -> VAE:
    model = VAE([64, 16, 2])
    model.encoder.hidden = torch.nn.Sequential(model.encoder.hidden[0], torch.nn.LayerNorm(16), *model.encoder.hidden[1:])
    return model


@pytest.mark.parametrize("make", [lambda: TemperedVAE([64, 16, 2]), frozen_decoder, with_layer_norm])
def test_a_model_changed_after_it_was_built_trains_through_autograd_as_it_is(digits, tmp_path, make):
    model = make()
    assert not applies(model, TrainConfig(), world_size=1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train(model, digits, quick_config(tmp_path, max_steps=5))
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert changed == trainable  # the frozen weights stay, the LayerNorm's weights learn
    if isinstance(model, TemperedVAE):  # its own likelihood, not the stock one, was trained
        stock = VAE([64, 16, 2])
        stock.load_state_dict(dict(before))
        train(stock, digits, quick_config(tmp_path, max_steps=5))
        assert not torch.equal(stock.decoder.logits.weight, model.decoder.logits.weight)


def elu_of(model: VAE) -> torch.nn.ELU:
    return next(m for m in model.encoder.modules() if isinstance(m, torch.nn.ELU))


ATTACHMENTS = {  # what a PyTorch user attaches to a model without changing its modules or weights
    "forward hook": lambda model: model.decoder.logits.register_forward_hook(lambda module, args, out: out * 0.5),
    "forward pre-hook": lambda model: model.decoder.register_forward_pre_hook(lambda module, args: (args[0] * 0.5,)),
    "backward hook": lambda model: model.encoder.register_full_backward_hook(lambda module, grad_in, grad_out: None),
    "gradient hook on a weight": lambda model: model.encoder.mu.weight.register_hook(torch.zeros_like),
    "post-accumulate hook": lambda model: model.encoder.mu.weight.register_post_accumulate_grad_hook(lambda p: None),
    "ELU's alpha": lambda model: setattr(elu_of(model), "alpha", 0.5),
    "a method on the instance": lambda model: setattr(model, "likelihood", functools.partial(TemperedVAE.likelihood, model)),
}


@pytest.mark.parametrize("attach", ATTACHMENTS.values(), ids=ATTACHMENTS.keys())
def test_hooks_and_changed_settings_keep_a_model_off_the_hand_written_path(attach):
    model = VAE([64, 16, 2])
    handle = attach(model)
    assert why_not(model, TrainConfig(), world_size=1).startswith("a model changed after VAE built it")
    if handle is not None:  # removed, the model is as built again
        handle.remove()
        assert applies(model, TrainConfig(), world_size=1)


def test_a_hook_on_every_module_keeps_models_off_the_hand_written_path():
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert not applies(VAE([64, 16, 2]), TrainConfig(), world_size=1)
    finally:
        handle.remove()
    assert applies(VAE([64, 16, 2]), TrainConfig(), world_size=1)


def test_a_weight_frozen_by_a_zero_gradient_hook_stays_where_it_was(digits, tmp_path):
    model = VAE([64, 16, 2])
    model.encoder.mu.weight.register_hook(torch.zeros_like)
    weight, bias = model.encoder.mu.weight.detach().clone(), model.encoder.mu.bias.detach().clone()
    train(model, digits, quick_config(tmp_path, max_steps=5))
    assert torch.equal(model.encoder.mu.weight, weight)  # (the hand-written path moved it by about 0.01)
    assert not torch.equal(model.encoder.mu.bias, bias)  # its neighbour, without a hook, learned


def test_the_trainer_takes_it_by_default_and_autograd_on_request():
    model, cpu = VAE([64, 16, 2]), torch.device("cpu")
    assert isinstance(make_batch_cost(model, TrainConfig(), Cluster(), cpu), DenseElbo)
    assert isinstance(make_batch_cost(model, TrainConfig(fused=False), Cluster(), cpu), BatchCost)
    with pytest.warns(UserWarning, match=r"--compile applies to the hand-written gradient only .*\(--no-fused\)"):
        assert isinstance(make_batch_cost(model, TrainConfig(fused=False, compile=True), Cluster(), cpu), BatchCost)
    with pytest.warns(UserWarning, match=r"cannot take \(--nonlinearity gelu \(elu, relu and tanh have one\)\)"):
        make_batch_cost(VAE([64, 16, 2], nonlinearity="gelu"), TrainConfig(compile=True), Cluster(), cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_gradient_is_autograds_on_a_gpu(digits, precision):
    model = VAE([64, 32, 4]).cuda()
    fixed_noise(model)
    x = digits.train.x[:64].cuda()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
        expected_cost, _ = loss(model, x, objective="elbo")
    expected_cost.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    cost, _, _, _ = DenseElbo(model, TrainConfig(precision=precision))(x, 1.0, clip=0)
    tolerance = 0.02 if precision == "bf16" else 1e-4
    torch.testing.assert_close(cost, expected_cost.detach(), rtol=1e-3, atol=1e-2)
    for got, want in zip([p.grad for p in model.parameters()], expected):
        assert (got - want).abs().max() <= tolerance * want.abs().max()


def test_training_follows_autograds_run(digits, tmp_path):
    """The same run with and without --fused: the same weights, to float32 rounding amplified by Adam."""
    weights = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = VAE([64, 32, 2])
        result = train(model, digits, quick_config(tmp_path / str(fused), epochs=2, l2=1e-3, fused=fused))
        weights.append(torch.cat([p.detach().flatten() for p in result.model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=2e-4)


@pytest.mark.parametrize("nonlinearity", ["elu", "relu", "tanh"])
def test_the_gradient_is_autograds_far_from_the_initial_weights(digits, nonlinearity):
    """Where a change to the networks' or distributions' code that the hand-written path does not repeat
    (a clamp on log sigma, say) would show: saturated units, confident logits, very wide and very narrow q(z|x)."""
    model = VAE([64, 32, 16, 4], nonlinearity=nonlinearity)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(4)
        model.encoder.log_sigma.bias.copy_(torch.tensor([4.0, -8.0, 2.5, -3.0]))
    assert_same_cost_and_gradient(model, digits.train.x[:50], beta=1.0, l2=0.0, tolerances=((1e-5, 1e-4), (1e-4, 1e-4)))

"""The fast paths of the training step: fused Adam, the on-device finiteness check, bf16 mixed precision.

Functional tests only (what the paths compute, not how fast): benchmarks/throughput.py measures speed.
"""

import math

import pytest
import torch

from vaekit import VAE, TrainConfig, VaekitError
from vaekit.checkpoint import CHECKPOINT_FILE, load_checkpoint
from vaekit.distributed import Cluster
from vaekit.evaluate import elbo
from vaekit.fused import DenseElbo
from vaekit.objectives import loss
from vaekit.train import (LOG_EVERY, BatchCost, Logger, NonFiniteSteps, all_finite, make_batch_cost, make_optimizer,
                          step_on_device_if_finite, train, train_step)

from helpers import poison_loss, quick_config

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def state_of(model: VAE, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every weight and every optimizer slot, copied."""
    slots = [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    return [t.detach().clone() for t in [*model.parameters(), *slots]]


def one_step(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, config: TrainConfig = TrainConfig(),
         batch_cost: BatchCost | None = None) -> tuple:
    """One train_step on x with the ELBO at full KL weight: (cost, terms, finite)."""
    batch_cost = BatchCost(model, config, ) if batch_cost is None else batch_cost
    return train_step(batch_cost, optimizer, x, len(x), 1.0, config)


class PoisonedCost(BatchCost):
    """The batch cost times `factor` (NaN or Inf), as a numerical blow-up would make it."""

    def __init__(self, model: VAE, factor: float):
        super().__init__(model, TrainConfig(), )
        self.factor = factor

    def forward(self, x, global_rows, beta):
        cost, reconstruction, kl = super().forward(x, global_rows, beta)
        return cost * self.factor, reconstruction, kl


def test_the_optimizer_is_fused_adam():
    optimizer = make_optimizer(VAE([16, 8, 2]), TrainConfig(lr=3e-4))
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["fused"] and optimizer.defaults["lr"] == 3e-4


def test_fused_adam_takes_the_same_steps_as_the_default_adam(digits):
    x = digits.train.x[:64]
    results = []
    for make in (lambda m: make_optimizer(m, TrainConfig()), lambda m: torch.optim.Adam(m.parameters(), lr=1e-3)):
        torch.manual_seed(0)
        model = VAE([64, 32, 2])
        optimizer = make(model)
        for _ in range(5):
            torch.manual_seed(1)
            one_step(model, optimizer, x)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)


@pytest.mark.parametrize("factor", [float("nan"), float("inf")])
def test_a_non_finite_step_changes_neither_weights_nor_optimizer(digits, factor):
    model = VAE([64, 16, 2])
    optimizer = make_optimizer(model, TrainConfig())
    x = digits.train.x[:32]
    _, _, finite = one_step(model, optimizer, x)  # the optimizer state exists now
    assert bool(finite)
    before = state_of(model, optimizer)
    _, _, finite = one_step(model, optimizer, x, batch_cost=PoisonedCost(model, factor))
    assert not bool(finite)
    after = state_of(model, optimizer)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    _, _, finite = one_step(model, optimizer, x)
    assert bool(finite) and not torch.equal(before[0], model.encoder.hidden[0].weight)
    assert optimizer.state[model.encoder.hidden[0].weight]["step"].item() == 2  # the skipped step did not count


def test_the_fused_optimizer_skips_on_the_device_when_told(digits):
    """The GPU path: the host never reads the flag; the fused kernel skips (checked here on the CPU kernel)."""
    model = VAE([64, 16, 2])
    optimizer = make_optimizer(model, TrainConfig())
    x = digits.train.x[:32]
    one_step(model, optimizer, x)
    before = state_of(model, optimizer)
    step_on_device_if_finite(optimizer, torch.tensor(False))
    assert all(torch.equal(a, b) for a, b in zip(before, state_of(model, optimizer)))
    step_on_device_if_finite(optimizer, torch.tensor(True))
    assert not torch.equal(before[0], model.encoder.hidden[0].weight)
    assert optimizer.state[model.encoder.hidden[0].weight]["step"].item() == 2
    assert not hasattr(optimizer, "found_inf")


def test_an_infinite_gradient_with_a_finite_loss_is_caught(digits):
    model = VAE([64, 16, 2])
    optimizer = make_optimizer(model, TrainConfig())
    x = digits.train.x[:32]
    hook = model.decoder.logits.weight.register_hook(lambda g: g * float("inf"))
    before = state_of(model, optimizer)
    cost, _, finite = one_step(model, optimizer, x)
    hook.remove()
    assert torch.isfinite(cost) and not bool(finite)
    assert all(torch.equal(a, b) for a, b in zip(before, state_of(model, optimizer)))


def test_the_host_reads_non_finite_steps_late_on_a_gpu_and_names_the_first():
    checks = NonFiniteSteps(torch.device("cpu"))
    assert checks.every == 1  # on a CPU the host looks after every step
    checks.every = LOG_EVERY  # as on a GPU
    good, bad = torch.tensor(True), torch.tensor(False)
    for step in range(1, LOG_EVERY + 1):
        checks.note(bad if step in (4, 9) else good, step)
        assert checks.due(step) == (step == LOG_EVERY)
    assert checks.take() == (2, 4)
    assert checks.take() == (0, 4)  # nothing new; the caller ignores `first` when the count is 0
    checks.note(bad, LOG_EVERY + 3)
    assert checks.take() == (1, LOG_EVERY + 3)


def test_skipped_steps_do_not_reach_the_logged_costs(digits, tmp_path, monkeypatch):
    poison_loss(monkeypatch, bad_call=2)
    logged = []
    monkeypatch.setattr(Logger, "flush", lambda self, step: logged.append(self.sums.tolist()))
    result = train(VAE([64, 16, 2]), digits, quick_config(tmp_path, epochs=None, max_steps=LOG_EVERY, on_nonfinite="skip"))
    assert result.progress.skipped_batches == 1
    total, reconstruction, kl, steps = logged[0]
    assert steps == LOG_EVERY - 1 and all(map(torch.isfinite, torch.tensor([total, reconstruction, kl])))


# -- bf16 mixed precision --------------------------------------------------------------------------------


def test_bf16_computes_the_distributions_and_the_cost_in_float32(digits):
    model = VAE([64, 32, 2])
    x = digits.train.x[:16]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.encoder(x)[0].dtype == torch.bfloat16  # the networks run in bf16...
        q = model.posterior(x)
        p = model.likelihood(q.rsample())
        cost, terms = loss(model, x)
    assert q.mu.dtype == q.log_sigma.dtype == p.logits.dtype == torch.float32  # ...the maths in float32
    assert cost.dtype == terms.kl.dtype == terms.reconstruction.dtype == torch.float32
    torch.manual_seed(0)
    fp32_cost, _ = loss(model, x)
    assert abs(cost.item() - fp32_cost.item()) < 0.01 * abs(fp32_cost.item())


def test_bf16_leaves_the_vampprior_density_in_float32():
    model = VAE([64, 32, 2], prior="vamp", pseudo_inputs=10)
    z = torch.randn(16, 2) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        components = model.prior.components()  # the encoder at the pseudo-inputs runs in bf16...
        mixed = components.log_prob_pairwise(z)
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, components.log_prob_pairwise(z), atol=1e-5)  # ...the density in float32


def test_bf16_training_learns_and_keeps_float32_weights_and_optimizer(digits, tmp_path):
    torch.manual_seed(0)
    model = VAE([64, 64, 2])
    before = -float(elbo(model, digits.valid.x).mean())
    result = train(model, digits, quick_config(tmp_path, epochs=5, precision="bf16"))
    history = [h["valid_cost"] for h in result.progress.history]
    assert history[-1] < before - 5 and history[-1] < history[0]
    tensors, _ = load_checkpoint(result.run_dir / CHECKPOINT_FILE)
    assert {t.dtype for name, t in tensors.items() if name.startswith(("model.", "optimizer."))} == {torch.float32}


def test_bf16_and_fp32_reach_similar_costs(digits, tmp_path):
    costs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        result = train(VAE([64, 64, 2]), digits, quick_config(tmp_path, epochs=5, precision=precision))
        costs[precision] = result.progress.history[-1]["valid_cost"]
    assert abs(costs["bf16"] - costs["fp32"]) < 0.5, costs  # nats per example, on 360 validation digits


def test_bf16_resume_is_bit_identical_on_cpu(digits, tmp_path):
    config = quick_config(tmp_path, epochs=2, precision="bf16", seed=4)
    torch.manual_seed(4)
    whole = train(VAE([64, 32, 2]), digits, config).model
    torch.manual_seed(4)
    first = train(VAE([64, 32, 2]), digits, quick_config(tmp_path, epochs=1, precision="bf16", seed=4))
    resumed = train(VAE([64, 32, 2]), digits, config, run_dir=first.run_dir).model
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_an_unknown_precision_is_a_clear_error():
    with pytest.raises(VaekitError, match="--precision must be fp32 or bf16"):
        TrainConfig(precision="fp16")


def test_training_time_is_recorded_apart_from_validation(digits, tmp_path):
    result = train(VAE([64, 16, 2]), digits, quick_config(tmp_path, epochs=1))
    assert 0 < result.progress.train_seconds < 60


# -- CUDA ---------------------------------------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("fused", [True, False])  # the hand-written gradient (the default here) and autograd's
def test_cuda_steps_never_wait_for_the_gpu(digits, tmp_path, precision, fused):
    device = torch.device("cuda")
    model = VAE([64, 32, 2]).to(device)
    optimizer = make_optimizer(model, TrainConfig())
    x = digits.train.x[:64].to(device)
    checks = NonFiniteSteps(device)
    logger = Logger(tmp_path, model, x[:1], total_steps=LOG_EVERY, start_step=0, show_bar=False, enabled=False)
    batch_cost = make_batch_cost(model, TrainConfig(precision=precision, fused=fused), Cluster(), device)
    assert isinstance(batch_cost, DenseElbo) == fused
    one_step(model, optimizer, x, batch_cost=batch_cost)  # the optimizer's state is created
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation now raises
    try:
        for step in range(1, LOG_EVERY):
            cost, terms, finite = one_step(model, optimizer, x, batch_cost=batch_cost)
            logger.train_step(step, cost, terms, finite)
            checks.note(finite, step)
            assert not checks.due(step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert checks.take()[0] == 0 and logger.sums[3].item() == LOG_EVERY - 1


@CUDA
def test_cuda_bf16_training_learns(digits, tmp_path):
    model = VAE([64, 64, 2])
    before = -float(elbo(model, digits.valid.x).mean())
    result = train(model, digits, quick_config(tmp_path, epochs=5, precision="bf16", device="cuda"))
    assert result.progress.history[-1]["valid_cost"] < before - 5


@CUDA
def test_cuda_skips_a_nan_step_and_stops_naming_it(digits, tmp_path, monkeypatch):
    poison_loss(monkeypatch, bad_call=5)
    with pytest.raises(VaekitError, match="at step 5"):
        train(VAE([64, 16, 2]), digits, quick_config(tmp_path, device="cuda"))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_the_finite_check_takes_large_gradients_and_refuses_nan_and_inf(device):
    cost = torch.tensor(1.0, device=device)
    large = [torch.full((3, 4), 3e30, device=device), torch.ones(5, device=device)]  # a 2-norm of these overflows
    assert all_finite(cost, large).item()
    for bad in (math.nan, math.inf, -math.inf):
        assert not all_finite(cost, [large[0], torch.tensor([1.0, bad], device=device)]).item()
    assert not all_finite(torch.tensor(math.nan, device=device), large[1:]).item()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_gradients_are_clipped_by_value(digits, device):
    model = VAE([64, 16, 2]).to(device)
    x = digits.train.x[:32].to(device)
    one_step(model, make_optimizer(model, TrainConfig()), x, TrainConfig(clip=1e-4))
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert grads.abs().max().item() == pytest.approx(1e-4) and (grads.abs() < 1e-4).any()

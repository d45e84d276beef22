"""The training loop: it learns, it is reproducible, it checkpoints and resumes."""

import dataclasses
import json
import math
import sys

import numpy as np
import pytest
import torch

import vaekit
from vaekit import VAE, DataConfig, TrainConfig, VaekitError
from vaekit.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from vaekit.data import Split, Splits
from vaekit.train import train

from helpers import quick_config


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_short_training_lowers_the_validation_cost(digits, tmp_path):
    model = VAE([64, 64, 2])
    before = -float(vaekit.elbo(model, digits.valid.x).mean())
    result = train(model, digits, quick_config(tmp_path, epochs=5))
    history = [h["valid_cost"] for h in result.progress.history]
    assert len(history) == 5
    assert history[-1] < before - 5 and history[-1] < history[0]


def test_run_folder_holds_config_weights_checkpoint_and_tensorboard(digits, tmp_path):
    result = train(VAE([64, 32, 2]), digits, quick_config(tmp_path, epochs=1), DataConfig())
    run = result.run_dir
    assert run.parent == tmp_path and run.name.endswith("_vae_64_32_2")
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["epochs"] == 1 and saved["data"]["data"] == "digits"
    assert (run / "model.safetensors").is_file() and (run / CHECKPOINT_FILE).is_file()
    assert any((run / "tensorboard").iterdir())
    reloaded = vaekit.load(run)
    x = digits.test.x[:5]
    assert torch.equal(reloaded.encode(x)[0], result.model.encode(x)[0])


def test_same_seed_same_weights_on_cpu(digits, tmp_path):
    torch.manual_seed(3)  # the initial weights
    a = train(VAE([64, 32, 2]), digits, quick_config(tmp_path, seed=3)).model
    torch.manual_seed(3)
    b = train(VAE([64, 32, 2]), digits, quick_config(tmp_path, seed=3)).model
    assert torch.equal(params(a), params(b))
    torch.manual_seed(3)
    c = train(VAE([64, 32, 2]), digits, quick_config(tmp_path, seed=4)).model
    assert not torch.equal(params(a), params(c))


def test_max_steps_stops_first(digits, tmp_path):
    result = train(VAE([64, 32, 2]), digits, quick_config(tmp_path, epochs=10, max_steps=7))
    assert result.progress.step == 7


def test_max_steps_alone_has_no_epoch_limit_from_python_as_on_the_command_line(digits, tmp_path):
    assert TrainConfig().epochs == 10 and TrainConfig(max_steps=5).epochs is None
    config = TrainConfig(max_steps=35, batch_size=500, out=str(tmp_path), progress=False, device="cpu")
    result = train(VAE([64, 8, 2]), digits, config)  # 3 steps an epoch: 10 epochs would stop at 30
    assert result.progress.step == 35


@pytest.mark.parametrize("change, message", [("fewer examples", "was trained on other examples than these"),
                                             ("another batch size", "may change on resume, not batch_size")])
def test_resuming_on_other_epochs_is_refused_not_an_endless_loop(digits, tmp_path, change, message):
    first = train(VAE([64, 8, 2]), digits, quick_config(tmp_path, epochs=None, max_steps=19))  # stops at batch 19 of 21
    data, config = digits, quick_config(tmp_path, epochs=2)
    if change == "fewer examples":  # 3 batches an epoch: the saved place, batch 19, is in none of them
        data = dataclasses.replace(digits, train=Split(digits.train.x[:150], digits.train.y[:150]))
    else:
        config = quick_config(tmp_path, epochs=2, batch_size=32)
    before = (first.run_dir / "config.json").read_bytes()
    with pytest.raises(VaekitError, match=message):
        train(VAE([64, 8, 2]), data, config, run_dir=first.run_dir)
    assert (first.run_dir / "config.json").read_bytes() == before  # a refused resume records none of its settings


@pytest.mark.skipif(sys.platform == "win32", reason="run folders are locked with flock")
@pytest.mark.parametrize("checkpointed", [True, False])  # False: the other process is still in its first epoch
def test_a_run_being_trained_by_another_process_is_refused_and_left_alone(digits, tmp_path, checkpointed):
    import fcntl

    first = train(VAE([64, 8, 2]), digits, quick_config(tmp_path, epochs=1))
    if not checkpointed:
        for name in ("checkpoint.safetensors", "model.safetensors"):
            (first.run_dir / name).unlink()
    before = {path.name: path.read_bytes() for path in first.run_dir.iterdir() if path.is_file()}
    with open(first.run_dir / ".lock", "a") as other:  # as the process training it holds it
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(VaekitError, match="is being trained by another process"):
            train(VAE([64, 8, 2]), digits, quick_config(tmp_path, epochs=2), run_dir=first.run_dir)
    assert {path.name: path.read_bytes() for path in first.run_dir.iterdir() if path.is_file()} == before
    assert train(VAE([64, 8, 2]), digits, quick_config(tmp_path, epochs=2), run_dir=first.run_dir).progress.epoch == 2


def test_resume_continues_exactly(digits, tmp_path):
    torch.manual_seed(0)
    full = train(VAE([64, 32, 2], dropout=0.1), digits, quick_config(tmp_path, epochs=3, seed=1))
    torch.manual_seed(0)
    part = train(VAE([64, 32, 2], dropout=0.1), digits, quick_config(tmp_path, epochs=3, seed=1, max_steps=30))
    assert part.progress.step == 30  # mid-epoch: 21 steps per epoch
    resumed = train(VAE([64, 32, 2], dropout=0.1), digits, quick_config(tmp_path, epochs=3, seed=1), run_dir=part.run_dir)
    assert resumed.progress.step == full.progress.step
    assert torch.equal(params(resumed.model), params(full.model))


def test_resuming_from_python_refuses_other_settings_as_the_command_line_does(digits, tmp_path):
    first = train(VAE([64, 8, 2]), digits, quick_config(tmp_path, epochs=1))
    before = (first.run_dir / "config.json").read_bytes()
    for model, config, changed in [(VAE([64, 8, 2]), quick_config(tmp_path, epochs=2, lr=0.5, beta=3.0), "lr, beta"),
                                   (VAE([64, 8, 2], dropout=0.5), quick_config(tmp_path, epochs=2), "dropout")]:
        with pytest.raises(VaekitError, match=f"only epochs, max_steps, .* may change on resume, not {changed}$"):
            train(model, digits, config, run_dir=first.run_dir)
    with pytest.raises(VaekitError, match="may change on resume, not mirror$"):  # the data settings too
        train(VAE([64, 8, 2]), digits, quick_config(tmp_path, epochs=2), DataConfig(mirror="https://example.org/mnist/"),
              run_dir=first.run_dir)
    assert (first.run_dir / "config.json").read_bytes() == before
    resumed = train(VAE([64, 8, 2]), digits, quick_config(tmp_path / "elsewhere", epochs=2, threads=1), run_dir=first.run_dir)
    assert resumed.progress.epoch == 2 and resumed.run_dir == first.run_dir
    saved = json.loads((first.run_dir / "config.json").read_text())["train"]
    assert saved["out"] == str(tmp_path)  # where the run was made
    assert saved["epochs"] == 2 and saved["threads"] == 1  # the limits and machine settings it goes on with


def test_the_validation_history_is_kept_as_a_tensor_not_in_the_checkpoints_header(small, tmp_path):
    from vaekit.runs import history_entries, history_tensor

    result = train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=2, batch_size=50, eval_every=1))
    tensors, state = load_checkpoint(result.run_dir / CHECKPOINT_FILE)
    assert state["progress"]["history"] == [] and tensors["progress.history"].shape == (8, 4)
    assert history_entries(tensors["progress.history"]) == result.progress.history
    many = [{"step": i, "epoch": i // 390, "valid_cost": 90.0 + 1 / (i + 1), "seconds": 0.01 * i} for i in range(1_000_000)]
    assert history_entries(history_tensor(many[-3:])) == many[-3:]
    assert history_tensor(many).nbytes == 32_000_000  # a million entries: 32 MB of tensor, no JSON header (~100 MB, refused)


def test_a_checkpoint_of_an_earlier_or_later_version_gives_its_progress():
    from vaekit.runs import history_tensor, progress_of

    history = [{"step": 11, "epoch": 1, "valid_cost": 40.0, "seconds": 1.0}, {"step": 22, "epoch": 2, "valid_cost": 41.0, "seconds": 2.0}]
    earlier = progress_of({"step": 22, "epoch": 2, "best_epoch": 1, "history": history}, None)  # JSON history, no best_step
    assert earlier.history == history and earlier.best_step == 11  # (the figures' names take it)
    later = progress_of({"step": 22, "epoch": 2, "best_epoch": 1, "best_step": 11, "history": [], "a_new_field": 3},
                        history_tensor(history))
    assert later.history == history and later.best_step == 11 and not hasattr(later, "a_new_field")


def test_the_largest_seed_trains(small, tmp_path):
    from vaekit.config import MAX_SEED

    result = train(VAE([64, 16, 2]), small, quick_config(tmp_path, max_steps=5, batch_size=50, seed=MAX_SEED - 1))
    assert result.progress.step == 5  # (the epoch order's seed overflowed 64 bits)


def test_eval_every_validates_once_per_step_and_each_entry_has_its_own_time(small, tmp_path):
    result = train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=3, batch_size=50, eval_every=2))  # 4 steps an epoch
    steps = [entry["step"] for entry in result.progress.history]
    assert steps == [2, 4, 6, 8, 10, 12]  # the epoch ends (4, 8, 12) once, not twice
    seconds = [entry["seconds"] for entry in result.progress.history]
    assert seconds == sorted(seconds) and len(set(seconds)) == len(seconds)
    cut = train(VAE([64, 16, 2]), small, quick_config(tmp_path, max_steps=3, batch_size=50))  # ends mid-epoch
    assert cut.progress.history[-1]["step"] == 3 and cut.progress.history[-1]["seconds"] > 0


def test_resuming_on_other_examples_is_refused_and_changes_nothing(small, tmp_path):
    first = train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=1, batch_size=50))
    files = {path: path.read_bytes() for path in first.run_dir.rglob("*") if path.is_file()}
    other = dataclasses.replace(small, train=Split(1 - small.train.x))  # as many examples, other values
    with pytest.raises(VaekitError, match="was trained on other examples than these \\(200 train / 50 valid\\)"):
        train(VAE([64, 16, 2]), other, quick_config(tmp_path, epochs=2, batch_size=50), run_dir=first.run_dir)
    assert {path: path.read_bytes() for path in first.run_dir.rglob("*") if path.is_file()} == files
    assert train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=2, batch_size=50), run_dir=first.run_dir).progress.epoch == 2


def test_train_refuses_settings_of_the_wrong_kind_and_a_run_folder_that_is_not_there(small, tmp_path):
    with pytest.raises(VaekitError, match="train takes its settings as vaekit.TrainConfig .* not dict"):
        train(VAE([64, 16, 2]), small, {"epochs": 1})
    with pytest.raises(VaekitError, match="is not a run folder to resume \\(no such folder\\)"):
        train(VAE([64, 16, 2]), small, quick_config(tmp_path), run_dir=tmp_path / "nonexistent")
    assert list(tmp_path.iterdir()) == []


def test_resuming_to_fewer_epochs_than_done_is_refused_and_changes_nothing(digits, tmp_path):
    first = train(VAE([64, 8, 2]), digits, quick_config(tmp_path, epochs=2))
    files = {path: path.read_bytes() for path in first.run_dir.rglob("*") if path.is_file()}
    with pytest.raises(VaekitError, match="has trained 2 epochs \\(42 steps\\) already; give --epochs above 2"):
        train(VAE([64, 8, 2]), digits, quick_config(tmp_path, epochs=1), run_dir=first.run_dir)
    assert {path: path.read_bytes() for path in first.run_dir.rglob("*") if path.is_file()} == files


def test_a_run_checkpointed_on_another_kind_of_device_resumes_with_fresh_noise(digits, tmp_path):
    part = train(VAE([64, 32, 2]), digits, quick_config(tmp_path, epochs=2, max_steps=5))
    path = part.run_dir / CHECKPOINT_FILE
    tensors, state = load_checkpoint(path)
    tensors["rng.noise"] = torch.tensor([7, 0], dtype=torch.int64).view(torch.uint8)  # a CUDA (Philox) state: seed, offset
    save_checkpoint(path, tensors, {**state, "noise_device": "cuda"})
    with pytest.warns(UserWarning, match="checkpointed on cuda and resumes on cpu: its noise stream starts afresh"):
        resumed = train(VAE([64, 32, 2]), digits, quick_config(tmp_path, epochs=2), run_dir=part.run_dir)
    assert resumed.progress.step == 42 and torch.isfinite(params(resumed.model)).all()


@pytest.mark.parametrize("make, message", [
    (lambda d: dataclasses.replace(d, train=Split(d.train.x * 16)), r"the train split has values in \[0, 16\]; the model takes values in \[0, 1\]"),
    (lambda d: dataclasses.replace(d, valid=Split(d.valid.x.clone().index_fill_(0, torch.tensor([3]), float("nan")))),
     "the valid split contains NaN or Inf"),
    (lambda d: dataclasses.replace(d, train=Split((d.train.x * 255).to(torch.uint8))), "float32 tensor of examples .* torch.uint8"),
    (lambda d: dataclasses.replace(d, train=Split(d.train.x.numpy())), "float32 tensor of examples .* got ndarray"),
    (lambda d: dataclasses.replace(d, train=Split(d.train.x.view(-1, 1, 8, 8))), r"float32 tensor of examples \(N, D\)"),
    (lambda d: dataclasses.replace(d, valid=None), "the valid split must hold a float32 tensor"),
    (lambda d: dataclasses.replace(d, image_shape=(1, 28, 28)), r"image shape \(1, 28, 28\) holds 784 values; its examples have 64"),
    (lambda d: d.train.x, "train takes the data as vaekit.Splits .* not Tensor"),
    ("double model", "train keeps float32 weights .* the model's are torch.float64: call model.float"),
])
def test_data_it_cannot_train_on_is_refused_before_a_run_folder_is_made(digits, tmp_path, make, message):
    model, data = (VAE([64, 8, 2]).double(), digits) if make == "double model" else (VAE([64, 8, 2]), make(digits))
    with pytest.raises(VaekitError, match=message):
        train(model, data, quick_config(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_your_own_arrays_train_from_python(tmp_path):
    images = (np.random.default_rng(0).random((300, 8, 8)) > 0.5).astype(np.uint8) * 255
    result = train(VAE([64, 8, 2]), vaekit.Splits.from_arrays(images), quick_config(tmp_path, epochs=1))
    assert result.progress.step == 4  # 240 training examples in batches of 64


def test_the_data_must_fit_the_architecture(digits, tmp_path):
    with pytest.raises(VaekitError, match="64 values per example"):
        train(VAE([784, 32, 2]), digits, quick_config(tmp_path))


def test_l2_penalty_shrinks_weights(digits, tmp_path):
    plain = train(VAE([64, 32, 2]), digits, quick_config(tmp_path)).model
    penalised = train(VAE([64, 32, 2]), digits, quick_config(tmp_path, l2=1.0)).model
    assert params(penalised).norm() < params(plain).norm()


def test_bad_training_options_are_refused():
    for options, message in (({"batch_size": 0}, "--batch-size must be at least 1, got 0"), ({"lr": -1.0}, "--lr must be positive"),
                             ({"epochs": 0}, "--epochs must be at least 1"), ({"max_steps": 0}, "--max-steps must be at least 1"),
                             ({"clip": -1.0}, "--clip must not be negative")):
        with pytest.raises(VaekitError, match=message):
            TrainConfig(**options)


@pytest.mark.parametrize("make, message", [
    (lambda: TrainConfig(batch_size="x"), "TrainConfig.batch_size must be an integer, got 'x'"),
    (lambda: TrainConfig(fused=1), "TrainConfig.fused must be true or false, got 1"),
    (lambda: TrainConfig(l2=float("nan")), "TrainConfig.l2 must be a finite number, got nan"),  # `nan < 0` is False
    (lambda: TrainConfig(lr=float("inf")), "TrainConfig.lr must be a finite number, got inf"),
    (lambda: VAE([64, 8, 2], dropout=float("nan")), "ModelConfig.dropout must be a finite number, got nan"),
    (lambda: TrainConfig(device="gpu"), "unknown --device 'gpu'; choose one of auto, cpu, cuda"),
    (lambda: TrainConfig(on_nonfinite="ignore"), "unknown --on-nonfinite 'ignore'; choose one of stop, skip"),
    (lambda: DataConfig(image_size="16"), "DataConfig.image_size must be a list of integers, got '16'"),
    (lambda: VAE([784, "a", 2]), "ModelConfig.architecture must be a list of integers"),
    (lambda: VAE("784,500,2"), "architecture is a list of layer sizes such as \\[784, 500, 500, 2\\], got '784,500,2'"),
    (lambda: VAE(64), "architecture is a list of layer sizes such as \\[784, 500, 500, 2\\], got 64"),
    (lambda: VAE(config={"architecture": [64, 32, 2]}), "config must be a vaekit.ModelConfig, not dict"),
    (lambda: VAE([64, 8, 2]).sample(2.5), "number of samples must be a whole number, got 2.5"),
    (lambda: vaekit.estimate_nll(VAE([64, 8, 2]), torch.rand(2, 64), k=2.5), "k must be a whole number, got 2.5"),
    (lambda: vaekit.estimate_nll(VAE([64, 8, 2]), torch.rand(2, 64), k=5, seed=-1), "seed must be a whole number from 0 to 2\\^62 - 1, got -1"),
    (lambda: vaekit.estimate_nll(VAE([64, 8, 2]), torch.rand(2, 64), k=2, seed=2**62), "from 0 to 2\\^62 - 1, got 4611686018427387904"),
    (lambda: TrainConfig(seed=2**62), "from 0 to 2\\^62 - 1, got 4611686018427387904"),
    (lambda: VAE([64, 8, 2]).sample(True), "number of samples must be a whole number, got True"),
    (lambda: vaekit.estimate_nll(VAE([64, 8, 2]), torch.rand(2, 64), k=True), "k must be a whole number, got True"),
    (lambda: TrainConfig(dist_timeout=1e7 + 1), "at most 1e\\+07 seconds"),
])
def test_options_of_the_wrong_kind_from_python_are_one_clear_error(make, message):
    with pytest.raises(VaekitError, match=message):
        make()


def test_paths_may_be_path_objects(tmp_path):
    assert TrainConfig(out=tmp_path).out == str(tmp_path)
    assert DataConfig(tmp_path).data == str(tmp_path) and DataConfig(data_dir=tmp_path).data_dir == str(tmp_path)


def test_a_device_there_is_not_is_a_clear_error(tmp_path):
    VAE([64, 8, 2]).save(tmp_path)
    with pytest.raises(VaekitError, match="unknown device 'gpu'"):
        vaekit.load(tmp_path, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(VaekitError, match="PyTorch sees no CUDA GPU"):
            vaekit.load(tmp_path, device="cuda")


def test_train_leaves_the_callers_threads_and_random_stream_as_they_were(digits, tmp_path):
    threads, model = torch.get_num_threads(), VAE([64, 16, 2])
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(model, digits, quick_config(tmp_path, epochs=1, threads=1 if threads > 1 else 2))
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(3), expected)


def test_the_trained_model_comes_back_ready_to_use_in_eval_mode(digits, tmp_path):
    model = train(VAE([64, 16, 2], dropout=0.5), digits, quick_config(tmp_path, epochs=1)).model
    assert not model.training  # as vaekit.load gives it: no dropout in encode, reconstruct or elbo
    x = digits.valid.x[:4]
    assert torch.equal(model.encode(x)[0], model.encode(x)[0])


def test_dequantizing_data_that_are_not_8_bit_is_refused_from_python_too(digits, tmp_path):
    model = VAE([64, 16, 2], likelihood="gaussian", dequantize=True)
    with pytest.raises(VaekitError, match="--dequantize needs 8-bit images"):  # the digits are sixteenths
        train(model, digits, quick_config(tmp_path, epochs=1))
    with pytest.raises(VaekitError, match="--dequantize needs 8-bit images"):
        vaekit.evaluate.estimate_nll(model, digits.valid.x[:4], k=2)
    assert not any(tmp_path.iterdir())  # refused before any run folder was made
    model.as_examples(torch.round(digits.valid.x[:4] * 255) / 255)  # 8-bit values pass


@pytest.fixture(scope="module")
def small(digits):
    """200 training examples: 4 steps an epoch at batch 50."""
    return Splits(Split(digits.train.x[:200]), Split(digits.valid.x[:50]), Split(digits.test.x[:50]), digits.image_shape)


def test_the_kl_weight_warms_up_step_by_step(small, tmp_path, monkeypatch):
    train_module = sys.modules["vaekit.train"]  # `vaekit.train` is also the function
    betas, real_step = [], train_module.train_step

    def recording_step(batch_cost, optimizer, x, rows, beta, config):
        betas.append(beta)
        return real_step(batch_cost, optimizer, x, rows, beta, config)

    monkeypatch.setattr(train_module, "train_step", recording_step)
    train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=2, batch_size=50, warmup_epochs=2, beta=2.0))
    assert betas == pytest.approx([2.0 * step / 8 for step in range(8)])


@pytest.mark.parametrize(("options", "name", "value"), [({"free_bits": 0.3}, "free_bits", 0.3),
                                                        ({"objective": "iwae", "iwae_k": 7}, "k", 7)])
def test_objective_options_reach_the_training_cost(small, tmp_path, monkeypatch, options, name, value):
    train_module = sys.modules["vaekit.train"]
    seen, real_loss = [], train_module.loss

    def recording_loss(*args, **kwargs):
        seen.append(kwargs)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "loss", recording_loss)
    train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=1, batch_size=50, **options))
    assert len(seen) == 4 and all(kwargs[name] == value for kwargs in seen)


def test_an_iwae_runs_validation_cost_is_its_bound_not_the_elbo(small, tmp_path):
    from vaekit.evaluate import average_elbo_terms, average_iwae_bound

    result = train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=1, batch_size=50, objective="iwae", iwae_k=5))
    cost = result.progress.history[-1]["valid_cost"]
    assert cost == pytest.approx(-average_iwae_bound(result.model, small.valid.x, 5), abs=1e-4)
    assert cost < -average_elbo_terms(result.model, small.valid.x)["elbo"] - 1e-3  # a tighter bound: a lower cost


def test_each_epoch_sees_the_examples_in_its_own_order():
    epoch_order = sys.modules["vaekit.train"].epoch_order
    cpu = torch.device("cpu")
    orders = [epoch_order(100, seed, epoch, cpu) for seed, epoch in [(0, 0), (0, 1), (1, 0)]]
    assert all(torch.equal(order.sort().values, torch.arange(100)) for order in orders)  # each example once
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])
    assert torch.equal(epoch_order(100, 0, 1, cpu), orders[1])  # a resumed run redoes it


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_tensorboard_holds_the_costs_the_run_reports(small, tmp_path, objective):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=2, batch_size=50, objective=objective, **({"iwae_k": 20} if objective == "iwae" else {})))
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    valid = [(event.step, event.value) for event in events.Scalars("valid/total")]
    assert valid == [(h["step"], pytest.approx(h["valid_cost"], rel=1e-5)) for h in result.progress.history]
    train_costs = [event.value for event in events.Scalars("train/total")]
    assert train_costs and all(0.5 * valid[-1][1] < cost < 2 * valid[0][1] for cost in train_costs)
    if objective == "iwae":  # the ELBO is logged beside the bound trained, and is the looser of the two
        neg_elbo = [event.value for event in events.Scalars("valid/neg_elbo")]
        assert all(elbo_cost > cost for elbo_cost, (_, cost) in zip(neg_elbo, valid, strict=True))


def test_tensorboard_shows_reconstructions_and_samples_on_logarithmic_time_without_changing_the_run(small, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vaekit.plots import training_images

    torch.manual_seed(0)
    result = train(VAE([64, 16, 2], dropout=0.1), small, quick_config(tmp_path, epochs=12, max_steps=47, batch_size=50))  # 4 steps an epoch
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    # epochs 1 to 10, then (not the 11th) the trained model at the run's last step, 47, mid-epoch
    expected_steps = [4 * epoch for epoch in range(1, 11)] + [47]
    for name, (height, width) in [("reconstructions", (2 * 32 + 3, 8 * 32 + 9)), ("samples", (8 * 32 + 9, 8 * 32 + 9))]:
        images = events.Images(f"images/{name}")
        assert [image.step for image in images] == expected_steps
        assert (images[-1].height, images[-1].width) == (height, width)  # 8x8 digits enlarged 4 times (to 28 pixels at least), 1 between
    canvases = training_images(result.model, small.valid.x)
    assert np.array_equal(canvases["samples"], training_images(result.model, small.valid.x)["samples"])  # the same draws each time
    top = canvases["reconstructions"][1:33, 1:33, 0]  # the first input, each pixel repeated 4 x 4 times
    assert np.allclose(top[::4, ::4], small.valid.x[0].reshape(8, 8).numpy())

    # the images are drawn on their own random stream: the run's weights are those of a run without them
    monkeypatch.setattr(sys.modules["vaekit.train"].Logger, "images", lambda *args: None)
    torch.manual_seed(0)
    plain = train(VAE([64, 16, 2], dropout=0.1), small, quick_config(tmp_path, epochs=12, max_steps=47, batch_size=50))
    for a, b in zip(result.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_part_the_caller_put_in_eval_mode_trains_in_eval_mode(small, tmp_path):
    model = VAE([64, 16, 2], dropout=0.2)
    model.encoder.eval()  # a frozen encoder's dropout off, as in a PyTorch loop of one's own
    model.encoder.requires_grad_(False)
    encoder_modes, decoder_modes = [], []
    model.encoder.register_forward_pre_hook(lambda module, args: encoder_modes.append(module.training))
    model.decoder.register_forward_pre_hook(lambda module, args: decoder_modes.append(module.training))
    train(model, small, quick_config(tmp_path, epochs=2, batch_size=50))
    assert not any(encoder_modes) and True in decoder_modes  # (the decoder in eval mode while validating)
    assert not model.training  # returned ready to use

    loaded = vaekit.load(train(VAE([64, 16, 2], dropout=0.2), small, quick_config(tmp_path, epochs=1, batch_size=50)).run_dir)
    modes = []
    loaded.encoder.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    train(loaded, small, quick_config(tmp_path, epochs=1, batch_size=50))  # a model in eval mode whole (as load gives it)
    assert True in modes  # trains in train mode


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_a_run_trains_inside_a_callers_no_grad_too(small, tmp_path, context):
    model = VAE([64, 16, 2], dropout=0.1)  # trained through autograd
    before = model.decoder.logits.weight.detach().clone()
    with context():
        train(model, small, quick_config(tmp_path, epochs=1, batch_size=50))
        assert not torch.is_grad_enabled()  # the caller's setting is back
    assert not torch.equal(model.decoder.logits.weight, before)
    assert all(p.grad is None for p in model.parameters())  # no gradient left for a loop of one's own to add to


def test_a_model_torch_compile_wrapped_is_refused_with_the_way_to_compile(small, tmp_path):
    with pytest.raises(VaekitError, match=r"not OptimizedModule: pass the model itself, and TrainConfig\(compile=True\)"):
        train(torch.compile(VAE([64, 16, 2])), small, quick_config(tmp_path))
    assert not list(tmp_path.iterdir())


def test_a_lock_file_that_is_a_link_or_a_fifo_is_refused_and_nothing_written_through_it(small, tmp_path):
    import os

    first = train(VAE([64, 16, 2]), small, quick_config(tmp_path / "runs", epochs=1, batch_size=50))
    lock, elsewhere = first.run_dir / ".lock", tmp_path / "elsewhere.txt"
    lock.unlink(missing_ok=True)
    lock.symlink_to(elsewhere)
    with pytest.raises(VaekitError, match=r"\.lock is not the plain file vaekit keeps there"):
        train(VAE([64, 16, 2]), small, quick_config(tmp_path / "runs", epochs=2, batch_size=50), run_dir=first.run_dir)
    assert not elsewhere.exists()
    lock.unlink()
    os.mkfifo(lock)  # opening it would wait for a writer for ever
    with pytest.raises(VaekitError, match="is not the plain file"):
        train(VAE([64, 16, 2]), small, quick_config(tmp_path / "runs", epochs=2, batch_size=50), run_dir=first.run_dir)


def test_images_are_due_at_epochs_on_logarithmic_time():
    from vaekit.train import images_due

    due = [epoch for epoch in range(1, 3281) if images_due(epoch)]
    assert due[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30] and due[-4:] == [900, 1000, 2000, 3000] and len(due) == 30


def test_ctrl_c_asks_to_stop_and_a_second_ctrl_c_raises_at_once():
    import os
    import signal

    from vaekit.train import StopRequest

    before = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's repeated SIGTERM still waits for the step
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back (ignored, under nohup)


def test_each_epoch_logs_a_line_and_train_and_valid_share_one_bound(small, tmp_path, caplog):
    """With --beta 4 the cost trained is not the -ELBO: each epoch's line (INFO, on the "vaekit" logger), and
    TensorBoard, give both."""
    import logging
    import re

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    caplog.set_level(logging.INFO, logger="vaekit")
    result = train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=2, batch_size=50, beta=4.0))
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("vaekit")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2 (step 4)", "epoch 2/2 (step 8)"]
    for line, entry in zip(lines, result.progress.history, strict=True):
        cost, neg_elbo, valid = map(float, re.search(r"train cost (\S+) \(-ELBO (\S+)\), valid -ELBO (\S+),", line).groups())
        assert cost > neg_elbo  # the KL weighted 4 times against once
        assert valid == round(entry["valid_cost"], 2)
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    totals, bounds = ([event.value for event in events.Scalars(f"train/{name}")] for name in ("total", "neg_elbo"))
    assert totals and all(total > bound for total, bound in zip(totals, bounds, strict=True))
    assert [e.value for e in events.Scalars("valid/neg_elbo")] == [e.value for e in events.Scalars("valid/total")]


def test_a_run_cut_mid_epoch_ends_with_a_validation_at_its_last_step(small, tmp_path):
    result = train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=None, max_steps=6, batch_size=50))  # 4 steps an epoch
    assert [entry["step"] for entry in result.progress.history] == [4, 6]


def test_runs_started_in_the_same_second_get_their_own_folders(small, tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(time, "strftime", lambda *_: "250101_000000")
    runs = [train(VAE([64, 8, 2]), small, quick_config(tmp_path, epochs=None, max_steps=1, batch_size=50)).run_dir for _ in range(2)]
    assert [run.name for run in runs] == ["250101_000000_vae_64_8_2", "250101_000000_vae_64_8_2_1"]


def test_a_resumed_run_counts_the_time_of_its_earlier_sessions(small, tmp_path):
    first = train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=1, batch_size=50))
    resumed = train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=3, batch_size=50), run_dir=first.run_dir)
    seconds = [entry["seconds"] for entry in resumed.progress.history]
    assert seconds == sorted(seconds) and seconds[0] == first.progress.history[0]["seconds"]
    assert resumed.progress.seconds > first.progress.seconds and resumed.progress.train_seconds > first.progress.train_seconds


def test_config_json_records_what_ran_each_session(small, tmp_path):
    import platform

    first = train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=1, batch_size=50, threads=1))
    train(VAE([64, 16, 2]), small, quick_config(tmp_path, epochs=2, batch_size=50, threads=2), run_dir=first.run_dir)
    sessions = json.loads((first.run_dir / "config.json").read_text())["sessions"]
    assert [session["threads"] for session in sessions] == [1, 2]  # the count the session ran with
    for session in sessions:
        assert session["torch"] == torch.__version__ and session["python"] == platform.python_version()
        assert session["device"] == f"cpu ({platform.machine()})" and session["world_size"] == 1
        assert session["vaekit"] == vaekit.__version__
    assert sessions[0]["started"] <= sessions[1]["started"]  # ISO times, in UTC
    assert vaekit.load(first.run_dir).config.architecture == (64, 16, 2)  # and the run reads back as before


def test_an_empty_out_is_refused():
    with pytest.raises(VaekitError, match="--out is empty"):
        TrainConfig(out="")


def test_a_vae_of_real_values_nears_their_exact_likelihood(tmp_path):
    """Real-valued data from a linear-Gaussian model, x = A z + 3 + e with z ~ N(0, I_2) and e ~ N(0, 0.1^2 I_10): an
    identity-mean Gaussian VAE's -ELBO comes within a nat of the exact -log p(x) under N(3, A A^T + 0.01 I), far below
    independent Gaussians' (13.0 against -2.4 nats), and its learned sigma near 0.1; the figures' range is the data's."""
    from scipy.stats import multivariate_normal, norm

    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 2))
    x = (rng.normal(size=(3000, 2)) @ a.T + 3.0 + 0.1 * rng.normal(size=(3000, 10))).astype(np.float32)
    data = Splits.from_arrays(x[:2400], x[2400:2700], x[2700:])
    test = x[2700:].astype(np.float64)
    exact = -multivariate_normal(np.full(10, 3.0), a @ a.T + 0.01 * np.eye(10)).logpdf(test).mean()
    independent = -norm.logpdf(test, x[:2400].mean(0), x[:2400].std(0)).sum(1).mean()
    model = VAE([10, 64, 2], likelihood="gaussian", gaussian_mean="identity", learn_sigma=True, sigma=1.0)
    result = train(model, data, quick_config(tmp_path, epochs=30, lr=3e-3, threads=1))
    neg_elbo = -float(vaekit.elbo(result.model, data.test).mean())
    assert exact < independent - 10 and neg_elbo < exact + 1.0
    assert 0.08 < float(result.model.likelihood_log_sigma.detach().exp()) < 0.15
    low, high = float(data.train.x.min()), float(data.train.x.max())
    assert result.model.config.value_range == (low, high) and low < 0 and high > 5  # far outside [0, 1]
    assert vaekit.load(result.run_dir).config.value_range == (low, high)


def test_a_fixed_sigma_above_the_datas_spread_is_warned_of(tmp_path):
    x = (0.5 + 0.025 * np.random.default_rng(0).normal(size=(300, 16))).astype(np.float32)  # spread 0.025, as embeddings
    with pytest.warns(UserWarning, match=r"--sigma 0.1 \(fixed\) is above the data's spread, 0.025"):
        train(VAE([16, 8, 2], likelihood="gaussian"), Splits.from_arrays(x), quick_config(tmp_path, epochs=1))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a learned sigma, or one below the spread: no warning
        train(VAE([16, 8, 2], likelihood="gaussian", learn_sigma=True), Splits.from_arrays(x), quick_config(tmp_path, epochs=1))
        train(VAE([16, 8, 2], likelihood="gaussian", sigma=0.01), Splits.from_arrays(x), quick_config(tmp_path, epochs=1))


def test_constant_real_values_train_and_values_far_from_unit_scale_are_warned_of(tmp_path):
    real = dict(likelihood="gaussian", gaussian_mean="identity", learn_sigma=True)
    constant = Splits.from_arrays(np.full((50, 4), 2.5, np.float32))
    result = train(VAE([4, 8, 2], **real), constant, quick_config(tmp_path, epochs=1))
    assert result.model.config.value_range == (2.0, 3.0)  # drawn mid-grey, not an error about a setting never given
    large = Splits.from_arrays(1000 * np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32))
    with pytest.warns(UserWarning, match=r"the data's spread is \S+ .* standardise each value, \(x - mean\) / std"):
        train(VAE([4, 8, 2], **real), large, quick_config(tmp_path, epochs=1, on_nonfinite="skip"))


def test_the_spread_warned_of_is_the_root_mean_square_of_each_values_standard_deviation():
    from vaekit.train import root_mean_square_spread

    x = torch.tensor([[1e6, 0.0], [1e6 + 2, 4.0], [1e6 + 4, 8.0]], dtype=torch.float64)  # sds 2 and 4, about a huge mean
    assert root_mean_square_spread(x, rows=2) == pytest.approx(math.sqrt((4 + 16) / 2), rel=1e-12)

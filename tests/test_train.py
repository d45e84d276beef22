"""The training loop: it learns, it is reproducible, it checkpoints and resumes."""

import dataclasses
import json

import pytest
import torch

import vaekit
from vaekit import VAE, DataConfig, TrainConfig, VaekitError
from vaekit.checkpoint import CHECKPOINT_FILE
from vaekit.data import Split
from vaekit.train import train

from helpers import quick_config


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_short_training_lowers_the_validation_cost(digits, tmp_path):
    model = VAE([64, 64, 2])
    before = -float(model.elbo(digits.valid.x).mean())
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


@pytest.mark.parametrize("change", ["fewer examples", "another batch size"])
def test_resuming_on_other_epochs_is_refused_not_an_endless_loop(digits, tmp_path, change):
    first = train(VAE([64, 8, 2]), digits, quick_config(tmp_path, epochs=None, max_steps=19))  # stops at batch 19 of 21
    data, config = digits, quick_config(tmp_path, epochs=2)
    if change == "fewer examples":  # 3 batches an epoch: the saved place, batch 19, is in none of them
        data = dataclasses.replace(digits, train=Split(digits.train.x[:150], digits.train.y[:150]))
    else:
        config = quick_config(tmp_path, epochs=2, batch_size=32)
    with pytest.raises(VaekitError, match="resume with the run's own data and batch size"):
        train(VAE([64, 8, 2]), data, config, run_dir=first.run_dir)


def test_resume_continues_exactly(digits, tmp_path):
    torch.manual_seed(0)
    full = train(VAE([64, 32, 2], dropout=0.1), digits, quick_config(tmp_path, epochs=3, seed=1))
    torch.manual_seed(0)
    part = train(VAE([64, 32, 2], dropout=0.1), digits, quick_config(tmp_path, epochs=3, seed=1, max_steps=30))
    assert part.progress.step == 30  # mid-epoch: 21 steps per epoch
    resumed = train(VAE([64, 32, 2], dropout=0.1), digits, quick_config(tmp_path, epochs=3, seed=1), run_dir=part.run_dir)
    assert resumed.progress.step == full.progress.step
    assert torch.equal(params(resumed.model), params(full.model))


def test_the_data_must_fit_the_architecture(digits, tmp_path):
    with pytest.raises(VaekitError, match="64 values per example"):
        train(VAE([784, 32, 2]), digits, quick_config(tmp_path))


def test_l2_penalty_shrinks_weights(digits, tmp_path):
    plain = train(VAE([64, 32, 2]), digits, quick_config(tmp_path)).model
    penalised = train(VAE([64, 32, 2]), digits, quick_config(tmp_path, l2=1.0)).model
    assert params(penalised).norm() < params(plain).norm()


def test_bad_training_options_are_refused():
    for options in ({"batch_size": 0}, {"lr": -1.0}, {"epochs": 0}, {"epochs": None, "max_steps": None}, {"clip": -1.0}):
        with pytest.raises(VaekitError):
            TrainConfig(**options)


@pytest.mark.parametrize("make, message", [
    (lambda: TrainConfig(batch_size="x"), "TrainConfig.batch_size must be an integer, got 'x'"),
    (lambda: TrainConfig(fused=1), "TrainConfig.fused must be true or false, got 1"),
    (lambda: TrainConfig(device="gpu"), "unknown --device 'gpu'; choose one of auto, cpu, cuda"),
    (lambda: TrainConfig(on_nonfinite="ignore"), "unknown --on-nonfinite 'ignore'; choose one of stop, skip"),
    (lambda: DataConfig(image_size="16"), "DataConfig.image_size must be a list of integers, got '16'"),
    (lambda: VAE([784, "a", 2]), "ModelConfig.architecture must be a list of integers"),
    (lambda: VAE("784,500,2"), "architecture is a list of layer sizes such as \\[784, 500, 500, 2\\], got the string"),
])
def test_options_of_the_wrong_kind_from_python_are_one_clear_error(make, message):
    with pytest.raises(VaekitError, match=message):
        make()


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

"""The training loop: it learns, it is reproducible, it checkpoints and resumes."""

import json

import pytest
import torch

import vaekit
from vaekit import VAE, DataConfig, TrainConfig, VaekitError
from vaekit.checkpoint import CHECKPOINT_FILE
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

"""Training options of the numbers issue: KL warm-up, learning-rate schedules, early stopping, exact resume."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from safetensors.torch import load_file

import vaekit
from vaekit.checkpoint import CHECKPOINT_FILE, load_checkpoint
from vaekit.config import DataConfig, TrainConfig
from vaekit.data import Split, Splits
from vaekit.model import VAE
from vaekit.train import BEST_FILE, burda_lr_factor, kl_weight, train

train_module = sys.modules["vaekit.train"]  # the package's `vaekit.train` attribute is the function


@pytest.fixture(scope="module")
def data() -> Splits:
    digits = vaekit.load_data(DataConfig("digits"))
    return Splits(train=Split(digits.train.x[:200]), valid=Split(digits.valid.x[:50]), test=Split(digits.test.x[:50]), image_shape=digits.image_shape)


def tiny_config(tmp_path, **options) -> TrainConfig:
    values = dict(epochs=4, batch_size=50, progress=False, out=str(tmp_path), seed=3)
    values.update(options)
    return TrainConfig(**values)


def test_burdas_schedule_steps_by_powers_of_three() -> None:
    factors = [burda_lr_factor(epoch) for epoch in (0, 1, 3, 4, 12, 13, 3279, 10_000)]
    exponents = [0, 1, 1, 2, 2, 3, 7, 7]
    assert factors == pytest.approx([10 ** (-i / 7) for i in exponents])


def test_warm_up_raises_the_kl_weight_linearly() -> None:
    config = TrainConfig(beta=2.0, warmup_epochs=4)
    assert [kl_weight(config, step, steps_per_epoch=10) for step in (0, 10, 20, 40, 90)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert kl_weight(TrainConfig(beta=0.5), 0, 10) == 0.5


def scripted_validation(monkeypatch: pytest.MonkeyPatch, costs: list[float], snapshots: list[dict]) -> None:
    """Replace the validation cost by a script, remembering the weights at each validation."""

    def fake_validate(model, x_valid, config, progress, logger) -> float:
        snapshots.append({name: t.clone() for name, t in model.state_dict().items()})
        cost = costs[len(snapshots) - 1]
        progress.history.append({"step": progress.step, "epoch": progress.epoch, "valid_cost": cost})
        return cost

    monkeypatch.setattr(train_module, "validate", fake_validate)


def test_early_stopping_ends_with_the_best_weights(data: Splits, tmp_path, monkeypatch) -> None:
    snapshots: list[dict] = []
    scripted_validation(monkeypatch, [50.0, 40.0, 45.0, 46.0, 30.0, 30.0], snapshots)
    result = train(VAE([64, 16, 2]), data, tiny_config(tmp_path, epochs=6, patience=2))
    assert result.progress.epoch == 4  # epochs 3 and 4 were no better than epoch 2
    assert result.progress.best_epoch == 2 and result.progress.best_valid_cost == 40.0
    best = snapshots[1]
    for name, tensor in vaekit.load(result.run_dir).state_dict().items():
        torch.testing.assert_close(tensor, best[name])
    assert (result.run_dir / BEST_FILE).is_file()


def test_plateau_schedule_drops_the_rate_after_patience_epochs(data: Splits, tmp_path, monkeypatch) -> None:
    scripted_validation(monkeypatch, [50.0, 51.0, 52.0, 53.0], [])
    config = tiny_config(tmp_path, lr=1e-3, lr_schedule="plateau", lr_patience=1, lr_decay=0.5)
    result = train(VAE([64, 16, 2]), data, config)
    _, state = load_checkpoint(result.run_dir / CHECKPOINT_FILE)
    assert state["scheduler"]["_last_lr"] == pytest.approx([5e-4])  # epoch 2 tolerated, dropped at epoch 3


def test_plateau_schedule_and_early_stopping_agree_on_what_is_better(data: Splits, tmp_path, monkeypatch) -> None:
    # a Gaussian likelihood's costs can be negative; a slightly lower cost is better for both, a higher one for neither
    scripted_validation(monkeypatch, [-100.0, -99.995, -99.99, -100.001], [])
    config = tiny_config(tmp_path, lr=1e-3, lr_schedule="plateau", lr_patience=1, lr_decay=0.5, patience=3)
    result = train(VAE([64, 16, 2]), data, config)
    _, state = load_checkpoint(result.run_dir / CHECKPOINT_FILE)
    assert state["scheduler"]["_last_lr"] == pytest.approx([5e-4])  # two worse epochs: dropped once
    assert state["scheduler"]["num_bad_epochs"] == 0 and result.progress.bad_epochs == 0  # -100.001 is better for both
    assert result.progress.best_epoch == 4


@pytest.mark.parametrize(
    "options",
    [
        dict(lr_schedule="plateau", lr_patience=0, warmup_epochs=2, patience=3),
        dict(lr_schedule="burda", objective="iwae", iwae_k=3),
    ],
)
def test_an_interrupted_run_resumes_exactly(data: Splits, tmp_path, options) -> None:
    torch.manual_seed(5)
    whole = train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "whole", **options))
    torch.manual_seed(5)
    first = train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "parts", **{**options, "epochs": 2}))
    torch.manual_seed(123)  # the resumed run must not depend on the caller's random state or fresh weights
    resumed = train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "parts", **options), run_dir=first.run_dir)
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0)
    assert [h["valid_cost"] for h in resumed.progress.history] == [h["valid_cost"] for h in whole.progress.history]
    assert resumed.progress.best_valid_cost == whole.progress.best_valid_cost
    assert not math.isinf(whole.progress.best_valid_cost)


class Crash(Exception):
    """A stand-in for SIGKILL: the run stops where it is, writing nothing more."""


def test_a_crash_at_the_last_epochs_end_after_a_checkpoint_of_its_last_step_resumes_exactly(data: Splits, tmp_path, monkeypatch) -> None:
    options = dict(epochs=3, patience=5, checkpoint_every=4)  # 4 steps an epoch: the last, step 12, is checkpointed
    torch.manual_seed(5)
    whole = train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "whole", **options))
    record_epoch_end = train_module.record_epoch_end

    def crash_in_the_last_epochs_end(progress, valid_cost):
        if progress.epoch == 3:  # the checkpoint of step 12 is written; the epoch's end (best weights, schedule) is not
            raise Crash
        return record_epoch_end(progress, valid_cost)

    monkeypatch.setattr(train_module, "record_epoch_end", crash_in_the_last_epochs_end)
    torch.manual_seed(5)
    with pytest.raises(Crash):
        train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "parts", **options))
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "parts").iterdir()
    resumed = train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "parts", **options), run_dir=run_dir)
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0)
    assert (resumed.progress.epoch, resumed.progress.best_epoch) == (whole.progress.epoch, whole.progress.best_epoch) == (3, 3)
    best, whole_best = (load_file(str(folder / BEST_FILE)) for folder in (run_dir, whole.run_dir))
    assert all(torch.equal(best[name], tensor) for name, tensor in whole_best.items())


def logged_steps_after_a_crash_and_resume(data: Splits, tmp_path, monkeypatch, epochs: int, crash_epoch: int) -> dict:
    """Crash a run at the end of epoch crash_epoch (its steps logged, its checkpoint not written), resume it; the
    steps TensorBoard shows for each tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_config(tmp_path, epochs=epochs)  # 4 steps an epoch, a checkpoint at each epoch's end
    record_epoch_end = train_module.record_epoch_end

    def crash_at_an_epochs_end(progress, valid_cost):
        if progress.epoch == crash_epoch:
            raise Crash
        return record_epoch_end(progress, valid_cost)

    monkeypatch.setattr(train_module, "record_epoch_end", crash_at_an_epochs_end)
    with pytest.raises(Crash):
        train(VAE([64, 16, 2]), data, config)
    monkeypatch.undo()
    (run_dir,) = tmp_path.iterdir()
    train(VAE([64, 16, 2]), data, config, run_dir=run_dir)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [event.step for event in events.Scalars(tag)] for tag in ("train/total", "valid/total")}


def test_tensorboard_shows_each_step_once_after_a_crash_and_resume(data: Splits, tmp_path, monkeypatch) -> None:
    # step 20 is logged, its checkpoint is not written: the run goes on from step 16
    steps = logged_steps_after_a_crash_and_resume(data, tmp_path, monkeypatch, epochs=6, crash_epoch=5)
    assert steps == {"train/total": [4, 8, 12, 16, 20, 24], "valid/total": [4, 8, 12, 16, 20, 24]}


def test_tensorboard_shows_each_step_once_after_a_crash_before_the_first_checkpoint(data: Splits, tmp_path, monkeypatch) -> None:
    # step 4 is logged, no checkpoint is written: the run starts again from step 0
    steps = logged_steps_after_a_crash_and_resume(data, tmp_path, monkeypatch, epochs=2, crash_epoch=1)
    assert steps["valid/total"] == [4, 8]


def test_a_resumed_plateau_schedule_remembers_its_bad_epochs(data: Splits, tmp_path, monkeypatch) -> None:
    """Costs that only worsen: with --lr-patience 1 the rate halves at the second bad epoch in a row (epoch 3).
    Split at epoch 2 and resumed, the schedule must go on from its saved best and count (a fresh one would take
    epoch 3's cost for its best and never drop the rate)."""
    options = dict(lr=1e-3, lr_schedule="plateau", lr_patience=1, lr_decay=0.5)
    scripted_validation(monkeypatch, [50.0, 51.0, 52.0, 53.0], [])
    whole = train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "whole", **options))
    _, uninterrupted = load_checkpoint(whole.run_dir / CHECKPOINT_FILE)
    monkeypatch.undo()
    scripted_validation(monkeypatch, [50.0, 51.0, 52.0, 53.0], [])
    first = train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "split", **{**options, "epochs": 2}))
    train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "split", **options), run_dir=first.run_dir)
    _, resumed = load_checkpoint(first.run_dir / CHECKPOINT_FILE)
    assert uninterrupted["scheduler"]["_last_lr"] == pytest.approx([1e-3 * 0.5])
    for key in ("_last_lr", "best", "num_bad_epochs", "last_epoch"):
        assert resumed["scheduler"][key] == uninterrupted["scheduler"][key], key


def test_an_equal_cost_is_no_better_and_no_best_weights_are_kept_without_patience(data: Splits, tmp_path, monkeypatch) -> None:
    snapshots: list[dict] = []
    scripted_validation(monkeypatch, [40.0, 40.0, 40.0, 40.0], snapshots)
    result = train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "patient", patience=2))
    assert result.progress.epoch == 3 and result.progress.best_epoch == 1  # a tie is no improvement
    for name, tensor in vaekit.load(result.run_dir).state_dict().items():
        torch.testing.assert_close(tensor, snapshots[0][name])
    monkeypatch.undo()
    plain = train(VAE([64, 16, 2]), data, tiny_config(tmp_path / "plain", epochs=2))
    assert not (plain.run_dir / BEST_FILE).exists()

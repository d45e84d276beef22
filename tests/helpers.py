"""Helpers shared by the training tests (pytest puts this folder on the path)."""

from __future__ import annotations

import importlib
from pathlib import Path

from vaekit import TrainConfig


def quick_config(tmp_path: Path, **overrides) -> TrainConfig:
    """A short CPU training run without a progress bar, writing under tmp_path."""
    options = dict(epochs=2, batch_size=64, out=str(tmp_path), progress=False, device="cpu")
    options.update(overrides)
    return TrainConfig(**options)


def poison_loss(monkeypatch, bad_call: int) -> None:
    """Make the training loss NaN on one call, as a numerical blow-up would."""
    train_module = importlib.import_module("vaekit.train")  # `vaekit.train` is also the function
    real_loss, calls = train_module.loss, {"n": 0}

    def loss_with_a_nan(model, x, l2=0.0, **objective):
        calls["n"] += 1
        cost, terms = real_loss(model, x, l2, **objective)
        return (cost * float("nan"), terms) if calls["n"] == bad_call else (cost, terms)

    monkeypatch.setattr(train_module, "loss", loss_with_a_nan)

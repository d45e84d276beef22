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
    """Make the training cost and its gradient NaN on one step, as a numerical blow-up would
    (on either path: autograd's or the hand-written one of vaekit.fused)."""
    train_module = importlib.import_module("vaekit.train")  # `vaekit.train` is also the function
    real, calls = train_module.cost_and_gradients, {"n": 0}

    def cost_and_gradients_with_a_nan(batch_cost, optimizer, *args):
        calls["n"] += 1
        cost, reconstruction, kl = real(batch_cost, optimizer, *args)
        if calls["n"] != bad_call:
            return cost, reconstruction, kl
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.mul_(float("nan"))
        return cost * float("nan"), reconstruction, kl

    monkeypatch.setattr(train_module, "cost_and_gradients", cost_and_gradients_with_a_nan)

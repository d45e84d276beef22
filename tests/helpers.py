"""Helpers shared by the tests (pytest puts this folder on the path)."""

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
    (on either path: autograd's or the hand-written one of vaekit.fused): that step's batch is NaN."""
    train_module = importlib.import_module("vaekit.train")  # `vaekit.train` is also the function
    real, calls = train_module.checked_gradients, {"n": 0}

    def checked_gradients_of_a_nan_batch(batch_cost, optimizer, x, *args):
        calls["n"] += 1
        return real(batch_cost, optimizer, x * float("nan") if calls["n"] == bad_call else x, *args)

    monkeypatch.setattr(train_module, "checked_gradients", checked_gradients_of_a_nan_batch)


def break_torch_compile(monkeypatch) -> None:
    """Make every function torch.compile returns fail when called, as it does on a machine without a C++ compiler."""
    import torch

    def no_compiler(function, **options):
        def fail(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
        return fail

    monkeypatch.setattr(torch, "compile", no_compiler)

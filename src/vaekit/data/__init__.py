"""Data sets as in-memory tensors with train / valid / test splits.

Every loader returns a `Splits` (splits.py): float32 examples flattened to (N, D) (images in [0, 1]), optional
integer labels, and the (channels, height, width) shape of one example for figures. `load_data` reads:

- `digits`: scikit-learn's bundled 8x8 handwritten digits, the default that works offline (mnist.py);
- `mnist`: the official IDX files, read from a folder or downloaded and checked by md5 (mnist.py);
- `binarized-mnist`: the static binarization of Larochelle & Murray (2011), `.amat` text (mnist.py);
- a `.npy` / `.npz` file of arrays, of any image shape (splits.py, as `Splits.from_arrays` your own arrays);
- a folder of images (PNG, JPEG, ...): class sub-folders as labels, or a flat folder without;
  brought to one size and to grayscale or RGB, decoded once and cached (image_folder.py).

Where their files are found (--data-dir, $VAEKIT_DATA, the cache) is locations.py.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from vaekit.config import NAMED_DATA_SETS, DataConfig, flag_of
from vaekit.data.image_folder import load_image_folder
from vaekit.data.locations import data_folder
from vaekit.data.mnist import load_binarized_mnist, load_digits, load_mnist, shared_mnist_folder
from vaekit.data.splits import (Split, Splits, check_all_values, check_finite, check_values, examples_digest, image_shape_of, is_8bit, is_binary,
                                load_arrays, value_range, warn_if_bytes_are_binary)
from vaekit.errors import VaekitError

__all__ = ["Split", "Splits", "check_finite", "check_values", "examples_digest", "image_shape_of", "is_8bit", "is_binary", "load_data",
           "value_range", "warn_if_bytes_are_binary"]


def load_data(config: DataConfig | str) -> Splits:
    """The data set that config names (or a DataConfig's `data` alone: "digits", a path), checked for shape and
    for NaN and Inf (whether its values suit a model, a model checks: see `model.as_examples`)."""
    config = DataConfig(config) if isinstance(config, str) else config
    source = config.data
    check_options_apply(config)
    if source == "digits":
        splits = load_digits()
    elif source == "mnist":
        splits = load_mnist(config)
    elif source == "binarized-mnist":
        splits = load_binarized_mnist(data_folder(config, "binarized_mnist_train.amat"))
    elif source.endswith((".npy", ".npz")):
        splits = load_arrays(Path(source))
    elif Path(source).is_dir():
        splits = load_image_folder(Path(source), config)
    else:
        raise VaekitError(
            f"unknown data {source!r}: use {', '.join(NAMED_DATA_SETS)}, a path to a .npy/.npz file, or a folder of images"
        )
    check_all_values(splits, source)
    splits.config = with_shared_folder(config)
    return splits


def with_shared_folder(config: DataConfig) -> DataConfig:
    """config, with the $VAEKIT_DATA folder its files were read from as its data_dir: a run records where its data
    are, for evaluate, plot and --resume in a shell without that variable."""
    shared = os.environ.get("VAEKIT_DATA")
    if config.data_dir or not shared:
        return config
    if config.data == "binarized-mnist" and data_folder(config, "binarized_mnist_train.amat") == Path(shared):
        return dataclasses.replace(config, data_dir=shared)
    if config.data == "mnist" and shared_mnist_folder() is not None:
        return dataclasses.replace(config, data_dir=shared)  # mnist_paths read them there
    return config


# the data options that apply to some sources only: where each applies ("folder": a folder of images)
SOURCE_OPTIONS = {"data_dir": ("mnist", "binarized-mnist"), "valid_size": ("mnist",), "mirror": ("mnist",),
                  "image_size": ("folder",), "channels": ("folder",), "fit": ("folder",)}


def check_options_apply(config: DataConfig) -> None:
    """Refuse a data option set away from its default for a source it does nothing for, rather than ignore it."""
    source = config.data if config.data in NAMED_DATA_SETS else "folder" if Path(config.data).is_dir() else "file"
    defaults = DataConfig()
    for name, sources in SOURCE_OPTIONS.items():
        if source not in sources and getattr(config, name) != getattr(defaults, name):
            where = " and ".join("image folders" if s == "folder" else f"--data {s}" for s in sources)
            raise VaekitError(f"{flag_of(name)} applies to {where} only, not to {config.data}")

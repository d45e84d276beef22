"""`Splits`, the one form every data set takes, and the way there from arrays: your own (`Splits.from_arrays`)
or a .npy / .npz file's; and the checks every loader shares (examples there, none NaN or Inf)."""

from __future__ import annotations

import hashlib
import math
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.config import SPLITS, DataConfig
from vaekit.errors import VaekitError


@dataclass
class Split:
    """One split: x (N, D) float32 (in [0, 1] for images), y (N,) int64 labels or None."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Splits:
    """A data set as vaekit trains on it: train, valid and test splits of flat float32 examples, finite (in [0, 1]
    where they are images: bytes are scaled by 1/255; real-valued data keep their values).

    `load_data` reads the named sets, files and folders; `Splits.from_arrays` takes your own arrays.
    """

    train: Split
    valid: Split
    test: Split
    image_shape: tuple[int, int, int]  # (channels, height, width) of one example
    name: str = ""
    class_names: tuple[str, ...] = ()  # label k is class_names[k], where the source names its classes
    config: DataConfig | None = None  # what load_data read them from; a run trained on them records it

    def __getitem__(self, split: str) -> Split:
        if split not in SPLITS:
            raise VaekitError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, split)

    @classmethod
    def from_arrays(cls, x_train: np.ndarray | torch.Tensor, x_valid: np.ndarray | torch.Tensor | None = None,
                    x_test: np.ndarray | torch.Tensor | None = None, *, y_train: Any = None, y_valid: Any = None,
                    y_test: Any = None, name: str = "arrays", seed: int = 0) -> Splits:
        """Your own examples, read as a .npy/.npz file is: images (N, H, W), (N, H, W, C), (N, C, H, W) or flat
        rows (N, D), uint8 scaled by 1/255, every value checked to be finite; optional integer labels.
        Without x_valid and x_test, x_train is split 80 / 10 / 10 with the seed."""
        given = {"train": (x_train, y_train), "valid": (x_valid, y_valid), "test": (x_test, y_test)}
        if (x_valid is None) != (x_test is None):
            raise VaekitError("give both x_valid and x_test, or neither (x_train is then split 80 / 10 / 10)")
        if x_valid is None:
            if y_valid is not None or y_test is not None:
                raise VaekitError("y_valid and y_test need x_valid and x_test")
            parts = split_arrays(as_numpy(x_train), None if y_train is None else as_numpy(y_train), 0.1, 0.1, seed, name)
        else:
            parts = {split: (as_numpy(x), None if y is None else as_numpy(y)) for split, (x, y) in given.items()}
        splits = splits_of(parts, name)
        check_all_values(splits, name)
        return splits

    @property
    def input_size(self) -> int:
        return self.train.x.shape[1]

    def check_fits(self, input_size: int) -> None:
        """A clear error where these examples do not have the model's number of input values."""
        if self.input_size != input_size:
            raise VaekitError(f"{self.name or 'the data'} has {self.input_size} values per example; the model takes {input_size}")

def check_values(x: torch.Tensor, what: str, needs: str = "the model takes values in [0, 1]") -> None:
    """Refuse empty data, NaN/Inf, and values outside [0, 1] (saying what `needs` them there)."""
    low, high = check_finite(x, what)
    if low < 0 or high > 1:
        raise VaekitError(f"{what} has values in [{low:g}, {high:g}]; {needs}")


def check_finite(x: torch.Tensor, what: str) -> tuple[float, float]:
    """Refuse empty data and NaN/Inf; the (lowest, highest) value of the rest."""
    if x.numel() == 0:
        raise VaekitError(f"{what} holds no examples, or examples of size 0")
    low, high = value_range(x)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise VaekitError(f"{what} contains NaN or Inf values")
    return low, high


def value_range(x: torch.Tensor) -> tuple[float, float]:
    """(lowest, highest) value, in one pass; NaN in both where x holds one."""
    return tuple(float(v) for v in torch.aminmax(x))  # type: ignore[return-value]


def warn_if_bytes_are_binary(x: np.ndarray | torch.Tensor, what: str) -> None:
    """uint8 values are pixels 0-255, scaled by 1/255: warn where they are all 0 or 1 (binary data stored in
    bytes, a common way to keep binarized MNIST), which would become 0 and 1/255, images almost black."""
    if x.reshape(-1).shape[0] and int(x.max()) == 1:  # (numpy and torch alike; an empty array has no max)
        warnings.warn(f"{what} holds uint8 values 0 and 1 only: uint8 values are read as pixels 0-255, so these "
                      "become 0 and 1/255 (almost black); give binary data as float32 or bool, or as 0 and 255", stacklevel=3)


def pixels_in_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1], in one pass and one copy."""
    return torch.from_numpy(np.divide(pixels, 255, dtype=np.float32))


def check_all_values(splits: Splits, source: str) -> None:
    """check_finite for every split, naming it: whether a model takes the values, the model says (model.as_examples)."""
    for split in SPLITS:
        check_finite(splits[split].x, f"{source} ({split})")


def is_binary(x: torch.Tensor) -> bool:
    """Whether every value is 0 or 1: data a Bernoulli is a distribution of."""
    return bool(((x == 0) | (x == 1)).all())


def is_8bit(x: torch.Tensor, chunk_values: int = 2**20) -> bool:
    """Whether every value is k/255 for an integer k, as images stored in bytes are after scaling (checked a
    chunk of rows at a time: four temporaries of the whole data set took a gigabyte for 64x64 RGB images)."""
    rows = max(1, chunk_values // max(1, x[0].numel())) if len(x) else 1
    for chunk in x.split(rows):
        scaled = chunk * 255
        if scaled.sub_(scaled.round()).abs_().max() >= 1e-3:
            return False
    return True

def examples_digest(*examples: torch.Tensor) -> str:
    """A BLAKE2 digest of the examples' shapes and values: equal for the same data, read from wherever."""
    digest = hashlib.blake2b(digest_size=16)
    for x in examples:
        digest.update(str(tuple(x.shape)).encode())
        digest.update(memoryview(x.detach().cpu().contiguous().numpy()).cast("B"))
    return digest.hexdigest()

# -- arrays to examples ------------------------------------------------------------------------------


ARRAY_NAMES = {"x", "y", *(f"{xy}_{split}" for xy in "xy" for split in SPLITS)}  # the members load_arrays reads


def load_arrays(path: Path, valid_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> Splits:
    """A .npy of examples, or a .npz with `x` (and `y`), or `x_train`/`x_valid`/`x_test` (and `y_*`).

    Images may be (N, H, W), (N, H, W, C), (N, C, H, W) or flat (N, D); uint8 is scaled by 1/255.
    Which axis of a 4-D array holds the channels is decided by `is_channels_last`.
    A single array is split 80 / 10 / 10 with a fixed seed.
    """
    if not path.is_file():
        raise VaekitError(f"{path} is a folder, not a .npy/.npz file" if path.is_dir() else f"no such file: {path}")
    check_numpy_magic(path)
    try:
        # a .npy mapped, not read: the splits copy what they take from it (half the memory of a copy held meanwhile)
        loaded = np.load(path, allow_pickle=False, mmap_mode="r")
        # of an .npz, the members used alone: an unused one of gigabytes is never unpacked
        arrays = {"x": loaded} if isinstance(loaded, np.ndarray) else {key: loaded[key] for key in loaded.files if key in ARRAY_NAMES}
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile, SyntaxError) as error:  # an .npz is a zip file
        raise VaekitError(f"cannot read {path} as numpy arrays: {error}") from None
    if all(f"x_{split}" in arrays for split in SPLITS):
        parts = {split: (arrays[f"x_{split}"], arrays.get(f"y_{split}")) for split in SPLITS}
    elif "x" in arrays:
        parts = split_arrays(arrays["x"], arrays.get("y"), valid_fraction, test_fraction, seed, path)
    else:
        raise VaekitError(f"{path} needs an array `x` (and optionally `y`), or x_train, x_valid and x_test")
    return splits_of(parts, path.name, path)

def check_numpy_magic(path: Path) -> None:
    """Refuse a file that is neither a .npy nor a .npz (a zip) by its first bytes: numpy would call text 'pickled
    data' and suggest loading it unsafely."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(6)
    except OSError as error:
        raise VaekitError(f"cannot read {path}: {error.strerror}") from None
    if not (start.startswith((b"\x93NUMPY", b"PK\x03\x04")) or start == b""):
        raise VaekitError(f"{path} is not a .npy or .npz file (it starts with {start!r})")


def splits_of(parts: dict[str, tuple[np.ndarray, np.ndarray | None]], name: str, path: Path | str | None = None) -> Splits:
    """Splits from each split's (examples, labels) arrays, all of one image shape."""
    where = path or name
    shape = None
    splits = {}
    for split, (x, y) in parts.items():
        if split == "train" and np.asarray(x).dtype == np.uint8:  # (once: the other splits are stored alike)
            warn_if_bytes_are_binary(np.asarray(x), str(where))
        x_flat, this_shape = to_examples(x, f"{where} ({split})")
        if shape is not None and this_shape != shape:
            raise VaekitError(f"{where}: split {split} has examples of shape {this_shape}, others {shape}")
        shape = this_shape
        splits[split] = Split(x_flat, to_labels(y, len(x_flat), f"{where} ({split})"))
    return Splits(**splits, image_shape=shape, name=name)


def as_numpy(values: Any) -> np.ndarray:
    """A copy, as an array, of a numpy array, a tensor (on any device) or a list: the data set then shares no
    memory with the caller's arrays."""
    if torch.is_tensor(values):
        return values.detach().cpu().numpy().copy()  # (np.array of a tensor warns under numpy 2)
    return np.array(values)


def split_arrays(x: np.ndarray, y: np.ndarray | None, valid_fraction: float, test_fraction: float, seed: int,
                 path: Path | str) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """x (and y) split at random with the seed into train, valid and test: {split: (examples, labels)}."""
    if x.ndim < 2:  # (before the split, whose pieces would be named in the message instead of what was given)
        raise VaekitError(f"{path} must be an array of examples (N, ...), got shape {x.shape}")
    n = len(x)
    if y is not None and np.shape(y)[:1] != (n,):
        raise VaekitError(f"{path}: {n} examples but labels of shape {np.shape(y)}")
    n_valid, n_test = max(1, int(n * valid_fraction)), max(1, int(n * test_fraction))
    if n - n_valid - n_test < 1:
        raise VaekitError(f"{path} holds {n} examples: too few to split into train, valid and test")
    order = np.random.default_rng(seed).permutation(n)
    pieces = {"valid": order[:n_valid], "test": order[n_valid : n_valid + n_test], "train": order[n_valid + n_test :]}
    return {split: (x[idx], None if y is None else np.asarray(y)[idx]) for split, idx in pieces.items()}


def to_examples(x: np.ndarray, what: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Flatten an array of examples to (N, D) float32 and name its image shape (C, H, W)."""
    x = np.asarray(x)
    if x.dtype.kind not in "uifb":
        raise VaekitError(f"{what} has dtype {x.dtype}; expected numbers")
    if x.ndim < 2 or len(x) == 0:
        raise VaekitError(f"{what} must be an array of examples (N, ...), got shape {x.shape}")
    with np.errstate(over="ignore"):  # huge values become Inf here and are refused by check_finite
        values = np.divide(x, 255, dtype=np.float32) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    shape = image_shape_of(x.shape[1:])
    if x.ndim == 4 and is_channels_last(x.shape[1:]):
        values = values.transpose(0, 3, 1, 2)  # -> (N, C, H, W)
    return torch.from_numpy(np.ascontiguousarray(values.reshape(len(values), -1))), shape


def image_shape_of(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) for one example's shape. A flat vector of D values becomes the most nearly square block
    h x w = D, w <= 4h (a square where D is one, 10 x 12 for 120), else a strip 1 x D (a prime D, say)."""
    if len(shape) == 1:
        size = shape[0]
        height = max((h for h in range(1, int(size**0.5) + 1) if size % h == 0), default=1)
        return (1, height, size // height) if size // height <= 4 * height else (1, 1, size)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        if is_channels_last(shape):
            return (shape[2], shape[0], shape[1])
        return tuple(shape)  # type: ignore[return-value]
    raise VaekitError(f"examples of shape {shape} are not vectors or images")


# Grey, RGB and RGBA: the channel counts that tell an image array's channel axis from its sides.
IMAGE_CHANNEL_COUNTS = (1, 3, 4)


def is_channels_last(shape: tuple[int, ...]) -> bool:
    """Whether one example of shape (a, b, c) is (H, W, C) rather than (C, H, W).

    The rule: a first or last axis of 1, 3 or 4 (grey, RGB, RGBA) is the channels. When only the
    last is, channels last; when only the first is, or neither is (5 bands, say), channels first.
    When both are, as in (4, 4, 3) (RGB 4 x 4, or RGBA 4 x 3?), the reading that gives a square
    image wins: (4, 4, 3) is RGB 4 x 4, (4, 3, 3) RGBA 3 x 3, (3, 3, 4) RGBA 3 x 3.
    Ambiguous, and guessed: both readings square, (4, 4, 4) or (3, 3, 3), or neither, (4, 8, 3);
    then the smaller of the two is the channels, and equal ones read channels first.
    """
    first, last = shape[0], shape[-1]
    first_fits, last_fits = first in IMAGE_CHANNEL_COUNTS, last in IMAGE_CHANNEL_COUNTS
    if first_fits != last_fits:
        return last_fits
    if not last_fits:
        return False
    square_if_last, square_if_first = shape[0] == shape[1], shape[1] == shape[2]
    if square_if_last != square_if_first:
        return square_if_last
    return last < first


def to_labels(y: np.ndarray | None, n: int, what: str) -> torch.Tensor | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.shape == (n, 1):  # a column, as pandas and scikit-learn often give them
        y = y[:, 0]
    if y.dtype.kind == "f" and y.shape == (n,) and (np.abs(y) < 2**53).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)  # whole numbers stored as floats (pandas' habit) are labels all the same
    if y.shape != (n,) or y.dtype.kind not in "iub":
        raise VaekitError(f"{what}: labels must be {n} integers, got shape {y.shape} of {y.dtype}")
    return torch.from_numpy(y.astype(np.int64))

"""Data sets as in-memory tensors with train / valid / test splits.

Every loader returns a `Splits`: float32 examples flattened to (N, D) in [0, 1], optional
integer labels, and the (channels, height, width) shape of one example for figures.

- `digits`: scikit-learn's bundled 8x8 handwritten digits, the default that works offline.
- `mnist`: the official IDX files, read from a folder or downloaded and checked by md5.
- `binarized-mnist`: the static binarization of Larochelle & Murray (2011), `.amat` text.
- a `.npy` / `.npz` file of arrays, of any image shape.
- a folder of images (PNG, JPEG, ...): class sub-folders as labels, or a flat folder without;
  brought to one size and to grayscale or RGB, decoded once and cached (see `load_image_folder`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import json
import math
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.config import NAMED_DATA_SETS, SPLITS, DataConfig
from vaekit.errors import VaekitError

# The four official MNIST files and their published md5 checksums.
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
BINARIZED_MNIST_FILES = {split: f"binarized_mnist_{split}.amat" for split in SPLITS}
IDX_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dimension, images: 3 dimensions (unsigned bytes)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "F")  # and "I;16" with its byte orders "I;16B", "I;16L", "I;16N"
IMAGE_CACHE_VERSION = 2  # bump when decoding changes, so old cache files are not reused
EXIF_ORIENTATION = 0x0112  # values 5-8 say the stored pixels are the shown image turned a quarter


@dataclass
class Split:
    """One split: x (N, D) float32 in [0, 1], y (N,) int64 labels or None."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Splits:
    """A data set as vaekit trains on it: train, valid and test splits of flat float32 examples in [0, 1].

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
        rows (N, D), uint8 scaled by 1/255, every value checked to lie in [0, 1]; optional integer labels.
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


def load_data(config: DataConfig | str) -> Splits:
    """The data set that config names (or a DataConfig's `data` alone: "digits", a path), checked for shape and
    for values in [0, 1]."""
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
            raise VaekitError(f"--{name.replace('_', '-')} applies to {where} only, not to {config.data}")


def check_values(x: torch.Tensor, what: str, needs: str = "vaekit's models take values in [0, 1] (both likelihoods)") -> None:
    """Refuse NaN/Inf and values outside [0, 1], which a Bernoulli likelihood cannot model."""
    if x.numel() == 0:
        raise VaekitError(f"{what} holds no examples, or examples of size 0")
    low, high = (float(v) for v in torch.aminmax(x))  # one pass; a NaN makes both NaN, an infinity shows in one
    if not (math.isfinite(low) and math.isfinite(high)):
        raise VaekitError(f"{what} contains NaN or Inf values")
    if low < 0 or high > 1:
        raise VaekitError(f"{what} has values in [{low:g}, {high:g}]; {needs}")


def pixels_in_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1], in one pass and one copy."""
    return torch.from_numpy(np.divide(pixels, 255, dtype=np.float32))


def check_all_values(splits: Splits, source: str) -> None:
    """check_values for every split, naming it."""
    for split in SPLITS:
        check_values(splits[split].x, f"{source} ({split})")


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


def data_folder(config: DataConfig, probe: str) -> Path:
    """--data-dir, else $VAEKIT_DATA, else the cache: the first folder holding probe (or probe.gz)."""
    candidates = [config.data_dir] if config.data_dir else [os.environ.get("VAEKIT_DATA"), str(cache_folder())]
    for folder in filter(None, candidates):
        if find_file(Path(folder), probe) is not None:
            return Path(folder)
    where = config.data_dir or " or ".join(filter(None, candidates))
    raise VaekitError(f"cannot find {probe}(.gz) in {where}; pass the folder that holds it with --data-dir")


def cache_folder() -> Path:
    return Path(os.environ.get("VAEKIT_CACHE") or Path.home() / ".cache" / "vaekit")  # (set but empty: unset)


def find_file(folder: Path, name: str) -> Path | None:
    """folder/name with or without a .gz ending, whichever exists."""
    stem = name[:-3] if name.endswith(".gz") else name
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if it ends in .gz, with a clear error if it is damaged."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise VaekitError(f"cannot read {path}: {error}") from None


# -- digits ------------------------------------------------------------------------------------


def load_digits(seed: int = 0) -> Splits:
    """scikit-learn's 1,797 8x8 digits scaled to [0, 1]; a fixed split of 1,297 / 250 / 250."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = torch.tensor(bunch.data / 16.0, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return Splits(
        train=Split(x[500:], y[500:]),
        valid=Split(x[:250], y[:250]),
        test=Split(x[250:500], y[250:500]),
        image_shape=(1, 8, 8),
        name="digits",
    )


# -- MNIST (IDX) -------------------------------------------------------------------------------


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (labels or images), checking its header."""
    if len(data) < 8:
        raise VaekitError(f"{source} is too short to be an IDX file")
    magic = int.from_bytes(data[:4], "big")
    if magic not in IDX_MAGIC:
        raise VaekitError(f"{source} is not an IDX file of unsigned bytes (magic number {magic:#010x})")
    ndim = IDX_MAGIC[magic]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise VaekitError(f"{source} has a truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header_size != expected:
        raise VaekitError(
            f"{source}: header promises {expected} bytes for shape {shape}, file holds {len(data) - header_size}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def load_mnist(config: DataConfig) -> Splits:
    """MNIST with labels: valid = the first valid_size training images (as TensorFlow's reader)."""
    paths = mnist_paths(config)
    arrays = {key: parse_idx(read_bytes(path), str(path)) for key, path in paths.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if len(images) != len(labels):
            raise VaekitError(f"MNIST {part}: {len(images)} images but {len(labels)} labels")
    train_x = pixels_in_unit_range(arrays["train_images"].reshape(-1, 784))
    train_y = torch.tensor(arrays["train_labels"], dtype=torch.int64)
    n_valid = config.valid_size
    if n_valid >= len(train_x):
        raise VaekitError(f"--valid-size {n_valid} leaves no training images (the file has {len(train_x)})")
    return Splits(
        train=Split(train_x[n_valid:], train_y[n_valid:]),
        valid=Split(train_x[:n_valid], train_y[:n_valid]),
        test=Split(
            pixels_in_unit_range(arrays["test_images"].reshape(-1, 784)),
            torch.tensor(arrays["test_labels"], dtype=torch.int64),
        ),
        image_shape=(1, 28, 28),
        name="mnist",
    )


def mnist_paths(config: DataConfig) -> dict[str, Path]:
    """The four IDX files: from --data-dir, else from $VAEKIT_DATA if it holds them all, else the cache.

    The cache copies are downloaded when missing and checked against the official md5; files in
    a folder the user names are taken as they are (a subset of MNIST, say).
    """
    if config.data_dir:
        return mnist_files_in(Path(config.data_dir))
    shared = shared_mnist_folder()
    if shared is not None:
        return mnist_files_in(shared)
    folder = cache_folder() / "mnist"
    return {key: download(mirror_url(config.mirror, name), folder / name, md5) for key, (name, md5) in MNIST_FILES.items()}


def shared_mnist_folder() -> Path | None:
    """$VAEKIT_DATA where it holds all four MNIST files, else None.

    $VAEKIT_DATA is a folder shared by several data sets: one without all four MNIST files
    (only the test files, say) is not meant for MNIST, so the download goes ahead.
    """
    shared = os.environ.get("VAEKIT_DATA")
    if shared and all(find_file(Path(shared), name) for name, _ in MNIST_FILES.values()):
        return Path(shared)
    return None


def mirror_url(mirror: str, name: str) -> str:
    """The URL of file `name` on the mirror, whether or not the mirror's URL ends in a slash."""
    return urllib.parse.urljoin(mirror if mirror.endswith("/") else mirror + "/", name)


def mnist_files_in(folder: Path) -> dict[str, Path]:
    """The four IDX files under their official names in folder, gzipped or not; an error names the missing."""
    found = {key: find_file(folder, name) for key, (name, _) in MNIST_FILES.items()}
    missing = [MNIST_FILES[key][0] for key, path in found.items() if path is None]
    if missing:
        raise VaekitError(f"{folder} lacks the MNIST files {', '.join(missing)} (gzipped or not)")
    return found  # type: ignore[return-value]


class TransientError(Exception):
    """A failed download that another try may fix: a dropped connection, a timeout, a busy server."""


def download(url: str, destination: Path, md5: str, timeout: float = 60.0, attempts: int = 3, wait: float = 1.0) -> Path:
    """Fetch url to destination unless a verified copy is there; verify md5; never leave a partial file.

    A transient failure is tried again, up to `attempts` times in all, `wait`, then twice as long, and so on between tries.
    """
    from vaekit.files import atomic_write_with

    if destination.is_file() and file_md5(destination) == md5:
        return destination
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VaekitError(f"cannot create the download folder {destination.parent}: {error.strerror} "
                          "(set $VAEKIT_CACHE to another folder, or give --data-dir)") from None
    for attempt in range(1, attempts + 1):
        try:
            atomic_write_with(destination, lambda tmp: fetch(url, tmp, md5, timeout))
            return destination
        except TransientError as error:
            if attempt == attempts:
                tries = f" ({attempts} tries)" if attempts > 1 else ""
                raise VaekitError(f"cannot download {url}{tries}: {error}") from None
            time.sleep(wait * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def fetch(url: str, path: Path, md5: str, timeout: float) -> None:
    """Write url's bytes to path and check their md5: a VaekitError for what a retry cannot mend, a TransientError else."""
    try:
        with open(path, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            expected_length = response.headers.get("Content-Length")
            shutil.copyfileobj(response, out)
    except urllib.error.HTTPError as error:
        if error.code >= 500 or error.code == 429:
            raise TransientError(f"HTTP {error.code} {error.reason}") from None
        raise VaekitError(f"cannot download {url}: HTTP {error.code} {error.reason}") from None
    except ValueError as error:  # urllib's word for a URL it cannot parse
        raise VaekitError(f"cannot download {url}: {error} (check --mirror)") from None
    except http.client.IncompleteRead as error:
        raise TransientError(f"the connection closed after {len(error.partial)} bytes") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = str(getattr(error, "reason", None) or error)
        raise TransientError(reason or type(error).__name__) from None
    if expected_length is not None and path.stat().st_size != int(expected_length):
        raise TransientError(f"the transfer was cut short ({path.stat().st_size} of {expected_length} bytes)")
    actual = file_md5(path)
    if actual != md5:
        raise VaekitError(f"checksum mismatch for {url}: md5 {actual}, expected {md5}")


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- binarized MNIST (.amat) ---------------------------------------------------------------------


def load_binarized_mnist(folder: Path) -> Splits:
    """The static binarized MNIST: 50,000 / 10,000 / 10,000 images of 784 zeros and ones, no labels."""
    splits = {}
    for split, name in BINARIZED_MNIST_FILES.items():
        path = find_file(folder, name)
        if path is None:
            raise VaekitError(f"cannot find {name}(.gz) in {folder}")
        splits[split] = Split(torch.from_numpy(parse_amat(read_bytes(path), str(path))))
    return Splits(**splits, image_shape=(1, 28, 28), name="binarized-mnist")


def parse_amat(data: bytes, source: str, width: int = 784) -> np.ndarray:
    """Rows of `width` space-separated numbers; fast paths for the usual 0/1 text."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if len(raw) and len(raw) % (2 * width) == 0:  # the published files: "0 1 ... 0\n", each value one byte
        rows = raw.reshape(-1, 2 * width)
        separators = np.frombuffer(b" " * (width - 1) + b"\n", dtype=np.uint8)
        values = rows[:, ::2]
        if (rows[:, 1::2] == separators).all() and ((values == ord("0")) | (values == ord("1"))).all():
            return (values - ord("0")).astype(np.float32)
    digits = (raw == ord("0")) | (raw == ord("1"))
    separators = (raw == ord(" ")) | (raw == ord("\n")) | (raw == ord("\r")) | (raw == ord("\t"))
    # Every value must be a single character between separators, or "01" would pass as two values.
    if (digits | separators).all() and not (digits[1:] & digits[:-1]).any():
        per_line = values_per_line(raw, digits)
        if len(per_line) == 0 or (per_line != width).any():
            raise VaekitError(f"{source}: expected rows of {width} values")
        return (raw[digits] - ord("0")).astype(np.float32).reshape(len(per_line), width)
    try:
        values = np.array([[float(v) for v in line.split()] for line in data.decode().splitlines() if line.strip()], dtype=np.float32)
    except (ValueError, UnicodeDecodeError):
        raise VaekitError(f"{source} is not a text file of numbers") from None
    if values.ndim != 2 or values.shape[1] != width:
        raise VaekitError(f"{source}: expected rows of {width} values")
    return values


def values_per_line(raw: np.ndarray, is_value: np.ndarray) -> np.ndarray:
    """How many values each non-blank line of the text holds."""
    ends = np.flatnonzero(raw == ord("\n"))
    if len(raw) and raw[-1] != ord("\n"):
        ends = np.append(ends, len(raw) - 1)
    counts = np.diff(np.concatenate([[0], np.cumsum(is_value, dtype=np.int32)[ends]]))
    return counts[counts > 0]


# -- numpy arrays ------------------------------------------------------------------------------------


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
        loaded = np.load(path, allow_pickle=False)
        arrays = {"x": loaded} if isinstance(loaded, np.ndarray) else {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as error:  # an .npz is a zip file
        raise VaekitError(f"cannot read {path} as numpy arrays: {error}") from None
    if all(f"x_{split}" in arrays for split in SPLITS):
        parts = {split: (arrays[f"x_{split}"], arrays.get(f"y_{split}")) for split in SPLITS}
    elif "x" in arrays:
        parts = split_arrays(arrays["x"], arrays.get("y"), valid_fraction, test_fraction, seed, path)
    else:
        raise VaekitError(f"{path} needs an array `x` (and optionally `y`), or x_train, x_valid and x_test")
    return splits_of(parts, path.name, path)


def examples_digest(*examples: torch.Tensor) -> str:
    """A BLAKE2 digest of the examples' shapes and values: equal for the same data, read from wherever."""
    digest = hashlib.blake2b(digest_size=16)
    for x in examples:
        digest.update(str(tuple(x.shape)).encode())
        digest.update(memoryview(x.detach().cpu().contiguous().numpy()).cast("B"))
    return digest.hexdigest()


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
        x_flat, this_shape = to_examples(x, f"{where} ({split})")
        if shape is not None and this_shape != shape:
            raise VaekitError(f"{where}: split {split} has examples of shape {this_shape}, others {shape}")
        shape = this_shape
        splits[split] = Split(x_flat, to_labels(y, len(x_flat), f"{where} ({split})"))
    return Splits(**splits, image_shape=shape, name=name)


def as_numpy(values: Any) -> np.ndarray:
    """A copy, as an array, of a numpy array, a tensor (on any device) or a list: the data set then shares no
    memory with the caller's arrays."""
    return np.array(values.detach().cpu() if torch.is_tensor(values) else values)


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
    with np.errstate(over="ignore"):  # huge values become Inf here and are refused by check_values
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
    if y.dtype.kind == "f" and y.shape == (n,) and (np.abs(y) < 2**53).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)  # whole numbers stored as floats (pandas' habit) are labels all the same
    if y.shape != (n,) or y.dtype.kind not in "iub":
        raise VaekitError(f"{what}: labels must be {n} integers, got shape {y.shape} of {y.dtype}")
    return torch.from_numpy(y.astype(np.int64))


# -- image folders ------------------------------------------------------------------------------------


def load_image_folder(folder: Path, config: DataConfig, seed: int = 0) -> Splits:
    """The images under folder as one data set, split 80 / 10 / 10 with a fixed seed.

    Layout as torchvision's ImageFolder: sub-folders are classes (sorted names -> labels 0..K-1,
    images found at any depth below each), or, without sub-folders, a flat folder of unlabelled
    images. Every image is brought to config.image_size (`fit`: stretched, or scaled and centre-
    cropped) and to config.channels; the decoded bytes are cached under the cache folder, keyed
    by the files' names, sizes and times and the options, so a second load reads one file.
    """
    files, labels, class_names = list_images(folder)
    key = image_cache_key(folder, files, config)
    cache_path = cache_folder() / "images" / f"{folder.name}-{key}.npz"
    cached = read_image_cache(cache_path)
    if cached is None:
        pixels = decode_images(folder, files, config)
        write_image_cache(cache_path, pixels)
    else:
        pixels = cached
    y = np.asarray(labels, dtype=np.int64) if class_names else None
    parts = split_arrays(pixels, y, 0.1, 0.1, seed, folder)
    splits = {
        split: Split(pixels_in_unit_range(x.reshape(len(x), -1)), to_labels(y_part, len(x), str(folder)))
        for split, (x, y_part) in parts.items()
    }
    return Splits(**splits, image_shape=tuple(pixels.shape[1:]), name=folder.name, class_names=tuple(class_names))


def list_images(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files (paths relative to folder, sorted), their labels and the class names; a flat folder has no classes."""
    top_level = sorted(path.relative_to(folder) for path in folder.iterdir() if is_image_file(path, folder))
    per_class = {
        sub.name: sorted(path.relative_to(folder) for path in sub.rglob("*") if is_image_file(path, folder))
        for sub in sorted(folder.iterdir())
        if sub.is_dir() and not sub.name.startswith(".")
    }
    per_class = {name: found for name, found in per_class.items() if found}
    if per_class and top_level:
        raise VaekitError(
            f"{folder} holds both images ({top_level[0]}, ...) and class folders ({next(iter(per_class))}, ...); "
            "put every image in a class folder, or use a flat folder"
        )
    if not per_class:
        if not top_level:
            raise VaekitError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) nor class folders of images")
        return top_level, [0] * len(top_level), []
    files = [path for found in per_class.values() for path in found]
    labels = [label for label, found in enumerate(per_class.values()) for _ in found]
    return files, labels, list(per_class)


def is_image_file(path: Path, folder: Path) -> bool:
    """A file with an image suffix, not hidden (no part of its path below folder starts with a dot)."""
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not hidden


def image_cache_key(folder: Path, files: list[Path], config: DataConfig) -> str:
    """A hash of what the decoded tensor depends on: the folder, each file's name, size and time, the options."""
    digest = hashlib.sha256()
    options = {"version": IMAGE_CACHE_VERSION, "size": config.image_size, "channels": config.channels, "fit": config.fit}
    digest.update(f"{folder.resolve()}\n{json.dumps(options, sort_keys=True)}\n".encode())
    for relative in files:
        stat = (folder / relative).stat()
        digest.update(f"{relative.as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def decode_images(folder: Path, files: list[Path], config: DataConfig) -> np.ndarray:
    """All images as one uint8 array (N, C, H, W); unreadable files are named in one error.

    A first pass reads only the headers (mode and size) to settle the channels and the size;
    the second decodes each image straight into its place, so memory holds the result only.
    """
    from PIL import Image

    headers = in_threads(lambda relative: read_header(folder / relative), files)
    readable = [header for header in headers if not isinstance(header, str)] or [("L", (1, 1))]
    channels = config.channels or (1 if all(is_grey(mode) for mode, _ in readable) else 3)
    height, width = target_size(files, headers, config)
    pixels = np.empty((len(files), channels, height, width), dtype=np.uint8)

    def fill(index: int) -> str | None:
        if isinstance(headers[index], str):
            return headers[index]
        try:
            pixels[index] = decode_image(folder / files[index], channels, (height, width), config.fit)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:  # damaged, truncated, huge
            return str(error) or type(error).__name__
        return None

    broken = [f"{relative} ({reason})" for relative, reason in zip(files, in_threads(fill, range(len(files)))) if reason]
    if broken:
        shown = "; ".join(broken[:10]) + (f"; and {len(broken) - 10} more" if len(broken) > 10 else "")
        raise VaekitError(f"{len(broken)} file(s) in {folder} are not readable images: {shown}")
    return pixels


def in_threads(fn, items) -> list:
    """fn over items in a thread pool, in order: Pillow decodes without holding the GIL."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def read_header(path: Path) -> tuple[str, tuple[int, int]] | str:
    """(mode, (height, width)) of an image as it is shown, without decoding its pixels (but a palette's),
    or the reason it cannot be read. A palette of greys gives mode "L"."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode, height, width = image.mode, image.height, image.width
            if mode in ("P", "PA") and has_grey_palette(image):
                mode = "L"
            if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):
                height, width = width, height
            return mode, (height, width)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return str(error) or type(error).__name__


def is_grey(mode: str) -> bool:
    return mode in GRAYSCALE_MODES or mode.startswith("I;16")


def has_grey_palette(image: Any) -> bool:
    """Whether every colour of a palette image's palette is a grey (r = g = b): GIFs are palette images."""
    colours = np.asarray(image.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    return bool((colours == colours[:, :1]).all())


def target_size(files: list[Path], headers: list, config: DataConfig) -> tuple[int, int]:
    """(height, width) from --image-size, else the images' own size, which must then be the same for all."""
    if config.image_size:
        return config.image_size[0], config.image_size[-1]
    first_of_size: dict[tuple[int, int], Path] = {}
    for relative, header in zip(files, headers):
        if not isinstance(header, str):
            first_of_size.setdefault(header[1], relative)
    if len(first_of_size) > 1:
        shown = ", ".join(f"{relative} is {h}x{w}" for (h, w), relative in list(first_of_size.items())[:3])
        raise VaekitError(f"the images differ in size ({shown}); choose one with --image-size HEIGHT,WIDTH")
    return next(iter(first_of_size), (1, 1))  # (1, 1) when none is readable: the error then names them all


def decode_image(path: Path, channels: int, size: tuple[int, int], fit: str) -> np.ndarray:
    """One image file as uint8 (C, H, W): grayscale or RGB (transparent parts over black), as it is shown
    (turned by its EXIF orientation, as phones store photos), brought to size."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            image = Image.fromarray(eight_bit(np.asarray(image), image.mode))
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            black = Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = Image.alpha_composite(black, image.convert("RGBA"))
        image = image.convert("L" if channels == 1 else "RGB")
    height, width = size
    if (image.height, image.width) != size:
        if fit == "crop":
            image = ImageOps.fit(image, (width, height), Image.Resampling.BICUBIC)
        else:
            image = image.resize((width, height), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)


def eight_bit(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Grey pixels of more than 8 bits as uint8 0-255: 16-bit integers (modes "I;16..." and "I") scaled
    by 255/65535, floats (mode "F") taken as values in [0, 1]. (Pillow's own conversion would clip them.)"""
    if mode == "F":
        low, high = float(pixels.min()), float(pixels.max())
        if not (0 <= low and high <= 1):  # NaN fails too
            raise ValueError(f"a float image needs values in [0, 1]; this one has [{low:g}, {high:g}]")
        scaled = pixels.astype(np.float64) * 255
    else:
        if pixels.min() < 0 or pixels.max() > 65535:
            raise ValueError("a 32-bit integer image needs 16-bit values, 0-65535")
        scaled = pixels.astype(np.float64) * (255 / 65535)
    return np.round(scaled).astype(np.uint8)


def read_image_cache(path: Path) -> np.ndarray | None:
    """The cached uint8 pixels, or None if there is no usable cache file."""
    try:
        with np.load(path, allow_pickle=False) as loaded:
            return loaded["pixels"]
    except (OSError, ValueError, KeyError, EOFError, zlib.error):
        return None


def write_image_cache(path: Path, pixels: np.ndarray) -> None:
    """Save the pixels atomically; a cache that cannot be written costs time on the next load, not this one."""
    from vaekit.files import atomic_write_with

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object, or numpy would append .npz to the name
            np.savez(handle, pixels=pixels)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, write)
    except (OSError, VaekitError):
        pass

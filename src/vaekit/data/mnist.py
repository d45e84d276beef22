"""The handwritten digits: scikit-learn's 8x8 digits, MNIST (IDX files, downloaded and checked by md5 where no
folder holds them) and the statically binarized MNIST of Larochelle & Murray (2011)."""

from __future__ import annotations

import hashlib
import http.client
import logging
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch

from vaekit.config import SPLITS, DataConfig
from vaekit.data.locations import cache_folder, find_file, read_bytes
from vaekit.data.splits import Split, Splits, pixels_in_unit_range
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
MAX_DOWNLOAD_BYTES = 64 * 2**20  # the largest MNIST file is 9.9 MB
MAX_DOWNLOAD_SECONDS = 600.0

log = logging.getLogger(__name__)  # "downloading URL", which the commands print


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
    header_size, shape = idx_header(data, source)
    expected = math.prod(shape)
    if len(data) - header_size != expected:
        raise VaekitError(
            f"{source}: header promises {expected} bytes for shape {shape}, file holds {len(data) - header_size}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def idx_header(data: bytes, source: str) -> tuple[int, tuple[int, ...]]:
    """(header size in bytes, shape) of the IDX file whose first bytes (at least its header) are data."""
    if len(data) < 8:
        raise VaekitError(f"{source} is too short to be an IDX file")
    magic = int.from_bytes(data[:4], "big")
    if magic not in IDX_MAGIC:
        raise VaekitError(f"{source} is not an IDX file of unsigned bytes (magic number {magic:#010x})")
    ndim = IDX_MAGIC[magic]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise VaekitError(f"{source} has a truncated IDX header")
    return header_size, tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not), read no further than its header promises: a few bytes of header promising
    ten images before gigabytes of gzipped zeros are refused without unpacking them."""
    header_size, shape = idx_header(read_bytes(path, limit=16), str(path))
    size = header_size + math.prod(shape)
    data = read_bytes(path, limit=size + 1)
    if len(data) > size:
        raise VaekitError(f"{path}: header promises {size - header_size} bytes for shape {shape}, the file holds more")
    return parse_idx(data, str(path))


def load_mnist(config: DataConfig) -> Splits:
    """MNIST with labels: valid = the first valid_size training images (as TensorFlow's reader)."""
    paths = mnist_paths(config)
    arrays = {key: read_idx(path) for key, path in paths.items()}
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


def download(url: str, destination: Path, md5: str, timeout: float = 60.0, attempts: int = 3, wait: float = 1.0,
             max_bytes: int = MAX_DOWNLOAD_BYTES, max_seconds: float = MAX_DOWNLOAD_SECONDS) -> Path:
    """Fetch url to destination unless a verified copy is there; verify md5; never leave a partial file.

    A transient failure is tried again, up to `attempts` times in all, `wait`, then twice as long, and so on between tries.
    `timeout` bounds each wait for the server; a reply longer than max_bytes, or a transfer longer than max_seconds,
    is refused (the four MNIST files are 10 MB at most: an endless reply would fill the disk, a trickle never end).
    """
    from vaekit.files import atomic_write_with

    if destination.is_file() and file_md5(destination) == md5:
        return destination
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VaekitError(f"cannot create the download folder {destination.parent}: {error.strerror} "
                          "(set $VAEKIT_CACHE to another folder, or give --data-dir)") from None
    log.info(f"downloading {url}")
    for attempt in range(1, attempts + 1):
        try:
            atomic_write_with(destination, lambda tmp: fetch(url, tmp, md5, timeout, max_bytes, max_seconds))
            return destination
        except TransientError as error:
            if attempt == attempts:
                tries = f" ({attempts} tries)" if attempts > 1 else ""
                raise VaekitError(f"cannot download {url}{tries}: {error}") from None
            time.sleep(wait * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def fetch(url: str, path: Path, md5: str, timeout: float, max_bytes: int = MAX_DOWNLOAD_BYTES,
          max_seconds: float = MAX_DOWNLOAD_SECONDS) -> None:
    """Write url's bytes to path and check their md5: a VaekitError for what a retry cannot mend, a TransientError else."""
    started = time.monotonic()
    try:
        with open(path, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            expected_length = content_length(response.headers.get("Content-Length"))
            if expected_length is not None and expected_length > max_bytes:
                raise VaekitError(f"cannot download {url}: the server offers {expected_length} bytes, more than the "
                                  f"{max_bytes} a data file here may have")
            while chunk := response.read1(1 << 20):  # what has come, so that the clock is read while it trickles
                out.write(chunk)
                if out.tell() > max_bytes:
                    raise VaekitError(f"cannot download {url}: the reply went on past {max_bytes} bytes, more than a "
                                      "data file here may have")
                if time.monotonic() - started > max_seconds:
                    raise VaekitError(f"cannot download {url}: {out.tell()} bytes in {max_seconds:g} s, too slow to finish")
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
    if expected_length is not None and path.stat().st_size != expected_length:
        raise TransientError(f"the transfer was cut short ({path.stat().st_size} of {expected_length} bytes)")
    actual = file_md5(path)
    if actual != md5:
        raise VaekitError(f"checksum mismatch for {url}: md5 {actual}, expected {md5}")


def content_length(header: str | None) -> int | None:
    """The Content-Length header's number of bytes; None where there is none, or none that reads as one."""
    return int(header) if header is not None and header.strip().isdigit() else None


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

"""Property-based tests: every file loader answers arbitrary bytes and arrays with a valid
data set or one clear VaekitError, never another exception."""

import gzip
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vaekit import DataConfig, Splits, VaekitError, load_data
from vaekit.data.locations import read_bytes
from vaekit.data.mnist import parse_amat, parse_idx

# CI runs a bounded number of cases; set HYPOTHESIS_EXAMPLES higher to search longer.
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "60"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def idx_header(magic: int, dims: list[int]) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


@fuzz
@given(st.binary(max_size=2000))
def test_idx_parser_on_arbitrary_bytes(data):
    try:
        array = parse_idx(data, "fuzz")
    except VaekitError:
        return
    assert array.dtype == np.uint8 and array.ndim in (1, 3)


@fuzz
@given(st.sampled_from([2049, 2051, 2050, 0]), st.lists(st.integers(0, 40), min_size=1, max_size=3), st.binary(max_size=3000))
def test_idx_parser_on_plausible_headers(magic, dims, body):
    data = idx_header(magic, dims) + body
    try:
        array = parse_idx(data, "fuzz")
    except VaekitError:
        return
    assert array.size == len(data) - 4 - 4 * array.ndim  # every byte after the header is a value


@fuzz
@given(st.binary(max_size=3000))
def test_amat_parser_on_arbitrary_bytes(data):
    try:
        values = parse_amat(data, "fuzz", width=4)
    except VaekitError:
        return
    assert values.ndim == 2 and values.shape[1] == 4


@fuzz
@given(st.lists(st.lists(st.sampled_from(["0", "1", "0.5", "x", "", "01"]), min_size=0, max_size=6), max_size=6))
def test_amat_parser_on_almost_valid_text(rows):
    text = "\n".join(" ".join(row) for row in rows).encode()
    try:
        values = parse_amat(text, "fuzz", width=4)
    except VaekitError:
        return
    assert values.shape[1] == 4 and np.isfinite(values).all()


def read_gzip_file_holding(data: bytes, folder: Path) -> None:
    """read_bytes on a .gz file of these bytes: its content or a VaekitError, nothing else."""
    path = folder / "file.gz"
    path.write_bytes(data)
    try:
        read_bytes(path)
    except VaekitError:
        pass


@fuzz
@given(st.binary(max_size=500))
def test_gzip_reader_on_arbitrary_bytes(tmp_path_factory, data):
    read_gzip_file_holding(data, tmp_path_factory.mktemp("gz"))


@fuzz
@given(st.binary(max_size=200).map(lambda b: gzip.compress(b)[: len(b) // 2 + 5]))
def test_truncated_gzip_is_a_clear_error(tmp_path_factory, data):
    read_gzip_file_holding(data, tmp_path_factory.mktemp("gz"))


def load_file(path: Path) -> Splits | None:
    try:
        return load_data(DataConfig(data=str(path)))
    except VaekitError:
        return None


def assert_valid(splits: Splits | None) -> None:
    if splits is None:
        return
    for split in (splits.train, splits.valid, splits.test):
        assert split.x.ndim == 2 and len(split.x) > 0
        assert split.x.dtype == torch.float32 and bool(torch.isfinite(split.x).all())  # real values are kept, NaN refused
        assert split.x.shape[1] == int(np.prod(splits.image_shape))


@fuzz
@given(st.binary(max_size=1000), st.sampled_from([".npy", ".npz"]))
def test_numpy_loader_on_arbitrary_bytes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("np") / f"data{suffix}"
    path.write_bytes(data)
    assert_valid(load_file(path))


array_strategy = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.bool_]),
    shape=hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=6),
    elements=None,
)


@fuzz
@given(array_strategy)
def test_numpy_loader_on_arbitrary_arrays(tmp_path_factory, array):
    path = tmp_path_factory.mktemp("np") / "data.npy"
    np.save(path, array)
    assert_valid(load_file(path))


@fuzz
@given(st.dictionaries(st.sampled_from(["x", "y", "x_train", "x_valid", "x_test", "y_train", "z"]), array_strategy, max_size=4))
def test_npz_loader_on_arbitrary_archives(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("np") / "data.npz"
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    assert_valid(load_file(path))


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(VaekitError, match="cannot read"):
        load_data(DataConfig(data=str(path)))

"""Data loaders on the real reference files, the download path through a local server, and bad files."""

import functools
import gzip
import http.server
import logging
import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit import DataConfig, Splits, VaekitError
from vaekit.data import load_data, locations
from vaekit.data.mnist import MNIST_FILES, download, file_md5, mirror_url, parse_amat, parse_idx


def test_digits_is_the_offline_default():
    data = load_data(DataConfig())
    assert data.image_shape == (1, 8, 8)
    assert (len(data.train), len(data.valid), len(data.test)) == (1297, 250, 250)
    assert data.train.x.shape[1] == 64 and 0 <= data.train.x.min() and data.train.x.max() == 1
    assert set(data.train.y.tolist()) == set(range(10))


def test_the_digits_splits_are_disjoint_and_together_the_whole_set():
    from sklearn.datasets import load_digits

    data = load_data(DataConfig())
    rows = lambda x: sorted(bytes(row) for row in np.asarray(x, dtype=np.float32))  # noqa: E731
    everything = rows(np.concatenate([data.train.x, data.valid.x, data.test.x]))
    assert everything == rows(load_digits().data / 16)
    labels = np.concatenate([data.train.y, data.valid.y, data.test.y])
    assert np.array_equal(np.bincount(labels), np.bincount(load_digits().target))


@pytest.fixture(scope="module")
def mnist14k(tmp_path_factory, shared_data) -> Path:
    """The 14,000-image training subset presented under the official MNIST names."""
    folder = tmp_path_factory.mktemp("mnist14k")
    (folder / "train-images-idx3-ubyte.gz").symlink_to(shared_data / "mnist-train-first14000-images-idx3-ubyte.gz")
    (folder / "train-labels-idx1-ubyte.gz").symlink_to(shared_data / "mnist-train-first14000-labels-idx1-ubyte.gz")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).symlink_to(shared_data / name)
    return folder


def test_data_read_from_vaekit_data_record_that_folder(mnist14k, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA", str(mnist14k))
    data = load_data(DataConfig(data="mnist"))
    assert len(data.train) == 9000 and data.config.data_dir == str(mnist14k)  # a run finds them again without the variable
    assert load_data(DataConfig()).config.data_dir is None  # the digits need no folder


def test_mnist_from_a_folder_with_official_names(mnist14k):
    data = load_data(DataConfig(data="mnist", data_dir=str(mnist14k)))
    assert (len(data.train), len(data.valid), len(data.test)) == (9000, 5000, 10000)
    assert data.image_shape == (1, 28, 28) and data.train.x.shape[1] == 784
    assert data.test.y.shape == (10000,) and set(data.test.y.tolist()) == set(range(10))
    assert 0 <= float(data.train.x.min()) and float(data.train.x.max()) == 1.0
    # As TensorFlow's reader: validation is the start of the training file.
    assert int(data.valid.y[0]) == 5  # the first MNIST training image is a 5


def test_mnist_valid_size(mnist14k):
    data = load_data(DataConfig(data="mnist", data_dir=str(mnist14k), valid_size=1000))
    assert (len(data.train), len(data.valid)) == (13000, 1000)
    with pytest.raises(VaekitError, match="leaves no training images"):
        load_data(DataConfig(data="mnist", data_dir=str(mnist14k), valid_size=14000))


def test_mnist_missing_files_are_named(tmp_path):
    with pytest.raises(VaekitError, match="train-images-idx3-ubyte.gz"):
        load_data(DataConfig(data="mnist", data_dir=str(tmp_path)))


def write_fake_mnist(folder: Path, pixel: int, n_train: int = 3, n_test: int = 2) -> Path:
    """The four MNIST files under their official names: tiny, every pixel `pixel`, labels 0, 1, 2, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + bytes([pixel]) * (n * 784)
        labels = (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + bytes(range(n))
        (folder / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (folder / f"{part}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return folder


UNREACHABLE = "http://127.0.0.1:9/"  # a mirror that refuses connections: any download attempt fails


def test_mnist_reads_vaekit_data_without_downloading(tmp_path, isolated_cache, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA", str(write_fake_mnist(tmp_path / "shared", pixel=51)))
    data = load_data(DataConfig(data="mnist", valid_size=1, mirror=UNREACHABLE))
    assert (len(data.train), len(data.valid), len(data.test)) == (2, 1, 2)
    assert torch.all(data.train.x == 51 / 255) and data.test.y.tolist() == [0, 1]
    assert not isolated_cache.exists()  # nothing was downloaded


def test_mnist_data_dir_wins_over_vaekit_data(tmp_path, isolated_cache, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA", str(write_fake_mnist(tmp_path / "shared", pixel=51)))
    given = write_fake_mnist(tmp_path / "given", pixel=102)
    data = load_data(DataConfig(data="mnist", data_dir=str(given), valid_size=1, mirror=UNREACHABLE))
    assert torch.all(data.train.x == 102 / 255)


def test_mnist_downloads_when_vaekit_data_lacks_its_files(tmp_path, isolated_cache, monkeypatch):
    shared = write_fake_mnist(tmp_path / "shared", pixel=51)
    (shared / "train-images-idx3-ubyte.gz").unlink()  # a folder for other data sets: the test files only
    monkeypatch.setenv("VAEKIT_DATA", str(shared))
    with pytest.raises(VaekitError, match=f"cannot download {UNREACHABLE}train-images"):
        load_data(DataConfig(data="mnist", valid_size=1, mirror=UNREACHABLE))


def write_fake_binarized_mnist(folder: Path, pixel: int) -> Path:
    """The three .amat splits, two images each, every pixel `pixel` (0 or 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    row = " ".join([str(pixel)] * 784) + "\n"
    for split in ("train", "valid", "test"):
        (folder / f"binarized_mnist_{split}.amat").write_text(row * 2)
    return folder


def test_binarized_mnist_reads_vaekit_data_unless_data_dir_is_given(tmp_path, isolated_cache, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA", str(write_fake_binarized_mnist(tmp_path / "shared", pixel=1)))
    assert torch.all(load_data(DataConfig(data="binarized-mnist")).train.x == 1)
    given = write_fake_binarized_mnist(tmp_path / "given", pixel=0)
    assert torch.all(load_data(DataConfig(data="binarized-mnist", data_dir=str(given))).train.x == 0)


def test_binarized_mnist_splits(shared_data):
    data = load_data(DataConfig(data="binarized-mnist", data_dir=str(shared_data)))
    assert (len(data.train), len(data.valid), len(data.test)) == (50000, 10000, 10000)
    assert data.train.y is None and data.image_shape == (1, 28, 28)
    assert set(torch.unique(data.test.x).tolist()) == {0.0, 1.0}
    assert abs(float(data.train.x.mean()) - 0.1306) < 0.001  # as the data README says


def test_amat_parser_handles_plain_and_float_text():
    assert parse_amat(b"0 1 1\n1 0 0\n", "x", width=3).tolist() == [[0, 1, 1], [1, 0, 0]]
    assert parse_amat(b"0.5 1 0\n", "x", width=3).tolist() == [[0.5, 1, 0]]
    with pytest.raises(VaekitError, match="rows of 3 values"):
        parse_amat(b"0 1\n1 0 0\n", "x", width=3)
    with pytest.raises(VaekitError, match="rows of 3 values"):
        parse_amat(b"01 1\n", "x", width=3)


@pytest.mark.parametrize("text, rows", [
    (b"0 1 1\n1 0 0\n", [[0, 1, 1], [1, 0, 0]]),  # the published layout, 2 x width bytes a row: the fast path
    (b"0 1 1\n1 0 0\n\n", [[0, 1, 1], [1, 0, 0]]),  # anything else: the general one
    (b"0 1 1\r\n1 0 0", [[0, 1, 1], [1, 0, 0]]),
    (b"0 1 2\n1 0 0\n", [[0, 1, 2], [1, 0, 0]]),
    (b"0 1 1\n1 0 00", [[0, 1, 1], [1, 0, 0]]),
    (b"0 1 1 1 0 0\n", None),
])
def test_the_amat_fast_path_reads_what_the_general_one_does(text, rows):
    if rows is None:
        with pytest.raises(VaekitError, match="rows of 3 values"):
            parse_amat(text, "x", width=3)
    else:
        assert parse_amat(text, "x", width=3).tolist() == rows


def test_idx_parser_checks_the_header():
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (2, 3, 3)) + images.tobytes()
    assert np.array_equal(parse_idx(data, "x"), images)
    with pytest.raises(VaekitError, match="magic number"):
        parse_idx(b"\x00\x00\x09\x99" + data[4:], "x")
    with pytest.raises(VaekitError, match="header promises"):
        parse_idx(data[:-1], "x")


def test_an_idx_file_longer_than_its_header_promises_is_refused_without_unpacking_it(tmp_path, monkeypatch):
    import vaekit.data.mnist as mnist

    folder = write_fake_mnist(tmp_path / "mnist", pixel=3)
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (3, 28, 28))
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as handle:  # 3 images promised, 50 MB of zeros after them
        handle.write(header)
        for _ in range(50):
            handle.write(bytes(2**20))
    read = []
    monkeypatch.setattr(mnist, "read_bytes", lambda path, limit=None: read.append(limit) or locations.read_bytes(path, limit))
    with pytest.raises(VaekitError, match=r"header promises 2352 bytes for shape \(3, 28, 28\), the file holds more"):
        load_data(DataConfig("mnist", data_dir=str(folder)))
    assert read == [16, 16 + 3 * 784 + 1]  # the header, then no more than it promised and one byte


def test_an_npz_member_load_arrays_does_not_use_is_never_read(tmp_path):
    x = np.random.default_rng(0).random((20, 4), dtype=np.float32)
    np.savez(tmp_path / "a.npz", x=x, notes=np.array([{"a": 1}], dtype=object))  # a pickle, which is never loaded
    assert load_data(DataConfig(str(tmp_path / "a.npz"))).train.x.shape == (16, 4)


def test_truncated_gzip_is_a_clear_error(tmp_path, shared_data):
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((shared_data / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes((shared_data / "t10k-images-idx3-ubyte.gz").read_bytes()[:5000])
    with pytest.raises(VaekitError, match="cannot read"):
        load_data(DataConfig(data="mnist", data_dir=str(tmp_path)))


def test_npz_with_one_array_is_split_and_shaped(tmp_path):
    x = np.random.randint(0, 256, size=(100, 6, 5), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(100) % 3)
    data = load_data(DataConfig(data=str(tmp_path / "a.npz")))
    assert (len(data.train), len(data.valid), len(data.test)) == (80, 10, 10)
    assert data.image_shape == (1, 6, 5) and data.train.x.shape[1] == 30
    assert float(data.train.x.max()) <= 1.0 and data.train.y is not None


def test_labels_stored_as_whole_floats_are_labels_and_others_are_refused(tmp_path):
    x = np.random.default_rng(0).random((50, 16), dtype=np.float32)
    np.savez(tmp_path / "float.npz", x=x, y=(np.arange(50) % 3).astype(np.float64))  # as pandas stores them
    data = load_data(DataConfig(data=str(tmp_path / "float.npz")))
    assert data.train.y.dtype == torch.int64 and set(data.train.y.tolist()) <= {0, 1, 2}
    for name, y in (("half", np.arange(50) / 2), ("huge", np.full(50, 1e20))):  # 1e20 would wrap round as an int64
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
        with pytest.raises(VaekitError, match="labels must be .* integers, got shape .* of float64"):
            load_data(DataConfig(data=str(tmp_path / f"{name}.npz")))


def test_check_values_still_refuses_values_outside_the_unit_interval_and_check_finite_takes_them():
    from vaekit.data import check_finite, check_values

    with pytest.raises(VaekitError, match=r"x has values in \[-2, 3\]; the model takes values in \[0, 1\]"):
        check_values(torch.tensor([[-2.0, 3.0]]), "x")
    with pytest.raises(VaekitError, match="has values in .*; mine needs them"):
        check_values(torch.tensor([[-2.0, 3.0]]), "x", needs="mine needs them")
    assert check_finite(torch.tensor([[-2.0, 3.0]]), "x") == (-2.0, 3.0)
    with pytest.raises(VaekitError, match="contains NaN or Inf"):
        check_finite(torch.tensor([[float("inf")]]), "x")


def test_labels_as_a_column_are_labels():
    x, y = np.random.default_rng(0).random((40, 4), dtype=np.float32), (np.arange(40) % 3)[:, None]  # (N, 1), as pandas gives
    data = Splits.from_arrays(x, y_train=y)
    assert data.train.y.shape == (len(data.train),) and data.train.y.dtype == torch.int64
    with pytest.raises(VaekitError, match=r"labels must be \d+ integers, got shape \(\d+, 2\)"):
        Splits.from_arrays(x, y_train=np.zeros((40, 2), np.int64))


def test_npz_with_given_splits_and_channels_last(tmp_path):
    make = lambda n: np.random.rand(n, 4, 4, 3).astype(np.float32)  # noqa: E731
    np.savez(tmp_path / "b.npz", x_train=make(10), x_valid=make(3), x_test=make(2))
    data = load_data(DataConfig(data=str(tmp_path / "b.npz")))
    assert data.image_shape == (3, 4, 4) and (len(data.train), len(data.valid)) == (10, 3)


def test_npy_rejects_nan_and_keeps_real_values_as_they_are(tmp_path):
    x = np.random.rand(50, 16).astype(np.float32)
    x[3, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(VaekitError, match="NaN"):
        load_data(DataConfig(data=str(tmp_path / "nan.npy")))
    np.save(tmp_path / "real.npy", np.linspace(-3, 5, 50 * 16, dtype=np.float32).reshape(50, 16))
    real = load_data(DataConfig(data=str(tmp_path / "real.npy")))  # whether a model takes them, the model says
    values = torch.cat([real.train.x, real.valid.x, real.test.x])
    assert (values.min().item(), values.max().item()) == (-3.0, 5.0)


def test_unknown_data_name_is_a_clear_error():
    with pytest.raises(VaekitError, match="unknown data '.*cifar': use digits, mnist, binarized-mnist, a path"):
        load_data(DataConfig(data="cifar"))


# -- downloads through a local HTTP server on 127.0.0.1 -------------------------------------------


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, shared_data):
    """Serve a folder on 127.0.0.1: the official test files, and the 14k subset under the official train names."""
    root = tmp_path_factory.mktemp("mirror")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(shared_data / name, root / name)
    shutil.copy(shared_data / "mnist-train-first14000-images-idx3-ubyte.gz", root / "train-images-idx3-ubyte.gz")
    shutil.copy(shared_data / "mnist-train-first14000-labels-idx1-ubyte.gz", root / "train-labels-idx1-ubyte.gz")
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    failed_once: set[str] = set()  # the flaky paths that have failed their first request

    def do_GET(self):
        if self.path.startswith("/flaky/") and self.path not in self.failed_once:  # a busy server: 503, then the file
            self.failed_once.add(self.path)
            self.send_error(503, "busy")
            return
        if self.path.startswith("/flaky/"):
            self.path = self.path[len("/flaky"):]
        if self.path.startswith("/chunkcut"):  # a chunked reply that stops in the middle of a chunk
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"400\r\n" + b"x" * 100)
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path.startswith("/endless"):  # a reply with no end, unannounced
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"x" * 65536)
            except OSError:  # the client hung up
                return
        if self.path.startswith("/trickle"):  # a byte every 0.1 s, with a length that reads as no number
            self.send_response(200)
            self.send_header("Content-Length", "abc")
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                return
        if self.path.startswith("/truncated"):  # promise 1000 bytes, send 10, hang up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


def test_an_endless_or_trickling_reply_is_refused_and_leaves_no_file(mirror, isolated_cache):
    with pytest.raises(VaekitError, match="endless.*: the reply went on past 1048576 bytes"):
        download(mirror + "endless", isolated_cache / "e.gz", "0" * 32, max_bytes=2**20)
    started = time.monotonic()
    with pytest.raises(VaekitError, match=r"trickle.*: \d+ bytes in 1 s, too slow to finish"):
        download(mirror + "trickle", isolated_cache / "t.gz", "0" * 32, max_seconds=1.0)
    assert time.monotonic() - started < 10  # not retried: a slow server stays slow
    assert list(isolated_cache.iterdir()) == []


def test_truncated_transfer_is_clear_and_leaves_no_file(mirror, isolated_cache):
    with pytest.raises(VaekitError, match="cut short|cannot download"):
        download(mirror + "truncated.gz", isolated_cache / "t.gz", "0" * 32)
    assert list(isolated_cache.iterdir()) == []


def test_download_verifies_the_official_checksum(mirror, isolated_cache):
    name, md5 = MNIST_FILES["test_images"]
    path = download(mirror + name, isolated_cache / name, md5)
    assert path.is_file() and len(gzip.decompress(path.read_bytes())) == 16 + 10000 * 784
    assert download(mirror + name, isolated_cache / name, md5) == path  # cached: no second fetch needed


def test_download_checksum_mismatch_leaves_no_file(mirror, isolated_cache):
    name, md5 = MNIST_FILES["train_images"]  # the server holds the 14k subset: not the official bytes
    with pytest.raises(VaekitError, match="checksum mismatch"):
        download(mirror + name, isolated_cache / name, md5)
    assert list(isolated_cache.iterdir()) == []


def test_download_http_error_is_clear(mirror, isolated_cache):
    with pytest.raises(VaekitError, match="HTTP 404"):
        download(mirror + "missing.gz", isolated_cache / "missing.gz", "0" * 32)
    assert list(isolated_cache.iterdir()) == []


def test_download_without_network_is_clear(isolated_cache):
    with pytest.raises(VaekitError, match="cannot download .* \\(2 tries\\)"):
        download("http://127.0.0.1:9/x.gz", isolated_cache / "x.gz", "0" * 32, timeout=5, attempts=2, wait=0.01)


def test_a_busy_server_is_tried_again_and_the_file_gets_the_usual_mode(mirror, isolated_cache):
    name, md5 = MNIST_FILES["test_labels"]
    path = download(mirror + "flaky/" + name, isolated_cache / name, md5, wait=0.01)  # 503 first, then the file
    assert file_md5(path) == md5
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # a shared cache stays readable (it was 0600)


def test_an_empty_vaekit_cache_is_unset_not_the_current_folder(monkeypatch):
    from vaekit.data.locations import cache_folder

    monkeypatch.setenv("VAEKIT_CACHE", "")
    assert cache_folder() == Path.home() / ".cache" / "vaekit"


def test_a_file_that_is_no_numpy_file_is_named_so(tmp_path):
    (tmp_path / "text.npy").write_text("hello world\n")
    with pytest.raises(VaekitError, match="text.npy is not a .npy or .npz file \\(it starts with b'hello '\\)"):
        load_data(DataConfig(str(tmp_path / "text.npy")))  # numpy called it pickled data, to load unsafely
    (tmp_path / "folder.npy").mkdir()
    with pytest.raises(VaekitError, match="folder.npy is a folder, not a .npy/.npz file"):
        load_data(DataConfig(str(tmp_path / "folder.npy")))


def test_a_connection_closed_mid_reply_is_a_download_error_and_leaves_no_file(mirror, isolated_cache):
    isolated_cache.mkdir(parents=True)
    with pytest.raises(VaekitError, match="cannot download .*chunkcut.* \\(2 tries\\): the connection closed"):
        download(mirror + "chunkcut", isolated_cache / "c.gz", "0" * 32, attempts=2, wait=0.01)
    assert list(isolated_cache.iterdir()) == []


@pytest.mark.parametrize("mirror_address", ["http://127.0.0.1:8/mnist", "http://127.0.0.1:8/mnist/"])
def test_a_mirror_with_or_without_its_last_slash(mirror_address):
    assert mirror_url(mirror_address, "t10k-labels-idx1-ubyte.gz") == "http://127.0.0.1:8/mnist/t10k-labels-idx1-ubyte.gz"


@pytest.mark.parametrize("bad", ["", "127.0.0.1:8000/mnist", "http://[::1/", "ftp://host/mnist/", "https:///mnist/"])
def test_a_mirror_that_is_no_web_address_is_refused(bad):
    with pytest.raises(VaekitError, match="--mirror must be a web address"):
        DataConfig(data="mnist", mirror=bad)


def test_mnist_without_data_dir_downloads_into_the_cache(mirror, isolated_cache, caplog):
    # The mirror's training file is the subset, so the official checksum must stop the load.
    caplog.set_level(logging.INFO, logger="vaekit")
    with pytest.raises(VaekitError, match="checksum mismatch"):
        load_data(DataConfig(data="mnist", mirror=mirror))
    assert sorted(p.name for p in (isolated_cache / "mnist").iterdir()) == []
    assert f"downloading {mirror}train-images-idx3-ubyte.gz" in caplog.messages  # a command says where from


def test_binary_data_stored_as_bytes_are_warned_of_once(tmp_path):
    binary = (np.random.default_rng(0).random((50, 16)) > 0.5).astype(np.uint8)
    with pytest.warns(UserWarning, match="uint8 values 0 and 1 only") as caught:
        splits = Splits.from_arrays(binary)
    assert len(caught) == 1 and float(splits.train.x.max()) == pytest.approx(1 / 255)  # scaled as pixels, as documented
    np.save(tmp_path / "binary.npy", binary)
    with pytest.warns(UserWarning, match="binary.npy holds uint8 values 0 and 1 only"):
        load_data(DataConfig(str(tmp_path / "binary.npy")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Splits.from_arrays(binary * 255)  # pixels
        Splits.from_arrays(binary.astype(bool))  # 0 and 1


def test_your_own_arrays_become_splits_as_a_file_of_them_would():
    images = np.random.default_rng(0).integers(0, 256, size=(50, 6, 5), dtype=np.uint8)
    labels = np.arange(50) % 3
    splits = Splits.from_arrays(images, y_train=labels)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (40, 5, 5)
    assert splits.image_shape == (1, 6, 5) and splits.train.x.dtype == torch.float32 and splits.train.x.shape[1] == 30
    rows = torch.cat([splits[s].x for s in ("train", "valid", "test")])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, (images.reshape(50, -1) / 255).astype(np.float32).tolist()))
    given = Splits.from_arrays(torch.rand(8, 4), torch.rand(3, 4), torch.rand(2, 4), y_valid=[0, 1, 1])
    assert [len(given[s]) for s in ("train", "valid", "test")] == [8, 3, 2] and given.valid.y.tolist() == [0, 1, 1]


@pytest.mark.parametrize("arguments, message", [
    (dict(x_train=np.full((20, 4), np.nan)), "contains NaN or Inf"),
    (dict(x_train=np.full((20, 4), -np.inf)), "contains NaN or Inf"),
    (dict(x_train=np.zeros((20, 4)), x_valid=np.zeros((3, 4))), "give both x_valid and x_test, or neither"),
    (dict(x_train=np.zeros((20, 4)), x_valid=np.zeros((3, 5)), x_test=np.zeros((3, 4))), "has examples of shape"),
    (dict(x_train=np.zeros((20, 4)), y_train=np.zeros(19)), "20 examples but labels of shape"),
    (dict(x_train=np.random.rand(30)), r"arrays must be an array of examples \(N, ...\), got shape \(30,\)"),  # not (3,) of "valid"
])
def test_own_arrays_that_cannot_be_trained_on_are_refused_clearly(arguments, message):
    with pytest.raises(VaekitError, match=message):
        Splits.from_arrays(**arguments)


def test_a_data_set_of_your_arrays_shares_no_memory_with_them():
    x = np.full((20, 4), 0.5, dtype=np.float32)
    splits = Splits.from_arrays(x)
    x[:] = 7.0
    assert all((splits[s].x == 0.5).all() for s in ("train", "valid", "test"))

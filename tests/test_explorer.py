"""The latent explorer: the decoder export, the written page, its server, and the page in Chromium.

The browser tests drive Debian's Chromium headless through Playwright (`executable_path`, no
download). Without Chromium they skip, except under CI=true where they fail.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from torch import nn

from vaekit import VAE, VaekitError
from vaekit.cli import main
from vaekit.data import Split, Splits, load_data
from vaekit.config import DataConfig, TrainConfig
from vaekit.explorer import make_server, write_explorer
from vaekit.explorer.layers import export_decoder, run_layers
from vaekit.explorer.page import principal_plane
from vaekit.images import to_images
from vaekit.nn import ACTIVATIONS, MLPDecoder
from vaekit.plots import label_colours
from vaekit.train import train

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("VAEKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
JS_TOLERANCE = 1e-4  # max |JavaScript decode - PyTorch decode| in pixel means


def normal_ppf(p) -> np.ndarray:
    """The standard normal's quantiles, by the standard library's own algorithm (Wichura's AS241)."""
    return np.vectorize(NormalDist().inv_cdf)(np.asarray(p, dtype=np.float64))


# -- models ----------------------------------------------------------------------------------------


def sharpened(model: VAE, gain: float = 2.5) -> VAE:
    """Scale a fresh model's weights so that activations reach their curved and saturated parts."""
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.mul_(gain)
    return model.eval()


def custom_decoder_model() -> VAE:
    """A decoder with every activation parameter away from its default."""
    model = VAE([6, 5, 2], image_shape=(1, 2, 3))
    model.decoder = nn.Sequential(nn.Linear(2, 5), nn.ELU(alpha=0.5), nn.Linear(5, 5), nn.LeakyReLU(0.2),
                                  nn.Linear(5, 5), nn.Softplus(beta=2.0, threshold=3.0), nn.Linear(5, 5),
                                  nn.GELU(approximate="tanh"), nn.Dropout(0.3), nn.Linear(5, 6))
    return sharpened(model)


def tiny_data(n: int = 60, image_shape: tuple[int, int, int] = (1, 3, 4), labels: bool = True, seed: int = 0) -> Splits:
    generator = torch.Generator().manual_seed(seed)
    size = int(np.prod(image_shape))

    def split(count: int) -> Split:
        y = torch.randint(0, 3, (count,), generator=generator) if labels else None
        return Split(torch.rand(count, size, generator=generator), y)

    return Splits(split(n), split(n // 3), split(n // 3), image_shape=image_shape, name="tiny")


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_data(DataConfig("digits"))


def trained(model: VAE, data: Splits, steps: int, out: Path, batch_size: int = 128, lr: float = 3e-3) -> VAE:
    """The model after a few Adam steps of `vaekit train` on data (its run folder under out)."""
    config = TrainConfig(lr=lr, epochs=None, max_steps=steps, batch_size=batch_size, progress=False, device="cpu",
                         out=str(out))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is faster, and many times faster on a busy machine
    try:
        model = train(model, data, config).model
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def coloured_shapes(n: int, size: int, seed: int = 0) -> Splits:
    """RGB images (3, size, size) of a disc, a square or a diamond (the label) of random hue and size, near the centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5

    def split(count: int) -> Split:
        labels = rng.integers(0, 3, count)
        images = np.empty((count, 3, size, size), np.float32)
        for i, label in enumerate(labels):
            cy, cx = (0.5 + rng.uniform(-0.08, 0.08, 2)) * size
            r = rng.uniform(0.15, 0.4) * size
            dy, dx = np.abs(yy - cy), np.abs(xx - cx)
            inside = [dy**2 + dx**2 < r**2, np.maximum(dy, dx) < 0.85 * r, dy + dx < 1.2 * r][label]
            hue = rng.uniform(0, 2 * np.pi)  # saturated colours around the hue circle
            colour = 0.55 + 0.45 * np.cos(hue - np.array([0, 2, 4]) * np.pi / 3)
            images[i] = np.where(inside, colour[:, None, None], 0.05)
        return Split(torch.from_numpy(images.reshape(count, -1)), torch.from_numpy(labels))

    return Splits(split(n), split(n // 4), split(n // 4), image_shape=(3, size, size), name="coloured shapes")


@pytest.fixture(scope="module")
def digits_model(digits: Splits, tmp_path_factory) -> VAE:
    """A 64-128-128-2 VAE given a few hundred steps on the digits: enough for a latent map with structure."""
    torch.manual_seed(0)
    return trained(VAE([64, 128, 128, 2], image_shape=(1, 8, 8)), digits, steps=300, out=tmp_path_factory.mktemp("runs"))


def conv_model(image_shape: tuple[int, int, int], latent: int = 2, hidden: tuple[int, ...] = (16,),
               gain: float = 2.0, **options) -> VAE:
    """A fresh conv VAE with sharpened decoder weights (its default channels unless options say)."""
    size = int(np.prod(image_shape))
    return sharpened(VAE([size, *hidden, latent], model="conv", image_shape=image_shape, **options), gain)


# Conv models the JavaScript decoder must reproduce: grey and RGB, square and odd sizes (7x9 needs
# output_padding 1 along one axis), mixed kernels and strides, and a Gaussian likelihood.
CONV_CASES = {
    "grey 8x8": dict(image_shape=(1, 8, 8)),
    "grey 28x28": dict(image_shape=(1, 28, 28), conv_channels=(8, 16, 16)),
    "rgb 32x32": dict(image_shape=(3, 32, 32), conv_channels=(8, 16, 16)),
    "grey 7x9": dict(image_shape=(1, 7, 9), conv_channels=(6, 8)),
    "rgb 7x9 mixed kernels": dict(image_shape=(3, 7, 9), conv_channels=(4, 6, 8), conv_kernels=(3, 5, 4),
                                  conv_strides=(1, 2, 3), latent=4, hidden=(12, 10)),
    "gaussian rgb 11x6": dict(image_shape=(3, 11, 6), conv_channels=(5, 7), likelihood="gaussian", learn_sigma=True),
}


# -- the decoder export ----------------------------------------------------------------------------


@pytest.mark.parametrize("nonlinearity", sorted(ACTIVATIONS))
def test_exported_layers_reproduce_decode(nonlinearity: str) -> None:
    model = sharpened(VAE([12, 9, 7, 3], nonlinearity=nonlinearity))
    specs = export_decoder(model)
    assert [s["type"] for s in specs] == ["linear", "activation"] * 2 + ["linear", "activation"]
    assert specs[-1]["name"] == "sigmoid" and specs[1]["name"] == nonlinearity
    z = torch.randn(50, 3) * 3
    assert torch.allclose(run_layers(specs, z), model.decode(z), atol=1e-6)


def test_export_carries_activation_parameters() -> None:
    specs = export_decoder(custom_decoder_model())
    activations = [s for s in specs if s["type"] == "activation"]
    assert activations[0] == {"type": "activation", "name": "elu", "alpha": 0.5}
    assert activations[1]["slope"] == 0.2
    assert (activations[2]["beta"], activations[2]["threshold"]) == (2.0, 3.0)
    assert activations[3]["approximate"] == "tanh"
    # dropout does nothing at inference and is left out; the Bernoulli mean's sigmoid is added
    assert len(specs) == 10 and specs[-1] == {"type": "activation", "name": "sigmoid"}


def test_export_refuses_what_it_cannot_run() -> None:
    model = VAE([6, 5, 2])
    model.decoder = nn.Sequential(nn.Linear(2, 5), nn.BatchNorm1d(5), nn.Linear(5, 6))
    with pytest.raises(VaekitError, match="layer of type BatchNorm1d"):
        export_decoder(model)

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 6)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.linear(z)

    model.decoder = Residual()
    with pytest.raises(VaekitError, match="decoder of type Residual"):
        export_decoder(model)

    class Shifted(MLPDecoder):  # a known class whose forward pass is not the chain of its layers
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return super().forward(z) + 1.0

    model.decoder = Shifted(model.config)
    with pytest.raises(VaekitError, match="does not reproduce model.decode"):
        export_decoder(model)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_export_reproduces_decode(case: str) -> None:
    model = conv_model(**CONV_CASES[case])
    specs = export_decoder(model)
    deconvs = [s for s in specs if s["type"] == "conv_transpose2d"]
    assert len(deconvs) == len(model.config.conv_channels)
    reshape = [s["type"] for s in specs].index("reshape")
    assert specs[reshape] == {"type": "reshape", "shape": list(model.decoder.feature_shape)}
    assert specs[reshape + 1] == deconvs[0]  # the dense layers' output, seen as (C, H, W) features
    assert deconvs[-1]["out_channels"] == model.config.image_shape[0] and specs[-1]["name"] == "sigmoid"
    z = torch.randn(30, model.latent_size) * 3
    images = model.decode(z)
    assert images.shape == (30, *model.config.image_shape)  # an image model decodes to (N, C, H, W)
    assert torch.allclose(run_layers(specs, z), images.reshape(30, -1), atol=1e-6)


def test_conv_export_carries_padding_and_odd_sizes() -> None:
    model = conv_model((1, 7, 9), conv_channels=(6, 8))
    first, last = [s for s in export_decoder(model) if s["type"] == "conv_transpose2d"]
    # 7x9 -> 3x4 -> 1x2 in the encoder; back up, 1x2 -> 3x4 needs an extra row, 3x4 -> 7x9 an extra row and column
    assert (first["kernel"], first["stride"], first["padding"]) == ([4, 4], [2, 2], [1, 1])
    assert (first["output_padding"], last["output_padding"]) == ([1, 0], [1, 1])
    assert (first["in_channels"], first["out_channels"], last["out_channels"]) == (8, 6, 1)
    weights = np.frombuffer(base64.b64decode(last["weight"]), "<f4")  # PyTorch's (C_in, C_out, kh, kw) layout
    assert np.array_equal(weights, model.decoder.deconvs[-1].weight.detach().numpy().ravel())


def test_export_refuses_transposed_convolutions_it_cannot_run() -> None:
    model = VAE([12, 9, 2], image_shape=(1, 3, 4))
    refused = [(nn.ConvTranspose2d(2, 2, 2, groups=2), "groups=1"), (nn.ConvTranspose2d(2, 1, 2, dilation=2), "dilation=(1, 1)")]
    for layer, name in refused:
        model.decoder = nn.Sequential(nn.Linear(2, 2 * 2 * 2), nn.Unflatten(1, (2, 2, 2)), layer, nn.Flatten())
        with pytest.raises(VaekitError, match=re.escape(f"ConvTranspose2d layers with {name} only")):
            export_decoder(model)
    model.decoder = nn.Sequential(nn.Linear(2, 12), nn.Unflatten(0, (1, 12)))
    with pytest.raises(VaekitError, match="Unflatten of dimension 1"):
        export_decoder(model)


def sequential_conv_model() -> VAE:
    """A decoder of the generic kind: rectangular kernels, unequal strides, padding and output padding per axis."""
    model = VAE([2 * 5 * 7, 9, 3], image_shape=(2, 5, 7))
    model.decoder = nn.Sequential(
        nn.Linear(3, 4 * 3 * 2), nn.Tanh(), nn.Unflatten(1, (4, 3, 2)),
        nn.ConvTranspose2d(4, 3, kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), output_padding=(0, 1)),
        nn.SiLU(), nn.ConvTranspose2d(3, 2, kernel_size=(2, 3), stride=(2, 1), padding=(1, 0), output_padding=(1, 0), bias=False),
        nn.Flatten(), nn.Linear(2 * 5 * 7, 2 * 5 * 7),
    )
    return sharpened(model, gain=1.5)


def test_sequential_conv_decoder_exports() -> None:
    model = sequential_conv_model()
    specs = export_decoder(model)
    assert [s["type"] for s in specs].count("reshape") == 2 and specs[-3] == {"type": "reshape", "shape": [-1]}
    z = torch.randn(20, 3) * 3
    assert torch.allclose(run_layers(specs, z), model.decode(z), atol=1e-6)


def test_gaussian_likelihood_exports_its_sigmoid_mean(tmp_path: Path) -> None:
    model = sharpened(VAE([12, 9, 7, 3], image_shape=(1, 3, 4), likelihood="gaussian", sigma=0.2, learn_sigma=True))
    with torch.no_grad():
        model.likelihood_log_sigma.fill_(np.log(0.05))
    specs = export_decoder(model)
    assert specs[-1] == {"type": "activation", "name": "sigmoid"}
    z = torch.randn(50, 3) * 3
    assert torch.allclose(run_layers(specs, z), model.decode(z), atol=1e-6)
    description = page_payload(write_explorer(model, None, tmp_path / "page.html"))["model"]
    assert description["likelihood"] == "Gaussian" and description["sigma"] == pytest.approx(0.05)
    assert page_payload(write_explorer(VAE([12, 9, 3]), None, tmp_path / "b.html"))["model"]["sigma"] is None


def test_a_model_of_real_values_exports_its_mean_itself_and_the_range_its_page_draws(tmp_path: Path) -> None:
    model = sharpened(VAE([12, 9, 3], image_shape=(1, 3, 4), likelihood="gaussian", gaussian_mean="identity", value_range=(-4.0, 4.0)))
    specs = export_decoder(model)
    assert specs[-1]["type"] == "linear"  # no sigmoid after the last layer
    z = torch.randn(50, 3) * 3
    assert torch.allclose(run_layers(specs, z), model.decode(z), atol=1e-5) and model.decode(z).abs().max() > 1
    data = tiny_data(image_shape=(1, 3, 4))
    data.train.x.mul_(8).sub_(4)  # [-4, 4], the recorded range: -4 is byte 0, 0 is 128, 4 is 255
    payload = page_payload(write_explorer(model, data, tmp_path / "page.html"))
    assert payload["display"] == [-4.0, 4.0]
    shown = np.frombuffer(base64.b64decode(payload["points"]["images"]), np.uint8).reshape(-1, 12)
    index = payload["points"]["index"]
    expected = np.round((data.train.x[index[: len(shown)]].numpy() + 4) / 8 * 255)
    assert np.abs(shown - expected).max() <= 1
    assert page_payload(write_explorer(VAE([12, 9, 3]), None, tmp_path / "b.html"))["display"] == [0.0, 1.0]


# -- the written page ------------------------------------------------------------------------------


def page_payload(path: Path) -> dict:
    html = path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="vaekit-data">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_page_is_one_file_that_needs_no_network(tmp_path: Path) -> None:
    model = VAE([12, 9, 2], image_shape=(1, 3, 4))
    data = tiny_data(n=120)
    path = write_explorer(model, data, tmp_path / "sub" / "page.html", max_points=50, title="a <b> & c")
    html = path.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(?!data:)", html, re.I)
    assert "https://" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "<title>a &lt;b&gt; &amp; c" in html
    payload = page_payload(path)
    points = payload["points"]
    assert points["n"] == 50 and len(points["labels"]) == 50 and points["n_images"] == 50
    index = points["index"]  # 50 of the 120: a subset, each point carrying its example's number in the split
    assert index == sorted(set(index)) and index != list(range(50)) and max(index) < 120
    z = np.frombuffer(base64.b64decode(points["z"]), "<f4").reshape(50, 2)
    mu, _ = model.encode(data.train.x[index].numpy())
    assert np.abs(z - mu).max() < 1e-6 and points["labels"] == data.train.y[index].tolist()
    assert payload["plane"]["basis"] == [[1.0, 0.0], [0.0, 1.0]]
    assert payload["model"]["image_shape"] == [1, 3, 4]
    labels = sorted(set(data.train.y.tolist()))
    assert points["colours"] == {str(label): to_hex(label_colours(np.array(labels))[label]) for label in labels}


def test_example_images_stay_within_their_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vaekit.explorer.page.IMAGE_BYTES_BUDGET", 12 * 10)
    payload = page_payload(write_explorer(VAE([12, 9, 2]), tiny_data(), tmp_path / "page.html"))
    assert payload["points"]["n"] == 60 and payload["points"]["n_images"] == 10
    assert len(base64.b64decode(payload["points"]["images"])) == 12 * 10


def test_page_without_labels_or_without_data(tmp_path: Path) -> None:
    model = VAE([12, 9, 4])
    unlabelled = page_payload(write_explorer(model, tiny_data(labels=False), tmp_path / "a.html"))
    assert unlabelled["points"]["labels"] is None
    empty = page_payload(write_explorer(model, None, tmp_path / "b.html"))
    assert empty["points"] is None and empty["plane"]["origin"] == [0.0] * 4
    assert empty["model"]["image_shape"] == [1, 3, 4]  # a flat vector that is not a square: the most nearly square block


def test_principal_plane_finds_the_directions_of_largest_variance() -> None:
    rng = np.random.default_rng(0)
    scales = np.array([0.1, 3.0, 0.2, 1.5, 0.1])
    mu = (rng.standard_normal((4000, 5)) * scales + 7.0).astype(np.float32)
    origin, basis, explained = principal_plane(mu)
    assert np.allclose(origin, mu.mean(axis=0), atol=1e-5)
    assert np.allclose(np.abs(basis), np.eye(5)[[1, 3]], atol=0.03)
    assert np.allclose(basis @ basis.T, np.eye(2), atol=1e-5)
    assert explained[0] == pytest.approx(9 / (9 + 2.25 + 0.06), abs=0.02)


def test_two_codes_are_drawn_apart_on_the_pad_as_in_the_latent_figure() -> None:
    mu = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]], np.float32)
    origin, basis, explained = principal_plane(mu)
    pad = (mu - origin) @ basis.T
    assert np.allclose(pad[:, 0], [-1.0, 1.0]) and explained[0] == pytest.approx(1.0)  # not both at the origin


def test_write_explorer_rejects_bad_requests(tmp_path: Path) -> None:
    model = VAE([12, 9, 2])
    with pytest.raises(VaekitError, match="values per example"):
        write_explorer(model, tiny_data(image_shape=(1, 4, 4)), tmp_path / "x.html")
    with pytest.raises(VaekitError, match="at least 1 point"):
        write_explorer(model, tiny_data(), tmp_path / "x.html", max_points=0)


# -- the command and the server --------------------------------------------------------------------


def test_explore_command_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = VAE([64, 16, 2], image_shape=(1, 8, 8)).save(tmp_path / "run")  # a model alone: no record of its data
    out = tmp_path / "explorer.html"
    assert main(["explore", str(run), "--out", str(out)]) == 1
    assert "does not record its data" in capsys.readouterr().err and not out.exists()
    assert main(["explore", str(run), "--data", "digits", "--out", str(out), "--split", "valid", "--points", "100"]) == 0
    assert page_payload(out)["points"]["n"] == 100
    assert f"wrote {out}" in capsys.readouterr().out

    assert main(["explore", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert main(["explore", str(run), "--data", str(tmp_path / "no.npz")]) == 1
    assert main(["explore", str(run), "--data", "digits", "--out", str(out), "--port", "8123"]) == 1  # would not serve
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("vaekit: error: ") for line in err)
    assert "--port is the port of --serve" in err[2]


def test_explore_command_on_a_conv_gaussian_run(tmp_path: Path) -> None:
    model = VAE([64, 16, 2], model="conv", image_shape=(1, 8, 8), conv_channels=(4, 8), likelihood="gaussian", learn_sigma=True)
    run = model.save(tmp_path / "run")
    out = tmp_path / "explorer.html"
    assert main(["explore", str(run), "--data", "digits", "--out", str(out), "--points", "50"]) == 0  # as 1x8x8 images
    payload = page_payload(out)
    assert payload["model"]["model"] == "conv" and payload["model"]["likelihood"] == "Gaussian"
    assert payload["title"] == "run" and payload["points"]["n"] == 50
    assert len(base64.b64decode(payload["points"]["images"])) == 50 * 64  # thumbnails: flat rows of the digits
    assert [s["type"] for s in payload["decoder"]].count("conv_transpose2d") == 2


MARKUP = "<!--<script></script>& <b>"  # in a folder's or a run's name, as someone else may have named them


def page_with_markup_in_its_names(tmp_path: Path) -> Path:
    data = dataclasses.replace(tiny_data(n=30), name=MARKUP, class_names=(MARKUP, "b", "c"))
    return write_explorer(VAE([12, 9, 2], image_shape=(1, 3, 4)), data, tmp_path / "markup.html", title=MARKUP)


def test_markup_in_names_stays_text_in_the_pages_data(tmp_path: Path) -> None:
    html = page_with_markup_in_its_names(tmp_path).read_text(encoding="utf-8")
    data = re.search(r'<script type="application/json" id="vaekit-data">(.*?)</script>', html, re.S).group(1)
    assert not set("<>&") & set(data)  # so no "<!--<script" keeps the element open past its end
    payload = json.loads(data)
    assert payload["title"] == MARKUP and MARKUP in json.dumps(payload, ensure_ascii=False)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = write_explorer(VAE([12, 9, 2], image_shape=(1, 3, 4)), tiny_data(), tmp_path / "page.html")
    server = make_server(path, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/page.html", path
    server.shutdown()
    server.server_close()


def test_server_serves_the_page_and_nothing_else(served: tuple[str, Path]) -> None:
    url, path = served
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url) as response:
        assert response.read() == path.read_bytes()
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(url.replace("page.html", "secret.txt"))
    rebound = urllib.request.Request(url, headers={"Host": f"attacker.example:{url.split(':')[2].split('/')[0]}"})
    with pytest.raises(urllib.error.HTTPError, match="403"):  # a page whose name resolves to 127.0.0.1 (DNS rebinding)
        urllib.request.urlopen(rebound)
    with urllib.request.urlopen(url.replace("127.0.0.1", "localhost")) as response:
        assert response.status == 200
    with pytest.raises(VaekitError, match="no explorer page"):
        make_server(path.with_name("missing.html"), port=0)
    with pytest.raises(VaekitError, match="choose another --port"):
        make_server(path, port=int(url.split(":")[2].split("/")[0]))


# -- in Chromium ------------------------------------------------------------------------------------


def unavailable(message: str) -> None:
    """Skip on a user's machine; fail under CI, where the browser tests must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).is_file():
        unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set VAEKIT_CHROMIUM)")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A loaded explorer page with its console errors and network requests."""

    def __init__(self, browser, url: str, viewport: tuple[int, int] = (1280, 1000)):
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(url)
        self.page.wait_for_function("document.body.dataset.ready === 'true'")

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def settle(self) -> None:
        """Wait for two animation frames, so that the last pointer move is drawn."""
        self.js("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")

    def decoded_pixels(self) -> np.ndarray:
        rgba = self.js("""() => { const c = document.getElementById('decoded');
            return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
        return np.array(rgba, dtype=np.float64)

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def open_page(browser) -> Iterator:
    pages: list[Page] = []

    def load(path_or_url: str | Path, **kwargs) -> Page:
        url = path_or_url if str(path_or_url).startswith("http") else Path(path_or_url).resolve().as_uri()
        pages.append(Page(browser, url, **kwargs))
        return pages[-1]

    yield load
    for page in pages:
        page.close()


def test_a_page_written_without_data_says_what_its_pad_shows(open_page, tmp_path: Path) -> None:
    page = open_page(write_explorer(VAE([12, 9, 4]), None, tmp_path / "bare.html"))
    assert "along latent dimensions 1 and 2" in page.js("document.getElementById('plane-note').textContent")
    assert page.js("document.getElementById('subtitle').textContent").count("12-9-4") == 1  # the default title holds it
    assert page.errors == []


def test_the_page_names_classes_as_the_figures_do(open_page, tmp_path: Path) -> None:
    data = dataclasses.replace(tiny_data(), class_names=("cat", "dog", "owl"))
    path = write_explorer(VAE([12, 9, 2]), data, tmp_path / "named.html")
    assert page_payload(path)["points"]["names"] == {"0": "0: cat", "1": "1: dog", "2": "2: owl"}
    page = open_page(path)
    assert page.errors == []
    assert page.js("[...document.querySelectorAll('#legend button')].map(b => b.textContent)") == ["0: cat", "1: dog", "2: owl"]


def js_decode_error(page: Page, model: VAE, n: int = 20, scale: float = 2.0, seed: int = 0) -> float:
    z = torch.randn(n, model.latent_size, generator=torch.Generator().manual_seed(seed)) * scale
    js = js_decode(page, z.numpy())
    return float(np.abs(js - model.decode(z).reshape(n, -1).numpy()).max())  # images (N, C, H, W) of a conv model, flat


def js_decode(page: Page, z: np.ndarray) -> np.ndarray:
    """The page's decode of codes z (N, latent): (N, D) float32, brought back as base64 (faster than JSON numbers)."""
    text = page.js("""(zs) => {
        const rows = window.vaekitExplorer.decode(zs), size = rows[0].length;
        const all = new Float32Array(rows.length * size);
        rows.forEach((row, i) => all.set(row, i * size));
        const bytes = new Uint8Array(all.buffer);
        let binary = "";
        for (let i = 0; i < bytes.length; i += 8192) binary += String.fromCharCode(...bytes.subarray(i, i + 8192));
        return btoa(binary); }""", z.tolist())
    return np.frombuffer(base64.b64decode(text), "<f4").reshape(len(z), -1)


def test_page_in_chromium(open_page, digits_model: VAE, digits: Splits, tmp_path: Path, served) -> None:
    """Loads offline with no console errors; the JavaScript decoder equals PyTorch; a screenshot for people."""
    path = write_explorer(digits_model, digits, tmp_path / "explorer.html", title="digits test model")
    page = open_page(path, viewport=(1360, 1500))
    assert page.errors == []
    assert page.requests == [path.resolve().as_uri()]
    assert js_decode_error(page, digits_model) < JS_TOLERANCE
    assert page.js("document.querySelectorAll('#legend button').length") == 10
    swatches = page.js("[...document.querySelectorAll('#legend .swatch')].map(s => getComputedStyle(s).backgroundColor)")
    in_figures = [tuple(round(255 * c) for c in colour[:3]) for colour in label_colours(np.arange(10)).values()]
    assert swatches == [f"rgb({r}, {g}, {b})" for r, g, b in in_figures]  # the PNG scatter's colours, label by label

    for i in (3, 10):  # as a user would: pick two examples, then move over the pad
        point = page.js(f"window.vaekitExplorer.examplePoint({i})")
        page.page.mouse.click(point["x"], point["y"])
    point = page.js("window.vaekitExplorer.padPoint(0.4, -0.6)")
    page.page.mouse.move(point["x"], point["y"])
    page.settle()
    shown = page.js("document.getElementById('z-value').textContent")  # e.g. "(0.40, -0.60)"
    assert np.allclose([float(x) for x in shown.strip("()").split(",")], [0.4, -0.6], atol=0.02)
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
    assert page.errors == []

    url, _ = served  # the same page from `--serve`'s server: one request, the page itself
    over_http = open_page(url)
    assert over_http.errors == [] and over_http.requests == [url]


@pytest.mark.parametrize("nonlinearity", [*sorted(ACTIVATIONS), "custom parameters"])
def test_javascript_decoder_matches_pytorch_for_every_activation(open_page, tmp_path: Path, nonlinearity: str) -> None:
    if nonlinearity == "custom parameters":
        model = custom_decoder_model()
    else:
        model = sharpened(VAE([12, 9, 7, 3], image_shape=(1, 3, 4), nonlinearity=nonlinearity))
    page = open_page(write_explorer(model, None, tmp_path / "explorer.html"))
    assert js_decode_error(page, model, n=200, scale=3.0) < JS_TOLERANCE
    assert page.errors == []


def test_a_page_with_markup_in_its_names_runs(open_page, tmp_path: Path) -> None:
    page = open_page(page_with_markup_in_its_names(tmp_path))
    assert page.errors == [] and page.js("typeof window.vaekitExplorer") == "object"
    assert MARKUP in page.js("document.getElementById('legend').textContent")


def test_javascript_special_functions(open_page, tmp_path: Path) -> None:
    """erf (for GELU) to double precision, and the normal quantile (for the grid) to 1e-9."""
    import math

    page = open_page(write_explorer(VAE([4, 3, 2]), None, tmp_path / "explorer.html"))
    x = np.linspace(-6, 6, 241).tolist()
    erf = np.array(page.js("(xs) => xs.map(VaekitDecoder.erf)", x))
    assert np.abs(erf - [math.erf(v) for v in x]).max() < 1e-11
    p = np.linspace(1e-4, 1 - 1e-4, 301).tolist()
    quantiles = np.array(page.js("(ps) => ps.map(VaekitDecoder.inverseNormalCdf)", p))
    assert np.abs(quantiles - normal_ppf(p)).max() < 1e-8


def test_pointer_moves_over_the_pad_decode_live(open_page, digits_model: VAE, digits: Splits, tmp_path: Path) -> None:
    page = open_page(write_explorer(digits_model, digits, tmp_path / "explorer.html"))
    images = []
    for u, v in [(-1.0, 0.5), (1.0, -0.5)]:
        point = page.js(f"window.vaekitExplorer.padPoint({u}, {v})")
        page.page.mouse.move(point["x"], point["y"])
        page.settle()
        z = np.array(page.js("window.vaekitExplorer.currentZ()"))
        assert np.abs(z - [u, v]).max() < 0.02  # within a pixel of the pointer
        pixels = page.decoded_pixels().reshape(8, 8, 4)
        expected = np.round(255 * digits_model.decode(z[None].astype(np.float32))).reshape(8, 8)
        assert np.abs(pixels[..., 0] - expected).max() <= 1
        images.append(pixels)
    assert np.abs(images[0] - images[1]).max() > 50
    assert page.errors == []


def test_clicking_two_examples_shows_their_interpolation(open_page, digits_model: VAE, digits: Splits, tmp_path: Path) -> None:
    page = open_page(write_explorer(digits_model, digits, tmp_path / "explorer.html"))
    assert page.js("document.getElementById('strip').hidden")
    a, b = 3, 10
    for i in (a, b):
        point = page.js(f"window.vaekitExplorer.examplePoint({i})")
        page.page.mouse.click(point["x"], point["y"])
    zs = np.array(page.js("window.vaekitExplorer.stripZs()"))
    ends = np.array([page.js(f"window.vaekitExplorer.exampleZ({i})") for i in (a, b)])
    assert not page.js("document.getElementById('strip').hidden")
    assert len(zs) == 10
    # a click lands within a few pixels of an example's dot; the codes are the example's, or one very close
    assert np.abs(zs[[0, -1]] - ends).max() < 0.05
    assert np.allclose(zs[5], zs[0] + 5 / 9 * (zs[-1] - zs[0]), atol=1e-5)
    assert "A example #" in page.js("document.getElementById('strip-ends').textContent")
    page.page.keyboard.press("Escape")
    assert page.js("document.getElementById('strip').hidden")
    assert page.errors == []


def test_examples_are_named_by_their_number_in_the_split(open_page, tmp_path: Path) -> None:
    """With more examples than --points the pad holds a random subset; the page still names each
    example by its index in the split (clicked, nearest, random anchor), so a user can look it up."""
    model = sharpened(VAE([12, 9, 2], image_shape=(1, 3, 4)))
    data = tiny_data(n=120)
    page = open_page(write_explorer(model, data, tmp_path / "explorer.html", max_points=50))

    def example_named(text: str) -> tuple[int, np.ndarray]:  # "example #17 (label 2)": 17, after checking the label
        index, label = map(int, re.search(r"example #(\d+) \(label (\d+)\)", text).groups())
        assert label == data.train.y[index]
        return index, model.encode(data.train.x[index : index + 1].numpy())[0][0]

    point = page.js("window.vaekitExplorer.examplePoint(40)")  # late in the subset, far from example 40 of the split
    page.page.mouse.click(point["x"], point["y"])
    page.settle()
    index, code = example_named(page.js("document.getElementById('strip-ends').textContent"))
    assert np.abs(np.array(page.js("window.vaekitExplorer.currentZ()")) - code).max() < 1e-6  # the clicked code

    nearest = page.js("document.getElementById('nearest-label').textContent")
    assert nearest == f"label {data.train.y[index]} · #{index} · 0.00 away"
    rgba = np.array(page.js("""() => { const c = document.getElementById('nearest');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }"""))
    assert np.abs(rgba.reshape(3, 4, 4)[..., 0] - np.round(255 * data.train.x[index].numpy()).reshape(3, 4)).max() <= 1

    for _ in range(3):  # a random example as the anchor: named by its number too
        page.page.click("#anchor-random")
        _, code = example_named(page.js("document.getElementById('anchor-name').textContent"))
        assert np.abs(np.array(page.js("window.vaekitExplorer.anchor()")) - code).max() < 1e-6
    assert page.errors == []


def test_larger_latent_uses_sliders_and_the_principal_plane(open_page, tmp_path: Path) -> None:
    model = sharpened(VAE([12, 16, 5], image_shape=(1, 3, 4)), gain=1.5)
    data = tiny_data(n=300)
    page = open_page(write_explorer(model, data, tmp_path / "explorer.html"))
    assert page.js("document.querySelectorAll('#sliders input').length") == 5
    mu, _ = model.encode(data.train.x.numpy())
    plane = page.js("window.vaekitExplorer.plane()")
    origin, basis = np.array(plane["origin"]), np.array(plane["basis"])
    assert np.allclose(origin, mu.mean(axis=0), atol=1e-5)

    point = page.js("window.vaekitExplorer.padPoint(0.3, -0.2)")
    page.page.mouse.move(point["x"], point["y"])
    page.settle()
    z = np.array(page.js("window.vaekitExplorer.currentZ()"))
    offset = z - origin  # on the plane through the data mean, at the pointer's coordinates
    assert np.allclose(basis @ offset, [0.3, -0.2], atol=0.02)
    assert np.allclose(offset, basis.T @ (basis @ offset), atol=1e-5)

    before = page.decoded_pixels()
    slider = page.page.locator("#sliders input").nth(4)
    slider.focus()
    for _ in range(100):
        page.page.keyboard.press("ArrowRight")
    page.settle()
    moved = np.array(page.js("window.vaekitExplorer.currentZ()"))
    assert moved[4] > z[4] + 0.1 and np.allclose(moved[:4], z[:4], atol=1e-6)
    assert np.abs(page.decoded_pixels() - before).max() > 0
    assert js_decode_error(page, model) < JS_TOLERANCE
    assert page.errors == []


def test_manifold_grid_linear_and_inverse_cdf(open_page, tmp_path: Path) -> None:
    model = sharpened(VAE([12, 9, 2], image_shape=(1, 3, 4)))
    page = open_page(write_explorer(model, tiny_data(), tmp_path / "explorer.html"))
    page.page.select_option("#grid-size", "8")
    page.page.check("input[value=ppf]")
    page.page.wait_for_function("document.getElementById('grid').width === 8 * 5 + 1")
    zs = np.array(page.js("window.vaekitExplorer.gridZs()")).reshape(8, 8, 2)
    quantiles = normal_ppf((np.arange(8) + 0.5) / 8)
    assert np.allclose(zs[0, :, 0], quantiles, atol=1e-6)  # left to right along z1
    assert np.allclose(zs[:, 0, 1], quantiles[::-1], atol=1e-6)  # top to bottom along z2, as in a plot
    page.page.check("input[value=linear]")
    page.settle()
    linear = np.array(page.js("window.vaekitExplorer.gridZs()")).reshape(8, 8, 2)
    steps = np.diff(linear[0, :, 0])
    assert np.allclose(steps, steps[0]) and not np.allclose(linear, zs)
    assert page.errors == []


@pytest.mark.parametrize("latent", [1, 2])
def test_pad_view_holds_the_data_and_the_starting_cursor(open_page, tmp_path: Path, latent: int) -> None:
    """Codes far from the prior mean (as a 1-D latent's often are): the pad shows them and z = 0, where the cursor starts."""
    model = sharpened(VAE([12, 9, latent], image_shape=(1, 3, 4)))
    with torch.no_grad():
        model.encoder.mu.bias.add_(torch.tensor([-3.0, 2.0][:latent]))
    data = tiny_data()
    page = open_page(write_explorer(model, data, tmp_path / "explorer.html"))
    assert page.js("window.vaekitExplorer.currentZ()") == [0.0] * latent
    view = page.js("window.vaekitExplorer.padView()")
    mu, _ = model.encode(data.train.x.numpy())
    uv = np.pad(mu, [(0, 0), (0, 2 - latent)])  # pad coordinates: a 1-D latent's codes lie on v = 0
    for shown in [np.zeros((1, 2)), uv]:
        assert np.all(np.abs(shown - [view["cu"], view["cv"]]) <= view["half"])
    assert np.ptp(uv[:, 0]) < 0.5 * view["half"]  # the codes lie well away from 0 (the view had to widen for it)
    assert page.errors == []


def test_one_dimensional_latent_has_a_one_row_grid(open_page, tmp_path: Path) -> None:
    model = sharpened(VAE([12, 9, 1], image_shape=(1, 3, 4)))
    page = open_page(write_explorer(model, tiny_data(), tmp_path / "explorer.html"))
    page.page.wait_for_function("document.getElementById('grid').dataset.ready")
    assert page.js("document.getElementById('grid-stats').textContent").startswith("20 codes decoded")  # 20 by 1
    assert page.js("[document.getElementById('grid').width, document.getElementById('grid').height]") == [20 * 5 + 1, 3 + 2]
    linear = np.array(page.js("window.vaekitExplorer.gridZs()"))[:, 0]
    assert len(linear) == 20 and np.allclose(np.diff(linear), np.diff(linear)[0]) and linear[1] > linear[0]
    page.page.check("input[value=ppf]")
    page.page.wait_for_function("document.getElementById('grid-stats').textContent.includes('quantiles')")
    zs = np.array(page.js("window.vaekitExplorer.gridZs()"))[:, 0]
    assert np.allclose(zs, normal_ppf((np.arange(20) + 0.5) / 20), atol=1e-6)

    grid = page.page.locator("#grid")  # the pointer over a cell decodes that cell's code
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.page.mouse.move(box["x"] + box["width"] * 4.5 / 20, box["y"] + box["height"] / 2)
    page.settle()
    assert page.js("window.vaekitExplorer.currentZ()") == pytest.approx([zs[4]], abs=1e-6)
    assert page.errors == []


def test_rgb_images_are_drawn_in_colour(open_page, tmp_path: Path) -> None:
    model = sharpened(VAE([48, 9, 2], image_shape=(3, 4, 4)))
    page = open_page(write_explorer(model, tiny_data(image_shape=(3, 4, 4)), tmp_path / "explorer.html"))
    page.settle()
    z = np.array(page.js("window.vaekitExplorer.currentZ()"), dtype=np.float32)
    expected = np.round(255 * model.decode(z[None])).reshape(3, 4, 4).transpose(1, 2, 0)
    pixels = page.decoded_pixels().reshape(4, 4, 4)
    assert np.abs(pixels[..., :3] - expected).max() <= 1
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 0  # not grey
    assert page.errors == []


def test_real_values_are_drawn_on_the_range_the_figures_use(open_page, tmp_path: Path) -> None:
    model = sharpened(VAE([12, 9, 2], image_shape=(1, 3, 4), likelihood="gaussian", gaussian_mean="identity", value_range=(-3.0, 5.0)))
    page = open_page(write_explorer(model, None, tmp_path / "explorer.html"))
    for u, v in [(-1.0, 0.5), (1.5, -1.0)]:
        point = page.js(f"window.vaekitExplorer.padPoint({u}, {v})")
        page.page.mouse.move(point["x"], point["y"])
        page.settle()
        z = np.array(page.js("window.vaekitExplorer.currentZ()"), dtype=np.float32)
        expected = np.clip(np.round(255 * (model.decode(z[None]) + 3) / 8), 0, 255).reshape(3, 4)
        assert np.abs(page.decoded_pixels().reshape(3, 4, 4)[..., 0] - expected).max() <= 1
    assert page.errors == []


def test_rgba_images_are_drawn_over_white_as_in_the_figures(open_page, tmp_path: Path) -> None:
    model = sharpened(VAE([64, 9, 2], image_shape=(4, 4, 4)))
    page = open_page(write_explorer(model, tiny_data(image_shape=(4, 4, 4)), tmp_path / "explorer.html"))
    page.settle()
    z = np.array(page.js("window.vaekitExplorer.currentZ()"), dtype=np.float32)
    expected = np.round(255 * to_images(model.decode(z[None]).reshape(1, -1), (4, 4, 4))[0])  # (4, 4, 3), over white
    pixels = page.decoded_pixels().reshape(4, 4, 4)
    assert np.abs(pixels[..., :3] - expected).max() <= 1 and (pixels[..., 3] == 255).all()
    assert page.errors == []


def test_original_size_decoder_matches_pytorch_and_its_speed_is_recorded(open_page, tmp_path: Path) -> None:
    """The original's 784-500-500-2: decode equality, and frames/s written to test-artifacts (not asserted)."""
    model = sharpened(VAE([784, 500, 500, 2], image_shape=(1, 28, 28)), gain=1.5)
    page = open_page(write_explorer(model, None, tmp_path / "explorer.html"))
    assert js_decode_error(page, model) < JS_TOLERANCE
    ms_per_frame = page.js("window.vaekitExplorer.benchmark(100)")
    fps = page.js("window.vaekitExplorer.measureFps(1000)")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "explorer-speed.txt").write_text(
        f"784-500-500-2 decoder in headless Chromium: {ms_per_frame:.2f} ms per decode and paint "
        f"({1000 / ms_per_frame:.0f} frames/s possible), {fps:.1f} frames/s with requestAnimationFrame\n"
    )
    assert page.errors == []


# -- convolutional and Gaussian models in Chromium ----------------------------------------------------


@pytest.mark.parametrize("case", [*CONV_CASES, "sequential conv", "gaussian mlp"])
def test_javascript_decoder_matches_pytorch_for_conv_and_gaussian_models(open_page, tmp_path: Path, case: str) -> None:
    if case == "sequential conv":
        model = sequential_conv_model()
    elif case == "gaussian mlp":
        model = sharpened(VAE([48, 9, 3], image_shape=(3, 4, 4), likelihood="gaussian", sigma=0.3))
    else:
        model = conv_model(**CONV_CASES[case])
    page = open_page(write_explorer(model, None, tmp_path / "explorer.html"))
    assert js_decode_error(page, model, n=20, scale=3.0) < JS_TOLERANCE
    assert page.errors == []


@pytest.fixture(scope="module")
def shapes() -> Splits:
    return coloured_shapes(600, 16)


@pytest.fixture(scope="module")
def shapes_model(shapes: Splits, tmp_path_factory) -> VAE:
    """A small RGB conv VAE given a short training on coloured shapes: enough for a picture with colours."""
    torch.manual_seed(0)
    model = VAE([3 * 16 * 16, 32, 2], model="conv", image_shape=(3, 16, 16), conv_channels=(8, 16), likelihood="gaussian")
    return trained(model, shapes, steps=250, out=tmp_path_factory.mktemp("runs"), batch_size=64, lr=5e-3)


def test_rgb_conv_page_in_chromium(open_page, shapes_model: VAE, shapes: Splits, tmp_path: Path) -> None:
    """An RGB conv model's page: offline, no console errors, decoder equal to PyTorch, example thumbnails in colour."""
    path = write_explorer(shapes_model, shapes, tmp_path / "explorer.html", title="coloured shapes, conv")
    page = open_page(path, viewport=(1360, 1500))
    assert page.errors == []
    assert page.requests == [path.resolve().as_uri()]
    assert js_decode_error(page, shapes_model) < JS_TOLERANCE
    chips = page.js("Array.from(document.querySelectorAll('#arch .chip'), (c) => c.textContent)")
    assert "reshape 16×4×4" in chips and "ConvT 8→3 k4 s2" in chips and chips[-1] == "x: 3×16×16"

    i = 7  # moving onto an example's dot shows its own image as the nearest example, in colour
    point = page.js(f"window.vaekitExplorer.examplePoint({i})")
    page.page.mouse.move(point["x"], point["y"])
    page.settle()
    z = np.array(page.js("window.vaekitExplorer.currentZ()"), dtype=np.float32)
    rgba = np.array(page.js("""() => { const c = document.getElementById('nearest');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }"""))
    assert page_payload(path)["points"]["n"] == len(shapes.train)  # every example, in order: #i is train example i
    assert f"#{i} " in page.js("document.getElementById('nearest-label').textContent")
    example = np.round(255 * shapes.train.x[i].numpy()).reshape(3, 16, 16).transpose(1, 2, 0)
    assert np.abs(rgba.reshape(16, 16, 4)[..., :3] - example).max() <= 1
    decoded = page.decoded_pixels().reshape(16, 16, 4)[..., :3]
    assert np.abs(decoded - np.round(255 * shapes_model.decode(z[None])[0].transpose(1, 2, 0))).max() <= 1

    for j in (3, 10):
        point = page.js(f"window.vaekitExplorer.examplePoint({j})")
        page.page.mouse.click(point["x"], point["y"])
    page.settle()
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "explorer-conv-rgb.png"), full_page=True)
    assert page.errors == []


def test_default_rgb_conv_decoder_keeps_the_pad_interactive(open_page, tmp_path: Path) -> None:
    """32x32x3 with the default channels (32, 64, 128): equal to PyTorch; pointer events never queue decodes.

    The ms per frame is written to test-artifacts (not asserted: it depends on the machine).
    """
    model = conv_model((3, 32, 32), hidden=(256,), gain=1.5)
    assert model.config.conv_channels == (32, 64, 128)
    page = open_page(write_explorer(model, coloured_shapes(40, 32), tmp_path / "explorer.html"))
    assert js_decode_error(page, model) < JS_TOLERANCE
    page.page.select_option("#grid-size", "8")  # a small grid, finished before timing starts
    page.page.wait_for_function("document.getElementById('grid-stats').textContent.startsWith('64 codes decoded')")
    ms_per_frame = page.js("window.vaekitExplorer.benchmark(50)")
    fps = page.js("window.vaekitExplorer.measureFps(1000)")

    # 200 pointer moves in one burst: the handlers only record z; one frame then decodes the latest
    before = page.js("window.vaekitExplorer.framesDrawn()")
    took = page.js("""() => { const pad = document.getElementById('pad'), r = pad.getBoundingClientRect();
        const start = performance.now();
        for (let i = 0; i < 200; i++) pad.dispatchEvent(new PointerEvent('pointermove',
            { clientX: r.left + r.width * (0.2 + 0.003 * i), clientY: r.top + r.height / 2, bubbles: true }));
        return performance.now() - start; }""")
    page.settle()
    assert page.js("window.vaekitExplorer.framesDrawn()") - before <= 2
    assert took < 50 * ms_per_frame  # far less than the 200 decodes the events would cost if each decoded
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "explorer-conv-speed.txt").write_text(
        f"conv decoder 2-256-2048, reshape 128x4x4, ConvT 128-64-32-3 (k4 s2) to 3x32x32 in headless Chromium: "
        f"{ms_per_frame:.2f} ms per decode and paint ({1000 / ms_per_frame:.0f} frames/s possible), "
        f"{fps:.1f} frames/s with requestAnimationFrame; 200 pointer events handled in {took:.1f} ms\n"
    )
    assert page.errors == []

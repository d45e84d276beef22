"""Convolutional VAEs on colour images: the Gaussian likelihood, bits per dimension, the image API,
config checks, and the whole path from a folder of PNGs through `vaekit train | evaluate | sample`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vaekit import VAE, DataConfig, load, load_data
from vaekit.cli import main
from vaekit.config import ModelConfig
from vaekit.distributions import Gaussian, bits_per_dim, dequantize
from vaekit.errors import VaekitError
from vaekit.evaluate import elbo, estimate_nll

REPO = Path(__file__).resolve().parents[1]
SHAPE_KINDS = ("circle", "square", "triangle")


# -- the Gaussian likelihood and bits per dimension ----------------------------------------------------


def test_gaussian_log_prob_is_the_normal_density_summed_over_pixels() -> None:
    logits, x = torch.randn(4, 10), torch.rand(4, 10)
    log_sigma = torch.tensor(-1.3)
    expected = torch.distributions.Normal(torch.sigmoid(logits), log_sigma.exp()).log_prob(x).sum(-1)
    p = Gaussian(logits, log_sigma)
    assert torch.allclose(p.log_prob(x), expected, atol=1e-5)
    assert torch.equal(p.mean, torch.sigmoid(logits))


def test_a_fixed_sigma_is_the_one_asked_for_and_a_learned_one_starts_above_its_floor() -> None:
    model = VAE([6, 4, 2], likelihood="gaussian", sigma=5e-4)
    assert float(model.likelihood(torch.zeros(1, 2)).log_sigma.exp()[0, 0]) == pytest.approx(5e-4)
    with pytest.raises(VaekitError, match="--learn-sigma keeps sigma at least 0.001"):
        VAE([6, 4, 2], likelihood="gaussian", sigma=5e-4, learn_sigma=True)


def test_a_learned_sigma_goes_to_the_root_mean_square_residual() -> None:
    # d/d log_sigma of sum log N(x; m, sigma^2) vanishes at sigma^2 = mean((x - m)^2)
    logits, x = torch.randn(50, 20), torch.rand(50, 20)
    log_sigma = torch.tensor(0.0, requires_grad=True)
    optimizer = torch.optim.Adam([log_sigma], lr=0.05)
    for _ in range(400):
        optimizer.zero_grad()
        (-Gaussian(logits, log_sigma).log_prob(x).sum()).backward()
        optimizer.step()
    rms = (x - torch.sigmoid(logits)).pow(2).mean().sqrt()
    assert torch.isclose(log_sigma.exp(), rms, rtol=1e-3)


def test_dequantized_pixels_stay_inside_their_own_bin() -> None:
    k = torch.arange(256, dtype=torch.float32).repeat(20)
    y = dequantize(k / 255)
    assert ((y >= k / 256) & (y < (k + 1) / 256)).all()
    position = y * 256 - k
    assert abs(float(position.mean()) - 0.5) < 0.02 and abs(float(position.std()) - (1 / 12) ** 0.5) < 0.02  # uniform in the bin


def test_bits_per_dim_closed_forms() -> None:
    d = 3072
    assert bits_per_dim(0.0, d, levels=256) == pytest.approx(8.0)  # the uniform density on [0, 1]: 8 bits a byte
    assert bits_per_dim(d * math.log(2), d) == pytest.approx(1.0)  # a fair coin per binary pixel
    assert bits_per_dim(-d * math.log(4), d, levels=256) == pytest.approx(6.0)  # density 4 per pixel saves 2 bits


def test_dequantized_density_bounds_the_probability_of_the_8bit_value() -> None:
    # For one pixel, P(k) = integral of p over its bin [k/256, (k+1)/256); Jensen gives
    # E_u[log p((k + u) / 256)] - log 256 <= log P(k), tight for a wide Gaussian.
    mean, sigma = 0.4, 0.05
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), sigma)
    for k in (60, 102, 130):
        exact = math.log(float(normal.cdf(torch.tensor((k + 1) / 256)) - normal.cdf(torch.tensor(k / 256))))
        p = Gaussian(torch.full((20000, 1), math.log(mean / (1 - mean))), torch.tensor(math.log(sigma)), levels=256)
        bound = float(p.log_prob(torch.full((20000, 1), k / 255)).mean()) - math.log(256)
        assert bound <= exact + 1e-3
        assert bound == pytest.approx(exact, abs=0.02)


@pytest.mark.parametrize("max_rows", [1000, 64])
def test_the_nll_of_a_dequantized_model_tends_to_the_probability_of_the_8bit_pixels(max_rows: int) -> None:
    # q(z|x) = p(z) and a decoder that ignores z leave only the dequantisation noise u to sample, and
    # log P(k) of each pixel in closed form: log(Phi(upper edge) - Phi(lower edge)) of its bin. With a u per
    # draw of z, 1000 draws come within 0.2 nats of it, however they are chunked; one u shared by an example's
    # draws (in each chunk) stays near E_u[log p(x + u)], 2.7 nats below for these narrow pixels.
    torch.manual_seed(0)
    d, sigma = 16, 0.002
    model = VAE([d, 8, 2], likelihood="gaussian", sigma=sigma, dequantize=True).eval()
    mean = torch.rand(d) * 0.8 + 0.1
    with torch.no_grad():
        for layer in (model.encoder.mu, model.encoder.log_sigma, model.decoder.logits):
            layer.weight.zero_()
        model.encoder.mu.bias.zero_()
        model.encoder.log_sigma.bias.zero_()
        model.decoder.logits.bias.copy_(torch.logit(mean))
    k = torch.round((mean + sigma * torch.randn(50, d)) * 255).clamp(0, 255).double()
    normal = torch.distributions.Normal(model.decoder.logits.bias.detach().double().sigmoid(), sigma)
    log_p_8bit = torch.log(normal.cdf((k + 1) / 256) - normal.cdf(k / 256)).sum(1).mean()
    estimate = estimate_nll(model, (k / 255).float(), k=1000, max_rows=max_rows)
    assert -estimate["nll"] - d * math.log(256) == pytest.approx(float(log_p_8bit), abs=0.2)


# -- the conv model's API -----------------------------------------------------------------------------------


def small_conv(**options) -> VAE:
    return VAE([3 * 12 * 10, 6], model="conv", image_shape=(3, 12, 10), conv_channels=(4, 8), **options)


def test_image_models_take_and_return_channels_first_images() -> None:
    vae = small_conv()
    images = torch.rand(5, 3, 12, 10)
    mu, log_sigma = vae.encode(images)
    assert mu.shape == log_sigma.shape == (5, 6)
    assert torch.equal(vae.encode(images.reshape(5, -1))[0], mu)  # flat rows are the same images
    assert vae.reconstruct(images).shape == (5, 3, 12, 10)
    assert vae.decode(mu).shape == (5, 3, 12, 10)
    assert vae.decode().shape == (1, 3, 12, 10)
    samples = vae.sample(7)
    assert samples.shape == (7, 3, 12, 10) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    as_numpy = vae.reconstruct(images.numpy(), sample=False)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == (5, 3, 12, 10)
    assert elbo(vae, images).shape == (5,)


def test_mlp_models_keep_returning_flat_rows() -> None:
    vae = VAE([3 * 12 * 10, 20, 6], image_shape=(3, 12, 10))
    assert vae.reconstruct(torch.rand(5, 3, 12, 10)).shape == (5, 360)
    assert vae.sample(2).shape == (2, 360)


def test_channels_last_images_are_refused_rather_than_scrambled() -> None:
    with pytest.raises(VaekitError, match=r"expected images of shape \(N, 3, 12, 10\), channels first; got \(5, 12, 10, 3\)"):
        small_conv().encode(torch.rand(5, 12, 10, 3))


def test_the_likelihood_is_a_learned_parameter_only_when_asked() -> None:
    fixed = small_conv(likelihood="gaussian", sigma=0.2)
    assert "likelihood_log_sigma" not in dict(fixed.named_parameters())
    assert "likelihood_log_sigma" not in fixed.state_dict()  # rebuilt from config.json
    learned = small_conv(likelihood="gaussian", learn_sigma=True)
    assert float(dict(learned.named_parameters())["likelihood_log_sigma"].detach().exp()) == pytest.approx(0.1)
    z = torch.randn(3, 6)
    assert isinstance(learned.likelihood(z), Gaussian)
    with torch.no_grad():
        learned.likelihood_log_sigma.fill_(-20.0)
    assert float(learned.likelihood(z).log_sigma.detach().max()) == pytest.approx(math.log(1e-3))  # the floor


def test_a_conv_model_with_learned_sigma_saves_and_loads_bit_identically(tmp_path: Path) -> None:
    vae = small_conv(likelihood="gaussian", learn_sigma=True, dequantize=True)
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)  # not just the initial weights
    vae.save(tmp_path / "run")
    again = load(tmp_path / "run")
    assert again.config == vae.config
    assert vae.state_dict().keys() == again.state_dict().keys()
    for name, tensor in vae.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    z = torch.randn(4, 6)
    assert torch.equal(vae.decode(z), again.decode(z))


def test_bits_per_dim_is_reported_only_where_it_is_a_likelihood_of_the_data() -> None:
    binary, grey = torch.randint(0, 2, (4, 360)).float(), torch.randint(0, 256, (4, 360)).float() / 255
    bernoulli = small_conv()
    assert bernoulli.bits_per_dim(360 * math.log(2), binary) == pytest.approx(1.0)
    assert bernoulli.bits_per_dim(100.0, grey) is None
    assert small_conv(likelihood="gaussian").bits_per_dim(100.0, grey) is None
    dequantized = small_conv(likelihood="gaussian", dequantize=True)
    assert dequantized.bits_per_dim(0.0, grey) == pytest.approx(8.0)


CONV_12x10 = {"architecture": (360, 6), "model": "conv", "image_shape": (3, 12, 10)}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"architecture": (360, 6), "conv_channels": (8,)}, "--conv-channels applies to --model conv only"),
        ({"architecture": (360, 6)}, "needs at least an input size, one hidden layer and a latent size"),
        ({"architecture": (360, 6), "model": "conv"}, r"--model conv needs the image shape"),
        ({"architecture": (300, 6), "model": "conv", "image_shape": (3, 12, 10)}, "images of shape .* hold 360 values"),
        ({**CONV_12x10, "conv_channels": (4, 8, 16), "conv_kernels": (3, 3)}, "--conv-kernels needs 1 value or 3"),
        ({**CONV_12x10, "conv_strides": (0,)}, "--conv-strides must be positive"),
        ({**CONV_12x10, "conv_channels": (4, 8, 16, 32)}, r"images of 12x10 are too small for 4 convolutions .* layer 4 would get 1x1"),
        ({"architecture": (360, 20, 6), "sigma": 0.1}, "--sigma applies to --likelihood gaussian only"),
        ({"architecture": (360, 20, 6), "dequantize": True}, "--dequantize applies to --likelihood gaussian only"),
        ({"architecture": (360, 20, 6), "likelihood": "gaussian", "sigma": 0.0}, "--sigma must be a number of at least 1e-06"),
        ({"architecture": (360, 20, 6), "likelihood": "gaussian", "sigma": 1e-300}, "--sigma must be a number of at least 1e-06"),
        ({"architecture": (360, 20, 6), "likelihood": "poisson"}, "unknown likelihood 'poisson'"),
        ({"architecture": (360, 20, 6), "gaussian_mean": "identity"}, "--gaussian-mean applies to --likelihood gaussian only"),
        ({"architecture": (360, 20, 6), "likelihood": "gaussian", "gaussian_mean": "tanh"}, "unknown gaussian mean 'tanh'"),
        ({"architecture": (360, 20, 6), "likelihood": "gaussian", "gaussian_mean": "identity", "dequantize": True},
         "--dequantize models 8-bit pixels, values in \\[0, 1\\]: it takes --gaussian-mean sigmoid"),
        ({"architecture": (360, 20, 6), "value_range": (0.0, 5.0)}, "value_range applies to --likelihood gaussian --gaussian-mean identity only"),
        ({"architecture": (360, 20, 6), "value_range": (1.0, 1.0)}, r"value_range must be \(lowest, highest\) with lowest < highest"),
        ({"architecture": (360, 20, 6), "value_range": (0.0, float("nan"))}, "value_range must be a list of finite numbers"),
        ({"architecture": (360, 20, 6), "model": "resnet"}, "unknown model 'resnet'"),
    ],
)
def test_config_mistakes_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(VaekitError, match=message):
        ModelConfig(**options)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--model", "conv", "--conv-channels", "8,16,32,64", "--epochs", "1", "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaekit: error: images of 8x8 are too small for 4 convolutions") and "\n" not in err
    code = main(["train", "--likelihood", "gaussian", "--dequantize", "--epochs", "1", "--out", str(tmp_path)])
    assert code == 1
    assert "--dequantize needs 8-bit images" in capsys.readouterr().err  # digits are sixteenths


# -- end to end: a folder of 2,000 colour images through the CLI ----------------------------------------------


def draw_shapes(folder: Path, n: int = 2000, size: int = 32, seed: int = 0) -> Path:
    """n RGB images, size x size: a circle, square or triangle (the class folder) of random colour,
    radius and place on black."""
    rng = np.random.default_rng(seed)
    for kind in SHAPE_KINDS:
        (folder / kind).mkdir(parents=True)
    for i in range(n):
        kind = SHAPE_KINDS[i % 3]
        image = Image.new("RGB", (size, size))
        draw = ImageDraw.Draw(image)
        r = int(rng.integers(5, 10))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        colour = tuple(int(v) for v in rng.integers(64, 256, 3))
        if kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif kind == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        image.save(folder / kind / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return draw_shapes(tmp_path_factory.mktemp("shapes") / "shapes")


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env["VAEKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return env


def vaekit(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "vaekit", *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def shapes_run(shapes: Path, cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    vaekit(cli_env, "train", "--data", str(shapes), "--model", "conv", "--conv-channels", "16,32,64", "--arch", "3072,16",
           "--epochs", "8", "--batch-size", "32", "--lr", "3e-3", "--no-progress", "--out", str(out))
    (run,) = out.iterdir()
    return run


def test_a_conv_vae_trained_from_the_cli_beats_the_mean_image_by_far(
    shapes: Path, shapes_run: Path, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAEKIT_CACHE", cli_env["VAEKIT_CACHE"])
    data = load_data(DataConfig(data=str(shapes)))
    assert (len(data.train), len(data.valid), len(data.test)) == (1600, 200, 200)
    x = data.test.x.reshape(-1, 3, 32, 32)
    mean_image = data.train.x.mean(0).reshape(1, 3, 32, 32)
    baseline_mse = float((x - mean_image).pow(2).mean())
    vae = load(shapes_run)
    mse = float((vae.reconstruct(x, sample=False) - x).pow(2).mean())
    # Measured 0.24 of the baseline's squared error (0.014 vs 0.058 per pixel); asked: at most a third.
    # (So short a run places and sizes the shapes but draws them grey; colour comes after ~1,000 steps.)
    assert mse < baseline_mse / 3, (mse, baseline_mse)

    report = json.loads(vaekit(cli_env, "evaluate", str(shapes_run), "--split", "test", "--json"))
    p = mean_image.reshape(1, -1).clamp(1e-6, 1 - 1e-6)
    flat = x.reshape(len(x), -1)
    baseline_nats = float(-(flat * p.log() + (1 - flat) * (1 - p).log()).sum(1).mean())
    # Bernoulli cross-entropy per image, nats: measured 444 (model, one z) vs 958 (mean image); asked: under 60%.
    assert report["reconstruction"] < 0.6 * baseline_nats, (report, baseline_nats)
    assert report["units"] == "nats per example" and "bits_per_dim" not in report  # grey levels: no such figure
    assert json.loads((shapes_run / "config.json").read_text())["class_names"] == list(SHAPE_KINDS)


def test_samples_from_the_cli_are_colour_images(shapes_run: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "samples.png"
    vaekit(cli_env, "sample", str(shapes_run), "-n", "16", "--out", str(out))
    grid = np.asarray(Image.open(out))
    assert grid.shape == ((4 * 33 + 1) * 4, (4 * 33 + 1) * 4, 3)  # 4 x 4 images of 32 pixels, 1 pixel apart, x4
    spread_of_colours = grid.reshape(-1, 3).astype(float).std(axis=0)
    assert (spread_of_colours > 5).all()


def test_a_dequantized_gaussian_conv_vae_reports_bits_per_dim(
    shapes: Path, cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    vaekit(cli_env, "train", "--data", str(shapes), "--model", "conv", "--conv-channels", "8,16", "--arch", "3072,8",
           "--likelihood", "gaussian", "--learn-sigma", "--dequantize", "--max-steps", "20", "--no-progress",
           "--out", str(tmp_path))
    (run,) = tmp_path.iterdir()
    monkeypatch.setenv("VAEKIT_CACHE", cli_env["VAEKIT_CACHE"])
    assert main(["evaluate", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = (-report["elbo"] + 3072 * math.log(256)) / (3072 * math.log(2))
    assert report["bits_per_dim"] == pytest.approx(expected)
    assert main(["evaluate", str(run)]) == 0
    table = capsys.readouterr().out
    assert "bits per dim" in table and f"{report['bits_per_dim']:.4f}  (upper bound, from -elbo)" in table
    log_sigma = load(run).likelihood_log_sigma
    assert log_sigma.requires_grad and float(log_sigma.detach()) != pytest.approx(math.log(0.1))  # it was trained


def test_a_batch_of_no_examples_costs_nothing_and_keeps_its_shapes() -> None:
    # under torchrun an epoch's last global batch can leave a rank no examples: its forward pass must still run
    model = VAE([64, 8, 3], model="conv", image_shape=(1, 8, 8), conv_channels=(4,))
    mu, log_sigma = model.encoder(torch.zeros(0, 64))
    assert mu.shape == log_sigma.shape == (0, 3)
    assert model.decoder(torch.zeros(5, 0, 3)).shape == (5, 0, 64)


def test_a_conv_run_resumed_with_other_threads_says_it_is_no_longer_bit_for_bit(tmp_path: Path) -> None:
    from vaekit import Splits, TrainConfig, train

    images = torch.rand(40, 1, 8, 8)
    data = Splits.from_arrays(images.numpy())
    model = VAE([64, 16, 2], model="conv", image_shape=(1, 8, 8), conv_channels=(4, 8))
    options = dict(batch_size=20, out=str(tmp_path), progress=False)
    first = train(model, data, TrainConfig(epochs=1, threads=1, **options))
    with pytest.warns(UserWarning, match="checkpointed with 1 threads and resumes with 2: its convolutions round differently"):
        train(model, data, TrainConfig(epochs=2, threads=2, **options), run_dir=first.run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same count: no word
        train(model, data, TrainConfig(epochs=3, threads=2, **options), run_dir=first.run_dir)


@pytest.mark.parametrize("model", ["conv", "mlp"])
def test_forward_and_posterior_take_images_of_the_models_shape_as_their_rows(model):
    options = {"conv_channels": (4, 8)} if model == "conv" else {}
    vae = VAE([64, 16, 2], model=model, image_shape=(1, 8, 8), **options)
    images = torch.rand(5, 1, 8, 8)
    torch.manual_seed(0)
    from_images = vae(images)
    torch.manual_seed(0)
    from_rows = vae(images.flatten(1))
    for a, b in zip(from_images, from_rows, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)
    assert torch.equal(vae.posterior(images).mu, vae.posterior(images.flatten(1)).mu)

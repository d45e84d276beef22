"""The VAE's API: shapes, input kinds, gradients, save/load, clear errors."""

import json

import numpy as np
import pytest
import torch

import vaekit
from vaekit import VAE, VaekitError
from vaekit.config import ModelConfig
from vaekit.objectives import loss


@pytest.fixture
def vae():
    return VAE([64, 32, 16, 3])


def test_architecture_builds_a_mirrored_mlp(vae):
    linear = [m for m in vae.modules() if isinstance(m, torch.nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linear]
    assert shapes == [(64, 32), (32, 16), (16, 3), (16, 3), (3, 16), (16, 32), (32, 64)]
    assert isinstance(vae.encoder.hidden[1], torch.nn.ELU)


@pytest.mark.parametrize("bad", [[784], [784, 2], [784, 0, 2], [784, -5, 2]])
def test_bad_architectures_are_refused_clearly(bad):
    with pytest.raises(VaekitError, match="architecture"):
        VAE(bad)


def test_other_nonlinearities_by_name():
    assert isinstance(VAE([10, 8, 2], nonlinearity="tanh").encoder.hidden[1], torch.nn.Tanh)
    with pytest.raises(VaekitError, match="nonlinearity"):
        VAE([10, 8, 2], nonlinearity="swish2")


def test_api_returns_the_kind_it_was_given(vae):
    x_np = np.random.rand(5, 64).astype(np.float32)
    mu, log_sigma = vae.encode(x_np)
    assert isinstance(mu, np.ndarray) and mu.shape == (5, 3) and log_sigma.shape == (5, 3)
    x_mean = vae.decode(mu)
    assert isinstance(x_mean, np.ndarray) and x_mean.shape == (5, 64)
    assert 0 <= x_mean.min() and x_mean.max() <= 1
    assert torch.is_tensor(vae.encode(torch.from_numpy(x_np))[0])
    assert vae.reconstruct(x_np).shape == (5, 64)
    assert vae.decode().shape == (1, 64)  # one draw from the prior, as the original
    assert vae.sample(7).shape == (7, 64)
    assert vaekit.elbo(vae, x_np).shape == (5,)


def test_api_keeps_no_gradients_and_restores_training_mode(vae):
    vae.train()
    mu, _ = vae.encode(torch.rand(4, 64, requires_grad=True))
    assert not mu.requires_grad
    assert vae.training


def modes(model: torch.nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def test_api_and_evaluation_give_every_module_back_its_own_mode():
    from vaekit import elbo, estimate_nll

    vae = VAE([64, 32, 2], dropout=0.2, prior="vamp", pseudo_inputs=4)
    x = torch.rand(5, 64).round()
    vae.eval()
    vae.decoder.hidden[2].train()  # Monte Carlo dropout in the decoder
    mc_dropout = modes(vae)
    vae.train()
    vae.encoder.eval()  # a frozen encoder, kept in eval mode
    frozen_encoder = modes(vae)
    for kept in (mc_dropout, frozen_encoder):
        for name, module in vae.named_modules():
            module.training = kept[name]
        vae.encode(x), vae.decode(torch.zeros(1, 2)), vae.reconstruct(x), vae.sample(2), elbo(vae, x)
        estimate_nll(vae, x, k=4)
        vae.prior.log_prob(torch.zeros(1, 2))  # the VampPrior encodes its pseudo-inputs without dropout
        assert modes(vae) == kept


def test_large_inputs_are_processed_in_batches(vae, monkeypatch):
    monkeypatch.setattr(vaekit.model, "INFERENCE_BATCH", 7)
    x = torch.rand(20, 64)
    mu_batched, _ = vae.encode(x)
    monkeypatch.setattr(vaekit.model, "INFERENCE_BATCH", 4096)
    torch.testing.assert_close(mu_batched, vae.encode(x)[0])


def test_batches_of_large_images_hold_fewer_rows():
    assert VAE([784, 500, 2]).rows_per_batch() == 4096
    conv = VAE([12288, 32], model="conv", image_shape=(3, 64, 64), conv_channels=(32, 64), likelihood="gaussian")
    assert conv.rows_per_batch() == 2**24 // (12288 * 64 // 3) == 64


def test_dropout_is_off_outside_training():
    vae = VAE([20, 50, 2], dropout=0.5)
    x = torch.rand(3, 20)
    torch.testing.assert_close(vae.encode(x)[0], vae.encode(x)[0])


def test_wrong_input_width_is_a_clear_error(vae):
    with pytest.raises(VaekitError, match=r"expected input of shape \(N, 64\), got \(2, 63\)$"):
        vae.encode(np.zeros((2, 63), np.float32))
    with pytest.raises(VaekitError, match=r"got \(5, 8, 9\) \(\(5, 72\) flattened\)"):  # the shape given, not ours
        vae.encode(torch.rand(5, 8, 9))


def test_gradients_flow_through_the_reparameterization(vae):
    cost, _ = loss(vae, torch.rand(8, 64))
    cost.backward()
    for name, parameter in vae.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_the_reparameterization_gradient_is_one_for_mu_and_sigma_eps_for_log_sigma():
    from vaekit.distributions import DiagonalGaussian

    mu, log_sigma = torch.zeros(5, 3, requires_grad=True), torch.full((5, 3), -0.5, requires_grad=True)
    torch.manual_seed(0)
    z = DiagonalGaussian(mu, log_sigma).rsample()
    eps = (z.detach() - mu.detach()) / log_sigma.detach().exp()
    z.sum().backward()
    assert torch.equal(mu.grad, torch.ones(5, 3))
    assert torch.allclose(log_sigma.grad, log_sigma.detach().exp() * eps)


def test_reconstruct_draws_z_from_q_unless_asked_for_the_mean(vae):
    x = torch.rand(6, 64)
    with torch.no_grad():
        vae.encoder.log_sigma.bias.fill_(1.0)  # a wide q(z|x): a draw is far from its mean
    mean = vae.reconstruct(x, sample=False)
    assert torch.equal(mean, vae.decode(vae.encode(x)[0]))
    torch.manual_seed(0)
    drawn = vae.reconstruct(x)
    assert (drawn - mean).abs().max() > 0.05
    torch.manual_seed(0)
    assert torch.equal(vae.reconstruct(x), drawn)


def test_save_and_load_round_trip_is_bit_identical(vae, tmp_path):
    x = torch.rand(6, 64)
    vae.save(tmp_path / "run")
    torch.manual_seed(3)
    loaded = vaekit.load(tmp_path / "run")
    drawn_after_load = torch.rand(2)
    torch.manual_seed(3)
    assert torch.equal(drawn_after_load, torch.rand(2))  # loading draws nothing from the caller's stream
    assert loaded.config == vae.config
    for a, b in zip(vae.encode(x), loaded.encode(x)):
        assert torch.equal(a, b)
    z = torch.randn(6, 3)
    assert torch.equal(vae.decode(z), loaded.decode(z))


def test_load_refuses_a_mismatched_weights_file(tmp_path):
    VAE([64, 32, 3]).save(tmp_path / "a")
    VAE([64, 16, 3]).save(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(VaekitError, match="config.json"):
        vaekit.load(tmp_path / "a")


def test_load_checks_the_weights_against_config_json_before_building_what_it_says(tmp_path):
    VAE([64, 20, 2]).save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["architecture"] = [64, 10**9, 2]  # 256 GB of weights, were they built before the check
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VaekitError, match=r"tensor decoder.hidden.0.bias is \(20,\) torch.float32, config.json needs \(1000000000,\)"):
        vaekit.load(tmp_path)


def test_load_refuses_a_truncated_weights_file(tmp_path):
    VAE([64, 32, 3]).save(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(VaekitError, match="safetensors"):
        vaekit.load(tmp_path)


def test_load_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(VaekitError, match="not a vaekit run"):
        vaekit.load(tmp_path)


def test_model_config_is_saved_as_json(vae, tmp_path):
    import json

    vae.save(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["architecture"] == [64, 32, 16, 3]
    assert ModelConfig(**{**saved["model"], "architecture": tuple(saved["model"]["architecture"])}) == vae.config


@pytest.mark.parametrize("image_shape", [(1, 8, 9), (64,), (2, 2, 2, 8)])
def test_an_image_shape_that_does_not_hold_the_inputs_is_refused(image_shape):
    with pytest.raises(VaekitError, match="is not \\(channels, height, width\\) of the 64 inputs"):
        VAE([64, 16, 2], image_shape=image_shape)
    assert VAE([64, 16, 2], image_shape=(1, 8, 8)).config.image_shape == (1, 8, 8)


def test_binary_bytes_are_warned_of_and_flipped_arrays_taken(vae):
    import warnings

    binary = (np.random.default_rng(0).random((5, 64)) > 0.5).astype(np.uint8)
    with pytest.warns(UserWarning, match="the input holds uint8 values 0 and 1 only"):
        vae.encode(binary)
    with pytest.raises(VaekitError, match="expected at least one row"):
        vae.encode(np.zeros((0, 64), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mu, _ = vae.encode(np.flip(binary.astype(np.float32), axis=1))  # negative strides
    assert np.allclose(mu, vae.encode(np.ascontiguousarray(np.flip(binary.astype(np.float32), axis=1)))[0])


def test_bytes_are_pixels_scaled_as_the_data_loader_scales_them(vae):
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 64), dtype=np.uint8)
    for a, b in zip(vae.encode(pixels), vae.encode(pixels.astype(np.float32) / 255)):
        np.testing.assert_array_equal(a, b)
    assert (vaekit.elbo(vae, torch.from_numpy(pixels)) < 0).all()  # a Bernoulli ELBO; 0-255 unscaled gave +600 nats


@pytest.mark.parametrize("bad, message", [(np.full((2, 64), 2.0), r"values in \[2, 2\]"),
                                          (np.full((2, 64), -0.5), r"values in \[-0.5, -0.5\]"),
                                          (np.full((2, 64), np.nan), "NaN"),
                                          (np.zeros((0, 64)), "at least one row")])
def test_data_the_model_cannot_take_are_refused_clearly(vae, bad, message):
    for method in (vae.encode, vae.reconstruct, lambda data: vaekit.elbo(vae, data)):
        with pytest.raises(VaekitError, match=message):
            method(bad)
    vae.decode(np.full((2, 3), 2.0))  # latent codes have no range


def test_real_valued_data_need_a_gaussian_with_an_identity_mean_which_decodes_to_any_value():
    real = np.linspace(-3, 4, 2 * 6, dtype=np.float32).reshape(2, 6)
    for pixel_model in (VAE([6, 5, 2]), VAE([6, 5, 2], likelihood="gaussian")):
        with pytest.raises(VaekitError, match=r"values in \[-3, 4\]; .* train a model with --likelihood gaussian --gaussian-mean identity"):
            pixel_model.encode(real)
    model = VAE([6, 5, 2], likelihood="gaussian", gaussian_mean="identity")
    with torch.no_grad():
        model.decoder.logits.bias.fill_(-5.0)
    assert (model.decode(np.zeros((1, 2), np.float32)) < -4).all()  # the decoder's output itself, no sigmoid
    assert np.isfinite(vaekit.elbo(model, real)).all() and model.reconstruct(real).shape == (2, 6)
    with pytest.raises(VaekitError, match="NaN"):
        model.encode(np.full((2, 6), np.nan))


def test_a_vamp_prior_of_real_values_keeps_its_pseudo_inputs_unclamped():
    real = VAE([6, 5, 2], prior="vamp", pseudo_inputs=3, likelihood="gaussian", gaussian_mean="identity")
    pixels = VAE([6, 5, 2], prior="vamp", pseudo_inputs=3, likelihood="gaussian")
    for model in (real, pixels):
        with torch.no_grad():
            model.prior.pseudo_inputs_raw.fill_(-2.0)
    assert (real.prior.pseudo_inputs == -2.0).all() and (pixels.prior.pseudo_inputs == 0.0).all()


def test_images_must_have_the_models_shape_for_an_mlp_too():
    vae = VAE([48, 16, 2], image_shape=(3, 4, 4))
    images = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(vae.encode(images)[0], vae.encode(images.reshape(2, 48))[0])
    with pytest.raises(VaekitError, match=r"channels first; got \(2, 4, 4, 3\)"):
        vae.encode(images.permute(0, 2, 3, 1))  # channels last: the right width, its pixels scrambled


def test_one_image_is_one_example():
    conv = VAE([48, 4], model="conv", image_shape=(3, 4, 4), conv_channels=(4,), conv_kernels=(3,), conv_strides=(2,))
    image = torch.rand(3, 4, 4)
    torch.testing.assert_close(conv.encode(image)[0], conv.encode(image[None])[0])


def test_a_loaded_model_is_ready_for_use(tmp_path):
    VAE([64, 16, 2], dropout=0.5, prior="vamp", pseudo_inputs=4).save(tmp_path)
    loaded = vaekit.load(tmp_path)
    assert not loaded.training  # a VampPrior's density would otherwise change from call to call (dropout)
    z = torch.zeros(1, 2)
    assert torch.equal(loaded.prior.log_prob(z), loaded.prior.log_prob(z))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_seeded_draws_leave_the_callers_gpu_stream_as_it_was(device):
    from vaekit.model import seeded

    torch.cuda.manual_seed_all(5)
    before = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    with seeded(0, torch.device(device)):
        inside = torch.randn(3, device=device)
    assert [torch.equal(torch.cuda.get_rng_state(i), b) for i, b in enumerate(before)] == [True] * len(before)
    with seeded(0, torch.device(device)):
        assert torch.equal(torch.randn(3, device=device), inside)


def test_a_model_made_double_computes_in_double():
    vae = VAE([64, 16, 2]).double()
    x = torch.rand(3, 64)
    mu, _ = vae.encode(x)
    outputs = [mu, vae.decode(mu), vae.reconstruct(x), vaekit.elbo(vae, x), vae.sample(2)]
    assert [t.dtype for t in outputs] == [torch.float64] * 5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_model_made_half_precision_runs_and_is_not_saved_as_if_it_were_float32(dtype, tmp_path):
    model = VAE([64, 32, 2]).to(dtype)
    x = torch.rand(5, 64).round()
    logits, mu, log_sigma = model(x.to(dtype))  # q's float32 draws go into the half-precision decoder as its own dtype
    assert logits.dtype == dtype and logits.shape == (5, 64)
    assert torch.isfinite(vaekit.elbo(model, x)).all() and model.reconstruct(x).shape == (5, 64)
    codes, _ = model.encode(x.numpy())  # numpy out, as float32 where numpy has no such dtype
    assert codes.dtype == (np.float16 if dtype == torch.float16 else np.float32)
    with pytest.raises(VaekitError, match=f"saves float32 weights, as `load` reads them; this model's are {str(dtype)[6:]}"):
        model.save(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_codes_that_are_not_finite_are_refused(vae):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(VaekitError, match="latent codes contain NaN or Inf"):
            vae.decode(torch.full((1, vae.latent_size), bad))


def test_a_split_of_a_data_set_is_taken_for_its_examples():
    data = vaekit.load_data("digits")  # a DataConfig's data alone
    vae = VAE([64, 16, 2])
    assert torch.equal(vae.encode(data.test)[0], vae.encode(data.test.x)[0])


def test_save_and_load_take_the_run_folder_and_say_so_for_a_file(tmp_path):
    vae = VAE([64, 16, 2])
    with pytest.raises(VaekitError, match="save takes a folder"):
        vae.save(tmp_path / "model.safetensors")
    vae.save(tmp_path)
    with pytest.raises(VaekitError, match=f"load takes the run folder, not a file in it: vaekit.load\\('{tmp_path}'\\)"):
        vaekit.load(tmp_path / "model.safetensors")
    with pytest.raises(VaekitError, match="unknown device None"):
        vaekit.load(tmp_path, device=None)
    (tmp_path / "model.safetensors").rename(tmp_path / "checkpoint.safetensors")
    with pytest.raises(VaekitError, match="has no model.safetensors yet: its training stopped before the end"):
        vaekit.load(tmp_path)


def test_an_architecture_is_any_sequence_of_sizes_and_counts_are_any_integers():
    import numpy as np

    assert VAE(np.array([64, 8, 2])).config.architecture == VAE(torch.tensor([64, 8, 2])).config.architecture == (64, 8, 2)
    assert VAE(range(64, 0, -31)).config.architecture == (64, 33, 2)
    model = VAE([64, 8, 2])
    assert model.sample(np.int64(3)).shape == model.sample(torch.tensor(3)).shape == (3, 64)  # as numpy computes counts
    assert vaekit.estimate_nll(model, torch.rand(2, 64), k=np.int64(5), max_rows=np.int64(64))["k"] == 5


def test_save_refuses_to_replace_a_saved_run_unless_asked(tmp_path):
    trained, other = VAE([64, 16, 2]), VAE([64, 8, 2])
    trained.save(tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(VaekitError, match="holds a saved run already \\(model.safetensors\\); .* overwrite=True"):
        other.save(tmp_path)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    other.save(tmp_path, overwrite=True)
    assert vaekit.load(tmp_path).config == other.config
    started = tmp_path / "started"  # a run stopped before its first checkpoint: its config.json alone
    trained.save(started)
    (started / "model.safetensors").unlink()
    payload = json.loads((started / "config.json").read_text())
    (started / "config.json").write_text(json.dumps({**payload, "train": {}}))
    with pytest.raises(VaekitError, match="holds a saved run already \\(config.json of a training run\\)"):
        other.save(started)


@pytest.mark.parametrize("data, message", [
    (None, "expected examples as a tensor or an array of numbers, got NoneType"),
    ({"x": 1}, "expected examples as a tensor or an array of numbers, got dict"),
    (torch.zeros(2, 64, dtype=torch.complex64), "a dense tensor of real numbers, got a torch.strided torch.complex64"),  # was taken, imaginary part dropped
    (torch.zeros(2, 64).to_sparse(), "a dense tensor of real numbers, got a torch.sparse_coo"),
    (torch.zeros(2, 1, 1, 8, 8), "got 5 dimensions"),  # was flattened to rows without a word
])
def test_examples_that_are_no_dense_real_rows_or_images_are_one_clear_error(data, message):
    with pytest.raises(VaekitError, match=message):
        VAE([64, 8, 2]).encode(data)

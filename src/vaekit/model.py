"""The VAE: encode x into q(z|x), decode z into p(x|z), sample from the prior; save and load.

The model computes distributions, not losses: objectives live in `objectives.py` (and the per-example
ELBO of the user's data, `vaekit.elbo`, in `evaluate.py`).
The user-facing methods (`encode`, `decode`, `reconstruct`, `sample`) take numpy
arrays or tensors, work in batches, keep no gradients, and return the kind they were given.

Shapes: `posterior`, `likelihood` and `forward` work on flat (N, D) tensors for every model.
The user-facing methods take flat (N, D) rows or (N, C, H, W) images; an image model
(`model="conv"`) returns images (N, C, H, W), an MLP model flat rows (N, D), as vae-tf did.
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vaekit.config import MIN_LEARNED_SIGMA, ModelConfig, from_dict, to_dict, write_json
from vaekit.data import check_finite, check_values, is_8bit, is_binary, warn_if_bytes_are_binary
from vaekit.distributions import Bernoulli, DiagonalGaussian, Gaussian, StandardNormal, VampPrior, bits_per_dim
from vaekit.errors import VaekitError
from vaekit.nn import NETWORKS

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INFERENCE_BATCH = 4096  # rows at most per batch of the user-facing methods
INFERENCE_VALUES = 2**24  # and about this many values in a batch's widest activation (64 MB in float32)
PIXEL_LEVELS = 256  # 8-bit images, for dequantisation and bits per dimension

ArrayLike = np.ndarray | torch.Tensor


class VAE(nn.Module):
    """A variational autoencoder: a symmetric MLP as in vae-tf, or a convolutional one.

    >>> vae = VAE([784, 500, 500, 2])            # ELU, Bernoulli output, no dropout
    >>> mu, log_sigma = vae.encode(x)            # x: (N, 784) in [0, 1]
    >>> x_mean = vae.decode(mu)                  # (N, 784) pixel probabilities
    >>> conv = VAE([3072, 16], model="conv", image_shape=(3, 32, 32), likelihood="gaussian", learn_sigma=True)
    >>> conv.sample(8).shape                     # torch.Size([8, 3, 32, 32]), pixel means in [0, 1]
    >>> real = VAE([30, 128, 8], likelihood="gaussian", gaussian_mean="identity", learn_sigma=True)  # any real values

    Options (keyword arguments) are the fields of `vaekit.ModelConfig`. `encode`, `decode`, `reconstruct`
    and `sample` run without gradients, in eval mode, in batches; for a loss of your own through the
    model, use `posterior(x)` (q(z|x)) and `likelihood(z)` (p(x|z)) on flat (N, D) tensors, which keep them.
    """

    def __init__(self, architecture: list[int] | tuple[int, ...] | None = None, *, config: ModelConfig | None = None, **options: Any):
        super().__init__()
        if config is None:
            config = ModelConfig(architecture=layer_sizes(architecture), **options)
        elif architecture is not None or options:
            raise VaekitError("give either an architecture with options or a config, not both")
        elif not isinstance(config, ModelConfig):
            raise VaekitError(f"config must be a vaekit.ModelConfig, not {type(config).__name__}")
        self.config = config
        encoder_cls, decoder_cls = NETWORKS[config.model]
        self.encoder = encoder_cls(config)
        self.decoder = decoder_cls(config)
        self.prior = make_prior(config, self.encoder)
        self.noise: Callable | None = None  # set by the trainer while a distributed step runs
        if config.likelihood == "gaussian":
            log_sigma = torch.tensor(math.log(config.sigma))
            if config.learn_sigma:
                self.likelihood_log_sigma = nn.Parameter(log_sigma)
            else:
                self.register_buffer("likelihood_log_sigma", log_sigma, persistent=False)

    # -- distributions: used by the objectives, with gradients ------------------------------

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z|x) for a batch x of shape (N, D), or of images (N, C, H, W) of the model's image shape."""
        shape = self.config.image_shape
        if shape and x.ndim >= 4 and tuple(x.shape[-3:]) == tuple(shape):
            x = x.flatten(-3)  # images (..., C, H, W) -> rows (..., D), as the networks take them
        mu, log_sigma = self.encoder(x)
        return DiagonalGaussian(mu, log_sigma, self.noise)

    def likelihood(self, z: torch.Tensor) -> Bernoulli | Gaussian:
        """p(x|z) for latent codes z of shape (..., latent): over flat x (..., D)."""
        logits = self.decoder_logits(z)
        match self.config.likelihood:
            case "bernoulli":
                return Bernoulli(logits)
            case "gaussian":
                return Gaussian(logits, self.gaussian_log_sigma(), levels=PIXEL_LEVELS if self.config.dequantize else None,
                                identity_mean=self.config.gaussian_mean == "identity")
        raise VaekitError(f"no likelihood {self.config.likelihood!r} here")  # a name added to config.Likelihood alone

    def gaussian_log_sigma(self) -> torch.Tensor:
        """log sigma of a Gaussian p(x|z): a fixed sigma is the one asked for; a learned one has a floor."""
        log_sigma = self.likelihood_log_sigma
        return log_sigma.clamp(min=math.log(MIN_LEARNED_SIGMA)) if self.config.learn_sigma else log_sigma

    @property
    def likelihood_sigma(self) -> float | None:
        """The standard deviation of a Gaussian p(x|z) in the data's units, fixed or as learned; None for a Bernoulli."""
        return float(self.gaussian_log_sigma().detach().exp()) if self.config.likelihood == "gaussian" else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One stochastic pass: (logits of p(x|z) over flat x (N, D), mu, log_sigma) with z drawn from q(z|x);
        x as `posterior` takes it. log_sigma is the log of q's standard deviation (not of its variance)."""
        q = self.posterior(x)
        return self.decoder_logits(q.rsample()), q.mu, q.log_sigma

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output for codes z, over flat x (..., D): p(x|z)'s logits, or its mean's."""
        weights = next(self.decoder.parameters())
        return self.decoder(z.to(weights.dtype))  # q's draws are float32, a .half() model's decoder is not

    # -- the user's API: numpy or tensors in, the same kind out, no gradients ----------------

    def encode(self, x: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """(mu, log_sigma) of q(z|x), each (N, latent); x is (N, D) or (N, C, H, W)."""
        mu, log_sigma = self.batched(x, self.input_size, lambda batch: self.encoder(batch))
        return mu, log_sigma

    def decode(self, z: ArrayLike | None = None) -> ArrayLike:
        """Means of p(x|z), pixels in [0, 1] (any real values for an identity-mean Gaussian): (N, C, H, W) for an image
        model, else (N, D).

        With no z, decode one draw from the prior.
        """
        if z is None:
            with evaluating(self), torch.no_grad():
                z = self.prior.sample(1)
        (x_mean,) = self.batched(z, self.latent_size, lambda batch: (self.likelihood(batch).mean,), latent=True)
        return self._as_images(x_mean)

    def reconstruct(self, x: ArrayLike, sample: bool = True) -> ArrayLike:
        """Decode an encoding of x: a draw from q(z|x) as the original's `vae`, or its mean.

        x is (N, D) or (N, C, H, W); the result is shaped as `decode`'s.
        """

        def run(batch: torch.Tensor) -> tuple[torch.Tensor]:
            q = self.posterior(batch)
            z = q.rsample() if sample else q.mode()
            return (self.likelihood(z).mean,)

        (x_mean,) = self.batched(x, self.input_size, run)
        return self._as_images(x_mean)

    def sample(self, n: int) -> torch.Tensor:
        """n draws of the prior decoded (the means of p(x|z)), on the CPU: (n, C, H, W) for an image model, else (n, D)."""
        n = whole_number(n, "number of samples")
        if n < 1:
            raise VaekitError(f"number of samples must be a whole number of at least 1, got {n!r}")
        with evaluating(self), torch.no_grad():
            z = self.prior.sample(n)
        return self.decode(z).cpu()

    def as_examples(self, data: ArrayLike) -> torch.Tensor:
        """data as this model's examples, (N, D) float32: see `as_examples`."""
        return as_examples(data, self.config)

    # -- helpers ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    @property
    def is_image_model(self) -> bool:
        """Whether the user-facing methods return images (N, C, H, W) rather than flat rows."""
        return self.config.model == "conv"

    def rows_per_batch(self) -> int:
        """Rows the user-facing methods take at once: INFERENCE_BATCH, fewer where an example's activations are
        large (a conv layer's feature maps at full resolution, at most input size x channels / image channels)."""
        widest = max(self.config.architecture)
        if self.is_image_model:
            widest = max(widest, self.input_size * max(self.config.conv_channels) // self.config.image_shape[0])
        return max(1, min(INFERENCE_BATCH, INFERENCE_VALUES // widest))

    def _as_images(self, x: ArrayLike) -> ArrayLike:
        return x.reshape(len(x), *self.config.image_shape) if self.is_image_model else x

    def bits_per_dim(self, nll_nats: float, x: torch.Tensor) -> float | None:
        """A per-example negative log-likelihood of data x in bits per dimension, or None where that is no figure.

        It applies to a Bernoulli on binary data, and to a dequantised Gaussian on 8-bit data
        (see `distributions.bits_per_dim`); a Bernoulli on grey levels or a Gaussian on
        undequantised pixels is no probability of the data, so there is no such number.
        """
        match self.config.likelihood:
            case "gaussian":
                return bits_per_dim(nll_nats, self.input_size, PIXEL_LEVELS) if self.config.dequantize else None
            case "bernoulli":
                return bits_per_dim(nll_nats, self.input_size) if is_binary(x) else None
        return None  # a likelihood not known here: no claim

    def batched(
        self, data: ArrayLike, width: int, fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], latent: bool = False
    ) -> tuple[ArrayLike, ...]:
        """Apply fn in eval mode, without gradients, over batches of rows; return numpy for numpy input.

        Data become the model's examples (`as_examples`); latent codes are checked for their width.
        """
        as_numpy = isinstance(data, np.ndarray)
        if latent:
            x = check_input(torch.as_tensor(np.asarray(data, dtype=np.float32) if as_numpy else data), width)
            if not torch.isfinite(x).all():
                raise VaekitError("the latent codes contain NaN or Inf values")
        else:
            x = self.as_examples(data)
        dtype = next(self.parameters()).dtype  # float32, or what .double() made the model
        parts: list[tuple[torch.Tensor, ...]] = []
        with evaluating(self), torch.no_grad():
            rows = self.rows_per_batch()
            for start in range(0, len(x), rows):
                batch = x[start : start + rows].to(self.device, dtype)
                parts.append(fn(batch))
        outputs = tuple(torch.cat(columns) for columns in zip(*parts))
        if as_numpy:  # (numpy has no bfloat16: such outputs, of a .bfloat16() model or under autocast, become float32)
            return tuple((out.float() if out.dtype == torch.bfloat16 else out).cpu().numpy() for out in outputs)
        return tuple(out.to(x.device) for out in outputs)

    # -- save and load --------------------------------------------------------------------------

    def save(self, run_dir: str | Path, overwrite: bool = False) -> Path:
        """Write config.json and model.safetensors into run_dir; return the folder. A folder that holds a saved
        model or a training checkpoint already is refused, unless overwrite=True."""
        from vaekit.checkpoint import CHECKPOINT_FILE, save_tensors

        run_dir = Path(run_dir).expanduser()
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in self.state_dict().values() if t.is_floating_point()})
        if dtypes != ["float32"]:  # config.json records no dtype: `load` builds float32 weights, and would refuse these
            raise VaekitError(f"vaekit saves float32 weights, as `load` reads them; this model's are {', '.join(dtypes)}: "
                              "save a float32 copy (copy.deepcopy(model).float())")
        if run_dir.suffix in (".safetensors", ".json", ".pt", ".pth") or run_dir.is_file():
            raise VaekitError(f"save takes a folder, to hold {CONFIG_FILE} and {WEIGHTS_FILE}; {run_dir} is a file name")
        payload = read_run_config(run_dir) if (run_dir / CONFIG_FILE).exists() else {}  # kept but for the model
        held = [name for name in (WEIGHTS_FILE, CHECKPOINT_FILE) if (run_dir / name).exists()]
        if "train" in payload:
            held.append(f"{CONFIG_FILE} of a training run")
        if held and not overwrite:
            raise VaekitError(f"{run_dir} holds a saved run already ({', '.join(held)}); save elsewhere, or pass "
                              "overwrite=True to replace its weights")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise VaekitError(f"cannot create {run_dir}: {error.strerror}") from None
        save_tensors(run_dir / WEIGHTS_FILE, self.state_dict(), {"format_version": str(FORMAT_VERSION)})
        payload.update({"format_version": FORMAT_VERSION, "model": to_dict(self.config)})
        write_json(run_dir / CONFIG_FILE, payload)
        return run_dir


def whole_number(value: Any, what: str) -> int:
    """value as an int: a Python, numpy or 0-d tensor integer (operator.index takes them all), not a bool or a float."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise VaekitError(f"{what} must be a whole number, got {value!r}") from None


def layer_sizes(architecture: Any) -> tuple[Any, ...]:
    """The architecture as a tuple, from any sequence (a list, a numpy array, a tensor); ModelConfig checks its sizes."""
    if architecture is None:
        return ()
    sizes = architecture.tolist() if hasattr(architecture, "tolist") else architecture
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise VaekitError(f"architecture is a list of layer sizes such as [784, 500, 500, 2], got {architecture!r}")
    return tuple(sizes)


def make_prior(config: ModelConfig, encoder: nn.Module) -> StandardNormal | VampPrior:
    """p(z) as the config names it; a VampPrior shares the encoder, without its dropout: the prior is one
    distribution, the same in training as in evaluation, not a new random mixture at every step."""
    match config.prior:
        case "vamp":  # a partial, not a closure: a deep copy of the model then uses the copy's encoder
            return VampPrior(functools.partial(encoded_without_dropout, encoder), config.pseudo_inputs, config.input_size,
                             unit_interval=config.takes_unit_interval)
        case "standard":
            return StandardNormal(config.latent_size)
    raise VaekitError(f"no prior {config.prior!r} here")  # a name added to config.PriorKind alone


def encoded_without_dropout(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with evaluating(encoder):
        return encoder(x)


def as_examples(data: ArrayLike, config: ModelConfig) -> torch.Tensor:
    """Data as the model's examples: (N, D) float32 on data's device, as `data.load_data` gives them.

    Bytes (uint8) are pixels 0-255 and are scaled to [0, 1], as the data loader scales them; every
    value must then be finite, and lie in [0, 1] unless the model is a Gaussian with an identity mean
    (a Bernoulli's probabilities, a sigmoid's range), or the model's numbers would be meaningless (a
    positive Bernoulli ELBO, say). Images (N, C, H, W), or one image (C, H, W), must have the model's
    image shape.
    """
    if hasattr(data, "x") and not torch.is_tensor(data):  # a Split of a data set: its examples
        data = data.x
    x = numeric_tensor(data)
    if x.dtype == torch.uint8:
        warn_if_bytes_are_binary(x, "the input")
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if config.image_shape and tuple(x.shape) == tuple(config.image_shape):
        x = x.unsqueeze(0)  # one image
    x = check_input(x, config.input_size, config.image_shape or None)
    check_values_fit(x, config, "the input")
    check_dequantizable(x, config)
    return x


def check_values_fit(x: torch.Tensor, config: ModelConfig, what: str) -> None:
    """Refuse examples a model of this config cannot take: NaN, Inf, and values outside [0, 1] where it needs them there."""
    if not config.takes_unit_interval:
        check_finite(x, what)
        return
    model = "a Bernoulli's probabilities" if config.likelihood == "bernoulli" else "the range of a Gaussian's sigmoid mean"
    check_values(x, what, needs=f"the model takes values in [0, 1] ({model}; uint8 pixels are scaled for you): for "
                 "real-valued data train a model with --likelihood gaussian --gaussian-mean identity (likelihood='gaussian', "
                 "gaussian_mean='identity' from Python), or scale the data to [0, 1]")


def numeric_tensor(data: ArrayLike) -> torch.Tensor:
    """data as a dense real tensor of at most 4 dimensions (N, C, H, W), or one clear error."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)  # torch takes no negative strides (np.flip's, x[:, ::-1])
    try:
        x = torch.as_tensor(data).detach()
    except (TypeError, ValueError, RuntimeError) as error:
        raise VaekitError(f"expected examples as a tensor or an array of numbers, got {type(data).__name__} ({error})") from None
    if x.is_complex() or x.layout != torch.strided or x.device.type == "meta":
        raise VaekitError(f"expected a dense tensor of real numbers, got a {x.layout} {x.dtype} tensor on {x.device}")
    if x.ndim > 4:
        raise VaekitError(f"expected examples (N, D) or images (N, C, H, W), got {x.ndim} dimensions {tuple(x.shape)}")
    return x


def check_dequantizable(x: torch.Tensor, config: ModelConfig) -> None:
    """A model with dequantize assumes 8-bit pixels: refuse data that are not multiples of 1/255."""
    if config.dequantize and not is_8bit(x):
        raise VaekitError("--dequantize needs 8-bit images, pixel values k/255 (so does dequantize=True from Python); "
                          "these data have other values")


def check_input(x: torch.Tensor, width: int, image_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Flatten images to (N, D) and check the width; a clear error for a wrong shape or no rows.

    With image_shape (C, H, W), images must come channels first: (N, H, W, C) would flatten
    to the right width with its pixels in the wrong places.
    """
    if image_shape is not None and x.ndim == 4 and tuple(x.shape[1:]) != tuple(image_shape):
        expected = ", ".join(map(str, image_shape))
        raise VaekitError(f"expected images of shape (N, {expected}), channels first; got {tuple(x.shape)}")
    given = tuple(x.shape)
    if x.ndim == 1 and x.numel() == width:
        x = x.reshape(1, width)
    elif x.ndim > 2 and len(x) > 0:
        x = x.reshape(len(x), -1)
    if x.ndim != 2 or x.shape[1] != width:
        flattened = f" ({tuple(x.shape)} flattened)" if tuple(x.shape) != given else ""
        raise VaekitError(f"expected input of shape (N, {width}), got {given}{flattened}")
    if len(x) == 0:
        raise VaekitError("expected at least one row of input, got none")
    return x


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Switch off dropout for the duration, then give every module back its own mode (so that a part the caller
    keeps in eval mode, or a dropout layer left on for Monte Carlo dropout, stays so)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the body (on the CPU and, for a CUDA device, that device) on its own seeded random stream, leaving the caller's untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.random.default_generator.manual_seed(seed)  # not torch.manual_seed: it would reseed every GPU, not just this one
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)  # this GPU's
        yield


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json of a run as a dict, with a clear error if it is missing or broken."""
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise VaekitError(f"{run_dir} is not a vaekit run folder (no such folder)")
    if not path.is_file():
        raise VaekitError(f"{run_dir} is not a vaekit run folder (no {CONFIG_FILE})")
    try:
        payload = json.loads(path.read_text())
    except OSError as error:
        raise VaekitError(f"cannot read {path}: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VaekitError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise VaekitError(f"{path} is not a vaekit run config (no 'model' section)")
    for section in ("train", "data", "distributed"):
        if section in payload and not isinstance(payload[section], dict):
            raise VaekitError(f"{path} is not a vaekit run config (its '{section}' section is not an object)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise VaekitError(f"{path} has format version {version!r}; this vaekit reads version {FORMAT_VERSION}")
    return payload


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' is CUDA when there is a GPU, else the CPU; a clear error for a device there is not."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise VaekitError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VaekitError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    return device


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild the VAE from config.json and load model.safetensors, checking every tensor; in eval mode."""
    from vaekit.checkpoint import load_tensors

    run_dir = Path(run_dir).expanduser()
    if run_dir.is_file():
        raise VaekitError(f"load takes the run folder, not a file in it: vaekit.load({str(run_dir.parent)!r})")
    config = from_dict(ModelConfig, read_run_config(run_dir)["model"])
    weights_path = run_dir / WEIGHTS_FILE
    if not weights_path.exists() and (run_dir / "checkpoint.safetensors").exists():
        raise VaekitError(f"{run_dir} has no {WEIGHTS_FILE} yet: its training stopped before the end; "
                          f"finish it with `vaekit train --resume {run_dir}` (or vaekit.train(..., run_dir=...))")
    tensors, _ = load_tensors(weights_path, "safetensors weights file")
    with torch.device("meta"):  # the weights checked against config.json's sizes before any memory is spent on them
        check_state(VAE(config=config).state_dict(), tensors, weights_path)
    with torch.random.fork_rng(devices=[]):  # the initial weights, soon replaced, leave the caller's stream as it was
        model = VAE(config=config)
    model.load_state_dict(tensors)  # (checked above: the same names, shapes and dtypes, every value finite)
    return model.to(resolve_device(device)).eval()  # ready to use: no dropout, a VampPrior's pseudo-inputs encoded as at test time


def load_checked_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load tensors into model after checking names, shapes, dtypes and finiteness."""
    check_state(model.state_dict(), tensors, source)
    model.load_state_dict(tensors)


def check_state(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse tensors whose names, shapes or dtypes are not the expected state's, or that hold NaN or Inf."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise VaekitError(f"{source} does not match config.json: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in tensors.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise VaekitError(
                f"{source}: tensor {name} is {tuple(tensor.shape)} {tensor.dtype}, config.json needs {tuple(want.shape)} {want.dtype}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise VaekitError(f"{source}: tensor {name} holds NaN or Inf values")

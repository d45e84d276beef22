"""Typed configuration: one frozen dataclass per concern, saved as JSON beside the weights.

The CLI builds its flags from these fields (see `cli.py`), so a field added here
is a flag there, with the help text from the field's metadata.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import types
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from vaekit.errors import VaekitError

Nonlinearity = Literal["elu", "relu", "tanh", "softplus", "sigmoid", "leaky_relu", "gelu", "silu"]
ModelKind = Literal["mlp", "conv"]
Likelihood = Literal["bernoulli", "gaussian"]
GaussianMean = Literal["sigmoid", "identity"]  # the Gaussian's mean: in [0, 1] (pixels), or any real value
PriorKind = Literal["standard", "vamp"]
Objective = Literal["elbo", "iwae"]
NONLINEARITIES: tuple[str, ...] = get_args(Nonlinearity)
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
LIKELIHOODS: tuple[str, ...] = get_args(Likelihood)
GAUSSIAN_MEANS: tuple[str, ...] = get_args(GaussianMean)
PRIORS: tuple[str, ...] = get_args(PriorKind)
SplitName = Literal["train", "valid", "test"]
SPLITS: tuple[str, ...] = get_args(SplitName)
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
OBJECTIVES: tuple[str, ...] = get_args(Objective)  # each has its cost in objectives.OBJECTIVES
DEFAULT_HIDDEN = {"mlp": (500, 500), "conv": (256,)}  # by model kind; one dense layer helps the conv model on MNIST
DEFAULT_LATENT = 2
DEFAULT_CONV_CHANNELS = (32, 64, 128)
DEFAULT_CONV_KERNELS = (4,)
DEFAULT_CONV_STRIDES = (2,)
DEFAULT_SIGMA = 0.1
MAX_SEED = 2**62  # the seeds of each rank and stream are offsets from it; torch's generators take 64 bits
MAX_DIST_TIMEOUT = 1e7  # seconds
SEED_RULE = "a whole number from 0 to 2^62 - 1"  # what --seed takes, for every command
MAX_THREADS = 1024  # asking OpenMP for many more crashes the process rather than failing
MIN_SIGMA = 1e-6
FLAG_NAMES = {"architecture": "arch"}  # field name -> flag name where the short form is the custom
MIN_LEARNED_SIGMA = 1e-3  # a learned sigma stops here: below the 8-bit quantisation noise, 1/256/sqrt(12)

# The figures `vaekit plot` draws (see plots.py); named with the other choices the CLI offers.
FigureKind = Literal["reconstructions", "latent", "manifold", "manifold-ppf", "interpolation", "morph", "training", "example", "prior"]
FIGURE_KINDS: tuple[str, ...] = get_args(FigureKind)


def _help(text: str, shown_default: str | None = None, metavar: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field with a help text for the CLI (and the default to show, where the value is a placeholder,
    and the flag's value's name in the help, where the type's own would mislead)."""
    metadata = {"help": text, "shown_default": shown_default, "metavar": metavar}
    return field(metadata={key: value for key, value in metadata.items() if value is not None}, **kwargs)


@dataclass(frozen=True)
class ModelConfig:
    """What the network is: enough to rebuild it before loading its weights.

    `model` picks the networks: "mlp" (the original's dense layers, on flat vectors) or "conv"
    (strided convolutions and their transposed mirror, on images of `image_shape`). For both,
    `architecture` is (input size, hidden..., latent size); for "conv" the hidden entries are
    dense layers between the convolutional features and the latent code, and may be left out.
    """

    architecture: tuple[int, ...] = _help(
        "layer sizes input,hidden...,latent, e.g. 784,500,500,2; with --model conv the hidden sizes are "
        "dense layers after the convolutions and may be left out, e.g. 3072,16",
        shown_default="data size,500,500,2; with --model conv: data size,256,2",  # default_architecture's
        default=(),
    )
    nonlinearity: Nonlinearity = _help("hidden-unit nonlinearity", default="elu")
    dropout: float = _help(
        "dropout probability on the dense hidden units' outputs (vae-tf dropped weights instead, in every layer, "
        "with keep_prob = 1 - this)", default=0.0
    )
    prior: PriorKind = _help(
        "p(z): standard normal, or a VampPrior of learned pseudo-inputs (Tomczak & Welling 2018)", default="standard"
    )
    pseudo_inputs: int = _help("VampPrior: number K of learned pseudo-inputs", default=500)
    image_shape: tuple[int, ...] = _help(
        "(channels, height, width) of one example, for figures; set from the data", default=()
    )
    model: ModelKind = _help(
        "networks: mlp (dense layers on flat vectors) or conv (strided convolutions on images)", default="mlp"
    )
    conv_channels: tuple[int, ...] = _help(
        "conv: output channels of each convolution, e.g. 32,64,128; the decoder mirrors them",
        shown_default="32,64,128 with --model conv",
        default=(),
    )
    conv_kernels: tuple[int, ...] = _help(
        "conv: kernel size of each convolution, one value for all or one per layer",
        shown_default="4 with --model conv",
        default=(),
    )
    conv_strides: tuple[int, ...] = _help(
        "conv: stride of each convolution, one value for all or one per layer",
        shown_default="2 with --model conv",
        default=(),
    )
    likelihood: Likelihood = _help(
        "p(x|z): bernoulli (pixels in [0, 1] as probabilities) or gaussian (mean from --gaussian-mean, sd --sigma)",
        default="bernoulli",
    )
    gaussian_mean: GaussianMean = _help(
        "gaussian: the mean of p(x|z) is sigmoid(decoder), for data in [0, 1] such as pixels, or the decoder's "
        "output itself (identity), for real-valued data of any range (standardised features, embeddings)",
        default="sigmoid",
    )
    sigma: float | None = _help(
        "gaussian: standard deviation of p(x|z) in the data's units, fixed, or the starting value with --learn-sigma",
        shown_default=f"{DEFAULT_SIGMA} with --likelihood gaussian",
        default=None,
    )
    learn_sigma: bool = _help(f"gaussian: learn sigma (one value for all pixels, at least {MIN_LEARNED_SIGMA}) with the weights", default=False)
    dequantize: bool = _help(
        "gaussian on 8-bit images: train and evaluate on (255x + u) / 256, u ~ U(0, 1), "
        "so that the ELBO bounds the likelihood of the 8-bit values and bits per dimension are reported",
        default=False,
    )
    value_range: tuple[float, ...] = _help(
        "(lowest, highest) value of the training data, which figures draw black and white; set from the data "
        "for --gaussian-mean identity (figures of a model without it stretch what they show)", default=()
    )

    def __post_init__(self) -> None:
        check_types(self)
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        for name in ("architecture", "image_shape", "conv_channels", "conv_kernels", "conv_strides"):
            object.__setattr__(self, name, tuple(int(a) for a in getattr(self, name)))
        if self.model not in MODEL_KINDS:
            raise VaekitError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_KINDS)}")
        conv_options = [name for name in ("conv_channels", "conv_kernels", "conv_strides") if getattr(self, name)]
        if self.model != "conv" and conv_options:
            raise VaekitError(f"{flag_of(conv_options[0])} applies to --model conv only")
        validate_architecture(self.architecture, min_length=2 if self.model == "conv" else 3)
        if self.nonlinearity not in NONLINEARITIES:
            raise VaekitError(f"unknown nonlinearity {self.nonlinearity!r}; choose one of {', '.join(NONLINEARITIES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise VaekitError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.prior not in PRIORS:
            raise VaekitError(f"unknown prior {self.prior!r}; choose one of {', '.join(PRIORS)}")
        if self.pseudo_inputs < 1:
            raise VaekitError(f"--pseudo-inputs must be at least 1, got {self.pseudo_inputs}")
        if self.model == "conv":
            self._fill_conv_defaults()
            validate_conv(self)
        elif self.image_shape and (len(self.image_shape) != 3 or math.prod(self.image_shape) != self.input_size):
            raise VaekitError(f"image shape {list(self.image_shape)} is not (channels, height, width) of the "
                              f"{self.input_size} inputs the architecture starts with")
        self._check_likelihood()

    def _fill_conv_defaults(self) -> None:
        defaults = {
            "conv_channels": DEFAULT_CONV_CHANNELS,
            "conv_kernels": DEFAULT_CONV_KERNELS,
            "conv_strides": DEFAULT_CONV_STRIDES,
        }
        for name, default in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, default)

    def _check_likelihood(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise VaekitError(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        if self.gaussian_mean not in GAUSSIAN_MEANS:
            raise VaekitError(f"unknown gaussian mean {self.gaussian_mean!r}; choose one of {', '.join(GAUSSIAN_MEANS)}")
        if self.value_range and (len(self.value_range) != 2 or not self.value_range[0] < self.value_range[1]):
            raise VaekitError(f"value_range must be (lowest, highest) with lowest < highest, got {list(self.value_range)}")
        if self.value_range and self.takes_unit_interval:  # such a model's figures draw [0, 1]
            raise VaekitError("value_range applies to --likelihood gaussian --gaussian-mean identity only")
        if self.likelihood != "gaussian":
            gaussian_only = {"sigma": self.sigma is not None, "learn_sigma": self.learn_sigma, "dequantize": self.dequantize,
                             "gaussian_mean": self.gaussian_mean != "sigmoid"}
            for name, is_set in gaussian_only.items():
                if is_set:
                    raise VaekitError(f"{flag_of(name)} applies to --likelihood gaussian only")
            return
        if self.sigma is None:
            object.__setattr__(self, "sigma", DEFAULT_SIGMA)
        if not MIN_SIGMA <= self.sigma < float("inf"):  # a smaller one overflows float32 in 1 / sigma^2 or underflows to 0
            raise VaekitError(f"--sigma must be a number of at least {MIN_SIGMA}, got {self.sigma}")
        if self.dequantize and self.gaussian_mean != "sigmoid":
            raise VaekitError("--dequantize models 8-bit pixels, values in [0, 1]: it takes --gaussian-mean sigmoid, not identity")
        if self.learn_sigma and self.sigma < MIN_LEARNED_SIGMA:
            raise VaekitError(f"--learn-sigma keeps sigma at least {MIN_LEARNED_SIGMA}; start it there or above (--sigma), not at {self.sigma}")

    @property
    def input_size(self) -> int:
        return self.architecture[0]

    @property
    def takes_unit_interval(self) -> bool:
        """Whether the model's data must lie in [0, 1]: a Bernoulli's probabilities, or a Gaussian's sigmoid mean."""
        return self.likelihood == "bernoulli" or self.gaussian_mean == "sigmoid"

    @property
    def latent_size(self) -> int:
        return self.architecture[-1]

    @property
    def conv_layers(self) -> list[tuple[int, int, int]]:
        """(channels, kernel, stride) of each convolution, single kernel and stride values repeated."""
        n = len(self.conv_channels)
        kernels = self.conv_kernels * n if len(self.conv_kernels) == 1 else self.conv_kernels
        strides = self.conv_strides * n if len(self.conv_strides) == 1 else self.conv_strides
        return list(zip(self.conv_channels, kernels, strides))


def conv_padding(kernel: int) -> int:
    """Padding of a convolution: (k - 1) // 2, so stride 1 keeps the size and stride 2 about halves it."""
    return (kernel - 1) // 2


def conv_output_size(size: int, kernel: int, stride: int) -> int:
    """Height (or width) after a convolution: floor((size + 2 padding - kernel) / stride) + 1."""
    return (size + 2 * conv_padding(kernel) - kernel) // stride + 1


def conv_feature_sizes(image_shape: tuple[int, ...], layers: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(height, width) of the input and after each convolution; a clear error where an image is too small."""
    _, height, width = image_shape
    sizes = [(height, width)]
    for index, (_, kernel, stride) in enumerate(layers, start=1):
        h, w = sizes[-1]
        if min(h, w) < stride or min(h, w) + 2 * conv_padding(kernel) < kernel:
            raise VaekitError(
                f"images of {height}x{width} are too small for {len(layers)} convolutions with kernels "
                f"{[k for _, k, _ in layers]} and strides {[s for _, _, s in layers]}: layer {index} would get "
                f"{h}x{w} inputs; use fewer --conv-channels or smaller --conv-strides"
            )
        if kernel > 2 * max(h, w):  # it would see mostly padding, at a great cost
            raise VaekitError(f"--conv-kernels: a kernel of {kernel} is more than twice layer {index}'s {h}x{w} inputs; "
                              "use smaller kernels")
        sizes.append((conv_output_size(h, kernel, stride), conv_output_size(w, kernel, stride)))
    return sizes


def default_architecture(input_size: int, model: str = "mlp") -> tuple[int, ...]:
    """The command line's architecture when --arch is not given: the data's size, DEFAULT_HIDDEN, DEFAULT_LATENT."""
    return (input_size, *DEFAULT_HIDDEN[model], DEFAULT_LATENT)


def validate_conv(config: ModelConfig) -> None:
    """The conv model needs an image shape matching the input size, and layers that fit the image."""
    shape = config.image_shape
    if len(shape) != 3 or min(shape) < 1:
        raise VaekitError(
            f"--model conv needs the image shape (channels, height, width) of the data, got {list(shape)}"
        )
    if shape[0] * shape[1] * shape[2] != config.input_size:
        raise VaekitError(
            f"architecture starts with {config.input_size} inputs but images of shape {list(shape)} hold "
            f"{shape[0] * shape[1] * shape[2]} values"
        )
    n = len(config.conv_channels)
    for name in ("conv_kernels", "conv_strides"):
        if len(getattr(config, name)) not in (1, n):
            raise VaekitError(
                f"{flag_of(name)} needs 1 value or {n} (one per convolution), got {len(getattr(config, name))}"
            )
    for name in ("conv_channels", "conv_kernels", "conv_strides"):
        if min(getattr(config, name)) < 1:
            raise VaekitError(f"{flag_of(name)} must be positive integers, got {list(getattr(config, name))}")
    conv_feature_sizes(shape, config.conv_layers)


def validate_architecture(architecture: tuple[int, ...], min_length: int = 3) -> None:
    """Raise a clear error unless it is input, hidden layers (at least one for the MLP), and latent, all positive."""
    if len(architecture) < 2:
        raise VaekitError(f"architecture {list(architecture)} needs at least an input size and a latent size")
    if len(architecture) < min_length:
        raise VaekitError(
            f"architecture {list(architecture)} needs at least an input size, one hidden layer and a latent size, "
            "e.g. 784,500,500,2"
        )
    if any(a <= 0 for a in architecture):
        raise VaekitError(f"architecture {list(architecture)} must contain positive integers only")


def parse_architecture(text: str) -> tuple[int, ...]:
    """'784,500,500,2' -> (784, 500, 500, 2), with a clear error for anything else."""
    try:
        sizes = tuple(int(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise VaekitError(f"bad architecture {text!r}: expected comma-separated integers such as 784,500,500,2") from None
    validate_architecture(sizes, min_length=2)  # the model kind decides whether hidden layers are required
    return sizes


# the data sets known by name (data.load_data loads each); any other --data is a path
NAMED_DATA_SETS = ("digits", "mnist", "binarized-mnist")


def is_web_address(text: str) -> bool:
    """Whether text is an http(s) URL with a host (or a file: URL), one urllib can fetch from."""
    try:
        parsed = urllib.parse.urlparse(text)
    except ValueError:  # an unclosed [ of an IPv6 host, say
        return False
    return parsed.scheme == "file" or (parsed.scheme in ("http", "https") and bool(parsed.netloc))


def absolute_path(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives, and how it is split."""

    data: str = _help(
        "digits (built in), mnist, binarized-mnist, a path to a .npy/.npz file, or a folder of images "
        "(class sub-folders become labels)",
        default="digits",
    )
    data_dir: str | None = _help(
        "folder with the data files", shown_default="$VAEKIT_DATA, then the download cache", default=None
    )
    valid_size: int = _help("MNIST: images taken from the training file for validation", default=5000)
    mirror: str = _help(
        "MNIST: base URL to download the four official files from",
        default="https://ossci-datasets.s3.amazonaws.com/mnist/",
    )
    image_size: tuple[int, ...] = _help(
        "image folders: HEIGHT,WIDTH (or one number for squares) to bring every image to",
        shown_default="the images' own size, which must then agree",
        metavar="H[,W]",
        default=(),
    )
    channels: int | None = _help(
        "image folders: 1 (grayscale) or 3 (RGB)", shown_default="3 if any image has colour, else 1", default=None
    )
    fit: Literal["resize", "crop"] = _help(
        "image folders: how images reach --image-size: resize (stretch) or crop (scale the short side, "
        "then cut out the centre)",
        default="resize",
    )

    def __post_init__(self) -> None:
        paths_as_text(self, ("data", "data_dir"))
        check_types(self)
        object.__setattr__(self, "image_size", tuple(int(a) for a in self.image_size))
        for name in ("data", "data_dir"):
            value = getattr(self, name)
            if value == "":  # an unset "$DATA" in a script: not the current folder
                raise VaekitError(f"{flag_of(name)} is empty: give a data set, a file or a folder")
            if value is not None and "://" in value:
                raise VaekitError(f"{flag_of(name)} takes a data set's name, a local file or a folder, not a web "
                                  f"address ({value}): download it first")
        # Paths are kept absolute: the run's config.json must find its data from any folder (evaluate, --resume).
        if self.data not in NAMED_DATA_SETS:
            object.__setattr__(self, "data", absolute_path(self.data))
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", absolute_path(self.data_dir))
        if self.valid_size < 1:
            raise VaekitError(f"--valid-size must be at least 1, got {self.valid_size}")
        if not is_web_address(self.mirror):
            raise VaekitError(f"--mirror must be a web address such as https://host/mnist/, got {self.mirror!r}")
        if len(self.image_size) > 2 or any(a < 1 for a in self.image_size):
            raise VaekitError(f"--image-size must be HEIGHT,WIDTH or one size, all positive, got {list(self.image_size)}")
        if self.channels not in (None, 1, 3):
            raise VaekitError(f"--channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if self.fit not in ("resize", "crop"):
            raise VaekitError(f"--fit must be resize or crop, got {self.fit!r}")


DEFAULT_EPOCHS = 10  # where neither --epochs nor --max-steps is given


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the original's defaults (Adam 1e-3, batch 128, clip by value at 5)."""

    epochs: int | None = _help("stop after this many passes over the training set", default=None,
                               shown_default="10, or no epoch limit with --max-steps")
    max_steps: int | None = _help("stop after this many optimizer steps, or at --epochs if that comes first", default=None,
                                  shown_default="no step limit")
    batch_size: int = _help("examples per step (per process under torchrun: the global batch is this times the processes)", default=128)
    lr: float = _help("Adam learning rate", default=1e-3)
    l2: float = _help("L2 penalty on weights, l2 * sum(w**2) / 2, the original's lambda_l2_reg", default=0.0)
    clip: float = _help("clip each gradient value to [-clip, clip]; 0 turns clipping off", default=5.0)
    objective: Objective = _help(
        "what to maximise: the ELBO, or the k-sample importance-weighted bound (Burda et al. 2015)", default="elbo"
    )
    iwae_k: int = _help("samples per example for --objective iwae", default=50)
    beta: float = _help("weight of the KL term in the ELBO (1: the bound on log p(x))", default=1.0)
    warmup_epochs: int = _help("raise the KL weight linearly from 0 to --beta over this many epochs (0: no warm-up)", default=0)
    free_bits: float = _help(
        "nats of KL per latent dimension that cost nothing (Kingma et al. 2016); standard normal prior only", default=0.0
    )
    lr_schedule: Literal["constant", "burda", "plateau"] = _help(
        "constant; burda: 3^i epochs at lr * 10^(-i/7) for i = 0..7 (Burda et al. 2015); "
        "plateau: multiply lr by --lr-decay when the validation cost has not improved for more than --lr-patience epochs",
        default="constant",
    )
    lr_decay: float = _help("plateau schedule: factor applied to the learning rate", default=0.5)
    lr_patience: int = _help("plateau schedule: epochs without improvement to tolerate; the next one lowers the learning rate", default=10)
    min_lr: float = _help("plateau schedule: the learning rate never drops below this", default=1e-6)
    patience: int = _help(
        "early stopping: stop after this many epochs without a better validation cost, and make the run's "
        "model.safetensors the best-on-validation weights (also kept as best.safetensors); 0: train to the end, keep the last",
        default=0,
    )
    eval_every: int = _help("also compute the validation cost every N steps (0: only at epoch ends)", default=0)
    checkpoint_every: int = _help("also checkpoint every N steps (0: only at epoch ends and the end)", default=0)
    seed: int = _help("random seed; the same seed gives the same run on CPU", default=0)
    device: Device = _help("where to train", default="auto")
    out: str = _help("folder in which the run's own folder is created", default="runs")
    progress: bool = _help("show a progress bar (the vaekit command: on a terminal only; a log file gets the epoch lines)", default=True)
    dist_timeout: float = _help(
        "torchrun: seconds a process waits for the others before the whole job fails", default=300.0
    )
    on_nonfinite: Literal["stop", "skip"] = _help(
        "on a NaN/Inf loss or gradient: stop (the last checkpoint stays intact) or skip the batch and count it",
        default="stop",
    )
    snapshots: bool = _help(
        "save the latent space at steps round(2^(k/2)) and the last step, and make GIFs of it at the end", default=False
    )
    precision: Literal["fp32", "bf16"] = _help(
        "fp32, or bf16 mixed precision: the networks' matrix products in bfloat16, the weights, the optimizer "
        "and the loss in float32; for hardware with fast bf16 (CPUs with AVX-512 BF16 or AMX, NVIDIA GPUs "
        "from Ampere on), where the products run 2x or more faster",
        default="fp32",
    )
    fused: bool = _help(
        "train vae-tf's model (dense, Bernoulli likelihood, N(0, I) prior, elu/relu/tanh hidden units, ELBO, no "
        "--free-bits, no dropout, one process) with its "
        "gradient written out by hand instead of autograd (vaekit.fused): the same numbers, faster; --no-fused uses autograd",
        default=True,
    )
    compile: bool = _help(
        "with the hand-written gradient (see --fused), run it through torch.compile: its elementwise work fused "
        "into a few kernels, faster (README, Performance) after 5-10 s of compiling; where compiling fails, "
        "training goes on without it after one warning",
        default=False,
    )
    threads: int | None = _help(
        "CPU threads for PyTorch's kernels; on a machine busy with other work, 1 can be far faster than one "
        "per core, whose threads wait for each other",
        shown_default="PyTorch's own: one per core",
        default=None,
    )

    def __post_init__(self) -> None:
        paths_as_text(self, ("out",))
        check_types(self)
        if self.out == "":  # an unset "$OUT" in a script: not the current folder
            raise VaekitError("--out is empty: give the folder in which to make the run's folder")
        if self.epochs is None and self.max_steps is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS)  # frozen: this is the one place a default is filled in
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise VaekitError(f"{flag_of(name)} must be at least 1, got {value}")
        if self.batch_size < 1:
            raise VaekitError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise VaekitError(f"--lr must be positive, got {self.lr}")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise VaekitError(f"--threads must be between 1 and {MAX_THREADS}, got {self.threads}")
        if not is_seed(self.seed):
            raise VaekitError(f"--seed must be {SEED_RULE}, got {self.seed}")
        if self.precision not in ("fp32", "bf16"):
            raise VaekitError(f"--precision must be fp32 or bf16, got {self.precision!r}")
        if not 0 < self.dist_timeout <= MAX_DIST_TIMEOUT:  # gloo and NCCL overflow far beyond it
            raise VaekitError(f"--dist-timeout must be positive and at most {MAX_DIST_TIMEOUT:.0e} seconds (about 116 days), got {self.dist_timeout}")
        for name in ("objective", "lr_schedule", "device", "on_nonfinite"):
            choices = literal_choices(get_type_hints(TrainConfig)[name])
            if getattr(self, name) not in choices:
                raise VaekitError(f"unknown {flag_of(name)} {getattr(self, name)!r}; choose one of {', '.join(choices)}")
        if self.iwae_k < 1:
            raise VaekitError(f"--iwae-k must be at least 1, got {self.iwae_k}")
        if self.objective == "iwae" and (self.beta != 1.0 or self.warmup_epochs or self.free_bits):
            raise VaekitError("--beta, --warmup-epochs and --free-bits shape the ELBO; use them with --objective elbo")
        if not 0.0 < self.lr_decay < 1.0:
            raise VaekitError(f"--lr-decay must be between 0 and 1, got {self.lr_decay}")
        for name in ("l2", "clip", "eval_every", "checkpoint_every", "beta", "warmup_epochs", "free_bits", "lr_patience", "min_lr", "patience"):
            if getattr(self, name) < 0:
                raise VaekitError(f"{flag_of(name)} must not be negative, got {getattr(self, name)}")


# settings that mean something under one choice only, and that choice: given without it, they would be ignored
APPLIES_ONLY_WITH = {
    "pseudo_inputs": ("prior", "vamp"),
    "iwae_k": ("objective", "iwae"),
    "lr_decay": ("lr_schedule", "plateau"),
    "lr_patience": ("lr_schedule", "plateau"),
    "min_lr": ("lr_schedule", "plateau"),
}


def check_settings_apply(given: dict[str, Any]) -> None:
    """Refuse a setting given for a choice the run does not make (--iwae-k without --objective iwae, say), and a
    plateau schedule that could never lower the rate. `given` holds the settings given, by field name."""
    for name, (choice, value) in APPLIES_ONLY_WITH.items():
        if name in given and given.get(choice) != value:
            raise VaekitError(f"{flag_of(name)} applies to {flag_of(choice)} {value} only")
    min_lr, lr = given.get("min_lr", TrainConfig.min_lr), given.get("lr", TrainConfig.lr)
    if given.get("lr_schedule") == "plateau" and min_lr >= lr:
        raise VaekitError(f"--min-lr ({min_lr}) must be below --lr ({lr}), or the rate never drops")


def settings_given(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass that differ from their defaults: those a caller gave, as far as can be told."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if getattr(config, f.name) != f.default}


def flag_of(field_name: str) -> str:
    """The command-line flag of a config field: --batch-size for batch_size, --arch for architecture."""
    return "--" + FLAG_NAMES.get(field_name, field_name).replace("_", "-")


def is_seed(value: int) -> bool:
    return 0 <= value < MAX_SEED


def paths_as_text(config: Any, names: tuple[str, ...]) -> None:
    """Path objects given for path fields, kept as the strings that JSON and the command line hold."""
    for name in names:
        if isinstance(getattr(config, name), os.PathLike):
            object.__setattr__(config, name, os.fspath(getattr(config, name)))


def check_types(config: Any) -> None:
    """One clear error where a field holds a value of the wrong kind (set from Python, or read from
    JSON): a string for a number, say. Which values of the right kind are allowed, each class checks."""
    hints = get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if not is_of_type(value, hints[item.name]):
            raise VaekitError(f"{type(config).__name__}.{item.name} must be {type_name(hints[item.name])}, got {value!r}")


def is_of_type(value: Any, hint: Any) -> bool:
    """Whether value fits the annotation: int, float, bool, str, None, tuple[int, ...], unions of them;
    a list is taken for a tuple, an int for a float, a float must be finite. Literals pass: their values are each class's to check."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return any(is_of_type(value, arg) for arg in args)
    if origin is tuple:
        return isinstance(value, (tuple, list)) and all(is_of_type(v, args[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:  # no setting takes NaN or an infinity (NaN would pass every `< 0` check)
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if hint in (str, type(None)):
        return isinstance(value, hint)
    return True


def type_name(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args)
    if origin is tuple:
        return f"a list of {type_name(args[0]).removeprefix('an ').removeprefix('a ')}s"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", type(None): "None"}.get(hint, str(hint))


# what a resumed run may change (the limits, and what depends on the machine); every other setting is the run's own
RESUME_MAY_CHANGE = ("epochs", "max_steps", "progress", "device", "threads", "dist_timeout", "data_dir")


def changed_fields(saved: Any, now: Any, allowed: tuple[str, ...] = RESUME_MAY_CHANGE) -> list[str]:
    """The fields, outside `allowed`, in which two configs of one dataclass differ."""
    return [f.name for f in dataclasses.fields(now) if f.name not in allowed and getattr(saved, f.name) != getattr(now, f.name)]


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain JSON-ready values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build `cls` from a dict, rejecting unknown keys with a clear error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise VaekitError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    hints = get_type_hints(cls)
    converted = {}
    for key, value in values.items():
        if get_origin(hints[key]) is tuple and isinstance(value, list):
            value = tuple(value)
        converted[key] = value
    try:
        return cls(**converted)
    except (TypeError, ValueError) as error:
        raise VaekitError(f"bad {cls.__name__}: {error}") from None


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    from vaekit.files import atomic_write_bytes

    atomic_write_bytes(Path(path), (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The allowed values of a Literal[...] annotation, or None."""
    return get_args(annotation) if get_origin(annotation) is Literal else None

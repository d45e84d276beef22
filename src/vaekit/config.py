"""Typed configuration: one frozen dataclass per concern, saved as JSON beside the weights.

The CLI builds its flags from these fields (see `cli.py`), so a field added here
is a flag there, with the help text from the field's metadata.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from vaekit.errors import VaekitError

NONLINEARITIES = ("elu", "relu", "tanh", "softplus", "sigmoid", "leaky_relu", "gelu", "silu")

Nonlinearity = Literal["elu", "relu", "tanh", "softplus", "sigmoid", "leaky_relu", "gelu", "silu"]


def _help(text: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text for the CLI."""
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class ModelConfig:
    """What the network is: enough to rebuild it before loading its weights."""

    architecture: tuple[int, ...] = _help(
        "layer sizes input,hidden...,latent, e.g. 784,500,500,2 (default: data size,500,500,2)",
        default=(),
    )
    nonlinearity: Nonlinearity = _help("hidden-unit nonlinearity", default="elu")
    dropout: float = _help("dropout probability on hidden units (the original's 1 - keep_prob)", default=0.0)
    prior: Literal["standard", "vamp"] = _help(
        "p(z): standard normal, or a VampPrior of learned pseudo-inputs (Tomczak & Welling 2018)", default="standard"
    )
    pseudo_inputs: int = _help("VampPrior: number K of learned pseudo-inputs", default=500)
    image_shape: tuple[int, ...] = _help(
        "(channels, height, width) of one example, for figures; set from the data", default=()
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "architecture", tuple(int(a) for a in self.architecture))
        object.__setattr__(self, "image_shape", tuple(int(a) for a in self.image_shape))
        validate_architecture(self.architecture)
        if self.nonlinearity not in NONLINEARITIES:
            raise VaekitError(f"unknown nonlinearity {self.nonlinearity!r}; choose one of {', '.join(NONLINEARITIES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise VaekitError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.prior not in ("standard", "vamp"):
            raise VaekitError(f"unknown prior {self.prior!r}; choose standard or vamp")
        if self.pseudo_inputs < 1:
            raise VaekitError(f"--pseudo-inputs must be at least 1, got {self.pseudo_inputs}")

    @property
    def input_size(self) -> int:
        return self.architecture[0]

    @property
    def latent_size(self) -> int:
        return self.architecture[-1]


def validate_architecture(architecture: tuple[int, ...]) -> None:
    """Raise a clear error unless it is input, at least one hidden layer, and latent, all positive."""
    if len(architecture) < 3:
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
    validate_architecture(sizes)
    return sizes


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives, and how it is split."""

    data: str = _help(
        "digits (built in), mnist, binarized-mnist, or a path to a .npy/.npz file", default="digits"
    )
    data_dir: str | None = _help(
        "folder with the data files (default: $VAEKIT_DATA, then the download cache)", default=None
    )
    valid_size: int = _help("MNIST: images taken from the training file for validation", default=5000)
    mirror: str = _help(
        "MNIST: base URL to download the four official files from",
        default="https://ossci-datasets.s3.amazonaws.com/mnist/",
    )

    def __post_init__(self) -> None:
        if self.valid_size < 1:
            raise VaekitError(f"--valid-size must be at least 1, got {self.valid_size}")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the original's defaults (Adam 1e-3, batch 128, clip by value at 5)."""

    epochs: int | None = _help("stop after this many passes over the training set", default=10)
    max_steps: int | None = _help("stop after this many optimizer steps (whichever comes first)", default=None)
    batch_size: int = _help("examples per step", default=128)
    lr: float = _help("Adam learning rate", default=1e-3)
    l2: float = _help("L2 penalty on weights, l2 * sum(w**2) / 2, the original's lambda_l2_reg", default=0.0)
    clip: float = _help("clip each gradient value to [-clip, clip]; 0 turns clipping off", default=5.0)
    objective: Literal["elbo", "iwae"] = _help(
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
    device: Literal["auto", "cpu", "cuda"] = _help("where to train", default="auto")
    out: str = _help("folder in which the run's own folder is created", default="runs")
    progress: bool = _help("show a progress bar", default=True)

    def __post_init__(self) -> None:
        if self.epochs is None and self.max_steps is None:
            raise VaekitError("give --epochs or --max-steps (or both)")
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise VaekitError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.batch_size < 1:
            raise VaekitError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise VaekitError(f"--lr must be positive, got {self.lr}")
        for name, choices in (("objective", ("elbo", "iwae")), ("lr_schedule", ("constant", "burda", "plateau"))):
            if getattr(self, name) not in choices:
                raise VaekitError(f"unknown --{name.replace('_', '-')} {getattr(self, name)!r}; choose one of {', '.join(choices)}")
        if self.iwae_k < 1:
            raise VaekitError(f"--iwae-k must be at least 1, got {self.iwae_k}")
        if self.objective == "iwae" and (self.beta != 1.0 or self.warmup_epochs or self.free_bits):
            raise VaekitError("--beta, --warmup-epochs and --free-bits shape the ELBO; use them with --objective elbo")
        if not 0.0 < self.lr_decay < 1.0:
            raise VaekitError(f"--lr-decay must be between 0 and 1, got {self.lr_decay}")
        for name in ("l2", "clip", "eval_every", "checkpoint_every", "beta", "warmup_epochs", "free_bits", "lr_patience", "min_lr", "patience"):
            if getattr(self, name) < 0:
                raise VaekitError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")


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
    except TypeError as error:
        raise VaekitError(f"bad {cls.__name__}: {error}") from None


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    from vaekit.checkpoint import atomic_write_bytes

    atomic_write_bytes(Path(path), (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The allowed values of a Literal[...] annotation, or None."""
    return get_args(annotation) if get_origin(annotation) is Literal else None

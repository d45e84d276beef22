"""The command line: `vaekit train | evaluate | sample`.

Flags are made from the config dataclasses' fields (one flag per field, help from the
field), so the CLI maps one-to-one onto the configuration. A user's mistake ends in one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, get_args, get_type_hints

from vaekit.config import DataConfig, ModelConfig, TrainConfig, from_dict, literal_choices, parse_architecture
from vaekit.errors import VaekitError

FLAG_NAMES = {"architecture": "arch"}  # field name -> flag name where the short form is the custom
CLI_HIDDEN = {"image_shape"}  # set from the data, not by the user
DEFAULT_HIDDEN = (500, 500)
DEFAULT_LATENT = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except VaekitError as error:
        print(f"vaekit: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130


def build_parser() -> Parser:
    parser = Parser(
        prog="vaekit",
        description="Variational autoencoders in PyTorch: train one, measure it, and look inside its latent space.",
        epilog="Run 'vaekit COMMAND --help' for the flags of each command.",
    )
    commands = parser.add_subparsers(title="commands", parser_class=Parser)

    train = commands.add_parser("train", help="train a VAE and write a run folder", description=TRAIN_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--resume", metavar="RUN", help="continue the run in this folder from its last checkpoint")
    add_config_flags(train.add_argument_group("model"), ModelConfig)
    add_config_flags(train.add_argument_group("data"), DataConfig)
    add_config_flags(train.add_argument_group("training"), TrainConfig)
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("evaluate", help="report the ELBO (and with --nll, log p(x)) of a trained model",
                                   description=EVALUATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("run", metavar="RUN", help="a run folder written by 'vaekit train'")
    add_config_flags(evaluate.add_argument_group("data (default: the run's own)"), DataConfig)
    evaluate.add_argument("--split", choices=["train", "valid", "test"], default="valid", help="which split (default: valid)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to compute")
    evaluate.add_argument("--nll", action="store_true", help="estimate -log p(x) by importance sampling with --k samples")
    evaluate.add_argument("--k", type=positive_int, default=5000, help="importance samples per example for --nll (default: 5000)")
    evaluate.add_argument("--limit", type=positive_int, help="only the first N examples of the split (default: all)")
    evaluate.add_argument("--seed", type=int, default=0, help="random seed of the estimate (default: 0)")
    evaluate.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar for --nll")
    evaluate.set_defaults(handler=run_evaluate)

    sample = commands.add_parser("sample", help="decode draws from the prior into a PNG grid")
    sample.add_argument("run", metavar="RUN", help="a run folder written by 'vaekit train'")
    sample.add_argument("-n", type=positive_int, default=64, help="how many samples (default: 64)")
    sample.add_argument("--out", default="samples.png", help="PNG file to write (default: samples.png)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.set_defaults(handler=run_sample)
    return parser


EVALUATE_HELP = """Per-example means in nats on one split of the data.
Without --nll: elbo (a lower bound on log p(x), one z per example), reconstruction (-log p(x|z)), kl.
With --nll: nll = -log p(x) estimated as -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x) (Burda et al. 2015),
positive, lower is better; elbo, reconstruction and kl averaged over the same k draws; active_units
(latent dimensions with Cov_x(E_q[z]) > 0.01). Examples:
  vaekit evaluate runs/RUN --split test --nll --k 5000
  vaekit evaluate runs/RUN --split valid --nll --k 500 --limit 2000 --json"""


TRAIN_HELP = """Train a VAE. Examples:
  vaekit train                                   # digits, 64-500-500-2, 10 epochs
  vaekit train --data binarized-mnist --data-dir ../shared/data --arch 784,500,500,50 --epochs 10
  vaekit train --resume runs/251121_134500_vae_784_500_500_50
The run folder (config.json, model.safetensors, checkpoint, TensorBoard logs) is created under --out."""


# -- dataclass fields -> flags -------------------------------------------------------------------------


def add_config_flags(group: Any, cls: type) -> None:
    """One flag per field of the dataclass; defaults are left out so that given flags can be told apart."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in CLI_HIDDEN:
            continue
        flag = "--" + FLAG_NAMES.get(f.name, f.name).replace("_", "-")
        default = f.default
        help_text = f"{f.metadata.get('help', '')} (default: {format_default(default)})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        annotation = hints[f.name]
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.name == "architecture":
            kwargs.update(type=architecture_flag, metavar="SIZES")
        elif literal_choices(annotation):
            kwargs["choices"] = literal_choices(annotation)
        else:
            kwargs["type"] = flag_type(annotation)
        group.add_argument(flag, **kwargs)


def format_default(value: Any) -> str:
    if value == ():
        return "from the data"
    return str(value)


def flag_type(annotation: Any) -> Any:
    """The parser for a field type: int, float or str, also inside `X | None`."""
    candidates = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    base = candidates[0]
    return {int: int_flag, float: float_flag}.get(base, str)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of cls that the user set on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def int_flag(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = int_flag(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def float_flag(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def architecture_flag(text: str) -> tuple[int, ...]:
    try:
        return parse_architecture(text)
    except VaekitError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# -- commands --------------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    import torch

    from vaekit.data import load_data
    from vaekit.model import VAE
    from vaekit.train import resume_configs, stopped_early, train

    if args.resume:
        run_dir = Path(args.resume)
        model_values, train_config, data_config = resume_configs(run_dir)
        overrides = given(args, TrainConfig)
        train_config = dataclasses.replace(train_config, **{k: v for k, v in overrides.items() if k in ("epochs", "max_steps", "progress", "device")})
        model = VAE(config=from_dict(ModelConfig, model_values))
        data = load_data(data_config)
    else:
        run_dir = None
        data_config = DataConfig(**given(args, DataConfig))
        train_config = TrainConfig(**given(args, TrainConfig))
        data = load_data(data_config)
        torch.manual_seed(train_config.seed)  # the initial weights come from the seed too
        model_values = given(args, ModelConfig)
        model_values.setdefault("architecture", (data.input_size, *DEFAULT_HIDDEN, DEFAULT_LATENT))
        model = VAE(config=ModelConfig(**model_values, image_shape=data.image_shape))
    print(f"vaekit: training {'-'.join(map(str, model.config.architecture))} on {data.name} "
          f"({len(data.train)} train / {len(data.valid)} valid examples)")
    result = train(model, data, train_config, data_config, run_dir=run_dir)
    last = result.progress.history[-1]["valid_cost"] if result.progress.history else float("nan")
    state = "stopped early and saved" if result.interrupted else "done"
    print(f"vaekit: {state} after {result.progress.step} steps; validation cost {last:.2f} nats per example")
    if train_config.patience:
        stopped = "stopped early; " if stopped_early(result.progress, train_config) else ""
        print(f"vaekit: {stopped}best validation cost {result.progress.best_valid_cost:.2f} at epoch "
              f"{result.progress.best_epoch}: model.safetensors holds those weights")
    print(f"vaekit: wrote {result.run_dir}")
    return 130 if result.interrupted else 0


def run_evaluate(args: argparse.Namespace) -> int:
    from vaekit.data import load_data
    from vaekit.evaluate import average_elbo_terms, estimate_nll
    from vaekit.model import load, read_run_config
    from vaekit.train import resolve_device

    model = load(args.run, device=resolve_device(args.device))
    data_values = read_run_config(args.run).get("data", {})
    data_values.update(given(args, DataConfig))
    data_config = from_dict(DataConfig, data_values)
    split = load_data(data_config)[args.split]
    if split.x.shape[1] != model.input_size:
        raise VaekitError(f"{data_config.data} has {split.x.shape[1]} values per example; the model takes {model.input_size}")
    x = split.x[: args.limit] if args.limit else split.x
    if args.nll:
        report = estimate_nll(model, x, k=args.k, seed=args.seed, progress=args.progress and not args.json)
    else:
        report = average_elbo_terms(model, x, seed=args.seed)
    report.update(split=args.split, data=data_config.data, units="nats per example")
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{data_config.data} {args.split} ({report['n']} examples), nats per example:")
    if args.nll:
        print(f"  {'nll':<15} {report['nll']:10.3f}  (+- {report['nll_std_error']:.3f} over examples; k = {args.k})")
    for key in ("elbo", "reconstruction", "kl"):
        print(f"  {key:<15} {report[key]:10.3f}")
    if args.nll:
        print(f"  {'active units':<15} {report['active_units']:>10} of {report['latent_size']}")
        print(f"  ({report['seconds']:.1f} s, peak memory {report['peak_memory_mb']:.0f} MB: {report['memory_measure']})")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    import torch

    from vaekit.model import load
    from vaekit.plots import save_image_grid

    model = load(args.run)
    torch.manual_seed(args.seed)
    path = save_image_grid(model.sample(args.n), model.config.image_shape, args.out)
    print(f"vaekit: wrote {path}")
    return 0

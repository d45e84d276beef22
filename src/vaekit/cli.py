"""The command line: `vaekit train | evaluate | sample | plot | explore`.

Flags are made from the config dataclasses' fields (one flag per field, help from the
field), so the CLI maps one-to-one onto the configuration. A user's mistake ends in one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import logging
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, get_args, get_origin, get_type_hints

from vaekit.config import (DEVICES, FIGURE_KINDS, SPLITS, RESUME_MAY_CHANGE, DataConfig, ModelConfig, TrainConfig, check_settings_apply, default_architecture, flag_of, from_dict,
                           literal_choices, parse_architecture)
from vaekit.errors import VaekitError

CLI_HIDDEN = {"image_shape", "value_range"}  # set from the data, not by the user


# what to make smaller when a command runs out of memory, by command
MEMORY_FLAGS = {"train": "--arch, --batch-size, --image-size", "evaluate": "--limit, --image-size",
                "sample": "-n", "plot": "--ppf-sizes, --grid, --n, --frames, --kind", "explore": "--points"}
TOO_LARGE = "a number given is too large: an array of that size cannot be made (see the sizes and counts given: --grid, -n, --iwae-k, ...)"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the system.

    By default glibc serves large blocks by fresh mmap and returns the top of its heap once a few MB
    of it are free, so a tensor of a few MB allocated again faults in all its pages anew. The
    log-likelihood estimator allocates and frees about 10 MB of activations per chunk of codes:
    that re-faulting (up to 2,500 page faults a chunk) made it up to 1.5x slower. Blocks of up to
    32 MB (glibc's largest threshold) now come from the heap, trimmed only past 2 GB free: the process
    keeps its peak memory, as PyTorch's GPU allocator does. True where the setting took (glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl): their allocators do as they do
        return False
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def command() -> NoReturn:
    """The `vaekit` command, a process of its own: set up the process as the command wants it, run, exit."""
    keep_freed_memory()  # process-wide, so here and not in main(), which a notebook or a test may call
    code = main()
    if os.environ.get("WORLD_SIZE", "1") != "1":
        # Under torchrun, leave without the interpreter's shutdown: by now every file is written and
        # the process group is destroyed, but gloo's C++ threads can still abort the finalization
        # ("terminate called without an active exception"), which would fail a job that succeeded.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run one vaekit command line (sys.argv's by default) in this process; returns its exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # pointed at the command's own help, where its flags are
        command = f"{args.command} " if getattr(args, "command", None) else ""
        parser.exit(2, f"vaekit: error: unrecognized arguments: {' '.join(unknown)} (see vaekit {command}--help)\n")
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    previous_hook = threading.excepthook
    threading.excepthook = print_thread_failure  # TensorBoard's writer thread on a full disk, say: one line, not a traceback
    try:
        with warnings.catch_warnings(), info_lines_printed():
            warnings.showwarning = print_note
            return args.handler(args)
    except VaekitError as error:
        rank = os.environ.get("RANK", "0")  # under torchrun a rank may meet an error of its own (its data missing, say)
        print(f"vaekit: error{'' if rank == '0' else f' (rank {rank})'}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130
    except MemoryError as error:
        print(f"vaekit: error: {out_of_memory(args.command, error)}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"vaekit: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line, the details on request
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        if is_peer_failure(error):
            print("vaekit: error: another process of this torchrun job failed or stopped answering; "
                  "the job stops (see --dist-timeout)", file=sys.stderr)
            return 1
        if isinstance(error, RuntimeError) and any(sign in str(error) for sign in ("can't allocate memory", "out of memory")):
            print(f"vaekit: error: {out_of_memory(args.command, error)}", file=sys.stderr)  # PyTorch's allocators say it so
            return 1
        if is_size_overflow(error):
            print(f"vaekit: error: {TOO_LARGE}", file=sys.stderr)
            return 1
        first_line = (str(error).strip().splitlines() or [""])[0]
        print(f"vaekit: internal error: {type(error).__name__}: {first_line} (set VAEKIT_DEBUG=1 for details)", file=sys.stderr)
        return 1
    finally:
        threading.excepthook = previous_hook


def is_size_overflow(error: Exception) -> bool:
    """Whether a number given made an array size or a C integer overflow (how PyTorch, numpy and Pillow say so)."""
    signs = ("Maximum allowed size exceeded", "Maximum allowed dimension exceeded", "Overflow when unpacking", "too large to convert")
    return isinstance(error, (OverflowError, ValueError, TypeError)) and any(sign in str(error) for sign in signs)


def print_thread_failure(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # a thread that ended itself: silent, as Python's own hook leaves it
        return
    print(f"vaekit: note: a background thread ({args.thread.name if args.thread else '?'}) failed: "
          f"{args.exc_type.__name__}: {args.exc_value}", file=sys.stderr)


def print_note(message: Warning | str, *_: Any, **__: Any) -> None:
    """A warning as one line on stderr: a note to the user, not a place in vaekit's source."""
    print(f"vaekit: note: {message}", file=sys.stderr)


def is_peer_failure(error: Exception) -> bool:
    """torch.distributed's way of saying that another rank died or stopped answering."""
    text = str(error)
    return type(error).__name__.startswith("Dist") or (
        os.environ.get("WORLD_SIZE", "1") != "1"
        and any(sign in text for sign in ("gloo", "NCCL", "closed by peer", "timed out", "Timed out"))
    )


class PrintedLine(logging.Handler):
    """A log record as one 'vaekit: ...' line on stdout, above the progress bar if one is shown."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(f"vaekit: {record.getMessage()}", file=sys.stdout)


@contextlib.contextmanager
def info_lines_printed() -> Iterator[None]:
    """While a command runs, the library's INFO lines (an epoch's costs) are printed; a Python caller's logging is its own."""
    library_log = logging.getLogger("vaekit")
    handler, level = PrintedLine(), library_log.level
    library_log.addHandler(handler)
    library_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        library_log.removeHandler(handler)
        library_log.setLevel(level)


def out_of_memory(command: str, error: BaseException) -> str:
    """The one line for a command that ran out of memory: what could not be had, and the flags that ask for less."""
    # PyTorch: "... you tried to allocate 25600000000000 bytes", CUDA: "Tried to allocate 20.00 GiB", numpy: "Unable to allocate 2.00 GiB"
    asked = re.search(r"allocate (\d+) bytes|allocate ([\d.]+ [KMGTP]iB)", str(error), re.IGNORECASE)
    size = "" if asked is None else f" ({int(asked.group(1)) / 2**30:.1f} GiB asked for)" if asked.group(1) else f" ({asked.group(2)} asked for)"
    return f"out of memory{size}: too large for this machine; ask for less with {MEMORY_FLAGS.get(command, '--image-size')}"


def plural(n: int, noun: str) -> str:
    """'1 step', '2 steps'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def vaekit_version() -> str:
    from vaekit import __version__

    return __version__


def build_parser() -> Parser:
    parser = Parser(
        prog="vaekit",
        description="Variational autoencoders in PyTorch: train one, measure it, and look inside its latent space.",
        epilog="Run 'vaekit COMMAND --help' for the flags of each command.",
    )
    parser.add_argument("--version", action="version", version=f"vaekit {vaekit_version()}")
    commands = parser.add_subparsers(title="commands", parser_class=Parser, dest="command")

    train = commands.add_parser("train", help="train a VAE and write a run folder", description=TRAIN_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--resume", metavar="RUN", type=run_folder, help="continue the run in this folder from its last checkpoint")
    add_config_flags(train.add_argument_group("model"), ModelConfig)
    add_config_flags(train.add_argument_group("data"), DataConfig)
    add_config_flags(train.add_argument_group("training"), TrainConfig)
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("evaluate", help="report the ELBO (and with --nll, log p(x)) of a trained model",
                                   description=EVALUATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("run", metavar="RUN", type=run_folder, help="a run folder written by 'vaekit train'")
    add_config_flags(evaluate.add_argument_group("data (default: the run's own)"), DataConfig, defaults_shown=False)
    evaluate.add_argument("--split", choices=SPLITS, default="valid", help="which split (default: valid)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.add_argument("--device", choices=DEVICES, default="auto", help="where to compute")
    evaluate.add_argument("--nll", action="store_true", help="estimate -log p(x) by importance sampling with --k samples")
    evaluate.add_argument("--k", type=positive_int, default=5000, help="importance samples per example for --nll (default: 5000)")
    evaluate.add_argument("--limit", type=positive_int, help="only the first N examples of the split (default: all)")
    evaluate.add_argument("--seed", type=seed_flag, default=0, help="random seed of the estimate (default: 0)")
    evaluate.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar for --nll (on a terminal)")
    evaluate.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                          help="--nll with log p(x|z) through torch.compile: the same draws, faster (README, Performance), "
                               "after 5-10 s of compiling; without a working compiler it goes on uncompiled")
    evaluate.set_defaults(handler=run_evaluate)

    sample = commands.add_parser("sample", help="decode draws from the prior into a PNG grid, or a .npy array")
    sample.add_argument("run", metavar="RUN", type=run_folder, help="a run folder written by 'vaekit train'")
    sample.add_argument("-n", type=positive_int, default=64, help="how many samples (default: 64)")
    sample.add_argument("--out", default="samples.png",
                        help="PNG file to write, or a .npy file for the decoded values themselves, float32 (N, D) or "
                             "(N, C, H, W) for a conv model (default: samples.png)")
    sample.add_argument("--seed", type=seed_flag, default=0, help="random seed (default: 0)")
    sample.set_defaults(handler=run_sample)

    add_plot_command(commands)

    explore = commands.add_parser("explore", help="write an interactive latent explorer: one offline HTML page",
                                  description=EXPLORE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    explore.add_argument("run", metavar="RUN", type=run_folder, help="a run folder written by 'vaekit train'")
    add_config_flags(explore.add_argument_group("data on the pad (default: the run's own)"), DataConfig, defaults_shown=False)
    explore.add_argument("--split", choices=SPLITS, default="train", help="which split to encode (default: train)")
    explore.add_argument("--points", type=positive_int, default=2000, help="encode at most this many examples (default: 2000)")
    explore.add_argument("--out", default="explorer.html", help="HTML file to write (default: explorer.html)")
    explore.add_argument("--serve", action="store_true", help="then serve the page on 127.0.0.1 until Ctrl-C")
    explore.add_argument("--port", type=port_number, help="port for --serve; 0 picks a free one (default: 8000)")
    explore.set_defaults(handler=run_explore)
    return parser


EVALUATE_HELP = """Per-example means in nats on one split of the data.
Without --nll: elbo (a lower bound on log p(x), one z per example), reconstruction (-log p(x|z)), kl.
With --nll: nll = -log p(x) estimated as -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x) (Burda et al. 2015),
positive for binary data, of any sign for a Gaussian's density; lower is better; elbo, reconstruction and kl averaged over the same k draws; active_units
(latent dimensions with Cov_x(E_q[z]) > 0.01). Examples:
  vaekit evaluate runs/RUN --split test --nll --k 5000
  vaekit evaluate runs/RUN --split valid --nll --k 500 --limit 2000 --json"""


TRAIN_HELP = """Train a VAE. Examples:
  vaekit train                                   # digits, 64-500-500-2, 10 epochs
  vaekit train --data binarized-mnist --data-dir ../shared/data --arch 784,500,500,50 --epochs 10
  vaekit train --resume runs/251121_134500_vae_784_500_500_50
The run folder (config.json, model.safetensors, checkpoint, TensorBoard logs) is created under --out."""

EXPLORE_HELP = """Write one self-contained HTML page (works offline) to walk the model's latent space:
a pad of the encoded data that decodes under the pointer, interpolation between two clicked
points, one slider per latent dimension, and a manifold grid. Examples:
  vaekit explore runs/251121_134500_vae_64_500_500_2 --out explorer.html
  vaekit explore RUN --split test --serve          # then open the printed http://127.0.0.1 address"""


# -- dataclass fields -> flags -------------------------------------------------------------------------


def add_config_flags(group: Any, cls: type, defaults_shown: bool = True) -> None:
    """One flag per field of the dataclass; defaults are left out so that given flags can be told apart.

    Without `defaults_shown` the help leaves out the fields' defaults: the group's title says what they are."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in CLI_HIDDEN:
            continue
        flag = flag_of(f.name)
        default = f.metadata.get("shown_default", f.default)
        help_text = f.metadata.get("help", "") + (f" (default: {default})" if defaults_shown else "")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        annotation = hints[f.name]
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.name == "architecture":
            kwargs.update(type=architecture_flag, metavar="SIZES")
        elif f.name == "seed":
            kwargs["type"] = seed_flag
        elif literal_choices(annotation):
            kwargs["choices"] = literal_choices(annotation)
        elif get_origin(annotation) is tuple:
            kwargs.update(type=int_tuple_flag, metavar=f.metadata.get("metavar", "N[,N...]"))
        else:
            kwargs["type"] = flag_type(annotation)
        group.add_argument(flag, **kwargs)


def flag_type(annotation: Any) -> Any:
    """The parser for a field type: int, float or str, also inside `X | None`."""
    candidates = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    base = candidates[0]
    return {int: int_flag, float: float_flag}.get(base, str)


IMAGE_FOLDER_FLAGS = ("image_size", "channels", "fit")  # how a folder's images become the model's input


def run_data_config(run_dir: str | Path, args: argparse.Namespace) -> DataConfig:
    """The data a run was trained on, changed by the data flags given. A --data other than the run's
    starts from that data set's own defaults (an image folder's --image-size does not carry over to a .npy),
    but another image folder for a run trained on one is read as the run's was (size, channels, fit)."""
    from vaekit.model import read_run_config

    run_config = read_run_config(run_dir)
    saved, flags = run_config.get("data"), given(args, DataConfig)
    if saved is None and "data" not in flags:
        raise VaekitError(f"{run_dir} does not record its data (it was trained from Python on data it was handed): give --data")
    if saved is None or ("data" in flags and DataConfig(data=flags["data"]).data != saved.get("data")):
        both_folders = saved is not None and Path(saved.get("data", "")).is_dir() and Path(flags["data"]).is_dir()
        saved = folder_reading(saved, run_config.get("model", {}).get("image_shape")) if both_folders else {}
    return from_dict(DataConfig, saved | flags)


def folder_reading(saved: dict[str, Any], image_shape: list[int] | None) -> dict[str, Any]:
    """How a run's image folder became the model's input: its saved options, and where it left the size or
    the channels to the images, the (channels, height, width) the model was built for."""
    options = {name: saved[name] for name in IMAGE_FOLDER_FLAGS if name in saved}
    if image_shape and len(image_shape) == 3:
        channels, height, width = image_shape
        if not options.get("image_size"):
            options["image_size"] = (height, width)
        if options.get("channels") is None:
            options["channels"] = channels
    return options


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of cls that the user set on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


MAX_INT_FLAG = 2**31 - 1  # beyond it PyTorch, numpy and Pillow fail with errors about their internals


def int_flag(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    return within_int_range(value, text)


def within_int_range(value: int, text: str) -> int:
    if abs(value) > MAX_INT_FLAG:
        raise argparse.ArgumentTypeError(f"expected an integer of at most {MAX_INT_FLAG}, got {text!r}")
    return value


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


def int_tuple_flag(text: str) -> tuple[int, ...]:
    """'32,64,128' -> (32, 64, 128)."""
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 32,64,128, got {text!r}") from None
    return tuple(within_int_range(value, text) for value in values)


def run_folder(text: str) -> str:
    if not text:  # an unset "$RUN" in a script: not a new run of the defaults
        raise argparse.ArgumentTypeError("expected a run folder, got an empty name")
    if Path(text).is_file():
        raise argparse.ArgumentTypeError(f"expected a run folder, got the file {text}")
    return text


def seed_flag(text: str) -> int:
    from vaekit.config import SEED_RULE, is_seed

    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {SEED_RULE}, got {text!r}") from None
    if not is_seed(seed):
        raise argparse.ArgumentTypeError(f"expected {SEED_RULE}, got {text}")
    return seed


def port_number(text: str) -> int:
    value = int_flag(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
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
    from vaekit.distributed import is_main_process
    from vaekit.model import VAE, read_run_config, seeded
    from vaekit.runs import resume_configs
    from vaekit.train import stopped_early, train

    if args.resume is not None:
        run_dir = Path(args.resume)
        read_run_config(run_dir)  # "not a run folder" before any word on the flags given
        model_values, train_config, data_config = resume_configs(run_dir, resume_overrides(args))
        data = load_data(data_config)
        with seeded(train_config.seed, torch.device("cpu")):  # as the first start did, in case no checkpoint was written
            model = VAE(config=from_dict(ModelConfig, model_values))
    else:
        run_dir = None
        data_config = DataConfig(**given(args, DataConfig))
        train_config = TrainConfig(**given(args, TrainConfig))
        check_settings_apply({**given(args, ModelConfig), **given(args, TrainConfig)})
        data = load_data(data_config)
        model_values = given(args, ModelConfig)
        model_values.setdefault("architecture", default_architecture(data.input_size, model_values.get("model", "mlp")))
        data.check_fits(model_values["architecture"][0])  # before the model's image shape would disagree
        with seeded(train_config.seed, torch.device("cpu")):  # the initial weights come from the seed too
            model = VAE(config=ModelConfig(**model_values, image_shape=data.image_shape))
    if not hasattr(args, "progress"):  # by default a bar on a terminal alone: redrawn into a log file, a line per redraw
        train_config = dataclasses.replace(train_config, progress=sys.stderr.isatty())
    main_process = is_main_process()  # under torchrun, rank 0 alone speaks
    if main_process:
        print(f"vaekit: training {model.config.model} {'-'.join(map(str, model.config.architecture))} on {data.name} "
              f"({len(data.train)} train / {len(data.valid)} valid examples)")
    result = train(model, data, train_config, data_config, run_dir=run_dir)
    if not main_process:
        return 130 if result.interrupted else 0
    last = result.progress.history[-1]["valid_cost"] if result.progress.history else float("nan")
    state = "interrupted and saved" if result.interrupted else "done"
    print(f"vaekit: {state} after {plural(result.progress.step, 'step')}; validation cost {last:.2f} nats per example")
    if result.progress.skipped_batches:
        print(f"vaekit: skipped {result.progress.skipped_batches} batches with a non-finite loss or gradient")
    if train_config.patience and result.progress.best_epoch == 0:
        print("vaekit: no epoch ended, so there are no best weights on validation: model.safetensors holds the last ones")
    elif train_config.patience:
        stopped = "stopped early; " if stopped_early(result.progress, train_config) else ""
        print(f"vaekit: {stopped}best validation cost {result.progress.best_valid_cost:.2f} at epoch "
              f"{result.progress.best_epoch}: model.safetensors holds those weights")
    print(f"vaekit: wrote {result.run_dir}")
    if not math.isfinite(last):  # the weights are finite (steps with non-finite gradients were skipped), the model is not
        print(f"vaekit: error: the validation cost is {last}: the model diverged (lower --lr, or --clip); "
              f"its run is kept in {result.run_dir}", file=sys.stderr)
        return 1
    return 130 if result.interrupted else 0


def resume_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings --resume may change; any other flag is refused rather than silently ignored."""
    values = {**given(args, ModelConfig), **given(args, DataConfig), **given(args, TrainConfig)}
    refused = [flag_of(name) for name in values if name not in RESUME_MAY_CHANGE]
    if refused:
        allowed = ", ".join(flag_of(name) for name in RESUME_MAY_CHANGE)
        raise VaekitError(f"--resume continues a run with its saved settings; only {allowed} can change, not {', '.join(refused)}")
    if "epochs" in values and "max_steps" not in values:  # a new limit alone is the run's limit, whatever the saved other one
        values["max_steps"] = None
    if "max_steps" in values and "epochs" not in values:
        values["epochs"] = None
    return values


def run_evaluate(args: argparse.Namespace) -> int:
    from vaekit.data import is_binary, load_data
    from vaekit.evaluate import average_elbo_terms, estimate_nll
    from vaekit.model import load, resolve_device

    model = load(args.run, device=resolve_device(args.device))
    data_config = run_data_config(args.run, args)
    data = load_data(data_config)
    data.check_fits(model.input_size)
    split = data[args.split]
    x = split.x[: args.limit] if args.limit else split.x
    if args.nll:
        progress = args.progress and not args.json and sys.stderr.isatty()  # a bar redrawn into a log file is a line per redraw
        report = estimate_nll(model, x, k=args.k, seed=args.seed, progress=progress, compile=args.compile, reset_peak_memory=True)
    else:
        report = average_elbo_terms(model, x, seed=args.seed)
    report.update(split=args.split, data=data_config.data, units="nats per example")
    if model.config.likelihood == "bernoulli":
        report["binary_data"] = binary = is_binary(x)  # false: a Bernoulli on grey levels, whose nll is no -log p(x)
    else:
        report["sigma"] = model.likelihood_sigma  # as learned: far above the data's spread, the latent goes unused
    bits = model.bits_per_dim(report["nll"] if args.nll else -report["elbo"], x)  # from -ELBO: an upper bound
    if bits is not None:
        report["bits_per_dim"] = bits
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{data_config.data} {args.split} ({report['n']} examples), nats per example:")
    if args.nll:
        spread = "" if report["nll_std_error"] is None else f"+- {report['nll_std_error']:.3f} over examples; "
        print(f"  {'nll':<15} {report['nll']:10.3f}  ({spread}k = {args.k})")
    for key in ("elbo", "reconstruction", "kl"):
        print(f"  {key:<15} {report[key]:10.3f}")
    if "sigma" in report:
        learned = "learned" if model.config.learn_sigma else "fixed"
        print(f"  {'sigma':<15} {report['sigma']:10.4g}  ({learned}: the standard deviation of p(x|z))")
    if bits is not None:
        print(f"  {'bits per dim':<15} {bits:10.4f}  ({'from the nll' if args.nll else 'upper bound, from -elbo'})")
    if args.nll:
        if report["active_units"] is not None:
            print(f"  {'active units':<15} {report['active_units']:>10} of {report['latent_size']}")
        memory = "" if report["peak_memory_mb"] is None else f"{report['peak_memory_mb']:.0f} MB: "
        print(f"  ({report['seconds']:.1f} s, peak memory {memory}{report['memory_measure']})")
    if model.config.likelihood == "gaussian":
        values = "pixel values in [0, 1]" if model.config.takes_unit_interval else "real values, in the data's units"
        print(f"  (a Gaussian gives densities of {values}: the elbo may be positive)")
    elif model.config.likelihood == "bernoulli" and not binary:
        print("  (a Bernoulli on grey levels is no distribution of them: these are cross-entropies, not log p(x), "
              "comparable with published figures only on binary data such as binarized-mnist)")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from vaekit.images import model_images, save_image_grid, save_values
    from vaekit.model import load, seeded

    if Path(args.out).suffix.lower() not in (".png", ".npy"):
        raise VaekitError(f"--out is the PNG (or .npy) file to write: give a name ending in .png or .npy, not {args.out}")
    model = load(args.run)
    with seeded(args.seed, model.device):
        samples = model.sample(args.n)
    if Path(args.out).suffix.lower() == ".npy":
        path = save_values(samples, args.out)
    else:
        path = save_image_grid(model_images(model, samples), args.out)
    print(f"vaekit: wrote {path}")
    return 0


def run_explore(args: argparse.Namespace) -> int:
    from vaekit.data import load_data
    from vaekit.explorer import serve, write_explorer
    from vaekit.model import load

    if Path(args.out).suffix.lower() not in (".html", ".htm"):
        raise VaekitError(f"--out is the HTML page to write: give a name ending in .html, not {args.out}")
    if args.port is not None and not args.serve:
        raise VaekitError("--port is the port of --serve: give both, or neither")
    model = load(args.run)
    data = load_data(run_data_config(args.run, args))
    path = write_explorer(model, data, args.out, split=args.split, max_points=args.points, title=Path(args.run).resolve().name)
    print(f"vaekit: wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
    if args.serve:
        serve(path, 8000 if args.port is None else args.port)
    return 0


# -- plot ------------------------------------------------------------------------------------------------

PLOT_HELP = f"""Draw the figures of a trained model as PNG and GIF files. Examples:
  vaekit plot RUN --all --out figures            # every kind, as the original's all_plots
  vaekit plot RUN --kind manifold-ppf --ppf-sizes 30 --kind morph --order 0,1,2,3
The kinds: {', '.join(FIGURE_KINDS)}.
'training' needs a run trained with --snapshots. Data and labels default to the run's own."""


def add_plot_command(commands: Any) -> None:
    from vaekit.latent import Projection
    from vaekit.plots import PlotOptions

    plot = commands.add_parser("plot", help="draw the figures of a trained model (PNG and GIF)", description=PLOT_HELP,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    plot.add_argument("run", metavar="RUN", type=run_folder, help="a run folder written by 'vaekit train'")
    which = plot.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every kind of figure")
    which.add_argument("--kind", action="append", choices=FIGURE_KINDS, metavar="KIND",
                       help="one kind of figure (repeat for more): " + ", ".join(FIGURE_KINDS))
    plot.add_argument("--out", help="folder for the figures (default: RUN/figures)")
    add_config_flags(plot.add_argument_group("data (default: the run's own)"), DataConfig, defaults_shown=False)
    options = plot.add_argument_group("figures")
    default = PlotOptions()  # the flags' defaults are its fields'
    options.add_argument("--n", type=positive_int, default=default.n, help=f"examples per reconstruction figure (default: {default.n})")
    options.add_argument("--projection", choices=get_args(Projection), default=default.projection,
                         help=f"2-D view of a larger latent in the scatter (default: {default.projection})")
    options.add_argument("--dims", type=int_list_flag(2), metavar="I,J", default=default.dims,
                         help="latent dimensions (from 0) for the grids of a latent larger than 2-D "
                         "(default: the top two principal directions of the encoded data)")
    options.add_argument("--grid", type=positive_int, default=default.grid, help=f"side of the linear grid (default: {default.grid})")
    options.add_argument("--range", dest="span", type=range_flag, default=default.span, metavar="LO,HI",
                         help="range of the linear grid on both axes, e.g. --range=-6,6 (default: {:g},{:g})".format(*default.span))
    options.add_argument("--ppf-sizes", type=int_list_flag(), default=default.ppf_sizes, metavar="N,...",
                         help=f"sides of the grids at percentiles of N(0, 1) (default: {','.join(map(str, default.ppf_sizes))})")
    options.add_argument("--steps", type=positive_int, default=default.steps, help=f"images in the interpolation (default: {default.steps})")
    options.add_argument("--spherical", action="store_true", default=default.spherical, help="interpolate on the great circle, not the line")
    options.add_argument("--order", type=int_list_flag(), metavar="LABEL,...", default=default.order,
                         help="labels to morph through (default: every label, highest first: 9,8,...,0; the 20 highest of more)")
    options.add_argument("--frames", type=positive_int, default=default.frames, help=f"morph frames per transition (default: {default.frames})")
    options.add_argument("--split", choices=SPLITS, default=default.split,
                         help=f"split for the example, interpolation, morph and the grids' plane (default: {default.split})")
    options.add_argument("--seed", type=seed_flag, default=default.seed,
                         help=f"random seed for picking examples, the prior's draws and t-SNE's subsample of a split over "
                              f"2000 examples (t-SNE itself starts from PCA: no draws) (default: {default.seed})")
    options.add_argument("--device", choices=DEVICES, default="cpu", help="where to compute (default: cpu)")
    plot.set_defaults(handler=run_plot)


def int_list_flag(length: int | None = None) -> Any:
    """A parser for comma-separated integers, of a fixed count when length is given."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if length is not None and len(values) != length:
            raise argparse.ArgumentTypeError(f"expected {length} comma-separated integers, got {text!r}")
        return tuple(within_int_range(value, text) for value in values)

    return parse


def range_flag(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LO,HI, got {text!r}")
    low, high = (float_flag(part) for part in parts)
    if not low < high:
        raise argparse.ArgumentTypeError(f"expected LO < HI, got {text!r}")
    return low, high


def run_plot(args: argparse.Namespace) -> int:
    from vaekit.data import load_data
    from vaekit.model import load, resolve_device
    from vaekit.plots import KINDS, FigureSkipped, PlotOptions, all_plots

    run_dir = Path(args.run)
    model = load(run_dir, device=resolve_device(args.device))
    data = load_data(run_data_config(run_dir, args))
    options = PlotOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PlotOptions)})  # one flag each
    out = Path(args.out) if args.out else run_dir / "figures"
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        paths = all_plots(model, data, out, options, KINDS if args.all else args.kind, trained_steps(run_dir), run_dir)
    # a kind asked for by name that could not be drawn is an error; one of --all's is a note
    failed = [note for note in notes if issubclass(note.category, FigureSkipped) and not args.all]
    for note in notes:
        print(f"vaekit: {'error' if note in failed else 'note'}: {note.message}", file=sys.stderr)
    for path in paths:
        print(path)
    print(f"vaekit: wrote {len(paths)} figures to {out}", file=sys.stderr)
    return 1 if failed else 0


def trained_steps(run_dir: Path) -> int | None:
    """The training step of the run's model.safetensors (for file names): the last checkpoint's, or with
    --patience that of the best epoch, whose weights the model holds; None if it cannot be read."""
    from safetensors import SafetensorError, safe_open

    from vaekit.checkpoint import CHECKPOINT_FILE
    from vaekit.model import read_run_config
    from vaekit.runs import BEST_FILE

    if not (run_dir / CHECKPOINT_FILE).is_file():  # (a FIFO of that name would hang safetensors, past Ctrl-C)
        return None
    try:
        with safe_open(str(run_dir / CHECKPOINT_FILE), framework="pt") as handle:
            progress = json.loads((handle.metadata() or {})["state"])["progress"]
        if read_run_config(run_dir).get("train", {}).get("patience") and (run_dir / BEST_FILE).exists():
            if progress.get("best_step"):
                return int(progress["best_step"])
            # (earlier checkpoints: the first validation of the best epoch's count is the one at its end)
            return next(int(entry["step"]) for entry in progress["history"] if entry["epoch"] == progress["best_epoch"])
        return int(progress["step"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, StopIteration, VaekitError):
        return None

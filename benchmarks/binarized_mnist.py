"""Test log-likelihood on statically binarized MNIST, beside the published figures.

Trains named configurations on the 50,000 training images, keeps the best epoch on the
validation split (early stopping), and estimates -log p(x) on the test split by importance
sampling (Burda et al. 2015), in nats per example. Every measurement is appended to
benchmarks/results/binarized_mnist.json with its k, split, number of examples, epochs, wall
time and hardware; the Markdown table beside it is rendered from that file alone.

    python benchmarks/binarized_mnist.py train vae_784_500_500_50      # train or resume (Ctrl-C saves)
    python benchmarks/binarized_mnist.py valid vae_784_500_500_50 --k 500 --n 2000
    python benchmarks/binarized_mnist.py test vae_784_500_500_50 --k 5000
    python benchmarks/binarized_mnist.py export vae_784_500_500_50     # its model to benchmarks/checkpoints/
    python benchmarks/binarized_mnist.py table
    python benchmarks/binarized_mnist.py all                            # every step for every configuration

The data folder is ../shared/data (or --data-dir, or $VAEKIT_DATA); runs go to benchmarks/runs/NAME.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import vaekit
from vaekit.config import DataConfig, ModelConfig, TrainConfig, to_dict
from vaekit.checkpoint import CHECKPOINT_FILE, load_checkpoint
from vaekit.errors import VaekitError
from vaekit.evaluate import estimate_nll
from vaekit.model import resolve_device
from vaekit.runs import BEST_FILE, load_weights

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "binarized_mnist.json"
TABLE = ROOT / "results" / "binarized_mnist.md"
RUNS = ROOT / "runs"
CHECKPOINTS = ROOT / "checkpoints"  # the measured models, committed so that anyone can evaluate them again
DEFAULT_DATA = Path(os.environ.get("VAEKIT_DATA", ROOT.parent.parent / "shared" / "data"))


@dataclass(frozen=True)
class Benchmark:
    """One named configuration and the published figure it is compared with."""

    description: str
    model: ModelConfig
    train: TrainConfig
    published: str
    start_from: str | None = None  # a configuration whose best weights so far (its best.safetensors) this one starts from


CONFIGS = {
    "vae_784_500_500_50": Benchmark(
        "(a) the original vae-tf architecture, plain VAE (ELU, ELBO, Adam, plateau decay, early stopping)",
        ModelConfig(architecture=(784, 500, 500, 50)),
        TrainConfig(epochs=1000, batch_size=100, lr=1e-3, lr_schedule="plateau", lr_patience=10, patience=30),
        "89.78 (Pythae VAE)",
    ),
    "iwae_k50_784_200_200_50_tanh": Benchmark(
        "(b) Burda et al.'s one-stochastic-layer network, tanh, trained with the IWAE bound, k = 50, their schedule",
        ModelConfig(architecture=(784, 200, 200, 50), nonlinearity="tanh"),
        TrainConfig(epochs=3280, batch_size=20, lr=1e-3, objective="iwae", iwae_k=50, lr_schedule="burda", patience=100),
        "87.10 (Burda et al. 2015, appendix, IWAE k = 50, one stochastic layer)",
    ),
    "vampprior_784_300_300_40": Benchmark(
        "(c) VampPrior, K = 500 pseudo-inputs, 40 latent units, ELU 300-300 (the paper: gated layers, "
        "lr 5e-4, warm-up over 100 epochs; here lr 1e-3 and warm-up over 10 epochs, for short runs)",
        ModelConfig(architecture=(784, 300, 300, 40), prior="vamp", pseudo_inputs=500),
        TrainConfig(epochs=2000, batch_size=100, lr=1e-3, warmup_epochs=10, lr_schedule="plateau", lr_patience=10, patience=30),
        "85.57 (Tomczak & Welling 2018, VAE + VampPrior)",
    ),
    "vampprior_784_300_300_40_iwae_k10": Benchmark(
        "(d) the VampPrior model (c), from (c)'s best weights when this run began, trained on with the IWAE bound, k = 10 "
        "(a fresh Adam, no warm-up); same single stochastic layer",
        ModelConfig(architecture=(784, 300, 300, 40), prior="vamp", pseudo_inputs=500),
        TrainConfig(epochs=2000, batch_size=100, lr=2.5e-4, objective="iwae", iwae_k=10, lr_schedule="plateau", lr_patience=10, patience=30),
        "85.57 (Tomczak & Welling 2018, VAE + VampPrior)",
        start_from="vampprior_784_300_300_40",
    ),
}


# -- steps ----------------------------------------------------------------------------------------------


def train_step(name: str, data: vaekit.Splits, data_config: DataConfig, epochs: int | None, device: str,
               precision: str = "fp32", threads: int | None = None) -> None:
    """Train configuration `name`, resuming its run folder if it has a checkpoint; record epochs and time."""
    bench = CONFIGS[name]
    run_dir = RUNS / name
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(bench.train, epochs=epochs or bench.train.epochs, device=device, progress=sys.stderr.isatty(),
                                 precision=precision, threads=threads)
    torch.manual_seed(config.seed)  # the initial weights (a resumed run replaces them from its checkpoint)
    model = vaekit.VAE(config=dataclasses.replace(bench.model, image_shape=data.image_shape))
    started_from = None
    if bench.start_from and not (run_dir / CHECKPOINT_FILE).exists():
        started_from = start_from_best(model, bench.start_from)
        print(f"{name}: starting from {bench.start_from}'s best weights (epoch {started_from['epoch']})", file=sys.stderr)
    new_run = not (run_dir / CHECKPOINT_FILE).exists()
    if new_run and name in load_results()["configs"]:
        print(f"{name}: a new run (no checkpoint in {run_dir}): its record replaces the one in {RESULTS.name}", file=sys.stderr)
    started = time.perf_counter()
    result = vaekit.train(model, data, config, data_config, run_dir=run_dir)
    progress = result.progress
    record = {} if new_run else load_results()["configs"].get(name, {})  # one model's figures only, never two models' mixed
    record.setdefault("sessions", []).append(
        {"until_epoch": progress.epoch, "seconds": time.perf_counter() - started, "hardware": hardware(device),
         "precision": precision, "interrupted": result.interrupted}
    )
    if started_from:
        record["started_from"] = started_from
    record.update(
        description=bench.description,
        model=to_dict(model.config),
        train=to_dict(config),
        epochs_trained=progress.epoch,
        best_epoch=progress.best_epoch,
        best_valid_cost=progress.best_valid_cost,
        valid_cost_means="-IWAE bound (k = %d)" % config.iwae_k if config.objective == "iwae" else "-ELBO",
        published=bench.published,
    )
    save_result(name, record)


def start_from_best(model: vaekit.VAE, other: str) -> dict[str, Any]:
    """Load another configuration's best-on-validation weights so far into model; say which epoch they are from."""
    other_dir = RUNS / other
    _, state = load_checkpoint(other_dir / CHECKPOINT_FILE)
    load_weights(other_dir / BEST_FILE, model)
    return {"config": other, "epoch": state["progress"]["best_epoch"], "valid_cost": state["progress"]["best_valid_cost"]}


def nll_step(name: str, split: str, data: vaekit.Splits, k: int, n: int | None, device: str, label: str | None = None) -> None:
    """Estimate -log p(x) with k importance samples on the first n examples of a split; record it as `label` (default: the split).

    The model is the run's in benchmarks/runs/NAME, or where there is none (a fresh clone), the exported one in
    benchmarks/checkpoints/NAME.
    """
    run_dir = RUNS / name if (RUNS / name / "model.safetensors").is_file() else CHECKPOINTS / name
    if not (run_dir / "model.safetensors").is_file():
        raise VaekitError(f"{name} has no trained model in {RUNS / name} or {CHECKPOINTS / name}: train it first")
    model = vaekit.load(run_dir, device=resolve_device(device))
    x = data[split].x[:n] if n else data[split].x
    print(f"{name}: {split} -log p(x), k = {k}, {len(x)} examples", file=sys.stderr)
    report = estimate_nll(model, x, k=k, progress=sys.stderr.isatty())
    record = load_results()["configs"].setdefault(name, {})
    report.update(
        split=split,
        hardware=hardware(device),
        weights=str((run_dir / "model.safetensors").relative_to(ROOT.parent)),
        weights_after_epochs=record.get("epochs_trained"),  # the run's model.safetensors when measured
        weights_best_epoch=record.get("best_epoch"),
    )
    record[label or split] = report
    save_result(name, record)
    print(f"{name}: {split} nll {report['nll']:.2f} nats (k = {k}, n = {len(x)}), elbo {report['elbo']:.2f}", file=sys.stderr)


def export_step(name: str) -> None:
    """Copy a run's model (config.json and the best-on-validation model.safetensors, not the optimizer) to
    benchmarks/checkpoints/NAME: `vaekit.load` reads it, and `vaekit evaluate` takes it as a run folder."""
    target = CHECKPOINTS / name
    if not (RUNS / name / "model.safetensors").is_file():
        raise VaekitError(f"{name} has no run to export in {RUNS / name}: train it first")
    target.mkdir(parents=True, exist_ok=True)
    for file in ("config.json", "model.safetensors"):
        shutil.copy2(RUNS / name / file, target / file)
    print(f"{name}: wrote {target}", file=sys.stderr)


# -- results --------------------------------------------------------------------------------------------


def load_results() -> dict[str, Any]:
    if RESULTS.is_file():
        return json.loads(RESULTS.read_text())
    return {"units": "nats per example", "dataset": "binarized MNIST (Larochelle & Murray 2011), static", "configs": {}, "notes": []}


def save_result(name: str, record: dict[str, Any]) -> None:
    results = load_results()
    results["configs"][name] = record
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    TABLE.write_text(render_table(results))


def render_table(results: dict[str, Any]) -> str:
    """The Markdown table, from the JSON record alone: nothing in it is typed by hand."""
    lines = [
        "# Binarized MNIST: test negative log-likelihood",
        "",
        "-log p(x) in nats per example (lower is better), estimated by importance sampling with k samples",
        "(Burda et al. 2015) on the static binarization of Larochelle & Murray (2011). Models are selected",
        "on the validation split (early stopping). Written by `benchmarks/binarized_mnist.py` from",
        "`binarized_mnist.json`; every figure was measured with the k, split, examples and epochs shown.",
        "± is the standard error over examples. The ELBO (a bound on log p(x), so negative) is averaged over",
        "the same k draws. Epochs: trained (best on validation, whose weights are the run's model.safetensors).",
        "",
        "| configuration | test NLL | test ELBO | valid NLL | epochs (best) | train time | active units | published |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, record in results["configs"].items():
        lines.append(
            f"| {name} | {nll_cell(record.get('test'))} | {elbo_cell(record.get('test'))} | {nll_cell(record.get('valid'))} "
            f"| {record.get('epochs_trained', '-')} ({record.get('best_epoch', '-')}) | {hours(record)} "
            f"| {units_cell(record.get('test') or record.get('valid'))} | {record.get('published', '')} |"
        )
    lines += ["", "## Configurations", ""]
    for name, record in results["configs"].items():
        lines.append(f"- **{name}**: {record.get('description', '')}.")
        if record.get("started_from"):
            start = record["started_from"]
            lines.append(f"  Started from {start['config']}'s best weights, epoch {start['epoch']} "
                         f"(validation cost {start['valid_cost']:.2f}); its epochs count from there.")
        train = record.get("train", {})
        if train:
            keys = ["objective", "batch_size", "lr", "lr_schedule", "patience"]
            keys += ["iwae_k"] if train.get("objective") == "iwae" else []
            keys += ["warmup_epochs"] if train.get("warmup_epochs") else []
            lines.append("  " + ", ".join(f"{key} {train[key]}" for key in keys if key in train) + ".")
        sessions = record.get("sessions", [])
        if sessions:
            lines.append("  Trained in sessions: " + "; ".join(session_text(session) for session in sessions) + ".")
    extra = [(name, label, report) for name, record in results["configs"].items() for label, report in record.items()
             if isinstance(report, dict) and "nll" in report and label not in ("valid", "test")]
    if extra:
        lines += ["", "## Further measurements", ""]
        lines += [f"- {name}, {label}: {report['split']} NLL {nll_cell(report)}, ELBO {report['elbo']:.2f}" for name, label, report in extra]
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def nll_cell(report: dict[str, Any] | None) -> str:
    if not report:
        return "not measured"
    return f"{report['nll']:.2f} ± {report['nll_std_error']:.2f} (k = {report['k']}, n = {report['n']})"


def elbo_cell(report: dict[str, Any] | None) -> str:
    return f"{report['elbo']:.2f}" if report else "-"


def units_cell(report: dict[str, Any] | None) -> str:
    return f"{report['active_units']} / {report['latent_size']}" if report else "-"


def session_text(session: dict[str, Any]) -> str:
    """'to epoch 35, 0.53 h, fp32, AMD EPYC, ...': one training session of a run."""
    return (f"to epoch {session['until_epoch']}, {session['seconds'] / 3600:.2f} h, {session.get('precision', 'fp32')}, "
            f"{session['hardware']}")


def hours(record: dict[str, Any]) -> str:
    seconds = sum(session["seconds"] for session in record.get("sessions", []))
    return f"{seconds / 3600:.2f} h" if seconds else "-"


def hardware(device: str) -> str:
    """The machine in words: the GPU's name, or the CPU's model and the threads torch uses."""
    if resolve_device(device).type == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    model = platform.processor() or "CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


# -- command line ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["train", "valid", "test", "export", "table", "note", "all"])
    parser.add_argument("names", nargs="*", help=f"configurations (default: all of {', '.join(CONFIGS)}); for note: the text")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with binarized_mnist_*.amat.gz")
    parser.add_argument("--epochs", type=int, help="train: stop after this many epochs in all (default: the configuration's)")
    parser.add_argument("--k", type=int, help="importance samples (default: 500 for valid, 5000 for test)")
    parser.add_argument("--n", type=int, help="only the first n examples of the split (default: valid 2000, test all)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--label", help="valid/test: record the measurement under this name instead of the split's")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="train: fp32 or bf16 mixed precision (this session)")
    parser.add_argument("--threads", type=int, help="train: CPU threads for PyTorch (default: one per core)")
    args = parser.parse_args(argv)
    if args.step == "note":
        results = load_results()
        results["notes"].append(" ".join(args.names))
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        TABLE.write_text(render_table(results))
        return 0
    if args.step == "table":
        TABLE.write_text(render_table(load_results()))
        return 0
    names = args.names or list(CONFIGS)
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    if args.step == "export":
        for name in names:
            export_step(name)
        return 0
    data_config = DataConfig(data="binarized-mnist", data_dir=str(args.data_dir))
    data = vaekit.load_data(data_config)
    for name in names:
        if args.step in ("train", "all"):
            train_step(name, data, data_config, args.epochs, args.device, args.precision, args.threads)
        if args.step in ("valid", "all"):
            nll_step(name, "valid", data, args.k or 500, args.n or 2000, args.device, args.label)
        if args.step in ("test", "all"):
            nll_step(name, "test", data, args.k or 5000, args.n, args.device, args.label)
        if args.step == "all":
            export_step(name)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VaekitError as error:
        sys.exit(f"binarized_mnist.py: error: {error}")

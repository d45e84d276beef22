"""Training throughput: vaekit's trainer against a textbook PyTorch loop and the matrix-product bound.

On statically binarized MNIST (50,000 training images) with the 784-500-500-50 VAE at batch 128,
one process times, epoch by epoch and in turn (so machine noise hits all alike):

  plain       a textbook loop: an nn.Sequential MLP of the same architecture, randperm minibatches
              from an in-memory tensor, torch.optim.Adam (its defaults), loss.item() every step;
  vaekit      vaekit's own trainer (`vaekit.train`, resumed for one more epoch each round), fp32;
              for this model it takes its hand-written gradient (`vaekit.fused`);
  vaekit-bf16 the same with --precision bf16 (mixed precision, float32 weights and loss);
  vaekit-autograd, vaekit-autograd-bf16
              the same two with --no-fused: the gradient through autograd, as for any other model;
  vaekit-compile, vaekit-bf16-compile
              fp32 and bf16 with --compile: the hand-written gradient through torch.compile
              (compiled in the warm-up epoch, which the medians leave out);
  bound       the forward and backward matrix products of the same steps alone, at the same
              shapes, in fp32 and in bf16: what no trainer of this model can beat.

It prints examples/s (medians over the epochs after the warm-up), the speed ratios to the plain
loop (each the median over rounds of the ratio within a round, whose epochs ran minutes apart at most,
so that slow spells of a shared machine cancel), vaekit's efficiency (bound time / epoch time), and the validation -ELBO (nats per example)
after the last epoch. Then it times the importance-sampled log-likelihood (k=5000), as it is and with --compile, on a few
validation images against that estimator's own matrix-product bound. The last line printed is
one JSON object with every figure, the machine load (os.getloadavg) and the thread count.

    python benchmarks/throughput.py                    # 10 epochs, 1 of them warm-up (~7 min on 2 cores)
    python benchmarks/throughput.py --epochs 3 --nll-examples 10   # a quick look
    python benchmarks/throughput.py --device cuda      # data, model and bound on the GPU

The data folder is ../shared/data (or --data-dir, or $VAEKIT_DATA). vaekit's epoch time is the
trainer's own `progress.train_seconds` (its steps, without the validation and checkpoint at the
epoch's end, which the plain loop does not do either); the trainer's whole wall time per epoch,
those included, is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import vaekit
from vaekit.cli import keep_freed_memory
from vaekit.config import DataConfig, TrainConfig
from vaekit.evaluate import MAX_ROWS, importance_sampled_log_px
from vaekit.train import resolve_device

ARCHITECTURE = (784, 500, 500, 50)
BATCH = 128
LR = 1e-3
SEED = 0
DEFAULT_DATA = Path(os.environ.get("VAEKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


# -- (a) the textbook loop ------------------------------------------------------------------------------


class PlainVAE(nn.Module):
    """The pytorch/examples VAE, at vaekit's architecture: ELU MLPs, two linear heads, logits out."""

    def __init__(self, sizes: tuple[int, ...]):
        super().__init__()
        *hidden, latent = sizes
        self.encoder = nn.Sequential(*[m for a, b in zip(hidden[:-1], hidden[1:]) for m in (nn.Linear(a, b), nn.ELU())])
        self.mu = nn.Linear(hidden[-1], latent)
        self.log_sigma = nn.Linear(hidden[-1], latent)
        back = list(reversed(sizes))
        layers = [m for a, b in zip(back[:-2], back[1:-1]) for m in (nn.Linear(a, b), nn.ELU())]
        self.decoder = nn.Sequential(*layers, nn.Linear(back[-2], back[-1]))

    def loss(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """-ELBO per example, averaged over the batch (Kingma & Welling 2014, appendix B)."""
        h = self.encoder(x)
        mu, log_sigma = self.mu(h), self.log_sigma(h)
        z = mu + log_sigma.exp() * torch.randn(mu.shape, generator=generator, device=x.device)
        reconstruction = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        kl = 0.5 * (mu.pow(2) + (2 * log_sigma).exp() - 1 - 2 * log_sigma).sum()
        return (reconstruction + kl) / len(x)


class PlainLoop:
    name = "plain"

    def __init__(self, x_train: torch.Tensor, x_valid: torch.Tensor, device: torch.device):
        torch.manual_seed(SEED)
        self.model = PlainVAE(ARCHITECTURE).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.generator = torch.Generator(device=device).manual_seed(SEED)
        self.x_train, self.x_valid, self.device = x_train, x_valid, device

    def epoch(self) -> float:
        started = time.perf_counter()
        order = torch.randperm(len(self.x_train), generator=self.generator, device=self.device)
        for start in range(0, len(order), BATCH):
            loss = self.model.loss(self.x_train[order[start : start + BATCH]], self.generator)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()  # the textbook loop logs every step
        return time.perf_counter() - started

    def valid_cost(self) -> float:
        """-ELBO on the validation split, nats per example (one z per example, as vaekit's)."""
        generator = torch.Generator(device=self.device).manual_seed(SEED)
        with torch.no_grad():
            costs = [self.model.loss(x, generator).item() * len(x) for x in self.x_valid.split(1000)]
        return sum(costs) / len(self.x_valid)


# -- (b) vaekit's trainer -----------------------------------------------------------------------------------


class VaekitTrainer:
    """vaekit.train itself, resumed for one more epoch per round from its own checkpoint."""

    def __init__(self, data: Any, precision: str, device: torch.device, out: Path, fused: bool = True, compile: bool = False):
        self.name = "-".join(["vaekit"] + ([] if fused else ["autograd"]) + ([] if precision == "fp32" else [precision])
                             + (["compile"] if compile else []))
        self.data, self.precision, self.device, self.out, self.fused, self.compile = data, precision, device, out, fused, compile
        self.run_dir: Path | None = None
        self.epochs = 0
        self.train_seconds = 0.0
        self.wall: list[float] = []
        self.last_valid_cost = math.nan

    def epoch(self) -> float:
        self.epochs += 1
        config = TrainConfig(epochs=self.epochs, batch_size=BATCH, lr=LR, seed=SEED, device=self.device.type,
                             out=str(self.out), progress=False, precision=self.precision, fused=self.fused,
                             compile=self.compile)
        torch.manual_seed(SEED)  # the initial weights; a resumed run loads its checkpoint over them
        started = time.perf_counter()
        result = vaekit.train(vaekit.VAE(ARCHITECTURE), self.data, config, run_dir=self.run_dir)
        self.wall.append(time.perf_counter() - started)
        self.run_dir = result.run_dir
        self.last_valid_cost = result.progress.history[-1]["valid_cost"]
        seconds, self.train_seconds = result.progress.train_seconds - self.train_seconds, result.progress.train_seconds
        return seconds

    def valid_cost(self) -> float:
        return self.last_valid_cost


# -- the bound: the step's matrix products alone ------------------------------------------------------------


def linear_shapes(sizes: tuple[int, ...]) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of the VAE: encoder, its two heads, decoder."""
    *hidden, latent = sizes
    encoder = list(zip(hidden[:-1], hidden[1:])) + [(hidden[-1], latent)] * 2
    back = list(reversed(sizes))
    return encoder + list(zip(back[:-1], back[1:]))


class MatmulBound:
    """Times the matrix products of training steps: per linear layer x W^T forward, and backward
    g^T x (weight gradient) and g W (input gradient; none for the first layer, whose input is data)."""

    def __init__(self, n_examples: int, dtype: torch.dtype, device: torch.device):
        self.name = "bound" if dtype == torch.float32 else f"bound-{str(dtype).removeprefix('torch.')}"
        self.n_examples, self.device = n_examples, device

        def make(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, device=device).mul_(0.01).to(dtype)

        self.layers = [(make(BATCH, n_in), make(n_out, n_in), make(BATCH, n_out), index > 0)
                       for index, (n_in, n_out) in enumerate(linear_shapes(ARCHITECTURE))]

    def step(self) -> None:
        for x, w, _, _ in self.layers:
            torch.mm(x, w.t())
        for x, w, grad_out, needs_input_grad in reversed(self.layers):
            torch.mm(grad_out.t(), x)
            if needs_input_grad:
                torch.mm(grad_out, w)

    def epoch(self) -> float:
        started = time.perf_counter()
        for _ in range(math.ceil(self.n_examples / BATCH)):
            self.step()
        return synchronized(started, self.device) * self.n_examples / (math.ceil(self.n_examples / BATCH) * BATCH)


def synchronized(started: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


# -- the importance-sampled log-likelihood --------------------------------------------------------------


def nll_benchmark(model: vaekit.VAE, x: torch.Tensor, k: int, repeats: int) -> dict[str, Any]:
    """Time vaekit's log p(x) estimator at k samples on x, as it is and with --compile, against the matrix
    products it has to do. The compiled estimator is compiled before the timing (5-10 s, once per run)."""
    max_rows = MAX_ROWS
    device = model.device
    importance_sampled_log_px(model, x, k, max_rows=max_rows, compile=True)  # all of x: every chunk shape it will meet
    times: dict[str, list[float]] = {"eager": [], "compiled": [], "bound": []}
    for _ in range(repeats):  # in turn, as the training contenders
        for name in ("eager", "compiled"):
            started = time.perf_counter()
            result = importance_sampled_log_px(model, x, k, max_rows=max_rows, compile=name == "compiled")
            times[name].append(synchronized(started, device))
        times["bound"].append(nll_matmul_bound(len(x), k, max_rows, device))
    seconds = {name: statistics.median(values) for name, values in times.items()}
    return {"nll": -result.log_px.mean().item(), "k": k, "n": len(x), "seconds": seconds["eager"],
            "compiled_seconds": seconds["compiled"], "bound_seconds": seconds["bound"],
            "vs_bound": seconds["eager"] / seconds["bound"], "compiled_vs_bound": seconds["compiled"] / seconds["bound"],
            "max_rows": max_rows}


def nll_matmul_bound(n: int, k: int, max_rows: int, device: torch.device) -> float:
    """Seconds for the estimator's products alone: encoder on each batch of examples, decoder on its k codes,
    chunked as `evaluate.importance_sampled_log_px` does (examples max_rows // k at a time, codes max_rows at a time)."""
    k_chunk = min(k, max_rows)
    examples_per_batch = max(1, max_rows // k_chunk)
    *hidden, latent = ARCHITECTURE
    encoder = linear_shapes(ARCHITECTURE)[: len(hidden)]
    decoder = linear_shapes(ARCHITECTURE)[len(hidden) + 1 :]
    weights = {shape: torch.randn(shape[1], shape[0], device=device) * 0.01 for shape in encoder + decoder}
    inputs: dict[int, torch.Tensor] = {}

    def forward(shapes: list[tuple[int, int]], rows: int) -> None:
        for n_in, n_out in shapes:
            if (rows, n_in) not in inputs:
                inputs[(rows, n_in)] = torch.randn(rows, n_in, device=device)
            torch.mm(inputs[(rows, n_in)], weights[(n_in, n_out)].t())

    started = time.perf_counter()
    for first in range(0, n, examples_per_batch):
        batch = min(examples_per_batch, n - first)
        forward(encoder, batch)
        for done in range(0, k, k_chunk):
            forward(decoder, min(k_chunk, k - done) * batch)
    return synchronized(started, device)


# -- running it --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the vaekit command does
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    data = vaekit.load_data(DataConfig(data="binarized-mnist", data_dir=str(args.data_dir)))
    x_train, x_valid = data.train.x.to(device), data.valid.x.to(device)
    n = len(x_train)
    with tempfile.TemporaryDirectory(prefix="vaekit-throughput-") as out:
        contenders: list[Any] = [
            PlainLoop(x_train, x_valid, device),
            VaekitTrainer(data, "fp32", device, Path(out)),
            VaekitTrainer(data, "bf16", device, Path(out)),
            VaekitTrainer(data, "fp32", device, Path(out), fused=False),
            VaekitTrainer(data, "bf16", device, Path(out), fused=False),
            VaekitTrainer(data, "fp32", device, Path(out), compile=True),
            VaekitTrainer(data, "bf16", device, Path(out), compile=True),
            MatmulBound(n, torch.float32, device),
            MatmulBound(n, torch.bfloat16, device),
        ]
        times: dict[str, list[float]] = {c.name: [] for c in contenders}
        cpu_share: dict[str, list[float]] = {c.name: [] for c in contenders}
        loads = []
        for round_index in range(args.epochs):
            shift = round_index % len(contenders)  # a different order each round
            for contender in contenders[shift:] + contenders[:shift]:
                cpu_started, wall_started = time.process_time(), time.perf_counter()
                times[contender.name].append(contender.epoch())
                cpu_share[contender.name].append((time.process_time() - cpu_started) / (time.perf_counter() - wall_started))
            loads.append(os.getloadavg()[0])
            summary = ", ".join(f"{name} {values[-1]:.2f}s" for name, values in times.items())
            print(f"epoch {round_index + 1}/{args.epochs}: {summary} (load {loads[-1]:.1f})", file=sys.stderr, flush=True)
        valid = {c.name: c.valid_cost() for c in contenders if hasattr(c, "valid_cost")}
        trainer_wall = {c.name: c.wall for c in contenders if isinstance(c, VaekitTrainer)}
        model = vaekit.load(contenders[1].run_dir, device=device)
    nll = nll_benchmark(model, x_valid[: args.nll_examples], args.nll_k, args.nll_repeats) if args.nll_examples else {"nll": None, "note": "skipped (--nll-examples 0)"}
    return summarize(args, device, n, times, cpu_share, valid, trainer_wall, nll, load_before, loads)


def summarize(args, device, n, times, cpu_share, valid, trainer_wall, nll, load_before, loads) -> dict[str, Any]:
    measured = slice(args.warmup, None)
    epoch = {name: statistics.median(values[measured]) for name, values in times.items()}
    best = {name: min(values[measured]) for name, values in times.items()}  # noise only ever adds time

    def ratio(slower: str, faster: str) -> float:
        """How many times faster `faster` ran than `slower`: the median of the ratios within each round."""
        return round(statistics.median(a / b for a, b in zip(times[slower][measured], times[faster][measured])), 3)

    return {
        "benchmark": "throughput",
        "architecture": list(ARCHITECTURE),
        "batch_size": BATCH,
        "examples_per_epoch": n,
        "epochs": args.epochs,
        "warmup_epochs": args.warmup,
        "device": describe(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_avg_1min_before": round(load_before[0], 2),
        "load_avg_1min_per_epoch": [round(v, 2) for v in loads],
        "epoch_seconds": {name: round(v, 3) for name, v in epoch.items()},
        "epoch_seconds_best": {name: round(v, 3) for name, v in best.items()},
        "epoch_seconds_all": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "cpu_seconds_per_wall_second": {name: round(statistics.median(v[measured]), 2) for name, v in cpu_share.items()},
        "examples_per_second": {name: round(n / v) for name, v in epoch.items()},
        "trainer_wall_seconds_per_epoch": {name: round(statistics.median(v[measured]), 3) for name, v in trainer_wall.items()},
        "seconds_per_60000_examples": {name: round(v * 60000 / n, 3) for name, v in epoch.items()},
        "valid_cost_nats": {name: round(v, 3) for name, v in valid.items()},
        "ratios_vs_plain": {name: ratio("plain", name) for name in times},
        "ratio_vs_plain": ratio("plain", "vaekit"),
        "efficiency_vs_matmul_bound": ratio("bound", "vaekit"),
        "bf16_ratio_vs_plain": ratio("plain", "vaekit-bf16"),
        "bf16_efficiency_vs_bf16_bound": ratio("bound-bfloat16", "vaekit-bf16"),
        "fused_speedup_vs_autograd": {"fp32": ratio("vaekit-autograd", "vaekit"), "bf16": ratio("vaekit-autograd-bf16", "vaekit-bf16")},
        "bf16_compile_ratio_vs_plain": ratio("plain", "vaekit-bf16-compile"),
        "compile_efficiency_vs_matmul_bound": ratio("bound", "vaekit-compile"),
        "compile_speedup": {"fp32": ratio("vaekit", "vaekit-compile"), "bf16": ratio("vaekit-bf16", "vaekit-bf16-compile")},
        "best_epoch_ratios": {"ratio_vs_plain": round(best["plain"] / best["vaekit"], 3),
                              "efficiency_vs_matmul_bound": round(best["bound"] / best["vaekit"], 3),
                              "bf16_ratio_vs_plain": round(best["plain"] / best["vaekit-bf16"], 3)},
        "elbo_gap_vs_plain_nats": round(valid["vaekit"] - valid["plain"], 3),
        "bf16_elbo_gap_nats": round(valid["vaekit-bf16"] - valid["vaekit"], 3),
        "nll_eval": nll,
        "nll_eval_vs_bound": None if nll.get("vs_bound") is None else round(nll["vs_bound"], 3),
        "nll_eval_compiled_vs_bound": None if nll.get("vs_bound") is None else round(nll["compiled_vs_bound"], 3),
    }


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def print_table(result: dict[str, Any]) -> None:
    rows = [("plain", "textbook PyTorch loop, fp32"), ("vaekit", "vaekit trainer, fp32"),
            ("vaekit-bf16", "vaekit trainer, bf16 mixed precision"), ("vaekit-autograd", "vaekit --no-fused (autograd), fp32"),
            ("vaekit-autograd-bf16", "vaekit --no-fused (autograd), bf16"),
            ("vaekit-compile", "vaekit --compile, fp32"), ("vaekit-bf16-compile", "vaekit --compile, bf16"), ("bound", "matrix products alone, fp32"),
            ("bound-bfloat16", "matrix products alone, bf16")]
    epoch = result["epoch_seconds"]
    print(f"{result['architecture']} batch {result['batch_size']}, {result['examples_per_epoch']} examples/epoch, "
          f"{result['device']}, {result['threads']} threads, load {result['load_avg_1min_before']} -> "
          f"{result['load_avg_1min_per_epoch'][-1]}; medians of {result['epochs'] - result['warmup_epochs']} epochs")
    print(f"{'':38} {'s/epoch':>8} {'examples/s':>11} {'vs plain':>9} {'best s/epoch':>13} {'-ELBO valid':>12}")
    for name, label in rows:
        cost = result["valid_cost_nats"].get(name)
        print(f"{label:38} {epoch[name]:8.2f} {result['examples_per_second'][name]:11,} {result['ratios_vs_plain'][name]:8.2f}x "
              f"{result['epoch_seconds_best'][name]:13.2f} {'' if cost is None else f'{cost:12.2f}'}")
    print("vs plain and the efficiencies: medians over rounds of the ratio within a round")
    print(f"vaekit efficiency (bound / epoch): fp32 {result['efficiency_vs_matmul_bound']:.2f} "
          f"({result['compile_efficiency_vs_matmul_bound']:.2f} with --compile), "
          f"bf16 {result['bf16_efficiency_vs_bf16_bound']:.2f}; hand-written gradient against autograd: "
          f"{result['fused_speedup_vs_autograd']['fp32']:.2f}x fp32, {result['fused_speedup_vs_autograd']['bf16']:.2f}x bf16; "
          f"--compile against eager: {result['compile_speedup']['fp32']:.2f}x fp32, {result['compile_speedup']['bf16']:.2f}x bf16")
    print(f"trainer wall per epoch with validation and checkpoint: {result['trainer_wall_seconds_per_epoch']}")
    print(f"-ELBO after {result['epochs']} epochs: vaekit - plain {result['elbo_gap_vs_plain_nats']:+.2f} nats, "
          f"bf16 - fp32 {result['bf16_elbo_gap_nats']:+.2f} nats")
    nll = result["nll_eval"]
    if nll.get("vs_bound") is None:
        print(f"NLL evaluation: {nll.get('note')}")
    else:
        print(f"NLL evaluation (k={nll['k']}, {nll['n']} examples): {nll['seconds']:.2f} s, with --compile "
              f"{nll['compiled_seconds']:.2f} s; matrix products alone {nll['bound_seconds']:.2f} s: "
              f"{nll['vs_bound']:.2f}x and {nll['compiled_vs_bound']:.2f}x the bound")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with binarized_mnist_*.amat.gz")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each contender, warm-up included (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="epochs left out of the medians (default 1)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's own)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--nll-examples", type=int, default=20, help="validation images for the NLL timing; 0 skips it")
    parser.add_argument("--nll-k", type=int, default=5000)
    parser.add_argument("--nll-repeats", type=int, default=3)
    parser.add_argument("--json-out", type=Path, help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.epochs:
        parser.error("--warmup must be at least 0 and less than --epochs")
    result = run(args)
    print_table(result)
    print_json(result, args.json_out)


def print_json(result: dict[str, Any], json_out: Path | None) -> None:
    """Print the result as one JSON line, the benchmark's last, and also write it to json_out if given."""
    if json_out:
        json_out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

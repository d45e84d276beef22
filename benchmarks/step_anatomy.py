"""Where a training step's time goes: vaekit's step, part by part, against the matrix-product bound.

throughput.py says how far an epoch is from the bound; this says why. For the 784-500-500-50 VAE at
batch 128 it runs vaekit's training step (`train.train_step`: the hand-written gradient, which
checks and clips each gradient as it writes it, then Adam) in fp32, in bf16 mixed precision, and in
bf16 with --compile, and times

  step          the whole step, as the trainer takes it;
  parts         the two calls train_step makes, each timed on its own (their sum is a little
                more than the step, by the timers' own cost);
  products      the self time of every matrix product inside the gradient's computation, from
                torch.profiler over the same steps;
  bound         the same products alone, back to back on the same tensors (throughput.MatmulBound);
  bandwidth     the memory bandwidth of a large copy, and from it the least time Adam's step can take:
                it reads the weights, gradients and both moments and writes back three of them,
                7 x 4 bytes per weight, all of it once per step however the step is written.

In rounds, the contenders in turn, with medians over the rounds. The products inside the step
against the bound says whether the step's other work (which passes through the caches between two
products) slows the products themselves. Its last line is one JSON object.

    python benchmarks/step_anatomy.py                 # about three minutes on 2 cores
    python benchmarks/step_anatomy.py --device cuda   # the parts time the GPU's work only where they synchronize
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import vaekit
from vaekit.cli import keep_freed_memory
from vaekit.config import TrainConfig
from vaekit.distributed import Cluster, SharedNoise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import ARCHITECTURE, BATCH, LR, MatmulBound, print_json, synchronized

train = importlib.import_module("vaekit.train")  # the module: `vaekit.train` is also the function
PARTS = ("checked_gradients", "step_if_finite")
CONTENDERS = {"fp32": dict(precision="fp32"), "bf16": dict(precision="bf16"), "bf16-compile": dict(precision="bf16", compile=True)}
PRODUCTS = ("aten::mm", "aten::addmm")


class Step:
    """vaekit's training step on fixed random binary batches: it times the step whole, part by part, or profiled."""

    def __init__(self, device: torch.device, examples: int = 50 * BATCH, **config: object):
        """config: TrainConfig's fields beyond the benchmark's own (precision, compile, clip)."""
        torch.manual_seed(0)
        self.model = vaekit.VAE(ARCHITECTURE).to(device)
        self.config = TrainConfig(batch_size=BATCH, lr=LR, device=device.type, **config)
        self.batch_cost = train.make_batch_cost(self.model, self.config, Cluster(), device)
        self.optimizer = train.make_optimizer(self.model, self.config)
        self.noise = SharedNoise(0, device)
        self.batches = (torch.rand(examples, ARCHITECTURE[0], device=device) > 0.5).float().split(BATCH)
        self.device, self.steps = device, 0

    def next_batch(self) -> torch.Tensor:
        self.steps += 1
        return self.batches[self.steps % len(self.batches)]

    def run(self, steps: int) -> float:
        """Seconds per step of `steps` training steps, as the trainer takes them."""
        started = time.perf_counter()
        for _ in range(steps):
            x = self.next_batch()
            with self.noise.batch(self.model, BATCH, slice(None)):
                train.train_step(self.batch_cost, self.optimizer, x, BATCH, 1.0, self.config)
        return synchronized(started, self.device) / steps

    def run_parts(self, steps: int) -> dict[str, float]:
        """Seconds per step in each of the calls train.train_step makes, in its order (keep the two alike)."""
        seconds = dict.fromkeys(PARTS, 0.0)

        @contextmanager
        def timing(part: str) -> Iterator[None]:
            started = time.perf_counter()
            yield
            seconds[part] += synchronized(started, self.device)

        for _ in range(steps):
            x = self.next_batch()
            with timing("checked_gradients"), self.noise.batch(self.model, BATCH, slice(None)):
                _, _, _, finite = train.checked_gradients(self.batch_cost, self.optimizer, x, BATCH, 1.0, self.config.clip)
            with timing("step_if_finite"):
                train.step_if_finite(self.optimizer, finite)
        return {part: value / steps for part, value in seconds.items()}

    def product_seconds(self, steps: int) -> float:
        """Seconds per step that the matrix products themselves take inside the step (profiler self time)."""
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        with profile(activities=activities) as profiler:
            self.run(steps)
        events = [e for e in profiler.key_averages() if e.key in PRODUCTS]
        if self.device.type == "cuda":
            return sum(e.self_device_time_total for e in events) / 1e6 / steps
        return sum(e.self_cpu_time_total for e in events) / 1e6 / steps


def measure(args: argparse.Namespace) -> dict[str, object]:
    device = train.resolve_device(args.device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    steps = {name: Step(device, **config) for name, config in CONTENDERS.items()}
    bounds = {name: MatmulBound(args.steps * BATCH, dtypes[config["precision"]], device) for name, config in CONTENDERS.items()}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in CONTENDERS}

    def note(name: str, key: str, value: float) -> None:
        samples[name].setdefault(key, []).append(value)

    for step in steps.values():
        step.run(args.steps)  # warm-up: the optimizer's state, oneDNN's kernels, the allocator
    for _ in range(args.rounds):
        for name, step in steps.items():
            note(name, "step", step.run(args.steps))
            note(name, "bound", bounds[name].epoch() / args.steps)
            for part, value in step.run_parts(args.steps).items():
                note(name, part, value)
            note(name, "products_in_step", step.product_seconds(args.steps))
    return summarize(samples, device, args, adam_traffic_bytes(steps["fp32"].model), copy_bandwidth(device))


def adam_traffic_bytes(model: torch.nn.Module) -> int:
    """Bytes Adam moves per step: parameter, gradient and two moments read, three of them written back."""
    return 7 * sum(p.numel() * p.element_size() for p in model.parameters())


def copy_bandwidth(device: torch.device, megabytes: int = 256, repeats: int = 9) -> float:
    """Bytes per second read plus written by copying a tensor far larger than any cache (median of repeats)."""
    source = torch.ones(megabytes * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        seconds.append(synchronized(started, device))
    return 2 * source.numel() * 4 / statistics.median(seconds)


def summarize(samples: dict[str, dict[str, list[float]]], device: torch.device, args: argparse.Namespace,
              adam_bytes: int, bandwidth: float) -> dict[str, object]:
    adam_floor_ms = adam_bytes / bandwidth * 1e3
    result: dict[str, object] = {"benchmark": "step_anatomy", "architecture": list(ARCHITECTURE), "batch_size": BATCH,
                                 "device": device.type, "threads": torch.get_num_threads(), "torch": torch.__version__,
                                 "steps_per_round": args.steps, "rounds": args.rounds,
                                 "copy_bandwidth_gb_per_s": round(bandwidth / 1e9, 1), "adam_traffic_mb": round(adam_bytes / 1e6, 1),
                                 "adam_at_bandwidth_ms": round(adam_floor_ms, 3)}
    for name, values in samples.items():
        ms = {key: round(statistics.median(v) * 1e3, 3) for key, v in values.items()}
        within = {key: statistics.median(a / b for a, b in zip(values[key], values["bound"])) for key in ("step", "products_in_step")}
        result[name] = {
            "ms_per_step": ms,
            "efficiency_vs_matmul_bound": round(1 / within["step"], 3),
            "products_in_step_vs_bound": round(within["products_in_step"], 3),
            "other_work_in_gradient_ms": round(ms["checked_gradients"] - ms["products_in_step"], 3),
            # a step that runs the bound's products and then Adam at memory speed, with nothing else
            "efficiency_ceiling_with_adam": round(ms["bound"] / (ms["bound"] + adam_floor_ms), 3),
        }
    return result


def print_table(result: dict[str, object]) -> None:
    names = list(CONTENDERS)
    rows = [("step", "training step (train_step)"), ("checked_gradients", "  cost and checked, clipped gradient"),
            ("products_in_step", "    its matrix products (profiled)"), ("step_if_finite", "  Adam step"),
            ("bound", "matrix products alone (bound)")]
    print(f"{result['architecture']} batch {result['batch_size']}, {result['device']}, {result['threads']} threads; "
          f"ms per step, medians of {result['rounds']} rounds of {result['steps_per_round']} steps")
    print(f"{'':38} " + " ".join(f"{name:>12}" for name in names))
    for key, label in rows:
        print(f"{label:38} " + " ".join(f"{result[name]['ms_per_step'][key]:12.2f}" for name in names))
    print(f"{'products in the step / bound':38} " + " ".join(f"{result[name]['products_in_step_vs_bound']:11.2f}x" for name in names))
    print(f"{'efficiency (bound / step)':38} " + " ".join(f"{result[name]['efficiency_vs_matmul_bound']:12.2f}" for name in names))
    print(f"Adam moves {result['adam_traffic_mb']} MB per step: {result['adam_at_bandwidth_ms']:.2f} ms at the "
          f"{result['copy_bandwidth_gb_per_s']} GB/s of a large copy, so a step of the bound's products and Adam alone "
          f"would reach an efficiency of " + " and ".join(f"{result[name]['efficiency_ceiling_with_adam']:.2f} ({name})" for name in names))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="steps per contender per round (default 100)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds, medians over them (default 7)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's own)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--json-out", type=Path, help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the vaekit command does
    result = measure(args)
    print_table(result)
    print_json(result, args.json_out)


if __name__ == "__main__":
    main()

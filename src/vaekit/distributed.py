"""Training on several processes with `torchrun` (PyTorch DistributedDataParallel).

DDP is a branch, not a framework: `setup` reads torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK); with one process everything here is a no-op. Each rank trains on its own
slice of every global batch; the reparameterization noise is drawn for the whole global
batch from a generator that all ranks advance alike, and each rank keeps its own rows, so
N processes compute exactly what one process computes with the same global batch.
"""

from __future__ import annotations

import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, TypeVar

import torch
import torch.distributed as dist

from vaekit.data import examples_digest
from vaekit.errors import VaekitError

T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    """This process's place in the job: rank 0 of 1 when not started by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # whether setup made the process group (and teardown ends it), not the caller

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """False on torchrun's ranks other than 0, which train but do not print."""
    return os.environ.get("RANK", "0") == "0"


def setup(device: torch.device, timeout_seconds: float) -> tuple[Cluster, torch.device]:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Cluster(), device
    cluster = Cluster(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")), owns_group=not dist.is_initialized())
    if device.type == "cuda":
        if cluster.local_rank >= torch.cuda.device_count():
            raise VaekitError(f"this is process {cluster.local_rank} of its machine, which has {torch.cuda.device_count()} "
                              "GPU(s) to use: start one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", cluster.local_rank)
        torch.cuda.set_device(device)
    if cluster.owns_group:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds), device_id=device if device.type == "cuda" else None)
    return cluster, device


def finish_together(cluster: Cluster) -> None:
    """Wait for every rank at the end of a run, so none hangs up on a peer still writing."""
    if cluster.distributed:
        dist.barrier()


def teardown(cluster: Cluster) -> None:
    """End the process group setup made; one the caller made stays theirs."""
    if cluster.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, cluster: Cluster, device: torch.device) -> torch.nn.Module:
    """The module under DDP (which all-reduces gradients during backward), or as it is."""
    if not cluster.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    # vaekit's buffers are constants: not sent out at every step (PyTorch 2.13 renamed the switch, deprecating the old name)
    takes_new_name = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync = {"forward_sync_buffers": False} if takes_new_name else {"broadcast_buffers": False}
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None, **no_buffer_sync)


def local_slice(n: int, cluster: Cluster) -> slice:
    """This rank's contiguous part of n items, split as evenly as possible."""
    base, extra = divmod(n, cluster.world_size)
    start = cluster.rank * base + min(cluster.rank, extra)
    return slice(start, start + base + (cluster.rank < extra))


def sum_over_ranks(values: torch.Tensor, cluster: Cluster) -> torch.Tensor:
    """Element-wise sum of a tensor across ranks (a copy; unchanged with one process)."""
    if not cluster.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values


def global_batch_mean(values: torch.Tensor, rows: int, cluster: Cluster) -> torch.Tensor:
    """The mean over a global batch of `rows` examples of per-example values, this rank's share (N_local, ...)
    given here and the other ranks' gathered (no gradient flows back through it)."""
    return sum_over_ranks(values.sum(0), cluster) / rows


def any_rank(flag: bool, cluster: Cluster, device: torch.device) -> bool:
    """True on every rank if it is true on any: keeps decisions such as stopping in step."""
    if not cluster.distributed:
        return flag
    return bool(sum_over_ranks(torch.tensor([float(flag)], device=device), cluster).item() > 0)


def from_main_rank(value: T, cluster: Cluster) -> T:
    """Rank 0's value (any picklable object) on every rank: the run folder's name, or what a decision that
    all ranks must take alike rests on (whether to resume, the validation cost)."""
    if not cluster.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_same_data(x_train: torch.Tensor, x_valid: torch.Tensor, cluster: Cluster) -> None:
    """Refuse to train where the ranks read different data (another file on another machine, say): their
    epochs would differ in length and the job hang, or mix two data sets without a word."""
    if not cluster.distributed:
        return
    digests = [None] * cluster.world_size
    dist.all_gather_object(digests, examples_digest(x_train, x_valid))
    if len(set(digests)) > 1:
        differ = [rank for rank, d in enumerate(digests) if d != digests[0]]
        raise VaekitError(f"the processes read different data: rank 0's training and validation examples differ from "
                          f"rank {', '.join(map(str, differ))}'s; every process must read the same data set")


def gather_tensors(tensor: torch.Tensor, cluster: Cluster) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor, in rank order (per-rank RNG states, say)."""
    if not cluster.distributed:
        return [tensor]
    parts = [torch.empty_like(tensor) for _ in range(cluster.world_size)]
    dist.all_gather(parts, tensor)
    return parts


class SharedNoise:
    """Draws the reparameterization noise of a global batch and hands each rank its rows.

    The latent's example dimension is the second to last: (..., N, D), also for k samples.
    """

    def __init__(self, seed: int, device: torch.device):
        self.seed = seed
        self.generator = torch.Generator(device=device).manual_seed(seed + 7919)
        self.device = device
        self.rows = slice(None)
        self.global_rows = 0

    def __call__(self, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        *leading, n_local, width = shape
        draw = torch.randn(*leading, self.global_rows, width, generator=self.generator, device=self.device, dtype=dtype)
        return draw[..., self.rows, :]

    def restart_at(self, step: int) -> None:
        """A fresh stream, seeded from (seed, step), for a run that moves to another kind of device: a CPU
        generator's state does not fit a CUDA one's, nor the other way round."""
        self.generator.manual_seed(self.seed + 7919 + step)

    @contextmanager
    def batch(self, model: Any, global_rows: int, rows: slice) -> Iterator[None]:
        """While active, model.posterior's samples come from here."""
        self.global_rows, self.rows = global_rows, rows
        model.noise = self
        try:
            yield
        finally:
            model.noise = None


def check_world_size(saved: int, cluster: Cluster) -> None:
    if saved != cluster.world_size:
        raise VaekitError(
            f"the checkpoint was written by {saved} process(es); resume it with the same number (now {cluster.world_size})"
        )

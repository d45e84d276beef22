"""The training loop, in one place: batch, forward, backward, clip, step, validate, checkpoint.

The whole training set lives on the device as one tensor; each epoch's order is a
permutation drawn from (seed, epoch), so a resumed run can find its place again.
A checkpoint holds the model, the optimizer, the learning-rate schedule, the step, the epoch,
the position in the epoch, the best validation cost and the RNG state: resuming continues the
run as if it had never stopped. With early stopping (--patience) the best weights on the
validation split are kept in best.safetensors and become the run's model.safetensors at the end.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vaekit import animation, distributed, fused, plots
from vaekit.checkpoint import CHECKPOINT_FILE
from vaekit.config import MIN_LEARNED_SIGMA, DataConfig, TrainConfig, check_settings_apply, settings_given
from vaekit.data import Splits, value_range
from vaekit.errors import VaekitError
from vaekit.evaluate import average_elbo_terms, average_iwae_bound
from vaekit.images import range_to_draw
from vaekit.model import VAE, check_dequantizable, check_values_fit, evaluating, resolve_device, seeded
from vaekit.distributed import Cluster, SharedNoise, any_rank, from_main_rank, local_slice
from vaekit.objectives import l2_penalty, loss
from vaekit.runs import (BEST_FILE, Progress, check_resumable, check_same_epochs, check_same_settings, create_run_dir, load_weights,
                         record_resumed_config, restore_checkpoint, save_state, save_weights, write_run_config)

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"  # held by the process training the run

log = logging.getLogger(__name__)  # one line per epoch at INFO, which `vaekit train` prints

LOG_EVERY = 20  # steps between host syncs for the progress bar and TensorBoard
UNIT_SCALE = (0.01, 100.0)  # the spreads of real-valued data trained without a warning to standardise them


@dataclass
class TrainResult:
    model: VAE
    run_dir: Path
    progress: Progress
    interrupted: bool = False


def train(
    model: VAE,
    data: Splits,
    config: TrainConfig = TrainConfig(),
    data_config: DataConfig | None = None,
    run_dir: str | Path | None = None,
) -> TrainResult:
    """Train model on data.train, validating on data.valid; write the run to a new folder under config.out.

    The run's config.json records data_config, by default the one load_data read the data from (so that the
    CLI can evaluate, plot and resume the run). Pass the run_dir of an earlier run to resume it from its checkpoint.
    Returns the trained model (on its device, in eval mode), the run folder and the final progress. The
    caller's random streams and thread count are as they were before. A model of real-valued data (a Gaussian
    with an identity mean) without a `value_range` gets the training data's, for its figures.

    Ctrl-C (SIGINT) or SIGTERM stops training after the current step and saves the run, which can be resumed;
    train then returns normally, with `interrupted` True in its result. A second Ctrl-C raises KeyboardInterrupt.
    """
    if not isinstance(model, VAE):
        hint = (": pass the model itself, and TrainConfig(compile=True) for a compiled step" if hasattr(model, "_orig_mod")
                else "")
        raise VaekitError(f"train takes a vaekit.VAE (or a subclass of it), not {type(model).__name__}{hint}")
    check_training_data(data, model)
    if not model.config.takes_unit_interval and not model.config.value_range:  # real values: figures draw their range
        model.config = replace(model.config, value_range=range_to_draw(*value_range(data.train.x)))
    if not isinstance(config, TrainConfig) or not isinstance(data_config, (DataConfig, type(None))):
        raise VaekitError("train takes its settings as vaekit.TrainConfig (and data_config as vaekit.DataConfig), not "
                          f"{type(config).__name__} (and {type(data_config).__name__})")
    if run_dir is not None:
        check_resumable(Path(run_dir))
        check_same_settings(Path(run_dir), model, config, data, data_config or data.config)
    else:  # (a resumed run keeps what it was started with)
        check_settings_apply(settings_given(config))
    cluster, device = distributed.setup(resolve_device(config.device), config.dist_timeout)
    try:
        # each rank its own stream (dropout masks, dequantisation noise) for its own examples; rank 0's is one
        # process's. (The weights are rank 0's: DDP broadcasts them. The posterior's noise is shared: SharedNoise.)
        # (gradients on, inside a caller's torch.no_grad() or inference_mode() too)
        with threads(config.threads), seeded(config.seed + cluster.rank, device), torch.inference_mode(False), torch.enable_grad():
            return train_on(cluster, device, model, data, config, data_config or data.config, run_dir)
    finally:
        distributed.teardown(cluster)


def check_training_data(data: Splits, model: VAE) -> None:
    """Refuse, before any run folder is made, data the model cannot be trained on: Splits whose training or
    validation examples are not flat float32 rows of the model's width (as load_data and Splits.from_arrays make
    them) with values it takes, or whose image shape does not hold that many values."""
    if not isinstance(data, Splits):
        raise VaekitError(f"train takes the data as vaekit.Splits (from vaekit.load_data, or Splits.from_arrays for your "
                          f"own arrays), not {type(data).__name__}")
    for split in ("train", "valid"):
        x = getattr(getattr(data, split), "x", None)
        if not torch.is_tensor(x) or x.dtype != torch.float32 or x.ndim != 2:
            raise VaekitError(f"the {split} split must hold a float32 tensor of examples (N, D), as Splits.from_arrays "
                              f"makes from any array; got {type(x).__name__} {getattr(x, 'dtype', '')} {tuple(getattr(x, 'shape', ()))}")
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    if dtypes != ["torch.float32"]:
        raise VaekitError(f"train keeps float32 weights (TrainConfig(precision='bf16') runs the products in bfloat16); "
                          f"the model's are {', '.join(dtypes)}: call model.float() first")
    data.check_fits(model.input_size)
    if math.prod(data.image_shape) != model.input_size:
        raise VaekitError(f"the data's image shape {tuple(data.image_shape)} holds {math.prod(data.image_shape)} values; "
                          f"its examples have {model.input_size}")
    for split in ("train", "valid"):
        check_values_fit(getattr(data, split).x, model.config, f"the {split} split")
    check_dequantizable(data.train.x, model.config)


@contextmanager
def held_alone(run_dir: Path, cluster: Cluster) -> Iterator[None]:
    """The run folder locked for the duration (rank 0 holds it for a torchrun job): a second process that would
    train the same run at once, writing its checkpoints over this one's, is refused. No lock where the system
    has no flock (Windows)."""
    if not cluster.is_main or fcntl is None:
        yield
        return
    lock = run_dir / LOCK_FILE
    if lock.is_symlink() or (lock.exists() and not lock.is_file()):  # opening would write elsewhere, or hang on a FIFO
        raise VaekitError(f"{lock} is not the plain file vaekit keeps there: remove it to train the run")
    with open(lock, "a") as handle:  # closing it, however the run ends, releases the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise VaekitError(f"{run_dir} is being trained by another process: wait for it to end, or stop it, "
                              "before training the run here") from None
        yield


@contextmanager
def threads(count: int | None) -> Iterator[None]:
    """PyTorch's CPU threads set to count (None: left as they are) for the duration, then as they were."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_on(cluster: Cluster, device: torch.device, model: VAE, data: Splits, config: TrainConfig,
             data_config: DataConfig | None, run_dir: str | Path | None) -> TrainResult:
    """The loop itself, on this process's device; with torchrun, one of several ranks."""
    model.to(device)
    if not model.training:  # as `load` returns it: trained whole; else a part the caller put in eval mode stays so
        model.train()
    check_objective_fits(model, config)
    batch_cost = make_batch_cost(model, config, cluster, device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    nonfinite = NonFiniteSteps(device)
    noise = SharedNoise(config.seed, device)
    progress, run_dir, resumed = resume_or_start(run_dir, model, optimizer, scheduler, noise, cluster, config)

    distributed.check_same_data(data.train.x, data.valid.x, cluster)
    x_train = data.train.x.to(device)
    x_valid = data.valid.x.to(device)
    global_batch = config.batch_size * cluster.world_size
    steps_per_epoch = math.ceil(len(x_train) / global_batch)
    if global_batch > len(x_train):
        warnings.warn(f"the batch ({global_batch} examples) is larger than the {len(x_train)} training examples: "
                      f"each epoch is one step on all of them", stacklevel=2)
    if not resumed and cluster.is_main:
        warn_if_sigma_hides_the_data(model, data.train.x)
    check_same_epochs(progress, len(x_train), global_batch, steps_per_epoch)
    progress.epoch_shape = (len(x_train), global_batch)
    total_steps = planned_steps(config, steps_per_epoch)
    if resumed and total_steps < progress.step:  # before anything is written: the run stays as it is
        raise VaekitError(f"{run_dir} has trained {progress.epoch} epochs ({progress.step} steps) already; give --epochs "
                          f"above {progress.epoch} or --max-steps above {progress.step} to train it further")
    stop = StopRequest()
    interrupted = False
    clock_zero = time.perf_counter() - progress.seconds

    with held_alone(run_dir, cluster), stop, Logger(run_dir, model, x_valid[:1], total_steps, progress.step, config.progress,
                                                   cluster.is_main) as logger:
        if cluster.is_main:  # the run is ours now (a second process is refused before it writes anything)
            if resumed:  # checked: new limits (--epochs, --max-steps) hold for the next resume too
                record_resumed_config(run_dir, config, data_config, device, cluster)
            else:
                write_run_config(run_dir, model, config, data, data_config, device, cluster)
        # (a checkpoint taken on an epoch's last step, by --checkpoint-every, leaves that epoch's end to do)
        while (progress.step < total_steps or progress.position == steps_per_epoch) and not interrupted and not stopped_early(progress, config):
            started = time.perf_counter()
            order = epoch_order(len(x_train), config.seed, progress.epoch, device)
            for i in range(progress.position, steps_per_epoch):
                indices = order[i * global_batch : (i + 1) * global_batch]  # the global batch
                rows = local_slice(len(indices), cluster)  # this rank's share of it
                x = x_train.index_select(0, indices[rows])  # a plain row gather: 5x faster than x_train[...] on a CPU
                beta = kl_weight(config, progress.step, steps_per_epoch)
                with noise.batch(model, len(indices), rows):
                    cost, terms, finite = train_step(batch_cost, optimizer, x, len(indices), beta, config)
                progress.step += 1
                progress.position = i + 1
                logger.train_step(progress.step, cost, terms, finite)
                nonfinite.note(finite, progress.step)
                checkpoint_now = bool(config.checkpoint_every) and progress.step % config.checkpoint_every == 0
                if nonfinite.due(progress.step) or checkpoint_now or i == steps_per_epoch - 1:
                    handle_nonfinite(config, progress, run_dir, nonfinite.take())
                # (on an epoch's last step the epoch's end validates: once is enough)
                if config.eval_every and progress.step % config.eval_every == 0 and i < steps_per_epoch - 1:
                    progress.seconds = time.perf_counter() - clock_zero
                    validate(model, x_valid, config, progress, logger)
                if config.snapshots and cluster.is_main and animation.is_snapshot_step(progress.step):
                    plots.save_snapshot(model, data, run_dir, progress.step)  # before the checkpoint that passes this step
                if checkpoint_now:
                    save_state(run_dir, model, optimizer, scheduler, progress, noise, cluster)
                if progress.step >= total_steps or (stop_agreed_at(progress.step, i, steps_per_epoch, config, cluster)
                                                    and any_rank(stop.requested, cluster, device)):
                    interrupted = progress.step < total_steps
                    break
            progress.train_seconds += seconds_since(started, device)
            if progress.position == steps_per_epoch:
                progress.epoch += 1
                progress.position = 0
                progress.seconds = time.perf_counter() - clock_zero
                valid_cost = from_main_rank(validate(model, x_valid, config, progress, logger), cluster)  # one decision for all
                logger.epoch_end(progress, config.epochs)
                if images_due(progress.epoch):
                    logger.images(progress.step, model, x_valid)
                if record_epoch_end(progress, valid_cost) and config.patience and cluster.is_main:
                    save_weights(run_dir / BEST_FILE, model)
                step_schedule(scheduler, valid_cost)
                save_state(run_dir, model, optimizer, scheduler, progress, noise, cluster)

        handle_nonfinite(config, progress, run_dir, nonfinite.take())
        if not progress.history or progress.history[-1]["step"] != progress.step:
            progress.seconds = time.perf_counter() - clock_zero
            validate(model, x_valid, config, progress, logger)  # every run ends with a validation cost
        if logger.images_step != progress.step:
            logger.images(progress.step, model, x_valid)  # the trained model's, however the run ended
        progress.seconds = time.perf_counter() - clock_zero
        save_state(run_dir, model, optimizer, scheduler, progress, noise, cluster)
        if cluster.is_main:
            write_final_files(run_dir, model, data, config, progress.step)
        logger.finish(progress.step)
    distributed.finish_together(cluster)
    optimizer.zero_grad(set_to_none=True)  # the last step's gradients, which a caller's own loop would add to
    model.eval()  # as `load` returns a model: ready to use, no dropout
    return TrainResult(model=model, run_dir=run_dir, progress=progress, interrupted=interrupted)


def write_final_files(run_dir: Path, model: VAE, data: Splits, config: TrainConfig, step: int) -> None:
    """The run's model.safetensors (the best weights on validation, with --patience) and, with --snapshots, the last
    step's snapshot and the GIFs of the latent space over training."""
    if config.snapshots and not animation.is_snapshot_step(step):
        plots.save_snapshot(model, data, run_dir, step)  # so the GIFs end at the last step
    if config.snapshots:
        animation.drop_stale_snapshots(run_dir, step)
    if config.patience and (run_dir / BEST_FILE).exists():
        load_weights(run_dir / BEST_FILE, model)
    model.save(run_dir, overwrite=True)
    if config.snapshots:
        animation.snapshot_gifs(run_dir)


def warn_if_sigma_hides_the_data(model: VAE, x: torch.Tensor) -> None:
    """Warn where a fixed Gaussian sigma exceeds the data's own spread: p(x|z) then explains the data as noise and
    the latent code goes unused (the KL term wins), as on embeddings of spread 0.025 under the default 0.1. And
    where real values are far from unit scale, which the networks' first steps and sigma's floor are made for."""
    if model.config.likelihood != "gaussian" or len(x) < 2:
        return
    spread = root_mean_square_spread(x)
    if not model.config.takes_unit_interval and spread > 0 and not UNIT_SCALE[0] <= spread <= UNIT_SCALE[1]:
        warnings.warn(f"the data's spread is {spread:.3g} (the root mean square of each value's standard deviation): the "
                      "networks train on values of order 1 (far larger ones overflow in the first steps, and a learned sigma "
                      f"stops at {MIN_LEARNED_SIGMA:g}); standardise each value, (x - mean) / std over the training split",
                      stacklevel=3)
    sigma = model.config.sigma
    if not model.config.learn_sigma and sigma > spread:
        warnings.warn(f"--sigma {sigma:g} (fixed) is above the data's spread, {spread:.3g} (the root mean square of each "
                      "value's standard deviation): p(x|z) would call the data noise and leave the latent code unused; "
                      "learn sigma (--learn-sigma) or give a smaller --sigma", stacklevel=3)


def root_mean_square_spread(x: torch.Tensor, rows: int = 4096) -> float:
    """The root mean square of each value's standard deviation over the examples x (N, D), a chunk of rows at a
    time (x.var(0) would hold a copy of the whole data set)."""
    total, total_squares = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
    shift = x[0].double().cpu()  # sums about one example, not about 0: no cancellation where the mean dwarfs the spread
    for chunk in x.split(rows):
        chunk = chunk.double().cpu() - shift
        total += chunk.sum(0)
        total_squares += chunk.square().sum(0)
    mean = total / len(x)
    variance = (total_squares / len(x) - mean.square()).clamp(min=0) * len(x) / (len(x) - 1)
    return float(variance.mean().sqrt())


def resume_or_start(run_dir: str | Path | None, model: VAE, optimizer: torch.optim.Optimizer, scheduler: Any,
                    noise: SharedNoise, cluster: Cluster, config: TrainConfig) -> tuple[Progress, Path, bool]:
    """(progress, run folder, whether resumed): the checkpoint's state restored into model, optimizer, schedule and
    noise where run_dir holds one; else a fresh start, in run_dir or a new folder under config.out."""
    # rank 0's disk decides (a node that cannot see the run folder then fails to read it, rather than hang)
    resumed = from_main_rank(run_dir is not None and (Path(run_dir) / CHECKPOINT_FILE).exists(), cluster)
    if resumed:
        return restore_checkpoint(Path(run_dir), model, optimizer, scheduler, noise, cluster), Path(run_dir), True
    if cluster.is_main and run_dir is None:
        run_dir = create_run_dir(Path(config.out), model.config.architecture)
    return Progress(), Path(from_main_rank(str(run_dir), cluster)), False


def stop_agreed_at(step: int, batch: int, steps_per_epoch: int, config: TrainConfig, cluster: Cluster) -> bool:
    """Whether the ranks agree on a stop request (Ctrl-C, SIGTERM) after this step: after every step in one
    process; under torchrun only where the loop waits for the device anyway (every LOG_EVERY steps,
    checkpoints, epoch ends), since asking means a collective that each step would otherwise wait for."""
    if not cluster.distributed:
        return True
    checkpoint_now = bool(config.checkpoint_every) and step % config.checkpoint_every == 0
    return step % LOG_EVERY == 0 or checkpoint_now or batch == steps_per_epoch - 1


class BatchCost(torch.nn.Module):
    """The training cost of this rank's batch as a module, so that DDP (which hooks into
    forward) can wrap it. Scaled so that DDP's average over ranks is the global batch's mean.

    With precision "bf16" the forward pass runs under autocast: the networks' matrix products in
    bfloat16, while the distributions take their outputs back to float32 (`full_precision`), so
    the cost, the weights and the optimizer stay float32 (Micikevicius et al. 2018, "Mixed Precision Training").
    """

    def __init__(self, model: VAE, config: TrainConfig, cluster: Cluster = Cluster()):
        super().__init__()
        self.model, self.config, self.cluster = model, config, cluster

    def forward(self, x: torch.Tensor, global_rows: int, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        config = self.config
        # free bits floor the whole global batch's KL per dimension, as one process would (objectives.free_bits_kl)
        batch_mean = functools.partial(distributed.global_batch_mean, rows=global_rows, cluster=self.cluster) if self.cluster.distributed else None
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            cost, terms = loss(self.model, x, objective=config.objective, beta=beta, free_bits=config.free_bits, k=config.iwae_k,
                               batch_mean=batch_mean)
        if len(x) == 0:  # the last global batch of an epoch can leave a rank nothing: it added no gradient, though
            zero = sum(p.sum() for p in self.model.parameters()) * 0.0  # it drew its (empty) share of the noise above,
            cost, reconstruction, kl = zero, zero.detach(), zero.detach()  # so that the ranks' noise streams stay in step
        else:
            cost = cost * (len(x) * self.cluster.world_size / global_rows)  # exactly 1 when the ranks' shares are equal
            reconstruction, kl = terms.reconstruction.detach().mean(), terms.kl.detach().mean()
        if config.l2 > 0:
            cost = cost + config.l2 * l2_penalty(self.model)
        return cost, reconstruction, kl


def make_batch_cost(model: VAE, config: TrainConfig, cluster: Cluster, device: torch.device) -> torch.nn.Module | fused.DenseElbo:
    """The hand-written dense ELBO where it applies (see `fused.applies`), else BatchCost through autograd, under DDP with torchrun."""
    if fused.applies(model, config, cluster.world_size):
        return fused.DenseElbo(model, config)
    if config.compile:
        reason = "--no-fused" if not config.fused else fused.why_not(model, config, cluster.world_size)
        warnings.warn(f"--compile applies to the hand-written gradient only (see --fused), which this run cannot take "
                      f"({reason}): it trains through autograd, uncompiled", stacklevel=2)
    return distributed.wrap(BatchCost(model, config, cluster), cluster, device)


def train_step(batch_cost: torch.nn.Module | fused.DenseElbo, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               global_rows: int, beta: float, config: TrainConfig) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One optimizer step (the KL weighted by beta); returns the (detached) cost, the mean reconstruction
    and KL terms, and `finite`, a boolean tensor: whether the loss and every gradient were finite. A step
    that was not leaves the weights and the optimizer untouched. Nothing here waits for the device."""
    cost, reconstruction, kl, finite = checked_gradients(batch_cost, optimizer, x, global_rows, beta, config.clip)
    step_if_finite(optimizer, finite)
    return cost, (reconstruction, kl), finite


def checked_gradients(batch_cost: torch.nn.Module | fused.DenseElbo, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                      global_rows: int, beta: float, clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's (detached) cost, mean reconstruction and KL terms, and whether the cost and every gradient
    value were finite (a boolean tensor), with the cost's gradient, clamped to [-clip, clip], in every `.grad`."""
    if isinstance(batch_cost, fused.DenseElbo):
        return batch_cost(x, beta, clip)  # it checks and clips each gradient as it writes it
    cost, reconstruction, kl = batch_cost(x, global_rows, beta)
    optimizer.zero_grad(set_to_none=True)
    cost.backward()
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]  # the model's, without walking its modules
    finite = all_finite(cost, [p.grad for p in params])
    if clip > 0:
        clip_values(params, clip)  # harmless where the step is then skipped
    return cost.detach(), reconstruction, kl, finite


def all_finite(cost: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """Whether the cost and every gradient value are finite, as a boolean tensor (no host sync).

    On a GPU from one multi-tensor kernel for the largest |value| (which, unlike the 2-norm, does not overflow
    for large finite gradients). On a CPU, where PyTorch's multi-tensor kernels run tensor by tensor anyway,
    from sums, which read each gradient once: a sum is NaN or infinite whenever one of its terms is (and also
    when finite gradients add up past float32's 3.4e38, a run diverged all the same: it is stopped as non-finite).
    """
    if cost.device.type == "cpu":
        return torch.isfinite(cost + torch.stack([grad.sum() for grad in grads]).sum())
    return torch.isfinite(cost + torch.nn.utils.get_total_norm(grads, norm_type=math.inf))


def clip_values(params: list[torch.Tensor], clip: float) -> None:
    """Clamp every gradient value to [-clip, clip], in place: clip_grad_value_'s two multi-tensor
    kernels on a GPU, one pass per tensor on a CPU (where the two kernels would be two passes)."""
    if params[0].device.type == "cpu":
        for p in params:
            p.grad.clamp_(-clip, clip)
    else:
        torch.nn.utils.clip_grad_value_(params, clip)


def step_if_finite(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """optimizer.step() unless `finite` is false. On a GPU a fused optimizer skips on the device, as it does
    for torch.amp.GradScaler (whose protocol this is: a `found_inf` tensor set for the step), so the host
    need not wait; on a CPU, where reading the flag costs nothing, the host decides."""
    if finite.device.type != "cpu" and getattr(optimizer, "_step_supports_amp_scaling", False):
        step_on_device_if_finite(optimizer, finite)
    elif bool(finite):
        optimizer.step()


def step_on_device_if_finite(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """A fused optimizer's step, which its kernel skips (weights, moments and step count alike) where
    `finite` is false, without the host reading it."""
    optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf  # type: ignore[attr-defined]


class NonFiniteSteps:
    """Notes on the device which steps had a non-finite loss or gradient, so that the host need not wait.

    The host looks (`take`) after every step on a CPU, where looking costs nothing, so a run stops at
    the very step; on a GPU every LOG_EVERY steps, at epoch ends and before each checkpoint, naming
    the first bad step. The updates of such steps were skipped on the device either way.
    """

    def __init__(self, device: torch.device):
        self.every = 1 if device.type == "cpu" else LOG_EVERY
        self.count = torch.zeros((), dtype=torch.int64, device=device)  # since the host last looked
        self.first = torch.zeros((), dtype=torch.int64, device=device)  # the first of them

    def note(self, finite: torch.Tensor, step: int) -> None:
        bad = ~finite
        self.first = torch.where(bad & (self.count == 0), step, self.first)
        self.count += bad

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def take(self) -> tuple[int, int]:
        """(how many bad steps, the first of them) since the last look; waits for the device."""
        count, first = torch.stack([self.count, self.first]).tolist()
        self.count.zero_()
        return count, first


def seconds_since(start: float, device: torch.device) -> float:
    """Wall time since `start` (time.perf_counter), once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def handle_nonfinite(config: TrainConfig, progress: Progress, run_dir: Path, bad_steps: tuple[int, int]) -> None:
    """Count skipped batches, or stop the run naming the first bad step; the last checkpoint is left as it was."""
    count, first = bad_steps
    if count == 0:
        return
    if config.on_nonfinite == "skip":
        progress.skipped_batches += count
        return
    saved = (f"its last good checkpoint in {run_dir} is intact" if (run_dir / CHECKPOINT_FILE).exists()
             else f"it had saved no checkpoint yet: delete {run_dir} and start a new run")
    raise VaekitError(f"the loss or a gradient became NaN/Inf at step {first}; the run stopped and {saved} "
                      "(lower --lr, or pass --on-nonfinite skip to skip such batches)")


def validate(model: VAE, x_valid: torch.Tensor, config: TrainConfig, progress: Progress, logger: "Logger") -> float:
    """The validation cost in nats per example, logged and kept in the history.

    It is the negated bound being trained, at full KL weight: -ELBO, or -IWAE bound with --iwae-k samples.
    Under torchrun every rank takes the whole split with the same seeded draws, so that all agree, with each
    other and with one process, without a word between them (a share each would draw the same first draws).
    """
    terms = average_elbo_terms(model, x_valid)
    if config.objective == "iwae":
        terms["iwae_bound"] = average_iwae_bound(model, x_valid, config.iwae_k)
    cost = -terms.get("iwae_bound", terms["elbo"])
    progress.history.append({"step": progress.step, "epoch": progress.epoch, "valid_cost": cost, "seconds": progress.seconds})
    logger.valid(progress.step, cost, terms)
    return cost


def record_epoch_end(progress: Progress, valid_cost: float) -> bool:
    """Track the best validation cost and the epochs since it; True when this epoch is the new best."""
    if valid_cost < progress.best_valid_cost:
        progress.best_valid_cost, progress.best_epoch, progress.best_step, progress.bad_epochs = valid_cost, progress.epoch, progress.step, 0
        return True
    progress.bad_epochs += 1
    return False


def images_due(epoch: int) -> bool:
    """Whether TensorBoard gets the model's images at this epoch's end: epochs 1 to 10, every 10th to 100, every
    100th to 1000 and so on, on logarithmic time as the snapshots are (nine a decade: a 3280-epoch run has 30)."""
    return epoch % 10 ** (len(str(epoch)) - 1) == 0


def stopped_early(progress: Progress, config: TrainConfig) -> bool:
    return bool(config.patience) and progress.bad_epochs >= config.patience


def kl_weight(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """beta, raised linearly from 0 over the first --warmup-epochs epochs (KL warm-up, Sønderby et al. 2016)."""
    if not config.warmup_epochs:
        return config.beta
    return config.beta * min(1.0, step / (config.warmup_epochs * steps_per_epoch))


# -- setting up --------------------------------------------------------------------------------------


def make_optimizer(model: VAE, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam with PyTorch's fused kernel (CPU and CUDA): one pass over the weights where the default
    takes about ten, and it can skip a non-finite step without the host looking."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The learning-rate schedule, stepped once per epoch; None for a constant rate."""
    if config.lr_schedule == "burda":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, burda_lr_factor)
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.lr_decay, patience=config.lr_patience, min_lr=config.min_lr,
            threshold=0.0,  # "better" as --patience counts it: any lower cost (PyTorch's relative test misjudges negative costs)
        )
    return None


def burda_lr_factor(epoch: int) -> float:
    """10^(-i/7) during pass i = 0..7 of 3^i epochs each (Burda et al. 2015, section 5: 3280 epochs in all)."""
    i, end = 0, 1
    while epoch >= end and i < 7:
        i += 1
        end += 3**i
    return 10 ** (-i / 7)


def step_schedule(scheduler: Any, valid_cost: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(valid_cost)
    elif scheduler is not None:
        scheduler.step()


def check_objective_fits(model: VAE, config: TrainConfig) -> None:
    if config.free_bits and model.config.prior != "standard":
        raise VaekitError("--free-bits needs the standard normal prior, whose KL splits over latent dimensions")


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Steps until the first of --epochs and --max-steps is reached."""
    limits = [config.max_steps] if config.max_steps else []
    if config.epochs:
        limits.append(config.epochs * steps_per_epoch)
    return min(limits)


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The shuffled order of epoch `epoch`: a function of (seed, epoch) alone, so resume can redo it."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)  # generators take 64 bits
    return torch.randperm(n, generator=generator).to(device)


# -- logging and signals -------------------------------------------------------------------------------


class Logger:
    """Progress bar, TensorBoard scalars and images; syncs with the device every LOG_EVERY steps only."""

    def __init__(self, run_dir: Path, model: VAE, example: torch.Tensor, total_steps: int, start_step: int,
                 show_bar: bool, enabled: bool = True):
        from tqdm.auto import tqdm  # a widget in a notebook, text in a terminal

        self.writer = None
        if enabled:  # under torchrun, rank 0 alone logs
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run hides what a crashed session logged after its checkpoint's step: no step is shown twice
            # (start_step 0: a session killed before its first checkpoint may have logged steps already)
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
            if start_step == 0:
                add_graph(self.writer, model, example)
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not (show_bar and enabled), unit="step", dynamic_ncols=True)
        self.sums = torch.zeros(4, device=example.device)  # cost, reconstruction, kl, steps: since the last flush
        self.epoch_sums = torch.zeros(4, device=example.device)  # the same since the epoch began
        self.last_valid, self.last_valid_terms = math.nan, {"elbo": math.nan}
        self.images_step = -1  # the step of the last images logged

    def train_step(self, step: int, cost: torch.Tensor, terms: tuple[torch.Tensor, torch.Tensor], finite: torch.Tensor) -> None:
        """Add a step's figures to the running sums on the device, unless they were not finite."""
        values = torch.stack([cost, *terms, torch.ones_like(cost)])
        values = torch.where(finite, values, torch.zeros_like(values))
        self.sums += values
        self.epoch_sums += values
        if step % LOG_EVERY == 0:
            self.flush(step)

    def flush(self, step: int) -> None:
        if self.writer is None:
            return
        *sums, count = self.sums.tolist()
        if count == 0:
            return
        total, reconstruction, kl = (value / count for value in sums)
        for name, value in (("total", total), ("reconstruction", reconstruction), ("kl", kl), ("neg_elbo", reconstruction + kl)):
            self.writer.add_scalar(f"train/{name}", value, step)
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(cost=f"{total:.2f}", valid=f"{self.last_valid:.2f}")
        self.sums.zero_()

    def valid(self, step: int, cost: float, terms: dict[str, float]) -> None:
        """Log the validation cost (the bound trained, at full KL weight, without the L2 term) and the ELBO's terms."""
        self.last_valid, self.last_valid_terms = cost, terms
        if self.writer is None:
            return
        self.writer.add_scalar("valid/total", cost, step)
        self.writer.add_scalar("valid/neg_elbo", -terms["elbo"], step)
        self.writer.add_scalar("valid/reconstruction", terms["reconstruction"], step)
        self.writer.add_scalar("valid/kl", terms["kl"], step)
        self.flush(step)

    def images(self, step: int, model: VAE, x_valid: torch.Tensor) -> None:
        """Validation examples above their reconstructions, and samples from the prior (plots.training_images)."""
        self.images_step = step
        if self.writer is None:
            return
        for name, canvas in plots.training_images(model, x_valid).items():
            self.writer.add_image(f"images/{name}", canvas, step, dataformats="HWC")

    def epoch_end(self, progress: "Progress", epochs: int | None) -> None:
        """Print one line for the epoch just ended: its mean training cost, the validation bound, the time."""
        if self.writer is None or not log.isEnabledFor(logging.INFO):  # (no writer: not the main rank)  # the command line shows them; in Python, logging.basicConfig
            self.epoch_sums.zero_()
            return
        *sums, count = self.epoch_sums.tolist()
        self.epoch_sums.zero_()
        total, reconstruction, kl = (value / count if count else math.nan for value in sums)
        valid = f"valid -ELBO {-self.last_valid_terms['elbo']:.2f}"
        if "iwae_bound" in self.last_valid_terms:
            valid = f"valid -IWAE bound {-self.last_valid_terms['iwae_bound']:.2f}, {valid}"
        of_epochs = f"/{epochs}" if epochs else ""
        log.info(f"epoch {progress.epoch}{of_epochs} (step {progress.step}): train cost {total:.2f} "
                 f"(-ELBO {reconstruction + kl:.2f}), {valid}, after {progress.seconds:.1f} s")

    def finish(self, step: int) -> None:
        self.flush(step)
        self.bar.update(step - self.bar.n)

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def add_graph(writer: Any, model: VAE, example: torch.Tensor) -> None:
    """Put the model's graph in TensorBoard; a tracing failure costs the picture, not the run. (`evaluating`
    gives each module its mode back: add_graph's own restore puts every module in the root's mode.)"""
    with evaluating(model), warnings.catch_warnings(), redirect_stdout(io.StringIO()):  # a failed trace prints to stdout
        warnings.simplefilter("ignore")
        try:
            writer.add_graph(model, example)
        except Exception:  # noqa: BLE001 - the graph is a nicety
            pass


class StopRequest:
    """Turn SIGINT/SIGTERM into a request to stop after the current step, so the run is saved. A second Ctrl-C
    (SIGINT) raises KeyboardInterrupt at once, for one who will not wait: the last checkpoint stays as it was."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

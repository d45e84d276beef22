"""The training loop, in one place: batch, forward, backward, clip, step, validate, checkpoint.

The whole training set lives on the device as one tensor; each epoch's order is a
permutation drawn from (seed, epoch), so a resumed run can find its place again.
A checkpoint holds the model, the optimizer, the learning-rate schedule, the step, the epoch,
the position in the epoch, the best validation cost and the RNG state: resuming continues the
run as if it had never stopped. With early stopping (--patience) the best weights on the
validation split are kept in best.safetensors and become the run's model.safetensors at the end.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaekit.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from vaekit.config import DataConfig, TrainConfig, from_dict, to_dict, write_json
from vaekit.data import Splits
from vaekit.errors import VaekitError
from vaekit.evaluate import average_elbo_terms, average_iwae_bound
from vaekit.model import CONFIG_FILE, FORMAT_VERSION, VAE, load_checked_state, read_run_config
from vaekit.objectives import loss

BEST_FILE = "best.safetensors"

LOG_EVERY = 20  # steps between host syncs for the progress bar and TensorBoard


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of the current epoch already done
    best_valid_cost: float = math.inf  # at epoch ends
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one
    seconds: float = 0.0  # wall time spent training, over all sessions
    history: list[dict[str, float]] = field(default_factory=list)


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

    Pass the run_dir of an earlier run to resume it from its checkpoint.
    Returns the trained model (on its device), the run folder and the final progress.
    """
    check_data_fits(model, data)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model.to(device).train()
    check_objective_fits(model, config)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    progress = Progress()
    if run_dir is not None and (Path(run_dir) / CHECKPOINT_FILE).exists():
        progress = restore_checkpoint(Path(run_dir), model, optimizer, scheduler)
    else:
        run_dir = create_run_dir(Path(config.out), model.config.architecture) if run_dir is None else Path(run_dir)
        write_run_config(run_dir, model, config, data_config)
    run_dir = Path(run_dir)

    x_train = data.train.x.to(device)
    x_valid = data.valid.x.to(device)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    total_steps = planned_steps(config, steps_per_epoch)
    logger = Logger(run_dir, model, x_valid[:1], total_steps, progress.step, config.progress)
    stop = StopRequest()
    interrupted = False
    clock_zero = time.perf_counter() - progress.seconds

    with stop:
        while progress.step < total_steps and not interrupted and not stopped_early(progress, config):
            order = epoch_order(len(x_train), config.seed, progress.epoch, device)
            for i in range(progress.position, steps_per_epoch):
                batch = x_train[order[i * config.batch_size : (i + 1) * config.batch_size]]
                beta = kl_weight(config, progress.step, steps_per_epoch)
                cost, terms = train_step(model, optimizer, batch, config, beta)
                progress.step += 1
                progress.position = i + 1
                logger.train_step(progress.step, cost, terms)
                if config.eval_every and progress.step % config.eval_every == 0:
                    validate(model, x_valid, config, progress, logger)
                if config.checkpoint_every and progress.step % config.checkpoint_every == 0:
                    save_state(run_dir, model, optimizer, scheduler, progress)
                if stop.requested or progress.step >= total_steps:
                    interrupted = stop.requested
                    break
            if progress.position == steps_per_epoch:
                progress.epoch += 1
                progress.position = 0
                progress.seconds = time.perf_counter() - clock_zero
                valid_cost = validate(model, x_valid, config, progress, logger)
                if record_epoch_end(progress, valid_cost) and config.patience:
                    save_weights(run_dir / BEST_FILE, model)
                step_schedule(scheduler, valid_cost)
                save_state(run_dir, model, optimizer, scheduler, progress)

    progress.seconds = time.perf_counter() - clock_zero
    save_state(run_dir, model, optimizer, scheduler, progress)
    if config.patience and (run_dir / BEST_FILE).exists():
        load_weights(run_dir / BEST_FILE, model)
    model.save(run_dir)
    logger.close(progress.step)
    return TrainResult(model=model, run_dir=run_dir, progress=progress, interrupted=interrupted)


def train_step(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, config: TrainConfig, beta: float = 1.0) -> tuple[torch.Tensor, Any]:
    """One optimizer step on a batch (the KL weighted by beta); returns the (detached) cost and the ELBO terms."""
    cost, terms = loss(model, x, config.l2, objective=config.objective, beta=beta, free_bits=config.free_bits, k=config.iwae_k)
    optimizer.zero_grad(set_to_none=True)
    cost.backward()
    if config.clip > 0:
        torch.nn.utils.clip_grad_value_(model.parameters(), config.clip)
    optimizer.step()
    return cost.detach(), terms


def validate(model: VAE, x_valid: torch.Tensor, config: TrainConfig, progress: Progress, logger: "Logger") -> float:
    """The validation cost in nats per example, logged and kept in the history.

    It is the negated bound being trained, at full KL weight: -ELBO, or -IWAE bound with --iwae-k samples.
    """
    terms = average_elbo_terms(model, x_valid)
    if config.objective == "iwae":
        terms["iwae_bound"] = average_iwae_bound(model, x_valid, config.iwae_k)
    cost = -terms.get("iwae_bound", terms["elbo"])
    progress.history.append({"step": progress.step, "epoch": progress.epoch, "valid_cost": cost, "seconds": progress.seconds})
    logger.valid(progress.step, terms)
    model.train()
    return cost


def record_epoch_end(progress: Progress, valid_cost: float) -> bool:
    """Track the best validation cost and the epochs since it; True when this epoch is the new best."""
    if valid_cost < progress.best_valid_cost:
        progress.best_valid_cost, progress.best_epoch, progress.bad_epochs = valid_cost, progress.epoch, 0
        return True
    progress.bad_epochs += 1
    return False


def stopped_early(progress: Progress, config: TrainConfig) -> bool:
    return bool(config.patience) and progress.bad_epochs >= config.patience


def kl_weight(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """beta, raised linearly from 0 over the first --warmup-epochs epochs (KL warm-up, Sønderby et al. 2016)."""
    if not config.warmup_epochs:
        return config.beta
    return config.beta * min(1.0, step / (config.warmup_epochs * steps_per_epoch))


# -- setting up --------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when there is a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaekitError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    return torch.device(name)


def make_optimizer(model: VAE, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The learning-rate schedule, stepped once per epoch; None for a constant rate."""
    if config.lr_schedule == "burda":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, burda_lr_factor)
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.lr_decay, patience=config.lr_patience, min_lr=config.min_lr
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


def check_data_fits(model: VAE, data: Splits) -> None:
    if data.input_size != model.input_size:
        raise VaekitError(
            f"the data has {data.input_size} values per example but the architecture starts with {model.input_size}"
        )


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Steps until the first of --epochs and --max-steps is reached."""
    limits = [config.max_steps] if config.max_steps else []
    if config.epochs:
        limits.append(config.epochs * steps_per_epoch)
    return min(limits)


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The shuffled order of epoch `epoch`: a function of (seed, epoch) alone, so resume can redo it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).to(device)


def create_run_dir(out: Path, architecture: tuple[int, ...]) -> Path:
    """A new folder out/<yymmdd_HHMMSS>_vae_<architecture>, as the original named its runs."""
    name = f"{time.strftime('%y%m%d_%H%M%S')}_vae_{'_'.join(map(str, architecture))}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for suffix in [""] + [f"_{i}" for i in range(1, 1000)]:
            run_dir = out / f"{name}{suffix}"
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                continue
    except OSError as error:
        raise VaekitError(f"cannot create a run folder in {out}: {error.strerror}") from None
    raise VaekitError(f"cannot find a free run folder name in {out}")


def write_run_config(run_dir: Path, model: VAE, config: TrainConfig, data_config: DataConfig | None) -> None:
    payload = {"format_version": FORMAT_VERSION, "model": to_dict(model.config), "train": to_dict(config)}
    if data_config is not None:
        payload["data"] = to_dict(data_config)
    write_json(run_dir / CONFIG_FILE, payload)


# -- checkpoints -----------------------------------------------------------------------------------


def save_state(run_dir: Path, model: VAE, optimizer: torch.optim.Optimizer, scheduler: Any, progress: Progress) -> None:
    """Write model, optimizer, schedule, progress and RNG state to run_dir/checkpoint.safetensors, atomically."""
    tensors = {f"model.{name}": t for name, t in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, slots in optimizer_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optimizer.{index}.{slot}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and model.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(model.device)
    state = {
        "format_version": FORMAT_VERSION,
        "progress": progress.__dict__,
        "param_groups": optimizer_state["param_groups"],
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    save_checkpoint(run_dir / CHECKPOINT_FILE, tensors, state)


def restore_checkpoint(run_dir: Path, model: VAE, optimizer: torch.optim.Optimizer, scheduler: Any = None) -> Progress:
    """Load what save_state wrote back into model, optimizer and schedule; return the saved progress."""
    tensors, state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    if state.get("format_version") != FORMAT_VERSION:
        raise VaekitError(f"{run_dir / CHECKPOINT_FILE} was written by an incompatible vaekit version")
    model_state = {name[len("model.") :]: t for name, t in tensors.items() if name.startswith("model.")}
    load_checked_state(model, model_state, run_dir / CHECKPOINT_FILE)
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, slot = name.split(".", 2)
            slots.setdefault(int(index), {})[slot] = tensor
    try:
        optimizer.load_state_dict({"state": slots, "param_groups": state["param_groups"]})
    except (ValueError, KeyError) as error:
        raise VaekitError(f"{run_dir / CHECKPOINT_FILE}: optimizer state does not fit the model: {error}") from None
    if scheduler is not None and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and model.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], model.device)
    return Progress(**state["progress"])


def save_weights(path: Path, model: VAE) -> None:
    """The model's weights alone, as safetensors, written atomically (the best-on-validation copy)."""
    from safetensors.torch import save_file

    from vaekit.checkpoint import atomic_write_with

    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp)))


def load_weights(path: Path, model: VAE) -> None:
    from safetensors.torch import load_file

    load_checked_state(model, {name: t.to(model.device) for name, t in load_file(str(path)).items()}, path)


def resume_configs(run_dir: Path) -> tuple[dict[str, Any], TrainConfig, DataConfig]:
    """The saved model config (as a dict), training and data configs of a run to resume."""
    payload = read_run_config(run_dir)
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise VaekitError(f"{run_dir} has no {CHECKPOINT_FILE} to resume from")
    return payload["model"], from_dict(TrainConfig, payload["train"]), from_dict(DataConfig, payload.get("data", {}))


# -- logging and signals -------------------------------------------------------------------------------


class Logger:
    """Progress bar and TensorBoard scalars; syncs with the device every LOG_EVERY steps only."""

    def __init__(self, run_dir: Path, model: VAE, example: torch.Tensor, total_steps: int, start_step: int, show_bar: bool):
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        if start_step == 0:
            add_graph(self.writer, model, example)
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not show_bar, unit="step", dynamic_ncols=True)
        self.sums = torch.zeros(3, device=example.device)
        self.count = 0
        self.last_valid = math.nan

    def train_step(self, step: int, cost: torch.Tensor, terms: Any) -> None:
        self.sums += torch.stack([cost, terms.reconstruction.detach().mean(), terms.kl.detach().mean()])
        self.count += 1
        if step % LOG_EVERY == 0:
            self.flush(step)

    def flush(self, step: int) -> None:
        if self.count == 0:
            return
        total, reconstruction, kl = (self.sums / self.count).tolist()
        for name, value in (("total", total), ("reconstruction", reconstruction), ("kl", kl)):
            self.writer.add_scalar(f"train/{name}", value, step)
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(cost=f"{total:.2f}", valid=f"{self.last_valid:.2f}")
        self.sums.zero_()
        self.count = 0

    def valid(self, step: int, terms: dict[str, float]) -> None:
        self.last_valid = -terms.get("iwae_bound", terms["elbo"])
        self.writer.add_scalar("valid/total", -terms["elbo"], step)
        if "iwae_bound" in terms:
            self.writer.add_scalar("valid/iwae_bound", terms["iwae_bound"], step)
        self.writer.add_scalar("valid/reconstruction", terms["reconstruction"], step)
        self.writer.add_scalar("valid/kl", terms["kl"], step)
        self.flush(step)

    def close(self, step: int) -> None:
        self.flush(step)
        self.bar.update(step - self.bar.n)
        self.bar.close()
        self.writer.close()


def add_graph(writer: Any, model: VAE, example: torch.Tensor) -> None:
    """Put the model's graph in TensorBoard; a tracing failure costs the picture, not the run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            writer.add_graph(model, example)
        except Exception:  # noqa: BLE001 - the graph is a nicety
            pass


class StopRequest:
    """Turn SIGINT/SIGTERM into a request to stop after the current step, so the run is saved."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

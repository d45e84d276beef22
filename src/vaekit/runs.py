"""A run folder: its config.json, its checkpoint, and the rules by which a run resumes.

`train.py` makes and fills the folder; here is what goes into it and comes back out. A checkpoint
(`checkpoint.py` is its file format) holds the model, the optimizer, the learning-rate schedule, the
`Progress` (step, epoch, position in the epoch, best validation cost, history) and every random stream,
so that a resumed run goes on as if it had never stopped. A resumed run keeps the settings it was started
with, on the same examples: only RESUME_MAY_CHANGE's fields may differ.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import math
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaekit.checkpoint import CHECKPOINT_FILE, load_checkpoint, load_tensors, save_checkpoint, save_tensors
from vaekit.config import RESUME_MAY_CHANGE, DataConfig, ModelConfig, TrainConfig, changed_fields, from_dict, to_dict, write_json
from vaekit.data import Splits, examples_digest
from vaekit.distributed import Cluster, SharedNoise, check_world_size, gather_tensors
from vaekit.errors import VaekitError
from vaekit.model import CONFIG_FILE, FORMAT_VERSION, VAE, WEIGHTS_FILE, load_checked_state, read_run_config

BEST_FILE = "best.safetensors"  # the best weights on validation, with --patience


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of the current epoch already done
    best_valid_cost: float = math.inf  # at epoch ends
    best_epoch: int = 0
    best_step: int = 0  # the step at the best epoch's end
    bad_epochs: int = 0  # epochs since the best one
    seconds: float = 0.0  # wall time spent training, over all sessions
    skipped_batches: int = 0  # batches with a non-finite loss or gradient, skipped on request
    train_seconds: float = 0.0  # wall time of the training steps over all sessions (validation and checkpoints not counted)
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_shape: tuple[int, int] | None = None  # (training examples, global batch size) of the epochs counted here



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


def check_resumable(run_dir: Path) -> None:
    """Refuse to resume a folder whose trained weights have no checkpoint: training would start again from
    random weights and overwrite them. (A run killed before its first checkpoint has neither: it restarts.)"""
    if not run_dir.is_dir():
        raise VaekitError(f"{run_dir} is not a run folder to resume (no such folder)")
    if not (run_dir / CHECKPOINT_FILE).exists() and (run_dir / WEIGHTS_FILE).exists():
        raise VaekitError(f"{run_dir} holds trained weights but no {CHECKPOINT_FILE} to resume from "
                          "(the optimizer's state and the step are gone); train a new run instead")


def check_same_settings(run_dir: Path, model: VAE, config: TrainConfig, data: Splits, data_config: DataConfig | None) -> None:
    """A resumed run goes on with the settings it started with (its optimizer, schedule and place in the epoch
    were made by them), on the same examples: refuse any other change than those RESUME_MAY_CHANGE names."""
    if not (run_dir / CHECKPOINT_FILE).exists():
        return  # nothing to resume: the run starts again in its folder
    payload = read_run_config(run_dir)
    changed = changed_fields(from_dict(ModelConfig, payload["model"]), model.config)
    changed += changed_fields(from_dict(TrainConfig, saved_train_values(payload, config)), config, (*RESUME_MAY_CHANGE, "out"))
    if data_config is not None and "data" in payload:
        changed += changed_fields(from_dict(DataConfig, payload["data"]), data_config)
    if changed:
        raise VaekitError(f"{run_dir} goes on with the settings it was started with; only {', '.join(RESUME_MAY_CHANGE)} "
                          f"may change on resume, not {', '.join(changed)}")
    digest = examples_digest(data.train.x, data.valid.x)
    if payload.get("data_digest", digest) != digest:  # (runs of earlier versions recorded none)
        raise VaekitError(f"{run_dir} was trained on other examples than these ({len(data.train)} train / {len(data.valid)} "
                          "valid): resume it on its own data (the files changed, or --data-dir holds others); start a new "
                          "run to train on these")


def record_resumed_config(run_dir: Path, config: TrainConfig, data_config: DataConfig | None, device: torch.device,
                          cluster: Cluster) -> None:
    """Write the training and data settings a resumed run goes on with into its config.json, and what runs this
    session, leaving the rest (and `out`, the folder the run was made in: a resumed run stays in its own,
    whatever out says)."""
    payload = read_run_config(run_dir)
    payload["train"] = {**to_dict(config), "out": payload["train"]["out"]}
    if data_config is not None:
        payload["data"] = to_dict(data_config)
    sessions = payload.get("sessions")
    payload["sessions"] = (sessions if isinstance(sessions, list) else []) + [session_record(device, cluster)]
    write_json(run_dir / CONFIG_FILE, payload)


def write_run_config(run_dir: Path, model: VAE, config: TrainConfig, data: Splits, data_config: DataConfig | None,
                     device: torch.device, cluster: Cluster) -> None:
    payload = {
        "format_version": FORMAT_VERSION,
        "model": to_dict(model.config),
        "train": to_dict(config),
        "distributed": {"world_size": cluster.world_size, "global_batch_size": config.batch_size * cluster.world_size},
    }
    if data_config is not None:
        payload["data"] = to_dict(data_config)
    if data.class_names:
        payload["class_names"] = list(data.class_names)  # label k is class_names[k]
    payload["data_digest"] = examples_digest(data.train.x, data.valid.x)  # a resume checks that it sees the same data
    payload["sessions"] = [session_record(device, cluster)]
    write_json(run_dir / CONFIG_FILE, payload)


def session_record(device: torch.device, cluster: Cluster) -> dict[str, Any]:
    """What trains the run in this session (one entry of config.json's "sessions", one per start or resume):
    when it started, the versions, the device and the CPU threads, which the results may depend on."""
    try:
        version = importlib.metadata.version("vaekit")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = None
    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "vaekit": version,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "world_size": cluster.world_size,
    }


def device_name(device: torch.device) -> str:
    """"cpu (x86_64)", or "cuda:0 (NVIDIA H100 80GB HBM3)": the device and what it is."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.machine() or 'unknown'})"


# -- checkpoints -----------------------------------------------------------------------------------


def save_state(run_dir: Path, model: VAE, optimizer: torch.optim.Optimizer, scheduler: Any, progress: Progress,
               noise: SharedNoise, cluster: Cluster) -> None:
    """Write model, optimizer, schedule, progress and every RNG state to run_dir/checkpoint.safetensors, atomically.

    Collective under torchrun (each rank's RNG state is gathered); only rank 0 writes.
    """
    rng_states = {"cpu": torch.get_rng_state()}
    if model.device.type == "cuda":
        rng_states["cuda"] = torch.cuda.get_rng_state(model.device)
    tensors = {}
    for kind, state in rng_states.items():
        for rank, rank_state in enumerate(gather_tensors(state.to(model.device), cluster)):
            tensors[f"rng.{kind}.{rank}"] = rank_state.cpu()
    if not cluster.is_main:
        return
    tensors["rng.noise"] = noise.generator.get_state()  # its size and meaning depend on the kind of device
    tensors["progress.history"] = history_tensor(progress.history)
    tensors.update({f"model.{name}": t for name, t in model.state_dict().items()})
    optimizer_state = optimizer.state_dict()
    for index, slots in optimizer_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optimizer.{index}.{slot}"] = value if torch.is_tensor(value) else torch.tensor(value)
    state = {
        "format_version": FORMAT_VERSION,
        "world_size": cluster.world_size,
        "noise_device": noise.device.type,
        "threads": torch.get_num_threads(),  # a conv model's sums depend on it
        "progress": {**progress.__dict__, "history": []},  # the history is a tensor: JSON in the header grew without bound
        "param_groups": optimizer_state["param_groups"],
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    save_checkpoint(run_dir / CHECKPOINT_FILE, tensors, state)


def progress_of(saved: dict[str, Any], history: torch.Tensor | None) -> Progress:
    """The Progress a checkpoint saved: its history from the tensor (earlier versions kept it in the JSON state, and
    no best_step, which their history gives); fields a later version added are left out, not taken for damage."""
    known = {f.name for f in dataclasses.fields(Progress)}
    progress = Progress(**{name: value for name, value in saved.items() if name in known})
    if history is not None:
        progress.history = history_entries(history)
    if "best_step" not in saved and progress.best_epoch:
        progress.best_step = next((int(entry["step"]) for entry in progress.history if entry["epoch"] == progress.best_epoch), 0)
    return progress


HISTORY_COLUMNS = ("step", "epoch", "valid_cost", "seconds")


def history_tensor(history: list[dict[str, float]]) -> torch.Tensor:
    """The validation history as a float64 tensor (entries, HISTORY_COLUMNS): a checkpoint's tensors have no size
    limit and are written at memory speed (as JSON in the header, a million entries passed safetensors' 100 MB)."""
    rows = [[entry.get(column, math.nan) for column in HISTORY_COLUMNS] for entry in history]
    return torch.tensor(rows, dtype=torch.float64).reshape(len(history), len(HISTORY_COLUMNS))


def history_entries(table: torch.Tensor) -> list[dict[str, float]]:
    """history_tensor's entries back, steps and epochs as ints."""
    return [{"step": int(step), "epoch": int(epoch), "valid_cost": cost, "seconds": seconds}
            for step, epoch, cost, seconds in table.tolist()]


def check_same_epochs(progress: Progress, examples: int, global_batch: int, steps_per_epoch: int) -> None:
    """A resumed run must see the epochs its checkpoint counted: the same number of training examples in
    batches of the same size (else its place in the epoch, and the shuffles, mean something else)."""
    saved = tuple(progress.epoch_shape) if progress.epoch_shape else None  # None: a checkpoint from before it was kept
    if (saved is not None and saved != (examples, global_batch)) or progress.position > steps_per_epoch:
        was = f"{saved[0]} training examples in batches of {saved[1]}" if saved else "other data"
        raise VaekitError(f"the checkpoint was written training on {was}; this run has {examples} in batches of "
                          f"{global_batch}: resume with the run's own data and batch size")


def restore_checkpoint(run_dir: Path, model: VAE, optimizer: torch.optim.Optimizer, scheduler: Any, noise: SharedNoise,
                       cluster: Cluster) -> Progress:
    """Load what save_state wrote back into model, optimizer, schedule and RNGs; return the saved progress."""
    path = run_dir / CHECKPOINT_FILE
    tensors, state = load_checkpoint(path)
    if state.get("format_version") != FORMAT_VERSION:
        raise VaekitError(f"{path} was written by an incompatible vaekit version")
    check_world_size(state.get("world_size", 1), cluster)
    model_state = {name[len("model.") :]: t for name, t in tensors.items() if name.startswith("model.")}
    load_checked_state(model, model_state, path)
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, slot = name.split(".", 2)
            slots.setdefault(int(index), {})[slot] = tensor
    try:
        optimizer.load_state_dict({"state": slots, "param_groups": state["param_groups"]})
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(tensors[f"rng.cpu.{cluster.rank}"])
        if model.device.type == "cuda" and f"rng.cuda.{cluster.rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{cluster.rank}"], model.device)
        progress = progress_of(state["progress"], tensors.get("progress.history"))
        note_other_threads(model, state.get("threads"))
        restore_noise(noise, tensors["rng.noise"], state.get("noise_device", noise.device.type), progress.step)
        return progress
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise VaekitError(f"{path} does not fit this run: {error}") from None


def note_other_threads(model: VAE, saved_threads: int | None) -> None:
    """A conv model resumed on the CPU with another thread count goes on as a run at that count would: oneDNN's
    convolutions sum in an order that depends on it (the dense layers' products do not)."""
    if model.config.model == "conv" and model.device.type == "cpu" and saved_threads not in (None, torch.get_num_threads()):
        warnings.warn(f"the run was checkpointed with {saved_threads} threads and resumes with {torch.get_num_threads()}: "
                      "its convolutions round differently, so it is no longer bit for bit the uninterrupted run", stacklevel=2)


def restore_noise(noise: SharedNoise, saved_state: torch.Tensor, saved_device: str, step: int) -> None:
    """The noise stream where the checkpoint left it; on another kind of device (--device changed on
    resume), a fresh one, with a note: the run goes on, no longer drawing what an uninterrupted run would."""
    if saved_device == noise.device.type:
        noise.generator.set_state(saved_state)
        return
    noise.restart_at(step)
    warnings.warn(f"the run was checkpointed on {saved_device} and resumes on {noise.device.type}: its noise stream starts "
                  "afresh, so it goes on as a different (equally valid) run would, not as it would have without the move",
                  stacklevel=2)


def save_weights(path: Path, model: VAE) -> None:
    """The model's weights alone, checksummed and written atomically (the best-on-validation copy)."""
    save_tensors(path, model.state_dict())


def load_weights(path: Path, model: VAE) -> None:
    tensors, _ = load_tensors(path, "best-weights file")
    load_checked_state(model, {name: t.to(model.device) for name, t in tensors.items()}, path)


def resume_configs(run_dir: Path, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], TrainConfig, DataConfig]:
    """The saved model config (as a dict), training and data configs of a run to resume, with the overrides (of
    RESUME_MAY_CHANGE's fields) in place of the saved values.

    A run killed before its first checkpoint has none: it then restarts from step 0 in the same folder.
    """
    payload = read_run_config(run_dir)
    if "train" not in payload:
        raise VaekitError(f"{run_dir} holds a saved model but no training run to resume")
    if "data" not in payload:  # as `cli.run_data_config`: never guess the data
        raise VaekitError(f"{run_dir} does not record its data (it was trained from Python on data it was handed): "
                          "resume it from Python, vaekit.train(..., run_dir=...)")
    overrides = overrides or {}
    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    train_values = {**saved_train_values(payload), **{k: v for k, v in overrides.items() if k not in data_fields}}
    data_values = {**payload["data"], **{k: v for k, v in overrides.items() if k in data_fields}}
    return payload["model"], from_dict(TrainConfig, train_values), from_dict(DataConfig, data_values)


def saved_train_values(payload: dict[str, Any], config: TrainConfig | None = None) -> dict[str, Any]:
    """A run's saved training settings, as today's TrainConfig takes them: an empty out (which earlier versions
    took for the current folder) is ".", and the fields a resume may change are config's (a saved value that
    today's checks refuse, a --dist-timeout past their limit say, is then not the run's any more)."""
    values = {**payload["train"]}
    if values.get("out") == "":
        values["out"] = "."
    if config is not None:
        values.update({name: getattr(config, name) for name in RESUME_MAY_CHANGE if name in values})
    return values

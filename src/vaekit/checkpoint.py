"""Training checkpoints and weights as safetensors files, written atomically and checksummed.

A checkpoint holds tensors (model, optimizer state, RNG states) in safetensors and
everything else (step, epoch, scores, optimizer hyper-parameters) as JSON in the file's
metadata, so nothing is ever unpickled. Each write goes to a temporary file that is
fsynced and renamed over the old one: a crash leaves the previous checkpoint whole.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from vaekit.errors import VaekitError
from vaekit.files import atomic_write_with

CHECKPOINT_FILE = "checkpoint.safetensors"


CHECKSUM_COVERS = "tensors and metadata"  # files written before this key covered their tensors only


def file_sha256(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """A digest of every tensor's name, dtype, shape and bytes, then of the metadata (a checkpoint's step,
    say) but its own "sha256": safetensors itself has no checksum."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    if metadata is not None:
        digest.update(json.dumps({k: v for k, v in metadata.items() if k != "sha256"}, sort_keys=True).encode())
    return digest.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write tensors as safetensors, with a sha256 of them and of the metadata in the metadata."""
    from safetensors.torch import save_file

    cpu_tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    metadata = {**(metadata or {}), "checksum_covers": CHECKSUM_COVERS}
    metadata["sha256"] = file_sha256(cpu_tensors, metadata)
    from safetensors import SafetensorError

    def write(tmp: Path) -> None:
        try:
            save_file(cpu_tensors, str(tmp), metadata=metadata)
        except SafetensorError as error:  # how safetensors' writer reports a full disk
            raise OSError(str(error)) from None
        sort_metadata_in_header(tmp)

    atomic_write_with(Path(path), write)


def sort_metadata_in_header(path: Path) -> None:
    """Put the header's metadata keys in sorted order, in place: safetensors writes them in an order that changes
    from process to process, so that two identical runs' files would differ by their bytes (and their sha256sum)."""
    with open(path, "r+b") as file:
        length = int.from_bytes(file.read(8), "little")
        raw = file.read(length)
        header = json.loads(raw)
        header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= length and text != raw[: len(text)]:  # the same bytes in another order: the same length
            file.seek(8)
            file.write(text.ljust(length, b" "))  # safetensors pads its header with spaces


def load_tensors(path: Path, what: str = "safetensors file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors and metadata back; refuse a missing, truncated or altered file clearly."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise VaekitError(f"no {what} at {path}")
    try:
        open(path, "rb").close()  # safetensors says "No such file" for a file it may not read: the system's words
    except OSError as error:
        raise VaekitError(f"cannot read {path}: {error.strerror}") from None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise VaekitError(f"{path} is not a readable {what}: {error}") from None
    if "sha256" not in metadata:
        raise VaekitError(f"{path} has no checksum: it was not written by vaekit")
    covers = metadata.get("checksum_covers")
    if covers not in (None, CHECKSUM_COVERS):
        raise VaekitError(f"{path} is damaged: its metadata were altered")
    if file_sha256(tensors, metadata if covers else None) != metadata["sha256"]:
        raise VaekitError(f"{path} is damaged: its tensors or metadata do not match their checksum")
    return tensors, metadata


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Atomically write tensors and a JSON-able state dict to one safetensors file."""
    save_tensors(path, tensors, {"state": json.dumps(state)})


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read (tensors, state) back, with a clear error for a missing or damaged file."""
    tensors, metadata = load_tensors(path, "vaekit checkpoint")
    if "state" not in metadata:
        raise VaekitError(f"{path} holds weights but no training state: it is not a checkpoint (a model.safetensors copied there?)")
    try:
        state = json.loads(metadata["state"])
    except ValueError as error:
        raise VaekitError(f"{path} is not a readable vaekit checkpoint: {error}") from None
    return tensors, state

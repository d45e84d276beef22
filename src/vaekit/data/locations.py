"""Where data files are found: --data-dir, else $VAEKIT_DATA (a folder shared by several data sets), else the
cache ($VAEKIT_CACHE, by default ~/.cache/vaekit), where downloads and decoded image folders are kept."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from vaekit.config import DataConfig
from vaekit.errors import VaekitError


def data_folder(config: DataConfig, probe: str) -> Path:
    """--data-dir, else $VAEKIT_DATA, else the cache: the first folder holding probe (or probe.gz)."""
    candidates = [config.data_dir] if config.data_dir else [os.environ.get("VAEKIT_DATA"), str(cache_folder())]
    for folder in filter(None, candidates):
        if find_file(Path(folder), probe) is not None:
            return Path(folder)
    where = config.data_dir or " or ".join(filter(None, candidates))
    raise VaekitError(f"cannot find {probe}(.gz) in {where}; pass the folder that holds it with --data-dir")


def cache_folder() -> Path:
    return Path(os.environ.get("VAEKIT_CACHE") or Path.home() / ".cache" / "vaekit")  # (set but empty: unset)


def find_file(folder: Path, name: str) -> Path | None:
    """folder/name with or without a .gz ending, whichever exists."""
    stem = name[:-3] if name.endswith(".gz") else name
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The file's bytes (the first `limit` of them), gunzipped if it ends in .gz, with a clear error if it is damaged."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            return handle.read(-1 if limit is None else limit)
    except (OSError, EOFError, zlib.error) as error:
        raise VaekitError(f"cannot read {path}: {error}") from None

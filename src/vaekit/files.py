"""Files written whole or not at all: a temporary file beside the target, fsynced, then renamed onto it.

The bottom layer of vaekit's writes (run configs, checkpoints, figures, GIFs, pages, downloads): a
crash leaves the previous file whole, and a link at the target is replaced, never written through.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from vaekit.errors import VaekitError


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Let write(tmp) fill a temporary file beside path, fsync it, then rename it onto path."""
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as error:
        raise VaekitError(f"cannot write to {path.parent}: {error.strerror}") from None
    tmp = Path(tmp_name)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a writer that was killed
        if stale != tmp:
            stale.unlink(missing_ok=True)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp (and safetensors' own replace) make 0600; the usual mode
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise VaekitError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(path.parent)


def current_umask() -> int:
    """The process's umask, read from /proc where Linux shows it: setting it to read it (the fallback) would, for an
    instant, give files that other threads create the wrong mode."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""Files written whole or not at all: a failed write keeps the old file, the usual mode, the umask read not set."""

import os
from pathlib import Path

import pytest

from vaekit import VaekitError
from vaekit.files import atomic_write_bytes, current_umask


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "file.json"
    atomic_write_bytes(target, b"old")

    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(VaekitError, match="No space left"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux shows a process's umask in /proc")
def test_the_umask_is_read_without_setting_it(monkeypatch, tmp_path):
    """Setting the umask to read it would, for an instant, give other threads' new files the wrong mode."""
    old = os.umask(0o027)
    try:
        def no_setting(mask):
            raise AssertionError("the umask was set")

        monkeypatch.setattr(os, "umask", no_setting)
        assert current_umask() == 0o027
        atomic_write_bytes(tmp_path / "x.bin", b"x")
        assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o640
    finally:
        monkeypatch.undo()
        os.umask(old)

"""Shared fixtures: tiny configs, the reference data folder, a scratch run folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tiny test models gain nothing from threads, and on a busy machine idle threads spin:
# one thread here and in every `vaekit` subprocess the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $VAEKIT_DATA): required in CI, skipped with a reason elsewhere."""
    folder = Path(os.environ.get("VAEKIT_DATA", REPO.parent / "shared" / "data"))
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        message = f"reference data not found in {folder} (set VAEKIT_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits, the offline default data set."""
    from vaekit import DataConfig, load_data

    return load_data(DataConfig())


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the download cache and $VAEKIT_DATA at empty folders."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("VAEKIT_CACHE", str(cache))
    monkeypatch.delenv("VAEKIT_DATA", raising=False)
    return cache

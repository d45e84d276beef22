"""The command line end to end, in subprocesses as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def vaekit(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"vaekit {' '.join(args)} failed:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = vaekit("train", "--arch", "64,64,2", "--epochs", "3", "--seed", "1", "--out", str(out), "--no-progress")
    written = [line.split("wrote ", 1)[1] for line in result.stdout.splitlines() if "wrote " in line]
    assert written and Path(written[0]).parent == out
    return Path(written[0])


def test_train_writes_a_named_run(run_dir):
    assert run_dir.name.endswith("_vae_64_64_2")
    assert (run_dir / "model.safetensors").is_file()


def test_same_seed_gives_the_same_weights(run_dir, tmp_path):
    vaekit("train", "--arch", "64,64,2", "--epochs", "3", "--seed", "1", "--out", str(tmp_path), "--no-progress")
    from safetensors.torch import load_file

    (again,) = tmp_path.iterdir()
    first, second = (load_file(str(run / "model.safetensors")) for run in (run_dir, again))
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_evaluate_json_reports_nats_per_example(run_dir):
    report = json.loads(vaekit("evaluate", str(run_dir), "--split", "test", "--json").stdout)
    assert report["split"] == "test" and report["n"] == 250
    assert report["elbo"] < 0 and report["reconstruction"] > 0 and report["kl"] > 0
    assert abs(report["elbo"] + report["reconstruction"] + report["kl"]) < 1e-6


def test_evaluate_table(run_dir):
    assert "reconstruction" in vaekit("evaluate", str(run_dir)).stdout


def test_sample_writes_a_png(run_dir, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    vaekit("sample", str(run_dir), "-n", "16", "--out", str(out))
    image = Image.open(out)
    assert image.size == (4 * (4 * 9 + 1), 4 * (4 * 9 + 1))  # 4x4 grid of 8x8 digits, 1 px padding, x4


def test_help_is_useful():
    text = vaekit("--help").stdout
    for command in ("train", "evaluate", "sample"):
        assert command in text
    train_help = vaekit("train", "--help").stdout
    for flag in ("--data", "--data-dir", "--arch", "--epochs", "--batch-size", "--lr", "--seed", "--out", "--device", "--resume"):
        assert flag in train_help


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--arch", "64,abc,2"], "bad architecture"),
        (["train", "--arch", "64,2"], "at least an input size"),
        (["train", "--epochs", "x"], "expected an integer"),
        (["train", "--batch-size", "0"], "batch-size must be at least 1"),
        (["train", "--lr", "nan"], "finite number"),
        (["train", "--bogus"], "unrecognized arguments"),
        (["train", "--data", "nowhere.npz"], "no such file"),
        (["train", "--arch", "784,32,2", "--epochs", "1"], "64 values per example"),
        (["evaluate", "/nonexistent/run"], "not a vaekit run folder"),
        (["sample", "/nonexistent/run"], "not a vaekit run folder"),
        (["train", "--resume", "/nonexistent/run"], "not a vaekit run folder"),
    ],
)
def test_mistakes_give_one_line_and_a_nonzero_exit(args, message, tmp_path):
    result = vaekit(*args, "--out", str(tmp_path), check=False) if args[0] == "train" else vaekit(*args, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_data_of_the_wrong_size_for_a_saved_model(run_dir, tmp_path):
    import numpy as np

    np.save(tmp_path / "wide.npy", np.random.rand(50, 100).astype(np.float32))
    result = vaekit("evaluate", str(run_dir), "--data", str(tmp_path / "wide.npy"), check=False)
    assert result.returncode == 1 and "the model takes 64" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY garbage"])
def test_empty_or_broken_data_files(content, tmp_path):
    (tmp_path / "bad.npy").write_bytes(content)
    result = vaekit("train", "--data", str(tmp_path / "bad.npy"), "--out", str(tmp_path), check=False)
    assert result.returncode == 1 and "cannot read" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resume_of_a_saved_model_that_is_no_training_run(tmp_path):
    from vaekit import VAE

    VAE([64, 8, 2]).save(tmp_path / "model-only")
    result = vaekit("train", "--resume", str(tmp_path / "model-only"), check=False)
    assert result.returncode == 1 and "no training run to resume" in result.stderr


def test_a_run_trained_on_relative_paths_evaluates_from_another_folder(tmp_path):
    import numpy as np

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "data").mkdir(parents=True)
    elsewhere.mkdir()
    np.save(work / "data" / "bits.npy", (np.random.default_rng(0).random((60, 16)) > 0.5).astype("float32"))
    vaekit("train", "--data", "data/bits.npy", "--arch", "16,8,2", "--epochs", "1", "--out", "runs", "--no-progress", cwd=work)
    (run,) = (work / "runs").iterdir()
    saved = json.loads((run / "config.json").read_text())["data"]
    assert saved["data"] == str(work / "data" / "bits.npy")
    report = json.loads(vaekit("evaluate", str(run), "--json", cwd=elsewhere).stdout)
    assert report["n"] == 6


FAULTS_OF_A_SECOND_ESTIMATE = """
import resource, sys, torch, vaekit
from vaekit.cli import keep_freed_memory
from vaekit.evaluate import importance_sampled_log_px
kept = keep_freed_memory()
model, x = vaekit.VAE((784, 500, 500, 50)), (torch.rand(2, 784) > 0.5).float()
importance_sampled_log_px(model, x, 4096)  # the heap grows to the estimator's peak once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
importance_sampled_log_px(model, x, 4096)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_keep_freed_memory_lets_the_estimator_reuse_its_pages():
    """keep_freed_memory(), which the vaekit command starts with: a second estimate over 8 chunks of
    1024 codes reuses the first one's memory (glibc's default can fault in ~10 MB anew per chunk)."""
    result = subprocess.run([sys.executable, "-c", FAULTS_OF_A_SECOND_ESTIMATE], capture_output=True, text=True, timeout=300, check=True)
    kept, faults = result.stdout.split()
    if kept != "True":
        pytest.skip("not glibc's malloc")
    # pages of 4 KB: here 0-1,300 with it (at most one chunk's tensor of fresh heap), 3,000-20,000 with glibc's
    # default (a fresh ~10 MB every chunk or so)
    assert int(faults) < 2000

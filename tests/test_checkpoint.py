"""Never lose a run: atomic writes, damaged files refused, exact resume after SIGKILL, NaN stops."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vaekit
from vaekit import VAE, TrainConfig, VaekitError
from vaekit.checkpoint import CHECKPOINT_FILE, file_sha256, load_checkpoint, load_tensors, save_tensors
from vaekit.train import train

from helpers import poison_loss

ARGS = ["--arch", "64,48,2", "--epochs", "4", "--batch-size", "32", "--seed", "5", "--dropout", "0.1", "--no-progress"]


def vaekit_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaekit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def run_folder(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("full")
    code, _, err = finish(vaekit_cli("train", *ARGS, "--out", str(out)))
    assert code == 0, err
    return weights(run_folder(out))


def started_run(out: Path, timeout: float = 120) -> Path:
    """The run folder, once the training process has created it and written config.json."""
    deadline = time.monotonic() + timeout
    while not list(out.glob("*/config.json")):
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.005)
    return run_folder(out)


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.parametrize("when", ["before the first checkpoint", "after the first checkpoint", "later"])
def test_sigkill_then_resume_is_bit_identical(when, uninterrupted, tmp_path):
    process = vaekit_cli("train", *ARGS, "--checkpoint-every", "7", "--out", str(tmp_path))
    run = started_run(tmp_path)
    if when != "before the first checkpoint":
        wait_for(run / CHECKPOINT_FILE)
        if when == "later":
            time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    code, _, err = finish(vaekit_cli("train", "--resume", str(run), "--no-progress"))
    assert code == 0, err
    assert_bit_identical(weights(run), uninterrupted)


def test_sigterm_saves_and_resume_is_bit_identical(uninterrupted, tmp_path):
    process = vaekit_cli("train", *ARGS, "--out", str(tmp_path))
    run = started_run(tmp_path)
    wait_for(run / CHECKPOINT_FILE)  # the first epoch is done
    process.send_signal(signal.SIGTERM)
    code, out, _ = finish(process)
    if code == 0:  # the run had already finished when the signal came
        pytest.skip("training finished before SIGTERM arrived")
    assert code == 130 and "interrupted and saved" in out
    assert load_checkpoint(run / CHECKPOINT_FILE)[1]["progress"]["step"] > 0
    code, _, err = finish(vaekit_cli("train", "--resume", str(run), "--no-progress"))
    assert code == 0, err
    assert_bit_identical(weights(run), uninterrupted)


# -- damaged and foreign files ----------------------------------------------------------------


@pytest.fixture
def saved(tmp_path) -> Path:
    VAE([64, 16, 2]).save(tmp_path)
    return tmp_path


def flip_bit(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_weights_is_caught(saved):
    flip_bit(saved / "model.safetensors", 40)
    with pytest.raises(VaekitError, match="damaged"):
        vaekit.load(saved)


def test_a_truncated_weights_file_is_caught(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(VaekitError, match="not a readable"):
        vaekit.load(saved)


def test_weights_of_another_shape_are_caught(saved, tmp_path):
    other = tmp_path / "other"
    VAE([64, 17, 2]).save(other)
    (other / "model.safetensors").replace(saved / "model.safetensors")
    with pytest.raises(VaekitError, match="config.json needs"):
        vaekit.load(saved)


def test_a_config_from_another_version_is_refused(saved):
    config = json.loads((saved / "config.json").read_text())
    config["format_version"] = 99
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(VaekitError, match="format version 99"):
        vaekit.load(saved)


@pytest.mark.parametrize(("text", "message"), [("", "is not readable JSON"), ("{", "is not readable JSON"),
                                               ("[]", "is not a vaekit run config"),
                                               ('{"format_version": 1, "model": {"architecture": "abc"}}', "architecture must be a list")])
def test_a_broken_config_is_refused(saved, text, message):
    (saved / "config.json").write_text(text)
    with pytest.raises(VaekitError, match=message):
        vaekit.load(saved)


def test_safetensors_failing_to_write_is_one_clear_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    target = tmp_path / "checkpoint.safetensors"
    save_tensors(target, {"w": torch.ones(3)})
    before = target.read_bytes()

    def full_disk(*args, **kwargs):  # as safetensors' writer reports it
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    with pytest.raises(VaekitError, match="cannot write .*No space left on device"):
        save_tensors(target, {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


def test_weights_where_a_checkpoint_should_be_are_named_as_such(tmp_path):
    save_tensors(tmp_path / CHECKPOINT_FILE, {"w": torch.ones(3)})
    with pytest.raises(VaekitError, match="holds weights but no training state"):
        load_checkpoint(tmp_path / CHECKPOINT_FILE)


def test_an_altered_number_in_the_metadata_is_caught(tmp_path):
    save_tensors(tmp_path / "c.safetensors", {"w": torch.ones(3)}, {"progress": json.dumps({"step": 22})})
    data = (tmp_path / "c.safetensors").read_bytes()
    (tmp_path / "c.safetensors").write_bytes(data.replace(b'\\"step\\": 22', b'\\"step\\": 32'))  # one bit: 2 -> 3
    assert (tmp_path / "c.safetensors").read_bytes() != data
    with pytest.raises(VaekitError, match="do not match their checksum"):
        load_tensors(tmp_path / "c.safetensors")


def test_files_checksummed_on_their_tensors_alone_still_load(tmp_path):
    from safetensors.torch import save_file

    tensors = {"w": torch.arange(4.0)}
    old_digest = file_sha256(tensors)  # as vaekit wrote files before the metadata were covered
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"sha256": old_digest, "note": "kept"})
    loaded, metadata = load_tensors(tmp_path / "old.safetensors")
    assert torch.equal(loaded["w"], tensors["w"]) and metadata["note"] == "kept"


def test_saved_files_have_the_usual_mode_and_a_killed_writers_leftovers_go(tmp_path):
    leftover = tmp_path / ".model.safetensors.abc123.tmp"
    leftover.write_bytes(b"half a file")
    VAE([64, 16, 2]).save(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not leftover.exists()


# -- numerical faults ----------------------------------------------------------------------------


def test_a_nan_loss_stops_the_run_naming_the_step(digits, tmp_path, monkeypatch):
    poison_loss(monkeypatch, bad_call=10)
    config = TrainConfig(epochs=2, batch_size=64, checkpoint_every=4, out=str(tmp_path), progress=False, device="cpu")
    with pytest.raises(VaekitError, match="at step 10"):
        train(VAE([64, 16, 2]), digits, config)
    tensors, state = load_checkpoint(run_folder(tmp_path) / CHECKPOINT_FILE)
    assert state["progress"]["step"] == 8
    assert all(torch.isfinite(t).all() for name, t in tensors.items() if name.startswith("model."))


def test_a_nan_loss_before_the_first_checkpoint_says_nothing_was_saved(digits, tmp_path, monkeypatch):
    poison_loss(monkeypatch, bad_call=2)
    config = TrainConfig(epochs=1, batch_size=64, out=str(tmp_path), progress=False, device="cpu")
    with pytest.raises(VaekitError, match="at step 2; the run stopped and it had saved no checkpoint yet: delete .* and start a new run"):
        train(VAE([64, 16, 2]), digits, config)


def test_skipping_nan_batches_counts_them(digits, tmp_path, monkeypatch):
    poison_loss(monkeypatch, bad_call=3)
    config = TrainConfig(epochs=1, batch_size=64, on_nonfinite="skip", out=str(tmp_path), progress=False, device="cpu")
    result = train(VAE([64, 16, 2]), digits, config)
    assert result.progress.skipped_batches == 1
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


# -- output folders ----------------------------------------------------------------------------------


def test_an_unusable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = finish(vaekit_cli("train", "--epochs", "1", "--out", str(blocker / "runs")))
    assert code != 0 and "cannot create a run folder" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_full_disk_during_training_is_one_clear_error_and_keeps_the_checkpoint(digits, tmp_path, monkeypatch):
    import vaekit.files as files_module

    config = TrainConfig(epochs=2, batch_size=64, out=str(tmp_path), progress=False, device="cpu")
    first = train(VAE([64, 16, 2]), digits, config)
    before = (first.run_dir / CHECKPOINT_FILE).read_bytes()
    real_fsync, calls = os.fsync, {"n": 0}

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", failing_fsync)
    with pytest.raises(VaekitError, match="No space left"):
        train(VAE([64, 16, 2]), digits, TrainConfig(**{**config.__dict__, "epochs": 3}), run_dir=first.run_dir)
    monkeypatch.setattr(files_module.os, "fsync", real_fsync)
    assert (first.run_dir / CHECKPOINT_FILE).read_bytes() == before


def test_the_same_tensors_give_the_same_bytes_in_every_process(tmp_path):
    """safetensors orders the header's metadata differently in each process; vaekit sorts it, so that identical
    runs have identical files (a sha256sum of model.safetensors says whether a run was reproduced)."""
    import subprocess
    import sys

    script = ("import sys, torch; from pathlib import Path; from vaekit.checkpoint import save_checkpoint; "
              "save_checkpoint(Path(sys.argv[1]), {'w': torch.arange(6.0)}, {'step': 3, 'epoch': 1})")
    paths = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for path in paths:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    assert len({path.read_bytes() for path in paths}) == 1
    assert load_checkpoint(paths[0])[1] == {"step": 3, "epoch": 1}

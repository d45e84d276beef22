"""torchrun with 2 CPU processes (gloo on 127.0.0.1): the same result as one process, one run
folder, exact resume, and a failed or hung rank ends the whole job within the timeout."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from vaekit.distributed import Cluster, local_slice

COMMON = ["--arch", "64,32,2", "--max-steps", "20", "--seed", "3", "--device", "cpu", "--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, processes: int = 2) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={processes}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "vaekit", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def single(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "vaekit", *args], check=True, capture_output=True, text=True, timeout=300).stdout


def finished(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def the_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def max_difference(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def test_local_slices_cover_the_batch_once():
    for n in (0, 1, 5, 32, 33):
        parts = [list(range(n))[local_slice(n, Cluster(rank, 3))] for rank in range(3)]
        assert sum(parts, []) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    code, stdout, err = finished(torchrun("train", *COMMON, "--batch-size", "16", "--out", str(out)))
    assert code == 0, err
    assert stdout.count("vaekit: wrote") == 1  # rank 0 alone speaks
    return the_run(out)


def test_two_processes_equal_one_with_the_same_global_batch(ddp_run, tmp_path):
    single("train", *COMMON, "--batch-size", "32", "--out", str(tmp_path))
    assert max_difference(ddp_run, the_run(tmp_path)) <= 1e-5


def test_one_run_folder_one_checkpoint_and_the_global_batch_recorded(ddp_run):
    import json

    assert sorted(p.name for p in ddp_run.iterdir() if p.suffix == ".safetensors") == ["checkpoint.safetensors", "model.safetensors"]
    config = json.loads((ddp_run / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "global_batch_size": 32}


def test_resuming_a_two_process_run_is_exact(ddp_run, tmp_path):
    half = [a if a != "20" else "10" for a in COMMON]
    code, _, err = finished(torchrun("train", *half, "--batch-size", "16", "--out", str(tmp_path)))
    assert code == 0, err
    run = the_run(tmp_path)
    code, _, err = finished(torchrun("train", "--resume", str(run), "--max-steps", "20", "--no-progress"))
    assert code == 0, err
    assert max_difference(run, ddp_run) == 0.0


def test_resuming_with_another_number_of_processes_is_refused(ddp_run):
    result = subprocess.run([sys.executable, "-m", "vaekit", "train", "--resume", str(ddp_run)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "same number" in result.stderr


def worker_pids(launcher: subprocess.Popen, count: int, timeout: float = 120) -> list[int]:
    """The launcher's training processes, once all have started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and launcher.poll() is None:
        children = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
        if len(children) == count:
            return [int(pid) for pid in children]
        time.sleep(0.2)
    raise AssertionError("the workers never started")


def test_ranks_agree_on_a_stop_only_where_they_wait_for_the_device_anyway():
    from vaekit.config import TrainConfig
    from vaekit.train import stop_agreed_at

    config = TrainConfig(checkpoint_every=30)
    agreed = [step for step in range(1, 100) if stop_agreed_at(step, (step - 1) % 41, 41, config, Cluster(0, 2))]
    assert agreed == [20, 30, 40, 41, 60, 80, 82, 90]
    assert all(stop_agreed_at(step, 0, 41, config, Cluster()) for step in range(1, 100))  # one process: every step


def checkpoint_step(run: Path) -> int:
    from vaekit.checkpoint import load_checkpoint

    return load_checkpoint(run / "checkpoint.safetensors")[1]["progress"]["step"]


def test_sigterm_to_one_rank_stops_all_at_one_step_and_the_run_resumes_exactly(tmp_path):
    # the ranks agree on a stop only every LOG_EVERY (20) steps, at checkpoints (every 30) and at epoch ends
    # (digits: 41 steps of 32); a rank that stopped alone would leave the other waiting in its next all-reduce
    args = ["--arch", "64,32,2", "--batch-size", "16", "--seed", "3", "--device", "cpu", "--no-progress", "--checkpoint-every", "30"]
    launcher = torchrun("train", *args, "--max-steps", "1000000", "--out", str(tmp_path / "cut"))
    try:
        rank_1 = worker_pids(launcher, 2)[1]
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("cut/*/checkpoint.safetensors")):
            assert launcher.poll() is None and time.monotonic() < deadline, "the job ended before the signal"
            time.sleep(0.1)
        os.kill(rank_1, signal.SIGTERM)
        code, out, err = finished(launcher, timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert "interrupted and saved" in out, err  # (exit code 130, which torchrun reports as a failure)
    run = the_run(tmp_path / "cut")
    step = checkpoint_step(run)
    assert step % 20 == 0 or step % 30 == 0 or step % 41 == 0
    code, _, err = finished(torchrun("train", "--resume", str(run), "--max-steps", str(step + 30), "--no-progress"))
    assert code == 0, err
    code, _, err = finished(torchrun("train", *args, "--max-steps", str(step + 30), "--out", str(tmp_path / "whole")))
    assert code == 0, err
    assert max_difference(run, the_run(tmp_path / "whole")) == 0.0


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_a_failed_or_hung_rank_ends_the_job_within_the_timeout(fault, tmp_path):
    launcher = torchrun("train", "--arch", "64,32,2", "--epochs", "100000", "--batch-size", "8", "--device", "cpu",
                        "--no-progress", "--dist-timeout", "15", "--out", str(tmp_path))
    try:
        victim = worker_pids(launcher, 2)[1]
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*/checkpoint.safetensors")):  # training is under way
            assert launcher.poll() is None and time.monotonic() < deadline, "the job ended before the fault"
            time.sleep(0.2)
        os.kill(victim, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        start = time.monotonic()
        code, _, err = finished(launcher, timeout=120)
        assert code != 0
        assert "another process of this torchrun job failed or stopped answering" in err
        assert time.monotonic() - start < 90
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert the_run(tmp_path).joinpath("checkpoint.safetensors").is_file()  # the last good checkpoint stays


@pytest.mark.parametrize("free_bits", ["0", "0.3"])
def test_a_rank_left_without_examples_adds_nothing_and_stays_in_step(free_bits, tmp_path):
    # digits: 1,297 training examples in global batches of 16 leave one example for the last batch of each
    # epoch; in the next epochs rank 1, which had none, must still draw the noise the others drew. Free bits
    # floor the KL of the whole global batch, as one process floors it, not each rank's share.
    args = ["--arch", "64,16,2", "--epochs", "3", "--batch-size", "8", "--seed", "1", "--device", "cpu", "--no-progress",
            "--free-bits", free_bits]
    code, ddp_out, err = finished(torchrun("train", *args, "--out", str(tmp_path / "ddp")))
    assert code == 0, err
    one_out = single("train", *[a if a != "8" else "16" for a in args], "--out", str(tmp_path / "one"))
    assert max_difference(the_run(tmp_path / "ddp"), the_run(tmp_path / "one")) <= 1e-5

    def validation_cost(stdout: str) -> str:
        return stdout.split("validation cost ")[1].split()[0]

    assert validation_cost(ddp_out) == validation_cost(one_out)  # validated on the same draws as one process


def test_more_processes_than_gpus_is_one_clear_error(monkeypatch):
    import torch

    from vaekit.distributed import setup
    from vaekit.errors import VaekitError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(VaekitError, match="process 1 of its machine, which has 1 GPU"):
        setup(torch.device("cuda"), timeout_seconds=5)


def test_ranks_that_read_different_data_are_refused(monkeypatch):
    import torch

    from vaekit import distributed
    from vaekit.errors import VaekitError

    x = torch.rand(10, 4)
    theirs = {}

    def all_gather_object(digests, mine):
        digests[:] = [mine, theirs.get("digest", mine)]

    monkeypatch.setattr(distributed.dist, "all_gather_object", all_gather_object)
    distributed.check_same_data(x, x[:3], Cluster(0, 2))  # the same data everywhere: nothing to say
    theirs["digest"] = "another data set"
    with pytest.raises(VaekitError, match="rank 0's training and validation examples differ from rank 1's"):
        distributed.check_same_data(x, x[:3], Cluster(0, 2))


def test_an_error_of_a_rank_other_than_0_is_said_and_names_the_rank(monkeypatch, capsys):
    from vaekit.cli import main

    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--data", "no-such-file.npy"]) == 1
    assert capsys.readouterr().err.startswith("vaekit: error (rank 1): no such file")


def test_a_process_group_the_caller_made_is_left_to_the_caller(tmp_path):
    script = tmp_path / "own_group.py"
    script.write_text(
        "import sys, torch.distributed as dist, vaekit\n"
        "from vaekit import VAE, DataConfig, TrainConfig\n"
        "dist.init_process_group('gloo')\n"
        "data = vaekit.load_data(DataConfig('digits'))\n"
        f"vaekit.train(VAE([64, 8, 2]), data, TrainConfig(max_steps=3, progress=False, out={str(tmp_path)!r}))\n"
        "sys.stdout.write(f'group kept: {dist.is_initialized()}\\n')\n"  # one write: the two ranks' lines do not interleave
        "dist.destroy_process_group()\n"
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("group kept: True") == 2
    assert "deprecated" not in result.stderr  # DDP's own notes do not reach the user


@pytest.mark.parametrize("new_name", [True, False])
def test_ddp_is_asked_not_to_sync_buffers_by_the_name_its_pytorch_knows(monkeypatch, new_name):
    import torch
    import torch.nn.parallel

    from vaekit import distributed

    asked = {}

    class NewDDP:  # PyTorch 2.13 on
        def __init__(self, module, device_ids=None, broadcast_buffers=None, forward_sync_buffers=None):
            asked.update(broadcast_buffers=broadcast_buffers, forward_sync_buffers=forward_sync_buffers)

    class OldDDP:  # PyTorch 2.6 to 2.12
        def __init__(self, module, device_ids=None, broadcast_buffers=True):
            asked.update(broadcast_buffers=broadcast_buffers)

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", NewDDP if new_name else OldDDP)
    distributed.wrap(torch.nn.Linear(2, 2), Cluster(0, 2), torch.device("cpu"))
    assert asked == ({"broadcast_buffers": None, "forward_sync_buffers": False} if new_name else {"broadcast_buffers": False})

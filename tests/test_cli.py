"""The command line end to end, in subprocesses as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    assert report["binary_data"] is False  # the digits are sixteenths: a Bernoulli's figures on them are no log p(x)


def test_evaluate_measures_the_split_it_is_asked_for(run_dir, capsys):
    from vaekit import DataConfig, load, load_data
    from vaekit.cli import main
    from vaekit.evaluate import average_elbo_terms

    reports = {}
    for split in ("train", "valid", "test"):
        assert main(["evaluate", str(run_dir), "--split", split, "--json"]) == 0
        reports[split] = json.loads(capsys.readouterr().out)
    assert [reports[split]["n"] for split in ("train", "valid", "test")] == [1297, 250, 250]
    test_split = load_data(DataConfig()).test.x
    assert reports["test"]["elbo"] == pytest.approx(average_elbo_terms(load(run_dir), test_split)["elbo"], abs=1e-6)
    assert abs(reports["test"]["elbo"] - reports["valid"]["elbo"]) > 1e-3


def test_evaluate_table(run_dir, tmp_path):
    table = vaekit("evaluate", str(run_dir)).stdout
    report = json.loads(vaekit("evaluate", str(run_dir), "--json").stdout)  # the same seed: the same numbers
    for key in ("elbo", "reconstruction", "kl"):
        assert f"  {key:<15} {report[key]:10.3f}" in table
    assert "a Bernoulli on grey levels is no distribution of them" in table
    binary = tmp_path / "binary.npy"
    np.save(binary, (np.random.default_rng(0).random((30, 64)) > 0.5).astype(np.float32))
    table = vaekit("evaluate", str(run_dir), "--data", str(binary)).stdout
    assert "bits per dim" in table and "grey levels" not in table


def test_sample_writes_a_png(run_dir, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    vaekit("sample", str(run_dir), "-n", "16", "--out", str(out))
    image = Image.open(out)
    assert image.size == (4 * (4 * 9 + 1), 4 * (4 * 9 + 1))  # 4x4 grid of 8x8 digits, 1 px padding, x4


def test_commands_run_in_process_leave_the_callers_random_stream(run_dir, tmp_path, capsys):
    import torch

    from vaekit.cli import main

    pngs = []
    for caller_seed in (1234, 99):  # the picture is the seed's, whatever the caller's stream
        torch.manual_seed(caller_seed)
        assert main(["sample", str(run_dir), "-n", "4", "--seed", "7", "--out", str(tmp_path / f"{caller_seed}.png")]) == 0
        assert main(["train", "--arch", "64,8,2", "--max-steps", "1", "--out", str(tmp_path), "--no-progress"]) == 0
        after = torch.rand(3)
        torch.manual_seed(caller_seed)
        assert torch.equal(after, torch.rand(3))
        pngs.append((tmp_path / f"{caller_seed}.png").read_bytes())
    assert pngs[0] == pngs[1]


def test_sample_refuses_an_output_that_is_not_a_png(run_dir, tmp_path, capsys):
    from vaekit.cli import main

    assert main(["sample", str(run_dir), "--out", str(tmp_path / "samples.jpg")]) == 1
    assert "give a name ending in .png" in capsys.readouterr().err  # it wrote PNG bytes under any name
    assert not (tmp_path / "samples.jpg").exists()


def test_sample_from_a_model_built_without_an_image_shape(tmp_path):
    import vaekit as api
    from vaekit.cli import main

    model = api.VAE([64, 8, 2])  # as the package's docstring builds one: no image_shape
    model.save(tmp_path / "run")
    assert main(["sample", str(tmp_path / "run"), "-n", "4", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").exists()  # 8x8 images, guessed from the 64 inputs as the figures guess them


def test_real_valued_data_train_evaluate_sample_and_plot_from_the_command_line(tmp_path):
    """Standardised features (negative, and above 1): a Bernoulli is refused with the way out, which then works."""
    x = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32) @ np.diag([1, 2, 3, 0.5, 1]).astype(np.float32)
    np.save(tmp_path / "features.npy", x)
    import vaekit as api
    from vaekit.model import seeded

    common = ["--data", str(tmp_path / "features.npy"), "--arch", "5,16,2", "--epochs", "2", "--no-progress", "--out", str(tmp_path / "runs")]
    refused = vaekit("train", *common, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "--likelihood gaussian --gaussian-mean identity" in refused.stderr and not (tmp_path / "runs").exists()
    vaekit("train", *common, "--likelihood", "gaussian", "--gaussian-mean", "identity", "--learn-sigma")
    (run,) = (tmp_path / "runs").iterdir()
    saved = json.loads((run / "config.json").read_text())
    model = saved["model"]
    assert saved["train"]["progress"] is False  # stderr was no terminal: no bar redrawn into the log
    assert model["gaussian_mean"] == "identity" and model["value_range"] == pytest.approx([float(x[:160].min()), float(x[:160].max())], abs=1)
    table = vaekit("evaluate", str(run)).stdout
    assert "densities of real values" in table and "(learned: the standard deviation of p(x|z))" in table
    sigma = json.loads(vaekit("evaluate", str(run), "--json").stdout)["sigma"]
    assert sigma == pytest.approx(api.load(run).likelihood_sigma) and sigma != 0.1  # learned from the starting 0.1
    vaekit("sample", str(run), "-n", "7", "--seed", "3", "--out", str(tmp_path / "samples.npy"))
    samples = np.load(tmp_path / "samples.npy")

    loaded = api.load(run)
    with seeded(3, loaded.device):
        np.testing.assert_array_equal(samples, loaded.sample(7))
    assert samples.dtype == np.float32 and samples.shape == (7, 5)
    vaekit("plot", str(run), "--kind", "reconstructions", "--kind", "manifold", "--out", str(tmp_path / "figures"))
    assert sorted(path.name.split("_step")[0] for path in (tmp_path / "figures").glob("*.png")) == [
        "manifold_linear_20x20", "reconstructions_test", "reconstructions_train", "reconstructions_valid"]


def test_a_run_for_the_unit_interval_given_real_values_says_to_train_another(run_dir, tmp_path, capsys):
    from vaekit.cli import main

    np.save(tmp_path / "real.npy", np.linspace(-2, 2, 20 * 64, dtype=np.float32).reshape(20, 64))
    for command in ("evaluate", "plot"):
        extra = ["--kind", "reconstructions", "--out", str(tmp_path / "f")] if command == "plot" else []
        assert main([command, str(run_dir), "--data", str(tmp_path / "real.npy"), *extra]) == 1
        err = capsys.readouterr().err
        assert "takes values in [0, 1]" in err and "train a model with --likelihood gaussian --gaussian-mean identity" in err


def test_help_is_useful():
    text = vaekit("--help").stdout
    for command in ("train", "evaluate", "sample"):
        assert command in text
    train_help = vaekit("train", "--help").stdout
    for flag in ("--data", "--data-dir", "--arch", "--epochs", "--batch-size", "--lr", "--seed", "--out", "--device", "--resume"):
        assert flag in train_help


def test_out_of_memory_names_the_size_asked_for_and_the_commands_own_flags():
    import torch

    from vaekit.cli import MEMORY_FLAGS, build_parser, out_of_memory

    assert out_of_memory("plot", MemoryError("Unable to allocate 2.00 GiB for an array with shape (268435456,)")) == (
        "out of memory (2.00 GiB asked for): too large for this machine; ask for less with --ppf-sizes, --grid, --n, --frames, --kind")
    assert out_of_memory("evaluate", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")).startswith(
        "out of memory (20.00 GiB asked for)")
    assert out_of_memory("sample", MemoryError()) == "out of memory: too large for this machine; ask for less with -n"
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(MEMORY_FLAGS) == set(commands)
    for command, flags in MEMORY_FLAGS.items():  # each a flag of that command
        known = {option for action in commands[command]._actions for option in action.option_strings}
        assert set(flags.split(", ")) <= known, command


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
        (["train", "--resume", ""], "expected a run folder, got an empty name"),  # an unset "$RUN": not a new run
        (["train", "--seed", str(2**70)], "expected a whole number from 0 to 2^62 - 1"),
        (["train", "--threads", "100000"], "--threads must be between 1 and 1024"),
        (["train", "--arch", "64,100000000000,2"], "out of memory (23841.9 GiB asked for): too large for this machine; ask for "
                                                    "less with --arch, --batch-size, --image-size"),
        (["sample", "/nonexistent/run", "--seed", "-1"], "expected a whole number from 0 to 2^62"),
        (["evaluate", "/nonexistent/run", "--epochs", "5"], "(see vaekit evaluate --help)"),
        (["train", "--iwae-k", "5"], "--iwae-k applies to --objective iwae only"),  # it would be ignored
        (["evaluate", __file__], "expected a run folder, got the file"),
        (["train", "--data", "https://example.com/x.npy"], "not a web address (https://example.com/x.npy): download it first"),
        (["train", "--data="], "--data is empty: give a data set, a file or a folder"),
        (["train", "--iwae-k", "99999999999999999999"], "expected an integer of at most 2147483647"),  # not vaekit.load(...) advice, from a command
        (["train", "--pseudo-inputs", "5"], "--pseudo-inputs applies to --prior vamp only"),
        (["train", "--lr-schedule", "plateau", "--min-lr", "0.01"], "--min-lr (0.01) must be below --lr (0.001)"),
        (["train", "--lr-schedule", "plateau", "--lr", "1e-7"], "--min-lr (1e-06) must be below --lr (1e-07)"),
    ],
)
def test_mistakes_give_one_line_and_a_nonzero_exit(args, message, tmp_path, capsys):
    """In this process, through main() (argparse's own errors end in SystemExit), as the command runs it."""
    from vaekit.cli import main

    try:
        code = main([*args, "--out", str(tmp_path)] if args[0] == "train" else args)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(("args", "message"), [(["train", "--epochs", "x"], "expected an integer"),
                                               (["train", "--arch", "784,32,2", "--epochs", "1"], "64 values per example"),
                                               (["evaluate", "/nonexistent/run"], "not a vaekit run folder")])
def test_mistakes_in_a_process_of_their_own_exit_with_one_line(args, message, tmp_path):
    result = vaekit(*args, "--out", str(tmp_path), check=False) if args[0] == "train" else vaekit(*args, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_data_of_the_wrong_size_for_a_saved_model(run_dir, tmp_path):
    import numpy as np

    np.save(tmp_path / "wide.npy", np.random.rand(50, 100).astype(np.float32))
    result = vaekit("evaluate", str(run_dir), "--data", str(tmp_path / "wide.npy"), check=False)
    assert result.returncode == 1 and "the model takes 64" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name, content", [("bad.npy", b""), ("bad.npy", b"\x93NUMPY garbage"), ("bad.npz", b"PK\x03\x04garbage")])
def test_empty_or_broken_data_files(name, content, tmp_path):
    (tmp_path / name).write_bytes(content)
    result = vaekit("train", "--data", str(tmp_path / name), "--out", str(tmp_path), check=False)
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
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    importance_sampled_log_px(model, x, 4096)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, sorted(faults)[1])  # the median of three estimates: one may meet a thread's fresh malloc arena
"""


def test_patience_without_an_epochs_end_says_the_weights_are_the_last(tmp_path, capsys):
    from vaekit.cli import main

    assert main(["train", "--arch", "64,8,2", "--max-steps", "3", "--patience", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no epoch ended, so there are no best weights on validation: model.safetensors holds the last ones" in out
    assert "best validation cost inf" not in out


def test_a_failing_background_thread_is_one_line_not_a_traceback(monkeypatch, capsys):
    import argparse
    import threading

    import vaekit.cli

    def command(args):  # as TensorBoard's writer thread meets a full disk
        thread = threading.Thread(target=lambda: open("/nonexistent/folder/events", "wb"), name="EventWriter")
        thread.start()
        thread.join()
        quiet = threading.Thread(target=sys.exit, name="Quiet")  # a thread that ends itself says nothing, as Python's hook
        quiet.start()
        quiet.join()
        return 0

    class Parser:
        def parse_known_args(self, argv):
            return argparse.Namespace(handler=command, command="train"), []

    monkeypatch.setattr(vaekit.cli, "build_parser", Parser)
    before = threading.excepthook
    assert vaekit.cli.main([]) == 0
    err = capsys.readouterr().err
    assert "vaekit: note: a background thread (EventWriter) failed: FileNotFoundError" in err and "Traceback" not in err
    assert "Quiet" not in err
    assert threading.excepthook is before  # as it was


def test_plot_flags_are_plot_options_one_to_one_with_its_defaults(tmp_path):
    import dataclasses

    from vaekit.cli import build_parser
    from vaekit.plots import PlotOptions

    args = build_parser().parse_args(["plot", str(tmp_path), "--all"])
    assert PlotOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PlotOptions)}) == PlotOptions()
    args = build_parser().parse_args(["plot", str(tmp_path), "--all", "--range=-6,6", "--grid", "7"])
    assert (args.span, args.grid) == ((-6.0, 6.0), 7)


def test_the_architecture_help_shows_the_default_architecture():
    import dataclasses

    from vaekit.config import ModelConfig, default_architecture

    shown = next(f for f in dataclasses.fields(ModelConfig) if f.name == "architecture").metadata["shown_default"]
    sizes = {kind: ",".join(map(str, default_architecture(1, kind)[1:])) for kind in ("mlp", "conv")}
    assert shown == f"data size,{sizes['mlp']}; with --model conv: data size,{sizes['conv']}"


def test_a_run_of_an_earlier_version_resumes_though_todays_checks_refuse_its_saved_values(tmp_path, capsys):
    from vaekit.cli import main

    assert main(["train", "--arch", "64,8,2", "--epochs", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    (run,) = tmp_path.iterdir()
    payload = json.loads((run / "config.json").read_text())
    payload["train"].update(out="", dist_timeout=1e9)  # as earlier versions took them: the current folder, a long wait
    (run / "config.json").write_text(json.dumps(payload))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--dist-timeout", "1800", "--no-progress"]) == 0
    assert "done after 22 steps" in capsys.readouterr().out
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["dist_timeout"] == 1800 and saved["epochs"] == 2


def test_version(capsys):
    from vaekit import __version__
    from vaekit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"vaekit {__version__}\n"


def test_main_leaves_the_process_malloc_as_it_was(monkeypatch, capsys):
    """The malloc setting is the vaekit command's, a process of its own: not main()'s, which a notebook may call."""
    import vaekit.cli

    monkeypatch.setattr(vaekit.cli, "keep_freed_memory", lambda: pytest.fail("main() changed the process's malloc"))
    assert vaekit.cli.main([]) == 2  # no command: the help
    assert "usage: vaekit" in capsys.readouterr().out


def test_keep_freed_memory_lets_the_estimator_reuse_its_pages():
    """keep_freed_memory(), which the vaekit command starts with: later estimates over 8 chunks of
    1024 codes reuse the first one's memory (glibc's default can fault in ~10 MB anew per chunk)."""
    result = subprocess.run([sys.executable, "-c", FAULTS_OF_A_SECOND_ESTIMATE], capture_output=True, text=True, timeout=300, check=True)
    kept, faults = result.stdout.split()
    if kept != "True":
        pytest.skip("not glibc's malloc")
    # pages of 4 KB, the median of three estimates: here 0-200 with it (2,852 seen once in a single estimate), and
    # 1,500-20,000 with glibc's default (a fresh ~10 MB every chunk or so)
    assert int(faults) < 1000


# -- resuming, and the data a run records ----------------------------------------------------------------


def quick_run(out: Path, *flags: str) -> Path:
    """A run of a few steps on the digits, trained through the command line in this process."""
    from vaekit.cli import main

    assert main(["train", "--arch", "64,8,2", "--batch-size", "500", "--out", str(out), "--no-progress", *flags]) == 0
    (run,) = out.iterdir()
    return run


def test_resume_refuses_flags_it_would_not_apply_and_records_new_limits(tmp_path, capsys):
    from vaekit.cli import main

    run = quick_run(tmp_path / "runs", "--max-steps", "2")
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] is None  # --max-steps alone: no epoch limit
    assert main(["train", "--resume", str(run), "--lr", "0.5", "--arch", "64,3,2"]) == 1
    assert "only --epochs, --max-steps, --progress, --device, --threads, --dist-timeout, --data-dir can change, not --arch, --lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--max-steps", "5", "--no-progress"]) == 0
    assert "done after 5 steps" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 5  # the next --resume goes on from here
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0  # --epochs alone: the new limit
    assert "done after 9 steps" in capsys.readouterr().out  # 3 epochs of 3 steps, not stopped at the old 5
    by_epochs = quick_run(tmp_path / "more", "--epochs", "1")
    assert main(["train", "--resume", str(by_epochs), "--max-steps", "7", "--no-progress"]) == 0  # --max-steps alone: the new limit
    assert "done after 7 steps" in capsys.readouterr().out
    assert json.loads((by_epochs / "config.json").read_text())["train"]["epochs"] is None


def test_resume_may_change_what_depends_on_the_machine_and_records_it(tmp_path, capsys, shared_data):
    from vaekit.cli import main

    before, after = tmp_path / "data_here", tmp_path / "data_moved"
    before.mkdir()
    for name, source in [("train-images-idx3-ubyte.gz", "mnist-train-first14000-images-idx3-ubyte.gz"),
                         ("train-labels-idx1-ubyte.gz", "mnist-train-first14000-labels-idx1-ubyte.gz"),
                         ("t10k-images-idx3-ubyte.gz",) * 2, ("t10k-labels-idx1-ubyte.gz",) * 2]:
        (before / name).symlink_to(shared_data / source)
    run = quick_run(tmp_path / "runs", "--data", "mnist", "--data-dir", str(before), "--arch", "784,8,2", "--max-steps", "2")
    before.rename(after)  # the data moved (another machine, say)
    assert main(["train", "--resume", str(run), "--data-dir", str(after), "--threads", "1", "--dist-timeout", "60",
                 "--max-steps", "3", "--no-progress"]) == 0, capsys.readouterr().err
    assert "done after 3 steps" in capsys.readouterr().out
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"]["data_dir"] == str(after) and saved["train"]["threads"] == 1  # where evaluate and plot look next


def test_max_steps_alone_trains_past_the_default_ten_epochs(tmp_path, capsys):
    quick_run(tmp_path, "--max-steps", "45")  # 3 steps an epoch at batch 500
    assert "done after 45 steps" in capsys.readouterr().out


def test_a_run_that_diverged_says_so_and_exits_nonzero_keeping_its_folder(tmp_path, capsys):
    from vaekit.cli import main

    args = ["train", "--arch", "64,32,2", "--lr", "1e8", "--clip", "0", "--epochs", "2", "--on-nonfinite", "skip", "--no-progress"]
    assert main([*args, "--out", str(tmp_path)]) == 1  # with the bad steps skipped, it "finished", validating at NaN
    assert "vaekit: error: the validation cost is nan: the model diverged" in capsys.readouterr().err
    (run,) = tmp_path.iterdir()
    assert (run / "model.safetensors").is_file()


def test_resume_never_overwrites_trained_weights_that_have_no_checkpoint(tmp_path, capsys):
    from vaekit.cli import main

    run = quick_run(tmp_path, "--max-steps", "2")
    (run / "checkpoint.safetensors").unlink()
    weights = (run / "model.safetensors").read_bytes()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 1
    assert "holds trained weights but no checkpoint.safetensors" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == weights


def test_a_run_trained_from_python_records_its_data(tmp_path, capsys):
    import numpy as np

    import vaekit
    from vaekit.cli import main

    np.save(tmp_path / "own.npy", np.random.default_rng(0).random((300, 16), dtype=np.float32))
    data = vaekit.load_data(vaekit.DataConfig(str(tmp_path / "own.npy")))
    run = vaekit.train(vaekit.VAE([16, 8, 2]), data, vaekit.TrainConfig(max_steps=2, out=str(tmp_path / "runs"), progress=False)).run_dir
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == str(tmp_path / "own.npy")


def test_another_data_file_for_a_run_starts_from_that_files_own_settings(tmp_path):
    import argparse

    from vaekit.cli import run_data_config

    folder_run = tmp_path / "run"
    folder_run.mkdir()
    saved = {"data": str(tmp_path / "images"), "image_size": [8, 8], "channels": 1}
    (folder_run / "config.json").write_text(json.dumps({"format_version": 1, "model": {}, "data": saved}))
    assert run_data_config(folder_run, argparse.Namespace()).image_size == (8, 8)  # the run's own
    assert run_data_config(folder_run, argparse.Namespace(channels=3)).channels == 3  # adjusted
    other = run_data_config(folder_run, argparse.Namespace(data=str(tmp_path / "rgb.npy")))
    assert other.data == str(tmp_path / "rgb.npy") and other.image_size == () and other.channels is None


def test_another_image_folder_for_a_folder_run_is_read_as_the_runs_was(tmp_path):
    import argparse

    from vaekit.cli import run_data_config

    run, first, second = tmp_path / "run", tmp_path / "photos", tmp_path / "more_photos"
    for folder in (run, first, second):
        folder.mkdir()
    saved = {"data": str(first), "image_size": [16, 16], "channels": 1, "fit": "crop", "valid_size": 7}
    (run / "config.json").write_text(json.dumps({"format_version": 1, "model": {}, "data": saved}))
    other = run_data_config(run, argparse.Namespace(data=str(second)))
    assert (other.data, other.image_size, other.channels, other.fit) == (str(second), (16, 16), 1, "crop")
    assert other.valid_size == 5000  # not an image setting: the new data's own default
    assert run_data_config(run, argparse.Namespace(data=str(second), fit="resize")).fit == "resize"
    # a run that left the size and the channels to its images: the shape its model was built for
    defaulted = {"data": str(first), "image_size": [], "channels": None, "fit": "resize"}
    (run / "config.json").write_text(json.dumps({"format_version": 1, "model": {"image_shape": [3, 12, 10]}, "data": defaulted}))
    other = run_data_config(run, argparse.Namespace(data=str(second)))
    assert (other.image_size, other.channels) == ((12, 10), 3)


@pytest.mark.parametrize("section", ["data", "train"])
def test_a_config_section_that_is_not_an_object_is_one_clear_line(run_dir, tmp_path, section, capsys):
    import shutil

    from vaekit.cli import main

    broken = shutil.copytree(run_dir, tmp_path / "run")
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {section: "x"}))
    assert main(["evaluate", str(broken)]) == 1
    assert f"its '{section}' section is not an object" in capsys.readouterr().err


def test_explore_writes_html_only(run_dir, capsys):
    from vaekit.cli import main

    config = (run_dir / "config.json").read_bytes()
    assert main(["explore", str(run_dir), "--out", str(run_dir / "config.json")]) == 1
    assert "ending in .html" in capsys.readouterr().err and (run_dir / "config.json").read_bytes() == config
    link = run_dir.parent / "latest.html"  # a link someone made to a run's file is replaced, not written through
    link.symlink_to(run_dir / "config.json")
    assert main(["explore", str(run_dir), "--points", "5", "--out", str(link)]) == 0
    assert (run_dir / "config.json").read_bytes() == config and not link.is_symlink()
    assert link.read_text().startswith("<!DOCTYPE html>")


def test_warnings_are_one_line_notes(tmp_path):
    result = vaekit("train", "--arch", "64,8,2", "--max-steps", "1", "--no-fused", "--compile", "--out", str(tmp_path), "--no-progress")
    assert "vaekit: note: --compile applies to the hand-written gradient only" in result.stderr
    assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr


def test_resume_of_a_run_without_a_record_of_its_data_is_refused(tmp_path, capsys):
    from vaekit.cli import main

    run = quick_run(tmp_path, "--max-steps", "2")
    config = json.loads((run / "config.json").read_text())
    del config["data"]  # as a run trained from Python on data built by hand
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run), "--max-steps", "3"]) == 1
    assert "does not record its data" in capsys.readouterr().err


def test_a_batch_larger_than_the_data_is_said_and_one_step_is_one_step(tmp_path, capsys):
    from vaekit.cli import main

    assert main(["train", "--arch", "64,8,2", "--batch-size", "5000", "--max-steps", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "the batch (5000 examples) is larger than the 1297 training examples" in captured.err + captured.out
    assert "done after 1 step;" in captured.out


def test_train_prints_a_line_per_epoch_without_the_bar_and_python_callers_get_none(tmp_path, capsys):
    from vaekit.cli import main

    assert main(["train", "--arch", "64,8,2", "--epochs", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1] for line in lines if line.startswith("vaekit: epoch")] == [" epoch 1/2 (step 11)", " epoch 2/2 (step 22)"]
    (run,) = tmp_path.iterdir()
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert " epoch 3/3 (step 33)" in capsys.readouterr().out
    vaekit_module = sys.modules["vaekit"]
    data = vaekit_module.load_data(vaekit_module.DataConfig())
    vaekit_module.train(vaekit_module.VAE([64, 8, 2]), data, vaekit_module.TrainConfig(epochs=1, out=str(tmp_path), progress=False))
    assert "epoch" not in capsys.readouterr().out  # the command's printing ended with the command

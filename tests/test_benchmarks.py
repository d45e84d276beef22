"""The step-anatomy benchmark: the parts it times are the trainer's step, and its report adds up.

(What it measures is speed, which no test asserts; these check that it measures the right things.)
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import binarized_mnist  # noqa: E402, F401 - the tests import it by name
import step_anatomy  # noqa: E402


def test_the_parts_it_times_make_up_train_step():
    """Timed part by part, the steps train the model exactly as train.train_step does."""
    # a clip that every gradient value reaches: leaving it out would show
    whole = step_anatomy.Step(torch.device("cpu"), examples=512, clip=1e-6)
    in_parts = step_anatomy.Step(torch.device("cpu"), examples=512, clip=1e-6)
    whole.run(3)
    in_parts.run_parts(3)
    for a, b in zip(whole.model.parameters(), in_parts.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_its_report_finds_the_products_and_prints_json(tmp_path, capsys):
    out = tmp_path / "anatomy.json"
    step_anatomy.main(["--steps", "2", "--rounds", "1", "--json-out", str(out)])
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    weights = sum(p.numel() for p in step_anatomy.Step(torch.device("cpu"), examples=128).model.parameters())
    assert result["adam_traffic_mb"] == round(7 * 4 * weights / 1e6, 1)
    for name in step_anatomy.CONTENDERS:
        ms = result[name]["ms_per_step"]
        # the profiler saw the products under the names it sums (two separate 2-step timings are not compared:
        # on a busy machine the profiled products took longer than the unprofiled gradient, 20.3 against 18.9 ms)
        assert ms["products_in_step"] > 0, name
        assert all(ms[part] > 0 for part in step_anatomy.PARTS)


# -- binarized_mnist.py: its record holds one model's figures --------------------------------------------


def test_a_new_benchmark_run_starts_a_new_record_and_a_fresh_clone_evaluates_the_committed_model(tmp_path, monkeypatch, digits):
    import pytest

    import binarized_mnist as bm
    from vaekit import DataConfig, ModelConfig, TrainConfig, VaekitError

    committed = json.loads(bm.RESULTS.read_text())["configs"]["vae_784_500_500_50"]  # a real record, of an older model
    root = tmp_path / "benchmarks"
    for name, path in [("ROOT", root), ("RUNS", root / "runs"), ("CHECKPOINTS", root / "checkpoints"),
                       ("RESULTS", root / "results" / "r.json"), ("TABLE", root / "results" / "r.md")]:
        monkeypatch.setattr(bm, name, path)
    tiny = bm.Benchmark("tiny", ModelConfig(architecture=(64, 8, 2)), TrainConfig(epochs=1, batch_size=500, out=str(tmp_path)), "none")
    monkeypatch.setitem(bm.CONFIGS, "tiny", tiny)
    bm.save_result("tiny", committed)

    bm.train_step("tiny", digits, DataConfig(), 1, "cpu")
    record = json.loads(bm.RESULTS.read_text())["configs"]["tiny"]
    assert "test" not in record and record["epochs_trained"] == 1 and len(record["sessions"]) == 1
    bm.train_step("tiny", digits, DataConfig(), 2, "cpu")  # resumed: the same model, one more session
    assert len(json.loads(bm.RESULTS.read_text())["configs"]["tiny"]["sessions"]) == 2

    bm.export_step("tiny")
    (bm.RUNS / "tiny" / "model.safetensors").unlink()  # as in a fresh clone: no runs/, the committed checkpoints/
    bm.nll_step("tiny", "test", digits, k=2, n=5, device="cpu")
    assert json.loads(bm.RESULTS.read_text())["configs"]["tiny"]["test"]["weights"] == "benchmarks/checkpoints/tiny/model.safetensors"
    with pytest.raises(VaekitError, match="no run to export"):
        bm.export_step("tiny")

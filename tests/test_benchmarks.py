"""The step-anatomy benchmark: the parts it times are the trainer's step, and its report adds up.

(What it measures is speed, which no test asserts; these check that it measures the right things.)
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
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

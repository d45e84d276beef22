"""scripts/demo.py (`make demo`): what it may delete."""

import importlib.util
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


def test_the_demo_clears_its_own_earlier_outputs_and_nothing_else(tmp_path):
    spec = importlib.util.spec_from_file_location("demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    for folder in ("runs/old_run", "figures", "my_runs"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("explorer.html", "test_elbo.json", "notes.txt", "my_runs/important.txt", "runs/old_run/x"):
        (tmp_path / name).write_text("x")
    demo.clear_earlier_outputs(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["my_runs", "my_runs/important.txt", "notes.txt"]

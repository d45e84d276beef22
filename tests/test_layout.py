"""The layout: data flows one way, so no module imports one above it (imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import vaekit

PACKAGE = Path(vaekit.__file__).parent

# Lowest first. A module may import from the layers below its own (and within its own subpackage).
LAYERS = [
    {"errors", "compiling", "distributions"},
    {"files", "latent"},
    {"config"},
    {"data", "checkpoint"},
    {"nn"},
    {"model"},
    {"objectives", "distributed", "images"},
    {"fused", "evaluate", "animation", "runs"},  # the trainer's fast path; measuring a model; GIFs; a run folder
    {"plots"},
    {"train", "explorer"},  # the trainer validates (evaluate) and draws its snapshots (plots)
    {"cli"},
    {"__init__", "__main__"},  # the package's public names; `python -m vaekit`
]


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    (layer,) = [i for i, names in enumerate(LAYERS) if top in names]
    return layer


def imported_modules(path: Path) -> set[str]:
    """The vaekit modules a file imports anywhere, except under `if TYPE_CHECKING:` (annotations only)."""
    tree = ast.parse(path.read_text())
    for_types = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
                 for node in ast.walk(branch)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in for_types:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vaekit":
            names = [node.module.removeprefix("vaekit.")] if node.module != "vaekit" else [alias.name for alias in node.names]
            found.update(name for name in names if name != "__version__")
        elif isinstance(node, ast.Import):
            found.update(alias.name.removeprefix("vaekit.") for alias in node.names if alias.name.startswith("vaekit."))
    return found


def test_every_module_has_a_layer():
    modules = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.rglob("*.py")}
    assert modules == set().union(*LAYERS)


def test_no_module_imports_one_above_it():
    against_the_flow = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        for imported in imported_modules(path):
            same_package = imported.split(".")[0] == module.split(".")[0]
            if not same_package and layer_of(imported) >= layer_of(module):
                against_the_flow.append(f"{module} imports {imported}")
    assert against_the_flow == []


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vaekit.train import X\n"
                      "def f():\n    from vaekit.objectives import elbo\n")
    assert imported_modules(source) == {"objectives"}

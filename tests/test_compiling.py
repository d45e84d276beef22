"""compiled(): torch.compile with a fallback; each compiled function has torch.compile's recompile budget to itself."""

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from vaekit.compiling import compiled


def scaled_sum(x: torch.Tensor, scale: torch.Tensor, *, power: int = 1) -> torch.Tensor:
    return (x * scale).pow(power).sum()


def test_compiled_gives_the_functions_numbers_keyword_defaults_included():
    x, scale = torch.randn(5, 3), torch.randn(3)
    assert torch.allclose(compiled(scaled_sum)(x, scale), scaled_sum(x, scale))
    assert torch.allclose(compiled(scaled_sum)(x, scale, power=2), scaled_sum(x, scale, power=2))


def test_every_compiled_function_compiles_for_itself_however_many_share_the_code(monkeypatch):
    """As many models in one process, each its own shapes: with the recompile limit at 1, three copies
    of one function compile three graphs, where a shared cache would have run the second and third eagerly."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    graphs_before = counters["stats"]["unique_graphs"]
    for width in (3, 4, 5):
        x, scale = torch.randn(2, width), torch.randn(width)
        assert torch.allclose(compiled(scaled_sum)(x, scale), scaled_sum(x, scale))
    assert counters["stats"]["unique_graphs"] - graphs_before == 3

"""Compiled(): torch.compile with a fallback; each kind of input has torch.compile's recompile budget to itself."""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from vaekit.compiling import Compiled


def scaled_sum(x: torch.Tensor, scale: torch.Tensor, *, power: int = 1) -> torch.Tensor:
    return (x * scale).pow(power).sum()


def graphs_compiled() -> int:
    return counters["stats"]["unique_graphs"]


def fell_back(recwarn) -> bool:
    return any("torch.compile failed" in str(w.message) for w in recwarn)


def test_compiled_gives_the_functions_numbers_keyword_defaults_included(recwarn):
    x, scale = torch.randn(5, 3), torch.randn(3)
    assert torch.allclose(Compiled(scaled_sum, "numbers")(x, scale), scaled_sum(x, scale))
    assert torch.allclose(Compiled(scaled_sum, "numbers")(x, scale, power=2), scaled_sum(x, scale, power=2))
    assert not fell_back(recwarn)


def test_every_kind_compiles_for_itself_however_many_share_the_code(recwarn):
    """As many models in one process, each of its own shapes: with the recompile limit at 1, three kinds of
    one function compile three graphs, where a shared limit would have run the second and third eagerly."""
    before = graphs_compiled()
    with torch._dynamo.config.patch(recompile_limit=1):
        for width in (3, 4, 5):
            x, scale = torch.randn(2, width), torch.randn(width)
            assert torch.allclose(Compiled(scaled_sum, ("width", width))(x, scale), scaled_sum(x, scale))
    assert graphs_compiled() - before == 3
    assert not fell_back(recwarn)


def test_the_same_kind_compiled_again_reuses_its_graph(recwarn):
    """As a model trained again, or evaluated twice, in one process: no second compilation."""
    x, scale = torch.randn(2, 7), torch.randn(7)
    first = Compiled(scaled_sum, "reused")
    first(x, scale)
    before = graphs_compiled()
    second = Compiled(scaled_sum, "reused")
    assert torch.allclose(second(x, scale), scaled_sum(x, scale))
    assert graphs_compiled() == before
    assert not fell_back(recwarn)


def test_running_out_of_gpu_memory_is_not_taken_for_a_compiler_failure(monkeypatch, recwarn):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(torch, "compile", lambda function, **options: out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        Compiled(scaled_sum, "oom")(torch.ones(3), torch.tensor(2.0))
    assert not fell_back(recwarn)

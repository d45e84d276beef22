"""torch.compile for vaekit's two hot loops, with a clean way out: `--compile`.

Inductor fuses a function's elementwise work into a few C++ (or Triton) kernels and leaves the matrix
products to the BLAS. vaekit compiles two functions of plain tensors: the hand-written training gradient
(`fused.elbo_and_gradients`: an epoch of 784-500-500-50 at batch 128 1.11-1.23x faster in bf16 on a
2-core CPU, 1.03-1.08x in fp32) and the estimator's log p(x|z) (`evaluate`: the k = 5000 NLL 1.04-1.27x
faster; benchmarks/throughput.py measures both). Compiling takes 5-10 s, and once more for each new
input shape or constant; where it fails, the same numbers come from the uncompiled function.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import torch


class Compiled:
    """function through torch.compile, or function itself from the first call on where compiling fails
    (no C++ compiler, say), with one warning; `fell_back` says which ran.

    Functions compiled with equal `kind`s share torch.compile's graphs and its limit of eight recompiles;
    give every input structure that compiles graphs of its own (a model's architecture, say) a kind of its
    own, so that a process that compiles for many models does not run out of recompiles and silently run
    the rest uncompiled, while a model trained or evaluated again reuses its graphs.
    """

    def __init__(self, function: Callable[..., Any], kind: Hashable = None):
        self.function = function
        # a second shape or float value compiles once more, symbolic, then no more
        self.current = torch.compile(with_code_for(function, kind), fullgraph=True)

    @property
    def fell_back(self) -> bool:
        """Whether compiling failed, and the function runs uncompiled."""
        return self.current is self.function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.current(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any compiler failure: the same numbers, uncompiled
            if self.fell_back or isinstance(error, torch.OutOfMemoryError):  # a full GPU is no compiler's failure
                raise
            warnings.warn(f"--compile: torch.compile failed ({type(error).__name__}: {str(error).strip().splitlines()[0][:200]}); "
                          "going on without it (the same maths, rounded differently: a resumed run is then no longer bit for bit "
                          "the compiled one)", stacklevel=2)
            self.current = self.function
            return self.function(*args, **kwargs)


def with_code_for(function: Callable[..., Any], kind: Hashable) -> Callable[..., Any]:
    """function, running the code object kept for (its code, kind): torch.compile keeps its graphs, and
    its limit of recompiles, per code object."""
    copy = types.FunctionType(code_for(function.__code__, kind), function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


@functools.cache  # a cache, as torch.compile's own: the same kind finds the same code, and its graphs, again
def code_for(code: types.CodeType, kind: Hashable) -> types.CodeType:
    return code.replace()  # an equal but distinct code object

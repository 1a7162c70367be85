"""How the engine's numba kernels are compiled: one decorator, :func:`kernel`, one set of options.

    @kernel                   njit(cache=True, nogil=True, fastmath=False, error_model="python")
    @kernel(inline="always")  the same, inlined into its callers (numba IR level)

Every kernel is cached on disk (``NUMBA_CACHE_DIR``), releases the GIL (the GUI and ``encode_batch`` run
them in worker threads) and raises ZeroDivisionError rather than silently dividing by zero.

No fast-math, so that results are bitwise repeatable. A kernel that calls another (``_pool_sift`` ->
``_finish_sift``, ``sgd_pass`` -> ``_dots``, ``_encoder_blocks`` -> the E-step kernels) carries its own
copy of the callee, optimised inside the caller's LLVM module; but when the callee's standalone
version is loaded in the process too (it was compiled as a dependency in a fresh compile, or was
called from Python), the JIT linker binds the call to that one. Which machine code runs therefore
depended on what the process had loaded before: a first run (everything compiled) and later runs
(the caller alone loaded from the cache) ran differently optimised code. With fast-math
(reassociated sums, fused multiply-adds, approximate reciprocals) two optimisations of one expression
round differently: SIFT values differed by up to 6e-8 in 16% of the values, so a first run's
workspace differed from later ones. With IEEE semantics every copy, vectorised or not, inlined or
not, computes the correctly rounded result of the same operations in the same order. Measured speed
is unchanged (the hot loops vectorise element-wise, which needs no reassociation;
``benchmarks/bench_descriptors.py``, ``bench_fisher.py``). Not covered: a numba using Intel's SVML
(absent here) may vectorise exp/log with it, whose last bit can differ from the scalar libm's.
"""
from __future__ import annotations

from numba import njit

#: the options of every engine kernel (see the module docstring)
OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "python"}


def kernel(func=None, *, inline: str = "never"):
    """``@kernel`` or ``@kernel(inline="always")``: numba's njit with :data:`OPTIONS`."""
    deco = njit(inline=inline, **OPTIONS)
    return deco if func is None else deco(func)

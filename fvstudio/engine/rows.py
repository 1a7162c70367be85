"""Row providers: how samples reach the classifiers without one dense (N, D) array in RAM.

A :class:`RowProvider` is anything with ``len(p)`` rows of ``p.dim`` features and ``p.rows(indices)``
returning those rows as a float32 C-contiguous (len(indices), dim) array, in the order asked. The SGD
learner (:mod:`~fvstudio.engine.svm`), cross-validation (:mod:`~fvstudio.engine.model_selection`) and
prediction read samples only through it, a chunk of <= 32 MB of rows at a time, so the FV matrix may be
an ndarray, an ``np.memmap`` on disk, a subset of either, or a lazy concatenation:

- :class:`ArrayRows` wraps an ndarray / memmap (checked finite chunk by chunk once, at construction);
  a float32 C-contiguous one is read in place by the SGD kernel (no copy, :func:`dense_source`). A lazy
  2-D array-like (the chunked FV store, :class:`fvstudio.data.chunked.ChunkedArray`) is read into memory
  once if it fits in :func:`memory_budget`, else read block by block on demand (memory stays flat, reads
  are slower: the learners then read each row through the store);
- :class:`SubsetRows` is the rows ``indices`` of another provider (cross-validation folds, splits);
- :class:`ConcatRows` is early fusion (Sec. 5, the paper's large-scale experiments) done row by row:
  for M providers with rows x_1 .. x_M and weights beta_m >= 0, sum_m beta_m = 1 (default 1/M),

      row = [ sqrt(beta_1) x_1 / ||x_1||_2 , ... , sqrt(beta_M) x_M / ||x_M||_2 ]      (norm floor 1e-12)

  so a fused row has unit L2 norm and a linear kernel on it is the beta-weighted sum of the channels'
  linear kernels, <row(x), row(z)> = sum_m beta_m <x_m/|x_m|, z_m/|z_m|>; ``normalize=None`` applies
  only the sqrt(beta_m) scaling. :func:`fvstudio.engine.fusion.early_fusion` is the same on arrays.

Constants: rows are read in chunks of at most 32 MB (``_CHUNK_BYTES``).
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from .validation import as_numeric_matrix

_CHUNK_BYTES = 32 << 20


def available_memory() -> int:
    """Bytes the kernel says can be allocated now without swapping (``MemAvailable``: free memory plus the
    page cache it can drop), 0 if unknown. Not ``SC_AVPHYS_PAGES``, which leaves the page cache out and is
    near 0 on a machine that has read many files."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def memory_budget(fraction: float = 0.25, cap: int = 4 << 30, floor: int = 64 << 20) -> int:
    """``fraction`` of :func:`available_memory`, between ``floor`` and ``cap`` bytes."""
    return int(max(floor, min(cap, available_memory() * fraction)))


def _is_lazy_rows(array) -> bool:
    """A 2-D store of rows read by indexing that says so (``lazy_rows = True``: the chunked store); other
    array-likes (lists, sparse matrices...) go through the usual checks."""
    return (getattr(array, "lazy_rows", False) is True and len(getattr(array, "shape", ())) == 2
            and np.dtype(array.dtype).kind in "fiub")


@runtime_checkable
class RowProvider(Protocol):
    """What the learner needs from a sample store: its length, row width, and rows by index."""

    def __len__(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def rows(self, indices) -> np.ndarray:
        """float32 C-contiguous (len(indices), dim) array of the requested rows, in that order."""
        ...


class ArrayRows:
    """A :class:`RowProvider` over an in-memory ndarray or an ``np.memmap`` (read lazily, by rows).

    Finite values are checked once, chunk by chunk, at construction (``check=False`` skips it).
    """

    def __init__(self, array, *, name: str = "X", check: bool = True):
        if _is_lazy_rows(array):
            nbytes = int(array.shape[0]) * int(array.shape[1]) * np.dtype(array.dtype).itemsize
            arr = np.asarray(array) if nbytes <= memory_budget() else array  # read once, or block by block
        else:
            arr = as_numeric_matrix(array, name)  # not copied: a memmap stays a view on its file
        self.array = arr
        self.name = name
        if check:
            step = max(1, _CHUNK_BYTES // max(1, arr.shape[1] * np.dtype(arr.dtype).itemsize))
            for s in range(0, arr.shape[0], step):
                block = arr[s:s + step]
                if not np.isfinite(np.sum(block, dtype=np.float64)) and not np.isfinite(block).all():
                    bad = np.flatnonzero(~np.isfinite(block).all(axis=1))[0] + s
                    raise ValueError(f"{name} contains NaN or infinite values (first in row {bad}); "
                                     "clean or drop those rows first")

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    def rows(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        return np.ascontiguousarray(self.array[idx], dtype=np.float32)

    def dense_float32(self) -> Optional[np.ndarray]:
        """The underlying float32 C-contiguous array (no copy), or None if rows need converting."""
        a = self.array
        if isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous:
            return np.asarray(a)  # plain ndarray view of a memmap: same pages, no copy
        return None


class SubsetRows:
    """The rows ``indices`` of another provider, as a provider (cross-validation folds, splits)."""

    def __init__(self, base: RowProvider, indices):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.ndim != 1:
            raise ValueError("indices must be 1-D")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise ValueError(f"indices must lie in [0, {len(base)})")

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def dim(self) -> int:
        return int(self.base.dim)

    def rows(self, indices) -> np.ndarray:
        return self.base.rows(self.indices[np.asarray(indices, dtype=np.int64)])


def _block_weights(n: int, weights) -> np.ndarray:
    """The beta_m of early fusion: 1/M each by default, else M numbers >= 0 summing to 1."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"weights must be {n} non-negative numbers summing to 1, got {w.tolist()}")
    return w


def _normalise_block(block: np.ndarray, scale: float, normalize: Optional[str]) -> np.ndarray:
    """sqrt(scale) x / max(||x||_2, 1e-12) per row (``normalize="l2"``), or sqrt(scale) x (None)."""
    if normalize == "l2":
        norm = np.linalg.norm(block, axis=1, keepdims=True)
        block = block / np.maximum(norm, 1e-12)
    return block * np.float32(np.sqrt(scale))


class ConcatRows:
    """A :class:`RowProvider` concatenating other providers' rows, each block L2-normalised and scaled
    by sqrt(beta_m) (see the module docstring): early fusion without materialising the fused matrix."""

    def __init__(self, providers: Sequence, weights=None, normalize: Optional[str] = "l2"):
        if not providers:
            raise ValueError("providers must not be empty")
        n = len(providers[0])
        if any(len(p) != n for p in providers):
            raise ValueError(f"providers have different lengths: {[len(p) for p in providers]}")
        if normalize not in ("l2", None):
            raise ValueError(f"normalize must be 'l2' or None, got {normalize!r}")
        self.providers = list(providers)
        self.weights = _block_weights(len(providers), weights)
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.providers[0])

    @property
    def dim(self) -> int:
        return int(sum(p.dim for p in self.providers))

    def rows(self, indices) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate(
            [_normalise_block(np.asarray(p.rows(indices), dtype=np.float32), w, self.normalize)
             for p, w in zip(self.providers, self.weights)], axis=1), dtype=np.float32)


def as_row_provider(X, name: str = "X") -> RowProvider:
    """``X`` itself if it already provides rows, else :class:`ArrayRows` over it."""
    if isinstance(X, RowProvider):
        return X
    return ArrayRows(X, name=name)


def dense_source(provider):
    """(float32 array, index map or None) when rows can be read in place by the kernel, else None."""
    if isinstance(provider, ArrayRows):
        arr = provider.dense_float32()
        return None if arr is None else (arr, None)
    if isinstance(provider, SubsetRows):
        inner = dense_source(provider.base)
        if inner is None:
            return None
        arr, imap = inner
        return arr, (provider.indices if imap is None else imap[provider.indices])
    return None


def chunk_rows(dim: int) -> int:
    """Rows per chunk of float32 rows of ``dim`` features (<= 32 MB)."""
    return max(1, _CHUNK_BYTES // max(1, 4 * dim))


def iter_chunks(provider: RowProvider, n_rows: int, dim: int):
    """(start, stop, rows) over ``provider``'s first ``n_rows`` rows, in order, chunk by chunk."""
    step = chunk_rows(dim)
    for s in range(0, n_rows, step):
        stop = min(n_rows, s + step)
        yield s, stop, provider.rows(np.arange(s, stop))

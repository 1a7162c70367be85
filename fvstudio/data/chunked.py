"""A chunked on-disk array of rows (FVs, PQ codes): one zarr chunk per block of images.

The encode and compress steps write their (n, dim) outputs here instead of one big file, so that

- each block of ``block`` rows is one chunk file, written whole through a temporary name + rename
  (zarr's local store does that), by whichever thread, process or Dask worker computed the block:
  blocks are independent, nothing is read-modified-written;
- a cancelled or killed run keeps the blocks already written and the next run computes only the
  missing ones (:meth:`ChunkedArray.missing_blocks`); the array is opened again only if its identity
  (``ident``: the step's key, shape, dtype, block) is the same, else it is started anew;
- a chunk that is missing or has the wrong size is listed as missing (a cheap ``stat``), and every chunk
  carries a CRC-32C checksum (zarr's ``crc32c`` codec) that each read verifies: a garbled chunk raises
  :class:`ChunkError` naming it and is deleted, so the next run recomputes it. Nothing is silently read as
  zeros: an absent chunk would read as zarr's fill value, so reads refuse blocks that are missing.
- readers get numpy rows without loading everything: ``a[i]``, ``a[i:j]``, ``a[int_array]`` (read block
  by block, each block once) and ``np.asarray(a)``; ``shape``, ``dtype``, ``ndim``, ``len``.

Layout: ``<path>/zarr.json`` (zarr v3 metadata; the attributes hold ``ident``) and ``<path>/c/<b>/0``, the
chunk of rows ``b * block .. (b + 1) * block`` (the last one padded to full size by zarr).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["ChunkedArray", "ChunkError"]

_CRC_BYTES = 4  # the crc32c codec appends 4 bytes to each chunk


class ChunkError(ValueError):
    """A chunk of a :class:`ChunkedArray` is missing or fails its checksum."""


def _zarr():
    import zarr  # imported on first use: zarr pulls in asyncio machinery a GUI start need not pay for

    return zarr


def _remove_orphans(path: Path, age: float = 120.0) -> None:
    """Delete the temporaries of chunk writes a kill cut short (zarr names them ``<chunk>.<uuid>.partial``);
    only old ones: a chunk is written in about a second, so a younger one may belong to a live writer."""
    now = time.time()
    for f in path.glob("c/**/*.partial"):
        try:
            if now - f.stat().st_mtime > age:
                f.unlink()
        except OSError:
            pass


class ChunkedArray:
    """Rows ``(n, dim)`` of ``dtype`` in ``block``-row chunks at ``path`` (see the module docstring)."""

    #: read by indexing, block by block (:class:`fvstudio.engine.rows.ArrayRows` keeps it lazy when it is large)
    lazy_rows = True

    def __init__(self, path, z) -> None:
        self.path = Path(path)
        self._z = z
        self.shape = tuple(int(v) for v in z.shape)
        self.dtype = np.dtype(z.dtype)
        self.block = int(z.chunks[0])
        self.ndim = len(self.shape)
        self._last: Optional[tuple] = None  # (block index, its rows): consecutive reads of one block

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path, shape, dtype, block: int, ident: Dict[str, Any]) -> "ChunkedArray":
        """The array at ``path`` if it has this identity (resume), else a new empty one (an older array of
        another identity is deleted)."""
        zarr = _zarr()
        from zarr.codecs import Crc32cCodec

        path = Path(path)
        shape = tuple(int(v) for v in shape)
        want = json.loads(json.dumps({"ident": ident, "shape": shape, "dtype": np.dtype(dtype).str,
                                      "block": int(block)}))
        if (path / "zarr.json").exists():
            try:
                z = zarr.open_array(str(path), mode="r+", config={"write_empty_chunks": True})
                if z.attrs.get("fvstudio") == want:
                    _remove_orphans(path)
                    return cls(path, z)
            except Exception:  # noqa: BLE001 - unreadable metadata: start anew
                pass
        if path.exists():
            shutil.rmtree(path)
        chunks = (int(block),) + shape[1:]
        z = zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype=np.dtype(dtype),
                              compressors=[Crc32cCodec()], fill_value=0, attributes={"fvstudio": want},
                              config={"write_empty_chunks": True})
        return cls(path, z)

    @classmethod
    def open(cls, path, writable: bool = False) -> "ChunkedArray":
        """An existing array (read-only unless ``writable``: to write blocks of it, e.g. on a Dask worker);
        FileNotFoundError if there is none."""
        path = Path(path)
        if not (path / "zarr.json").exists():
            raise FileNotFoundError(f"no chunked array at {path}")
        if writable:
            return cls(path, _zarr().open_array(str(path), mode="r+", config={"write_empty_chunks": True}))
        return cls(path, _zarr().open_array(str(path), mode="r"))

    # ------------------------------------------------------------------ blocks
    @property
    def n_blocks(self) -> int:
        return -(-self.shape[0] // self.block) if self.shape[0] else 0

    def block_rows(self, b: int) -> slice:
        return slice(b * self.block, min(self.shape[0], (b + 1) * self.block))

    def _chunk_file(self, b: int) -> Path:
        return self.path.joinpath("c", str(b), *(["0"] * (self.ndim - 1)))

    @property
    def chunk_bytes(self) -> int:
        return int(self.block * int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize) + _CRC_BYTES

    def missing_blocks(self) -> List[int]:
        """Blocks whose chunk file is absent or not of the size a whole chunk has (cut short)."""
        out = []
        want = self.chunk_bytes
        for b in range(self.n_blocks):
            try:
                if os.stat(self._chunk_file(b)).st_size != want:
                    out.append(b)
            except FileNotFoundError:
                out.append(b)
        return out

    def is_complete(self) -> bool:
        return not self.missing_blocks()

    def write_block(self, b: int, rows: np.ndarray) -> None:
        """Write block ``b`` whole (one chunk file, renamed into place)."""
        sl = self.block_rows(b)
        rows = np.asarray(rows, self.dtype)
        if rows.shape != (sl.stop - sl.start,) + self.shape[1:]:
            raise ValueError(f"block {b} of {self.path} takes {(sl.stop - sl.start,) + self.shape[1:]} rows, "
                             f"got {rows.shape}")
        self._z[sl] = rows
        self._last = None

    def read_block(self, b: int) -> np.ndarray:
        """The rows of block ``b``; ChunkError if its chunk is missing or garbled (a garbled one is deleted)."""
        if self._last is not None and self._last[0] == b:
            return self._last[1]
        f = self._chunk_file(b)
        try:
            size = os.stat(f).st_size
        except FileNotFoundError:
            raise ChunkError(f"{f}: block {b} of {self.path} was never written (an interrupted run); run the "
                             f"step again to compute it") from None
        if size != self.chunk_bytes:
            raise ChunkError(f"{f}: block {b} of {self.path} has {size} bytes, {self.chunk_bytes} expected (cut "
                             f"short); run the step again to recompute it")
        try:
            rows = np.asarray(self._z[self.block_rows(b)])
        except ValueError as exc:
            if "checksum" not in str(exc).lower():
                raise
            try:
                os.unlink(f)
            except OSError:
                pass
            raise ChunkError(f"{f}: block {b} of {self.path} fails its checksum (garbled on disk); it was deleted, "
                             f"run the step again to recompute it") from None
        self._last = (b, rows)
        return rows

    # ------------------------------------------------------------------ numpy-like reading
    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        n = self.shape[0]
        idx = np.asarray(idx, np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((idx.size,) + self.shape[1:], self.dtype)
        blocks = idx // self.block
        order = np.argsort(blocks, kind="stable")
        sb = blocks[order]
        bounds = np.flatnonzero(np.diff(sb)) + 1
        for part in np.split(order, bounds):
            if part.size:
                b = int(blocks[part[0]])
                out[part] = self.read_block(b)[idx[part] - b * self.block]
        return out

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            out = self._rows(np.array([int(key)]))[0]
        elif isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                out = np.empty((max(0, stop - start),) + self.shape[1:], self.dtype)
                for b in range(start // self.block, -(-stop // self.block)) if stop > start else ():
                    sl = self.block_rows(b)
                    lo, hi = max(start, sl.start), min(stop, sl.stop)
                    out[lo - start:hi - start] = self.read_block(b)[lo - sl.start:hi - sl.start]
            else:
                out = self._rows(np.arange(start, stop, step))
        else:
            arr = np.asarray(key)
            if arr.dtype == bool:
                arr = np.flatnonzero(arr)
            out = self._rows(arr.ravel()).reshape(arr.shape + self.shape[1:])
        if not rest:
            return out
        return out[rest] if isinstance(key, (int, np.integer)) else out[(slice(None),) + rest]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"ChunkedArray({self.path}, shape={self.shape}, dtype={self.dtype}, block={self.block})"

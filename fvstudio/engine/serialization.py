"""Saving fitted models without pickles: arrays in an ``.npz``, metadata as JSON inside it.

Every file is written to a temporary name in the destination folder and renamed into place, so a
crash or a cancel never leaves a half-written model behind (the rename is atomic on one filesystem).
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, Mapping, Tuple

import numpy as np

_META_KEY = "__meta_json__"


@contextmanager
def atomic_path(path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to (by any means: ``np.save``, a memmap, an
    image encoder); on success (optionally fsync and) rename it onto ``path``, on any exception
    (including a cancel) delete it. Readers never see a partial file. The temporary name keeps the
    suffix of ``path`` so writers that append a suffix (``np.save``) do not rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_open(path, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """:func:`atomic_path`, opened for binary writing."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, "wb") as fh:
            yield fh


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file + rename."""
    with atomic_open(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_save_npz(path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> Path:
    """Save named arrays (and an optional JSON-able ``meta`` dict) to ``path`` atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"model file {path} must end in .npz")
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    if _META_KEY in payload:
        raise ValueError(f"array name {_META_KEY!r} is reserved")
    payload[_META_KEY] = np.frombuffer(json.dumps(dict(meta or {}), sort_keys=True).encode(), dtype=np.uint8)
    with atomic_open(path) as fh:
        np.savez(fh, **payload)
    return path


def load_npz(path, *, kind: str | None = None) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Load arrays and metadata saved by :func:`atomic_save_npz` (never unpickles).

    With ``kind``, the metadata's ``"kind"`` entry must match, so loading a PCA file as a GMM fails
    with a message naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != _META_KEY}
            meta = json.loads(bytes(data[_META_KEY]).decode()) if _META_KEY in data.files else {}
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable fvstudio model file: {exc}") from exc
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind', 'unknown')!r} model, not a {kind!r}")
    return arrays, meta

"""Cache keys of the pipeline's steps: short SHA-256 digests of JSON-able parameters and of image-id lists.

A step's key is ``digest([step name, the keys of the steps it reads, its own config section(s), ...])``
(see each module of :mod:`fvstudio.pipeline.steps`), so changing a parameter changes the key of its step
and of every step after it, and nothing before.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, List, Sequence

import numpy as np

__all__ = ["digest", "ids_digest", "flat_keys"]


def digest(obj: Any) -> str:
    """20 hex digits of SHA-256 of ``obj`` as sorted-key JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def ids_digest(ids: Sequence[str], indices: np.ndarray) -> str:
    """20 hex digits of SHA-256 of the image ids at ``indices``, in that order."""
    h = hashlib.sha256()
    for i in np.asarray(indices, np.int64):
        h.update(ids[int(i)].encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def flat_keys(key) -> List[str]:
    """The keys of one step: a key, {channel: key} or {channel: [key per split]}, as a flat list."""
    if isinstance(key, dict):
        return [v for vs in key.values() for v in flat_keys(vs)]
    if isinstance(key, (list, tuple)):
        return [str(v) for v in key]
    return [str(key)]

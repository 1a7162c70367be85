"""The shape every pipeline step has, and the descriptor sample the vocabulary steps share.

A step is a small object with:

- ``name`` (its folder under ``<workspace>/steps/``), ``sections`` (the config sections it reads: a
  change in any of them changes its key) and ``weight`` (its rough share of a whole run's time at the
  paper's settings, Fig. 6, for the overall progress bar);
- ``check(ctx)``: cheap validation at the door, before any step of the run computes anything;
- ``key(ctx, keys)``: its cache key (a string, ``{channel: key}`` or ``{channel: [key per split]}``) from
  its parameters and the keys of the steps before it (``keys`` holds those);
- ``is_cached(ctx, keys)`` / ``has_any(cache)``: valid output for these keys / output for any keys;
- ``run(ctx, keys, progress, cancel)``: compute what is not cached, report progress through
  ``progress.part`` / ``progress.emit`` and stop at ``cancel``; write every file through a temporary
  name + rename and the manifest last;
- ``load(ctx, keys, channel, split)``: its cached output, for the next step and for diagnostics.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

__all__ = ["Step", "training_sample"]


class Step:
    """Defaults shared by the steps: cached once every manifest of the step's keys exists."""

    name: str = ""
    sections: Tuple[str, ...] = ()
    weight: float = 0.0

    def check(self, ctx) -> None:
        """Nothing to validate beyond the config schema."""

    def key(self, ctx, keys: Dict[str, Any]):  # pragma: no cover - every step defines it
        raise NotImplementedError

    def is_cached(self, ctx, keys: Dict[str, Any]) -> bool:
        return ctx.cache.all_present(self.name, keys[self.name])

    def has_any(self, cache) -> bool:
        return cache.has_any(self.name)

    def run(self, ctx, keys: Dict[str, Any], progress, cancel) -> None:  # pragma: no cover
        raise NotImplementedError

    def load(self, ctx, keys: Dict[str, Any], channel: str, split: int):  # pragma: no cover
        raise NotImplementedError


def training_sample(ctx, channel: str, n: int, seed: int, split: int, with_xy: bool = False):
    """``n`` descriptors of ``channel`` drawn uniformly from the vocabulary images of ``split`` (float32):
    ``descriptors.vocab_images`` of its training images (:meth:`~fvstudio.pipeline.context.StepContext.vocab_indices`),
    ``descriptors.vocab_rows`` seeded rows of each (:func:`~fvstudio.data.cache.vocab_rows`).

    Only training images: the vocabulary never sees an image its split tests (see
    :mod:`fvstudio.pipeline.runner`). ``with_xy``: the pair (descriptors, their (n, 2) normalised positions)."""
    out = ctx.stores[channel].sample(n, seed=seed, indices=ctx.vocab_indices(split),
                                     rows_per_image=ctx.config.get("descriptors.vocab_rows"), with_xy=with_xy)
    if with_xy:
        return np.ascontiguousarray(out[0], dtype=np.float32), out[1]
    return np.ascontiguousarray(out, dtype=np.float32)

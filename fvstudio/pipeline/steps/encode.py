"""Step 4, ``encode``: per channel and split, one Fisher Vector (or soft-BoV / VLAD) per image of the split.

Reads ``[encoder]``. Each image's descriptors go through the split's PCA, then the encoder on the split's
GMM (:mod:`fvstudio.engine.fisher`: gradients w.r.t. ``encoder.gradients`` (eqs. 16-18), Fisher
normalisation ``encoder.fim``, power normalisation ``encoder.power`` (eq. 30) then Lp per pyramid region,
pyramid ``encoder.pyramid``). With ``fim = "empirical"`` the FIM is first estimated on the split's
training images. Output: ``fvs.npy`` (n, dim) float32 whose row r encodes dataset image ``indices[r]``
(``indices.npy``), written to a temporary name and renamed (memory-mappable, never half-written). Images
that gave no descriptor are not in the split (:class:`~fvstudio.pipeline.context.StepContext`), so no
row is the FV of nothing.
"""
from __future__ import annotations

import errno
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ...engine.fisher import make_encoder
from ...engine.progress import check_cancel
from ...engine.serialization import DiskFullError, atomic_path
from ..config import parse_pyramid
from ..hashing import digest
from .base import Step
from .gmm import GmmStep
from .pca import DESCRIPTOR_DIMS, PcaStep

__all__ = ["EncodeStep", "EncodedSet", "DescriptorSets", "encoder_params", "build_encoder"]

CHUNK = 64  # images per encode_batch call (progress/cancel granularity)


@dataclass
class EncodedSet:
    """The ``encode`` step's output for one channel: ``fvs[r]`` encodes dataset image ``indices[r]``."""

    channel: str
    fvs: np.ndarray  # (n, dim) float32, memory-mapped read-only
    indices: np.ndarray  # (n,) int64 dataset indices
    ids: List[str]
    encoder: Any  # the encoder object (dim, block_layout() for plots)
    failed: List[str]  # ids left out of the split: no descriptor (unreadable, or smaller than one patch)

    def rows_for(self, dataset_indices: np.ndarray) -> np.ndarray:
        pos = {int(i): r for r, i in enumerate(self.indices)}
        return np.array([pos[int(i)] for i in dataset_indices], dtype=np.int64)


@dataclass
class DescriptorSets:
    """Projected descriptors of a list of images, as the encoders take them."""

    descriptors: List[np.ndarray]  # per image (T_i, d) float32
    positions: List[np.ndarray]  # per image (T_i, 2) float32 patch centres (x, y)
    image_shapes: List[tuple]  # per image (H, W) of the loaded image


def encoder_params(config) -> Dict[str, Any]:
    """The ``[encoder]`` keys that shape the encoding (part of the step's key)."""
    c = config
    p = {"kind": c.get("encoder.kind"), "power": c.get("encoder.power"), "lp": c.get("encoder.lp"),
         "pyramid": c.get("encoder.pyramid"), "posterior_threshold": c.get("encoder.posterior_threshold")}
    if p["kind"] == "fisher":
        p.update(gradients=c.get("encoder.gradients"), fim=c.get("encoder.fim"))
    return p


def build_encoder(config, gmm):
    """The encoder ``[encoder]`` describes, on ``gmm`` (``power = 0`` / ``lp = 0`` mean off)."""
    p = encoder_params(config)
    kwargs: Dict[str, Any] = {"power": p["power"] or None, "lp": p["lp"] or None,
                              "pyramid": parse_pyramid(p["pyramid"]), "posterior_threshold": p["posterior_threshold"]}
    if p["kind"] == "fisher":
        kwargs.update(gradients=p["gradients"], fim=p["fim"])
    return make_encoder(p["kind"], gmm, **kwargs)


def _reserve(path, nbytes: int) -> None:
    """Allocate ``nbytes`` of ``path`` on disk now: a memory map over a sparse file dies of SIGBUS when the
    disk fills up, an allocation fails with ENOSPC naming the file and the size."""
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, nbytes)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                folder = Path(path).parent
                raise DiskFullError(folder, shutil.disk_usage(folder).free, nbytes,
                                    f"write {Path(path).name}") from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


def load_descriptor_sets(store, indices: np.ndarray, pca) -> DescriptorSets:
    """The cached descriptors of ``indices`` projected by ``pca`` (None: raw)."""
    dim = pca.components_.shape[0] if pca is not None else (store.dim or DESCRIPTOR_DIMS[store.channel])
    out = DescriptorSets([], [], [])
    for i in indices:
        d = store.get(int(i))
        if d is None:  # the context leaves unreadable images out of every split: the store changed under us
            raise RuntimeError(f"{store.dataset.ids[int(i)]}: descriptors became unreadable during the run "
                               f"(in {store.folder}); run again")
        X = d.descriptors
        X = PcaStep.project(pca, X) if len(X) else np.zeros((0, dim), np.float32)
        out.descriptors.append(X)
        out.positions.append(np.asarray(d.positions, np.float32))
        out.image_shapes.append(tuple(int(v) for v in d.image_shape))
    return out


class EncodeStep(Step):
    name = "encode"
    sections = ("encoder",)
    weight = 0.27

    def key(self, ctx, keys):
        p = encoder_params(ctx.config)
        empirical = p.get("fim") == "empirical"
        return {ch: [digest(["encode", keys["gmm"][ch][s], p, ctx.split_signature(s), ctx.split_content(ch, s),
                             ctx.fit_signature(s) if empirical else None]) for s in range(len(ctx.splits))]
                for ch in ctx.channels}

    def run(self, ctx, keys, progress, cancel) -> None:
        units = ctx.new_units(keys[self.name])
        for j, (ch, split, key) in enumerate(units):
            if ctx.cache.manifest(self.name, key) is None:
                self._encode_unit(ctx, keys, ch, split, key, progress, cancel,
                                  j / len(units), (j + 1) / len(units))

    def _encode_unit(self, ctx, keys, ch: str, split: int, key: str, progress, cancel, lo: float, hi: float):
        t0 = time.perf_counter()
        store = ctx.stores[ch]
        indices = ctx.split_indices(split)
        name = ctx.unit_name(ch, split)
        pca = PcaStep().load(ctx, keys, ch, split)
        enc = build_encoder(ctx.config, GmmStep().load(ctx, keys, ch, split))
        if ctx.config.get("encoder.kind") == "fisher" and ctx.config.get("encoder.fim") == "empirical":
            progress.emit(lo, f"encode[{name}]: estimating the empirical FIM", channel=ch, split=split)
            fit = load_descriptor_sets(store, ctx.fit_indices(split), pca)
            enc.fit_fim(fit.descriptors, positions=fit.positions, image_shapes=fit.image_shapes)
        folder = ctx.cache.step_dir(self.name, key)
        folder.mkdir(parents=True, exist_ok=True)
        n = len(indices)
        with atomic_path(folder / "fvs.npy") as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, enc.dim))
            _reserve(tmp, mm.offset + mm.nbytes)
            for start in range(0, n, CHUNK):
                check_cancel(cancel, "encode")
                stop = min(n, start + CHUNK)
                sets = load_descriptor_sets(store, indices[start:stop], pca)
                part = progress.part(lo + (hi - lo) * start / n, lo + (hi - lo) * stop / n, channel=ch, split=split)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # empty regions: zero blocks
                    mm[start:stop] = enc.encode_batch(sets.descriptors, positions=sets.positions,
                                                      image_shapes=sets.image_shapes, n_jobs=ctx.n_jobs,
                                                      progress=part, cancel=cancel)
                progress.emit(min(0.999, lo + (hi - lo) * stop / n), f"encode[{name}]: {stop}/{n} images",
                              channel=ch, split=split)
            mm.flush()
            del mm
        with atomic_path(folder / "indices.npy") as tmp:
            np.save(tmp, indices)
        ctx.cache.write_manifest(self.name, key, time.perf_counter() - t0, channel=ch, split=split, dim=int(enc.dim),
                                 n_images=int(n), encoder_params=enc.get_params())

    def load(self, ctx, keys, channel, split) -> EncodedSet:
        key = keys[self.name][channel][split]
        man = ctx.cache.manifest(self.name, key)
        if man is None:
            raise FileNotFoundError(f"encode for channel {channel} is not computed")
        folder = ctx.cache.step_dir(self.name, key)
        fvs = np.load(folder / "fvs.npy", mmap_mode="r")
        indices = np.load(folder / "indices.npy")
        enc = build_encoder(ctx.config, GmmStep().load(ctx, keys, channel, split))
        left_out = sorted(ctx.ids[i] for i in ctx.left_out)
        return EncodedSet(channel, fvs, indices, [ctx.ids[int(i)] for i in indices], enc, left_out)

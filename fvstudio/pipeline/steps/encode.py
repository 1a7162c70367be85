"""Step 4, ``encode``: per channel and split, one Fisher Vector (or soft-BoV / VLAD) per image of the split.

Reads ``[encoder]``. Each image's descriptors go through the split's PCA (and get their patch positions
appended when ``gmm.position_scale`` > 0, as the GMM learned them: :mod:`fvstudio.engine.spatial`), then the
encoder on the split's
GMM (:mod:`fvstudio.engine.fisher`: gradients w.r.t. ``encoder.gradients`` (eqs. 16-18), Fisher
normalisation ``encoder.fim``, power normalisation ``encoder.power`` (eq. 30) then Lp per pyramid region,
pyramid ``encoder.pyramid``). With ``fim = "empirical"`` the FIM is first estimated on the split's
training images.

Streaming. An image whose descriptors the store does not keep (``descriptors.keep = "vocabulary"``) is
described here, in the same pass that projects and encodes it (:meth:`~fvstudio.data.cache.DescriptorStore.get`
extracts it again and checks its bytes are those probed): no descriptor of it is ever written. Work goes
in blocks of ``BLOCK`` images, ``n_jobs`` threads describing then encoding the images of a block: memory
holds one block's projected descriptors, whatever the number of images.

Output: ``fvs.zarr``, a :class:`~fvstudio.data.chunked.ChunkedArray` (n, dim) float32 whose row r encodes
dataset image ``indices[r]`` (``indices.npy``), one chunk per block, each written whole and renamed into
place: a cancelled or killed encode keeps its finished blocks and the next run computes only the missing
or damaged ones. Images that gave no descriptor are not in the split
(:class:`~fvstudio.pipeline.context.StepContext`), so no row is the FV of nothing.
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ...data.chunked import ChunkedArray
from ...engine.fisher import make_encoder
from ...engine.progress import check_cancel
from ...engine.serialization import DiskFullError, atomic_path, free_bytes
from ..config import parse_pyramid
from ..hashing import digest
from .base import Step
from .gmm import GmmStep
from .pca import DESCRIPTOR_DIMS, PcaStep

__all__ = ["EncodeStep", "EncodedSet", "DescriptorSets", "encoder_params", "build_encoder", "encode_block"]

BLOCK = 64  # images per block: one chunk of fvs.zarr, one encode_batch call (progress/cancel granularity)
CHUNK = BLOCK


@dataclass
class EncodedSet:
    """The ``encode`` step's output for one channel: ``fvs[r]`` encodes dataset image ``indices[r]``."""

    channel: str
    fvs: Any  # (n, dim) float32 rows: a ChunkedArray (numpy-like reads), or an array
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


def _reserve_space(folder: Path, nbytes: int) -> None:
    """Fail at once, naming the folder, if the disk cannot hold ``nbytes`` more (the blocks are written one
    by one; finding out at the last one would waste the encode)."""
    free = free_bytes(folder)
    if free is not None and free < nbytes:
        raise DiskFullError(folder, free, nbytes, "write the FVs (fvs.zarr)")


def load_descriptor_sets(store, indices: np.ndarray, pca, n_jobs: int = 1, xy: float = 0.0) -> DescriptorSets:
    """The descriptors of ``indices`` projected by ``pca`` (None: raw): read from the store, or extracted
    now for the images it only probed; ``n_jobs`` threads over images. ``xy`` > 0 (``gmm.position_scale``)
    appends each patch's scaled position (:func:`fvstudio.engine.spatial.append_xy`)."""
    dim = pca.components_.shape[0] if pca is not None else (store.dim or DESCRIPTOR_DIMS[store.channel])
    dim += 2 if xy else 0

    def one(i):
        try:
            d = store.get(int(i))
        except ValueError as exc:
            raise RuntimeError(f"{exc} (in {store.folder}); run again") from None
        if d is None:  # the context leaves unreadable images out of every split: the store changed under us
            raise RuntimeError(f"{store.dataset.ids[int(i)]}: descriptors became unreadable during the run "
                               f"(in {store.folder}); run again")
        X = d.descriptors
        shape = tuple(int(v) for v in d.image_shape)
        X = PcaStep.project(pca, X, xy, d.positions, shape) if len(X) else np.zeros((0, dim), np.float32)
        return X, np.asarray(d.positions, np.float32), shape

    idx = [int(i) for i in indices]
    if n_jobs > 1 and len(idx) > 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"), \
                ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="fv-describe") as pool:
            rows = list(pool.map(one, idx))
    else:
        rows = [one(i) for i in idx]
    return DescriptorSets([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def encode_block(shared: Dict[str, Any], payload: Dict[str, Any]) -> Dict[str, Any]:
    """Describe (if not stored), project and encode one block of images and write its chunk.

    ``shared`` (the same for every block of a unit): ``store``, ``pca``, ``encoder`` and ``array`` (the
    ``fvs.zarr`` path); ``payload``: ``block``, ``indices`` (its dataset indices) and ``n_jobs``. Module-level
    and idempotent (the chunk is written whole and renamed), so a block can run on a Dask worker and run
    again after a worker dies, with the same result. On threads ``shared`` may also hold ``cancel`` (checked
    between images) and ``progress`` (one update per image); on Dask the runner cancels between blocks."""
    cancel, progress = shared.get("cancel"), shared.get("progress")
    arr = ChunkedArray.open(shared["array"], writable=True)
    sets = load_descriptor_sets(shared["store"], payload["indices"], shared["pca"], payload["n_jobs"],
                                shared.get("xy", 0.0))
    check_cancel(cancel, "encode")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty regions: zero blocks
        fvs = shared["encoder"].encode_batch(sets.descriptors, positions=sets.positions,
                                             image_shapes=sets.image_shapes, n_jobs=payload["n_jobs"],
                                             progress=progress, cancel=cancel)
    arr.write_block(payload["block"], fvs)
    return {"block": int(payload["block"]), "n_images": len(sets.descriptors),
            "n_descriptors": int(sum(len(x) for x in sets.descriptors))}


class EncodeStep(Step):
    name = "encode"
    sections = ("encoder",)
    weight = 0.27
    _warned: Dict[str, Any] = {}  # key -> the missing blocks last warned about

    def key(self, ctx, keys):
        p = encoder_params(ctx.config)
        empirical = p.get("fim") == "empirical"
        return {ch: [digest(["encode", keys["gmm"][ch][s], p, ctx.split_signature(s), ctx.split_content(ch, s),
                             ctx.fit_signature(s) if empirical else None]) for s in range(len(ctx.splits))]
                for ch in ctx.channels}

    def run(self, ctx, keys, progress, cancel) -> None:
        from ..compute import BlockRunner, compute_settings

        units = [(j, u) for j, u in enumerate(ctx.new_units(keys[self.name])) if not self._unit_done(ctx, u[2])]
        if not units:
            return
        total = len(ctx.new_units(keys[self.name]))
        settings = compute_settings(ctx.config)
        if settings.scheduler == "dask":
            progress.emit(0.0, "encode: connecting to the Dask cluster" if settings.address else
                          "encode: starting a local Dask cluster")
        with BlockRunner(settings, ctx.n_jobs) as runner:  # one cluster for every unit of the step
            for j, (ch, split, key) in units:
                self._encode_unit(ctx, keys, ch, split, key, progress, cancel, j / total, (j + 1) / total, runner)

    def is_cached(self, ctx, keys) -> bool:
        return all(self._unit_done(ctx, key) for _, _, key in ctx.new_units(keys[self.name]))

    def _unit_done(self, ctx, key: str) -> bool:
        """The manifest is there and so is every block of the FVs (a block lost or deleted as garbled
        since is computed again, and only it)."""
        if ctx.cache.manifest(self.name, key) is None:
            return False
        folder = ctx.cache.step_dir(self.name, key)
        if not (folder / "fvs.zarr").exists():
            return (folder / "fvs.npy").exists()  # an encode of an earlier version
        try:
            missing = ChunkedArray.open(folder / "fvs.zarr").missing_blocks()
        except (OSError, ValueError) as exc:
            missing = [f"all ({type(exc).__name__}: {exc})"]
        if missing and self._warned.get(str(folder)) != missing:  # say it once, not at every status poll
            self._warned[str(folder)] = missing
            warnings.warn(f"{folder / 'fvs.zarr'}: blocks {missing[:8]} are missing or damaged; the encode step "
                          f"will compute them again (and only them)", stacklevel=2)
        return not missing

    def _encode_unit(self, ctx, keys, ch: str, split: int, key: str, progress, cancel, lo: float, hi: float,
                     runner):
        t0 = time.perf_counter()
        store = ctx.stores[ch]
        indices = ctx.split_indices(split)
        name = ctx.unit_name(ch, split)
        pca = PcaStep().load(ctx, keys, ch, split)
        enc = build_encoder(ctx.config, GmmStep().load(ctx, keys, ch, split))
        if ctx.config.get("encoder.kind") == "fisher" and ctx.config.get("encoder.fim") == "empirical":
            progress.emit(lo, f"encode[{name}]: estimating the empirical FIM", channel=ch, split=split)
            fit = load_descriptor_sets(store, ctx.fit_indices(split), pca, ctx.n_jobs,
                                       ctx.config.get("gmm.position_scale"))
            enc.fit_fim(fit.descriptors, positions=fit.positions, image_shapes=fit.image_shapes)
            del fit
        folder = ctx.cache.step_dir(self.name, key)
        folder.mkdir(parents=True, exist_ok=True)
        n = len(indices)
        _reserve_space(folder, n * enc.dim * 4)
        arr = ChunkedArray.create(folder / "fvs.zarr", (n, enc.dim), np.float32, BLOCK,
                                  {"key": key, "indices": digest(indices.tolist())})
        todo = arr.missing_blocks()
        if len(todo) < arr.n_blocks:
            progress.emit(lo, f"encode[{name}]: resuming, {arr.n_blocks - len(todo)} of {arr.n_blocks} blocks kept",
                          channel=ch, split=split)
        shared = {"store": store, "pca": pca, "encoder": enc, "array": str(arr.path),
                  "xy": ctx.config.get("gmm.position_scale")}
        kept = n - sum(arr.block_rows(b).stop - arr.block_rows(b).start for b in todo)
        state = {"images": kept}

        def blocks_done(p):  # the runner reports finished blocks (in any order on Dask)
            state["images"] = images = min(n, kept + int(p.values.get("blocks_done", 0)) * arr.block)
            progress.emit(min(0.999, lo + (hi - lo) * images / n), f"encode[{name}]: {images}/{n} images",
                          channel=ch, split=split)

        if runner.settings.scheduler != "dask":  # in this process: cancel and progress inside a block too
            def image_done(p):
                at = state["images"] + int(p.done)
                progress.emit(min(0.999, lo + (hi - lo) * at / n), f"encode[{name}]: image {at}/{n}", channel=ch,
                              split=split)

            shared.update(cancel=cancel, progress=image_done)

        runner.map(encode_block, [{"block": b, "indices": [int(i) for i in indices[arr.block_rows(b)]]}
                                  for b in todo], shared=shared, progress=blocks_done, cancel=cancel, label="encode")
        missing = arr.missing_blocks()
        if missing:  # a block written and lost since (another process cleaning up, a failing disk)
            raise RuntimeError(f"encode[{name}]: blocks {missing[:5]} of {arr.path} are missing after writing them")
        with atomic_path(folder / "indices.npy") as tmp:
            np.save(tmp, indices)
        ctx.cache.write_manifest(self.name, key, time.perf_counter() - t0, channel=ch, split=split, dim=int(enc.dim),
                                 n_images=int(n), encoder_params=enc.get_params(), block=BLOCK,
                                 bytes_per_image=int(enc.dim) * 4)

    def load(self, ctx, keys, channel, split) -> EncodedSet:
        key = keys[self.name][channel][split]
        man = ctx.cache.manifest(self.name, key)
        if man is None:
            raise FileNotFoundError(f"encode for channel {channel} is not computed")
        folder = ctx.cache.step_dir(self.name, key)
        fvs = ChunkedArray.open(folder / "fvs.zarr") if (folder / "fvs.zarr").exists() else \
            np.load(folder / "fvs.npy", mmap_mode="r")  # an encode of an earlier version
        indices = np.load(folder / "indices.npy")
        enc = build_encoder(ctx.config, GmmStep().load(ctx, keys, channel, split))
        left_out = sorted(ctx.ids[i] for i in ctx.left_out)
        return EncodedSet(channel, fvs, indices, [ctx.ids[int(i)] for i in indices], enc, left_out)

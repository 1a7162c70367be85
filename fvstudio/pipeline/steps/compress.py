"""Step 5, ``compress``: per channel and split, the FVs as product-quantised codes (paper Sec. 4.1-4.3).

Reads ``[compression]``. ``compression.bits_per_dim = 0`` (the default) switches the step off: it records
that and stores nothing, and the classifier reads the float32 FVs. Otherwise a
:class:`~fvstudio.engine.pq.ProductQuantizer` of b = ``bits_per_dim`` bits per dimension and groups of
G = ``group`` dimensions (M = E / G sub-quantisers of 2^(bG) centroids each, Sec. 4.1) is learned on the
split's *training* FVs only (at most ``train_sample`` of them; 0 = 256 per centroid), then every FV of the
split (training and test) is encoded. With ``compression.sparsity`` the per-Gaussian sparsity bit of
Sec. 4.2 is stored too: one bit per Gaussian and pyramid region, and no code for a Gaussian no descriptor
was assigned to (lossless on top of PQ).

Output: ``pq.npz`` (the quantiser) and the codes in the row order of the encode step's FVs, in chunked
stores like the FVs (:class:`~fvstudio.data.chunked.ChunkedArray`, one chunk per block of images, named after
the quantiser's fingerprint): ``codes.zarr`` (n, code bytes) and, with the sparsity bit, ``mask.zarr`` (n, one
bit per Gaussian and region); the compact per-image records of Sec. 4.2 are assembled from them when loaded.
The codebooks are learned here, on the client; the blocks (read FVs -> quantise -> write chunk) run through
:class:`~fvstudio.pipeline.compute.BlockRunner`, on threads or on Dask workers, and a cancelled or killed
run keeps its finished blocks. The manifest records
what the paper reports about a code (and ``results.json -> compression`` repeats it): bits per dimension,
group, bytes per image as float32, as PQ codes and as PQ codes + sparsity bit (mean and largest), the share
of zero dimensions, and the distortion MSE = mean ||q(x) - x||^2 (eq. 42) on the split's training and test
FVs (the test FVs are only measured, never learned from).

The classifier then learns and scores from the codes (:class:`~fvstudio.engine.pq.PQRows`: decoded a block
at a time into a reused buffer, so only the codes are in memory; Sec. 4.3); with
``compression.renormalise`` each decoded pyramid region is rescaled to unit L2 norm (Sec. 5.1: PQ shrinks
norms, and the FVs it encodes were unit-norm per region).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from ...data.chunked import ChunkedArray
from ...engine.pq import PQRows, ProductQuantizer, sparsity_storage
from ...engine.progress import check_cancel
from ..config import ConfigError
from ..hashing import digest
from .base import Step
from .encode import EncodedSet, EncodeStep
from .pca import modelled_dims

__all__ = ["CompressStep", "CompressedSet", "compression_params", "compression_on", "compress_block"]


def _fv_rows(path: str):
    """The FVs at ``path``: a chunked store, or the ``fvs.npy`` of an encode of an earlier version."""
    return ChunkedArray.open(path) if not path.endswith(".npy") else np.load(path, mmap_mode="r")


def compress_block(shared: Dict[str, Any], payload: Dict[str, Any]) -> int:
    """Quantise one block of FVs and write its chunk(s): ``shared`` = ``pq``, ``fvs`` (path), ``codes`` /
    ``mask`` (paths, ``mask`` None without the sparsity bit); ``payload`` = ``block``. Idempotent, so it may
    run on a Dask worker and run again after the worker dies."""
    codes = ChunkedArray.open(shared["codes"], writable=True)
    rows = codes.block_rows(payload["block"])
    X = np.ascontiguousarray(_fv_rows(shared["fvs"])[rows], dtype=np.float32)
    pq: ProductQuantizer = shared["pq"]
    if shared["mask"] is None:
        codes.write_block(payload["block"], pq.encode(X))
    else:
        dense, units = pq.encode_masked(X)
        codes.write_block(payload["block"], dense)
        ChunkedArray.open(shared["mask"], writable=True).write_block(payload["block"], units)
    return rows.stop - rows.start


def compression_on(config) -> bool:
    return float(config.get("compression.bits_per_dim")) > 0


def compression_params(config) -> Dict[str, Any]:
    """The ``[compression]`` keys that shape the codes (part of the step's key)."""
    c = config
    return {"bits_per_dim": c.get("compression.bits_per_dim"), "group": c.get("compression.group"),
            "sparsity": c.get("compression.sparsity"), "train_sample": c.get("compression.train_sample"),
            "n_iter": c.get("compression.n_iter"), "seed": c.get("compression.seed")}


@dataclass
class CompressedSet:
    """The ``compress`` step's output for one channel and split: codes of ``indices`` (encode's row order)."""

    channel: str
    quantizer: ProductQuantizer
    codes: Any  # (n, code_size) uint8, or SparseCodes
    indices: np.ndarray  # (n,) dataset indices, as EncodedSet.indices
    info: Dict[str, Any]  # the manifest's figures (bytes per image, MSE, ...)

    def rows(self, renormalise: bool) -> PQRows:
        """A row provider decoding the codes a block at a time (Sec. 4.3)."""
        return PQRows(self.quantizer, self.codes, renormalise=renormalise)


class CompressStep(Step):
    name = "compress"
    sections = ("compression",)
    weight = 0.06

    def check(self, ctx) -> None:
        if not compression_on(ctx.config):
            return
        c = ctx.config
        b, g = c.get("compression.bits_per_dim"), c.get("compression.group")
        bits = b * g
        if abs(bits - round(bits)) > 1e-9 or not 1 <= round(bits) <= 16:
            raise ConfigError(f"compression.bits_per_dim x compression.group must be a whole number of bits in "
                              f"1..16 (the code of one group of {g} dimensions), got {b:g} x {g} = {bits:g}")
        if c.get("encoder.kind") == "soft_bow":
            raise ConfigError("compression needs FVs or VLAD (encoder.kind = 'fisher' / 'vlad'); soft-BoV "
                              "histograms are K numbers, compress them by lowering encoder K instead")
        # groups never straddle two blocks: G divides K D (mean / sigma / VLAD blocks) and K (weights); a
        # group may cross two Gaussians inside a block (then it has no sparsity bit), see engine/pq.py
        K = c.get("gmm.n_components")
        grads = c.get("encoder.gradients") if c.get("encoder.kind") == "fisher" else "m"
        plus = " + 2 position coordinates (gmm.position_scale)" if c.get("gmm.position_scale") > 0 else ""
        for ch in ctx.channels:
            D = modelled_dims(c, ch)
            for needed, size, what in (("m" in grads or "s" in grads, K * D,
                                        f"the K x D = {K} x {D} dimensions of each mean / sigma block ({ch}; D = "
                                        f"the PCA dimensions{plus})"),
                                       ("w" in grads, K, f"the K = {K} weight gradients")):
                if needed and size % g:
                    raise ConfigError(f"compression.group = {g} must divide {what}: a group may not straddle two "
                                      f"blocks of the FV (Sec. 4.1)")

    def is_cached(self, ctx, keys) -> bool:
        return all(self._unit_done(ctx, key) for _, _, key in ctx.new_units(keys[self.name]))

    def _unit_done(self, ctx, key: str) -> bool:
        """The manifest is there and so is every chunk of the codes (a lost or garbled one is computed again)."""
        if ctx.cache.manifest(self.name, key) is None:
            return False
        folder = ctx.cache.step_dir(self.name, key)
        try:
            return all(ChunkedArray.open(folder / name).is_complete()
                       for name in ("codes.zarr", "mask.zarr") if (folder / name).exists())
        except (OSError, ValueError):
            return False

    def key(self, ctx, keys):
        p = compression_params(ctx.config) if compression_on(ctx.config) else "off"
        return {ch: [digest(["compress", k, p]) for k in keys["encode"][ch]] for ch in ctx.channels}

    def run(self, ctx, keys, progress, cancel) -> None:
        from ..compute import BlockRunner, compute_settings

        units = ctx.new_units(keys[self.name])
        todo = []
        for j, (ch, split, key) in enumerate(units):
            if self._unit_done(ctx, key):
                continue
            if not compression_on(ctx.config):
                ctx.cache.write_manifest(self.name, key, 0.0, channel=ch, split=split, off=True)
                continue
            todo.append((j, ch, split, key))
        if not todo:
            return
        with BlockRunner(compute_settings(ctx.config), ctx.n_jobs) as runner:
            for j, ch, split, key in todo:
                self._compress_unit(ctx, keys, ch, split, key, progress, cancel, j / len(units),
                                    (j + 1) / len(units), runner)

    def _compress_unit(self, ctx, keys, ch, split, key, progress, cancel, lo, hi, runner) -> None:
        t0 = time.perf_counter()
        c = ctx.config
        name = ctx.unit_name(ch, split)
        enc: EncodedSet = EncodeStep().load(ctx, keys, ch, split)
        sp = ctx.splits[split]
        tr, te = enc.rows_for(sp.train), enc.rows_for(sp.test)
        sample = c.get("compression.train_sample") or None
        pq = ProductQuantizer(c.get("compression.bits_per_dim"), c.get("compression.group"),
                              layout=enc.encoder.block_layout(), n_iter=c.get("compression.n_iter"),
                              train_sample=sample, seed=c.get("compression.seed"), n_jobs=ctx.n_jobs)
        progress.emit(lo, f"compress[{name}]: learning {enc.fvs.shape[1] // pq.group} codebooks of {pq.ksub} "
                          f"centroids on {len(tr)} training FVs", channel=ch, split=split)
        X_tr = _rows(enc.fvs, tr)
        if len(tr) <= pq.ksub:
            progress.emit(lo, f"compress[{name}]: few training FVs", channel=ch, split=split, warning=(
                f"compress[{name}]: {len(tr)} training FVs for {pq.ksub} centroids per codebook: the training FVs "
                f"are coded almost exactly and only the test MSE tells the distortion (lower "
                f"compression.bits_per_dim x compression.group, or train on more images)"))
        pq.fit(X_tr, progress=progress.part(lo, lo + 0.8 * (hi - lo), channel=ch, split=split), cancel=cancel)
        check_cancel(cancel, "compress")
        progress.emit(lo + 0.8 * (hi - lo), f"compress[{name}]: encoding {len(enc.indices)} FVs", channel=ch,
                      split=split)
        X_te = _rows(enc.fvs, te)
        storage = sparsity_storage(pq, X_te if len(te) else X_tr)
        codes = self._encode_blocks(ctx, key, pq, enc, runner, progress, cancel, lo + 0.8 * (hi - lo), hi, name)
        check_cancel(cancel, "compress")
        info = {"bits_per_dim": float(pq.bits_per_dim), "group": int(pq.group), "n_bits": int(pq.n_bits),
                "dim": int(enc.fvs.shape[1]), "sparsity": bool(c.get("compression.sparsity")),
                "bytes_float32": int(storage.float32_bytes), "bytes_pq": int(storage.pq_bytes),
                "bytes_pq_sparse_mean": float(storage.sparse_bytes_mean),
                "bytes_pq_sparse_max": int(storage.sparse_bytes_max),
                "zero_dim_fraction": float(storage.zero_dim_fraction),
                "zero_gaussian_fraction": float(storage.zero_unit_fraction),
                "mse_train": _mse(pq, codes, tr, enc.fvs), "mse_test": _mse(pq, codes, te, enc.fvs) if len(te) else None,
                "mean_sq_norm_test": float(np.mean(np.einsum("ij,ij->i", X_te, X_te, dtype=np.float64)))
                if len(te) else None,
                "n_train_fvs": int(pq.n_train_), "n_reseeded": int(pq.n_reseeded_)}
        info["bytes_per_image"] = info["bytes_pq_sparse_mean"] if info["sparsity"] else float(info["bytes_pq"])
        folder = ctx.cache.step_dir(self.name, key)
        pq.save(folder / "pq.npz")
        ctx.cache.write_manifest(self.name, key, time.perf_counter() - t0, channel=ch, split=split, off=False,
                                 indices=[int(i) for i in enc.indices], **info)

    def _encode_blocks(self, ctx, key, pq, enc: EncodedSet, runner, progress, cancel, lo, hi, name):
        """Quantise every FV block by block through ``runner`` (the finished blocks of an interrupted run are
        kept), then read the codes back as the classifier takes them."""
        folder = ctx.cache.step_dir(self.name, key)
        folder.mkdir(parents=True, exist_ok=True)
        n = len(enc.indices)
        block = enc.fvs.block if isinstance(enc.fvs, ChunkedArray) else 64
        sparsity = bool(ctx.config.get("compression.sparsity"))
        codes, mask = _code_arrays(folder, pq, n, sparsity, block, create=True)
        todo = sorted(set(codes.missing_blocks()) | set(mask.missing_blocks() if mask is not None else []))
        fvs_path = str(enc.fvs.path) if isinstance(enc.fvs, ChunkedArray) else str(enc.fvs.filename)
        shared = {"pq": pq, "fvs": fvs_path, "codes": str(codes.path), "mask": None if mask is None else str(mask.path)}

        def blocks_done(p):
            k = int(p.values.get("blocks_done", 0))
            progress.emit(min(0.999, lo + (hi - lo) * k / max(1, len(todo))),
                          f"compress[{name}]: {k}/{len(todo)} blocks quantised", channel=enc.channel)

        runner.map(compress_block, [{"block": b} for b in todo], shared=shared, progress=blocks_done, cancel=cancel,
                   label="compress")
        return _read_codes(pq, folder)

    def load(self, ctx, keys, channel, split) -> Optional[CompressedSet]:
        """The codes of ``channel`` and ``split``, or None when compression is off."""
        key = keys[self.name][channel][split]
        man = ctx.cache.manifest(self.name, key)
        if man is None:
            raise FileNotFoundError(f"compress for channel {channel} is not computed")
        if man.get("off"):
            return None

        def read(folder):
            pq = ProductQuantizer.load(folder / "pq.npz")
            if (folder / "codes.npz").exists():  # a compress step of an earlier version
                return pq, pq.load_codes(folder / "codes.npz")
            return pq, _read_codes(pq, folder)

        pq, codes = ctx.cache.loaded(self.name, key, read)
        info = {k: v for k, v in man.items() if k not in ("indices", "files", "seconds", "channel", "split", "off", "step", "key",
                                                    "created")}
        return CompressedSet(channel, pq, codes, np.asarray(man["indices"], np.int64), info)


def _code_arrays(folder, pq: ProductQuantizer, n: int, sparsity: bool, block: int, create: bool):
    """The chunked stores of the codes (and sparsity masks) of ``n`` FVs, named by ``pq``'s fingerprint."""
    ident = {"pq": pq.fingerprint_, "sparsity": bool(sparsity)}
    make = (lambda path, shape: ChunkedArray.create(path, shape, np.uint8, block, ident)) if create else \
        (lambda path, shape: ChunkedArray.open(path))
    codes = make(folder / "codes.zarr", (n, pq.code_size_))
    mask = make(folder / "mask.zarr", (n, (pq.n_units_ + 7) // 8)) if sparsity else None
    return codes, mask


def _read_codes(pq: ProductQuantizer, folder):
    """Every code of a finished compress step (ChunkError if a chunk is missing or garbled)."""
    codes = np.asarray(ChunkedArray.open(folder / "codes.zarr"))
    if (folder / "mask.zarr").exists():
        return pq.pack_sparse(codes, np.asarray(ChunkedArray.open(folder / "mask.zarr")))
    return pq.check_codes(codes, f"codes in {folder}")


def _mse(pq: ProductQuantizer, codes, rows: np.ndarray, fvs, block: int = 256) -> float:
    """mean ||q(x) - x||^2 (eq. 42) over ``rows``, of the codes as stored (with the sparsity bit, its
    zero blocks decode exactly)."""
    dec = PQRows(pq, codes)
    total = 0.0
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        diff = dec.rows(r).astype(np.float64) - np.asarray(fvs[r], np.float64)
        total += float(np.einsum("ij,ij->", diff, diff))
    return total / max(len(rows), 1)


def _rows(fvs, rows: np.ndarray) -> np.ndarray:
    """float32 copy of ``fvs[rows]``."""
    return np.ascontiguousarray(fvs[rows], dtype=np.float32)

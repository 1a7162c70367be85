"""Step 1, ``descriptors``: dense SIFT / LCS of every image some split uses (Sec. 3.1).

With ``descriptors.keep = "vocabulary"`` (the default) only the vocabulary images' descriptors
(``descriptors.vocab_images`` training images per split, :meth:`~fvstudio.pipeline.context.StepContext.vocab_indices`,
and of each only the ``descriptors.vocab_rows`` rows its vocabulary sample can draw) are stored; every other image is probed (loaded, its frames counted, its bytes hashed: failures are known
before anything is learned, and its content identity is the hash of its bytes) and described again, once,
while the encode step encodes it. ``keep = "all"`` stores every image's descriptors (the same results;
repeated encodes skip the extraction). ``descriptors.dtype = "float16"`` halves what is stored.

Reads ``[descriptors]`` and ``dataset.max_pixels``. Its cache is not a step folder but one
:class:`~fvstudio.data.cache.DescriptorStore` per channel (keyed by dataset + extraction parameters;
per-image files, resumable, atomic). Its key per channel is the store's key (the extraction parameters);
the steps reading the store add the store's content digest over the images they read
(:meth:`~fvstudio.pipeline.context.StepContext.fit_content`), so an image edited or fixed in place changes
everything computed from it. The step's own manifest only records what an extraction cost and which images failed.
"""
from __future__ import annotations

import time
from typing import Any, Dict

from ...data.cache import extract_block
from ..compute import BlockRunner, compute_settings
from ..hashing import digest, ids_digest
from .base import Step

BLOCK = 64  # images per Dask task

__all__ = ["DescriptorsStep", "descriptor_params"]


def descriptor_params(config, channel: str) -> Dict[str, Any]:
    """The extraction parameters of ``channel`` (what the store is keyed by)."""
    c = config
    p = {"patch": c.get("descriptors.patch"), "step": c.get("descriptors.step"),
         "scales": c.get("descriptors.scales"), "scale_factor": c.get("descriptors.scale_factor"),
         "max_pixels": c.get("dataset.max_pixels")}
    if channel == "sift":
        p.update(window=c.get("descriptors.window"), presmooth=c.get("descriptors.presmooth"),
                 root=c.get("descriptors.root_sift"))
        thr = c.get("descriptors.contrast_threshold")
        if thr:  # only when on, so that the stores extracted before this key existed keep their keys
            p["contrast_threshold"] = thr
    return p


class DescriptorsStep(Step):
    name = "descriptors"
    sections = ("descriptors",)
    weight = 0.45

    def key(self, ctx, keys):
        return {ch: str(ctx.stores[ch].key) for ch in ctx.channels}

    def run_key(self, ctx, keys) -> str:
        """Key of the manifest recording one extraction over the images the splits use."""
        return digest(["descriptors", keys["descriptors"], ids_digest(ctx.ids, ctx.needed_indices())])

    def is_cached(self, ctx, keys) -> bool:
        needed = ctx.needed_indices()
        keep, rows = ctx.stored_indices(), ctx.stored_rows()
        for ch in ctx.channels:
            store = ctx.stores[ch]
            if not store.is_complete(needed, keep=keep, keep_rows=rows):
                store.refresh()  # another Pipeline object (e.g. a GUI worker) may have extracted since
                if not store.is_complete(needed, keep=keep, keep_rows=rows):
                    return False
        return True

    def has_any(self, cache) -> bool:
        d = cache.workspace / "descriptors"
        return d.is_dir() and any(any(f.suffix == ".json" for f in (s / "images").glob("*.json"))
                                  for s in d.iterdir() if (s / "images").is_dir())

    def run(self, ctx, keys, progress, cancel) -> None:
        t0 = time.perf_counter()
        needed = ctx.needed_indices()
        n = len(ctx.channels)
        failures = {}
        dask = compute_settings(ctx.config).scheduler == "dask"
        for j, ch in enumerate(ctx.channels):
            store = ctx.stores[ch]
            part = progress.part(j / n, (j + 1) / n, channel=ch)
            if dask:
                self._extract_on_cluster(ctx, store, needed, part, cancel)
            else:
                store.extract(indices=needed, keep=ctx.stored_indices(), keep_rows=ctx.stored_rows(),
                              n_jobs=ctx.n_jobs, progress=part, cancel=cancel)
            failures[ch] = store.failures(needed)
        ctx.cache.write_manifest(self.name, self.run_key(ctx, keys), time.perf_counter() - t0, failures=failures)
        left_out = {image_id: reason for rows in failures.values() for image_id, reason in rows}
        if left_out:
            shown = "; ".join(f"{i}: {r}" for i, r in list(left_out.items())[:3])
            more = f"; and {len(left_out) - 3} more" if len(left_out) > 3 else ""
            progress.emit(0.999, f"{len(left_out)} images left out", warning=(
                f"{len(left_out)} of {len(needed)} images give no descriptor and are left out of training and "
                f"testing: {shown}{more}"))

    @staticmethod
    def _extract_on_cluster(ctx, store, needed, progress, cancel) -> None:
        """The images to extract or probe, BLOCK at a time on the Dask workers (each writes its images' files
        into the store, on the shared file system); the entries come back and the index is written here."""
        todo = store.pending(needed, keep=ctx.stored_indices(), keep_rows=ctx.stored_rows())
        if not todo:
            return
        blocks = [{"todo": [[int(i), stamp, want] for i, stamp, want in todo[s:s + BLOCK]]}
                  for s in range(0, len(todo), BLOCK)]
        with BlockRunner(compute_settings(ctx.config), ctx.n_jobs) as runner:
            try:
                done = runner.map(extract_block, blocks, shared={"store": store}, progress=progress, cancel=cancel,
                                  label=f"descriptors[{store.channel}]")
            finally:
                store.refresh()  # what the workers wrote before a cancel or an error is picked up from the files
        store.adopt([e for part in done for e in part])

    def load(self, ctx, keys, channel, split):
        return ctx.stores[channel]

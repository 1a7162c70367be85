"""Step 2, ``pca``: per channel and split, PCA fitted on descriptors of the split's training images.

Reads ``[pca]``. Sec. 3.1 / Fig. 1: projecting the descriptors to 64 dimensions decorrelates them, which
the diagonal GMM assumes; ``pca.n_components = 0`` keeps the raw descriptors (the step then stores no
model and :meth:`PcaStep.load` returns None). Fitted on ``pca.sample`` descriptors drawn uniformly from
the training images (the paper uses about a million). Output: ``pca.npz`` (see
:meth:`fvstudio.engine.pca.PCA.save`) and a manifest with the explained variance.
"""
from __future__ import annotations

import time

import numpy as np

from ...engine.pca import PCA
from ...engine.progress import check_cancel
from ...engine.spatial import append_xy
from ..config import ConfigError
from ..hashing import digest
from .base import Step, training_sample

__all__ = ["PcaStep", "DESCRIPTOR_DIMS", "modelled_dims"]

#: Dimension of each channel's raw descriptor (SIFT: 4x4 cells x 8 orientations; LCS: 4x4 x 2 x 3 colours).
DESCRIPTOR_DIMS = {"sift": 128, "lcs": 96}


def modelled_dims(config, channel: str) -> int:
    """D of the descriptors the GMM models and the FV has per Gaussian in a mean / sigma block: the PCA
    output (or the raw descriptors with ``pca.n_components = 0``), + 2 position coordinates when
    ``gmm.position_scale`` > 0 (:mod:`fvstudio.engine.spatial`)."""
    D = int(config.get("pca.n_components") or DESCRIPTOR_DIMS[channel])
    return D + (2 if config.get("gmm.position_scale") > 0 else 0)


class PcaStep(Step):
    name = "pca"
    sections = ("pca",)
    weight = 0.03

    def check(self, ctx) -> None:
        k = ctx.config.get("pca.n_components")
        for ch in ctx.channels:
            if k > DESCRIPTOR_DIMS[ch]:
                raise ConfigError(f"pca.n_components = {k} exceeds the {ch} descriptor dimension "
                                  f"{DESCRIPTOR_DIMS[ch]}")

    def key(self, ctx, keys):
        section = ctx.config.hashed_section("pca")
        return {ch: [digest(["pca", keys["descriptors"][ch], ctx.fit_signature(s), ctx.fit_content(ch, s),
                             section] + ([ctx.vocab_signature(s)] if ctx.config.get("descriptors.vocab_images") else [])
                             + ([ctx.config.get("descriptors.vocab_rows")] if ctx.config.get("descriptors.vocab_rows") else []))
                     for s in range(len(ctx.splits))] for ch in ctx.channels}

    def run(self, ctx, keys, progress, cancel) -> None:
        c = ctx.config
        units = ctx.new_units(keys[self.name])
        for j, (ch, s, key) in enumerate(units):
            if ctx.cache.manifest(self.name, key) is not None:
                continue
            t0 = time.perf_counter()
            frac = j / len(units)
            name = ctx.unit_name(ch, s)
            progress.emit(frac, f"pca[{name}]: sampling descriptors", channel=ch, split=s)
            X = training_sample(ctx, ch, c.get("pca.sample"), c.get("pca.seed"), s)
            check_cancel(cancel, "pca")
            k = c.get("pca.n_components")
            info = {"channel": ch, "split": s, "n_samples": int(len(X)), "input_dim": int(X.shape[1])}
            if k > 0:
                progress.emit(frac + 0.5 / len(units), f"pca[{name}]: fitting on {len(X)} descriptors",
                              channel=ch, split=s)
                pca = PCA(n_components=k, whiten=c.get("pca.whiten"), seed=c.get("pca.seed")).fit(X)
                pca.save(ctx.cache.step_dir(self.name, key) / "pca.npz")
                info["explained_variance"] = float(np.sum(pca.explained_variance_ratio_))
            ctx.cache.write_manifest(self.name, key, time.perf_counter() - t0, identity=k == 0, **info)

    def load(self, ctx, keys, channel, split):
        """The fitted :class:`~fvstudio.engine.pca.PCA`, or None when ``pca.n_components = 0``."""
        key = keys[self.name][channel][split]
        man = ctx.cache.manifest(self.name, key)
        if man is None:
            raise FileNotFoundError(f"pca for channel {channel} is not computed")
        if man.get("identity"):
            return None
        return ctx.cache.loaded(self.name, key, lambda folder: PCA.load(folder / "pca.npz"))

    @staticmethod
    def project(pca, X: np.ndarray, xy: float = 0.0, positions=None, image_shape=None) -> np.ndarray:
        """``X`` through ``pca`` (identity when there is none), float32 C-contiguous; with ``xy`` > 0 (the
        config's ``gmm.position_scale``) each row gets its patch's scaled normalised position appended
        (:func:`fvstudio.engine.spatial.append_xy`: ``positions`` (T, 2) and ``image_shape`` needed), which is
        what the GMM of that config models."""
        if pca is not None:
            X = pca.transform(X)
        if xy:
            if positions is None:
                raise ValueError("gmm.position_scale > 0 appends patch positions to the descriptors: positions "
                                 "are needed")
            return append_xy(X, positions, image_shape, xy)
        return np.ascontiguousarray(X, np.float32)

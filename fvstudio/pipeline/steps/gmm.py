"""Step 3, ``gmm``: per channel and split, a diagonal GMM fitted by EM on PCA-projected descriptors.

Reads ``[gmm]`` (``runtime.n_jobs`` only changes how fast). The visual vocabulary of Sec. 2.1 / Appendix B:
``gmm.n_components`` Gaussians fitted on ``gmm.sample`` descriptors drawn uniformly from the split's
training images and projected by that split's PCA (with ``gmm.position_scale`` > 0, each with its patch's
scaled position appended: :mod:`fvstudio.engine.spatial`); variances floored at ``gmm.var_floor`` times each
dimension's global variance. Output: ``gmm.npz`` (:meth:`fvstudio.engine.gmm.DiagonalGMM.save`) and a
manifest with the EM log-likelihood per iteration, the iteration count and whether EM converged.
"""
from __future__ import annotations

import time

import numpy as np

from ...engine.gmm import DiagonalGMM
from ...engine.progress import check_cancel
from ..config import ConfigError
from ..hashing import digest
from .base import Step, training_sample
from .pca import PcaStep

__all__ = ["GmmStep"]


class GmmStep(Step):
    name = "gmm"
    sections = ("gmm",)
    weight = 0.15

    def key(self, ctx, keys):
        section = ctx.config.hashed_section("gmm")
        return {ch: [digest(["gmm", k, section]) for k in keys["pca"][ch]] for ch in ctx.channels}

    def run(self, ctx, keys, progress, cancel) -> None:
        c = ctx.config
        units = ctx.new_units(keys[self.name])
        n_units = len(units)
        for j, (ch, s, key) in enumerate(units):
            if ctx.cache.manifest(self.name, key) is not None:
                continue
            t0 = time.perf_counter()
            progress.emit(j / n_units, f"gmm[{ctx.unit_name(ch, s)}]: sampling descriptors", channel=ch, split=s)
            xy = c.get("gmm.position_scale")
            X = training_sample(ctx, ch, c.get("gmm.sample"), c.get("gmm.seed"), s, with_xy=bool(xy))
            coords = None
            if xy:  # the sample's positions come normalised already (what append_xy computes): scale them
                X, coords = X
            X = PcaStep.project(PcaStep().load(ctx, keys, ch, s), X)
            if coords is not None:
                X = np.ascontiguousarray(np.concatenate([X, coords * np.float32(xy)], axis=1))
            K = c.get("gmm.n_components")
            if K > len(X):
                raise ConfigError(f"gmm.n_components = {K} exceeds the {len(X)} descriptors sampled "
                                  f"(raise gmm.sample or use more training images)")
            check_cancel(cancel, "gmm")
            gmm = DiagonalGMM(K, max_iter=c.get("gmm.max_iter"), tol=c.get("gmm.tol"), init=c.get("gmm.init"),
                              var_floor=c.get("gmm.var_floor"), n_init=c.get("gmm.n_init"),
                              seed=c.get("gmm.seed"), n_jobs=ctx.n_jobs)
            gmm.fit(X, progress=progress.part((j + 0.1) / n_units, (j + 1) / n_units, channel=ch, split=s),
                    cancel=cancel)
            gmm.save(ctx.cache.step_dir(self.name, key) / "gmm.npz")
            ctx.cache.write_manifest(self.name, key, time.perf_counter() - t0, channel=ch, split=s,
                                     n_samples=int(len(X)), n_iter=gmm.n_iter_, converged=gmm.converged_,
                                     log_likelihood=gmm.log_likelihood_)

    def load(self, ctx, keys, channel, split):
        """The fitted :class:`~fvstudio.engine.gmm.DiagonalGMM` of ``channel`` and ``split``."""
        key = keys[self.name][channel][split]
        if ctx.cache.manifest(self.name, key) is None:
            raise FileNotFoundError(f"gmm for channel {channel} is not computed")
        return ctx.cache.loaded(self.name, key, lambda folder: DiagonalGMM.load(folder / "gmm.npz"))

"""The Fisher Vector pipeline as scikit-learn transformers: images -> descriptor sets -> Fisher Vectors.

    make_pipeline(DenseSIFT(), FisherVectorEncoder(), OneVsRestSGD())

trains from image paths (or arrays); ``GridSearchCV`` can search ``fishervectorencoder__n_components``,
and ``Pipeline(memory=...)`` caches the descriptors (both transformers pickle and hash through joblib).

- :class:`DenseSIFT`: images -> list of (T_i, 128) float32 dense SIFT arrays, by
  :func:`fvstudio.data.images.load_image` (paths: shrunk to ``max_pixels``; an unreadable file is an
  :class:`~fvstudio.data.images.ImageLoadError` naming it) and
  :func:`fvstudio.engine.descriptors.extract_channel`. Nothing to learn (``fit`` only checks the
  parameters). ``output="descriptors"`` returns :class:`~fvstudio.engine.descriptors.DenseDescriptors`
  (with positions and the image shape) instead, which a spatial pyramid needs.
- :class:`FisherVectorEncoder`: ``fit`` draws ``sample`` descriptors uniformly (without replacement)
  from all the training sets, fits :class:`~fvstudio.engine.pca.PCA` (``pca_dims``; None = no PCA) and
  a :class:`~fvstudio.engine.gmm.DiagonalGMM` of ``n_components`` Gaussians on them;
  ``transform`` encodes each set with :class:`~fvstudio.engine.fisher.FisherEncoder` ->
  (N, dim) float32. The numbers are those of the native calls with the same parameters (tested).

Above the engine (it reads image files through :mod:`fvstudio.data`), hence a top-level module; it
never imports scikit-learn (the protocol is :class:`fvstudio.engine.estimator.Estimator`'s).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from .data.images import load_image, target_size
from .engine import defaults as D
from .engine.descriptors import DenseDescriptors, extract_channel
from .engine.estimator import ArrayOutput, Estimator
from .engine.fisher import FisherEncoder
from .engine.gmm import DiagonalGMM
from .engine.pca import PCA
from .engine.spatial import append_xy
from .engine.validation import as_float32_matrix, check_choice, check_positive_int, rng_from_seed

__all__ = ["DenseSIFT", "FisherVectorEncoder", "sample_descriptors"]

OUTPUTS = ("arrays", "descriptors")


def _set_tags(tags) -> None:
    """Tags of transformers whose input is a list (of images or descriptor sets), not a 2-D array:
    scikit-learn's array-based checks cannot apply to them (``two_d_array=False`` skips them)."""
    tags.input_tags.two_d_array = False
    tags.transformer_tags.preserves_dtype = []


class DenseSIFT(Estimator):
    """Images (paths, or (H, W[, 3]) arrays) -> their dense multi-scale SIFT (module docstring).

    Parameters are :func:`~fvstudio.engine.descriptors.dense_sift`'s (defaults: the paper's, Sec. 3.1)
    and ``max_pixels`` (images are shrunk to at most that many pixels, None = as they are); ``n_jobs``
    threads over images (the kernels release the GIL; results do not depend on it).
    """

    _estimator_kind = "transformer"

    def __init__(self, *, patch: int = D.PATCH, step: int = D.STEP, scales: int = D.SCALES,
                 scale_factor: float = D.SCALE_FACTOR, window: str = D.SIFT_WINDOW, presmooth: bool = D.PRESMOOTH,
                 root: bool = D.ROOT_SIFT, contrast_threshold: float = D.CONTRAST_THRESHOLD,
                 max_pixels: Optional[int] = D.MAX_PIXELS, output: str = "arrays", n_jobs: int = 1):
        self.patch = patch
        self.step = step
        self.scales = scales
        self.scale_factor = scale_factor
        self.window = window
        self.presmooth = presmooth
        self.root = root
        self.contrast_threshold = contrast_threshold
        self.max_pixels = max_pixels
        self.output = output
        self.n_jobs = n_jobs

    def _is_fitted(self) -> bool:
        return True  # nothing to learn

    def _adjust_tags(self, tags) -> None:
        _set_tags(tags)
        tags.requires_fit = False

    def _sift_params(self) -> dict:
        return {"patch": self.patch, "step": self.step, "scales": self.scales, "scale_factor": self.scale_factor,
                "window": self.window, "presmooth": self.presmooth, "root": self.root,
                "contrast_threshold": self.contrast_threshold}

    def _check_params(self) -> None:
        check_choice(self.output, "output", OUTPUTS)
        check_positive_int(self.n_jobs, "n_jobs")
        if self.max_pixels is not None:
            check_positive_int(self.max_pixels, "max_pixels")
        extract_channel("sift", np.zeros((1, 1, 3), np.float32), **self._sift_params())  # checks the grid

    def fit(self, X=None, y=None) -> "DenseSIFT":
        """Check the parameters; nothing is learned."""
        self._check_params()
        return self

    def transform(self, X) -> list:
        """A list with, for each image of ``X``, its (T_i, 128) float32 descriptors (or DenseDescriptors)."""
        self._check_params()
        images = _image_list(X)
        params = self._sift_params()

        def one(i):
            d = extract_channel("sift", self._load(images[i], i), **params)
            return d if self.output == "descriptors" else d.descriptors

        if self.n_jobs == 1 or len(images) < 2:
            return [one(i) for i in range(len(images))]
        with ThreadPoolExecutor(min(self.n_jobs, len(images))) as pool:
            return list(pool.map(one, range(len(images))))

    def fit_transform(self, X, y=None) -> list:
        return self.fit(X).transform(X)

    def set_output(self, *, transform=None) -> "DenseSIFT":
        """Only the default output: descriptor sets are a list of (T_i, 128) arrays, one per image, which
        no DataFrame holds (a Pipeline's later steps, e.g. FisherVectorEncoder, can give DataFrames)."""
        if transform not in (None, "default"):
            raise ValueError(f"DenseSIFT outputs a list of per-image descriptor arrays; set_output(transform="
                             f"{transform!r}) cannot apply (set it on the steps after DenseSIFT)")
        return self

    def _load(self, image, i: int) -> np.ndarray:
        """(H, W, 3) float32 RGB in [0, 1] of a path or an array, shrunk to ``max_pixels``."""
        if isinstance(image, (str, Path)):
            return load_image(image, self.max_pixels)
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"image {i} must be a path or an (H, W) / (H, W, 3) numeric array, got "
                             f"{type(image).__name__} of shape {arr.shape}")
        if np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)
        rgb = np.ascontiguousarray(arr, dtype=np.float32)
        h, w = target_size(rgb.shape[0], rgb.shape[1], self.max_pixels)
        if (h, w) != rgb.shape[:2]:
            rgb = np.clip(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA), 0.0, 1.0)
        return rgb


def _image_list(X) -> list:
    if isinstance(X, (str, Path)) or (isinstance(X, np.ndarray) and X.ndim in (2, 3) and X.dtype != object
                                      and not np.issubdtype(X.dtype, np.str_)):
        raise ValueError("X must be a sequence of images (paths or arrays), got a single "
                         f"{type(X).__name__}; wrap it in a list")
    return [str(v) if isinstance(v, np.str_) else v for v in X]


def _descriptor_sets(X, name: str = "X"):
    """(list of (T_i, D) float32 arrays, positions or None, image shapes or None) of ``X``: a sequence
    of arrays or of :class:`DenseDescriptors` (which carry positions for a spatial pyramid)."""
    if isinstance(X, np.ndarray) and X.dtype != object:
        raise ValueError(f"{name} must be a sequence of (T_i, D) descriptor arrays (one per image), got one "
                         f"array of shape {X.shape}; a single image's descriptors go in a list: [X]")
    items = list(X)
    if not items:
        raise ValueError(f"{name} holds no descriptor set")
    rich = [isinstance(v, DenseDescriptors) for v in items]
    if any(rich) and not all(rich):
        raise ValueError(f"{name} mixes DenseDescriptors and plain arrays")
    if all(rich):
        return ([np.ascontiguousarray(v.descriptors, np.float32) for v in items],
                [v.positions for v in items], [v.image_shape for v in items])
    sets = [as_float32_matrix(v, f"{name}[{i}]") for i, v in enumerate(items)]
    dims = {s.shape[1] for s in sets}
    if len(dims) > 1:
        raise ValueError(f"{name}'s descriptor sets have different dimensions {sorted(dims)}")
    return sets, None, None


def sample_descriptors(sets: List[np.ndarray], n: int, seed=0) -> np.ndarray:
    """``n`` descriptors drawn uniformly without replacement from all rows of ``sets`` (all of them if
    fewer), in storage order (set by set, row by row) -- the draw of the pipeline's descriptor store."""
    counts = np.array([len(s) for s in sets], dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("the descriptor sets hold no descriptor (every image gave T = 0)")
    if n >= total:
        return np.ascontiguousarray(np.concatenate(sets, axis=0), np.float32)
    picks = np.sort(rng_from_seed(seed).choice(total, size=n, replace=False))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    owner = np.searchsorted(offsets, picks, side="right") - 1
    return np.ascontiguousarray(np.concatenate([sets[k][picks[owner == k] - offsets[k]] for k in np.unique(owner)]),
                                np.float32)


class FisherVectorEncoder(ArrayOutput, Estimator):
    """Descriptor sets -> Fisher Vectors, with the PCA and GMM learned in ``fit`` (module docstring).

    ``n_components`` K, ``pca_dims`` (None: no PCA), ``sample`` descriptors drawn for PCA and GMM, the GMM's
    ``gmm_init``/``gmm_max_iter``/``var_floor``, the encoding's ``gradients``/``fim``/``power``/``lp``/
    ``pyramid``/``posterior_threshold`` (defaults: the paper's, :mod:`fvstudio.engine.defaults`; the
    pyramid needs DenseDescriptors input, so it is off by default), ``position_scale`` (> 0: spatial
    coordinate augmentation with that scale, :mod:`fvstudio.engine.spatial`; needs DenseDescriptors too, so
    it is off by default here, while the pipeline's ``gmm.position_scale`` defaults to 0.3),
    ``seed`` (sample, PCA, GMM) and ``n_jobs`` (threads for EM and encoding; results do not depend on it).
    """

    _estimator_kind = "transformer"

    def __init__(self, n_components: int = D.GMM_COMPONENTS, *, pca_dims: Optional[int] = D.PCA_COMPONENTS,
                 gradients: str = D.GRADIENTS, fim: str = D.FIM, power: Optional[float] = D.POWER,
                 lp: Optional[float] = D.LP, pyramid=None, posterior_threshold: float = D.POSTERIOR_THRESHOLD,
                 sample: int = 100_000, gmm_init: str = D.GMM_INIT, gmm_max_iter: int = D.GMM_MAX_ITER,
                 var_floor: float = D.GMM_VAR_FLOOR, whiten: bool = False,
                 position_scale: float = 0.0, seed=0,
                 n_jobs: int = 1):
        self.n_components = n_components
        self.pca_dims = pca_dims
        self.gradients = gradients
        self.fim = fim
        self.power = power
        self.lp = lp
        self.pyramid = pyramid
        self.posterior_threshold = posterior_threshold
        self.sample = sample
        self.gmm_init = gmm_init
        self.gmm_max_iter = gmm_max_iter
        self.var_floor = var_floor
        self.whiten = whiten
        self.position_scale = position_scale
        self.seed = seed
        self.n_jobs = n_jobs

    def _is_fitted(self) -> bool:
        return "encoder_" in vars(self)

    def _adjust_tags(self, tags) -> None:
        _set_tags(tags)

    def fit(self, X, y=None, *, progress=None, cancel=None) -> "FisherVectorEncoder":
        """Learn PCA and GMM from a sample of the descriptors of ``X`` (a sequence of (T_i, D) arrays or
        DenseDescriptors); ``y`` is ignored. ``progress``/``cancel`` go to the GMM's EM."""
        check_positive_int(self.sample, "sample")
        check_positive_int(self.n_jobs, "n_jobs")
        if self.pca_dims is not None:
            check_positive_int(self.pca_dims, "pca_dims")
        sets, positions, shapes = _descriptor_sets(X)
        if self.pyramid is not None and positions is None:
            raise ValueError("pyramid needs descriptor positions: pass DenseDescriptors (DenseSIFT(output="
                             "'descriptors')) instead of plain arrays, or set pyramid=None")
        xy = float(self.position_scale or 0.0)
        if xy and positions is None:
            raise ValueError("position_scale > 0 appends patch positions to the descriptors: pass DenseDescriptors, "
                             "not arrays")
        Xs = sample_descriptors(sets, int(self.sample), self.seed)
        pca = None
        if self.pca_dims is not None:
            pca = PCA(n_components=self.pca_dims, whiten=self.whiten, seed=self.seed).fit(Xs)
            Xs = pca.transform(Xs)
        if xy:  # the same draw, from the projected descriptors with their positions appended
            Xs = sample_descriptors(self._project(pca, sets, xy, positions, shapes), int(self.sample), self.seed)
        gmm = DiagonalGMM(n_components=self.n_components, max_iter=self.gmm_max_iter, init=self.gmm_init,
                          var_floor=self.var_floor, posterior_threshold=self.posterior_threshold,
                          seed=self.seed, n_jobs=self.n_jobs).fit(Xs, progress=progress, cancel=cancel)
        encoder = FisherEncoder(gmm, gradients=self.gradients, fim=self.fim, power=self.power, lp=self.lp,
                                pyramid=self.pyramid, posterior_threshold=self.posterior_threshold)
        if self.fim == "empirical":
            encoder.fit_fim(self._project(pca, sets, xy, positions, shapes), positions, shapes, n_jobs=self.n_jobs)
        self.pca_ = pca
        self.gmm_ = gmm
        self.encoder_ = encoder
        self.descriptor_dim_ = int(sets[0].shape[1])
        self.n_sampled_ = int(len(Xs))
        return self

    @staticmethod
    def _project(pca, sets, xy: float = 0.0, positions=None, shapes=None):
        out = sets if pca is None else [pca.transform(s) for s in sets]
        if xy:
            out = [append_xy(s, p, sh, xy) for s, p, sh in zip(out, positions, shapes)]
        return out

    def transform(self, X, *, progress=None, cancel=None) -> np.ndarray:
        """(N, dim) float32 Fisher Vectors of the N descriptor sets of ``X``."""
        self._require_fitted()
        sets, positions, shapes = _descriptor_sets(X)
        if sets[0].shape[1] != self.descriptor_dim_:
            raise ValueError(f"X's descriptors have {sets[0].shape[1]} features, but FisherVectorEncoder is "
                             f"expecting {self.descriptor_dim_} features as input (the dimension it was fitted on)")
        if self.pyramid is not None and positions is None:
            raise ValueError("this FisherVectorEncoder uses a spatial pyramid: pass DenseDescriptors, not arrays")
        xy = float(self.position_scale or 0.0)
        if xy and positions is None:
            raise ValueError("this FisherVectorEncoder appends patch positions (position_scale > 0): pass "
                             "DenseDescriptors")
        return self._wrap_output(self.encoder_.encode_batch(self._project(self.pca_, sets, xy, positions, shapes),
                                                            positions, shapes,
                                                            n_jobs=self.n_jobs, progress=progress, cancel=cancel))

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    def _feature_names(self):
        """``<block>_r<region>_k<Gaussian>[_d<dim>]``: e.g. ``mu_r0_k3_d5``, the mean gradient of Gaussian 3 in
        PCA dimension 5 of the whole image (region 0)."""
        names = []
        for b in self.encoder_.block_layout():
            for k in range(b.n_components):
                if b.per_component == 1:
                    names.append(f"{b.name}_r{b.region}_k{k}")
                else:
                    names += [f"{b.name}_r{b.region}_k{k}_d{d}" for d in range(b.per_component)]
        return names

    @property
    def dim(self) -> int:
        """Length of one Fisher Vector."""
        self._require_fitted()
        return self.encoder_.dim

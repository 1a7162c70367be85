"""Image encodings on a diagonal GMM: the Fisher Vector (FV), soft bag-of-visual-words, VLAD.

Fisher Vector (Sanchez et al. 2013, eqs. 16-19, Appendix A). For the T local descriptors x_t of one
image (or one region of it) and a diagonal GMM (w_k, mu_k, sigma_k^2), with posteriors gamma_t(k)
(eq. 15, thresholded at theta and renormalised, Appendix B) and the Gaussian-centred statistics of
the shared E-step (``posteriors.py``)

    A_k = sum_t gamma_t(k),   B_k = sum_t gamma_t(k) z_tk,   C_k = sum_t gamma_t(k) z_tk^2,
    z_tk = (x_t - mu_k) / sigma_k   (element-wise, D-dim),

the normalised gradients with the closed-form diagonal FIM, divided by T (eq. 19), are

    G_w_k     = (A_k - T w_k) / (T sqrt(w_k))            eq. 16 (soft-max weight parameters a_k)
    G_mu_k    = B_k / (T sqrt(w_k))                      eq. 17
    G_sigma_k = (C_k - A_k) / (T sqrt(2 w_k))            eq. 18

``fim="identity"`` uses the raw gradients of eqs. 12-14 divided by T instead: (A_k - T w_k) / T,
B_k / (T sigma_k), (C_k - A_k) / (T sigma_k). ``fim="empirical"`` divides those raw gradients,
dimension by dimension, by their standard deviation over a set of training images, learned by
``fit_fim`` (Sec. 3.2, "empirical diagonal FIM").

Then, per region: power normalisation z <- sign(z) |z|^rho (eq. 30, rho = ``power``, None = off),
then L_p normalisation z <- z / max(||z||_p, 1e-12) (``lp``, None = off). Power first, then L_p
(Algorithm 1, step 3).

Layout of one region (``block_layout()`` gives the offsets):

    [ G_w (K) | G_mu_1 (D) ... G_mu_K (D) | G_sigma_1 (D) ... G_sigma_K (D) ]

keeping only the parts named in ``gradients`` (any non-empty subset of "w", "m", "s", always in this
order). With ``gradients="ms"`` and no pyramid this is exactly VLFeat's ``vl_fisher`` layout (2DK
values). scikit-image's ``fisher_vector`` uses ``gradients="wms"`` order but its sigma block is -1
times eq. 18 (``to_skimage`` / ``from_skimage`` convert). Dimension: (K [w] + DK [m] + DK [s]) x R.

Spatial pyramid (Sec. 2.2): ``pyramid`` is None or a list of (rows, cols) grids, e.g.
``[(1, 1), (3, 1)]`` = whole image + 3 horizontal stripes (R = 4). Regions are numbered grid by
grid, row-major inside a grid (top row first). A descriptor at (x, y) in an (H, W) image belongs to
cell (floor(y rows / H), floor(x cols / W)) of every grid (positions outside the image are clipped
to the border cells). Each region is encoded with its own T_r, normalised on its own, then the
regions are concatenated. A region with no descriptor gives a zero block and an
:class:`EmptyRegionWarning`, never NaN.

Soft-BoV (eq. 34): h_k = A_k / T per region (K values), same normalisations. VLAD (Sec. 2.5):
each x_t is hard-assigned to the nearest GMM mean (Euclidean), v_k = sum_{t -> k} (x_t - mu_k)
(K blocks of D per region, not divided by T), then signed square root + L2 by default.

Posteriors and statistics come from the shared E-step (``posteriors.accumulate_statistics``: one
GEMM for all log-joints, thresholded + renormalised posteriors, sparse accumulation), the same code
the GMM's EM uses, so the encoder and the model agree on gamma_t(k) by construction.

Constants: L_p floor 1e-12 (as VLFeat), FIM floor (empirical) 1e-12 x the largest std.
"""
from __future__ import annotations

import math
import warnings
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .defaults import FIM, GRADIENTS, LP, POSTERIOR_THRESHOLD, POWER
from .gmm import check_fitted_gmm
from .jit import kernel
from .posteriors import GaussianTerms, _accumulate_statistics
from .progress import CancelLike, ProgressCallback, check_cancel, is_cancelled, report
from .validation import (_check_posterior_threshold, as_float32_matrix, check_choice, check_image_shape,
                         check_number)

__all__ = [
    "FisherEncoder", "SoftBoWEncoder", "VLADEncoder", "make_encoder", "ENCODER_KINDS",
    "Block", "EmptyRegionWarning", "region_assignments",
    "to_vlfeat", "from_vlfeat", "to_skimage", "from_skimage",
]

LP_EPS = 1e-12
_BLOCK = 1024


class EmptyRegionWarning(RuntimeWarning):
    """An image (or a pyramid region of it) had no descriptor: its block is left at zero."""


@dataclass(frozen=True)
class Block:
    """One block of an encoding: ``name`` ("w", "m", "s", "h" soft-BoV, "v" VLAD) of ``region``,
    occupying ``fv[offset:offset + n_components * per_component]``, Gaussian-major."""

    name: str
    region: int
    offset: int
    n_components: int
    per_component: int

    @property
    def size(self) -> int:
        return self.n_components * self.per_component

    @property
    def stop(self) -> int:
        return self.offset + self.size


# ----------------------------------------------------------------------------------------------
# numba kernels


@kernel
def _vlad_block(X, scores, half_norms, means, regions, V, counts):
    """Hard-assign each row to argmax_k (x . mu_k - |mu_k|^2 / 2) and add its residual to V."""
    N, D = X.shape
    K = scores.shape[1]
    L = regions.shape[1]
    for t in range(N):
        row = scores[t]
        best = 0
        bv = row[0] - half_norms[0]
        for k in range(1, K):
            v = row[k] - half_norms[k]
            if v > bv:
                bv = v
                best = k
        mk = means[best]
        x = X[t]
        for l in range(L):
            r = regions[t, l]
            if r < 0:
                continue
            counts[r, best] += 1
            vr = V[r, best]
            for d in range(D):
                vr[d] += x[d] - mk[d]


# ----------------------------------------------------------------------------------------------
# helpers


def _check_pyramid(pyramid) -> Optional[Tuple[Tuple[int, int], ...]]:
    if pyramid is None:
        return None
    try:
        grids = tuple((int(r), int(c)) for r, c in pyramid)
    except (TypeError, ValueError):
        raise ValueError(f"pyramid must be None or a list of (rows, cols) pairs, got {pyramid!r}") from None
    if not grids:
        raise ValueError("pyramid must be None or a non-empty list of (rows, cols) grids")
    for (r, c), raw in zip(grids, pyramid):
        if r < 1 or c < 1 or any(float(v) != int(v) for v in raw):
            raise ValueError(f"pyramid grids must be positive integer (rows, cols), got {tuple(raw)!r}")
    return grids


def _check_power(power) -> Optional[float]:
    """rho of the power normalisation (eq. 30): None (off) or in (0, 1]."""
    return None if power is None else check_number(power, "power", low=0.0, high=1.0, low_open=True)


def _check_lp(lp) -> Optional[float]:
    """p of the L_p normalisation: None (off) or a finite p > 0."""
    return None if lp is None else check_number(lp, "lp", low=0.0, low_open=True)


def region_assignments(positions, image_shape, pyramid) -> np.ndarray:
    """(T, n_grids) int32 region slot of every descriptor in every grid of ``pyramid`` (see module)."""
    pos = as_float32_matrix(positions, "positions", n_features=2)
    H, W = check_image_shape(image_shape, " when a pyramid is used")
    out = np.empty((pos.shape[0], len(pyramid)), dtype=np.int32)
    base = 0
    for g, (rows, cols) in enumerate(pyramid):
        ri = np.clip(np.floor(pos[:, 1].astype(np.float64) * rows / H), 0, rows - 1).astype(np.int32)
        ci = np.clip(np.floor(pos[:, 0].astype(np.float64) * cols / W), 0, cols - 1).astype(np.int32)
        out[:, g] = base + ri * cols + ci
        base += rows * cols
    return out


def _normalise_rows(Z: np.ndarray, power, lp) -> None:
    """In place: power then L_p normalisation of each row of Z (one row = one region)."""
    if power is not None:
        if power == 0.5:
            np.copysign(np.sqrt(np.abs(Z)), Z, out=Z)
        elif power != 1.0:
            np.copysign(np.abs(Z) ** power, Z, out=Z)
    if lp is not None:
        if lp == 2.0:
            norms = np.sqrt(np.einsum("ij,ij->i", Z, Z))
        elif lp == 1.0:
            norms = np.abs(Z).sum(1)
        else:
            norms = (np.abs(Z) ** lp).sum(1) ** (1.0 / lp)
        Z /= np.maximum(norms, LP_EPS)[:, None]


# ----------------------------------------------------------------------------------------------
# encoders


class _Encoder:
    """Shared machinery: input checks, regions, batching over threads, normalisation."""

    kind = ""

    def __init__(self, gmm, *, power, lp, pyramid, posterior_threshold):
        self.gmm = check_fitted_gmm(gmm)
        self.power = _check_power(power)
        self.lp = _check_lp(lp)
        self.pyramid = _check_pyramid(pyramid)
        self.posterior_threshold = _check_posterior_threshold(posterior_threshold)
        self._terms = gmm.terms
        self.n_components = self._terms.n_components
        self.n_features = self._terms.n_features
        self.n_regions = 1 if self.pyramid is None else sum(r * c for r, c in self.pyramid)

    # -- layout ---------------------------------------------------------------------------------
    def _region_blocks(self) -> List[Tuple[str, int]]:
        raise NotImplementedError

    @property
    def region_dim(self) -> int:
        return sum(self.n_components * per for _, per in self._region_blocks())

    @property
    def dim(self) -> int:
        return self.region_dim * self.n_regions

    def block_layout(self) -> List[Block]:
        """Every block of the output vector, region by region, in storage order."""
        out, off = [], 0
        for r in range(self.n_regions):
            for name, per in self._region_blocks():
                out.append(Block(name, r, off, self.n_components, per))
                off += self.n_components * per
        return out

    def gaussian_index(self) -> np.ndarray:
        """(dim,) int: the Gaussian each output dimension belongs to (for per-Gaussian plots)."""
        out = np.empty(self.dim, dtype=np.int64)
        for b in self.block_layout():
            out[b.offset:b.stop] = np.repeat(np.arange(self.n_components), b.per_component)
        return out

    def get_params(self) -> dict:
        """Hyper-parameters as a JSON-able dict: ``make_encoder(enc.kind, gmm, **enc.get_params())``."""
        return {"power": self.power, "lp": self.lp,
                "pyramid": None if self.pyramid is None else [list(g) for g in self.pyramid],
                "posterior_threshold": self.posterior_threshold}

    def fit_fim(self, descriptor_sets, positions=None, image_shapes=None):
        """Nothing to learn for this encoding (kept so every encoder has the same interface)."""
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}(K={self.n_components}, D={self.n_features}, {args})"

    # -- input ----------------------------------------------------------------------------------
    def _prepare(self, descriptors, positions, image_shape):
        X = as_float32_matrix(descriptors, "descriptors", n_features=self.n_features)
        if self.pyramid is None:
            return X, None
        if positions is None:
            raise ValueError("positions (T, 2) are required when a spatial pyramid is used")
        pos = np.asarray(positions)
        if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] != X.shape[0]:
            raise ValueError(f"positions must have shape ({X.shape[0]}, 2) (x, y per descriptor), "
                             f"got {pos.shape}")
        return X, region_assignments(pos, image_shape, self.pyramid)

    def encode(self, descriptors, positions=None, image_shape=None) -> np.ndarray:
        """Encode one image: descriptors (T, D) [, positions (T, 2) (x, y), image_shape (H, W)]."""
        X, regions = self._prepare(descriptors, positions, image_shape)
        return self._encode(X, regions)

    def _raw(self, X, regions) -> Tuple[np.ndarray, np.ndarray]:
        """(R, region_dim) float64 un-normalised encoding and (R,) descriptor counts."""
        raise NotImplementedError

    def _encode(self, X, regions) -> np.ndarray:
        Z, counts = self._raw(X, regions)
        self._post(Z)
        _normalise_rows(Z, self.power, self.lp)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            Z[empty] = 0.0
            what = "the image" if self.pyramid is None else f"pyramid region(s) {empty.tolist()}"
            warnings.warn(f"{type(self).__name__}: no descriptors in {what}; encoded as zeros",
                          EmptyRegionWarning, stacklevel=3)
        return Z.astype(np.float32).reshape(-1)

    def _post(self, Z: np.ndarray) -> None:
        """Hook applied to the raw (R, region_dim) encoding before normalisation."""

    def encode_batch(self, descriptor_sets, positions=None, image_shapes=None, *, n_jobs: int = 2,
                     progress: Optional[ProgressCallback] = None, cancel: CancelLike = None) -> np.ndarray:
        """Encode many images -> (N, dim) float32, ``n_jobs`` threads over images.

        Kernels release the GIL; BLAS is pinned to one thread for the duration so the pool does
        not oversubscribe the cores. ``progress`` gets one update per finished image; ``cancel``
        is checked between images (raises :class:`Cancelled`, nothing is returned).
        """
        sets = list(descriptor_sets)
        N = len(sets)
        pos_list = _per_image(positions, N, "positions")
        shp_list = _per_image(image_shapes, N, "image_shapes")
        n_jobs = int(n_jobs)
        if n_jobs < 1:
            raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
        out = np.zeros((N, self.dim), dtype=np.float32)
        if N == 0:
            return out

        def job(i):
            try:
                X, regions = self._prepare(sets[i], pos_list[i], shp_list[i])
            except ValueError as exc:
                raise ValueError(f"image {i}: {exc}") from None
            out[i] = self._encode(X, regions)

        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            if n_jobs == 1:
                for i in range(N):
                    check_cancel(cancel, "encoding")
                    job(i)
                    report(progress, i + 1, N, f"encoded image {i + 1}/{N}", image=i)
                return out
            with ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="fv-encode") as pool:
                pending, nxt, done = set(), 0, 0
                try:
                    while nxt < N or pending:
                        while nxt < N and len(pending) < 2 * n_jobs and not is_cancelled(cancel):
                            fut = pool.submit(job, nxt)
                            fut.image = nxt
                            pending.add(fut)
                            nxt += 1
                        if not pending:
                            break
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            fut.result()
                            done += 1
                            report(progress, done, N, f"encoded image {done}/{N}", image=fut.image)
                    check_cancel(cancel, "encoding")
                except BaseException:
                    for fut in pending:
                        fut.cancel()
                    raise
        return out


def _per_image(values, n, name):
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} descriptor sets")
    return values


class FisherEncoder(_Encoder):
    """Fisher Vector of a set of local descriptors on a diagonal GMM (see the module docstring)."""

    kind = "fisher"

    def __init__(self, gmm, *, gradients: str = GRADIENTS, fim: str = FIM, power=POWER, lp=LP,
                 pyramid=None, posterior_threshold: float = POSTERIOR_THRESHOLD):
        super().__init__(gmm, power=power, lp=lp, pyramid=pyramid, posterior_threshold=posterior_threshold)
        if not isinstance(gradients, str) or not gradients or set(gradients) - set("wms") \
                or len(set(gradients)) != len(gradients):
            raise ValueError(f"gradients must be a non-empty subset of 'w', 'm', 's' (e.g. 'ms'), got {gradients!r}")
        self.gradients = "".join(g for g in "wms" if g in gradients)
        self.fim = check_choice(fim, "fim", ("closed", "identity", "empirical"))
        self.fim_scale_: Optional[np.ndarray] = None
        weights = np.asarray(gmm.weights_, dtype=np.float64)
        variances = np.asarray(gmm.variances_, dtype=np.float64)
        self._weights = weights
        sigma = np.sqrt(variances)
        sw = np.sqrt(np.maximum(weights, 1e-300))[:, None]
        # per-region scale of each part before the 1/T: closed form (eqs. 16-18) or raw (eqs. 12-14)
        if self.fim == "closed":
            self._scale_w = 1.0 / sw[:, 0]
            self._scale_m = np.broadcast_to(1.0 / sw, sigma.shape)
            self._scale_s = np.broadcast_to(1.0 / (math.sqrt(2.0) * sw), sigma.shape)
        else:
            self._scale_w = np.ones_like(weights)
            self._scale_m = 1.0 / sigma
            self._scale_s = 1.0 / sigma

    def _region_blocks(self):
        D = self.n_features
        return [(g, 1 if g == "w" else D) for g in self.gradients]

    def get_params(self) -> dict:
        p = {"gradients": self.gradients, "fim": self.fim}
        p.update(super().get_params())
        return p

    def _raw(self, X, regions):
        moments = ("m" in self.gradients) or ("s" in self.gradients)
        A, B, C, counts = _statistics(X, self._terms, self.posterior_threshold, regions,
                                      self.n_regions, moments)
        R, K, D = self.n_regions, self.n_components, self.n_features
        T = np.maximum(counts, 1).astype(np.float64)
        parts = []
        for g in self.gradients:
            if g == "w":
                parts.append((A - T[:, None] * self._weights) * self._scale_w / T[:, None])
            elif g == "m":
                parts.append((B * self._scale_m / T[:, None, None]).reshape(R, K * D))
            else:
                parts.append(((C - A[:, :, None]) * self._scale_s / T[:, None, None]).reshape(R, K * D))
        return np.concatenate(parts, axis=1), counts

    def _post(self, Z):
        if self.fim == "empirical":
            if self.fim_scale_ is None:
                raise ValueError("fim='empirical' needs fit_fim(descriptor_sets) before encoding")
            Z /= self.fim_scale_.reshape(self.n_regions, -1)

    def fit_fim(self, descriptor_sets, positions=None, image_shapes=None, *, n_jobs: int = 2,
                progress=None, cancel=None):
        """Learn the empirical diagonal FIM: the std, over the given images, of each dimension of the
        un-normalised (raw, eqs. 12-14 / T) gradient. Only used when ``fim="empirical"``."""
        sets = list(descriptor_sets)
        if len(sets) < 2:
            raise ValueError(f"descriptor_sets must hold at least 2 images to estimate a std, got {len(sets)}")
        raw = FisherEncoder(self.gmm, gradients=self.gradients, fim="identity", power=None, lp=None,
                            pyramid=self.pyramid, posterior_threshold=self.posterior_threshold)
        G = raw.encode_batch(sets, positions, image_shapes, n_jobs=n_jobs, progress=progress,
                             cancel=cancel).astype(np.float64)
        std = G.std(axis=0)
        floor = LP_EPS * max(float(std.max()), LP_EPS)
        self.fim_scale_ = np.where(std > floor, std, 1.0)
        return self


class SoftBoWEncoder(_Encoder):
    """Soft bag-of-visual-words h_k = A_k / T (eq. 34) on the GMM, per region, normalised."""

    kind = "soft_bow"

    def __init__(self, gmm, *, power=POWER, lp=LP, pyramid=None,
                 posterior_threshold: float = POSTERIOR_THRESHOLD):
        super().__init__(gmm, power=power, lp=lp, pyramid=pyramid, posterior_threshold=posterior_threshold)

    def _region_blocks(self):
        return [("h", 1)]

    def _raw(self, X, regions):
        A, _, _, counts = _statistics(X, self._terms, self.posterior_threshold, regions,
                                      self.n_regions, False)
        return A / np.maximum(counts, 1)[:, None], counts


class VLADEncoder(_Encoder):
    """VLAD: residuals to the nearest GMM mean, summed per Gaussian; signed sqrt + L2 by default."""

    kind = "vlad"

    def __init__(self, gmm, *, power=POWER, lp=LP, pyramid=None,
                 posterior_threshold: float = POSTERIOR_THRESHOLD):
        # posterior_threshold is unused (hard assignment); accepted for a uniform interface
        super().__init__(gmm, power=power, lp=lp, pyramid=pyramid, posterior_threshold=posterior_threshold)
        mu = self._terms.means
        self._meansT = np.ascontiguousarray(mu.T)
        self._half_norms = (0.5 * (mu.astype(np.float64) ** 2).sum(1)).astype(np.float32)

    def _region_blocks(self):
        return [("v", self.n_features)]

    def _raw(self, X, regions):
        N, D = X.shape
        R, K = self.n_regions, self.n_components
        V = np.zeros((R, K, D), dtype=np.float64)
        counts = np.zeros((R, K), dtype=np.int64)
        if regions is None:
            regions = np.zeros((N, 1), dtype=np.int32)
        scores = np.empty((min(N, _BLOCK), K), dtype=np.float32)
        for s in range(0, N, _BLOCK):
            e = min(N, s + _BLOCK)
            sc = np.matmul(X[s:e], self._meansT, out=scores[: e - s])
            _vlad_block(X[s:e], sc, self._half_norms, self._terms.means, regions[s:e], V, counts)
        return V.reshape(R, K * D), counts.sum(1)


def _statistics(X, terms: GaussianTerms, threshold: float, regions, n_regions: int, moments: bool):
    """Shared E-step statistics (A, B, C of ``posteriors.py``) and the (R,) descriptor count per region."""
    if regions is None:
        counts = np.array([X.shape[0]], dtype=np.int64)
    else:
        counts = np.zeros(n_regions, dtype=np.int64)
        for g in range(regions.shape[1]):
            counts += np.bincount(regions[:, g], minlength=n_regions)
    st = _accumulate_statistics(X, terms, threshold, regions=regions, n_regions=n_regions, moments=moments,
                                log_likelihood=False)
    return st.A, st.B, st.C, counts


ENCODER_KINDS = {"fisher": FisherEncoder, "soft_bow": SoftBoWEncoder, "vlad": VLADEncoder}


def make_encoder(kind: str, gmm, **params):
    """``make_encoder("fisher" | "soft_bow" | "vlad", gmm, **params)``."""
    check_choice(kind, "kind", tuple(ENCODER_KINDS))
    return ENCODER_KINDS[kind](gmm, **params)


# ----------------------------------------------------------------------------------------------
# converters


def _fv_view(fv, encoder: FisherEncoder, name: str) -> np.ndarray:
    a = np.asarray(fv)
    if a.shape[-1] != encoder.dim:
        raise ValueError(f"{name} has length {a.shape[-1]}, the encoder produces {encoder.dim}")
    return a.reshape(a.shape[:-1] + (encoder.n_regions, encoder.region_dim))


def _blocks_of(encoder, a):
    K, D = encoder.n_components, encoder.n_features
    out, off = {}, 0
    for g in encoder.gradients:
        n = K if g == "w" else K * D
        out[g] = a[..., off:off + n]
        off += n
    return out


def to_vlfeat(fv, encoder: FisherEncoder) -> np.ndarray:
    """Our FV(s) -> VLFeat ``vl_fisher`` layout ([means | sigmas] per region; weight block dropped)."""
    if "m" not in encoder.gradients or "s" not in encoder.gradients:
        raise ValueError(f"VLFeat's layout needs gradients 'm' and 's', encoder has {encoder.gradients!r}")
    a = _fv_view(fv, encoder, "fv")
    b = _blocks_of(encoder, a)
    out = np.concatenate([b["m"], b["s"]], axis=-1)
    return out.reshape(a.shape[:-2] + (-1,))


def from_vlfeat(fv, encoder: FisherEncoder) -> np.ndarray:
    """VLFeat FV(s) -> our layout; the encoder must have ``gradients="ms"`` (VLFeat has no w block)."""
    if encoder.gradients != "ms":
        raise ValueError(f"VLFeat vectors hold gradients 'ms' only, encoder has {encoder.gradients!r}")
    a = np.asarray(fv)
    if a.shape[-1] != encoder.dim:
        raise ValueError(f"fv has length {a.shape[-1]}, a VLFeat FV for this encoder has {encoder.dim}")
    return a.copy()


def to_skimage(fv, encoder: FisherEncoder) -> np.ndarray:
    """Our FV(s) with ``gradients="wms"`` -> scikit-image's ``fisher_vector`` convention
    ([w | means | sigmas] with the sigma block negated), region by region."""
    if encoder.gradients != "wms":
        raise ValueError(f"scikit-image's layout holds gradients 'wms', encoder has {encoder.gradients!r}")
    a = _fv_view(fv, encoder, "fv").copy()
    b = _blocks_of(encoder, a)
    b["s"] *= -1
    return a.reshape(a.shape[:-2] + (-1,))


def from_skimage(fv, encoder: FisherEncoder) -> np.ndarray:
    """scikit-image ``fisher_vector`` output -> our layout (``gradients="wms"``): negate the sigma block."""
    return to_skimage(fv, encoder)

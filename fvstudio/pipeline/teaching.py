"""The teaching room's toy, Qt-free: a 2-D GMM fitted by EM one step at a time, and Fisher vectors of 2-D "images".

Everything is computed by the engine's own code: :class:`~fvstudio.engine.gmm.DiagonalGMM` (``initialise``,
``e_step``, ``m_step``: the E-step, M-step, variance floor and re-seeding of ``fit``'s loop) and
:class:`~fvstudio.engine.fisher.FisherEncoder` / :class:`~fvstudio.engine.fisher.SoftBoWEncoder`. This module
only holds the state machine, the data and the geometry the Teaching panel draws.

- :func:`preset_points`: the point sets of a lecture, reproducible from a seed ("blobs", "anisotropic"
  blobs (sheared: a diagonal GMM draws them with axis-aligned ellipses only), "rings", "uniform"), in the
  box [-BOX, BOX]^2.
- :class:`EMToy`: the state machine. A state (:class:`ToyState`) holds the parameters, the posteriors of the
  last E-step, the log-likelihood curve (one value per E-step: the mean log u(x_t) of the parameters that
  E-step saw) and the phase ("init", "e": an E-step was the last action, "m"). ``e_step()`` / ``m_step()``
  (an M-step needs the E-step just before it) / ``advance()`` (whichever is next) push the previous state
  on a history; ``back()`` pops it (the state after ``back()`` equals the earlier one); ``reset()``
  re-initialises (``init`` = "kmeans++", "split" or "random", ``seed``); ``add_point`` adds a point and
  re-initialises, so a state is a function of (points, K, init, var_floor, seed, number of steps).
  EM here runs with posterior threshold 0 (exact posteriors): the log-likelihood then never decreases
  from one E+M step to the next (thresholding at theta > 0 may break that by up to ~theta).
- :func:`ellipse` / :func:`gaussian_ellipses`: the 1 and 2 sigma ellipses of a diagonal Gaussian
  (axis-aligned, semi-axes n sigma_d), as closed polygons.
- :func:`posterior_colours`: each point's colour, the posterior-weighted mix of the Gaussians' colours.
- :func:`image_points`: a second point set, an "image": points around a few places of the data.
- :func:`encode_image` -> :class:`ImageEncoding`: its FV (gradients w.r.t. means and sigmas, closed-form FIM,
  eqs. 17-18) with power normalisation (eq. 30, rho = 0.5) and L2 on or off, its soft-BoV (eq. 34), and
  the glyphs: at each Gaussian an arrow mu_k -> mu_k + ARROW_SCALE sigma_k * G_mu_k (the mean gradient
  is in units of sigma, so it is drawn in the data space), and a circle of radius
  ARROW_SCALE * mean_d(sigma_kd) * |mean_d G_sigma_kd|, its sign telling whether the image's points are
  more spread than the Gaussian (+) or less (-).
- :func:`same_histogram_pair` -> :class:`HistogramPair` (Sec. 2.5): two images with exactly the same soft-BoV
  and different FVs. Each point of either image is placed where one Gaussian takes it whole: every other
  posterior is below theta / 10, so thresholding at theta (:data:`PAIR_THRESHOLD` = 0.01; the engine's
  default 1e-4 leaves few such places where Gaussians overlap) leaves a posterior of exactly 1. Both images put the same number of points on each Gaussian (so the histograms A_k / T are
  equal to the last bit), image A tight and off-centre, image B spread on a ring round the mean: the
  bag-of-words cannot tell them apart, the mean and sigma gradients can.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..engine.defaults import POSTERIOR_THRESHOLD
from ..engine.fisher import FisherEncoder, SoftBoWEncoder
from ..engine.gmm import INITS, DiagonalGMM

__all__ = ["PRESETS", "INITS", "BOX", "ARROW_SCALE", "PAIR_THRESHOLD", "preset_points", "image_points", "ToyState", "EMToy",
           "ellipse", "gaussian_ellipses", "arrow_heads", "posterior_colours", "ImageEncoding", "encode_image",
           "HistogramPair", "same_histogram_pair", "reencode_pair", "fv_distance", "colours_for"]

PRESETS = ("blobs", "anisotropic", "rings", "uniform")
#: the toy's points lie in [-BOX, BOX]^2
BOX = 5.0
#: the posterior threshold of the same-histogram pair: a point is taken whole by a Gaussian when every other
#: posterior is below PAIR_THRESHOLD / 10 (1e-3: room for points on overlapping Gaussians)
PAIR_THRESHOLD = 1e-2
#: glyph length per unit of gradient, in sigmas
ARROW_SCALE = 3.0


# ------------------------------------------------------------------------------------------ points
def preset_points(preset: str, n: int = 300, seed: int = 0) -> np.ndarray:
    """(n, 2) float32 points of ``preset`` (one of :data:`PRESETS`), the same for the same seed."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng([int(seed), PRESETS.index(preset)])
    n = int(n)
    if preset == "uniform":
        X = rng.uniform(-0.9 * BOX, 0.9 * BOX, size=(n, 2))
    elif preset == "rings":
        which = rng.integers(0, 2, size=n)
        radius = np.where(which == 0, 1.2, 3.4) + rng.normal(0, 0.25, size=n)
        angle = rng.uniform(0, 2 * np.pi, size=n)
        X = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    else:
        k = 4
        centres = np.array([[-2.6, -2.2], [2.4, -2.5], [-1.8, 2.6], [2.7, 2.0]]) + rng.normal(0, 0.3, (k, 2))
        sizes = rng.dirichlet(np.full(k, 4.0))
        labels = rng.choice(k, size=n, p=sizes)
        Z = rng.normal(size=(n, 2))
        if preset == "blobs":
            X = centres[labels] + Z * rng.uniform(0.45, 0.8, size=(k, 2))[labels]
        else:  # anisotropic: each blob stretched along a random direction (not an axis)
            angles = rng.uniform(0, np.pi, size=k)
            out = np.empty((n, 2))
            for j in range(k):
                c, s = np.cos(angles[j]), np.sin(angles[j])
                R = np.array([[c, -s], [s, c]]) @ np.diag([1.3, 0.25])
                m = labels == j
                out[m] = centres[j] + Z[m] @ R.T
            X = out
    return np.clip(X, -BOX, BOX).astype(np.float32)


def image_points(points: np.ndarray, n: int = 60, seed: int = 0, places: int = 2) -> np.ndarray:
    """An "image": ``n`` points around ``places`` data points drawn at random, each place with its own spread
    (0.2-0.9: tighter or wider than the Gaussians it falls in), float32."""
    P = np.asarray(points, dtype=np.float64)
    rng = np.random.default_rng([int(seed), 77])
    centres = P[rng.choice(len(P), size=min(places, len(P)), replace=False)]
    spread = rng.uniform(0.2, 0.9, size=len(centres))
    which = rng.integers(0, len(centres), size=int(n))
    X = centres[which] + rng.normal(size=(int(n), 2)) * spread[which, None]
    return np.clip(X, -BOX, BOX).astype(np.float32)


# ------------------------------------------------------------------------------------------ EM toy
@dataclass(frozen=True)
class ToyState:
    """One state of the toy: parameters (float32), the last E-step's posteriors (None before the first),
    the log-likelihood per E-step so far, the phase of the last action and the M-steps done."""

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, 2)
    variances: np.ndarray  # (K, 2)
    responsibilities: Optional[np.ndarray]  # (N, K) or None
    log_likelihood: Tuple[float, ...]
    phase: str  # "init" | "e" | "m"
    n_iter: int

    def equals(self, other: "ToyState") -> bool:
        """Same parameters, posteriors, curve and phase (array-wise)."""
        same_resp = (self.responsibilities is None and other.responsibilities is None) or (
            self.responsibilities is not None and other.responsibilities is not None
            and np.array_equal(self.responsibilities, other.responsibilities))
        return (same_resp and np.array_equal(self.weights, other.weights) and np.array_equal(self.means, other.means)
                and np.array_equal(self.variances, other.variances) and self.log_likelihood == other.log_likelihood
                and self.phase == other.phase and self.n_iter == other.n_iter)


class EMToy:
    """EM on 2-D points, one E- or M-step at a time, with a history to step back (module docstring)."""

    def __init__(self, points, n_components: int = 4, init: str = "kmeans++", var_floor: float = 0.01,
                 seed: int = 0, tol: float = 1e-4) -> None:
        self.points = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 2)
        self.n_components = int(n_components)
        self.init = init
        self.var_floor = float(var_floor)
        self.seed = int(seed)
        self.tol = float(tol)
        self.history: List[ToyState] = []
        self.state: ToyState
        self.reset()

    # -- the model of a state -------------------------------------------------------------------
    def _gmm(self, state: Optional[ToyState] = None) -> DiagonalGMM:
        s = state or self.state
        return DiagonalGMM.from_params(s.weights, s.means, s.variances, init=self.init, var_floor=self.var_floor,
                                       posterior_threshold=0.0, seed=self.seed)

    def gmm(self) -> DiagonalGMM:
        """The current parameters as a fitted :class:`DiagonalGMM` (for encoding images)."""
        return self._gmm()

    # -- transitions ----------------------------------------------------------------------------
    def reset(self) -> ToyState:
        """Back to the initialisation (the same for the same points, K, init, floor and seed); no history."""
        if len(self.points) < self.n_components:
            raise ValueError(f"{len(self.points)} points cannot hold {self.n_components} Gaussians")
        g = DiagonalGMM(self.n_components, init=self.init, var_floor=self.var_floor, posterior_threshold=0.0,
                        seed=self.seed).initialise(self.points)
        self.history = []
        self.state = ToyState(g.weights_.copy(), g.means_.copy(), g.variances_.copy(), None, (), "init", 0)
        return self.state

    def _push(self, new: ToyState) -> ToyState:
        self.history.append(self.state)
        self.state = new
        return new

    def e_step(self) -> ToyState:
        """Posteriors of every point under the current parameters, and their log-likelihood on the curve."""
        est = self._gmm().e_step(self.points)
        s = self.state
        return self._push(ToyState(s.weights, s.means, s.variances, est.responsibilities,
                                   s.log_likelihood + (est.log_likelihood,), "e", s.n_iter))

    @property
    def can_m_step(self) -> bool:
        return self.state.phase == "e"

    def m_step(self) -> ToyState:
        """New parameters from the posteriors of the E-step just done (ValueError without one)."""
        if not self.can_m_step:
            raise ValueError("an M-step needs the E-step just before it: do an E-step first")
        g = self._gmm()
        g.m_step(self.points, g.e_step(self.points))  # the same E-step again: its statistics A, B, C
        s = self.state
        return self._push(ToyState(g.weights_.copy(), g.means_.copy(), g.variances_.copy(), s.responsibilities,
                                   s.log_likelihood, "m", s.n_iter + 1))

    @property
    def next_step(self) -> str:
        """"M" after an E-step, else "E"."""
        return "M" if self.can_m_step else "E"

    def advance(self) -> ToyState:
        """The next step of EM (E after init or M, M after E): what Play does at each tick."""
        return self.m_step() if self.can_m_step else self.e_step()

    @property
    def can_back(self) -> bool:
        return bool(self.history)

    def back(self) -> ToyState:
        """Undo the last step (ValueError at the initial state)."""
        if not self.history:
            raise ValueError("nothing to step back to: this is the initial state")
        self.state = self.history.pop()
        return self.state

    @property
    def converged(self) -> bool:
        """The last two E-steps' log-likelihoods differ by less than ``tol`` (nats per point)."""
        ll = self.state.log_likelihood
        return len(ll) >= 2 and abs(ll[-1] - ll[-2]) < self.tol

    def add_point(self, x: float, y: float) -> ToyState:
        """Add a point (a click) and re-initialise on the new set."""
        self.points = np.vstack([self.points, np.array([[x, y]], dtype=np.float32)])
        return self.reset()


# ------------------------------------------------------------------------------------------ geometry
def ellipse(mean, variance, n_sigma: float = 1.0, n: int = 72) -> np.ndarray:
    """(n + 1, 2) closed polygon of the n-sigma ellipse of a diagonal 2-D Gaussian (axis-aligned)."""
    t = np.linspace(0.0, 2 * np.pi, int(n) + 1)
    sd = np.sqrt(np.asarray(variance, dtype=np.float64))
    m = np.asarray(mean, dtype=np.float64)
    return np.stack([m[0] + n_sigma * sd[0] * np.cos(t), m[1] + n_sigma * sd[1] * np.sin(t)], 1)


def gaussian_ellipses(state: ToyState, n: int = 72) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Per Gaussian of ``state``: its (1 sigma, 2 sigma) ellipses."""
    return [(ellipse(m, v, 1.0, n), ellipse(m, v, 2.0, n)) for m, v in zip(state.means, state.variances)]


def arrow_heads(arrows: np.ndarray, size: float = 0.25, min_length: float = 1e-9) -> np.ndarray:
    """(K, 3, 2) polylines of the arrowheads of ``arrows`` (K, 2, 2) (start, end): left barb, tip, right barb,
    ``size`` data units long (at most half the arrow); NaN for arrows shorter than ``min_length``."""
    A = np.asarray(arrows, dtype=np.float64)
    d = A[:, 1] - A[:, 0]
    L = np.linalg.norm(d, axis=1)
    out = np.full((len(A), 3, 2), np.nan)
    ok = L > min_length
    u = d[ok] / L[ok, None]
    s = np.minimum(size, 0.5 * L[ok])[:, None]
    n = np.stack([-u[:, 1], u[:, 0]], 1)
    tip = A[ok, 1]
    out[ok, 0] = tip - s * u + 0.5 * s * n
    out[ok, 1] = tip
    out[ok, 2] = tip - s * u - 0.5 * s * n
    return out


def posterior_colours(responsibilities: Optional[np.ndarray], colours: np.ndarray, n_points: int) -> np.ndarray:
    """(N, 3) colour per point: sum_k gamma_t(k) colour_k (grey before the first E-step). ``colours`` (K, 3)."""
    if responsibilities is None:
        return np.full((n_points, 3), 0.55)
    R = np.asarray(responsibilities, dtype=np.float64)
    return np.clip(R @ np.asarray(colours, dtype=np.float64), 0.0, 1.0)


# ------------------------------------------------------------------------------------------ Fisher vectors
@dataclass
class ImageEncoding:
    """The encoding of one 2-D "image" (``points``) against a GMM, and the glyphs to draw it."""

    points: np.ndarray  # (T, 2)
    fv: np.ndarray  # (4K,) float32: [G_mu_1 .. G_mu_K | G_sigma_1 .. G_sigma_K], normalised as asked
    mean_gradients: np.ndarray  # (K, 2) the G_mu block
    sigma_gradients: np.ndarray  # (K, 2) the G_sigma block
    soft_bow: np.ndarray  # (K,) soft-BoV A_k / T (eq. 34), not normalised
    arrows: np.ndarray  # (K, 2, 2): start (mu_k) and end of each mean-gradient arrow, data coordinates
    circle_radius: np.ndarray  # (K,) data units
    circle_sign: np.ndarray  # (K,) +1 / -1 / 0: the image is more / less spread than the Gaussian
    power: bool
    l2: bool
    labels: List[str] = field(default_factory=list)  # a name per FV dimension ("mu1 x", ... "sigma4 y")


def encode_image(gmm: DiagonalGMM, points, *, power: bool = True, l2: bool = True,
                 threshold: float = POSTERIOR_THRESHOLD, arrow_scale: float = ARROW_SCALE) -> ImageEncoding:
    """FV (means and sigmas, closed-form FIM) and soft-BoV of ``points`` on ``gmm``, with the glyphs."""
    X = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 2)
    enc = FisherEncoder(gmm, gradients="ms", fim="closed", power=0.5 if power else None, lp=2.0 if l2 else None,
                        pyramid=None, posterior_threshold=threshold)
    bow = SoftBoWEncoder(gmm, power=None, lp=None, pyramid=None, posterior_threshold=threshold)
    fv = enc.encode(X)
    blocks = {b.name: b for b in enc.block_layout()}
    K = enc.n_components
    g_mu = fv[blocks["m"].offset:blocks["m"].stop].reshape(K, 2).astype(np.float64)
    g_sig = fv[blocks["s"].offset:blocks["s"].stop].reshape(K, 2).astype(np.float64)
    mu = gmm.means_.astype(np.float64)
    sd = np.sqrt(gmm.variances_.astype(np.float64))
    arrows = np.stack([mu, mu + arrow_scale * sd * g_mu], 1)
    mean_sig = g_sig.mean(1)
    labels = [f"μ{k + 1} {a}" for k in range(K) for a in "xy"] + [f"σ{k + 1} {a}" for k in range(K) for a in "xy"]
    return ImageEncoding(X, fv, g_mu, g_sig, bow.encode(X).astype(np.float64), arrows,
                         arrow_scale * sd.mean(1) * np.abs(mean_sig), np.sign(mean_sig), power, l2, labels)


@dataclass
class HistogramPair:
    """Two images with the same soft-BoV and different FVs (:func:`same_histogram_pair`)."""

    a: ImageEncoding
    b: ImageEncoding
    gaussians: List[int]  # the Gaussians the points sit on (the others get none in either image)
    counts: List[int]  # points per Gaussian in each image


def _one_hot_ok(gmm: DiagonalGMM, X: np.ndarray, k: int, threshold: float) -> np.ndarray:
    """Rows of X that Gaussian k takes whole: every other exact posterior below threshold / 10."""
    P = gmm.predict_proba(X, threshold=0.0)
    others = np.delete(P, k, axis=1)
    return (P.argmax(1) == k) & ((others.max(1) if others.shape[1] else np.zeros(len(X))) < threshold / 10)


def _place(gmm, k, n, rng, threshold, draw) -> Optional[np.ndarray]:
    """``n`` points ``draw(rng, m, shrink)`` (in sigma units) round Gaussian k that it takes whole, or None."""
    mu = gmm.means_[k].astype(np.float64)
    sd = np.sqrt(gmm.variances_[k].astype(np.float64))
    out: List[np.ndarray] = []
    shrink = 1.0
    for _ in range(30):
        Z = draw(rng, 16 * n, shrink)
        X = (mu + sd * Z).astype(np.float32)
        ok = X[_one_hot_ok(gmm, X, k, threshold)]
        out.extend(ok[: n - len(out)])
        if len(out) >= n:
            return np.asarray(out[:n], dtype=np.float32)
        shrink *= 0.85
    return None


def same_histogram_pair(gmm: DiagonalGMM, n_points: int = 80, seed: int = 0, *, power: bool = True,
                        l2: bool = True, threshold: float = PAIR_THRESHOLD) -> HistogramPair:
    """Image A (tight, off-centre) and image B (a ring round each mean) with the same number of points on
    each Gaussian that can take points whole; equal soft-BoV, different FVs (module docstring)."""
    if not threshold > 0:
        raise ValueError("the pair needs a posterior threshold > 0 (posteriors of exactly 1)")
    rng = np.random.default_rng([int(seed), 25])
    w = gmm.weights_.astype(np.float64)
    K = len(w)
    counts = np.maximum(3, np.round(n_points * w)).astype(int)
    A, B, used, used_counts = [], [], [], []
    for k in range(K):
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction)

        def tight(r, m, shrink, d=direction):
            return shrink * (0.9 * d + 0.25 * r.normal(size=(m, 2)))

        def ring(r, m, shrink):
            a = r.uniform(0, 2 * np.pi, size=m)
            rad = shrink * (1.7 + 0.1 * r.normal(size=m))
            return np.stack([rad * np.cos(a), rad * np.sin(a)], 1)

        pa = _place(gmm, k, int(counts[k]), rng, threshold, tight)
        pb = _place(gmm, k, int(counts[k]), rng, threshold, ring)
        if pa is None or pb is None:
            continue
        A.append(pa)
        B.append(pb)
        used.append(k)
        used_counts.append(int(counts[k]))
    if not used:
        raise ValueError("no Gaussian of this model takes points whole (they all overlap): fit more EM steps")
    ea = encode_image(gmm, np.vstack(A), power=power, l2=l2, threshold=threshold)
    eb = encode_image(gmm, np.vstack(B), power=power, l2=l2, threshold=threshold)
    return HistogramPair(ea, eb, used, used_counts)


def reencode_pair(gmm: DiagonalGMM, pair: HistogramPair, *, power: bool, l2: bool,
                  threshold: float = PAIR_THRESHOLD) -> HistogramPair:
    """The same two point sets encoded with other normalisations (the power / L2 toggles)."""
    return HistogramPair(encode_image(gmm, pair.a.points, power=power, l2=l2, threshold=threshold),
                         encode_image(gmm, pair.b.points, power=power, l2=l2, threshold=threshold),
                         pair.gaussians, pair.counts)


def fv_distance(pair: HistogramPair) -> Tuple[float, float]:
    """(L2 distance of the two soft-BoVs, L2 distance of the two FVs)."""
    return (float(np.linalg.norm(pair.a.soft_bow - pair.b.soft_bow)),
            float(np.linalg.norm(pair.a.fv.astype(np.float64) - pair.b.fv)))


def colours_for(n: int) -> np.ndarray:
    """(n, 3) distinct colours in [0, 1] for the Gaussians (a fixed qualitative palette, then hues)."""
    base = np.array([[0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
                     [0.58, 0.4, 0.74], [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.5, 0.5, 0.5],
                     [0.74, 0.74, 0.13], [0.09, 0.75, 0.81]])
    if n <= len(base):
        return base[:n]
    import colorsys

    extra = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.7, 0.85) for i in range(n - len(base))]
    return np.vstack([base, np.array(extra)])

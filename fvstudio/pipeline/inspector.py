"""The patch inspector's data (Dataset panel, issue #12 section 3), Qt-free: one patch of one image, looked at
through the pipeline's cached artifacts (``Pipeline.artifact``: descriptors, pca, gmm, encode, classifier;
split 0, the first channel unless told otherwise).

:func:`inspect_patch` -> :class:`PatchInspection`, for the patch whose centre is nearest to a clicked (x, y)
at one scale of the dense grid:

- ``sift``: the raw SIFT descriptor as its 4 x 4 x 8 histograms, ``sift[by, bx, t]``, orientation bin t at
  angle t * 45 degrees from +x towards +y (clockwise on screen), by :func:`sift_glyph` from the layout of
  :mod:`fvstudio.engine.descriptors` (VLFeat's ``vl_dsift``: element ``8 (by + 4 bx) + (2 - t) mod 8``);
  :func:`glyph_segments` gives the usual SIFT glyph's line segments.
- ``cell_colours``: the 4 x 4 cells' mean RGB, read from the patch's 96-d LCS descriptor (its means are
  elements ``6 (4 by + bx) + 0..2``; :func:`lcs_cell_colours`), from the LCS store when the pipeline has
  that channel, else computed on the image by the same extraction (same frames, same order).
- ``posteriors`` (K,): gamma_t(k) of the PCA-projected descriptor under the GMM, thresholded at the
  encoder's theta and renormalised (``DiagonalGMM.predict_proba``, the encoder's own E-step); ``top`` the
  ten largest, ``n_nonzero`` how many survive the threshold; ``word`` the largest.
- FV energy, per Gaussian the patch touches (posterior > 0): the image's un-normalised FV (eq. 19, no power,
  no L2, whole image) is a sum over patches, G = sum_t c_t with c_t = encode([x_t]) / T (the encoder on the
  single descriptor, which is linear in its per-descriptor terms). ``gaussian_energy[k]`` =
  ||G_k||^2 / ||G||^2 is Gaussian k's share of the image's FV energy and ``block_share[k]`` =
  <c_tk, G_k> / ||G_k||^2 the patch's share of that Gaussian's block (over all patches these shares sum to
  1; a negative share pulls the block towards zero); ``image_share[k]`` = <c_tk, G_k> / ||G||^2 (their
  product) the patch's share of the whole image's FV energy through Gaussian k.
- "same visual word": ``same_word`` (T,) marks every patch of the image whose largest posterior is on
  ``word``; ``claimed``: patches of other images of the split that ``word`` claims most strongly (among their
  patches whose largest posterior is on ``word``: the largest posterior, ties broken by log w_k u_k(x), the
  most typical), one per image, from at most :data:`CLAIMED_IMAGES` images, with their pixels
  (:func:`claimed_patches`).
- once a linear classifier exists: ``evidence`` (:class:`ClassEvidence`): for the predicted class c,
  S_k = sum over Gaussian k's dimensions of coef_c * z (z the image's normalised FV from the encode step),
  the score = sum_k S_k + intercept; each patch's share heat_t = sum_k gamma_t(k) S_k / A_k
  (A_k = sum_t gamma_t(k): Gaussian k's push shared among its patches by their posteriors), and
  :func:`heat_map` rasterises it (per pixel, the mean over the patches covering it).

What the cache lacks is left None with a sentence in ``notes`` (e.g. no GMM yet: only the descriptor).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from ..engine.descriptors import N_ORIENT, N_SPATIAL
from ..engine.progress import check_cancel, report

__all__ = ["PatchInspection", "ClaimedPatch", "ClassEvidence", "inspect_patch", "sift_glyph", "glyph_segments",
           "lcs_cell_colours", "nearest_patch", "heat_map", "claimed_patches", "TOP", "CLAIMED", "CLAIMED_IMAGES"]

#: posteriors drawn as bars
TOP = 10
#: patches of other images in the "claimed most strongly" grid
CLAIMED = 12
#: images of the split scanned for them (evenly spaced over the split's images)
CLAIMED_IMAGES = 120
#: side of a claimed patch's crop, pixels
CROP = 56


@dataclass
class ClaimedPatch:
    image_index: int
    image_id: str
    position: Tuple[float, float]
    side: float
    posterior: float
    log_joint: float
    crop: np.ndarray  # (CROP, CROP, 3) uint8


@dataclass
class ClassEvidence:
    """Why the classifier scores this image for its predicted class (per Gaussian and per patch)."""

    class_name: str
    score: float
    intercept: float
    per_gaussian: np.ndarray  # (K,) S_k
    patch_heat: np.ndarray  # (T,) per patch of the image
    heat_map: np.ndarray  # (H, W) float32, NaN where no patch lies


@dataclass
class PatchInspection:
    image_index: int
    image_id: str
    channel: str
    patch: int  # row among the image's descriptors
    position: Tuple[float, float]
    side: float
    image_shape: Tuple[int, int]
    positions: np.ndarray  # (T, 2) every patch of the image
    sizes: np.ndarray  # (T,)
    sift: Optional[np.ndarray] = None  # (4, 4, 8)
    cell_colours: Optional[np.ndarray] = None  # (4, 4, 3) in [0, 1]
    threshold: float = 0.0
    posteriors: Optional[np.ndarray] = None  # (K,)
    top: Optional[np.ndarray] = None  # indices of the (up to) TOP largest posteriors, largest first
    n_nonzero: int = 0
    word: Optional[int] = None
    touched: Optional[np.ndarray] = None  # Gaussians with posterior > 0
    gaussian_energy: Optional[np.ndarray] = None  # (len(touched),)
    block_share: Optional[np.ndarray] = None  # (len(touched),)
    image_share: Optional[np.ndarray] = None  # (len(touched),) block_share * gaussian_energy
    same_word: Optional[np.ndarray] = None  # (T,) bool
    claimed: List[ClaimedPatch] = field(default_factory=list)
    evidence: Optional[ClassEvidence] = None
    notes: List[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ descriptors
def sift_glyph(descriptor) -> np.ndarray:
    """(4, 4, 8) ``[by, bx, t]`` histograms of a 128-d SIFT descriptor (fvstudio / VLFeat order)."""
    d = np.asarray(descriptor, dtype=np.float64).reshape(-1)
    if d.size != N_SPATIAL * N_SPATIAL * N_ORIENT:
        raise ValueError(f"a SIFT descriptor has 128 values, got {d.size}")
    by, bx, t = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    return d[8 * (by + 4 * bx) + (2 - t) % 8]


def glyph_segments(glyph: np.ndarray, cell: float = 1.0) -> np.ndarray:
    """(128, 2, 2) segments of the SIFT glyph, in a (4 cell) x (4 cell) box with y down: from each cell's
    centre along orientation t, length proportional to the bin (the largest bin reaches 0.48 cell)."""
    g = np.asarray(glyph, dtype=np.float64)
    top = float(g.max()) if g.size and g.max() > 0 else 1.0
    by, bx, t = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    cx, cy = (bx + 0.5) * cell, (by + 0.5) * cell
    L = 0.48 * cell * g / top
    ang = t * (2 * np.pi / 8)
    seg = np.empty((4, 4, 8, 2, 2))
    seg[..., 0, 0], seg[..., 0, 1] = cx, cy
    seg[..., 1, 0], seg[..., 1, 1] = cx + L * np.cos(ang), cy + L * np.sin(ang)
    return seg.reshape(-1, 2, 2)


def lcs_cell_colours(descriptor) -> np.ndarray:
    """(4, 4, 3) ``[by, bx, rgb]`` mean colours of a 96-d LCS descriptor (clipped to [0, 1])."""
    d = np.asarray(descriptor, dtype=np.float64).reshape(-1)
    if d.size != 96:
        raise ValueError(f"an LCS descriptor has 96 values, got {d.size}")
    by, bx, c = np.meshgrid(np.arange(4), np.arange(4), np.arange(3), indexing="ij")
    return np.clip(d[6 * (4 * by + bx) + c], 0.0, 1.0)


def nearest_patch(positions, sizes, x: float, y: float, side: Optional[float] = None) -> int:
    """Index of the patch centred nearest to (x, y), among those of patch side ``side`` (None: any)."""
    P = np.asarray(positions, dtype=np.float64)
    S = np.asarray(sizes, dtype=np.float64)
    if not len(P):
        raise ValueError("the image has no patch")
    d2 = ((P - [x, y]) ** 2).sum(1)
    if side is not None:
        d2 = np.where(np.isclose(S, side, rtol=1e-4), d2, np.inf)
        if not np.isfinite(d2).any():
            raise ValueError(f"no patch of side {side} in this image")
    return int(np.argmin(d2))


def heat_map(positions, sizes, values, shape) -> np.ndarray:
    """(H, W) float32: per pixel, the mean of ``values`` over the patches (squares of ``sizes`` centred at
    ``positions``) covering it; NaN where none does."""
    H, W = int(shape[0]), int(shape[1])
    P = np.asarray(positions, dtype=np.float64)
    S = np.asarray(sizes, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    x0 = np.clip(np.floor(P[:, 0] - S / 2 + 0.5).astype(int), 0, W)
    x1 = np.clip(np.floor(P[:, 0] + S / 2 + 0.5).astype(int), 0, W)
    y0 = np.clip(np.floor(P[:, 1] - S / 2 + 0.5).astype(int), 0, H)
    y1 = np.clip(np.floor(P[:, 1] + S / 2 + 0.5).astype(int), 0, H)
    acc = np.zeros((2, H + 1, W + 1))
    for layer, w in ((0, v), (1, np.ones_like(v))):
        np.add.at(acc[layer], (y0, x0), w)
        np.add.at(acc[layer], (y0, x1), -w)
        np.add.at(acc[layer], (y1, x0), -w)
        np.add.at(acc[layer], (y1, x1), w)
    acc = acc.cumsum(1).cumsum(2)[:, :H, :W]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(acc[1] > 0.5, acc[0] / np.maximum(acc[1], 1e-12), np.nan)
    return out.astype(np.float32)


def _crop(rgb: np.ndarray, x: float, y: float, side: float, size: int = CROP) -> np.ndarray:
    """The square of ``side`` px centred at (x, y) (edges repeated outside the image), resized to ``size``."""
    import cv2

    h = max(1, int(round(side / 2)))
    pad = np.pad(rgb, ((h, h), (h, h), (0, 0)), mode="edge")
    cx, cy = int(round(x)) + h, int(round(y)) + h
    patch = pad[cy - h:cy + h, cx - h:cx + h]
    patch = cv2.resize(np.ascontiguousarray(patch, dtype=np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return (np.clip(patch, 0, 1) * 255 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------------------ the inspection
def _image_descriptors(pipeline, store, i: int, channel: str):
    """The cached descriptors of image i (extracted now, identically, if the store has not got them)."""
    d = None
    if store is not None:
        try:
            d = store.get(i)
        except ValueError:
            d = None
    if d is None:
        from ..data.images import load_image
        from ..engine.descriptors import extract_channel
        from .steps.descriptors import descriptor_params

        params = descriptor_params(pipeline.config, channel)
        rgb = load_image(pipeline.dataset.paths[i], params.pop("max_pixels"))
        d = extract_channel(channel, rgb, **params)
    return d


def _other_channel(pipeline, i: int, channel: str, other: str, positions) -> Optional[np.ndarray]:
    """The ``other`` channel's descriptors of image i on the same frames (its store if the pipeline has it)."""
    store = pipeline.store(other) if other in pipeline.channels else None
    d = _image_descriptors(pipeline, store, i, other)
    if d.descriptors.shape[0] != len(positions) or not np.allclose(d.positions, positions, atol=1e-3):
        return None
    return d.descriptors


def _energy(inspection: PatchInspection, X: np.ndarray, t: int, gmm, encoder) -> None:
    from ..engine.fisher import FisherEncoder

    if getattr(encoder, "kind", "") != "fisher":
        inspection.notes.append(f"FV energy: the encoder is {getattr(encoder, 'kind', '?')!r}, not a Fisher vector")
        return
    raw = FisherEncoder(gmm, gradients=encoder.gradients, fim="closed" if encoder.fim == "closed" else "identity",
                        power=None, lp=None, pyramid=None, posterior_threshold=encoder.posterior_threshold)
    G = raw.encode(X).astype(np.float64)
    c = raw.encode(X[t:t + 1]).astype(np.float64) / len(X)
    if encoder.fim == "empirical" and encoder.fim_scale_ is not None:
        scale = np.asarray(encoder.fim_scale_, np.float64)[: raw.dim]
        G, c = G / scale, c / scale
    owner = raw.gaussian_index()
    K = raw.n_components
    Gk2 = np.bincount(owner, weights=G * G, minlength=K)
    cG = np.bincount(owner, weights=c * G, minlength=K)
    total = Gk2.sum()
    k = inspection.touched
    inspection.gaussian_energy = Gk2[k] / total if total > 0 else np.zeros(len(k))
    inspection.block_share = np.where(Gk2[k] > 0, cG[k] / np.maximum(Gk2[k], 1e-300), 0.0)
    inspection.image_share = cG[k] / total if total > 0 else np.zeros(len(k))


def _evidence(pipeline, inspection: PatchInspection, post: np.ndarray, channel: str) -> None:
    clf = pipeline.artifact("classifier", channel)
    if clf is None:
        inspection.notes.append("Class evidence: no classifier for the current config yet (run the pipeline)")
        return
    paths = clf.model_paths[0]
    if channel not in paths:
        inspection.notes.append(f"Class evidence: the classifier is {', '.join(paths)} (early fusion); "
                                f"per-Gaussian evidence is drawn for single-channel models only")
        return
    try:
        model = clf.load_model(0, channel)
    except ValueError as exc:  # k-NN: no linear model
        inspection.notes.append(f"Class evidence: {exc}")
        return
    enc = pipeline.artifact("encode", channel)
    rows = np.flatnonzero(np.asarray(enc.indices) == inspection.image_index) if enc is not None else []
    if not len(rows):
        inspection.notes.append("Class evidence: this image is not among split 1's encoded images")
        return
    z = np.asarray(enc.fvs[int(rows[0])], dtype=np.float64)
    W = np.asarray(model.coef_, dtype=np.float64)
    b = np.asarray(model.intercept_, dtype=np.float64)
    scores = W @ z + b
    c = int(np.argmax(scores))
    label = int(model.classes_[c])
    names = list(pipeline.dataset.class_names)
    K = post.shape[1]
    S = np.bincount(enc.encoder.gaussian_index(), weights=W[c] * z, minlength=K)
    A = post.sum(0).astype(np.float64)
    heat = post.astype(np.float64) @ np.where(A > 0, S / np.maximum(A, 1e-300), 0.0)
    inspection.evidence = ClassEvidence(names[label] if 0 <= label < len(names) else str(label), float(scores[c]),
                                        float(b[c]), S, heat,
                                        heat_map(inspection.positions, inspection.sizes, heat, inspection.image_shape))


def claimed_patches(pipeline, k: int, exclude: int, channel: str, pca, gmm, threshold: float, *,
                    n: int = CLAIMED, max_images: int = CLAIMED_IMAGES, progress=None, cancel=None) -> List[ClaimedPatch]:
    """The patches of other images of split 1 that Gaussian ``k`` claims most strongly, one per image."""
    from ..data.images import load_image
    from .steps.pca import PcaStep

    split = pipeline.splits[0]
    pool = np.unique(np.concatenate([np.asarray(split.train), np.asarray(split.test)]).astype(np.int64))
    pool = pool[pool != exclude]
    if len(pool) > max_images:
        pool = pool[np.linspace(0, len(pool) - 1, max_images).round().astype(int)]
    store = pipeline.store(channel)
    best = []
    for j, i in enumerate(pool.tolist()):
        if j % 8 == 0:
            check_cancel(cancel, "patch inspector")
            report(progress, j, len(pool), f"patch inspector: scanning image {j + 1}/{len(pool)}", step="inspector")
        try:
            d = store.get(i)
        except ValueError:
            continue
        if d is None or not len(d.descriptors):
            continue
        X = PcaStep.project(pca, d.descriptors, pipeline.config.get("gmm.position_scale"), d.positions, d.image_shape)
        lj = gmm.terms.log_joint(X)
        cand = np.flatnonzero(lj.argmax(1) == k)  # the patches whose largest posterior is on k
        if not len(cand):
            continue
        p = gmm.predict_proba(X[cand], threshold=threshold)[:, k]  # the engine's posteriors, for those only
        r = int(np.lexsort((-lj[cand, k], -p))[0])
        t = int(cand[r])
        best.append((float(p[r]), float(lj[t, k]), i, d.positions[t], float(d.scales[t])))
    best.sort(key=lambda r: (-r[0], -r[1]))
    out = []
    max_pixels = pipeline.config.get("dataset.max_pixels")
    for post, lj, i, pos, side in best[:n]:
        rgb = load_image(pipeline.dataset.paths[i], max_pixels)
        out.append(ClaimedPatch(i, pipeline.dataset.ids[i], (float(pos[0]), float(pos[1])), side, post, lj,
                                _crop(rgb, float(pos[0]), float(pos[1]), side)))
    return out


def inspect_patch(pipeline, image_index: int, x: float, y: float, scale: int = 0, *, channel: Optional[str] = None,
                  claimed: int = CLAIMED, claimed_images: int = CLAIMED_IMAGES, progress=None,
                  cancel=None) -> PatchInspection:
    """Everything the inspector shows for the patch of ``scale`` (0 = finest) nearest to (x, y) in image
    ``image_index`` (pixels of the image at descriptor resolution); see the module docstring."""
    ch = channel or pipeline.channels[0]
    i = int(image_index)
    report(progress, 0, 1, "patch inspector: descriptors", step="inspector")
    store = pipeline.artifact("descriptors", ch)
    d = _image_descriptors(pipeline, store, i, ch)
    if not len(d.descriptors):
        raise ValueError(f"{pipeline.dataset.ids[i]} has no patch (smaller than one patch)")
    sides = np.unique(d.scales)
    side = float(sides[min(int(scale), len(sides) - 1)])
    t = nearest_patch(d.positions, d.scales, x, y, side)
    out = PatchInspection(i, pipeline.dataset.ids[i], ch, t, (float(d.positions[t, 0]), float(d.positions[t, 1])),
                          side, tuple(int(v) for v in d.image_shape), np.asarray(d.positions), np.asarray(d.scales))
    sift = d.descriptors if ch == "sift" else _other_channel(pipeline, i, ch, "sift", d.positions)
    lcs = d.descriptors if ch == "lcs" else _other_channel(pipeline, i, ch, "lcs", d.positions)
    if sift is not None:
        out.sift = sift_glyph(sift[t])
    if lcs is not None:
        out.cell_colours = lcs_cell_colours(lcs[t])
    check_cancel(cancel, "patch inspector")
    pca = pipeline.artifact("pca", ch)
    gmm = pipeline.artifact("gmm", ch)
    if gmm is None:
        out.notes.append("Posteriors, FV energy and visual words need the GMM: run the pipeline up to the gmm step")
        return out
    from .steps.encode import build_encoder
    from .steps.pca import PcaStep

    enc_set = pipeline.artifact("encode", ch)
    encoder = enc_set.encoder if enc_set is not None else build_encoder(pipeline.config, gmm)
    out.threshold = float(encoder.posterior_threshold)
    X = PcaStep.project(pca, d.descriptors, pipeline.config.get("gmm.position_scale"), d.positions, d.image_shape)
    post = gmm.predict_proba(X, threshold=out.threshold)
    p = post[t]
    out.posteriors = p
    order = np.argsort(-p, kind="stable")
    out.n_nonzero = int((p > 0).sum())
    out.top = order[: min(TOP, out.n_nonzero)]
    out.word = int(order[0])
    out.touched = np.flatnonzero(p > 0)
    out.same_word = post.argmax(1) == out.word
    _energy(out, X, t, gmm, encoder)
    check_cancel(cancel, "patch inspector")
    _evidence(pipeline, out, post, ch)
    if claimed > 0:
        out.claimed = claimed_patches(pipeline, out.word, i, ch, pca, gmm, out.threshold, n=claimed,
                                      max_images=claimed_images, progress=progress, cancel=cancel)
    report(progress, 1, 1, "patch inspector: done", step="inspector")
    return out

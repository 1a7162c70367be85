"""Dense local descriptors: SIFT (128-d) and Local Color Statistics (96-d) on one shared patch grid.

The paper (Sec. 3.1) describes each image by ~10K local descriptors taken from 24x24 patches every
4 pixels at 5 scales, on images of at most 100K pixels: SIFT (Lowe) and LCS (Clinchant et al.), each
later PCA-reduced to 64-d. This module computes both on the same frames, so every descriptor of an
image has the same position in both channels (the spatial pyramid assigns them identically).

Geometry (one scale)
    A patch of ``patch`` pixels is split into 4x4 spatial bins of ``b = patch / 4`` pixels. As in
    VLFeat's ``vl_dsift``, the bin centres of a frame are ``(fx + b*bx, fy + b*by)``, bx, by = 0..3,
    for a frame corner ``(fx, fy)`` on the grid ``0, step, 2*step, ...`` while ``fx + 3b <= W - 1``
    (resp. ``fy + 3b <= H - 1``); the frame centre is ``(fx + 1.5 b, fy + 1.5 b)`` in 0-based pixel
    coordinates. Frames come in row-major order (x fastest). An image with ``W < 3b + 1`` or
    ``H < 3b + 1`` (16 x 16 or smaller for the default 24-px patch) has no frame: T = 0, not an error.

Scales
    Level s = 0 .. scales-1 is the input resized by ``1 / scale_factor**s`` (OpenCV INTER_AREA) and
    sampled with the SAME patch and step in level pixels, so in input pixels the patch grows as
    ``patch * scale_factor**s`` and so does the grid step. With the defaults (24 px, step 4, 5 scales,
    factor sqrt 2) a 100K-pixel image gives ~10.3K descriptors (e.g. 316 x 316: 5625, 2704, 1225, 576,
    256 per level), the paper's "~10K", for ~1.94x the pixels of one level. (Growing the patch on
    the full-resolution image with a fixed 4-px step instead would give ~22K descriptors.) Levels
    too small for one frame are skipped. Positions are mapped back to input pixel coordinates by
    ``x_in = (x_level + 0.5) * W / W_level - 0.5`` (the pixel-centre convention of cv2.resize);
    ``scales`` holds each descriptor's patch side in input pixels, ``patch * sqrt(W H / (W_l H_l))``.

Pre-smoothing
    With ``presmooth=True`` each level is blurred by a Gaussian of sigma = b / 6 level pixels before
    the gradients (VLFeat PHOW's rule sigma = bin size / magnif, magnif = 6), replicate borders.

SIFT at one level (VLFeat ``vl_dsift`` conventions, verified against its output in the tests)
    Gradients: central differences, one-sided on the image border,
        g_x = (I[y, x+1] - I[y, x-1]) / 2,  g_y = (I[y+1, x] - I[y-1, x]) / 2   (y points down)
        m = |g|,  theta = atan2(g_y, g_x) in [0, 2 pi)
    Orientation: n = 8 theta / (2 pi); m is split linearly between bins floor(n) and floor(n)+1 mod 8.
    Spatial pooling (bilinear in space, per axis, u = pixel offset from the bin centre):
        h[by, bx, t] = sum_p O_t(p) k_by(u_y) k_bx(u_x)
      window="gauss":  k_i(u) = (1 - |u| / b) * exp(-(u + delta_i)^2 / (2 sigma^2)),  |u| <= b - 1,
                       delta_i = b (i - 1.5) (bin centre minus frame centre), sigma = 2 b
                       (VLFeat's default windowSize 2): bilinear weights times a Gaussian centred on
                       the frame.
      window="flat":   k_i(u) = (1 - |u| / b) * mean_{|v| <= b-1} exp(-(v + delta_i)^2 / (2 sigma^2)):
                       VLFeat's fast mode, bilinear weights only (a flat window), each spatial bin
                       then rescaled by the mean of the Gaussian over its footprint.
      Pixels outside the image repeat the border pixel (padding by continuity).
    Contrast ("norms"): the histogram mass before normalisation divided by the frame area,
        norm = sum(h) / (3b + 1)^2        (VLFeat's keypoint ``norm`` field; ~ mean gradient magnitude)
    Normalisation: h <- h / (||h||_2 + eps); h <- min(h, 0.2); h <- h / (||h||_2 + eps), eps = 1.19e-7
    (computed as min(h, cap) / ||min(h, cap)||, cap = 0.2 (||h||_2 + eps): same result), so a
    perfectly flat patch gives the zero vector (never NaN) and keeps its frame (the paper does not
    discard uniform patches; filter on ``norms`` if wanted).
    ``root=True`` (RootSIFT, Arandjelovic & Zisserman 2012), after the clamp: h <- sqrt(h / ||h||_1).
    ``contrast_threshold=c > 0`` (VLFeat PHOW's ``ContrastThreshold``; not in the paper): every
    descriptor whose ``norm < c`` is set to the zero vector, its frame kept (0 = off, plain ``vl_dsift``).
    Below a contrast of about 0.005 (13% of the frames of Caltech-101's images) the normalised histogram
    is mostly sensor and JPEG noise; zeroing gives all such near-uniform patches one common descriptor
    instead. The default, PHOW's 0.005, was chosen by cross-validation (engine/defaults.py).
    Output order (standard SIFT, = VLFeat's ``vl_dsift_transpose_descriptor`` = MATLAB ``vl_dsift``
    and ``vl_sift``): element ``8 * (by + 4 * bx) + ((2 - t) mod 8)`` holds spatial bin (bx, by),
    orientation bin t of the above (t counted from +x towards +y, i.e. clockwise on screen).

Local Color Statistics at one level (Clinchant et al. 2007; paper Sec. 3.1)
    The same 4x4 cells: cell (bx, by) is the box of side b centred on that bin centre (pixels at
    |u| <= b/2 - 1/2 weigh 1, a pixel straddling the box edge weighs the inside fraction, e.g. 1/2 for
    even b). For each cell and channel c in (R, G, B): weighted mean mu and standard deviation
    sqrt(max(E[x^2] - mu^2, 0)). Element ``6 * (4 * by + bx) + j`` holds, for j = 0..5,
    (mu_R, mu_G, mu_B, sd_R, sd_G, sd_B). No pre-smoothing, no normalisation (values in [0, 1] for
    inputs in [0, 1]). ``norms`` = mean of the 48 standard deviations (colour contrast of the patch).

Inputs are float32 images in [0, 1]: gray (H, W) for SIFT, RGB (H, W, 3) for LCS; integer images
are scaled by their dtype's maximum. ``to_gray`` uses ITU-R BT.601 luma (0.299 R + 0.587 G +
0.114 B), as OpenCV and MATLAB's rgb2gray.

Speed and memory: per level, one numba pass writes 8 orientation planes (H, W, 8) (32 bytes per
pixel of the largest level); a second pass, for each row of frames, pools the 4 bin rows
vertically ((2b-1)-tap sums over whole image rows), splits them into ``step`` column phases so that
each horizontal tap of each bin is one contiguous multiply-add over all frames of the row, then
gathers and normalises every frame. Both windows cost the same (the per-bin kernels are separable
either way). About 4.5 ms for a 100K-pixel image at 5 scales (~10K descriptors) on one core, tens of
times faster than OpenCV's SIFT.compute on the same frames (benchmarks/bench_descriptors.py).
All kernels are single-threaded and release the GIL (callers parallelise over images).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from .defaults import CONTRAST_THRESHOLD, PATCH, PRESMOOTH, ROOT_SIFT, SCALE_FACTOR, SCALES, SIFT_WINDOW, STEP
from .jit import kernel
from .validation import check_choice, check_positive_int

#: The channels :func:`extract_channel` knows, in the paper's order.
CHANNELS = ("sift", "lcs")

#: Spatial bins per side and orientation bins (the SIFT layout; fixed).
N_SPATIAL = 4
N_ORIENT = 8
SIFT_DIM = N_SPATIAL * N_SPATIAL * N_ORIENT  # 128
LCS_DIM = N_SPATIAL * N_SPATIAL * 6  # 96

#: Clamp applied between the two L2 normalisations (Lowe 2004).
SIFT_CLAMP = 0.2
#: VLFeat's Gaussian window size, in bins (sigma = WINDOW_SIZE * b).
WINDOW_SIZE = 2.0
#: Pre-smoothing sigma = b / PRESMOOTH_MAGNIF level pixels (VLFeat PHOW's magnif).
PRESMOOTH_MAGNIF = 6.0

_SIFT_PARAMS = ("patch", "step", "scales", "scale_factor", "window", "presmooth", "root", "contrast_threshold")
_LCS_PARAMS = ("patch", "step", "scales", "scale_factor")
#: The keyword parameters each channel accepts (for callers that keep one dict per channel).
CHANNEL_PARAMS = {"sift": _SIFT_PARAMS, "lcs": _LCS_PARAMS}


@dataclass
class DenseDescriptors:
    """Descriptors of one image and where they were taken.

    ``descriptors`` (T, D) float32; ``positions`` (T, 2) float32 patch centres (x, y) in input pixel
    coordinates; ``scales`` (T,) float32 patch side in input pixels; ``norms`` (T,) float32 contrast
    before normalisation; ``image_shape`` (H, W) of the input image.
    """

    descriptors: np.ndarray
    positions: np.ndarray
    scales: np.ndarray
    norms: np.ndarray
    image_shape: Tuple[int, int]

    def __len__(self) -> int:
        return int(self.descriptors.shape[0])


# ----------------------------------------------------------------------------------------------
# input checks and the shared frame grid
# ----------------------------------------------------------------------------------------------

def _as_image(img, name: str, channels: int) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be a numeric image array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real-valued, got dtype {arr.dtype}")
    if channels == 1:
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D gray image (H, W), got shape {arr.shape}")
    elif arr.ndim != 3 or arr.shape[2] != channels:
        raise ValueError(f"{name} must be an (H, W, {channels}) image, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite pixel values")
    return arr


def _check_grid(patch, step, scales, scale_factor) -> Tuple[int, int, int, float]:
    patch = check_positive_int(patch, "patch", minimum=4)
    if patch % N_SPATIAL:
        raise ValueError(f"patch must be a multiple of {N_SPATIAL} (4x4 bins of patch/4 pixels), "
                         f"got {patch}")
    step = check_positive_int(step, "step")
    scales = check_positive_int(scales, "scales")
    try:
        scale_factor = float(scale_factor)
    except (TypeError, ValueError):
        raise ValueError(f"scale_factor must be a number > 1, got {scale_factor!r}") from None
    if not (scale_factor > 1.0 and math.isfinite(scale_factor)):
        raise ValueError(f"scale_factor must be a finite number > 1, got {scale_factor!r}")
    return patch, step, scales, scale_factor


def _check_threshold(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"contrast_threshold must be a number >= 0, got {value!r}") from None
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"contrast_threshold must be a finite number >= 0, got {value!r}")
    return value


def _grid_count(size: int, b: int, step: int) -> int:
    """Number of frames along one axis of ``size`` pixels (VLFeat default bounds)."""
    span = size - 1 - (N_SPATIAL - 1) * b
    return span // step + 1 if span >= 0 else 0


def _levels(shape, patch, step, scales, scale_factor):
    """Per level: (s, (H_l, W_l), ny, nx). Stops at the first level too small for a frame."""
    H, W = shape
    b = patch // N_SPATIAL
    out = []
    for s in range(scales):
        r = scale_factor ** s
        Hl, Wl = (H, W) if s == 0 else (max(1, int(round(H / r))), max(1, int(round(W / r))))
        ny, nx = _grid_count(Hl, b, step), _grid_count(Wl, b, step)
        if ny == 0 or nx == 0:
            break
        out.append((s, (Hl, Wl), ny, nx))
    return out


def _level_image(img: np.ndarray, size_hw) -> np.ndarray:
    Hl, Wl = size_hw
    if (Hl, Wl) == img.shape[:2]:
        return img
    return cv2.resize(img, (Wl, Hl), interpolation=cv2.INTER_AREA)


def _level_frames(shape, size_hw, ny, nx, patch, step):
    """Frame centres of one level in input coordinates (T_l, 2) and patch side in input pixels."""
    H, W = shape
    Hl, Wl = size_hw
    b = patch // N_SPATIAL
    c = 0.5 * (N_SPATIAL - 1) * b
    xs = c + step * np.arange(nx, dtype=np.float64)
    ys = c + step * np.arange(ny, dtype=np.float64)
    sx, sy = W / Wl, H / Hl
    xs = (xs + 0.5) * sx - 0.5
    ys = (ys + 0.5) * sy - 0.5
    pos = np.empty((ny * nx, 2), dtype=np.float32)
    pos[:, 0] = np.tile(xs, ny)
    pos[:, 1] = np.repeat(ys, nx)
    return pos, np.float32(patch * math.sqrt(sx * sy))


def _empty(dim: int, shape) -> DenseDescriptors:
    return DenseDescriptors(np.zeros((0, dim), np.float32), np.zeros((0, 2), np.float32),
                            np.zeros(0, np.float32), np.zeros(0, np.float32), tuple(int(v) for v in shape))


# ----------------------------------------------------------------------------------------------
# SIFT kernels
# ----------------------------------------------------------------------------------------------

def _pooling_kernels(b: int, window: str) -> np.ndarray:
    """(4, 2b-1) float32: weight of a pixel at offset u = -(b-1)..b-1 from the centre of bin i."""
    u = np.arange(-(b - 1), b, dtype=np.float64)
    sigma = WINDOW_SIZE * b
    tri = 1.0 - np.abs(u) / b
    delta = b * (np.arange(N_SPATIAL) - 0.5 * (N_SPATIAL - 1))  # bin centre - frame centre
    gauss = np.exp(-0.5 * ((u[None, :] + delta[:, None]) / sigma) ** 2)
    if window == "gauss":
        ker = tri[None, :] * gauss
    else:  # flat: bilinear only, each bin scaled by the window's mean over its footprint
        ker = gauss.mean(axis=1, keepdims=True) * tri[None, :]
    return ker.astype(np.float32)


@kernel
def _orientation_planes(img, planes):
    """Gradient magnitude split linearly between the two nearest of 8 orientation bins.

    planes (H, W, 8): plane k holds orientation bin t = (2 - k) mod 8, i.e. already in SIFT order.
    """
    H, W = img.shape
    two_pi = np.float32(2.0 * math.pi)
    half_pi = np.float32(0.5 * math.pi)
    pi = np.float32(math.pi)
    to_bin = np.float32(N_ORIENT / (2.0 * math.pi))
    gxr = np.zeros(W, np.float32)
    gyr = np.zeros(W, np.float32)
    mag = np.zeros(W, np.float32)
    pos = np.zeros(W, np.float32)
    rows = planes.reshape(H, W * N_ORIENT)
    for y in range(H):
        ym = y - 1 if y > 0 else 0
        yp = y + 1 if y < H - 1 else H - 1
        fy = np.float32(0.0) if yp == ym else (np.float32(1.0) if yp - ym == 1 else np.float32(0.5))
        for x in range(1, W - 1):
            gxr[x] = (img[y, x + 1] - img[y, x - 1]) * np.float32(0.5)
        if W > 1:
            gxr[0] = img[y, 1] - img[y, 0]
            gxr[W - 1] = img[y, W - 1] - img[y, W - 2]
        else:
            gxr[0] = 0.0
        for x in range(W):
            gyr[x] = (img[yp, x] - img[ym, x]) * fy
        for x in range(W):
            gx = gxr[x]
            gy = gyr[x]
            ax = abs(gx)
            ay = abs(gy)
            # atan2 from an odd minimax polynomial of atan on [0, 1] (|error| < 1e-5 rad), branch-free
            z = min(ax, ay) / max(max(ax, ay), np.float32(1e-30))
            z2 = z * z
            a = z * (np.float32(0.99997726) + z2 * (np.float32(-0.33262347) + z2 * (
                np.float32(0.19354346) + z2 * (np.float32(-0.11643287) + z2 * (
                    np.float32(0.05265332) + z2 * np.float32(-0.01172120))))))
            a = half_pi - a if ay > ax else a
            a = pi - a if gx < 0 else a
            a = two_pi - a if gy < 0 else a
            mag[x] = math.sqrt(gx * gx + gy * gy)
            pos[x] = a * to_bin
        row = rows[y]
        for x in range(W):
            n = pos[x]
            m = mag[x]
            for k in range(N_ORIENT):
                d = abs(n - np.float32((2 - k) & 7))  # circular distance to bin centre t
                d = min(d, np.float32(N_ORIENT) - d)
                row[N_ORIENT * x + k] = max(np.float32(0.0), np.float32(1.0) - d) * m


@kernel
def _pool_sift(planes, ky, kx, b, step, ny, nx, root, out, norms):
    """Spatial pooling + normalisation of all frames of one level.

    planes (H, W, 8) from :func:`_orientation_planes`; out (ny*nx, 128) in SIFT order;
    norms (ny*nx,) = histogram mass / frame area. Per row of frames: (1) the 4 bin rows are pooled
    vertically over whole image rows; (2) those rows are replicate-padded and split into ``step``
    phases (column m * step + phase -> phases[by, phase, m]), so one tap of one horizontal bin
    kernel over ALL frames of the row is a single contiguous multiply-add; (3) each frame gathers
    its 16 bins and is normalised. Inner loops index slices from 0 so numba emits no negative-index
    wraparound code and LLVM vectorises them (5x faster than indexing with computed offsets).
    """
    H, W, _ = planes.shape
    L = ky.shape[1]
    R = (L - 1) // 2
    WT = W * N_ORIENT
    src = planes.reshape(H, WT)
    n_m = (W + 2 * R + step - 1) // step  # padded columns per phase
    nxT = nx * N_ORIENT
    rows = np.empty((N_SPATIAL, WT), dtype=np.float32)  # vertically pooled rows of one frame row
    phases = np.zeros((N_SPATIAL, step, n_m * N_ORIENT), dtype=np.float32)
    pooled = np.empty((N_SPATIAL, N_SPATIAL, nxT), dtype=np.float32)  # [by, bx, frame * 8 + t]
    hist = np.empty(SIFT_DIM, dtype=np.float32)
    area = np.float32(((N_SPATIAL - 1) * b + 1) ** 2)
    for j in range(ny):
        for by in range(N_SPATIAL):
            yc = j * step + by * b - R
            acc = rows[by]
            for e in range(WT):
                acc[e] = 0.0
            d = 0
            while d + 3 <= L:  # three taps per sweep: a third of the accumulator traffic
                s0 = src[min(max(yc + d, 0), H - 1)]
                s1 = src[min(max(yc + d + 1, 0), H - 1)]
                s2 = src[min(max(yc + d + 2, 0), H - 1)]
                w0 = ky[by, d]
                w1 = ky[by, d + 1]
                w2 = ky[by, d + 2]
                for e in range(WT):
                    acc[e] += w0 * s0[e] + w1 * s1[e] + w2 * s2[e]
                d += 3
            while d < L:
                s0 = src[min(max(yc + d, 0), H - 1)]
                w0 = ky[by, d]
                for e in range(WT):
                    acc[e] += w0 * s0[e]
                d += 1
            for ph in range(step):
                dst = phases[by, ph]
                for m in range(n_m):
                    c = min(max(m * step + ph - R, 0), W - 1)
                    s_ = acc[c * N_ORIENT:(c + 1) * N_ORIENT]
                    for k in range(N_ORIENT):
                        dst[m * N_ORIENT + k] = s_[k]
        for by in range(N_SPATIAL):
            for bx in range(N_SPATIAL):
                dst = pooled[by, bx]
                for e in range(nxT):
                    dst[e] = 0.0
                for d in range(L):
                    w = kx[bx, d]
                    c0 = bx * b + d  # padded column of tap d of bin bx in frame 0
                    off = (c0 // step) * N_ORIENT
                    s_ = phases[by, c0 % step, off:off + nxT]
                    for e in range(nxT):
                        dst[e] += w * s_[e]
        for i in range(nx):
            for bx in range(N_SPATIAL):
                for by in range(N_SPATIAL):
                    s_ = pooled[by, bx, i * N_ORIENT:(i + 1) * N_ORIENT]
                    h = hist[N_ORIENT * (by + N_SPATIAL * bx):N_ORIENT * (by + N_SPATIAL * bx + 1)]
                    for k in range(N_ORIENT):
                        h[k] = s_[k]
            _finish_sift(hist, area, root, out, norms, j * nx + i)


@kernel
def _finish_sift(hist, area, root, out, norms, f):
    """norms[f] = mass / area; out[f] = hist L2-normalised, clamped at 0.2, renormalised (RootSIFT).

    min(h / n, 0.2) = min(h, 0.2 n) / n, so the clamp is applied to the raw histogram and only the
    final result is written. eps = float32 machine epsilon, as VLFeat.
    """
    eps = np.float32(1.1920929e-07)
    mass = np.float32(0.0)
    ss = np.float32(0.0)
    for e in range(SIFT_DIM):
        mass += hist[e]
    for e in range(SIFT_DIM):
        ss += hist[e] * hist[e]
    norms[f] = mass / area
    cap = np.float32(SIFT_CLAMP) * (np.float32(math.sqrt(ss)) + eps)
    if root:
        l1 = np.float32(0.0)
        for e in range(SIFT_DIM):
            l1 += min(hist[e], cap)
        inv = np.float32(1.0) / (l1 + eps * cap)
        for e in range(SIFT_DIM):
            out[f, e] = math.sqrt(min(hist[e], cap) * inv)
    else:
        ss = np.float32(0.0)
        for e in range(SIFT_DIM):
            v = min(hist[e], cap)
            ss += v * v
        inv = np.float32(1.0) / (np.float32(math.sqrt(ss)) + eps * cap)
        for e in range(SIFT_DIM):
            out[f, e] = min(hist[e], cap) * inv


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------

def to_gray(rgb) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) float32 luma 0.299 R + 0.587 G + 0.114 B; a 2-D image passes through."""
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        return _as_image(arr, "rgb", 1)
    img = _as_image(arr, "rgb", 3)
    return (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32, copy=False)


def dense_sift(gray, *, patch: int = PATCH, step: int = STEP, scales: int = SCALES,
               scale_factor: float = SCALE_FACTOR, window: str = SIFT_WINDOW, presmooth: bool = PRESMOOTH,
               root: bool = ROOT_SIFT, contrast_threshold: float = CONTRAST_THRESHOLD) -> DenseDescriptors:
    """Dense multi-scale SIFT of a gray float32 image in [0, 1]; see the module docstring.

    Returns a :class:`DenseDescriptors` with (T, 128) float32 descriptors in standard SIFT order,
    frame centres in input pixels, patch sides, contrast norms, and the input's (H, W).
    """
    img = _as_image(gray, "gray", 1)
    patch, step, scales, scale_factor = _check_grid(patch, step, scales, scale_factor)
    check_choice(window, "window", ("gauss", "flat"))
    contrast_threshold = _check_threshold(contrast_threshold)
    b = patch // N_SPATIAL
    levels = _levels(img.shape, patch, step, scales, scale_factor)
    if not levels:
        return _empty(SIFT_DIM, img.shape)
    ker = _pooling_kernels(b, window)
    sigma = b / PRESMOOTH_MAGNIF
    total = sum(ny * nx for _, _, ny, nx in levels)
    desc = np.empty((total, SIFT_DIM), np.float32)
    norms = np.empty(total, np.float32)
    pos = np.empty((total, 2), np.float32)
    sizes = np.empty(total, np.float32)
    start = 0
    planes_buf = np.empty(img.size * N_ORIENT, np.float32)  # level 0 is the largest
    for _, size_hw, ny, nx in levels:
        level = _level_image(img, size_hw)
        if presmooth:
            level = cv2.GaussianBlur(level, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                     borderType=cv2.BORDER_REPLICATE)
        planes = planes_buf[:level.size * N_ORIENT].reshape(level.shape[0], level.shape[1], N_ORIENT)
        _orientation_planes(level, planes)
        stop = start + ny * nx
        _pool_sift(planes, ker, ker, b, step, ny, nx, bool(root), desc[start:stop], norms[start:stop])
        pos[start:stop], sizes[start:stop] = _level_frames(img.shape, size_hw, ny, nx, patch, step)
        start = stop
    if contrast_threshold > 0.0:
        desc[norms < np.float32(contrast_threshold)] = 0.0
    return DenseDescriptors(desc, pos, sizes, norms, tuple(int(v) for v in img.shape))


def _cell_kernel(b: int) -> np.ndarray:
    """Box of side b centred on a pixel: weight clip(b/2 + 1/2 - |u|, 0, 1) (sums to b)."""
    half = b // 2 + 1
    u = np.arange(-half, half + 1, dtype=np.float64)
    k = np.clip(b / 2.0 + 0.5 - np.abs(u), 0.0, 1.0) / b
    return k[k > 0].astype(np.float32)


@kernel
def _lcs_level(img, ker, b, step, ny, nx, out, norms):
    """Cell means/stds of one level: img (H, W, 3); out (ny*nx, 96); norms (ny*nx,).

    For each frame row and each of its 4 cell rows, the box-weighted local sums of (R, G, B) and
    (R^2, G^2, B^2) are computed at every column (a vertical then a horizontal pass, both over
    contiguous memory); each cell is then a lookup at its centre column.
    """
    H, W, C = img.shape
    L = ker.shape[0]
    R = (L - 1) // 2
    WC = W * C
    flat = img.reshape(H, WC)
    pad1 = np.empty((W + 2 * R) * C, dtype=np.float32)  # vertical sums, replicate-padded in x
    pad2 = np.empty((W + 2 * R) * C, dtype=np.float32)
    mean = np.empty((N_SPATIAL, WC), dtype=np.float32)  # box means at the 4 cell rows
    sq = np.empty((N_SPATIAL, WC), dtype=np.float32)
    core1 = pad1[R * C:R * C + WC]  # slices indexed from 0: no wraparound code, vectorised loops
    core2 = pad2[R * C:R * C + WC]
    for j in range(ny):
        for by in range(N_SPATIAL):
            yc = j * step + by * b - R
            for e in range(WC):
                core1[e] = 0.0
                core2[e] = 0.0
            for d in range(L):  # one array written per loop: LLVM vectorises those
                src = flat[min(max(yc + d, 0), H - 1)]
                w = ker[d]
                for e in range(WC):
                    core1[e] += w * src[e]
                for e in range(WC):
                    core2[e] += w * src[e] * src[e]
            for x in range(R):
                for c in range(C):
                    pad1[x * C + c] = pad1[R * C + c]
                    pad2[x * C + c] = pad2[R * C + c]
                    pad1[(W + R + x) * C + c] = pad1[(W + R - 1) * C + c]
                    pad2[(W + R + x) * C + c] = pad2[(W + R - 1) * C + c]
            m1 = mean[by]
            m2 = sq[by]
            for e in range(WC):
                m1[e] = 0.0
                m2[e] = 0.0
            for d in range(L):
                w = ker[d]
                s1 = pad1[d * C:d * C + WC]
                s2 = pad2[d * C:d * C + WC]
                for e in range(WC):
                    m1[e] += w * s1[e]
                for e in range(WC):
                    m2[e] += w * s2[e]
        for i in range(nx):
            f = j * nx + i
            sd_sum = np.float32(0.0)
            for by in range(N_SPATIAL):
                for bx in range(N_SPATIAL):
                    q = (i * step + bx * b) * C
                    base = 6 * (N_SPATIAL * by + bx)
                    for c in range(C):
                        mu = mean[by, q + c]
                        var = sq[by, q + c] - mu * mu
                        sd = np.float32(math.sqrt(var)) if var > 0 else np.float32(0.0)
                        out[f, base + c] = mu
                        out[f, base + 3 + c] = sd
                        sd_sum += sd
            norms[f] = sd_sum / np.float32(3 * N_SPATIAL * N_SPATIAL)


def local_color_statistics(rgb, *, patch: int = PATCH, step: int = STEP, scales: int = SCALES,
                           scale_factor: float = SCALE_FACTOR) -> DenseDescriptors:
    """Dense 96-d Local Color Statistics of an RGB float32 image in [0, 1].

    Same frames (same T, identical positions and scales) as :func:`dense_sift` with the same grid
    parameters; layout in the module docstring.
    """
    img = _as_image(rgb, "rgb", 3)
    patch, step, scales, scale_factor = _check_grid(patch, step, scales, scale_factor)
    b = patch // N_SPATIAL
    shape = img.shape[:2]
    levels = _levels(shape, patch, step, scales, scale_factor)
    if not levels:
        return _empty(LCS_DIM, shape)
    ker = _cell_kernel(b)
    total = sum(ny * nx for _, _, ny, nx in levels)
    desc = np.empty((total, LCS_DIM), np.float32)
    norms = np.empty(total, np.float32)
    pos = np.empty((total, 2), np.float32)
    sizes = np.empty(total, np.float32)
    start = 0
    for _, size_hw, ny, nx in levels:
        level = _level_image(img, size_hw)
        stop = start + ny * nx
        _lcs_level(level, ker, b, step, ny, nx, desc[start:stop], norms[start:stop])
        pos[start:stop], sizes[start:stop] = _level_frames(shape, size_hw, ny, nx, patch, step)
        start = stop
    return DenseDescriptors(desc, pos, sizes, norms, tuple(int(v) for v in shape))


def extract_channel(name: str, rgb, **params) -> DenseDescriptors:
    """Descriptors of channel ``name`` ("sift" on the BT.601 gray image, or "lcs") of an RGB image.

    ``params`` are the keyword arguments of :func:`dense_sift` / :func:`local_color_statistics`;
    a parameter the channel does not take is a ValueError (see ``CHANNEL_PARAMS``).
    """
    check_choice(name, "name", CHANNELS)
    unknown = sorted(set(params) - set(CHANNEL_PARAMS[name]))
    if unknown:
        raise ValueError(f"channel {name!r} does not take parameter(s) {unknown}; "
                         f"it takes {list(CHANNEL_PARAMS[name])}")
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"rgb must be an (H, W, 3) image, got shape {arr.shape}")
    if name == "sift":
        return dense_sift(to_gray(arr), **params)
    return local_color_statistics(arr, **params)


def dense_frames(image_shape, *, patch: int = 24, step: int = 4, scales: int = 5,
                 scale_factor: float = 2 ** 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """Where :func:`dense_sift` and :func:`local_color_statistics` take their descriptors on an image of
    ``image_shape`` (H, W, ...), without computing any: ``positions`` (T, 2) float32 frame centres (x, y)
    and ``sizes`` (T,) float32 patch sides, both in input pixels, in the same order and the same values as
    the ``positions`` / ``scales`` of those functions with the same grid parameters (module docstring)."""
    patch, step, scales, scale_factor = _check_grid(patch, step, scales, scale_factor)
    shape = (int(image_shape[0]), int(image_shape[1]))
    levels = _levels(shape, patch, step, scales, scale_factor)
    total = sum(ny * nx for _, _, ny, nx in levels)
    pos = np.empty((total, 2), np.float32)
    sizes = np.empty(total, np.float32)
    start = 0
    for _, size_hw, ny, nx in levels:
        stop = start + ny * nx
        pos[start:stop], sizes[start:stop] = _level_frames(shape, size_hw, ny, nx, patch, step)
        start = stop
    return pos, sizes

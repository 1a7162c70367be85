"""Product quantisation of Fisher Vectors (paper Sec. 4.1-4.3, 5.1): codes, sparsity bit, rows from codes.

Product quantiser (Sec. 4.1). An E-dim vector v is split into M = E / G sub-vectors of G consecutive
dimensions, v = [v_1, ..., v_M]; sub-quantiser q_m has its own codebook C_m of k = 2^(bG) centroids
(b = ``bits_per_dim`` bits per dimension on average, G = ``group``), and q(v) = [q_1(v_1), ..., q_M(v_M)]
with q_m(v_m) = argmin_{c in C_m} ||v_m - c||^2. The distortion is the MSE of the paper's eqs. 42-44,

    MSE(q) = E_v ||q(v) - v||^2 = sum_m E_v ||q_m(v_m) - v_m||^2                 (Sec. 4.1)

(``distortion`` reports its sample mean over the rows of X, per vector, summed over dimensions).
b may be fractional (b = 0.5, G = 16 -> 8 bits per group); bG must be an integer in 1..16. Storage is
E b bits per vector: b = 1, G = 8 -> one byte per 8 dimensions, x32 smaller than float32.

Training: each sub-quantiser is a k-means (Lloyd) on the G-dim slices of at most ``train_sample``
training vectors (default min(N, 256 k): faiss's cap of 256 points per centroid), the same sampled
rows for every sub-quantiser; k-means++ seeding (D^2 sampling, one draw per centroid), then at most
``n_iter`` Lloyd iterations (default 25, faiss's), stopping early once at most ``tol`` (default 1 %) of the
training points changed centroid in an iteration and no centroid was re-seeded. A
centroid left empty by an iteration is re-seeded on the training point farthest from its centroid
(each point used once per iteration); if every point is exactly represented it keeps its previous
position, so no centroid is ever NaN. Nearest centroids are found by the direct form sum_d (x_d - c_d)^2
in float32 (no ||x||^2 - 2 x.c + ||c||^2 expansion, so no cancellation), ties to the lower index;
centroid means are accumulated in float64. All random draws come from ``seed`` in a fixed order, so
the codebooks do not depend on ``n_jobs``.

Layout (``layout`` = ``FisherEncoder.block_layout()``, or ``blocks`` = segment sizes): groups never
straddle two blocks (or pyramid regions), so G must divide every block's size, else a ValueError naming
``group``. A layout block of D values per Gaussian (the FV's mean and sigma gradients, VLAD) is cut in
order; when G divides D (the paper's D = 64, G = 8) every group lies inside one Gaussian's D values,
otherwise (D = 66 with the two appended coordinates of ``gmm.position_scale``) a group may cross from one
Gaussian to the next. A block of one value per Gaussian (the K weight gradients, soft-BoV) is cut across
Gaussians.

Codes: ``encode`` -> (N, code_size) uint8, code_size = ceil(M bG / 8). Row i is a little-endian
bitstring: the code of group m occupies bits [m bG, (m + 1) bG), least significant bit first (as
faiss's PQEncoderGeneric). For bG = 8 this is one byte per group, for bG = 16 two bytes per group,
little-endian; other widths are bit-packed and the padding bits of the last byte are zero (checked).

Sparsity bit (Sec. 4.2): one bit per Gaussian and pyramid region ("unit", id = region K + k): 0 when
the groups lying inside the Gaussian's values (mean and sigma gradients of that region) are exactly
zero -- no descriptor had a posterior above the threshold -- and then none of those groups' codes is
stored. Groups outside any unit (weight gradients, and groups across two Gaussians) are always stored.
``encode_sparse`` -> :class:`SparseCodes`, lossless on top of PQ: stored groups decode exactly as
``decode(encode(X))``, unstored ones to exact zeros. :func:`sparsity_storage` gives bytes per image with
and without it.

Re-normalisation (Sec. 5.1): PQ does not preserve norms; ``decode(codes, renormalise=True)`` rescales
each part of each decoded vector to unit L2 norm: parts = the pyramid regions of ``layout`` (each
region's FV was L2-normalised, Sec. 2.3), or ``parts`` (sizes, e.g. SIFT | LCS of an early-fused FV),
or the whole vector. A part that decodes to zero stays zero.

Asymmetric distances (Sec. 5.1, query uncompressed, database compressed): ``distance_tables(Q)``
T[q, m, j] = ||Q_q,m - c_mj||^2 and ``inner_product_tables(Q)`` T[q, m, j] = Q_q,m . c_mj, so that
||q - q(x)||^2 = sum_m T[m, code_m(x)] and q . q(x) = sum_m T[m, code_m(x)] (``asymmetric_scores``).

Learning on codes (Sec. 4.3): :class:`PQRows` is a row provider (``rows.RowProvider``: ``len``, ``dim``,
``rows(indices)``) that keeps only codes in memory and decodes the requested rows into a reused
buffer, so ``OneVsRestSGD.fit`` / ``decision_function`` run on compressed FVs.

Constants: at most 16 bits per code; 256 training points per centroid; 25 Lloyd iterations; row
blocks of <= 32 MB of float32 for encoding / distortion; training chunks of <= 32 MB of sub-vectors.
Models are saved as ``.npz`` (kind ``"product_quantizer"``: arrays ``codebooks`` (M, k, G) float32,
``group_unit`` (M,), ``part_bounds``) + JSON metadata; ``fingerprint_`` (a hash of the codebooks and
the layout) travels with saved codes and sparse codes, so codes made by another quantiser are refused.
"""
from __future__ import annotations

import hashlib
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from numba import njit

from .estimator import ArrayOutput, Estimator
from .progress import CancelLike, ProgressCallback, check_cancel, report
from .serialization import atomic_save_npz, load_npz
from .validation import as_numeric_matrix, check_positive_int, feature_count_error, rng_from_seed

__all__ = ["ProductQuantizer", "SparseCodes", "PQRows", "StorageReport", "sparsity_storage",
           "MAX_BITS", "MAX_POINTS_PER_CENTROID"]

KIND = "product_quantizer"
CODES_KIND = "pq_codes"
#: bits of one sub-quantiser code (bG) at most: 2^16 centroids per group
MAX_BITS = 16
#: training vectors per centroid at most (faiss's ``max_points_per_centroid``)
MAX_POINTS_PER_CENTROID = 256
#: Lloyd iterations at most (faiss's ``niter``)
N_ITER = 25
#: Lloyd stops once at most this share of the training points changed centroid in an iteration. Measured
#: on Caltech-101 FVs (K = 256, 256 groups): 7.2 instead of 16.5 iterations, held-out MSE +0.13 %.
TOL = 0.01
_BLOCK_BYTES = 32 << 20


# --------------------------------------------------------------------------------------------------
# numba kernels (no array views inside hot loops: each view costs a reference-count update; the small
# helpers are inlined into the kernels: as calls they halved the decoding speed)
# --------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _put_code(buf, base, m, nbits, value):
    """OR ``value`` into bits [m nbits, (m + 1) nbits) of the little-endian bitstring at buf[base:]."""
    if nbits == 8:
        buf[base + m] = value
        return
    if nbits == 16:
        buf[base + 2 * m] = value & 255
        buf[base + 2 * m + 1] = value >> 8
        return
    off = m * nbits
    b = base + (off >> 3)
    w = np.int64(value) << (off & 7)
    buf[b] |= w & 255
    if (off & 7) + nbits > 8:
        buf[b + 1] |= (w >> 8) & 255
        if (off & 7) + nbits > 16:
            buf[b + 2] |= (w >> 16) & 255


@njit(cache=True, nogil=True, inline="always")
def _get_code(buf, base, m, nbits):
    """The code in bits [m nbits, (m + 1) nbits) of the little-endian bitstring at buf[base:]."""
    if nbits == 8:
        return np.int64(buf[base + m])
    if nbits == 16:
        return np.int64(buf[base + 2 * m]) | (np.int64(buf[base + 2 * m + 1]) << 8)
    off = m * nbits
    b = base + (off >> 3)
    s = off & 7
    w = np.int64(buf[b])
    if s + nbits > 8:
        w |= np.int64(buf[b + 1]) << 8
        if s + nbits > 16:
            w |= np.int64(buf[b + 2]) << 16
    return (w >> s) & ((np.int64(1) << nbits) - 1)


@njit(cache=True, nogil=True, inline="always")
def _nearest(X, i, off, CT, m, acc, bits):
    """(index, squared distance) of the centroid of CT[m] (G, k) nearest to X[i, off:off + G].

    acc (k,) float32 scratch, bits = acc.view(int32). Distances sum_d (c_d - x_d)^2 in float32, for
    G = 8 as ((t0^2 + t1^2) + (t2^2 + t3^2)) + ((t4^2 + t5^2) + (t6^2 + t7^2)), else in order d = 0..G-1.
    The argmin runs on the IEEE bit patterns: for finite or +inf values >= 0 they order like the
    values, and integer min reductions vectorise (float ones do not without fastmath); ties go to
    the lower index.
    """
    G = CT.shape[1]
    K = CT.shape[2]
    if G == 8:
        x0 = X[i, off]
        x1 = X[i, off + 1]
        x2 = X[i, off + 2]
        x3 = X[i, off + 3]
        x4 = X[i, off + 4]
        x5 = X[i, off + 5]
        x6 = X[i, off + 6]
        x7 = X[i, off + 7]
        for j in range(K):
            t0 = CT[m, 0, j] - x0
            t1 = CT[m, 1, j] - x1
            t2 = CT[m, 2, j] - x2
            t3 = CT[m, 3, j] - x3
            t4 = CT[m, 4, j] - x4
            t5 = CT[m, 5, j] - x5
            t6 = CT[m, 6, j] - x6
            t7 = CT[m, 7, j] - x7
            acc[j] = ((t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)) + ((t4 * t4 + t5 * t5) + (t6 * t6 + t7 * t7))
    else:
        for j in range(K):
            acc[j] = 0.0
        for d in range(G):
            xd = X[i, off + d]
            for j in range(K):
                t = CT[m, d, j] - xd
                acc[j] += t * t
    low = bits[0]
    for j in range(1, K):
        v = bits[j]
        low = v if v < low else low
    bj = np.int32(K)
    for j in range(K):
        c = np.int32(j) if bits[j] == low else np.int32(K)
        bj = c if c < bj else bj
    return np.int64(bj), acc[bj]


@njit(cache=True, nogil=True)
def _kmeans_pp(xt, u, ct, d2, tmp):
    """k-means++ seeding of ct (1, G, k) on the points xt (G, n), one D^2 draw per centroid from u (k,)."""
    G, n = xt.shape
    K = ct.shape[2]
    first = min(int(u[0] * n), n - 1)
    for d in range(G):
        ct[0, d, 0] = xt[d, first]
    for i in range(n):
        d2[i] = 0.0
    for d in range(G):
        c = ct[0, d, 0]
        for i in range(n):
            t = xt[d, i] - c
            d2[i] += t * t
    tot = 0.0  # sum of d2, kept up to date as d2 shrinks (one serial pass instead of one per centroid)
    for i in range(n):
        tot += d2[i]
    for k in range(1, K):
        pick = min(int(u[k] * n), n - 1)
        if tot <= 0.0:  # every point is a centroid already: d2 stays 0
            for d in range(G):
                ct[0, d, k] = xt[d, pick]
            continue
        r = u[k] * tot
        c = 0.0
        pick = n - 1
        for i in range(n):
            c += d2[i]
            if c > r:
                pick = i
                break
        for d in range(G):
            ct[0, d, k] = xt[d, pick]
        for i in range(n):
            tmp[i] = 0.0
        for d in range(G):
            c32 = ct[0, d, k]
            for i in range(n):
                t = xt[d, i] - c32
                tmp[i] += t * t
        for i in range(n):
            if tmp[i] < d2[i]:
                tot -= d2[i] - tmp[i]
                d2[i] = tmp[i]
        if tot < 0.0:
            tot = 0.0


@njit(cache=True, nogil=True)
def _train_chunk(Xc, G, K, n_iter, max_changed, uniforms, codebooks, info):
    """Train the W / G sub-quantisers of the column chunk Xc (n, W): k-means++ then Lloyd, stopping after
    n_iter iterations or when at most ``max_changed`` points changed centroid.

    codebooks (S, K, G) float32 out; info (S, 3) float64 out: Lloyd iterations run, centroids
    re-seeded, mean squared distance of the training points at the last assignment.
    """
    n, W = Xc.shape
    S = W // G
    xs = np.empty((n, G), np.float32)
    xt = np.empty((G, n), np.float32)
    ct = np.empty((1, G, K), np.float32)
    acc = np.empty(K, np.float32)
    bits = acc.view(np.int32)
    labels = np.empty(n, np.int64)
    d2 = np.empty(n, np.float32)
    tmp = np.empty(n, np.float32)
    used = np.empty(n, np.bool_)
    sums = np.empty((K, G), np.float64)
    counts = np.empty(K, np.int64)
    for s in range(S):
        for i in range(n):
            for d in range(G):
                v = Xc[i, s * G + d]
                xs[i, d] = v
                xt[d, i] = v
        _kmeans_pp(xt, uniforms[s], ct, d2, tmp)
        for i in range(n):
            labels[i] = -1
        iters = 0
        reseeded = 0
        mse = 0.0
        for it in range(n_iter):
            changed = 0
            mse = 0.0
            for i in range(n):
                j, dist = _nearest(xs, i, 0, ct, 0, acc, bits)
                if j != labels[i]:
                    changed += 1
                    labels[i] = j
                d2[i] = dist
                mse += dist
            mse /= n
            if changed == 0:
                break
            stop = changed <= max_changed
            iters += 1
            for j in range(K):
                counts[j] = 0
                for d in range(G):
                    sums[j, d] = 0.0
            for i in range(n):
                j = labels[i]
                counts[j] += 1
                for d in range(G):
                    sums[j, d] += xs[i, d]
            for j in range(K):
                if counts[j] > 0:
                    for d in range(G):
                        ct[0, d, j] = np.float32(sums[j, d] / counts[j])
            for i in range(n):
                used[i] = False
            before = reseeded
            for j in range(K):
                if counts[j] > 0:
                    continue
                far = -1
                best = np.float32(0.0)
                for i in range(n):
                    if not used[i] and d2[i] > best:
                        best = d2[i]
                        far = i
                if far < 0:  # every point is exactly represented: keep the centroid where it is
                    continue
                used[far] = True
                for d in range(G):
                    ct[0, d, j] = xs[far, d]
                reseeded += 1
            if stop and reseeded == before:  # nearly converged and no centroid moved onto a point
                break
        for j in range(K):
            for d in range(G):
                codebooks[s, j, d] = ct[0, d, j]
        info[s, 0] = iters
        info[s, 1] = reseeded
        info[s, 2] = mse


@njit(cache=True, nogil=True)
def _encode_block(X, CT, nbits, codes):
    """codes[i] <- packed nearest-centroid indices of X[i] (codes (n, code_size) zeroed by the caller).

    X (n, E) float32, CT (M, G, k) transposed codebooks. Group-major over a row block so that one
    codebook stays in L1 while the block's rows are encoded.
    """
    n = X.shape[0]
    M, G, K = CT.shape
    size = codes.shape[1]
    flat = codes.reshape(-1)
    acc = np.empty(K, np.float32)
    bits = acc.view(np.int32)
    for m in range(M):
        for i in range(n):
            j, _ = _nearest(X, i, m * G, CT, m, acc, bits)
            _put_code(flat, i * size, m, nbits, j)


@njit(cache=True, nogil=True)
def _renormalise_rows(out, part_bounds):
    """Rescale each part [part_bounds[p], part_bounds[p + 1]) of each row of ``out`` to unit L2 norm."""
    for i in range(out.shape[0]):
        for p in range(part_bounds.shape[0] - 1):
            a, b = part_bounds[p], part_bounds[p + 1]
            s = 0.0
            for d in range(a, b):
                s += np.float64(out[i, d]) * out[i, d]
            if s > 0.0:
                inv = np.float32(1.0 / math.sqrt(s))
                for d in range(a, b):
                    out[i, d] *= inv


@njit(cache=True, nogil=True)
def _decode_block(codes, rows, codebooks, nbits, renorm, part_bounds, out):
    """out[i] <- decoded codes[rows[i]] (optionally each part rescaled to unit L2 norm)."""
    n = rows.shape[0]
    M, K, G = codebooks.shape
    size = codes.shape[1]
    flat = codes.reshape(-1)
    for m in range(M):
        base = m * G
        for i in range(n):
            c = _get_code(flat, rows[i] * size, m, nbits)
            for g in range(G):
                out[i, base + g] = codebooks[m, c, g]
    if renorm:
        _renormalise_rows(out, part_bounds)


@njit(cache=True, nogil=True)
def _unit_mask(X, G, group_unit, n_units, out):
    """out[i, u] <- True if some dimension of unit u of X[i] is non-zero."""
    n = X.shape[0]
    M = group_unit.shape[0]
    for i in range(n):
        for u in range(n_units):
            out[i, u] = False
        for m in range(M):
            u = group_unit[m]
            if u < 0 or out[i, u]:
                continue
            for d in range(m * G, (m + 1) * G):
                if X[i, d] != 0.0:
                    out[i, u] = True
                    break


@njit(cache=True, nogil=True)
def _stored_groups(mask, group_unit, out):
    """out[i] <- number of groups stored for row i (groups outside units, and those of set units)."""
    n = mask.shape[0]
    for i in range(n):
        c = 0
        for m in range(group_unit.shape[0]):
            u = group_unit[m]
            if u < 0 or (mask[i, u >> 3] >> (u & 7)) & 1:
                c += 1
        out[i] = c


@njit(cache=True, nogil=True)
def _pack_sparse(codes, mask, group_unit, nbits, offsets, data):
    """data[offsets[i]:offsets[i+1]] <- codes of row i's stored groups, packed in group order."""
    n, size = codes.shape
    M = group_unit.shape[0]
    flat = codes.reshape(-1)
    for i in range(n):
        p = 0
        for m in range(M):
            u = group_unit[m]
            if u < 0 or (mask[i, u >> 3] >> (u & 7)) & 1:
                _put_code(data, offsets[i], p, nbits, _get_code(flat, i * size, m, nbits))
                p += 1


@njit(cache=True, nogil=True)
def _decode_sparse_block(data, offsets, mask, rows, group_unit, codebooks, nbits, renorm, part_bounds, out):
    """out[i] <- decoded sparse row rows[i]: stored groups from their codes, the others exact zeros."""
    n = rows.shape[0]
    M, K, G = codebooks.shape
    pos = np.zeros(n, np.int64)
    for m in range(M):
        base = m * G
        u = group_unit[m]
        for i in range(n):
            r = rows[i]
            if u < 0 or (mask[r, u >> 3] >> (u & 7)) & 1:
                c = _get_code(data, offsets[r], pos[i], nbits)
                pos[i] += 1
                for g in range(G):
                    out[i, base + g] = codebooks[m, c, g]
            else:
                for g in range(G):
                    out[i, base + g] = 0.0
    if renorm:
        _renormalise_rows(out, part_bounds)


@njit(cache=True, nogil=True)
def _tables(Q, CT, l2, out):
    """out[q, m, j] <- ||Q[q, mG:(m+1)G] - c_mj||^2 (l2) or Q[q, mG:(m+1)G] . c_mj."""
    nq = Q.shape[0]
    M, G, K = CT.shape
    for q in range(nq):
        for m in range(M):
            for j in range(K):
                out[q, m, j] = 0.0
            for d in range(G):
                xd = Q[q, m * G + d]
                if l2:
                    for j in range(K):
                        v = CT[m, d, j] - xd
                        out[q, m, j] += v * v
                else:
                    for j in range(K):
                        out[q, m, j] += CT[m, d, j] * xd


@njit(cache=True, nogil=True)
def _adc_scan(tt, codes, nbits, group_part, out):
    """out[q, i, p] <- sum over the groups m of part p of tt[m, code_m(codes[i]), q], in order m = 0..M-1.

    tt (M, k, nq) are the tables transposed, so that a look-up reads the nq queries' values as one
    contiguous run; database rows go in blocks of 256, group-major inside a block, so one group's table
    (k nq floats) stays in cache while the block's codes are scanned (row-major, every row would stream
    through all M tables); the block's codes are unpacked group-major first (rows of packed codes are
    code_size bytes apart, often a multiple of 4 KB: read down a column they thrash the cache).
    """
    M, K, nq = tt.shape
    n, size = codes.shape
    P = out.shape[2]
    flat = codes.reshape(-1)
    B = 256
    acc = np.empty((min(n, B), P, nq), np.float32)
    cm = np.empty((M, min(n, B)), np.int64)  # the block's codes, group-major
    for i0 in range(0, n, B):
        i1 = min(n, i0 + B)
        for i in range(i0, i1):
            for m in range(M):
                cm[m, i - i0] = _get_code(flat, i * size, m, nbits)
            for p in range(P):
                for q in range(nq):
                    acc[i - i0, p, q] = 0.0
        for m in range(M):
            p = group_part[m]
            for i in range(i1 - i0):
                c = cm[m, i]
                for q in range(nq):
                    acc[i, p, q] += tt[m, c, q]
        for i in range(i0, i1):
            for p in range(P):
                for q in range(nq):
                    out[q, i, p] = acc[i - i0, p, q]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def _check_bits(bits_per_dim, group) -> int:
    if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 1:
        raise ValueError(f"group must be an integer >= 1 (dimensions per sub-vector), got {group!r}")
    if isinstance(bits_per_dim, bool) or not isinstance(bits_per_dim, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(bits_per_dim)) or bits_per_dim <= 0:
        raise ValueError(f"bits_per_dim must be a number > 0, got {bits_per_dim!r}")
    prod = float(bits_per_dim) * int(group)
    nbits = int(round(prod))
    if abs(prod - nbits) > 1e-9 or not 1 <= nbits <= MAX_BITS:
        raise ValueError(f"bits_per_dim * group must be an integer in 1..{MAX_BITS} (bits of one sub-quantiser "
                         f"code), got bits_per_dim={bits_per_dim!r} * group={group!r} = {prod:g}")
    return nbits


def _rows_block(n_cols: int) -> int:
    return max(1, _BLOCK_BYTES // max(1, 4 * n_cols))


def _float_block(X, s, e, name, n_features):
    block = np.ascontiguousarray(X[s:e], dtype=np.float32)
    if block.ndim != 2 or block.shape[1] != n_features:
        raise feature_count_error(name, block.shape[-1] if block.ndim else 0, n_features, "ProductQuantizer")
    if not np.isfinite(block).all():
        bad = int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0]) + s
        raise ValueError(f"{name} contains NaN or infinite values (first in row {bad}); clean or drop those "
                         "rows first")
    return block


def _check_matrix(X, name: str):
    """A real numeric 2-D array, not copied (a memmap stays a view): see ``validation.as_numeric_matrix``."""
    return as_numeric_matrix(X, name)


@dataclass(frozen=True)
class SparseCodes:
    """PQ codes with the per-Gaussian sparsity bit (Sec. 4.2), one variable-length record per image.

    ``mask`` (N, ceil(U / 8)) uint8: bit u of row i (LSB first) is 1 when unit u (region r, Gaussian k:
    u = r K + k) is stored. ``data[offsets[i]:offsets[i + 1]]`` holds row i's stored groups' codes as one
    little-endian bitstring (group order). ``fingerprint`` names the quantiser that made them.
    """

    mask: np.ndarray
    data: np.ndarray
    offsets: np.ndarray
    n_units: int
    fingerprint: str

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def nbytes_per_image(self) -> np.ndarray:
        """(N,) bytes of each image's record: mask bytes + stored code bytes."""
        return self.mask.shape[1] + np.diff(self.offsets)

    def unit_mask(self) -> np.ndarray:
        """(N, U) bool: which (region, Gaussian) blocks are stored."""
        return np.unpackbits(self.mask, axis=1, count=self.n_units, bitorder="little").astype(bool)


@dataclass(frozen=True)
class StorageReport:
    """Bytes per image of a set of vectors: float32, PQ codes, PQ codes + sparsity bit (Sec. 4.2)."""

    n_images: int
    dim: int
    float32_bytes: int
    pq_bytes: int
    sparse_bytes_mean: float
    sparse_bytes_max: int
    zero_dim_fraction: float  # share of exactly-zero dimensions
    zero_unit_fraction: float  # share of (region, Gaussian) blocks that are exactly zero

    @property
    def sparse_gain(self) -> float:
        return self.pq_bytes / self.sparse_bytes_mean if self.sparse_bytes_mean else float("inf")


# --------------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------------
class ProductQuantizer(ArrayOutput, Estimator):
    """Product quantiser of E-dim vectors (see the module docstring for the maths and layouts).

    ``bits_per_dim`` b and ``group`` G give M = E / G sub-quantisers of 2^(bG) centroids each.
    ``layout`` (a ``FisherEncoder.block_layout()``) or ``blocks`` (segment sizes summing to E) keep
    groups inside blocks and define the sparsity units and re-normalisation parts; ``parts`` (sizes)
    overrides the parts. ``n_iter`` Lloyd iterations at most, stopping once at most a share ``tol`` of
    the training points changed centroid; ``train_sample`` training vectors at most
    (None: 256 per centroid), ``seed`` fixes every random draw, ``n_jobs`` threads (results do not
    depend on it). As a scikit-learn transformer, ``transform`` = :meth:`encode` (uint8 codes) and
    ``inverse_transform`` = :meth:`decode`.
    """

    _estimator_kind = "transformer"

    def __init__(self, bits_per_dim: float = 1.0, group: int = 8, *, layout=None, blocks=None, parts=None,
                 n_iter: int = N_ITER, tol: float = TOL, train_sample: Optional[int] = None, seed=0,
                 n_jobs: int = 1):
        self.bits_per_dim = bits_per_dim
        self.group = group
        self.layout = layout
        self.blocks = blocks
        self.parts = parts
        self.n_iter = n_iter
        self.tol = tol
        self.train_sample = train_sample
        self.seed = seed
        self.n_jobs = n_jobs

    # -- parameters --------------------------------------------------------------------------------
    def _json_params(self) -> dict:
        """The parameters as JSON for :meth:`save` (layout blocks as dicts)."""
        params = super()._json_params()
        params["layout"] = None if self.layout is None else [
            {"name": b.name, "region": int(b.region), "offset": int(b.offset),
             "n_components": int(b.n_components), "per_component": int(b.per_component)} for b in self.layout]
        return params

    def _adjust_tags(self, tags) -> None:
        tags.transformer_tags.preserves_dtype = []  # codes are uint8 whatever the input dtype

    def _check_params(self) -> int:
        nbits = _check_bits(self.bits_per_dim, self.group)
        check_positive_int(self.n_iter, "n_iter")
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not 0.0 <= self.tol < 1.0:
            raise ValueError(f"tol must be a number in [0, 1) (share of training points changing centroid), "
                             f"got {self.tol!r}")
        check_positive_int(self.n_jobs, "n_jobs")
        if self.train_sample is not None:
            check_positive_int(self.train_sample, "train_sample")
        if self.layout is not None and self.blocks is not None:
            raise ValueError("give layout or blocks, not both")
        return nbits

    @property
    def n_bits(self) -> int:
        """Bits of one sub-quantiser code, bG."""
        return _check_bits(self.bits_per_dim, self.group)

    @property
    def ksub(self) -> int:
        """Centroids per sub-quantiser, 2^(bG)."""
        return 1 << self.n_bits

    def _structure(self, E: int) -> Tuple[np.ndarray, int, np.ndarray]:
        """(group_unit (M,), n_units, part_bounds (P + 1,)) for E-dim vectors, checking the layout."""
        G = int(self.group)
        if E % G:
            raise ValueError(f"group={G} must divide the vector dimension E={E} (X has {E} features)")
        M = E // G
        unit = np.full(M, -1, dtype=np.int64)
        n_units = 0
        bounds = [0, E]
        if self.layout is not None:
            layout = list(self.layout)
            off = 0
            per_gaussian = [b.per_component > 1 or G == 1 for b in layout]
            K = max([b.n_components for b, pg in zip(layout, per_gaussian) if pg] or [0])
            regions = {}
            for b, pg in zip(layout, per_gaussian):
                if b.offset != off:
                    raise ValueError(f"layout blocks must tile the vector in order: block {b.name!r} of region "
                                     f"{b.region} starts at {b.offset}, expected {off}")
                if b.size % G:
                    raise ValueError(f"group={G} would straddle two blocks: block {b.name!r} of region {b.region} "
                                     f"has {b.size} dimensions ({b.n_components} x {b.per_component}), not a "
                                     f"multiple of {G}")
                if pg:
                    # the groups inside Gaussian k's D values form unit k; a group across two Gaussians
                    # (G not dividing D) belongs to no unit and is always stored
                    for k in range(b.n_components):
                        lo = b.offset + k * b.per_component
                        unit[-(-lo // G):(lo + b.per_component) // G] = b.region * K + k
                    n_units = max(n_units, (b.region + 1) * K)
                lo, hi = regions.get(b.region, (b.offset, b.stop))
                regions[b.region] = (min(lo, b.offset), max(hi, b.stop))
                off = b.stop
            if off != E:
                raise ValueError(f"layout covers {off} dimensions, X has {E}")
            bounds = sorted({v for lo_hi in regions.values() for v in lo_hi})
        elif self.blocks is not None:
            sizes = [int(v) for v in self.blocks]
            if sum(sizes) != E or any(v <= 0 for v in sizes):
                raise ValueError(f"blocks must be positive sizes summing to E={E}, got {sizes[:8]}"
                                 f"{'...' if len(sizes) > 8 else ''} (sum {sum(sizes)})")
            off = 0
            for u, v in enumerate(sizes):
                if v % G:
                    raise ValueError(f"group={G} would straddle two blocks: block {u} has {v} dimensions")
                unit[off // G:(off + v) // G] = u
                off += v
            n_units = len(sizes)
        if self.parts is not None:
            sizes = [int(v) for v in self.parts]
            if sum(sizes) != E or any(v <= 0 for v in sizes):
                raise ValueError(f"parts must be positive sizes summing to E={E}, got {sizes}")
            bounds = [0] + list(np.cumsum(sizes))
        return unit, n_units, np.asarray(bounds, dtype=np.int64)

    # -- training ----------------------------------------------------------------------------------
    def fit(self, X, y=None, *, progress: Optional[ProgressCallback] = None,
            cancel: CancelLike = None) -> "ProductQuantizer":
        """Learn the M codebooks from the rows of ``X`` (array or memmap, (N, E)); ``y`` is ignored.

        Progress: one update per chunk of sub-quantisers (value ``subquantizers`` = trained so far); cancel is checked
        between chunks.
        """
        nbits = self._check_params()
        X = _check_matrix(X, "X")
        N, E = X.shape
        if N < 1:
            raise ValueError("X has no rows")
        group_unit, n_units, bounds = self._structure(E)
        G, K = int(self.group), 1 << nbits
        M = E // G
        rng = rng_from_seed(self.seed)
        cap = MAX_POINTS_PER_CENTROID * K if self.train_sample is None else int(self.train_sample)
        n = min(N, cap)
        sample = np.sort(rng.choice(N, n, replace=False)) if n < N else np.arange(N)
        # fixed chunks of sub-quantisers (independent of n_jobs), each <= 32 MB of training slices
        per_chunk = max(1, min(M, _BLOCK_BYTES // max(1, 4 * n * G)))
        starts = list(range(0, M, per_chunk))
        uniforms = [rng.random((min(per_chunk, M - s), K)) for s in starts]
        codebooks = np.empty((M, K, G), dtype=np.float32)
        info = np.empty((M, 3), dtype=np.float64)
        contiguous = n == N and isinstance(X, np.ndarray) and X.dtype == np.float32

        def job(c):
            s = starts[c]
            e = min(M, s + per_chunk)
            if contiguous:
                Xc = np.ascontiguousarray(X[:, s * G:e * G])
            else:
                Xc = np.ascontiguousarray(X[sample, s * G:e * G], dtype=np.float32)
            if not np.isfinite(Xc).all():
                bad = int(sample[np.flatnonzero(~np.isfinite(Xc).all(axis=1))[0]])
                raise ValueError(f"X contains NaN or infinite values (first in row {bad}); clean or drop those "
                                 "rows first")
            _train_chunk(Xc, G, K, int(self.n_iter), int(self.tol * n), uniforms[c], codebooks[s:e], info[s:e])
            return e - s

        done = 0
        n_threads = min(int(self.n_jobs), len(starts))
        if n_threads <= 1:
            for c in range(len(starts)):
                check_cancel(cancel, "PQ training")
                done += job(c)
                report(progress, done, M, f"sub-quantiser {done}/{M}", subquantizers=done)
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                for c0 in range(0, len(starts), n_threads):
                    check_cancel(cancel, "PQ training")
                    for f in [pool.submit(job, c) for c in range(c0, min(len(starts), c0 + n_threads))]:
                        done += f.result()
                    report(progress, done, M, f"sub-quantiser {done}/{M}", subquantizers=done)
        self._set_state(codebooks, group_unit, n_units, bounds, E)
        self.n_train_ = int(n)
        self.n_iter_ = info[:, 0].astype(np.int64)
        self.n_reseeded_ = int(info[:, 1].sum())
        self.train_distortion_ = float(info[:, 2].sum())
        return self

    def _set_state(self, codebooks, group_unit, n_units, bounds, E):
        self.codebooks_ = np.ascontiguousarray(codebooks, dtype=np.float32)
        self.codebooks_t_ = np.ascontiguousarray(self.codebooks_.transpose(0, 2, 1))
        self.group_unit_ = np.ascontiguousarray(group_unit, dtype=np.int64)
        self.n_units_ = int(n_units)
        self.part_bounds_ = np.ascontiguousarray(bounds, dtype=np.int64)
        self.n_features_in_ = int(E)
        self.n_subquantizers_ = int(self.codebooks_.shape[0])
        self.code_size_ = (self.n_subquantizers_ * self.n_bits + 7) // 8
        h = hashlib.sha1()
        h.update(np.asarray([self.n_bits, self.group, E, n_units], np.int64).tobytes())
        for a in (self.codebooks_, self.group_unit_, self.part_bounds_):
            h.update(a.tobytes())
        self.fingerprint_ = h.hexdigest()[:16]

    def _is_fitted(self) -> bool:
        return hasattr(self, "codebooks_")

    def _check_fitted(self):
        self._require_fitted()

    # -- scikit-learn transformer ------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """:meth:`encode`: (N, code_size_) uint8 codes."""
        return self._wrap_output(self.encode(X))

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    def _feature_names(self):
        return [f"code_byte{i}" for i in range(self.code_size_)]

    def inverse_transform(self, codes) -> np.ndarray:
        """:meth:`decode`: (N, E) float32 reconstructions."""
        return self.decode(codes)

    # -- codes -------------------------------------------------------------------------------------
    def encode(self, X) -> np.ndarray:
        """(N, code_size_) uint8 packed codes of the rows of ``X`` (array or memmap, (N, E))."""
        X, E, N = self._fitted_rows(X)
        codes = np.zeros((N, self.code_size_), dtype=np.uint8)
        step = _rows_block(E)

        def job(s):
            e = min(N, s + step)
            _encode_block(_float_block(X, s, e, "X", E), self.codebooks_t_, self.n_bits, codes[s:e])

        self._run_blocks(job, range(0, N, step))
        return codes

    def _run_blocks(self, job, starts):
        starts = list(starts)
        if int(self.n_jobs) <= 1 or len(starts) <= 1:
            for s in starts:
                job(s)
        else:
            with ThreadPoolExecutor(min(int(self.n_jobs), len(starts))) as pool:
                for f in [pool.submit(job, s) for s in starts]:
                    f.result()

    def check_codes(self, codes, name: str = "codes") -> np.ndarray:
        """``codes`` as a C-contiguous uint8 (N, code_size_) array, or a ValueError naming ``name``."""
        self._check_fitted()
        if isinstance(codes, SparseCodes):
            raise ValueError(f"{name} are sparse codes; use decode_sparse")
        arr = np.asarray(codes)
        if arr.dtype != np.uint8 or arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D uint8 array of packed codes, got dtype {arr.dtype} and "
                             f"shape {arr.shape}")
        if arr.shape[1] != self.code_size_:
            raise ValueError(f"{name} have {arr.shape[1]} bytes per row, this quantiser makes {self.code_size_} "
                             f"(M={self.n_subquantizers_} x {self.n_bits} bits): codes from another quantiser?")
        pad = self.code_size_ * 8 - self.n_subquantizers_ * self.n_bits
        if pad and arr.shape[0] and (arr[:, -1] >> (8 - pad)).any():
            raise ValueError(f"{name} have non-zero padding bits in their last byte: codes from another "
                             "quantiser?")
        return np.ascontiguousarray(arr)

    def _decode_into(self, codes, rows, out, renormalise):
        if isinstance(codes, SparseCodes):
            _decode_sparse_block(codes.data, codes.offsets, codes.mask, rows, self.group_unit_, self.codebooks_,
                                 self.n_bits, bool(renormalise), self.part_bounds_, out)
        else:
            _decode_block(codes, rows, self.codebooks_, self.n_bits, bool(renormalise), self.part_bounds_, out)

    def decode(self, codes, renormalise: bool = False) -> np.ndarray:
        """(N, E) float32 reconstructions q(x) of packed ``codes`` (each part at unit norm if
        ``renormalise``, Sec. 5.1)."""
        codes = self.check_codes(codes)
        return self._decode_all(codes, renormalise)

    def _decode_all(self, codes, renormalise):
        N = len(codes)
        out = np.empty((N, self.n_features_in_), dtype=np.float32)
        step = _rows_block(self.n_features_in_)

        def job(s):
            e = min(N, s + step)
            self._decode_into(codes, np.arange(s, e, dtype=np.int64), out[s:e], renormalise)

        self._run_blocks(job, range(0, N, step))
        return out

    def encode_sparse(self, X) -> SparseCodes:
        """PQ codes + the per-Gaussian sparsity bit (Sec. 4.2) of the rows of ``X``."""
        return self.pack_sparse(*self.encode_masked(X))

    def pack_sparse(self, codes, mask) -> SparseCodes:
        """The compact records of :meth:`encode_sparse` from the (N, code_size_) codes of every group and the
        (N, ceil(U / 8)) unit masks of :meth:`encode_masked` (e.g. read back from a chunked store)."""
        codes = self.check_codes(codes)
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
        if mask.shape != (len(codes), (self.n_units_ + 7) // 8):
            raise ValueError(f"mask has shape {mask.shape}, expected ({len(codes)}, {(self.n_units_ + 7) // 8})")
        return self._pack(codes, mask)

    def encode_masked(self, X):
        """(codes of every group, packed unit masks) of the rows of ``X``: :meth:`encode_sparse` before the
        groups of unused units are dropped (fixed-size rows, for a chunked store)."""
        X, E, N = self._fitted_rows(X)
        U = self.n_units_
        mask = np.zeros((N, (U + 7) // 8), dtype=np.uint8)
        codes = np.zeros((N, self.code_size_), dtype=np.uint8)
        step = _rows_block(E)
        unit = np.empty((min(N, step), U), dtype=np.bool_)
        for s in range(0, N, step):
            e = min(N, s + step)
            block = _float_block(X, s, e, "X", E)
            _unit_mask(block, int(self.group), self.group_unit_, U, unit[:e - s])
            mask[s:e] = np.packbits(unit[:e - s], axis=1, bitorder="little")
            _encode_block(block, self.codebooks_t_, self.n_bits, codes[s:e])
        return codes, mask

    def _pack(self, codes, mask) -> SparseCodes:
        stored = np.empty(len(codes), dtype=np.int64)
        _stored_groups(mask, self.group_unit_, stored)
        offsets = np.zeros(len(codes) + 1, dtype=np.int64)
        np.cumsum((stored * self.n_bits + 7) // 8, out=offsets[1:])
        data = np.zeros(int(offsets[-1]), dtype=np.uint8)
        _pack_sparse(codes, mask, self.group_unit_, self.n_bits, offsets, data)
        return SparseCodes(mask, data, offsets, self.n_units_, self.fingerprint_)

    def check_sparse(self, sparse, name: str = "codes") -> SparseCodes:
        self._check_fitted()
        if not isinstance(sparse, SparseCodes):
            raise ValueError(f"{name} must be SparseCodes (from encode_sparse), got {type(sparse).__name__}")
        if sparse.fingerprint != self.fingerprint_ or sparse.n_units != self.n_units_:
            raise ValueError(f"{name} were made by another quantiser (fingerprint {sparse.fingerprint}, this one "
                             f"is {self.fingerprint_})")
        return sparse

    def decode_sparse(self, sparse: SparseCodes, renormalise: bool = False) -> np.ndarray:
        """(N, E) float32 reconstructions of :class:`SparseCodes` (unstored blocks are exact zeros)."""
        return self._decode_all(self.check_sparse(sparse), renormalise)

    # -- distortion --------------------------------------------------------------------------------
    def distortion(self, X, *, per_group: bool = False):
        """Sample MSE of eq. 42: mean over rows of ||q(x) - x||^2 (float64); with ``per_group``, the (M,)
        mean squared error of each group (summed over its G dimensions; they add up to the MSE)."""
        X, E, N = self._fitted_rows(X, allow_empty=False)
        tot = np.zeros(self.n_subquantizers_)
        step = _rows_block(E)
        for s in range(0, N, step):
            e = min(N, s + step)
            block = _float_block(X, s, e, "X", E)
            codes = np.zeros((e - s, self.code_size_), dtype=np.uint8)
            _encode_block(block, self.codebooks_t_, self.n_bits, codes)
            rec = np.empty_like(block)
            _decode_block(codes, np.arange(e - s, dtype=np.int64), self.codebooks_, self.n_bits, False,
                          self.part_bounds_, rec)
            diff = (rec - block).astype(np.float64).reshape(e - s, self.n_subquantizers_, -1)
            tot += np.einsum("nmg,nmg->m", diff, diff)
        tot /= N
        return tot if per_group else float(tot.sum())

    # -- asymmetric distances (Sec. 5.1) -----------------------------------------------------------
    def _fitted_rows(self, X, *, allow_empty: bool = True):
        """(X, E, N): ``X`` checked as (N, E) rows for this fitted quantiser (ValueErrors name ``X``)."""
        self._check_fitted()
        X = _check_matrix(X, "X")
        E, N = self.n_features_in_, X.shape[0]
        if X.shape[1] != E:
            raise feature_count_error("X", X.shape[1], E, "ProductQuantizer")
        if N < 1 and not allow_empty:
            raise ValueError("X has no rows")
        return X, E, N

    def _queries(self, Q, name="Q"):
        self._check_fitted()
        Q = _check_matrix(np.atleast_2d(Q) if np.ndim(Q) == 1 else Q, name)
        return _float_block(Q, 0, Q.shape[0], name, self.n_features_in_)

    def distance_tables(self, Q) -> np.ndarray:
        """(nq, M, k) float32 T[q, m, j] = ||Q_q,m - c_mj||^2 for uncompressed queries ``Q`` (nq, E)."""
        Q = self._queries(Q)
        out = np.empty((Q.shape[0], self.n_subquantizers_, self.ksub), dtype=np.float32)
        _tables(Q, self.codebooks_t_, True, out)
        return out

    def inner_product_tables(self, Q) -> np.ndarray:
        """(nq, M, k) float32 T[q, m, j] = Q_q,m . c_mj for uncompressed queries ``Q`` (nq, E)."""
        Q = self._queries(Q)
        out = np.empty((Q.shape[0], self.n_subquantizers_, self.ksub), dtype=np.float32)
        _tables(Q, self.codebooks_t_, False, out)
        return out

    def asymmetric_scores(self, tables, codes, group_part=None) -> np.ndarray:
        """(nq, N) sums over groups of ``tables`` (from distance_tables / inner_product_tables) at each
        code: ||q - q(x)||^2 or q . q(x). With ``group_part`` ((M,) part index of each group), (nq, N, P)
        per-part sums."""
        codes = self.check_codes(codes)
        tables = np.ascontiguousarray(tables, dtype=np.float32)
        if tables.ndim != 3 or tables.shape[1:] != (self.n_subquantizers_, self.ksub):
            raise ValueError(f"tables must have shape (nq, {self.n_subquantizers_}, {self.ksub}), got {tables.shape}")
        gp = np.zeros(self.n_subquantizers_, np.int64) if group_part is None else \
            np.ascontiguousarray(group_part, dtype=np.int64)
        P = int(gp.max()) + 1 if gp.size else 1
        out = np.empty((tables.shape[0], len(codes), P), dtype=np.float32)
        _adc_scan(np.ascontiguousarray(tables.transpose(1, 2, 0)), codes, self.n_bits, gp, out)
        return out[:, :, 0] if group_part is None else out

    def group_parts(self) -> np.ndarray:
        """(M,) index of the re-normalisation part each group belongs to."""
        self._check_fitted()
        starts = np.arange(self.n_subquantizers_) * int(self.group)
        return np.searchsorted(self.part_bounds_, starts, side="right") - 1

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path):
        self._check_fitted()
        meta = {"kind": KIND, "params": self._json_params(), "n_features": self.n_features_in_,
                "n_units": self.n_units_, "fingerprint": self.fingerprint_, "n_train": self.n_train_,
                "n_reseeded": self.n_reseeded_, "train_distortion": self.train_distortion_}
        return atomic_save_npz(path, {"codebooks": self.codebooks_, "group_unit": self.group_unit_,
                                      "part_bounds": self.part_bounds_, "n_iter": self.n_iter_}, meta)

    @classmethod
    def load(cls, path) -> "ProductQuantizer":
        from .fisher import Block

        arrays, meta = load_npz(path, kind=KIND)
        params = dict(meta["params"])
        if params.get("layout") is not None:
            params["layout"] = [Block(**b) for b in params["layout"]]
        pq = cls(**params)
        cb = arrays["codebooks"]
        if cb.ndim != 3 or cb.shape[1] != pq.ksub or cb.shape[2] != int(pq.group):
            raise ValueError(f"{path}: codebooks of shape {cb.shape} do not match b={pq.bits_per_dim}, "
                             f"G={pq.group}")
        pq._set_state(cb, arrays["group_unit"], int(meta["n_units"]), arrays["part_bounds"], int(meta["n_features"]))
        if pq.fingerprint_ != meta["fingerprint"]:
            raise ValueError(f"{path} is damaged: its codebooks do not match their fingerprint")
        pq.n_train_ = int(meta["n_train"])
        pq.n_iter_ = arrays["n_iter"].astype(np.int64)
        pq.n_reseeded_ = int(meta["n_reseeded"])
        pq.train_distortion_ = float(meta["train_distortion"])
        return pq

    def save_codes(self, path, codes):
        """Save dense or sparse codes with this quantiser's fingerprint (``load_codes`` checks it)."""
        if isinstance(codes, SparseCodes):
            self.check_sparse(codes)
            arrays = {"mask": codes.mask, "data": codes.data, "offsets": codes.offsets}
        else:
            arrays = {"codes": self.check_codes(codes)}
        return atomic_save_npz(path, arrays, {"kind": CODES_KIND, "fingerprint": self.fingerprint_,
                                              "n_units": self.n_units_, "sparse": isinstance(codes, SparseCodes)})

    def load_codes(self, path):
        """Codes saved by :meth:`save_codes` of this quantiser (ValueError if another one made them)."""
        self._check_fitted()
        arrays, meta = load_npz(path, kind=CODES_KIND)
        if meta.get("fingerprint") != self.fingerprint_:
            raise ValueError(f"codes in {path} were made by another quantiser (fingerprint "
                             f"{meta.get('fingerprint')}, this one is {self.fingerprint_})")
        if meta.get("sparse"):
            return SparseCodes(arrays["mask"], arrays["data"], arrays["offsets"], int(meta["n_units"]),
                               meta["fingerprint"])
        return self.check_codes(arrays["codes"], f"codes in {path}")


# --------------------------------------------------------------------------------------------------
# Sparsity storage (Sec. 4.2)
# --------------------------------------------------------------------------------------------------
def sparsity_storage(quantizer: ProductQuantizer, X) -> StorageReport:
    """Bytes per image of the rows of ``X`` as float32, as PQ codes, as PQ codes + sparsity bit."""
    X, E, N = quantizer._fitted_rows(X, allow_empty=False)
    U = quantizer.n_units_
    step = _rows_block(E)
    sizes = np.empty(N, dtype=np.int64)
    zeros = 0
    zero_units = 0
    unit = np.empty((min(N, step), U), dtype=np.bool_)
    for s in range(0, N, step):
        e = min(N, s + step)
        block = _float_block(X, s, e, "X", E)
        zeros += int(np.count_nonzero(block == 0))
        _unit_mask(block, int(quantizer.group), quantizer.group_unit_, U, unit[:e - s])
        zero_units += int((~unit[:e - s]).sum())
        mask = np.packbits(unit[:e - s], axis=1, bitorder="little")
        stored = np.empty(e - s, dtype=np.int64)
        _stored_groups(mask, quantizer.group_unit_, stored)
        sizes[s:e] = mask.shape[1] + (stored * quantizer.n_bits + 7) // 8
    return StorageReport(n_images=int(N), dim=int(E), float32_bytes=4 * E, pq_bytes=int(quantizer.code_size_),
                         sparse_bytes_mean=float(sizes.mean()), sparse_bytes_max=int(sizes.max()),
                         zero_dim_fraction=zeros / float(N * E),
                         zero_unit_fraction=zero_units / float(N * U) if U else 0.0)


# --------------------------------------------------------------------------------------------------
# Learning on codes (Sec. 4.3)
# --------------------------------------------------------------------------------------------------
class PQRows:
    """A row provider (``rows.RowProvider``) over PQ codes: only the codes stay in memory.

    ``rows(indices)`` decodes the requested rows (table look-ups, optionally re-normalised, Sec. 5.1)
    into a reused buffer: a buffer is written again only when nothing outside holds a view of it (a
    caller keeping the previous result gets a second buffer), so peak memory is the codes + two
    blocks of the largest request. ``codes`` are packed codes (N, code_size) or :class:`SparseCodes`.
    """

    _POOL = 2

    def __init__(self, quantizer: ProductQuantizer, codes, *, renormalise: bool = False):
        if isinstance(codes, SparseCodes):
            self.codes = quantizer.check_sparse(codes)
        else:
            self.codes = quantizer.check_codes(codes)
        self.quantizer = quantizer
        self.renormalise = bool(renormalise)
        self._pool: List[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def dim(self) -> int:
        return int(self.quantizer.n_features_in_)

    def _buffer(self, n: int) -> np.ndarray:
        for k in range(len(self._pool)):
            buf = self._pool[k]
            # references: the pool's list slot, ``buf`` and getrefcount's argument; any more = a live view
            if sys.getrefcount(buf) <= 3:
                if buf.shape[0] < n:
                    buf = self._pool[k] = np.empty((n, self.dim), dtype=np.float32)
                return buf[:n]
        buf = np.empty((n, self.dim), dtype=np.float32)
        if len(self._pool) < self._POOL:
            self._pool.append(buf)
        return buf[:n]

    def rows(self, indices) -> np.ndarray:
        """float32 C-contiguous (len(indices), dim) decoded rows, in that order (a view of a pooled
        buffer that is not written again while the view, or any view of it, is alive)."""
        idx = np.ascontiguousarray(np.asarray(indices, dtype=np.int64).ravel())
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise ValueError(f"indices must lie in [0, {n})")
        idx = np.where(idx < 0, idx + n, idx)
        out = self._buffer(idx.size)
        self.quantizer._decode_into(self.codes, idx, out, self.renormalise)
        return out

"""The E-step shared by the GMM (EM) and the encoders (FV, soft-BoV): posteriors and statistics.

For a diagonal GMM with weights w_k, means mu_k and variances s_k = sigma_k^2 (eq. 79, Appendix B):

    log(w_k u_k(x)) = c_k + sum_d [ x'_d mu'_kd / s_kd - x'_d^2 / (2 s_kd) ]
    c_k = log w_k - 1/2 sum_d [ log(2 pi) + log s_kd + mu'_kd^2 / s_kd ]

where x' = x - o and mu' = mu - o for a reference point o (the weighted mean of the means): shifting
both sides leaves the value unchanged but keeps float32 cancellation small. All K log-joints of a
block of descriptors are therefore ONE matrix product of the stacked parameters P^T = [mu'/s ; -1/(2s)]^T
(K, 2D) with Z^T = [x', x'^2]^T (2D, n), plus c. The product is taken in this transposed (K, n)
orientation so that every later pass runs along contiguous rows of n descriptors, where the per-descriptor
running maximum, sum and cut are element-wise vector operations rather than reductions. Per descriptor:

    m = max_k log(w_k u_k(x)),  e_k = exp(log(w_k u_k(x)) - m),  s = sum_k e_k
    log u(x) = m + log s                                     (log-domain, Appendix B)
    gamma(k) = e_k / s                                       (eq. 15)
    gamma(k) <- 0 if gamma(k) < theta, then renormalise       (posterior thresholding, Appendix B)

The largest posterior is always kept (the cut is capped at it), so every descriptor keeps a total
weight of exactly 1 even when theta > 1/K; with theta = 0, entries below exp(-40) of the largest are
dropped (they cannot change a float32 statistic). exp is a vectorised float32 polynomial (degree 6 on
[-ln2/2, ln2/2] after a power-of-two range reduction; relative error < 4e-7 on [-87, 0], arguments below
-87 give exp(-87) ~ 1.6e-38). The kernel then accumulates, for each region slot r the descriptor belongs
to, the *Gaussian-centred* statistics

    A[r, k]    = sum_t gamma_t(k)
    B[r, k, :] = sum_t gamma_t(k) (x_t - mu_k) / sigma_k
    C[r, k, :] = sum_t gamma_t(k) (x_t - mu_k)^2 / sigma_k^2

in float64 (per Gaussian and block of descriptors the sums run in float32, then are added into the
float64 totals). From these the FV is G_mu = B / sqrt(w) and G_sigma = (C - A) / sqrt(2w) (eqs. 17-18),
the soft-BoV is A (eq. 34), and the EM M-step is w = A/N, mu <- mu + sigma B/A,
sigma^2 <- sigma^2 (C/A - (B/A)^2): no raw second moments, hence no cancellation.
Only descriptors with a posterior above theta touch a Gaussian's statistics, which is where the
speed comes from (5-10 of K = 256 survive, Appendix B): survivors are gathered, Gaussian by Gaussian,
into index lists, and each Gaussian's list is summed with four descriptors per vectorised pass.

Encoders need no log u(x) (``log_likelihood=False``), and then only *candidates* are exponentiated:
since s >= 1 (the largest e is 1), gamma(k) <= e_k, so an entry with log(w_k u_k(x)) - m < log(theta')
with theta' = max(theta, exp(-40)) can never survive. Per block, candidates are found 64 descriptors at
a time (vector compares against m + log theta' into a 64-bit mask, then its set bits), and for them only

    e_k = exp(log(w_k u_k(x)) - m),   s' = sum_{candidates} e_k,   keep e_k >= theta s',   renormalise.

What is computed differs from the exact E-step above in one place only: the survival test uses s'
instead of s. The entries left out of s' are each < theta' (and s >= 1), so s' <= s <= s' + K theta';
an entry can change its fate only if theta s' <= e_k < theta s, i.e. when it sits within a relative
K theta of the cut (for theta = 0 nothing changes: dropped terms are below exp(-40)). Survivors are
renormalised to sum 1 as before, so s' enters gamma only through that test. Statistics.log_likelihood
is None on this path. If a block has more than 5 % of its n x K entries surviving (theta ~ 0 or flat
posteriors), later blocks switch back to the exact kernel (a full pass is then cheaper than lists).

When posteriors are flat (early EM iterations, unstructured data), the EM may ask for a dense
fallback (``allow_dense``): moments by a second GEMM instead of survivor lists.

Without log-likelihood, regions or a cancel token (the plain encoder call), the whole block loop is one
numba call (``_encoder_blocks``; its GEMM is numba's np.dot on scipy's BLAS): ~0.3 ms less Python
dispatch per 10k descriptors.

Constants: blocks of 512 descriptors (the (K, n) log-joint block and its index lists stay in L2),
exp floor -87, theta = 0 negligible cut exp(-40), dense fallback above 30 % survivors, candidate
scan (encoders) while survivors stay below 5 %. Buffers are kept per thread between calls.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
# numba's np.dot (in _encoder_blocks) calls scipy's BLAS: load it now, so that a later
# threadpoolctl.threadpool_limits (encode_batch, benchmarks) sees and limits it like numpy's
import scipy.linalg.cython_blas  # noqa: F401
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .defaults import POSTERIOR_THRESHOLD
from .jit import kernel
from .progress import CancelLike, check_cancel
from .validation import _check_posterior_threshold, as_float32_matrix, check_positive_int

#: with theta = 0, posteriors below exp(-40) ~ 4e-18 times the largest one are dropped.
_LOG_NEGLIGIBLE = -40.0
_NEGLIGIBLE = math.exp(_LOG_NEGLIGIBLE)
_LOG_2PI = math.log(2.0 * math.pi)
#: descriptors per GEMM + kernel pass
_BLOCK = 512
#: with ``allow_dense``, a block whose survivors exceed this fraction of n x K sums moments by GEMM
_DENSE_FRACTION = 0.3
#: without log-likelihoods, once a block's survivors exceed this fraction of n x K the remaining
#: blocks use the exact (all-entries) kernel: scanning for candidates only pays when they are rare
_CANDIDATE_FRACTION = 0.05


class _KernelTerms(NamedTuple):
    """The model as the E-step kernels read it (arrays of :class:`GaussianTerms`)."""

    PT: np.ndarray         # (K, 2D) float32, [mu'/s ; -1/(2s)]^T
    origin: np.ndarray     # (D,) float32, o
    c: np.ndarray          # (K,) float32
    means: np.ndarray      # (K, D) float32, mu
    inv_sigma: np.ndarray  # (K, D) float32, 1/sigma


class GaussianTerms:
    """The per-model quantities the E-step needs, computed once per (weights, means, variances)."""

    def __init__(self, weights, means, variances):
        w = np.asarray(weights, dtype=np.float64)
        mu = np.asarray(means, dtype=np.float64)
        var = np.asarray(variances, dtype=np.float64)
        if mu.ndim != 2:
            raise ValueError(f"GMM means must be a (K, D) array, got shape {mu.shape}")
        K, D = mu.shape
        if w.shape != (K,) or var.shape != (K, D):
            raise ValueError(f"GMM parameter shapes disagree: weights {w.shape}, means {mu.shape}, "
                             f"variances {var.shape}")
        if not np.isfinite(mu).all():
            raise ValueError("GMM means must be finite")
        if (var <= 0).any() or not np.isfinite(var).all():
            raise ValueError("GMM variances must be finite and > 0")
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError("GMM weights must be finite, >= 0 and not all 0")
        self.n_components, self.n_features = K, D
        self.origin = (w / w.sum()) @ mu
        mu_c = mu - self.origin
        inv = 1.0 / var
        with np.errstate(divide="ignore"):
            logw = np.log(w)
        self.P = np.ascontiguousarray(np.vstack([(mu_c * inv).T, (-0.5 * inv).T]), dtype=np.float32)
        self.PT = np.ascontiguousarray(self.P.T)
        # a zero weight gives c = -inf; keep it finite (a Gaussian that can never win) for the kernels
        c = logw - 0.5 * (D * _LOG_2PI + np.log(var).sum(1) + (mu_c * mu_c * inv).sum(1))
        self.c = np.maximum(c, -1e30).astype(np.float32)
        self.means = np.ascontiguousarray(mu, dtype=np.float32)
        self.inv_sigma = np.ascontiguousarray(1.0 / np.sqrt(var), dtype=np.float32)
        self.origin32 = self.origin.astype(np.float32)
        self.kernel = _KernelTerms(self.PT, self.origin32, self.c, self.means, self.inv_sigma)

    def log_joint(self, X: np.ndarray, out: Optional[np.ndarray] = None,
                  work: Optional[np.ndarray] = None) -> np.ndarray:
        """log(w_k u_k(x_t)) for every row of X (N, D) float32 -> (N, K) float32, by one GEMM."""
        N, D = X.shape
        if work is None or work.shape[0] < N:
            work = np.empty((N, 2 * D), dtype=np.float32)
        Z = work[:N]
        np.subtract(X, self.origin32, out=Z[:, :D])
        np.multiply(Z[:, :D], Z[:, :D], out=Z[:, D:])
        if out is None:
            out = np.empty((N, self.n_components), dtype=np.float32)
        np.matmul(Z, self.P, out=out[:N])
        out[:N] += self.c
        return out[:N]


@dataclass
class Statistics:
    """Accumulated statistics (see module docstring) and per-descriptor diagnostics."""

    A: np.ndarray          # (R, K) float64
    B: np.ndarray          # (R, K, D) float64
    C: np.ndarray          # (R, K, D) float64
    log_likelihood: Optional[np.ndarray]  # (N,) float64, log u(x_t); None if not asked for
    max_posterior: np.ndarray   # (N,) float32, max_k gamma_t(k) after thresholding (Fig. 2)
    n_active: np.ndarray        # (N,) int32, number of Gaussians with a non-zero posterior


# ----------------------------------------------------------------------------------------------
# kernels


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    """Reinterpret the bits of an int32 as a float32 (vectorisable, unlike a library call)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _ge_mask16(typingctx, a, i, b, shift):
    """Bit l (l < 16) set iff a[i + l] >= b[i + l] + shift (1-D contiguous float32 a, b): one vector
    compare and a mask move on AVX-512, a few on narrower CPUs (LLVM legalises the 16 lanes)."""
    sig = types.uint32(a, types.intp, b, types.float32)

    def codegen(context, builder, signature, args):
        aa, ii, bb, sh = args
        vt = ir.VectorType(ir.FloatType(), 16)
        pa = context.make_array(signature.args[0])(context, builder, aa).data
        pb = context.make_array(signature.args[2])(context, builder, bb).data
        va = builder.load(builder.bitcast(builder.gep(pa, [ii]), vt.as_pointer()), align=4)
        vb = builder.load(builder.bitcast(builder.gep(pb, [ii]), vt.as_pointer()), align=4)
        splat = ir.Constant(vt, ir.Undefined)
        for lane in range(16):
            splat = builder.insert_element(splat, sh, ir.Constant(ir.IntType(32), lane))
        bits = builder.bitcast(builder.fcmp_ordered(">=", va, builder.fadd(vb, splat)), ir.IntType(16))
        return builder.zext(bits, ir.IntType(32))

    return sig, codegen


@intrinsic
def _trailing_zeros(typingctx, bits):
    """Index of the lowest set bit of a non-zero uint64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


@kernel(inline="always")
def _exp_nonpositive(a):
    # exp(a) = 2^n exp(r), n = round(a / ln 2), |r| <= ln2 / 2 (Cody-Waite split of ln 2);
    # valid for a in [-87, 0], where 2^n is a normal float32 built from its exponent bits.
    n = np.floor(a * np.float32(1.4426950408889634) + np.float32(0.5))
    r = a - n * np.float32(0.693145751953125)
    r = r - n * np.float32(1.428606765330187e-06)
    p = np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _int32_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))


@kernel(inline="always")
def _column_max(lpT, c, m):
    """m[t] = max_k (lpT[k, t] + c[k]): the row maximum of the log-joints, row by row for vectorising."""
    K, n = lpT.shape
    r0 = lpT[0]
    c0 = c[0]
    for t in range(n):
        m[t] = r0[t] + c0
    for k in range(1, K):
        row = lpT[k]
        ck = c[k]
        for t in range(n):
            m[t] = max(m[t], row[t] + ck)


@kernel
def _posterior_lists(lpT, c, threshold, m, s, cut, inv_kept, counts, starts, members,
                     loglik, gmax, nact, offset):
    """lpT (K, n) log-joints minus c -> in place e = exp(log-joint - max); survivors as index lists.

    After the call, Gaussian k's surviving descriptors are members[starts[k]:starts[k] + counts[k]]
    (ascending), their posteriors are lpT[k, t] * inv_kept[t]. Returns the number of survivors.
    """
    K, n = lpT.shape
    _column_max(lpT, c, m)
    for t in range(n):
        s[t] = 0.0
    for k in range(K):
        row = lpT[k]
        ck = c[k]
        for t in range(n):
            e = _exp_nonpositive(max(row[t] + ck - m[t], np.float32(-87.0)))
            row[t] = e
            s[t] += e
    # gamma >= theta  <=>  e >= theta * s; capped at 1 = the largest e, which always survives
    th = np.float32(threshold)
    for t in range(n):
        cut[t] = min(max(th * s[t], np.float32(_NEGLIGIBLE)), np.float32(1.0))
        inv_kept[t] = 0.0
    for k in range(K):
        row = lpT[k]
        for t in range(n):
            v = row[t]
            inv_kept[t] += v if v >= cut[t] else np.float32(0.0)
    pos = 0
    for k in range(K):
        row = lpT[k]
        starts[k] = pos
        for t in range(n):
            members[pos] = t
            pos += 1 if row[t] >= cut[t] else 0
        counts[k] = pos - starts[k]
    for t in range(n):
        loglik[offset + t] = m[t] + math.log(s[t])
        gmax[offset + t] = 1.0 / inv_kept[t]
        inv_kept[t] = 1.0 / inv_kept[t]
        nact[offset + t] = 0
    for i in range(pos):
        nact[offset + members[i]] += 1
    return pos


@kernel
def _candidate_lists(lpT, c, threshold, m, s, cut, inv_kept, counts, starts, members, vals,
                     gmax, nact, offset):
    """Encoder E-step (no log-likelihood): like :func:`_posterior_lists`, but exp, the normaliser and
    the survival test only touch the candidates, entries with log-joint - max >= log(max(theta, exp(-40)))
    (a posterior e_k / s <= e_k below theta cannot survive); lists need K n + 3 slots. Survivors' e are
    written to lpT[k, t] (other entries of lpT are left as log-joints and never read). Returns the number
    of survivors."""
    K, n = lpT.shape
    _column_max(lpT, c, m)
    log_cut = np.float32(math.log(max(threshold, _NEGLIGIBLE)))
    for t in range(n):
        cut[t] = m[t] + log_cut
    n64 = n - n % 64
    top = np.uint64(1) << np.uint64(63)
    one = np.uint64(1)
    pos = 0
    for k in range(K):  # candidates of Gaussian k, ascending t, from a 64-bit mask of 4 vector compares
        row = lpT[k]
        ck = c[k]
        starts[k] = pos
        for t0 in range(0, n64, 64):
            bits = (np.uint64(_ge_mask16(row, t0, cut, -ck))
                    | (np.uint64(_ge_mask16(row, t0 + 16, cut, -ck)) << np.uint64(16))
                    | (np.uint64(_ge_mask16(row, t0 + 32, cut, -ck)) << np.uint64(32))
                    | (np.uint64(_ge_mask16(row, t0 + 48, cut, -ck)) << np.uint64(48)))
            # the first three set bits without a branch (set bits are rare and scattered: a loop over
            # them mispredicts); an empty slot writes t0 + 63 at pos without advancing pos
            for _ in range(3):
                t = t0 + np.intp(_trailing_zeros(bits | top))
                members[pos] = t
                vals[pos] = row[t] + ck - m[t]
                pos += 1 if bits != 0 else 0
                bits &= bits - one
            while bits != 0:
                t = t0 + np.intp(_trailing_zeros(bits))
                members[pos] = t
                vals[pos] = row[t] + ck - m[t]
                pos += 1
                bits &= bits - one
        for t in range(n64, n):
            v = row[t] + ck - m[t]
            members[pos] = t
            vals[pos] = v
            pos += 1 if v >= log_cut else 0
        counts[k] = pos - starts[k]
    for t in range(n):
        s[t] = 0.0
        inv_kept[t] = 0.0
    for i in range(pos):
        vals[i] = _exp_nonpositive(max(vals[i], np.float32(-87.0)))
    for i in range(pos):
        s[members[i]] += vals[i]
    th = np.float32(threshold)
    for t in range(n):
        cut[t] = min(max(th * s[t], np.float32(_NEGLIGIBLE)), np.float32(1.0))
        nact[offset + t] = 0
    q = 0
    i = 0
    for k in range(K):  # keep the survivors (in place: q <= i)
        row = lpT[k]
        stop = i + counts[k]
        starts[k] = q
        while i < stop:
            t = members[i]
            e = vals[i]
            members[q] = t
            row[t] = e
            keep = e >= cut[t]
            inv_kept[t] += e if keep else np.float32(0.0)
            nact[offset + t] += 1 if keep else 0
            q += 1 if keep else 0
            i += 1
        counts[k] = q - starts[k]
    for t in range(n):
        gmax[offset + t] = 1.0 / inv_kept[t]
        inv_kept[t] = 1.0 / inv_kept[t]
    return q


@kernel
def _fill_z(X, origin, Z):
    """Z = [x - o, (x - o)^2] row by row (the GEMM's left factor)."""
    n, D = X.shape
    for t in range(n):
        for d in range(D):
            Z[t, d] = X[t, d] - origin[d]
    for t in range(n):
        for d in range(D):
            Z[t, D + d] = Z[t, d] * Z[t, d]


@kernel
def _accumulate_one_region(X, means, inv_sigma, e, inv_kept, counts, starts, members, with_moments,
                           A, B, C, accB, accC):
    K = e.shape[0]
    D = X.shape[1]
    for k in range(K):
        cnt = counts[k]
        if cnt == 0:
            continue
        lst = members[starts[k]:starts[k] + cnt]
        erow = e[k]
        a = np.float32(0.0)
        if not with_moments:
            for j in range(cnt):
                t = lst[j]
                a += erow[t] * inv_kept[t]
            A[0, k] += a
            continue
        mu = means[k]
        for d in range(D):
            accB[d] = 0.0
            accC[d] = 0.0
        j = 0
        while j + 3 < cnt:  # four descriptors per pass: one load/store of the accumulators for four
            t1 = lst[j]
            t2 = lst[j + 1]
            t3 = lst[j + 2]
            t4 = lst[j + 3]
            g1 = erow[t1] * inv_kept[t1]
            g2 = erow[t2] * inv_kept[t2]
            g3 = erow[t3] * inv_kept[t3]
            g4 = erow[t4] * inv_kept[t4]
            a += (g1 + g2) + (g3 + g4)
            x1 = X[t1]
            x2 = X[t2]
            x3 = X[t3]
            x4 = X[t4]
            for d in range(D):
                md = mu[d]
                d1 = x1[d] - md
                d2 = x2[d] - md
                d3 = x3[d] - md
                d4 = x4[d] - md
                e1 = g1 * d1
                e2 = g2 * d2
                e3 = g3 * d3
                e4 = g4 * d4
                accB[d] += (e1 + e2) + (e3 + e4)
                accC[d] += (e1 * d1 + e2 * d2) + (e3 * d3 + e4 * d4)
            j += 4
        while j < cnt:
            t = lst[j]
            g = erow[t] * inv_kept[t]
            a += g
            x = X[t]
            for d in range(D):
                dd = x[d] - mu[d]
                gd = g * dd
                accB[d] += gd
                accC[d] += gd * dd
            j += 1
        A[0, k] += a
        isg = inv_sigma[k]
        Bk = B[0, k]
        Ck = C[0, k]
        for d in range(D):
            q = np.float64(isg[d])
            Bk[d] += accB[d] * q
            Ck[d] += accC[d] * (q * q)


@kernel
def _accumulate_regions(X, means, inv_sigma, e, inv_kept, counts, starts, members, regions,
                        with_moments, A, B, C, dz):
    K = e.shape[0]
    D = X.shape[1]
    L = regions.shape[1]
    for k in range(K):
        cnt = counts[k]
        erow = e[k]
        mu = means[k]
        isg = inv_sigma[k]
        for j in range(starts[k], starts[k] + cnt):
            t = members[j]
            g = erow[t] * inv_kept[t]
            for l in range(L):
                r = regions[t, l]
                if r >= 0:
                    A[r, k] += g
            if not with_moments:
                continue
            x = X[t]
            for d in range(D):
                dz[d] = (x[d] - mu[d]) * isg[d]
            for l in range(L):
                r = regions[t, l]
                if r < 0:
                    continue
                Br = B[r, k]
                Cr = C[r, k]
                for d in range(D):
                    gz = g * np.float64(dz[d])
                    Br[d] += gz
                    Cr[d] += gz * dz[d]


@kernel
def _mask_posteriors(e, cut, inv_kept, S0):
    """e (K, n) -> in place the thresholded, renormalised posteriors gamma (zeros elsewhere); S0 += row sums."""
    K, n = e.shape
    for k in range(K):
        row = e[k]
        acc = np.float32(0.0)
        for t in range(n):
            v = row[t]
            g = v * inv_kept[t] if v >= cut[t] else np.float32(0.0)
            row[t] = g
            acc += g
        S0[k] += acc


@kernel
def _dense_from_lists(e, inv_kept, counts, starts, members, out):
    K = e.shape[0]
    for k in range(K):
        erow = e[k]
        for j in range(starts[k], starts[k] + counts[k]):
            t = members[j]
            out[t, k] = erow[t] * inv_kept[t]


class _Buffers(NamedTuple):
    """A workspace's arrays (see :class:`_Workspace`), as the kernels read them."""

    Z: np.ndarray          # (nb, 2D) float32, [x - o, (x - o)^2]
    lpT: np.ndarray        # (K nb,) float32, the (K, n) log-joints / e of a block
    m: np.ndarray          # (nb,) float32 per-descriptor max, sum, cut, 1 / kept mass
    s: np.ndarray
    cut: np.ndarray
    inv_kept: np.ndarray
    counts: np.ndarray     # (K,) int32 survivors per Gaussian, start of its list
    starts: np.ndarray
    members: np.ndarray    # (K nb + 64,) int32 survivor lists, candidate values
    vals: np.ndarray
    accB: np.ndarray       # (D,) float32 per-Gaussian block sums
    accC: np.ndarray


class _EncoderCall(NamedTuple):
    """One :func:`_encoder_blocks` call: descriptors, model, buffers and the outputs it accumulates into."""

    X: np.ndarray            # (N, D) float32 descriptors
    block: int               # nb, descriptors per block
    threshold: float         # theta
    with_moments: bool       # False: A only (soft-BoV)
    terms: _KernelTerms
    buf: _Buffers
    scratch: np.ndarray      # (N,) float64, log-likelihoods of the exact kernel (discarded)
    gmax: np.ndarray         # (N,) float32, max posterior per descriptor
    nact: np.ndarray         # (N,) int32, surviving Gaussians per descriptor
    A: np.ndarray            # (1, K) float64 statistics (module docstring)
    B: np.ndarray            # (1, K, D) float64
    C: np.ndarray            # (1, K, D) float64


@kernel
def _encoder_blocks(call):
    """All blocks of the encoders' path (single region, no cancel) in one call: per block the GEMM
    (numpy's dot inside numba -> BLAS sgemm), the candidate kernel (the exact one once survivors
    exceed the candidate fraction) and the accumulation. ``call`` is an :class:`_EncoderCall`."""
    X, nb, threshold, terms, w = call.X, call.block, call.threshold, call.terms, call.buf
    N, D = X.shape
    K = terms.PT.shape[0]
    exact = False
    for start in range(0, N, nb):
        stop = min(N, start + nb)
        n = stop - start
        Xb = X[start:stop]
        Zb = w.Z[:n]
        _fill_z(Xb, terms.origin, Zb)
        lpT = w.lpT[: K * n].reshape((K, n))
        np.dot(terms.PT, Zb.T, lpT)
        if exact:
            q = _posterior_lists(lpT, terms.c, threshold, w.m, w.s, w.cut, w.inv_kept, w.counts, w.starts,
                                 w.members, call.scratch, call.gmax, call.nact, start)
        else:
            q = _candidate_lists(lpT, terms.c, threshold, w.m, w.s, w.cut, w.inv_kept, w.counts, w.starts,
                                 w.members, w.vals, call.gmax, call.nact, start)
            exact = q > _CANDIDATE_FRACTION * K * n
        _accumulate_one_region(Xb, terms.means, terms.inv_sigma, lpT, w.inv_kept, w.counts, w.starts, w.members,
                               call.with_moments, call.A, call.B, call.C, w.accB, w.accC)


# ----------------------------------------------------------------------------------------------
# drivers


class _Workspace:
    """Buffers of one block size, reused across blocks and, per thread, across calls (see _workspace)."""

    def __init__(self, nb: int, D: int, K: int):
        self.Z = np.empty((nb, 2 * D), dtype=np.float32)
        self.lpT = np.empty(K * nb, dtype=np.float32)
        self.m = np.empty(nb, dtype=np.float32)
        self.s = np.empty(nb, dtype=np.float32)
        self.cut = np.empty(nb, dtype=np.float32)
        self.inv_kept = np.empty(nb, dtype=np.float32)
        self.counts = np.empty(K, dtype=np.int32)
        self.starts = np.empty(K, dtype=np.int32)
        self.members = np.empty(K * nb + 64, dtype=np.int32)  # + slack for _candidate_lists' blind writes
        self.vals = np.empty(K * nb + 64, dtype=np.float32)
        self.accB = np.empty(D, dtype=np.float32)
        self.accC = np.empty(D, dtype=np.float32)
        self.buffers = _Buffers(self.Z, self.lpT, self.m, self.s, self.cut, self.inv_kept, self.counts,
                                self.starts, self.members, self.vals, self.accB, self.accC)

    def block(self, Xb: np.ndarray, terms: GaussianTerms, threshold: float, loglik, gmax, nact,
              offset: int) -> np.ndarray:
        """GEMM + posterior lists of one block; returns the (K, n) array of e's.

        ``loglik`` None: the encoders' path (:func:`_candidate_lists`, no log-likelihood)."""
        n, D = Xb.shape
        K = terms.n_components
        Z = self.Z[:n]
        _fill_z(Xb, terms.origin32, Z)
        lpT = self.lpT[: K * n].reshape(K, n)
        np.matmul(terms.PT, Z.T, out=lpT)
        if loglik is None:
            self.n_survivors = _candidate_lists(lpT, terms.c, float(threshold), self.m, self.s, self.cut,
                                                self.inv_kept, self.counts, self.starts, self.members,
                                                self.vals, gmax, nact, offset)
        else:
            self.n_survivors = _posterior_lists(lpT, terms.c, float(threshold), self.m, self.s, self.cut,
                                                self.inv_kept, self.counts, self.starts, self.members,
                                                loglik, gmax, nact, offset)
        return lpT


class _PerThread(threading.local):
    """Each thread's last workspace, keyed by (nb, D, K)."""

    key = None
    workspace: Optional[_Workspace] = None


_local = _PerThread()


def _workspace(nb: int, D: int, K: int) -> _Workspace:
    """This thread's workspace for (nb, D, K): encoders run in several threads, each gets its own."""
    key = (nb, D, K)
    if _local.key != key:
        _local.workspace = _Workspace(nb, D, K)
        _local.key = key
    return _local.workspace


def _check_regions(regions, N: int, n_regions: int) -> Optional[np.ndarray]:
    """``regions`` as (N, L) int32 slots in [-1, n_regions), or None when every row is in region 0."""
    if regions is None:
        return None
    regions = np.asarray(regions)
    if regions.dtype.kind not in "iu":
        raise ValueError(f"regions must hold integer region slots, got dtype {regions.dtype}")
    regions = np.ascontiguousarray(regions, dtype=np.int32)
    if regions.ndim == 1:
        regions = regions[:, None]
    if regions.ndim != 2 or regions.shape[0] != N:
        raise ValueError(f"regions must be ({N},) or ({N}, L) for {N} descriptors, got shape {regions.shape}")
    if regions.size and (regions.max() >= n_regions or regions.min() < -1):
        raise ValueError(f"regions must lie in [-1, n_regions={n_regions}), got [{regions.min()}, {regions.max()}]")
    if n_regions == 1 and regions.shape[1] == 1 and (regions.size == 0 or regions.min() == 0):
        return None  # everything in region 0: the fast path
    return regions


def accumulate_statistics(X: np.ndarray, terms: GaussianTerms, *, threshold: float = POSTERIOR_THRESHOLD,
                          regions: Optional[np.ndarray] = None, n_regions: int = 1,
                          moments: bool = True, block: int = _BLOCK,
                          cancel: CancelLike = None, allow_dense: bool = False,
                          log_likelihood: bool = True) -> Statistics:
    """Posteriors of X (N, D) float32 under the GMM ``terms`` and their accumulated statistics.

    ``regions`` is None (every descriptor in region 0) or an (N, L) int array of region slots in
    [0, n_regions) each descriptor contributes to (-1 = none), e.g. [whole image, its stripe].
    ``threshold`` is theta (0 disables thresholding). ``moments=False`` skips B and C (soft-BoV).
    Work is done in blocks of ``block`` rows (one GEMM + numba passes each, GIL released in all);
    ``cancel`` is checked between blocks.

    ``allow_dense`` (EM only; single region): a block where more than 30 % of the K posteriors
    survive theta sums its moments by a second GEMM, gamma^T [x', x'^2], and centres them per
    Gaussian afterwards (S1 - mu' S0, S2 - 2 mu' S1 + mu'^2 S0): faster when posteriors are flat,
    at the price of ~1e-6 relative cancellation error in C (harmless for the M-step, not for FVs).

    ``log_likelihood=False`` (the encoders): the candidates-only E-step of the module docstring,
    faster; ``Statistics.log_likelihood`` is then None.
    """
    X = as_float32_matrix(X, "descriptors", n_features=terms.n_features)
    threshold = _check_posterior_threshold(threshold, "threshold")
    n_regions = check_positive_int(n_regions, "n_regions")
    regions = _check_regions(regions, X.shape[0], n_regions)
    block = check_positive_int(block, "block")
    return _accumulate_statistics(X, terms, threshold, regions=regions, n_regions=n_regions, moments=moments,
                                  block=block, cancel=cancel, allow_dense=allow_dense,
                                  log_likelihood=log_likelihood)


def _accumulate_statistics(X: np.ndarray, terms: GaussianTerms, threshold: float, *,
                           regions: Optional[np.ndarray] = None, n_regions: int = 1, moments: bool = True,
                           block: int = _BLOCK, cancel: CancelLike = None, allow_dense: bool = False,
                           log_likelihood: bool = True) -> Statistics:
    """:func:`accumulate_statistics` on checked input: X C-contiguous float32 (N, terms.n_features),
    threshold in [0, 1), regions None or (N, L) int32 in [-1, n_regions) (the engine's internal entry)."""
    N, D = X.shape
    K = terms.n_components
    R = n_regions
    Dm = D if moments else 0
    A = np.zeros((R, K), dtype=np.float64)
    B = np.zeros((R, K, Dm), dtype=np.float64)
    C = np.zeros((R, K, Dm), dtype=np.float64)
    loglik = np.empty(N, dtype=np.float64) if log_likelihood else None
    gmax = np.empty(N, dtype=np.float32)
    nact = np.empty(N, dtype=np.int32)
    if N == 0:
        return Statistics(A, B, C, loglik, gmax, nact)
    nb = min(N, block)
    ws = _workspace(nb, D, K)
    if not log_likelihood and regions is None and cancel is None:
        _encoder_blocks(_EncoderCall(X, nb, float(threshold), bool(moments), terms.kernel, ws.buffers,
                                     np.empty(N, dtype=np.float64), gmax, nact, A, B, C))
        return Statistics(A, B, C, loglik, gmax, nact)
    dense = None
    ll_out = loglik
    for start in range(0, N, nb):
        check_cancel(cancel, "posterior computation")
        stop = min(N, start + nb)
        Xb = X[start:stop]
        e = ws.block(Xb, terms, threshold, ll_out, gmax, nact, start)
        if ll_out is None and ws.n_survivors > _CANDIDATE_FRACTION * K * (stop - start):
            # flat posteriors (or theta ~ 0): the full pass of the exact kernel is cheaper than lists
            ll_out = np.empty(N, dtype=np.float64)
        if allow_dense and moments and regions is None and ws.n_survivors > _DENSE_FRACTION * K * (stop - start):
            if dense is None:
                dense = (np.zeros(K, dtype=np.float64), np.zeros((K, 2 * D), dtype=np.float64),
                         np.empty((K, 2 * D), dtype=np.float32))
            _mask_posteriors(e, ws.cut, ws.inv_kept, dense[0])
            np.matmul(e, ws.Z[: stop - start], out=dense[2])
            np.add(dense[1], dense[2], out=dense[1])
        elif regions is None:
            _accumulate_one_region(Xb, terms.means, terms.inv_sigma, e, ws.inv_kept, ws.counts, ws.starts,
                                   ws.members, moments, A, B, C, ws.accB, ws.accC)
        else:
            _accumulate_regions(Xb, terms.means, terms.inv_sigma, e, ws.inv_kept, ws.counts, ws.starts,
                                ws.members, regions[start:stop], moments, A, B, C, ws.accB)
    if dense is not None:
        # raw moments about the origin o -> Gaussian-centred statistics (module docstring)
        S0 = dense[0]
        S1, S2 = dense[1][:, :D], dense[1][:, D:]
        mu_c = terms.means.astype(np.float64) - terms.origin
        isg = terms.inv_sigma.astype(np.float64)
        A[0] += S0
        B[0] += isg * (S1 - mu_c * S0[:, None])
        C[0] += isg * isg * (S2 - 2.0 * mu_c * S1 + mu_c * mu_c * S0[:, None])
    return Statistics(A, B, C, loglik, gmax, nact)


def posteriors(X: np.ndarray, terms: GaussianTerms, *, threshold: float = 0.0,
               return_log_likelihood: bool = False):
    """Dense (N, K) float32 posteriors gamma_t(k) (thresholded and renormalised if theta > 0).

    Same computation as :func:`accumulate_statistics` (same cut, same renormalisation). With
    ``return_log_likelihood`` also returns the (N,) float64 log u(x_t).
    """
    X = as_float32_matrix(X, "descriptors", n_features=terms.n_features)
    threshold = _check_posterior_threshold(threshold, "threshold")
    return _dense_posteriors(X, terms, threshold, return_log_likelihood)


def _dense_posteriors(X: np.ndarray, terms: GaussianTerms, threshold: float, return_log_likelihood: bool = False):
    """:func:`posteriors` on checked input (C-contiguous float32 X, threshold in [0, 1))."""
    N, D = X.shape
    K = terms.n_components
    out = np.zeros((N, K), dtype=np.float32)
    loglik = np.empty(N, dtype=np.float64)
    if N:
        nb = min(N, _BLOCK)
        ws = _workspace(nb, D, K)
        gmax = np.empty(N, dtype=np.float32)
        nact = np.empty(N, dtype=np.int32)
        for start in range(0, N, nb):
            stop = min(N, start + nb)
            e = ws.block(X[start:stop], terms, threshold, loglik, gmax, nact, start)
            _dense_from_lists(e, ws.inv_kept, ws.counts, ws.starts, ws.members, out[start:stop])
    if return_log_likelihood:
        return out, loglik
    return out

"""The numba kernels of one-vs-rest SGD (the role of scikit-learn's ``_sgd_fast.pyx``): one pass over
rows updates every class.

For each row x (float32, read once while it sits in cache) and each class c with a non-zero signed
weight Yw[i, c] = y a (y in {+1, -1} the target, a > 0 the sample weight; 0 = class c skips the row), at
the class's own step count t = t_c (paper Sec. 3.1, Bottou's SGD for SVMs; see :mod:`~.svm` for the
losses and the schedule's constants):

    z = y (w_c' x + b_c),    g = a l'(z) y
    eta_t = 1 / (lambda (t + t0))           schedule 0, "optimal"
          = eta0 / (1 + lambda eta0 t)^0.75  schedule 1, "asgd"
          = eta0                            schedule 2, "constant"
    w_c <- (1 - eta_t lambda) w_c - eta_t g x,      b_c <- b_c - eta_t g   (the bias is not regularised)

with l'(z) = -[z < 1] (loss 0, hinge), -1 / (1 + e^z) (loss 1, log), z - 1 (loss 2, squared); the loss
l(z) of each step (taken before it) is summed into stats[c, 0], its weight into stats[c, 1].

Weights are held as a vector over a divisor, w_c = V[c] / wdiv[c], so the O(D) shrink by
(1 - eta lambda) is the O(1) update wdiv <- wdiv / (1 - eta lambda) and a step is one axpy
V[c] += -eta g wdiv x. Averaging (ASGD) from step avg_start[c] on: a_c <- (1 - mu) a_c + mu w_c,
mu = 1 / (t - avg_start + 1), held as a_c = (U[c] + wfrac[c] V[c]) / adiv[c]: adiv <- adiv / (1 - mu),
wfrac <- wfrac + mu adiv / wdiv, and a step of V adds -wfrac times it to U so a stays unchanged by it
(Bottou's sgd-2.1 bookkeeping); the first averaged step sets a = w. A divisor above ``renorm`` is
folded back into its vector(s) (V /= wdiv; U <- (U + wfrac V) / adiv), keeping float32 V and U in range.

Layouts: X (n_rows, D) float32 (read at ``rows``), Yw (len(rows), C) float64, V and U (C, D) float32
(U is (C, 1) when not averaging), the per-class scalars (C,) float64. Every kernel releases the GIL.
"""
from __future__ import annotations

import math

import numpy as np

from .jit import kernel


@kernel
def _dots(V, act, n_act, x, out):
    """out[j] = V[act[j]] . x for j < n_act; four rows per sweep so x is loaded once per four."""
    D = x.shape[0]
    j = 0
    while j + 4 <= n_act:
        v0, v1, v2, v3 = V[act[j]], V[act[j + 1]], V[act[j + 2]], V[act[j + 3]]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for d in range(D):
            xd = x[d]
            a0 += v0[d] * xd
            a1 += v1[d] * xd
            a2 += v2[d] * xd
            a3 += v3[d] * xd
        out[j], out[j + 1], out[j + 2], out[j + 3] = a0, a1, a2, a3
        j += 4
    while j + 2 <= n_act:
        v0, v1 = V[act[j]], V[act[j + 1]]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        for d in range(D):
            xd = x[d]
            a0 += v0[d] * xd
            a1 += v1[d] * xd
        out[j], out[j + 1] = a0, a1
        j += 2
    if j < n_act:
        v0 = V[act[j]]
        a0 = np.float32(0.0)
        for d in range(D):
            a0 += v0[d] * x[d]
        out[j] = a0


@kernel
def _axpys(V, rows, coef, n, x):
    """V[rows[j]] += coef[j] * x for j < n, two rows per sweep."""
    D = x.shape[0]
    j = 0
    while j + 2 <= n:
        v0, v1 = V[rows[j]], V[rows[j + 1]]
        c0, c1 = coef[j], coef[j + 1]
        for d in range(D):
            xd = x[d]
            v0[d] += c0 * xd
            v1[d] += c1 * xd
        j += 2
    if j < n:
        v0 = V[rows[j]]
        c0 = coef[j]
        for d in range(D):
            v0[d] += c0 * x[d]


@kernel
def _axpys_pair(V, U, rows, cv, cu, n, x):
    """V[rows[j]] += cv[j] * x and U[rows[j]] += cu[j] * x for j < n, in one sweep over x."""
    D = x.shape[0]
    j = 0
    while j + 2 <= n:
        v0, v1, u0, u1 = V[rows[j]], V[rows[j + 1]], U[rows[j]], U[rows[j + 1]]
        a0, a1, b0, b1 = cv[j], cv[j + 1], cu[j], cu[j + 1]
        for d in range(D):
            xd = x[d]
            v0[d] += a0 * xd
            u0[d] += b0 * xd
            v1[d] += a1 * xd
            u1[d] += b1 * xd
        j += 2
    if j < n:
        v0, u0 = V[rows[j]], U[rows[j]]
        a0, b0 = cv[j], cu[j]
        for d in range(D):
            xd = x[d]
            v0[d] += a0 * xd
            u0[d] += b0 * xd


@kernel
def sgd_pass(X, rows, Yw, loss_id, lam, t0, eta0, schedule_id, fit_bias, renorm, avg_start,
              V, U, b, ab, wdiv, adiv, wfrac, t, stats):
    """One SGD pass over ``rows`` of ``X``; every class with Yw[i, c] != 0 takes a step per row.

    Yw[i, c] = y * a (signed sample weight, 0 = class c skips row i). Per class c: w = V[c]/wdiv[c],
    a = (U[c] + wfrac[c] V[c]) / adiv[c] once t[c] >= avg_start[c]. stats[c] += (loss, count).
    """
    n = rows.shape[0]
    C = V.shape[0]
    D = V.shape[1]
    act = np.empty(C, np.int64)
    dots = np.empty(C, np.float32)
    upd = np.empty(C, np.int64)
    dv = np.empty(C, np.float32)
    upd_u = np.empty(C, np.int64)
    du = np.empty(C, np.float32)
    for i in range(n):
        x = X[rows[i]]
        n_act = 0
        for c in range(C):
            if Yw[i, c] != 0.0:
                act[n_act] = c
                n_act += 1
        _dots(V, act, n_act, x, dots)
        n_upd = 0
        n_upd_u = 0
        for j in range(n_act):
            c = act[j]
            yw = Yw[i, c]
            y = 1.0 if yw > 0.0 else -1.0
            weight = abs(yw)
            z = y * (dots[j] / wdiv[c] + b[c])
            if loss_id == 0:
                lz = 1.0 - z if z < 1.0 else 0.0
                dl = -1.0 if z < 1.0 else 0.0
            elif loss_id == 1:
                if z > 0.0:
                    e = math.exp(-z)
                    lz = math.log1p(e)
                    dl = -e / (1.0 + e)
                else:
                    e = math.exp(z)
                    lz = -z + math.log1p(e)
                    dl = -1.0 / (1.0 + e)
            else:
                lz = 0.5 * (1.0 - z) * (1.0 - z)
                dl = z - 1.0
            stats[c, 0] += weight * lz
            stats[c, 1] += weight
            tc = t[c]
            if schedule_id == 0:
                eta = 1.0 / (lam * (tc + t0))
            elif schedule_id == 1:
                eta = eta0 / (1.0 + lam * eta0 * tc) ** 0.75
            else:
                eta = eta0
            wdiv[c] = wdiv[c] / (1.0 - eta * lam)
            g = weight * dl * y
            if g != 0.0:
                delta = -eta * g * wdiv[c]
                dv[n_upd] = delta
                upd[n_upd] = c
                n_upd += 1
                if tc > avg_start[c]:  # averaging under way: keep a unchanged by this step
                    du[n_upd_u] = -wfrac[c] * delta
                    upd_u[n_upd_u] = c
                    n_upd_u += 1
                if fit_bias:
                    b[c] -= eta * g
        if n_upd_u == n_upd and n_upd > 0:  # every updated class is averaging (epochs >= 2)
            _axpys_pair(V, U, upd, dv, du, n_upd, x)
        else:
            _axpys(V, upd, dv, n_upd, x)
            _axpys(U, upd_u, du, n_upd_u, x)
        for j in range(n_act):
            c = act[j]
            tc = t[c]
            averaging = tc >= avg_start[c]
            if averaging:
                if tc == avg_start[c]:  # first averaged step: a = w
                    U[c, :] = 0.0
                    adiv[c] = wdiv[c]
                    wfrac[c] = 1.0
                    ab[c] = b[c]
                else:
                    mu = 1.0 / (tc - avg_start[c] + 1.0)
                    adiv[c] = adiv[c] / (1.0 - mu)
                    wfrac[c] += mu * adiv[c] / wdiv[c]
                    ab[c] += mu * (b[c] - ab[c])
            t[c] = tc + 1.0
            if wdiv[c] > renorm or (averaging and adiv[c] > renorm):
                if averaging:  # fold f V into U, then a = U with divisor 1
                    f = np.float32(wfrac[c])
                    inv_a = np.float32(1.0 / adiv[c])
                    for d in range(D):
                        U[c, d] = (U[c, d] + f * V[c, d]) * inv_a
                    adiv[c] = 1.0
                    wfrac[c] = 0.0
                inv_w = np.float32(1.0 / wdiv[c])
                for d in range(D):
                    V[c, d] *= inv_w
                wdiv[c] = 1.0

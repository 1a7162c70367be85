"""EM speed: fvstudio's DiagonalGMM vs scikit-learn's GaussianMixture(covariance_type="diag").

Both start from the SAME parameters (our k-means++ initialisation followed by 2 EM iterations), run a
fixed number of EM iterations (tol = 0), interleaved, and the per-iteration time is
(time of 1 + n iterations - time of 1 iteration) / n, the minimum over repeats: set-up (input checks,
sklearn's initial E-step, our global variance) cancels out. Reported: ms per iteration, ratio, the
final mean log-likelihood of each (ours with its defaults theta = 1e-4 / var_floor = 0.01, and
"exact": theta = 0, var_floor = 0, i.e. the same maximum-likelihood EM as sklearn, whose only
regulariser is reg_covar = 1e-6 added to the variances), and the mean number of Gaussians with a posterior above
theta per descriptor (what the sparse E-step's cost depends on).

Data (N = 200,000, D = 64, K = 256 by default):
  sift     dense root-SIFT of every 4th sample_data/textures image, PCA to 64-d (real descriptors)
  blobs    256 Gaussian clusters with centres N(0, 0.5^2) per dimension (posteriors as sharp as SIFT's)
  gauss    one correlated Gaussian (no cluster structure: the hard case, dense posteriors)

    python benchmarks/bench_gmm.py [--n 200000] [--k 256] [--iters 5] [--repeats 3] [--data sift,blobs,gauss]

Single-threaded rows pin BLAS (threadpoolctl) and numba to one thread; 2-thread rows give sklearn's
BLAS two threads and run our E-step on two threads (``n_jobs=2``).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from fvstudio.engine.gmm import DiagonalGMM  # noqa: E402
from fvstudio.engine.pca import PCA  # noqa: E402
from fvstudio.engine.posteriors import accumulate_statistics  # noqa: E402

try:
    from sklearn.mixture import GaussianMixture
except ImportError:  # pragma: no cover
    sys.exit("bench_gmm needs scikit-learn: pip install -e '.[bench]'")


def make_data(kind: str, N: int, D: int, K: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "sift":
        from fvstudio.data.images import load_image
        from fvstudio.engine.descriptors import dense_sift, to_gray

        paths = sorted(glob.glob(str(ROOT / "sample_data" / "textures" / "*" / "*.jpg")))
        if not paths:
            raise SystemExit("sample_data/textures is missing")
        desc = []
        for p in paths[::4]:
            desc.append(dense_sift(to_gray(load_image(p)), root=True).descriptors)
        S = np.concatenate(desc)
        S = S[rng.choice(len(S), min(N, len(S)), replace=False)]
        return PCA(D).fit(S).transform(S)
    if kind == "blobs":
        C = rng.normal(size=(K, D)) * 0.5
        scale = np.exp(rng.normal(size=(K, D)) * 0.2)
        lab = rng.integers(0, K, N)
        return (C[lab] + rng.normal(size=(N, D)) * scale[lab]).astype(np.float32)
    if kind == "gauss":
        A = rng.normal(size=(D, D)) / np.sqrt(D)
        return (rng.normal(size=(N, D)) @ A).astype(np.float32)
    raise SystemExit(f"unknown data kind {kind!r}")


def time_ours(X, start, iters, threads, exact):
    w, mu, var = start
    K = len(w)

    def run(n):
        g = DiagonalGMM(K, max_iter=n, tol=0.0, posterior_threshold=0.0 if exact else 1e-4,
                        var_floor=0.0 if exact else 0.01, n_jobs=threads)
        t = time.perf_counter()
        g.fit(X, init_params=(w, mu, var))
        return time.perf_counter() - t, g

    t1, _ = run(1)
    tn, g = run(1 + iters)
    return (tn - t1) / iters, g


def time_sklearn(X, start, iters):
    w, mu, var = start
    K = len(w)

    def run(n):
        g = GaussianMixture(K, covariance_type="diag", max_iter=n, tol=0.0, reg_covar=1e-6,
                            init_params="random_from_data", weights_init=w, means_init=mu,
                            precisions_init=1.0 / var, random_state=0)
        t = time.perf_counter()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g.fit(X)
        return time.perf_counter() - t, g

    t1, _ = run(1)
    tn, g = run(1 + iters)
    return (tn - t1) / iters, g


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default="sift,blobs,gauss")
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args(argv)
    print(f"N={args.n} D={args.d} K={args.k}; {args.iters} timed EM iterations, min of {args.repeats} "
          f"interleaved repeats; load average {os.getloadavg()[0]:.2f} at start")
    header = (f"{'data':6} {'thr':>3} {'ours ms/it':>10} {'ours exact':>10} {'sklearn':>9} {'ratio':>6} "
              f"{'ratio exact':>11} {'active':>6} {'LL ours':>10} {'LL exact':>10} {'LL sklearn':>10}")
    rows = []
    for kind in args.data.split(","):
        X = make_data(kind, args.n, args.d, args.k)
        with threadpool_limits(1):
            numba.set_num_threads(1)
            init = DiagonalGMM(args.k, max_iter=2, tol=0.0, var_floor=0.01, seed=0).fit(X)
            start = (init.weights_.astype(np.float64), init.means_.astype(np.float64),
                     init.variances_.astype(np.float64))
            active = float(accumulate_statistics(X, init.terms).n_active.mean())
        for threads in [int(t) for t in args.threads.split(",")]:
            best = {"ours": np.inf, "ours0": np.inf, "sk": np.inf}
            models = {}
            with threadpool_limits(threads):
                numba.set_num_threads(1)
                for _ in range(args.repeats):
                    for name in ("ours", "sk", "ours0"):
                        if name == "sk":
                            t, g = time_sklearn(X, start, args.iters)
                        else:
                            t, g = time_ours(X, start, args.iters, threads, exact=name == "ours0")
                        best[name] = min(best[name], t)
                        models[name] = g
            ll_ours = models["ours"].score(X)
            ll_ours0 = models["ours0"].score(X)
            ll_sk = float(models["sk"].score(X))
            row = (f"{kind:6} {threads:>3} {1e3 * best['ours']:>10.1f} {1e3 * best['ours0']:>10.1f} "
                   f"{1e3 * best['sk']:>9.1f} {best['sk'] / best['ours']:>6.2f} "
                   f"{best['sk'] / best['ours0']:>11.2f} {active:>6.1f} {ll_ours:>10.4f} {ll_ours0:>10.4f} "
                   f"{ll_sk:>10.4f}")
            rows.append(row)
            print(row if len(rows) > 1 else header + "\n" + row, flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at end. ratio = sklearn time / ours (higher is better); "
          f"'active' = mean Gaussians per descriptor with posterior >= 1e-4 at the start point")


if __name__ == "__main__":
    main()

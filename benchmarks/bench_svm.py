"""Benchmark: fvstudio OneVsRestSGD vs scikit-learn SGDClassifier, one-vs-rest linear SVMs (hinge).

Default problem (the issue's): 20,000 x 32,768 dense float32 training rows, 10 classes, 5 epochs,
held-out test set of 5,000 rows, lambda = alpha = 1e-4 for both (scikit-learn's default alpha).

Synthetic but learnable, FV-like data, generated in chunks (2.6 GB for the default size):
a latent class signal l = m_y + N(0, I_r) in r = 16 dims (class means m_c ~ N(0, sep^2 I_r)),
mapped to D dims by a fixed random Gaussian matrix P (r x D, entries N(0, 1/D)), plus isotropic
noise of total norm ~``noise``, then signed square root (power normalisation) and L2 normalisation
of each row, as for Fisher vectors.

Methods are run interleaved, ``--repeats`` times each; the table shows the minimum fit time (the
machine is shared: see the load averages printed), test accuracy and mean per-class accuracy, and
the peak memory allocated during fit (tracemalloc, which sees numpy's allocations; the training
data itself is not counted). CPU time (process_time, all threads) is shown too: on a busy machine
it is the fairer single-thread comparison. Run:

    python benchmarks/bench_svm.py                        # full size: 3.3 GB of rows, a few minutes
    python benchmarks/bench_svm.py --n-train 4000 --n-test 2000 --repeats 1   # quick look

SGD on PQ codes (issue 10, Sec. 4.3) on real Caltech-101 FVs: ``--codes`` runs ``bench_pq.py``'s SGD
comparison (uncompressed FVs vs PQ codes b = 1, G = 8 read through ``PQRows``, each fit in a fresh
subprocess: fit time, accuracy, peak RSS against codes + model + 64 MB); same table as
``bench_pq.py --sgd --skip-codecs``:

    python benchmarks/bench_svm.py --codes --caltech /work/data/caltech101 --workspace /work/data/ws_caltech
"""
from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc
import warnings

import numpy as np


def make_data(n_train, n_test, dim, n_classes, latent=16, sep=0.75, noise=1.0, seed=0, chunk=1000):
    rng = np.random.default_rng(seed)
    means = (sep * rng.standard_normal((n_classes, latent))).astype(np.float32)
    P = (rng.standard_normal((latent, dim)) / np.sqrt(dim)).astype(np.float32)
    scale = np.float32(noise / np.sqrt(dim))

    def block(n, y, g):
        lat = means[y] + g.standard_normal((n, latent), dtype=np.float32)
        x = lat @ P
        x += scale * g.standard_normal((n, dim), dtype=np.float32)
        x = np.sign(x) * np.sqrt(np.abs(x))
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    out = []
    for n, s in ((n_train, 1), (n_test, 2)):
        g = np.random.default_rng(seed + 1000 * s)
        y = g.integers(0, n_classes, n)
        X = np.empty((n, dim), dtype=np.float32)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            X[a:b] = block(b - a, y[a:b], g)
        out += [X, y]
    return out


class MiniBatchSGD:
    """The design alternative, for the record: the same hinge SGD ("optimal" rate, no averaging) in
    mini-batches of B rows, scores and updates as two BLAS products per batch (numpy/OpenBLAS)."""

    def __init__(self, lam, epochs, batch=64, seed=0):
        self.lam, self.epochs, self.batch, self.seed = lam, epochs, batch, seed

    def fit(self, X, y):
        n, d = X.shape
        classes = np.unique(y)
        Y = np.where(y[:, None] == classes[None, :], 1.0, -1.0).astype(np.float32)
        W = np.zeros((classes.size, d), np.float32)
        b = np.zeros(classes.size, np.float32)
        eta0 = self.lam ** -0.25
        t0 = 1.0 / (self.lam * eta0)
        t = 0.0
        rng = np.random.default_rng(self.seed)
        for _ in range(self.epochs):
            order = rng.permutation(n)
            for a in range(0, n, self.batch):
                idx = np.sort(order[a:a + self.batch])
                Xb, Yb = X[idx], Y[idx]
                G = -Yb * ((Yb * (Xb @ W.T + b)) < 1)           # dloss/dscore, (B, C)
                eta = 1.0 / (self.lam * (t + t0 + idx.size / 2))
                W *= np.float32((1 - eta * self.lam) ** idx.size)
                W -= np.float32(eta) * (G.T @ Xb)
                b -= np.float32(eta) * G.sum(axis=0)
                t += idx.size
        self.coef_, self.intercept_ = W, b
        return self

    def decision_function(self, X):
        return X @ self.coef_.T + self.intercept_


def load_avg():
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average n/a"


def run_codes(args):
    """``--codes``: bench_pq.py's SGD-on-codes comparison (one code path, two entry points)."""
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_pq

    argv = ["--skip-codecs", "--sgd", "--threads", str(args.threads), "--K", *map(str, args.K)]
    if args.caltech:
        argv += ["--caltech", args.caltech]
    if args.workspace:
        argv += ["--workspace", args.workspace]
    if args.codes_lam:
        argv += ["--sgd-lam", *map(str, args.codes_lam)]
    if args.codes_epochs:
        argv += ["--sgd-epochs", str(args.codes_epochs)]
    print(f"# bench_svm --codes: bench_pq.py {' '.join(argv)}", flush=True)
    bench_pq.main(argv)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=32768)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lam", type=float, default=1e-4)
    ap.add_argument("--sep", type=float, default=0.75)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--minibatch", action="store_true",
                    help="also time the mini-batch + BLAS design alternative (numpy)")
    ap.add_argument("--codes", action="store_true",
                    help="SGD on PQ codes vs uncompressed on Caltech-101 FVs (bench_pq.py's --sgd table)")
    ap.add_argument("--caltech", default="", help="with --codes: folder holding caltech101/ and caltech101_splits/")
    ap.add_argument("--workspace", default="", help="with --codes: fvstudio workspace (descriptor and step cache)")
    ap.add_argument("--K", type=int, nargs="+", default=[256], help="with --codes: GMM sizes")
    ap.add_argument("--codes-lam", type=float, nargs="+", default=None,
                    help="with --codes: lambdas (default: bench_pq's)")
    ap.add_argument("--codes-epochs", type=int, default=None, help="with --codes: epochs (default: bench_pq's)")
    ap.add_argument("--threads", type=int, default=1, help="with --codes: threads")
    args = ap.parse_args()
    if args.codes:
        run_codes(args)
        return

    from fvstudio.engine import metrics
    from fvstudio.engine.svm import OneVsRestSGD

    print(f"# bench_svm: {args.n_train} x {args.dim} train, {args.n_test} test, {args.classes} classes, "
          f"{args.epochs} epochs, hinge, lambda = alpha = {args.lam:g}; cores: {os.cpu_count()}")
    print(f"# start: {load_avg()}")
    t = time.perf_counter()
    X, y, Xt, yt = make_data(args.n_train, args.n_test, args.dim, args.classes, sep=args.sep,
                             noise=args.noise)
    print(f"# data generated in {time.perf_counter() - t:.1f} s "
          f"({X.nbytes / 2**30:.2f} GiB train + {Xt.nbytes / 2**30:.2f} GiB test)")

    methods = {
        "fvstudio OneVsRestSGD (1 thread, averaged)":
            lambda: OneVsRestSGD(loss="hinge", lam=args.lam, epochs=args.epochs, balance=None, n_jobs=1),
        "fvstudio OneVsRestSGD (1 thread, plain SGD)":
            lambda: OneVsRestSGD(loss="hinge", lam=args.lam, epochs=args.epochs, averaging=False,
                                 balance=None, n_jobs=1),
        "fvstudio OneVsRestSGD (2 threads, averaged)":
            lambda: OneVsRestSGD(loss="hinge", lam=args.lam, epochs=args.epochs, balance=None, n_jobs=2),
    }
    if args.minibatch:
        methods["numpy mini-batch SGD, B=64 (BLAS)"] = lambda: MiniBatchSGD(args.lam, args.epochs)
    if not args.no_sklearn:
        from sklearn.linear_model import SGDClassifier
        methods["scikit-learn SGDClassifier"] = lambda: SGDClassifier(
            loss="hinge", alpha=args.lam, max_iter=args.epochs, tol=None, random_state=0)

    # warm the numba cache/compilation outside the timings
    OneVsRestSGD(epochs=1).fit(X[:50], np.arange(50) % args.classes)

    times = {k: [] for k in methods}
    cpu = {k: [] for k in methods}
    result = {}
    tracemalloc.start()
    for r in range(args.repeats):
        for name, make in methods.items():
            model = make()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            t, c = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X, y)
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            peak = tracemalloc.get_traced_memory()[1] - base
            scores = model.decision_function(Xt)
            pred = np.argmax(scores, axis=1)
            result[name] = (metrics.overall_accuracy(yt, pred),
                            metrics.mean_per_class_accuracy(yt, pred, n_classes=args.classes),
                            metrics.top_k_accuracy(scores, yt, 5), peak / 2**20)
            print(f"#   repeat {r + 1}: {name}: {times[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} s CPU "
                  f"({load_avg()})", flush=True)
    tracemalloc.stop()

    sk = "scikit-learn SGDClassifier"
    ref = min(times[sk]) if sk in times else None
    ref_cpu = min(cpu[sk]) if sk in cpu else None
    print()
    print(f"| method | wall time (min of {args.repeats}) | wall runs (s) | speed-up (wall) | "
          "CPU time (min) | speed-up (CPU) | test accuracy | mean per-class acc. | top-5 | "
          "peak fit memory |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in methods:
        tmin, cmin = min(times[name]), min(cpu[name])
        acc, mpc, top5, mem = result[name]
        ratio = f"{ref / tmin:.1f}x" if ref else "-"
        cratio = f"{ref_cpu / cmin:.1f}x" if ref_cpu else "-"
        runs = ", ".join(f"{v:.2f}" for v in times[name])
        print(f"| {name} | {tmin:.2f} s | {runs} | {ratio} | {cmin:.2f} s | {cratio} | {acc:.4f} | "
              f"{mpc:.4f} | {top5:.4f} | {mem:.0f} MiB |")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"\n# process peak RSS {rss:.0f} MiB (includes the data); end: {load_avg()}")


if __name__ == "__main__":
    main()

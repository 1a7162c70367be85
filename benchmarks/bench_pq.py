"""Product quantisation of real Fisher Vectors: fvstudio vs faiss (and nanopq), sparsity bit, SGD on codes.

Data: Caltech-101 FVs made by the project's own pipeline, headless (SIFT, PCA 64, K-Gaussian GMM,
gradients "ms", power + L2, no pyramid: 2 x 64 x K dims), 30 train / 50 test images per class
(the split lists ``train30_seed0.txt`` / ``test50_seed0.txt``). The dataset root holds
``caltech101/`` (class folders) and ``caltech101_splits/``; give it with ``--caltech`` or
``FVSTUDIO_CALTECH101``, the workspace (descriptor / step cache, ~22 GB once) with ``--workspace`` or
``FVSTUDIO_WORKSPACE``. Without data the script says why and exits 0.

1. Codecs, b = 1, G = 8 (256 centroids per 8 dims, M = E / 8), per K: each quantiser is trained on
   the 3,060 training FVs, then encodes and decodes the 2,995 test FVs. Train: one run each (seconds,
   wall and CPU = process_time over all threads); encode / decode: best of ``--repeats`` interleaved
   runs. MSE = mean over test vectors of ||q(x) - x||^2 (eq. 42); train MSE on the training FVs.
   Every library runs on ``--threads`` threads (default 1; faiss via omp_set_num_threads, BLAS via
   threadpoolctl, fvstudio via n_jobs). faiss: ``faiss.ProductQuantizer(E, M, 8)`` defaults (25
   iterations, <= 256 points per centroid, random init); nanopq: ``PQ(M, 256).fit(iter=20)``.
2. Sparsity bit (Sec. 4.2) on the same FVs: share of zero dimensions and zero (Gaussian) blocks,
   bytes per image without / with the bit.
3. ``--sgd``: OneVsRestSGD (hinge, fixed lambda, few epochs, balance="sample": all positives + 5x
   sampled negatives per class and epoch, Sec. 4.3) trained on the uncompressed FVs vs on the codes
   (PQRows, decoded block by block; also re-normalised, ``PQRows(..., renormalise=True)``: decoded
   rows back at unit norm, Sec. 5.1), each in a fresh subprocess: fit time, mean per-class accuracy
   on the test set (test FVs uncompressed, and test FVs as codes), peak RSS during fit
   (VmHWM after resetting it, Linux) and the RSS the data add.

Run:  python benchmarks/bench_pq.py --caltech /work/data/caltech101 --workspace /work/data/ws_caltech
      python benchmarks/bench_pq.py ... --K 64 --skip-nanopq       (quicker)
      python benchmarks/bench_pq.py ... --sgd --K 256 --skip-faiss --skip-nanopq
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from caltech import check_root, split_dataset  # noqa: E402
from fvstudio.engine.pq import PQRows, ProductQuantizer, sparsity_storage  # noqa: E402


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def data_paths(args):
    root = args.caltech or os.environ.get("FVSTUDIO_CALTECH101", "")
    ws = args.workspace or os.environ.get("FVSTUDIO_WORKSPACE", "")
    if not root:
        return None, None, "no Caltech-101 root given (--caltech or FVSTUDIO_CALTECH101)"
    if check_root(root):
        return None, None, check_root(root)
    if not ws:
        return None, None, "no workspace given (--workspace or FVSTUDIO_WORKSPACE)"
    return root, ws, ""


def caltech_config(root, K):
    return {"dataset": split_dataset(root, 0),
            "descriptors": {"channels": ["sift"], "contrast_threshold": 0.0}, "encoder": {"pyramid": "1x1"},
            "gmm": {"n_components": int(K), "position_scale": 0.0}}  # the README's figures: no positions, no zeroing


def caltech_fvs(root, workspace, K):
    """FVs of Caltech-101 from the project's pipeline (computed once, then read from its cache).

    Returns dict: Xtr, ytr, Xte, yte (memmap row views, int labels), layout, encoder, seconds."""
    from fvstudio.pipeline.runner import Pipeline

    t = time.perf_counter()
    pipe = Pipeline(caltech_config(root, K), workspace)
    enc = pipe.artifact("encode")
    if enc is None:
        print(f"(K={K}: computing the FVs with the pipeline into {workspace}: minutes, once)", flush=True)
        enc = pipe.run_step("encode")
    split = pipe.splits[0]
    labels = np.asarray(pipe.dataset.labels)[enc.indices]
    tr = np.flatnonzero(np.isin(enc.indices, split.train))
    te = np.flatnonzero(np.isin(enc.indices, split.test))
    fvs = enc.fvs
    # train rows and test rows are each one contiguous run in the step's output order when sorted
    Xtr = np.ascontiguousarray(fvs[tr]) if not _is_run(tr) else fvs[tr[0]:tr[-1] + 1]
    Xte = np.ascontiguousarray(fvs[te]) if not _is_run(te) else fvs[te[0]:te[-1] + 1]
    return {"Xtr": Xtr, "ytr": labels[tr], "Xte": Xte, "yte": labels[te], "layout": enc.encoder.block_layout(),
            "encoder": enc.encoder, "seconds": time.perf_counter() - t, "n_classes": pipe.dataset.n_classes}


def _is_run(idx):
    return idx.size > 0 and idx[-1] - idx[0] + 1 == idx.size


@contextlib.contextmanager
def quiet_stdout():
    """Silence C-level stdout (faiss prints one warning per sub-quantiser with few training points)."""
    import ctypes

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    fd = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            libc.fflush(None)  # C stdio buffers (a redirected stdout is block-buffered) go to /dev/null too
            os.dup2(fd, 1)
            os.close(fd)


def timed(f, *args):
    c0, t0 = time.process_time(), time.perf_counter()
    out = f(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def mse(X, R):
    out = 0.0
    for s in range(0, len(X), 256):
        d = np.asarray(R[s:s + 256], np.float64) - np.asarray(X[s:s + 256], np.float64)
        out += float(np.einsum("ij,ij->", d, d))
    return out / len(X)


# --------------------------------------------------------------------------------------------------
# 1. codecs
# --------------------------------------------------------------------------------------------------
class Ours:
    name = "fvstudio ProductQuantizer"

    def __init__(self, E, M, threads, layout):
        self.pq = ProductQuantizer(1.0, E // M, layout=layout, seed=0, n_jobs=threads)

    def train(self, X):
        self.pq.fit(X)

    def encode(self, X):
        return self.pq.encode(X)

    def decode(self, C):
        return self.pq.decode(C)


class Faiss:
    name = "faiss ProductQuantizer"

    def __init__(self, E, M, threads, layout):
        import faiss
        faiss.omp_set_num_threads(threads)
        self.pq = faiss.ProductQuantizer(E, M, 8)

    def train(self, X):
        with quiet_stdout():
            self.pq.train(X)

    def encode(self, X):
        return self.pq.compute_codes(X)

    def decode(self, C):
        return self.pq.decode(C)


class NanoPQ:
    name = "nanopq PQ"

    def __init__(self, E, M, threads, layout):
        import nanopq
        self.pq = nanopq.PQ(M=M, Ks=256, verbose=False)

    def train(self, X):
        self.pq.fit(X, iter=20, seed=0)

    def encode(self, X):
        return self.pq.encode(X)

    def decode(self, C):
        return self.pq.decode(C)


def bench_codecs(data, K, args):
    from threadpoolctl import threadpool_limits

    Xtr = np.ascontiguousarray(data["Xtr"], dtype=np.float32)
    Xte = np.ascontiguousarray(data["Xte"], dtype=np.float32)
    E = Xtr.shape[1]
    M = E // 8
    kinds = [Ours]
    if not args.skip_faiss:
        try:
            import faiss  # noqa: F401
            kinds.append(Faiss)
        except ImportError as exc:
            print(f"(faiss skipped: {exc})")
    if not args.skip_nanopq:
        try:
            import nanopq  # noqa: F401
            kinds.append(NanoPQ)
        except ImportError:
            print("(nanopq not installed: pip install nanopq to compare with it)")
    rows = {}
    with threadpool_limits(limits=args.threads):
        # warm-up: numba cache load / compilation is not training time
        ProductQuantizer(1.0, 8, n_iter=1).fit(Xtr[:300, :64]).decode(
            ProductQuantizer(1.0, 8, n_iter=1).fit(Xtr[:300, :64]).encode(Xtr[:2, :64]))
        codecs = [k(E, M, args.threads, data["layout"]) for k in kinds]
        for c in codecs:
            print(f"K={K}: training {c.name} (E={E}, M={M}) ... load {os.getloadavg()[0]:.1f}", flush=True)
            _, wall, cpu = timed(c.train, Xtr)
            rows[c.name] = {"train": wall, "train_cpu": cpu, "encode": [], "decode": [], "encode_cpu": [],
                            "decode_cpu": []}
        codes = {}
        for _ in range(args.repeats):
            for c in codecs:
                codes[c.name], w, cp = timed(c.encode, Xte)
                rows[c.name]["encode"].append(w)
                rows[c.name]["encode_cpu"].append(cp)
                dec, w, cp = timed(c.decode, codes[c.name])
                rows[c.name]["decode"].append(w)
                rows[c.name]["decode_cpu"].append(cp)
        for c in codecs:
            r = rows[c.name]
            r["mse"] = mse(Xte, c.decode(codes[c.name]))
            r["mse_train"] = mse(Xtr, c.decode(c.encode(Xtr)))
    ours = rows[Ours.name]
    lines = [f"K={K}: E={E}, M={M}, b=1, G=8; train {len(Xtr)} FVs, encode/decode {len(Xte)} test FVs; "
             f"{args.threads} thread(s); load {os.getloadavg()[0]:.1f}",
             f"{'codec':27s} {'train s':>8s} {'cpu s':>7s} {'x ours':>7s} {'encode s':>9s} {'x ours':>7s} "
             f"{'decode s':>9s} {'x ours':>7s} {'MSE test':>9s} {'vs ours':>8s} {'MSE train':>10s}"]
    for name, r in rows.items():
        enc, dec = min(r["encode"]), min(r["decode"])
        lines.append(f"{name:27s} {r['train']:8.1f} {r['train_cpu']:7.1f} {r['train'] / ours['train']:7.2f} "
                     f"{enc:9.3f} {enc / min(ours['encode']):7.2f} {dec:9.3f} {dec / min(ours['decode']):7.2f} "
                     f"{r['mse']:9.5f} {100 * (r['mse'] / ours['mse'] - 1):+7.2f}% {r['mse_train']:10.5f}")
    lines.append(f"(x ours = time / fvstudio's time; vs ours = MSE relative to fvstudio's; encode/decode: best of "
                 f"{args.repeats}; fvstudio: <= 25 Lloyd iterations, stopping once <= 1 % of the training points change centroid)")
    return lines, rows


# --------------------------------------------------------------------------------------------------
# 2. sparsity bit
# --------------------------------------------------------------------------------------------------
def bench_sparsity(data, K, pq):
    lines = []
    for name, X in (("train", data["Xtr"]), ("test", data["Xte"])):
        r = sparsity_storage(pq, X)
        lines.append(f"K={K} {name:5s} {r.n_images:6d} {100 * r.zero_dim_fraction:8.1f}% "
                     f"{100 * r.zero_unit_fraction:9.1f}% {r.float32_bytes:9d} {r.pq_bytes:8d} "
                     f"{r.sparse_bytes_mean:10.1f} {r.sparse_bytes_max:8d} {r.sparse_gain:6.2f}")
    return lines


SPARSITY_HEADER = (f"{'set':11s} {'images':>6s} {'zero dims':>9s} {'zero blocks':>10s} {'float32 B':>9s} "
                   f"{'PQ B':>8s} {'PQ+bit B':>10s} {'max B':>8s} {'gain':>6s}")


# --------------------------------------------------------------------------------------------------
# 3. SGD on codes vs uncompressed (subprocess workers for clean peak RSS)
# --------------------------------------------------------------------------------------------------
def _rss_kb(field="VmRSS"):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def sgd_worker(args):
    """Run in a subprocess: train OneVsRestSGD on uncompressed FVs or on codes, report JSON."""
    from fvstudio.engine.metrics import mean_per_class_accuracy
    from fvstudio.engine.svm import OneVsRestSGD

    params = json.loads(args.sgd_params)
    folder = args.sgd_worker_dir
    ytr = np.load(os.path.join(folder, "ytr.npy"))
    yte = np.load(os.path.join(folder, "yte.npy"))
    # warm-up: compile / load every kernel before measuring
    rng = np.random.default_rng(0)
    OneVsRestSGD(**{**params, "epochs": 1}).fit(rng.standard_normal((60, 16)).astype(np.float32),
                                                np.arange(60) % 3)
    pq = ProductQuantizer.load(os.path.join(folder, "pq.npz"))
    PQRows(pq, pq.load_codes(os.path.join(folder, "codes_test.npz"))).rows([0, 1])
    rss0 = _rss_kb()
    if args.sgd_worker == "dense":
        X = np.load(os.path.join(folder, "Xtr.npy"))  # in RAM
        data_mb = X.nbytes / 2 ** 20
    else:
        renorm = args.sgd_worker == "renorm"
        X = PQRows(pq, pq.load_codes(os.path.join(folder, "codes_train.npz")), renormalise=renorm)
        data_mb = X.codes.nbytes / 2 ** 20
    rss1 = _rss_kb()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM (peak RSS) to the current RSS
        reset = True
    except OSError:
        reset = False
    model, wall, cpu = timed(OneVsRestSGD(**params).fit, X, ytr)
    peak = _rss_kb("VmHWM")
    Xte = np.load(os.path.join(folder, "Xte.npy"), mmap_mode="r")
    acc = mean_per_class_accuracy(yte, model.predict(Xte))
    acc_codes = mean_per_class_accuracy(yte, model.predict(PQRows(pq, pq.load_codes(
        os.path.join(folder, "codes_test.npz")), renormalise=args.sgd_worker == "renorm")))
    model_mb = (model.coef_.nbytes * (2 if params.get("averaging", True) else 1)) / 2 ** 20
    print(json.dumps({"kind": args.sgd_worker, "fit_s": wall, "fit_cpu_s": cpu, "acc": acc, "acc_test_codes": acc_codes,
                      "rss_base_mb": rss0 / 1024, "rss_data_mb": rss1 / 1024, "peak_mb": peak / 1024,
                      "peak_reset": reset, "data_mb": data_mb, "model_mb": model_mb,
                      "quantizer_mb": (pq.codebooks_.nbytes + pq.codebooks_t_.nbytes) / 2 ** 20}))


def bench_sgd(data, K, args, pq=None):
    with tempfile.TemporaryDirectory(prefix="bench_pq_sgd_") as folder:
        Xtr = np.ascontiguousarray(data["Xtr"], dtype=np.float32)
        np.save(os.path.join(folder, "Xtr.npy"), Xtr)
        np.save(os.path.join(folder, "Xte.npy"), np.ascontiguousarray(data["Xte"], dtype=np.float32))
        np.save(os.path.join(folder, "ytr.npy"), data["ytr"])
        np.save(os.path.join(folder, "yte.npy"), data["yte"])
        if pq is None:  # main's quantiser has these parameters (codebooks do not depend on n_jobs)
            pq = ProductQuantizer(1.0, 8, layout=data["layout"], seed=0, n_jobs=args.threads).fit(Xtr)
        pq.save(os.path.join(folder, "pq.npz"))
        pq.save_codes(os.path.join(folder, "codes_train.npz"), pq.encode(Xtr))
        pq.save_codes(os.path.join(folder, "codes_test.npz"), pq.encode(data["Xte"]))
        del Xtr
        lines = [f"K={K}: OneVsRestSGD hinge, {args.sgd_epochs} epochs, balance='sample' (neg_ratio 5), ASGD, seed 0; "
                 f"{len(data['ytr'])} train / {len(data['yte'])} test, {data['n_classes']} classes, "
                 f"E={data['Xtr'].shape[1]}; PQ b=1, G=8",
                 f"{'lambda':>7s} {'trained on':18s} {'fit s':>6s} {'cpu s':>6s} {'acc test FV':>11s} "
                 f"{'acc test codes':>14s} {'data MB':>8s} {'model MB':>8s} {'base RSS':>8s} {'peak RSS':>8s} "
                 f"{'peak-base':>9s}"]
        notes = []
        for lam in args.sgd_lam:
            params = {"loss": "hinge", "lam": lam, "epochs": args.sgd_epochs, "balance": "sample",
                      "neg_ratio": 5.0, "averaging": True, "seed": 0}
            res = {}
            for kind in ("dense", "codes", "renorm"):
                print(f"K={K}: SGD lambda={lam:g} on {kind} ... load {os.getloadavg()[0]:.1f}", flush=True)
                out = subprocess.run([sys.executable, __file__, "--sgd-worker", kind, "--sgd-worker-dir", folder,
                                      "--sgd-params", json.dumps(params)], capture_output=True, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": str(args.threads),
                                          "OPENBLAS_NUM_THREADS": str(args.threads),
                                          "MKL_NUM_THREADS": str(args.threads)})
                if out.returncode:
                    raise RuntimeError(out.stderr)
                res[kind] = json.loads(out.stdout.strip().splitlines()[-1])
            d, c, cr = res["dense"], res["codes"], res["renorm"]
            for name, r in (("uncompressed FVs", d), ("PQ codes (PQRows)", c), ("PQ codes + re-norm", cr)):
                lines.append(f"{lam:7.0e} {name:18s} {r['fit_s']:6.1f} {r['fit_cpu_s']:6.1f} {100 * r['acc']:10.2f}% "
                             f"{100 * r['acc_test_codes']:13.2f}% {r['data_mb']:8.1f} {r['model_mb']:8.1f} "
                             f"{r['rss_base_mb']:8.0f} {r['peak_mb']:8.0f} {r['peak_mb'] - r['rss_base_mb']:9.0f}")
            budget = c["data_mb"] + c["model_mb"] + 64
            notes.append(f"lambda={lam:g}: codes - uncompressed accuracy (test FVs uncompressed) "
                         f"{100 * (c['acc'] - d['acc']):+.2f} points; fit time x{c['fit_s'] / d['fit_s']:.2f}; codes "
                         f"peak - base {c['peak_mb'] - c['rss_base_mb']:.0f} MB vs codes + model + 64 MB = {budget:.0f} MB; "
                         f"re-normalised codes (Sec. 5.1) - uncompressed {100 * (cr['acc'] - d['acc']):+.2f} points")
    return lines + notes + [
        "(base RSS: interpreter + numpy + numba kernels loaded, before the data; it holds the quantiser too "
        f"(codebooks + their transposed copy, {c['quantizer_mb']:.0f} MB), loaded in both workers; peak: VmHWM during "
        f"fit, reset before it: {c['peak_reset']}; model MB = the weights + the ASGD average)"]


# --------------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caltech", default="", help="folder holding caltech101/ and caltech101_splits/")
    ap.add_argument("--workspace", default="", help="fvstudio workspace (descriptor and step cache)")
    ap.add_argument("--K", type=int, nargs="+", default=[64, 256], help="GMM sizes (FV dim 128 K)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--skip-nanopq", action="store_true")
    ap.add_argument("--skip-codecs", action="store_true")
    ap.add_argument("--sgd", action="store_true", help="also SGD on codes vs uncompressed")
    ap.add_argument("--sgd-lam", type=float, nargs="+", default=[1e-4, 1e-5])
    ap.add_argument("--sgd-epochs", type=int, default=10)
    ap.add_argument("--sgd-worker", choices=("dense", "codes", "renorm"), help=argparse.SUPPRESS)
    ap.add_argument("--sgd-worker-dir", help=argparse.SUPPRESS)
    ap.add_argument("--sgd-params", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sgd_worker:
        sgd_worker(args)
        return
    root, ws, why = data_paths(args)
    if why:
        print(f"bench_pq: skipped, {why}")
        return
    print(f"bench_pq: Caltech-101 FVs from {root} (workspace {ws}); load {os.getloadavg()[0]:.1f}")
    sparsity = []
    for K in args.K:
        data = caltech_fvs(root, ws, K)
        print(f"K={K}: FVs {data['Xtr'].shape[0]} train + {data['Xte'].shape[0]} test x {data['Xtr'].shape[1]} "
              f"(loaded in {data['seconds']:.1f} s)", flush=True)
        if not args.skip_codecs:
            lines, _ = bench_codecs(data, K, args)
            print("\n".join(lines) + "\n", flush=True)
        pq = ProductQuantizer(1.0, 8, layout=data["layout"], seed=0, n_jobs=args.threads).fit(data["Xtr"])
        sparsity += bench_sparsity(data, K, pq)
        if args.sgd:
            print("\n".join(bench_sgd(data, K, args, pq)) + "\n", flush=True)
    print("Sparsity bit (Sec. 4.2), b=1, G=8: bytes per image")
    print(SPARSITY_HEADER)
    print("\n".join(sparsity))
    print("(zero blocks: (region, Gaussian) blocks whose 2D gradients are all exactly 0: bit 0, no codes stored)")


if __name__ == "__main__":
    main()

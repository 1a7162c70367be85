"""k-NN on real Fisher Vectors: uncompressed vs PQ vs PQ + re-normalisation (paper Sec. 5.1, Table 7, Fig. 10).

Data: the Caltech-101 FVs of ``bench_pq.py`` (project pipeline, SIFT, K Gaussians, no pyramid;
``--caltech`` / ``FVSTUDIO_CALTECH101`` and ``--workspace`` / ``FVSTUDIO_WORKSPACE``; skipped
without them). Database = the 3,060 training FVs (raw, or PQ codes b = 1, G = 8 trained on them);
queries = the 2,995 test FVs, uncompressed (asymmetric, Sec. 5.1). Euclidean distance, uniform votes.

Per K and variant: one exhaustive search for the largest k, then mean per-class top-1 accuracy for
each k of ``--ks`` from the same neighbour lists; search time; neighbour-frequency figures at
``--hub-k`` (largest N_k, skewness, Robin Hood index, share never chosen, N_k at ranks 1/10/100/1000
of the decreasing curve of Fig. 10). The paper's finding to check: without re-normalisation a few
database items become neighbours of a large share of the queries; with it the frequencies come back
close to the uncompressed ones.

Then the search algorithm (``KNNClassifier(algorithm=...)``) on the PQ database: decode-then-GEMM vs
per-query inner-product tables summed over codes, on ``--table-queries`` queries, ms per query.

Run:  python benchmarks/bench_knn.py --caltech /work/data/caltech101 --workspace /work/data/ws_caltech
      python benchmarks/bench_knn.py ... --K 64 --weak      (also b = 4, G = 2, Table 7's "weak")
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_pq import caltech_fvs, data_paths  # noqa: E402

from fvstudio.engine.hubness import hubness_summary, neighbour_frequency  # noqa: E402
from fvstudio.engine.knn import KNNClassifier  # noqa: E402
from fvstudio.engine.metrics import mean_per_class_accuracy  # noqa: E402
from fvstudio.engine.pq import PQRows, ProductQuantizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caltech", default="")
    ap.add_argument("--workspace", default="")
    ap.add_argument("--K", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 10, 20, 50])
    ap.add_argument("--hub-k", type=int, default=10)
    ap.add_argument("--metric", default="l2", choices=("l2", "cosine"))
    ap.add_argument("--weak", action="store_true", help="also PQ b=4, G=2 (Table 7's weak compression)")
    ap.add_argument("--table-queries", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    root, ws, why = data_paths(args)
    if why:
        print(f"bench_knn: skipped, {why}")
        return
    from threadpoolctl import threadpool_limits

    kmax = max(max(args.ks), args.hub_k)
    print(f"bench_knn: Caltech-101, metric {args.metric}, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    acc_lines, hub_lines, algo_lines = [], [], []
    with threadpool_limits(limits=args.threads):
        for K in args.K:
            data = caltech_fvs(root, ws, K)
            Xtr = np.ascontiguousarray(data["Xtr"], dtype=np.float32)
            Xte = np.ascontiguousarray(data["Xte"], dtype=np.float32)
            ytr, yte = data["ytr"], data["yte"]
            variants = [("uncompressed", Xtr, None)]
            settings = [(1.0, 8)] + ([(4.0, 2)] if args.weak else [])
            for b, G in settings:
                t = time.perf_counter()
                pq = ProductQuantizer(b, G, layout=data["layout"], seed=0, n_jobs=args.threads).fit(Xtr)
                codes = pq.encode(Xtr)
                print(f"K={K}: PQ b={b:g} G={G} trained + database encoded in {time.perf_counter() - t:.1f} s "
                      f"({codes.nbytes / 2 ** 20:.1f} MB of codes vs {Xtr.nbytes / 2 ** 20:.0f} MB)", flush=True)
                variants.append((f"PQ b={b:g} G={G}", PQRows(pq, codes), pq))
                variants.append((f"PQ b={b:g} G={G} + re-norm", PQRows(pq, codes, renormalise=True), pq))
            for name, db, pq in variants:
                model = KNNClassifier(k=kmax, metric=args.metric).fit(db, ytr)
                t = time.perf_counter()
                dist, idx = model.kneighbors(Xte)
                secs = time.perf_counter() - t
                accs = [mean_per_class_accuracy(yte, model.classes_[np.argmax(model.vote(dist[:, :k], idx[:, :k]),
                                                                              axis=1)]) for k in args.ks]
                best = int(np.argmax(accs))
                acc_lines.append(f"K={K:<4d} {name:26s} " + " ".join(f"{100 * a:6.2f}" for a in accs)
                                 + f"  {100 * accs[best]:6.2f} (k={args.ks[best]}) {secs:8.2f}")
                h = hubness_summary(idx[:, :args.hub_k], len(ytr))
                curve = neighbour_frequency(idx[:, :args.hub_k], len(ytr))
                ranks = [curve[r - 1] for r in (1, 10, 100, 1000) if r <= curve.size]
                hub_lines.append(f"K={K:<4d} {name:26s} {h.largest:7d} {100 * h.largest / len(yte):6.1f}% "
                                 f"{h.skewness:8.2f} {h.robin_hood:7.3f} {100 * h.never_chosen:6.1f}% "
                                 + " ".join(f"{v:5d}" for v in ranks))
                print(acc_lines[-1], flush=True)
            # search algorithm on the PQ database
            name, db, pq = variants[1]
            Q = Xte[:args.table_queries]
            times = {}
            for algo in ("gemm", "tables"):
                m = KNNClassifier(k=10, metric=args.metric, algorithm=algo).fit(db, ytr)
                m.kneighbors(Q[:2])
                t = time.perf_counter()
                _, ii = m.kneighbors(Q)
                times[algo] = (time.perf_counter() - t, ii)
            same = float(np.mean(times["gemm"][1] == times["tables"][1]))
            algo_lines.append(f"K={K:<4d} E={Xtr.shape[1]:6d} {len(Q):4d} queries x {len(ytr)} codes: gemm "
                              f"{1e3 * times['gemm'][0] / len(Q):8.2f} ms/query, tables "
                              f"{1e3 * times['tables'][0] / len(Q):8.2f} ms/query (x{times['tables'][0] / times['gemm'][0]:.1f}); "
                              f"same neighbours {100 * same:.1f}%")
    print(f"\nk-NN mean per-class top-1 accuracy (%) on {len(yte)} test queries, database {len(ytr)} train FVs; "
          f"search s = one search for k={kmax}")
    print(f"{'':6s} {'database':26s} " + " ".join(f"{'k=' + str(k):>6s}" for k in args.ks) + f"  {'best':>14s} "
          f"{'search s':>8s}")
    print("\n".join(acc_lines))
    print(f"\nneighbour frequency (Fig. 10) at k={args.hub_k}: N_k = number of the {len(yte)} queries whose "
          f"{args.hub_k} NN include the item (mean {len(yte) * args.hub_k / len(ytr):.2f})")
    print(f"{'':6s} {'database':26s} {'max N_k':>7s} {'% of q':>7s} {'skewness':>8s} {'Robin H':>7s} {'never':>7s} "
          f"N_k at rank 1 / 10 / 100 / 1000")
    print("\n".join(hub_lines))
    print("\nsearch algorithm on PQ codes (b=1, G=8), one thread, k=10")
    print("\n".join(algo_lines))


if __name__ == "__main__":
    main()

"""A scale model: time and storage of ImageNet-size runs on W workers, from costs measured per image here.

Inputs (measured, not assumed; pass your own with the flags):

- ``--rows``: the JSON ``bench_scale.py --json`` wrote. From its ``stream`` row: the descriptors step
  (probe every image + describe the vocabulary images) and the encode step (describe + project + FV of
  every image) in seconds per image on this machine's ``--cores`` cores, and PCA + GMM (a fixed cost: the
  descriptor sample does not grow with the images); from ``stream+pq``: the quantisation per image and the
  bytes of a code; the workspace bytes per image (the store entries, a few hundred bytes).
- ``--sgd-seconds`` / ``--sgd-updates``: one measured SGD fit on PQ codes (``bench_svm.py --codes``:
  seconds, and the class-row updates it made = epochs x (1 + neg_ratio) x images x dims), the cost of
  the paper's large-scale learning (Sec. 5): per class all positives and ``neg_ratio`` times as many
  sampled negatives per epoch, so the work is epochs x (1 + neg_ratio) x N x E, not x C.

Model: wall time = N x (descriptors + encode + quantise cost per image) / (W x cores per worker / cores
here), + PCA/GMM, + SGD (on the client, ``--client-cores``); storage = N x (code bytes + metadata bytes) (+ the
dense FVs if they are kept: N x E x 4). It assumes the per-image cost does not depend on N (measured: flat
memory, ``bench_stream_rss.py``) and that workers read images at the rate they process them.

Run:  python benchmarks/scale_model.py --rows /work/notes/scale/rows.json --sgd-seconds 29.1 \\
          --sgd-updates 6.016e9
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DATASETS = {"ImageNet-1K (ILSVRC 2010)": (1_200_000, 1000), "ImageNet-10K": (9_000_000, 10_184)}


def human_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if b < 1000:
            return f"{b:.1f} {unit}"
        b /= 1000
    return f"{b:.1f} EB"


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", required=True, help="bench_scale.py --json output")
    ap.add_argument("--cores", type=int, default=2, help="cores the measurement ran on")
    ap.add_argument("--images", type=int, default=6055, help="images of the measured run")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--cores-per-worker", type=int, default=1)
    ap.add_argument("--client-cores", type=int, default=8)
    ap.add_argument("--sgd-seconds", type=float, required=True)
    ap.add_argument("--sgd-updates", type=float, required=True, help="epochs x (1 + neg_ratio) x images x dims of that fit")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--neg-ratio", type=float, default=5.0)
    ap.add_argument("--bits", type=float, default=1.0, help="PQ bits per dimension (b) of the codes")
    args = ap.parse_args()
    rows = {r["name"]: r for r in json.loads(Path(args.rows).read_text())}
    st = rows["stream"]
    n = args.images
    t = st["timings"]
    per_image = (t.get("descriptors", 0) + t.get("encode", 0)) * args.cores / n  # core-seconds
    fixed = t.get("pca", 0) + t.get("gmm", 0)
    pq = rows.get("stream+pq")
    # the compress step's time includes learning the codebooks (fixed): an upper bound per image
    quant = (pq["timings"].get("compress", 0) * args.cores / n) if pq else 0.0
    fv_bytes = st["fv_bytes"] / n
    # a code is b bits a dimension + the sparsity bits; the workspace's codes folder also holds the codebooks
    # (a fixed cost, 2^(bG) centroids per group: most of it at Caltech's size), so it is not divided here
    code_bytes = (fv_bytes / 4) * args.bits / 8 + (fv_bytes / 4) / 64 / 8 if pq else None
    meta = st["desc_bytes"] / n  # an upper bound: it includes the vocabulary images' stored descriptors
    print(f"measured ({args.rows}): describe + encode {per_image * 1e3:.1f} core-ms/image, quantise "
          f"{quant * 1e3:.2f} core-ms/image, PCA + GMM {fixed:.0f} s (fixed), FV {human_bytes(fv_bytes)}/image, "
          f"codes {human_bytes(code_bytes) if code_bytes else '-'}/image, store {human_bytes(meta)}/image "
          f"(vocabulary descriptors included); SGD {args.sgd_seconds / args.sgd_updates * 1e12:.2f} s per 1e12 "
          f"class-row-dim updates")
    dims = fv_bytes / 4
    print(f"\n| dataset | images | W workers x {args.cores_per_worker} core | extract + encode + quantise | SGD on codes "
          f"({args.epochs} epochs, neg_ratio {args.neg_ratio:g}, {args.client_cores} client cores) | codes on disk | "
          f"dense FVs if kept |")
    print("|---|---|---|---|---|---|---|")
    for name, (N, C) in DATASETS.items():
        sgd = args.sgd_seconds / args.sgd_updates * args.epochs * (1 + args.neg_ratio) * N * dims / args.client_cores
        for W in args.workers:
            enc = N * (per_image + quant) / (W * args.cores_per_worker) + fixed
            print(f"| {name} | {N:,} | {W} | {human_seconds(enc)} | {human_seconds(sgd)} | "
                  f"{human_bytes(N * ((code_bytes or 0) + 400))} | {human_bytes(N * fv_bytes)} |")


if __name__ == "__main__":
    main()

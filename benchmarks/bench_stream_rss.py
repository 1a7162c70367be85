"""Peak memory of the streaming encode path vs the number of images: does RSS stay flat as N grows?

Run:  python benchmarks/bench_stream_rss.py --root /tmp/rss [--sizes 1000,10000,30000,100000]
                                            [--classes 10] [--side 48] [--n-train 20] [--upto evaluate]
                                            [--n-jobs 2] [--keep-workspaces] [--tracemalloc]

What it measures. With ``descriptors.keep = "vocabulary"`` (the default) the descriptors step stores the
descriptors of ``descriptors.vocab_images`` training images only and probes every other image (loads it,
counts its frames, hashes its bytes); the encode step describes those again block by block (64 images) and
writes the FVs to a chunked zarr array. Memory should then hold one block's descriptors and FVs plus a few
hundred bytes of metadata per image (dataset ids and paths, store entries), never the FVs themselves.

Data. ``--root``/pool gets ``max(--sizes)`` tiny seeded JPEGs (``--side`` px square, ``--classes`` class
folders; each class is a few template textures -- oriented sinusoid gratings plus blobs -- from which each image
is a random crop with its own noise), generated once and reused by later runs. For each N, ``--root``/n<N>/
is a class-folder dataset of hard links to the first N/C images of every class, so the dataset, the store
and the splits really hold N images (a split list over the 100K folder would keep 100K ids in every run).

Pipeline. Per N, on a fresh workspace ``--root``/ws/n<N>, two FRESH subprocesses (so each peak RSS is its
own): (1) ``Pipeline.run_step`` of descriptors, pca, gmm, encode in turn (each reuses the one before), with
ru_maxrss read after each step; (2) on the same workspace, ``run_all`` (classifier + evaluate only, the
rest cached), unless ``--upto encode``. Settings, chosen to keep 100K images quick: SIFT, 1 scale + 1,
patch 24, step 8 (about 20 descriptors per 48 px image), pca.n_components 16, gmm.n_components 16,
vocab_images 200, a random split of ``--n-train`` images per class for training and every other image for
testing (so 200 training images at the defaults, the rest tested), dual SVM with a fixed lambda
(``classifier.select_lambda = false``). The FV: 2 x 16 x 16 dims x 4 pyramid regions = 2048 float32.

Reported per N: seconds per step, peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` + RUSAGE_CHILDREN,
which stays 0: the pipeline uses threads) of the encode run and of the classify run, the RSS right after
Python + imports (the floor), bytes on disk under the workspace's ``descriptors/`` and
``steps/encode/`` (allocated blocks, ``du``-style, and the apparent file sizes) and per image. The verdict
compares the peak RSS at the largest and the smallest N, and the slope in bytes per image between them.
``--tracemalloc`` also reports, per N, the Python-allocated bytes still held after the encode step and the
largest holders (file:line): slow (about 2x), use it on the smaller N to explain any growth.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ENCODE_STEPS = ("descriptors", "pca", "gmm", "encode")
CLASSIFY_STEPS = ("classifier", "evaluate")


# ---------------------------------------------------------------------------------------------- data
def _templates(n_classes: int, side: int, per_class: int, rng) -> np.ndarray:
    """(C, per_class, 2 side, 2 side, 3) uint8 textures: oriented gratings of a class's frequency + blobs."""
    big = 2 * side
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
    out = np.empty((n_classes, per_class, big, big, 3), np.uint8)
    for c in range(n_classes):
        freq = 0.08 + 0.35 * c / max(1, n_classes - 1)
        for t in range(per_class):
            theta = np.pi * (c / n_classes + 0.15 * rng.standard_normal())
            g = np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + rng.uniform(0, 2 * np.pi))
            blobs = np.zeros_like(g)
            for _ in range(3 + c % 4):
                cy, cx, r = rng.uniform(0, big), rng.uniform(0, big), rng.uniform(3, 3 + c)
                blobs += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            base = 0.6 * g + 0.8 * blobs
            base = (base - base.min()) / (np.ptp(base) + 1e-6)
            tint = rng.uniform(0.4, 1.0, 3)
            out[c, t] = np.clip(255 * base[..., None] * tint, 0, 255).astype(np.uint8)
    return out


def generate_pool(pool: Path, n: int, n_classes: int, side: int, seed: int = 0) -> float:
    """``n`` JPEGs, n / C per class, in ``pool``/<class>/ (reused when already there); returns seconds."""
    import cv2

    per_class = -(-n // n_classes)
    done = pool / f".done-{n}-{n_classes}-{side}-{seed}"
    if done.exists():
        return 0.0
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    tpl = _templates(n_classes, side, 4, rng)
    for c in range(n_classes):
        d = pool / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        crng = np.random.default_rng([seed, c])
        for k in range(per_class):
            t = tpl[c, k % tpl.shape[1]]
            y0, x0 = crng.integers(0, side, 2)
            img = t[y0:y0 + side, x0:x0 + side].astype(np.int16)
            img += crng.integers(-20, 21, img.shape, dtype=np.int16)
            cv2.imwrite(str(d / f"img{k:06d}.jpg"), np.clip(img, 0, 255).astype(np.uint8),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
    done.touch()
    return time.perf_counter() - t0


def make_view(pool: Path, view: Path, n: int, n_classes: int) -> None:
    """``view``/<class>/ = hard links (copies across file systems) to the first n / C images of each class."""
    per_class = n // n_classes
    if (view / f".done-{n}").exists():
        return
    for c in range(n_classes):
        src, dst = pool / f"class{c:02d}", view / f"class{c:02d}"
        dst.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            s, d = src / f"img{k:06d}.jpg", dst / f"img{k:06d}.jpg"
            if not d.exists():
                try:
                    os.link(s, d)
                except OSError:
                    shutil.copy2(s, d)
    (view / f".done-{n}").touch()


def disk_usage(path: Path):
    """(allocated bytes, apparent bytes, files) under ``path``."""
    alloc = apparent = files = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            alloc += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return alloc, apparent, files


# ------------------------------------------------------------------------------------------- worker
def _maxrss() -> int:
    """Peak RSS in bytes of this process plus (the largest of) its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return own + kids


def _rss_now() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def config_for(root: Path, n_train: int, n_jobs: int):
    from fvstudio.pipeline import PipelineConfig

    cfg = PipelineConfig()
    cfg.update({"dataset.root": str(root), "dataset.split": "random", "dataset.n_train": n_train,
                "dataset.n_test": 0, "descriptors.channels": ["sift"],
                "descriptors.scales": 2, "descriptors.step": 8, "descriptors.patch": 24,
                "descriptors.keep": "vocabulary", "descriptors.vocab_images": 200,
                "pca.n_components": 16, "gmm.n_components": 16, "classifier.select_lambda": False,
                "classifier.solver": "dual", "runtime.n_jobs": n_jobs})
    return cfg


def worker(args) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    floor_maxrss = _maxrss()
    import fvstudio.pipeline  # noqa: F401  (the imports are part of the floor)
    from fvstudio.pipeline import Pipeline

    import zarr  # noqa: F401
    out = {"n_root": None, "mode": args.worker, "steps": {}, "maxrss_after": {}, "rss_after": {}}
    out["floor_maxrss_python"] = floor_maxrss
    out["floor_rss_imports"] = _rss_now()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(8)
    pipe = Pipeline(config_for(Path(args.dataset), args.n_train, args.n_jobs), args.workspace)
    steps = ENCODE_STEPS if args.worker == "encode" else CLASSIFY_STEPS
    t_all = time.perf_counter()
    for step in steps:
        t0 = time.perf_counter()
        pipe.run_step(step)
        out["steps"][step] = time.perf_counter() - t0
        out["maxrss_after"][step] = _maxrss()
        out["rss_after"][step] = _rss_now()
    out["seconds"] = time.perf_counter() - t_all
    out["maxrss"] = _maxrss()  # the pipeline's peak: read before this function's own bookkeeping below
    ctx = pipe.context()
    out["n_images"] = len(pipe.dataset)
    out["n_train"] = int(len(pipe.splits[0].train))
    out["n_test"] = int(len(pipe.splits[0].test))
    store = pipe.store("sift")
    out["n_stored"] = int(store.stored(ctx.needed_indices()).sum())
    if args.worker == "evaluate":
        res = pipe.result()
        out["accuracy"] = float(res.metrics["mean_per_class_accuracy"]) if res else None
    else:
        enc = pipe.artifact("encode")
        out["fv_type"] = type(enc.fvs).__name__
        out["fv_dim"] = int(enc.fvs.shape[1])
        # what the main per-image structures cost (json size of the store's entries; ids + paths)
        out["entries_json_bytes"] = len(json.dumps(list(store._entries.values())))
        out["ids_chars"] = int(sum(len(s) for s in pipe.dataset.ids))
    if args.tracemalloc:
        import tracemalloc

        snap = tracemalloc.take_snapshot()
        cur, peak = tracemalloc.get_traced_memory()
        out["traced_current"], out["traced_peak"] = cur, peak
        top = snap.statistics("lineno")[:12]
        out["traced_top"] = [[str(s.traceback[0]).replace(str(REPO) + "/", ""), s.size, s.count] for s in top]
        tracemalloc.stop()
    out["maxrss_with_bookkeeping"] = _maxrss()
    out["children_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print("RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------- main
def run_worker(mode: str, dataset: Path, ws: Path, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--dataset", str(dataset),
           "--workspace", str(ws), "--n-train", str(args.n_train), "--n-jobs", str(args.n_jobs)]
    if args.tracemalloc:
        cmd.append("--tracemalloc")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    # the child's own peak as its parent sees it (ru_maxrss of the largest waited-for child so far)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"worker {mode} for {dataset} failed (exit {proc.returncode})")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    res["wall"] = time.perf_counter() - t0
    return res


MB = 2 ** 20


def _step_table(rows, run: str, key: str, steps, extra, extra_head: str) -> None:
    """Peak RSS after each step of one run kind, and the RSS held at its end, one line per N."""
    print(f"\npeak RSS after each step of the {run} run (MB), and RSS held at its end:")
    print(f"{'N':>7} " + " ".join(f"{s:>11}" for s in steps) + f" {'RSS at end':>11}" + extra_head)
    for r in rows:
        d = r[key]
        print(f"{r['n']:7d} " + " ".join(f"{d['maxrss_after'][s] / MB:11.0f}" for s in steps)
              + f" {d['rss_after'][steps[-1]] / MB:11.0f}" + extra(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/rss", help="folder for the images and the workspaces")
    ap.add_argument("--sizes", default="1000,10000,30000,100000", help="comma-separated numbers of images N")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--side", type=int, default=48, help="image side in px")
    ap.add_argument("--n-train", type=int, default=20, help="training images per class (the rest are tested)")
    ap.add_argument("--n-jobs", type=int, default=2, help="runtime.n_jobs")
    ap.add_argument("--upto", choices=("encode", "evaluate"), default="evaluate",
                    help="encode: skip the classify run (classifier + evaluate)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the unmeasured warm-up run (numba compilation) before the first N")
    ap.add_argument("--keep-workspaces", action="store_true", help="keep --root/ws/n<N> after measuring it")
    ap.add_argument("--tracemalloc", action="store_true", help="trace Python allocations (slow; see docstring)")
    # internal: one measurement in a fresh process
    ap.add_argument("--worker", choices=("encode", "evaluate"), help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--workspace", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    root = Path(args.root)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    pool = root / "pool"
    gen = generate_pool(pool, max(sizes), args.classes, args.side)
    print(f"pool: {max(sizes)} {args.side}x{args.side} JPEGs in {args.classes} classes at {pool} "
          f"({'generated in %.1f s' % gen if gen else 'reused'})", file=sys.stderr, flush=True)
    if args.warmup:  # numba compiles (and caches on disk) at the first run: keep that out of the first row
        view, ws = root / "warmup", root / "ws" / "warmup"
        make_view(pool, view, 20 * args.classes + 100, args.classes)
        shutil.rmtree(ws, ignore_errors=True)
        t0 = time.perf_counter()
        run_worker("encode", view, ws, args)
        if args.upto == "evaluate":
            run_worker("evaluate", view, ws, args)
        shutil.rmtree(ws, ignore_errors=True)
        print(f"warm-up run ({20 * args.classes + 100} images) {time.perf_counter() - t0:.1f} s", file=sys.stderr,
              flush=True)
    rows = []
    for n in sizes:
        view, ws = root / f"n{n}", root / "ws" / f"n{n}"
        t0 = time.perf_counter()
        make_view(pool, view, n, args.classes)
        shutil.rmtree(ws, ignore_errors=True)
        print(f"N={n}: view ready in {time.perf_counter() - t0:.1f} s; encode run ...", file=sys.stderr, flush=True)
        enc = run_worker("encode", view, ws, args)
        print(f"N={n}: encode run {enc['wall']:.1f} s, peak RSS {enc['maxrss'] / MB:.0f} MB", file=sys.stderr,
              flush=True)
        d_alloc, d_app, d_files = disk_usage(ws / "descriptors")
        e_alloc, e_app, e_files = disk_usage(ws / "steps" / "encode")
        cls = run_worker("evaluate", view, ws, args) if args.upto == "evaluate" else None
        if cls:
            print(f"N={n}: classify run {cls['wall']:.1f} s, peak RSS {cls['maxrss'] / MB:.0f} MB, accuracy "
                  f"{100 * cls['accuracy']:.1f}%", file=sys.stderr, flush=True)
        rows.append({"n": n, "enc": enc, "cls": cls, "desc_disk": (d_alloc, d_app, d_files),
                     "enc_disk": (e_alloc, e_app, e_files)})
        if not args.keep_workspaces:
            shutil.rmtree(ws, ignore_errors=True)

    e0 = rows[0]["enc"]
    print(f"\nfvstudio streaming encode (descriptors.keep = vocabulary), {args.classes} classes, "
          f"{args.side}x{args.side} JPEG, SIFT step 8 x 2 scales, PCA 16, K = 16, FV dim {e0['fv_dim']} "
          f"({e0['fv_type']}), vocab_images 200, {args.n_train} train/class, the rest tested, n_jobs {args.n_jobs}")
    print(f"peak RSS = ru_maxrss of a fresh process (children: {max(r['enc']['children_maxrss'] for r in rows)} B); "
          f"floor after imports {e0['floor_rss_imports'] / MB:.0f} MB; disk = allocated blocks (apparent size)\n")
    hdr = (f"{'N':>7} {'train':>5} {'test':>6} {'desc s':>7} {'pca s':>6} {'gmm s':>6} {'enc s':>7} "
           f"{'img/s':>6} {'RSS enc MB':>10} {'clf+eval s':>10} {'RSS clf MB':>10} "
           f"{'desc B/img':>16} {'FV B/img':>16}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        e, c, n = r["enc"], r["cls"], r["n"]
        st = e["steps"]
        rate = n / (st["descriptors"] + st["encode"])
        clf_s = f"{c['steps']['classifier'] + c['steps']['evaluate']:10.1f}" if c else f"{'-':>10}"
        clf_m = f"{c['maxrss'] / MB:10.0f}" if c else f"{'-':>10}"
        da, dp, _ = r["desc_disk"]
        ea, ep, _ = r["enc_disk"]
        print(f"{n:7d} {e['n_train']:5d} {e['n_test']:6d} {st['descriptors']:7.1f} {st['pca']:6.1f} {st['gmm']:6.1f} "
              f"{st['encode']:7.1f} {rate:6.0f} {e['maxrss'] / MB:10.0f} {clf_s} {clf_m} "
              f"{da / n:7.0f} ({dp / n:6.0f}) {ea / n:7.0f} ({ep / n:6.0f})")
    _step_table(rows, "encode", "enc", ENCODE_STEPS, lambda r: f" {r['enc']['entries_json_bytes'] / r['n']:18.0f}",
                f" {'entries json B/img':>18}")
    if rows[0]["cls"]:
        _step_table(rows, "classify", "cls", CLASSIFY_STEPS, lambda r: "", "")
    if args.tracemalloc:
        print("\ntracemalloc after the encode run: Python-allocated bytes still held, and the largest holders")
        for r in rows:
            e = r["enc"]
            print(f"N={r['n']}: {e['traced_current'] / MB:.1f} MB held ({e['traced_current'] / r['n']:.0f} B/img), "
                  f"traced peak {e['traced_peak'] / MB:.1f} MB")
            for where, size, count in e["traced_top"][:8]:
                print(f"   {size / MB:8.2f} MB {size / r['n']:7.0f} B/img {count:8d} blocks  {where}")

    lo, hi = rows[0], rows[-1]
    dn = hi["n"] - lo["n"]

    def verdict(kind, key):
        a, b = lo[key]["maxrss"], hi[key]["maxrss"]
        slope = (b - a) / dn if dn else 0.0
        return (f"{kind}: peak RSS {b / MB:.0f} MB at N={hi['n']} vs {a / MB:.0f} MB at N={lo['n']}: ratio "
                f"{b / a:.2f}, {slope:+.0f} B per extra image ({slope * 1e6 / MB:+.0f} MB per million images; "
                f"one FV is {4 * hi['enc']['fv_dim']} B)")

    print("\nverdict " + verdict("encode run (descriptors..encode)", "enc"))
    if hi["cls"]:
        print("verdict " + verdict("classify run (classifier + evaluate)", "cls"))


if __name__ == "__main__":
    main()

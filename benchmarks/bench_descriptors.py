"""Dense SIFT / LCS speed: fvstudio vs OpenCV's SIFT.compute on the same dense multi-scale grid.

Run:  python benchmarks/bench_descriptors.py [--repeats 15] [--pixels 100000]

Images: scikit-image's `astronaut` and `coffee`, resized (INTER_AREA) to ~100K pixels, as the paper
resizes every image (Sec. 3.1). Everything single-threaded (cv2.setNumThreads(1); our kernels are
single-threaded numba). Each repeat runs every method once on every image (interleaved), and the
table reports the min and the median over repeats (the machine is shared: the min is the
least-disturbed figure). OpenCV gets the exact frames we produce, as cv2.KeyPoint(x, y, size) with
size = patch / 6 (OpenCV's spatial bin is 3 * size / 2 pixels, so 6-px bins of a 24-px patch need
size 4; coarser levels scale accordingly), computed on the same gray image (as uint8).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage import data  # noqa: E402

from fvstudio.engine.descriptors import dense_sift, local_color_statistics, to_gray  # noqa: E402


def _image(name: str, pixels: int) -> np.ndarray:
    rgb = getattr(data, name)().astype(np.float32) / 255.0
    h, w = rgb.shape[:2]
    s = (pixels / (h * w)) ** 0.5
    return cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def _opencv_runner(gray: np.ndarray, res):
    sift = cv2.SIFT_create()
    u8 = np.clip(gray * 255.0 + 0.5, 0, 255).astype(np.uint8)
    kps = [cv2.KeyPoint(float(x), float(y), float(s) / 6.0, 0.0)
           for (x, y), s in zip(res.positions.tolist(), res.scales.tolist())]

    def run():
        _, d = sift.compute(u8, kps)
        return d
    return run


def _to_opencv_layout() -> np.ndarray:
    """Column permutation taking our SIFT order to OpenCV's: OpenCV stores bin (bx, by) and
    orientation t (clockwise on screen, ours) at 8 (4 by + bx) + (-t mod 8) (angles with y up)."""
    perm = np.empty(128, np.int64)
    for bx in range(4):
        for by in range(4):
            for t in range(8):
                perm[8 * (4 * by + bx) + (-t) % 8] = 8 * (by + 4 * bx) + (2 - t) % 8
    return perm


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = (na > 0) & (nb > 0)
    return float(np.mean(np.sum(a[ok] * b[ok], 1) / (na[ok] * nb[ok])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--pixels", type=int, default=100_000)
    args = ap.parse_args()
    cv2.setNumThreads(1)

    images = {name: _image(name, args.pixels) for name in ("astronaut", "coffee")}
    rows = []
    agreement = {}
    for name, rgb in images.items():
        gray = to_gray(rgb)
        ref = dense_sift(gray)  # also compiles the kernels
        local_color_statistics(rgb)
        methods = {
            "fvstudio dense_sift gauss": lambda: dense_sift(gray, window="gauss"),
            "fvstudio dense_sift flat": lambda: dense_sift(gray, window="flat"),
            "OpenCV SIFT.compute": _opencv_runner(gray, ref),
            "fvstudio LCS (96-d)": lambda: local_color_statistics(rgb),
        }
        out_opencv = methods["OpenCV SIFT.compute"]()
        agreement[name] = _mean_cosine(ref.descriptors[:, _to_opencv_layout()], out_opencv)
        times = {m: [] for m in methods}
        for _ in range(args.repeats):
            for m, fn in methods.items():
                t0 = time.perf_counter()
                fn()
                times[m].append(time.perf_counter() - t0)
        n_desc = {m: len(ref) for m in methods}
        n_desc["OpenCV SIFT.compute"] = len(out_opencv)
        base = min(times["OpenCV SIFT.compute"])
        for m in methods:
            t = np.array(times[m])
            rows.append((f"{name} {rgb.shape[0]}x{rgb.shape[1]}", m, n_desc[m], t.min() * 1e3,
                         np.median(t) * 1e3, n_desc[m] / t.min(), base / t.min()))

    print(f"dense descriptors, 5 scales (24-px patches every 4 px, factor sqrt 2), single thread, "
          f"{args.repeats} interleaved repeats")
    try:
        print("load average before/after:", open("/proc/loadavg").read().split()[:3])
    except OSError:
        pass
    hdr = f"{'image':<20} {'method':<28} {'T':>6} {'min ms':>8} {'med ms':>8} {'desc/s':>10} {'vs OpenCV':>9}"
    print(hdr)
    print("-" * len(hdr))
    for img, m, n, tmin, tmed, rate, ratio in rows:
        print(f"{img:<20} {m:<28} {n:>6d} {tmin:>8.2f} {tmed:>8.2f} {rate:>10.3g} {ratio:>8.1f}x")
    print("(vs OpenCV = OpenCV min time / this method's min time; > 1 means faster than OpenCV)")
    print("for reference (issue 3, same kind of image, not re-run here: no VLFeat binding installed): "
          "VLFeat dense SIFT 297 ms (Gaussian window), 17.2 ms (flat window); agreement with VLFeat "
          "is checked by tests/test_descriptors.py against its recorded output")
    print("same frames, same values? mean cosine of our gauss descriptors vs OpenCV's (reordered to "
          "OpenCV's layout): " + ", ".join(f"{k} {v:.3f}" for k, v in agreement.items()))


if __name__ == "__main__":
    main()

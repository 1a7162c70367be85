"""End to end: the fvstudio pipeline vs the same pipeline assembled from OpenCV + scikit-learn + scikit-image.

Run:  python benchmarks/bench_pipeline.py [--dataset sample_data/textures] [--gaussians 256]
                                          [--n-train 30] [--splits 3] [--first-seed 0]

Both sides use the same images (loaded by ``fvstudio.data.images.load_image``, <= 100K pixels), the same
random splits (``dataset.n_train`` per class; ``dataset.seed`` from ``--first-seed`` on, one per split) and
the paper's configuration (Sec. 3.1): dense SIFT on 24x24 patches every 4 px at 5 scales, PCA to 64 dims
fitted on 100K training descriptors, a diagonal GMM with K Gaussians fitted on 200K PCA-projected training
descriptors (<= 100 EM iterations, tol 1e-4), Fisher vectors w.r.t. means and sigmas with power (0.5) and
L2 normalisation per region of a 1x1 + 3x1 spatial pyramid, one-vs-rest linear SVMs with the
regularisation chosen by 3-fold CV on the training set.

The peer, stage by stage:
- descriptors: OpenCV ``SIFT.compute`` on exactly our dense frames (``cv2.KeyPoint(x, y, patch / 6)``,
  as in ``bench_descriptors.py``), on the uint8 gray image;
- pca: ``sklearn.decomposition.PCA(64)``;
- gmm: ``sklearn.mixture.GaussianMixture(K, covariance_type="diag", max_iter=100, tol=1e-4)``;
- encode: ``skimage.feature.fisher_vector`` per pyramid region (the weight block dropped, then signed
  square root + L2 per region), after ``PCA.transform``;
- classifier: ``sklearn.svm.LinearSVC`` with C chosen by ``GridSearchCV`` (3 folds, balanced accuracy)
  over C = 1 / (lambda n_train) for our lambda grid, then scores on the test set.

Ours is ``fvstudio.pipeline.Pipeline.run_all`` on a fresh workspace (so every step is computed); the peer
runs on the same split right after it. Both sides run every split from scratch; per stage the min over
splits is reported (the machine is shared). Accuracy = mean per-class top-1 on the test set, computed by
the same function for both, per split, then mean, std and the paired difference over splits: with 80
test images a single split moves by several points, so one split cannot tell the two apart.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGES = ("descriptors", "pca", "gmm", "encode", "classifier")


def run_ours(cfg, workspace):
    from fvstudio.pipeline import Pipeline

    pipe = Pipeline(cfg.copy(), workspace)
    t0 = time.perf_counter()
    res = pipe.run_all()
    total = time.perf_counter() - t0
    times = {s: res.timings[s] for s in STAGES}
    times["classifier"] += res.timings["evaluate"]
    return pipe, res, times, total


def run_peer(pipe, cfg, lam_grid, seed=0):
    import cv2
    from skimage.feature import fisher_vector
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import LinearSVC

    from fvstudio.data.images import load_image
    from fvstudio.engine import metrics
    from fvstudio.engine.descriptors import to_gray

    ds, split = pipe.dataset, pipe.splits[0]
    store = pipe.store("sift")  # only for the frames (x, y, patch size) of our dense grid
    images = np.unique(np.concatenate([split.train, split.test]))
    frames = {}
    for i in images:
        d = store.get(int(i))
        frames[int(i)] = (d.positions, d.scales)
    rng = np.random.default_rng(seed)
    times = {}

    # descriptors
    t0 = time.perf_counter()
    sift = cv2.SIFT_create()
    desc, pos, shapes = {}, {}, {}
    for i in images:
        rgb = load_image(ds.paths[int(i)], max_pixels=cfg.get("dataset.max_pixels"))
        u8 = np.clip(to_gray(rgb) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        p, s = frames[int(i)]
        kps = [cv2.KeyPoint(float(x), float(y), float(sz) / 6.0) for (x, y), sz in zip(p.tolist(), s.tolist())]
        kps, d = sift.compute(u8, kps)
        desc[int(i)] = d.astype(np.float32)
        pos[int(i)] = np.array([k.pt for k in kps], np.float32)
        shapes[int(i)] = u8.shape
    times["descriptors"] = time.perf_counter() - t0
    print(f"  peer descriptors: {times['descriptors']:.1f} s", file=sys.stderr)

    def sample(n):
        allx = np.concatenate([desc[int(i)] for i in split.train])
        return allx[rng.choice(len(allx), size=min(n, len(allx)), replace=False)]

    # pca
    t0 = time.perf_counter()
    pca = PCA(cfg.get("pca.n_components"), random_state=seed).fit(sample(cfg.get("pca.sample")))
    times["pca"] = time.perf_counter() - t0
    print(f"  peer pca: {times['pca']:.1f} s", file=sys.stderr)
    # gmm
    t0 = time.perf_counter()
    X = pca.transform(sample(cfg.get("gmm.sample"))).astype(np.float32)
    gmm = GaussianMixture(cfg.get("gmm.n_components"), covariance_type="diag", max_iter=cfg.get("gmm.max_iter"),
                          tol=cfg.get("gmm.tol"), random_state=seed).fit(X)
    times["gmm"] = time.perf_counter() - t0
    print(f"  peer gmm: {times['gmm']:.1f} s", file=sys.stderr)
    # encode: 1x1 + 3x1 pyramid, weight block dropped, signed sqrt + L2 per region
    t0 = time.perf_counter()
    K = gmm.n_components
    fvs = {}
    for i in images:
        Xi = pca.transform(desc[int(i)]).astype(np.float32)
        y = pos[int(i)][:, 1]
        H = shapes[int(i)][0]
        stripe = np.minimum((y * 3 / H).astype(int), 2)
        blocks = []
        for mask in (np.ones(len(Xi), bool), stripe == 0, stripe == 1, stripe == 2):
            if not mask.any():
                blocks.append(np.zeros(2 * K * Xi.shape[1], np.float32))
                continue
            v = fisher_vector(Xi[mask], gmm)[K:]
            v = np.sign(v) * np.sqrt(np.abs(v))
            blocks.append((v / max(np.linalg.norm(v), 1e-12)).astype(np.float32))
        fvs[int(i)] = np.concatenate(blocks)
    times["encode"] = time.perf_counter() - t0
    print(f"  peer encode: {times['encode']:.1f} s", file=sys.stderr)
    # classifier
    t0 = time.perf_counter()
    Xtr = np.stack([fvs[int(i)] for i in split.train])
    Xte = np.stack([fvs[int(i)] for i in split.test])
    ytr, yte = ds.labels[split.train], ds.labels[split.test]
    grid = {"C": [1.0 / (lam * len(ytr)) for lam in lam_grid]}
    search = GridSearchCV(LinearSVC(), grid, cv=3, scoring="balanced_accuracy").fit(Xtr, ytr)
    scores = search.decision_function(Xte)
    times["classifier"] = time.perf_counter() - t0
    print(f"  peer classifier: {times['classifier']:.1f} s", file=sys.stderr)
    acc = metrics.mean_per_class_accuracy(yte, np.argmax(scores, 1), len(ds.class_names))
    return acc, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(REPO / "sample_data" / "textures"))
    ap.add_argument("--gaussians", type=int, default=256)
    ap.add_argument("--n-train", type=int, default=30)
    ap.add_argument("--splits", type=int, default=3,
                    help="random splits (dataset.seed = S .. S+N-1); each is run from scratch by both sides")
    ap.add_argument("--first-seed", type=int, default=0, help="S, the dataset.seed of the first split")
    args = ap.parse_args()

    from fvstudio.engine import metrics
    from fvstudio.pipeline import PipelineConfig

    base = PipelineConfig()
    base.update({"dataset.root": args.dataset, "dataset.split": "random", "dataset.n_train": args.n_train,
                 "gmm.n_components": args.gaussians, "descriptors.channels": ["sift"],  # the peer is SIFT only
                 "gmm.position_scale": 0.0,  # and models descriptors without their positions, as the paper
                 "descriptors.contrast_threshold": 0.0,  # and zeroes no low-contrast frame (OpenCV SIFT on all)
                 "classifier.cv_folds": 3})  # the peer's GridSearchCV(cv=3)
    lam_grid = base.get("classifier.lam_grid")
    ours_t, peer_t = {s: [] for s in STAGES}, {s: [] for s in STAGES}
    ours_total, peer_total, ours_acc, peer_acc = [], [], [], []
    seeds = list(range(args.first_seed, args.first_seed + args.splits))
    for seed in seeds:
        cfg = base.copy()
        cfg.set("dataset.seed", seed)
        ws = Path(tempfile.mkdtemp(prefix="fvstudio-bench-"))
        try:
            pipe, res, t, total = run_ours(cfg, ws)
            ours_acc.append(res.metrics["mean_per_class_accuracy"])
            for s in STAGES:
                ours_t[s].append(t[s])
            ours_total.append(total)
            print(f"split {seed}: fvstudio {total:.1f} s, accuracy {100 * ours_acc[-1]:.2f}%", file=sys.stderr)
            acc, pt = run_peer(pipe, cfg, lam_grid)
            peer_acc.append(acc)
            for s in STAGES:
                peer_t[s].append(pt[s])
            peer_total.append(sum(pt.values()))
            print(f"split {seed}: peer {sum(pt.values()):.1f} s, accuracy {100 * acc:.2f}%", file=sys.stderr)
        finally:
            shutil.rmtree(ws, ignore_errors=True)

    ds = pipe.dataset
    n = args.splits
    print(f"\n{ds.describe()}")
    print(f"{n} random split(s) (dataset.seed {seeds[0]}..{seeds[-1]}), each {len(pipe.splits[0].train)} train / "
          f"{len(pipe.splits[0].test)} test; K = {args.gaussians}; times: min over splits\n")
    print(f"{'stage':<12} {'fvstudio (s)':>13} {'peer (s)':>10} {'peer/ours':>10}")
    peer_names = {"descriptors": "OpenCV SIFT.compute", "pca": "sklearn PCA", "gmm": "sklearn GaussianMixture",
                  "encode": "skimage fisher_vector", "classifier": "sklearn LinearSVC + GridSearchCV"}
    for s in STAGES:
        a, b = min(ours_t[s]), min(peer_t[s])
        print(f"{s:<12} {a:13.2f} {b:10.2f} {b / max(a, 1e-9):9.1f}x   ({peer_names[s]})")
    a, b = min(ours_total), min(peer_total)
    print(f"{'total':<12} {a:13.2f} {b:10.2f} {b / a:9.1f}x")

    print("\nmean per-class accuracy (%)")
    print(f"{'split':<8} {'fvstudio':>9} {'peer':>7} {'ours-peer':>10}")
    for seed, x, y in zip(seeds, ours_acc, peer_acc):
        print(f"{seed:<8} {100 * x:9.2f} {100 * y:7.2f} {100 * (x - y):+10.2f}")
    (mo, so), (mp, sp) = metrics.mean_std(np.array(ours_acc)), metrics.mean_std(np.array(peer_acc))
    diff = np.array(ours_acc) - np.array(peer_acc)
    md, sd = metrics.mean_std(diff)
    se = sd / np.sqrt(n) if n > 1 else float("nan")
    print(f"{'mean':<8} {100 * mo:9.2f} {100 * mp:7.2f} {100 * md:+10.2f}")
    print(f"{'std':<8} {100 * so:9.2f} {100 * sp:7.2f} {100 * sd:10.2f}")
    print(f"\npaired difference ours - peer: {100 * md:+.2f} points, standard error {100 * se:.2f} "
          f"over {n} split(s); {int((diff > 0).sum())} better, {int((diff == 0).sum())} equal, "
          f"{int((diff < 0).sum())} worse")


if __name__ == "__main__":
    main()

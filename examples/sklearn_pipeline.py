"""The Fisher Vector pipeline inside scikit-learn: Pipeline + GridSearchCV over the GMM size K, from image paths.

    python examples/sklearn_pipeline.py                       # sample_data/textures (8 classes, ~2-3 min)
    python examples/sklearn_pipeline.py --caltech /data/caltech101 --classes 10

``--caltech`` points at a folder holding ``caltech101/`` (one sub-folder per class) and
``caltech101_splits/train30_seed0.txt`` / ``test50_seed0.txt`` (one ``<class>/<file>`` per line). By default
only the first ``--classes`` classes in alphabetical order (BACKGROUND_Google left out) are used so that it
runs in minutes; ``--classes 0`` uses all 102. Descriptors are cached by ``Pipeline(memory=...)`` so the grid
extracts each fold's images once. Needs scikit-learn (``pip install -e ".[bench]"``).
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from fvstudio.engine.metrics import mean_per_class_accuracy
from fvstudio.engine.svm import OneVsRestSGD
from fvstudio.transformers import DenseSIFT, FisherVectorEncoder

REPO = Path(__file__).resolve().parents[1]


def sample_split(root: Path, n_train: int = 30, seed: int = 0):
    """Class folders of ``root``: n_train random images per class for training, the rest for testing."""
    rng = random.Random(seed)
    tr, te = [], []
    for c, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        rng.shuffle(files)
        tr += [(f, c) for f in files[:n_train]]
        te += [(f, c) for f in files[n_train:]]
    return tr, te, sorted(p.name for p in root.iterdir() if p.is_dir())


def caltech_split(root: Path, n_classes: int):
    images = root / "caltech101"
    lists = root / "caltech101_splits"
    names = sorted(p.name for p in images.iterdir() if p.is_dir() and p.name != "BACKGROUND_Google")
    if n_classes:
        names = names[:n_classes]
    index = {n: i for i, n in enumerate(names)}

    def read(name):
        out = []
        for line in (lists / name).read_text().split():
            cls = line.split("/")[0]
            if cls in index:
                out.append((str(images / line), index[cls]))
        return out

    return read("train30_seed0.txt"), read("test50_seed0.txt"), names


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caltech", type=Path, help="folder holding caltech101/ and caltech101_splits/")
    ap.add_argument("--classes", type=int, default=10, help="Caltech classes used (0 = all 102; default 10)")
    ap.add_argument("--grid", default=None, help="comma-separated K values (default 16,32 sample / 32,64 Caltech)")
    ap.add_argument("--jobs", type=int, default=2, help="threads for descriptors, EM and encoding")
    args = ap.parse_args(argv)

    if args.caltech:
        train, test, names = caltech_split(args.caltech, args.classes)
        grid = [int(v) for v in (args.grid or "32,64").split(",")]
        what = f"Caltech-101, {len(names)} classes"
    else:
        train, test, names = sample_split(REPO / "sample_data" / "textures")
        grid = [int(v) for v in (args.grid or "16,32").split(",")]
        what = "sample_data/textures"
    Xtr, ytr = [p for p, _ in train], np.array([c for _, c in train])
    Xte, yte = [p for p, _ in test], np.array([c for _, c in test])
    print(f"{what}: {len(Xtr)} training / {len(Xte)} test images, grid K = {grid}")

    with tempfile.TemporaryDirectory(prefix="fv-sklearn-cache-") as cache:
        pipe = Pipeline([("densesift", DenseSIFT(n_jobs=args.jobs)),
                         ("fishervectorencoder", FisherVectorEncoder(pca_dims=64, sample=50_000, n_jobs=args.jobs)),
                         ("onevsrestsgd", OneVsRestSGD())], memory=cache)
        search = GridSearchCV(pipe, {"fishervectorencoder__n_components": grid}, cv=3)
        t0 = time.perf_counter()
        search.fit(Xtr, ytr)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = search.predict(Xte)
        t_test = time.perf_counter() - t0

    print("  K   mean CV accuracy (3 folds)   std")
    for K, m, s in zip(grid, search.cv_results_["mean_test_score"], search.cv_results_["std_test_score"]):
        print(f"{K:4d}   {m:.4f}                       {s:.4f}")
    best = search.best_params_["fishervectorencoder__n_components"]
    fv = search.best_estimator_.named_steps["fishervectorencoder"]
    print(f"selected K = {best} (FV dimension {fv.dim}), refitted on all {len(Xtr)} training images")
    print(f"test accuracy {np.mean(pred == yte):.4f}, mean per-class accuracy "
          f"{mean_per_class_accuracy(yte, pred):.4f}")
    print(f"grid search + refit {t_fit:.1f} s, test {t_test:.1f} s")


if __name__ == "__main__":
    main()

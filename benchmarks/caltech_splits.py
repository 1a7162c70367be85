"""Caltech-101 accuracy, split by split: the figures of the README's "On photographs" tables (issue #14).

Runs the pipeline once per split seed, with the README's config holding only ``[dataset]`` plus the ``--set``
overrides given, and prints the mean per-class accuracy (the protocol's figure), overall and top-5 accuracy,
the lambda cross-validation chose and seconds per step, then mean +- sample std over the seeds.

Two protocols:

- test splits (default): ``train30_seedS.txt`` / ``test50_seedS.txt`` of ``shared/datasets/prep_caltech101.sh``
  (30 training images per class, up to 50 test images).
- ``--inner``: cross-validation inside the training images only, for choosing defaults. Each class of
  ``train30_seedS.txt`` (sorted) is permuted by ``numpy.random.default_rng(S)`` and split 20 training /
  10 validation images. No test image is read. The validation set has 10 images per class, so mean
  per-class accuracy = accuracy and one image is 0.098 points.

Each run's encode output (0.5 MB an image) is deleted afterwards unless ``--keep``; descriptors, PCA and GMM
stay cached in the workspace, so a second run that changes only an encoder or classifier key re-uses them.

Run:  python benchmarks/caltech_splits.py --caltech /data/caltech101 --workspace /tmp/ws --seeds 0 1 2 \\
          --set encoder.pyramid=1x1+2x2+3x1
      python benchmarks/caltech_splits.py --caltech /data/caltech101 --workspace /tmp/ws --inner --seeds 0 1 \\
          --set descriptors.step=3
(``--caltech`` is the folder ``prep_caltech101.sh`` wrote: ``caltech101/`` and ``caltech101_splits/``.)
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from caltech import check_root, split_dataset


def inner_lists(train30: Path, seed: int) -> Tuple[List[str], List[str]]:
    """20 training / 10 validation ids per class of a train30 list, shuffled by default_rng(seed)."""
    by_class: Dict[str, List[str]] = defaultdict(list)
    for line in train30.read_text().splitlines():
        if line.strip():
            by_class[line.strip().split("/")[0]].append(line.strip())
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in sorted(by_class):
        ids = sorted(by_class[c])
        if len(ids) < 11:
            raise SystemExit(f"{train30}: class {c!r} has {len(ids)} training images, the inner split needs >= 11")
        perm = rng.permutation(len(ids))
        n_train = len(ids) - max(1, len(ids) // 3)  # 20 of 30
        train += [ids[i] for i in perm[:n_train]]
        val += [ids[i] for i in perm[n_train:]]
    return sorted(train), sorted(val)


def split_config(caltech: Path, seed: int, inner: bool, folder: Path) -> Path:
    """A TOML file holding only ``[dataset]`` for this split (written into ``folder``)."""
    import tomli_w

    if check_root(caltech):
        raise SystemExit(f"--caltech: {check_root(caltech)}")
    folder.mkdir(parents=True, exist_ok=True)
    dataset = split_dataset(caltech, seed)
    if inner:
        train, val = inner_lists(Path(dataset["train_list"]), seed)
        tr, te = folder / f"inner{seed}_train.txt", folder / f"inner{seed}_val.txt"
        tr.write_text("\n".join(train) + "\n")
        te.write_text("\n".join(val) + "\n")
        dataset.update(train_list=str(tr), test_list=str(te))
    cfg = folder / (f"inner{seed}.toml" if inner else f"seed{seed}.toml")
    cfg.write_text(tomli_w.dumps({"dataset": dataset}))
    return cfg


def run_one(cfg: Path, workspace: Path, overrides: Dict[str, str], keep: bool) -> Dict[str, object]:
    from fvstudio.pipeline import Pipeline
    from fvstudio.pipeline.config import parse_value

    pipe = Pipeline(cfg, workspace)
    for key, text in overrides.items():
        pipe.config.set(key, parse_value(key, text))
    t = time.perf_counter()
    res = pipe.run_all()
    row = {"config": str(cfg), "overrides": overrides, "total": round(time.perf_counter() - t, 1),
           "timings": {k: round(v, 1) for k, v in res.timings.items()},
           "metrics": {k: round(100 * v, 2) for k, v in res.metrics.items()},
           "lambdas": res.extra.get("lambdas"), "fusion_weights": res.extra.get("fusion_weights"),
           "failed": res.extra["failed_images"]["count"]}
    if not keep:
        for key in {k for ks in pipe.keys()["encode"].values() for k in ks}:
            shutil.rmtree(Path(pipe.workspace) / "steps" / "encode" / key, ignore_errors=True)
    return row


def _choices(row: Dict[str, object]) -> str:
    """The cross-validated lambda per channel, and the late-fusion weight of the first channel if any."""
    text = ", ".join(f"{ch} {lam:g}" for lams in row["lambdas"] or [] for ch, lam in lams.items())
    weights = [w for w in row.get("fusion_weights") or [] if w is not None]
    return text + (f" (w {', '.join(f'{w:g}' for w in weights)})" if weights else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--caltech", type=Path, required=True, help="folder with caltech101/ and caltech101_splits/")
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--inner", action="store_true", help="20 train / 10 validation inside train30 (no test image)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", type=Path, help="append one JSON line per run to this file")
    ap.add_argument("--keep", action="store_true", help="keep each run's FVs")
    args = ap.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    label = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "defaults"
    print(f"# Caltech-101 {'inner 20/10 validation' if args.inner else 'test'} splits, {label}", flush=True)
    print("| seed | mean per-class % | accuracy % | top-5 % | lambda (fusion weight) | seconds (total: per step) |")
    print("|---|---|---|---|---|---|")
    scores = []
    for seed in args.seeds:
        cfg = split_config(args.caltech, seed, args.inner, args.workspace / "configs")
        row = run_one(cfg, args.workspace, overrides, args.keep)
        row["seed"], row["inner"] = seed, args.inner
        m = row["metrics"]
        scores.append(m["mean_per_class_accuracy"])
        steps = ", ".join(f"{k} {v:g}" for k, v in row["timings"].items() if v)
        print(f"| {seed} | {m['mean_per_class_accuracy']:.2f} | {m['accuracy']:.2f} | {m['top5_accuracy']:.2f} | "
              f"{_choices(row)} | {row['total']:g}: {steps} |", flush=True)
        if row["failed"]:
            print(f"  ({row['failed']} images could not be read and were left out)", flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    if len(scores) > 1:
        print(f"| mean +- std | **{statistics.mean(scores):.2f} +- {statistics.stdev(scores):.2f}** | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Step 7, ``evaluate``: metrics of every split's test scores, their mean and std over splits.

Reads ``[evaluate]``. Single-label data -> mean per-class top-1 accuracy (Caltech/SUN, Sec. 3.3-3.4),
overall accuracy, top-k accuracy (``evaluate.top_k``), per-class accuracy, the confusion matrix (summed
over splits) and the one-vs-rest mAP; multi-label data -> per-class AP (VOC 2007 11-point interpolated by
default, ``evaluate.ap_mode``; Sec. 3.2; "difficult" targets ignored) and mAP. Several splits -> mean and
standard deviation (ddof = 1) over splits (:func:`fvstudio.engine.metrics.mean_std`). Images that gave
no descriptor are not in the splits the metrics are computed on; ``extra.failed_images`` counts them
and names each with its reason and whether it was a training or a test image. With compression on,
``compression`` gives the codes' bytes per image and distortion; k-NN runs add ``hubness``. Output: the
:class:`~fvstudio.pipeline.results.RunResult` folder (``results.json`` + arrays).
"""
from __future__ import annotations

import time
import warnings
from typing import Dict, List

import numpy as np

from ...engine import metrics as M
from ..hashing import digest
from ..results import RunResult
from .base import Step
from .classifier import ClassifierStep
from .compress import CompressStep, compression_on

__all__ = ["EvaluateStep", "evaluate_scores"]


def _split_metrics(scores: np.ndarray, truth: np.ndarray, multilabel: bool, n_classes: int, mode: str, k: int):
    """(metrics, per-class row, targets in {-1, 0, 1}, labels, confusion or None) of one split."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if multilabel:
            ap = M.average_precision_per_class(scores, truth, mode)
            m = {"map": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")}
            return m, ap, truth, np.zeros(0, np.int64), None
        pred = np.argmax(scores, axis=1)
        tg = np.where(np.arange(n_classes)[None, :] == truth[:, None], 1, -1).astype(np.int8)
        m = {"mean_per_class_accuracy": M.mean_per_class_accuracy(truth, pred, n_classes),
             "accuracy": M.overall_accuracy(truth, pred),
             f"top{k}_accuracy": M.top_k_accuracy(scores, truth, min(k, n_classes)),
             "map": M.mean_average_precision(scores, tg, mode)}
        return (m, M.per_class_accuracy(truth, pred, n_classes), tg, truth,
                M.confusion_matrix(truth, pred, n_classes))


def evaluate_scores(ctx, clf) -> RunResult:
    """Metrics of every split, their mean and std, per-class values and the summed confusion."""
    ds = ctx.dataset
    names = list(ds.class_names)
    C = len(names)
    multilabel = bool(ds.multilabel)
    mode, k = ctx.config.get("evaluate.ap_mode"), ctx.config.get("evaluate.top_k")
    per_split: List[Dict[str, float]] = []
    per_class_rows = []
    confusion = None if multilabel else np.zeros((C, C), np.int64)
    ids_all, scores_all, targets_all, labels_all = [], [], [], []
    for s, split in enumerate(ctx.splits):
        scores = np.asarray(clf.test_scores[s], np.float32)
        test = np.asarray(split.test, np.int64)
        m, row, tg, y, conf = _split_metrics(scores, ctx.truth(test), multilabel, C, mode, k)
        if conf is not None:
            confusion += conf
        ids_all.append([ds.ids[int(i)] for i in test])
        scores_all.append(scores)
        per_class_rows.append(row)
        targets_all.append(tg)
        labels_all.append(y)
        per_split.append({key: float(v) for key, v in m.items()})
    metrics, std = {}, {}
    for key in per_split[0]:
        mean, sd = M.mean_std(np.array([p[key] for p in per_split], np.float64))
        metrics[key], std[key] = float(mean), float(sd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pc = np.nanmean(np.vstack(per_class_rows), axis=0)
    per_class = {n: (None if not np.isfinite(v) else float(v)) for n, v in zip(names, pc)}
    return RunResult(
        metrics=metrics, metrics_std=std, per_split=per_split, per_class=per_class, class_names=names,
        multilabel=multilabel, confusion=confusion,
        per_class_metric="ap" if multilabel else "accuracy",
        primary_metric="map" if multilabel else "mean_per_class_accuracy",
        test_ids=ids_all, test_scores=scores_all, test_targets=targets_all, test_labels=labels_all)


def compression_summary(ctx, keys):
    """``results.json -> compression``: the codes' settings and figures, averaged over splits (per channel
    when there are several), or None when compression is off."""
    if not compression_on(ctx.config):
        return None
    per_channel = {}
    for ch in ctx.channels:
        infos = [CompressStep().load(ctx, keys, ch, s).info for s in range(len(ctx.splits))]
        merged = dict(infos[0])
        for k, v in infos[0].items():
            if isinstance(v, float) and all(isinstance(i.get(k), float) for i in infos):
                merged[k] = float(np.mean([i[k] for i in infos]))
        merged["renormalise"] = bool(ctx.config.get("compression.renormalise"))
        per_channel[ch] = merged
    out = dict(per_channel[ctx.channels[0]])
    if len(ctx.channels) > 1:
        for k in ("bytes_per_image", "bytes_float32", "bytes_pq", "bytes_pq_sparse_mean", "bytes_pq_sparse_max", "dim"):
            out[k] = type(out[k])(sum(v[k] for v in per_channel.values()))
        for k in ("mse_train", "mse_test", "mean_sq_norm_test", "zero_dim_fraction", "zero_gaussian_fraction"):
            out.pop(k, None)  # per channel only: see "channels"
        out["channels"] = per_channel
    return out


class EvaluateStep(Step):
    name = "evaluate"
    sections = ("evaluate",)
    weight = 0.01

    def key(self, ctx, keys) -> str:
        parts = ["evaluate", keys["classifier"], ctx.config.hashed_section("evaluate")]
        if compression_on(ctx.config):
            parts.append(keys["compress"])
        return digest(parts)

    def run(self, ctx, keys, progress, cancel) -> None:
        t0 = time.perf_counter()
        clf = ClassifierStep().load(ctx, keys)
        result = evaluate_scores(ctx, clf)
        left_out = ctx.left_out_report()
        result.extra.update(lambdas=clf.lambdas, fusion_weights=clf.fusion_weights,
                            failed_images={"count": len(left_out), "images": left_out})
        result.compression = compression_summary(ctx, keys)
        result.hubness = clf.hubness if ctx.config.get("classifier.kind") == "knn" else None
        result.config = ctx.config.to_dict()
        result.save(ctx.cache.step_dir(self.name, keys[self.name]))
        ctx.cache.write_manifest(self.name, keys[self.name], time.perf_counter() - t0)

    def load(self, ctx, keys, channel=None, split=0) -> RunResult:
        return RunResult.load(ctx.cache.step_dir(self.name, keys[self.name]))

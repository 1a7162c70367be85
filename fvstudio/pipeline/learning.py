"""The pipeline's ``classifier`` and ``evaluate`` steps: SGD classifiers per split, fusion, metrics.

Classifier (Sec. 3.1): for every split, one-vs-rest linear classifiers (:class:`OneVsRestSGD`) on the
training rows of the FV matrix (read through a row provider, never copied whole), lambda chosen by
k-fold cross-validation on the training set when ``classifier.select_lambda`` is on: the grid point with
the best mean CV score (``lambda_rule = "best"``), or by the one-standard-error rule (``"one_se"``, the
default: the largest lambda whose mean score is within one standard error, over folds, of the best one;
on small training sets the CV curve is flat and noisy, and the rule prefers the better-regularised
model). Default 30 SGD epochs. Both defaults were checked on held-out random splits of the sample data
(README, "Choices the paper leaves open"): 10 epochs 80.3%, best-score rule 80.8%, defaults 81.3%.

Several channels (Sec. 3.2):
- ``fusion.mode = "late"``: one classifier per channel; test scores fused as
  s = w s_1 + (1 - w) s_2 (:class:`fvstudio.engine.fusion.LateFusion`) with w chosen on out-of-fold
  training scores (:func:`fvstudio.engine.svm.cross_val_decision`) over w in {0, 0.1, ..., 1}, or fixed
  by ``fusion.weight``. The paper found 0.6 SIFT + 0.4 LCS on VOC 2007.
- ``fusion.mode = "early"``: one classifier on the concatenated FVs, each channel's block L2-normalised
  and scaled by sqrt(1/2) (:class:`fvstudio.engine.fusion.ConcatRows`, read lazily, never copied).

Evaluate: single-label data -> mean per-class top-1 accuracy (Caltech/SUN, Sec. 3.3-3.4), overall
accuracy, top-k accuracy, per-class accuracy, confusion matrix, and the one-vs-rest mAP; multi-label
data -> per-class AP (VOC 2007 11-point interpolated by default, Sec. 3.2; "difficult" targets ignored)
and mAP. Several splits -> mean and standard deviation (ddof = 1) over splits.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from ..engine import metrics as M
from ..engine.model_selection import choose_lambda
from ..engine.progress import check_cancel
from .results import RunResult


def _classifier_params(config) -> Dict[str, Any]:
    import inspect

    from ..engine.svm import OneVsRestSGD

    balance = config.get("classifier.balance")
    params = {"loss": config.get("classifier.loss"),
              "lam": "cv" if config.get("classifier.select_lambda") else config.get("classifier.lam"),
              "lam_grid": config.get("classifier.lam_grid"), "cv_folds": config.get("classifier.cv_folds"),
              "epochs": config.get("classifier.epochs"), "bias": config.get("classifier.bias"),
              "averaging": config.get("classifier.averaging"), "balance": None if balance == "none" else balance,
              "seed": config.get("classifier.seed")}
    if "n_jobs" in inspect.signature(OneVsRestSGD).parameters:  # threads: same result, less wall time
        params["n_jobs"] = config.get("runtime.n_jobs")
    return params


def _fit(base, rows, y, params, classes, rule, part, cancel):
    """Fit one OneVsRestSGD on ``rows`` of ``base``; lambda by CV (``params["lam"] == "cv"``) and ``rule``."""
    from ..engine.progress import scaled
    from ..engine.model_selection import select_lambda
    from ..engine.rows import SubsetRows
    from ..engine.svm import OneVsRestSGD

    X = SubsetRows(base, rows)
    if params["lam"] == "cv" and rule != "best":
        cv_params = {k: v for k, v in params.items() if k not in ("lam", "lam_grid", "cv_folds", "seed")}
        search = select_lambda(X, y, params["lam_grid"], folds=params["cv_folds"], seed=params["seed"],
                               classes=classes, progress=scaled(part, 0.0, 0.75, "lambda CV: "), cancel=cancel,
                               **cv_params)
        model = OneVsRestSGD(**{**params, "lam": choose_lambda(search, rule)})
        model.fit(X, y, progress=scaled(part, 0.75, 1.0), cancel=cancel, classes=classes)
        model.cv_search_ = search
        return model
    return OneVsRestSGD(**params).fit(X, y, progress=part, cancel=cancel, classes=classes)


def train_and_score(pipe, encoded: List[Dict[str, Any]], folder, sub, cancel) -> Dict[str, Any]:
    """Train the classifiers of every split and score its test images (see the module docstring).

    ``encoded[s][channel]`` is the :class:`~fvstudio.pipeline.runner.EncodedSet` of split ``s`` (each split
    has its own vocabulary).
    """
    from ..engine.fusion import LateFusion
    from ..engine.model_selection import cross_val_decision
    from ..engine.rows import ArrayRows, ConcatRows, SubsetRows

    c = pipe.config
    ds = pipe.dataset
    multilabel = bool(ds.multilabel)
    n_classes = len(ds.class_names)
    classes = None if multilabel else np.arange(n_classes)
    params = _classifier_params(c)
    rule = c.get("classifier.lambda_rule")
    channels = list(encoded[0])
    late = len(channels) > 1 and c.get("fusion.mode") == "late"
    early = len(channels) > 1 and c.get("fusion.mode") == "early"

    splits = pipe.splits
    n_units = len(splits) * (1 if early else len(channels))
    unit = 0
    out: Dict[str, Any] = {"test_scores": [], "channel_scores": [], "lambdas": [], "fusion_weights": [],
                           "model_paths": []}
    for s, split in enumerate(splits):
        enc = encoded[s]
        # all channels of a split encode the same dataset indices in the same order
        first = enc[channels[0]]
        if early:
            groups = {"early": ConcatRows([ArrayRows(enc[ch].fvs, check=False) for ch in channels])}
        else:
            groups = {ch: ArrayRows(enc[ch].fvs, check=False) for ch in channels}
        tr_rows, te_rows = first.rows_for(split.train), first.rows_for(split.test)
        y_tr = pipe._truth(split.train)
        ch_scores: Dict[str, np.ndarray] = {}
        lambdas: Dict[str, float] = {}
        paths: Dict[str, str] = {}
        cv_scores: List[np.ndarray] = []
        for name, base in groups.items():
            check_cancel(cancel, "classifier")
            part = sub.part(unit / n_units, (unit + 1) / n_units, split=s, channel=name)
            unit += 1
            model = _fit(base, tr_rows, y_tr, params, classes, rule, part, cancel)
            if late and c.get("fusion.select_weight"):
                # out-of-fold training scores for the fusion weight
                fixed = {k: v for k, v in params.items() if k not in ("seed", "cv_folds", "lam_grid")}
                fixed["lam"] = float(model.lam_)
                cv_scores.append(cross_val_decision(SubsetRows(base, tr_rows), y_tr,
                                                    folds=c.get("classifier.cv_folds"),
                                                    seed=c.get("classifier.seed"), classes=classes,
                                                    cancel=cancel, **fixed))
            ch_scores[name] = model.decision_function(SubsetRows(base, te_rows))
            lambdas[name] = float(model.lam_)
            rel = f"model_split{s}_{name}.npz"
            model.save(folder / rel)
            paths[name] = rel
        if late:
            if c.get("fusion.select_weight"):
                fusion = LateFusion(step=0.1).fit(cv_scores, y_tr)
            else:
                fusion = LateFusion()
                fusion.weights_ = np.array([c.get("fusion.weight"), 1.0 - c.get("fusion.weight")])
            w = float(fusion.weights_[0])
            fused = fusion.fuse([ch_scores[ch] for ch in channels])
            out["fusion_weights"].append(w)
        else:
            fused = next(iter(ch_scores.values()))
            out["fusion_weights"].append(None)
        out["test_scores"].append(np.asarray(fused, np.float32))
        out["channel_scores"].append(ch_scores)
        out["lambdas"].append(lambdas)
        out["model_paths"].append(paths)
    return out


def evaluate(pipe, clf) -> RunResult:
    """Metrics of every split, their mean and std, per-class values and the summed confusion."""
    import warnings

    c = pipe.config
    ds = pipe.dataset
    names = list(ds.class_names)
    C = len(names)
    multilabel = bool(ds.multilabel)
    mode = c.get("evaluate.ap_mode")
    k = c.get("evaluate.top_k")
    per_split: List[Dict[str, float]] = []
    per_class_rows = []
    confusion = None if multilabel else np.zeros((C, C), np.int64)
    ids_all, scores_all, targets_all, labels_all = [], [], [], []
    for s, split in enumerate(pipe.splits):
        scores = np.asarray(clf.test_scores[s], np.float32)
        test = np.asarray(split.test, np.int64)
        ids_all.append([ds.ids[int(i)] for i in test])
        scores_all.append(scores)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if multilabel:
                tg = np.asarray(ds.targets)[test].astype(np.int8)
                ap = M.average_precision_per_class(scores, tg, mode)
                m = {"map": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")}
                per_class_rows.append(ap)
                targets_all.append(tg)
                labels_all.append(np.zeros(0, np.int64))
            else:
                y = np.asarray(ds.labels)[test].astype(np.int64)
                pred = np.argmax(scores, axis=1)
                tg = np.where(np.arange(C)[None, :] == y[:, None], 1, -1).astype(np.int8)
                m = {"mean_per_class_accuracy": M.mean_per_class_accuracy(y, pred, C),
                     "accuracy": M.overall_accuracy(y, pred),
                     f"top{k}_accuracy": M.top_k_accuracy(scores, y, min(k, C)),
                     "map": M.mean_average_precision(scores, tg, mode)}
                per_class_rows.append(M.per_class_accuracy(y, pred, C))
                confusion += M.confusion_matrix(y, pred, C)
                targets_all.append(tg)
                labels_all.append(y)
        per_split.append({key: float(v) for key, v in m.items()})
    metrics, std = {}, {}
    for key in per_split[0]:
        vals = np.array([p[key] for p in per_split], np.float64)
        mean, sd = M.mean_std(vals)
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

"""Step 6, ``classifier``: per split, one-vs-rest linear classifiers (or k-NN) on the training rows' FVs.

Reads ``[classifier]``, ``compression.renormalise`` when compression is on, and, with several channels,
``[fusion]``. With compression on (step ``compress``) the training and test rows are decoded from the PQ
codes a block at a time (:class:`~fvstudio.engine.pq.PQRows`, Sec. 4.3): only the codes are in memory.

``classifier.kind = "knn"`` (Sec. 5.1): the test FVs (always uncompressed) vote by their
``classifier.knn_k`` nearest training FVs (or training codes); see :mod:`fvstudio.pipeline.neighbours`.
The step then saves each split's neighbour lists instead of a model, and the hubness figures of those
lists (uncompressed, PQ and re-normalised PQ when compressed: Fig. 10) in its manifest.

Classifier (Sec. 3.1): :class:`~fvstudio.engine.svm.OneVsRestSGD` on the training rows of the FV matrix
(read through a row provider, never copied whole); lambda chosen by k-fold cross-validation on the training
set when ``classifier.select_lambda`` is on, by ``classifier.lambda_rule``: the grid point with the best
mean CV score (``"best"``) or the one-standard-error rule (``"one_se"``, the default; see
:func:`fvstudio.engine.model_selection.choose_lambda`). ``classifier.solver = "dual"`` (or ``"auto"`` with
fewer training images than dimensions) solves the same hinge-loss problem in the dual on one Gram matrix
(:mod:`fvstudio.engine.dual_svm`), which also serves the lambda CV.

Several channels (Sec. 3.2):

- ``fusion.mode = "late"``: one classifier per channel; test scores fused as s = w s_1 + (1 - w) s_2
  (:class:`fvstudio.engine.fusion.LateFusion`) with w chosen on out-of-fold training scores over
  w in {0, 0.1, ..., 1}, or fixed by ``fusion.weight``. The paper found 0.6 SIFT + 0.4 LCS on VOC 2007.
- ``fusion.mode = "early"``: one classifier on the concatenated FVs, each channel's block L2-normalised
  and scaled by sqrt(1/2) (:class:`fvstudio.engine.fusion.ConcatRows`, read lazily, never copied).

Output: ``scores.npz`` (fused test scores per split, and each channel's), one model ``.npz`` per split and
channel, and a manifest with the lambdas and fusion weights.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from ...engine.dual_svm import OneVsRestDualSVM, cross_val_decision_gram, gram_matrix, select_lambda_gram
from ...engine.fusion import LateFusion
from ...engine.model_selection import choose_lambda, cross_val_decision, select_lambda
from ...engine.progress import check_cancel, report, scaled
from ...engine.serialization import atomic_save_npz, load_npz
from ...engine.rows import ArrayRows, ConcatRows, SubsetRows
from ...engine.svm import OneVsRestSGD
from ..config import ConfigError
from ..hashing import digest, ids_digest
from ..neighbours import hubness_report, knn_out_of_fold, knn_params, knn_search
from .base import Step
from .compress import CompressStep, compression_on
from .encode import EncodeStep

__all__ = ["ClassifierStep", "ClassifierOutput", "classifier_params", "fit_classifier", "fit_dual"]

#: ``solver = "auto"`` uses the dual solver up to this many training rows (its Gram matrix: 400 MB).
DUAL_MAX_ROWS = 10_000


@dataclass
class ClassifierOutput:
    """The ``classifier`` step's output: test scores per split (fused), lambdas and fusion weights."""

    test_scores: List[np.ndarray]  # per split (n_test, C)
    channel_scores: List[Dict[str, np.ndarray]]  # per split, per channel (late fusion) or "early"
    lambdas: List[Dict[str, float]]
    fusion_weights: List[Optional[float]]
    model_paths: List[Dict[str, str]]
    hubness: List[Dict[str, Any]] = None  # per split, per channel: {database: summary} (k-NN only)

    def load_model(self, split: int = 0, channel: Optional[str] = None):
        """The :class:`OneVsRestSGD` or :class:`OneVsRestDualSVM` of ``split`` and ``channel``."""
        path = self.model_paths[split][channel or next(iter(self.model_paths[split]))]
        _, meta = load_npz(path)
        if meta["kind"] == NEIGHBOURS_KIND:
            raise ValueError(f"{path} holds k-NN neighbour lists (classifier.kind = 'knn'): a k-NN keeps no model "
                             "beyond the training FVs; read them with load_neighbours")
        return {"OneVsRestSGD": OneVsRestSGD, "OneVsRestDualSVM": OneVsRestDualSVM}[meta["kind"]].load(path)

    def load_neighbours(self, split: int = 0, channel: Optional[str] = None) -> Dict[str, np.ndarray]:
        """k-NN runs: ``neighbours`` (n_test, k) dataset indices of each test image's nearest training images,
        nearest first, their ``distances``, and ``test`` / ``train`` (the dataset indices of the rows)."""
        path = self.model_paths[split][channel or next(iter(self.model_paths[split]))]
        arrays, _ = load_npz(path, kind=NEIGHBOURS_KIND)
        return arrays


NEIGHBOURS_KIND = "fvstudio.pipeline.knn_neighbours"


def classifier_params(config) -> Dict[str, Any]:
    """:class:`OneVsRestSGD` keyword arguments from ``[classifier]`` (``lam = "cv"`` when it is selected)."""
    c = config
    balance = c.get("classifier.balance")
    return {"loss": c.get("classifier.loss"),
            "lam": "cv" if c.get("classifier.select_lambda") else c.get("classifier.lam"),
            "lam_grid": c.get("classifier.lam_grid"), "cv_folds": c.get("classifier.cv_folds"),
            "epochs": c.get("classifier.epochs"), "bias": c.get("classifier.bias"),
            "averaging": c.get("classifier.averaging"), "balance": None if balance == "none" else balance,
            "seed": c.get("classifier.seed"), "n_jobs": c.get("runtime.n_jobs")}


def use_dual(config, n_train: int, dim: int) -> bool:
    """Whether ``classifier.solver`` asks for the Gram-matrix dual solver for ``n_train`` rows of ``dim``."""
    solver = config.get("classifier.solver")
    if solver != "auto":
        return solver == "dual"
    fits = n_train <= DUAL_MAX_ROWS and n_train < dim
    return fits and config.get("classifier.loss") == "hinge" and config.get("classifier.balance") != "sample"


def fit_dual(X, y, K, config, classes, rule: str, progress, cancel) -> OneVsRestDualSVM:
    """One :class:`OneVsRestDualSVM` on rows ``X`` whose Gram matrix is ``K``: it serves the lambda CV and the
    final fit."""
    c = config
    balance = c.get("classifier.balance")
    model = OneVsRestDualSVM(lam=c.get("classifier.lam"), lam_grid=c.get("classifier.lam_grid"),
                             cv_folds=c.get("classifier.cv_folds"), balance=None if balance == "none" else balance,
                             bias=c.get("classifier.bias"), n_jobs=c.get("runtime.n_jobs"),
                             seed=c.get("classifier.seed"))
    lam = None
    if c.get("classifier.select_lambda"):
        search = select_lambda_gram(K, y, model.lam_grid, model.cv_folds, model.seed, classes=classes,
                                    balance=model.balance, bias=model.bias, n_jobs=model.n_jobs,
                                    progress=scaled(progress, 0.3, 0.9, "lambda CV: "), cancel=cancel)
        lam = choose_lambda(search, rule)
    model.fit(X, y, progress=scaled(progress, 0.9, 1.0), cancel=cancel, classes=classes, gram=K, lam=lam)
    if c.get("classifier.select_lambda"):
        model.cv_search_ = search
    return model


def fit_classifier(X, y, params: Dict[str, Any], classes, rule: str, progress, cancel) -> OneVsRestSGD:
    """One :class:`OneVsRestSGD` on rows ``X``; lambda by CV (``params["lam"] == "cv"``) and ``rule``."""
    if params["lam"] == "cv" and rule != "best":
        sgd = {k: v for k, v in params.items() if k not in ("lam", "lam_grid", "cv_folds", "seed")}
        search = select_lambda(X, y, params["lam_grid"], folds=params["cv_folds"], seed=params["seed"],
                               classes=classes, progress=scaled(progress, 0.0, 0.75, "lambda CV: "), cancel=cancel,
                               **sgd)
        model = OneVsRestSGD(**{**params, "lam": choose_lambda(search, rule)})
        model.fit(X, y, progress=scaled(progress, 0.75, 1.0), cancel=cancel, classes=classes)
        model.cv_search_ = search
        return model
    return OneVsRestSGD(**params).fit(X, y, progress=progress, cancel=cancel, classes=classes)


def _why_untrained(ctx, label: int) -> str:
    """Why a class has no training image: its unreadable training images, or the split has none."""
    labels = np.asarray(ctx.dataset.labels)
    bad = [f"{r['id']}: {r['reason']}" for r in ctx.left_out_report()
           if r["role"] == "train" and labels[ctx.ids.index(r["id"])] == label]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        return f"all {len(bad)} of its training images give no descriptor ({'; '.join(bad[:3])}{more})"
    return "the split has no training image of it (check dataset.train_list / dataset.n_train)"


def check_trainable(ctx) -> None:
    """At the door: every split has test images and trains >= 2 classes, every class it tests among them."""
    for s, (raw, sp) in enumerate(zip(ctx.raw_splits, ctx.splits)):
        where = f"split {s}: " if len(ctx.splits) > 1 else ""
        if len(sp.train) == 0 or len(sp.test) == 0:
            part = "training" if len(sp.train) == 0 else "test"
            raise ConfigError(f"{where}no readable {part} image ({len(ctx.left_out)} images give no descriptor)")
        if ctx.dataset.multilabel:
            continue
        labels = np.asarray(ctx.dataset.labels)
        trained = set(labels[sp.train].tolist())
        names = ctx.dataset.class_names
        if len(trained) < 2:
            only = ", ".join(names[c] for c in sorted(trained))
            raise ConfigError(f"{where}the training images cover only {len(trained)} class ({only}); a "
                              f"one-vs-rest classifier needs at least 2 (check dataset.root / dataset.train_list)")
        for c in sorted((set(labels[raw.test].tolist()) | set(labels[raw.train].tolist())) - trained):
            raise ConfigError(f"{where}class '{names[c]}' cannot be learned: {_why_untrained(ctx, c)}")


class ClassifierStep(Step):
    name = "classifier"
    sections = ("classifier", "fusion")
    weight = 0.09

    def check(self, ctx) -> None:
        c = ctx.config
        if c.get("classifier.solver") == "dual" and (c.get("classifier.loss") != "hinge"
                                                      or c.get("classifier.balance") == "sample"):
            raise ConfigError("classifier.solver = 'dual' solves the hinge loss with balance 'weight' or 'none' "
                              f"(got loss = {c.get('classifier.loss')!r}, balance = {c.get('classifier.balance')!r})")
        check_trainable(ctx)

    def key(self, ctx, keys) -> str:
        ds = ctx.dataset
        labels = np.asarray(ds.targets if ds.multilabel else ds.labels)
        split_sig = digest([[ids_digest(ctx.ids, s.train), ids_digest(ctx.ids, s.test)] for s in ctx.splits]
                           + [hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest(),
                              list(ds.class_names)])
        n = len(ctx.splits)
        encoded = [keys["encode"][ch] if n > 1 else keys["encode"][ch][0] for ch in ctx.channels]
        fusion = ctx.config.hashed_section("fusion") if len(ctx.channels) > 1 else None
        section = ctx.config.hashed_section("classifier")
        if section["kind"] == "sgd":  # keys of linear runs as before k-NN existed: their caches stay valid
            section = {k: v for k, v in section.items() if k != "kind" and not k.startswith("knn_")}
        parts = ["classifier", encoded, split_sig, section, fusion]
        if compression_on(ctx.config):
            parts.append([[keys["compress"][ch] if n > 1 else keys["compress"][ch][0] for ch in ctx.channels],
                          ctx.config.get("compression.renormalise")])
        return digest(parts)

    def run(self, ctx, keys, progress, cancel) -> None:
        t0 = time.perf_counter()
        key = keys[self.name]
        folder = ctx.cache.step_dir(self.name, key)
        enc = EncodeStep()
        encoded = [{ch: enc.load(ctx, keys, ch, s) for ch in ctx.channels} for s in range(len(ctx.splits))]
        compressed = [{ch: CompressStep().load(ctx, keys, ch, s) for ch in ctx.channels}
                      for s in range(len(ctx.splits))]
        out = _Training(ctx, folder, progress, cancel).run(encoded, compressed)
        arrays = {}
        for s, sc in enumerate(out.test_scores):
            arrays[f"scores_{s}"] = sc
            for name, v in out.channel_scores[s].items():
                arrays[f"channel_{s}_{name}"] = v
        atomic_save_npz(folder / "scores.npz", arrays, {"kind": "fvstudio.pipeline.scores"})
        ctx.cache.write_manifest(self.name, key, time.perf_counter() - t0, lambdas=out.lambdas,
                                 fusion_weights=out.fusion_weights, model_paths=out.model_paths,
                                 channels_scored=[sorted(d) for d in out.channel_scores], hubness=out.hubness)

    def load(self, ctx, keys, channel=None, split=0) -> ClassifierOutput:
        key = keys[self.name]
        man = ctx.cache.manifest(self.name, key)
        if man is None:
            raise FileNotFoundError("classifier is not computed")
        folder = ctx.cache.step_dir(self.name, key)
        arrays, _ = load_npz(folder / "scores.npz", kind="fvstudio.pipeline.scores")
        n = len(man["lambdas"])
        scores = [arrays[f"scores_{s}"] for s in range(n)]
        ch_scores = [{name: arrays[f"channel_{s}_{name}"] for name in man["channels_scored"][s]} for s in range(n)]
        paths = [{k: str(folder / v) for k, v in d.items()} for d in man["model_paths"]]
        return ClassifierOutput(scores, ch_scores, man["lambdas"], man["fusion_weights"], paths, man.get("hubness"))


class _Training:
    """Trains and scores every split's classifiers (see the module docstring); one object per run."""

    def __init__(self, ctx, folder, progress, cancel):
        c = ctx.config
        self.ctx, self.folder, self.progress, self.cancel = ctx, folder, progress, cancel
        self.classes = None if ctx.dataset.multilabel else np.arange(len(ctx.dataset.class_names))
        self.params = classifier_params(c)
        self.rule = c.get("classifier.lambda_rule")
        many = len(ctx.channels) > 1
        self.late = many and c.get("fusion.mode") == "late"
        self.early = many and c.get("fusion.mode") == "early"
        self.n_units = len(ctx.splits) * (1 if self.early else len(ctx.channels))
        self.unit = 0

    def run(self, encoded: List[Dict[str, Any]], compressed: List[Dict[str, Any]]) -> ClassifierOutput:
        out = ClassifierOutput([], [], [], [], [], [])
        for s, split in enumerate(self.ctx.splits):
            scores, weight, lambdas, paths, hub = self._split(s, split, encoded[s], compressed[s])
            out.test_scores.append(np.asarray(scores.pop("fused"), np.float32))
            out.channel_scores.append(scores)
            out.fusion_weights.append(weight)
            out.lambdas.append(lambdas)
            out.model_paths.append(paths)
            out.hubness.append(hub)
        return out

    def _groups(self, enc: Dict[str, Any], comp: Optional[Dict[str, Any]] = None, *, renormalise=None):
        """Row providers of every FV of the split, per classifier: float32 FVs, or decoded codes (``comp``)."""
        channels = self.ctx.channels
        if renormalise is None:
            renormalise = self.ctx.config.get("compression.renormalise")

        def base(ch):
            if comp is not None and comp.get(ch) is not None:
                return comp[ch].rows(renormalise)
            return ArrayRows(enc[ch].fvs, check=False)

        if self.early:
            return {"early": ConcatRows([base(ch) for ch in channels])}
        return {ch: base(ch) for ch in channels}

    def _split(self, s: int, split, enc: Dict[str, Any], comp: Dict[str, Any]):
        if self.ctx.config.get("classifier.kind") == "knn":
            return self._knn_split(s, split, enc, comp)
        c = self.ctx.config
        first = enc[self.ctx.channels[0]]  # all channels of a split encode the same images in the same order
        tr_rows, te_rows = first.rows_for(split.train), first.rows_for(split.test)
        y_tr = self.ctx.truth(split.train)
        scores: Dict[str, np.ndarray] = {}
        lambdas: Dict[str, float] = {}
        paths: Dict[str, str] = {}
        out_of_fold: List[np.ndarray] = []
        for name, base in self._groups(enc, comp).items():
            check_cancel(self.cancel, "classifier")
            part = self.progress.part(self.unit / self.n_units, (self.unit + 1) / self.n_units, split=s, channel=name)
            self.unit += 1
            X = SubsetRows(base, tr_rows)
            gram = None
            if use_dual(c, len(tr_rows), base.dim):
                report(part, 0, 1, "Gram matrix")
                gram = gram_matrix(X, cancel=self.cancel)
                model = fit_dual(X, y_tr, gram, c, self.classes, self.rule, scaled(part, 0.3, 1.0), self.cancel)
            else:
                model = fit_classifier(X, y_tr, self.params, self.classes, self.rule, part, self.cancel)
            if self.late and c.get("fusion.select_weight"):
                out_of_fold.append(self._out_of_fold(X, y_tr, model, gram))
            scores[name] = model.decision_function(SubsetRows(base, te_rows))
            lambdas[name] = float(model.lam_)
            paths[name] = f"model_split{s}_{name}.npz"
            model.save(self.folder / paths[name])
        return scores, self._fuse(scores, out_of_fold, y_tr), lambdas, paths, None

    def _knn_split(self, s: int, split, enc: Dict[str, Any], comp: Dict[str, Any]):
        """k-NN of the test FVs (uncompressed) among the training FVs or codes (Sec. 5.1), and the hubness
        figures of its neighbour lists."""
        c = self.ctx.config
        params = knn_params(c)
        C = len(self.ctx.dataset.class_names)
        first = enc[self.ctx.channels[0]]
        tr_rows, te_rows = first.rows_for(split.train), first.rows_for(split.test)
        y_tr = self.ctx.truth(split.train)
        if y_tr.ndim != 1:
            raise ConfigError("classifier.kind = 'knn' needs single-label data (one class per image); this "
                              "dataset is multi-label: use classifier.kind = 'sgd'")
        raw = self._groups(enc)
        used = self._groups(enc, comp)
        compressed = any(v is not None for v in comp.values())
        scores: Dict[str, np.ndarray] = {}
        paths: Dict[str, str] = {}
        hub: Dict[str, Any] = {}
        out_of_fold: List[np.ndarray] = []
        for name, db in used.items():
            check_cancel(self.cancel, "classifier")
            part = self.progress.part(self.unit / self.n_units, (self.unit + 1) / self.n_units, split=s, channel=name)
            self.unit += 1
            X, Q = SubsetRows(db, tr_rows), SubsetRows(raw[name], te_rows)
            sc, nb, dist = knn_search(X, y_tr, Q, params, C, progress=scaled(part, 0.0, 0.6), cancel=self.cancel)
            scores[name] = sc
            k = nb.shape[1]
            if compressed:
                label = "pq_renormalised" if c.get("compression.renormalise") else "pq"
                other = self._groups(enc, comp, renormalise=not c.get("compression.renormalise"))[name]
                dbs = {"uncompressed": SubsetRows(raw[name], tr_rows), label: X,
                       ("pq" if label == "pq_renormalised" else "pq_renormalised"): SubsetRows(other, tr_rows)}
                hub[name] = hubness_report(dbs, Q, k, params, cancel=self.cancel, neighbours={label: nb})
            else:
                hub[name] = hubness_report({"uncompressed": X}, Q, k, params, neighbours={"uncompressed": nb})
            report(part, 0.9, 1.0, "k-NN: hubness")
            if self.late and c.get("fusion.select_weight"):
                out_of_fold.append(knn_out_of_fold(X, y_tr, params, C, c.get("classifier.cv_folds"),
                                                   c.get("classifier.seed"), cancel=self.cancel))
            paths[name] = f"neighbours_split{s}_{name}.npz"
            atomic_save_npz(self.folder / paths[name],
                            {"neighbours": np.asarray(first.indices)[tr_rows][nb],
                             "distances": dist, "test": np.asarray(first.indices)[te_rows],
                             "train": np.asarray(first.indices)[tr_rows]},
                            {"kind": NEIGHBOURS_KIND, "params": params, "compressed": compressed})
        return scores, self._fuse(scores, out_of_fold, y_tr), {}, paths, hub

    def _fuse(self, scores: Dict[str, np.ndarray], out_of_fold: List[np.ndarray], y_tr) -> Optional[float]:
        """Put the split's test scores under ``scores["fused"]``: late fusion of the channels' (returns the
        first channel's weight), or the one group's scores (returns None)."""
        if not self.late:
            scores["fused"] = next(iter(scores.values()))
            return None
        fusion = self._fusion(out_of_fold, y_tr)
        scores["fused"] = fusion.fuse([scores[ch] for ch in self.ctx.channels])
        return float(fusion.weights_[0])

    def _out_of_fold(self, X, y, model, gram) -> np.ndarray:
        """Out-of-fold training scores at the model's lambda, for the fusion weight (from the Gram matrix
        when the model was solved on one)."""
        c = self.ctx.config
        if gram is not None:
            return cross_val_decision_gram(gram, y, model.lam_, c.get("classifier.cv_folds"),
                                           c.get("classifier.seed"), classes=self.classes, balance=model.balance,
                                           bias=model.bias, n_jobs=model.n_jobs, cancel=self.cancel)
        fixed = {k: v for k, v in self.params.items() if k not in ("seed", "cv_folds", "lam_grid")}
        fixed["lam"] = float(model.lam_)
        return cross_val_decision(X, y, folds=c.get("classifier.cv_folds"), seed=c.get("classifier.seed"),
                                  classes=self.classes, cancel=self.cancel, **fixed)

    def _fusion(self, out_of_fold: List[np.ndarray], y) -> LateFusion:
        c = self.ctx.config
        if c.get("fusion.select_weight"):
            return LateFusion(step=0.1).fit(out_of_fold, y)
        fusion = LateFusion()
        fusion.weights_ = np.array([c.get("fusion.weight"), 1.0 - c.get("fusion.weight")])
        return fusion

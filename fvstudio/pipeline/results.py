"""What a pipeline run produces: metrics, per-class values, confusion, timings, predictions, test scores.

:class:`RunResult` is computed by the ``evaluate`` step and cached in the workspace as JSON (no pickles)
plus an ``.npz`` holding the per-split test scores and targets (the GUI's PR curves). With several
splits (random repeats, Sec. 3.3) ``metrics`` holds the mean over splits and ``metrics_std`` the
standard deviation; ``per_class`` is the mean per-class value (top-1 accuracy for single-label data, AP
for multi-label data); ``confusion`` sums the test counts of every split (rows = true class).

Files written by :func:`write_results`:

- ``results.json``: metrics, metrics_std, per-class values, ``compression`` (PQ settings, bytes per image
  with and without the sparsity bit, MSE on the test FVs; None when off), ``hubness`` (k-NN runs), timings (seconds per step spent in this
  run, and the original compute time of cached steps), the resolved config, versions of fvstudio and
  its numerical dependencies;
- ``predictions.csv``: one row per test image and split: ``split, id, true, predicted, score_<class>...``
  (multi-label: ``true`` lists the positive classes joined by ``;`` and ``predicted`` the top class).
"""
from __future__ import annotations

import csv
import io
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..engine.serialization import atomic_save_npz, atomic_write_bytes, load_npz

__all__ = ["RunResult", "write_results", "versions", "storage_rows"]


@dataclass
class RunResult:
    """Metrics and predictions of one pipeline run (all splits)."""

    metrics: Dict[str, float]
    per_class: Dict[str, float]
    class_names: List[str]
    multilabel: bool
    confusion: Optional[np.ndarray] = None  # (C, C) int64, summed over splits; None for multi-label
    metrics_std: Dict[str, float] = field(default_factory=dict)
    per_split: List[Dict[str, float]] = field(default_factory=list)
    per_class_metric: str = "accuracy"  # "accuracy" (single-label) or "ap" (multi-label)
    primary_metric: str = "mean_per_class_accuracy"
    timings: Dict[str, float] = field(default_factory=dict)
    compute_timings: Dict[str, float] = field(default_factory=dict)
    cached_steps: List[str] = field(default_factory=list)
    config: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)  # lambdas, fusion weights, failures ...
    # compressed FVs (Sec. 4): bits per dim, group, bytes per image with / without the sparsity bit, MSE
    compression: Optional[Dict[str, Any]] = None
    # k-NN runs (Sec. 5.1, Fig. 10): per split and channel, {database: hubness summary}
    hubness: Optional[List[Dict[str, Any]]] = None
    # test-set arrays per split (for PR curves and predictions.csv)
    test_ids: List[List[str]] = field(default_factory=list)
    test_scores: List[np.ndarray] = field(default_factory=list)  # (n_test, C) float32
    test_targets: List[np.ndarray] = field(default_factory=list)  # (n_test, C) int8 in {+1, -1, 0}
    test_labels: List[np.ndarray] = field(default_factory=list)  # (n_test,) int (single-label) or empty

    # ---- convenience ----------------------------------------------------------------------------
    @property
    def score(self) -> float:
        """The headline number: mean per-class accuracy (single-label) or mAP (multi-label)."""
        return float(self.metrics[self.primary_metric])

    @property
    def scores(self) -> np.ndarray:
        """Test scores of the first split, (n_test, C)."""
        return self.test_scores[0]

    @property
    def targets(self) -> np.ndarray:
        """Test targets of the first split, (n_test, C) in {+1, -1, 0 = ignore}."""
        return self.test_targets[0]

    def pr_curve(self, class_index: int, split: int = 0):
        """(precision, recall, thresholds) of one class on one split's test set, best score first."""
        from ..engine.metrics import precision_recall

        return precision_recall(self.test_scores[split][:, class_index], self.test_targets[split][:, class_index])

    @property
    def predictions(self) -> List[Dict[str, Any]]:
        """One dict per test image and split: split, id, true, predicted, scores (list per class)."""
        rows: List[Dict[str, Any]] = []
        for s, (ids, sc, tg) in enumerate(zip(self.test_ids, self.test_scores, self.test_targets)):
            pred = np.argmax(sc, axis=1) if sc.size else np.zeros(0, int)
            for i, image_id in enumerate(ids):
                if self.multilabel:
                    true = [self.class_names[c] for c in np.flatnonzero(tg[i] > 0)]
                else:
                    true = self.class_names[int(self.test_labels[s][i])]
                rows.append({"split": s, "id": image_id, "true": true,
                             "predicted": self.class_names[int(pred[i])],
                             "scores": [float(v) for v in sc[i]]})
        return rows

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_json_dict(self) -> Dict[str, Any]:
        return {
            "metrics": _plain(self.metrics),
            "metrics_std": _plain(self.metrics_std),
            "primary_metric": self.primary_metric,
            "per_class_metric": self.per_class_metric,
            "per_class": _plain(self.per_class),
            "per_split": _plain(self.per_split),
            "class_names": list(self.class_names),
            "multilabel": bool(self.multilabel),
            "confusion": None if self.confusion is None else np.asarray(self.confusion).tolist(),
            "timings": _plain(self.timings),
            "compute_timings": _plain(self.compute_timings),
            "cached_steps": list(self.cached_steps),
            "config": self.config,
            "extra": _plain(self.extra),
            "compression": _plain(self.compression),
            "hubness": _plain(self.hubness),
            "n_splits": len(self.test_scores),
            "n_test": [len(ids) for ids in self.test_ids],
        }

    def save(self, folder: Path) -> None:
        """Cache as ``result.json`` + ``result_arrays.npz`` in ``folder`` (both atomic; JSON last)."""
        folder = Path(folder)
        arrays: Dict[str, np.ndarray] = {}
        for s in range(len(self.test_scores)):
            arrays[f"scores_{s}"] = np.asarray(self.test_scores[s], np.float32)
            arrays[f"targets_{s}"] = np.asarray(self.test_targets[s], np.int8)
            arrays[f"labels_{s}"] = np.asarray(self.test_labels[s] if s < len(self.test_labels) else [],
                                               np.int64)
        atomic_save_npz(folder / "result_arrays.npz", arrays,
                        {"kind": "fvstudio.run_result", "test_ids": self.test_ids})
        atomic_write_bytes(folder / "result.json", json.dumps(self.to_json_dict(), indent=1).encode())

    @classmethod
    def load(cls, folder: Path) -> "RunResult":
        folder = Path(folder)
        d = json.loads((folder / "result.json").read_text())
        arrays, meta = load_npz(folder / "result_arrays.npz", kind="fvstudio.run_result")
        n = d["n_splits"]
        return cls(
            metrics=d["metrics"], per_class=d["per_class"], class_names=d["class_names"],
            multilabel=d["multilabel"],
            confusion=None if d["confusion"] is None else np.asarray(d["confusion"], np.int64),
            metrics_std=d["metrics_std"], per_split=d["per_split"], per_class_metric=d["per_class_metric"],
            primary_metric=d["primary_metric"], timings=d["timings"], compute_timings=d["compute_timings"],
            cached_steps=d["cached_steps"], config=d["config"], extra=d["extra"],
            compression=d.get("compression"), hubness=d.get("hubness"),
            test_ids=meta["test_ids"], test_scores=[arrays[f"scores_{s}"] for s in range(n)],
            test_targets=[arrays[f"targets_{s}"] for s in range(n)],
            test_labels=[arrays[f"labels_{s}"] for s in range(n)],
        )

    def predictions_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["split", "id", "true", "predicted"] + [f"score_{c}" for c in self.class_names])
        for row in self.predictions:
            true = ";".join(row["true"]) if self.multilabel else row["true"]
            w.writerow([row["split"], row["id"], true, row["predicted"]] + [f"{v:.6g}" for v in row["scores"]])
        return buf.getvalue()


def storage_rows(doc: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(label, value) rows of a result's ``compression`` and ``hubness`` (a ``to_json_dict()``), for tables:
    bytes per image with and without the sparsity bit, the test MSE, and the first split's hubness
    figures per database."""
    rows: List[Tuple[str, str]] = []
    c = doc.get("compression")
    if c:
        rows.append(("compression", f"PQ b = {c['bits_per_dim']:g}, G = {c['group']}"
                     + (" + bit" if c.get("sparsity") else "")))
        rows.append(("bytes per image", f"{c['bytes_per_image']:.0f}"))
        rows.append(("bytes per image without the sparsity bit", f"{c['bytes_pq']}"))
        rows.append(("bytes per image as float32", f"{c['bytes_float32']}"))
        channels = c.get("channels") or {"": c}
        for ch, v in channels.items():
            if v.get("mse_test") is not None:
                rows.append((f"PQ test MSE{' ' + ch if ch else ''}", f"{v['mse_test']:.4g}"))
    for ch, dbs in ((doc.get("hubness") or [{}])[0] or {}).items():
        for db, h in dbs.items():
            rows.append((f"k-NN hubness {ch} {db} (k = {h['k']}): largest N_k / skewness / Robin Hood / never chosen",
                         f"{h['largest']} / {h['skewness']:.2f} / {h['robin_hood']:.2f} / "
                         f"{100 * h['never_chosen']:.0f}%"))
    return rows


def _plain(obj: Any) -> Any:
    """numpy scalars/arrays -> JSON-able Python values (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if v != v else v
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def versions() -> Dict[str, str]:
    """Versions of fvstudio, Python and the numerical libraries the result depends on."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    import importlib

    for name in ("fvstudio", "numpy", "numba", "scipy", "cv2", "llvmlite"):
        try:
            mod = importlib.import_module(name)
            out[name if name != "cv2" else "opencv"] = str(getattr(mod, "__version__", "unknown"))
        except Exception:  # pragma: no cover - optional
            pass
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = ", ".join(sorted({f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info()
                                        if i.get("user_api") == "blas"}))
    except Exception:  # pragma: no cover
        pass
    return out


def write_results(result: RunResult, out_dir, *, config_dict: Optional[Dict[str, Any]] = None,
                  extra: Optional[Dict[str, Any]] = None) -> Dict[str, Path]:
    """Write ``results.json`` and ``predictions.csv`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = result.to_json_dict()
    flat = dict(doc["metrics"])
    doc = {**{k: v for k, v in flat.items()}, **doc}  # headline metrics also at the top level
    if result.multilabel:
        doc["ap"] = doc["per_class"]
    doc["config"] = config_dict if config_dict is not None else result.config
    doc["versions"] = versions()
    if extra:
        doc.update(_plain(extra))
    paths = {"results": out_dir / "results.json", "predictions": out_dir / "predictions.csv"}
    atomic_write_bytes(paths["results"], json.dumps(doc, indent=2).encode())
    atomic_write_bytes(paths["predictions"], result.predictions_csv().encode())
    return paths

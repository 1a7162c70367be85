"""A saved explorer session: the pipeline config, the run history and which runs are on screen. No Qt, no pickles.

Layout inside a workspace folder (the same folder the pipeline caches its steps in)::

    session/config.toml        the current config (``PipelineConfig.to_toml``; ``fvstudio run`` replays it)
    session/session.json       {"version": 1, "current": run id, "compare": run id, "panel": name,
                                "runs": [{"id", "created", "label", "config", "summary"}, ...]}
    session/runs/<id>.npz      the arrays of one run (confusion matrix, test scores, targets, ...)
                               written with ``atomic_save_npz`` and read with ``allow_pickle=False``

A :class:`RunRecord` is what the results panel shows: built either from a live ``RunResult`` or from these
files, so a restored session shows exactly what was on screen when it was saved.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from fvstudio.engine.serialization import atomic_save_npz, atomic_write_bytes

SESSION_DIR = "session"
_VERSION = 1
# RunResult attributes kept as arrays in the run's npz: name in the npz -> attribute (first split only).
_METRIC_ORDER = ("mean_per_class_accuracy", "map", "accuracy", "top5_accuracy")
_ARRAY_FIELDS = {"confusion": "confusion", "scores": "scores", "targets": "targets", "labels": "test_labels"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class RunRecord:
    id: str
    created: str
    label: str
    config: Dict[str, Any]
    summary: Dict[str, Any]
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)

    # ------------------------------------------------------------------ views used by the results panel
    @property
    def metrics(self) -> Dict[str, float]:
        """Headline metrics, the paper's first (same order however the record was stored)."""
        m = self.summary.get("metrics") or {}
        vals = {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        first = [k for k in _METRIC_ORDER if k in vals]
        return {k: vals[k] for k in first + sorted(k for k in vals if k not in first)}

    @property
    def class_names(self) -> List[str]:
        names = self.summary.get("class_names")
        if names:
            return list(names)
        n = self.n_classes
        return [f"class {i}" for i in range(n)]

    @property
    def n_classes(self) -> int:
        if self.summary.get("class_names"):
            return len(self.summary["class_names"])
        cm = self.confusion
        if cm is not None:
            return cm.shape[0]
        for v in self.per_class.values():
            return len(v)
        return 0

    @property
    def per_class(self) -> Dict[str, np.ndarray]:
        """metric name -> (C,) values in class order (accepts class->metric dicts and records too)."""
        pc = self.summary.get("per_class") or {}
        names = self.summary.get("class_names") or []
        out: Dict[str, np.ndarray] = {}
        if isinstance(pc, dict):
            if pc and all(isinstance(v, (int, float)) or v is None for v in pc.values()):
                metric = str(self.summary.get("per_class_metric") or "value")
                order = names if names and all(n in pc for n in names) else list(pc)
                out[metric] = np.array([np.nan if pc[n] is None else float(pc[n]) for n in order])
            elif names and all(n in pc for n in names) and all(isinstance(pc[n], dict) for n in names):
                metrics = sorted({m for n in names for m in pc[n]})
                for m in metrics:
                    out[m] = np.array([float(pc[n].get(m, np.nan)) for n in names])
            else:
                for m, v in pc.items():
                    if isinstance(v, dict):
                        out[m] = np.array([float(v.get(n, np.nan)) for n in names]) if names else \
                            np.array([float(x) for x in v.values()])
                    elif isinstance(v, (list, tuple, np.ndarray)):
                        try:
                            out[m] = np.asarray(v, dtype=float)
                        except (TypeError, ValueError):
                            pass
        elif isinstance(pc, list) and pc and isinstance(pc[0], dict):
            keys = [k for k in pc[0] if k not in ("class", "name", "class_name")]
            for k in keys:
                try:
                    out[k] = np.array([float(r.get(k, np.nan)) for r in pc])
                except (TypeError, ValueError):
                    pass
        return out

    @property
    def confusion(self) -> Optional[np.ndarray]:
        if "confusion" in self.arrays:
            return np.asarray(self.arrays["confusion"])
        cm = self.summary.get("confusion")
        return None if cm is None else np.asarray(cm)

    @property
    def multilabel(self) -> bool:
        if "multilabel" in self.summary:
            return bool(self.summary["multilabel"])
        t = self.targets
        return t is not None and t.ndim == 2 and self.confusion is None

    @property
    def scores(self) -> Optional[np.ndarray]:
        for k in ("scores", "test_scores"):
            if k in self.arrays:
                return np.asarray(self.arrays[k])
        return None

    @property
    def targets(self) -> Optional[np.ndarray]:
        for k in ("targets", "test_targets"):
            if k in self.arrays and np.asarray(self.arrays[k]).ndim == 2:
                return np.asarray(self.arrays[k])
        return None

    @property
    def timings(self) -> Dict[str, float]:
        t = self.summary.get("timings") or {}
        return {k: float(v) for k, v in t.items() if isinstance(v, (int, float))}


def new_run_id(existing) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    rid, i = stamp, 1
    while rid in existing:
        i += 1
        rid = f"{stamp}-{i}"
    return rid


def record_from_result(result: Any, config_dict: Dict[str, Any], class_names: List[str], existing,
                       label: str = "") -> RunRecord:
    """Turn a pipeline ``RunResult`` into a record (JSON summary + arrays)."""
    summary = dict(result.to_json_dict()) if hasattr(result, "to_json_dict") else {}
    for name in ("metrics", "per_class", "timings"):
        if name not in summary and hasattr(result, name):
            summary[name] = getattr(result, name)
    summary = _jsonable(summary)
    summary.setdefault("class_names", list(getattr(result, "class_names", None) or class_names))
    if hasattr(result, "multilabel"):
        summary["multilabel"] = bool(result.multilabel)
    arrays: Dict[str, np.ndarray] = {}
    for name, attr in _ARRAY_FIELDS.items():
        try:
            v = getattr(result, attr, None)
            if isinstance(v, list):  # per-split lists: keep the first split
                v = v[0] if v else None
            if v is None:
                continue
            a = np.asarray(v)
        except Exception:  # noqa: BLE001 - a non-array attribute is simply not kept
            continue
        if a.dtype != object and a.size:
            arrays[name] = a
    if "confusion" in arrays:
        summary.pop("confusion", None)
    summary.pop("predictions", None)  # per-image predictions stay in the pipeline's own output files
    summary.pop("config", None)  # kept once, as the record's config
    rid = new_run_id(existing)
    return RunRecord(id=rid, created=_dt.datetime.now().isoformat(timespec="seconds"),
                     label=label or rid, config=_jsonable(config_dict), summary=summary, arrays=arrays)


def session_dir(workspace) -> Path:
    return Path(workspace) / SESSION_DIR


def save_session(workspace, config, runs: List[RunRecord], state: Optional[Dict[str, Any]] = None) -> Path:
    """Write config.toml, session.json and one npz per run (atomically); returns the session folder."""
    folder = session_dir(workspace)
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "config.toml", config.to_toml_string().encode("utf-8"))
    for r in runs:
        path = folder / "runs" / f"{r.id}.npz"
        if r.arrays and not path.exists():
            atomic_save_npz(path, r.arrays, {"kind": "fvstudio.gui.run", "id": r.id})
    keep = {f"{r.id}.npz" for r in runs}
    for old in (folder / "runs").glob("*.npz"):  # arrays of runs removed from the history
        if old.name not in keep:
            old.unlink()
    doc = {"version": _VERSION, **_jsonable(state or {}),
           "runs": [{"id": r.id, "created": r.created, "label": r.label, "config": r.config,
                     "summary": r.summary, "arrays": sorted(r.arrays)} for r in runs]}
    atomic_write_bytes(folder / "session.json", json.dumps(doc, indent=1).encode("utf-8"))
    return folder


def load_session(workspace):
    """(config or None, runs, state) of a saved session; (None, [], {}) when there is none."""
    from fvstudio.pipeline import PipelineConfig

    folder = session_dir(workspace)
    config = None
    if (folder / "config.toml").exists():
        config = PipelineConfig.from_toml(folder / "config.toml")
    runs: List[RunRecord] = []
    state: Dict[str, Any] = {}
    if (folder / "session.json").exists():
        doc = json.loads((folder / "session.json").read_text(encoding="utf-8"))
        for r in doc.pop("runs", []):
            arrays: Dict[str, np.ndarray] = {}
            path = folder / "runs" / f"{r['id']}.npz"
            if r.get("arrays") and path.exists():
                with np.load(path, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files if not k.startswith("__")}
            runs.append(RunRecord(id=r["id"], created=r.get("created", ""), label=r.get("label", r["id"]),
                                  config=r.get("config", {}), summary=r.get("summary", {}), arrays=arrays))
        state = doc
    return config, runs, state

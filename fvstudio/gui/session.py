"""A saved explorer session: the pipeline config, the run history and which runs are on screen. No Qt, no pickles.

Layout inside a workspace folder (the same folder the pipeline caches its steps in)::

    session/config.toml        the current config (``PipelineConfig.to_toml``; ``fvstudio run`` replays it)
    session/session.json       {"version": 1, "current": run id, "compare": run id, "panel": name,
                                "runs": [{"id", "created", "label", "config", "summary"}, ...]}
    session/runs/<id>.npz      the arrays of one run (confusion matrix, test scores, targets, ...)
                               written with ``atomic_save_npz`` and read with ``allow_pickle=False``

A :class:`RunRecord` is what the results panel shows: built either from a live ``RunResult`` or from these
files, so a restored session shows exactly what was on screen when it was saved.

The same three files can be written to any folder (:func:`save_session_to`, the File menu's "Save session
as…") and read back from it (:func:`load_session_from`); ``session.json`` then also names the workspace it
was saved from. A run id is a plain file name (:func:`check_run_id`: letters, digits, ``. _ -``, no path
separator, no ``..``) because ``runs/<id>.npz`` is built from it: an entry of a session file whose id is
not is refused with a message naming the file and the id, and the other runs are kept.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from fvstudio.engine.serialization import atomic_save_npz, atomic_write_bytes, load_npz

log = logging.getLogger("fvstudio.gui")

SESSION_DIR = "session"
_RUN_KIND = "fvstudio.gui.run"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_VERSION = 1
_METRIC_ORDER = ("mean_per_class_accuracy", "map", "accuracy", "top5_accuracy")


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
    """One run of the history. ``summary`` is the run's ``RunResult.to_json_dict()`` (without the config,
    kept once as ``config``, and without the confusion matrix when it is in ``arrays``) plus ``test_ids``, the
    ids of the first split's test images; ``arrays`` holds the first split's ``confusion`` (single-label),
    test ``scores``, ``targets`` and ``labels`` (in the order of ``test_ids``)."""

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
        vals = {k: float(v) for k, v in self.summary["metrics"].items() if v is not None}
        first = [k for k in _METRIC_ORDER if k in vals]
        return {k: vals[k] for k in first + sorted(k for k in vals if k not in first)}

    @property
    def class_names(self) -> List[str]:
        return list(self.summary["class_names"])

    @property
    def per_class(self) -> Dict[str, np.ndarray]:
        """{per-class metric name ("accuracy" or "ap"): (C,) values in class order (NaN: undefined)}."""
        pc = self.summary["per_class"]
        values = [np.nan if pc.get(n) is None else float(pc[n]) for n in self.class_names]
        return {self.summary["per_class_metric"]: np.array(values)} if pc else {}

    @property
    def confusion(self) -> Optional[np.ndarray]:
        """(C, C) test counts, rows = true class (single-label runs), else None."""
        return self.arrays.get("confusion")

    @property
    def multilabel(self) -> bool:
        return bool(self.summary["multilabel"])

    @property
    def scores(self) -> Optional[np.ndarray]:
        """(n_test, C) test scores of the first split, if the run kept them."""
        return self.arrays.get("scores")

    @property
    def targets(self) -> Optional[np.ndarray]:
        """(n_test, C) test targets in {+1, -1, 0 = ignore} of the first split, if kept."""
        return self.arrays.get("targets")

    @property
    def metrics_std(self) -> Dict[str, float]:
        """Standard deviation of each metric over the splits (empty / None values for a single split)."""
        return {k: v for k, v in self.summary["metrics_std"].items() if v is not None}

    @property
    def timings(self) -> Dict[str, float]:
        """Seconds per step spent in this run (0 for the steps it found cached)."""
        return {k: float(v) for k, v in self.summary["timings"].items()}

    @property
    def compute_timings(self) -> Dict[str, float]:
        """Seconds each step took when it was computed (for cached steps: in an earlier run)."""
        return {k: float(v) for k, v in self.summary["compute_timings"].items()}

    @property
    def cached_steps(self) -> List[str]:
        return list(self.summary["cached_steps"])

    @property
    def dataset_root(self) -> str:
        """The dataset folder the run was made on, as its config names it ('' if it does not)."""
        return str((self.config.get("dataset") or {}).get("root") or "")

    @property
    def metric_kind(self) -> str:
        """What the run's numbers are: "ap" (multi-label: AP per class, mAP) or "accuracy" (single-label)."""
        return str(self.summary.get("per_class_metric") or ("ap" if self.multilabel else "accuracy"))


def comparison_refusal(a: RunRecord, b: RunRecord) -> str:
    """Why run ``b`` cannot be shown beside run ``a`` ('' if it can): the runs must be of the same dataset
    (folder and classes) and report the same kind of metric, so each column holds like numbers."""
    if a.dataset_root != b.dataset_root:
        return f"another dataset ({b.dataset_root or 'unknown'}, run A: {a.dataset_root or 'unknown'})"
    if a.metric_kind != b.metric_kind or a.multilabel != b.multilabel:
        return f"another metric ({b.metric_kind} per class, run A: {a.metric_kind})"
    if a.class_names != b.class_names:
        return "other classes"
    return ""


def check_run_id(rid: Any, source: Any = "the session") -> str:
    """``rid`` if it is a plain name usable as ``runs/<id>.npz`` (letters, digits, ``. _ -``, at most 100
    characters, no path separator, no ``..``), else ValueError naming ``source`` and the id."""
    if not isinstance(rid, str) or not _RUN_ID.match(rid) or ".." in rid:
        raise ValueError(f"{source}: run id {rid!r} is not a plain name (letters, digits, '.', '_', '-'; no "
                         f"path separator, no '..'): that run is left out")
    return rid


def new_run_id(existing) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    rid, i = stamp, 1
    while rid in existing:
        i += 1
        rid = f"{stamp}-{i}"
    return rid


def record_from_result(result, config_dict: Dict[str, Any], existing, label: str = "") -> RunRecord:
    """Turn a pipeline ``RunResult`` into a record (JSON summary + the first split's arrays)."""
    summary = _jsonable(result.to_json_dict())
    first = {"confusion": result.confusion,
             "scores": result.test_scores[0] if result.test_scores else None,
             "targets": result.test_targets[0] if result.test_targets else None,
             "labels": result.test_labels[0] if result.test_labels else None}
    arrays = {name: np.asarray(v) for name, v in first.items() if v is not None and np.asarray(v).size}
    if "confusion" in arrays:
        summary.pop("confusion", None)
    summary.pop("config", None)  # kept once, as the record's config
    summary["test_ids"] = [str(i) for i in result.test_ids[0]] if result.test_ids else []  # of arrays["labels"]
    rid = new_run_id(existing)
    return RunRecord(id=rid, created=_dt.datetime.now().isoformat(timespec="seconds"),
                     label=label or rid, config=_jsonable(config_dict), summary=summary, arrays=arrays)


@dataclass
class SessionState:
    """What is on screen besides the config and the runs: run A, run B ("compare with") and the panel."""

    current: Optional[str] = None
    compare: Optional[str] = None
    panel: Optional[str] = None


def session_dir(workspace) -> Path:
    return Path(workspace) / SESSION_DIR


def save_session(workspace, config, runs: List[RunRecord], state: Optional[SessionState] = None) -> Path:
    """Write the session into ``workspace/session/``; returns that folder."""
    return save_session_to(session_dir(workspace), config, runs, state, workspace=workspace)


def save_session_to(folder, config, runs: List[RunRecord], state: Optional[SessionState] = None,
                    workspace=None) -> Path:
    """Write config.toml, session.json and one npz per run into ``folder`` (atomically); returns ``folder``.

    ``folder`` must be empty, not exist yet, or hold a session already (its ``runs/`` arrays of runs no
    longer in ``runs`` are removed): a ValueError naming it otherwise, so no unrelated file is touched."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not any(
            (folder / n).exists() for n in ("session.json", "config.toml", "runs")):
        raise ValueError(f"{folder} is neither empty nor a saved session: choose an empty or a new folder")
    for r in runs:
        check_run_id(r.id, f"run {r.label!r}")
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "config.toml", config.to_toml_string().encode("utf-8"))
    for r in runs:
        path = folder / "runs" / f"{r.id}.npz"
        if r.arrays and not path.exists():
            atomic_save_npz(path, r.arrays, {"kind": _RUN_KIND, "id": r.id})
    keep = {f"{r.id}.npz" for r in runs}
    for old in (folder / "runs").glob("*.npz"):  # arrays of runs removed from the history
        if old.name not in keep:
            old.unlink()
    doc = {"version": _VERSION, **asdict(state or SessionState()),
           "workspace": str(Path(workspace).resolve()) if workspace is not None else None,
           "runs": [{"id": r.id, "created": r.created, "label": r.label, "config": r.config,
                     "summary": r.summary, "arrays": sorted(r.arrays)} for r in runs]}
    atomic_write_bytes(folder / "session.json", json.dumps(doc, indent=1).encode("utf-8"))
    return folder


def load_session(workspace, problems: Optional[List[str]] = None
                 ) -> Tuple[Optional[Any], List[RunRecord], SessionState]:
    """(config or None, runs, state) of the session saved in ``workspace``; see :func:`load_session_from`."""
    return load_session_from(session_dir(workspace), problems)


def _run_from_entry(entry: Any, folder: Path, where: str) -> RunRecord:
    """One ``runs[]`` entry of session.json as a record; ValueError naming ``where`` if it is refused."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a run entry is not an object: left out")
    rid = check_run_id(entry.get("id"), where)
    missing = [k for k in ("created", "label", "config", "summary") if k not in entry]
    if missing:
        raise ValueError(f"{where}: run {rid!r} lacks {', '.join(missing)}: left out")
    arrays: Dict[str, np.ndarray] = {}
    path = folder / "runs" / f"{rid}.npz"
    if entry.get("arrays") and path.exists():
        arrays, _meta = load_npz(path)  # DamagedFileError (a ValueError) names the file
    return RunRecord(id=rid, created=entry["created"], label=entry["label"], config=entry["config"],
                     summary=entry["summary"], arrays=arrays)


def load_session_from(folder, problems: Optional[List[str]] = None
                      ) -> Tuple[Optional[Any], List[RunRecord], SessionState]:
    """(config or None, runs, state) of the session saved in ``folder``; (None, [], SessionState()) when
    there is none. A run entry that is refused (an id that is not a plain name, a missing field, damaged
    arrays) is left out, the others kept; each refusal is logged and appended to ``problems``."""
    from fvstudio.pipeline import PipelineConfig

    folder = Path(folder)
    config = None
    if (folder / "config.toml").exists():
        config = PipelineConfig.from_toml(folder / "config.toml")
    runs: List[RunRecord] = []
    state = SessionState()
    doc_path = folder / "session.json"
    if doc_path.exists():
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("runs", []), list):
            raise ValueError(f"{doc_path}: not a session file (an object with a 'runs' list expected)")
        for entry in doc.get("runs", []):
            try:
                runs.append(_run_from_entry(entry, folder, str(doc_path)))
            except ValueError as exc:
                log.warning("%s", exc)
                if problems is not None:
                    problems.append(str(exc))
        state = SessionState(current=doc.get("current"), compare=doc.get("compare"), panel=doc.get("panel"))
    return config, runs, state


def saved_workspace(folder) -> Optional[Path]:
    """The workspace a session saved in ``folder`` was saved from (None if it does not say)."""
    try:
        ws = json.loads((Path(folder) / "session.json").read_text(encoding="utf-8")).get("workspace")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(ws) if isinstance(ws, str) and ws else None

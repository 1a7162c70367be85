"""Saved sessions (no Qt): run ids stay plain file names, a refused entry leaves the others, and a session
saved into another folder reads back the same."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fvstudio.gui.session import (RunRecord, SessionState, check_run_id, load_session, load_session_from,
                                  save_session, save_session_to, saved_workspace)
from fvstudio.pipeline import PipelineConfig


def _record(rid: str, value: float = 0.5) -> RunRecord:
    summary = {"metrics": {"mean_per_class_accuracy": value}, "metrics_std": {}, "per_class": {"a": value},
               "per_class_metric": "accuracy", "class_names": ["a"], "multilabel": False, "timings": {},
               "compute_timings": {}, "cached_steps": []}
    return RunRecord(id=rid, created="2024-01-01T00:00:00", label=rid, config={"dataset": {"root": "/d"}},
                     summary=summary, arrays={"confusion": np.array([[3]])})


@pytest.mark.parametrize("rid", ["../../../x", "/etc/x", "a/b", "a\\b", "..", ".hidden", "", "a..b", "x" * 101,
                                 None, 7])
def test_run_ids_must_be_plain_names(rid):
    with pytest.raises(ValueError, match="session.json: run id"):
        check_run_id(rid, "ws/session/session.json")


def test_plain_run_ids_pass():
    for rid in ("20240101-120000", "20240101-120000-2", "run_1.b"):
        assert check_run_id(rid) == rid


def test_a_session_entry_with_a_path_as_id_is_refused_and_the_rest_kept(tmp_path):
    ws = tmp_path / "workspace"
    save_session(ws, PipelineConfig(), [_record("good-1", 0.25), _record("good-2", 0.75)], SessionState("good-2"))
    # what an attacker plants: an npz outside the workspace and entries whose ids walk to it
    outside = tmp_path / "x.npz"
    np.savez(outside, confusion=np.array([[99]]))
    doc_path = ws / "session" / "session.json"
    doc = json.loads(doc_path.read_text())
    bad = dict(doc["runs"][0])
    doc["runs"].insert(1, {**bad, "id": "../../../x"})
    doc["runs"].append({**bad, "id": str(tmp_path / "x")})
    doc_path.write_text(json.dumps(doc))
    problems = []
    config, runs, state = load_session(ws, problems)
    assert [r.id for r in runs] == ["good-1", "good-2"]
    assert [int(r.confusion[0, 0]) for r in runs] == [3, 3]  # nothing read from x.npz
    assert len(problems) == 2
    assert str(doc_path) in problems[0] and "'../../../x'" in problems[0]
    assert repr(str(tmp_path / "x")) in problems[1]
    assert state.current == "good-2"


def test_save_session_as_another_folder_reads_back(tmp_path):
    ws = tmp_path / "workspace"
    ws.mkdir()
    cfg = PipelineConfig({"gmm.n_components": 8})
    folder = save_session_to(tmp_path / "saved" / "mine", cfg, [_record("r1")], SessionState("r1", None, "results"),
                             workspace=ws)
    config, runs, state = load_session_from(folder)
    assert config == cfg and [r.id for r in runs] == ["r1"] and state.panel == "results"
    assert np.array_equal(runs[0].confusion, [[3]])
    assert saved_workspace(folder) == ws.resolve()
    # a folder holding other files is not a session folder: nothing there is touched
    other = tmp_path / "holiday"
    other.mkdir()
    (other / "img.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="neither empty nor a saved session"):
        save_session_to(other, cfg, [])
    assert sorted(p.name for p in other.iterdir()) == ["img.jpg"]

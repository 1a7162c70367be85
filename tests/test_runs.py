"""The explorer's view of pipeline runs, without Qt: step states from progress, the live EM curve, the run job."""
from __future__ import annotations

from pathlib import Path

import pytest

from fvstudio.gui.runs import EMTrace, RunOutcome, StepStates, run_pipeline_step
from fvstudio.pipeline import STEPS


def _pipeline_says(status: str):
    return lambda step: status


def test_step_states_follow_the_run_progress():
    states = StepStates(STEPS)
    states.run_started()
    assert states.step_started("descriptors", 10.0) is None
    assert states.step_started("pca", 12.5) == ("descriptors", 2.5)
    assert states.state("descriptors", _pipeline_says("stale")) == "done"
    assert states.state("pca", _pipeline_says("stale")) == "running"
    assert states.state("gmm", _pipeline_says("not run")) == "not run"  # the pipeline's own status
    states.run_cancelled()
    assert states.state("pca", _pipeline_says("stale")) == "cancelled" and states.running is None
    states.config_edited()  # an edit forgets what finished: the pipeline's status shows again
    assert states.state("descriptors", _pipeline_says("cached")) == "cached"
    assert states.state("pca", _pipeline_says("stale")) == "stale"


def test_step_states_of_failures_and_successes():
    states = StepStates(STEPS)
    states.run_started()
    states.run_failed(None)  # "run all" failed before any step began: no step to blame
    assert states.failed_steps() == []
    states.run_started()
    states.run_failed("gmm")  # "run gmm" failed before its progress began
    assert states.failed_steps() == ["gmm"]
    states.run_started()  # a new run forgets finished states
    assert states.failed_steps() == []
    states.step_started("encode", 0.0)
    outcome = RunOutcome("evaluate", None, {s: 0.0 for s in STEPS}, ["encode", "compress", "classifier", "evaluate"], {})
    states.run_succeeded(outcome, same_config=True)
    assert [states.state(s, _pipeline_says("cached")) for s in STEPS] == ["cached"] * 3 + ["done"] * 4
    states.run_started()
    states.step_started("classifier", 0.0)
    states.run_succeeded(outcome, same_config=False)  # edited meanwhile: the pipeline's status tells
    assert states.state("classifier", _pipeline_says("stale")) == "stale"


def test_em_trace_starts_over_for_each_fit():
    trace = EMTrace()
    assert not trace.add(-3.0, "sift", 0) and not trace.add(-2.5, "sift", 0)
    assert trace.values == [-3.0, -2.5]
    assert trace.add(-4.0, "sift", 1)  # the next split's fit replaces the curve
    assert trace.values == [-4.0]
    trace.reset(trace.values)  # a new run keeps the curve but not its fit
    assert not trace.add(-3.9, "sift", 0) and trace.values == [-4.0, -3.9]


def test_run_pipeline_step_reports_what_it_computed(tmp_path, sample_data_dir):
    from fvstudio.pipeline import Pipeline, PipelineConfig

    root = Path(sample_data_dir) / "textures"
    if not root.is_dir():
        pytest.skip("sample_data/textures is not there")
    cfg = PipelineConfig({"dataset.root": str(root), "dataset.n_train": 2, "dataset.n_test": 1,
                          "dataset.max_pixels": 20_000, "descriptors.scales": 1, "descriptors.step": 8,
                          "pca.n_components": 8, "pca.sample": 1_000})
    first = run_pipeline_step(lambda: Pipeline(cfg.copy(), tmp_path), "pca")
    assert first.step == "pca" and first.computed == ["descriptors", "pca"]
    assert set(first.timings) == {"descriptors", "pca"} and first.config == cfg.to_dict()
    again = run_pipeline_step(lambda: Pipeline(cfg.copy(), tmp_path), "pca")
    assert again.computed == [] and again.timings == {"descriptors": 0.0, "pca": 0.0}

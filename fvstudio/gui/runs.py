"""Pipeline runs as the explorer sees them (no Qt): the job a run executes and what its progress tells.

- :func:`run_pipeline_step` is the body of every run: a fresh ``Pipeline(config, workspace, dataset=)``
  in the worker thread (so editing the config while it runs is safe: the run keeps the values it started
  with) runs one step and what it needs; it returns a :class:`RunOutcome`.
- :class:`StepStates` holds the explorer's own state of each step (``running`` / ``done`` / ``failed`` /
  ``cancelled``), laid over the pipeline's ``status()`` (``cached`` / ``stale`` / ``not run``). It follows
  the ``step`` value of the run's progress reports: a new step starts the clock of that step and marks
  the previous one done.
- :class:`EMTrace` is the live GMM log-likelihood curve: one point per EM iteration from the progress
  values of the ``gmm`` step; each fit (channel, split) starts a curve of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["RunOutcome", "run_pipeline_step", "StepStates", "EMTrace"]


@dataclass
class RunOutcome:
    """What a run returns: the step asked for, its output (a RunResult for ``evaluate``, else the step's
    artifact), seconds per step (0 for steps that were cached), the steps computed, and the config used."""

    step: str
    output: Any
    timings: Dict[str, float]
    computed: List[str]
    config: Dict[str, Any]


def run_pipeline_step(make_pipeline: Callable[[], Any], step: str, progress=None, cancel=None) -> RunOutcome:
    """Run ``step`` on ``make_pipeline()`` (a new Pipeline, built in the calling worker thread)."""
    pipe = make_pipeline()
    out = pipe.run_step(step, progress=progress, cancel=cancel)
    return RunOutcome(step, out, dict(pipe.last_timings), [s for s in pipe.last_timings if pipe.computed[s]],
                      pipe.config.to_dict())


class StepStates:
    """The explorer's state of each step, over the pipeline's own statuses."""

    FINISHED = ("done", "failed", "cancelled")

    def __init__(self, steps: Sequence[str]) -> None:
        self.steps = tuple(steps)
        self._seen: Dict[str, str] = {}  # step -> running / done / failed / cancelled
        self.running: Optional[str] = None  # the step the current run is in
        self._started_at = 0.0

    def state(self, step: str, pipeline_status: Callable[[str], str]) -> str:
        """What the explorer shows for ``step``: what it saw, else ``pipeline_status(step)``."""
        return self._seen.get(step) or pipeline_status(step)

    def failed_steps(self) -> List[str]:
        return [s for s in self.steps if self._seen.get(s) == "failed"]

    # ---------------------------------------------------------------- config changes
    def clear(self) -> None:
        """Another config or dataset: forget everything."""
        self._seen.clear()

    def config_edited(self) -> None:
        """A parameter changed: only a running step stays as seen; the others show the pipeline's status."""
        self._seen = {s: v for s, v in self._seen.items() if v == "running"}

    # ---------------------------------------------------------------- a run
    def run_started(self) -> None:
        self._seen = {s: v for s, v in self._seen.items() if v not in self.FINISHED}
        self.running = None

    def step_started(self, step: str, now: float) -> Optional[Tuple[str, float]]:
        """The run's progress entered ``step`` at time ``now``; returns (previous step, its seconds) if a
        running step just finished, else None."""
        finished = None
        if self.running is not None and self._seen.get(self.running) == "running":
            self._seen[self.running] = "done"
            finished = (self.running, now - self._started_at)
        self._started_at = now
        self.running = step
        self._seen[step] = "running"
        return finished

    def run_succeeded(self, outcome: RunOutcome, same_config: bool) -> None:
        """Steps the run computed are done, unless the config was edited meanwhile (then the pipeline's
        status tells)."""
        for s in outcome.timings:
            if same_config and s in outcome.computed:
                self._seen[s] = "done"
            elif self._seen.get(s) == "running":
                del self._seen[s]
        self.running = None

    def run_cancelled(self) -> None:
        if self.running is not None:
            self._seen[self.running] = "cancelled"
        self.running = None

    def run_failed(self, requested_step: Optional[str]) -> None:
        """The step the run was in failed; if it failed before any step began, ``requested_step`` (the
        step of a single-step run; None for "run all")."""
        step = self.running if self.running is not None else requested_step
        if step is not None:
            self._seen[step] = "failed"
        self.running = None


@dataclass
class EMTrace:
    """The live EM curve: mean log-likelihood per iteration of the GMM fit being drawn."""

    values: List[float] = field(default_factory=list)
    fit: Optional[Tuple[Any, Any]] = None  # (channel, split) of the fit the values belong to

    def reset(self, values: Sequence[float] = ()) -> None:
        self.values = [float(v) for v in values]
        self.fit = None

    def add(self, value: float, channel: Any, split: Any) -> bool:
        """One EM iteration of the fit (channel, split); True if that fit replaced the curve drawn so far."""
        new_fit = self.fit is not None and (channel, split) != self.fit
        if new_fit:
            self.values = []
        self.fit = (channel, split)
        self.values.append(float(value))
        return new_fit

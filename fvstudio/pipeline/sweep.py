"""Parameter sweeps: run a config once per variant in one workspace, so shared steps are computed once.

A sweep is a list of (label, overrides) variants: the Cartesian product of ``--set key=v1,v2,...``
options (the first key is the x axis of the plot, the others make one series per combination), or a
preset (:mod:`.presets`). Each variant is a full :class:`Pipeline` run in the same workspace; because
every step is cached under a hash of its own inputs, varying ``gmm.n_components`` re-uses descriptors and
PCA, varying an ``encoder`` key re-uses the GMM, varying a ``classifier`` key re-uses the FVs.

Outputs in the ``out`` folder: ``sweep.csv`` (one row per variant: swept values, every metric's mean and
std, seconds per step in this run), ``sweep.png`` (the headline metric against the swept value, with
+-std bars when there are repeats) and ``runs/<nn>-<label>/results.json`` + ``predictions.csv``.
"""
from __future__ import annotations

import csv
import io
import itertools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..engine.progress import Progress, check_cancel
from ..engine.serialization import atomic_write_bytes
from .config import ConfigError, PipelineConfig, parse_value
from .results import RunResult, write_results
from .runner import STEPS, Pipeline

__all__ = ["parse_set_option", "grid_variants", "run_sweep", "SweepResult"]


def parse_set_option(text: str) -> Tuple[str, List[Any]]:
    """``"gmm.n_components=16,64,256"`` -> ("gmm.n_components", [16, 64, 256]) (validated)."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE[,VALUE...], got {text!r}")
    key, _, rest = text.partition("=")
    key = key.strip()
    values = [parse_value(key, v) for v in rest.split(",") if v.strip() != ""]
    if not values:
        raise ConfigError(f"--set {key}: no values given")
    probe = PipelineConfig()
    for v in values:
        probe.set(key, v)  # validates type and range now, before anything runs
    return key, values


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "+".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def grid_variants(sets: Sequence[Tuple[str, List[Any]]]) -> List[Tuple[str, Dict[str, Any]]]:
    keys = [k for k, _ in sets]
    out = []
    for combo in itertools.product(*[vals for _, vals in sets]):
        overrides = dict(zip(keys, combo))
        label = ", ".join(f"{k}={_fmt(v)}" for k, v in overrides.items())
        out.append((label, overrides))
    return out


@dataclass
class SweepResult:
    rows: List[Dict[str, Any]] = field(default_factory=list)
    results: List[RunResult] = field(default_factory=list)
    csv_path: Optional[Path] = None
    png_path: Optional[Path] = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text)[:60].strip("_") or "run"


def run_sweep(config: PipelineConfig, variants: List[Tuple[str, Dict[str, Any]]], out_dir, workspace=None, *,
              x_key: Optional[str] = None, title: str = "", xlabel: str = "", style: str = "line", progress=None, cancel=None,
              on_variant: Optional[Callable[[int, str], None]] = None) -> SweepResult:
    """Run every variant, write ``sweep.csv``, ``sweep.png`` and per-run results into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep = SweepResult()
    n = len(variants)
    for i, (label, overrides) in enumerate(variants):
        check_cancel(cancel, "sweep")
        cfg = config.copy()
        cfg.update(overrides)
        if on_variant is not None:
            on_variant(i, label)
        pipe = Pipeline(cfg, workspace)

        def sub(p: Progress, i=i):
            if progress is not None:
                progress(Progress((i + p.fraction) / n, 1.0, p.message, {**dict(p.values), "variant": i,
                                                                          "variant_label": label}))

        t0 = time.perf_counter()
        res = pipe.run_all(progress=sub, cancel=cancel)
        total = time.perf_counter() - t0
        write_results(res, out_dir / "runs" / f"{i:02d}-{_slug(label)}", config_dict=cfg.to_dict(),
                      extra={"sweep_label": label, "overrides": overrides, "workspace": str(pipe.workspace)})
        row: Dict[str, Any] = {"label": label}
        for k, v in overrides.items():
            row[k] = _fmt(v)
        for k, v in res.metrics.items():
            row[k] = v
            row[f"{k}_std"] = res.metrics_std.get(k)
        for s in STEPS:
            row[f"seconds_{s}"] = round(float(res.timings.get(s, 0.0)), 3)
        row["seconds_total"] = round(total, 3)
        row["cached_steps"] = "+".join(res.cached_steps)
        sweep.rows.append(row)
        sweep.results.append(res)
    # table
    cols: List[str] = []
    for row in sweep.rows:
        cols += [c for c in row if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for row in sweep.rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    sweep.csv_path = atomic_write_bytes(out_dir / "sweep.csv", buf.getvalue().encode())
    # plot
    if sweep.results:
        from .plot import category_chart_png

        primary = sweep.results[0].primary_metric
        metric_label = {"map": "mAP", "mean_per_class_accuracy": "mean per-class accuracy"}.get(primary, primary)
        keys = list(variants[0][1]) if variants else []
        if x_key is None and keys and style == "line":
            x_key = keys[0]
        if x_key is not None and style == "line":
            cats: List[str] = []
            series: Dict[str, List[Optional[float]]] = {}
            errs: Dict[str, List[Optional[float]]] = {}
            for (label, ov), res in zip(variants, sweep.results):
                x = _fmt(ov[x_key])
                if x not in cats:
                    cats.append(x)
            for (label, ov), res in zip(variants, sweep.results):
                name = ", ".join(f"{k}={_fmt(v)}" for k, v in ov.items() if k != x_key) or metric_label
                series.setdefault(name, [None] * len(cats))
                errs.setdefault(name, [None] * len(cats))
                j = cats.index(_fmt(ov[x_key]))
                series[name][j] = res.metrics[primary]
                errs[name][j] = res.metrics_std.get(primary) or None
            xlabel = xlabel or x_key
        else:
            cats = [label for label, _ in variants]
            series = {metric_label: [r.metrics[primary] for r in sweep.results]}
            errs = {metric_label: [r.metrics_std.get(primary) or None for r in sweep.results]}
            xlabel = xlabel or "variant"
        ds_name = Path(config.get("dataset.root") or "dataset").name
        sweep.png_path = category_chart_png(
            out_dir / "sweep.png", cats, series, errors=errs, style=style,
            title=title or f"{metric_label} vs {xlabel} on {ds_name}",
            xlabel=xlabel, ylabel=f"{metric_label} (%)")
    return sweep

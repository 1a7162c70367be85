"""Parameter sweeps: run a config once per variant in one workspace, so shared steps are computed once.

A sweep is a list of (label, overrides) variants: the Cartesian product of ``--set key=v1,v2,...``
options (the first key is the x axis of the plot, the others make one series per combination), or a
preset (:mod:`.presets`). Each variant is a full :class:`Pipeline` run in the same workspace; because
every step is cached under a hash of its own inputs, varying ``gmm.n_components`` re-uses descriptors and
PCA, varying an ``encoder`` key re-uses the GMM, varying a ``classifier`` key re-uses the FVs.

Outputs in the ``out`` folder: ``sweep.csv`` (one row per variant: swept values, every metric's mean and
std, bytes per image of what the classifier read -- PQ codes or float32 FVs -- and, compressed, the test MSE;
seconds per step in this run), ``sweep.png`` (the headline metric against the swept value, with +-std bars
when there are repeats), ``sweep_bytes.png`` when a variant is compressed (the headline metric against bytes
per image, Sec. 4) and ``runs/<nn>-<label>/results.json`` + ``predictions.csv``.
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
from .config import SCHEMA, ConfigError, PipelineConfig, parse_value
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
    bytes_png_path: Optional[Path] = None
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (label, why) of invalid combinations


_METRIC_LABELS = {"map": "mAP", "mean_per_class_accuracy": "mean per-class accuracy"}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text)[:60].strip("_") or "run"


def _run_variant(config: PipelineConfig, i: int, n: int, label: str, overrides: Dict[str, Any], out_dir: Path,
                 workspace, progress, cancel) -> Tuple[Dict[str, Any], RunResult]:
    """Run variant ``i`` of ``n``, write its results, return its row of ``sweep.csv`` and its result."""
    cfg = config.copy()
    cfg.update(overrides)
    pipe = Pipeline(cfg, workspace)

    def sub(p: Progress) -> None:
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
    row.update(_storage(pipe, res))
    for s in STEPS:
        row[f"seconds_{s}"] = round(float(res.timings.get(s, 0.0)), 3)
    row["seconds_total"] = round(total, 3)
    row["cached_steps"] = "+".join(res.cached_steps)
    return row, res


def _storage(pipe: Pipeline, res: RunResult) -> Dict[str, Any]:
    """Bytes per image the classifier read (PQ codes, or float32 FVs) and, compressed, the test MSE."""
    if res.compression:
        c = res.compression
        mse = c.get("mse_test")
        if mse is None and "channels" in c:
            mse = sum(v.get("mse_test") or 0.0 for v in c["channels"].values())
        return {"compressed": True, "bytes_per_image": float(c["bytes_per_image"]),
                "bytes_pq": int(c["bytes_pq"]), "mse_test": mse}
    dims = [pipe.artifact("encode", ch).fvs.shape[1] for ch in pipe.channels]
    return {"compressed": False, "bytes_per_image": float(4 * sum(dims)), "bytes_pq": None, "mse_test": None}


def _write_bytes_chart(config: PipelineConfig, sweep: "SweepResult", path: Path) -> Path:
    from .plot import bytes_chart_png

    metric = sweep.results[0].primary_metric
    metric_label = _METRIC_LABELS.get(metric, metric)
    ds_name = Path(config.get("dataset.root") or "dataset").name
    def short(label: str) -> str:  # "compression.group=8" -> "group=8": the section is the same for all
        return ", ".join(part.strip().split(".", 1)[-1] for part in label.split(","))

    points = [(short(row["label"]), row["bytes_per_image"], res.metrics[metric], row["compressed"])
              for row, res in zip(sweep.rows, sweep.results)]
    return bytes_chart_png(path, points, title=f"{metric_label} against bytes per image ({ds_name})",
                           ylabel=f"{metric_label} (%)")


def _write_table(rows: List[Dict[str, Any]], path: Path) -> Path:
    cols: List[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_bytes(path, buf.getvalue().encode())


def axis_label(key: str) -> str:
    """A swept config key as an axis label, with the schema's unit (``descriptors.patch (px)``)."""
    unit = SCHEMA[key].unit if key in SCHEMA else ""
    return f"{key} ({unit})" if unit else key


def _chart_series(variants, results: List[RunResult], x_key: Optional[str], metric: str, metric_label: str):
    """(categories, series, errors) of the chart: one line per combination of the keys other than
    ``x_key`` against the values of ``x_key``, or (``x_key=None``) one value per variant."""
    if x_key is None:
        cats = [label for label, _ in variants]
        return (cats, {metric_label: [r.metrics[metric] for r in results]},
                {metric_label: [r.metrics_std.get(metric) or None for r in results]})
    cats: List[str] = []
    for _, ov in variants:
        if _fmt(ov[x_key]) not in cats:
            cats.append(_fmt(ov[x_key]))
    series: Dict[str, List[Optional[float]]] = {}
    errs: Dict[str, List[Optional[float]]] = {}
    for (_, ov), res in zip(variants, results):
        name = ", ".join(f"{k}={_fmt(v)}" for k, v in ov.items() if k != x_key) or metric_label
        series.setdefault(name, [None] * len(cats))
        errs.setdefault(name, [None] * len(cats))
        j = cats.index(_fmt(ov[x_key]))
        series[name][j] = res.metrics[metric]
        errs[name][j] = res.metrics_std.get(metric) or None
    return cats, series, errs


def _write_chart(config: PipelineConfig, variants, results: List[RunResult], path: Path, *, x_key: Optional[str],
                 title: str, xlabel: str, style: str) -> Path:
    """The headline metric of every variant: against ``x_key`` (lines) or per variant (bars)."""
    from .plot import category_chart_png

    metric = results[0].primary_metric
    metric_label = _METRIC_LABELS.get(metric, metric)
    keys = list(variants[0][1]) if variants else []
    if x_key is None and keys and style == "line":
        x_key = keys[0]
    if style != "line":
        x_key = None
    cats, series, errs = _chart_series(variants, results, x_key, metric, metric_label)
    xlabel = xlabel or (axis_label(x_key) if x_key is not None else "variant")
    ds_name = Path(config.get("dataset.root") or "dataset").name
    return category_chart_png(path, cats, series, errors=errs, style=style,
                              title=title or f"How does {metric_label} change with {xlabel}? ({ds_name})",
                              xlabel=xlabel, ylabel=f"{metric_label} (%)")


def run_sweep(config: PipelineConfig, variants: List[Tuple[str, Dict[str, Any]]], out_dir, workspace=None, *,
              x_key: Optional[str] = None, title: str = "", xlabel: str = "", style: str = "line", progress=None,
              cancel=None, on_variant: Optional[Callable[[int, str], None]] = None,
              on_result: Optional[Callable[[int, str, Dict[str, Any], RunResult], None]] = None) -> SweepResult:
    """Run every variant, write ``sweep.csv``, ``sweep.png`` and per-run results into ``out_dir``.

    ``on_variant(i, label)`` is called before variant ``i`` of the valid ones runs, ``on_result(i, label,
    row, result)`` after it (its ``sweep.csv`` row and :class:`RunResult`), so a caller can draw as it goes.

    A combination of a grid the config refuses (e.g. ``compression.bits_per_dim = 2`` with ``group = 16``:
    32 bits a code) is checked before anything runs, left out and listed in ``SweepResult.skipped``; if
    every variant is refused, the first reason is raised."""
    out_dir = Path(out_dir)
    sweep = SweepResult()
    valid = []
    for label, overrides in variants:
        try:
            Pipeline(config.copy().update(overrides), workspace).check()
            valid.append((label, overrides))
        except ConfigError as exc:
            sweep.skipped.append((label, str(exc)))
    if variants and not valid:
        raise ConfigError(f"every variant of the sweep is refused; {sweep.skipped[0][0]}: {sweep.skipped[0][1]}")
    variants = valid
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, (label, overrides) in enumerate(variants):
        check_cancel(cancel, "sweep")
        if on_variant is not None:
            on_variant(i, label)
        row, res = _run_variant(config, i, len(variants), label, overrides, out_dir, workspace, progress, cancel)
        sweep.rows.append(row)
        sweep.results.append(res)
        if on_result is not None:
            on_result(i, label, row, res)
    sweep.csv_path = _write_table(sweep.rows, out_dir / "sweep.csv")
    if sweep.results:
        sweep.png_path = _write_chart(config, variants, sweep.results, out_dir / "sweep.png", x_key=x_key,
                                      title=title, xlabel=xlabel, style=style)
        if any(row["compressed"] for row in sweep.rows):
            sweep.bytes_png_path = _write_bytes_chart(config, sweep, out_dir / "sweep_bytes.png")
    return sweep

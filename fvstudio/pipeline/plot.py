"""Headless PNG charts of sweep results, drawn by matplotlib on its Agg canvas: no Qt, no display, any thread.

One chart type: a categorical x axis (the swept values, in the order run) and one or more series, each a
value per category (``None`` or NaN = missing):

- ``style="line"``: lines with markers, one line per series (e.g. mean per-class accuracy against
  ``gmm.n_components``, one line per value of a second swept key);
- ``style="bar"``: grouped bars, one bar per series in each category (e.g. Table 1's PN / L2 / SP variants).

Optional +-std error bars, each value written beside its marker or above its bar, axis labels, a title and
a legend (when there are several series). With ``percent=True`` values are fractions drawn as percent.

A second chart, :func:`bytes_chart_png`, puts each run at its storage cost: the headline metric against
bytes per image on a log axis (the paper's accuracy-against-code-size trade-off, Sec. 4), one labelled point
per run, the uncompressed runs drawn hollow.

matplotlib is imported inside each chart function and used through its object API (``Figure`` +
``FigureCanvasAgg``, not ``pyplot``), so importing this module costs nothing, no global backend is chosen
and no GUI toolkit is ever loaded: ``fvstudio sweep`` draws its chart from a worker thread.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..engine.serialization import atomic_path

__all__ = ["category_chart_png", "bytes_chart_png"]

_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
_DPI = 100
_PAD = 0.08  # fraction of the value span left free above (and, for lines, below) the data


def _scaled(values: Sequence[Optional[float]], errors: Optional[Sequence[Optional[float]]],
            scale: float) -> Tuple[List[float], List[float]]:
    """Values and errors times ``scale``; a missing value becomes NaN, a missing error 0."""
    errs = list(errors) if errors is not None else [None] * len(values)
    ys = [v * scale if v is not None and math.isfinite(v) else math.nan for v in values]
    es = [(e or 0.0) * scale if e is not None and math.isfinite(e) else 0.0 for e in errs]
    return ys, es


def _value_range(points: List[Tuple[List[float], List[float]]], style: str, percent: bool) -> Tuple[float, float]:
    """The y range: every value +- its error, padded; bars start at 0; percent stays in [0, 100] if it can."""
    lows = [y - e for ys, es in points for y, e in zip(ys, es) if math.isfinite(y)]
    highs = [y + e for ys, es in points for y, e in zip(ys, es) if math.isfinite(y)]
    lo, hi = (min(lows), max(highs)) if lows else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.05, hi + 0.05
    pad = _PAD * (hi - lo)
    lo, hi = (min(0.0, lo), hi + pad) if style == "bar" else (lo - pad, hi + pad)
    if percent:
        lo = max(lo, 0.0) if lo >= -1e-9 else lo
        hi = min(hi, 100.0) if hi <= 100.0 + 1e-9 else hi
    return lo, hi


def _round_range(ax, lo: float, hi: float) -> None:
    """Y limits rounded outwards to a tick step of 1, 2, 2.5 or 5 x 10^n giving about 5 intervals."""
    from matplotlib.ticker import MultipleLocator

    raw = (hi - lo) / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    ax.set_ylim(math.floor(lo / step) * step, math.ceil(hi / step) * step)
    ax.yaxis.set_major_locator(MultipleLocator(step))


def _value_text(v: float, percent: bool) -> str:
    return f"{v:.1f}" if percent else f"{v:.3g}"


def _draw_line(ax, x, ys, es, color: str, name: str, percent: bool) -> None:
    ax.plot(x, ys, color=color, linewidth=2.2, marker="o", markersize=7, label=name, zorder=3)
    if any(es):
        ax.errorbar(x, ys, yerr=es, fmt="none", ecolor=color, elinewidth=1.2, capsize=4, zorder=2)
    for xi, y in zip(x, ys):
        if math.isfinite(y):
            ax.annotate(_value_text(y, percent), (xi, y), xytext=(7, 6), textcoords="offset points",
                        fontsize=8, color="#222222")


def _draw_bars(ax, x, ys, es, index: int, n_series: int, color: str, name: str, percent: bool) -> None:
    width = 0.8 / n_series
    xs = [xi - 0.4 + width * (index + 0.5) for xi in x]
    ax.bar(xs, ys, width=width * 0.92, color=color, label=name, zorder=2)
    if any(es):
        ax.errorbar(xs, ys, yerr=es, fmt="none", ecolor="#222222", elinewidth=1.2, capsize=4, zorder=3)
    for xi, y, e in zip(xs, ys, es):
        if math.isfinite(y):
            ax.annotate(_value_text(y, percent), (xi, y + e), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8, color="#222222")


def _style_axes(ax, categories: Sequence[str], ylim: Tuple[float, float], title: str, xlabel: str,
                ylabel: str) -> None:
    n = max(1, len(categories))
    width = max(6, int(90 / n))  # characters per line of a category label
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels([textwrap.fill(str(c), width) for c in categories])
    ax.set_xlim(-0.5, n - 0.5)
    _round_range(ax, *ylim)
    ax.figure.suptitle(title, fontsize=12, fontweight="bold")
    ax.set_xlabel(xlabel, labelpad=10)
    ax.set_ylabel(ylabel, labelpad=10)
    ax.grid(axis="y", color="#e5e5e5", linewidth=1.0, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def category_chart_png(path, categories: Sequence[str], series: Dict[str, Sequence[Optional[float]]], *,
                       errors: Optional[Dict[str, Sequence[Optional[float]]]] = None, title: str = "",
                       xlabel: str = "", ylabel: str = "", style: str = "line", percent: bool = True,
                       size=(900, 560)) -> Path:
    """Draw ``series`` (name -> one value per category, None = missing) against ``categories`` as a PNG.

    ``errors`` (same shape as ``series``) draws +-error bars; ``size`` is (width, height) in pixels.
    The file is written atomically; returns its path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if style not in ("line", "bar"):
        raise ValueError(f"style must be 'line' or 'bar', got {style!r}")
    path = Path(path)
    scale = 100.0 if percent else 1.0
    points = [_scaled(values, (errors or {}).get(name), scale) for name, values in series.items()]
    fig = Figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = list(range(len(categories)))
    for i, (name, (ys, es)) in enumerate(zip(series, points)):
        color = _PALETTE[i % len(_PALETTE)]
        if style == "bar":
            _draw_bars(ax, x, ys, es, i, len(series), color, name, percent)
        else:
            _draw_line(ax, x, ys, es, color, name, percent)
    _style_axes(ax, categories, _value_range(points, style, percent), title, xlabel, ylabel)
    if len(series) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return path


def bytes_chart_png(path, points: Sequence[Tuple[str, float, float, bool]], *, title: str = "",
                    ylabel: str = "", percent: bool = True, size=(900, 560)) -> Path:
    """Draw (label, bytes per image, value, compressed) points: value against bytes per image (log x)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    scale = 100.0 if percent else 1.0
    pts = [(lab, float(b), float(v) * scale, bool(c)) for lab, b, v, c in points
           if b and b > 0 and v is not None and math.isfinite(v)]
    fig = Figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for compressed, name, face in ((True, "PQ codes", _PALETTE[0]), (False, "float32 FVs", "none")):
        sel = [p for p in pts if p[3] == compressed]
        if sel:
            ax.scatter([p[1] for p in sel], [p[2] for p in sel], s=60, facecolors=face, edgecolors=_PALETTE[0],
                       linewidths=2, label=name, zorder=3)
    merged: Dict[Tuple[float, float], List[str]] = {}  # runs at the same point share one label
    for lab, b, v, _ in pts:
        merged.setdefault((round(b, 6), round(v, 6)), []).append(lab)
    for (b, v), labs in merged.items():
        ax.annotate("\n".join(textwrap.fill(lab, 28) for lab in labs), (b, v), xytext=(7, 6),
                    textcoords="offset points", fontsize=8, color="#222222")
    ax.set_xscale("log")
    if pts:
        lo, hi = min(p[1] for p in pts), max(p[1] for p in pts)
        ax.set_xlim(lo / 1.6, hi * 2.5)
        _round_range(ax, *_value_range([([p[2] for p in pts], [0.0] * len(pts))], "line", percent))
    fig.suptitle(title, fontsize=12, fontweight="bold")
    ax.set_xlabel("bytes per image (log scale)", labelpad=10)
    ax.set_ylabel(ylabel, labelpad=10)
    ax.grid(color="#e5e5e5", linewidth=1.0, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if len({p[3] for p in pts}) > 1:
        ax.legend(loc="lower right", frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return path

"""Headless PNG charts for sweep results, drawn with Qt's QPainter on a QImage (no window, no matplotlib).

One chart type: a categorical x axis (the swept values, in the order run), one or more series drawn as
lines with markers (``style="line"``) or grouped bars (``style="bar"``), optional +-std error bars, value
labels, axis titles and a legend. Qt runs with the ``offscreen`` platform when no application exists yet,
so this works on a machine without a display.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..engine.serialization import atomic_path

__all__ = ["category_chart_png"]

_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def ensure_app():
    """The process's Qt application, created offscreen if there is none yet.

    Qt allows its application object only on the main thread: one created on a worker thread makes
    the interpreter crash at exit (seen: ``fvstudio sweep`` exited with SIGSEGV after writing its
    files). Callers that draw charts from a worker thread must call this on the main thread first.
    """
    import threading

    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance()
    if app is None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("no Qt application exists and one cannot be created on a worker thread; "
                               "call fvstudio.pipeline.plot.ensure_app() on the main thread first")
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        os.environ.setdefault("QT_NO_GLIB", "1")  # Qt's own event loop: no GLib warnings at exit
        app = QGuiApplication(["fvstudio-plot"])
    return app


def _nice_range(lo: float, hi: float):
    if not math.isfinite(lo) or not math.isfinite(hi):
        return 0.0, 1.0, 0.1
    if hi - lo < 1e-9:
        lo, hi = lo - 0.05, hi + 0.05
    span = hi - lo
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=mag * 10)
    lo = math.floor(lo / step) * step
    hi = math.ceil(hi / step) * step
    return lo, hi, step


def category_chart_png(path, categories: Sequence[str], series: Dict[str, Sequence[Optional[float]]], *,
                       errors: Optional[Dict[str, Sequence[Optional[float]]]] = None, title: str = "",
                       xlabel: str = "", ylabel: str = "", style: str = "line", percent: bool = True,
                       size=(900, 560)) -> Path:
    """Draw ``series`` (name -> one value per category, None = missing) against ``categories``."""
    ensure_app()
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPen

    path = Path(path)
    W, H = size
    img = QImage(W, H, QImage.Format_ARGB32)
    img.fill(QColor("white"))
    p = QPainter(img)
    p.setRenderHint(QPainter.Antialiasing, True)
    scale = 100.0 if percent else 1.0
    errs = errors or {}
    ext = [(v + (e or 0)) * scale for name, s in series.items() for v, e in
           zip(s, errs.get(name, [0] * len(s))) if v is not None and math.isfinite(v)]
    ext_lo = [(v - (e or 0)) * scale for name, s in series.items() for v, e in
              zip(s, errs.get(name, [0] * len(s))) if v is not None and math.isfinite(v)]
    lo = min(ext_lo) if ext_lo else 0.0
    hi = max(ext) if ext else 1.0
    if style == "bar":
        lo = min(0.0, lo)
        hi = hi + 0.08 * max(hi - lo, 1e-6)
    else:
        pad = 0.08 * max(hi - lo, 1e-6)
        lo, hi = lo - pad, hi + pad
    if percent:
        lo, hi = max(lo, 0.0) if lo >= -1e-9 else lo, min(hi, 100.0) if hi <= 100.0 + 1e-9 else hi
    lo, hi, step = _nice_range(lo, hi)

    font = QFont("DejaVu Sans", 10)
    p.setFont(font)
    left, right, top, bottom = 80, 30, 60, 95
    n_series = len(series)
    if n_series > 1:
        right = 190
    plot = QRectF(left, top, W - left - right, H - top - bottom)

    def ymap(v):
        return plot.bottom() - (v - lo) / (hi - lo) * plot.height()

    n = max(1, len(categories))
    slot = plot.width() / n

    def xmap(i):
        return plot.left() + slot * (i + 0.5)

    # grid and y ticks
    p.setPen(QPen(QColor("#dddddd"), 1))
    t = lo
    ticks = []
    while t <= hi + 1e-9:
        ticks.append(t)
        t += step
    for t in ticks:
        y = ymap(t)
        p.setPen(QPen(QColor("#e5e5e5"), 1))
        p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        p.setPen(QPen(QColor("#333333"), 1))
        label = f"{t:.0f}" if step >= 1 else f"{t:.{max(0, -int(math.floor(math.log10(step))))}f}"
        p.drawText(QRectF(0, y - 9, left - 8, 18), Qt.AlignRight | Qt.AlignVCenter, label)
    # axes
    p.setPen(QPen(QColor("#333333"), 1.5))
    p.drawLine(plot.bottomLeft(), plot.bottomRight())
    p.drawLine(plot.bottomLeft(), plot.topLeft())
    # x labels
    for i, cat in enumerate(categories):
        p.drawLine(QPointF(xmap(i), plot.bottom()), QPointF(xmap(i), plot.bottom() + 5))
        p.drawText(QRectF(xmap(i) - slot / 2, plot.bottom() + 6, slot, 36),
                   Qt.AlignHCenter | Qt.AlignTop | Qt.TextWordWrap, str(cat))
    # titles
    bold = QFont("DejaVu Sans", 12)
    bold.setBold(True)
    p.setFont(bold)
    p.drawText(QRectF(0, 8, W, 40), Qt.AlignHCenter | Qt.AlignVCenter | Qt.TextWordWrap, title)
    p.setFont(font)
    p.drawText(QRectF(plot.left(), H - 40, plot.width(), 30), Qt.AlignHCenter | Qt.AlignVCenter, xlabel)
    p.save()
    p.translate(18, plot.center().y())
    p.rotate(-90)
    p.drawText(QRectF(-plot.height() / 2, -12, plot.height(), 24), Qt.AlignCenter, ylabel)
    p.restore()

    small = QFont("DejaVu Sans", 8)
    for si, (name, ys) in enumerate(series.items()):
        color = QColor(_PALETTE[si % len(_PALETTE)])
        es = errs.get(name, [None] * len(ys))
        pts = []
        for i, v in enumerate(ys):
            if v is None or not math.isfinite(v):
                pts.append(None)
                continue
            pts.append((i, v * scale, (es[i] or 0.0) * scale))
        if style == "bar":
            bw = slot * 0.8 / max(1, n_series)
            for pt in pts:
                if pt is None:
                    continue
                i, v, e = pt
                x0 = xmap(i) - slot * 0.4 + si * bw
                rect = QRectF(x0, ymap(max(v, lo)), bw * 0.92, ymap(lo) - ymap(max(v, lo)))
                p.fillRect(rect, QBrush(color))
                p.setPen(QPen(QColor("#222222"), 1))
                p.setFont(small)
                p.drawText(QRectF(x0 - 10, ymap(v + e) - 18, bw + 20, 16), Qt.AlignHCenter | Qt.AlignBottom,
                           f"{v:.1f}" if percent else f"{v:.3g}")
                if e:
                    _errbar(p, x0 + bw * 0.46, ymap(v - e), ymap(v + e))
        else:
            p.setPen(QPen(color, 2.2))
            prev = None
            for pt in pts:
                if pt is None:
                    prev = None
                    continue
                i, v, e = pt
                if prev is not None:
                    p.drawLine(QPointF(xmap(prev[0]), ymap(prev[1])), QPointF(xmap(i), ymap(v)))
                prev = (i, v)
            for pt in pts:
                if pt is None:
                    continue
                i, v, e = pt
                if e:
                    _errbar(p, xmap(i), ymap(v - e), ymap(v + e), color)
                p.setPen(QPen(color, 1.5))
                p.setBrush(QBrush(color))
                p.drawEllipse(QPointF(xmap(i), ymap(v)), 4.5, 4.5)
                p.setPen(QPen(QColor("#222222"), 1))
                p.setFont(small)
                p.drawText(QRectF(xmap(i) + 8, ymap(v) - 20, 80, 16), Qt.AlignLeft | Qt.AlignBottom,
                           f"{v:.1f}" if percent else f"{v:.3g}")
            p.setBrush(Qt.NoBrush)
        p.setFont(font)
        if n_series > 1:
            ly = top + 10 + si * 22
            p.fillRect(QRectF(W - right + 14, ly + 4, 16, 10), QBrush(color))
            p.setPen(QPen(QColor("#222222"), 1))
            p.drawText(QRectF(W - right + 36, ly, right - 40, 18), Qt.AlignLeft | Qt.AlignVCenter, name)
    p.end()
    with atomic_path(path) as tmp:
        if not img.save(str(tmp), "PNG"):
            raise OSError(f"could not write the plot {path}")
    return path


def _errbar(p, x, y0, y1, color=None):
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QColor, QPen

    p.setPen(QPen(color or QColor("#222222"), 1.2))
    p.drawLine(QPointF(x, y0), QPointF(x, y1))
    p.drawLine(QPointF(x - 4, y0), QPointF(x + 4, y0))
    p.drawLine(QPointF(x - 4, y1), QPointF(x + 4, y1))

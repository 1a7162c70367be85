"""A sweep as the CLI and the explorer both describe it, and the data of its live charts; no Qt.

- :func:`plan_sweep` turns ``--set KEY=V1,V2`` pairs and/or a preset into a :class:`SweepPlan`: the
  variants :func:`fvstudio.pipeline.sweep.run_sweep` runs and the chart options it draws ``sweep.png``
  with (a line chart against the first key, or, for a preset, bars). ``fvstudio sweep`` and the explorer's
  sweep dialog use it, so a sweep run in the window writes the same ``sweep.csv`` / ``sweep.png`` as
  :meth:`SweepPlan.command_line` does headless.
- :func:`sweepable_keys`: the config keys a sweep may vary (numbers and choices; not paths or runtime keys).
- :func:`line_series` / :func:`table1_bars`: the live chart's categories and series from the headline
  metric of the variants finished so far (by label; missing ones None): accuracy against the first key's values, one
  line per combination of the other keys; for the Table 1 preset, bars grouped by the normalisations
  (none, PN, L2, PN+L2) with the spatial pyramid off and on side by side.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .config import SCHEMA
from .presets import preset_variants

__all__ = ["SweepPlan", "plan_sweep", "sweepable_keys", "line_series", "table1_bars", "variant_bars",
           "format_value"]

TABLE1_TITLE = "Table 1: what do power normalisation (PN), L2 and the spatial pyramid (SP) add?"
FINDINGS_TITLE = "Sec. 3.2: FV vs soft-BoV at equal K, PCA vs raw descriptors, closed-form vs empirical FIM"
_PRESET_CHART = {"table1": (TABLE1_TITLE, "improvements over the plain Fisher kernel"),
                 "findings": (FINDINGS_TITLE, "one change from the defaults")}


def format_value(v: Any) -> str:
    """A swept value as ``--set`` writes it (lists joined by '+', floats by %g)."""
    if isinstance(v, list):
        return "+".join(str(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


@dataclass
class SweepPlan:
    """Variants and chart options of a sweep, and the ``--set`` / ``--preset`` options that make them."""

    sets: List[Tuple[str, List[Any]]]
    preset: Optional[str]
    variants: List[Tuple[str, Dict[str, Any]]]
    x_key: Optional[str]
    style: str  # "line" or "bar"
    title: str = ""
    xlabel: str = ""
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    def run_kwargs(self) -> Dict[str, Any]:
        """The chart keywords of :func:`run_sweep`."""
        return {"x_key": self.x_key, "title": self.title, "xlabel": self.xlabel, "style": self.style}

    def command_line(self, config_path, out, workspace=None) -> str:
        """The ``fvstudio sweep`` command that replays this sweep headless."""
        args = ["fvstudio", "sweep", str(config_path)]
        if self.preset:
            args += ["--preset", self.preset]
        for key, values in self.sets:
            args += ["--set", f"{key}={','.join(format_value(v) for v in values)}"]
        args += ["--out", str(out)]
        if workspace is not None:
            args += ["--workspace", str(workspace)]
        return " ".join(shlex.quote(a) for a in args)


def plan_sweep(sets: Sequence[Tuple[str, List[Any]]] = (), preset: Optional[str] = None) -> SweepPlan:
    """The plan of ``fvstudio sweep`` with these ``--set`` pairs and ``--preset`` (ValueError if neither)."""
    from .sweep import grid_variants

    sets = [(k, list(v)) for k, v in sets]
    if preset:
        variants = preset_variants(preset)
        if sets:  # extra --set values with a preset: a grid of presets (e.g. per channel)
            variants = [(f"{lab}, {glab}", {**ov, **gov}) for glab, gov in grid_variants(sets)
                        for lab, ov in variants]
        title, xlabel = _PRESET_CHART.get(preset, ("", ""))
        return SweepPlan(sets, preset, variants, None, "bar", title, xlabel)
    if not sets:
        raise ValueError("sweep needs --set KEY=V1,V2,... or --preset NAME")
    return SweepPlan(sets, None, grid_variants(sets), sets[0][0], "line")


def sweepable_keys() -> List[str]:
    """Config keys with a number or a choice (numbers, booleans, choices); dataset paths and the keys that
    change how, not what, is computed (``runtime``, ``compute``) left out."""
    out = []
    for key, p in SCHEMA.items():
        if not p.hashed or p.type in ("path", "list[float]"):
            continue
        if p.type in ("int", "float", "bool") or p.choices:
            out.append(key)
    return out


def line_series(plan: SweepPlan, scores: Dict[str, float]) -> Tuple[List[str], Dict[str, List[Optional[float]]]]:
    """(x categories, {series name: value per category}) of the variants in ``scores`` (label -> metric)."""
    if plan.x_key is None:
        return variant_bars(plan, scores)
    cats: List[str] = []
    for _, ov in plan.variants:
        if format_value(ov[plan.x_key]) not in cats:
            cats.append(format_value(ov[plan.x_key]))
    series: Dict[str, List[Optional[float]]] = {}
    for label, ov in plan.variants:
        name = ", ".join(f"{k}={format_value(v)}" for k, v in ov.items() if k != plan.x_key)
        series.setdefault(name, [None] * len(cats))
        series[name][cats.index(format_value(ov[plan.x_key]))] = scores.get(label)
    return cats, series


def table1_bars(plan: SweepPlan, scores: Dict[str, float]) -> Tuple[List[str], Dict[str, List[Optional[float]]]]:
    """Table 1 as grouped bars: groups none / PN / L2 / PN+L2, one bar without and one with SP."""
    groups = ["none", "PN", "L2", "PN+L2"]
    series: Dict[str, List[Optional[float]]] = {"without SP (1x1)": [None] * 4, "with SP (1x1+3x1)": [None] * 4}
    for label, _ in plan.variants:
        parts = label.split(", ")[0].split("+")
        sp = "SP" in parts
        norm = "+".join(p for p in parts if p in ("PN", "L2")) or "none"
        series["with SP (1x1+3x1)" if sp else "without SP (1x1)"][groups.index(norm)] = scores.get(label)
    return groups, series


def variant_bars(plan: SweepPlan, scores: Dict[str, float]) -> Tuple[List[str], Dict[str, List[Optional[float]]]]:
    """One value per variant, in the plan's order (a preset other than Table 1, or a plan without an x key):
    (variant labels, {"": value per label})."""
    cats = [label for label, _ in plan.variants]
    return cats, {"": [scores.get(label) for label in cats]}


def default_out(workspace, stamp: str) -> Path:
    """Where the explorer writes a sweep unless told otherwise: ``<workspace>/sweeps/<stamp>``."""
    return Path(workspace) / "sweeps" / stamp

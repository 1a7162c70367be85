"""The data of the explorer's Compression panel (paper Sec. 4-5), computed from a :class:`Pipeline`; no Qt.

- :func:`distortion_grid` -> :class:`DistortionGrid`: PQ distortion (MSE, eq. 42) over a grid of
  (b = bits per dimension, G = group) settings, each fitted on the split's cached *training* FVs and
  measured on its *test* FVs through :func:`fvstudio.engine.hubness.distortion_sweep`, with the bytes per
  image each setting costs and the config's own setting; settings the PQ refuses (bG not a whole number of
  bits in 1..16, or G not dividing a Gaussian's block) or whose codebooks would exceed
  :data:`CODEBOOK_BUDGET` are kept as NaN cells with the reason.
- :func:`bytes_points` -> :class:`BytesPoint` list: accuracy against bytes per image, one point per run
  (uncompressed float32 FVs, PQ codes, PQ codes + the per-Gaussian sparsity bit), from run summaries
  (``RunResult.to_json_dict()``) and their configs; :func:`fv_bytes` is the float32 size of a config's FVs.
- :func:`neighbour_view` -> :class:`NeighbourView`: the paper's Fig. 10 for any k: the test FVs'
  k nearest training items in each database (uncompressed FVs, and with the compress step cached its PQ
  codes and re-normalised PQ codes), the k-occurrence N_k of every training image, its sorted curve and
  hubness summary (:func:`fvstudio.engine.hubness.hubness_summary`), and per training image how many of the
  queries that chose it have another label; :meth:`NeighbourView.hubs` lists the head of a curve.

The neighbour lists are searched exactly as the classifier step searches them
(:func:`fvstudio.pipeline.neighbours.knn_search` on the same row providers), so at the run's k the summary
figures equal ``RunResult.hubness``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine.hubness import DistortionPoint, distortion_sweep, hubness_summary
from ..engine.pq import ProductQuantizer
from ..engine.progress import check_cancel, report, scaled
from ..engine.rows import ArrayRows, SubsetRows
from .config import load_config, parse_pyramid

__all__ = ["DistortionGrid", "distortion_grid", "BytesPoint", "bytes_points", "fv_bytes", "NeighbourView",
           "DatabaseNeighbours", "Hub", "neighbour_view", "DEFAULT_BITS", "DEFAULT_GROUPS", "DATABASES"]

DEFAULT_BITS = (0.25, 0.5, 1.0, 2.0)
DEFAULT_GROUPS = (4, 8, 16)
#: Largest codebooks (bytes) a setting of the distortion grid may need; larger ones are refused.
CODEBOOK_BUDGET = 2 ** 30
#: Fig. 10's three databases, in drawing order.
DATABASES = ("uncompressed", "pq", "pq_renormalised")


# ------------------------------------------------------------------------------------------- distortion
@dataclass
class DistortionGrid:
    """MSE of PQ over bits (rows) x groups (columns); NaN where a setting is refused (``refused``)."""

    bits: List[float]
    groups: List[int]
    mse: np.ndarray  # (len(bits), len(groups)) mean ||q(x) - x||^2 on the test FVs
    relative_mse: np.ndarray  # mse / mean ||x||^2
    bytes_per_image: np.ndarray  # PQ code bytes per image (no sparsity bit)
    float32_bytes: int  # the uncompressed FV
    chosen: Optional[Tuple[float, int]]  # the config's (b, G), None when compression is off
    refused: Dict[Tuple[float, int], str] = field(default_factory=dict)
    points: List[DistortionPoint] = field(default_factory=list)
    n_train: int = 0
    n_test: int = 0
    channel: str = ""
    split: int = 0

    def cell(self, b: float, g: int) -> Tuple[int, int]:
        """(row, column) of setting (b, G)."""
        return self.bits.index(float(b)), self.groups.index(int(g))


def _refusal(b: float, g: int, dim: int, layout) -> str:
    """Why PQ cannot code ``dim``-d FVs of ``layout`` with (b, G) ('' if it can)."""
    bits = b * g
    if abs(bits - round(bits)) > 1e-9 or not 1 <= round(bits) <= 16:
        return f"b x G = {bits:g} bits is not a whole number in 1..16"
    try:
        ProductQuantizer(b, g, layout=layout)._structure(dim)
    except ValueError as exc:
        return str(exc)
    size = dim * 2 ** int(round(bits)) * 4  # M = dim / G codebooks of 2^(bG) centroids of G float32
    if size > CODEBOOK_BUDGET:
        return (f"its codebooks would take {size / 2 ** 30:.1f} GiB ({dim} dimensions x 2^{int(round(bits))} "
                f"centroids x 4 bytes; at most {CODEBOOK_BUDGET / 2 ** 30:g} GiB here)")
    return ""


def _subset(rows: np.ndarray, n: Optional[int], seed: int) -> np.ndarray:
    if n is None or n <= 0 or len(rows) <= n:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=int(n), replace=False))


def distortion_grid(pipeline, bits: Sequence[float] = DEFAULT_BITS, groups: Sequence[int] = DEFAULT_GROUPS, *,
                    split: int = 0, channel: Optional[str] = None, max_train: Optional[int] = None,
                    max_test: Optional[int] = None, progress=None, cancel=None) -> DistortionGrid:
    """PQ distortion of every (b, G) in ``bits`` x ``groups`` on the cached FVs of ``split`` and ``channel``.

    The PQ learns from the split's training FVs (at most ``max_train``, drawn with ``compression.seed``) with
    the config's ``compression.n_iter``, ``train_sample`` and ``seed``, and is measured on its test FVs (at
    most ``max_test``). Raises ValueError when the encode step is not cached for the current config."""
    c = pipeline.config
    channel = channel or pipeline.channels[0]
    enc = pipeline.artifact("encode", channel, split)
    if enc is None:
        raise ValueError("the encode step is not cached for the current config: run the pipeline up to encode first")
    sp = pipeline.context().splits[split]
    seed = int(c.get("compression.seed"))
    tr = _subset(enc.rows_for(sp.train), max_train, seed)
    te = _subset(enc.rows_for(sp.test), max_test, seed + 1)
    bits = [float(b) for b in bits]
    groups = [int(g) for g in groups]
    dim = int(enc.fvs.shape[1])
    layout = enc.encoder.block_layout()
    shape = (len(bits), len(groups))
    grid = DistortionGrid(bits, groups, np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan),
                          4 * dim, None, n_train=len(tr), n_test=len(te), channel=channel, split=split)
    if float(c.get("compression.bits_per_dim")) > 0:
        grid.chosen = (float(c.get("compression.bits_per_dim")), int(c.get("compression.group")))
    settings = []
    for b in bits:
        for g in groups:
            why = _refusal(b, g, dim, layout)
            if why:
                grid.refused[(b, g)] = why
            else:
                settings.append((b, g))
    if not settings:
        return grid
    report(progress, 0, len(settings), f"PQ distortion: reading {len(tr)} + {len(te)} FVs")
    X_tr = np.ascontiguousarray(enc.fvs[tr], dtype=np.float32)
    X_te = np.ascontiguousarray(enc.fvs[te], dtype=np.float32)
    check_cancel(cancel, "distortion")
    sample = c.get("compression.train_sample") or None
    grid.points = distortion_sweep(X_tr, X_te, settings, layout=layout, n_iter=c.get("compression.n_iter"),
                                   train_sample=sample, seed=seed, progress=progress, cancel=cancel)
    for p in grid.points:
        r, col = grid.cell(p.bits_per_dim, p.group)
        grid.mse[r, col] = p.mse
        grid.relative_mse[r, col] = p.relative_mse
        grid.bytes_per_image[r, col] = p.bytes_per_vector
    return grid


# ------------------------------------------------------------------------------------ accuracy vs bytes
def fv_bytes(config) -> int:
    """Bytes of one image's float32 FV(s) under ``config`` (a PipelineConfig or its dict): the sum over
    channels of 4 x regions x K x (D per mean / sigma gradient, 1 per weight gradient); D counts the two
    position coordinates when ``gmm.position_scale`` > 0."""
    from .steps.pca import modelled_dims

    c = load_config(config)
    K = int(c.get("gmm.n_components"))
    pyramid = parse_pyramid(c.get("encoder.pyramid"))
    regions = 1 if pyramid is None else sum(r * q for r, q in pyramid)
    kind = c.get("encoder.kind")
    total = 0
    for ch in c.get("descriptors.channels"):
        D = modelled_dims(c, ch)
        if kind == "fisher":
            per = sum(1 if g == "w" else D for g in c.get("encoder.gradients"))
        elif kind == "vlad":
            per = D
        else:  # soft_bow
            per = 1
        total += regions * K * per
    return 4 * total


@dataclass
class BytesPoint:
    """One run at one storage: ``series`` is "uncompressed", "PQ" or "PQ + sparsity bit"."""

    label: str
    series: str
    bytes_per_image: float
    score: float  # the run's headline metric (fraction)
    metric: str


SERIES = ("uncompressed", "PQ", "PQ + sparsity bit")


def bytes_points(runs: Sequence[Tuple[str, Dict[str, Any], Dict[str, Any]]],
                 dataset_root: Optional[str] = None) -> List[BytesPoint]:
    """Accuracy against bytes per image of ``runs`` ((label, summary, config) each; summary =
    ``RunResult.to_json_dict()``), only those of ``dataset_root`` when given. An uncompressed run gives
    one point at its float32 size; a compressed run one at its PQ code size and, when it stored the
    sparsity bit (lossless: same accuracy), one at its mean size with the bit."""
    out: List[BytesPoint] = []
    want = str(Path(dataset_root).resolve()) if dataset_root else None
    for label, summary, config in runs:
        root = str((config.get("dataset") or {}).get("root") or "")
        if want is not None and (not root or str(Path(root).resolve()) != want):
            continue
        metric = summary.get("primary_metric") or "mean_per_class_accuracy"
        score = (summary.get("metrics") or {}).get(metric)
        if score is None:
            continue
        comp = summary.get("compression")
        if not comp:
            out.append(BytesPoint(label, "uncompressed", float(fv_bytes(config)), float(score), metric))
            continue
        out.append(BytesPoint(label, "PQ", float(comp["bytes_pq"]), float(score), metric))
        if comp.get("sparsity"):
            out.append(BytesPoint(label, "PQ + sparsity bit", float(comp["bytes_pq_sparse_mean"]), float(score),
                                  metric))
    return out


# ------------------------------------------------------------------------------------ neighbour frequency
@dataclass
class Hub:
    """A training image at the head of a k-occurrence curve."""

    rank: int  # 1 = the most chosen
    dataset_index: int
    id: str
    path: str
    label: str
    chosen: int  # N_k: queries that have it among their k neighbours
    disagree: int  # ... of which have another label than this image


@dataclass
class DatabaseNeighbours:
    """The test queries' k-NN lists in one database and their k-occurrence figures."""

    name: str
    neighbours: np.ndarray  # (n_queries, k) database rows, nearest first
    k_occurrence: np.ndarray  # (n_db,) N_k per database row
    disagreements: np.ndarray  # (n_db,) queries choosing the row whose label differs
    summary: Dict[str, Any]  # HubnessSummary.as_dict()

    @property
    def sorted_k_occurrence(self) -> np.ndarray:
        return np.sort(self.k_occurrence)[::-1]


@dataclass
class NeighbourView:
    """Fig. 10 for one k: per database the k-occurrence of the split's training images among its test FVs."""

    k: int
    channel: str
    split: int
    train_indices: np.ndarray  # dataset index of each database row
    test_indices: np.ndarray
    databases: Dict[str, DatabaseNeighbours]
    ids: List[str]  # dataset ids, paths and label names of the database rows
    paths: List[str]
    labels: List[str]
    notes: List[str] = field(default_factory=list)

    def hubs(self, database: str, n: int) -> List[Hub]:
        """The ``n`` most chosen training images of ``database`` (ties by database order)."""
        d = self.databases[database]
        order = np.argsort(-d.k_occurrence, kind="stable")[:max(0, int(n))]
        return [Hub(rank=r + 1, dataset_index=int(self.train_indices[i]), id=self.ids[i], path=self.paths[i],
                    label=self.labels[i], chosen=int(d.k_occurrence[i]), disagree=int(d.disagreements[i]))
                for r, i in enumerate(order)]


def neighbour_view(pipeline, k: int, *, split: int = 0, channel: Optional[str] = None, progress=None,
                   cancel=None) -> NeighbourView:
    """The k-NN lists of ``split``'s test FVs (always uncompressed, as in the classifier) among its training
    FVs, and among the training PQ codes (plain and re-normalised) when the compress step is cached; metric
    and weights from ``[classifier]``. Raises ValueError when the encode step is not cached."""
    from .neighbours import knn_params, knn_search
    from .steps.compress import compression_on

    c = pipeline.config
    channel = channel or pipeline.channels[0]
    enc = pipeline.artifact("encode", channel, split)
    if enc is None:
        raise ValueError("the encode step is not cached for the current config: run the pipeline up to encode first")
    ds = pipeline.dataset
    if ds.multilabel:
        raise ValueError("neighbour frequency needs single-label data (a label per image to compare)")
    sp = pipeline.context().splits[split]
    tr, te = enc.rows_for(sp.train), enc.rows_for(sp.test)
    raw = ArrayRows(enc.fvs, check=False)
    dbs: Dict[str, Any] = {"uncompressed": SubsetRows(raw, tr)}
    notes: List[str] = []
    if len(pipeline.channels) > 1:
        notes.append(f"channel {channel} only (of {', '.join(pipeline.channels)})")
    if compression_on(c):
        comp = pipeline.artifact("compress", channel, split)
        if comp is None:
            notes.append("the compress step is not cached for this config: uncompressed FVs only")
        else:
            dbs["pq"] = SubsetRows(comp.rows(False), tr)
            dbs["pq_renormalised"] = SubsetRows(comp.rows(True), tr)
            if comp.quantizer.ksub >= len(tr):
                notes.append(f"each codebook has {comp.quantizer.ksub} centroids for {len(tr)} training FVs, so PQ "
                             f"codes the training FVs (almost) exactly and the three curves nearly coincide; "
                             f"lower compression.bits_per_dim x group to see PQ's effect")
    else:
        notes.append("compression is off (compression.bits_per_dim = 0): uncompressed FVs only")
    labels = np.asarray(ds.labels)
    y_db, y_q = labels[np.asarray(sp.train)], labels[np.asarray(sp.test)]
    k = max(1, min(int(k), len(tr)))
    params = {**knn_params(c), "k": k}
    queries = SubsetRows(raw, te)
    out: Dict[str, DatabaseNeighbours] = {}
    for j, (name, db) in enumerate(dbs.items()):
        check_cancel(cancel, "neighbours")
        part = scaled(progress, j / len(dbs), (j + 1) / len(dbs), f"{name}: ")
        _, nb, _ = knn_search(db, np.zeros(len(db), np.int64), queries, params, 1, progress=part, cancel=cancel)
        occ = np.bincount(nb.ravel(), minlength=len(db)).astype(np.int64)
        other = (y_db[nb] != y_q[:, None]).ravel()
        dis = np.bincount(nb.ravel()[other], minlength=len(db)).astype(np.int64)
        out[name] = DatabaseNeighbours(name, nb, occ, dis, hubness_summary(nb, len(db)).as_dict())
    report(progress, 1, 1, "neighbours: done")
    train_idx = np.asarray(enc.indices)[tr]
    return NeighbourView(k=k, channel=channel, split=split, train_indices=train_idx,
                         test_indices=np.asarray(enc.indices)[te], databases=out,
                         ids=[ds.ids[i] for i in train_idx], paths=[str(ds.paths[i]) for i in train_idx],
                         labels=[ds.class_names[int(labels[i])] for i in train_idx], notes=notes)

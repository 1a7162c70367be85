"""The pipeline runner: the paper's small-scale protocol (Sec. 3) as six cached steps.

``STEPS = ("descriptors", "pca", "gmm", "encode", "classifier", "evaluate")``:

1. **descriptors** — dense SIFT / LCS of every image of the splits, through :class:`DescriptorStore`
   (keyed by dataset + extraction parameters; resumable, atomic).
2. **pca** — per channel and split, PCA fitted on ``pca.sample`` descriptors drawn from the split's
   training images (Sec. 3.1: 64 dims).
3. **gmm** — per channel and split, a diagonal GMM fitted by EM on ``gmm.sample`` PCA-projected descriptors
   drawn from the same training images (Appendix B).
4. **encode** — per channel and split, one FV (or soft-BoV / VLAD) per image of the split, stored as an
   ``.npy`` matrix (rows follow ``indices``; written to a temporary name and renamed, so memory-mappable and
   never half-written).
5. **classifier** — per split: one-vs-rest linear classifiers by SGD (lambda cross-validated on the
   training rows), per channel; several channels are fused late (weighted sum of scores, weight
   cross-validated; Sec. 3.2) or early (concatenated FVs); test-set scores are stored.
6. **evaluate** — metrics per split (single-label: mean per-class top-1, overall top-1, top-k; multi-label:
   VOC07 11-point AP per class and mAP), mean and std over splits, confusion matrix.

The vocabulary (PCA + GMM) is learned from each split's own training images, never from images that split
tests: it is unsupervised, but an image whose descriptors shaped the vocabulary is encoded differently from
one that did not (the GMM's Gaussians sit on its descriptors, so its gradients are small). On the sample
data, re-using split 0's vocabulary for 4 further random splits, whose test images were partly among split
0's training images, gave 62.5 / 71.3 / 58.8 / 71.3% instead of 77.5 / 81.3 / 77.5 / 88.8% with each
split's own vocabulary. Splits with the same training images share one vocabulary (same cache key), so a
single split, a VOC split or split lists cost one vocabulary as before; ``dataset.repeats = N`` costs N.
Diagnostics (:meth:`Pipeline.artifact`) show split 0 unless asked for another.

Caching. Every step's output lives in ``<workspace>/steps/<step>/<key>/`` where ``key`` hashes the step's
parameters and the keys of the steps it reads, so changing a classifier parameter re-uses descriptors,
PCA, GMM and FVs. A step directory is valid once its ``manifest.json`` exists; the manifest is written last
and every file before it through a temporary name + rename, so a cancel or a crash at any point leaves
either a complete step or none. ``status(step)`` is "cached" (valid output for the current config), "stale"
(outputs exist only for other parameters) or "not run".
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine.progress import Progress, check_cancel
from ..engine.serialization import atomic_path, atomic_write_bytes
from .config import ConfigError, PipelineConfig, load_config, parse_pyramid
from .results import RunResult

__all__ = ["STEPS", "Pipeline", "run", "default_workspace", "EncodedSet", "ClassifierOutput"]

STEPS: Tuple[str, ...] = ("descriptors", "pca", "gmm", "encode", "classifier", "evaluate")

# Rough share of the total run time of each step at the paper's settings (Fig. 6), for the overall bar.
_STEP_WEIGHTS = {"descriptors": 0.45, "pca": 0.03, "gmm": 0.15, "encode": 0.27, "classifier": 0.09,
                 "evaluate": 0.01}

_ENCODE_CHUNK = 64  # images per encode_batch call (progress/cancel granularity)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _flat_keys(k) -> List[str]:
    """The keys of one step: a key, {channel: key} or {channel: [key per split]}, as a flat list."""
    if isinstance(k, dict):
        return [v for vs in k.values() for v in _flat_keys(vs)]
    if isinstance(k, (list, tuple)):
        return [str(v) for v in k]
    return [str(k)]


def _ids_digest(ids: Sequence[str], indices: np.ndarray) -> str:
    h = hashlib.sha256()
    for i in np.asarray(indices, np.int64):
        h.update(ids[int(i)].encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def default_workspace(config: Optional[PipelineConfig] = None) -> Path:
    """``<user cache dir>/fvstudio/workspaces/<dataset name>-<hash of its absolute path>``."""
    import platformdirs

    base = Path(platformdirs.user_cache_dir("fvstudio")) / "workspaces"
    root = (config.get("dataset.root") if config is not None else "") or "default"
    root_abs = str(Path(root).expanduser().resolve()) if root != "default" else root
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(root_abs).name)[:40] or "dataset"
    return base / f"{name}-{_digest(root_abs)[:10]}"


def _call(func: Callable, *args, **kwargs):
    """Call ``func`` with only the keyword arguments its signature accepts (tolerates API drift)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # pragma: no cover
        return func(*args, **kwargs)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return func(*args, **kwargs)
    return func(*args, **{k: v for k, v in kwargs.items() if k in sig.parameters})


class _SubProgress:
    """Maps a step's own 0..1 progress into the overall run's [start, stop] and tags it with the step."""

    def __init__(self, progress, step: str, start: float, stop: float):
        self.progress, self.step, self.start, self.stop = progress, step, start, stop

    def part(self, a: float, b: float, **tags) -> Optional[Callable[[Progress], None]]:
        """A callback for a sub-task covering fraction [a, b] of this step."""
        if self.progress is None:
            return None

        def _cb(p: Progress) -> None:
            # only the runner's own final event reports a step as complete (fraction 1)
            self.emit(min(a + (b - a) * p.fraction, 0.999), p.message, **{**dict(p.values), **tags})

        return _cb

    def emit(self, fraction: float, message: str = "", **values) -> None:
        if self.progress is None:
            return
        fraction = min(1.0, max(0.0, fraction))
        overall = self.start + (self.stop - self.start) * fraction
        values = {**values, "step": self.step, "step_fraction": fraction}
        self.progress(Progress(overall, 1.0, message, values))


@dataclass
class EncodedSet:
    """The ``encode`` step's output for one channel: ``fvs[r]`` encodes dataset image ``indices[r]``."""

    channel: str
    fvs: np.ndarray  # (n, dim) float32, memory-mapped read-only
    indices: np.ndarray  # (n,) int64 dataset indices
    ids: List[str]
    encoder: Any  # the encoder object (dim, block_layout() for plots)
    failed: List[str]

    def rows_for(self, dataset_indices: np.ndarray) -> np.ndarray:
        pos = {int(i): r for r, i in enumerate(self.indices)}
        return np.array([pos[int(i)] for i in dataset_indices], dtype=np.int64)


@dataclass
class ClassifierOutput:
    """The ``classifier`` step's output: test scores per split (fused), lambdas and fusion weights."""

    test_scores: List[np.ndarray]  # per split (n_test, C)
    channel_scores: List[Dict[str, np.ndarray]]  # per split, per channel (late fusion) or "early"
    lambdas: List[Dict[str, float]]
    fusion_weights: List[Optional[float]]
    model_paths: List[Dict[str, str]]

    def load_model(self, split: int = 0, channel: Optional[str] = None):
        from ..engine.svm import OneVsRestSGD

        paths = self.model_paths[split]
        return OneVsRestSGD.load(paths[channel or next(iter(paths))])


class Pipeline:
    """The six steps over one config and one workspace folder; every output is cached there.

    ``config`` may be changed between calls (``pipeline.config.set("gmm.n_components", 64)``): statuses,
    keys and runs always follow the current values.
    """

    def __init__(self, config=None, workspace=None, *, dataset=None):
        self.config: PipelineConfig = load_config(config)
        self.workspace = Path(workspace).expanduser() if workspace else default_workspace(self.config)
        self.workspace.mkdir(parents=True, exist_ok=True)
        self._given_dataset = dataset
        self._dataset_memo: Optional[Tuple[str, Any]] = None
        self._splits_memo: Optional[Tuple[str, list]] = None
        self._result: Optional[RunResult] = None
        self._memo: Dict[Tuple, Any] = {}
        self.computed: Counter = Counter()  # step -> times actually computed (not loaded) by this object
        self.last_timings: Dict[str, float] = {}
        self.last_cached: List[str] = []

    # ---- dataset and splits -------------------------------------------------------------------------
    @property
    def dataset(self):
        if self._given_dataset is not None:
            return self._given_dataset
        root = self.config.get("dataset.root")
        if not root:
            raise ConfigError("dataset.root is not set: give the dataset folder (class sub-folders or a VOC devkit)")
        if self._dataset_memo is None or self._dataset_memo[0] != root:
            from ..data.datasets import open_dataset

            if not Path(root).exists():
                raise ConfigError(f"dataset.root: folder {root} does not exist")
            self._dataset_memo = (root, open_dataset(root))
            self._splits_memo = None
        return self._dataset_memo[1]

    @property
    def splits(self) -> list:
        ds = self.dataset
        sig = _digest([self.config.hashed_section("dataset"), id(ds)])
        if self._splits_memo is None or self._splits_memo[0] != sig:
            self._splits_memo = (sig, self._make_splits(ds))
        return self._splits_memo[1]

    def _make_splits(self, ds) -> list:
        from ..data import datasets as dmod

        c = self.config
        mode = c.get("dataset.split")
        train_list, test_list = c.get("dataset.train_list"), c.get("dataset.test_list")
        if mode == "auto":
            if train_list or test_list:
                mode = "lists"
            elif getattr(ds, "kind", "folder") == "voc":
                mode = "voc"
            else:
                mode = "random"
        if mode == "lists":
            if not (train_list and test_list):
                raise ConfigError("dataset.split = 'lists' needs both dataset.train_list and dataset.test_list")
            for key, p in (("dataset.train_list", train_list), ("dataset.test_list", test_list)):
                if not Path(p).is_file():
                    raise ConfigError(f"{key}: file {p} does not exist")
            return [dmod.split_from_lists(ds, train_list, test_list)]
        if mode == "voc":
            if getattr(ds, "kind", None) != "voc":
                raise ConfigError(f"dataset.split = 'voc' but {c.get('dataset.root')} is not a VOC devkit")
            return [dmod.voc_split(ds, train=c.get("dataset.voc_train"), test=c.get("dataset.voc_test"))]
        if getattr(ds, "multilabel", False):
            raise ConfigError(f"dataset.split = 'random' needs a single-label dataset; {c.get('dataset.root')} is "
                              f"multi-label (use split = 'voc' or train_list/test_list)")
        n_test = c.get("dataset.n_test") or None
        try:
            splits = dmod.random_splits(ds, c.get("dataset.n_train"), n_test=n_test,
                                        repeats=c.get("dataset.repeats"), seed=c.get("dataset.seed"))
        except ValueError as exc:
            raise ConfigError(f"dataset.n_train / dataset.n_test: {exc}") from None
        return list(splits)

    @property
    def channels(self) -> List[str]:
        return self.config.get("descriptors.channels")

    def needed_indices(self) -> np.ndarray:
        """Every dataset index some split trains or tests on (sorted, unique): what the descriptors step extracts."""
        idx = [np.asarray(s.train, np.int64) for s in self.splits] + [np.asarray(s.test, np.int64)
                                                                      for s in self.splits]
        return np.unique(np.concatenate(idx)) if idx else np.zeros(0, np.int64)

    def _fit_indices(self, split: int = 0) -> np.ndarray:
        """The images the vocabulary of ``split`` is learned from: that split's training images."""
        return np.unique(np.asarray(self.splits[split].train, np.int64))

    def _split_indices(self, split: int) -> np.ndarray:
        """The images ``split`` encodes: its training and test images."""
        sp = self.splits[split]
        return np.unique(np.concatenate([np.asarray(sp.train, np.int64), np.asarray(sp.test, np.int64)]))

    def _split_units(self, keys, step: str):
        """(channel, split) pairs of ``step`` whose key is new in this run (splits with the same training
        images share one vocabulary: the first such split computes it)."""
        seen, out = set(), []
        for ch in self.channels:
            for s, key in enumerate(keys[step][ch]):
                if key not in seen:
                    seen.add(key)
                    out.append((ch, s, key))
        return out

    # ---- descriptor stores --------------------------------------------------------------------------
    def descriptor_params(self, channel: str) -> Dict[str, Any]:
        c = self.config
        p = {"patch": c.get("descriptors.patch"), "step": c.get("descriptors.step"),
             "scales": c.get("descriptors.scales"), "scale_factor": c.get("descriptors.scale_factor"),
             "max_pixels": c.get("dataset.max_pixels")}
        if channel == "sift":
            p.update(window=c.get("descriptors.window"), presmooth=c.get("descriptors.presmooth"),
                     root=c.get("descriptors.root_sift"))
        return p

    def store(self, channel: str):
        from ..data.cache import DescriptorStore

        params = self.descriptor_params(channel)
        memo_key = ("store", channel, _digest(params), id(self.dataset))
        if memo_key not in self._memo:
            self._memo[memo_key] = DescriptorStore(self.workspace, self.dataset, channel, params)
        return self._memo[memo_key]

    # ---- keys and statuses --------------------------------------------------------------------------
    def _encoder_params(self) -> Dict[str, Any]:
        c = self.config
        kind = c.get("encoder.kind")
        p = {"kind": kind, "power": c.get("encoder.power"), "lp": c.get("encoder.lp"),
             "pyramid": c.get("encoder.pyramid"), "posterior_threshold": c.get("encoder.posterior_threshold")}
        if kind == "fisher":
            p.update(gradients=c.get("encoder.gradients"), fim=c.get("encoder.fim"))
        return p

    def keys(self) -> Dict[str, Any]:
        """Cache key of every step for the current config ({step: key or {channel: key}})."""
        c = self.config
        ds = self.dataset
        splits = self.splits
        ids = list(ds.ids)
        n = len(splits)
        fit_sig = [_ids_digest(ids, self._fit_indices(s)) for s in range(n)]
        needed_sig = [_ids_digest(ids, self._split_indices(s)) for s in range(n)]
        desc = {ch: str(self.store(ch).key) for ch in self.channels}
        # pca / gmm / encode: {channel: [key of split 0, key of split 1, ...]}
        pca = {ch: [_digest(["pca", desc[ch], fit_sig[s], c.hashed_section("pca")]) for s in range(n)]
               for ch in self.channels}
        gmm = {ch: [_digest(["gmm", k, c.hashed_section("gmm")]) for k in pca[ch]] for ch in self.channels}
        enc_params = self._encoder_params()
        enc = {ch: [_digest(["encode", gmm[ch][s], enc_params, needed_sig[s],
                             fit_sig[s] if enc_params.get("fim") == "empirical" else None]) for s in range(n)]
               for ch in self.channels}
        labels = np.asarray(getattr(ds, "targets", None) if ds.multilabel else ds.labels)
        split_sig = _digest([[_ids_digest(ids, s.train), _ids_digest(ids, s.test)] for s in splits]
                            + [hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest(),
                               list(ds.class_names)])
        clf_params = c.hashed_section("classifier")
        fusion = c.hashed_section("fusion") if len(self.channels) > 1 else None
        clf = _digest(["classifier", [enc[ch] if n > 1 else enc[ch][0] for ch in self.channels], split_sig,
                       clf_params, fusion])
        ev = _digest(["evaluate", clf, c.hashed_section("evaluate")])
        return {"descriptors": desc, "pca": pca, "gmm": gmm, "encode": enc, "classifier": clf, "evaluate": ev}

    def _step_dir(self, step: str, key: str) -> Path:
        return self.workspace / "steps" / step / key

    def _manifest(self, step: str, key: str) -> Optional[Dict[str, Any]]:
        path = self._step_dir(step, key) / "manifest.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def _is_cached(self, step: str, keys: Dict[str, Any]) -> bool:
        if step == "descriptors":
            needed = self.needed_indices()
            for ch in self.channels:
                store = self.store(ch)
                if not store.is_complete(needed):
                    if not hasattr(store, "refresh"):
                        return False
                    store.refresh()  # another Pipeline object (e.g. a GUI worker) may have extracted since
                    if not store.is_complete(needed):
                        return False
            return True
        return all(self._manifest(step, v) is not None for v in _flat_keys(keys[step]))

    def _has_any(self, step: str) -> bool:
        if step == "descriptors":
            d = self.workspace / "descriptors"
            return d.is_dir() and any(any(f.suffix == ".json" for f in (s / "images").glob("*.json"))
                                      for s in d.iterdir() if (s / "images").is_dir())
        d = self.workspace / "steps" / step
        return d.is_dir() and any((p / "manifest.json").is_file() for p in d.iterdir())

    def status(self, step: str) -> str:
        """"cached" | "stale" | "not run" for ``step`` under the current config."""
        self._check_step(step)
        try:
            keys = self.keys()
            if self._is_cached(step, keys):
                return "cached"
        except (ConfigError, FileNotFoundError, ValueError, ImportError):
            pass
        return "stale" if self._has_any(step) else "not run"

    def statuses(self) -> Dict[str, str]:
        return {s: self.status(s) for s in STEPS}

    @staticmethod
    def _check_step(step: str) -> None:
        if step not in STEPS:
            raise ValueError(f"step must be one of {list(STEPS)}, got {step!r}")

    # ---- running -----------------------------------------------------------------------------------
    def run_step(self, step: str, progress=None, cancel=None, *, force: bool = False):
        """Run ``step`` (and any prerequisite not cached); returns :meth:`artifact` of ``step``.

        With ``force`` the step itself is recomputed even if cached (prerequisites still re-used).
        """
        self._check_step(step)
        keys = self.keys()
        upto = STEPS[: STEPS.index(step) + 1]
        todo = [s for s in upto if not self._is_cached(s, keys) or (force and s == step)]
        total_w = sum(_STEP_WEIGHTS[s] for s in todo) or 1.0
        start = 0.0
        timings: Dict[str, float] = {}
        for s in upto:
            if s not in todo:
                timings[s] = 0.0
                continue
            stop = start + _STEP_WEIGHTS[s] / total_w
            sub = _SubProgress(progress, s, start, stop)
            sub.emit(0.0, f"{s}: starting")
            t0 = time.perf_counter()
            check_cancel(cancel, s)
            getattr(self, f"_run_{s}")(keys, sub, cancel)
            timings[s] = time.perf_counter() - t0
            self.computed[s] += 1
            sub.emit(1.0, f"{s}: done in {timings[s]:.1f} s")
            start = stop
        self.last_timings = timings
        self.last_cached = [s for s in upto if s not in todo]
        if step == "evaluate":
            result = self._load_result(keys)
            self._result = result
            return result
        return self.artifact(step)

    def run_all(self, progress=None, cancel=None) -> RunResult:
        """Run every step not cached yet and return the :class:`RunResult`."""
        return self.run_step("evaluate", progress=progress, cancel=cancel)

    def result(self) -> Optional[RunResult]:
        """The last result of this pipeline, or the cached one for the current config, or None."""
        try:
            keys = self.keys()
            if self._manifest("evaluate", keys["evaluate"]) is not None:
                return self._load_result(keys, timings_from_cache=self._result is None)
        except (ConfigError, FileNotFoundError, ValueError, ImportError):
            pass
        return self._result

    def _load_result(self, keys, *, timings_from_cache: bool = False) -> RunResult:
        folder = self._step_dir("evaluate", keys["evaluate"])
        res = RunResult.load(folder)
        compute = {}
        for s in STEPS:
            k = keys[s]
            if s == "descriptors":
                continue
            man = [self._manifest(s, v) for v in sorted(set(_flat_keys(k)))]
            compute[s] = float(sum(m.get("seconds", 0.0) for m in man if m))
        man = self._manifest("descriptors", self._descriptor_run_key(keys))
        compute["descriptors"] = float(man.get("seconds", 0.0)) if man else 0.0
        res.compute_timings = {s: compute.get(s, 0.0) for s in STEPS}
        if timings_from_cache:
            res.timings = dict(res.compute_timings)
            res.cached_steps = list(STEPS)
        else:
            res.timings = {s: float(self.last_timings.get(s, 0.0)) for s in STEPS}
            res.cached_steps = list(self.last_cached)
        res.config = self.config.to_dict()
        return res

    # ---- step implementations ----------------------------------------------------------------------
    def _write_manifest(self, step: str, key: str, seconds: float, **info) -> None:
        doc = {"step": step, "key": key, "seconds": seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
               **info}
        atomic_write_bytes(self._step_dir(step, key) / "manifest.json",
                           json.dumps(doc, indent=1, default=str).encode())

    def _descriptor_run_key(self, keys) -> str:
        return _digest(["descriptors", keys["descriptors"], _ids_digest(list(self.dataset.ids),
                                                                         self.needed_indices())])

    def _run_descriptors(self, keys, sub: _SubProgress, cancel) -> None:
        t0 = time.perf_counter()
        self._run_descriptor_stores(sub, cancel)
        # the stores are the cache; this manifest only records what the extraction cost
        failures = {ch: [(str(p), r) for p, r in v] for ch, v in self._memo[("failures",)].items()}
        self._write_manifest("descriptors", self._descriptor_run_key(keys), time.perf_counter() - t0,
                             failures=failures)

    def _run_descriptor_stores(self, sub: _SubProgress, cancel) -> None:
        needed = self.needed_indices()
        n_ch = len(self.channels)
        self._memo[("failures",)] = {}
        for j, ch in enumerate(self.channels):
            store = self.store(ch)
            rep = _call(store.extract, indices=needed, n_jobs=self.config.get("runtime.n_jobs"),
                        progress=sub.part(j / n_ch, (j + 1) / n_ch, channel=ch), cancel=cancel)
            self._memo[("failures",)][ch] = list(getattr(rep, "failures", []) or [])

    def _sample_descriptors(self, channel: str, n: int, seed: int, cancel, split: int = 0) -> np.ndarray:
        """``n`` descriptors drawn uniformly from the training images of ``split``."""
        store = self.store(channel)
        fit_idx = self._fit_indices(split)
        sample = getattr(store, "sample", None)
        if sample is not None and "indices" in inspect.signature(sample).parameters:
            return np.ascontiguousarray(sample(n, seed=seed, indices=fit_idx), dtype=np.float32)
        rng = np.random.default_rng(seed)
        per_image = max(1, int(math.ceil(n / max(1, len(fit_idx)))))
        parts = []
        for j, i in enumerate(fit_idx):
            if j % 32 == 0:
                check_cancel(cancel, "descriptor sampling")
            d = store.get(int(i))
            if d is None or len(d.descriptors) == 0:
                continue
            X = d.descriptors
            take = rng.choice(len(X), size=min(per_image, len(X)), replace=False) if len(X) > per_image else None
            parts.append(X[np.sort(take)] if take is not None else X)
        if not parts:
            raise ValueError("no descriptors could be extracted from the training images "
                             "(check dataset.root and descriptors.patch)")
        X = np.concatenate(parts).astype(np.float32, copy=False)
        if len(X) > n:
            X = X[np.sort(rng.choice(len(X), size=n, replace=False))]
        return np.ascontiguousarray(X)

    def _run_pca(self, keys, sub: _SubProgress, cancel) -> None:
        from ..engine.pca import PCA

        c = self.config
        units = self._split_units(keys, "pca")
        for j, (ch, s, key) in enumerate(units):
            if self._manifest("pca", key) is not None:
                continue
            t0 = time.perf_counter()
            frac = j / len(units)
            name = self._unit_name(ch, s)
            sub.emit(frac, f"pca[{name}]: sampling descriptors", channel=ch, split=s)
            X = self._sample_descriptors(ch, c.get("pca.sample"), c.get("pca.seed"), cancel, split=s)
            check_cancel(cancel, "pca")
            k = c.get("pca.n_components")
            info: Dict[str, Any] = {"channel": ch, "split": s, "n_samples": int(len(X)),
                                    "input_dim": int(X.shape[1])}
            if k > X.shape[1]:
                raise ConfigError(f"pca.n_components = {k} exceeds the {ch} descriptor dimension {X.shape[1]}")
            if k > 0:
                sub.emit(frac + 0.5 / len(units), f"pca[{name}]: fitting on {len(X)} descriptors", channel=ch,
                         split=s)
                pca = _call(PCA, n_components=k, whiten=c.get("pca.whiten"), seed=c.get("pca.seed")).fit(X)
                pca.save(self._step_dir("pca", key) / "pca.npz")
                ratio = getattr(pca, "explained_variance_ratio_", None)
                if ratio is not None:
                    info["explained_variance"] = float(np.sum(ratio))
            self._write_manifest("pca", key, time.perf_counter() - t0, identity=k == 0, **info)

    def _run_gmm(self, keys, sub: _SubProgress, cancel) -> None:
        from ..engine.gmm import DiagonalGMM

        c = self.config
        units = self._split_units(keys, "gmm")
        n_ch = len(units)
        for j, (ch, s, key) in enumerate(units):
            if self._manifest("gmm", key) is not None:
                continue
            t0 = time.perf_counter()
            sub.emit(j / n_ch, f"gmm[{self._unit_name(ch, s)}]: sampling descriptors", channel=ch, split=s)
            X = self._sample_descriptors(ch, c.get("gmm.sample"), c.get("gmm.seed"), cancel, split=s)
            pca = self._load_pca(keys, ch, s)
            if pca is not None:
                X = pca.transform(X)
            K = c.get("gmm.n_components")
            if K > len(X):
                raise ConfigError(f"gmm.n_components = {K} exceeds the {len(X)} descriptors sampled "
                                  f"(raise gmm.sample or use more training images)")
            check_cancel(cancel, "gmm")
            gmm = _call(DiagonalGMM, K, max_iter=c.get("gmm.max_iter"), tol=c.get("gmm.tol"),
                        init=c.get("gmm.init"), var_floor=c.get("gmm.var_floor"), n_init=c.get("gmm.n_init"),
                        seed=c.get("gmm.seed"), n_jobs=c.get("runtime.n_jobs"))
            gmm.fit(X, progress=sub.part((j + 0.1) / n_ch, (j + 1) / n_ch, channel=ch, split=s), cancel=cancel)
            gmm.save(self._step_dir("gmm", key) / "gmm.npz")
            ll = list(getattr(gmm, "log_likelihood_", []) or [])
            self._write_manifest("gmm", key, time.perf_counter() - t0, channel=ch, split=s, n_samples=int(len(X)),
                                 n_iter=int(getattr(gmm, "n_iter_", len(ll))),
                                 converged=bool(getattr(gmm, "converged_", False)),
                                 log_likelihood=[float(v) for v in ll])

    def _make_encoder(self, gmm):
        from ..engine.fisher import make_encoder

        c = self.config
        kind = c.get("encoder.kind")
        power = c.get("encoder.power") or None
        lp = c.get("encoder.lp") or None
        params: Dict[str, Any] = {"power": power, "lp": lp, "pyramid": parse_pyramid(c.get("encoder.pyramid")),
                                  "posterior_threshold": c.get("encoder.posterior_threshold")}
        if kind == "fisher":
            params.update(gradients=c.get("encoder.gradients"), fim=c.get("encoder.fim"))
        from ..engine import fisher as fmod

        cls = {"fisher": "FisherEncoder", "soft_bow": "SoftBoWEncoder", "vlad": "VLADEncoder"}[kind]
        target = getattr(fmod, cls, None)
        if target is not None:
            sig = inspect.signature(target)
            params = {k: v for k, v in params.items() if k in sig.parameters}
        return make_encoder(kind, gmm, **params)

    def _load_sets(self, ch: str, indices: np.ndarray, pca):
        store = self.store(ch)
        descs, pos, shapes, failed = [], [], [], []
        for i in indices:
            d = store.get(int(i))
            if d is None:
                failed.append(int(i))
                dim = pca.components_.shape[0] if pca is not None else self._raw_dim(ch)
                descs.append(np.zeros((0, dim), np.float32))
                pos.append(np.zeros((0, 2), np.float32))
                shapes.append((1, 1))
                continue
            X = d.descriptors
            if pca is not None and len(X):
                X = pca.transform(X)
            elif pca is not None:
                X = np.zeros((0, pca.components_.shape[0]), np.float32)
            descs.append(np.ascontiguousarray(X, np.float32))
            pos.append(np.asarray(d.positions, np.float32))
            shapes.append(tuple(int(v) for v in d.image_shape))
        return descs, pos, shapes, failed

    def _raw_dim(self, ch: str) -> int:
        return {"sift": 128, "lcs": 96}.get(ch, 128)

    def _run_encode(self, keys, sub: _SubProgress, cancel) -> None:
        c = self.config
        ids = list(self.dataset.ids)
        units = self._split_units(keys, "encode")
        n_ch = len(units)
        for j, (ch, s, key) in enumerate(units):
            if self._manifest("encode", key) is not None:
                continue
            t0 = time.perf_counter()
            indices = self._split_indices(s)
            name = self._unit_name(ch, s)
            pca = self._load_pca(keys, ch, s)
            gmm = self._load_gmm(keys, ch, s)
            enc = self._make_encoder(gmm)
            lo, hi = j / n_ch, (j + 1) / n_ch
            if c.get("encoder.kind") == "fisher" and c.get("encoder.fim") == "empirical":
                sub.emit(lo, f"encode[{name}]: estimating the empirical FIM", channel=ch, split=s)
                fit_idx = self._fit_indices(s)
                d, p, s, _ = self._load_sets(ch, fit_idx, pca)
                enc.fit_fim(d, positions=p, image_shapes=s)
            folder = self._step_dir("encode", key)
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / "fvs.npy"
            failed: List[int] = []
            with atomic_path(final) as tmp:
                mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(indices), enc.dim))
                n = len(indices)
                for start in range(0, n, _ENCODE_CHUNK):
                    check_cancel(cancel, "encode")
                    chunk = indices[start:start + _ENCODE_CHUNK]
                    d, p, s, f = self._load_sets(ch, chunk, pca)
                    failed += f
                    part = sub.part(lo + (hi - lo) * start / n, lo + (hi - lo) * min(n, start + len(chunk)) / n,
                                    channel=ch, split=s)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)  # empty regions: zero blocks
                        mm[start:start + len(chunk)] = _call(enc.encode_batch, d, positions=p, image_shapes=s,
                                                             n_jobs=c.get("runtime.n_jobs"), progress=part,
                                                             cancel=cancel)
                    sub.emit(min(0.999, lo + (hi - lo) * min(n, start + len(chunk)) / n),
                             f"encode[{name}]: {min(n, start + len(chunk))}/{n} images", channel=ch, split=s)
                mm.flush()
                del mm
            with atomic_path(folder / "indices.npy") as tmp:
                np.save(tmp, indices)
            params = {}
            if hasattr(enc, "get_params"):
                try:
                    params = json.loads(json.dumps(enc.get_params(), default=str))
                except Exception:  # pragma: no cover
                    params = {}
            self._write_manifest("encode", key, time.perf_counter() - t0, channel=ch, split=s, dim=int(enc.dim),
                                 n_images=int(len(indices)), failed=[ids[i] for i in failed],
                                 encoder_params=params)

    # ---- artifact loading ----------------------------------------------------------------------------
    def _unit_name(self, ch: str, split: int) -> str:
        return ch if len(self.splits) == 1 else f"{ch}, split {split}"

    def _load_pca(self, keys, ch: str, split: int = 0):
        from ..engine.pca import PCA

        key = keys["pca"][ch][split]
        man = self._manifest("pca", key)
        if man is None:
            raise FileNotFoundError(f"pca for channel {ch} is not computed")
        if man.get("identity"):
            return None
        mk = ("pca", key)
        if mk not in self._memo:
            self._memo[mk] = PCA.load(self._step_dir("pca", key) / "pca.npz")
        return self._memo[mk]

    def _load_gmm(self, keys, ch: str, split: int = 0):
        from ..engine.gmm import DiagonalGMM

        key = keys["gmm"][ch][split]
        if self._manifest("gmm", key) is None:
            raise FileNotFoundError(f"gmm for channel {ch} is not computed")
        mk = ("gmm", key)
        if mk not in self._memo:
            self._memo[mk] = DiagonalGMM.load(self._step_dir("gmm", key) / "gmm.npz")
        return self._memo[mk]

    def _load_encoded(self, keys, ch: str, split: int = 0) -> EncodedSet:
        key = keys["encode"][ch][split]
        man = self._manifest("encode", key)
        if man is None:
            raise FileNotFoundError(f"encode for channel {ch} is not computed")
        folder = self._step_dir("encode", key)
        fvs = np.load(folder / "fvs.npy", mmap_mode="r")
        indices = np.load(folder / "indices.npy")
        ids = list(self.dataset.ids)
        enc = self._make_encoder(self._load_gmm(keys, ch, split))
        return EncodedSet(ch, fvs, indices, [ids[int(i)] for i in indices], enc, list(man.get("failed", [])))

    def artifact(self, step: str, channel: Optional[str] = None, split: int = 0):
        """The loaded output of ``step`` for diagnostics (None if not computed for the current config).

        descriptors -> DescriptorStore; pca -> PCA (None if pca.n_components = 0); gmm -> DiagonalGMM;
        encode -> :class:`EncodedSet`; classifier -> :class:`ClassifierOutput`; evaluate -> RunResult.
        ``channel`` defaults to the first of ``descriptors.channels``; pca, gmm and encode are per split
        (``split``, default the first).
        """
        self._check_step(step)
        ch = channel or self.channels[0]
        if ch not in self.channels:
            raise ValueError(f"channel must be one of {self.channels}, got {channel!r}")
        if not 0 <= int(split) < len(self.splits):
            raise ValueError(f"split must be in 0..{len(self.splits) - 1}, got {split!r}")
        keys = self.keys()
        if not self._is_cached(step, keys):
            return None
        if step == "descriptors":
            return self.store(ch)
        if step == "pca":
            return self._load_pca(keys, ch, split)
        if step == "gmm":
            return self._load_gmm(keys, ch, split)
        if step == "encode":
            return self._load_encoded(keys, ch, split)
        if step == "classifier":
            return self._load_classifier(keys)
        return self._load_result(keys, timings_from_cache=True)

    # ---- classifier / evaluate ------------------------------------------------------------------------
    def _truth(self, idx: np.ndarray):
        ds = self.dataset
        if ds.multilabel:
            return np.asarray(ds.targets)[idx].astype(np.int8)
        return np.asarray(ds.labels)[idx].astype(np.int64)

    def _run_classifier(self, keys, sub: _SubProgress, cancel) -> None:
        from . import learning

        t0 = time.perf_counter()
        key = keys["classifier"]
        folder = self._step_dir("classifier", key)
        encoded = [{ch: self._load_encoded(keys, ch, s) for ch in self.channels} for s in range(len(self.splits))]
        out = learning.train_and_score(self, encoded, folder, sub, cancel)
        arrays = {}
        for s, sc in enumerate(out["test_scores"]):
            arrays[f"scores_{s}"] = sc
            for name, v in out["channel_scores"][s].items():
                arrays[f"channel_{s}_{name}"] = v
        from ..engine.serialization import atomic_save_npz

        atomic_save_npz(folder / "scores.npz", arrays, {"kind": "fvstudio.pipeline.scores"})
        self._write_manifest("classifier", key, time.perf_counter() - t0, lambdas=out["lambdas"],
                             fusion_weights=out["fusion_weights"], model_paths=out["model_paths"],
                             channels_scored=[sorted(d) for d in out["channel_scores"]])

    def _load_classifier(self, keys) -> ClassifierOutput:
        from ..engine.serialization import load_npz

        key = keys["classifier"]
        man = self._manifest("classifier", key)
        if man is None:
            raise FileNotFoundError("classifier is not computed")
        arrays, _ = load_npz(self._step_dir("classifier", key) / "scores.npz", kind="fvstudio.pipeline.scores")
        n = len(man["lambdas"])
        scores = [arrays[f"scores_{s}"] for s in range(n)]
        ch_scores = [{name: arrays[f"channel_{s}_{name}"] for name in man["channels_scored"][s]} for s in range(n)]
        paths = [{k: str(self._step_dir("classifier", key) / v) for k, v in d.items()} for d in man["model_paths"]]
        return ClassifierOutput(scores, ch_scores, man["lambdas"], man["fusion_weights"], paths)

    def _run_evaluate(self, keys, sub: _SubProgress, cancel) -> None:
        from . import learning

        t0 = time.perf_counter()
        clf = self._load_classifier(keys)
        result = learning.evaluate(self, clf)
        failed = {}
        for ch in self.channels:
            names = set()
            for key in keys["encode"][ch]:
                names.update((self._manifest("encode", key) or {}).get("failed", []))
            if names:
                failed[ch] = sorted(names)
        result.extra.update(lambdas=clf.lambdas, fusion_weights=clf.fusion_weights, failed_images=failed)
        result.config = self.config.to_dict()
        folder = self._step_dir("evaluate", keys["evaluate"])
        result.save(folder)
        self._write_manifest("evaluate", keys["evaluate"], time.perf_counter() - t0)


def run(config, workspace=None, progress=None, cancel=None) -> RunResult:
    """Run the whole pipeline for ``config`` (TOML path, dict or PipelineConfig) in ``workspace``."""
    return Pipeline(config, workspace).run_all(progress=progress, cancel=cancel)

"""The pipeline runner: a small scheduler over the seven cached steps of :mod:`fvstudio.pipeline.steps`.

``STEPS = ("descriptors", "pca", "gmm", "encode", "classifier", "evaluate")``; each step's module says
what it computes, from which config section, with which equations. This module only decides what to run,
in which order, and where its output is cached.

The vocabulary (PCA + GMM) is learned from each split's own training images, never from images that split
tests: it is unsupervised, but an image whose descriptors shaped the vocabulary is encoded differently from
one that did not (the GMM's Gaussians sit on its descriptors, so its gradients are small). On the sample
data, re-using split 0's vocabulary for 4 further random splits, whose test images were partly among split
0's training images, gave 62.5 / 71.3 / 58.8 / 71.3% instead of 77.5 / 81.3 / 77.5 / 88.8% with each
split's own vocabulary. Splits with the same training images share one vocabulary (same cache key), so a
single split, a VOC split or split lists cost one vocabulary as before; ``dataset.repeats = N`` costs N.
Diagnostics (:meth:`Pipeline.artifact`) show split 0 unless asked for another.

Caching (:class:`StepCache`). Every step's output lives in ``<workspace>/steps/<step>/<key>/`` where
``key`` hashes the step's parameters and the keys of the steps it reads (:mod:`fvstudio.pipeline.hashing`),
so changing a classifier parameter re-uses descriptors, PCA, GMM and FVs. The descriptors' key follows
the stores' *content*, so an image fixed or edited in place changes every key after it. A step directory
is valid once its ``manifest.json`` exists; the manifest is written last and every file before it through
a temporary name + rename, so a cancel or a crash at any point leaves either a complete step or none.
``status(step)`` is "cached" (valid output for the current config), "stale" (outputs exist only for other
parameters) or "not run".
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..engine.progress import Progress, check_cancel
from ..engine.serialization import atomic_write_bytes, remove_stale_temporaries
from .config import ConfigError, PipelineConfig, load_config
from .context import StepContext, make_splits, open_configured_dataset
from .hashing import digest, flat_keys
from .results import RunResult
from .steps import BY_NAME, STEP_LIST, STEPS, ClassifierOutput, EncodedSet, descriptor_params

__all__ = ["STEPS", "Pipeline", "run", "default_workspace", "EncodedSet", "ClassifierOutput", "StepCache"]


def default_workspace(config: Optional[PipelineConfig] = None) -> Path:
    """``<user cache dir>/fvstudio/workspaces/<dataset name>-<hash of its absolute path>``."""
    import platformdirs

    base = Path(platformdirs.user_cache_dir("fvstudio")) / "workspaces"
    root = (config.get("dataset.root") if config is not None else "") or "default"
    root_abs = str(Path(root).expanduser().resolve()) if root != "default" else root
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(root_abs).name)[:40] or "dataset"
    return base / f"{name}-{digest(root_abs)[:10]}"


class StepCache:
    """The manifest cache of one workspace: ``steps/<step>/<key>/`` folders, their manifests, and the
    artifacts already loaded from them (loaded once per key)."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self._loaded: Dict[Tuple[str, str], Any] = {}
        self._verified: Dict[Tuple[str, str], float] = {}  # (step, key) -> manifest mtime when checked
        self._damaged: Dict[Tuple[str, str], float] = {}  # ... when found damaged (warned once)

    def step_dir(self, step: str, key: str) -> Path:
        return self.workspace / "steps" / step / key

    def manifest(self, step: str, key: str) -> Optional[Dict[str, Any]]:
        """The manifest of ``step`` under ``key``, or None if that output is not completely and intactly
        there (a file missing, of another size, or, for files up to :data:`CHECKSUM_MAX` bytes, of another
        SHA-256 than when it was written: then the step is computed again, and a warning says why)."""
        path = self.step_dir(step, key) / "manifest.json"
        try:
            mtime = path.stat().st_mtime
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if self._verified.get((step, key)) != mtime:
            damage = _damage(path.parent, doc.get("files", {}))
            if damage:
                if self._damaged.get((step, key)) != mtime:  # say it once, not at every status poll
                    self._damaged[(step, key)] = mtime
                    warnings.warn(f"{path.parent}: {damage}; the {step} step will be computed again", stacklevel=2)
                self._loaded.pop((step, key), None)
                return None
            self._verified[(step, key)] = mtime
        return doc

    def write_manifest(self, step: str, key: str, seconds: float, **info) -> None:
        """Publish a step's output: written last, atomically, so its presence means "complete". It records
        every file of the step folder with its size (and SHA-256 up to :data:`CHECKSUM_MAX` bytes)."""
        folder = self.step_dir(step, key)
        files = {f.name: _fingerprint(f) for f in sorted(folder.iterdir()) if f.is_file()
                 and f.name != "manifest.json" and ".tmp" not in f.name} if folder.is_dir() else {}
        doc = {"step": step, "key": key, "seconds": seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
               **info, "files": files}
        atomic_write_bytes(folder / "manifest.json", json.dumps(doc, indent=1, default=str).encode())

    def all_present(self, step: str, key) -> bool:
        return all(self.manifest(step, k) is not None for k in flat_keys(key))

    def has_any(self, step: str) -> bool:
        d = self.workspace / "steps" / step
        return d.is_dir() and any((p / "manifest.json").is_file() for p in d.iterdir())

    def loaded(self, step: str, key: str, load: Callable[[Path], Any]) -> Any:
        """``load(step folder)``, called once per (step, key)."""
        if (step, key) not in self._loaded:
            self._loaded[(step, key)] = load(self.step_dir(step, key))
        return self._loaded[(step, key)]

    def seconds(self, step: str, key) -> float:
        """Compute time recorded in the manifests of ``key`` (each distinct key once)."""
        mans = [self.manifest(step, k) for k in sorted(set(flat_keys(key)))]
        return float(sum(m.get("seconds", 0.0) for m in mans if m))


#: Files up to this size get a SHA-256 in their step's manifest (models, scores); larger ones (the FV
#: matrix) only a size, so that checking a cached step costs milliseconds, not a read of gigabytes.
CHECKSUM_MAX = 256 * 2 ** 20


def _fingerprint(path: Path) -> Dict[str, Any]:
    size = path.stat().st_size
    out: Dict[str, Any] = {"size": size}
    if size <= CHECKSUM_MAX:
        out["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _damage(folder: Path, files: Dict[str, Dict[str, Any]]) -> str:
    """What is wrong with a step folder's files against its manifest ("" if nothing)."""
    for name, want in files.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != want["size"]:
            return f"{name} is damaged ({size} bytes, {want['size']} when written)"
        if "sha256" in want and hashlib.sha256(path.read_bytes()).hexdigest() != want["sha256"]:
            return f"{name} is damaged (its content changed since it was written)"
    return ""


class _StepProgress:
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


class Pipeline:
    """The seven steps over one config and one workspace folder; every output is cached there.

    ``config`` may be changed between calls (``pipeline.config.set("gmm.n_components", 64)``): statuses,
    keys and runs always follow the current values.
    """

    def __init__(self, config=None, workspace=None, *, dataset=None):
        self.config: PipelineConfig = load_config(config)
        self.workspace = Path(workspace).expanduser() if workspace else default_workspace(self.config)
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.cache = StepCache(self.workspace)
        # what a killed run left half-written (atomic_path's temporaries of dead writers) goes now
        remove_stale_temporaries(self.workspace / "steps", recursive=True)
        self._given_dataset = dataset
        self._dataset_memo: Optional[Tuple[str, Any]] = None
        self._splits_memo: Optional[Tuple[str, list]] = None
        self._stores: Dict[Tuple[str, str, int], Any] = {}
        self._result: Optional[RunResult] = None
        self.computed: Counter = Counter()  # step -> times actually computed (not loaded) by this object
        self.last_timings: Dict[str, float] = {}
        self.last_cached: List[str] = []

    # ---- what the steps are given ---------------------------------------------------------------------
    @property
    def dataset(self):
        if self._given_dataset is not None:
            return self._given_dataset
        root = self.config.get("dataset.root")
        if self._dataset_memo is None or self._dataset_memo[0] != root:
            self._dataset_memo = (root, open_configured_dataset(self.config))
            self._splits_memo = None
        return self._dataset_memo[1]

    @property
    def splits(self) -> list:
        ds = self.dataset
        sig = digest([self.config.hashed_section("dataset"), id(ds)])
        if self._splits_memo is None or self._splits_memo[0] != sig:
            self._splits_memo = (sig, make_splits(self.config, ds))
        return self._splits_memo[1]

    @property
    def channels(self) -> List[str]:
        return self.config.get("descriptors.channels")

    def descriptor_params(self, channel: str) -> Dict[str, Any]:
        return descriptor_params(self.config, channel)

    def store(self, channel: str):
        """The :class:`~fvstudio.data.cache.DescriptorStore` of ``channel`` for the current parameters."""
        from ..data.cache import DescriptorStore

        params = descriptor_params(self.config, channel)
        dtype = self.config.get("descriptors.dtype")
        memo_key = (channel, digest(params), dtype, id(self.dataset))
        if memo_key not in self._stores:
            self._stores[memo_key] = DescriptorStore(self.workspace, self.dataset, channel, params,
                                                     descriptor_dtype=dtype)
        return self._stores[memo_key]

    def context(self) -> StepContext:
        """The :class:`StepContext` of the current config."""
        return StepContext.build(self.config, self.dataset, self.splits, {ch: self.store(ch) for ch in self.channels},
                                 self.cache)

    def retry_failures(self) -> StepContext:
        """Extract again the images that failed last time (a permission fixed by chmod changes neither
        size nor mtime, so nothing else would notice); returns the context as it is now."""
        ctx = self.context()
        if ctx.left_out:
            retry = np.fromiter(ctx.left_out, np.int64, len(ctx.left_out))
            for ch in ctx.channels:
                ctx.stores[ch].extract(indices=retry, n_jobs=ctx.n_jobs)
            ctx = self.context()
        return ctx

    def needed_indices(self):
        """Every dataset index some split trains or tests on (sorted, unique): what the descriptors step extracts."""
        return self.context().needed_indices()

    # ---- keys and statuses ----------------------------------------------------------------------------
    def keys(self, ctx: Optional[StepContext] = None) -> Dict[str, Any]:
        """Cache key of every step for the current config ({step: key, {channel: key} or {channel: [key per
        split]}})."""
        ctx = ctx or self.context()
        keys: Dict[str, Any] = {}
        for step in STEP_LIST:
            keys[step.name] = step.key(ctx, keys)
        return keys

    def status(self, step: str) -> str:
        """"cached" | "stale" | "not run" for ``step`` under the current config."""
        return self.statuses([step])[step]

    def statuses(self, steps=STEPS) -> Dict[str, str]:
        """:meth:`status` of several steps, from one computation of the keys."""
        for s in steps:
            self._check_step(s)
        try:
            ctx = self.context()
            keys = self.keys(ctx)
        except (ConfigError, FileNotFoundError, ValueError, ImportError):
            ctx, keys = None, None
        out = {}
        for s in steps:
            step = BY_NAME[s]
            if keys is not None and step.is_cached(ctx, keys):
                out[s] = "cached"
            else:
                out[s] = "stale" if step.has_any(self.cache) else "not run"
        return out

    @staticmethod
    def _check_step(step: str) -> None:
        if step not in STEPS:
            raise ValueError(f"step must be one of {list(STEPS)}, got {step!r}")

    # ---- running --------------------------------------------------------------------------------------
    def run_step(self, step: str, progress=None, cancel=None, *, force: bool = False):
        """Run ``step`` (and any prerequisite not cached); returns :meth:`artifact` of ``step``.

        With ``force`` the step itself is recomputed even if cached (prerequisites still re-used).
        """
        self._check_step(step)
        ctx = self.retry_failures()
        upto = STEP_LIST[: STEPS.index(step) + 1]
        for s in STEP_LIST:
            s.check(ctx)  # at the door: before anything heavy runs
        keys = self.keys(ctx)
        todo = [s.name for s in upto if not s.is_cached(ctx, keys) or (force and s.name == step)]
        total_w = sum(BY_NAME[s].weight for s in todo) or 1.0
        start = 0.0
        timings: Dict[str, float] = {}
        cached: List[str] = []
        for s in upto:
            if s.name not in todo or (s.is_cached(ctx, keys) and not (force and s.name == step)):
                timings[s.name] = 0.0
                cached.append(s.name)
                continue
            stop = start + s.weight / total_w
            sub = _StepProgress(progress, s.name, start, stop)
            sub.emit(0.0, f"{s.name}: starting")
            t0 = time.perf_counter()
            check_cancel(cancel, s.name)
            s.run(ctx, keys, sub, cancel)
            timings[s.name] = time.perf_counter() - t0
            self.computed[s.name] += 1
            sub.emit(1.0, f"{s.name}: done in {timings[s.name]:.1f} s")
            start = stop
            # a step's output can change what comes after it: the descriptors' content changes the keys,
            # and images found unreadable leave the splits (checked again before the next heavy step)
            ctx = self.context()
            for later in STEP_LIST[STEP_LIST.index(s) + 1:]:
                later.check(ctx)
            keys = self.keys(ctx)
        self.last_timings = timings
        self.last_cached = cached
        if step == "evaluate":
            self._result = self._load_result(ctx, keys)
            return self._result
        return self.artifact(step)

    def check(self) -> None:
        """Every step's validation at the door (a ConfigError naming the key), without computing anything."""
        ctx = self.context()
        for s in STEP_LIST:
            s.check(ctx)

    def run_all(self, progress=None, cancel=None) -> RunResult:
        """Run every step not cached yet and return the :class:`RunResult`."""
        return self.run_step("evaluate", progress=progress, cancel=cancel)

    # ---- results and artifacts -----------------------------------------------------------------------
    def result(self) -> Optional[RunResult]:
        """The last result of this pipeline, or the cached one for the current config, or None."""
        try:
            ctx = self.context()
            keys = self.keys(ctx)
            if self.cache.manifest("evaluate", keys["evaluate"]) is not None:
                return self._load_result(ctx, keys, timings_from_cache=self._result is None)
        except (ConfigError, FileNotFoundError, ValueError, ImportError):
            pass
        return self._result

    def _load_result(self, ctx, keys, *, timings_from_cache: bool = False) -> RunResult:
        res = BY_NAME["evaluate"].load(ctx, keys)
        compute = {s: self.cache.seconds(s, keys[s]) for s in STEPS if s != "descriptors"}
        man = self.cache.manifest("descriptors", BY_NAME["descriptors"].run_key(ctx, keys))
        compute["descriptors"] = float(man.get("seconds", 0.0)) if man else 0.0
        res.compute_timings = {s: compute[s] for s in STEPS}
        if timings_from_cache:
            res.timings = dict(res.compute_timings)
            res.cached_steps = list(STEPS)
        else:
            res.timings = {s: float(self.last_timings.get(s, 0.0)) for s in STEPS}
            res.cached_steps = list(self.last_cached)
        res.config = self.config.to_dict()
        return res

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
        ctx = self.context()
        keys = self.keys(ctx)
        if not BY_NAME[step].is_cached(ctx, keys):
            return None
        if step == "evaluate":
            return self._load_result(ctx, keys, timings_from_cache=True)
        return BY_NAME[step].load(ctx, keys, ch, int(split))


def run(config, workspace=None, progress=None, cancel=None) -> RunResult:
    """Run the whole pipeline for ``config`` (TOML path, dict or PipelineConfig) in ``workspace``."""
    return Pipeline(config, workspace).run_all(progress=progress, cancel=cancel)

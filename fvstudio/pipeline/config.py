"""The pipeline's declarative configuration: one schema, TOML in and out, defaults = the paper's setup.

Every key lives in a section named after the pipeline step that reads it (``dataset``, ``descriptors``,
``pca``, ``gmm``, ``encoder``, ``compression``, ``classifier``, ``fusion``, ``evaluate``) plus ``runtime`` and
``compute`` (how and where, not what, to compute: never part of a cache key, so a run on a Dask cluster
re-uses the cache of a run on threads and vice versa). :data:`SCHEMA` lists every key once, with its type, default,
allowed range or choices and a one-line help citing the paper's section; the GUI builds its widgets from
:meth:`PipelineConfig.schema`, the CLI validates with it, and unspecified keys take these defaults (the values live in :mod:`fvstudio.engine.defaults`, which the
engine's signatures use too):

- Sec. 3.1: images resized to <= 100K pixels; dense SIFT and LCS on 24x24 patches every 4 px at 5 scales,
  each channel with its own PCA to 64 dims, GMM, FVs and SVMs, late-fused with a cross-validated weight
  (Sec. 3.2: 0.6 SIFT + 0.4 LCS there; both channels by default because cross-validation inside the
  training images chose them on Caltech-101 and the textures, see the README); a diagonal GMM with
  K = 256 (not in the paper, chosen the same way: each PCA'd descriptor carries its patch position times
  ``gmm.position_scale`` = 0.3, Sanchez, Perronnin & de Campos 2012); FV gradients w.r.t. means and
  sigmas only (2DK dims); closed-form diagonal FIM (eqs. 16-18); power normalisation rho = 0.5 (eq. 30)
  then L2; spatial pyramid 1x1 + 3x1 (R = 4 regions, each normalised on its own); one-vs-rest linear
  SVMs (hinge loss), lambda cross-validated on the training set (learned by SGD in the paper;
  ``classifier.solver = "auto"`` solves the same objective in the dual).
- Sec. 3.2: VOC 2007 trains on ``trainval`` and tests on ``test``, 11-point interpolated AP.
- Sec. 3.3-3.4: random splits of n training images per class, repeated, mean and std reported.

Conventions TOML has no null for: ``encoder.power = 0`` and ``encoder.lp = 0`` switch that normalisation
off, ``pca.n_components = 0`` keeps the raw descriptors (Fig. 1's "no PCA" point), an empty path is
"not given". Relative paths in a TOML file are resolved against the file's folder.
"""
from __future__ import annotations

import copy
import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..engine import defaults as D

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Param", "SCHEMA", "SECTIONS", "PipelineConfig", "load_config", "parse_pyramid", "check_value",
           "ConfigError"]


class ConfigError(ValueError):
    """A bad key or value in a pipeline config (a ValueError naming the key and, if known, the file)."""


@dataclass(frozen=True)
class Param:
    """One config key: dotted name, type, default, constraints and a help line for tooltips."""

    key: str
    type: str  # "int" | "float" | "bool" | "str" | "path" | "list[str]" | "list[float]"
    default: Any
    help: str
    min: Optional[float] = None
    max: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None
    zero_means: Optional[str] = None  # e.g. "off" for encoder.power = 0
    multiple_of: Optional[int] = None  # e.g. 4 for the patch side (4x4 spatial bins)
    unit: str = ""
    hashed: bool = True  # False for keys that change how, not what, is computed

    def describe(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"key": self.key, "section": self.key.split(".")[0], "type": self.type,
                             "default": copy.deepcopy(self.default), "help": self.help}
        for name in ("min", "max", "choices", "zero_means", "multiple_of"):
            value = getattr(self, name)
            if value is not None:
                d[name] = list(value) if name == "choices" else value
        if self.unit:
            d["unit"] = self.unit
        return d


def _p(*args, **kwargs) -> Param:
    return Param(*args, **kwargs)


_PYRAMID_RE = re.compile(r"^\s*\d+\s*x\s*\d+\s*(\+\s*\d+\s*x\s*\d+\s*)*$")
#: A Dask scheduler's address: tcp://host:port (host a name, an IPv4 or a bracketed IPv6 address).
_ADDRESS_RE = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-_]*):\d{1,5}$")

SECTIONS = ("dataset", "descriptors", "pca", "gmm", "encoder", "compression", "classifier", "fusion", "evaluate",
            "runtime", "compute")

_PARAMS: List[Param] = [
    # -- dataset ------------------------------------------------------------------------------------
    _p("dataset.root", "path", "",
       "Dataset folder: one sub-folder per class, or a PASCAL VOC devkit (VOC2007/ with JPEGImages, ImageSets) "
       "(Sec. 3.2-3.4)"),
    _p("dataset.train_list", "path", "",
       "Optional training list: one '<class>/<file>' per line (fixed splits, e.g. SUN 397's partitions, Sec. 3.4)"),
    _p("dataset.test_list", "path", "",
       "Optional test list: one '<class>/<file>' per line; with train_list gives a fixed split"),
    _p("dataset.split", "str", "auto",
       "How train/test are chosen: auto = lists if given, else VOC sets for a devkit, else random per class",
       choices=("auto", "lists", "voc", "random")),
    _p("dataset.n_train", "int", 30,
       "Random splits: training images per class (Caltech 256 protocol uses 5..60, Sec. 3.3)", min=1, max=100000),
    _p("dataset.n_test", "int", 0,
       "Random splits: test images per class (SUN 397 uses 50, Sec. 3.4)", min=0, max=100000, zero_means="all the rest"),
    _p("dataset.repeats", "int", 1,
       "Random splits: number of repeats; metrics are reported as mean and std (Sec. 3.3: 10 repeats)",
       min=1, max=100),
    _p("dataset.seed", "int", 0, "Seed of the random splits", min=0, max=2**31 - 1),
    _p("dataset.voc_train", "str", "trainval",
       "VOC devkit: image set used for training (Sec. 3.2 trains on train+val)",
       choices=("train", "val", "trainval", "test")),
    _p("dataset.voc_test", "str", "test", "VOC devkit: image set used for testing (Sec. 3.2)",
       choices=("train", "val", "trainval", "test")),
    _p("dataset.max_pixels", "int", D.MAX_PIXELS,
       "Images larger than this are resized down, keeping the aspect ratio (Sec. 3.1: 100K pixels)",
       min=1_000, max=100_000_000, unit="px"),
    # -- descriptors --------------------------------------------------------------------------------
    _p("descriptors.channels", "list[str]", ["sift", "lcs"],
       "Local descriptors: 128-d SIFT and/or 96-d Local Color Statistics; both = late fusion (Sec. 3.1-3.2)",
       choices=("sift", "lcs")),
    _p("descriptors.patch", "int", D.PATCH, "Patch side at the finest scale (Sec. 3.1: 24x24); a multiple of 4 "
       "(4x4 spatial bins)", min=8, max=256, unit="px", multiple_of=4),
    _p("descriptors.step", "int", D.STEP, "Grid step between patch centres (Sec. 3.1: every 4 pixels)", min=1,
       max=128, unit="px"),
    _p("descriptors.scales", "int", D.SCALES, "Number of patch scales (Sec. 3.1: 5 scales)", min=1, max=12),
    _p("descriptors.scale_factor", "float", D.SCALE_FACTOR, "Patch size ratio between consecutive scales",
       min=1.05, max=4.0),
    _p("descriptors.window", "str", D.SIFT_WINDOW, "SIFT spatial weighting window (VLFeat dsift: gauss or flat)",
       choices=("gauss", "flat")),
    _p("descriptors.presmooth", "bool", D.PRESMOOTH, "Smooth each scale before extraction (anti-aliasing)"),
    _p("descriptors.root_sift", "bool", D.ROOT_SIFT, "RootSIFT: Hellinger-map the SIFT descriptors (not in the paper)"),
    _p("descriptors.contrast_threshold", "float", D.CONTRAST_THRESHOLD,
       "SIFT of patches with a contrast (mean gradient magnitude, VLFeat's norm) below this is set to zero "
       "(VLFeat PHOW: 0.005; not in the paper)", min=0.0, max=0.2, zero_means="off"),
    _p("descriptors.keep", "str", "vocabulary",
       "Descriptors stored on disk: vocabulary = only those of the images PCA and the GMM learn from (every other "
       "image is described again while it is encoded, one pass, nothing kept: Sec. 4-5); all = every image's "
       "(faster repeated encodes; 3-4 MB an image)", choices=("vocabulary", "all")),
    _p("descriptors.vocab_images", "int", 5000,
       "Training images per split whose descriptors PCA and the GMM sample (pca.sample / gmm.sample descriptors "
       "are drawn from them); a seeded random subset", min=0, max=100_000_000, zero_means="every training image"),
    _p("descriptors.vocab_rows", "int", 256,
       "Descriptors of each vocabulary image the samples draw from (a seeded subset, the only ones stored): "
       "5,000 images x 256 rows = the paper's ~1M descriptors (Sec. 3.1)", min=0, max=1_000_000,
       zero_means="all of them"),
    _p("descriptors.dtype", "str", "float32",
       "Precision of the stored descriptors (float16 halves the disk, relative rounding 5e-4; images described "
       "on the fly are rounded alike)", choices=("float32", "float16")),
    # -- pca ----------------------------------------------------------------------------------------
    _p("pca.n_components", "int", D.PCA_COMPONENTS,
       "Descriptor dimensions kept by PCA (Sec. 3.2, Fig. 1: key for the diagonal GMM; 64 by default)",
       min=0, max=1024, zero_means="no PCA (raw descriptors)"),
    _p("pca.whiten", "bool", False, "Whiten the PCA output (not in the paper)"),
    _p("pca.sample", "int", 100_000,
       "Descriptors sampled from the training images to fit PCA (Sec. 3.1 uses ~1e6)", min=1_000,
       max=50_000_000),
    _p("pca.seed", "int", 0, "Seed of the PCA descriptor sample", min=0, max=2**31 - 1),
    # -- gmm ----------------------------------------------------------------------------------------
    _p("gmm.n_components", "int", D.GMM_COMPONENTS, "Gaussians K in the visual vocabulary (Sec. 3.2: K = 256)", min=1,
       max=65536),
    _p("gmm.max_iter", "int", D.GMM_MAX_ITER, "Maximum EM iterations (Appendix B)", min=1, max=10_000),
    _p("gmm.tol", "float", D.GMM_TOL, "EM stops when the mean log-likelihood gains less than this", min=0.0,
       max=1.0),
    _p("gmm.init", "str", D.GMM_INIT, "EM initialisation (Appendix B: iterative splitting)",
       choices=("kmeans++", "split", "random")),
    # Not in the paper: see engine/defaults.py and the README's "Choices the paper leaves open".
    _p("gmm.var_floor", "float", D.GMM_VAR_FLOOR, "Variance floor, a fraction of each dimension's global variance; keeps "
       "Gaussians from collapsing onto one image's descriptors", min=0.0, max=1.0),
    _p("gmm.position_scale", "float", D.GMM_POSITION_SCALE,
       "Spatial coordinate augmentation (not in the paper): append each patch's position (x/W - 1/2, y/H - 1/2) "
       "times this scale to its PCA'd descriptor, so the GMM and the FV model where words appear (+4K dims a "
       "region); 0 = off", min=0.0, max=10.0, zero_means="off"),
    _p("gmm.n_init", "int", D.GMM_N_INIT, "EM restarts; the best likelihood is kept", min=1, max=100),
    _p("gmm.sample", "int", 200_000,
       "Descriptors sampled from the training images to fit the GMM (Sec. 3.1 uses ~1e6)", min=1_000,
       max=50_000_000),
    _p("gmm.seed", "int", 0, "Seed of the GMM sample and initialisation", min=0, max=2**31 - 1),
    # -- encoder ------------------------------------------------------------------------------------
    _p("encoder.kind", "str", "fisher",
       "Image encoding: Fisher Vector (Sec. 2), soft-BoV or VLAD on the same GMM (Sec. 2.5)",
       choices=("fisher", "soft_bow", "vlad")),
    _p("encoder.gradients", "str", D.GRADIENTS,
       "FV gradients w.r.t. weights (w), means (m), sigmas (s) (eqs. 16-18; Sec. 3.1 uses m+s)",
       choices=("w", "m", "s", "wm", "ws", "ms", "wms")),
    _p("encoder.fim", "str", D.FIM,
       "Fisher information: closed-form diagonal (App. A), empirical diagonal or identity (Sec. 3.2)",
       choices=("closed", "empirical", "identity")),
    _p("encoder.power", "float", D.POWER,
       "Power normalisation exponent rho, z <- sign(z)|z|^rho (eq. 30, Sec. 2.3; 0 = off)", min=0.0, max=1.0,
       zero_means="off"),
    _p("encoder.lp", "float", D.LP, "Lp normalisation of each region's vector (Sec. 2.3, Fig. 3; 0 = off)",
       min=0.0, max=16.0, zero_means="off"),
    _p("encoder.pyramid", "str", D.PYRAMID,
       "Spatial pyramid grids rows x cols (Sec. 2.2/3.1: whole image + 3 horizontal stripes); '1x1' = none",
       choices=("1x1", "1x1+3x1", "1x1+2x2", "1x1+2x2+3x1")),
    _p("encoder.posterior_threshold", "float", D.POSTERIOR_THRESHOLD,
       "Posteriors below this are zeroed and the rest renormalised (Appendix B)", min=0.0, max=0.5),
    # -- compression --------------------------------------------------------------------------------
    _p("compression.bits_per_dim", "float", 0.0,
       "Product quantisation of the FVs: bits per dimension b (Sec. 4.1; b = 1 is x32 smaller than float32; "
       "0 = off, the classifier reads the float32 FVs)", min=0.0, max=16.0, zero_means="off"),
    _p("compression.group", "int", 8,
       "Dimensions per sub-quantiser G: 2^(bG) centroids each, bG <= 16 (Sec. 4.1: G = 8)", min=1, max=4096),
    _p("compression.sparsity", "bool", True,
       "Per-Gaussian sparsity bit: no code stored for a Gaussian no descriptor was assigned to (Sec. 4.2, lossless)"),
    _p("compression.renormalise", "bool", True,
       "Rescale each decoded pyramid region to unit L2 norm (Sec. 5.1: PQ shrinks norms, which makes hubs for k-NN)"),
    _p("compression.train_sample", "int", 0,
       "Training FVs the codebooks are learned on", min=0, max=100_000_000, zero_means="256 per centroid"),
    _p("compression.n_iter", "int", 25, "k-means (Lloyd) iterations per codebook at most", min=1, max=1000),
    _p("compression.seed", "int", 0, "Seed of the codebooks' sample and k-means++ seeding", min=0, max=2**31 - 1),
    # -- classifier ---------------------------------------------------------------------------------
    _p("classifier.kind", "str", "sgd",
       "Classifier: sgd = one-vs-rest linear SVMs (learned as classifier.solver says; Sec. 3.1); knn = k nearest "
       "training FVs vote (Sec. 5.1, exhaustive; on PQ codes when compression is on)", choices=("sgd", "knn")),
    _p("classifier.knn_k", "int", 10, "k-NN: neighbours that vote", min=1, max=10_000),
    _p("classifier.knn_metric", "str", "l2", "k-NN: distance between FVs", choices=("l2", "cosine")),
    _p("classifier.knn_weights", "str", "uniform",
       "k-NN: each neighbour's vote, uniform or 1 / distance", choices=("uniform", "distance")),
    _p("classifier.loss", "str", D.LOSS, "SGD loss: hinge = linear SVM (Sec. 3.1), log, squared",
       choices=("hinge", "log", "squared")),
    _p("classifier.solver", "str", D.SOLVER,
       "How the SVMs are learned: sgd = one pass per epoch over the FVs (Sec. 3.1, 4.3); dual = coordinate "
       "descent on one Gram matrix (fewer images than dimensions; hinge loss); auto = dual when it applies",
       choices=("auto", "sgd", "dual")),
    _p("classifier.select_lambda", "bool", True,
       "Choose lambda by k-fold cross-validation on the training set (Sec. 3.1)"),
    _p("classifier.lambda_rule", "str", D.LAMBDA_RULE,
       "Lambda from CV: best = highest mean CV score; one_se = largest lambda within one standard error "
       "of the best (steadier on small training sets)", choices=("best", "one_se")),
    _p("classifier.lam", "float", D.LAM, "Regularisation lambda when it is not cross-validated", min=1e-12,
       max=10.0),
    _p("classifier.lam_grid", "list[float]", list(D.LAMBDA_GRID),
       "Lambdas tried by cross-validation", min=1e-12, max=10.0),
    _p("classifier.cv_folds", "int", D.CV_FOLDS, "Cross-validation folds for lambda and the fusion weight", min=2,
       max=20),
    _p("classifier.epochs", "int", D.EPOCHS, "SGD passes over the training set (Sec. 4.3)", min=1, max=1000),
    _p("classifier.averaging", "bool", D.AVERAGING, "Averaged SGD (Sec. 4.3)"),
    _p("classifier.bias", "bool", D.BIAS, "Learn a bias term"),
    _p("classifier.balance", "str", D.BALANCE,
       "Class balancing: sample = all positives + sampled negatives per epoch (Sec. 4.3), "
       "weight = positive weighting, none", choices=("sample", "weight", "none")),
    _p("classifier.seed", "int", 0, "Seed of the SGD sample order", min=0, max=2**31 - 1),
    # -- fusion -------------------------------------------------------------------------------------
    _p("fusion.mode", "str", "late",
       "Several channels: late = weighted sum of per-channel scores (Sec. 3.2), early = concatenated FVs "
       "(Sec. 5)", choices=("late", "early")),
    _p("fusion.select_weight", "bool", True,
       "Late fusion: choose the first channel's weight by cross-validation (Sec. 3.2 found 0.6 SIFT + 0.4 LCS)"),
    _p("fusion.weight", "float", 0.6, "Late fusion: first channel's weight when not cross-validated",
       min=0.0, max=1.0),
    # -- evaluate -----------------------------------------------------------------------------------
    _p("evaluate.ap_mode", "str", "voc07",
       "Average precision: VOC 2007 11-point interpolated (Sec. 3.2) or area under the PR curve",
       choices=("voc07", "area")),
    _p("evaluate.top_k", "int", 5, "k of the top-k accuracy (ILSVRC reports top-5, Sec. 5.1)", min=1, max=100),
    # -- runtime ------------------------------------------------------------------------------------
    _p("runtime.n_jobs", "int", 2, "Worker threads for extraction and encoding (does not change results)",
       min=1, max=256, hashed=False),
    # -- compute ------------------------------------------------------------------------------------
    _p("compute.scheduler", "str", "threads",
       "Where blocks of work run: threads = this process (runtime.n_jobs threads); dask = worker processes "
       "of a Dask cluster (compute.address, or a local one); does not change results",
       choices=("threads", "dask"), hashed=False),
    _p("compute.address", "str", "",
       "Dask: scheduler of an existing cluster, tcp://host:8786 (its workers must see the dataset and the "
       "workspace at the same paths); empty = start a local cluster for the run", hashed=False),
    _p("compute.n_workers", "int", 0,
       "Dask without an address: worker processes of the local cluster (one thread each)", min=0, max=1024,
       zero_means="as many as cores", hashed=False),
]

SCHEMA: Dict[str, Param] = {p.key: p for p in _PARAMS}


def parse_pyramid(spec: str) -> Optional[List[Tuple[int, int]]]:
    """``"1x1+3x1"`` -> ``[(1, 1), (3, 1)]`` (rows, cols); ``"1x1"`` -> None (no spatial pyramid)."""
    if not isinstance(spec, str) or not _PYRAMID_RE.match(spec):
        raise ConfigError(f"encoder.pyramid must look like '1x1+3x1' (rows x cols grids joined by '+'), "
                          f"got {spec!r}")
    grids = []
    for part in spec.replace(" ", "").split("+"):
        r, c = (int(v) for v in part.split("x"))
        if r < 1 or c < 1 or r * c > 64:
            raise ConfigError(f"encoder.pyramid grid {part!r} must have 1..64 cells")
        grids.append((r, c))
    if grids == [(1, 1)]:
        return None
    return grids


def _type_name(value: Any) -> str:
    return type(value).__name__


def _coerce(param: Param, value: Any) -> Any:
    """Check ``value`` against ``param`` and return it in canonical form, or raise ConfigError."""
    key, t = param.key, param.type
    if t == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r} ({_type_name(value)})")
        return value
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{key} must be an integer, got {value!r} ({_type_name(value)})")
        _check_range(param, value)
        return int(value)
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r} ({_type_name(value)})")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key} must be finite, got {value!r}")
        _check_range(param, value)
        return value
    if t in ("str", "path"):
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r} ({_type_name(value)})")
        if key == "encoder.pyramid":
            parse_pyramid(value)
            return value.replace(" ", "")
        if key == "compute.address":
            value = value.strip()
            if value and not _ADDRESS_RE.match(value):
                raise ConfigError(f"compute.address must be empty (a local cluster) or a Dask scheduler's "
                                  f"address like 'tcp://host:8786', got {value!r}")
            return value
        if param.choices is not None and value not in param.choices:
            raise ConfigError(f"{key} must be one of {list(param.choices)}, got {value!r}")
        return value
    if t == "list[str]":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{key} must be a non-empty list of strings, got {value!r}")
        out = []
        for v in value:
            if not isinstance(v, str) or (param.choices is not None and v not in param.choices):
                raise ConfigError(f"{key} entries must be among {list(param.choices or [])}, got {v!r}")
            if v in out:
                raise ConfigError(f"{key} lists {v!r} twice")
            out.append(v)
        return out
    if t == "list[float]":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{key} must be a non-empty list of numbers, got {value!r}")
        out_f = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{key} entries must be numbers, got {v!r}")
            _check_range(param, float(v))
            out_f.append(float(v))
        return out_f
    raise AssertionError(f"unknown schema type {t}")  # pragma: no cover


def _check_range(param: Param, value: float) -> None:
    if param.min is not None and value < param.min:
        raise ConfigError(f"{param.key} must be >= {param.min}, got {value!r}")
    if param.max is not None and value > param.max:
        raise ConfigError(f"{param.key} must be <= {param.max}, got {value!r}")
    if param.multiple_of is not None and value % param.multiple_of:
        raise ConfigError(f"{param.key} must be a multiple of {param.multiple_of}, got {value!r}")


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, list(SCHEMA), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    section = key.split(".")[0]
    if section not in SECTIONS:
        return f"unknown config section {section!r} in key {key!r}{hint}; sections are {list(SECTIONS)}"
    return f"unknown config key {key!r}{hint}"


def check_value(key: str, value: Any) -> Any:
    """``value`` checked against the schema of ``key`` and in canonical form, or a ConfigError naming the key
    (for settings objects built from one section, e.g. :class:`fvstudio.pipeline.compute.ComputeSettings`)."""
    if key not in SCHEMA:
        raise ConfigError(_unknown_key_message(key))
    return _coerce(SCHEMA[key], value)


def parse_value(key: str, text: str) -> Any:
    """Parse a command-line value for ``key`` into the schema type.

    ``"64"``, ``"true"``; a list joins its items with ``+`` or ``;`` (``"sift+lcs"``, ``"1e-4;1e-3"``)."""
    if key not in SCHEMA:
        raise ConfigError(_unknown_key_message(key))
    param = SCHEMA[key]
    text = text.strip()
    try:
        if param.type == "int":
            try:
                return int(text)
            except ValueError:
                f = float(text)
                if not f.is_integer():
                    raise
                return int(f)
        if param.type == "float":
            return float(text)
        if param.type == "bool":
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if param.type == "list[str]":
            return [v.strip() for v in re.split(r"[+;]", text) if v.strip()]
        if param.type == "list[float]":
            return [float(v) for v in re.split(r"[;]", text) if v.strip()]
    except ValueError:
        raise ConfigError(f"{key}: cannot read {text!r} as {param.type}") from None
    return text


class PipelineConfig:
    """A validated, complete pipeline configuration (every key of :data:`SCHEMA` has a value).

    Build from defaults (``PipelineConfig()``), a nested dict (:meth:`from_dict`) or a TOML file
    (:meth:`from_toml`); read and change keys by dotted name with :meth:`get` / :meth:`set` (which
    validate and raise a ValueError naming the key).
    """

    def __init__(self, values: Optional[Mapping[str, Any]] = None, *, source: Optional[str] = None):
        self._values: Dict[str, Any] = {k: copy.deepcopy(p.default) for k, p in SCHEMA.items()}
        self.source = source  # file the config came from, for error messages
        for key, value in (values or {}).items():
            self.set(key, value)

    # ---- schema ----------------------------------------------------------------------------------
    @staticmethod
    def schema() -> Dict[str, Dict[str, Any]]:
        """Every key (in section order) -> dict(type, default, help, min/max/choices/zero_means, unit)."""
        return {k: p.describe() for k, p in SCHEMA.items()}

    @staticmethod
    def keys() -> List[str]:
        return list(SCHEMA)

    # ---- access ----------------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        if key not in SCHEMA:
            raise ConfigError(_unknown_key_message(key))
        return copy.deepcopy(self._values[key])

    def set(self, key: str, value: Any) -> "PipelineConfig":
        if key not in SCHEMA:
            raise ConfigError(self._where() + _unknown_key_message(key))
        try:
            self._values[key] = _coerce(SCHEMA[key], value)
        except ConfigError as exc:
            raise ConfigError(self._where() + str(exc)) from None
        return self

    def update(self, values: Mapping[str, Any]) -> "PipelineConfig":
        for k, v in values.items():
            self.set(k, v)
        return self

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    def copy(self) -> "PipelineConfig":
        new = PipelineConfig(source=self.source)
        new._values = copy.deepcopy(self._values)
        return new

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PipelineConfig) and self._values == other._values

    def __repr__(self) -> str:
        diff = {k: v for k, v in self._values.items() if v != SCHEMA[k].default}
        return f"PipelineConfig({diff!r})"

    def section(self, name: str) -> Dict[str, Any]:
        """Values of one section as {short_key: value}."""
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section {name!r}; sections are {list(SECTIONS)}")
        prefix = name + "."
        return {k[len(prefix):]: copy.deepcopy(v) for k, v in self._values.items() if k.startswith(prefix)}

    def hashed_section(self, name: str) -> Dict[str, Any]:
        """Like :meth:`section` but only keys that change results (used in cache keys)."""
        prefix = name + "."
        return {k[len(prefix):]: copy.deepcopy(v) for k, v in self._values.items()
                if k.startswith(prefix) and SCHEMA[k].hashed}

    # ---- dict / TOML -------------------------------------------------------------------------------
    def to_dict(self, *, only_changed: bool = False) -> Dict[str, Dict[str, Any]]:
        """Nested {section: {key: value}}; ``only_changed`` drops keys left at their default."""
        out: Dict[str, Dict[str, Any]] = {}
        for key, value in self._values.items():
            if only_changed and value == SCHEMA[key].default:
                continue
            section, name = key.split(".", 1)
            out.setdefault(section, {})[name] = copy.deepcopy(value)
        return out

    def to_flat_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(self._values)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: Optional[str] = None,
                  base_dir: Optional[Path] = None) -> "PipelineConfig":
        """Nested ({"gmm": {"n_components": 64}}) or flat ({"gmm.n_components": 64}) dict -> config."""
        where = f"{source}: " if source else ""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}config must be a table/dict, got {_type_name(d)}")
        flat: Dict[str, Any] = {}
        for name, value in d.items():
            if "." in name:
                flat[name] = value
            elif isinstance(value, Mapping):
                if name not in SECTIONS:
                    raise ConfigError(where + _unknown_key_message(name + "." + next(iter(value), "")))
                for sub, v in value.items():
                    flat[f"{name}.{sub}"] = v
            else:
                raise ConfigError(where + (f"top-level key {name!r} must be a [section]; sections are "
                                           f"{list(SECTIONS)}"))
        cfg = cls(source=source)
        for key, value in flat.items():
            if base_dir is not None and key in SCHEMA and SCHEMA[key].type == "path" and isinstance(value, str) \
                    and value and not Path(value).expanduser().is_absolute():
                value = str((base_dir / value).resolve())
            elif key in SCHEMA and SCHEMA[key].type == "path" and isinstance(value, str) and value:
                value = str(Path(value).expanduser())
            cfg.set(key, value)
        return cfg

    @classmethod
    def from_toml(cls, path) -> "PipelineConfig":
        """Read a TOML config file (UTF-8; a UTF-8 BOM, as some editors write, is accepted). Every
        error names the file: missing, a directory, unreadable, not UTF-8 (with the line), not TOML."""
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a directory, not a TOML file")
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist" if not path.exists()
                              else f"config file {path} is not a regular file")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise ConfigError(f"config file {path} is UTF-16 encoded; TOML must be UTF-8 (save it as UTF-8)")
        try:
            text = raw.decode("utf-8-sig")  # drops a UTF-8 BOM
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise ConfigError(f"{path}:{line}: config file is not valid UTF-8 (bytes "
                              f"{raw[exc.start:exc.end + 3]!r} at byte {exc.start}); TOML must be UTF-8") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_dict(data, source=str(path), base_dir=path.resolve().parent)

    @classmethod
    def from_toml_string(cls, text: str, *, base_dir=None) -> "PipelineConfig":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config text is not valid TOML: {exc}") from None
        return cls.from_dict(data, base_dir=Path(base_dir) if base_dir else None)

    def to_toml_string(self, *, only_changed: bool = False) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict(only_changed=only_changed))

    def to_toml(self, path, *, only_changed: bool = False) -> Path:
        from ..engine.serialization import atomic_write_bytes

        return atomic_write_bytes(Path(path), self.to_toml_string(only_changed=only_changed).encode("utf-8"))


def load_config(source=None, overrides: Optional[Mapping[str, Any]] = None) -> PipelineConfig:
    """A config from a TOML path, a dict, an existing config or None (defaults), then dotted overrides."""
    if source is None:
        cfg = PipelineConfig()
    elif isinstance(source, PipelineConfig):
        cfg = source.copy()
    elif isinstance(source, Mapping):
        cfg = PipelineConfig.from_dict(source)
    elif isinstance(source, (str, Path)):
        cfg = PipelineConfig.from_toml(source)
    else:
        raise ConfigError(f"config source must be a path, dict or PipelineConfig, got {_type_name(source)}")
    if overrides:
        cfg.update(overrides)
    return cfg

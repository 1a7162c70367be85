"""Descriptor cache: extract one channel's dense descriptors for a dataset once, keep them on disk.

Descriptor extraction is about two thirds of the paper's whole pipeline cost (Fig. 6), so it is
done once per (dataset, channel, parameters) and stored in the workspace; every later step (PCA,
GMM, encoding) reads from the store.

Layout (one store per channel and parameter set)::

    <workspace>/descriptors/<channel>-<key[:16]>/
        store.json            what this store holds (channel, params, max_pixels, dataset root, key)
        index.json            consolidated copy of all image entries (a summary, rebuilt if stale)
        images/<h>.npy        (T,) records: descriptor (D,) float32 (or float16, see below),
                              position (2,) float32 (x, y), scale float32, norm float32
        images/<h>.json       the image's entry: id, status "ok"/"failed", reason, T, image_shape,
                              the source file's size and mtime_ns when it was extracted ("stamp"),
                              and for "ok" entries the .npy's size ("bytes") and the SHA-1 of its
                              records ("sha1")

``<h>`` is the first 20 hex digits of SHA-1 of the image id (ids are relative paths, which may hold
characters a file name cannot). T >= 1 (an image giving no descriptor is a failure, see below);
positions are patch centres (x, y) in the pixels of the loaded (resized) image, ``image_shape`` is its
(H, W).
One record array (numpy structured dtype, no pickles) keeps a row's descriptor and frame together
in one file, so one rename publishes both.

Size. Raw descriptors are large: the paper's ~10K descriptors per 100K-pixel image cost
10K x (4 x 128 + 16) B = 5.3 MB per image for SIFT in float32 (the 320 sample images: 0.8 GB at
default settings). ``descriptor_dtype="float16"`` halves that (relative rounding 2^-11 ~ 5e-4 on
values in [0, 1]; :meth:`get` and :meth:`sample` always return float32); it is part of the key.

Why one file per image (and not chunks of many images): the image is the unit of work, of
parallelism and of resumption. Each worker thread writes its own image's files through a
temporary name + ``os.replace``: the
``.npy`` first, then the ``.json`` entry, whose presence is what marks the image as done. A cancel
or a crash therefore loses at most the images being worked on; nothing already written is ever
rewritten, and no chunk needs a read-modify-write. The per-image ``.npy`` is memory-mapped for
:meth:`DescriptorStore.sample`, so drawing a PCA/GMM training sample reads only the sampled rows'
pages, not every image's descriptors. ``index.json`` is rewritten (atomically) at the end of every
:meth:`DescriptorStore.extract` call, including a cancelled one, so opening a store of 10K images
reads one file; per-image entries newer than it (after a crash) are picked up by a directory listing.

Keys. ``key`` = SHA-256 of (format version, dataset kind, resolved dataset root, channel, extraction
parameters, ``max_pixels``, ``descriptor_dtype`` if not float32). The list of image ids and the files' sizes/mtimes are deliberately NOT in
the key but checked per image: adding images to a dataset, or editing one of them, re-extracts only
the new or changed images instead of discarding the whole store. An entry is valid if its id is in
the dataset and the source file's (size, mtime_ns) still match; :meth:`extract` redoes stale ones.

Failures. A file :func:`fvstudio.data.images.load_image` cannot read (missing, 0-byte, truncated,
not an image, a FIFO, no permission, too large), an image smaller than one patch (zero descriptors)
and any other exception of one image's extraction get a "failed" entry with the reason: listed in the
report and by :meth:`failures`, skipped by :meth:`get` (None) and :meth:`sample`, never stored as
descriptors. Failed images are retried on every :meth:`extract` call (they are few and cheap to
retry; a failure may have a cause the file's stat does not show, such as a permission fixed by
``chmod``), so ``n_cached`` counts only images with descriptors.

Integrity. An "ok" entry records the .npy's size and the SHA-1 of its records. Opening the store drops
entries whose .npy is missing or of the wrong size; :meth:`get` checks the SHA-1 (it reads the whole
file anyway) and :meth:`sample` the header, shape and dtype (it reads only the sampled rows). A damaged
entry (truncated, garbled, an unreadable .json) is treated as missing: a warning is logged
(logger ``fvstudio.data.cache``) and the image is extracted again, by the next :meth:`extract` or at
once inside :meth:`get` / :meth:`sample`. Stale temporary files of interrupted writes are deleted on
open by :func:`fvstudio.engine.serialization.is_stale_temporary`'s rule (the writer's host and pid
are in the name: an orphan of a killed process goes at once, one of a live writer stays).

Disk full. A write failing with ENOSPC stops the extraction (images in flight finish or are dropped,
the finished ones are kept) and raises :class:`~fvstudio.engine.serialization.DiskFullError` naming
the workspace, the free space and an estimate of the space the remaining images need; extracting
again after freeing space resumes.

Content. :attr:`key` names the store (what would be extracted); :meth:`content_digest` hashes what it
holds for some images (per image: the records' SHA-1, or "failed"), for keying results computed from
the descriptors: fixing an image in place changes it, touching a file without changing it does not.

Parallelism. ``n_jobs`` threads each load, extract and write whole images. This scales because
the heavy parts release the GIL: OpenCV decoding/resizing, the descriptor kernels (numba,
``nogil=True``) and file writes. Measured on the 2-core dev machine (sample textures, 320 images,
default SIFT, min of 4 interleaved runs, one other process using ~0.6 core): 1 thread 1.56 s,
2 threads 0.91 s (1.73x), 2 processes 0.81 s (1.93x). Processes gain ~10 % more (a few percent of
extraction is GIL-holding Python glue) but cost worker start-up (numba import and compiled-code
load), copying the dataset into each worker and a harder cancel, so threads are used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from fvstudio.data.datasets import Dataset
from fvstudio.data.images import ImageLoadError, load_image_sha1
from fvstudio.engine.progress import Cancelled, is_cancelled, report
from fvstudio.engine.serialization import (DiskFullError, atomic_open, atomic_write_bytes, free_bytes,
                                           is_disk_full, is_stale_temporary, remove_stale_temporaries)
from fvstudio.engine.spatial import normalised_xy
from fvstudio.engine.validation import check_positive_int, rng_from_seed

FORMAT_VERSION = 1
#: Bytes of a record beyond the descriptor: position (2 x f4), scale (f4), norm (f4).
FRAME_BYTES = 16
#: Upper bound of a .npy header (numpy pads headers to multiples of 64 bytes).
_NPY_HEADER_MIN = 64


def vocab_rows(image_id: str, t: int, k: int) -> np.ndarray:
    """The rows of an image's ``t`` descriptors that a vocabulary sample of ``k`` rows per image draws from:
    all of them when ``k`` is 0 or >= ``t``, else a subset seeded by the image id -- the same rows whether the
    store keeps only them or every row, so a vocabulary does not depend on what was stored."""
    if not k or k >= t:
        return np.arange(t, dtype=np.int64)
    seed = int.from_bytes(hashlib.sha1(image_id.encode("utf-8")).digest()[:8], "little")
    return np.sort(np.random.default_rng(seed).choice(t, size=k, replace=False)).astype(np.int64)


def record_dtype(dim: int, descriptor_dtype: str = "float32") -> np.dtype:
    """The record layout of one cached descriptor (see the module docstring)."""
    return np.dtype([("descriptor", np.dtype(descriptor_dtype).newbyteorder("<"), (dim,)),
                     ("position", "<f4", (2,)), ("scale", "<f4"), ("norm", "<f4")])

log = logging.getLogger("fvstudio.data.cache")


@dataclass
class ExtractionReport:
    """What one :meth:`DescriptorStore.extract` call did, for the requested images."""

    n_requested: int = 0
    n_cached: int = 0          # valid entries found (ok or failed) and not recomputed
    n_extracted: int = 0       # images extracted (or found unreadable) during this call
    n_descriptors: int = 0     # descriptors over all requested images with an "ok" entry
    n_retried: int = 0         # of n_extracted: images that had failed before, tried again
    failures: List[Tuple[Path, str]] = field(default_factory=list)   # failed images + reason
    repaired: List[Tuple[Path, str]] = field(default_factory=list)   # damaged cache entries redone
    seconds: float = 0.0

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        rate = self.n_extracted / self.seconds if self.seconds > 0 else 0.0
        fixed = f", {len(self.repaired)} damaged cache entries redone" if self.repaired else ""
        return (f"{self.n_requested} images: {self.n_cached} cached, {self.n_extracted} extracted "
                f"({rate:.1f} images/s), {self.n_failed} failed (left out){fixed}; "
                f"{self.n_descriptors} descriptors")


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return value.as_posix()
    return value


def _entry_name(image_id: str) -> str:
    return hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:20]


def _replace_into(path: Path, write) -> None:
    """Write a file through a temporary name + ``os.replace`` (atomic for readers and for a cancel
    or a process crash). Not fsynced: per-image files are many and cheap to redo; see
    ``DescriptorStore._data_intact`` for how a file lost to a power cut is detected."""
    with atomic_open(path, fsync=False) as fh:
        write(fh)


def _stamp(path: Path) -> Optional[List[int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


class DescriptorStore:
    """On-disk descriptors of one channel for one dataset (see the module docstring).

    ``params`` are the keyword arguments of
    :func:`fvstudio.engine.descriptors.extract_channel`; a ``"max_pixels"`` entry there (or the
    ``max_pixels`` argument) sets the image size cap used when loading (default 100K, Sec. 3.1).
    ``descriptor_dtype`` is "float32" (exact) or "float16" (half the disk; see the module docstring).
    """

    def __init__(self, workspace, dataset: Dataset, channel: str, params: Optional[Mapping[str, Any]] = None,
                 *, max_pixels: Optional[int] = None, descriptor_dtype: str = "float32") -> None:
        from fvstudio.engine.descriptors import CHANNELS

        if not isinstance(dataset, Dataset):
            raise ValueError(f"dataset must be a fvstudio Dataset, got {type(dataset).__name__}")
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {list(CHANNELS)}, got {channel!r}")
        params = dict(params or {})
        mp = params.pop("max_pixels", None)
        if max_pixels is None:
            max_pixels = 100_000 if mp is None else mp
        if max_pixels is not None and max_pixels != 0:
            max_pixels = check_positive_int(max_pixels, "max_pixels")
        self.workspace = Path(workspace)
        self.dataset = dataset
        self.channel = channel
        self.params = {k: _jsonable(v) for k, v in sorted(params.items())}
        self.max_pixels = max_pixels or None
        if descriptor_dtype not in ("float32", "float16"):
            raise ValueError(f"descriptor_dtype must be 'float32' or 'float16', got {descriptor_dtype!r}")
        self.descriptor_dtype = descriptor_dtype
        ident = {"format": FORMAT_VERSION, "kind": dataset.kind,
                 "root": Path(dataset.root).resolve().as_posix(), "channel": channel,
                 "params": self.params, "max_pixels": self.max_pixels}
        if descriptor_dtype != "float32":  # keeps float32 keys as they were
            ident["descriptor_dtype"] = descriptor_dtype
        self._ident = ident
        self.key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
        self.folder = self.workspace / "descriptors" / f"{channel}-{self.key[:16]}"
        self._images = self.folder / "images"
        self._entries: Dict[str, dict] = {}   # id -> entry
        self._loaded = False
        self._dim: Optional[int] = None
        self._damaged: Dict[str, str] = {}    # id -> why its cached entry was dropped on open
        self._version = 0                      # bumped whenever an entry changes (digest memo)
        self._digest_memo: Dict[Tuple[int, str], str] = {}

    # ------------------------------------------------------------------ index
    def _ensure_open(self) -> None:
        if self._loaded:
            return
        self._images.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.folder)  # store.json / index.json writes cut by a kill
        store_json = self.folder / "store.json"
        if not store_json.exists():
            info = dict(self._ident, key=self.key, n_images_at_creation=len(self.dataset),
                        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            atomic_write_bytes(store_json, json.dumps(info, indent=1, sort_keys=True).encode())
        entries: Dict[str, dict] = {}
        index = self.folder / "index.json"
        index_mtime = -1
        if index.exists():
            try:
                index_mtime = index.stat().st_mtime_ns
                entries = {e["id"]: e for e in json.loads(index.read_text("utf-8"))["entries"]}
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("descriptor store %s: the summary index.json is unreadable; rebuilding it "
                            "from the per-image entries", self.folder)
                entries, index_mtime = {}, -1  # a damaged summary is rebuilt from the image entries
        by_name = {_entry_name(i): e for i, e in entries.items()}
        fresh: Dict[str, dict] = {}
        now = time.time()
        n_removed = 0
        with os.scandir(self._images) as it:
            for de in it:
                n = de.name
                if n.startswith("."):
                    # a temporary of a write interrupted by a kill; removed unless a live writer
                    # (this or another process) may still own it -- see serialization.is_stale_temporary
                    try:
                        if is_stale_temporary(de.path, now):
                            os.unlink(de.path)
                            n_removed += 1
                    except OSError:
                        pass
                    continue
                if not n.endswith(".json"):
                    continue
                name = n[:-5]
                e = by_name.get(name)
                # an entry written after the summary (a crash before it was rewritten) wins
                if e is None or de.stat().st_mtime_ns >= index_mtime:
                    e = self._read_entry(name)
                if e is None:
                    continue
                damage = self._damage(name, e)
                if damage:
                    log.warning("descriptor store %s: cached descriptors of %r are damaged (%s); they will "
                                "be extracted again", self.folder, e.get("id"), damage)
                    self._damaged[e["id"]] = damage
                    continue
                fresh[e["id"]] = e
        if n_removed:
            log.info("descriptor store %s: removed %d stale temporary file(s) of interrupted writes",
                     self.folder, n_removed)
        self._entries = fresh
        self._version += 1
        self._loaded = True

    def refresh(self) -> None:
        """Forget the in-memory index; the next call re-reads the store (after another process or
        another store object wrote to it)."""
        self._loaded = False

    def _npy_path(self, image_id: str) -> Path:
        return self._images / f"{_entry_name(image_id)}.npy"

    def _damage(self, name: str, e: dict) -> str:
        """Why an entry cannot be used as it is ('' if it can): an "ok" entry's .npy must exist and
        have the size recorded at extraction (older entries: be long enough for their rows) -- a file
        cut short by a power loss (per-image files are not fsynced) or by a copy is redone. Old "ok"
        entries without descriptors (T = 0; now a failure) are redone too."""
        if e.get("status") != "ok" or not e.get("stored", True):
            return ""
        try:
            if int(e["n"]) <= 0:
                return "no descriptors (an entry of an earlier version)"
            size = os.stat(self._images / f"{name}.npy").st_size
            if "bytes" in e:
                if size != int(e["bytes"]):
                    return f"{name}.npy has {size} bytes, {int(e['bytes'])} were written"
                return ""
            need = _NPY_HEADER_MIN + int(e["n"]) * record_dtype(int(e["dim"]), self.descriptor_dtype).itemsize
        except FileNotFoundError:
            return f"{name}.npy is missing"
        except (OSError, KeyError, TypeError, ValueError) as exc:
            return f"unreadable entry ({type(exc).__name__}: {exc})"
        return "" if size >= need else f"{name}.npy has {size} bytes, at least {need} expected"

    def _read_entry(self, name: str) -> Optional[dict]:
        path = self._images / f"{name}.json"
        try:
            e = json.loads(path.read_text("utf-8"))
            if _entry_name(e["id"]) != name or e["status"] not in ("ok", "failed"):
                raise ValueError("its id or status does not match the file")
            return e
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("descriptor store %s: the entry %s is unreadable (%s: %s); its image will be "
                        "extracted again", self.folder, path.name, type(exc).__name__, exc)
            return None

    def _write_index(self) -> None:
        entries = [self._entries[i] for i in sorted(self._entries)]
        payload = {"format": FORMAT_VERSION, "key": self.key, "channel": self.channel,
                   "dim": self._dim, "entries": entries}
        atomic_write_bytes(self.folder / "index.json", json.dumps(payload, separators=(",", ":")).encode())

    def _entry(self, i: int) -> Optional[dict]:
        self._ensure_open()
        return self._entries.get(self.dataset.ids[i])

    def _valid(self, entry: Optional[dict], i: int) -> bool:
        return entry is not None and entry.get("stamp") == _stamp(self.dataset.paths[i])

    def _indices(self, indices) -> np.ndarray:
        n = len(self.dataset)
        if indices is None:
            return np.arange(n, dtype=np.int64)
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"indices must lie in [0, {n}), got values in [{idx.min()}, {idx.max()}]")
        return idx

    # ------------------------------------------------------------------ extraction
    def _probe(self) -> int:
        """Run the extractor once on a small blank image: bad params fail here, not per image."""
        from fvstudio.engine.descriptors import extract_channel

        dd = extract_channel(self.channel, np.zeros((64, 64, 3), np.float32), **self.params)
        return int(dd.descriptors.shape[1])

    def _disk_full(self, exc: BaseException, needed: Optional[int] = None) -> DiskFullError:
        return DiskFullError(self.workspace, free_bytes(self.folder), needed,
                             f"store the {self.channel} descriptors in the workspace")

    def _write_failed(self, name: str, entry: dict, reason: str) -> dict:
        entry.update(status="failed", reason=reason, n=0, image_shape=entry.get("image_shape"))
        return self._write_without_rows(name, entry)

    def _write_without_rows(self, name: str, entry: dict) -> dict:
        """Publish an entry that has no .npy (a failure, a probed image) and drop any older .npy."""
        text = json.dumps(entry).encode()
        _replace_into(self._images / f"{name}.json", lambda fh: fh.write(text))
        try:
            os.unlink(self._images / f"{name}.npy")
        except FileNotFoundError:
            pass
        return entry

    def _work(self, i: int, stamp, store=True) -> dict:
        """Extract image ``i`` and store its descriptors (``store`` True or 0: every row; an int k > 0: only
        its :func:`vocab_rows` for k), or only probe it (``store`` False / None): load it, count the frames it
        gives (:func:`~fvstudio.engine.descriptors.dense_frames`) and record the SHA-1 of its bytes, so that
        :meth:`get` can extract it again on demand and check it is the same file."""
        keep_k = 0 if store is True else store
        from fvstudio.engine.descriptors import extract_channel

        image_id = self.dataset.ids[i]
        path = self.dataset.paths[i]
        name = _entry_name(image_id)
        entry: Dict[str, Any] = {"id": image_id, "stamp": stamp, "image_shape": None}
        rows = None
        try:
            try:
                rgb, entry["src"] = load_image_sha1(path, self.max_pixels)
                if store is None or store is False:
                    return self._write_probed(name, entry, rgb)
                dd = extract_channel(self.channel, rgb, **self.params)
            except ImageLoadError as exc:
                return self._write_failed(name, entry, exc.reason)
            except Exception as exc:  # noqa: BLE001 - one image's error must not stop the rest
                if is_disk_full(exc):
                    raise
                return self._write_failed(name, entry, f"{type(exc).__name__} while extracting: {exc}")
            t, d = dd.descriptors.shape
            entry["image_shape"] = [int(v) for v in dd.image_shape]
            if t == 0:
                h, w = entry["image_shape"]
                patch = self.params.get("patch", 24)
                return self._write_failed(name, entry, f"no descriptors: the {h}x{w} image (after loading) is "
                                                       f"smaller than one {patch}-px patch")
            sel = vocab_rows(image_id, t, int(keep_k)) if keep_k else slice(None)
            kept = t if not keep_k else len(sel)
            rows = np.empty(kept, record_dtype(d, self.descriptor_dtype))
            rows["descriptor"] = dd.descriptors[sel]
            rows["position"] = dd.positions[sel]
            rows["scale"] = dd.scales[sel]
            rows["norm"] = dd.norms[sel]
            if kept < t:
                entry.update(n_rows=int(kept), rows_k=int(keep_k))
            npy = self._images / f"{name}.npy"
            _replace_into(npy, lambda fh: np.save(fh, rows, allow_pickle=False))
            entry.update(status="ok", reason="", n=int(t), dim=int(d), bytes=int(os.stat(npy).st_size),
                         sha1=hashlib.sha1(rows.data).hexdigest())
            text = json.dumps(entry).encode()
            _replace_into(self._images / f"{name}.json", lambda fh: fh.write(text))
            return entry
        except OSError as exc:
            if is_disk_full(exc):
                raise self._disk_full(exc, None if rows is None else rows.nbytes + 1024) from exc
            raise

    def _write_probed(self, name: str, entry: dict, rgb: np.ndarray) -> dict:
        """The entry of an image whose descriptors are not stored (see :meth:`_work`)."""
        from fvstudio.engine.descriptors import dense_frames

        entry["image_shape"] = [int(v) for v in rgb.shape[:2]]
        grid = {k: self.params[k] for k in ("patch", "step", "scales", "scale_factor") if k in self.params}
        t = int(len(dense_frames(rgb.shape, **grid)[0]))
        if t == 0:
            h, w = entry["image_shape"]
            return self._write_failed(name, entry, f"no descriptors: the {h}x{w} image (after loading) is "
                                                   f"smaller than one {grid.get('patch', 24)}-px patch")
        entry.update(status="ok", reason="", n=t, dim=self._dim, stored=False)
        return self._write_without_rows(name, entry)

    @staticmethod
    def _holds(e: dict, want) -> bool:
        """Whether an "ok" entry holds what ``want`` asks: None = nothing (probed is enough), 0 = every row,
        k > 0 = the :func:`vocab_rows` for k (every row holds them too)."""
        if want is None or want is False:
            return True
        if not e.get("stored", True):
            return False
        if "n_rows" not in e:
            return True
        return want not in (0, True) and int(e.get("rows_k", -1)) == int(want)

    def _reusable(self, e: Optional[dict], stamp, want) -> bool:
        """An entry :meth:`extract` keeps: descriptors of the file as it is, stored as far as they must be."""
        return e is not None and e.get("stamp") == stamp and e["status"] == "ok" and self._holds(e, want)

    def _want(self, i: int, keep_set, keep_rows: int):
        """What :meth:`extract` stores of image ``i``: None (probe), 0 (every row) or k (its vocabulary rows)."""
        if keep_set is not None and i not in keep_set:
            return None
        return int(keep_rows or 0)

    def pending(self, indices=None, keep=None, keep_rows: int = 0) -> List[Tuple[int, Any, Any]]:
        """``(index, stamp, store)`` of the images of ``indices`` that :meth:`extract` would (re)do, for running
        their :func:`extract_block` elsewhere (Dask workers); the images done are then :meth:`adopt`-ed."""
        idx = np.unique(self._indices(indices))
        self._ensure_open()
        keep_set = None if keep is None else set(self._indices(keep).tolist())
        out = []
        for i in idx.tolist():
            stamp = _stamp(self.dataset.paths[i])
            want = self._want(i, keep_set, keep_rows)
            if not self._reusable(self._entries.get(self.dataset.ids[i]), stamp, want):
                out.append((i, stamp, want))
        if out and self._dim is None:
            self._dim = self._probe()  # before the store is pickled for the workers (probed entries record it)
        return out

    def adopt(self, entries: List[dict]) -> None:
        """Take the entries :func:`extract_block` wrote elsewhere into the index, and write the index."""
        self._ensure_open()
        for e in entries:
            self._entries[e["id"]] = e
            self._damaged.pop(e["id"], None)
        self._version += 1
        self._write_index()

    def extract(self, indices=None, *, keep=None, keep_rows: int = 0, n_jobs: int = 2, progress=None,
                cancel=None) -> ExtractionReport:
        """Extract (or find in the cache) the descriptors of ``indices`` (default: all images).

        ``keep`` (default: all of them) lists the images whose descriptors are stored; the others are
        only probed (loaded, their frames counted, their bytes hashed): they get an entry, their failures
        are known, and :meth:`get` extracts them again when asked, while the disk holds a few hundred
        bytes of them (the streaming path of :mod:`fvstudio.pipeline.steps.encode`). ``keep_rows`` = k > 0
        stores only the :func:`vocab_rows` of the kept images (what a vocabulary sample of k rows per image
        reads). An image stored by an earlier call stays stored.

        Images with valid descriptors are reused; new, changed, damaged and previously failed images
        are (re)done. Progress: one update per image (``done`` counts cached images too; values
        ``id``, ``n_descriptors``, ``status``). Cancel: no new image is started, the images in flight
        are finished and kept, the index is written, then :class:`Cancelled` is raised; calling
        ``extract`` again resumes. Failed images are reported (``report.failures``), not raised.
        A full disk raises :class:`~fvstudio.engine.serialization.DiskFullError` (finished images
        are kept; extract again to resume).
        """
        n_jobs = check_positive_int(n_jobs, "n_jobs")
        t0 = time.perf_counter()
        idx = np.unique(self._indices(indices))
        self._ensure_open()
        rep = ExtractionReport(n_requested=int(idx.size))
        keep_set = None if keep is None else set(self._indices(keep).tolist())
        todo: List[Tuple[int, Any, Any]] = []
        for i in idx.tolist():
            image_id = self.dataset.ids[i]
            stamp = _stamp(self.dataset.paths[i])
            e = self._entries.get(image_id)
            stored = self._want(i, keep_set, keep_rows)
            if self._reusable(e, stamp, stored):
                rep.n_cached += 1
            else:
                if e is not None and e["status"] == "failed":
                    rep.n_retried += 1
                if image_id in self._damaged:
                    rep.repaired.append((self.dataset.paths[i], self._damaged[image_id]))
                todo.append((i, stamp, stored))
        total = int(idx.size)
        done = rep.n_cached
        report(progress, done, total, f"{done} of {total} images already cached", cached=done)
        if todo:
            if is_cancelled(cancel):
                raise Cancelled("descriptor extraction cancelled")
            self._dim = self._probe()
            self._run_pool(todo, n_jobs, rep, total, progress, cancel)
        elif self._dim is None:
            self._dim = next((e.get("dim") for e in self._entries.values() if e.get("dim")), None)
        for i in idx.tolist():
            e = self._entries.get(self.dataset.ids[i])
            if e is None:
                continue
            if e["status"] == "failed":
                rep.failures.append((self.dataset.paths[i], e["reason"]))
            else:
                rep.n_descriptors += int(e["n"])
        for path, reason in rep.failures:
            log.info("descriptor store %s: %s left out: %s", self.folder, path, reason)
        rep.seconds = time.perf_counter() - t0
        return rep

    def _run_pool(self, todo, n_jobs: int, rep: ExtractionReport, total: int, progress, cancel) -> None:
        """:meth:`extract`'s work: ``todo`` on ``n_jobs`` threads, at most 2 x n_jobs images in flight, the
        index written at the end whatever happens (see :meth:`extract` for cancel and a full disk)."""
        done = rep.n_cached
        inflight: Dict[Future, int] = {}
        pos = 0
        cancelled = False
        fatal: Optional[BaseException] = None
        written = []  # bytes of the images stored by this call (the disk-full estimate)
        with ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="fv-extract") as pool:
            try:
                while pos < len(todo) or inflight:
                    while (pos < len(todo) and len(inflight) < 2 * n_jobs and not cancelled
                           and fatal is None):
                        i, stamp, stored = todo[pos]
                        inflight[pool.submit(self._work, i, stamp, stored)] = i
                        pos += 1
                    if not inflight:
                        break
                    finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                    for fut in finished:
                        i = inflight.pop(fut)
                        try:
                            entry = fut.result()
                        except BaseException as exc:  # disk full, KeyboardInterrupt: stop, keep what is done
                            if fatal is None or (isinstance(exc, DiskFullError)
                                                 and not isinstance(fatal, DiskFullError)):
                                fatal = exc
                            entry = None
                        if entry is None:
                            continue
                        self._entries[entry["id"]] = entry
                        self._damaged.pop(entry["id"], None)
                        self._version += 1
                        if entry["status"] == "ok":
                            written.append(int(entry.get("bytes", 0)) + 512)
                        rep.n_extracted += 1
                        done += 1
                        report(progress, done, total, self.dataset.ids[i], id=self.dataset.ids[i],
                               index=i, status=entry["status"], n_descriptors=entry["n"])
                    if is_cancelled(cancel):
                        cancelled = True
            finally:
                if fatal is None and pos < len(todo) and not cancelled:
                    cancelled = is_cancelled(cancel)
                try:
                    self._write_index()
                except DiskFullError:
                    if fatal is None:
                        raise
                    # the per-image entries are the truth; the summary is rebuilt on open
        if isinstance(fatal, DiskFullError):
            per = max([fatal.needed or 0] + ([int(np.mean(written))] if written else []))
            left = len(todo) - rep.n_extracted  # images not stored yet
            raise self._disk_full(fatal, per * left if per else None) from fatal
        if fatal is not None:
            raise fatal
        if cancelled and pos < len(todo):
            raise Cancelled(f"descriptor extraction cancelled after {done} of {total} images "
                            f"(finished images are kept; extract again to resume)")

    # ------------------------------------------------------------------ reading
    def is_complete(self, indices=None, keep=None, keep_rows: int = 0) -> bool:
        """True if every image of ``indices`` has a valid entry (descriptors, or a failure for the
        file as it is now) and every image of ``keep`` (default: all of them) that gives descriptors has
        them stored. Failed images are retried by every :meth:`extract` even so."""
        idx = self._indices(indices)
        self._ensure_open()
        keep_set = None if keep is None else set(self._indices(keep).tolist())
        for i in idx.tolist():
            e = self._entries.get(self.dataset.ids[i])
            if not self._valid(e, i):
                return False
            if e["status"] == "ok" and not self._holds(e, self._want(i, keep_set, keep_rows)):
                return False
        return True

    def content_digest(self, indices=None) -> str:
        """SHA-256 of what the store holds for the images of ``indices`` (default: all), in order:
        per image its id and the SHA-1 of its descriptor records, or "failed", or "missing" (not
        extracted). It changes whenever those images' descriptors change (an image fixed or
        replaced in place and extracted again, a failure fixed or a new one) and not when a file is
        only touched; use it, not :attr:`key`, in the keys of results computed from the store.
        Entries of earlier versions (no SHA-1) count by their source stamp and size.

        An image whose file changed since it was extracted (size or mtime) counts as "changed", so
        results computed from the old descriptors show as stale before the next extraction. Cheap: no
        file is read, one stat per image (the entries are in memory once the store is open)."""
        idx = self._indices(indices)
        self._ensure_open()
        h = hashlib.sha256(f"{self.key}\n".encode())
        ids, entries = self.dataset.ids, self._entries
        for i in idx.tolist():
            image_id = ids[i]
            e = entries.get(image_id)
            if e is None:
                tag = "missing"
            elif not self._valid(e, i):  # the file changed since: what was extracted is not its content
                tag = "changed"
            elif e["status"] != "ok":
                tag = "failed"
            elif e.get("src"):  # the source bytes: the same whether its descriptors are stored or not
                tag = f"src:{e['src']}"
            else:
                tag = e.get("sha1") or json.dumps([e.get("stamp"), e.get("n")])
            h.update(f"{image_id}\t{tag}\n".encode("utf-8"))
        return h.hexdigest()

    def content_key(self, indices=None) -> str:
        """Former name of :meth:`content_digest`."""
        return self.content_digest(indices)

    def failures(self, indices=None) -> List[Tuple[str, str]]:
        """``(id, reason)`` of the images of ``indices`` (default: all) whose entry is a failure,
        in index order -- the images left out of every later step. Reads the entries, not the
        files: valid at any time, as of the last :meth:`extract` (of any process; call
        :meth:`refresh` first to see another process's work)."""
        idx = self._indices(indices)
        self._ensure_open()
        out = []
        for i in idx.tolist():
            e = self._entries.get(self.dataset.ids[i])
            if e is not None and e["status"] == "failed" and self._valid(e, i):
                out.append((self.dataset.ids[i], str(e.get("reason", ""))))
        return out

    def counts(self, indices=None) -> np.ndarray:
        """Descriptors per image of ``indices``; -1 for images not extracted or failed."""
        idx = self._indices(indices)
        self._ensure_open()
        out = np.full(idx.size, -1, dtype=np.int64)
        for k, i in enumerate(idx.tolist()):
            e = self._entries.get(self.dataset.ids[i])
            if e is not None and e["status"] == "ok":
                out[k] = e["n"]
        return out

    @property
    def dim(self) -> Optional[int]:
        """Descriptor dimension D (None until something was extracted)."""
        self._ensure_open()
        if self._dim is None:
            self._dim = next((e.get("dim") for e in self._entries.values() if e.get("dim")), None)
        return self._dim

    def _check_rows(self, entry: dict, mmap: bool):
        """The records of an "ok" entry, or (None, why) if the file is damaged."""
        path = self._npy_path(entry["id"])
        try:
            rows = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            return None, f"{path.name} is unreadable ({type(exc).__name__}: {exc})"
        want = record_dtype(int(entry["dim"]), self.descriptor_dtype)
        n_rows = int(entry.get("n_rows", entry["n"]))
        if not isinstance(rows, np.ndarray) or rows.shape != (n_rows,) or rows.dtype != want:
            return None, (f"{path.name} holds {getattr(rows, 'shape', '?')} records of "
                          f"{getattr(rows, 'dtype', '?')}, the entry says ({n_rows},) of {want}")
        if not mmap and entry.get("sha1") and hashlib.sha1(rows.data).hexdigest() != entry["sha1"]:
            return None, f"{path.name} does not match the checksum written with it (garbled)"
        return rows, ""

    def _rows(self, i: int, entry: dict, mmap: bool):
        rows, why = self._check_rows(entry, mmap)
        if rows is not None:
            return rows, entry
        image_id = self.dataset.ids[i]
        log.warning("descriptor store %s: cached descriptors of %r are damaged (%s); extracting them again",
                    self.folder, image_id, why)
        new = self._work(i, _stamp(self.dataset.paths[i]), int(entry.get("rows_k", 0)))
        self._entries[image_id] = new
        self._version += 1
        if new["status"] != "ok":
            return None, new
        rows, why = self._check_rows(new, mmap)
        if rows is None:
            raise ValueError(f"cached descriptors of {image_id!r} are still unreadable after extracting them "
                             f"again ({why}); is the disk of {self.folder} failing?")
        return rows, new

    def get(self, i: int):
        """The cached :class:`~fvstudio.engine.descriptors.DenseDescriptors` of image ``i``, or None
        if it failed (see :meth:`failures`). ValueError if it has not been extracted. The file is
        checked against its checksum; a damaged one is extracted again (and a warning logged)."""
        from fvstudio.engine.descriptors import DenseDescriptors

        i = int(self._indices([i])[0])
        e = self._entry(i)
        if e is None:
            raise ValueError(f"image {i} ({self.dataset.ids[i]!r}) has no cached {self.channel} "
                             f"descriptors; run extract() first")
        if e["status"] == "failed":
            return None
        if not e.get("stored", True) or "n_rows" in e:  # probed, or only its vocabulary rows stored
            return self._extract_again(i, e)
        rows, e = self._rows(i, e, mmap=False)
        if rows is None:
            return None
        return DenseDescriptors(descriptors=np.ascontiguousarray(rows["descriptor"], dtype=np.float32),
                                positions=np.ascontiguousarray(rows["position"], dtype=np.float32),
                                scales=np.ascontiguousarray(rows["scale"], dtype=np.float32),
                                norms=np.ascontiguousarray(rows["norm"], dtype=np.float32),
                                image_shape=tuple(e["image_shape"]))

    def _extract_again(self, i: int, e: dict):
        """The descriptors of a probed image (not stored), extracted now from the file its entry names;
        ValueError if the file is no longer what was probed (the caller's results would not be of it)."""
        from fvstudio.engine.descriptors import extract_channel

        image_id, path = self.dataset.ids[i], self.dataset.paths[i]
        if _stamp(path) != e.get("stamp"):
            raise ValueError(f"{image_id!r}: the file {path} changed since it was probed; extract again")
        try:
            rgb, src = load_image_sha1(path, self.max_pixels)
        except ImageLoadError as exc:
            raise ValueError(f"{image_id!r} became unreadable since it was probed: {exc.reason}") from None
        if src != e.get("src"):
            raise ValueError(f"{image_id!r}: the bytes of {path} changed since it was probed; extract again")
        dd = extract_channel(self.channel, rgb, **self.params)
        if len(dd.descriptors) != int(e["n"]):
            raise ValueError(f"{image_id!r} gave {len(dd.descriptors)} descriptors, {e['n']} when probed")
        if self.descriptor_dtype != "float32":  # what a stored copy would hold: equal FVs either way
            dd.descriptors = dd.descriptors.astype(self.descriptor_dtype).astype(np.float32)
        return dd

    def stored(self, indices=None) -> np.ndarray:
        """Which images of ``indices`` have their descriptors on disk (the others are probed or failed)."""
        idx = self._indices(indices)
        self._ensure_open()
        out = np.zeros(idx.size, bool)
        for k, i in enumerate(idx.tolist()):
            e = self._entries.get(self.dataset.ids[i])
            out[k] = e is not None and e["status"] == "ok" and e.get("stored", True)
        return out

    def sample(self, n: int, seed=0, indices=None, rows_per_image: int = 0, with_xy: bool = False):
        """``n`` descriptors drawn uniformly without replacement from all cached descriptors of
        ``indices`` (default: every image; pass the training images to keep test data out of
        PCA/GMM fitting), as a float32 (n, D) array in storage order (by image, then row).

        ``rows_per_image`` = k > 0 draws from each image's :func:`vocab_rows` for k only (the rows a store
        made with ``keep_rows = k`` holds; the same from a store holding every row).

        ``with_xy``: also return the (n, 2) float32 normalised positions of the sampled rows, (u / W - 1/2,
        v / H - 1/2) (:func:`fvstudio.engine.spatial.normalised_xy`), as a pair (descriptors, xy).

        If fewer than ``n`` exist, all of them are returned. Only the sampled rows are read (the
        per-image files are memory-mapped; their header, shape and dtype are checked, a damaged one
        is extracted again). ValueError if an image of ``indices`` is not extracted.
        """
        n = check_positive_int(n, "n")
        idx = np.unique(self._indices(indices))
        self._ensure_open()
        k_rows = int(rows_per_image or 0)
        imgs, counts, where = [], [], []  # where: positions in the image's file of its candidate rows
        missing = []
        for i in idx.tolist():
            e = self._entries.get(self.dataset.ids[i])
            if e is None:
                missing.append(i)
            elif e["status"] == "ok" and e["n"] > 0 and e.get("stored", True):
                if "n_rows" in e:  # only vocabulary rows stored
                    if not k_rows or int(e.get("rows_k", -1)) != k_rows:
                        raise ValueError(f"{self.dataset.ids[i]!r} keeps only {e['n_rows']} vocabulary rows (for "
                                         f"{e.get('rows_k')} rows per image), not what this sample needs; extract it "
                                         f"again with keep_rows={k_rows}")
                    pos = np.arange(int(e["n_rows"]), dtype=np.int64)
                else:
                    pos = vocab_rows(self.dataset.ids[i], int(e["n"]), k_rows)
                imgs.append(i)
                counts.append(len(pos))
                where.append(pos)
        if missing:
            raise ValueError(f"{len(missing)} of the requested images have no cached descriptors "
                             f"(e.g. {self.dataset.ids[missing[0]]!r}); run extract() first")
        if not imgs:
            raise ValueError("no stored descriptors among the requested images (images only probed keep no "
                             "descriptors: extract them with keep=...)")
        counts_arr = np.asarray(counts, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts_arr)])
        total = int(offsets[-1])
        if n >= total:
            picks = np.arange(total, dtype=np.int64)
        else:
            picks = np.sort(rng_from_seed(seed).choice(total, size=n, replace=False))
        owner = np.searchsorted(offsets, picks, side="right") - 1
        out = np.empty((picks.size, self.dim), np.float32)
        xy = np.empty((picks.size, 2), np.float32) if with_xy else None
        bounds = np.flatnonzero(np.diff(owner)) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [picks.size]])
        for a, b in zip(starts.tolist(), stops.tolist()):
            k = int(owner[a])
            i = imgs[k]
            before = self._entries[self.dataset.ids[i]]
            rows, e = self._rows(i, before, mmap=True)
            if rows is None or e["n"] != before["n"] or e.get("n_rows") != before.get("n_rows"):
                raise ValueError(f"the descriptors of {self.dataset.ids[i]!r} changed while sampling (a damaged "
                                 f"cache entry was extracted again from a changed file); sample again")
            sel = where[k][picks[a:b] - offsets[k]]
            out[a:b] = rows["descriptor"][sel]
            if with_xy:
                xy[a:b] = normalised_xy(rows["position"][sel], e["image_shape"])
        return (out, xy) if with_xy else out

    def __repr__(self) -> str:
        return (f"DescriptorStore({self.channel!r}, {len(self.dataset)} images of {self.dataset.root}, "
                f"params={self.params}, max_pixels={self.max_pixels}, folder={self.folder})")


def extract_block(shared: Dict[str, Any], payload: Dict[str, Any]) -> List[dict]:
    """Extract (or probe) the images ``payload["todo"]`` (rows of :meth:`DescriptorStore.pending`) of the store
    ``shared["store"]``, ``payload["n_jobs"]`` threads; returns their entries (written to the store's folder as
    they are done, so a block run twice, or after its worker died, redoes only what is missing)."""
    store: DescriptorStore = shared["store"]
    todo = [tuple(t) for t in payload["todo"]]
    with ThreadPoolExecutor(max_workers=max(1, int(payload.get("n_jobs", 1))), thread_name_prefix="fv-extract") as pool:
        return list(pool.map(lambda t: store._work(int(t[0]), t[1], t[2]), todo))

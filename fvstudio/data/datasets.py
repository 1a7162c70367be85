"""Datasets and train/test splits: class folders, PASCAL VOC devkits, split lists, random splits.

A :class:`Dataset` is a list of image files with stable string ``ids`` and their annotations:

- ``kind="folder"``: ``root/<class>/<...>/<image>``, one sub-folder per class (single-label). Hidden
  files and folders (name starting with ``.``) and files whose extension is not an image extension
  (:data:`fvstudio.data.images.IMAGE_EXTENSIONS`) are ignored; images directly in ``root`` are
  ignored; class folders may contain nested folders. Classes are the sorted folder names; images
  are sorted by id. ``ids`` are the posix paths relative to ``root`` (``"dots/dots_000.jpg"``) --
  the same on every OS, so they name cache entries and split-list lines.
  ``labels[i]`` is the class index; ``targets`` is the matching (N, C) {+1, -1} one-vs-rest matrix.
- ``kind="voc"``: a PASCAL VOC devkit: ``JPEGImages/<id>.jpg`` and ``ImageSets/Main/<class>_<split>.txt``
  (lines ``<id> <flag>``, flag +1 positive, -1 negative, 0 "difficult" = ignored by the VOC07 AP).
  ``targets`` (N, C) int8 holds those flags (0 also where an image is absent from a class's file);
  ``labels[i]`` is the class of an image with exactly one positive class, else -1 (for colouring
  plots only: VOC is multi-label). ``voc_sets`` maps split names (train, val, trainval, test, and any
  other id list in ``Main/`` such as ``trainvalP``) to sorted index arrays. ``ids`` are the VOC ids;
  an id that is not a plain file name (``../x``, ``/abs/path``, ``a\\b``, a leading ``.``) is refused
  naming the list file and line, so a list never makes the run read a file outside ``JPEGImages/``.

List files (VOC lists, split lists) are read as UTF-8 (a BOM is accepted); a file that is not UTF-8,
a directory or an unreadable path is an error naming the file (and the line).

Splits are :class:`Split` (``train``, ``test`` sorted int64 index arrays):

- :func:`voc_split` -- the devkit's own split (trainval / test for VOC 2007).
- :func:`split_from_lists` -- text files with one id per line (``<class>/<file>`` for folders), ``#``
  comments and blank lines skipped; an unknown entry is an error naming the list file and line.
- :func:`random_splits` -- the Caltech-101/256 and SUN-397 protocols: per class, ``n_train`` random
  training images and ``n_test`` test images (default: all the others), ``repeats`` times. Repeat
  ``r`` draws from ``numpy.random.default_rng([seed, r])``, so it does not depend on how many
  repeats are asked for.

Every split is checked before any heavy step: the training set must hold at least two classes, and
every class of the test set must have training images (single-label), or every class must have
positive and negative training images (multi-label); otherwise a ValueError names the classes.
"""
from __future__ import annotations

import hashlib
import os
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from fvstudio.data.images import is_image_file

PathLike = Union[str, Path]

VOC_SPLITS = ("train", "val", "trainval", "test")


@dataclass
class Dataset:
    """Image files plus annotations; see the module docstring for the two kinds."""

    root: Path
    kind: str
    class_names: List[str]
    paths: List[Path]
    ids: List[str]
    labels: np.ndarray
    targets: np.ndarray
    multilabel: bool
    voc_sets: Dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def index_of(self, image_id: str) -> int:
        """Index of ``image_id`` (ValueError if unknown)."""
        lookup = self.__dict__.get("_id_index")
        if lookup is None:
            lookup = {s: i for i, s in enumerate(self.ids)}
            self.__dict__["_id_index"] = lookup
        try:
            return lookup[image_id]
        except KeyError:
            raise ValueError(f"{image_id!r} is not an image of the dataset at {self.root}") from None

    def class_counts(self) -> np.ndarray:
        """Images per class: label counts (single-label) or positive counts (multi-label)."""
        if self.multilabel:
            return (self.targets == 1).sum(axis=0).astype(np.int64)
        return np.bincount(self.labels[self.labels >= 0], minlength=self.n_classes).astype(np.int64)

    def fingerprint(self) -> str:
        """SHA-256 of the kind, the resolved root and the ordered ids (not file contents)."""
        h = hashlib.sha256()
        h.update(f"{self.kind}\n{Path(self.root).resolve().as_posix()}\n".encode())
        for s in self.ids:
            h.update(s.encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()

    def describe(self) -> str:
        counts = self.class_counts()
        per = ", ".join(f"{n}: {int(c)}" for n, c in zip(self.class_names, counts))
        return (f"{self.kind} dataset at {self.root}: {len(self)} images, {self.n_classes} classes"
                f"{' (multi-label)' if self.multilabel else ''}; {per}")


@dataclass(frozen=True)
class Split:
    """Train and test image indices (sorted int64 arrays) into a :class:`Dataset`."""

    train: np.ndarray
    test: np.ndarray
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "train", np.asarray(self.train, dtype=np.int64))
        object.__setattr__(self, "test", np.asarray(self.test, dtype=np.int64))


def _visible(name: str) -> bool:
    return not name.startswith(".")


def load_folder_dataset(path: PathLike) -> Dataset:
    """Load a folder with one sub-folder of images per class (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist or is not a folder")
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and _visible(d.name)), key=lambda d: d.name)
    if not class_dirs:
        raise ValueError(f"dataset folder {root} has no class sub-folders "
                         f"(expected {root}/<class>/<image files>)")
    class_names, paths, ids, labels, empty = [], [], [], [], []
    for ci, d in enumerate(class_dirs):
        found = []
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames[:] = sorted(n for n in dirnames if _visible(n))
            for fn in filenames:
                if is_image_file(fn):
                    p = Path(dirpath) / fn
                    found.append((p.relative_to(root).as_posix(), p))
        if not found:
            empty.append(d.name)
        found.sort(key=lambda t: t[0])
        class_names.append(d.name)
        for rel, p in found:
            ids.append(rel)
            paths.append(p)
            labels.append(ci)
    if empty:
        raise ValueError(f"dataset folder {root}: class folder(s) {', '.join(repr(e) for e in empty)} "
                         f"hold no image files; remove them or add images")
    labels_arr = np.asarray(labels, dtype=np.int64)
    targets = np.full((len(ids), len(class_names)), -1, dtype=np.int8)
    targets[np.arange(len(ids)), labels_arr] = 1
    return Dataset(root=root, kind="folder", class_names=class_names, paths=paths, ids=ids,
                   labels=labels_arr, targets=targets, multilabel=False)


def find_voc_root(path: PathLike) -> Optional[Path]:
    """The VOC year folder (the one holding ``ImageSets/Main``) at or under ``path``, or None.

    Accepts the year folder itself (``VOCdevkit/VOC2007``), the devkit (``VOCdevkit``) or a folder
    holding the devkit; raises ValueError if several year folders are found.
    """
    p = Path(path)
    if (p / "ImageSets" / "Main").is_dir():
        return p
    cands = []
    for base in (p, p / "VOCdevkit"):
        if base.is_dir():
            for d in sorted(base.iterdir()):
                if d.is_dir() and (d / "ImageSets" / "Main").is_dir():
                    cands.append(d)
    if len(cands) > 1:
        raise ValueError(f"{p} holds several VOC devkits ({', '.join(str(c) for c in cands)}); "
                         f"open one of them")
    return cands[0] if cands else None


def read_text_lines(path: PathLike, what: str = "list file") -> List[str]:
    """The lines of a UTF-8 text file (a UTF-8 BOM is dropped; CRLF and CR line ends accepted).

    ValueError naming the file if it is missing, a directory or another non-regular file,
    unreadable, or not UTF-8 (with the line and the offending bytes)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if stat_mod.S_ISDIR(st.st_mode):
        raise ValueError(f"{what} {path} is a directory, not a text file")
    if not stat_mod.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path} is not a regular file (a FIFO, socket or device)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{what} {path} is UTF-16 encoded; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: {what} is not valid UTF-8 (bytes {data[exc.start:exc.end + 3]!r} at "
                         f"byte {exc.start}); save it as UTF-8") from None
    return text.splitlines()


def _check_voc_id(path: Path, lineno: int, image_id: str) -> None:
    """A VOC id names ``JPEGImages/<id>.jpg``: it must be a plain file name, never a path."""
    bad = ("/" in image_id or "\\" in image_id or ":" in image_id or image_id.startswith(".")
           or any(ord(ch) < 32 for ch in image_id))
    if bad:
        raise ValueError(f"{path}:{lineno}: image id {image_id!r} is not a plain file name (an id must not "
                         f"contain '/', '\\' or ':' nor start with '.'); it would read a file outside "
                         f"JPEGImages/")


def _read_id_lines(path: Path, *, with_flags: bool):
    """Parse a VOC list file: ids (and flags). CRLF, blank lines and extra spaces tolerated."""
    out = []
    for lineno, line in enumerate(read_text_lines(path, "VOC list file"), 1):
        parts = line.split()
        if not parts:
            continue
        if with_flags:
            if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
                raise ValueError(f"{path}:{lineno}: expected '<image id> <1|-1|0>', got {line.strip()!r}")
            _check_voc_id(path, lineno, parts[0])
            out.append((parts[0], int(parts[1])))
        else:
            if len(parts) != 1:
                raise ValueError(f"{path}:{lineno}: expected one image id per line, got {line.strip()!r}")
            _check_voc_id(path, lineno, parts[0])
            out.append(parts[0])
    return out


def load_voc_dataset(path: PathLike, *, require_images: bool = True,
                     image_ext: str = ".jpg") -> Dataset:
    """Load a PASCAL VOC devkit (see the module docstring for the layout and the target codes).

    ``path`` may be the year folder, ``VOCdevkit`` or a folder holding it. With
    ``require_images=False`` the label files are parsed even if ``JPEGImages/`` is missing (paths
    then point to where the images would be).
    """
    root = find_voc_root(path)
    if root is None:
        raise ValueError(f"{path} is not a PASCAL VOC devkit (no ImageSets/Main folder found at, "
                         f"under, or in VOCdevkit/ under it)")
    main = root / "ImageSets" / "Main"
    class_files: Dict[str, Dict[str, Path]] = {}
    plain_lists: Dict[str, Path] = {}
    for f in sorted(main.iterdir()):
        if not f.is_file() or f.suffix != ".txt" or not _visible(f.name):
            continue
        stem = f.stem
        cls, _, split = stem.rpartition("_")
        if cls and split in VOC_SPLITS:
            class_files.setdefault(cls, {})[split] = f
        elif "_" not in stem:
            plain_lists[stem] = f
    if not class_files:
        raise ValueError(f"{main} holds no '<class>_<split>.txt' label files")
    class_names = sorted(class_files)
    splits_present = sorted({s for d in class_files.values() for s in d}, key=VOC_SPLITS.index)

    # Image ids per standard split: the split's own list if present, else its first class file.
    split_ids: Dict[str, List[str]] = {}
    for s in splits_present:
        if s in plain_lists:
            split_ids[s] = _read_id_lines(plain_lists[s], with_flags=False)
        else:
            first = next(class_files[c][s] for c in class_names if s in class_files[c])
            split_ids[s] = [i for i, _ in _read_id_lines(first, with_flags=True)]
    ids = sorted({i for lst in split_ids.values() for i in lst})
    index = {s: k for k, s in enumerate(ids)}

    targets = np.zeros((len(ids), len(class_names)), dtype=np.int8)
    seen = np.zeros((len(ids), len(class_names)), dtype=bool)
    for c, cls in enumerate(class_names):
        for s, f in class_files[cls].items():
            for lineno, (image_id, flag) in enumerate(_read_id_lines(f, with_flags=True), 1):
                k = index.get(image_id)
                if k is None:
                    raise ValueError(f"{f}: image id {image_id!r} is in no split list "
                                     f"({', '.join(splits_present)})")
                if seen[k, c] and targets[k, c] != flag:
                    raise ValueError(f"{f}: image {image_id} has flag {flag} but another "
                                     f"'{cls}_*.txt' file gives {int(targets[k, c])}")
                targets[k, c] = flag
                seen[k, c] = True

    voc_sets = {s: np.asarray(sorted(index[i] for i in lst), dtype=np.int64) for s, lst in split_ids.items()}
    for name, f in plain_lists.items():
        if name in voc_sets:
            continue
        try:
            lst = _read_id_lines(f, with_flags=False)
        except ValueError:
            continue
        if lst and all(i in index for i in lst):  # e.g. trainvalP.txt; skips class.txt
            voc_sets[name] = np.asarray(sorted(index[i] for i in lst), dtype=np.int64)

    img_dir = root / "JPEGImages"
    paths = [img_dir / f"{i}{image_ext}" for i in ids]
    if require_images:
        if not img_dir.is_dir():
            raise ValueError(f"VOC devkit {root} has no JPEGImages folder")
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"VOC devkit {root}: {len(missing)} of {len(paths)} listed images are missing "
                             f"from JPEGImages, e.g. {missing[0].name}")
    npos = (targets == 1).sum(axis=1)
    labels = np.where(npos == 1, np.argmax(targets == 1, axis=1), -1).astype(np.int64)
    empty = [cls for c, cls in enumerate(class_names) if not (targets[:, c] == 1).any()]
    if empty:
        raise ValueError(f"VOC devkit {root}: class(es) {', '.join(repr(e) for e in empty)} "
                         f"have no positive image")
    return Dataset(root=root, kind="voc", class_names=class_names, paths=paths, ids=ids,
                   labels=labels, targets=targets, multilabel=True, voc_sets=voc_sets)


def open_dataset(path: PathLike, **kwargs) -> Dataset:
    """Open ``path`` as a VOC devkit if it holds one (see :func:`find_voc_root`), else as a
    class-folder dataset. A folder none of whose sub-folders holds an image directly (such as
    ``sample_data/``, which holds two datasets) is refused with a message listing them; call
    :func:`load_folder_dataset` to open classes whose images all sit in nested folders."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"dataset path {p} does not exist")
    if not p.is_dir():
        raise ValueError(f"dataset path {p} is not a folder")
    if find_voc_root(p) is not None:
        return load_voc_dataset(p, **kwargs)
    subdirs = [d for d in sorted(p.iterdir()) if d.is_dir() and _visible(d.name)]
    if subdirs and not any(is_image_file(f.name) for d in subdirs for f in d.iterdir() if f.is_file()):
        # No class folder holds an image directly: most likely a folder of datasets (like sample_data/).
        raise ValueError(f"{p} looks like a folder of datasets, not a dataset: none of its sub-folders "
                         f"holds images directly; open one of {', '.join(str(d) for d in subdirs)}")
    return load_folder_dataset(p)


def _names(ds: Dataset, classes) -> str:
    cs = [ds.class_names[int(c)] for c in classes]
    more = f" and {len(cs) - 8} more" if len(cs) > 8 else ""
    return ", ".join(repr(c) for c in cs[:8]) + more


def check_split(ds: Dataset, split: Split, where: str) -> Split:
    """Refuse a split no classifier can learn from (``where`` names its source in the message):
    single-label -- fewer than two classes among the training images, or a test class without any
    training image; multi-label -- a class without a positive or without a negative training image."""
    train = np.asarray(split.train, dtype=np.int64)
    if train.size == 0:
        raise ValueError(f"{where}: the training set is empty")
    if ds.multilabel:
        t = np.asarray(ds.targets)[train]
        no_pos = np.flatnonzero(~(t == 1).any(axis=0))
        no_neg = np.flatnonzero(~(t == -1).any(axis=0))
        if ds.n_classes < 2 and no_neg.size:
            raise ValueError(f"{where}: the dataset at {ds.root} has a single class ({_names(ds, [0])}); a "
                             f"classifier needs at least two")
        if no_pos.size:
            raise ValueError(f"{where}: class(es) {_names(ds, no_pos)} have no positive training image; "
                             f"their classifiers cannot be trained")
        if no_neg.size:
            raise ValueError(f"{where}: class(es) {_names(ds, no_neg)} have no negative training image "
                             f"(every training image is positive); their classifiers cannot be trained")
        return split
    labels = np.asarray(ds.labels)
    present = np.unique(labels[train])
    present = present[present >= 0]
    if present.size < 2:
        one = f"only one class ({_names(ds, present)})" if present.size else "no labelled image"
        total = f"; the dataset at {ds.root} has a single class" if ds.n_classes < 2 else ""
        raise ValueError(f"{where}: the training images hold {one}{total}; a classifier needs at least two")
    test_classes = np.unique(labels[np.asarray(split.test, dtype=np.int64)])
    missing = np.setdiff1d(test_classes[test_classes >= 0], present)
    if missing.size:
        raise ValueError(f"{where}: test class(es) {_names(ds, missing)} have no training image; they could "
                         f"never be predicted")
    return split


def voc_split(ds: Dataset, train: str = "trainval", test: str = "test") -> Split:
    """The devkit's own split, by names from ``ds.voc_sets`` (checked by :func:`check_split`)."""
    for name in (train, test):
        if name not in ds.voc_sets:
            raise ValueError(f"split {name!r} is not in the dataset at {ds.root}; "
                             f"available: {', '.join(sorted(ds.voc_sets)) or 'none'}")
    return check_split(ds, Split(ds.voc_sets[train], ds.voc_sets[test], f"{train}/{test}"),
                       f"VOC split {train}/{test} of {ds.root}")


def _read_split_list(ds: Dataset, path: PathLike) -> np.ndarray:
    path = Path(path)
    out, seen = [], {}
    for lineno, line in enumerate(read_text_lines(path, "split list"), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        entry = entry.replace("\\", "/")
        while entry.startswith("./"):
            entry = entry[2:]
        try:
            k = ds.index_of(entry)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: {entry!r} is not an image of the dataset at "
                             f"{ds.root}") from None
        if k in seen:
            raise ValueError(f"{path}:{lineno}: {entry!r} is listed twice (first on line {seen[k]})")
        seen[k] = lineno
        out.append(k)
    if not out:
        raise ValueError(f"split list {path} lists no images")
    return np.asarray(sorted(out), dtype=np.int64)


def split_from_lists(ds: Dataset, train_list: PathLike, test_list: Optional[PathLike] = None) -> Split:
    """A split from text files of ids (see the module docstring); without ``test_list`` the test
    set is every image not in the training list."""
    train = _read_split_list(ds, train_list)
    if test_list is None:
        test = np.setdiff1d(np.arange(len(ds), dtype=np.int64), train)
    else:
        test = _read_split_list(ds, test_list)
        both = np.intersect1d(train, test)
        if both.size:
            raise ValueError(f"{test_list}: {both.size} images are also in the training list "
                             f"{train_list}, e.g. {ds.ids[both[0]]!r}")
    where = f"split lists {train_list}" + (f" / {test_list}" if test_list is not None else "")
    return check_split(ds, Split(train, test, Path(train_list).stem), where)


def random_splits(ds: Dataset, n_train: int, n_test: Optional[int] = None, repeats: int = 1,
                  seed: int = 0) -> List[Split]:
    """``repeats`` random per-class splits: ``n_train`` training and ``n_test`` (default: all the
    remaining) test images per class. Single-label datasets only."""
    from fvstudio.engine.validation import check_positive_int

    n_train = check_positive_int(n_train, "n_train")
    if n_test is not None:
        n_test = check_positive_int(n_test, "n_test")
    repeats = check_positive_int(repeats, "repeats")
    if ds.multilabel:
        raise ValueError(f"random per-class splits need a single-label dataset; {ds.root} is multi-label "
                         f"(use voc_split or split_from_lists)")
    if ds.n_classes < 2:
        raise ValueError(f"random_splits: the dataset at {ds.root} has a single class "
                         f"({', '.join(repr(c) for c in ds.class_names) or 'none'}); a classifier needs at "
                         f"least two")
    members = [np.flatnonzero(ds.labels == c) for c in range(ds.n_classes)]
    need = n_train + (n_test if n_test is not None else 1)
    short = [(ds.class_names[c], m.size) for c, m in enumerate(members) if m.size < need]
    if short:
        listed = ", ".join(f"{name!r} ({n})" for name, n in short)
        raise ValueError(f"random_splits(n_train={n_train}, n_test={n_test}) needs at least {need} images "
                         f"per class; too few in {listed}")
    out = []
    for r in range(repeats):
        rng = np.random.default_rng([int(seed), r])
        tr, te = [], []
        for m in members:
            perm = rng.permutation(m)
            tr.append(perm[:n_train])
            te.append(perm[n_train:] if n_test is None else perm[n_train:n_train + n_test])
        out.append(Split(np.sort(np.concatenate(tr)), np.sort(np.concatenate(te)),
                         f"random {n_train}/{n_test if n_test is not None else 'rest'} #{r}"))
    return out


def write_split_list(ds: Dataset, indices: Sequence[int], path: PathLike) -> Path:
    """Write the ids of ``indices`` one per line (the format :func:`split_from_lists` reads)."""
    from fvstudio.engine.serialization import atomic_write_bytes

    text = "".join(f"{ds.ids[int(i)]}\n" for i in indices)
    return atomic_write_bytes(path, text.encode("utf-8"))

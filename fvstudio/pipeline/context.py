"""What every pipeline step is given: one explicit :class:`StepContext`, and how it is made from a config.

A step (:mod:`fvstudio.pipeline.steps`) reads nothing but its context: the config, the dataset, the
train/test splits, the ground truth, one descriptor store per channel and the workspace's step cache
(manifests, step folders, loaded artifacts). :func:`open_configured_dataset` and :func:`make_splits`
turn the ``[dataset]`` section into the dataset and its splits:

- ``split = "lists"`` (or ``auto`` with ``train_list``/``test_list``): one fixed split from the lists;
- ``split = "voc"`` (or ``auto`` on a VOC devkit): train on ``voc_train``, test on ``voc_test`` (Sec. 3.2);
- ``split = "random"`` (or ``auto`` otherwise): ``n_train`` images per class, ``n_test`` (0 = the rest)
  for testing, ``repeats`` times from ``seed`` (Sec. 3.3-3.4).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from .config import ConfigError, PipelineConfig
from .hashing import ids_digest

__all__ = ["StepContext", "open_configured_dataset", "make_splits"]


def open_configured_dataset(config: PipelineConfig):
    """The dataset ``dataset.root`` names (class folders or a VOC devkit); ConfigError naming the key."""
    from ..data.datasets import open_dataset

    root = config.get("dataset.root")
    if not root:
        raise ConfigError("dataset.root is not set: give the dataset folder (class sub-folders or a VOC devkit)")
    if not Path(root).exists():
        raise ConfigError(f"dataset.root: folder {root} does not exist")
    return open_dataset(root)


def _split_mode(config: PipelineConfig, dataset) -> str:
    mode = config.get("dataset.split")
    if mode != "auto":
        return mode
    if config.get("dataset.train_list") or config.get("dataset.test_list"):
        return "lists"
    return "voc" if dataset.kind == "voc" else "random"


def make_splits(config: PipelineConfig, dataset) -> list:
    """The train/test :class:`~fvstudio.data.datasets.Split` list the ``[dataset]`` section asks for."""
    from ..data import datasets as dmod

    c = config
    mode = _split_mode(c, dataset)
    if mode == "lists":
        train_list, test_list = c.get("dataset.train_list"), c.get("dataset.test_list")
        if not (train_list and test_list):
            raise ConfigError("dataset.split = 'lists' needs both dataset.train_list and dataset.test_list")
        for key, p in (("dataset.train_list", train_list), ("dataset.test_list", test_list)):
            if not Path(p).is_file():
                raise ConfigError(f"{key}: file {p} does not exist")
        return [dmod.split_from_lists(dataset, train_list, test_list)]
    if mode == "voc":
        if dataset.kind != "voc":
            raise ConfigError(f"dataset.split = 'voc' but {c.get('dataset.root')} is not a VOC devkit")
        return [dmod.voc_split(dataset, train=c.get("dataset.voc_train"), test=c.get("dataset.voc_test"))]
    if dataset.multilabel:
        raise ConfigError(f"dataset.split = 'random' needs a single-label dataset; {c.get('dataset.root')} is "
                          f"multi-label (use split = 'voc' or train_list/test_list)")
    try:
        return list(dmod.random_splits(dataset, c.get("dataset.n_train"), n_test=c.get("dataset.n_test") or None,
                                       repeats=c.get("dataset.repeats"), seed=c.get("dataset.seed")))
    except ValueError as exc:
        raise ConfigError(f"dataset.n_train / dataset.n_test: {exc}") from None


def leave_out(splits: list, left_out: Dict[int, str]) -> list:
    """``splits`` without the images of ``left_out`` (dataset index -> why it gives no descriptor)."""
    from ..data.datasets import Split

    if not left_out:
        return list(splits)
    drop = np.fromiter(left_out, np.int64, len(left_out))
    return [Split(np.setdiff1d(sp.train, drop), np.setdiff1d(sp.test, drop), sp.name) for sp in splits]


@dataclass
class StepContext:
    """Everything a step reads: config, dataset, splits, descriptor stores (one per channel), step cache.

    ``splits`` hold only images that gave descriptors: ``left_out`` (dataset index -> reason) lists the
    images of ``raw_splits`` that are unreadable or too small for one patch in some channel, which no
    step trains or tests on (they are never scored as a zero vector). The descriptors step extracts
    ``raw_splits`` (retrying earlier failures).
    """

    config: PipelineConfig
    dataset: Any
    splits: list
    stores: Dict[str, Any]
    cache: Any  # fvstudio.pipeline.runner.StepCache
    raw_splits: list = field(default_factory=list)
    left_out: Dict[int, str] = field(default_factory=dict)
    _memo: Dict[Tuple, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, config: PipelineConfig, dataset, raw_splits: list, stores: Dict[str, Any], cache):
        """The context of ``raw_splits``, leaving out every image a store knows gives no descriptor."""
        parts = [np.asarray(s.train, np.int64) for s in raw_splits] + \
                [np.asarray(s.test, np.int64) for s in raw_splits]
        needed = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        position = {image_id: i for i, image_id in enumerate(dataset.ids)}
        left_out: Dict[int, str] = {}
        for ch in config.get("descriptors.channels"):
            for image_id, reason in stores[ch].failures(needed):
                left_out.setdefault(position[image_id], reason)
        return cls(config, dataset, leave_out(raw_splits, left_out), stores, cache, list(raw_splits), left_out)

    @property
    def channels(self) -> List[str]:
        return self.config.get("descriptors.channels")

    @property
    def ids(self) -> List[str]:
        return self.dataset.ids

    @property
    def n_jobs(self) -> int:
        return self.config.get("runtime.n_jobs")

    def truth(self, indices) -> np.ndarray:
        """Ground truth of dataset ``indices``: (n, C) int8 targets (multi-label) or (n,) int64 labels."""
        idx = np.asarray(indices, np.int64)
        if self.dataset.multilabel:
            return np.asarray(self.dataset.targets)[idx].astype(np.int8)
        return np.asarray(self.dataset.labels)[idx].astype(np.int64)

    def needed_indices(self) -> np.ndarray:
        """Every dataset index some split would train or test on, left-out images included (sorted,
        unique): what the descriptors step extracts."""
        parts = [np.asarray(s.train, np.int64) for s in self.raw_splits] + \
                [np.asarray(s.test, np.int64) for s in self.raw_splits]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def left_out_report(self) -> List[Dict[str, Any]]:
        """The left-out images as JSON-able rows: id, reason, and whether a split trains or tests on it."""
        train = set(np.concatenate([np.asarray(s.train, np.int64) for s in self.raw_splits]).tolist()) \
            if self.raw_splits else set()
        return [{"id": self.ids[i], "reason": r, "role": "train" if i in train else "test"}
                for i, r in sorted(self.left_out.items())]

    def fit_indices(self, split: int) -> np.ndarray:
        """The images the vocabulary of ``split`` is learned from: that split's training images."""
        return np.unique(np.asarray(self.splits[split].train, np.int64))

    def split_indices(self, split: int) -> np.ndarray:
        """The images ``split`` encodes: its training and test images."""
        sp = self.splits[split]
        return np.unique(np.concatenate([np.asarray(sp.train, np.int64), np.asarray(sp.test, np.int64)]))

    def vocab_indices(self, split: int, *, raw: bool = False) -> np.ndarray:
        """The training images of ``split`` whose descriptors PCA and the GMM sample, and the only ones whose
        descriptors are stored with ``descriptors.keep = "vocabulary"``: ``descriptors.vocab_images`` of them
        (0: all), a subset drawn with ``pca.seed`` from the split's training images as listed (``raw``), then
        without the images left out (so a failed image makes the subset one smaller, not different)."""
        def make():
            train = np.unique(np.asarray(self.raw_splits[split].train if self.raw_splits else
                                         self.splits[split].train, np.int64))
            n = self.config.get("descriptors.vocab_images")
            if n and n < len(train):
                rng = np.random.default_rng(self.config.get("pca.seed"))
                train = np.sort(train[rng.permutation(len(train))[:n]])
            return train
        chosen = self._memoised(("vocab", split), make)
        if raw or not self.left_out:
            return chosen
        return np.setdiff1d(chosen, np.fromiter(self.left_out, np.int64, len(self.left_out)))

    def stored_indices(self) -> "np.ndarray | None":
        """The images whose descriptors the descriptors step stores (None: every image, ``keep = "all"``)."""
        if self.config.get("descriptors.keep") == "all" or not self.raw_splits:
            return None
        return np.unique(np.concatenate([self.vocab_indices(s, raw=True) for s in range(len(self.raw_splits))]))

    def stored_rows(self) -> int:
        """Rows stored of each vocabulary image (0: all): ``descriptors.vocab_rows`` on the streaming path."""
        return 0 if self.config.get("descriptors.keep") == "all" else int(self.config.get("descriptors.vocab_rows"))

    def vocab_signature(self, split: int) -> str:
        """Digest of the ids of ``split``'s vocabulary images."""
        return self._memoised(("vocab_sig", split), lambda: ids_digest(self.ids, self.vocab_indices(split)))

    def fit_signature(self, split: int) -> str:
        """Digest of the ids of ``split``'s training images (splits that share it share a vocabulary)."""
        return self._memoised(("fit_sig", split), lambda: ids_digest(self.ids, self.fit_indices(split)))

    def split_signature(self, split: int) -> str:
        """Digest of the ids of every image ``split`` encodes."""
        return self._memoised(("split_sig", split), lambda: ids_digest(self.ids, self.split_indices(split)))

    def fit_content(self, channel: str, split: int) -> str:
        """Digest of what ``channel``'s store holds for ``split``'s training images (ids, source stamps,
        status, counts): changes when any of them is extracted anew, edited or fixed. Not memoised: the
        descriptors step changes it."""
        return self.stores[channel].content_digest(self.fit_indices(split))[:20]

    def split_content(self, channel: str, split: int) -> str:
        """Like :meth:`fit_content`, over every image ``split`` encodes."""
        return self.stores[channel].content_digest(self.split_indices(split))[:20]

    def unit_name(self, channel: str, split: int) -> str:
        """How progress messages name one (channel, split) unit of work."""
        return channel if len(self.splits) == 1 else f"{channel}, split {split}"

    def new_units(self, step_keys: Dict[str, List[str]]) -> List[Tuple[str, int, str]]:
        """(channel, split, key) of a per-split step whose key is new in this run: splits with the same
        training images share one key, and the first such split computes it."""
        seen, out = set(), []
        for ch in self.channels:
            for s, key in enumerate(step_keys[ch]):
                if key not in seen:
                    seen.add(key)
                    out.append((ch, s, key))
        return out

    def _memoised(self, key: Tuple, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

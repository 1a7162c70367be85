"""Which test images a confusion-matrix cell or a class holds, with their top predictions; no Qt.

:func:`cell_images` reads a run's stored test arrays of one split (``RunResult.test_labels``,
``test_scores`` and ``test_ids``; the explorer keeps the first split's in its run record) and returns one
:class:`ImagePrediction` per test image whose true class is ``true`` and/or whose top-1 prediction is
``predicted`` (the argmax of its scores, as the confusion matrix counts it), each with its ``top`` best
classes and their scores, most confident first. With ``true`` and ``predicted`` both given that is the
(true, predicted) cell of the confusion matrix; with one of them, a row or a column of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["ImagePrediction", "cell_images"]


@dataclass
class ImagePrediction:
    """One test image of a selection: its row among the split's test images, id, true class and top-k."""

    row: int
    id: str
    true: str
    predicted: str
    top: List[Tuple[str, float]]  # (class name, score), best first

    @property
    def correct(self) -> bool:
        return self.true == self.predicted


def cell_images(labels, scores, ids: Sequence[str], class_names: Sequence[str], *, true: Optional[int] = None,
                predicted: Optional[int] = None, top: int = 5) -> List[ImagePrediction]:
    """Test images with true class ``true`` (None: any) predicted as ``predicted`` (None: any)."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or len(scores) != len(labels) or len(ids) != len(labels):
        raise ValueError(f"labels ({len(labels)}), scores {scores.shape} and ids ({len(ids)}) must describe the "
                         f"same test images")
    pred = np.argmax(scores, axis=1) if scores.size else np.zeros(0, np.int64)
    keep = np.ones(len(labels), bool)
    if true is not None:
        keep &= labels == int(true)
    if predicted is not None:
        keep &= pred == int(predicted)
    names = list(class_names)
    n = min(int(top), scores.shape[1]) if scores.ndim == 2 else 0
    out = []
    for r in np.flatnonzero(keep):
        order = np.argsort(-scores[r], kind="stable")[:n]
        out.append(ImagePrediction(row=int(r), id=str(ids[r]), true=names[int(labels[r])], predicted=names[int(pred[r])],
                             top=[(names[int(c)], float(scores[r, c])) for c in order]))
    return out

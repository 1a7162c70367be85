"""The test images behind a confusion-matrix cell or a class (Results panel), as thumbnails with their
top-5 predictions and scores.

:class:`TestImagesView` shows :func:`fvstudio.pipeline.misclassified.cell_images` of a
:class:`~fvstudio.gui.session.RunRecord` (its stored test labels, scores and ids of the first split) in a
:class:`~fvstudio.gui.thumbs.ThumbStrip`; the image files come from ``resolve(id) -> (dataset index, path)``
(the dataset open in the window; None for an image it does not hold). Double-click emits
``open_image(dataset index)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Tuple

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from fvstudio.pipeline.misclassified import ImagePrediction, cell_images

from .thumbs import ThumbItem, ThumbStrip

Resolver = Callable[[str], Optional[Tuple[int, str]]]


class TestImagesView(QWidget):
    open_image = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.resolve: Resolver = lambda _id: None
        self.images: List[ImagePrediction] = []
        self.title = QLabel("Click a confusion-matrix cell or a class in the per-class table to see its test images.")
        self.title.setWordWrap(True)
        self.strip = ThumbStrip(80, 7)
        self.strip.setObjectName("test_image_thumbnails")
        self.strip.open_image.connect(self.open_image)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.title)
        lay.addWidget(self.strip, 1)

    def clear(self) -> None:
        self.images = []
        self.strip.set_items([])
        self.title.setText("Click a confusion-matrix cell or a class in the per-class table to see its test images.")

    def show_selection(self, record, true: Optional[int], predicted: Optional[int]) -> bool:
        """The test images of ``record`` with true class ``true`` predicted as ``predicted`` (None: any)."""
        ids = record.summary.get("test_ids") if record is not None else None
        labels = record.arrays.get("labels") if record is not None else None
        scores = record.scores if record is not None else None
        if not ids or labels is None or scores is None or len(ids) != len(labels):
            self.images = []
            self.strip.set_items([])
            self.title.setText("This run kept no test image ids (a run saved by an older fvstudio): run it again "
                               "to browse its test images.")
            return False
        names = record.class_names
        self.images = cell_images(labels, scores, ids, names, true=true, predicted=predicted)
        items = []
        for im in self.images:
            where = self.resolve(im.id)
            top = "\n".join(f"{name[:11]} {score:+.2f}" for name, score in im.top)
            items.append(ThumbItem(where[0] if where else -1, where[1] if where else "",
                                   f"{'✔' if im.correct else '✖'} {Path(im.id).stem[:16]}\n{top}",
                                   f"{im.id}\ntrue: {im.true}, predicted: {im.predicted}\ntop-5 scores:\n"
                                   + "\n".join(f"  {n}: {s:.4f}" for n, s in im.top)
                                   + ("\ndouble-click: open in the Dataset panel" if where else
                                      "\n(not in the dataset open now)")))
        self.strip.set_items(items)
        splits = record.summary.get("n_splits", 1) or 1
        first = " (first split)" if splits > 1 else ""
        if true is not None and predicted is not None:
            what = (f"true <b>{names[true]}</b> predicted <b>{names[predicted]}</b>"
                    + (" (correct)" if true == predicted else ""))
        elif true is not None:
            what = f"true class <b>{names[true]}</b>"
        else:
            what = f"predicted as <b>{names[predicted]}</b>"
        wrong = sum(not im.correct for im in self.images)
        self.title.setText(f"{len(self.images)} test images{first}, {what}; {wrong} misclassified. Under each: its "
                           f"top-5 classes and scores. Double-click opens one in the Dataset panel.")
        return True

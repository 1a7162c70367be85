"""A strip of image thumbnails with captions, for lists of dataset images shown outside the Dataset panel
(the hub images of the Compression panel, the test images of a confusion cell in the Results panel).

:class:`ThumbStrip` is a ``QListWidget`` in icon mode; :meth:`ThumbStrip.set_items` takes
:class:`ThumbItem` s (dataset index, file path, caption, tooltip) and the pictures are decoded off the GUI
thread by a :class:`~fvstudio.gui.workers.BackgroundQueue` (the Dataset panel's reader), the newest ask
first. Double-clicking (or Enter on) an item emits ``open_image(dataset index)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem

from .dataset_panel import _read_thumbnail
from .workers import BackgroundQueue

__all__ = ["ThumbItem", "ThumbStrip"]


@dataclass
class ThumbItem:
    index: int  # dataset index (-1: not in the open dataset)
    path: str  # image file ('' if unknown)
    caption: str
    tooltip: str = ""


class ThumbStrip(QListWidget):
    """Thumbnails of ``ThumbItem`` s, loaded in the background; ``open_image(index)`` on double-click."""

    open_image = Signal(int)

    def __init__(self, size: int = 96, caption_lines: int = 3, parent=None) -> None:
        super().__init__(parent)
        self.thumb = size
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(size, size))
        line = self.fontMetrics().height()
        self.setGridSize(QSize(size + 58, size + 10 + caption_lines * line))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setWordWrap(True)
        self.setUniformItemSizes(True)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self._items: List[ThumbItem] = []
        self._by_path: Dict[str, List[QListWidgetItem]] = {}
        self._queue = BackgroundQueue(lambda p: _read_thumbnail(p, size), self)
        self._queue.ready.connect(self._on_ready)
        self.itemActivated.connect(self._activated)
        self.itemDoubleClicked.connect(self._activated)

    def set_items(self, items: Sequence[ThumbItem]) -> None:
        self._queue.clear()
        self.clear()
        self._by_path = {}
        self._items = list(items)
        blank = QPixmap(self.thumb, self.thumb)
        blank.fill(Qt.GlobalColor.transparent)
        for it in self._items:
            w = QListWidgetItem(QIcon(blank), it.caption)
            w.setToolTip(it.tooltip or it.caption)
            w.setData(Qt.ItemDataRole.UserRole, it.index)
            w.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            self.addItem(w)
            if it.path:
                self._by_path.setdefault(it.path, []).append(w)
        for path in reversed(list(self._by_path)):  # LIFO queue: the first items load first
            self._queue.request(path)

    def items(self) -> List[ThumbItem]:
        return list(self._items)

    def loaded(self) -> bool:
        """Every thumbnail asked for has been decoded (or failed)."""
        return self._queue.idle()

    def stop_loading(self) -> None:
        self._queue.clear()

    def _on_ready(self, path: str, image: Optional[QImage]) -> None:
        if image is None or image.isNull():
            return
        pm = QPixmap(self.thumb, self.thumb)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        p.drawImage((self.thumb - image.width()) // 2, (self.thumb - image.height()) // 2, image)
        p.end()
        for w in self._by_path.get(path, []):
            try:
                w.setIcon(QIcon(pm))
            except RuntimeError:  # the item was cleared meanwhile
                pass

    def _activated(self, item: QListWidgetItem) -> None:
        i = item.data(Qt.ItemDataRole.UserRole)
        if i is not None and int(i) >= 0:
            self.open_image.emit(int(i))

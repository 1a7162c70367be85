"""Dataset panel: classes with counts, a lazily loaded thumbnail grid, a large view with the dense patch grid.

- The dataset is whatever ``Pipeline(config, workspace).dataset`` opened (``fvstudio.data.datasets``);
  the panel reads ``class_names``, ``paths``, ``ids``, ``labels``/``targets`` and the pipeline's ``splits``.
- Thumbnails: a ``QListView`` in icon mode over :class:`ThumbnailModel`; :class:`ThumbnailDelegate` shows
  the selected one by a frame, never by tinting its colours. The view only asks for the rows it
  paints; each ask queues the file on a :class:`~fvstudio.gui.workers.BackgroundQueue` (most recent first),
  which decodes a small ``QImage`` off the GUI thread (``QImageReader`` with a scaled size; files Qt cannot
  read go through ``fvstudio.data.images.load_image``). Pixmaps are cached (LRU), so scrolling a few
  thousand images stays smooth.
- The large view shows the image at the resolution the descriptors see (``load_image(path, max_pixels)``
  with the config's ``dataset.max_pixels``) and, on demand, the patches of one scale of the dense grid
  (:func:`fvstudio.pipeline.diagnostics.patch_grid` at the config's ``descriptors.*`` grid: the frames
  only, no descriptor is computed), drawn as squares of the patch size centred at the frame positions.
- The split options of the config (the ``dataset`` section of the schema: train/test lists, images per
  class, seed ...) are edited here; train/test counts per class and a split filter follow them.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from PySide6.QtCore import QAbstractListModel, QItemSelectionModel, QModelIndex, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QImageReader, QPainter, QPainterPath, QPalette, QPen, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QCheckBox, QComboBox, QFileDialog,
                               QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QListView, QPushButton, QSpinBox, QSplitter, QStyle,
                               QStyledItemDelegate, QStyleOptionViewItem, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from fvstudio.pipeline.diagnostics import patch_grid

from .patch_inspector import PatchInspector
from .workers import BackgroundQueue

log = logging.getLogger("fvstudio.gui")

THUMB = 96
_CACHE_MAX = 3000


def _read_thumbnail(path: str, size: int = THUMB) -> Optional[QImage]:
    """Decode a small image (worker thread; QImage is thread-safe, QPixmap is not)."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    full = reader.size()
    if full.isValid() and full.width() > 0 and full.height() > 0:
        s = size / max(full.width(), full.height())
        if s < 1:
            reader.setScaledSize(QSize(max(1, round(full.width() * s)), max(1, round(full.height() * s))))
    img = reader.read()
    if not img.isNull():
        return img
    from fvstudio.data.images import load_image  # e.g. 16-bit or exotic formats OpenCV reads

    rgb = load_image(path, max_pixels=size * size)
    return rgb_to_qimage(rgb)


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """(H, W, 3) float in [0, 1] (or uint8) -> an owned QImage."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    a = np.ascontiguousarray(a[:, :, :3])
    h, w, _ = a.shape
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def dataset_labels(ds, i: int) -> List[str]:
    """Class names of image ``i``: its label, or every positive (and '(difficult)') target."""
    names = list(ds.class_names)
    if ds.multilabel:
        row = np.asarray(ds.targets[i])
        out = [names[c] for c in np.flatnonzero(row > 0)]
        out += [f"{names[c]} (difficult)" for c in np.flatnonzero(row == 0)]
        return out
    c = int(ds.labels[i])
    return [names[c]] if c >= 0 else []


def class_members(ds) -> List[np.ndarray]:
    """Indices of images per class (positives for multi-label data)."""
    if ds.multilabel:
        t = np.asarray(ds.targets)
        return [np.flatnonzero(t[:, c] > 0) for c in range(len(ds.class_names))]
    labels = np.asarray(ds.labels)
    return [np.flatnonzero(labels == c) for c in range(len(ds.class_names))]


class ThumbnailModel(QAbstractListModel):
    """Rows = dataset image indices (filtered); icons arrive from the background queue."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._ds = None
        self._rows: np.ndarray = np.zeros(0, dtype=np.int64)
        self._split_tag: Dict[int, str] = {}
        self._cache: "OrderedDict[str, QPixmap]" = OrderedDict()
        self._failed: set = set()
        self._row_of: Dict[int, int] = {}
        self._path_index: Dict[str, int] = {}
        self._queue = BackgroundQueue(_read_thumbnail, self)
        self._queue.ready.connect(self._on_ready)
        self._placeholder = self._make_placeholder()

    def _make_placeholder(self) -> QPixmap:
        pm = QPixmap(THUMB, THUMB)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        pal = QWidget().palette()
        p.setPen(QPen(pal.color(QPalette.ColorRole.Mid), 1, Qt.PenStyle.DashLine))
        p.drawRect(8, 8, THUMB - 17, THUMB - 17)
        p.end()
        return pm

    # ---------------------------------------------------------------- content
    def set_dataset(self, ds) -> None:
        self.beginResetModel()
        self._ds = ds
        self._queue.clear()
        self._cache.clear()
        self._failed.clear()
        self._rows = np.arange(len(ds.paths)) if ds is not None else np.zeros(0, dtype=np.int64)
        self._row_of = {int(i): r for r, i in enumerate(self._rows)}
        self._path_index = {str(p): k for k, p in enumerate(ds.paths)} if ds is not None else {}
        self.endResetModel()

    def set_filter(self, indices: np.ndarray) -> None:
        self.beginResetModel()
        self._queue.clear()
        self._rows = np.asarray(indices, dtype=np.int64)
        self._row_of = {int(i): r for r, i in enumerate(self._rows)}
        self.endResetModel()

    def set_split_tags(self, tags: Dict[int, str]) -> None:
        self._split_tag = tags
        if self.rowCount():
            self.dataChanged.emit(self.index(0), self.index(self.rowCount() - 1), [Qt.ItemDataRole.DisplayRole])

    def image_index(self, row: int) -> int:
        return int(self._rows[row])

    def loaded_count(self) -> int:
        return len(self._cache)

    def queue_idle(self) -> bool:
        return self._queue.idle()

    def stop_loading(self) -> None:
        """Forget the thumbnails not loaded yet (the loading thread then leaves)."""
        self._queue.clear()

    def row_of(self, i: int) -> Optional[int]:
        """The row showing dataset image ``i``, or None if the filter hides it."""
        return self._row_of.get(int(i))

    # ---------------------------------------------------------------- Qt model
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self._ds is None:
            return None
        i = int(self._rows[index.row()])
        path = str(self._ds.paths[i])
        if role == Qt.ItemDataRole.DisplayRole:
            tag = self._split_tag.get(i)
            name = Path(path).name
            if len(name) > 18:
                name = name[:8] + "…" + name[-9:]
            return f"{name}\n{tag}" if tag else name
        if role == Qt.ItemDataRole.DecorationRole:
            pm = self._cache.get(path)
            if pm is not None:
                self._cache.move_to_end(path)
                return pm
            if path not in self._failed:
                self._queue.request(path)
            return self._placeholder
        if role == Qt.ItemDataRole.ToolTipRole:
            ds = self._ds
            labels = ", ".join(dataset_labels(ds, i)) or "no label"
            tag = self._split_tag.get(i, "not in split")
            return f"{ds.ids[i]}\n{labels}\n{tag}"
        if role == Qt.ItemDataRole.UserRole:
            return i
        return None

    def _on_ready(self, path: str, image: Optional[QImage]) -> None:
        if image is None or image.isNull():
            self._failed.add(path)
            return
        # Every icon is THUMB x THUMB (image centred) so every cell leaves the same room for its text.
        pm = QPixmap(THUMB, THUMB)
        pm.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pm)
        painter.drawImage((THUMB - image.width()) // 2, (THUMB - image.height()) // 2, image)
        painter.end()
        self._cache[path] = pm
        while len(self._cache) > _CACHE_MAX:
            self._cache.popitem(last=False)
        if self._ds is None:
            return
        i = self._path_index.get(path)  # paths are unique
        row = self._row_of.get(i) if i is not None else None
        if row is not None:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])


class ThumbnailDelegate(QStyledItemDelegate):
    """Draws a thumbnail cell as the style does, but never tinted: a selected cell gets a frame of the
    palette's highlight colour instead (the style's selected icon mode blends the picture with that
    colour, which misleads where classes differ by colour)."""

    FRAME = 3  # px

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        opt.state &= ~QStyle.StateFlag.State_Selected  # the picture and its text as when not selected
        opt.state &= ~QStyle.StateFlag.State_HasFocus
        style = opt.widget.style() if opt.widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        if selected:
            painter.save()
            pen = QPen(opt.palette.color(QPalette.ColorGroup.Active, QPalette.ColorRole.Highlight), self.FRAME)
            pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            half = self.FRAME // 2 + 1
            painter.drawRect(opt.rect.adjusted(half, half, -half, -half))
            painter.restore()


class ImageView(QGraphicsView):
    """The selected image at descriptor resolution with an optional patch-grid overlay (no OpenGL); a click
    on the image emits ``patch_clicked(x, y)`` in image pixels. The patch inspector's overlays: the patches
    of one visual word (dots), the inspected patch (a square) and a heat map (a translucent image)."""

    patch_clicked = Signal(float, float)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self._pixmap = QGraphicsPixmapItem()
        self.scene().addItem(self._pixmap)
        self._heat = QGraphicsPixmapItem()
        self._heat.setOpacity(0.6)
        self._heat.setZValue(0.5)
        self.scene().addItem(self._heat)
        self._grid = self.scene().addPath(QPainterPath())
        self._grid.setZValue(1)
        self._marks = self.scene().addPath(QPainterPath())
        self._marks.setZValue(2)
        self._selected = self.scene().addPath(QPainterPath())
        self._selected.setZValue(3)
        self.setMinimumSize(260, 200)

    def set_image(self, image: Optional[QImage]) -> None:
        self._pixmap.setPixmap(QPixmap.fromImage(image) if image is not None else QPixmap())
        self._grid.setPath(QPainterPath())
        self.clear_inspection()
        self.scene().setSceneRect(self._pixmap.boundingRect())
        self.fit()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        p = self.mapToScene(event.position().toPoint())
        if event.button() == Qt.MouseButton.LeftButton and self._pixmap.boundingRect().contains(p):
            self.patch_clicked.emit(float(p.x()), float(p.y()))
        super().mousePressEvent(event)

    def clear_inspection(self) -> None:
        self._marks.setPath(QPainterPath())
        self._selected.setPath(QPainterPath())
        self._heat.setPixmap(QPixmap())

    def set_inspection(self, selected: Optional[tuple], marks: Optional[np.ndarray], heat: Optional[QImage]) -> None:
        """``selected`` (x, y, side) square, ``marks`` (n, 2) patch centres as dots, ``heat`` an RGBA image."""
        sel = QPainterPath()
        if selected is not None:
            x, y, side = selected
            sel.addRect(QRectF(x - side / 2, y - side / 2, side, side))
        pen = QPen(QColor(255, 40, 40), 2.5)
        pen.setCosmetic(True)
        self._selected.setPen(pen)
        self._selected.setPath(sel)
        path = QPainterPath()
        if marks is not None:
            for x, y in np.asarray(marks, float):
                path.addEllipse(QPointF(x, y), 1.6, 1.6)
        self._marks.setPen(QPen(Qt.PenStyle.NoPen))
        self._marks.setBrush(QBrush(QColor(255, 220, 0, 200)))
        self._marks.setPath(path)
        self._heat.setPixmap(QPixmap.fromImage(heat) if heat is not None else QPixmap())

    def set_patches(self, positions: Optional[np.ndarray], size: float) -> None:
        """Draw the patch centres of one scale as dots, and the patch squares of a non-overlapping
        subset (every k-th grid column/row, k = patch size / grid step) so their size stays readable."""
        path = QPainterPath()
        if positions is not None and len(positions):
            pos = np.asarray(positions, dtype=float)
            for x, y in pos:
                path.addRect(QRectF(x - 0.5, y - 0.5, 1.0, 1.0))
            xs, ys = np.unique(pos[:, 0]), np.unique(pos[:, 1])
            step = float(np.min(np.diff(xs))) if len(xs) > 1 else size
            k = max(1, int(round(size / max(step, 1e-6))))
            keep_x, keep_y = set(xs[::k].tolist()), set(ys[::k].tolist())
            h = size / 2.0
            for x, y in pos:
                if x in keep_x and y in keep_y:
                    path.addRect(QRectF(x - h, y - h, size, size))
        pen = QPen(self.palette().color(QPalette.ColorRole.Highlight), 0)
        pen.setCosmetic(True)
        self._grid.setPen(pen)
        self._grid.setPath(path)

    def fit(self) -> None:
        if not self._pixmap.pixmap().isNull():
            self.fitInView(self._pixmap, Qt.AspectRatioMode.KeepAspectRatio)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self.fit()


def _heat_image(values: np.ndarray) -> QImage:
    """Signed values (H, W) as an RGBA image: red (for), blue (against), opacity (|v| / max |v|)^2; NaN transparent."""
    v = np.asarray(values, dtype=np.float64)
    top = float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 0.0
    u = np.nan_to_num(v / top if top > 0 else v * 0.0)
    rgba = np.zeros(v.shape + (4,), np.uint8)
    pos, neg = u > 0, u < 0
    rgba[pos] = [220, 30, 30, 0]
    rgba[neg] = [30, 80, 230, 0]
    rgba[..., 3] = (np.clip(np.abs(u), 0, 1) ** 2 * 230).astype(np.uint8)  # squared: the strongest stand out
    rgba[~np.isfinite(v)] = 0
    h, w = v.shape
    return QImage(np.ascontiguousarray(rgba).data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


class DatasetPanel(QWidget):
    """The dataset browser; talks to the main window through ``open_requested`` and ``split_edited``."""

    open_requested = Signal(str)         # a folder to open as dataset (dialog or drop)
    split_edited = Signal(str, object)   # config key, value

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("panel:dataset")
        self.ds = None
        self.split = None
        self.config = None
        self.split_form = None
        self._view_index: Optional[int] = None
        self._view_image: Optional[np.ndarray] = None
        self._pipeline_factory = None  # () -> a callable building a Pipeline in a worker (the main window's)
        self.setAcceptDrops(True)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._build_classes())
        split.addWidget(self._build_thumbnails())
        split.addWidget(self._build_image_view())
        self.inspector = PatchInspector()
        self.inspector.inspected.connect(self._draw_inspection)
        self.inspector.overlay_changed.connect(self._draw_inspection)
        self.inspector.hide()  # shown at the first click on a patch
        split.addWidget(self.inspector)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 4)
        split.setStretchFactor(2, 3)
        split.setStretchFactor(3, 3)
        split.setSizes([300, 520, 420, 0])
        self.splitter = split
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_header())
        layout.addWidget(split, 1)

    def _build_header(self) -> QHBoxLayout:
        self.title = QLabel("No dataset")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        f = self.title.font()
        f.setBold(True)
        self.title.setFont(f)
        self.open_button = QPushButton("Open dataset…")
        self.open_button.setToolTip("Open a class-folder dataset or a PASCAL VOC devkit (or drop a folder here)")
        self.open_button.clicked.connect(self.choose_folder)
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.open_button)
        return head

    def _build_classes(self) -> QWidget:
        """Left: the class table (images / train / test per class) above the split options."""
        self.classes = QTableWidget(0, 4)
        self.classes.setHorizontalHeaderLabels(["Class", "Images", "Train", "Test"])
        self.classes.verticalHeader().setVisible(False)
        self.classes.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.classes.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.classes.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        hh = self.classes.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in (1, 2, 3):
            hh.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.classes.itemSelectionChanged.connect(self._apply_filter)
        self.split_box = QGroupBox("Train / test split (pipeline config)")
        self.split_layout = QVBoxLayout(self.split_box)
        self.split_info = QLabel("")
        self.split_info.setWordWrap(True)
        self.split_layout.addWidget(self.split_info)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.classes, 1)
        ll.addWidget(self.split_box)
        return left

    def _build_thumbnails(self) -> QWidget:
        """Middle: the thumbnail grid with the train / test filter."""
        self.model = ThumbnailModel(self)
        self.grid = QListView()
        self.grid.setObjectName("thumbnails")
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        self.grid.setIconSize(QSize(THUMB, THUMB))
        self.grid.setGridSize(QSize(THUMB + 44, THUMB + 44))
        self.grid.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setUniformItemSizes(True)
        self.grid.setLayoutMode(QListView.LayoutMode.Batched)
        self.grid.setBatchSize(200)
        self.grid.setWordWrap(True)
        self.grid.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.grid.setModel(self.model)
        self.grid.setItemDelegate(ThumbnailDelegate(self.grid))
        self.grid.selectionModel().currentChanged.connect(self._on_current)
        self.split_filter = QComboBox()
        self.split_filter.addItems(["All images", "Train", "Test"])
        self.split_filter.currentIndexChanged.connect(self._apply_filter)
        self.count_label = QLabel("")
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show:"))
        bar.addWidget(self.split_filter)
        bar.addStretch(1)
        bar.addWidget(self.count_label)
        mid = QWidget()
        ml = QVBoxLayout(mid)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.addLayout(bar)
        ml.addWidget(self.grid, 1)
        return mid

    def _build_image_view(self) -> QWidget:
        """Right: the selected image at descriptor resolution, with the patch-grid controls."""
        self.view = ImageView()
        self.view.patch_clicked.connect(self.inspect_at)
        self.grid_toggle = QCheckBox("Patch grid")
        self.grid_toggle.setToolTip("Overlay the dense descriptor patches of one scale (Sec. 3.1: 24x24 "
                                    "patches every 4 px at 5 scales by default)")
        self.grid_toggle.toggled.connect(self._update_grid)
        self.scale_spin = QSpinBox()
        self.scale_spin.setPrefix("scale ")
        self.scale_spin.setRange(1, 1)
        self.scale_spin.setToolTip("Which scale of the dense grid to draw (1 = the base patch size)")
        self.scale_spin.valueChanged.connect(self._update_grid)
        self.view_info = QLabel("Click a thumbnail to view it.")
        self.view_info.setWordWrap(True)
        self.view_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        tools = QHBoxLayout()
        tools.addWidget(self.grid_toggle)
        tools.addWidget(self.scale_spin)
        tools.addStretch(1)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addLayout(tools)
        rl.addWidget(self.view, 1)
        rl.addWidget(self.view_info)
        return right

    # ---------------------------------------------------------------- opening a folder
    def choose_folder(self) -> None:
        """Ask for a dataset folder (class folders or a VOC devkit); ``open_requested`` if one is chosen."""
        start = str(self.config.get("dataset.root") or Path.home())
        path = QFileDialog.getExistingDirectory(self, "Open a class-folder dataset or a VOC devkit", start)
        if path:
            self.open_requested.emit(path)

    # ---------------------------------------------------------------- drag and drop
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if urls and Path(urls[0].toLocalFile()).is_dir():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        urls = event.mimeData().urls()
        if urls:
            self.open_requested.emit(urls[0].toLocalFile())
            event.acceptProposedAction()

    # ---------------------------------------------------------------- binding
    def set_split_form(self, form) -> None:
        """The config form for the split options (built by the main window from the schema)."""
        if self.split_form is not None:
            self.split_layout.removeWidget(self.split_form)
            self.split_form.deleteLater()
        self.split_form = form
        if form is not None:
            self.split_layout.insertWidget(0, form)
            form.edited.connect(self.split_edited)

    def set_config(self, config) -> None:
        self.config = config
        if self.split_form is not None:
            self.split_form.set_values(config)
        self.scale_spin.setRange(1, config.get("descriptors.scales"))
        if self._view_index is not None:
            self._show_image(self._view_index)

    def thumbnails_idle(self) -> bool:
        """True when no thumbnail is waiting to be loaded."""
        return self.model.queue_idle()

    def stop_loading(self) -> None:
        """Drop the thumbnails still waiting and stop an inspection (e.g. the window closes)."""
        self.model.stop_loading()
        self.inspector.task.cancel()
        self.inspector.task.wait(10.0)

    # ---------------------------------------------------------------- patch inspector
    def set_pipeline_factory(self, factory) -> None:
        """``factory()`` returns a callable that builds, in a worker thread, the Pipeline of the current config."""
        self._pipeline_factory = factory

    def inspector_idle(self) -> bool:
        return self.inspector.idle()

    def select_by_id(self, image_id: str) -> bool:
        """Show the image whose id is ``image_id`` ("class/file"); False if the dataset has none."""
        if self.ds is None or image_id not in list(self.ds.ids):
            return False
        self.select_image(list(self.ds.ids).index(image_id))
        return True

    def inspect_at(self, x: float, y: float) -> bool:
        """Inspect the patch of the shown scale nearest to (x, y) of the viewed image (needs the patch grid on)."""
        if self._view_index is None or self._view_image is None or self._pipeline_factory is None:
            return False
        if not self.grid_toggle.isChecked():
            self.inspector.show()
            self.inspector.header.setText("Turn on Patch grid to inspect the patches of the image.")
            return False
        if not self.inspector.isVisible():
            self.inspector.show()
            sizes = self.splitter.sizes()
            total = sum(sizes)
            self.splitter.setSizes([int(total * f) for f in (0.13, 0.19, 0.32, 0.36)])
        self.inspector.inspect(self._pipeline_factory(), self._view_index, x, y, self.scale_spin.value() - 1)
        return True

    def _draw_inspection(self, *_: Any) -> None:
        """The inspection's overlays on the image: the word's patches, or the class evidence heat map."""
        ins = self.inspector.inspection
        if ins is None or ins.image_index != self._view_index:
            self.view.clear_inspection()
            return
        mode = self.inspector.overlay_mode()
        marks = None
        if mode == "same visual word" and ins.same_word is not None:
            marks = ins.positions[ins.same_word & np.isclose(ins.sizes, ins.side, rtol=1e-4)]
        heat = None
        if mode == "class evidence" and ins.evidence is not None:
            heat = _heat_image(ins.evidence.heat_map)
        self.view.set_inspection((ins.position[0], ins.position[1], ins.side), marks, heat)

    def set_dataset(self, ds, splits=None) -> None:
        same = self.ds is not None and ds is not None and list(ds.paths) == list(self.ds.paths)
        self.ds = ds
        self.split = splits[0] if splits else None  # the panel shows the first split
        if not same:
            self.model.set_dataset(ds)
            self._view_index = None
            self.view.set_image(None)
            self.view_info.setText("Click a thumbnail to view it.")
        if ds is None:  # nothing open: no count of an earlier dataset stays on screen
            self.title.setText("No dataset")
            self.classes.setRowCount(0)
            self.count_label.setText("")
            self.split_info.setText("No dataset is open.")
            self.model.set_split_tags({})
            return
        kind = "PASCAL VOC devkit" if ds.kind == "voc" else "class folders"
        ml = ", multi-label" if ds.multilabel else ""
        self.title.setText(f"{ds.root}  —  {len(ds.paths)} images, {len(ds.class_names)} classes ({kind}{ml})")
        self._fill_classes(ds)
        self._apply_filter()
        if self._view_index is None and self.model.rowCount():
            self.grid.selectionModel().setCurrentIndex(self.model.index(0),
                                                       QItemSelectionModel.SelectionFlag.ClearAndSelect)

    def _fill_classes(self, ds) -> None:
        members = class_members(ds)
        tags: Dict[int, str] = {}
        train = set()
        test = set()
        if self.split is not None:
            train = set(int(i) for i in np.asarray(self.split.train))
            test = set(int(i) for i in np.asarray(self.split.test))
            tags = {i: "train" for i in train}
            tags.update({i: "test" for i in test})
        self.model.set_split_tags(tags)
        sel = self.classes.currentRow()
        self.classes.blockSignals(True)
        self.classes.setRowCount(len(ds.class_names) + 1)
        rows = [("All classes", np.arange(len(ds.paths)))] + list(zip(ds.class_names, members))
        for r, (name, idx) in enumerate(rows):
            n_tr = sum(1 for i in idx if int(i) in train)
            n_te = sum(1 for i in idx if int(i) in test)
            vals = [name, len(idx), n_tr, n_te]
            for c, v in enumerate(vals):
                item = QTableWidgetItem(str(v))
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if r == 0:
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                self.classes.setItem(r, c, item)
        self.classes.selectRow(sel if 0 <= sel < self.classes.rowCount() else 0)
        self.classes.blockSignals(False)
        if self.split is not None:
            self.split_info.setText(f"{len(train)} training and {len(test)} test images"
                                    f" ({len(ds.paths) - len(train | test)} unused).")
        else:
            self.split_info.setText("No split yet.")

    def _apply_filter(self) -> None:
        ds = self.ds
        if ds is None:
            return
        row = self.classes.currentRow()
        idx = np.arange(len(ds.paths)) if row <= 0 else class_members(ds)[row - 1]
        mode = self.split_filter.currentIndex()
        if mode and self.split is not None:
            keep = np.asarray(self.split.train if mode == 1 else self.split.test)
            idx = idx[np.isin(idx, keep)]
        self.model.set_filter(idx)
        self.count_label.setText(f"{len(idx)} images")
        row = self.model.row_of(self._view_index) if self._view_index is not None else None
        if row is not None:  # keep the viewed image selected (without reloading it)
            sm = self.grid.selectionModel()
            sm.blockSignals(True)
            sm.setCurrentIndex(self.model.index(row), QItemSelectionModel.SelectionFlag.ClearAndSelect)
            sm.blockSignals(False)
            self.grid.viewport().update()

    # ---------------------------------------------------------------- large view
    def _on_current(self, current: QModelIndex, _prev=None) -> None:
        if current.isValid():
            self._show_image(self.model.image_index(current.row()))

    def select_image(self, i: int) -> None:
        """Show image ``i`` of the dataset (also selects its thumbnail if it is visible)."""
        row = self.model.row_of(i)
        if row is not None:
            self.grid.selectionModel().setCurrentIndex(self.model.index(row),
                                                       QItemSelectionModel.SelectionFlag.ClearAndSelect)
        else:
            self._show_image(int(i))

    def _show_image(self, i: int) -> None:
        from fvstudio.data.images import load_image

        ds = self.ds
        self._view_index = i
        max_pixels = self.config.get("dataset.max_pixels")
        try:
            rgb = load_image(ds.paths[i], max_pixels=max_pixels)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is shown, not raised
            self._view_image = None
            self.view.set_image(None)
            self.view_info.setText(f"<b>{ds.ids[i]}</b><br>cannot be read: {exc}")
            return
        self._view_image = rgb
        self.view.set_image(rgb_to_qimage(rgb))
        labels = ", ".join(dataset_labels(ds, i)) or "no label"
        where = "—"
        if self.split is not None:
            if i in set(np.asarray(self.split.train).tolist()):
                where = "train"
            elif i in set(np.asarray(self.split.test).tolist()):
                where = "test"
        h, w = rgb.shape[:2]
        self.view_info.setText(f"<b>{ds.ids[i]}</b> — {labels} — split: {where}<br>"
                               f"shown at descriptor resolution {w}×{h} px (max_pixels = {max_pixels:,})")
        self._update_grid()

    def _update_grid(self, *_: Any) -> None:
        """Draw the patches of the chosen scale of the config's dense grid on the viewed image."""
        base = self.view_info.text().split("<br><i>")[0]
        if not self.grid_toggle.isChecked() or self._view_image is None:
            self.view.set_patches(None, 0)
            self.view_info.setText(base)
            return
        grid = patch_grid(self.config, self._view_image.shape[:2])
        if len(grid.sizes) == 0:
            self.view.set_patches(None, 0)
            self.view_info.setText(base + "<br><i>no patch fits in this image</i>")
            return
        positions, side = grid.at_scale(self.scale_spin.value() - 1)
        self.view.set_patches(positions, side)
        self.view_info.setText(base + f"<br><i>{len(positions):,} patches of {side:.0f} px at this scale; "
                                      f"{len(grid.sizes):,} descriptors over {len(grid.scale_sides)} scales</i>")

"""The main window's side of the Compression and Sweeps panels and of the Results panel's test images
(a mixin of :class:`~fvstudio.gui.main_window.MainWindow`, kept apart so the window module stays small).

- Sweeps: :meth:`open_sweep_dialog` (Pipeline panel -> Sweep…) and :meth:`start_sweep` run
  :func:`~fvstudio.gui.sweep_panel.sweep_job` in the window's shared ``runner`` (one job at a time); the
  window routes that task's progress and outcome here and to the Sweeps panel.
- The compression panel's accuracy-against-bytes figure is fed the history's runs and every finished sweep
  variant of the current dataset (:meth:`_update_bytes_figure`).
- Images clicked in the Compression or Results panel open in the Dataset panel (:meth:`open_in_dataset`);
  :meth:`_resolve_image` maps a run's test image id to the open dataset's index and file.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict

from .sweep_dialog import SweepDialog
from .sweep_panel import SWEEP_LABEL, sweep_job


class SweepsAndCompression:
    """Methods of the main window for sweeps, the compression panel and opening images (see the module doc)."""

    def open_sweep_dialog(self) -> SweepDialog:
        """The sweep dialog (non-blocking); accepting it starts the sweep."""
        out = self.workspace / "sweeps" / time.strftime("%Y%m%d-%H%M%S")
        dialog = SweepDialog(self.config, out, self)
        dialog.accepted.connect(lambda: self.start_sweep(dialog.plan, dialog.out))
        dialog.open()
        self.sweep_dialog = dialog
        return dialog

    def start_sweep(self, plan, out) -> bool:
        """Run ``plan`` (a SweepPlan) into folder ``out`` through the shared runner; the Sweeps panel draws it."""
        if self.runner.is_busy():
            self.status_message.setText(f"{self.runner.current} is still running")
            return False
        if not self.has_dataset():
            self.status_message.setText(f"No dataset to sweep on: {self.pipeline_error or 'open one first'}")
            return False
        self.diagnostics_panel.cancel()
        self.compression_panel.cancel()
        self.sweep_panel.begin(plan, out, self.workspace)
        self.show_panel("sweeps")
        self.status_message.setText(f"Sweep of {len(plan.variants)} variants…")
        self.runner.start(SWEEP_LABEL, sweep_job, self.config.copy(), plan, Path(out), self.workspace)
        return True

    def _on_sweep_variant(self, label: str, summary: Dict[str, Any]) -> None:
        self.sweep_runs.append((f"sweep {label}", summary, summary.get("config") or {}))
        self._update_bytes_figure()

    def _on_sweep_done(self, result) -> None:
        self.sweep_panel.finish(result)
        self._renew_pipeline()
        self.refresh()
        self.status_message.setText(f"Sweep done: {len(result.rows)} variants in {self.sweep_panel.out}")
        self.start_diagnostics()

    def _update_bytes_figure(self) -> None:
        """Accuracy against bytes per image of the history's runs and the sweeps' variants (this dataset)."""
        entries = [(r.label, r.summary, r.config) for r in self.runs] + list(self.sweep_runs)
        self.compression_panel.set_runs(entries, self.config.get("dataset.root") or None)

    def _resolve_image(self, image_id: str):
        """(dataset index, path) of ``image_id`` in the open dataset, or None."""
        if not self.has_dataset():
            return None
        ds = self.pipeline.dataset
        index = getattr(self, "_id_index", None)
        if index is None or index[0] is not ds:
            index = (ds, {str(i): k for k, i in enumerate(ds.ids)})
            self._id_index = index
        k = index[1].get(str(image_id))
        return None if k is None else (k, str(ds.paths[k]))

    def open_in_dataset(self, index: int) -> None:
        """Show dataset image ``index`` in the Dataset panel."""
        if self.has_dataset() and 0 <= index < len(self.pipeline.dataset.paths):
            self.show_panel("dataset")
            self.dataset_panel.select_image(index)


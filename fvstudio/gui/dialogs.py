"""Folder dialogs of the explorer's exports and "Save session as…": where they start, and a folder chooser
that accepts a folder which does not exist yet.

- :func:`start_folder` picks the folder a dialog opens in: the last folder the user exported to (if it still
  exists), else the dataset's parent folder, else the home folder. A candidate inside a hidden folder (a
  path part starting with ``.``, such as the workspace under ``~/.cache``) is passed over, so a dialog never
  opens where the user cannot find the files again.
- :class:`FolderDialog` is Qt's own (not the desktop's native) directory dialog whose accept creates the
  typed folder first: Qt's Directory mode refuses a name that does not exist ("Directory not found").
- :func:`choose_folder` runs one modally and returns the chosen folder (or None).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtWidgets import QFileDialog, QLineEdit, QMessageBox

__all__ = ["start_folder", "FolderDialog", "choose_folder"]


def _visible_existing(path) -> Optional[Path]:
    if not path:
        return None
    p = Path(str(path)).expanduser()
    if not p.is_absolute():
        p = p.resolve()
    if not p.is_dir() or any(part.startswith(".") and part not in (".", "..") for part in p.parts):
        return None
    return p


def start_folder(last_export=None, dataset_root=None, home=None) -> Path:
    """The folder an export dialog opens in: ``last_export`` if it is a visible existing folder, else the
    parent of ``dataset_root`` (same rule), else ``home`` (default: the user's home folder)."""
    for cand in (last_export, Path(str(dataset_root)).expanduser().parent if dataset_root else None):
        found = _visible_existing(cand)
        if found is not None:
            return found
    return Path(home) if home is not None else Path.home()


class FolderDialog(QFileDialog):
    """A directory chooser that accepts a new folder name: it creates the folder, then accepts it."""

    def __init__(self, parent, title: str, start) -> None:
        super().__init__(parent, title, str(start))
        self.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        self.setOption(QFileDialog.Option.ShowDirsOnly, True)
        self.setFileMode(QFileDialog.FileMode.Directory)
        self.setAcceptMode(QFileDialog.AcceptMode.AcceptOpen)
        self.setLabelText(QFileDialog.DialogLabel.Accept, "Choose")
        self.setLabelText(QFileDialog.DialogLabel.FileName, "Folder:")
        self.created: Optional[Path] = None

    def typed_path(self) -> Optional[Path]:
        """The folder named in the name field (relative to the folder shown), or None if it is empty."""
        edit = self.findChild(QLineEdit, "fileNameEdit")
        text = edit.text().strip().strip('"') if edit is not None else ""
        if not text:
            return None
        p = Path(text).expanduser()
        return p if p.is_absolute() else Path(self.directory().absolutePath()) / p

    def accept(self) -> None:  # noqa: D401 - Qt override
        target = self.typed_path()
        if target is not None and not target.exists():
            try:
                target.mkdir(parents=True)
            except OSError as exc:
                QMessageBox.warning(self, "Cannot create the folder", f"Cannot create {target}: {exc}")
                return
            self.created = target
        super().accept()


def choose_folder(parent, title: str, start) -> Optional[Path]:
    """Ask for a folder (an existing one, or a new name that is then created); None if cancelled."""
    dialog = FolderDialog(parent, title, start)
    if dialog.exec() != QFileDialog.DialogCode.Accepted or not dialog.selectedFiles():
        return None
    return Path(dialog.selectedFiles()[0])

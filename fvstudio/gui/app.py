"""Starting the explorer: ``run_gui(workspace=None, screenshot=None, panel=None, select=None, patch=None)``.

``fvstudio`` (no arguments) and ``fvstudio gui [--workspace DIR] [--screenshot PATH] [--panel NAME]
[--select CLASS/FILE] [--patch X,Y]`` call this. ``select`` shows that image in the Dataset panel and
``patch`` (pixels of the image at descriptor resolution) turns the patch grid on and inspects the patch
nearest to that point (the patch inspector), e.g. for a screenshot of that state. Which workspace opens:

1. ``workspace`` if given;
2. else the last workspace (``QSettings`` key ``last_workspace``) if that folder still exists;
3. else the pipeline's default workspace for the shipped sample data (``sample_data/textures`` beside
   the package), so a new user sees real images at once.

A workspace with a saved session restores its config and run history; one without starts from the
pipeline's defaults on the sample data. With ``screenshot`` the window opens offscreen (unless a platform
was chosen), waits until it is drawn and its visible thumbnails are loaded, saves a PNG and returns 0.

Before Qt starts on an X display (``QT_QPA_PLATFORM`` unset or ``xcb``, ``DISPLAY`` set), the libraries
Qt's xcb plugin needs beyond Xlib (:data:`XCB_LIBRARIES`) are loaded once with ``ctypes``: if one is
missing, Qt would abort the process (signal 6); instead one line names them with the ``apt`` command that
installs them, and the exit code is 1 (:func:`missing_xcb_libraries`, :func:`xcb_problem`).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

ORG = "fvstudio"
APP = "fvstudio"

#: Shared libraries Qt's xcb platform plugin loads that a bare Debian/Ubuntu lacks -> their apt packages.
XCB_LIBRARIES = {"libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4",
                 "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxcb-image.so.0": "libxcb-image0",
                 "libxcb-render-util.so.0": "libxcb-render-util0", "libxcb-shape.so.0": "libxcb-shape0",
                 "libxcb-xkb.so.1": "libxcb-xkb1", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0"}


def missing_xcb_libraries(load: Optional[Callable[[str], object]] = None) -> List[str]:
    """The :data:`XCB_LIBRARIES` that ``load(soname)`` (default ``ctypes.CDLL``: the dynamic loader's own
    search, as Qt's) cannot load."""
    if load is None:
        import ctypes

        load = ctypes.CDLL
    missing = []
    for soname in XCB_LIBRARIES:
        try:
            load(soname)
        except OSError:
            missing.append(soname)
    return missing


def xcb_problem(environ=None, platform: Optional[str] = None,
                load: Optional[Callable[[str], object]] = None) -> Optional[str]:
    """One line naming the missing xcb libraries and the apt command, when Qt is about to use xcb on an X
    display (Linux, ``QT_QPA_PLATFORM`` unset or ``xcb``, ``DISPLAY`` set; unset platform with
    ``WAYLAND_DISPLAY`` set means Qt picks Wayland) and one is missing; None otherwise."""
    env = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux") or not env.get("DISPLAY"):
        return None
    qpa = (env.get("QT_QPA_PLATFORM") or "").split(":")[0].strip()
    if qpa not in ("", "xcb") or (qpa == "" and env.get("WAYLAND_DISPLAY")):
        return None
    missing = missing_xcb_libraries(load)
    if not missing:
        return None
    packages = " ".join(XCB_LIBRARIES[m] for m in missing)
    return (f"fvstudio: cannot open the window on X display {env.get('DISPLAY')}: Qt's xcb platform plugin needs "
            f"{', '.join(missing)}, not installed; install with: sudo apt install {packages}")


def sample_dataset_root() -> Optional[Path]:
    """The shipped sample dataset (class folders), or None if the checkout has none."""
    import fvstudio

    base = Path(fvstudio.__file__).resolve().parents[1] / "sample_data"
    for cand in (base / "textures", base):
        if cand.is_dir() and any(p.is_dir() for p in cand.iterdir()):
            return cand
    return None


def default_config():
    from fvstudio.pipeline import PipelineConfig

    cfg = PipelineConfig()
    root = sample_dataset_root()
    if root is not None:
        cfg.set("dataset.root", str(root))
    return cfg


def _pick_workspace(workspace, settings) -> Path:
    if workspace:
        return Path(workspace).expanduser()
    last = settings.value("last_workspace")
    if last and Path(str(last)).is_dir():
        return Path(str(last))
    from fvstudio.pipeline.runner import default_workspace

    return default_workspace(default_config())


def make_window(workspace=None, settings=None, persist: bool = True):
    """Build the main window (a QApplication must exist) on the chosen workspace."""
    from PySide6.QtCore import QSettings

    from . import session
    from .main_window import MainWindow
    from .plots import apply_theme

    apply_theme()
    settings = settings or QSettings(ORG, APP)
    ws = _pick_workspace(workspace, settings)
    ws.mkdir(parents=True, exist_ok=True)
    config = None
    try:
        config, _, _ = session.load_session(ws)
    except Exception:  # noqa: BLE001 - a broken session falls back to defaults (and is reported on load)
        config = None
    window = MainWindow(ws, config or default_config(), settings, persist=persist)
    if (session.session_dir(ws) / "session.json").exists():
        window.load_workspace(ws)
    else:
        panel = settings.value("panel")
        if panel:
            window.show_panel(str(panel))
    window.setWindowTitle(f"fvstudio — {ws}")
    return window


def wait_until_drawn(app, window, timeout: float = 90.0) -> None:
    """Process events until the window is exposed, thumbnails in view are loaded and tasks are idle (at most
    ``timeout`` s: a patch inspection scans up to 120 images; the diagnostics refresh of a K = 256 workspace takes ~3.5 s alone, and its niced worker
    thread needed more than 8 s on a busy two-core machine)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        app.processEvents()
        busy = (not window.is_idle() or not window.dataset_panel.thumbnails_idle()
                or not window.dataset_panel.inspector_idle())
        if not busy and time.monotonic() - t0 > 0.8:
            break
        time.sleep(0.02)
    for _ in range(5):
        app.processEvents()
        time.sleep(0.02)


def parse_patch(text: str):
    """"X,Y" -> (x, y) floats; ValueError otherwise."""
    parts = str(text).split(",")
    if len(parts) != 2:
        raise ValueError(f"--patch must be X,Y (pixels), got {text!r}")
    return float(parts[0]), float(parts[1])


def select_and_inspect(window, select: Optional[str], patch) -> Optional[str]:
    """Show image ``select`` in the Dataset panel and inspect the patch at ``patch`` (x, y); an error text or None."""
    dp = window.dataset_panel
    if select:
        if not dp.select_by_id(select):
            return f"--select: no image {select!r} in the dataset (ids are CLASS/FILE, e.g. {dp.ds.ids[0]!r})" \
                if dp.ds is not None and len(dp.ds.ids) else f"--select: no dataset is open"
    if patch is not None:
        dp.grid_toggle.setChecked(True)
        if not dp.inspect_at(*patch):
            return "--patch: no image is shown to inspect"
    return None


def run_gui(workspace=None, screenshot=None, panel: Optional[str] = None, select: Optional[str] = None,
            patch=None) -> int:
    """Open the explorer; returns the exit code (0). With ``screenshot``: save a PNG and exit."""
    if screenshot and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    if sys.platform.startswith("linux") and not screenshot and not any(
            os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        print("fvstudio: no display to open the explorer on (DISPLAY / WAYLAND_DISPLAY are not set).\n"
              "  Render it offscreen instead:  fvstudio gui --screenshot explorer.png\n"
              "  Or run headless:              fvstudio run CONFIG.toml --out DIR", file=sys.stderr)
        return 1
    problem = xcb_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    from PySide6.QtWidgets import QApplication

    from .main_window import PANELS, app_icon

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORG)
    app.setApplicationName(APP)
    app.setApplicationDisplayName("fvstudio")
    app.setWindowIcon(app_icon())
    if panel is not None and panel not in PANELS:
        print(f"fvstudio gui: --panel must be one of {', '.join(PANELS)}, got {panel!r}", file=sys.stderr)
        return 2
    if patch is not None and not isinstance(patch, tuple):
        try:
            patch = parse_patch(patch)
        except ValueError as exc:
            print(f"fvstudio gui: {exc}", file=sys.stderr)
            return 2
    window = make_window(workspace, persist=not screenshot)
    if panel:
        window.show_panel(panel)
    if select or patch is not None:
        if not panel:
            window.show_panel("dataset")
        window.resize(1400, 880)
        window.show()
        app.processEvents()
        problem = select_and_inspect(window, select, patch)
        if problem:
            print(f"fvstudio gui: {problem}", file=sys.stderr)
            window.close()
            return 2
    if screenshot:
        window.resize(1400, 880)
        window.show()
        wait_until_drawn(app, window)
        path = Path(screenshot).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = window.grab().save(str(path))
        window.close()
        app.processEvents()
        if not ok:
            print(f"fvstudio gui: could not write {path}", file=sys.stderr)
            return 1
        print(f"screenshot saved to {path}")
        return 0
    window.show()
    return int(app.exec())


def main() -> int:  # pragma: no cover - convenience for `python -m fvstudio.gui.app`
    import argparse

    ap = argparse.ArgumentParser(prog="fvstudio gui")
    ap.add_argument("--workspace")
    ap.add_argument("--screenshot")
    ap.add_argument("--panel")
    ap.add_argument("--select")
    ap.add_argument("--patch")
    a = ap.parse_args()
    return run_gui(a.workspace, a.screenshot, a.panel, a.select, a.patch)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The explorer (PySide6 + pyqtgraph): a view over ``fvstudio.pipeline`` that holds no math.

``run_gui(workspace=None, screenshot=None, panel=None)`` opens it (see :mod:`fvstudio.gui.app`);
``main_window`` holds the state, ``workers`` the one worker mechanism (a task slot per owner), ``runs`` the
pipeline runs' job and step states (no Qt), one module per panel, ``plots`` the figure helpers, ``session``
the saved session format (no Qt), ``export`` the exports and ``status_bar`` the progress display.
"""


def run_gui(workspace=None, screenshot=None, panel=None) -> int:
    from .app import run_gui as _run

    return _run(workspace=workspace, screenshot=screenshot, panel=panel)


__all__ = ["run_gui"]

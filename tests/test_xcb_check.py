"""Before Qt starts on an X display, missing xcb libraries are named with the apt command (exit 1), instead
of Qt aborting the process. The loader is faked, so the test does not depend on this machine's libraries."""
from __future__ import annotations

import pytest

from fvstudio.gui import app


def _loader(missing):
    tried = []

    def load(soname):
        tried.append(soname)
        if soname in missing:
            raise OSError(f"{soname}: cannot open shared object file: No such file or directory")
        return object()

    return load, tried


X11 = {"DISPLAY": ":0"}


def test_missing_xcb_libraries_are_named_with_the_apt_command():
    load, tried = _loader({"libxcb-cursor.so.0", "libxcb-keysyms.so.1"})
    assert app.missing_xcb_libraries(load) == ["libxcb-cursor.so.0", "libxcb-keysyms.so.1"]
    assert set(tried) >= {"libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
    line = app.xcb_problem(X11, "linux", load)
    assert "\n" not in line and "libxcb-cursor.so.0, libxcb-keysyms.so.1" in line
    assert line.endswith("sudo apt install libxcb-cursor0 libxcb-keysyms1")


@pytest.mark.parametrize("env, platform", [
    ({}, "linux"),                                              # no X display: nothing to say here
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux"),  # Qt will not load xcb
    ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, "linux"),   # Qt picks Wayland
    (X11, "darwin"),
])
def test_no_check_where_qt_will_not_use_xcb(env, platform):
    load, tried = _loader(set(app.XCB_LIBRARIES))
    assert app.xcb_problem(env, platform, load) is None and tried == []


def test_nothing_missing_means_no_message():
    load, _ = _loader(set())
    assert app.xcb_problem({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, "linux", load) is None


def test_run_gui_exits_1_with_the_line_instead_of_aborting(monkeypatch, capsys):
    load, _ = _loader({"libxcb-icccm.so.4"})
    real = app.missing_xcb_libraries
    monkeypatch.setattr(app, "missing_xcb_libraries", lambda _default=None: real(load))
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(app.sys, "platform", "linux")
    assert app.run_gui() == 1
    err = capsys.readouterr().err
    assert "libxcb-icccm.so.4" in err and "sudo apt install libxcb-icccm4" in err

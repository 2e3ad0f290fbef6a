"""The studio, round 2 (issue 18): it starts on a fresh machine (Qt preflight), the wheel scrolls
panels instead of changing values, seed controls apply only to queued runs, templates open as
copies, and File > Open reads the workflow embedded in an output image or video."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QComboBox, QScrollArea

from app import qt_preflight
from tests.conftest_qt import ScriptedDialogs, canvas_registry, make_window  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

# What ldd printed for PySide6 6.11's libqxcb.so on a fresh Debian 12 (trimmed)
FRESH_DEBIAN_LDD = """\
\tlinux-vdso.so.1 (0x00007ffd2b1e5000)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/plugins/platforms/../../lib/libQt6XcbQpa.so.6 (0x00007f9b)
\tlibGL.so.1 => /lib/x86_64-linux-gnu/libGL.so.1 (0x00007f9913779000)
\tlibxkbcommon-x11.so.0 => not found
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-util.so.1 => /lib/x86_64-linux-gnu/libxcb-util.so.1 (0x00007f9914312000)
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-render-util.so.0 => not found
\tlibX11-xcb.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibEGL.so.1 => not found
\tlibdbus-1.so.3 => not found
\tlibglib-2.0.so.0 => not found
"""


# ---- 1. the Qt preflight -------------------------------------------------------------------------

def test_preflight_parses_ldd_and_maps_sonames_to_debian_packages():
    missing = qt_preflight.missing_libraries(FRESH_DEBIAN_LDD)
    assert missing == ["libxkbcommon-x11.so.0", "libxcb-cursor.so.0", "libxcb-icccm.so.4",
                       "libxcb-keysyms.so.1", "libxcb-render-util.so.0", "libX11-xcb.so.1",
                       "libEGL.so.1", "libdbus-1.so.3", "libglib-2.0.so.0"]  # each once, in order
    assert [qt_preflight.debian_package(s) for s in missing] == [
        "libxkbcommon-x11-0", "libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1",
        "libxcb-render-util0", "libx11-xcb1", "libegl1", "libdbus-1-3", "libglib2.0-0"]
    assert qt_preflight.missing_libraries("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n") == []


def test_preflight_names_the_one_sudo_command_when_not_root(monkeypatch):
    monkeypatch.setattr(qt_preflight.os, "geteuid", lambda: 1000)
    result = qt_preflight.check(FRESH_DEBIAN_LDD, manager="apt-get")
    assert not result.ok
    assert "sudo apt-get install -y libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4" in result.message
    assert "\n" not in result.message and "--headless" in result.message
    fedora = qt_preflight.check("\tlibxcb-icccm.so.4 => not found\n", manager="dnf")
    assert "sudo dnf install -y 'libxcb-icccm.so.4()(64bit)'" in fedora.message
    assert qt_preflight.check("\tlibc.so.6 => /lib/libc.so.6\n", manager="apt-get").ok


def test_preflight_stops_the_studio_with_one_line_or_installs_as_root(monkeypatch):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(qt_preflight.sys, "platform", "linux")
    state = {"installed": False, "ran": []}
    real_check = qt_preflight.Preflight

    def fake_check(ldd_output=None, manager="auto"):
        if state["installed"]:
            return real_check(True)
        return real_check(False, ["libxcb-icccm.so.4"], ["libxcb-icccm4"],
                          ["apt-get", "install", "-y", "libxcb-icccm4"], "reelgraph: install libxcb-icccm4")

    monkeypatch.setattr(qt_preflight, "check", fake_check)
    monkeypatch.setattr(qt_preflight.shutil, "which", lambda tool: f"/usr/bin/{tool}")

    def fake_install(command):
        state["ran"].append(command)
        state["installed"] = True
        return True

    monkeypatch.setattr(qt_preflight, "_run_install", fake_install)
    out = io.StringIO()
    monkeypatch.setattr(qt_preflight.os, "geteuid", lambda: 1000)
    assert qt_preflight.ensure(out=out) == 3 and state["ran"] == []  # not root: only says so
    assert out.getvalue().strip() == "reelgraph: install libxcb-icccm4"
    monkeypatch.setattr(qt_preflight.os, "geteuid", lambda: 0)
    assert qt_preflight.ensure(out=io.StringIO()) == 0  # root: installed, then fine
    assert state["ran"] == [["apt-get", "install", "-y", "libxcb-icccm4"]]
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = io.StringIO()
    assert qt_preflight.ensure(out=out) == 3 and "xvfb-run" in out.getvalue()


def test_preflight_skips_platforms_without_x_and_the_headless_path(monkeypatch, tmp_path):
    assert not qt_preflight.needs_check({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not qt_preflight.needs_check({}, "darwin")
    assert qt_preflight.needs_check({}, "linux") and qt_preflight.needs_check({"QT_QPA_PLATFORM": "xcb"}, "linux")

    def refuse(*_a, **_k):
        raise AssertionError("the headless path must not check Qt's display libraries")

    monkeypatch.setattr(qt_preflight, "ensure", refuse)
    monkeypatch.setattr(qt_preflight, "check", refuse)
    import main

    assert main.main(["run", str(ROOT / "workflows" / "gradient_blend.json"), "--out", str(tmp_path)]) == 0
    assert list(tmp_path.glob("*.png"))
    run_sh = (ROOT / "run.sh").read_text()
    assert run_sh.index("--headless") < run_sh.index("exec .venv/bin/python main.py \"$@\"")


def test_studio_launch_calls_the_preflight_first(monkeypatch):
    from app import main as app_main

    monkeypatch.setattr(qt_preflight, "ensure", lambda: 3)
    monkeypatch.setattr(app_main, "create_app", lambda *_: pytest.fail("Qt started despite the preflight"))
    assert app_main.run_studio(None) == 3


# ---- 2. the wheel scrolls panels ---------------------------------------------------------------

def _wheel(widget, delta: int = -120) -> None:
    """A real (spontaneous) wheel turn over the widget's centre, delivered through its window the
    way the window system delivers it, so Qt propagates it to the parents when it is ignored."""
    top = widget.window()
    pos = widget.mapTo(top, widget.rect().center())
    QTest.wheelEvent(top.windowHandle(), QPointF(pos), QPoint(0, delta))
    QApplication.processEvents()


def _inspect(window, node_id: str):
    window.scene.clearSelection()
    window.scene.nodes[node_id].setSelected(True)
    inspector = window.inspector
    assert inspector.node_id == node_id
    return inspector


def test_wheel_over_an_unfocused_inspector_combo_scrolls_the_panel(qtbot, make_window, canvas_registry):
    window = make_window(registry=canvas_registry)
    a = window.editor.add_node("NoiseLatent", (0, 0))
    window.inspector_dock.resize(380, 160)  # short: the inspector has to scroll
    window.resizeDocks([window.inspector_dock], [160], Qt.Vertical)
    inspector = _inspect(window, a)
    qtbot.wait(20)
    scroll: QScrollArea = inspector._scroll
    bar = scroll.verticalScrollBar()
    assert bar.maximum() > 0
    sampler: QComboBox = inspector.editors["sampler"][0]
    mode_box = inspector.mode_box
    frames = inspector.editors["frames"][0]
    assert sampler.focusPolicy() == Qt.StrongFocus and frames.focusPolicy() == Qt.StrongFocus
    window.view.setFocus()
    for widget in (mode_box, sampler, frames):
        scroll.ensureWidgetVisible(widget)
        QApplication.processEvents()
        before = bar.value()
        _wheel(widget, -120 if before < bar.maximum() else 120)
        assert bar.value() != before, type(widget).__name__  # the panel scrolled instead
    node = window.model.workflow.nodes[a]
    assert node.mode == "normal" and node.inputs.get("sampler", "euler") == "euler"
    assert node.inputs.get("frames", 17) == 17 and frames.value() == 17
    sampler.setFocus()
    qtbot.waitUntil(sampler.hasFocus)
    scroll.ensureWidgetVisible(sampler)
    _wheel(sampler)  # focused: the wheel edits, as everywhere else
    assert sampler.currentText() == "heun"


def test_wheel_over_a_canvas_widget_zooms_and_never_edits(qtbot, make_window, canvas_registry):
    window = make_window(registry=canvas_registry)
    a = window.editor.add_node("NoiseLatent", (0, 0))
    view = window.view
    item = window.scene.nodes[a]
    rect = item.mapRectToScene(next(s for s in item.widget_slots if s.name == "seed").rect)
    zoom = view.zoom()
    pos = QPointF(view.mapFromScene(rect.center()))
    event = QWheelEvent(pos, QPointF(view.viewport().mapToGlobal(pos.toPoint())), QPoint(0, 0),
                        QPoint(0, 120), Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), event)
    assert view.zoom() != zoom
    assert window.model.input_value(a, "seed") == 0 and window.model.input_value(a, "frames") == 17

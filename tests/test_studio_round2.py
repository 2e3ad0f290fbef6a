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


# ---- 9. seed controls after each run -------------------------------------------------------------

class _FakeClient:
    """Accepts runs and never reports back: enough to see what was queued."""

    def __init__(self):
        self.submitted = []

    def submit(self, request):
        self.submitted.append(request)
        return f"run{len(self.submitted)}"

    def poll_events(self, _timeout=0.0):
        return []

    def start(self): ...
    def interrupt(self): ...
    def kill(self): ...
    def restart(self): ...
    def close(self): ...


def _seed_graph(window):
    ed = window.editor
    a = ed.add_node("NoiseLatent", (0, 0))
    b = ed.add_node("NoiseLatent", (0, 300))
    c = ed.add_node("NoiseLatent", (0, 600))
    d = ed.add_node("DecodeVideo", (400, 0))
    w = ed.add_node("WriteVideo", (800, 0))
    ed.connect(a, "latent", d, "latent")
    ed.connect(d, "video", w, "video")
    for nid, seed in ((a, 5), (b, 0), (c, 10)):
        ed.set_input(nid, "seed", seed)
    return a, b, c, d, w


def test_seed_controls_apply_only_after_a_run_is_queued(make_window, canvas_registry):
    client = _FakeClient()
    window = make_window(registry=canvas_registry, client_factory=lambda: client)
    a, b, c, d, w = _seed_graph(window)
    ed = window.editor
    ed.set_seed_mode(a, "seed", "increment")
    ed.set_seed_mode(b, "seed", "decrement")  # wraps from the minimum to the maximum
    ed.set_seed_mode(c, "seed", "randomize")
    assert window.model.layout_of(c)["randomize"] == ["seed"]  # older readers still see it
    window.actions["run"].trigger()
    assert len(client.submitted) == 1
    queued = client.submitted[0].workflow["nodes"]
    assert queued[a]["inputs"]["seed"] == 5  # the run uses the values it was queued with
    value = window.model.input_value
    assert value(a, "seed") == 6 and value(b, "seed") == 2**32 - 1 and value(c, "seed") != 10
    window.undo_stack.undo()  # the step is one undo
    assert (value(a, "seed"), value(b, "seed"), value(c, "seed")) == (5, 0, 10)
    ed.set_seed_mode(a, "seed", "fixed")
    assert "seed_control" not in window.model.layout_of(a)


def test_a_refused_run_leaves_seeds_untouched(make_window, canvas_registry):
    client = _FakeClient()
    window = make_window(registry=canvas_registry, client_factory=lambda: client)
    a, b, c, d, w = _seed_graph(window)
    for nid in (a, b, c):
        window.editor.set_seed_mode(nid, "seed", "randomize")
    window.editor.disconnect(next(l for l in window.model.workflow.links if l.to_node == d))
    window.actions["run"].trigger()  # DecodeVideo's latent is missing: refused before queueing
    assert client.submitted == [] and not window.runs.queue
    assert [window.model.input_value(n, "seed") for n in (a, b, c)] == [5, 0, 10]
    state = window.scene.nodes[d].run_state
    assert state.state == "failed" and state.message.startswith("latent:")
    assert window.runs.last_status == "invalid" and "invalid" in window.run_label.text()


def test_seed_control_on_the_canvas_and_in_the_inspector(tmp_path, make_window, canvas_registry):
    from app.widget_paint import DICE_W
    from tests.conftest_qt import click

    target = tmp_path / "seeds.json"
    window = make_window(registry=canvas_registry, dialogs=ScriptedDialogs(save_workflow_path=str(target)))
    a = window.editor.add_node("NoiseLatent", (0, 0))
    item = window.scene.nodes[a]
    seed = item.mapRectToScene(next(s for s in item.widget_slots if s.name == "seed").rect)
    modes = []
    for _ in range(4):
        click(window.view, QPointF(seed.right() - DICE_W / 2, seed.center().y()))
        modes.append(window.editor.seed_mode(a, "seed"))
    assert modes == ["randomize", "increment", "decrement", "fixed"]
    inspector = _inspect(window, a)
    box = inspector.seed_controls["seed"]
    assert [box.itemText(i) for i in range(box.count())] == ["fixed", "increment", "decrement", "randomize"]
    box.setCurrentText("increment")
    assert window.model.layout_of(a)["seed_control"] == {"seed": "increment"}
    window.editor.set_seed_mode(a, "seed", "decrement")  # an edit elsewhere shows up
    assert box.currentText() == "decrement"
    window.actions["save"].trigger()
    saved = json.loads(target.read_text())
    assert saved["layout"]["nodes"][a]["seed_control"] == {"seed": "decrement"}
    saved["layout"]["nodes"][a] = {"pos": [0, 0], "randomize": ["seed"]}  # a file from before
    target.write_text(json.dumps(saved))
    other = make_window(registry=canvas_registry)
    assert other.files.open(str(target)) and other.editor.seed_mode(a, "seed") == "randomize"


# ---- 7. templates open as copies; File > Open reads outputs --------------------------------------

class _TemplateDialogs(ScriptedDialogs):
    """Also answers the template browser: picks the entry whose file is named `pick`."""

    def __init__(self, pick: str | None = None, **answers):
        super().__init__(**answers)
        self.pick, self.offered = pick, []

    def choose_template(self, entries, registry):
        self.offered = list(entries)
        hit = next((e for e in entries if e.path.name == self.pick), None)
        return str(hit.path) if hit else None


def test_new_from_template_opens_a_copy_and_save_asks_where(tmp_path, make_window):
    example = ROOT / "workflows" / "gradient_blend.json"
    original = example.read_bytes()
    target = tmp_path / "mine.json"
    dialogs = _TemplateDialogs("gradient_blend.json", save_workflow_path=str(target))
    window = make_window(dialogs=dialogs)
    window.actions["new_from_template"].trigger()
    assert {e.path.name for e in dialogs.offered if e.source == "example"} >= {"gradient_blend.json",
                                                                                "text_to_video.json"}
    assert window.files.current_path is None and set(window.model.workflow.nodes) == set(
        json.loads(original)["nodes"])
    assert window.windowTitle().startswith("Gradient blend (copy)") and not window.isWindowModified()
    window.editor.set_input(next(iter(window.model.workflow.nodes)), "width", 64)
    window.actions["save"].trigger()  # no path: Save asks where
    assert dialogs.kinds().count("save_workflow_path") == 1
    assert target.exists() and example.read_bytes() == original
    assert window.files.current_path == str(target.resolve())


def test_an_example_opened_by_path_is_never_overwritten(tmp_path, make_window):
    example = ROOT / "workflows" / "gradient_blend.json"
    original = example.read_bytes()
    target = tmp_path / "blend.json"
    window = make_window(dialogs=ScriptedDialogs(save_workflow_path=[None, str(target)]))
    assert window.files.open(str(example))
    window.editor.set_input(next(iter(window.model.workflow.nodes)), "width", 64)
    assert not window.files.save()  # asked for a new path; cancelled: nothing written
    assert example.read_bytes() == original and window.isWindowModified()
    assert window.files.save() and target.exists() and example.read_bytes() == original
    asked = [text for kind, text in window.dialogs.asked if kind == "save_workflow_path"]
    assert asked[0] == str(Path.home() / "gradient_blend.json")


def test_save_as_template_lists_it_with_its_thumbnail(qtbot, make_window, canvas_registry):
    from app.templates import TemplateBrowser, list_templates, user_templates_dir

    dialogs = _TemplateDialogs("Noise study.json", text="Noise study", save_discard_cancel="discard")
    window = make_window(registry=canvas_registry, dialogs=dialogs)
    window.editor.add_node("NoiseLatent", (0, 0))
    window.actions["save_template"].trigger()
    saved = user_templates_dir() / "Noise study.json"
    assert saved.exists() and saved.with_suffix(".png").exists()
    entries = list_templates()
    mine = next(e for e in entries if e.source == "user" and e.path == saved)
    assert mine.title == "Noise study" and mine.thumbnail == saved.with_suffix(".png")
    browser = TemplateBrowser(entries, window.registry, window)
    qtbot.addWidget(browser)
    examples, users = browser.lists["example"], browser.lists["user"]
    assert examples.count() == len([e for e in entries if e.source == "example"])
    assert all(not examples.item(i).icon().isNull() for i in range(examples.count()))
    assert not users.item(0).icon().isNull() and users.item(0).text() == "Noise study"
    users.setCurrentRow(0)
    assert "Noise study" in browser.description.text()
    window.files.new()
    window.actions["new_from_template"].trigger()
    assert window.files.current_path is None and len(window.model.workflow.nodes) == 1
    assert window.files.display_name() == "Noise study (copy)"


def test_the_default_workflow_opens_as_a_copy(make_window):
    from app.main import open_initial_document

    window = make_window()
    assert open_initial_document(window, None) == "default"
    assert window.files.current_path is None and window.model.workflow.nodes
    assert window.files.display_name() == "text_to_video (copy)"


def test_file_open_of_an_output_video_opens_its_workflow(tmp_path, make_window):
    import torch
    from engine import media
    from engine.values import Video

    embedded = json.loads((ROOT / "workflows" / "gradient_blend.json").read_text())
    clip = tmp_path / "render.mp4"
    media.write_video(clip, Video(torch.rand(4, 32, 32, 3), fps=8.0), workflow=embedded)
    dialogs = ScriptedDialogs(open_workflow_path=str(clip))
    window = make_window(dialogs=dialogs)
    window.actions["open"].trigger()
    assert set(window.model.workflow.nodes) == set(embedded["nodes"])
    assert window.files.current_path is None and window.isWindowModified()
    assert "error" not in dialogs.kinds() and "warning" not in dialogs.kinds()


def test_file_open_of_media_without_a_workflow_says_so(tmp_path, make_window):
    import torch
    from engine import media

    plain = tmp_path / "photo.png"
    media.write_png(plain, torch.rand(8, 8, 3), {})
    window = make_window(dialogs=ScriptedDialogs(open_workflow_path=str(plain)))
    before = window.model.workflow.to_json()
    window.actions["open"].trigger()
    kinds = window.dialogs.kinds()
    assert "error" not in kinds and "warning" in kinds
    text = next(t for k, t in window.dialogs.asked if k == "warning")
    assert "photo.png carries no Reelgraph or ComfyUI workflow" in text and "codec" not in text
    assert window.model.workflow.to_json() == before


def test_file_open_of_a_comfyui_png_imports_its_workflow(tmp_path, make_window):
    from PIL import Image, PngImagePlugin

    ui = (ROOT / "tests" / "data" / "comfy" / "wan21_t2v_ui10.json").read_text()
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", ui)
    png = tmp_path / "ComfyUI_00001_.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    window = make_window(dialogs=ScriptedDialogs(open_workflow_path=str(png)))
    window.actions["open"].trigger()
    assert window.model.workflow.nodes and window.files.current_path is None
    assert window.model.workflow.meta.get("comfy_import", {}).get("source") == png.name
    assert "error" not in window.dialogs.kinds()

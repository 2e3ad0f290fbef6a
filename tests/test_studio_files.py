"""Files in the studio: save/load round trips, the dirty marker and close prompt, newer formats,
missing node types, dropped files, autosave and crash recovery, canvas export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from engine.document import load_workflow
from app import theme
from app.main import open_initial_document
from tests.conftest_qt import (ScriptedDialogs, canvas_registry, make_window, png_pixels,  # noqa: F401
                               wait_until)

ROOT = Path(__file__).resolve().parents[1]


def _build(window):
    ed = window.editor
    a = ed.add_node("NoiseLatent", (0, 0))
    b = ed.add_node("DecodeVideo", (400, 0))
    c = ed.add_node("WriteVideo", (800, 0))
    ed.connect(a, "latent", b, "latent")
    ed.connect(b, "video", c, "video")
    ed.set_input(a, "seed", 42)
    ed.set_title(c, "Final cut")
    ed.toggle_mode([b], "bypass")
    ed.toggle_collapsed([c])
    for nid in (a, b):
        window.scene.nodes[nid].setSelected(True)
    window.view.group_selection()
    return a, b, c


def test_save_and_load_round_trip(tmp_path, make_window, canvas_registry):
    target = tmp_path / "shot.json"
    window = make_window(registry=canvas_registry, dialogs=ScriptedDialogs(save_workflow_path=str(target)))
    _build(window)
    assert window.isWindowModified() and "[*]" in window.windowTitle()
    window.actions["save"].trigger()  # untitled: Save asks for a path
    assert target.exists() and not window.isWindowModified()
    assert window.windowTitle().startswith("shot.json")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".shot")] == []  # atomic
    saved = json.loads(target.read_text())
    assert saved == window.model.workflow.to_json()
    other = make_window(registry=canvas_registry)
    assert other.files.open(str(target))
    assert other.model.workflow.to_json() == load_workflow(target).to_json()
    assert set(other.scene.nodes) == set(saved["nodes"]) and len(other.scene.links) == 2
    assert len(other.scene.groups) == 1 and other.model.node("writevideo1").title == "Final cut"
    assert other.prefs.recent_files[0] == str(target.resolve())


def test_close_prompts_for_unsaved_changes(tmp_path, make_window, canvas_registry):
    target = tmp_path / "kept.json"
    dialogs = ScriptedDialogs(save_discard_cancel=["cancel", "save"], save_workflow_path=str(target))
    window = make_window(registry=canvas_registry, dialogs=dialogs, autosave_ms=10)
    window.editor.add_node("Prompt", (0, 0))
    window.autosaver.save_now()
    assert window.recovery.path.exists()
    assert not window.close()  # cancelled: still open, nothing written
    assert window.isVisible() and not target.exists()
    assert window.close()
    assert target.exists() and "Prompt" in target.read_text()
    assert not window.recovery.path.exists()  # a normal close leaves nothing to recover


def test_newer_format_opens_only_after_asking_and_keeps_unknown_parts(tmp_path, make_window, canvas_registry):
    path = tmp_path / "future.json"
    doc = {"format": "reelgraph.workflow", "version": 99, "hologram": {"depth": 3},
           "nodes": {"p": {"type": "Prompt", "inputs": {"text": "hi"}, "sparkle": True}}, "links": []}
    path.write_text(json.dumps(doc))
    refuse = make_window(registry=canvas_registry, dialogs=ScriptedDialogs(confirm=False))
    assert not refuse.files.open(str(path))
    assert refuse.model.workflow.nodes == {}
    assert "newer Reelgraph" in refuse.dialogs.asked[0][1]
    accept = make_window(registry=canvas_registry, dialogs=ScriptedDialogs(confirm=True))
    assert accept.files.open(str(path))
    assert list(accept.scene.nodes) == ["p"]
    accept.editor.set_input("p", "text", "hello")
    accept.files.save()
    again = json.loads(path.read_text())
    assert again["version"] == 99 and again["hologram"] == {"depth": 3}
    assert again["nodes"]["p"] == {"type": "Prompt", "inputs": {"text": "hello"}, "sparkle": True}


def test_unknown_node_types_are_greyed_placeholders_and_saved_back(tmp_path, make_window, canvas_registry):
    path = tmp_path / "pack.json"
    doc = {"format": "reelgraph.workflow", "version": 2,
           "nodes": {"n": {"type": "NoiseLatent", "inputs": {"frames": 9}},
                     "up": {"type": "FancyUpscaler", "inputs": {"factor": 4, "model": "x4.pth"}},
                     "w": {"type": "WriteVideo", "inputs": {}}},
           "links": [{"from": {"node": "n", "output": "latent"}, "to": {"node": "up", "input": "latent"}},
                     {"from": {"node": "up", "output": "video"}, "to": {"node": "w", "input": "video"}}],
           "layout": {"nodes": {"up": {"pos": [300, 0]}, "w": {"pos": [600, 0]}}}}
    path.write_text(json.dumps(doc))
    dialogs = ScriptedDialogs()
    window = make_window(registry=canvas_registry, dialogs=dialogs)
    assert window.files.open(str(path))
    warning = [text for kind, text in dialogs.asked if kind == "warning"]
    assert warning and "FancyUpscaler" in warning[0]
    item = window.scene.nodes["up"]
    assert item.spec is None
    assert [s.name for s in item.input_slots] == ["latent"] and [s.name for s in item.output_slots] == ["video"]
    assert ("factor", "4") in item.info_rows
    assert len(window.scene.links) == 2  # wires to and from the placeholder are drawn
    window.editor.set_input("n", "frames", 13)
    window.files.save()
    saved = json.loads(path.read_text())
    assert saved["nodes"]["up"] == doc["nodes"]["up"] and saved["links"] == doc["links"]
    image = window.view.grab().toImage()
    assert not image.isNull()


def _drop(view, path: Path, at: QPoint) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    # the sequence a real drag delivers: enter, move, drop
    for event in (QDragEnterEvent(at, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier),
                  QDragMoveEvent(at, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier),
                  QDropEvent(QPointF(at), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)):
        QApplication.sendEvent(view.viewport(), event)
        assert event.isAccepted()


def test_dropping_an_output_with_an_embedded_workflow_restores_it(tmp_path, make_window):
    import torch
    from engine import media

    embedded = json.loads((ROOT / "workflows" / "gradient_blend.json").read_text())
    png = tmp_path / "render.png"
    media.write_png(png, torch.rand(8, 8, 3), media.metadata_text(embedded, {"seed": 1}))
    plain = tmp_path / "plain.png"
    media.write_png(plain, torch.rand(8, 8, 3), {})
    window = make_window(dialogs=ScriptedDialogs(save_discard_cancel="discard"))
    _drop(window.view, png, QPoint(200, 200))
    assert set(window.model.workflow.nodes) == set(embedded["nodes"])
    assert window.isWindowModified() and window.files.current_path is None  # a new, unsaved doc
    _drop(window.view, plain, QPoint(300, 300))
    loaders = [n for n in window.model.workflow.nodes.values() if n.type == "LoadImage"]
    assert len(loaders) == 1 and loaders[0].inputs["image"] == str(plain)
    _drop(window.view, ROOT / "workflows" / "gradient_blend.json", QPoint(100, 100))  # a workflow file
    assert window.files.current_path == str((ROOT / "workflows" / "gradient_blend.json").resolve())
    assert not window.isWindowModified() and set(window.model.workflow.nodes) == set(embedded["nodes"])


def test_autosave_writes_recovery_not_the_users_file(qtbot, tmp_path, make_window, canvas_registry):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"format": "reelgraph.workflow", "version": 2, "nodes": {}, "links": []}))
    original = path.read_bytes()
    window = make_window(registry=canvas_registry, autosave_ms=20)
    window.files.open(str(path))
    window.editor.add_node("Prompt", (0, 0))
    wait_until(qtbot, lambda: window.recovery.path.exists(), 5)
    record = json.loads(window.recovery.path.read_text())
    assert record["source"] == str(path.resolve())
    assert [n["type"] for n in record["workflow"]["nodes"].values()] == ["Prompt"]
    assert path.read_bytes() == original
    window.undo_stack.undo()  # back to the saved state: nothing to recover
    wait_until(qtbot, lambda: not window.recovery.path.exists(), 5)


CRASHING_SESSION = textwrap.dedent("""
    import os, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    sys.path.insert(0, {root!r})
    from tests.conftest_qt import CANVAS_TYPES
    from engine.registry import NodeRegistry
    from engine.config import Settings
    from app.main import create_app
    from app.main_window import MainWindow
    from app.autosave import RecoveryStore
    from app.studio_settings import StudioPrefs
    app = create_app()
    reg = NodeRegistry()
    for cls in CANVAS_TYPES:
        reg.register(cls)
    w = MainWindow(reg, Settings(output_dir={out!r}), StudioPrefs(path=None), RecoveryStore({rec!r}),
                   autosave_ms=10, persist_settings=False)
    w.files.open({doc!r})
    w.editor.add_node("NoiseLatent", (10, 20))
    w.editor.set_input("noiselatent1", "seed", 777)
    deadline = time.time() + 10
    while not w.recovery.path.exists() and time.time() < deadline:
        app.processEvents()
        time.sleep(0.01)
    os._exit(3)  # a crash: no close, no cleanup
""")


def test_crash_leaves_a_recovery_that_the_next_start_offers(tmp_path, make_window, canvas_registry):
    doc = tmp_path / "scene.json"
    doc.write_text(json.dumps({"format": "reelgraph.workflow", "version": 2,
                               "nodes": {"p": {"type": "Prompt", "inputs": {"text": "x"}}}, "links": []}))
    original = doc.read_bytes()
    rec = tmp_path / "recovery"
    script = CRASHING_SESSION.format(root=str(ROOT), out=str(tmp_path / "out"), rec=str(rec), doc=str(doc))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3, proc.stderr
    assert len(list(rec.glob("session-*.json"))) == 1
    dialogs = ScriptedDialogs(confirm=True)
    window = make_window(registry=canvas_registry, dialogs=dialogs, recovery_dir=rec)
    assert open_initial_document(window, None) == "recovered"
    assert "did not close normally" in dialogs.asked[0][1]
    nodes = window.model.workflow.nodes
    assert set(nodes) == {"p", "noiselatent1"} and nodes["noiselatent1"].inputs["seed"] == 777
    assert window.files.current_path == str(doc.resolve()) and window.isWindowModified()
    assert doc.read_bytes() == original  # restoring never writes the user's file
    assert list(rec.glob("session-*.json")) == []  # offered once


def test_export_image_renders_without_a_display(tmp_path):
    out = tmp_path / "canvas.png"
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(ROOT)
    code = ("from app.export import export_image; "
            f"export_image({str(ROOT / 'workflows' / 'gradient_blend.json')!r}, {str(out)!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    pixels = png_pixels(out)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 600
    image_title = np.array(theme.category_color("image").getRgb()[:3])
    background = np.array(theme.CANVAS_BG.getRgb()[:3])
    close = lambda c: (np.abs(pixels.astype(int) - c).sum(axis=2) < 6).mean()  # noqa: E731
    assert close(image_title) > 0.005  # the gradient nodes' title bars are there
    assert close(background) > 0.3


def test_settings_dialog_edits_model_roots_node_packs_and_providers(qtbot, tmp_path):
    from engine.config import Settings
    from app.studio_settings import SettingsDialog, StudioPrefs

    dialogs = ScriptedDialogs(folder=[str(tmp_path / "ComfyUI" / "models"), str(tmp_path / "packs")])
    dialog = SettingsDialog(Settings(model_roots=["/old/models"], output_dir=str(tmp_path)), dialogs)
    dialog.roots._add()
    dialog.packs._add()
    dialog.roots.list.item(0).setSelected(True)
    result = dialog.result_settings()
    assert result.model_roots == ["/old/models", str(tmp_path / "ComfyUI" / "models")]
    assert result.node_packs == [str(tmp_path / "packs")]
    dialog.providers.add_row("lab", "http://10.0.0.5:8000/v1", "LAB_KEY")
    dialog.providers.add_row("broken", "ftp://nowhere", "")  # not http(s): left out
    assert dialog.result_settings().providers == {
        "lab": {"base_url": "http://10.0.0.5:8000/v1", "api_key_env": "LAB_KEY"}}
    prefs = StudioPrefs(path=tmp_path / "studio.json")
    for name in ("a.json", "b.json", "a.json"):
        prefs.add_recent(str(tmp_path / name))
    assert StudioPrefs.load(tmp_path / "studio.json").recent_files == [
        str((tmp_path / "a.json").resolve()), str((tmp_path / "b.json").resolve())]


def test_new_asks_before_dropping_unsaved_work(make_window, canvas_registry):
    dialogs = ScriptedDialogs(save_discard_cancel=["cancel", "discard"])
    window = make_window(registry=canvas_registry, dialogs=dialogs)
    window.editor.add_node("Prompt", (0, 0))
    window.actions["new"].trigger()
    assert len(window.model.workflow.nodes) == 1  # cancelled
    window.actions["new"].trigger()
    assert window.model.workflow.nodes == {} and not window.isWindowModified()
    assert window.windowTitle().startswith("Untitled") and not window.undo_stack.canUndo()
    assert dialogs.kinds() == ["save_discard_cancel", "save_discard_cancel"]


def test_settings_show_every_model_folder_and_what_it_found(qtbot, tmp_path):
    """A ComfyUI install folder as a root, plus its extra_model_paths.yaml naming an A1111 tree:
    the dialog lists each folder with its file count and whether Reelgraph uses it."""
    from engine.config import Settings
    from app.studio_settings import SettingsDialog

    install = tmp_path / "ComfyUI"
    for rel in ("models/loras/style.safetensors", "models/checkpoints/sd.safetensors",
                "models/diffusion_models/wan.safetensors"):
        (install / rel).parent.mkdir(parents=True, exist_ok=True)
        (install / rel).write_bytes(b"x")
    a1111 = tmp_path / "a1111"
    (a1111 / "models" / "Lora").mkdir(parents=True)
    (a1111 / "models" / "Lora" / "old.safetensors").write_bytes(b"x")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"a111:\n    base_path: {a1111}\n    loras: models/Lora\n")
    dialog = SettingsDialog(Settings(model_roots=[str(install)], output_dir=str(tmp_path),
                                     comfy_extra_model_paths=str(yaml_file)), ScriptedDialogs())
    qtbot.addWidget(dialog)
    table = dialog.inventory.table
    rows = {(table.item(r, 1).text(), table.item(r, 0).text()):
            (table.item(r, 2).text(), table.item(r, 3).text()) for r in range(table.rowCount())}
    assert rows[(str(install / "models" / "loras"), "loras")] == ("1", "used")
    assert rows[(str(install / "models" / "checkpoints"), "checkpoints")] == (
        "1", "not used by Reelgraph yet")
    assert rows[(str(a1111 / "models" / "Lora"), "loras")] == ("1", "used")
    dialog.comfy_yaml.setText("")
    dialog.refresh_inventory()
    assert not any(table.item(r, 1).text().startswith(str(a1111)) for r in range(table.rowCount()))
    assert dialog.result_settings().comfy_extra_model_paths == ""

"""The studio, round 2 (issue 18), second half: Stop lands within one step and the worker keeps
its models; every node's output is inspectable (input thumbnails, captions on the node and in the
inspector); progress with ETA and stale marks; the whole-clip latent preview; stale cues; queue,
history and gallery; canvas conveniences."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import events as ev
from engine.previews import WAN21_RGB_BIAS, WAN21_RGB_FACTORS, clip_preview, family_of
from app.run_controller import preview_to_frames
from app.run_state import NodeRunState, clock
from tests.conftest_qt import make_window, wait_until  # noqa: F401


def _state(window, node_id: str) -> str:
    return window.scene.nodes[node_id].run_state.state


def _delay_graph(window, steps: int, step_seconds: float) -> dict[str, str]:
    ed = window.editor
    ids = {"int": ed.add_node("Int", (0, 0)), "delay": ed.add_node("Delay", (300, 0))}
    ed.set_input(ids["delay"], "steps", steps)
    ed.set_input(ids["delay"], "step_seconds", step_seconds)
    ed.connect(ids["int"], "value", ids["delay"], "value")
    return ids


# ---- 5. Stop within one step; the worker keeps its models ----------------------------------------

def test_stop_waits_for_a_step_longer_than_the_grace_and_keeps_the_worker(qtbot, make_window):
    window = make_window()
    ids = _delay_graph(window, steps=6, step_seconds=1.2)  # each step outlasts the 0.5 s grace
    window.run_to([ids["delay"]])
    wait_until(qtbot, lambda: window.runs.states.get(ids["delay"], NodeRunState()).fraction > 0.1, 60)
    pid = window.runs.client.pid
    assert window.runs.longest_step > 1.0  # measured from the progress events
    asked = time.monotonic()
    window.runs.stop(grace=0.5)
    assert window.scene.nodes[ids["delay"]].run_state.badge() == "stopping"
    assert "stopping" in window.run_label.text()
    wait_until(qtbot, lambda: not window.runs.busy, 10)
    assert time.monotonic() - asked < 1.2 + 1.0  # within one step (plus polling)
    assert window.runs.last_status == "interrupted"
    assert not any("killing" in m for _, m in window.log_panel.lines)
    assert window.runs.client.pid == pid and window.runs.client.is_alive()  # models stay loaded
    assert window.scene.nodes[ids["delay"]].run_state.message == "stopped"
    # the next run reuses the same worker and its cache: the upstream node is served from it
    window.editor.set_input(ids["delay"], "steps", 1)
    window.run_to([ids["delay"]])
    wait_until(qtbot, lambda: not window.runs.busy and window.runs.last_status == "done", 60)
    assert window.runs.client.pid == pid
    assert _state(window, ids["int"]) == "cached"


def test_a_second_stop_kills_at_once(qtbot, make_window):
    window = make_window()
    ids = _delay_graph(window, steps=3, step_seconds=20.0)
    window.run_to([ids["delay"]])
    wait_until(qtbot, lambda: _state(window, ids["delay"]) == "running", 60)
    pid = window.runs.client.pid
    window.runs.stop(grace=30)
    window.runs.stop()  # impatient: force it
    wait_until(qtbot, lambda: not window.runs.busy, 10)
    assert window.runs.last_status == "interrupted"
    assert any("forced stop" in m for _, m in window.log_panel.lines)
    assert window.runs.client.pid != pid


# ---- 3. inputs and texts are inspectable ---------------------------------------------------------

def test_load_image_shows_its_file_and_recaption_its_caption(qtbot, make_window, tmp_path):
    from PIL import Image

    picture = tmp_path / "input.png"
    Image.fromarray(np.full((40, 64, 3), (0, 200, 0), np.uint8)).save(picture)
    window = make_window()
    ed = window.editor
    load = ed.add_node("LoadImage", (0, 0))
    ed.set_input(load, "image", str(picture))
    item = window.scene.nodes[load]
    assert item.thumbnail is not None and item.thumbnail.pixelColor(4, 4).green() > 190  # before any run
    window.scene.clearSelection()
    item.setSelected(True)
    assert window.preview.view.image is not None  # the dock shows the input, not "no output yet"
    assert window.preview.view.image.pixelColor(4, 4).green() > 190

    cap = ed.add_node("Recaption", (0, 300))
    ed.set_input(cap, "prompt", "a red circle moving right")
    window.run_to([cap])
    wait_until(qtbot, lambda: not window.runs.busy, 60)
    assert window.runs.last_status == "done"
    caption = window.scene.nodes[cap].output_text
    assert len(caption.split()) > 8 and "circle" in caption  # the dense caption, on the node
    assert window.scene.nodes[cap].text_rect.height() > 20
    window.scene.clearSelection()
    window.scene.nodes[cap].setSelected(True)
    assert window.inspector.output_text.toPlainText() == caption
    assert window.inspector.output_text.isVisibleTo(window.inspector)


def test_worker_summarises_texts_and_pictures():
    from engine.values import Video
    from engine.worker import summarise_outputs

    video = Video(torch.rand(5, 600, 300, 3))
    summary = summarise_outputs("r", "n", {"caption": "x" * 5000, "video": video})
    assert len(summary.texts["caption"]) == 4000 and summary.texts["caption"].endswith("…")
    assert summary.image.dtype == np.uint8 and summary.image.shape == (256, 128, 3)
    assert summarise_outputs("r", "n", {"latent": 3}) is None


# ---- 6. progress, ETA, stale marks ----------------------------------------------------------------

def test_progress_text_has_step_elapsed_and_eta():
    state = NodeRunState(state="running", fraction=0.25, message="step 5/20", started=100.0)
    assert state.eta(now=110.0) == pytest.approx(30.0)
    assert state.progress_text(now=110.0) == "step 5/20 · 0:10 · ETA 0:30"
    assert clock(3725) == "1:02:05"
    assert NodeRunState(state="running", fraction=0.0, started=1.0).eta(now=2.0) is None


def test_eta_in_the_status_bar_and_stale_marks_before_run(qtbot, make_window):
    window = make_window()
    ids = _delay_graph(window, steps=8, step_seconds=0.25)
    window.run_to([ids["delay"]])
    wait_until(qtbot, lambda: window.runs.states.get(ids["delay"], NodeRunState()).fraction >= 0.25, 60)
    window.run_display.show_progress()
    text = window.run_label.text()
    assert "step " in text and "/8" in text and "ETA" in text
    assert "·" in window.scene.nodes[ids["delay"]].run_state.badge()  # "37% · 0:01"
    wait_until(qtbot, lambda: not window.runs.busy, 30)
    assert not any(window.scene.nodes[n].stale for n in ids.values())
    window.editor.set_input(ids["int"], "value", 5)  # the source changed: both will re-run
    assert window.scene.nodes[ids["int"]].stale and window.scene.nodes[ids["delay"]].stale
    window.editor.set_input(ids["int"], "value", 0)  # back as it ran: nothing is stale
    assert not window.scene.nodes[ids["delay"]].stale


# ---- 4. the latent preview is the whole clip, per model family ------------------------------------

def test_wan21_projection_matches_comfyui_latent2rgb():
    latent = torch.randn(16, 5, 6, 7)  # (C, T', H', W')
    clip = clip_preview(latent)
    assert clip.shape == (5, 6, 7, 3) and clip.dtype == torch.uint8
    f, b = torch.tensor(WAN21_RGB_FACTORS), torch.tensor(WAN21_RGB_BIAS)
    # ComfyUI: linear(x0.movedim(1, -1), factors.T, bias), then (x + 1) / 2 clamped
    ref = ((torch.nn.functional.linear(latent.movedim(0, -1), f.T, b) + 1) / 2).clamp(0, 1)
    assert (clip.float() - (ref * 255 + 0.5).floor()).abs().max() <= 1
    assert family_of(16) == "wan2.1" and family_of(48) == "wan2.2" and family_of(8) == "generic"
    assert clip_preview(torch.randn(48, 3, 4, 4)).shape == (3, 4, 4, 3)
    assert clip_preview(torch.randn(8, 100, 4, 4)).shape[0] == 48  # subsampled, fallback colours


def test_latent_clip_plays_on_the_node_and_in_the_dock(qtbot, make_window):
    window = make_window()
    nid = window.editor.add_node("Int", (0, 0))
    frames = preview_to_frames(clip_preview(torch.randn(16, 4, 12, 20)).unsqueeze(0))
    assert len(frames) == 4 and frames[0].width() == 20
    window.runs.preview_ready.emit(nid, frames)
    item = window.scene.nodes[nid]
    assert item.thumbnail is not None and item.thumbnail.width() >= 320  # a useful size
    assert "frame 1/4" in window.preview.info.text()
    qtbot.wait(300)  # 8 fps: a couple of frames later
    assert "frame 1/4" not in window.preview.info.text()


# ---- 12. stale cues, Recaption's backend inputs ---------------------------------------------------

def test_recaption_shows_only_the_chosen_backends_inputs(qtbot, make_window):
    window = make_window()
    ed = window.editor
    cap = ed.add_node("Recaption", (0, 0))
    window.scene.nodes[cap].setSelected(True)
    shown = set(window.inspector.editors)
    assert "grammar" in shown and "provider" not in shown and "model" not in shown
    canvas = {w.name for w in window.scene.nodes[cap].widget_slots}
    assert "provider" not in canvas and "temperature" not in canvas and "seed" in canvas
    ed.set_input(cap, "backend", "openai")
    qtbot.wait(50)
    shown = set(window.inspector.editors)
    assert {"provider", "base_url", "temperature", "timeout"} <= shown and "grammar" not in shown
    assert "provider" in {w.name for w in window.scene.nodes[cap].widget_slots}


def test_link_count_follows_every_edit(qtbot, make_window):
    window = make_window()
    ids = _delay_graph(window, steps=1, step_seconds=0.0)
    assert window.count_label.text() == "2 nodes · 1 links"
    window.undo_stack.undo()  # the connect
    assert window.count_label.text().endswith("· 0 links")


def test_quit_discard_prints_no_traceback(tmp_path):
    """Closing with unsaved work and answering Discard, then quitting, is silent on stderr."""
    import subprocess
    import sys

    script = tmp_path / "quit.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from PySide6.QtCore import QTimer
from app.main import create_app
from app.main_window import MainWindow
from app.autosave import RecoveryStore
from app.studio_settings import StudioPrefs
from engine.config import Settings
from engine.registry import default_registry
from tests.conftest_qt import ScriptedDialogs

if __name__ == "__main__":
    app = create_app()
    w = MainWindow(default_registry(), Settings(output_dir={str(tmp_path)!r}), StudioPrefs(path=None),
                   RecoveryStore({str(tmp_path / 'rec')!r}),
                   dialogs=ScriptedDialogs(save_discard_cancel="discard"), persist_settings=False)
    w.show()
    w.editor.add_node("Recaption", (0, 0))  # unsaved work
    QTimer.singleShot(200, lambda: (w.close(), QTimer.singleShot(200, app.quit)))
    app.exec()
    print("closed")
""")
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert "closed" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr


# ---- 8. queue, history, gallery ------------------------------------------------------------------

def test_queue_reorder_cancel_history_and_gallery(qtbot, make_window):
    window = make_window()
    ed = window.editor
    ids = _delay_graph(window, steps=4, step_seconds=0.2)
    grad, save = ed.add_node("ImageGradient", (0, 300)), ed.add_node("SaveImage", (300, 300))
    ed.set_input(grad, "width", 40)
    ed.set_input(grad, "height", 24)
    ed.connect(grad, "image", save, "images")
    window.run_to([ids["delay"]])  # running
    window.run_to([save])  # queued 1
    ed.set_input(ids["int"], "value", 7)
    window.run_to([ids["delay"]])  # queued 2
    panel = window.history
    assert window.runs.queue[1].workflow["nodes"][ids["int"]]["inputs"]["value"] == 7
    panel.queue_list.setCurrentRow(2)  # row 0 is the running one
    panel.move_selected(-1)
    assert [r.targets for r in window.runs.queue] == [[ids["delay"]], [save]]
    panel.queue_list.setCurrentRow(1)
    panel.cancel_selected()
    assert [r.targets for r in window.runs.queue] == [[save]]
    assert "queued" in window.run_label.text()
    wait_until(qtbot, lambda: not window.runs.busy and len(window.runs.history) == 2, 60)
    assert [r.status for r in window.runs.history] == ["done", "done"]
    assert panel.history_list.count() == 2 and panel.gallery.count() == 1
    assert panel.queue_list.count() == 0  # finished runs leave the queue
    picture = panel.gallery.item(0)
    assert picture.data(0x0100).endswith(".png")
    mime = panel.gallery.mimeData([picture])
    assert mime.urls()[0].toLocalFile() == picture.data(0x0100)  # drags out as a file
    panel.gallery.itemClicked.emit(picture)
    assert window.preview.view.image is not None
    # re-open the exact graph of the first run: Int was still 0 then
    panel.history_list.setCurrentRow(1)
    window.undo_stack.setClean()
    panel.open_selected()
    assert window.model.workflow.nodes[ids["int"]].inputs.get("value", 0) == 0
    assert "graph of" in window.files.display_name()


def test_comfy_import_report_shows_in_a_dismissible_banner(qtbot, make_window, tmp_path):
    root = Path(__file__).resolve().parent
    source = root / "data" / "comfy" / "wan21_t2v_ui10.json"
    window = make_window()
    assert window.files.open(str(source))
    banner = window.import_banner
    assert banner.isVisible() and "Imported from ComfyUI" in banner.summary.text()
    assert "mapped" in banner.summary.text()
    banner.close_button.click()
    assert not banner.isVisible()

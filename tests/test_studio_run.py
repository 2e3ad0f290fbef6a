"""Runs from the studio through the real worker process: node states, previews, stop, crashes,
run-to-here and queued runs. Uses the built-in nodes (ImageGradient, SaveImage, Delay, ...)."""

from __future__ import annotations

import os
import signal

from tests.conftest_qt import make_window, png_pixels, wait_until  # noqa: F401


def _gradient_graph(window, steps: int | None = None) -> dict[str, str]:
    ed = window.editor
    ids = {"grad": ed.add_node("ImageGradient", (0, 0)), "save": ed.add_node("SaveImage", (400, 0))}
    ed.set_input(ids["grad"], "width", 48)
    ed.set_input(ids["grad"], "height", 32)
    ed.set_input(ids["grad"], "color_a", "#ff0000")
    ed.set_input(ids["grad"], "color_b", "#ff0000")
    ed.connect(ids["grad"], "image", ids["save"], "images")
    if steps is not None:
        ids["int"] = ed.add_node("Int", (0, 300))
        ids["delay"] = ed.add_node("Delay", (300, 300))
        ed.set_input(ids["delay"], "steps", steps)
        ed.set_input(ids["delay"], "step_seconds", 0.05)
        ed.connect(ids["int"], "value", ids["delay"], "value")
    return ids


def _state(window, node_id: str) -> str:
    return window.scene.nodes[node_id].run_state.state


def test_run_shows_node_states_output_thumbnail_and_preview(qtbot, make_window):
    window = make_window()
    ids = _gradient_graph(window)
    before = window.model.workflow.to_json()
    seen: list[tuple[str, str]] = []
    window.runs.node_state_changed.connect(lambda nid: seen.append((nid, window.runs.states[nid].state)))
    window.scene.nodes[ids["save"]].setSelected(True)
    window.actions["run"].trigger()
    wait_until(qtbot, lambda: not window.runs.busy, 60)
    assert window.runs.last_status == "done"
    assert _state(window, ids["grad"]) == "done" and _state(window, ids["save"]) == "done"
    assert (ids["save"], "running") in seen and seen.index((ids["save"], "running")) < seen.index((ids["save"], "done"))
    files = window.runs.last_files[ids["save"]]
    assert len(files) == 1 and files[0].endswith(".png")
    pixels = png_pixels(files[0])
    assert pixels.shape == (32, 48, 3) and (pixels[..., 0] > 250).all() and (pixels[..., 1] < 5).all()
    item = window.scene.nodes[ids["save"]]
    assert item.thumbnail is not None and item.thumb_rect.height() > 0
    shown = window.preview.view.image
    assert shown is not None and shown.pixelColor(5, 5).red() > 250 and shown.pixelColor(5, 5).green() < 5
    assert "done" in window.run_label.text()
    assert window.model.workflow.to_json() == before  # a run never edits the graph
    grab = window.scene.nodes[ids["save"]]
    assert grab.run_state.badge().endswith("s")


def test_failed_node_shows_its_message_and_traceback(qtbot, make_window):
    window = make_window()
    ed = window.editor
    bad = ed.add_node("RaiseError", (0, 0))
    ed.set_input(bad, "message", "the sky is falling")
    window.run_to([bad])
    wait_until(qtbot, lambda: not window.runs.busy, 60)
    assert window.runs.last_status == "failed"
    item = window.scene.nodes[bad]
    assert item.run_state.state == "failed" and "the sky is falling" in item.run_state.message
    assert "the sky is falling" in item.toolTip()
    assert any("the sky is falling" in m for level, m in window.log_panel.lines if level == "error")


def test_stop_interrupts_a_long_run_and_keeps_the_graph(qtbot, make_window):
    window = make_window()
    ids = _gradient_graph(window, steps=400)
    before = window.model.workflow.to_json()
    window.run_to([ids["delay"]])
    wait_until(qtbot, lambda: _state(window, ids["delay"]) == "running", 60)
    wait_until(qtbot, lambda: window.runs.states[ids["delay"]].fraction > 0, 10)
    assert 0 < window.scene.nodes[ids["delay"]].run_state.fraction < 1
    window.actions["stop"].trigger()
    wait_until(qtbot, lambda: not window.runs.busy, 10)
    assert window.runs.last_status == "interrupted"
    assert _state(window, ids["delay"]) == "interrupted"
    assert _state(window, ids["grad"]) == "idle"  # run-to-here never touched the other branch
    assert window.model.workflow.to_json() == before


def test_stop_kills_and_restarts_a_worker_that_does_not_stop(qtbot, make_window):
    window = make_window()
    ids = _gradient_graph(window, steps=3)
    window.editor.set_input(ids["delay"], "step_seconds", 30.0)  # checks for a stop every 30 s
    window.run_to([ids["delay"]])
    wait_until(qtbot, lambda: _state(window, ids["delay"]) == "running", 60)
    first_pid = window.runs.client.pid
    window.runs.stop(grace=0.3)
    wait_until(qtbot, lambda: not window.runs.busy, 10)
    assert window.runs.last_status == "interrupted"
    assert any("killing and restarting" in m for _, m in window.log_panel.lines)
    assert window.runs.client.is_alive() and window.runs.client.pid != first_pid


def test_worker_crash_mid_run_is_reported_and_the_next_run_works(qtbot, make_window):
    window = make_window()
    ids = _gradient_graph(window, steps=400)
    before = window.model.workflow.to_json()
    window.run_to([ids["delay"]])
    wait_until(qtbot, lambda: _state(window, ids["delay"]) == "running", 60)
    os.kill(window.runs.client.pid, signal.SIGKILL)  # out-of-memory killer, segfault, ...
    wait_until(qtbot, lambda: not window.runs.busy, 10)
    assert window.runs.last_status == "crashed"
    assert window._crash_box.isVisible() and "stopped unexpectedly" in window._crash_box.text()
    assert _state(window, ids["delay"]) == "failed"
    assert window.scene.nodes[ids["delay"]].run_state.message == "worker crashed"
    assert window.model.workflow.to_json() == before and len(window.scene.nodes) == 4
    window._crash_box.close()
    window.run_to([ids["save"]])
    wait_until(qtbot, lambda: not window.runs.busy, 60)
    assert window.runs.last_status == "done" and _state(window, ids["save"]) == "done"


def test_queued_runs_execute_in_order(qtbot, make_window):
    window = make_window()
    ed = window.editor
    grad = ed.add_node("ImageGradient", (0, 0))
    ed.set_input(grad, "width", 8)
    ed.set_input(grad, "height", 8)
    save = ed.add_node("SaveImage", (300, 0))
    ed.connect(grad, "image", save, "images")
    finished: list[str] = []
    window.runs.run_finished.connect(lambda run_id, status, error: finished.append(status))
    labels: list[str] = []
    window.runs.run_started.connect(lambda run_id: labels.append(window.runs.current_run.label))
    window.actions["run"].trigger()
    window.run_to([save])
    assert len(window.runs.queue) == 1 and "1 queued" in window.run_label.text()
    wait_until(qtbot, lambda: len(finished) == 2, 60)
    assert finished == ["done", "done"]
    assert labels == ["Run", f"Run to {save}"]


def test_an_invalid_graph_marks_the_nodes_at_fault(qtbot, make_window):
    window = make_window()
    save = window.editor.add_node("SaveImage", (0, 0))  # its IMAGE input is not connected
    window.actions["run"].trigger()
    wait_until(qtbot, lambda: not window.runs.busy, 60)
    assert window.runs.last_status == "invalid"
    state = window.scene.nodes[save].run_state
    assert state.state == "failed" and state.message.startswith("images: required IMAGE input")


def test_a_rerun_marks_nodes_behind_cached_results_not_needed(qtbot, make_window):
    window = make_window()
    ids = _gradient_graph(window)
    window.actions["run"].trigger()
    wait_until(qtbot, lambda: not window.runs.busy, 60)
    window.editor.set_input(ids["save"], "filename_prefix", "again")  # only the save node changed
    window.actions["run"].trigger()
    wait_until(qtbot, lambda: not window.runs.busy, 60)
    assert window.runs.last_status == "done"
    assert _state(window, ids["save"]) == "done"
    grad = window.scene.nodes[ids["grad"]]
    assert grad.run_state.state == "cached" and grad.run_state.badge() == "cached"
    window.actions["run"].trigger()  # nothing changed: the save node is read, the gradient not
    wait_until(qtbot, lambda: not window.runs.busy, 60)
    assert grad.run_state.state == "not_needed" and grad.run_state.badge() == "not needed"
    window.scene.clearSelection()
    grad.setSelected(True)
    assert "not needed" in window.inspector.state_label.text()
    assert any("not needed" in m for _, m in window.log_panel.lines)

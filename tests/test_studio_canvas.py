"""The canvas driven like an artist drives it: real mouse events on the view's viewport."""

from __future__ import annotations

import json

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from app import theme
from app.palette import search_specs
from app.widget_paint import ARROW_W, DICE_W
from tests.conftest_qt import (ScriptedDialogs, canvas_registry, click, click_widget,  # noqa: F401
                               double_click, drag, drag_in_view, make_window, release, socket_pos,
                               widget_rect)


def _window(make_window, canvas_registry, **kw):
    return make_window(registry=canvas_registry, **kw)


def _add(window, type_name, x, y):
    return window.editor.add_node(type_name, (x, y))


def test_fuzzy_search_matches_name_category_and_description(canvas_registry):
    specs = canvas_registry.specs()
    assert [s.name for s in search_specs(specs, "dec")][0] == "DecodeVideo"
    assert [s.name for s in search_specs(specs, "nslat")][0] == "NoiseLatent"  # subsequence
    assert [s.name for s in search_specs(specs, "filters")] == ["Blur"]  # category
    assert [s.name for s in search_specs(specs, "gaussian")] == ["Blur"]  # description
    assert search_specs(specs, "zzzq") == []


def test_double_click_opens_palette_and_adds_the_chosen_node(qtbot, make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view = window.view
    spot = view.mapToScene(view.viewport().rect().center())
    double_click(view, spot)
    assert view.palette.isVisible()
    qtbot.keyClicks(view.palette.search, "noise")
    assert view.palette.current_names()[0] == "NoiseLatent"
    qtbot.keyClick(view.palette.search, Qt.Key_Return)
    assert not view.palette.isVisible()
    nodes = window.model.workflow.nodes
    assert [n.type for n in nodes.values()] == ["NoiseLatent"]
    node_id = next(iter(nodes))
    x, y = window.model.pos_of(node_id)
    assert abs(x - (spot.x() - 20)) <= 1 and abs(y - (spot.y() - 12)) <= 1
    assert nodes[node_id].inputs["frames"] == 17  # widget defaults are written explicitly
    window.undo_stack.undo()
    assert not window.model.workflow.nodes and not window.scene.nodes


def test_tab_palette_filters_by_category_word(qtbot, make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    window.view.setFocus()
    qtbot.keyClick(window.view, Qt.Key_Tab)
    assert window.view.palette.isVisible()
    qtbot.keyClicks(window.view.palette.search, "vae")
    assert window.view.palette.current_names() == ["DecodeVideo"]


def test_drag_between_sockets_links_them_and_undo_redo(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    a = _add(window, "NoiseLatent", 0, 0)
    b = _add(window, "DecodeVideo", 400, 0)
    drag(window.view, socket_pos(window, a, "latent", True), socket_pos(window, b, "latent", False))
    links = [str(l) for l in window.model.workflow.links]
    assert links == [f"{a}.latent -> {b}.latent"]
    assert len(window.scene.links) == 1
    window.undo_stack.undo()
    assert window.model.workflow.links == [] and not window.scene.links
    window.undo_stack.redo()
    assert [str(l) for l in window.model.workflow.links] == links


def test_incompatible_socket_refuses_with_the_reason_shown(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view = window.view
    a = _add(window, "NoiseLatent", 0, 0)
    b = _add(window, "WriteVideo", 400, 0)
    target = socket_pos(window, b, "video", False)
    drag(view, socket_pos(window, a, "latent", True), target, release_at_end=False)
    assert view.toast.isVisible()
    assert view.toast.text() == "needs VIDEO, got LATENT"
    assert view.link_drag.wire.pen().style() == Qt.DashLine
    assert view.link_drag.wire.pen().color() == theme.LINK_DRAG_BAD
    release(view, target)
    assert window.model.workflow.links == []
    assert "needs VIDEO, got LATENT" in window.statusBar().currentMessage()
    assert window.undo_stack.count() == 2  # the two adds only: a refused link is no edit


def test_dragging_from_a_linked_input_relinks_or_detaches(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view = window.view
    a = _add(window, "NoiseLatent", 0, 0)
    b = _add(window, "DecodeVideo", 400, 0)
    c = _add(window, "DecodeVideo", 400, 300)
    window.editor.connect(a, "latent", b, "latent")
    drag(view, socket_pos(window, b, "latent", False), socket_pos(window, c, "latent", False))
    assert [str(l) for l in window.model.workflow.links] == [f"{a}.latent -> {c}.latent"]
    drag(view, socket_pos(window, c, "latent", False), QPointF(700, 700))
    assert window.model.workflow.links == []
    window.undo_stack.undo()
    assert [str(l) for l in window.model.workflow.links] == [f"{a}.latent -> {c}.latent"]


def test_wire_dropped_on_empty_canvas_offers_compatible_nodes_and_connects(qtbot, make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view = window.view
    a = _add(window, "NoiseLatent", 0, 0)
    drop = socket_pos(window, a, "latent", True) + QPointF(250, 40)
    drag(view, socket_pos(window, a, "latent", True), drop)
    assert view.palette.isVisible()
    assert view.palette.current_names() == ["DecodeVideo"]  # the only type taking a LATENT
    qtbot.keyClick(view.palette.search, Qt.Key_Return)
    new = [n for n in window.model.workflow.nodes if n != a]
    assert len(new) == 1
    assert [str(l) for l in window.model.workflow.links] == [f"{a}.latent -> {new[0]}.latent"]
    window.undo_stack.undo()  # one step removes the node and its wire
    assert list(window.model.workflow.nodes) == [a] and window.model.workflow.links == []


def test_number_drag_is_one_undo_step_and_arrows_step(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view = window.view
    a = _add(window, "NoiseLatent", 0, 0)
    rect = widget_rect(window, a, "frames")
    start = rect.center()
    drag(view, start, start + QPointF(61, 0), steps=12)
    inputs = window.model.workflow.nodes[a].inputs
    assert inputs["frames"] == 17 + 10 * 4  # 6 scene units per step, step 4
    count = window.undo_stack.count()
    window.undo_stack.undo()
    assert inputs["frames"] == 17 and window.undo_stack.count() == count
    window.undo_stack.redo()
    assert inputs["frames"] == 57
    click(view, QPointF(rect.right() - ARROW_W / 2, rect.center().y()))
    assert inputs["frames"] == 61
    click(view, QPointF(rect.left() + ARROW_W / 2, rect.center().y()))
    assert inputs["frames"] == 57
    rect = widget_rect(window, a, "strength")
    drag(view, rect.center(), rect.center() + QPointF(600, 0))
    assert inputs["strength"] == 1.0  # clamped to the range


def test_click_opens_a_real_editor_and_commits_clamped_values(qtbot, make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view = window.view
    a = _add(window, "NoiseLatent", 0, 0)
    click(view, widget_rect(window, a, "strength").center())
    editor = view.inline_editor
    assert editor is not None and editor.widget.isVisible()
    editor.set_text("0.35")
    qtbot.keyClick(editor.widget, Qt.Key_Return)
    assert window.model.workflow.nodes[a].inputs["strength"] == 0.35
    click(view, widget_rect(window, a, "strength").center())
    view.inline_editor.set_text("7")
    qtbot.keyClick(view.inline_editor.widget, Qt.Key_Return)
    assert window.model.workflow.nodes[a].inputs["strength"] == 1.0
    p = _add(window, "Prompt", 0, 400)
    click(view, widget_rect(window, p, "text").center())
    assert view.inline_editor.multiline
    view.inline_editor.set_text("a blue square\nmoving left")
    qtbot.keyClick(view.inline_editor.widget, Qt.Key_Return)  # a new line, not a commit
    assert window.model.workflow.nodes[p].inputs["text"] == "a red circle"
    view.inline_editor.set_text("a blue square\nmoving left")
    click(view, QPointF(-400, -400))  # clicking the canvas commits
    assert window.model.workflow.nodes[p].inputs["text"] == "a blue square\nmoving left"
    window.undo_stack.undo()
    assert window.model.workflow.nodes[p].inputs["text"] == "a red circle"


def test_choice_toggle_and_seed_randomize(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view = window.view
    a = _add(window, "NoiseLatent", 0, 0)
    inputs = window.model.workflow.nodes[a].inputs
    click(view, widget_rect(window, a, "sampler").center())
    menu = view.active_menu
    assert [act.text() for act in menu.actions()] == ["euler", "heun", "dpm"]
    next(act for act in menu.actions() if act.text() == "heun").trigger()
    menu.close()
    assert inputs["sampler"] == "heun"
    click(view, widget_rect(window, a, "tiled").center())
    assert inputs["tiled"] is True
    seed = widget_rect(window, a, "seed")
    click(view, QPointF(seed.right() - DICE_W / 2, seed.center().y()))
    assert window.model.layout_of(a)["randomize"] == ["seed"]
    assert inputs["seed"] == 0
    assert window.editor.randomize_seeds() == 1
    assert inputs["seed"] != 0 and 0 <= inputs["seed"] <= 2**32 - 1


def test_model_and_media_file_widgets(tmp_path, make_window, canvas_registry):
    (tmp_path / "models" / "vae" / "wan").mkdir(parents=True)
    (tmp_path / "models" / "vae" / "wan" / "wan_vae.safetensors").write_bytes(b"x")
    clip = tmp_path / "cover.png"
    dialogs = ScriptedDialogs(media_file=str(clip))
    window = _window(make_window, canvas_registry, dialogs=dialogs)
    window.settings.model_roots = [str(tmp_path / "models")]
    view = window.view
    d = _add(window, "DecodeVideo", 0, 0)
    click(view, widget_rect(window, d, "vae_name").center())
    names = [act.text() for act in view.active_menu.actions()]
    assert "wan/wan_vae.safetensors" in names
    next(act for act in view.active_menu.actions() if act.text() == "wan/wan_vae.safetensors").trigger()
    view.active_menu.close()
    assert window.model.workflow.nodes[d].inputs["vae_name"] == "wan/wan_vae.safetensors"
    w = _add(window, "WriteVideo", 400, 0)
    click(view, widget_rect(window, w, "cover").center())
    assert window.model.workflow.nodes[w].inputs["cover"] == str(clip)
    assert "media_file" in dialogs.kinds()


def test_copy_paste_within_and_between_windows_as_json(make_window, canvas_registry):
    one = _window(make_window, canvas_registry)
    two = _window(make_window, canvas_registry)
    a = _add(one, "NoiseLatent", 0, 0)
    b = _add(one, "DecodeVideo", 400, 0)
    one.editor.connect(a, "latent", b, "latent")
    one.editor.set_input(a, "frames", 33)
    for nid in (a, b):
        one.scene.nodes[nid].setSelected(True)
    assert one.view.copy_selection() == 2
    text = QGuiApplication.clipboard().text()
    doc = json.loads(text)
    assert doc["format"] == "reelgraph.workflow" and set(doc["nodes"]) == {a, b}
    assert len(doc["links"]) == 1
    pasted = two.view.paste(QPointF(100, 100))
    assert sorted(two.model.workflow.nodes[n].type for n in pasted) == ["DecodeVideo", "NoiseLatent"]
    assert len(two.model.workflow.links) == 1
    assert any(n.inputs.get("frames") == 33 for n in two.model.workflow.nodes.values())
    again = one.view.paste(QPointF(0, 400))
    assert set(again).isdisjoint({a, b}) and len(one.model.workflow.nodes) == 4
    assert len(one.model.workflow.links) == 2
    # plain JSON text typed elsewhere pastes too
    QApplication.clipboard().setText(json.dumps({"format": "reelgraph.workflow", "version": 2,
                                                 "nodes": {"p": {"type": "Prompt", "inputs": {"text": "hi"}}}}))
    ids = two.view.paste(QPointF(0, 0))
    assert two.model.workflow.nodes[ids[0]].inputs == {"text": "hi"}


def test_selection_rubber_band_ctrl_and_shift(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view, scene = window.view, window.scene
    a = _add(window, "Prompt", 0, 0)
    b = _add(window, "Blur", 300, 0)
    c = _add(window, "Blur", 0, 400)
    drag(view, QPointF(-60, -60), QPointF(560, 200))
    assert sorted(scene.selected_node_ids()) == sorted([a, b])
    title_c = scene.nodes[c].mapToScene(QPointF(100, 12))
    click(view, title_c, modifiers=Qt.ControlModifier)
    assert sorted(scene.selected_node_ids()) == sorted([a, b, c])
    click(view, title_c, modifiers=Qt.ControlModifier)
    assert sorted(scene.selected_node_ids()) == sorted([a, b])
    click(view, scene.nodes[a].mapToScene(QPointF(100, 12)))
    assert scene.selected_node_ids() == [a]
    click(view, title_c, modifiers=Qt.ShiftModifier)
    assert sorted(scene.selected_node_ids()) == sorted([a, c])


def test_move_delete_duplicate_with_undo(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view, scene, wf = window.view, window.scene, window.model.workflow
    a = _add(window, "NoiseLatent", 0, 0)
    b = _add(window, "DecodeVideo", 400, 0)
    window.editor.connect(a, "latent", b, "latent")
    title = scene.nodes[b].mapToScene(QPointF(120, 12))
    drag(view, title, title + QPointF(100, 50))
    assert window.model.pos_of(b) == (500.0, 50.0)
    link_item = scene.links[wf.links[0]]
    assert link_item.path().pointAtPercent(1.0) == socket_pos(window, b, "latent", False)
    window.undo_stack.undo()
    assert window.model.pos_of(b) == (400.0, 0.0)
    assert scene.nodes[b].pos() == QPointF(400, 0)
    before = wf.to_json()
    scene.clearSelection()
    scene.nodes[a].setSelected(True)
    window.actions["delete"].trigger()
    assert a not in wf.nodes and wf.links == []
    window.undo_stack.undo()
    assert wf.to_json() == before
    scene.clearSelection()
    scene.nodes[b].setSelected(True)
    window.actions["duplicate"].trigger()
    copy_id = scene.selected_node_ids()[0]
    assert copy_id != b and wf.nodes[copy_id].type == "DecodeVideo"
    assert any(l.to_node == copy_id and l.from_node == a for l in wf.links)  # input links kept


def test_groups_collapse_bypass_mute(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view, scene, model = window.view, window.scene, window.model
    a = _add(window, "NoiseLatent", 0, 0)
    b = _add(window, "DecodeVideo", 400, 0)
    for nid in (a, b):
        scene.nodes[nid].setSelected(True)
    window.actions["group"].trigger()
    (group,) = model.groups()
    gx, gy, gw, gh = group["rect"]
    assert gx < 0 and gy < 0 and gx + gw > scene.nodes[b].sceneBoundingRect().right() - 10
    title = scene.groups[0].mapToScene(QPointF(60, 12))
    drag(view, title, title + QPointF(0, 200))
    assert model.groups()[0]["rect"][1] == gy + 200
    assert model.pos_of(a) == (0.0, 200.0) and model.pos_of(b) == (400.0, 200.0)
    window.undo_stack.undo()
    assert model.pos_of(a) == (0.0, 0.0) and model.groups()[0]["rect"][1] == gy
    scene.clearSelection()
    click(view, scene.nodes[a].mapToScene(QPointF(10, 12)))  # the collapse arrow
    assert model.layout_of(a)["collapsed"] is True
    assert scene.nodes[a].body_rect().height() == theme.TITLE_H
    scene.clearSelection()
    scene.nodes[b].setSelected(True)
    window.actions["bypass"].trigger()
    assert model.workflow.nodes[b].mode == "bypass"
    window.actions["mute"].trigger()
    assert model.workflow.nodes[b].mode == "mute"
    window.actions["mute"].trigger()
    assert model.workflow.nodes[b].mode == "normal"
    assert "mode" not in model.workflow.to_json()["nodes"][b]
    window.editor.set_color([b], "#3d7a4a")
    assert model.layout_of(b)["color"] == "#3d7a4a" and scene.nodes[b].title_color.name() == "#3d7a4a"
    window.undo_stack.undo()
    assert "color" not in model.layout_of(b)
    assert scene.nodes[b].title_color == theme.category_color("vae")


def test_zoom_keeps_the_point_under_the_cursor_and_pan_and_frame(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view = window.view
    for i in range(6):
        _add(window, "Blur", i * 900, i * 500)
    cursor = view.viewport().rect().center() + view.viewport().rect().topLeft() + \
        (view.viewport().rect().bottomRight() - view.viewport().rect().center()) / 2
    anchor = view.mapToScene(cursor)
    view.zoom_at(2.0, cursor)
    assert abs(view.zoom() - 2.0) < 1e-6
    after = view.mapToScene(cursor)
    assert abs(after.x() - anchor.x()) < 2 and abs(after.y() - anchor.y()) < 2
    center = view.viewport().rect().center()
    before = view.mapToScene(center)
    drag_in_view(view, center, center + QPoint(100, 60), button=Qt.MiddleButton)
    moved = view.mapToScene(center)  # the canvas follows the hand: 100 px at zoom 2 = 50 units
    assert abs((before.x() - moved.x()) - 50) < 2 and abs((before.y() - moved.y()) - 30) < 2
    window.actions["frame_all"].trigger()
    visible = view.visible_scene_rect()
    assert all(visible.contains(item.sceneBoundingRect()) for item in window.scene.nodes.values())
    minimap = view.minimap
    assert minimap.isVisible()  # and still in the bottom-right corner after all that scrolling
    corner = view.viewport().geometry().bottomRight()
    assert abs(minimap.geometry().right() - corner.x()) <= 12 and abs(minimap.geometry().bottom() - corner.y()) <= 12
    view.set_zoom(1.0)
    minimap.recompute()
    target = window.scene.nodes["blur6"].sceneBoundingRect().center()
    s, off = minimap._mapping()
    click_widget(minimap, QPoint(round(target.x() * s + off.x()), round(target.y() * s + off.y())))
    center = view.visible_scene_rect().center()
    assert abs(center.x() - target.x()) < 2 / s and abs(center.y() - target.y()) < 2 / s


def test_full_undo_and_redo_restore_documents_exactly(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    stack, wf = window.undo_stack, window.model.workflow
    empty = wf.to_json()
    a = _add(window, "NoiseLatent", 0, 0)
    b = _add(window, "DecodeVideo", 400, 0)
    c = _add(window, "WriteVideo", 800, 0)
    window.editor.connect(a, "latent", b, "latent")
    window.editor.connect(b, "video", c, "video")
    window.editor.set_input(a, "seed", 1234)
    window.editor.toggle_mode([b], "bypass")
    window.editor.toggle_collapsed([c])
    window.editor.set_title(a, "Noise for shot 3")
    window.editor.delete([b])
    final = wf.to_json()
    while stack.canUndo():
        stack.undo()
    undone = wf.to_json()
    assert undone["layout"].pop("nodes") == {}  # an empty side table is the only trace left
    assert undone == empty and not window.scene.nodes
    while stack.canRedo():
        stack.redo()
    assert wf.to_json() == final
    assert [i.node_id for i in window.scene.nodes.values()] == list(final["nodes"])


def test_context_menu_adds_nodes_by_category(qtbot, make_window, canvas_registry):
    from PySide6.QtGui import QContextMenuEvent
    window = _window(make_window, canvas_registry)
    view = window.view
    at = view.viewport().rect().center()
    event = QContextMenuEvent(QContextMenuEvent.Mouse, at, view.viewport().mapToGlobal(at))
    QApplication.sendEvent(view.viewport(), event)
    menu = view.active_menu
    add_menu = menu.actions()[0].menu()
    categories = {a.text(): a.menu() for a in add_menu.actions()}
    assert set(categories) == {"image", "io", "latent", "text", "vae"}
    filters = {a.text(): a.menu() for a in categories["image"].actions()}["filters"]
    (blur,) = filters.actions()
    blur.trigger()
    menu.close()
    (node,) = window.model.workflow.nodes.values()
    assert node.type == "Blur"
    x, y = window.model.pos_of(node.id)
    spot = view.mapToScene(at)
    assert abs(x - (spot.x() - 20)) <= 1 and abs(y - (spot.y() - 12)) <= 1


def test_space_drag_pans(qtbot, make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view = window.view
    view.setFocus()
    center = view.viewport().rect().center()
    before = view.mapToScene(center)
    qtbot.keyPress(view, Qt.Key_Space)
    drag_in_view(view, center, center + QPoint(-80, 40))
    qtbot.keyRelease(view, Qt.Key_Space)
    after = view.mapToScene(center)
    assert abs((after.x() - before.x()) - 80) < 2 and abs((after.y() - before.y()) + 40) < 2
    assert window.scene.selectedItems() == []  # a pan is not a rubber band


def test_inspector_edits_are_undoable_and_follow_the_canvas(qtbot, make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    a = _add(window, "NoiseLatent", 0, 0)
    d = _add(window, "DecodeVideo", 400, 0)
    window.editor.connect(a, "latent", d, "latent")
    window.scene.nodes[a].setSelected(True)
    inspector = window.inspector
    assert inspector.node_id == a
    frames, _ = inspector.editors["frames"]
    frames.setValue(25)
    frames.editingFinished.emit()
    assert window.model.workflow.nodes[a].inputs["frames"] == 25
    sampler, _ = inspector.editors["sampler"]
    sampler.setCurrentText("dpm")
    sampler.activated.emit(sampler.currentIndex())
    assert window.model.workflow.nodes[a].inputs["sampler"] == "dpm"
    window.undo_stack.undo()
    window.undo_stack.undo()
    assert window.model.workflow.nodes[a].inputs["frames"] == 17 and frames.value() == 17
    window.editor.set_input(a, "strength", 0.25)  # an edit made elsewhere shows up
    assert inspector.editors["strength"][0].value() == 0.25
    inspector.seed_controls["seed"].setCurrentText("randomize")
    assert window.model.layout_of(a)["randomize"] == ["seed"]
    window.scene.clearSelection()
    window.scene.nodes[d].setSelected(True)
    link_label, _ = inspector.editors["latent"]
    assert link_label.text() == f"⟵ {a}.latent"


def test_keyboard_verbs_act_on_the_canvas_only_when_it_has_focus(qtbot, make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view = window.view
    a = _add(window, "Prompt", 0, 0)
    window.scene.nodes[a].setSelected(True)
    window.activateWindow()  # shortcuts follow the focus of the active window
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    window.log_panel.setFocus()
    qtbot.keyClick(window.log_panel, Qt.Key_Delete)
    qtbot.keyClick(window.log_panel, Qt.Key_X)
    assert a in window.model.workflow.nodes  # keys in the log never delete nodes
    view.setFocus()
    qtbot.keyClick(view, Qt.Key_X)
    assert a not in window.model.workflow.nodes
    qtbot.keyClick(view, Qt.Key_Z, Qt.ControlModifier)
    assert a in window.model.workflow.nodes
    window.scene.nodes[a].setSelected(True)
    qtbot.keyClick(view, Qt.Key_D, Qt.ControlModifier)
    assert len(window.model.workflow.nodes) == 2


def test_rename_node_and_group_in_place(qtbot, make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view, scene, model = window.view, window.scene, window.model
    a = _add(window, "Blur", 0, 0)
    double_click(view, scene.nodes[a].mapToScene(QPointF(120, 12)))
    assert view.inline_editor.text() == "Blur"
    view.inline_editor.set_text("Soften highlights")
    qtbot.keyClick(view.inline_editor.widget, Qt.Key_Return)
    assert model.node(a).title == "Soften highlights" and scene.nodes[a]._title == "Soften highlights"
    scene.nodes[a].setSelected(True)
    view.group_selection()
    double_click(view, scene.groups[0].mapToScene(QPointF(80, 12)))
    view.inline_editor.set_text("Look dev")
    qtbot.keyClick(view.inline_editor.widget, Qt.Key_Return)
    assert model.groups()[0]["title"] == "Look dev" and scene.groups[0].title == "Look dev"
    window.undo_stack.undo()
    assert model.groups()[0]["title"] == "Group"
    window.undo_stack.undo()
    assert model.groups() == [] and scene.groups == []
    window.undo_stack.undo()
    assert model.node(a).title is None


def test_resize_grip_and_deleting_a_selected_wire(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    view, scene, model = window.view, window.scene, window.model
    p = _add(window, "Prompt", 0, 0)
    item = scene.nodes[p]
    grip = item.mapToScene(item.grip_zone().center())
    text_before = next(w for w in item.widget_slots if w.name == "text").rect.height()
    drag(view, grip, grip + QPointF(120, 80))
    width, height = model.layout_of(p)["size"]
    assert abs(width - (theme.NODE_WIDTH + 120)) <= 2 and height > item.body_rect().height() - 2
    assert next(w for w in item.widget_slots if w.name == "text").rect.height() > text_before + 70
    window.undo_stack.undo()
    assert "size" not in model.layout_of(p) and item.body_rect().width() == theme.NODE_WIDTH
    a = _add(window, "NoiseLatent", 0, 400)
    b = _add(window, "DecodeVideo", 500, 400)
    window.editor.connect(a, "latent", b, "latent")
    link_item = scene.links[model.workflow.links[0]]
    scene.clearSelection()
    click(view, link_item.path().pointAtPercent(0.5))
    assert scene.selected_links() == [model.workflow.links[0]]
    window.actions["delete"].trigger()
    assert model.workflow.links == [] and set(model.workflow.nodes) == {p, a, b}


def test_tidy_up_removes_overlaps_in_dependency_columns(make_window, canvas_registry):
    window = _window(make_window, canvas_registry)
    scene, model = window.scene, window.model
    ids = [_add(window, t, 0, i * 40) for i, t in enumerate(["Prompt", "NoiseLatent", "DecodeVideo", "WriteVideo"])]
    p, n, d, w = ids
    window.editor.connect(n, "latent", d, "latent")
    window.editor.connect(d, "video", w, "video")
    window.actions["tidy"].trigger()
    rects = {i: scene.nodes[i].sceneBoundingRect() for i in ids}
    assert not any(rects[a].intersects(rects[b]) for a in ids for b in ids if a < b)
    x = {i: model.pos_of(i)[0] for i in ids}
    assert x[p] == x[n] < x[d] < x[w]  # sources first, then by depth
    assert model.pos_of(p)[1] < model.pos_of(n)[1]  # the previous vertical order is kept
    window.undo_stack.undo()
    assert [model.pos_of(i) for i in ids] == [(0.0, i * 40.0) for i in range(4)]


def test_every_socket_type_has_its_own_colour():
    from engine.sockets import SocketType

    missing = [t.value for t in SocketType if t.value not in theme.SOCKET_COLORS]
    assert not missing, f"add a colour to app/theme.py SOCKET_COLORS for {missing}"
    assert theme.MODEL_SOCKETS <= set(theme.SOCKET_COLORS)


def test_example_workflows_open_with_no_node_on_top_of_another(qapp):
    """The examples are an artist's first look: nodes as laid out in each file must not overlap
    (a node gaining an input makes it taller, so this catches layouts that went stale)."""
    from pathlib import Path

    from PySide6.QtCore import QRectF

    from app.node_layout import layout_node
    from engine.document import load_workflow
    from engine.registry import default_registry

    registry = default_registry()
    for path in sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json")):
        wf = load_workflow(path)
        positions = wf.layout.get("nodes", {})
        incoming = wf.incoming()
        rects = {}
        for nid, node in wf.nodes.items():
            entry = positions.get(nid, {})
            if "pos" not in entry:
                continue
            outputs = [l.from_output for l in wf.links if l.from_node == nid]
            g = layout_node(node, registry.spec(node.type), entry,
                            set((incoming.get(nid) or {}).keys()), outputs, None, "")
            rects[nid] = QRectF(entry["pos"][0], entry["pos"][1], g.rect.width(), g.rect.height())
        ids = sorted(rects)
        overlaps = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]
                    if rects[a].intersects(rects[b])]
        assert not overlaps, f"{path.name}: {overlaps}"

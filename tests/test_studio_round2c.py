"""The studio, round 2 (issue 18), items 10 and 11 on the canvas: reroute dots, insert-on-wire,
Markdown notes (and the notes ComfyUI imports keep), Tidy Up inside groups, where new nodes and
the palette land, the zoom a graph opens at, and subgraphs (collapse, expand, library)."""

from __future__ import annotations

import json

from PySide6.QtCore import QPointF, QRectF

from engine.document import load_workflow
from app.annotations import NoteItem, RerouteItem
from tests.conftest_qt import (canvas_registry, double_click, drag, make_window,  # noqa: F401
                               ScriptedDialogs)


def _chain(window):
    ed = window.editor
    a = ed.add_node("Prompt", (0, 0))
    b = ed.add_node("NoiseLatent", (0, 300))
    c = ed.add_node("DecodeVideo", (700, 0))
    d = ed.add_node("WriteVideo", (1000, 0))
    ed.connect(b, "latent", c, "latent")
    ed.connect(c, "video", d, "video")
    return a, b, c, d


def test_reroute_dot_added_dragged_removed_and_saved(qtbot, make_window, canvas_registry, tmp_path):
    window = make_window(canvas_registry)
    a, b, c, d = _chain(window)
    link = next(l for l in window.model.workflow.links if l.to_node == c)
    item = window.scene.links[link]
    mid = item.path().pointAtPercent(0.5)
    window.view.centerOn(mid)
    double_click(window.view, mid)
    dots = window.scene.reroutes[link]
    assert len(dots) == 1 and abs(dots[0].pos().x() - round(mid.x())) <= 1
    assert item.path().elementCount() > 4  # the wire now runs through the dot
    drag(window.view, dots[0].pos(), dots[0].pos() + QPointF(0, 120))
    moved = window.scene.reroutes[link][0].pos()
    assert abs(moved.y() - (round(mid.y()) + 120)) <= 2
    path = tmp_path / "r.json"
    window.files.save_as() if False else window.model.workflow.save(path)
    saved = json.loads(path.read_text())["layout"]["reroutes"]
    assert saved[0]["link"]["to"] == {"node": c, "input": "latent"} and len(saved[0]["points"]) == 1
    assert set(json.loads(path.read_text())["nodes"]) == {a, b, c, d}  # no node was added for it
    window.undo_stack.undo()  # the drag
    window.undo_stack.undo()  # the dot
    assert link not in window.scene.reroutes
    window.undo_stack.redo()
    double_click(window.view, window.scene.reroutes[link][0].pos())
    assert link not in window.scene.reroutes


def test_insert_on_wire_relinks(qtbot, make_window):
    window = make_window()
    ed = window.editor
    a = ed.add_node("ImageGradient", (0, 0))
    s = ed.add_node("SaveImage", (900, 0))
    ed.connect(a, "image", s, "images")
    blur = ed.add_node("ImageBlur", (400, 400)) if window.registry.spec("ImageBlur") else \
        ed.add_node(next(sp.name for sp in window.registry.specs() if sp.name != "ImageGradient" and
                         any(i.type.value == "IMAGE" for i in sp.inputs) and
                         any(o.type.value == "IMAGE" for o in sp.outputs)), (400, 400))
    window.view.frame_all()
    wire = window.scene.links[window.model.workflow.links[0]]
    start = window.scene.nodes[blur].mapToScene(QPointF(120, 10))
    node_h = window.scene.nodes[blur].body_rect().height()
    end = wire.path().pointAtPercent(0.5) - QPointF(0, node_h / 2 - 10)
    drag(window.view, start, end)
    links = {(l.from_node, l.to_node) for l in window.model.workflow.links}
    assert links == {(a, blur), (blur, s)}
    window.undo_stack.undo()  # one step: move and relink
    assert {(l.from_node, l.to_node) for l in window.model.workflow.links} == {(a, s)}


def test_note_is_edited_saved_and_loaded(qtbot, make_window, canvas_registry, tmp_path):
    window = make_window(canvas_registry)
    _chain(window)
    window.view.centerOn(QPointF(400, 1200))  # an empty part of the canvas
    index = window.view.add_note_at(window.view.visible_scene_rect().center())
    note = window.scene.notes[index]
    assert isinstance(note, NoteItem) and note.scene_rect().intersects(window.view.visible_scene_rect())
    double_click(window.view, note.scene_rect().center())
    assert window.view.inline_editor is not None and window.view.inline_editor.multiline
    window.view.inline_editor.set_text("# Shot 12\n\n- **seed** 42 looks best")
    window.view.commit_editor()
    assert "Shot 12" in window.scene.notes[0].doc.toPlainText()
    assert "**" not in window.scene.notes[0].doc.toPlainText()  # rendered as Markdown
    path = tmp_path / "n.json"
    window.model.workflow.save(path)
    window.undo_stack.setClean()
    window.files.open(str(path))
    assert window.scene.notes[0].text.startswith("# Shot 12")
    window.scene.notes[0].setSelected(True)
    window.view.delete_selection()
    assert window.scene.notes == [] and "notes" not in window.model.workflow.layout


def test_imported_comfy_notes_are_shown(qtbot, make_window, canvas_registry):
    from engine.document import Workflow
    wf = Workflow()
    wf.layout["notes"] = [{"title": "Read me", "text": "Use **euler**", "markdown": True,
                           "comfy_id": "7", "pos": [10, 20], "size": [260, 120], "color": "#432"}]
    window = make_window(canvas_registry)
    window.load_workflow(wf, None)
    item = window.scene.notes[0]
    assert item.title == "Read me" and item.scene_rect() == QRectF(10, 20, 260, 120)
    assert item.doc.toPlainText().strip() == "Use euler"


def test_tidy_up_keeps_group_members_inside_and_frames(qtbot, make_window, canvas_registry):
    window = make_window(canvas_registry)
    a, b, c, d = _chain(window)
    window.editor.group_nodes(window.scene.nodes_bounding_rect([b, c]), "Latents")
    window.view.set_zoom(0.2)
    window.view.tidy_up()
    qtbot.wait(10)
    group = window.scene.groups[0].scene_rect()
    for nid in (b, c):
        assert group.contains(window.scene.nodes[nid].sceneBoundingRect().adjusted(5, 5, -5, -5))
    assert not group.contains(window.scene.nodes[d].sceneBoundingRect().center())
    assert window.view.zoom() >= 0.6  # reframed at a readable zoom
    assert window.view.visible_scene_rect().intersects(window.scene.nodes_bounding_rect())


def test_new_nodes_land_in_view_and_clear_of_the_minimap(qtbot, make_window, canvas_registry):
    window = make_window(canvas_registry)
    view = window.view
    corner = view.mapToScene(view.viewport().rect().bottomRight())
    nid = view.add_node_at("NoiseLatent", corner)
    rect = window.scene.nodes[nid].sceneBoundingRect()
    assert view.visible_scene_rect().contains(rect)
    assert not view.minimap_scene_rect().intersects(rect)
    far = view.add_node_at("Prompt", QPointF(99999, 99999))  # e.g. a stale cursor position
    assert view.visible_scene_rect().contains(window.scene.nodes[far].sceneBoundingRect())


def test_palette_is_clear_of_the_minimap_and_shows_whole_descriptions(qtbot, make_window):
    window = make_window()
    view = window.view
    view.open_palette(view.mapToScene(view.viewport().rect().bottomRight()))
    palette = view.palette
    minimap = view.minimap.geometry().translated(-view.viewport().pos())
    assert palette.isVisible() and not palette.geometry().intersects(minimap)
    longest = max(window.registry.specs(), key=lambda s: len(s.description))
    palette.search.setText(longest.name)
    assert palette.hint.text() == " ".join(longest.description.split())
    assert palette.hint.height() >= palette.hint.heightForWidth(palette.hint.width())


def test_a_graph_opens_at_100_percent_when_it_fits(qtbot, make_window, canvas_registry, tmp_path):
    window = make_window(canvas_registry)
    window.editor.add_node("Prompt", (0, 0))
    window.editor.add_node("Blur", (320, 0))
    window.model.workflow.save(tmp_path / "small.json")
    window.undo_stack.setClean()
    window.files.open(str(tmp_path / "small.json"))
    qtbot.wait(20)
    assert abs(window.view.zoom() - 1.0) < 1e-6
    for i in range(40):  # a graph far wider than the window: fitted, but never below the floor
        window.editor.add_node("Blur", (i * 400, 0))
    window.model.workflow.save(tmp_path / "big.json")
    window.undo_stack.setClean()
    window.files.open(str(tmp_path / "big.json"))
    qtbot.wait(20)
    assert abs(window.view.zoom() - 0.6) < 1e-6


def test_subgraph_collapse_expand_round_trip_through_save_and_load(qtbot, make_window, tmp_path):
    window = make_window()
    ed = window.editor
    sky = ed.add_node("ImageGradient", (0, 0))
    vig = ed.add_node("ImageGradient", (0, 300))
    blend = ed.add_node("ImageBlend", (350, 100))
    save = ed.add_node("SaveImage", (700, 100))
    ed.connect(sky, "image", blend, "image_a")
    ed.connect(vig, "image", blend, "image_b")
    ed.connect(blend, "image", save, "images")
    before = window.model.workflow.copy()
    for nid in (vig, blend):
        window.scene.nodes[nid].setSelected(True)
    inst = window.view.collapse_selection()
    assert inst in window.scene.nodes and set(window.model.workflow.nodes) == {sky, save, inst}
    item = window.scene.nodes[inst]
    assert [s.name for s in item.input_slots] == ["image_a"] and item.output_slots[0].name == "image"
    path = tmp_path / "sub.json"
    window.model.workflow.save(path)
    window.files.open(str(path))
    assert window.model.node(inst).subgraph in window.model.workflow.subgraphs
    assert len(window.scene.links) == 2
    window.scene.nodes[inst].setSelected(True)
    made = window.view.expand_selection()
    assert sorted(made) == sorted([vig, blend])
    wf = window.model.workflow
    assert {n: v.inputs for n, v in wf.nodes.items()} == {n: v.inputs for n, v in before.nodes.items()}
    assert set(wf.links) == set(before.links) and wf.subgraphs == {}
    window.undo_stack.undo()
    assert inst in window.model.workflow.nodes


def test_a_saved_subgraph_appears_in_the_palette(qtbot, make_window, tmp_path):
    window = make_window(dialogs=ScriptedDialogs(text="Vignette mix"))
    ed = window.editor
    g = ed.add_node("ImageGradient", (0, 0))
    blend = ed.add_node("ImageBlend", (350, 0))
    save = ed.add_node("SaveImage", (700, 0))
    ed.connect(g, "image", blend, "image_a")
    ed.connect(blend, "image", save, "images")
    inst, _ = ed.collapse_to_subgraph([g, blend], "Mix")
    window.view.save_subgraph(inst)
    window.view.open_palette(QPointF(0, 0))
    window.view.palette.search.setText("vignette mix")
    names = window.view.palette.current_names()
    assert names and names[0].startswith("library:")
    window.view.palette.choose_current()
    added = [n for n in window.model.workflow.nodes if n not in (inst, save)]
    assert len(added) == 1 and window.model.node(added[0]).subgraph is not None
    assert window.scene.nodes[added[0]].output_slots[0].type_name == "IMAGE"

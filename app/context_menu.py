"""Right-click menus of the canvas: a categorised "Add node" tree on empty canvas, and the verbs
for a node, a group frame or a wire under the cursor.

Menus are shown with `popup` (never `exec`), so they do not block and tests can trigger actions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QWidget

from engine.schema import NodeSpec

if TYPE_CHECKING:
    from app.view import GraphView

GROUP_COLORS = {"Blue": "#3f5f7f", "Green": "#3f7f4f", "Purple": "#6a4c93", "Red": "#8f3f3f",
                "Orange": "#8f6a2f", "Grey": "#555a63"}


NODE_COLORS = {"Red": "#9a3b3b", "Orange": "#a0662a", "Yellow": "#9a8a2a", "Green": "#3d7a4a",
               "Cyan": "#2f7f86", "Blue": "#3a5f9e", "Purple": "#6a4c93", "Black": "#202124"}


def add_node_menu(parent: QWidget, specs: list[NodeSpec], on_choose: Callable[[str], None]) -> QMenu:
    """Nested submenus following the category path ("video/conditioning" -> video > conditioning)."""
    menu = QMenu("Add node", parent)
    submenus: dict[tuple[str, ...], QMenu] = {(): menu}
    for spec in sorted(specs, key=lambda s: (s.category.lower(), s.title.lower())):
        path = tuple(p for p in spec.category.split("/") if p) or ("other",)
        for depth in range(1, len(path) + 1):
            key = path[:depth]
            if key not in submenus:
                submenus[key] = submenus[key[:-1]].addMenu(key[-1])
        action = submenus[path].addAction(spec.title)
        action.setToolTip(spec.description)
        action.setData(spec.name)
        action.triggered.connect(lambda _=False, n=spec.name: on_choose(n))
    menu.setToolTipsVisible(True)
    return menu


def canvas_menu(view: "GraphView", scene_pos: QPointF) -> QMenu:
    menu = QMenu(view)
    specs = view.gscene.model.registry.specs()
    menu.addMenu(add_node_menu(menu, specs, lambda name: view.add_node_at(name, scene_pos)))
    menu.addAction("Search nodes…\tTab", lambda: view.open_palette(scene_pos))
    menu.addSeparator()
    menu.addAction("Paste\tCtrl+V", lambda: view.paste(scene_pos))
    selected = view.gscene.selected_node_ids()
    if selected:
        menu.addAction("Group selected\tCtrl+G", view.group_selection)
    menu.addAction("Add empty group", lambda: view.gscene.editor.group_nodes(
        QRectF(scene_pos.x(), scene_pos.y(), 300, 200)))
    menu.addAction("Add note (Markdown)", lambda: view.add_note_at(scene_pos))
    menu.addSeparator()
    menu.addAction("Frame all\tHome", view.frame_all)
    return menu


def node_menu(view: "GraphView", node_id: str) -> QMenu:
    editor = view.gscene.editor
    ids = view.gscene.selected_node_ids() or [node_id]
    menu = QMenu(view)
    menu.addAction("Run to here", lambda: view.run_to_requested.emit(node_id))
    menu.addSeparator()
    menu.addAction("Rename…\tF2", lambda: editor.rename_node(node_id))
    mode = view.gscene.model.node(node_id).mode
    bypass = menu.addAction("Bypass\tCtrl+B", lambda: editor.toggle_mode(ids, "bypass"))
    bypass.setCheckable(True)
    bypass.setChecked(mode == "bypass")
    mute = menu.addAction("Mute\tCtrl+M", lambda: editor.toggle_mode(ids, "mute"))
    mute.setCheckable(True)
    mute.setChecked(mode == "mute")
    menu.addAction("Collapse / expand\tC", lambda: editor.toggle_collapsed(ids))
    colors = menu.addMenu("Color")
    colors.addAction("Category default", lambda: editor.set_color(ids, None))
    for name, value in NODE_COLORS.items():
        colors.addAction(name, lambda v=value: editor.set_color(ids, v))
    menu.addSeparator()
    menu.addAction("Copy\tCtrl+C", view.copy_selection)
    menu.addAction("Duplicate\tCtrl+D", view.duplicate_selection)
    menu.addAction("Group selected\tCtrl+G", view.group_selection)
    menu.addSeparator()
    menu.addAction("Collapse to subgraph\tCtrl+Shift+G", view.collapse_selection)
    if view.gscene.model.node(node_id).subgraph is not None:
        menu.addAction("Expand subgraph\tCtrl+Alt+G", view.expand_selection)
        menu.addAction("Save subgraph to library…", lambda: view.save_subgraph(node_id))
    menu.addSeparator()
    menu.addAction("Delete\tDel", lambda: editor.delete(ids))
    return menu


def group_menu(view: "GraphView", index: int) -> QMenu:
    editor = view.gscene.editor
    menu = QMenu(view)
    menu.addAction("Rename group…", lambda: editor.rename_group(index))
    colors = menu.addMenu("Color")
    for name, value in GROUP_COLORS.items():
        action = QAction(name, colors)
        action.triggered.connect(lambda _=False, v=value: editor.edit_group(index, color=v))
        colors.addAction(action)
    menu.addSeparator()
    menu.addAction("Remove group (keep nodes)", lambda: editor.remove_group(index))
    return menu


def link_menu(view: "GraphView", link, scene_pos: QPointF) -> QMenu:
    editor = view.gscene.editor
    menu = QMenu(view)
    menu.addAction("Add reroute dot here\t(double-click)",
                   lambda: editor.add_reroute(link, (scene_pos.x(), scene_pos.y())))
    if editor.reroute_points(link):
        menu.addAction("Remove this wire's dots", lambda: editor.set_reroute_points(link, [], "Remove reroute dots"))
    menu.addAction("Delete wire", lambda: editor.disconnect(link))
    return menu

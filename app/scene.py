"""The canvas scene: one NodeItem per node, one LinkItem per link, GroupItems behind them, kept in
step with the GraphModel through its signals.

Invariants:
- Items are created and removed only in response to model signals (so undo/redo, paste and file
  loads all draw through one path); the scene never edits the Workflow itself. Gestures that end
  in an edit (moving, resizing, dragging a group) push undo commands through `editor`.
- Scene index is the BSP tree (STYLE.md: NoIndex is 10-20x slower at hit-testing).
- Run state and thumbnails are studio-only decoration and are never written to the document.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QLineF, QPointF, QRectF, Qt
from PySide6.QtGui import QImage, QPainter, QPen, QUndoStack
from PySide6.QtWidgets import QGraphicsScene

from engine.document import Link
from app import theme
from app.editing import GraphEditor
from app.annotations import NoteItem, RerouteItem, link_of, note_rect, points_of
from app.commands import MoveNodesCommand, SetGroupsCommand, SetLayoutCommand
from app.graph_model import UNSET, GraphModel
from app.group_item import GroupItem
from app.link_item import LinkItem
from app.node_item import NodeItem
from app.run_state import NodeRunState
from app.socket_item import SocketSlot

if TYPE_CHECKING:
    from app.widget_editors import WidgetController


class GraphScene(QGraphicsScene):
    def __init__(self, model: GraphModel, undo_stack: QUndoStack):
        super().__init__()
        self.model = model
        self.undo_stack = undo_stack
        self.editor = GraphEditor(model, undo_stack)
        self.widgets: "WidgetController | None" = None  # set by the view; None when headless
        self.rename_handler: Callable[[str, str, Callable[[str], None]], None] | None = None
        self.drag_hint: Callable[[str, SocketSlot], int] | None = None
        self.nodes: dict[str, NodeItem] = {}
        self.links: dict[Link, LinkItem] = {}
        self.groups: list[GroupItem] = []
        self.notes: list[NoteItem] = []
        self.reroutes: dict[Link, list[RerouteItem]] = {}  # dots of each wire, output to input
        self.note_resizing: NoteItem | None = None
        self._note_resize_origin: tuple | None = None
        self._insert_hint: LinkItem | None = None
        self._node_links: dict[str, set[Link]] = {}
        self._press_positions: dict[str, QPointF] = {}
        self._reroute_keys: set[Link] = set()  # wires with an entry in layout["reroutes"]
        self._press_annotations: dict = {}  # notes / reroute dots being dragged -> start position
        self.resizing: NodeItem | None = None
        self._resize_origin: tuple | None = None
        self._group_drag: dict | None = None
        self.setItemIndexMethod(QGraphicsScene.BspTreeIndex)
        self.setSceneRect(QRectF(-20000, -20000, 40000, 40000))
        model.node_added.connect(self._on_node_added)
        model.node_removed.connect(self._on_node_removed)
        model.node_changed.connect(self._on_node_changed)
        model.node_geometry_changed.connect(self.node_geometry_changed)
        model.node_moved.connect(self._on_node_moved)
        model.link_added.connect(self._on_link_added)
        model.link_removed.connect(self._on_link_removed)
        model.groups_changed.connect(self._rebuild_groups)
        model.notes_changed.connect(self._rebuild_notes)
        model.reroutes_changed.connect(self._rebuild_reroutes)
        model.reset.connect(self.rebuild)
        self.rebuild()

    # ---- building -----------------------------------------------------------------------------
    def rebuild(self) -> None:
        dots = [d for items in self.reroutes.values() for d in items]
        for item in list(self.nodes.values()) + list(self.links.values()) + self.groups + self.notes + dots:
            self.removeItem(item)
        self.nodes, self.links, self.groups, self._node_links = {}, {}, [], {}
        self.notes, self.reroutes = [], {}
        for nid in self.model.workflow.nodes:
            self._on_node_added(nid)
        self._rebuild_reroutes(update=False)
        for link in self.model.workflow.links:
            self._on_link_added(link)
        self._rebuild_groups()
        self._rebuild_notes()

    def _on_node_added(self, node_id: str) -> None:
        item = NodeItem(self, node_id)
        x, y = self.model.pos_of(node_id)
        item.setPos(x, y)
        self.nodes[node_id] = item
        self._node_links.setdefault(node_id, set())
        self.addItem(item)

    def _on_node_removed(self, node_id: str) -> None:
        item = self.nodes.pop(node_id, None)
        self._node_links.pop(node_id, None)
        if item is not None:
            self.removeItem(item)

    def _on_node_changed(self, node_id: str) -> None:
        item = self.nodes.get(node_id)
        if item is not None:
            item.refresh()
            self._update_links_of(node_id)

    def node_geometry_changed(self, node_id: str) -> None:
        self._on_node_changed(node_id)

    def _on_node_moved(self, node_id: str) -> None:
        item = self.nodes.get(node_id)
        if item is not None:
            x, y = self.model.pos_of(node_id)
            if (item.pos().x(), item.pos().y()) != (x, y):
                item.setPos(x, y)  # itemChange updates the links

    def _on_link_added(self, link: Link) -> None:
        src, dst = self.nodes.get(link.from_node), self.nodes.get(link.to_node)
        if src is None or dst is None:
            return  # a dangling link in the file: kept in the document, not drawn
        if self.model.spec(link.to_node) is None or self.model.spec(link.from_node) is None:
            src.relayout()  # placeholders derive their sockets from their links
            dst.relayout()
        slot = src.slot(link.from_output, True)
        item = LinkItem(link, theme.socket_color(slot.type_name if slot else "ANY"))
        self.links[link] = item
        self._node_links.setdefault(link.from_node, set()).add(link)
        self._node_links.setdefault(link.to_node, set()).add(link)
        self.addItem(item)
        if link in self._reroute_keys:
            self._rebuild_reroutes()  # a wire coming back (undo) gets its dots back
        self._update_link(link)
        src.update()

    def _on_link_removed(self, link: Link) -> None:
        item = self.links.pop(link, None)
        for nid in (link.from_node, link.to_node):
            self._node_links.get(nid, set()).discard(link)
        if item is not None:
            self.removeItem(item)
        if link in self.reroutes:
            for dot in self.reroutes.pop(link):
                self.removeItem(dot)
        src = self.nodes.get(link.from_node)
        if src is not None:
            src.update()

    def _rebuild_notes(self) -> None:
        for item in self.notes:
            self.removeItem(item)
        self.notes = []
        for i, note in enumerate(self.model.layout_list("notes")):
            if isinstance(note, dict):
                item = NoteItem(self, i, note)
                self.notes.append(item)
                self.addItem(item)

    def _rebuild_reroutes(self, update: bool = True) -> None:
        """Dot items for every wire that has points in layout["reroutes"]."""
        for items in self.reroutes.values():
            for item in items:
                self.removeItem(item)
        old = set(self.reroutes)
        self.reroutes = {}
        entries = [(link_of(e), points_of(e)) for e in self.model.layout_list("reroutes")]
        self._reroute_keys = {link for link, _ in entries}
        present = set(self.model.workflow.links) if entries else set()
        for link, points in entries:
            if link not in present or not points:
                continue  # kept for undo of a deleted wire; pruned when the file is saved
            src = self.nodes.get(link.from_node)
            slot = src.slot(link.from_output, True) if src else None
            color = theme.socket_color(slot.type_name if slot else "ANY")
            items = []
            for k, (x, y) in enumerate(points):
                item = RerouteItem(self, link, k, color)
                item.setPos(x, y)
                self.addItem(item)
                items.append(item)
            self.reroutes[link] = items
        if update:
            for link in old | set(self.reroutes):
                self._update_link(link)

    def reroute_moved(self, item: RerouteItem) -> None:
        self._update_link(item.link)

    def _rebuild_groups(self) -> None:
        for item in self.groups:
            self.removeItem(item)
        self.groups = []
        for i, group in enumerate(self.model.groups()):
            if isinstance(group, dict):
                item = GroupItem(self, i, group)
                self.groups.append(item)
                self.addItem(item)

    # ---- links follow nodes -------------------------------------------------------------------
    def node_item_moved(self, node_id: str) -> None:
        self._update_links_of(node_id)

    def _update_links_of(self, node_id: str) -> None:
        for link in self._node_links.get(node_id, ()):
            self._update_link(link)

    def _update_link(self, link: Link) -> None:
        item = self.links.get(link)
        src, dst = self.nodes.get(link.from_node), self.nodes.get(link.to_node)
        if item is None or src is None or dst is None:
            return
        item.dimmed = self.model.node(link.from_node).mode == "mute"
        dots = self.reroutes.get(link)
        item.update_path(src.socket_scene_pos(link.from_output, True),
                         dst.socket_scene_pos(link.to_input, False),
                         [d.pos() for d in dots] if dots else ())

    # ---- queries ------------------------------------------------------------------------------
    def node_at(self, scene_pos: QPointF) -> NodeItem | None:
        for item in self.items(scene_pos):
            if isinstance(item, NodeItem):
                return item
        return None

    def socket_at(self, scene_pos: QPointF) -> tuple[NodeItem, SocketSlot] | None:
        """The socket under (or within a few units of) scene_pos, nodes on top first."""
        r = 12.0
        area = QRectF(scene_pos.x() - r, scene_pos.y() - r, 2 * r, 2 * r)
        for item in self.items(area):
            if isinstance(item, NodeItem):
                slot = item.socket_at(scene_pos)
                if slot is not None:
                    return item, slot
        return None

    def selected_node_ids(self) -> list[str]:
        return [i.node_id for i in self.selectedItems() if isinstance(i, NodeItem)]

    def selected_links(self) -> list[Link]:
        return [i.link for i in self.selectedItems() if isinstance(i, LinkItem)]

    def nodes_bounding_rect(self, node_ids: list[str] | None = None) -> QRectF:
        items = [self.nodes[n] for n in node_ids if n in self.nodes] if node_ids else list(self.nodes.values())
        rect = QRectF()
        for item in items:
            rect = rect.united(item.sceneBoundingRect())
        for group in self.groups if not node_ids else []:
            rect = rect.united(group.scene_rect())
        return rect

    # ---- run decoration -------------------------------------------------------------------------
    def set_run_state(self, node_id: str, state: NodeRunState) -> None:
        item = self.nodes.get(node_id)
        if item is not None:
            failed_changed = (item.run_state.state == "failed") != (state.state == "failed")
            item.set_run_state(state)
            if failed_changed:
                self._update_links_of(node_id)

    def set_thumbnail(self, node_id: str, image: QImage | None) -> None:
        item = self.nodes.get(node_id)
        if item is not None:
            item.set_thumbnail(image)

    def clear_run_states(self) -> None:
        for nid, item in self.nodes.items():
            if item.run_state.state != "idle":
                self.set_run_state(nid, NodeRunState())

    # ---- gestures: move, resize, groups, collapse, rename ------------------------------------------
    def mousePressEvent(self, event) -> None:  # noqa: N802
        super().mousePressEvent(event)
        self._press_positions = {nid: QPointF(item.pos()) for nid, item in self.nodes.items()
                                 if item.isSelected()}
        self._press_annotations = {item: QPointF(item.pos()) for item in self.selectedItems()
                                   if isinstance(item, (NoteItem, RerouteItem))}

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        super().mouseMoveEvent(event)
        if len(self._press_positions) == 1 and event.buttons() & Qt.LeftButton:
            self._show_insert_hint(self.wire_under(next(iter(self._press_positions))))

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        super().mouseReleaseEvent(event)
        self._show_insert_hint(None)
        moves = {}
        for nid, old in self._press_positions.items():
            item = self.nodes.get(nid)
            if item is not None and item.pos() != old:
                moves[nid] = ((old.x(), old.y()), (item.pos().x(), item.pos().y()))
        self._press_positions = {}
        annotations, self._press_annotations = self._press_annotations, {}
        if any(item.pos() != old for item, old in annotations.items()):
            self.editor.store_annotation_positions(
                {i.index: (i.pos().x(), i.pos().y()) for i in annotations if isinstance(i, NoteItem)},
                {(i.link, i.point_index): (i.pos().x(), i.pos().y())
                 for i in annotations if isinstance(i, RerouteItem)}, macro=bool(moves))
        if not moves:
            return
        wire = self.wire_under(next(iter(moves))) if len(moves) == 1 else None
        self.undo_stack.beginMacro("Insert node on wire" if wire else
                                   "Move node" if len(moves) == 1 else "Move nodes")
        self.undo_stack.push(MoveNodesCommand(self.model, moves))
        if wire is not None:
            self.editor.insert_on_wire(next(iter(moves)), wire)
        self.undo_stack.endMacro()

    def wire_under(self, node_id: str) -> Link | None:
        """The wire a dragged, unconnected node would be inserted on: one that crosses its body,
        whose type the node takes and gives (Blender's and Nuke's auto-insert)."""
        item = self.nodes.get(node_id)
        if item is None or self._node_links.get(node_id):
            return None
        rect = item.sceneBoundingRect()
        for other in self.items(rect):
            if isinstance(other, LinkItem) and node_id not in (other.link.from_node, other.link.to_node) \
                    and other.shape().intersects(rect) and self.editor.insert_sockets(node_id, other.link):
                return other.link
        return None

    def _show_insert_hint(self, link: Link | None) -> None:
        item = self.links.get(link) if link is not None else None
        if item is self._insert_hint:
            return
        if self._insert_hint is not None:
            self._insert_hint.set_insert_hint(False)
        self._insert_hint = item
        if item is not None:
            item.set_insert_hint(True)

    # ---- notes ----------------------------------------------------------------------------------
    def begin_note_resize(self, item: NoteItem, scene_pos: QPointF) -> None:
        self.note_resizing = item
        self._note_resize_origin = (scene_pos, item.scene_rect())

    def update_note_resize(self, scene_pos: QPointF) -> None:
        if self.note_resizing is not None and self._note_resize_origin is not None:
            start, rect = self._note_resize_origin
            self.note_resizing.set_size(rect.width() + scene_pos.x() - start.x(),
                                        rect.height() + scene_pos.y() - start.y())

    def end_note_resize(self) -> None:
        item, self.note_resizing = self.note_resizing, None
        if item is not None:
            r = item.scene_rect()
            self.editor.edit_note(item.index, size=[round(r.width()), round(r.height())])

    def edit_note(self, index: int, title: bool = False) -> None:
        if self.editor.text_prompt is not None:
            self.editor.edit_note_text(index, title)

    def begin_resize(self, item: NodeItem, scene_pos: QPointF) -> None:
        self.resizing = item
        self._resize_origin = (scene_pos, item.body_rect(),
                               copy.deepcopy(self.model.layout_of(item.node_id).get("size", UNSET)))

    def update_resize(self, scene_pos: QPointF) -> None:
        if self.resizing is None or self._resize_origin is None:
            return
        start, rect, _ = self._resize_origin
        w = rect.width() + scene_pos.x() - start.x()
        h = rect.height() + scene_pos.y() - start.y()
        # Preview by writing the layout directly (layout never affects a run); the undo entry is
        # pushed once, on release, with the original size restored first.
        self.model.layout_entry(self.resizing.node_id)["size"] = [round(max(w, 160.0)), round(max(h, 40.0))]
        self.resizing.refresh()
        self._update_links_of(self.resizing.node_id)

    def end_resize(self) -> None:
        item, origin = self.resizing, self._resize_origin
        self.resizing, self._resize_origin = None, None
        if item is None or origin is None:
            return
        entry = self.model.layout_entry(item.node_id)
        new, old = entry.get("size"), origin[2]
        if old is UNSET:
            entry.pop("size", None)
        else:
            entry["size"] = old
        if new != old:
            self.undo_stack.push(SetLayoutCommand(self.model, "size", {item.node_id: new}, "Resize node"))

    def begin_group_drag(self, group: GroupItem, scene_pos: QPointF, resize: bool) -> None:
        rect = group.scene_rect()
        inside = [nid for nid, item in self.nodes.items()
                  if rect.contains(item.sceneBoundingRect().center())] if not resize else []
        self._group_drag = {"item": group, "start": scene_pos, "rect": rect, "resize": resize,
                            "nodes": {nid: QPointF(self.nodes[nid].pos()) for nid in inside}}

    def update_group_drag(self, scene_pos: QPointF) -> None:
        drag = self._group_drag
        if drag is None:
            return
        delta = scene_pos - drag["start"]
        item, rect = drag["item"], drag["rect"]
        if drag["resize"]:
            item.set_size(rect.width() + delta.x(), rect.height() + delta.y())
        else:
            item.setPos(rect.topLeft() + delta)
            for nid, pos in drag["nodes"].items():
                self.nodes[nid].setPos(pos + delta)

    def end_group_drag(self) -> None:
        drag, self._group_drag = self._group_drag, None
        if drag is None:
            return
        item = drag["item"]
        new_rect = item.scene_rect()
        if new_rect == drag["rect"]:
            return
        groups = copy.deepcopy(self.model.groups())
        groups[item.index]["rect"] = [round(new_rect.x()), round(new_rect.y()),
                                      round(new_rect.width()), round(new_rect.height())]
        moves = {nid: ((old.x(), old.y()), (self.nodes[nid].pos().x(), self.nodes[nid].pos().y()))
                 for nid, old in drag["nodes"].items() if nid in self.nodes}
        self.undo_stack.beginMacro("Resize group" if drag["resize"] else "Move group")
        self.undo_stack.push(SetGroupsCommand(self.model, groups))
        if moves:
            self.undo_stack.push(MoveNodesCommand(self.model, moves))
        self.undo_stack.endMacro()

    def toggle_collapsed(self, node_ids: list[str]) -> None:
        if self.editor is not None:
            self.editor.toggle_collapsed(node_ids)

    def rename_node(self, node_id: str) -> None:
        if self.editor is not None:
            self.editor.rename_node(node_id)

    def rename_group(self, index: int) -> None:
        if self.editor is not None:
            self.editor.rename_group(index)

    # ---- background ---------------------------------------------------------------------------
    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802
        painter.fillRect(rect, theme.CANVAS_BG)
        scale = painter.worldTransform().m11()
        step = theme.GRID_STEP
        if scale * step < 10:  # minor lines would blur into a flat tone when zoomed out
            step *= 5
        major = theme.GRID_STEP * 5
        left = int(rect.left()) - (int(rect.left()) % step)
        top = int(rect.top()) - (int(rect.top()) % step)
        minor_lines, major_lines = [], []
        x = left
        while x < rect.right():
            (major_lines if x % major == 0 else minor_lines).append(QLineF(x, rect.top(), x, rect.bottom()))
            x += step
        y = top
        while y < rect.bottom():
            (major_lines if y % major == 0 else minor_lines).append(QLineF(rect.left(), y, rect.right(), y))
            y += step
        pen = QPen(theme.GRID_MINOR, 0)
        painter.setPen(pen)
        painter.drawLines(minor_lines)
        pen.setColor(theme.GRID_MAJOR)
        painter.setPen(pen)
        painter.drawLines(major_lines)

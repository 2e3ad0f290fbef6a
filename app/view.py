"""The canvas view: navigation (zoom around the cursor, middle-drag or space+drag pan, framing),
wire dragging, the node palette, context menus, dropped files, and the host for inline editors.

Qt settings follow STYLE.md's measurements: BoundingRectViewportUpdate, CacheBackground, and the
scene's BSP index. Scroll bars are hidden: the canvas is navigated, not scrolled.

Invariant: the view edits nothing itself; every change goes through the scene's GraphEditor.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QMouseEvent, QPainter
from PySide6.QtWidgets import QGraphicsView, QLabel, QMenu

from app import context_menu
from app.canvas_host import CanvasHostMixin
from app.clipboard import put_on_clipboard, read_clipboard
from app.dialogs import Dialogs
from app.annotations import NoteItem, RerouteItem
from app.group_item import GroupItem
from app.inline_editor import InlineEditor
from app.link_drag import LinkDrag
from app.link_item import LinkItem
from app.minimap import Minimap
from app.node_item import NodeItem
from app.palette import NodePalette, accepts_output, provides_input
from app.scene import GraphScene
from app.socket_item import SocketSlot
from app.widget_editors import WidgetController
from engine.schema import NodeSpec


def library_specs() -> list[NodeSpec]:
    """Palette entries for the reusable subgraphs in the user's library (engine.subgraphs)."""
    from engine.subgraphs import list_reusable

    return [NodeSpec(f"{LIBRARY_PREFIX}{path}", "subgraphs", f"Your reusable subgraph {name!r} "
                     f"({path.name} in your library)", display_name=name)
            for name, path in list_reusable()]

MIN_ZOOM, MAX_ZOOM = 0.05, 4.0
OPEN_ZOOM_FLOOR = 0.6  # opening a graph never zooms out further: node text stays readable
LIBRARY_PREFIX = "library:"  # palette entries for the user's reusable subgraphs


class GraphView(CanvasHostMixin, QGraphicsView):
    status_message = Signal(str)
    files_dropped = Signal(list, QPointF)
    run_to_requested = Signal(str)
    zoom_changed = Signal(float)

    def __init__(self, gscene: GraphScene, dialogs: Dialogs | None = None,
                 model_names: Callable[[str], list[str]] | None = None):
        super().__init__(gscene)
        self.gscene = gscene
        self.dialogs = dialogs or Dialogs(self)
        self._model_names = model_names or (lambda kind: [])
        self.setRenderHints(QPainter.Antialiasing | QPainter.TextAntialiasing)
        self.setViewportUpdateMode(QGraphicsView.BoundingRectViewportUpdate)
        self.setCacheMode(QGraphicsView.CacheBackground)
        self.setTransformationAnchor(QGraphicsView.NoAnchor)
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setDragMode(QGraphicsView.RubberBandDrag)
        self.setRubberBandSelectionMode(Qt.IntersectsItemShape)
        self.setAcceptDrops(True)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.StrongFocus)
        self.link_drag: LinkDrag | None = None
        self.active_menu: QMenu | None = None
        self.inline_editor: InlineEditor | None = None
        self._pan_last: QPoint | None = None
        self._space = False
        self._palette_wire: tuple[QPointF, str, SocketSlot] | None = None
        self._palette_pos = QPointF()
        self.widgets = WidgetController(gscene.editor, self)
        gscene.widgets = self.widgets
        gscene.editor.text_prompt = self._prompt_text
        self.palette = NodePalette(self.viewport(), gscene.model.registry.specs())
        self.palette.chosen.connect(self._palette_chosen)
        self.toast = QLabel(self.viewport())
        self.toast.setStyleSheet("background: #5a1d1d; color: #ffdede; border: 1px solid #e05252;"
                                 " border-radius: 4px; padding: 3px 8px; font-size: 12px;")
        self.toast.hide()
        self._toast_timer = QTimer(self)
        self._toast_timer.setSingleShot(True)
        self._toast_timer.timeout.connect(self.toast.hide)
        self.minimap = Minimap(self)

    # ---- navigation ---------------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_at(self, factor: float, view_pos: QPoint | None = None) -> None:
        """Scale by `factor`, keeping the scene point under `view_pos` (default: centre) fixed."""
        view_pos = view_pos if view_pos is not None else self.viewport().rect().center()
        anchor = self.mapToScene(view_pos)
        new = max(MIN_ZOOM, min(MAX_ZOOM, self.zoom() * factor))
        factor = new / self.zoom()
        if abs(factor - 1.0) < 1e-9:
            return
        self.scale(factor, factor)
        center = self.viewport().rect().center()
        offset = QPointF(view_pos - center) / new
        self.centerOn(anchor - offset)
        self.zoom_changed.emit(new)
        self.commit_editor()

    def set_zoom(self, zoom: float) -> None:
        self.zoom_at(zoom / self.zoom())

    def visible_scene_rect(self) -> QRectF:
        return self.mapToScene(self.viewport().rect()).boundingRect()

    def frame_rect(self, rect: QRectF) -> None:
        if rect.isNull() or rect.isEmpty():
            return
        margin = 60 / max(self.zoom(), 0.1)
        self.fitInView(rect.adjusted(-margin, -margin, margin, margin), Qt.KeepAspectRatio)
        if self.zoom() > 1.2:
            self.set_zoom(1.2)
        self.centerOn(rect.center())
        self.zoom_changed.emit(self.zoom())

    def frame_all(self) -> None:
        self.frame_rect(self.gscene.nodes_bounding_rect())

    def frame_for_reading(self, rect: QRectF | None = None) -> None:
        """How a graph opens: at 100 % when it fits, else fitted but never below
        OPEN_ZOOM_FLOOR (then the top-left of the graph, where it starts, is in view)."""
        rect = rect if rect is not None else self.gscene.nodes_bounding_rect()
        if rect.isNull() or rect.isEmpty():
            self.set_zoom(1.0)
            return
        margin = 40.0
        vp = self.viewport().rect()
        fit = min((vp.width() - 2 * margin) / rect.width(), (vp.height() - 2 * margin) / rect.height())
        zoom = max(OPEN_ZOOM_FLOOR, min(1.0, fit))
        self.set_zoom(zoom)
        if fit >= zoom:
            self.centerOn(rect.center())
        else:
            half_w, half_h = vp.width() / 2 / zoom, vp.height() / 2 / zoom
            self.centerOn(QPointF(rect.left() - margin / zoom + half_w if rect.width() * zoom > vp.width()
                                  - 2 * margin else rect.center().x(),
                                  rect.top() - margin / zoom + half_h if rect.height() * zoom > vp.height()
                                  - 2 * margin else rect.center().y()))
        self.zoom_changed.emit(self.zoom())

    def minimap_scene_rect(self) -> QRectF | None:
        """Where the minimap covers the canvas, in scene units (None when hidden)."""
        if not self.minimap.isVisible():
            return None
        mm = self.minimap.geometry().translated(-self.viewport().pos()).adjusted(-12, -12, 12, 12)
        return self.mapToScene(mm).boundingRect()

    def place_in_view(self, pos: QPointF, size: tuple[float, float] = (240.0, 160.0)) -> QPointF:
        """`pos` moved just enough for a node of `size` to be wholly visible: inside the canvas
        (so never under a dock's edge) and clear of the minimap."""
        free = self.mapToScene(self.viewport().rect().adjusted(16, 16, -16, -16)).boundingRect()
        w, h = min(size[0], free.width()), min(size[1], free.height())
        x = min(max(pos.x(), free.left()), free.right() - w)
        y = min(max(pos.y(), free.top()), free.bottom() - h)
        mm = self.minimap_scene_rect()
        if mm is not None and mm.intersects(QRectF(x, y, w, h)):
            if mm.top() - h >= free.top():
                y = mm.top() - h  # just above the overview
            else:
                x = max(free.left(), mm.left() - w)  # or to its left when the canvas is short
        return QPointF(x, y)

    def frame_selection(self) -> None:
        ids = self.gscene.selected_node_ids()
        self.frame_rect(self.gscene.nodes_bounding_rect(ids) if ids else self.gscene.nodes_bounding_rect())

    def wheelEvent(self, event) -> None:  # noqa: N802
        delta = event.angleDelta().y()
        if delta:
            self.zoom_at(1.0015 ** delta, event.position().toPoint())
        event.accept()

    def _pan_by(self, delta: QPoint) -> None:
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - delta.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() - delta.y())

    # ---- mouse --------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self.palette.isVisible() and not self.palette.geometry().contains(event.position().toPoint()):
            self.palette.hide()
        self.commit_editor()
        if event.button() == Qt.MiddleButton or (event.button() == Qt.LeftButton and self._space):
            self._pan_last = event.position().toPoint()
            self.viewport().setCursor(Qt.ClosedHandCursor)
            event.accept()
            return
        if event.button() == Qt.LeftButton:
            scene_pos = self.mapToScene(event.position().toPoint())
            hit = self.gscene.socket_at(scene_pos)
            if hit is not None:
                self._start_link_drag(*hit)
                event.accept()
                return
            if event.modifiers() & Qt.ShiftModifier and self.itemAt(event.position().toPoint()) is None:
                # Shift+rubber band adds to the selection, like Ctrl (Blender / ComfyUI habit)
                event = QMouseEvent(event.type(), event.position(), event.globalPosition(), event.button(),
                                    event.buttons(), event.modifiers() | Qt.ControlModifier)
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_last is not None:
            pos = event.position().toPoint()
            self._pan_by(pos - self._pan_last)
            self._pan_last = pos
            event.accept()
            return
        if self.link_drag is not None:
            self.link_drag.move(self.mapToScene(event.position().toPoint()))
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_last is not None and event.button() in (Qt.MiddleButton, Qt.LeftButton):
            self._pan_last = None
            self.viewport().setCursor(Qt.OpenHandCursor if self._space else Qt.ArrowCursor)
            event.accept()
            return
        if self.link_drag is not None and event.button() == Qt.LeftButton:
            drag, self.link_drag = self.link_drag, None
            drag.finish(self.mapToScene(event.position().toPoint()))
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.LeftButton and self.itemAt(event.position().toPoint()) is None:
            self.open_palette(self.mapToScene(event.position().toPoint()))
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def contextMenuEvent(self, event) -> None:  # noqa: N802
        scene_pos = self.mapToScene(event.pos())
        item = self.itemAt(event.pos())
        if isinstance(item, NodeItem):
            if not item.isSelected():
                self.gscene.clearSelection()
                item.setSelected(True)
            menu = context_menu.node_menu(self, item.node_id)
        elif isinstance(item, GroupItem):
            menu = context_menu.group_menu(self, item.index)
        elif isinstance(item, LinkItem):
            menu = context_menu.link_menu(self, item.link, scene_pos)
        else:
            menu = context_menu.canvas_menu(self, scene_pos)
        self.active_menu = menu
        menu.popup(event.globalPos())

    # ---- keys ---------------------------------------------------------------------------------
    def focusNextPrevChild(self, next_child: bool) -> bool:  # noqa: N802 - keep Tab for the palette
        return False

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        if key == Qt.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.OpenHandCursor)
            return
        if key == Qt.Key_Tab:
            pos = self.mapFromGlobal(self.cursor().pos())
            if not self.viewport().rect().contains(pos):
                pos = self.viewport().rect().center()
            self.open_palette(self.mapToScene(pos))
            return
        if key == Qt.Key_Escape and self.link_drag is not None:
            self.link_drag.cancel()
            self.link_drag = None
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.viewport().setCursor(Qt.ArrowCursor)
            return
        super().keyReleaseEvent(event)

    # ---- wires and the palette ------------------------------------------------------------------
    def _start_link_drag(self, item: NodeItem, slot: SocketSlot) -> None:
        lifted = None
        if not slot.is_output:
            lifted = self.gscene.model.link_into(item.node_id, slot.name)
        if lifted is not None and lifted.from_node in self.gscene.nodes:
            src = self.gscene.nodes[lifted.from_node]
            out_slot = src.slot(lifted.from_output, True)
            if out_slot is not None:
                self.link_drag = LinkDrag(self, lifted.from_node, out_slot, lifted)
                return
        self.link_drag = LinkDrag(self, item.node_id, slot)

    def _palette_avoid(self):
        """The minimap's rectangle in viewport coordinates: the palette opens clear of it."""
        return self.minimap.geometry().translated(-self.viewport().pos()) if self.minimap.isVisible() else None

    def open_palette(self, scene_pos: QPointF) -> None:
        self._palette_wire = None
        self._palette_pos = scene_pos
        self.palette.specs = self.gscene.model.registry.specs() + library_specs()
        self.palette.open_at(self.mapFromScene(scene_pos), avoid=self._palette_avoid())

    def open_palette_for_wire(self, scene_pos: QPointF, node_id: str, slot: SocketSlot) -> None:
        self._palette_wire = (scene_pos, node_id, slot)
        self._palette_pos = scene_pos
        keep = accepts_output(slot.socket_type) if slot.is_output else provides_input(slot.socket_type)
        what = f"{'takes' if slot.is_output else 'gives'} {slot.type_name}"
        self.palette.specs = self.gscene.model.registry.specs()
        self.palette.open_at(self.mapFromScene(scene_pos), keep, f"Add node that {what}",
                             avoid=self._palette_avoid())

    def _palette_chosen(self, type_name: str) -> None:
        pos = self._palette_pos
        if self._palette_wire is not None:
            _, node_id, slot = self._palette_wire
            x = pos.x() if slot.is_output else pos.x() - 260
            at = self.place_in_view(QPointF(x, pos.y() - 20))
            new_id = self.gscene.editor.add_node_connected(type_name, (at.x(), at.y()), node_id,
                                                          slot.name, slot.is_output)
        elif type_name.startswith(LIBRARY_PREFIX):
            at = self.place_in_view(QPointF(pos.x() - 20, pos.y() - 12))
            new_id = self.gscene.editor.add_reusable(type_name[len(LIBRARY_PREFIX):], (at.x(), at.y()))
        else:
            new_id = self.add_node_at(type_name, pos)
        self._palette_wire = None
        if new_id and new_id in self.gscene.nodes:
            self.gscene.clearSelection()
            self.gscene.nodes[new_id].setSelected(True)
        self.setFocus()

    def add_node_at(self, type_name: str, scene_pos: QPointF) -> str:
        """Add a node near `scene_pos`, moved into view (never under the minimap or an edge)."""
        at = self.place_in_view(QPointF(scene_pos.x() - 20, scene_pos.y() - 12), self.node_size(type_name))
        return self.gscene.editor.add_node(type_name, (at.x(), at.y()))

    def node_size(self, type_name: str) -> tuple[float, float]:
        """The size a new node of `type_name` will have (app.node_layout), before it exists."""
        from app.node_layout import layout_node

        try:
            node, entry = self.gscene.editor.new_node(type_name, (0.0, 0.0))
        except KeyError:
            return (240.0, 160.0)
        rect = layout_node(node, self.gscene.model.registry.spec(type_name), entry, set(), [],
                           None, "", "").rect
        return rect.width() + 2 * 10, rect.height() + 6  # sockets stick out; selection outline

    # ---- clipboard and selection verbs --------------------------------------------------------------
    def copy_selection(self) -> int:
        ids = self.gscene.selected_node_ids()
        if ids:
            put_on_clipboard(self.gscene.editor.fragment(ids))
            self.status_message.emit(f"Copied {len(ids)} node{'s' if len(ids) != 1 else ''}")
        return len(ids)

    def cut_selection(self) -> None:
        if self.copy_selection():
            self.delete_selection()

    def paste(self, scene_pos: QPointF | None = None, keep_input_links: bool = False) -> list[str]:
        fragment = read_clipboard()
        if fragment is None:
            self.status_message.emit("The clipboard holds no Reelgraph nodes")
            return []
        if scene_pos is None:
            pos = self.mapFromGlobal(self.cursor().pos())
            if not self.viewport().rect().contains(pos):
                pos = self.viewport().rect().center()
            scene_pos = self.mapToScene(pos)
        ids = self.gscene.editor.paste(fragment, (scene_pos.x(), scene_pos.y()), keep_input_links)
        self._select(ids)
        return ids

    def duplicate_selection(self) -> list[str]:
        ids = self.gscene.editor.duplicate(self.gscene.selected_node_ids())
        self._select(ids)
        return ids

    def delete_selection(self) -> None:
        editor, selected = self.gscene.editor, self.gscene.selectedItems()
        notes = [i.index for i in selected if isinstance(i, NoteItem)]
        dots = [(i.link, i.point_index) for i in selected if isinstance(i, RerouteItem)]
        if notes:
            editor.remove_notes(notes)
        if dots:
            editor.remove_reroutes(dots)
        editor.delete(self.gscene.selected_node_ids(), self.gscene.selected_links())

    def tidy_up(self) -> None:
        """Tidy the selection, or the whole graph when nothing is selected; then frame it."""
        ids = self.gscene.selected_node_ids() or list(self.gscene.nodes)
        sizes = {n: (self.gscene.nodes[n].body_rect().width(), self.gscene.nodes[n].body_rect().height())
                 for n in ids}
        self.gscene.editor.tidy(ids, sizes)
        self.frame_for_reading(self.gscene.nodes_bounding_rect(ids if self.gscene.selected_node_ids()
                                                               else None))

    def add_note_at(self, scene_pos: QPointF) -> int:
        at = self.place_in_view(scene_pos, (300, 180))
        index = self.gscene.editor.add_note((at.x(), at.y()), "Double-click to write **Markdown**.")
        return index

    def collapse_selection(self) -> str | None:
        ids = self.gscene.selected_node_ids()
        inst, why = self.gscene.editor.collapse_to_subgraph(ids)
        if inst is None:
            self.status_message.emit(f"Cannot collapse: {why}")
        else:
            self._select([inst])
        return inst

    def save_subgraph(self, node_id: str) -> None:
        """Save a subgraph node to the user's library, where the palette finds it."""
        node = self.gscene.model.node(node_id)
        name = self.dialogs.text("Save subgraph", "Name in your library:", node.title or "My subgraph")
        path = self.gscene.editor.save_reusable(node_id, name or "") if name else None
        if path is not None:
            self.status_message.emit(f"Saved {name.strip()} to your subgraph library ({path.parent}); "
                                     "the node palette (Tab) lists it")

    def expand_selection(self) -> list[str]:
        made = []
        for nid in self.gscene.selected_node_ids():
            made += self.gscene.editor.expand_subgraph(nid)
        self._select(made)
        return made

    def group_selection(self) -> None:
        ids = self.gscene.selected_node_ids()
        if ids:
            self.gscene.editor.group_nodes(self.gscene.nodes_bounding_rect(ids))

    def _select(self, ids: list[str]) -> None:
        self.gscene.clearSelection()
        for nid in ids:
            if nid in self.gscene.nodes:
                self.gscene.nodes[nid].setSelected(True)

    # ---- drops --------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
            self.files_dropped.emit(paths, self.mapToScene(event.position().toPoint()))
            event.acceptProposedAction()
        else:
            super().dropEvent(event)

    def viewportEvent(self, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Resize:
            self.minimap.place()  # the viewport, not the view, decides the corner
        return super().viewportEvent(event)

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self.minimap.place()
        self.minimap.recompute()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.ShortcutOverride and isinstance(event, QKeyEvent) \
                and event.key() == Qt.Key_Tab:
            event.accept()
            return True
        return super().event(event)

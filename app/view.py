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

MIN_ZOOM, MAX_ZOOM = 0.05, 4.0


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
            menu = context_menu.link_menu(self, item.link)
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

    def open_palette(self, scene_pos: QPointF) -> None:
        self._palette_wire = None
        self._palette_pos = scene_pos
        self.palette.open_at(self.mapFromScene(scene_pos))

    def open_palette_for_wire(self, scene_pos: QPointF, node_id: str, slot: SocketSlot) -> None:
        self._palette_wire = (scene_pos, node_id, slot)
        self._palette_pos = scene_pos
        keep = accepts_output(slot.socket_type) if slot.is_output else provides_input(slot.socket_type)
        what = f"{'takes' if slot.is_output else 'gives'} {slot.type_name}"
        self.palette.open_at(self.mapFromScene(scene_pos), keep, f"Add node that {what}")

    def _palette_chosen(self, type_name: str) -> None:
        pos = self._palette_pos
        if self._palette_wire is not None:
            _, node_id, slot = self._palette_wire
            x = pos.x() if slot.is_output else pos.x() - 260
            new_id = self.gscene.editor.add_node_connected(type_name, (x, pos.y() - 20), node_id,
                                                          slot.name, slot.is_output)
        else:
            new_id = self.add_node_at(type_name, pos)
        self._palette_wire = None
        if new_id and new_id in self.gscene.nodes:
            self.gscene.clearSelection()
            self.gscene.nodes[new_id].setSelected(True)
        self.setFocus()

    def add_node_at(self, type_name: str, scene_pos: QPointF) -> str:
        return self.gscene.editor.add_node(type_name, (scene_pos.x() - 20, scene_pos.y() - 12))

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
        self.gscene.editor.delete(self.gscene.selected_node_ids(), self.gscene.selected_links())

    def tidy_up(self) -> None:
        """Tidy the selection, or the whole graph when nothing is selected."""
        ids = self.gscene.selected_node_ids() or list(self.gscene.nodes)
        sizes = {n: (self.gscene.nodes[n].body_rect().width(), self.gscene.nodes[n].body_rect().height())
                 for n in ids}
        self.gscene.editor.tidy(ids, sizes)

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

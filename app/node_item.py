"""A node on the canvas: title bar in its category colour, typed sockets, painted inline widgets,
run state (queued / running with a progress bar / cached / done / failed) and an output thumbnail.

Invariants:
- The item holds only its node id; everything it paints is read from the GraphModel on `refresh`.
- Layout (`relayout`) is recomputed only when the node's inputs, links, size, collapse state or
  thumbnail change, never in `paint`.
- Item caching is DeviceCoordinateCache and paint() switches to a plain rectangle below
  theme.LOD_DETAIL zoom (STYLE.md measurements); any visual change must call `update()`.
- Unknown node types (placeholders) draw greyed with their stored inputs as read-only rows and
  sockets derived from their links, so nothing about them is lost or hidden.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFontMetrics, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem

from app import seed_control
from app import theme
from app.run_state import NodeRunState
from app.socket_item import SocketSlot, paint_socket, slot_at
from app.node_layout import layout_node
from app.widget_paint import WidgetSlot, paint_widget

if TYPE_CHECKING:
    from app.scene import GraphScene

GRIP = 12.0  # resize grip size at the bottom-right corner


class NodeItem(QGraphicsItem):
    def __init__(self, gscene: "GraphScene", node_id: str):
        super().__init__()
        self.gscene = gscene
        self.node_id = node_id
        self.input_slots: list[SocketSlot] = []
        self.output_slots: list[SocketSlot] = []
        self.widget_slots: list[WidgetSlot] = []
        self.info_rows: list[tuple[str, str]] = []  # placeholder: stored inputs, read-only
        self.run_state = NodeRunState()
        self.thumbnail: QImage | None = None
        self.thumb_rect = QRectF()
        self.output_text = ""  # what the node produced as text (a caption), shown under its rows
        self.text_rect = QRectF()
        self.thumb_stale = False  # the thumbnail is from an earlier run (dimmed during a new one)
        self.stale = False  # its inputs (or upstream) changed since it last ran
        self.hover_widget: str | None = None
        self._rect = QRectF(0, 0, theme.NODE_WIDTH, 60)
        self._title = ""
        self.title_color = QColor()
        self._footer = ""
        self._info_top = 0.0
        self.setFlags(QGraphicsItem.ItemIsMovable | QGraphicsItem.ItemIsSelectable
                      | QGraphicsItem.ItemSendsGeometryChanges)
        self.setAcceptHoverEvents(True)
        self.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        self.setZValue(1)
        self.relayout()

    # ---- model access -------------------------------------------------------------------------
    @property
    def model(self):
        return self.gscene.model

    @property
    def spec(self):
        return self.model.spec(self.node_id)

    @property
    def collapsed(self) -> bool:
        return bool(self.model.layout_of(self.node_id).get("collapsed"))

    # ---- layout -------------------------------------------------------------------------------
    def relayout(self) -> None:
        """Recompute sockets, widget rows and size from the document (app.node_layout)."""
        self.prepareGeometryChange()
        model, node = self.model, self.model.node(self.node_id)
        thumb = self.thumbnail.size() if self.thumbnail is not None and not self.thumbnail.isNull() else None
        g = layout_node(node, self.spec, model.layout_of(self.node_id),
                        set(model.workflow.links_into(self.node_id)),
                        sorted({l.from_output for l in model.workflow.links_from(self.node_id)}),
                        thumb, self.run_state.message if self.run_state.state == "failed" else "",
                        self.output_text)
        self._title, self.title_color, self._rect = g.title, g.title_color, g.rect
        self.input_slots, self.output_slots, self.widget_slots = g.inputs, g.outputs, g.widgets
        self.info_rows, self._info_top = g.info_rows, g.info_top
        self.thumb_rect, self._footer = g.thumb_rect, g.footer
        self.text_rect = g.text_rect

    def refresh(self) -> None:
        self.relayout()
        self.update()

    def set_run_state(self, state: NodeRunState) -> None:
        was_failed = self.run_state.state == "failed" or state.state == "failed"
        self.run_state = state
        self.setToolTip(state.traceback or state.message if state.state == "failed" else "")
        if was_failed:
            self.relayout()
        self.update()

    def set_thumbnail(self, image: QImage | None) -> None:
        same_size = (image is not None and self.thumbnail is not None
                     and image.size() == self.thumbnail.size())
        self.thumbnail = image
        self.thumb_stale = False
        if same_size:  # a new frame of an animated preview: no relayout
            self.update()
            return
        self.refresh()
        self.gscene.node_geometry_changed(self.node_id)

    def set_output_text(self, text: str) -> None:
        if text == self.output_text:
            return
        self.output_text = text
        self.refresh()
        self.gscene.node_geometry_changed(self.node_id)

    def set_stale(self, stale: bool) -> None:
        if self.stale != stale:
            self.stale = stale
            self.update()

    def mark_thumbnail_stale(self, stale: bool) -> None:
        if self.thumb_stale != stale:
            self.thumb_stale = stale
            self.update()

    # ---- geometry queries -----------------------------------------------------------------------
    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt override
        return self._rect.adjusted(-theme.SOCKET_R - 4, -3, theme.SOCKET_R + 4, 3)

    def body_rect(self) -> QRectF:
        return QRectF(self._rect)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRect(self._rect.adjusted(-theme.SOCKET_R, 0, theme.SOCKET_R, 0))
        return path

    def slot(self, name: str, is_output: bool) -> SocketSlot | None:
        slots = self.output_slots if is_output else self.input_slots
        return next((s for s in slots if s.name == name), None)

    def socket_scene_pos(self, name: str, is_output: bool) -> QPointF:
        slot = self.slot(name, is_output)
        if slot is None:  # unknown socket (e.g. placeholder edge cases): attach at the edge
            return self.mapToScene(QPointF(self._rect.width() if is_output else 0, theme.TITLE_H / 2))
        return self.mapToScene(slot.pos)

    def socket_at(self, scene_pos: QPointF) -> SocketSlot | None:
        local = self.mapFromScene(scene_pos)
        if self.collapsed:
            return None  # expand a node to wire it: its sockets overlap when collapsed
        return slot_at(self.input_slots + self.output_slots, local)

    def widget_at(self, local: QPointF) -> WidgetSlot | None:
        return next((w for w in self.widget_slots if w.rect.contains(local)), None)

    def collapse_zone(self) -> QRectF:
        return QRectF(0, 0, 22, theme.TITLE_H)

    def grip_zone(self) -> QRectF:
        r = self._rect
        return QRectF(r.right() - GRIP, r.bottom() - GRIP, GRIP, GRIP)

    # ---- painting -----------------------------------------------------------------------------
    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        node = self.model.node(self.node_id)
        rect = self._rect
        state_color = theme.STATE_COLORS.get(self.run_state.state)
        if lod < theme.LOD_DETAIL:
            painter.setPen(Qt.NoPen)
            painter.setBrush(theme.NODE_BG if self.spec else theme.NODE_BG_PLACEHOLDER)
            painter.drawRect(rect)
            painter.setBrush(self.title_color)
            painter.drawRect(QRectF(0, 0, rect.width(), min(rect.height(), theme.TITLE_H)))
            if node.mode != "normal":
                painter.setBrush(theme.BYPASS_TINT if node.mode == "bypass" else theme.MUTE_TINT)
                painter.drawRect(rect)
            outline = theme.NODE_SELECTED if self.isSelected() else state_color
            if outline is not None:
                painter.setPen(QPen(outline, 3.0 / max(lod, 0.05)))
                painter.setBrush(Qt.NoBrush)
                painter.drawRect(rect)
            return

        painter.setRenderHint(QPainter.Antialiasing)
        self._paint_body(painter, node)
        self._paint_rows(painter)
        if node.mode != "normal":
            painter.setPen(Qt.NoPen)
            painter.setBrush(theme.BYPASS_TINT if node.mode == "bypass" else theme.MUTE_TINT)
            painter.drawRoundedRect(rect, theme.CORNER, theme.CORNER)
        self._paint_sockets(painter)
        if self.stale and self.run_state.state != "running":
            painter.setPen(QPen(theme.STALE_COLOR, 2.0, Qt.DashLine))
            painter.setBrush(Qt.NoBrush)
            painter.drawRoundedRect(rect.adjusted(-1.5, -1.5, 1.5, 1.5), theme.CORNER + 1, theme.CORNER + 1)
        elif state_color is not None and self.run_state.state != "idle":
            painter.setPen(QPen(state_color, 2.0))
            painter.setBrush(Qt.NoBrush)
            painter.drawRoundedRect(rect.adjusted(-1.5, -1.5, 1.5, 1.5), theme.CORNER + 1, theme.CORNER + 1)
        if self.isSelected():
            painter.setPen(QPen(theme.NODE_SELECTED, 1.6))
            painter.setBrush(Qt.NoBrush)
            painter.drawRoundedRect(rect.adjusted(-3, -3, 3, 3), theme.CORNER + 2, theme.CORNER + 2)

    def _paint_body(self, painter: QPainter, node: Any) -> None:
        rect = self._rect
        painter.setPen(QPen(theme.NODE_BORDER, 1.0))
        painter.setBrush(theme.NODE_BG if self.spec else theme.NODE_BG_PLACEHOLDER)
        painter.drawRoundedRect(rect, theme.CORNER, theme.CORNER)
        title = QPainterPath()
        title_h = min(theme.TITLE_H, rect.height())
        title.addRoundedRect(QRectF(0, 0, rect.width(), title_h), theme.CORNER, theme.CORNER)
        if not self.collapsed:
            square = QPainterPath()
            square.addRect(QRectF(0, title_h / 2, rect.width(), title_h / 2))
            title = title.united(square)
        painter.setPen(Qt.NoPen)
        painter.setBrush(self.title_color)
        painter.drawPath(title)
        painter.setPen(theme.NODE_TITLE_TEXT)
        painter.setFont(theme.small_font())
        painter.drawText(self.collapse_zone(), Qt.AlignCenter, "▸" if self.collapsed else "▾")
        painter.setFont(theme.title_font())
        fm = QFontMetrics(painter.font())
        badge = self.run_state.badge()
        if self.stale and self.run_state.state != "running":
            badge = "changed"  # will run again: its inputs changed since the last run
        badge_w = QFontMetrics(theme.small_font()).horizontalAdvance(badge) + 12 if badge else 0
        text_rect = QRectF(22, 0, rect.width() - 28 - badge_w, title_h)
        painter.setPen(theme.NODE_TITLE_TEXT if self.spec else theme.NODE_TEXT_DIM)
        painter.drawText(text_rect, Qt.AlignVCenter | Qt.AlignLeft,
                         fm.elidedText(self._title, Qt.ElideRight, int(text_rect.width())))
        if badge:
            painter.setFont(theme.small_font())
            color = (theme.STALE_COLOR if badge == "changed"
                     else theme.STATE_COLORS.get(self.run_state.state, theme.NODE_TEXT))
            badge_rect = QRectF(rect.width() - badge_w - 6, 5, badge_w, title_h - 10)
            painter.setPen(Qt.NoPen)
            painter.setBrush(QColor(0, 0, 0, 110))
            painter.drawRoundedRect(badge_rect, 7, 7)
            painter.setPen(color.lighter(130))
            painter.drawText(badge_rect, Qt.AlignCenter, badge)
        if self.run_state.state == "running" and not self.collapsed:
            bar = QRectF(0, title_h, rect.width(), 3)
            painter.setPen(Qt.NoPen)
            painter.setBrush(QColor(0, 0, 0, 120))
            painter.drawRect(bar)
            painter.setBrush(theme.STATE_COLORS["running"])
            painter.drawRect(QRectF(0, title_h, rect.width() * self.run_state.fraction, 3))

    def _paint_rows(self, painter: QPainter) -> None:
        if self.collapsed:
            return
        rect = self._rect
        painter.setFont(theme.body_font())
        painter.setPen(theme.NODE_TEXT)
        widget_names = {w.name for w in self.widget_slots}
        for slot in self.input_slots:
            if slot.name not in widget_names:
                painter.drawText(QRectF(12, slot.pos.y() - 9, rect.width() / 2 - 12, 18),
                                 Qt.AlignVCenter | Qt.AlignLeft, slot.name)
        for slot in self.output_slots:
            painter.drawText(QRectF(rect.width() / 2, slot.pos.y() - 9, rect.width() / 2 - 12, 18),
                             Qt.AlignVCenter | Qt.AlignRight, slot.name)
        if self.info_rows:
            y0 = self._info_top
            painter.setPen(theme.NODE_TEXT_DIM)
            fm = QFontMetrics(painter.font())
            for i, (name, value) in enumerate(self.info_rows):
                row = QRectF(12, y0 + i * theme.ROW_H, rect.width() - 24, theme.ROW_H)
                painter.drawText(row, Qt.AlignVCenter | Qt.AlignLeft,
                                 fm.elidedText(f"{name}: {value}", Qt.ElideRight, int(row.width())))
        node = self.model.node(self.node_id)
        linked = self.model.workflow.links_into(self.node_id)
        entry = self.model.layout_of(self.node_id)
        for w in self.widget_slots:
            value = node.inputs.get(w.name, w.spec.default if w.spec else None)
            paint_widget(painter, w, value, linked=w.name in linked, hovered=w.name == self.hover_widget,
                         seed_mode=seed_control.mode_of(entry, w.name) if w.kind == "seed" else None)
        if not self.thumb_rect.isNull() and self.thumbnail is not None:
            painter.setRenderHint(QPainter.SmoothPixmapTransform)
            if self.thumb_stale:  # from the previous run: dimmed until this run replaces it
                painter.setOpacity(0.35)
            painter.drawImage(self.thumb_rect, self.thumbnail)
            painter.setOpacity(1.0)
        if not self.text_rect.isNull() and self.output_text:
            painter.setPen(Qt.NoPen)
            painter.setBrush(QColor(0, 0, 0, 70))
            painter.drawRoundedRect(self.text_rect, 4, 4)
            painter.setFont(theme.small_font())
            painter.setPen(theme.NODE_TEXT)
            box = self.text_rect.adjusted(5, 4, -5, -4)
            fm = QFontMetrics(painter.font())
            max_chars = max(20, int(box.width() / max(1, fm.averageCharWidth()) * box.height()
                                    / max(1, fm.lineSpacing()) * 0.9))
            painter.drawText(box, Qt.AlignLeft | Qt.AlignTop | Qt.TextWordWrap,
                             _clip(self.output_text, max_chars))
        if self._footer:
            painter.setFont(theme.small_font())
            painter.setPen(theme.STATE_COLORS["failed"].lighter(120))
            box = QRectF(10, rect.height() - theme.PAD - 32, rect.width() - 20, 32)
            painter.drawText(box, Qt.AlignLeft | Qt.AlignTop | Qt.TextWordWrap,
                             _clip(f"⚠ {self._footer}", 120))

    def _paint_sockets(self, painter: QPainter) -> None:
        hint = self.gscene.drag_hint
        linked_in = self.model.workflow.links_into(self.node_id)
        linked_out = {l.from_output for l in self.model.workflow.links_from(self.node_id)}
        drawn: set[tuple[float, float, bool]] = set()
        for slot in self.input_slots + self.output_slots:
            key = (slot.pos.x(), slot.pos.y(), slot.is_output)
            if self.collapsed and key in drawn:
                continue
            drawn.add(key)
            connected = (slot.name in linked_out) if slot.is_output else (slot.name in linked_in)
            highlight = hint(self.node_id, slot) if hint is not None else 0
            paint_socket(painter, slot, connected, highlight)
        if not self.collapsed:
            painter.setPen(QPen(theme.NODE_TEXT_DIM, 1.0))
            g = self.grip_zone()
            for k in (4, 8):
                painter.drawLine(QPointF(g.right() - k, g.bottom() - 2), QPointF(g.right() - 2, g.bottom() - k))

    # ---- Qt events ----------------------------------------------------------------------------
    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:  # noqa: N802
        if change == QGraphicsItem.ItemPositionHasChanged:
            self.gscene.node_item_moved(self.node_id)
        elif change == QGraphicsItem.ItemSelectedHasChanged:
            self.setZValue(2 if value else 1)
        return super().itemChange(change, value)

    def hoverMoveEvent(self, event) -> None:  # noqa: N802
        local = event.pos()
        w = self.widget_at(local)
        name = w.name if w else None
        if name != self.hover_widget:
            self.hover_widget = name
            self.update()
        socket = slot_at(self.input_slots + self.output_slots, local) if not self.collapsed else None
        if socket is not None:
            self.setToolTip(f"{socket.name}: {socket.type_name}")
        elif w is not None and w.spec is not None and w.spec.tooltip:
            self.setToolTip(w.spec.tooltip)
        elif self.run_state.state == "failed":
            self.setToolTip(self.run_state.traceback or self.run_state.message)
        elif local.y() < theme.TITLE_H and self.spec is not None:
            self.setToolTip(f"{self.spec.title} — {self.spec.description}")
        else:
            self.setToolTip("")
        super().hoverMoveEvent(event)

    def hoverLeaveEvent(self, event) -> None:  # noqa: N802
        if self.hover_widget is not None:
            self.hover_widget = None
            self.update()
        super().hoverLeaveEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.LeftButton:
            local = event.pos()
            if self.collapse_zone().contains(local):
                self.gscene.toggle_collapsed([self.node_id])
                event.accept()
                return
            if not self.collapsed and self.grip_zone().contains(local):
                self.gscene.begin_resize(self, event.scenePos())
                event.accept()
                return
            w = self.widget_at(local)
            if w is not None and self.gscene.widgets is not None:
                if not self.isSelected():
                    if not event.modifiers() & (Qt.ControlModifier | Qt.ShiftModifier):
                        self.gscene.clearSelection()
                    self.setSelected(True)
                self.gscene.widgets.press(self, w, event)
                event.accept()
                return
            if _shift_only(event):  # Shift adds to the selection (Blender / ComfyUI habit)
                self.setSelected(True)
                event.setModifiers(event.modifiers() | Qt.ControlModifier)
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self.gscene.resizing is self:
            self.gscene.update_resize(event.scenePos())
            return
        if self.gscene.widgets is not None and self.gscene.widgets.active_item is self:
            self.gscene.widgets.move(event)
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self.gscene.resizing is self:
            self.gscene.end_resize()
            return
        if self.gscene.widgets is not None and self.gscene.widgets.active_item is self:
            self.gscene.widgets.release(event)
            return
        if event.button() == Qt.LeftButton and _shift_only(event):
            # Qt toggles a Ctrl-clicked item on release; Shift must only ever add
            event.setModifiers(event.modifiers() | Qt.ControlModifier)
            super().mouseReleaseEvent(event)
            self.setSelected(True)
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        local = event.pos()
        if local.y() < theme.TITLE_H and not self.collapse_zone().contains(local):
            self.gscene.rename_node(self.node_id)
            event.accept()
            return
        w = self.widget_at(local)
        if w is not None and self.gscene.widgets is not None:
            self.gscene.widgets.open_editor(self, w)
            event.accept()
            return
        super().mouseDoubleClickEvent(event)


def _shift_only(event) -> bool:
    mods = event.modifiers()
    return bool(mods & Qt.ShiftModifier) and not mods & Qt.ControlModifier


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"

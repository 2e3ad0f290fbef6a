"""Wires: a link drawn as a horizontal-tangent cubic curve in its output type's colour, and the
temporary wire that follows the cursor while the user drags from a socket.

Invariant: a LinkItem holds the engine `Link` it draws; its path is recomputed from the two node
items' socket positions whenever either node moves (`update_path`), never from cached numbers.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPainterPathStroker, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QStyleOptionGraphicsItem

from engine.document import Link
from app import theme


def wire_path(start: QPointF, end: QPointF, via: list[QPointF] | tuple = ()) -> QPainterPath:
    """Cubics from an output (start) to an input (end) through the reroute dots `via`, leaving
    and entering every point horizontally."""
    path = QPainterPath(start)
    points = [start, *via, end]
    for a, b in zip(points, points[1:]):
        dx = max(abs(b.x() - a.x()) * 0.5, 40.0 if len(points) == 2 else 20.0)
        path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b)
    return path


class LinkItem(QGraphicsPathItem):
    def __init__(self, link: Link, color: QColor):
        super().__init__()
        self.link = link
        self.color = QColor(color)
        self.dimmed = False
        self.setFlags(QGraphicsItem.ItemIsSelectable)
        self.setZValue(0)
        self.setAcceptHoverEvents(True)
        self._hover = False
        self._shape = QPainterPath()
        self.setToolTip(f"{link.from_node}.{link.from_output} → {link.to_node}.{link.to_input}")

    def update_path(self, start: QPointF, end: QPointF, via: list[QPointF] | tuple = ()) -> None:
        path = wire_path(start, end, via)
        self.setPath(path)  # calls prepareGeometryChange
        stroker = QPainterPathStroker()
        stroker.setWidth(10)
        self._shape = stroker.createStroke(path)

    def shape(self) -> QPainterPath:
        return self._shape

    def boundingRect(self) -> QRectF:  # noqa: N802
        return self.path().boundingRect().adjusted(-4, -4, 4, 4)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        color = QColor(self.color)
        if self.dimmed:
            color.setAlpha(90)
        width = 2.4
        if self.isSelected() or self._hover:
            width = 3.6
            color = color.lighter(135)
        if lod >= theme.LOD_DETAIL:
            painter.setRenderHint(QPainter.Antialiasing)
            if self.isSelected():
                painter.setPen(QPen(QColor(255, 255, 255, 70), width + 4, Qt.SolidLine, Qt.RoundCap))
                painter.drawPath(self.path())
        painter.setPen(QPen(color, width, Qt.SolidLine, Qt.RoundCap))
        painter.setBrush(Qt.NoBrush)
        painter.drawPath(self.path())

    def hoverEnterEvent(self, event) -> None:  # noqa: N802
        self._hover = True
        self.update()

    def set_insert_hint(self, on: bool) -> None:
        """Highlight while a dragged node would be inserted on this wire."""
        if self._hover != on:
            self._hover = on
            self.update()

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        """Double-click a wire to put a reroute dot there (ComfyUI habit)."""
        scene = self.scene()
        if event.button() == Qt.LeftButton and hasattr(scene, "editor"):
            scene.editor.add_reroute(self.link, (event.scenePos().x(), event.scenePos().y()))
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def hoverLeaveEvent(self, event) -> None:  # noqa: N802
        self._hover = False
        self.update()


class DragWireItem(QGraphicsPathItem):
    """The wire under the cursor while linking; red and dashed over a socket that refuses."""

    def __init__(self, color: QColor):
        super().__init__()
        self.color = QColor(color)
        self.setZValue(50)
        self.set_ok(True)

    def set_ok(self, ok: bool) -> None:
        color = self.color if ok else theme.LINK_DRAG_BAD
        self.setPen(QPen(color, 2.6, Qt.SolidLine if ok else Qt.DashLine, Qt.RoundCap))

    def set_ends(self, output_end: QPointF, input_end: QPointF) -> None:
        self.setPath(wire_path(output_end, input_end))

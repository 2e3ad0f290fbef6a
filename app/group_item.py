"""Group frames: titled, coloured rectangles behind nodes (layout["groups"]).

Dragging a frame's title bar moves the frame and every node inside it (as Blender and ComfyUI do);
the bottom-right grip resizes it; double-clicking the title renames it. Only the title bar and the
grip are hit-testable (`shape`), so the frame's body behaves like empty canvas: rubber-band
selection, double-click for the palette and dropping wires all work inside a group.

Invariant: a GroupItem holds its index into the model's group list; the scene rebuilds all group
items whenever the list changes (groups are few).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem

from app import theme

if TYPE_CHECKING:
    from app.scene import GraphScene

GROUP_TITLE_H = 30.0
GROUP_GRIP = 16.0


def group_rect(group: dict[str, Any]) -> QRectF:
    try:
        x, y, w, h = (float(v) for v in group.get("rect", (0, 0, 300, 200)))
    except (TypeError, ValueError):
        x, y, w, h = 0.0, 0.0, 300.0, 200.0
    return QRectF(x, y, max(w, 80.0), max(h, GROUP_TITLE_H + 10))


def group_color(group: dict[str, Any]) -> QColor:
    color = QColor(str(group.get("color") or ""))
    return color if color.isValid() else QColor(theme.GROUP_DEFAULT)


class GroupItem(QGraphicsItem):
    def __init__(self, gscene: "GraphScene", index: int, group: dict[str, Any]):
        super().__init__()
        self.gscene = gscene
        self.index = index
        self.title = str(group.get("title") or "Group")
        self.color = group_color(group)
        rect = group_rect(group)
        self.setPos(rect.topLeft())
        self._rect = QRectF(0, 0, rect.width(), rect.height())
        self.setZValue(-10)
        self.setFlags(QGraphicsItem.ItemIsSelectable)

    def scene_rect(self) -> QRectF:
        return self._rect.translated(self.pos())

    def set_size(self, width: float, height: float) -> None:
        self.prepareGeometryChange()
        self._rect = QRectF(0, 0, max(80.0, width), max(GROUP_TITLE_H + 10, height))

    def boundingRect(self) -> QRectF:  # noqa: N802
        return self._rect.adjusted(-2, -2, 2, 2)

    def title_rect(self) -> QRectF:
        return QRectF(0, 0, self._rect.width(), GROUP_TITLE_H)

    def grip_rect(self) -> QRectF:
        r = self._rect
        return QRectF(r.right() - GROUP_GRIP, r.bottom() - GROUP_GRIP, GROUP_GRIP, GROUP_GRIP)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRect(self.title_rect())
        path.addRect(self.grip_rect())
        return path

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        fill = QColor(self.color)
        fill.setAlpha(48)
        edge = QColor(self.color)
        edge.setAlpha(200 if self.isSelected() else 140)
        painter.setPen(QPen(edge, 2.0 if self.isSelected() else 1.2))
        painter.setBrush(fill)
        painter.drawRoundedRect(self._rect, 6, 6)
        bar = QColor(self.color)
        bar.setAlpha(140)
        painter.setPen(Qt.NoPen)
        painter.setBrush(bar)
        path = QPainterPath()
        path.addRoundedRect(self.title_rect(), 6, 6)
        painter.drawPath(path)
        font = theme.title_font()
        font.setPixelSize(15)
        painter.setFont(font)
        painter.setPen(theme.NODE_TITLE_TEXT)
        fm = QFontMetrics(font)
        text_rect = self.title_rect().adjusted(10, 0, -10, 0)
        painter.drawText(text_rect, Qt.AlignVCenter | Qt.AlignLeft,
                         fm.elidedText(self.title, Qt.ElideRight, int(text_rect.width())))
        g = self.grip_rect()
        painter.setPen(QPen(edge, 1.2))
        for k in (5, 10):
            painter.drawLine(g.right() - k, g.bottom() - 3, g.right() - 3, g.bottom() - k)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() != Qt.LeftButton:
            event.ignore()
            return
        local = event.pos()
        if self.grip_rect().contains(local):
            self.gscene.begin_group_drag(self, event.scenePos(), resize=True)
        elif self.title_rect().contains(local):
            self.gscene.clearSelection()
            self.setSelected(True)
            self.gscene.begin_group_drag(self, event.scenePos(), resize=False)
        else:
            event.ignore()
            return
        event.accept()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        self.gscene.update_group_drag(event.scenePos())

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        self.gscene.end_group_drag()

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        if self.title_rect().contains(event.pos()):
            self.gscene.rename_group(self.index)
            event.accept()
        else:
            event.ignore()

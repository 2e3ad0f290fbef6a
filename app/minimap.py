"""An overview of the whole graph in the canvas corner: node rectangles in their category colours
and the visible area as a frame; click or drag in it to move the view there.

It paints from the node items' scene rectangles (no second QGraphicsView rendering the scene),
so it stays cheap with hundreds of nodes; bounds are recomputed at most every 150 ms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from app.view import GraphView


class Minimap(QWidget):
    def __init__(self, view: "GraphView"):
        super().__init__(view)  # not the viewport: its children scroll with the canvas
        self.view = view
        self.setFixedSize(210, 140)
        self.setCursor(Qt.PointingHandCursor)
        self._rects: list[tuple[QRectF, QColor]] = []
        self._bounds = QRectF()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.recompute)
        view.gscene.changed.connect(self.schedule)
        view.horizontalScrollBar().valueChanged.connect(self.update)
        view.verticalScrollBar().valueChanged.connect(self.update)

    def schedule(self, *_args) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def recompute(self) -> None:
        rects, bounds = [], QRectF()
        for item in self.view.gscene.nodes.values():
            r = item.mapRectToScene(item.body_rect())
            rects.append((r, QColor(item.title_color)))
            bounds = bounds.united(r)
        for g in self.view.gscene.groups:
            bounds = bounds.united(g.scene_rect())
        self._rects = rects
        self._bounds = bounds.adjusted(-100, -100, 100, 100) if not bounds.isNull() else QRectF()
        self.update()

    def _mapping(self) -> tuple[float, QPointF]:
        """scale and offset so scene bounds (plus the visible area) fit the widget."""
        visible = self.view.visible_scene_rect()
        area = self._bounds.united(visible) if not self._bounds.isNull() else visible
        s = min((self.width() - 8) / max(area.width(), 1), (self.height() - 8) / max(area.height(), 1))
        off = QPointF(4 + (self.width() - 8 - area.width() * s) / 2 - area.left() * s,
                      4 + (self.height() - 8 - area.height() * s) / 2 - area.top() * s)
        return s, off

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.setPen(QPen(QColor("#44474e"), 1))
        p.setBrush(QColor(20, 21, 24, 215))
        p.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 5, 5)
        s, off = self._mapping()
        p.setPen(Qt.NoPen)
        for r, color in self._rects:
            p.setBrush(color)
            p.drawRect(QRectF(r.left() * s + off.x(), r.top() * s + off.y(),
                              max(2.0, r.width() * s), max(2.0, r.height() * s)))
        v = self.view.visible_scene_rect()
        p.setPen(QPen(QColor("#e6e6e6"), 1.2))
        p.setBrush(QColor(255, 255, 255, 20))
        p.drawRect(QRectF(v.left() * s + off.x(), v.top() * s + off.y(), v.width() * s, v.height() * s))
        p.end()

    def _jump(self, pos: QPointF) -> None:
        s, off = self._mapping()
        self.view.centerOn(QPointF((pos.x() - off.x()) / s, (pos.y() - off.y()) / s))
        self.update()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self._jump(event.position())

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if event.buttons() & Qt.LeftButton:
            self._jump(event.position())

    def place(self) -> None:
        vp = self.view.viewport().geometry()  # in view coordinates
        self.move(vp.right() - self.width() - 10, vp.bottom() - self.height() - 10)
        self.raise_()

"""Sockets: the typed connection points on a node's edges.

Sockets are not QGraphicsItems of their own (500 nodes would mean thousands of items to index and
cache); a node lays them out as `SocketSlot`s and hit-tests them itself. This module owns their
geometry conventions, painting and the compatibility check used while a wire is dragged.

Invariant: a slot's `pos` is in the node's local coordinates; scene position = node.pos() + pos.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPen

from engine.sockets import SocketType, can_connect
from app import theme

HIT_RADIUS = 11.0  # scene units: generous, wires are easier to drop than to aim


@dataclass
class SocketSlot:
    name: str
    type_name: str  # SocketType value, or "ANY" for a placeholder node's unknown socket
    is_output: bool
    pos: QPointF
    optional: bool = False
    widget: bool = False  # the socket of an inline widget: a link may replace its value

    @property
    def socket_type(self) -> SocketType:
        try:
            return SocketType(self.type_name)
        except ValueError:
            return SocketType.ANY


def check_link(source: SocketSlot, target: SocketSlot) -> tuple[bool, str]:
    """Whether a wire may join two slots (either drag direction), with the reason if not."""
    if source.is_output == target.is_output:
        side = "outputs" if source.is_output else "inputs"
        return False, f"cannot link two {side}"
    out, inp = (source, target) if source.is_output else (target, source)
    return can_connect(out.socket_type, inp.socket_type)


def paint_socket(painter: QPainter, slot: SocketSlot, connected: bool, highlight: int = 0) -> None:
    """Filled when connected or required, a ring when optional and free.
    highlight: 0 none, 1 compatible with the wire being dragged, -1 incompatible (dimmed)."""
    color = theme.socket_color(slot.type_name)
    if highlight < 0:
        color = QColor(color.red() // 3, color.green() // 3, color.blue() // 3)
    r = theme.SOCKET_R
    if slot.widget and not connected and highlight <= 0:
        # a widget's socket is an offer, not a requirement: small and quiet until used
        faded = QColor(color)
        faded.setAlpha(110)
        painter.setPen(QPen(faded, 1.4))
        painter.setBrush(Qt.NoBrush)
        painter.drawEllipse(slot.pos, r * 0.6, r * 0.6)
        return
    if highlight > 0:
        painter.setPen(Qt.NoPen)
        glow = QColor(color)
        glow.setAlpha(90)
        painter.setBrush(glow)
        painter.drawEllipse(slot.pos, r + 4, r + 4)
    painter.setPen(QPen(theme.NODE_BORDER, 1.5))
    if connected or not slot.optional:
        painter.setBrush(QBrush(color))
    else:
        painter.setBrush(QBrush(theme.NODE_BG))
        painter.setPen(QPen(color, 2.0))
    if slot.type_name in theme.MODEL_SOCKETS:
        painter.save()
        painter.translate(slot.pos)
        painter.rotate(45)
        painter.drawRect(QRectF(-r * 0.85, -r * 0.85, r * 1.7, r * 1.7))
        painter.restore()
    else:
        painter.drawEllipse(slot.pos, r, r)


def slot_at(slots: list[SocketSlot], local: QPointF, radius: float = HIT_RADIUS) -> SocketSlot | None:
    """The slot nearest `local` within `radius`, or None."""
    best, best_d = None, radius * radius
    for slot in slots:
        d = (slot.pos.x() - local.x()) ** 2 + (slot.pos.y() - local.y()) ** 2
        if d <= best_d:
            best, best_d = slot, d
    return best

"""Inline widgets painted with QPainter: one row per literal input, for every input kind.

Widgets are pictures, not QWidgets (STYLE.md: 3,000 proxy widgets took 502 ms to build and slowed
zoomed-out repaints ~4x). Interaction lives in app.widget_editors, which opens a real editor only
while the user edits. `widget_kind` is the one place that maps an InputSpec to a kind:

    number    INT / FLOAT: arrows, value, a fill bar when the range is bounded; drag to change
    seed      INT with seed=True: a number plus its control after each run (app.seed_control):
              a die (dim: fixed, lit: randomize) or +1 / −1; clicking it cycles the modes
    toggle    BOOL
    choice    STRING/TEXT with choices
    model     STRING with file_kind naming a model folder kind: choose from the model folders
    file      STRING with file_kind="input": user media, opened with a file picker
    multiline STRING/TEXT with multiline=True: a text box a few rows high
    text      other STRING/TEXT: one line
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPainterPath, QPen, QPolygonF

from engine.schema import InputSpec
from engine.sockets import SocketType
from app import theme

ARROW_W = 14.0  # width of the - / + zones at the ends of a number widget
DICE_W = 20.0


@dataclass
class WidgetSlot:
    name: str
    kind: str
    rect: QRectF  # node-local
    spec: InputSpec | None = None


def widget_kind(spec: InputSpec) -> str:
    if spec.type in (SocketType.INT, SocketType.FLOAT):
        return "seed" if spec.seed else "number"
    if spec.type == SocketType.BOOL:
        return "toggle"
    if spec.choices:
        return "choice"
    if spec.file_kind == "input":
        return "file"
    if spec.file_kind:
        return "model"
    return "multiline" if spec.multiline else "text"


def widget_height(kind: str) -> float:
    return theme.WIDGET_H * theme.MULTILINE_ROWS if kind == "multiline" else theme.WIDGET_H


def format_value(spec: InputSpec | None, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) or (spec is not None and spec.type == SocketType.FLOAT
                                    and isinstance(value, (int, float))):
        step = spec.step if spec is not None and spec.step else 0.01
        decimals = max(0, min(6, -int(math.floor(math.log10(step))) if step < 1 else 0))
        return f"{float(value):.{decimals}f}"
    if isinstance(value, str) and spec is not None and spec.file_kind:
        return PurePath(value).name or value
    return str(value)


def number_fraction(spec: InputSpec, value: Any) -> float | None:
    """Where `value` sits in a bounded range (0..1), or None when unbounded or huge (seeds)."""
    if spec.min is None or spec.max is None or not isinstance(value, (int, float)):
        return None
    span = float(spec.max) - float(spec.min)
    if span <= 0 or span > 1e6:
        return None
    return max(0.0, min(1.0, (float(value) - float(spec.min)) / span))


def paint_widget(painter: QPainter, slot: WidgetSlot, value: Any, *, linked: bool,
                 hovered: bool, randomize: bool = False, seed_mode: str | None = None) -> None:
    """Paint one inline widget. `seed_mode` (fixed / increment / decrement / randomize) is the
    control of a seed widget; `randomize` is the older spelling of seed_mode="randomize"."""
    seed_mode = seed_mode or ("randomize" if randomize else "fixed")
    rect = slot.rect
    radius = 4.0 if slot.kind == "multiline" else rect.height() / 2
    painter.setPen(Qt.NoPen)
    painter.setBrush(theme.WIDGET_BG_HOVER if hovered and not linked else theme.WIDGET_BG)
    painter.drawRoundedRect(rect, radius, radius)
    painter.setFont(theme.body_font())
    fm = QFontMetrics(painter.font())
    label = slot.name.replace("_", " ")

    if linked:
        painter.setPen(theme.WIDGET_LINKED)
        painter.drawText(rect.adjusted(10, 0, -10, 0), Qt.AlignVCenter | Qt.AlignLeft, f"{label}  ⟵ linked")
        return
    spec = slot.spec
    text_rect = rect.adjusted(10, 0, -10, 0)

    if slot.kind in ("number", "seed"):
        right = rect.right() - (DICE_W if slot.kind == "seed" else 0)
        frac = number_fraction(spec, value) if spec else None
        if frac is not None and frac > 0:
            fill = QPainterPath()
            fill.addRoundedRect(rect, radius, radius)
            clip = QPainterPath()
            clip.addRect(QRectF(rect.left(), rect.top(), (right - rect.left()) * frac, rect.height()))
            painter.setBrush(theme.WIDGET_FILL)
            painter.drawPath(fill.intersected(clip))
        _arrow(painter, QPointF(rect.left() + 7, rect.center().y()), left=True)
        _arrow(painter, QPointF(right - 7, rect.center().y()), left=False)
        text_rect = QRectF(rect.left() + ARROW_W, rect.top(), right - rect.left() - 2 * ARROW_W, rect.height())
        _label_value(painter, fm, text_rect, label, format_value(spec, value))
        if slot.kind == "seed":
            _seed_control(painter, QRectF(right, rect.top(), DICE_W, rect.height()), seed_mode)
    elif slot.kind == "toggle":
        painter.setPen(theme.WIDGET_TEXT)
        painter.drawText(text_rect, Qt.AlignVCenter | Qt.AlignLeft, label)
        knob = QRectF(rect.right() - 34, rect.center().y() - 6, 24, 12)
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor("#4f8fdf") if value else QColor("#45484f"))
        painter.drawRoundedRect(knob, 6, 6)
        painter.setBrush(QColor("#e8e8e8"))
        cx = knob.right() - 6 if value else knob.left() + 6
        painter.drawEllipse(QPointF(cx, knob.center().y()), 4.5, 4.5)
    elif slot.kind in ("choice", "model", "file"):
        shown = format_value(spec, value)
        if slot.kind == "model" and not value:
            shown = "choose a model…"
        elif slot.kind == "file" and not value:
            shown = "choose a file"
        text_rect = rect.adjusted(10, 0, -18, 0)
        _label_value(painter, fm, text_rect, label, shown)
        glyph_rect = QRectF(rect.right() - 16, rect.top(), 12, rect.height())
        if slot.kind == "file":
            _folder(painter, glyph_rect.center())
        else:
            painter.setPen(theme.NODE_TEXT_DIM)
            painter.drawText(glyph_rect, Qt.AlignCenter, "▾")
    elif slot.kind == "multiline":
        painter.setPen(theme.NODE_TEXT_DIM)
        painter.setFont(theme.small_font())
        painter.drawText(rect.adjusted(8, 3, -8, 0), Qt.AlignTop | Qt.AlignLeft, label)
        painter.setFont(theme.body_font())
        painter.setPen(theme.WIDGET_TEXT)
        body = rect.adjusted(8, 16, -8, -4)
        text = str(value) if value is not None else ""
        painter.drawText(body, Qt.AlignTop | Qt.AlignLeft | Qt.TextWordWrap, _clip_lines(fm, text, body))
    else:  # text
        _label_value(painter, fm, text_rect, label, format_value(spec, value))


def _label_value(painter: QPainter, fm: QFontMetrics, rect: QRectF, label: str, value: str) -> None:
    value_w = fm.horizontalAdvance(value)
    room = rect.width() - min(fm.horizontalAdvance(label), rect.width() * 0.5) - 8
    painter.setPen(theme.NODE_TEXT_DIM)
    painter.drawText(rect, Qt.AlignVCenter | Qt.AlignLeft,
                     fm.elidedText(label, Qt.ElideRight, int(rect.width() * 0.5)))
    painter.setPen(theme.WIDGET_TEXT)
    shown = value if value_w <= room else fm.elidedText(value, Qt.ElideMiddle, int(max(room, 20)))
    painter.drawText(rect, Qt.AlignVCenter | Qt.AlignRight, shown)


def _clip_lines(fm: QFontMetrics, text: str, rect: QRectF) -> str:
    """At most as many characters as fit, so long prompts do not lay out megabytes of text."""
    per_line = max(8, int(rect.width() / max(1, fm.averageCharWidth())))
    lines = max(1, int(rect.height() / fm.lineSpacing()))
    limit = per_line * lines
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _arrow(painter: QPainter, center: QPointF, left: bool) -> None:
    d = -3.0 if left else 3.0
    painter.setPen(Qt.NoPen)
    painter.setBrush(theme.NODE_TEXT_DIM)
    painter.drawPolygon(QPolygonF([QPointF(center.x() + d, center.y()),
                                   QPointF(center.x() - d, center.y() - 4),
                                   QPointF(center.x() - d, center.y() + 4)]))


def _folder(painter: QPainter, center: QPointF) -> None:
    """A small folder: this widget opens a file picker."""
    painter.setPen(QPen(theme.NODE_TEXT_DIM, 1.1))
    painter.setBrush(Qt.NoBrush)
    x, y = center.x() - 5.5, center.y() - 3.5
    path = QPainterPath(QPointF(x, y + 8))
    for px, py in ((x, y), (x + 4, y), (x + 5, y + 1.5), (x + 11, y + 1.5), (x + 11, y + 8)):
        path.lineTo(px, py)
    path.closeSubpath()
    painter.drawPath(path)


def _seed_control(painter: QPainter, rect: QRectF, mode: str) -> None:
    """The seed's control after each run: +1 / −1 in the accent colour, else a die (lit when
    randomize, dim when fixed)."""
    if mode in ("increment", "decrement"):
        font = theme.small_font()
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QColor("#e0b341"))
        painter.drawText(rect, Qt.AlignCenter, "+1" if mode == "increment" else "−1")
        painter.setFont(theme.body_font())
        return
    _dice(painter, rect, mode == "randomize")


def _dice(painter: QPainter, rect: QRectF, on: bool) -> None:
    """A die face, lit when on."""
    box = QRectF(rect.center().x() - 6, rect.center().y() - 6, 12, 12)
    painter.setPen(QPen(QColor("#e0b341") if on else theme.NODE_TEXT_DIM, 1.2))
    painter.setBrush(QColor(224, 179, 65, 60) if on else Qt.NoBrush)
    painter.drawRoundedRect(box, 2.5, 2.5)
    painter.setPen(Qt.NoPen)
    painter.setBrush(QColor("#e0b341") if on else theme.NODE_TEXT_DIM)
    for dx, dy in ((-3, -3), (3, 3), (0, 0), (3, -3), (-3, 3)):
        painter.drawEllipse(QPointF(box.center().x() + dx, box.center().y() + dy), 1.1, 1.1)

"""Where everything sits inside a node: a pure function from the document to geometry.

Rows, top to bottom: the title bar; link-only inputs (left) beside outputs (right); a placeholder's
stored inputs as read-only rows; one row per widget input (its socket on the left edge, so a link
can replace the value); the output thumbnail; a failure message. A collapsed node is its title bar
with every socket on the edge midpoints. A stored layout size widens the node and gives extra
height to its multi-line text boxes.

Invariant: depends only on its arguments (no Qt items), so it is cheap to call and easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics

from engine.document import NodeInstance
from engine.schema import NodeSpec
from engine.sockets import LITERAL_TYPES
from app import theme
from app.input_visibility import hidden_inputs
from app.socket_item import SocketSlot
from app.widget_paint import WidgetSlot, format_value, widget_height, widget_kind

MIN_WIDTH = 160.0
TEXT_LINES = 6  # at most this many lines of a node's output text on the canvas
COLLAPSED_WIDTH = 150.0
FOOTER_H = 34.0


@dataclass
class NodeGeometry:
    title: str
    title_color: QColor
    rect: QRectF
    inputs: list[SocketSlot] = field(default_factory=list)
    outputs: list[SocketSlot] = field(default_factory=list)
    widgets: list[WidgetSlot] = field(default_factory=list)
    info_rows: list[tuple[str, str]] = field(default_factory=list)
    info_top: float = 0.0
    thumb_rect: QRectF = field(default_factory=QRectF)
    text_rect: QRectF = field(default_factory=QRectF)  # the node's output text (a caption), if any
    footer: str = ""


def layout_node(node: NodeInstance, spec: NodeSpec | None, layout: dict[str, Any], linked_inputs: set[str],
                linked_outputs: list[str], thumbnail: QSize | None, failure: str,
                text: str = "") -> NodeGeometry:
    size = layout.get("size") if isinstance(layout.get("size"), list) and len(layout["size"]) == 2 else None
    width = max(MIN_WIDTH, float(size[0])) if size else float(theme.NODE_WIDTH)
    g = NodeGeometry(title=node.title or (spec.title if spec else f"{node.type} (missing)"),
                     title_color=theme.category_color(spec.category) if spec else QColor("#4a4a4a"),
                     rect=QRectF())
    custom = QColor(str(layout.get("color") or ""))
    if custom.isValid() and spec is not None:
        g.title_color = custom  # the artist's own colour coding wins over the category
    if spec is None:  # a placeholder: sockets from its links, inputs as read-only rows
        inputs = [(name, "ANY", True) for name in sorted(linked_inputs) if name not in node.inputs]
        outputs = [(name, "ANY") for name in linked_outputs]
        g.info_rows = [(k, _short(v)) for k, v in node.inputs.items()]
        widget_inputs = []
    else:
        inputs = [(i.name, i.type.value, i.optional) for i in spec.inputs
                  if not (i.type in LITERAL_TYPES and not i.link_only)]
        outputs = [(o.name, o.type.value) for o in spec.outputs]
        hidden = hidden_inputs(spec, node.inputs, linked_inputs)  # e.g. another backend's
        widget_inputs = [i for i in spec.inputs if i.has_widget and i.name not in hidden]

    if layout.get("collapsed"):
        mid = theme.TITLE_H / 2
        g.inputs = [SocketSlot(n, t, False, QPointF(0, mid), opt) for n, t, opt in inputs]
        g.inputs += [SocketSlot(i.name, i.type.value, False, QPointF(0, mid), True, True) for i in widget_inputs]
        g.outputs = [SocketSlot(n, t, True, QPointF(COLLAPSED_WIDTH, mid)) for n, t in outputs]
        g.rect = QRectF(0, 0, COLLAPSED_WIDTH, theme.TITLE_H)
        return g

    y = theme.TITLE_H + 6
    rows = max(len(inputs), len(outputs))
    for i in range(rows):
        cy = y + theme.ROW_H * (i + 0.5)
        if i < len(inputs):
            n, t, opt = inputs[i]
            g.inputs.append(SocketSlot(n, t, False, QPointF(0, cy), opt))
        if i < len(outputs):
            n, t = outputs[i]
            g.outputs.append(SocketSlot(n, t, True, QPointF(width, cy)))
    y += theme.ROW_H * rows
    g.info_top = y
    y += theme.ROW_H * len(g.info_rows)

    kinds = [widget_kind(i) for i in widget_inputs]
    heights = [widget_height(k) for k in kinds]
    needed = y + sum(h + 4 for h in heights) + theme.PAD
    multis = kinds.count("multiline")
    extra = (float(size[1]) - needed) / multis if size and multis and float(size[1]) > needed else 0.0
    for ispec, kind, h in zip(widget_inputs, kinds, heights):
        h += extra if kind == "multiline" else 0.0  # a taller node grows its text boxes
        rect = QRectF(theme.PAD + 4, y + 2, width - 2 * theme.PAD - 8, h)
        g.widgets.append(WidgetSlot(ispec.name, kind, rect, ispec))
        socket_y = rect.center().y() if kind != "multiline" else rect.top() + theme.WIDGET_H / 2
        g.inputs.append(SocketSlot(ispec.name, ispec.type.value, False, QPointF(0, socket_y), True, True))
        y += h + 4

    if thumbnail is not None and thumbnail.width() > 0:
        # keep the aspect inside a box at most THUMB_H tall, centred: a run must not make a node
        # so tall that it covers its neighbours
        room = width - 2 * theme.PAD
        th = min(float(theme.THUMB_H), room * thumbnail.height() / thumbnail.width())
        tw = th * thumbnail.width() / thumbnail.height()
        g.thumb_rect = QRectF((width - tw) / 2, y + 4, tw, th)
        y += th + 8
    if text:  # an output text (a recaptioned prompt): up to TEXT_LINES wrapped lines, elided
        fm = QFontMetrics(theme.small_font())
        box_w = width - 2 * theme.PAD - 8
        lines = min(TEXT_LINES, max(1, fm.boundingRect(0, 0, int(box_w), 10_000,
                                                        int(Qt.TextWordWrap), text).height()
                                 // max(1, fm.lineSpacing())))
        g.text_rect = QRectF(theme.PAD + 4, y + 4, box_w, lines * fm.lineSpacing() + 12)
        y += g.text_rect.height() + 8
    g.footer = failure
    if failure:
        y += FOOTER_H
    height = y + theme.PAD
    if size:
        height = max(height, float(size[1]))
    g.rect = QRectF(0, 0, width, height)
    return g


def _short(value: Any) -> str:
    text = format_value(None, value) if not isinstance(value, (dict, list)) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= 60 else text[:59] + "…"

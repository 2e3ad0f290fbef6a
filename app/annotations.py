"""Layout-only canvas objects: notes (Markdown text on a sticky card) and reroute dots on wires.

Both live in the document's `layout` side table, so they never touch execution or cache keys:
- `layout["notes"]`: `[{"title", "text", "markdown": true, "pos": [x, y], "size": [w, h],
  "color"}]` — the same entries the ComfyUI importer writes for Note / MarkdownNote nodes.
- `layout["reroutes"]`: `[{"link": {"from": {...}, "to": {...}}, "points": [[x, y], ...]}]` —
  the points a wire passes through, output to input. A dot belongs to one wire, so it carries
  whatever type that wire carries (Houdini's wire dots; Blender and Nuke use reroute *nodes*,
  which would have put layout into the graph and its cache keys).

Invariant: items hold an index into the model's list and are rebuilt whenever the list changes;
gestures preview by moving the item and push one undo command on release (app.scene).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPainterPath, QPen, QTextDocument
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem

from engine.document import Link
from app import theme

if TYPE_CHECKING:
    from app.scene import GraphScene

NOTE_TITLE_H = 24.0
NOTE_GRIP = 12.0
NOTE_DEFAULT_SIZE = (300.0, 180.0)
NOTE_COLOR = "#4a4330"  # a muted sticky-note yellow that reads on the dark canvas
DOT_R = 6.0


def note_rect(note: dict[str, Any]) -> QRectF:
    def pair(key: str, default: tuple[float, float]) -> tuple[float, float]:
        try:
            return float(note[key][0]), float(note[key][1])
        except (KeyError, TypeError, ValueError, IndexError):
            return default
    x, y = pair("pos", (0.0, 0.0))
    w, h = pair("size", NOTE_DEFAULT_SIZE)
    return QRectF(x, y, max(w, 120.0), max(h, NOTE_TITLE_H + 30))


def link_key(link: Link) -> dict[str, Any]:
    return link.to_json()


def link_of(entry: Any) -> Link | None:
    try:
        lj = entry["link"]
        return Link(lj["from"]["node"], lj["from"]["output"], lj["to"]["node"], lj["to"]["input"])
    except (KeyError, TypeError):
        return None


def points_of(entry: Any) -> list[tuple[float, float]]:
    try:
        return [(float(p[0]), float(p[1])) for p in entry["points"]]
    except (KeyError, TypeError, ValueError, IndexError):
        return []


class NoteItem(QGraphicsItem):
    """A note: title bar, Markdown body; drag the title to move, the corner to resize,
    double-click to edit the text (or the title, on the title bar)."""

    def __init__(self, gscene: "GraphScene", index: int, note: dict[str, Any]):
        super().__init__()
        self.gscene = gscene
        self.index = index
        self.title = str(note.get("title") or "Note")
        self.text = str(note.get("text") or "")
        color = QColor(str(note.get("color") or NOTE_COLOR))
        self.color = color if color.isValid() else QColor(NOTE_COLOR)
        rect = note_rect(note)
        self.setPos(rect.topLeft())
        self._rect = QRectF(0, 0, rect.width(), rect.height())
        self.doc = QTextDocument()
        self.doc.setDefaultFont(theme.body_font())
        self.doc.setDefaultStyleSheet(f"* {{ color: {theme.NODE_TEXT.name()}; }}")
        if note.get("markdown", True):
            self.doc.setMarkdown(self.text)
        else:
            self.doc.setPlainText(self.text)
        self.doc.setTextWidth(rect.width() - 16)
        self.setZValue(-5)  # above groups, below wires and nodes
        self.setFlags(QGraphicsItem.ItemIsSelectable | QGraphicsItem.ItemIsMovable)
        self.setCacheMode(QGraphicsItem.DeviceCoordinateCache)

    def scene_rect(self) -> QRectF:
        return self._rect.translated(self.pos())

    def boundingRect(self) -> QRectF:  # noqa: N802
        return self._rect.adjusted(-3, -3, 3, 3)

    def grip_rect(self) -> QRectF:
        r = self._rect
        return QRectF(r.right() - NOTE_GRIP, r.bottom() - NOTE_GRIP, NOTE_GRIP, NOTE_GRIP)

    def set_size(self, w: float, h: float) -> None:
        self.prepareGeometryChange()
        self._rect = QRectF(0, 0, max(120.0, w), max(NOTE_TITLE_H + 30, h))
        self.doc.setTextWidth(self._rect.width() - 16)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setPen(QPen(theme.NODE_SELECTED if self.isSelected() else self.color.lighter(150),
                            1.6 if self.isSelected() else 1.0))
        painter.setBrush(self.color)
        painter.drawRoundedRect(self._rect, 4, 4)
        painter.setPen(Qt.NoPen)
        painter.setBrush(self.color.lighter(125))
        path = QPainterPath()
        path.addRoundedRect(QRectF(0, 0, self._rect.width(), NOTE_TITLE_H), 4, 4)
        painter.drawPath(path)
        painter.setFont(theme.title_font())
        painter.setPen(theme.NODE_TITLE_TEXT)
        fm = QFontMetrics(painter.font())
        title = QRectF(8, 0, self._rect.width() - 16, NOTE_TITLE_H)
        painter.drawText(title, Qt.AlignVCenter | Qt.AlignLeft,
                         fm.elidedText("✎ " + self.title, Qt.ElideRight, int(title.width())))
        body = QRectF(8, NOTE_TITLE_H + 4, self._rect.width() - 16, self._rect.height() - NOTE_TITLE_H - 8)
        painter.save()
        painter.translate(body.topLeft())
        painter.setClipRect(QRectF(QPointF(0, 0), QSizeF(body.width(), body.height())))
        self.doc.drawContents(painter, QRectF(0, 0, body.width(), body.height()))
        painter.restore()
        g = self.grip_rect()
        painter.setPen(QPen(theme.NODE_TEXT_DIM, 1.0))
        for k in (4, 8):
            painter.drawLine(QPointF(g.right() - k, g.bottom() - 2), QPointF(g.right() - 2, g.bottom() - k))

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.LeftButton and self.grip_rect().contains(event.pos()):
            self.gscene.begin_note_resize(self, event.scenePos())
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self.gscene.note_resizing is self:
            self.gscene.update_note_resize(event.scenePos())
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self.gscene.note_resizing is self:
            self.gscene.end_note_resize()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        self.gscene.edit_note(self.index, title=event.pos().y() < NOTE_TITLE_H)
        event.accept()


class RerouteItem(QGraphicsItem):
    """A dot a wire passes through: drag it to route the wire, double-click it to remove it."""

    def __init__(self, gscene: "GraphScene", link: Link, point_index: int, color: QColor):
        super().__init__()
        self.gscene = gscene
        self.link = link
        self.point_index = point_index
        self.color = QColor(color)
        self.setFlags(QGraphicsItem.ItemIsSelectable | QGraphicsItem.ItemIsMovable
                      | QGraphicsItem.ItemSendsGeometryChanges)
        self.setZValue(0.5)  # over its wire, under nodes
        self.setToolTip("Reroute dot — drag to route the wire, double-click to remove")

    def boundingRect(self) -> QRectF:  # noqa: N802
        return QRectF(-DOT_R - 2, -DOT_R - 2, 2 * DOT_R + 4, 2 * DOT_R + 4)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addEllipse(QPointF(0, 0), DOT_R + 2, DOT_R + 2)
        return path

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setPen(QPen(theme.NODE_SELECTED if self.isSelected() else theme.NODE_BORDER, 1.5))
        painter.setBrush(self.color)
        painter.drawEllipse(QPointF(0, 0), DOT_R, DOT_R)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:  # noqa: N802
        if change == QGraphicsItem.ItemPositionHasChanged:
            self.gscene.reroute_moved(self)
        return super().itemChange(change, value)

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        self.gscene.editor.remove_reroute(self.link, self.point_index)
        event.accept()

"""The node palette: a searchable list of node types that pops up on the canvas (double-click on
empty canvas, Tab, or dropping a wire on empty canvas — then filtered to compatible nodes).

Search is fuzzy over the name, display name, category and description: every query word must
match somewhere; a word matching the start of the name ranks above a subsequence in the name,
which ranks above the category, which ranks above the description.
"""

from __future__ import annotations

from typing import Callable, Iterable

from PySide6.QtCore import QPoint, QRect, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QFrame, QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from engine.schema import NodeSpec
from engine.sockets import SocketType, can_connect

SpecFilter = Callable[[NodeSpec], bool]
MAX_ROWS = 14
WIDTH = 380


def _subsequence_score(query: str, text: str) -> float | None:
    """Score of `query` as a subsequence of `text` (both lower case): contiguous runs and word
    starts score higher; None when it is not a subsequence."""
    if not query:
        return 0.0
    pos, score, run = 0, 0.0, 0
    for ch in query:
        found = text.find(ch, pos)
        if found < 0:
            return None
        if found == pos:
            run += 1
            score += 1.0 + run
        else:
            run = 0
            score += 0.5
        if found == 0 or not text[found - 1].isalnum():
            score += 1.5
        pos = found + 1
    return score / (1 + 0.02 * len(text))


def fuzzy_score(query: str, spec: NodeSpec) -> float | None:
    """How well `query` matches a node type; None when some word matches nothing."""
    words = query.lower().split()
    if not words:
        return 0.0
    name = f"{spec.name} {spec.title}".lower()
    category = spec.category.lower()
    description = spec.description.lower()
    total = 0.0
    for word in words:
        best = None
        if name.startswith(word) or spec.title.lower().startswith(word):
            best = 100.0 + len(word)
        elif word in name:
            best = 60.0 + len(word)
        else:
            s = _subsequence_score(word, name)
            if s is not None and len(word) >= 2:
                best = 30.0 + s
        if best is None and word in category:
            best = 20.0 + len(word)
        if best is None and word in description:
            best = 10.0 + len(word)
        if best is None:
            return None
        total += best
    return total


def search_specs(specs: Iterable[NodeSpec], query: str, keep: SpecFilter | None = None) -> list[NodeSpec]:
    """Matching specs, best first (ties by category then name)."""
    scored = []
    for spec in specs:
        if keep is not None and not keep(spec):
            continue
        score = fuzzy_score(query, spec)
        if score is not None:
            scored.append((-score, spec.category.lower(), spec.title.lower(), spec))
    scored.sort(key=lambda t: t[:3])
    return [t[3] for t in scored]


def accepts_output(out_type: SocketType) -> SpecFilter:
    """Specs with an input that an output of `out_type` may feed."""
    return lambda spec: any(can_connect(out_type, i.type)[0] for i in spec.inputs)


def provides_input(in_type: SocketType) -> SpecFilter:
    """Specs with an output that may feed an input of `in_type`."""
    return lambda spec: any(can_connect(o.type, in_type)[0] for o in spec.outputs)


class NodePalette(QFrame):
    """Popup over the canvas: a search field and the matching node types."""

    chosen = Signal(str)  # node type name

    def __init__(self, parent: QWidget, specs: list[NodeSpec]):
        super().__init__(parent)
        self.setObjectName("NodePalette")
        self.setFrameShape(QFrame.StyledPanel)
        self.setStyleSheet("#NodePalette { background: #25272b; border: 1px solid #4a4e57;"
                           " border-radius: 6px; }")
        self.specs = specs
        self.keep: SpecFilter | None = None
        self._avoid: QRect | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        self.header = QLabel("Add node")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search nodes…  (name, category, description)")
        self.results = QListWidget()
        self.results.setUniformItemSizes(True)
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #8d9098; font-size: 11px;")
        layout.addWidget(self.header)
        layout.addWidget(self.search)
        layout.addWidget(self.results)
        layout.addWidget(self.hint)
        self.resize(WIDTH, 400)
        self.hint.setMinimumHeight(44)  # room for a three-line description
        self.hint.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.search.textChanged.connect(self.refresh)
        self.search.installEventFilter(self)
        self.results.itemActivated.connect(self._activate)
        self.results.currentItemChanged.connect(self._show_hint)
        self.hide()

    def open_at(self, pos: QPoint, keep: SpecFilter | None = None, title: str = "Add node",
                avoid: QRect | None = None) -> None:
        """Show at `pos` (kept inside the parent), clear of `avoid` (the minimap) when given."""
        self.keep = keep
        self.header.setText(title)
        self.search.clear()
        self.refresh()  # first: the height depends on the results
        self._avoid = avoid
        self._place(pos)
        self.show()
        self.raise_()
        self.search.setFocus()

    def refresh(self) -> None:
        self.results.clear()
        for spec in search_specs(self.specs, self.search.text(), self.keep)[:200]:
            item = QListWidgetItem(f"{spec.title}    ·  {spec.category}")
            item.setData(Qt.UserRole, spec.name)
            item.setToolTip(" ".join(spec.description.split()))
            self.results.addItem(item)
        if self.results.count():
            self.results.setCurrentRow(0)
        else:
            self.hint.setText("no matching nodes")
        self._fit()

    def _fit(self) -> None:
        """As tall as the results need (up to MAX_ROWS rows), plus the whole description of the
        current entry (word-wrapped at the palette's width, never cut off)."""
        row = self.results.sizeHintForRow(0) if self.results.count() else 20
        rows = max(3, min(MAX_ROWS, self.results.count()))
        self.results.setFixedHeight(rows * row + 2 * self.results.frameWidth() + 4)
        margins = self.layout().contentsMargins()
        text_w = WIDTH - margins.left() - margins.right()
        self.hint.setFixedHeight(max(44, self.hint.heightForWidth(text_w)))
        self.adjustSize()
        self.resize(WIDTH, self.sizeHint().height())
        if self.isVisible():
            self._place(self.pos())

    def _place(self, pos: QPoint) -> None:
        parent = self.parentWidget()
        x = max(0, min(pos.x(), parent.width() - self.width()))
        y = max(0, min(pos.y(), parent.height() - self.height()))
        avoid = self._avoid
        if avoid is not None and avoid.intersects(QRect(x, y, self.width(), self.height())):
            if avoid.left() - self.width() - 8 >= 0:
                x = avoid.left() - self.width() - 8  # beside the minimap, at the same height
            else:
                y = max(0, avoid.top() - self.height() - 8)
        self.move(x, y)

    def current_names(self) -> list[str]:
        return [self.results.item(i).data(Qt.UserRole) for i in range(self.results.count())]

    def choose_current(self) -> None:
        item = self.results.currentItem()
        if item is not None:
            self._activate(item)

    def _activate(self, item: QListWidgetItem) -> None:
        name = item.data(Qt.UserRole)
        self.hide()
        self.chosen.emit(name)

    def _show_hint(self, item: QListWidgetItem | None, _prev=None) -> None:
        self.hint.setText(item.toolTip() if item is not None else "")
        self._fit()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if obj is self.search and isinstance(event, QKeyEvent) and event.type() == QKeyEvent.KeyPress:
            key = event.key()
            if key in (Qt.Key_Down, Qt.Key_Up):
                row = self.results.currentRow() + (1 if key == Qt.Key_Down else -1)
                self.results.setCurrentRow(max(0, min(self.results.count() - 1, row)))
                return True
            if key in (Qt.Key_Return, Qt.Key_Enter):
                self.choose_current()
                return True
            if key == Qt.Key_Escape:
                self.hide()
                return True
        return super().eventFilter(obj, event)

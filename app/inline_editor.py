"""The real text editor that opens over a painted widget (or a title) while the user types.

One editor at a time, a child of the canvas viewport placed over the widget's scene rect and
scaled with the zoom. Enter (Ctrl+Enter in multi-line text) or leaving the field commits; Escape
cancels. Committing calls back exactly once; the caller turns the text into an undo command.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject, QRect, Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QLineEdit, QPlainTextEdit, QWidget


class InlineEditor(QObject):
    def __init__(self, parent: QWidget, rect: QRect, text: str, multiline: bool, zoom: float,
                 on_commit: Callable[[str], None], on_close: Callable[[], None]):
        super().__init__(parent)
        self._on_commit = on_commit
        self._on_close = on_close
        self._done = False
        self.multiline = multiline
        font = QFont("DejaVu Sans")
        font.setPixelSize(max(10, min(22, round(12 * zoom))))
        if multiline:
            self.widget: QWidget = QPlainTextEdit(parent)
            self.widget.setPlainText(text)
            rect.setHeight(max(rect.height(), 90))
        else:
            self.widget = QLineEdit(parent)
            self.widget.setText(text)
            self.widget.selectAll()
            self.widget.returnPressed.connect(self.commit)
            rect.setHeight(max(rect.height(), font.pixelSize() + 10))
        rect.setWidth(max(rect.width(), 120))
        self.widget.setFont(font)
        self.widget.setGeometry(rect)
        self.widget.setStyleSheet("background: #15161a; color: #f0f0f0; border: 1px solid #4f8fdf;"
                                  " border-radius: 4px;")
        self.widget.installEventFilter(self)
        self.widget.show()
        self.widget.setFocus(Qt.OtherFocusReason)

    def text(self) -> str:
        w = self.widget
        return w.toPlainText() if isinstance(w, QPlainTextEdit) else w.text()

    def set_text(self, text: str) -> None:
        w = self.widget
        if isinstance(w, QPlainTextEdit):
            w.setPlainText(text)
        else:
            w.setText(text)

    def commit(self) -> None:
        if self._done:
            return
        self._done = True
        text = self.text()
        self._close()
        self._on_commit(text)

    def cancel(self) -> None:
        if self._done:
            return
        self._done = True
        self._close()

    def _close(self) -> None:
        self.widget.removeEventFilter(self)
        self.widget.hide()
        self.widget.deleteLater()
        self._on_close()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.KeyPress:
            key = event.key()
            if key == Qt.Key_Escape:
                self.cancel()
                return True
            if self.multiline and key in (Qt.Key_Return, Qt.Key_Enter) and \
                    event.modifiers() & Qt.ControlModifier:
                self.commit()
                return True
        elif event.type() == QEvent.FocusOut:
            self.commit()
        return False

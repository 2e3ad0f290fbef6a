"""The log dock: run events, warnings and errors with timestamps, newest at the bottom.

Tracebacks arrive here in full (the canvas shows only the message). The widget keeps at most
MAX_LINES blocks so a long session cannot grow without bound.
"""

from __future__ import annotations

import html
import time

from PySide6.QtGui import QFont, QTextCursor
from PySide6.QtWidgets import QPlainTextEdit

MAX_LINES = 5000
LEVEL_COLORS = {"debug": "#7a7f8a", "info": "#c8cacf", "warning": "#ffb74d", "error": "#ef5350"}


class LogPanel(QPlainTextEdit):
    def __init__(self):
        super().__init__()
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_LINES)
        font = QFont("DejaVu Sans Mono")
        font.setPixelSize(11)
        self.setFont(font)
        self.lines: list[tuple[str, str]] = []  # (level, message), for tests and copy-out

    def append(self, level: str, message: str) -> None:
        self.lines.append((level, message))
        del self.lines[:-MAX_LINES]
        color = LEVEL_COLORS.get(level, LEVEL_COLORS["info"])
        stamp = time.strftime("%H:%M:%S")
        body = html.escape(message).replace("\n", "<br>")
        self.appendHtml(f'<span style="color:#6d7078">{stamp}</span> '
                        f'<span style="color:{color}">{body}</span>')
        self.moveCursor(QTextCursor.End)

    def text(self) -> str:
        return "\n".join(m for _, m in self.lines)

"""A dismissible banner above the canvas with a ComfyUI import report.

One summary line ("wan.json: ComfyUI ui 1.0 workflow; 12 node(s) mapped, 1 placeholder(s)…"),
a Details toggle listing every entry (placeholders first), and a close button. It replaces a modal
dialog: the imported graph is visible while the artist reads what did not carry over.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QToolButton,
                               QVBoxLayout, QWidget)


class ImportBanner(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("importBanner")
        self.setStyleSheet("#importBanner { background: #3a3320; border-bottom: 1px solid #6b5a2a; }"
                           "QLabel { color: #f0e0b0; }")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.details_button = QToolButton()
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Dismiss")
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(160)
        self.details.hide()
        self.details_button.toggled.connect(self.details.setVisible)
        self.close_button.clicked.connect(self.hide)
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.details_button)
        top.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.details)
        self.hide()

    def show_report(self, report: Any) -> None:
        """Show an engine.comfy ImportReport (anything with summary() and to_text())."""
        placeholders = len(getattr(report, "placeholders", []) or [])
        icon = "⚠" if placeholders or getattr(report, "warnings", None) else "✓"
        self.summary.setText(f"{icon} Imported from ComfyUI — {report.summary()}")
        lines = report.to_text().splitlines()[1:]
        self.details.setPlainText("\n".join(line.strip() for line in lines) or "Everything mapped.")
        self.details_button.setEnabled(bool(lines))
        self.details_button.setChecked(placeholders > 0)  # open when something is missing
        self.show()

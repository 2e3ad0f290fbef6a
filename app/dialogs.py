"""Every modal question the studio asks, in one swappable object.

Tests (and scripted use) replace these methods to answer without a person; nothing else in app/
opens a modal dialog directly. File filters list the formats the engine reads.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox, QWidget

WORKFLOW_FILTER = ("Workflows and outputs that embed one (*.json *.png *.webp *.gif *.mp4 *.webm *.mkv *.mov);;"
                   "Reelgraph workflows (*.json);;All files (*)")
MEDIA_FILTER = ("Images and videos (*.png *.jpg *.jpeg *.webp *.bmp *.mp4 *.webm *.mov *.mkv *.gif);;"
                "All files (*)")
DROPPABLE_MEDIA = {".png", ".jpg", ".jpeg", ".webp", ".mp4", ".webm", ".mov", ".mkv", ".gif"}


class Dialogs:
    def __init__(self, parent: QWidget | None = None):
        self.parent = parent

    def open_workflow_path(self, start: str = "") -> str | None:
        path, _ = QFileDialog.getOpenFileName(self.parent, "Open workflow", start, WORKFLOW_FILTER)
        return path or None

    def save_workflow_path(self, start: str = "") -> str | None:
        path, _ = QFileDialog.getSaveFileName(self.parent, "Save workflow as", start, WORKFLOW_FILTER)
        if path and not Path(path).suffix:
            path += ".json"
        return path or None

    def save_image_path(self, start: str = "") -> str | None:
        path, _ = QFileDialog.getSaveFileName(self.parent, "Export canvas image", start, "PNG (*.png)")
        return path or None

    def media_file(self, current: str = "") -> str | None:
        start = str(Path(current).parent) if current else ""
        path, _ = QFileDialog.getOpenFileName(self.parent, "Choose an image or video", start, MEDIA_FILTER)
        return path or None

    def choose_template(self, entries, registry) -> str | None:
        """The template browser (app.templates); the chosen file's path, or None."""
        from app.templates import TemplateBrowser

        browser = TemplateBrowser(entries, registry, self.parent)
        return str(browser.chosen) if browser.exec() and browser.chosen else None

    def folder(self, title: str, start: str = "") -> str | None:
        path = QFileDialog.getExistingDirectory(self.parent, title, start)
        return path or None

    def save_discard_cancel(self, question: str) -> str:
        """'save', 'discard' or 'cancel'."""
        box = QMessageBox(QMessageBox.Warning, "Unsaved changes", question,
                          QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, self.parent)
        answer = box.exec()
        return {QMessageBox.Save: "save", QMessageBox.Discard: "discard"}.get(answer, "cancel")

    def confirm(self, title: str, question: str) -> bool:
        answer = QMessageBox.question(self.parent, title, question)
        return answer == QMessageBox.Yes

    def error(self, title: str, message: str) -> None:
        QMessageBox.critical(self.parent, title, message)

    def warning(self, title: str, message: str) -> None:
        QMessageBox.warning(self.parent, title, message)

    def text(self, title: str, label: str, current: str = "") -> str | None:
        text, ok = QInputDialog.getText(self.parent, title, label, text=current)
        return text if ok else None

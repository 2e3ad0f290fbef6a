"""What the canvas offers to inline widgets and gestures: the EditorHost side of the view.

A mixin of GraphView, kept apart so the view module stays about navigation and gestures. It shows
the transient things: the refusal toast, the inline text editor over a widget or title, popup
menus of choices, the file picker and the model-folder listing.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QPoint, QPointF, QRectF
from PySide6.QtWidgets import QMenu

from app.inline_editor import InlineEditor


class CanvasHostMixin:
    # ---- feedback -----------------------------------------------------------------------------
    def show_toast(self, text: str, scene_pos: QPointF, seconds: float = 0.0) -> None:
        self.toast.setText(text)
        self.toast.adjustSize()
        self.toast.move(self.mapFromScene(scene_pos) + QPoint(16, 12))
        self.toast.show()
        self.toast.raise_()
        if seconds:
            self._toast_timer.start(int(seconds * 1000))

    def hide_toast(self) -> None:
        if not self._toast_timer.isActive():
            self.toast.hide()

    # ---- EditorHost ---------------------------------------------------------------------------
    def show_text_editor(self, scene_rect: QRectF, text: str, multiline: bool,
                         on_commit: Callable[[str], None]) -> None:
        self.commit_editor()
        rect = self.mapFromScene(scene_rect).boundingRect()
        self.inline_editor = InlineEditor(self.viewport(), rect, text, multiline, self.zoom(),
                                          on_commit, self._editor_closed)

    def _editor_closed(self) -> None:
        self.inline_editor = None
        self.setFocus()

    def commit_editor(self) -> None:
        if self.inline_editor is not None:
            self.inline_editor.commit()

    def popup_choices(self, choices: list[str], current, scene_pos: QPointF,
                      on_choose: Callable[[str], None], empty_hint: str = "") -> None:
        menu = QMenu(self)
        for choice in choices:
            action = menu.addAction(choice)
            action.setCheckable(True)
            action.setChecked(choice == current)
            action.triggered.connect(lambda _=False, c=choice: on_choose(c))
        if not choices:
            menu.addAction(empty_hint or "nothing to choose").setEnabled(False)
        self.active_menu = menu
        menu.popup(self.viewport().mapToGlobal(self.mapFromScene(scene_pos)))

    def pick_media_file(self, current: str) -> str | None:
        return self.dialogs.media_file(current)

    def model_names(self, kind: str) -> list[str]:
        try:
            return self._model_names(kind)
        except (OSError, ValueError) as exc:
            self.status_message.emit(f"Cannot list {kind} models: {exc}")
            return []

    def show_status(self, text: str) -> None:
        self.status_message.emit(text)

    def _prompt_text(self, what: str, current: str, on_done: Callable[[str], None]) -> None:
        """Rename a node or group in place, over its title bar."""
        kind, _, key = what.partition(":")
        if kind == "node" and key in self.gscene.nodes:
            item = self.gscene.nodes[key]
            rect = item.mapRectToScene(QRectF(20, 0, item.body_rect().width() - 20, 26))
        elif kind == "group" and key.isdigit() and int(key) < len(self.gscene.groups):
            group = self.gscene.groups[int(key)]
            rect = group.mapRectToScene(group.title_rect())
        elif kind in ("note", "note-title") and key.isdigit() and int(key) < len(self.gscene.notes):
            note = self.gscene.notes[int(key)].scene_rect()
            multiline = kind == "note"
            rect = note if multiline else QRectF(note.x(), note.y(), note.width(), 24)
            self.show_text_editor(rect, current, multiline, on_done)
            return
        else:
            return
        self.show_text_editor(rect, current, False, on_done)


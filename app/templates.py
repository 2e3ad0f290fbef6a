"""Templates: the example workflows that ship with Reelgraph (workflows/) and the user's own
(a `templates` folder in the user data dir), listed with a thumbnail, title and description.

- File ▸ New from Template opens a *copy*: the document has no path, so Save asks where to write
  it and an example or template file is never overwritten.
- File ▸ Save as Template writes the current graph as NAME.json plus NAME.png (its canvas) into
  the user's templates folder.
- Thumbnails of examples are their canvas, rendered offscreen (app.export) once and cached under
  the user cache dir, keyed by the file's size and modification time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QImage, QPainter, QPixmap, QUndoStack
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QLabel, QListWidget, QListWidgetItem,
                               QVBoxLayout, QWidget)

from engine import bundle
from engine.config import APP_NAME

THUMB = QSize(280, 168)


@dataclass(frozen=True)
class TemplateEntry:
    path: Path
    title: str
    description: str
    source: str  # "example" | "user"
    thumbnail: Path | None = None  # a PNG next to a user template


def user_templates_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "templates"


def _thumb_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME)) / "template-thumbnails"


def _meta(path: Path) -> dict[str, Any]:
    """The workflow's meta (title, description) without building the graph; {} when unreadable."""
    try:
        if path.stat().st_size > 16 * 2**20:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    meta = data.get("meta") if isinstance(data, dict) else None
    return meta if isinstance(meta, dict) else {}


def _entry(path: Path, source: str) -> TemplateEntry:
    meta = _meta(path)
    title = meta.get("title") if isinstance(meta.get("title"), str) and meta.get("title") else path.stem
    desc = meta.get("description") if isinstance(meta.get("description"), str) else ""
    thumb = path.with_suffix(".png")
    return TemplateEntry(path, title, " ".join(desc.split()), source,
                         thumb if source == "user" and thumb.is_file() else None)


def list_templates(examples_dir: Path | None = None, user_dir: Path | None = None) -> list[TemplateEntry]:
    """The examples, then the user's templates, each sorted by title."""
    out: list[TemplateEntry] = []
    for folder, source in ((examples_dir or bundle.workflows_dir(), "example"),
                           (user_dir or user_templates_dir(), "user")):
        if folder.is_dir():
            out += sorted((_entry(p, source) for p in folder.glob("*.json")), key=lambda e: e.title.lower())
    return out


def is_protected(path: str | Path | None) -> bool:
    """True for a file Save must not overwrite in place: an example that ships with Reelgraph."""
    if not path:
        return False
    try:
        return Path(path).resolve().parent == bundle.workflows_dir().resolve()
    except OSError:
        return False


def template_name(text: str) -> str:
    """A file-system-safe name for a template typed by the user ("" when nothing is left)."""
    return re.sub(r"[^\w\- .]+", "_", text.strip()).strip(" .")[:100]


def save_template(scene, name: str, folder: Path | None = None) -> Path:
    """Write the scene's workflow as a template NAME.json (+ NAME.png thumbnail); returns the path.
    Raises OSError when it cannot be written."""
    from app.export import render_scene_image

    folder = folder or user_templates_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    from engine.document import workflow_from_json

    data = copy.deepcopy(scene.model.workflow.to_json())
    data["meta"] = dict(data.get("meta") or {}, title=name)
    workflow_from_json(data).save(path)
    image = render_scene_image(scene, max_side=THUMB.width() * 2)
    image.scaled(THUMB * 2, Qt.KeepAspectRatio, Qt.SmoothTransformation).save(str(path.with_suffix(".png")), "PNG")
    return path


def fit(image: QImage) -> QImage:
    """The image scaled into one fixed-size card (twice THUMB for sharp HiDPI icons), centred on
    the canvas colour, so every cell of the grid has the same picture size and its title shows."""
    from app import theme

    size = THUMB * 2
    card = QImage(size, QImage.Format_ARGB32_Premultiplied)
    card.fill(theme.CANVAS_BG)
    scaled = image.scaled(size, Qt.KeepAspectRatio, Qt.SmoothTransformation)
    painter = QPainter(card)
    painter.drawImage((size.width() - scaled.width()) // 2, (size.height() - scaled.height()) // 2, scaled)
    painter.end()
    return card


def thumbnail(entry: TemplateEntry, registry) -> QImage | None:
    """The entry's picture on a fixed-size card: a user template's saved PNG, else its canvas
    rendered (cached)."""
    if entry.thumbnail is not None:
        image = QImage(str(entry.thumbnail))
        return None if image.isNull() else fit(image)
    try:
        stat = entry.path.stat()
    except OSError:
        return None
    key = hashlib.sha1(f"{entry.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = _thumb_cache_dir() / f"{entry.path.stem}-{key}-v2.png"
    if cached.is_file():
        image = QImage(str(cached))
        if not image.isNull():
            return image
    image = _render(entry.path, registry)
    if image is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            image.save(str(cached), "PNG")
        except OSError:
            pass  # a cache that cannot be written only costs a re-render
    return image


def _render(path: Path, registry) -> QImage | None:
    from engine.document import load_workflow
    from engine.errors import WorkflowError
    from app.export import render_scene_image
    from app.graph_model import GraphModel
    from app.scene import GraphScene

    try:
        workflow = load_workflow(path, allow_newer=True)
    except WorkflowError:
        return None
    scene = GraphScene(GraphModel(registry, workflow), QUndoStack())
    return fit(render_scene_image(scene, max_side=THUMB.width() * 3))


class TemplateBrowser(QDialog):
    """A grid of thumbnails, examples first, then the user's templates; the description of the
    selected one below. Double-click or Open copy chooses; `chosen` is then its path."""

    def __init__(self, entries: list[TemplateEntry], registry, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("New from template")
        self.resize(1000, 720)
        self.chosen: Path | None = None
        self.lists: dict[str, QListWidget] = {}
        layout = QVBoxLayout(self)
        for source, heading in (("example", "Examples"), ("user", "My templates")):
            items = [e for e in entries if e.source == source]
            label = QLabel(heading.upper())
            label.setStyleSheet("color: #8d9098; font-size: 10px; font-weight: bold; margin-top: 4px;")
            layout.addWidget(label)
            if not items:
                hint = QLabel("None yet — File ▸ Save as Template… adds the graph on the canvas here."
                              if source == "user" else "No examples found.")
                hint.setStyleSheet("color: #8d9098;")
                layout.addWidget(hint)
                continue
            grid = QListWidget()
            grid.setViewMode(QListWidget.IconMode)
            grid.setIconSize(THUMB)
            grid.setGridSize(QSize(THUMB.width() + 24, THUMB.height() + 52))
            grid.setResizeMode(QListWidget.Adjust)
            grid.setMovement(QListWidget.Static)
            grid.setWordWrap(True)
            grid.setUniformItemSizes(True)
            for entry in items:
                image = thumbnail(entry, registry)
                icon = QIcon(QPixmap.fromImage(image)) if image is not None else QIcon()
                item = QListWidgetItem(icon, entry.title)
                item.setData(Qt.UserRole, entry)
                item.setToolTip(entry.description or entry.title)
                grid.addItem(item)
            grid.currentItemChanged.connect(lambda cur, _prev, g=grid: self._selected(g, cur))
            grid.itemDoubleClicked.connect(lambda item: self._choose(item))
            layout.addWidget(grid, 3 if source == "example" else 2)
            self.lists[source] = grid
        self.description = QLabel("Choose a template; it opens as an unsaved copy.")
        self.description.setWordWrap(True)
        self.description.setMinimumHeight(48)
        self.description.setStyleSheet("color: #b8bbc2;")
        layout.addWidget(self.description)
        buttons = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        buttons.button(QDialogButtonBox.Open).setText("Open a copy")
        buttons.accepted.connect(lambda: self._choose(self._current()))
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        first = next(iter(self.lists.values()), None)
        if first is not None and first.count():
            first.setCurrentRow(0)

    def _current(self) -> QListWidgetItem | None:
        for grid in self.lists.values():
            if grid.currentItem() is not None and grid.currentItem().isSelected():
                return grid.currentItem()
        return None

    def _selected(self, grid: QListWidget, item: QListWidgetItem | None) -> None:
        if item is None:
            return
        for other in self.lists.values():
            if other is not grid:
                other.clearSelection()
        entry: TemplateEntry = item.data(Qt.UserRole)
        where = "example that ships with Reelgraph" if entry.source == "example" else f"your template ({entry.path})"
        self.description.setText(f"<b>{entry.title}</b> — {where}<br>{entry.description}")

    def _choose(self, item: QListWidgetItem | None) -> None:
        if item is None:
            return
        self.chosen = item.data(Qt.UserRole).path
        self.accept()

"""Studio settings: the engine's Settings (model roots, node pack folders, output folder — shared
with the CLI, engine.config) plus studio-only preferences (recent files) and the dialog to edit them.

Both files live in the platformdirs user config dir; the engine's file is engine.config's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QListWidget, QPushButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from engine.config import Settings, load_settings, save_settings
from engine.atomic_files import atomic_write_text

APP_NAME = "reelgraph"
MAX_RECENT = 10


def prefs_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "studio.json"


@dataclass
class StudioPrefs:
    recent_files: list[str] = field(default_factory=list)
    path: Path | None = None  # where to save; None = do not persist (tests)

    @classmethod
    def load(cls, path: Path | None = None) -> "StudioPrefs":
        path = path or prefs_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        recent = data.get("recent_files") if isinstance(data, dict) else None
        return cls([str(p) for p in recent if isinstance(p, str)] if isinstance(recent, list) else [], path)

    def save(self) -> None:
        if self.path is not None:
            try:
                atomic_write_text(self.path, json.dumps({"recent_files": self.recent_files}, indent=2))
            except OSError:
                pass  # preferences are a convenience; never fail an edit over them

    def add_recent(self, path: str) -> None:
        path = str(Path(path).resolve())
        self.recent_files = [path] + [p for p in self.recent_files if p != path]
        del self.recent_files[MAX_RECENT:]
        self.save()


def _with_buttons(owner: QWidget, body: QWidget, buttons: list[QPushButton]) -> None:
    """`body` with a column of buttons on its right, as `owner`'s whole layout."""
    column = QVBoxLayout()
    for button in buttons:
        column.addWidget(button)
    column.addStretch(1)
    row = QHBoxLayout(owner)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(body, 1)
    row.addLayout(column)


class _FolderList(QWidget):
    def __init__(self, folders: list[str], pick_folder):
        super().__init__()
        self._pick = pick_folder
        self.list = QListWidget()
        self.list.addItems(folders)
        self.list.setMaximumHeight(110)
        add, remove = QPushButton("Add…"), QPushButton("Remove")
        add.clicked.connect(self._add)
        remove.clicked.connect(lambda: [self.list.takeItem(self.list.row(i)) for i in self.list.selectedItems()])
        _with_buttons(self, self.list, [add, remove])

    def _add(self) -> None:
        folder = self._pick()
        if folder:
            self.list.addItem(folder)

    def folders(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]


class _ProviderTable(QWidget):
    """Remote providers: name, address, and the NAME of the environment variable holding the key
    (the key itself is never typed here or stored)."""

    COLUMNS = ("Name", "Address (base URL)", "Key variable")

    def __init__(self, providers: dict[str, dict[str, str]]):
        super().__init__()
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setMaximumHeight(130)
        for name, entry in providers.items():
            self.add_row(name, entry.get("base_url", ""), entry.get("api_key_env", ""))
        add, remove = QPushButton("Add"), QPushButton("Remove")
        add.clicked.connect(lambda: self.add_row("", "https://", ""))
        remove.clicked.connect(lambda: self.table.removeRow(self.table.currentRow()))
        _with_buttons(self, self.table, [add, remove])

    def add_row(self, name: str, url: str, key_env: str) -> None:
        r = self.table.rowCount()
        self.table.insertRow(r)
        for c, text in enumerate((name, url, key_env)):
            self.table.setItem(r, c, QTableWidgetItem(text))

    def providers(self) -> dict[str, dict[str, str]]:
        out = {}
        for r in range(self.table.rowCount()):
            name, url, key_env = ((self.table.item(r, c).text().strip() if self.table.item(r, c)
                                   else "") for c in range(3))
            if name:
                out[name] = {"base_url": url, "api_key_env": key_env}
        return out


class _ModelInventory(QWidget):
    """What every model folder holds for the roots and the ComfyUI extra_model_paths.yaml being
    edited: one row per folder searched (kind, folder, files found, whether Reelgraph uses it)."""

    COLUMNS = ("Kind", "Folder", "Files", "Status")

    def __init__(self):
        super().__init__()
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.Stretch)
        for column in (0, 2, 3):
            header.setSectionResizeMode(column, QHeaderView.ResizeToContents)
        self.table.setMinimumHeight(150)
        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #e0a040;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addWidget(self.problems)

    def show_for(self, roots: list[str], extra_yaml: str) -> None:
        from engine.models.paths import model_paths_for

        paths = model_paths_for(Settings(model_roots=roots, comfy_extra_model_paths=extra_yaml))
        # folders that exist first: a long list of absent aliases would hide what was found
        rows = sorted(paths.inventory(), key=lambda r: not r["exists"])
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            status = ("missing" if not row["exists"] else
                      "used" if row["used"] else "not used by Reelgraph yet")
            for c, text in enumerate((str(row["kind"]), str(row["folder"]),
                                      str(row["count"]) if row["exists"] else "", status)):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.problems.setText("\n".join(paths.problems))
        self.problems.setVisible(bool(paths.problems))


class SettingsDialog(QDialog):
    """Edit model roots (and a ComfyUI extra_model_paths.yaml), node pack folders, the output
    folder and providers, and see what the model folders hold. Changes to node packs take effect
    on the next start (they are code, loaded once)."""

    def __init__(self, settings: Settings, dialogs, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.resize(760, 640)
        self.settings = settings
        self.roots = _FolderList(list(settings.model_roots), lambda: dialogs.folder("Add a model root"))
        self.comfy_yaml = QLineEdit(settings.comfy_extra_model_paths)
        self.comfy_yaml.setPlaceholderText("ComfyUI's extra_model_paths.yaml (optional; one next "
                                           "to a ComfyUI root is read anyway)")
        self.inventory = _ModelInventory()
        self.packs = _FolderList(list(settings.node_packs), lambda: dialogs.folder("Add a node pack folder"))
        self.output = QLineEdit(settings.output_dir)
        self.providers = _ProviderTable(settings.providers)
        form = QFormLayout()
        form.addRow("Model roots", self.roots)
        form.addRow("extra_model_paths", self.comfy_yaml)
        form.addRow("Model folders", self.inventory)
        form.addRow("Node pack folders", self.packs)
        form.addRow("Output folder", self.output)
        form.addRow("Providers", self.providers)
        note = QLabel("Model roots use ComfyUI's layout (diffusion_models, text_encoders, vae, loras, "
                      "clip_vision, …); a ComfyUI install folder or its models folder works as it "
                      "is. Node packs are code: add only "
                      "folders you trust; the palette lists new ones on the next start. Providers "
                      "are the remote servers a workflow may name (ollama-local and openai are built "
                      "in): the key stays in the environment variable you name here.")
        note.setWordWrap(True)
        note.setStyleSheet("color: #8d9098;")
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)
        model = self.roots.list.model()
        model.rowsInserted.connect(self.refresh_inventory)
        model.rowsRemoved.connect(self.refresh_inventory)
        self.comfy_yaml.editingFinished.connect(self.refresh_inventory)
        self.refresh_inventory()

    def refresh_inventory(self, *_: Any) -> None:
        self.inventory.show_for(self.roots.folders(), self.comfy_yaml.text().strip())

    def result_settings(self) -> Settings:
        data: dict[str, Any] = asdict(self.settings)
        data["model_roots"] = self.roots.folders()
        data["comfy_extra_model_paths"] = self.comfy_yaml.text().strip()
        data["node_packs"] = self.packs.folders()
        data["output_dir"] = self.output.text().strip() or self.settings.output_dir
        data["providers"] = self.providers.providers()
        return Settings.from_json(data)  # an unusable provider row is dropped


__all__ = ["Settings", "StudioPrefs", "SettingsDialog", "load_settings", "save_settings"]

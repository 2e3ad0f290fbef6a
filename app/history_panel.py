"""The Queue & History dock and the session's output gallery.

- Queue: runs waiting behind the current one, each with its parameters (seeds, the start of
  each prompt); cancel one, or move it up or down.
- History: every finished run of the session — status, time, outputs — and "Open graph" to
  re-open the exact graph that ran (a copy: the current document is never touched).
- Gallery: a grid of every image and video the session produced; click to preview it, drag it
  out to the file manager (file URLs), double-click to open the graph that made it.

Invariant: the panel only reads the run controller's queue and history and calls its queue
operations; running stays in RunController and the worker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QMimeData, QSize, Qt, QUrl
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListView, QListWidget, QListWidgetItem,
                               QPushButton, QTabWidget, QVBoxLayout, QWidget)

from app.media_decode import is_media, thumbnail
from app.run_controller import QueuedRun, RunController, RunRecord

THUMB = 128


def run_parameters(run: QueuedRun) -> str:
    """'seed 42 · "a red fox runs…"' — what distinguishes queued runs of one graph."""
    seeds, prompts = [], []
    for node in (run.workflow.get("nodes") or {}).values():
        for name, value in (node.get("inputs") or {}).items():
            if "seed" in name and isinstance(value, int):
                seeds.append(str(value))
            elif name in ("text", "prompt", "positive") and isinstance(value, str) and value.strip():
                prompts.append(value.strip())
    parts = [f"seed {', '.join(seeds[:3])}"] if seeds else []
    parts += [f'"{p[:40]}…"' if len(p) > 40 else f'"{p}"' for p in prompts[:1]]
    return " · ".join(parts)


class GalleryList(QListWidget):
    """Icon grid whose items drag out as file URLs (to a file manager or another app)."""

    def __init__(self) -> None:
        super().__init__()
        self.setViewMode(QListView.IconMode)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setGridSize(QSize(THUMB + 16, THUMB + 34))
        self.setResizeMode(QListView.Adjust)
        self.setMovement(QListView.Static)
        self.setWordWrap(True)
        self.setDragEnabled(True)

    def mimeData(self, items: list[QListWidgetItem]) -> QMimeData:  # noqa: N802 - Qt override
        data = QMimeData()
        data.setUrls([QUrl.fromLocalFile(item.data(Qt.UserRole)) for item in items])
        return data


class HistoryPanel(QWidget):
    def __init__(self, runs: RunController, preview_file: Callable[[str, list[str]], None],
                 open_graph: Callable[[dict[str, Any], str], None]):
        super().__init__()
        self.runs, self.preview_file, self.open_graph = runs, preview_file, open_graph
        self.queue_list = QListWidget()
        self.history_list = QListWidget()
        self.gallery = GalleryList()
        self._gallery_files: set[str] = set()
        cancel, up, down = QPushButton("Cancel"), QPushButton("Up"), QPushButton("Down")
        cancel.clicked.connect(self.cancel_selected)
        up.clicked.connect(lambda: self.move_selected(-1))
        down.clicked.connect(lambda: self.move_selected(1))
        reopen = QPushButton("Open graph")
        reopen.setToolTip("Open the exact graph of this run as a new, unsaved copy")
        reopen.clicked.connect(self.open_selected)
        self.history_list.itemDoubleClicked.connect(lambda _i: self.open_selected())
        self.gallery.itemClicked.connect(self._gallery_clicked)
        self.gallery.itemDoubleClicked.connect(self._gallery_open_graph)

        queue_tab, history_tab = QWidget(), QWidget()
        q = QVBoxLayout(queue_tab)
        q.addWidget(self.queue_list)
        row = QHBoxLayout()
        for b in (cancel, up, down):
            row.addWidget(b)
        q.addLayout(row)
        h = QVBoxLayout(history_tab)
        h.addWidget(self.history_list)
        h.addWidget(reopen)
        self.tabs = QTabWidget()
        self.tabs.addTab(queue_tab, "Queue")
        self.tabs.addTab(history_tab, "History")
        self.tabs.addTab(self.gallery, "Gallery")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.tabs)
        self.hint = QLabel("Drag a picture out to save it elsewhere; double-click it to open its graph.")
        self.hint.setStyleSheet("color: #8d9098; font-size: 11px;")
        layout.addWidget(self.hint)
        runs.queue_changed.connect(lambda _n: self.refresh_queue())
        runs.run_started.connect(lambda _r: self.refresh_queue())
        runs.run_finished.connect(lambda *_: self.refresh_queue())  # the finished run leaves it
        runs.history_changed.connect(self.refresh_history)
        self.refresh_queue()

    # ---- queue -------------------------------------------------------------------------------
    def refresh_queue(self) -> None:
        self.queue_list.clear()
        if self.runs.current_run is not None:
            item = QListWidgetItem(f"▶ {self._describe(self.runs.current_run)}")
            item.setFlags(Qt.NoItemFlags | Qt.ItemIsEnabled)
            self.queue_list.addItem(item)
        for i, run in enumerate(self.runs.queue):
            self.queue_list.addItem(f"{i + 1}. {self._describe(run)}")

    def _describe(self, run: QueuedRun) -> str:
        params = run_parameters(run)
        return f"{run.label} · {time.strftime('%H:%M:%S', time.localtime(run.queued_at))}" + (
            f"\n    {params}" if params else "")

    def _queue_index(self) -> int:
        row = self.queue_list.currentRow()
        return row - (1 if self.runs.current_run is not None else 0)

    def cancel_selected(self) -> None:
        self.runs.cancel_queued(self._queue_index())

    def move_selected(self, delta: int) -> None:
        index = self.runs.move_queued(self._queue_index(), delta)
        self.queue_list.setCurrentRow(index + (1 if self.runs.current_run is not None else 0))

    # ---- history and gallery -----------------------------------------------------------------
    def refresh_history(self) -> None:
        self.history_list.clear()
        for record in reversed(self.runs.history):
            when = time.strftime("%H:%M:%S", time.localtime(record.finished_at))
            outputs = f" · {len(record.files)} output{'s' if len(record.files) != 1 else ''}" \
                if record.files else ""
            item = QListWidgetItem(f"{when} · {record.run.label} · {record.status} · "
                                   f"{record.seconds:.1f} s{outputs}")
            item.setData(Qt.UserRole, record)
            self.history_list.addItem(item)
        for record in self.runs.history:
            for path in record.files:
                self.add_to_gallery(path, record)

    def add_to_gallery(self, path: str, record: RunRecord) -> None:
        if path in self._gallery_files or not is_media(path) or not Path(path).exists():
            return
        self._gallery_files.add(path)
        image = thumbnail(path, THUMB)
        item = QListWidgetItem(QIcon(QPixmap.fromImage(image)) if image is not None else QIcon(),
                               Path(path).name)
        item.setData(Qt.UserRole, path)
        item.setData(Qt.UserRole + 1, record)
        item.setToolTip(path)
        self.gallery.insertItem(0, item)  # newest first

    def selected_record(self) -> RunRecord | None:
        item = self.history_list.currentItem()
        return item.data(Qt.UserRole) if item is not None else None

    def open_selected(self) -> None:
        record = self.selected_record()
        if record is not None:
            self.open_graph(record.run.workflow, f"{record.run.label} at "
                            f"{time.strftime('%H:%M', time.localtime(record.finished_at))}")

    def _gallery_clicked(self, item: QListWidgetItem) -> None:
        path = item.data(Qt.UserRole)
        self.preview_file(Path(path).name, [path])

    def _gallery_open_graph(self, item: QListWidgetItem) -> None:
        record: RunRecord = item.data(Qt.UserRole + 1)
        self.open_graph(record.run.workflow, Path(item.data(Qt.UserRole)).name)

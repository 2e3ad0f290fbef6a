"""What a run looks like on screen, apart from the run itself (RunController owns that).

- Progress: the running node's step x/y, elapsed time and ETA in the status bar and its badge,
  refreshed every second while a run is in flight.
- Latent previews: each step's clip (a list of frames from engine/previews.py) plays on the node
  and in the Preview dock at PLAY_FPS, smoothly scaled to PREVIEW_WIDTH.
- Outputs: text a node produced (a caption) shows on the node and in the inspector; its first
  picture becomes the node's thumbnail; input files (LoadImage, LoadVideo) show as thumbnails as
  soon as they are chosen, before any run.
- Stale cues: thumbnails from the previous run are dimmed while a new run replaces them; nodes
  whose inputs (or any upstream input) changed since the graph last ran are marked "changed".

Invariant: it only reads the document and the controller's states; it never runs anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtGui import QImage

from engine.document import Workflow, workflow_from_json
from engine.input_files import locate_input_file
from app.media_decode import is_media, thumbnail

if TYPE_CHECKING:
    from app.main_window import MainWindow

PLAY_FPS = 8.0
PREVIEW_WIDTH = 320  # latent frames are a few dozen pixels wide: show them at a readable size
RAN_STATES = ("done", "cached", "not_needed")


def fingerprints(workflow: Workflow) -> dict[str, str]:
    """A hash per node of its type, mode, literal inputs and its upstream nodes' hashes — what
    decides whether its result could differ (layout and titles never enter)."""
    incoming = workflow.incoming()
    done: dict[str, str] = {}

    def visit(nid: str, trail: frozenset[str]) -> str:
        if nid in done:
            return done[nid]
        node = workflow.nodes[nid]
        ups = {name: [link.from_node, link.from_output,
                      visit(link.from_node, trail | {nid}) if link.from_node in workflow.nodes
                      and link.from_node not in trail else ""]
               for name, link in sorted(incoming.get(nid, {}).items())}
        blob = json.dumps([node.type, node.mode, node.inputs, ups], sort_keys=True, default=str)
        done[nid] = hashlib.sha1(blob.encode()).hexdigest()
        return done[nid]

    for nid in workflow.nodes:
        visit(nid, frozenset())
    return done


class RunDisplay(QObject):
    def __init__(self, window: "MainWindow"):
        super().__init__(window)
        self.w = window
        self.frames: dict[str, list[QImage]] = {}  # node id -> latest latent preview clip
        self.frame_index = 0
        self.ran: dict[str, str] = {}  # fingerprints of the graph as it last ran
        self._input_thumbs: dict[str, str] = {}  # node id -> the input file its thumbnail shows
        self._player = QTimer(self)
        self._player.setInterval(int(1000 / PLAY_FPS))
        self._player.timeout.connect(self._next_frame)
        self._ticker = QTimer(self)
        self._ticker.setInterval(1000)
        self._ticker.timeout.connect(self.show_progress)
        runs, model = window.runs, window.model
        runs.run_started.connect(self._on_run_started)
        runs.run_finished.connect(self._on_run_finished)
        runs.preview_ready.connect(self._on_preview)
        runs.outputs_ready.connect(self._on_outputs)
        runs.node_state_changed.connect(self._on_state)
        model.node_added.connect(self._on_node_changed)
        model.node_changed.connect(self._on_node_changed)
        model.link_added.connect(lambda _l: self.mark_stale())
        model.link_removed.connect(lambda _l: self.mark_stale())
        model.reset.connect(self._on_reset)

    # ---- progress ----------------------------------------------------------------------------
    def running_node(self) -> str | None:
        return next((nid for nid, s in self.w.runs.states.items() if s.state == "running"), None)

    def show_progress(self) -> None:
        """Status bar: 'running · Denoise: step 9/20 · 0:41 · ETA 0:50'."""
        runs = self.w.runs
        if not runs.busy:
            return
        nid = self.running_node()
        text = "running"
        if nid is not None:
            state = runs.states[nid]
            title = self.w._node_title(nid) if nid in self.w.model.workflow.nodes else nid
            text += f" · {title}: {state.progress_text()}"
            item = self.w.scene.nodes.get(nid)
            if item is not None:
                item.update()  # the badge's ETA
        elif runs._stop_requested_for:
            text += " · stopping…"
        if runs.queue:
            text += f" · {len(runs.queue)} queued"
        self.w.run_label.setText(text)

    def _on_state(self, node_id: str) -> None:
        state = self.w.runs.states.get(node_id)
        if state is not None and state.state == "running":
            self.show_progress()

    # ---- runs --------------------------------------------------------------------------------
    def _on_run_started(self, _run_id: str) -> None:
        run = self.w.runs.current_run
        if run is not None:
            try:
                self.ran.update(fingerprints(workflow_from_json(run.workflow)))
            except Exception:  # a snapshot the engine refuses never ran anyway
                pass
        for nid, state in self.w.runs.states.items():
            item = self.w.scene.nodes.get(nid)
            if item is not None and state.state == "queued" and item.thumbnail is not None \
                    and nid not in self._input_thumbs:
                item.mark_thumbnail_stale(True)  # this run replaces it
        self.mark_stale()
        self._ticker.start()
        self.show_progress()

    def _on_run_finished(self, _run_id: str, status: str, _error: str) -> None:
        self._ticker.stop()
        self._player.stop()
        self.frames.clear()
        for item in self.w.scene.nodes.values():
            item.mark_thumbnail_stale(False)
        if status != "done":
            self.w.preview.title.setText(self.w.preview.title.text().replace(" — denoising",
                                                                              f" — {status}"))
        self.mark_stale()

    def _on_preview(self, node_id: str, frames: list[QImage]) -> None:
        if node_id not in self.w.model.workflow.nodes or not frames:
            return
        scaled = [f.scaledToWidth(PREVIEW_WIDTH, Qt.SmoothTransformation)
                  if f.width() < PREVIEW_WIDTH else f for f in frames]
        first = node_id not in self.frames
        self.frames[node_id] = scaled
        if first or len(scaled) == 1:
            self._show_frame(node_id, self.frame_index % len(scaled))
        if len(scaled) > 1 and not self._player.isActive():
            self._player.start()

    def _next_frame(self) -> None:
        self.frame_index += 1
        for nid, frames in list(self.frames.items()):
            self._show_frame(nid, self.frame_index % len(frames))

    def _show_frame(self, node_id: str, index: int) -> None:
        frames = self.frames[node_id]
        image = frames[index]
        self.w.scene.set_thumbnail(node_id, image)
        if self.w.selected_node() in (node_id, None):
            title = self.w._node_title(node_id)
            self.w.preview.show_latent(title, image)
            self.w.preview.info.setText(f"latent preview · frame {index + 1}/{len(frames)} · "
                                        f"{image.width()}×{image.height()}")

    def _on_outputs(self, node_id: str, payload: tuple[dict[str, str], QImage | None]) -> None:
        texts, image = payload
        item = self.w.scene.nodes.get(node_id)
        if item is None:
            return
        item.set_output_text("\n\n".join(texts.values()))
        spec = self.w.model.spec(node_id)
        if image is not None and spec is not None and not spec.is_output \
                and node_id not in self._input_thumbs and node_id not in self.frames:
            self.w.scene.set_thumbnail(node_id, image)
        if self.w.inspector.node_id == node_id:
            self.w.inspector.set_run_state(self.w.runs.states[node_id])

    # ---- inputs and stale marks ----------------------------------------------------------------
    def _on_reset(self) -> None:
        self._input_thumbs.clear()
        self.ran.clear()
        for nid in self.w.model.workflow.nodes:
            self.show_input_thumbnail(nid)

    def _on_node_changed(self, node_id: str) -> None:
        self.show_input_thumbnail(node_id)
        self.mark_stale()

    def show_input_thumbnail(self, node_id: str) -> None:
        """LoadImage / LoadVideo: the chosen file's first frame, before any run (as in ComfyUI)."""
        spec = self.w.model.spec(node_id)
        if spec is None or spec.is_output or node_id not in self.w.model.workflow.nodes:
            return
        node = self.w.model.node(node_id)
        for ispec in spec.inputs:
            value = node.inputs.get(ispec.name)
            if ispec.file_kind != "input" or not isinstance(value, str) or not value.strip():
                continue
            path = locate_input_file(value, self.w.settings.input_dir
                                     if hasattr(self.w.settings, "input_dir") else None)
            if self._input_thumbs.get(node_id) == str(path):
                return
            image = thumbnail(path) if path.is_file() and is_media(str(path)) else None
            if image is not None:
                self._input_thumbs[node_id] = str(path)
                self.w.scene.set_thumbnail(node_id, image)
            return

    def input_file(self, node_id: str) -> str | None:
        return self._input_thumbs.get(node_id)

    def mark_stale(self) -> None:
        """'changed' on nodes that ran and whose inputs or upstream changed since."""
        if not self.ran:
            return
        now = fingerprints(self.w.model.workflow)
        for nid, item in self.w.scene.nodes.items():
            stale = (nid in self.ran and now.get(nid) != self.ran[nid]
                     and item.run_state.state in RAN_STATES + ("idle", "interrupted"))
            item.set_stale(stale)

"""Shared helpers and fixtures of the studio tests (imported by tests/test_studio_*.py).

- `canvas_registry`: a small registry of typed test nodes, so canvas tests do not depend on the
  pipeline nodes' exact schemas.
- `ScriptedDialogs`: answers every modal question from a script and records what was asked.
- `make_window`: a real MainWindow with recovery, prefs and outputs inside tmp_path.
- Mouse helpers that send real QMouseEvents to `view.viewport()` at `view.mapFromScene(...)`,
  with the held button in every move event (what a real drag delivers).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from engine.registry import NodeRegistry  # noqa: E402
from engine.schema import Input, NodeSpec, NodeType, Output  # noqa: E402
from engine.sockets import SocketType as T  # noqa: E402


# ---- test node types ---------------------------------------------------------------------------

class Prompt(NodeType):
    spec = NodeSpec("Prompt", "text", "A text prompt typed by the artist.",
                    inputs=(Input("text", T.TEXT, "a red circle", multiline=True),),
                    outputs=(Output("text", T.TEXT),))


class NoiseLatent(NodeType):
    spec = NodeSpec("NoiseLatent", "latent", "Random noise on the spacetime latent grid.",
                    inputs=(Input("frames", T.INT, 17, min=1, max=257, step=4),
                            Input("seed", T.INT, 0, min=0, max=2**32 - 1, seed=True),
                            Input("strength", T.FLOAT, 1.0, min=0.0, max=1.0, step=0.05),
                            Input("sampler", T.STRING, "euler", choices=("euler", "heun", "dpm")),
                            Input("tiled", T.BOOL, False)),
                    outputs=(Output("latent", T.LATENT),))


class DecodeVideo(NodeType):
    spec = NodeSpec("DecodeVideo", "vae", "Decode latents into video frames with a VAE.",
                    inputs=(Input("latent", T.LATENT), Input("vae", T.VAE, optional=True),
                            Input("vae_name", T.STRING, "", file_kind="vae")),
                    outputs=(Output("video", T.VIDEO),))


class WriteVideo(NodeType):
    spec = NodeSpec("WriteVideo", "io", "Encode a video file into the output folder.",
                    inputs=(Input("video", T.VIDEO), Input("prefix", T.STRING, "clip"),
                            Input("cover", T.STRING, "", file_kind="input", optional=True)),
                    is_output=True)


class Blur(NodeType):
    spec = NodeSpec("Blur", "image/filters", "Gaussian blur of an image.",
                    inputs=(Input("image", T.IMAGE), Input("radius", T.FLOAT, 2.0, min=0.0, max=50.0)),
                    outputs=(Output("image", T.IMAGE),))


CANVAS_TYPES = (Prompt, NoiseLatent, DecodeVideo, WriteVideo, Blur)


@pytest.fixture(scope="session")
def canvas_registry() -> NodeRegistry:
    registry = NodeRegistry()
    for cls in CANVAS_TYPES:
        registry.register(cls)
    return registry


# ---- dialogs -----------------------------------------------------------------------------------

class ScriptedDialogs:
    """Stands in for app.dialogs.Dialogs: returns scripted answers, records every question."""

    def __init__(self, **answers: Any):
        self.answers = dict(answers)
        self.asked: list[tuple[str, str]] = []

    def _answer(self, kind: str, text: str, default: Any) -> Any:
        self.asked.append((kind, text))
        value = self.answers.get(kind, default)
        if isinstance(value, list):  # a list answers successive questions in order
            return value.pop(0) if value else default
        return value

    def open_workflow_path(self, start: str = "") -> str | None:
        return self._answer("open_workflow_path", start, None)

    def save_workflow_path(self, start: str = "") -> str | None:
        return self._answer("save_workflow_path", start, None)

    def save_image_path(self, start: str = "") -> str | None:
        return self._answer("save_image_path", start, None)

    def media_file(self, current: str = "") -> str | None:
        return self._answer("media_file", current, None)

    def folder(self, title: str, start: str = "") -> str | None:
        return self._answer("folder", title, None)

    def save_discard_cancel(self, question: str) -> str:
        return self._answer("save_discard_cancel", question, "cancel")

    def confirm(self, title: str, question: str) -> bool:
        return self._answer("confirm", f"{title}: {question}", False)

    def error(self, title: str, message: str) -> None:
        self._answer("error", f"{title}: {message}", None)

    def warning(self, title: str, message: str) -> None:
        self._answer("warning", f"{title}: {message}", None)

    def text(self, title: str, label: str, current: str = "") -> str | None:
        return self._answer("text", title, None)

    def kinds(self) -> list[str]:
        return [k for k, _ in self.asked]


# ---- windows -----------------------------------------------------------------------------------

@pytest.fixture
def make_window(qtbot, tmp_path):
    """Factory: make_window(registry=None, dialogs=None, client_factory=None) -> MainWindow."""
    from engine.config import Settings
    from app.autosave import RecoveryStore
    from app.main import create_app
    from app.main_window import MainWindow
    from app.studio_settings import StudioPrefs

    create_app()
    made = []

    def make(registry=None, dialogs=None, client_factory=None, recovery_dir=None, autosave_ms=1500):
        if registry is None:
            from engine.registry import default_registry
            registry = default_registry()
        settings = Settings(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
        window = MainWindow(registry, settings, StudioPrefs(path=None),
                            RecoveryStore(recovery_dir or tmp_path / "recovery"),
                            client_factory=client_factory, dialogs=dialogs or ScriptedDialogs(),
                            autosave_ms=autosave_ms, persist_settings=False)
        window.view.dialogs = window.dialogs
        qtbot.addWidget(window)
        window.resize(1400, 900)
        window.show()
        qtbot.waitExposed(window)
        made.append(window)
        return window

    yield make
    for window in made:
        window.files._force_dirty = False
        window.undo_stack.setClean()
        window.runs.close()


# ---- mouse -------------------------------------------------------------------------------------

def _send(view, kind: QEvent.Type, scene_pos: QPointF, button=Qt.LeftButton, buttons=None,
          modifiers=Qt.NoModifier, view_pos: QPoint | None = None) -> None:
    vp = view.viewport()
    local = QPointF(view_pos if view_pos is not None else view.mapFromScene(scene_pos))
    glob = QPointF(vp.mapToGlobal(local.toPoint()))
    if buttons is None:
        buttons = Qt.NoButton if kind == QEvent.MouseButtonRelease else button
    event = QMouseEvent(kind, local, glob, button if kind != QEvent.MouseMove else Qt.NoButton,
                        buttons, modifiers)
    QApplication.sendEvent(vp, event)


def press(view, scene_pos: QPointF, button=Qt.LeftButton, modifiers=Qt.NoModifier) -> None:
    _send(view, QEvent.MouseButtonPress, scene_pos, button, button, modifiers)


def move(view, scene_pos: QPointF, buttons=Qt.LeftButton, modifiers=Qt.NoModifier) -> None:
    _send(view, QEvent.MouseMove, scene_pos, Qt.NoButton, buttons, modifiers)


def release(view, scene_pos: QPointF, button=Qt.LeftButton, modifiers=Qt.NoModifier) -> None:
    _send(view, QEvent.MouseButtonRelease, scene_pos, button, Qt.NoButton, modifiers)


def click(view, scene_pos: QPointF, modifiers=Qt.NoModifier) -> None:
    press(view, scene_pos, modifiers=modifiers)
    release(view, scene_pos, modifiers=modifiers)


def double_click(view, scene_pos: QPointF) -> None:
    press(view, scene_pos)
    release(view, scene_pos)
    _send(view, QEvent.MouseButtonDblClick, scene_pos)
    release(view, scene_pos)


def drag(view, start: QPointF, end: QPointF, steps: int = 8, button=Qt.LeftButton,
         modifiers=Qt.NoModifier, release_at_end: bool = True) -> None:
    press(view, start, button, modifiers)
    for i in range(1, steps + 1):
        t = i / steps
        move(view, QPointF(start.x() + (end.x() - start.x()) * t, start.y() + (end.y() - start.y()) * t),
             button, modifiers)
    if release_at_end:
        release(view, end, button, modifiers)


def drag_in_view(view, start: QPoint, end: QPoint, steps: int = 8, button=Qt.LeftButton) -> None:
    """A drag in viewport pixels (for panning, where scene points move under the cursor)."""
    _send(view, QEvent.MouseButtonPress, QPointF(), button, button, view_pos=start)
    for i in range(1, steps + 1):
        p = QPoint(start.x() + (end.x() - start.x()) * i // steps, start.y() + (end.y() - start.y()) * i // steps)
        _send(view, QEvent.MouseMove, QPointF(), Qt.NoButton, button, view_pos=p)
    _send(view, QEvent.MouseButtonRelease, QPointF(), button, Qt.NoButton, view_pos=end)


def click_widget(widget, pos: QPoint, button=Qt.LeftButton) -> None:
    """Press and release on an ordinary QWidget at `pos` (its own coordinates)."""
    glob = QPointF(widget.mapToGlobal(pos))
    for kind, buttons in ((QEvent.MouseButtonPress, button), (QEvent.MouseButtonRelease, Qt.NoButton)):
        QApplication.sendEvent(widget, QMouseEvent(kind, QPointF(pos), glob, button, buttons, Qt.NoModifier))


def socket_pos(window, node_id: str, name: str, is_output: bool) -> QPointF:
    return window.scene.nodes[node_id].socket_scene_pos(name, is_output)


def widget_rect(window, node_id: str, name: str):
    item = window.scene.nodes[node_id]
    slot = next(w for w in item.widget_slots if w.name == name)
    return item.mapRectToScene(slot.rect)


def wait_until(qtbot, predicate, timeout: float = 30.0) -> None:
    """Process Qt events until predicate() is true (worker runs take seconds to spawn)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within timeout")
        qtbot.wait(20)


def viewport_point(view, scene_pos: QPointF) -> QPoint:
    return view.mapFromScene(scene_pos)


def png_pixels(path: Path):
    from PIL import Image
    import numpy as np
    return np.asarray(Image.open(path).convert("RGB"))

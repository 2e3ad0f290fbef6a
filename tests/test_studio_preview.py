"""Preview decoding and the preview dock: frame-accurate video access, playback controls, and
latent previews streamed during a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import events as ev
from engine.run_api import RunReport, RunStatus
from engine import media
from engine.values import Video
from app.media_decode import MediaReader
from app.preview import PreviewPanel
from app.run_controller import preview_to_qimage
from tests.conftest_qt import canvas_registry, make_window, wait_until  # noqa: F401

FRAMES = 12


def _clip(tmp_path, fmt: str):
    """A clip whose frame i has red = i / (FRAMES - 1): decoded pixels tell which frame we got."""
    frames = torch.zeros(FRAMES, 32, 48, 3)
    for t in range(FRAMES):
        frames[t, ..., 0] = t / (FRAMES - 1)
    path = tmp_path / f"clip{media.VIDEO_FORMATS[fmt].suffix}"
    media.write_video(path, Video(frames, fps=12.0), fmt)
    return path


def _frame_index(image) -> int:
    return round(image.pixelColor(20, 16).red() / 255 * (FRAMES - 1))


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif", "webp"])
def test_reader_returns_the_requested_frame_in_any_order(qtbot, tmp_path, fmt):
    reader = MediaReader(_clip(tmp_path, fmt))
    assert reader.count == FRAMES and reader.is_video
    order = [0, 7, 11, 3, 4, 5, 0, 11, 10]
    assert [_frame_index(reader.frame(i)) for i in order] == order
    reader.close()


def test_panel_plays_steps_scrubs_and_loops(qtbot, tmp_path):
    panel = PreviewPanel()
    qtbot.addWidget(panel)
    path = _clip(tmp_path, "mp4")
    still = tmp_path / "still.png"
    media.write_png(still, torch.full((16, 16, 3), 0.5), {})
    panel.show_files("Save Video", [str(path), str(still)])
    assert panel.playing  # videos start playing when shown
    panel.set_playing(False)
    panel.show_frame(0)
    assert panel.file_box.isVisibleTo(panel) and panel.file_box.count() == 2
    assert panel.slider.maximum() == FRAMES - 1 and abs(panel.fps_box.value() - 12.0) < 1e-6
    panel.step(1)
    assert panel.index == 1 and _frame_index(panel.view.image) == 1
    panel.slider.setValue(9)
    assert _frame_index(panel.view.image) == 9 and panel.frame_label.text() == f"10 / {FRAMES}"
    panel.step(-1)
    assert panel.index == 8
    panel.fps_box.setValue(100.0)
    panel.slider.setValue(FRAMES - 2)
    panel.play_button.click()
    assert panel.playing and panel.timer.interval() == 10
    wait_until(qtbot, lambda: panel.index < FRAMES - 2, 3)  # wrapped around: looping
    panel.play_button.click()
    assert not panel.playing
    panel.loop_box.setChecked(False)
    panel.slider.setValue(FRAMES - 3)
    panel.set_playing(True)
    wait_until(qtbot, lambda: not panel.playing, 3)
    assert panel.index == FRAMES - 1  # stopped on the last frame
    panel.file_box.setCurrentIndex(1)
    assert not panel.reader.is_video and not panel.play_button.isVisibleTo(panel)
    assert panel.view.image.pixelColor(8, 8).red() in (127, 128)


def test_preview_arrays_from_nodes_become_images():
    img = preview_to_qimage(torch.tensor([[[[1.0, 0.0, 0.5]]]]))  # (1, 1, 1, 3) float
    assert (img.width(), img.height()) == (1, 1)
    assert img.pixelColor(0, 0).getRgb()[:3] == (255, 0, 128)
    img = preview_to_qimage(np.full((4, 6, 3), 200, np.uint8))
    assert (img.width(), img.height()) == (6, 4) and img.pixelColor(5, 3).green() == 200
    assert preview_to_qimage(np.zeros((4, 4))) is None


def test_latent_previews_stream_to_the_dock_and_the_node(make_window, canvas_registry):
    window = make_window(registry=canvas_registry)
    node = window.editor.add_node("NoiseLatent", (0, 0))
    window.scene.nodes[node].setSelected(True)
    runs = window.runs
    runs.current = "r1"  # as if the worker had started run r1
    runs.handle(ev.RunStarted("r1", node_ids=[node]))
    runs.handle(ev.NodeStarted("r1", node, "NoiseLatent"))
    latent = torch.zeros(1, 8, 8, 3)
    latent[..., 2] = 1.0  # a blue picture
    runs.handle(ev.NodeProgress("r1", node, 0.5, 0.5, "step 5/10", latent))
    item = window.scene.nodes[node]
    assert item.run_state.state == "running" and item.run_state.fraction == 0.5
    assert "denoising" in window.preview.title.text()
    shown = window.preview.view.image
    assert shown.pixelColor(shown.width() // 2, shown.height() // 2).getRgb()[:3] == (0, 0, 255)
    assert item.thumbnail is not None and item.thumb_rect.height() > 0
    runs.handle(ev.NodeDone("r1", node, "NoiseLatent", 1.2, 1.0, []))
    runs.handle(ev.RunFinished("r1", RunStatus.DONE, RunReport("r1", seconds=1.3)))
    assert item.run_state.state == "done" and item.run_state.badge() == "1.2s"
    assert not runs.busy and any("run done in 1.3 s" in m for _, m in window.log_panel.lines)


def test_the_previewer_refuses_a_huge_image_without_decoding_it(tmp_path):
    """A 12000x12000 PNG is a few hundred KB on disk and 430 MB decoded: the studio's previewer
    and thumbnails refuse it from its header, as LoadImage does."""
    import zlib
    import struct

    from app.media_decode import MediaReader, thumbnail

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    width = height = 12_000
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(OSError, match="too large to preview"):
        MediaReader(path)
    assert thumbnail(path) is None

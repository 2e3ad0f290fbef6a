"""The preview dock: the selected node's output images and videos, and live latent previews.

Videos play with a QTimer at the chosen fps (default: the file's), with play/pause, scrub slider,
frame step, loop, and a file chooser when a node wrote several files. During denoising the dock
shows the latest latent preview of the running node it follows.

Invariant: the dock never holds a decoder open for a file that is no longer shown (`_close`).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSizePolicy,
                               QSlider, QStyle, QToolButton, QVBoxLayout, QWidget)

from app.media_decode import MediaReader, is_media


class ImageView(QWidget):
    """Paints one QImage scaled to fit, centred on a dark background."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.image: QImage | None = None
        self.smooth = True
        self.message = "Select a node that produced images or videos"
        self.setMinimumSize(160, 120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def set_image(self, image: QImage | None, message: str = "", smooth: bool = True) -> None:
        """`smooth=False` keeps hard pixels (latent previews are a few dozen pixels wide)."""
        self.image = image
        self.smooth = smooth
        if message:
            self.message = message
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(360, 260)

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#141518"))
        if self.image is None or self.image.isNull():
            p.setPen(QColor("#6d7078"))
            p.drawText(self.rect().adjusted(12, 12, -12, -12), Qt.AlignCenter | Qt.TextWordWrap, self.message)
            return
        iw, ih = self.image.width(), self.image.height()
        s = min(self.width() / iw, self.height() / ih)
        w, h = iw * s, ih * s
        target = QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)
        p.setRenderHint(QPainter.SmoothPixmapTransform, self.smooth)
        p.drawImage(target, self.image)


class PreviewPanel(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.reader: MediaReader | None = None
        self.autoplay = True  # videos start looping when shown, as in ComfyUI's previews
        self.files: list[str] = []
        self.index = 0
        self.title = QLabel("Preview")
        self.title.setStyleSheet("font-weight: bold;")
        self.file_box = QComboBox()
        self.file_box.currentIndexChanged.connect(self._file_chosen)
        self.view = ImageView()
        style = self.style()
        self._play_icon = style.standardIcon(QStyle.SP_MediaPlay)
        self._pause_icon = style.standardIcon(QStyle.SP_MediaPause)
        self.play_button = QToolButton()
        self.play_button.setIcon(self._play_icon)
        self.play_button.setToolTip("Play / pause")
        self.play_button.setCheckable(True)
        self.play_button.toggled.connect(self.set_playing)
        self.back_button = QToolButton()
        self.back_button.setIcon(style.standardIcon(QStyle.SP_MediaSeekBackward))
        self.back_button.setToolTip("Previous frame")
        self.back_button.clicked.connect(lambda: self.step(-1))
        self.next_button = QToolButton()
        self.next_button.setIcon(style.standardIcon(QStyle.SP_MediaSeekForward))
        self.next_button.setToolTip("Next frame")
        self.next_button.clicked.connect(lambda: self.step(1))
        self.slider = QSlider(Qt.Horizontal)
        self.slider.valueChanged.connect(self.show_frame)
        self.frame_label = QLabel("–")
        self.frame_label.setMinimumWidth(64)
        self.fps_box = QDoubleSpinBox()
        self.fps_box.setRange(0.5, 120.0)
        self.fps_box.setDecimals(1)
        self.fps_box.setSuffix(" fps")
        self.fps_box.setValue(16.0)
        self.fps_box.valueChanged.connect(self._fps_changed)
        self.loop_box = QCheckBox("loop")
        self.loop_box.setChecked(True)
        self.info = QLabel("")
        self.info.setStyleSheet("color: #8d9098; font-size: 11px;")
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)

        controls = QHBoxLayout()
        for w in (self.back_button, self.play_button, self.next_button):
            controls.addWidget(w)
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.frame_label)
        controls.addWidget(self.fps_box)
        controls.addWidget(self.loop_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.title)
        layout.addWidget(self.file_box)
        layout.addWidget(self.view, 1)
        layout.addLayout(controls)
        layout.addWidget(self.info)
        self._set_video_controls(False)
        self.file_box.hide()

    # ---- content ------------------------------------------------------------------------------
    def show_files(self, title: str, files: list[str]) -> None:
        media = [f for f in files if is_media(f)]
        if media == self.files and self.reader is not None:
            self.title.setText(title)
            return
        self._close()
        self.title.setText(title)
        self.files = media
        self.file_box.blockSignals(True)
        self.file_box.clear()
        self.file_box.addItems([Path(f).name for f in media])
        self.file_box.blockSignals(False)
        self.file_box.setVisible(len(media) > 1)
        if media:
            self._open(media[-1] if len(media) == 1 else media[0])
        else:
            self.view.set_image(None, "No image or video output yet — run the graph")
            self.info.setText("")

    def show_latent(self, title: str, image: QImage) -> None:
        """A live latent preview (replaces any file being shown)."""
        self._close()
        self.files = []
        self.file_box.hide()
        self.title.setText(f"{title} — denoising")
        self.view.set_image(image, smooth=False)
        self.info.setText(f"latent preview {image.width()}×{image.height()}")

    def clear(self, message: str = "Select a node that produced images or videos") -> None:
        self._close()
        self.files = []
        self.file_box.hide()
        self.title.setText("Preview")
        self.view.set_image(None, message)
        self.info.setText("")

    def _file_chosen(self, row: int) -> None:
        if 0 <= row < len(self.files):
            self._close()
            self._open(self.files[row])

    def _open(self, path: str) -> None:
        try:
            self.reader = MediaReader(path)
        except Exception as exc:  # unreadable output: say so in the panel, do not raise
            self.reader = None
            self.view.set_image(None, f"Cannot open {Path(path).name}: {exc}")
            return
        r = self.reader
        self._set_video_controls(r.is_video)
        self.slider.blockSignals(True)
        self.slider.setRange(0, r.count - 1)
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        if r.fps > 0:
            self.fps_box.blockSignals(True)
            self.fps_box.setValue(r.fps)
            self.fps_box.blockSignals(False)
        self.show_frame(0)
        first = r.frame(0)
        kind = f"{r.count} frames @ {r.fps:.3g} fps" if r.is_video else "image"
        self.info.setText(f"{Path(path).name} — {first.width()}×{first.height()}, {kind}")
        if r.is_video and self.autoplay:
            self.set_playing(True)

    def _close(self) -> None:
        self.set_playing(False)
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def _set_video_controls(self, on: bool) -> None:
        for w in (self.play_button, self.back_button, self.next_button, self.slider, self.frame_label,
                  self.fps_box, self.loop_box):
            w.setVisible(on)

    # ---- playback -----------------------------------------------------------------------------
    def show_frame(self, index: int) -> None:
        if self.reader is None:
            return
        self.index = max(0, min(self.reader.count - 1, index))
        self.view.set_image(self.reader.frame(self.index))
        self.frame_label.setText(f"{self.index + 1} / {self.reader.count}")
        if self.slider.value() != self.index:
            self.slider.blockSignals(True)
            self.slider.setValue(self.index)
            self.slider.blockSignals(False)

    def step(self, delta: int) -> None:
        self.set_playing(False)
        if self.reader is not None:
            self.show_frame((self.index + delta) % self.reader.count)

    def set_playing(self, on: bool) -> None:
        on = bool(on and self.reader is not None and self.reader.is_video)
        if self.play_button.isChecked() != on:
            self.play_button.blockSignals(True)
            self.play_button.setChecked(on)
            self.play_button.blockSignals(False)
        self.play_button.setIcon(self._pause_icon if on else self._play_icon)
        if on:
            self.timer.start(int(1000 / self.fps_box.value()))
        else:
            self.timer.stop()

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def _fps_changed(self, fps: float) -> None:
        if self.timer.isActive():
            self.timer.start(int(1000 / fps))

    def _tick(self) -> None:
        if self.reader is None:
            self.set_playing(False)
            return
        nxt = self.index + 1
        if nxt >= self.reader.count:
            if not self.loop_box.isChecked():
                self.set_playing(False)
                return
            nxt = 0
        self.show_frame(nxt)

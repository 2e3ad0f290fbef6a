"""Decoding output files for the preview: images and videos to QImage, frame-accurately.

Videos decode with PyAV (STYLE.md: ~2.3 ms per 720p frame, works offscreen, unlike QtMultimedia);
animated WebP, which FFmpeg's decoder does not handle, and still images go through Pillow. Every
QImage is `.copy()`-ed off the numpy buffer that backs it, so it owns its pixels.

Invariant: `MediaReader.frame(i)` returns frame i of the file for any i in range, in any order
(seeks to the keyframe before i and decodes forward); sequential playback decodes each frame once.
"""

from __future__ import annotations

from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageSequence
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
CACHE_FRAMES = 64


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """(H, W, 3) uint8 -> an owned QImage."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    return QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()


def _check_size(path: Path, width: int, height: int) -> None:
    """Refuse to preview what the engine refuses to load (engine.media.limits), before decoding:
    a 420 KB PNG can declare 12000x12000 pixels."""
    from engine.media.limits import MAX_PIXELS

    if width * height > MAX_PIXELS:
        raise OSError(f"{path.name} is {width}x{height} pixels, too large to preview")


def is_media(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES


class MediaReader:
    """Frames of one image or video file. Raises OSError/av errors from the constructor when the
    file cannot be opened."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._cache: OrderedDict[int, QImage] = OrderedDict()
        self._container = None
        self._stream = None
        self._decoder = None
        self._next_index = 0
        self._pil_frames: list[QImage] | None = None
        suffix = self.path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            self._open_pillow()
        else:
            self._open_av()

    # ---- opening ------------------------------------------------------------------------------
    def _open_pillow(self) -> None:
        frames, durations = [], []
        with Image.open(self.path) as img:  # lazy: the header is read, no pixels yet
            _check_size(self.path, img.width, img.height)
            for f in ImageSequence.Iterator(img):
                if len(frames) >= CACHE_FRAMES * 16:  # an animation too long to hold: its start
                    break
                durations.append(f.info.get("duration", 0) or 0)
                frames.append(rgb_to_qimage(np.asarray(f.convert("RGB"))))
        self._pil_frames = frames
        self.count = len(frames)
        ms = [d for d in durations if d] or [0]
        self.fps = 1000.0 / (sum(ms) / len(ms)) if ms[0] else 16.0  # Pillow may not say
        self.is_video = self.count > 1

    def _open_av(self) -> None:
        self._container = av.open(str(self.path))
        if not self._container.streams.video:
            raise OSError(f"{self.path.name} has no video stream")
        self._stream = self._container.streams.video[0]
        _check_size(self.path, self._stream.codec_context.width, self._stream.codec_context.height)
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate or Fraction(16)
        self.fps = float(rate)
        self._time_base = self._stream.time_base or Fraction(1, 1000)
        self._start = self._stream.start_time or 0
        count = int(self._stream.frames or 0)
        if count <= 0:  # webm / gif often do not say: count packets (cheap, no decoding)
            count = sum(1 for p in self._container.demux(self._stream) if p.size)
            self._container.seek(0)
        self.count = max(1, count)
        self.is_video = True
        self._restart_decoder()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    # ---- frames -------------------------------------------------------------------------------
    def frame(self, index: int) -> QImage:
        index = max(0, min(self.count - 1, int(index)))
        if self._pil_frames is not None:
            return self._pil_frames[index]
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        if index != self._next_index:
            self._seek(index)
        image = None
        while image is None:
            got = self._decode_next()
            if got is None:  # past the end (count was an estimate): repeat the last frame
                self.count = max(1, self._next_index)
                return self._cache[next(reversed(self._cache))] if self._cache else QImage()
            i, img = got
            if i >= index:
                image = img
        return image

    def _index_of(self, frame: av.VideoFrame, fallback: int) -> int:
        if frame.pts is None:
            return fallback
        seconds = float((frame.pts - self._start) * self._time_base)
        return int(round(seconds * self.fps))

    def _decode_next(self) -> tuple[int, QImage] | None:
        try:
            frame = next(self._decoder)
        except (StopIteration, av.error.EOFError):
            return None
        i = self._index_of(frame, self._next_index)
        img = rgb_to_qimage(frame.to_ndarray(format="rgb24"))
        self._cache[i] = img
        while len(self._cache) > CACHE_FRAMES:
            self._cache.popitem(last=False)
        self._next_index = i + 1
        return i, img

    def _restart_decoder(self) -> None:
        self._decoder = self._container.decode(self._stream)
        self._next_index = 0

    def _seek(self, index: int) -> None:
        target = int(index / self.fps / self._time_base) + self._start
        try:
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            self._decoder = self._container.decode(self._stream)
            self._next_index = -1  # unknown until the first decoded frame says
        except av.error.FFmpegError:
            self._container.seek(0)
            self._restart_decoder()


def thumbnail(path: str | Path, max_width: int = 320) -> QImage | None:
    """First frame of an image or video scaled to at most `max_width`, or None if unreadable."""
    try:
        reader = MediaReader(path)
        try:
            image = reader.frame(0)
        finally:
            reader.close()
    except Exception:  # a half-written or foreign file must not break the canvas
        return None
    if image.isNull():
        return None
    if image.width() > max_width:
        image = image.scaledToWidth(max_width, Qt.SmoothTransformation)
    return image

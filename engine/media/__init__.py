"""Image and video files: read and write them with PyAV and Pillow, with the workflow embedded.

Formats written: PNG (Pillow); mp4 (H.264, yuv420p), webm (VP9, yuv420p), GIF (palette) and
animated WebP (all four muxed by PyAV, no ffmpeg subprocess).

Invariants:
- Pixels in and out are float32 RGB in [0, 1]: IMAGE (B, H, W, 3), `Video.frames` (T, H, W, 3).
  Files hold 8-bit RGB; values are clamped and rounded on the way out.
- Every write is atomic: the file is encoded into a temp file in the destination folder, fsynced,
  then renamed over the target, so a crash never leaves a half-written output.
- fps is stored as an exact rational (`exact_rate`): 16, 24 and 24000/1001 read back unchanged
  from mp4 and webm. GIF stores frame delays in 1/100 s and WebP in ms, so there fps reads back
  exactly only when 100/fps (GIF) or 1000/fps (WebP) is an integer; otherwise as the mean rate.
- yuv420p codecs (mp4, webm) need an even width and height: an odd size is padded by one pixel on
  the right and/or bottom, repeating the edge pixels. The file is then that much larger and
  `read_video` returns the padded size. GIF and WebP keep any size.
- Metadata: the workflow and the provenance are embedded in the file itself (PNG text chunks,
  mp4/webm container tags, a GIF comment, a WebP XMP chunk; see engine.media.embed), never in a
  sidecar, and `extract_workflow` reads them back from any of the five.
- Reading (engine.media.reading): PyAV decodes videos, Pillow still images and animated WebP
  (FFmpeg has no decoder for it). Frames are decoded in order from the first, so frame i is frame
  i of the file; a range (start, count, stride) keeps some of them.
- Reading is capped (engine.media.limits): pixels per image or frame, frames and float32 bytes per
  VIDEO, checked from the header before decoding and again while decoding. Every failure is a
  MediaError (engine.media.errors) that names the file and says what is wrong.
- Importing the package is light: the format table comes from engine.media.formats, and the
  names below that need PyAV, Pillow or torch load their module on first use (PEP 562), so the
  node registry can show SaveVideo's formats without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.media.errors import MediaError, MediaTooLarge, StartPastEnd, VideoTooLong
from engine.media.formats import DEFAULT_CRF, DEFAULT_FPS, VIDEO_FORMATS, VideoFormat
from engine.media.limits import MediaLimits

if TYPE_CHECKING:
    from engine.media.codec import exact_rate, write_png, write_video
    from engine.media.embed import (PROVENANCE_KEY, WORKFLOW_KEY, Embedded, extract_workflow,
                                    metadata_text, read_embedded)
    from engine.media.reading import read_image, read_video

_LAZY = {name: "engine.media.codec" for name in ("exact_rate", "write_png", "write_video")}
_LAZY.update({name: "engine.media.reading" for name in ("read_image", "read_video")})
_LAZY.update({name: "engine.media.embed" for name in
              ("PROVENANCE_KEY", "WORKFLOW_KEY", "Embedded", "extract_workflow", "metadata_text",
               "read_embedded")})


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


__all__ = ["DEFAULT_CRF", "DEFAULT_FPS", "VIDEO_FORMATS", "MediaError", "MediaLimits",
           "MediaTooLarge", "StartPastEnd", "VideoTooLong", "VideoFormat", "exact_rate",
           "read_image", "read_video", "write_png", "write_video", "PROVENANCE_KEY", "WORKFLOW_KEY",
           "Embedded", "extract_workflow", "metadata_text", "read_embedded"]

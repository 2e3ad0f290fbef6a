"""The video formats Reelgraph writes, as plain data: SaveVideo's choices come from here, so the
node registry lists them without importing PyAV, Pillow or torch (engine.media.codec uses them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_FPS = 16.0


@dataclass(frozen=True)
class VideoFormat:
    """How one output format is muxed and encoded."""

    name: str
    muxer: str
    codec: str
    pix_fmt: str
    suffix: str
    even_size: bool  # yuv420p chroma subsampling needs even width and height
    muxer_options: dict[str, str] = field(default_factory=dict)


VIDEO_FORMATS: dict[str, VideoFormat] = {
    "mp4": VideoFormat("mp4", "mp4", "libx264", "yuv420p", ".mp4", True,
                       {"movflags": "use_metadata_tags+faststart"}),
    "webm": VideoFormat("webm", "webm", "libvpx-vp9", "yuv420p", ".webm", True),
    "gif": VideoFormat("gif", "gif", "gif", "pal8", ".gif", False, {"loop": "0"}),
    "webp": VideoFormat("webp", "webp", "libwebp_anim", "bgra", ".webp", False, {"loop": "0"}),
}
DEFAULT_CRF = {"mp4": 19, "webm": 32}  # visually near-lossless for H.264; VP9's scale differs

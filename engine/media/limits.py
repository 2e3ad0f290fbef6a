"""How much one media file may cost to load: a pixel cap per image or frame, and a frame and byte
cap per VIDEO. Light (no PyAV, Pillow or torch), so nodes can state the caps in their specs.

The caps are checked from headers before decoding wherever a header says (image size, frame size,
frame count or duration), and again while decoding, because headers can lie: a 4 MB file may
declare, or hold, ten hours of video. Sizes are counted as the float32 RGB tensors the nodes
produce (4 bytes x 3 channels a pixel), which is what fills memory (and the result cache).
"""

from __future__ import annotations

from dataclasses import dataclass

# 8192 x 8192 = 67 Mpx: 8K UHD (7680x4320, 33 Mpx) and every common camera still (a 61 Mpx full
# frame sensor) fit, yet one image stays at 805 MB as float32. A 12000x12000 PNG (144 Mpx, a few
# hundred KB when flat) would take 1.7 GB, and peak over 5 GB while converting. The cap is also
# under Pillow's own bomb warning (89 Mpx), so an image accepted here never triggers that warning.
MAX_PIXELS = 8192 * 8192
# 4096 x 4096 = 16.8 Mpx (200 MB as float32): video models work at 0.3-1 Mpx, so an image this big
# loads, with a warning that downscaling it first saves memory and time.
WARN_PIXELS = 4096 * 4096
# 2 GiB of float32 frames: 7 s of 1080p, 18 s of 832x480 at 24 fps; the decoder peaks at about
# 1.25x this (the uint8 frames plus the float32 tensor). LoadVideo's memory_cap_mb changes it.
MAX_VIDEO_BYTES = 2 * 2**30
# Frames per VIDEO whatever their size (69 min at 24 fps): tiny frames pass the byte cap in huge
# numbers, and each costs decode time and bookkeeping.
MAX_VIDEO_FRAMES = 100_000

BYTES_PER_PIXEL = 3 * 4  # float32 RGB


@dataclass(frozen=True)
class MediaLimits:
    """The caps one read obeys (tests and nodes lower or raise them per call)."""

    max_pixels: int = MAX_PIXELS  # width x height of one image or frame
    max_frames: int = MAX_VIDEO_FRAMES  # frames kept in one VIDEO
    max_bytes: int = MAX_VIDEO_BYTES  # float32 bytes of the frames kept

    def frames_that_fit(self, width: int, height: int) -> int:
        """How many width x height frames the frame and byte caps allow."""
        return min(self.max_frames, self.max_bytes // max(1, width * height * BYTES_PER_PIXEL))


def frame_bytes(width: int, height: int, frames: int = 1) -> int:
    """float32 RGB bytes of `frames` frames of width x height."""
    return frames * width * height * BYTES_PER_PIXEL


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units, as memory is counted."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def megapixels(width: int, height: int) -> str:
    mpx = width * height / 1e6
    return f"{mpx:.0f} Mpx" if mpx >= 10 else f"{mpx:.1f} Mpx"

"""The errors media reads and writes raise. Each is a NodeError whose message names the file and
says what is wrong and what to do; the typed ones carry the numbers a node needs to phrase the fix
in its own input names (LoadVideo: start_frame, frame_count, stride, memory_cap_mb). Light: no
PyAV, Pillow or torch.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import NodeError
from engine.media.limits import MediaLimits, frame_bytes, human_bytes, megapixels


class MediaError(NodeError):
    """A media file that cannot be read or written; the message names the file."""


class MediaTooLarge(MediaError):
    """An image or a video frame over the pixel cap, found from the header before decoding.
    `width`/`height` are None when Pillow refused the file as a decompression bomb first."""

    def __init__(self, path: Path, width: int | None, height: int | None, max_pixels: int):
        self.path, self.width, self.height, self.max_pixels = path, width, height, max_pixels
        side = int(max_pixels ** 0.5)
        size = (f"{width}x{height} ({megapixels(width, height)})" if width and height
                else "more pixels than Pillow's decompression-bomb limit")
        super().__init__(
            f"{path} is too large to load: {size}, over the cap of {side}x{side} "
            f"({megapixels(side, side)}); as float32 it would take "
            f"{human_bytes(frame_bytes(width, height)) if width and height else 'gigabytes'}. "
            "Downscale it first (e.g. to 2048 px on the longest side).")


class VideoTooLong(MediaError):
    """Keeping the frames asked for would pass the frame or byte cap.

    `frames`: how many frames the read would keep, when known before decoding (from the request,
    the header's frame count, or its duration: see `source`); None when decoding found out.
    `decoded`: frames decoded before stopping (0 = refused from the header, nothing decoded).
    `fit`: how many frames of this size the caps allow.
    """

    def __init__(self, path: Path, *, frames: int | None, source: str, width: int, height: int,
                 decoded: int, limits: MediaLimits):
        self.path, self.frames, self.source = path, frames, source
        self.width, self.height, self.decoded, self.limits = width, height, decoded, limits
        self.fit = limits.frames_that_fit(width, height)
        super().__init__(self.describe("read a range instead: a start frame, at most "
                                       f"{self.fit} frames, a stride"))

    def describe(self, fix: str) -> str:
        """The problem, then `fix` (how to pick a range, in the caller's terms)."""
        size = f"{self.width}x{self.height}"
        if self.fit == self.limits.max_frames:
            cap = f"the cap of {self.limits.max_frames} frames per VIDEO"
        else:
            cap = f"the memory cap of {human_bytes(self.limits.max_bytes)}"
        if self.frames is None:
            what = (f"{self.path} is too long to load: it declares no length, and decoding "
                    f"reached {self.fit} frames of {size} "
                    f"({human_bytes(frame_bytes(self.width, self.height, self.fit))} as float32), "
                    f"the most {cap} allows")
        else:
            what = (f"{self.path} is too long to load: {self.frames} frames of {size} "
                    f"({self.source}) would take "
                    f"{human_bytes(frame_bytes(self.width, self.height, self.frames))} as float32, "
                    f"over {cap}")
        return f"{what}. {fix}"


class StartPastEnd(MediaError):
    """The first frame asked for is at or past the end of the video (`frames` long, as decoded)."""

    def __init__(self, path: Path, start: int, frames: int):
        self.path, self.start, self.frames = path, start, frames
        super().__init__(f"{path} has {frames} frames, so start {start} is past its end; "
                         f"start at most at {max(0, frames - 1)}")

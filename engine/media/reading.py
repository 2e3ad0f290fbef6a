"""Reading image and video files into tensors, within caps (engine.media.limits), with errors that
name the file and say what is wrong (engine.media.errors).

Invariants:
- Nothing is decoded before the header has been checked against the pixel cap, and, for videos,
  the frame count or duration against the frame and byte caps. Decoding then counts again and
  stops one frame past a cap, so a header that lies costs at most the cap.
- A video range is (start, count, stride): frames start, start+stride, ... of the file, at most
  `count` of them (None = to the end). Frames are decoded in order from the first, so frame i is
  frame i of the file; the Video's fps is the file's divided by the stride, so it keeps its length.
- Still images (PNG, JPEG, BMP, TIFF) read as one-frame videos at DEFAULT_FPS through Pillow, like
  read_image; animated WebP through Pillow (FFmpeg has no decoder for it); the rest through PyAV.
- Every failure to read is a MediaError naming the file; no decoder exception escapes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import av
import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from engine.media.embed import sniff
from engine.media.errors import MediaError, MediaTooLarge, StartPastEnd, VideoTooLong
from engine.media.formats import DEFAULT_FPS
from engine.media.limits import MediaLimits, frame_bytes
from engine.media.probe import image_header, iso_truncation
from engine.values import Video

DEFAULT_LIMITS = MediaLimits()
# What damaged files make decoders raise besides their own error types (Pillow plugins raise
# SyntaxError, struct.error or IndexError on some malformed headers).
_DECODER_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, IndexError,
                   av.error.FFmpegError)
_PROGRESS_EVERY = 64  # frames decoded between progress reports (each also checks for a stop)
# A decoded frame as the range logic sees it: (width, height, stamp, to_rgb). The stamp is a pts
# or a duration in ms; to_rgb gives (H, W, 3) uint8 and is called only for frames kept.
_Frame = tuple[int, int, Any, Callable[[], np.ndarray]]


# ---- images ----------------------------------------------------------------------------------

def read_image(path: Path | str, limits: MediaLimits = DEFAULT_LIMITS) -> torch.Tensor:
    """An image file as IMAGE (1, H, W, 3) float32 in [0, 1]: EXIF rotation applied, alpha
    dropped, 16-bit scaled; the first frame of an animation. Over `limits.max_pixels` it raises
    MediaTooLarge from the header, before decoding."""
    path = _readable(path)
    try:
        with Image.open(path) as im:  # lazy: reads the header only
            _check_pixels(path, im.width, im.height, limits)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I"):  # 16-bit greyscale PNGs: keep the precision
                grey = np.asarray(im, dtype=np.float32) / 65535.0
                pixels = torch.from_numpy(np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=2))
            else:  # uint8 first, then one float32 tensor scaled in place: no float temporaries
                pixels = torch.from_numpy(np.array(im.convert("RGB"))).float().div_(255.0)
    except Image.DecompressionBombError:
        raise MediaTooLarge(path, None, None, limits.max_pixels) from None
    except UnidentifiedImageError:
        raise MediaError(f"cannot read image {path}: not an image Pillow can read"
                         f"{_kind_hint(path, 'image')}") from None
    except _DECODER_ERRORS as exc:
        raise MediaError(f"cannot read image {path}: {_damage(exc)}") from None
    return pixels.contiguous()[None]


def _check_pixels(path: Path, width: int, height: int, limits: MediaLimits) -> None:
    if width * height > limits.max_pixels:
        raise MediaTooLarge(path, width, height, limits.max_pixels)


# ---- videos ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameRange:
    """Frames start, start+stride, ... of a file; at most `count` (None = to the end)."""

    start: int = 0
    count: int | None = None
    stride: int = 1

    def __post_init__(self) -> None:
        if self.start < 0 or self.stride < 1 or (self.count is not None and self.count < 1):
            raise ValueError(f"invalid frame range {self}: start >= 0, stride >= 1, count >= 1")

    def wants(self, index: int) -> bool:
        return index >= self.start and (index - self.start) % self.stride == 0

    def kept_of(self, total: int) -> int:
        """How many frames this range keeps from a file of `total` frames."""
        n = max(0, -(-(total - self.start) // self.stride))  # ceil
        return n if self.count is None else min(n, self.count)


def read_video(path: Path | str, max_frames: int | None = None, *, start: int = 0,
               stride: int = 1, limits: MediaLimits = DEFAULT_LIMITS,
               progress: Callable[[float], None] | None = None) -> Video:
    """Frames start, start+stride, ... (at most `max_frames`; all when None or 0) of a video or
    animated image as a Video, at the file's fps / stride. A still image reads as a one-frame
    video at DEFAULT_FPS. Raises VideoTooLong past `limits` (from the header when it says, else
    while decoding), StartPastEnd, MediaTooLarge, or MediaError for an unreadable file.
    `progress(fraction)` is called every few dozen frames (it may raise to stop)."""
    path = _readable(path)
    want = FrameRange(start, max_frames or None, stride)
    if sniff(path) == "webp":
        return _read_webp(path, want, limits, progress)
    try:
        still = image_header(path)
    except Image.DecompressionBombError:
        raise MediaTooLarge(path, None, None, limits.max_pixels) from None
    if still is not None:
        _check_pixels(path, still.width, still.height, limits)
        if still.format != "GIF" and not still.animated:
            if want.start > 0:
                raise StartPastEnd(path, want.start, 1)
            return Video(read_image(path, limits), fps=DEFAULT_FPS)
    return _read_av(path, want, limits, progress)


def _read_av(path: Path, want: FrameRange, limits: MediaLimits,
             progress: Callable[[float], None] | None) -> Video:
    try:
        # metadata_errors: a tag that is not UTF-8 must not make the whole file unreadable
        container = av.open(str(path), metadata_errors="replace")
    except _DECODER_ERRORS as exc:
        hint = _kind_hint(path, "video")
        raise _bad_video(path, f"not a video PyAV can read{hint} ({exc})") from None
    try:
        with container:
            got, fps = _decode_av(path, container, want, limits, progress)
    except _DECODER_ERRORS as exc:
        raise _bad_video(path, _damage(exc)) from None
    return _video_of(path, got, fps / want.stride)


def _decode_av(path: Path, container: Any, want: FrameRange, limits: MediaLimits,
               progress: Callable[[float], None] | None) -> tuple[_Decoded, float]:
    """The frames of `want` from an open container, checked against `limits`, and the file's fps."""
    if not container.streams.video:
        raise _bad_video(path, "it has no video stream (an audio-only file?)")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for the codec the header names
        raise _bad_video(path, "no decoder for its video codec (a damaged header, or a codec "
                               "this FFmpeg build lacks)")
    stream.thread_type = "AUTO"
    width, height = stream.codec_context.width, stream.codec_context.height
    declared, estimated = _declared_length(container, stream)
    if width and height:  # 0 when the header does not say: the first frame is checked instead
        _check_pixels(path, width, height, limits)
        _refuse_early(path, want, declared, estimated, width, height, limits)
    frames = ((f.width, f.height, f.pts, lambda f=f: f.to_ndarray(format="rgb24"))
              for f in container.decode(stream))
    got = _collect(path, frames, want, limits, progress, declared or estimated)
    if declared and got.decoded < declared and not got.reached_count:
        why = iso_truncation(path)  # a count that merely lies is no reason to refuse the frames
        if why:
            raise MediaError(
                f"cannot read video {path}: the file is truncated: {why}. Its header declares "
                f"{declared} frames but only {got.decoded} decode; copy or download it again, "
                f"or read only frames before {got.decoded}")
    return got, _stream_fps(container.format.name, stream, got)


def _declared_length(container: Any, stream: Any) -> tuple[int | None, int | None]:
    """(frame count from the header, or None; else frames estimated from the duration, or None)."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames), None
    rate = stream.average_rate or stream.guessed_rate
    seconds = None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    if not rate or not seconds or seconds <= 0:
        return None, None
    return None, int(round(seconds * float(rate)))


def _refuse_early(path: Path, want: FrameRange, declared: int | None, estimated: int | None,
                  width: int, height: int, limits: MediaLimits) -> None:
    """VideoTooLong before decoding when the request or the header says the range will not fit."""
    length = declared or estimated
    if length is not None:
        frames = want.kept_of(length)
        source = (f"its header declares {declared} frames" if declared
                  else f"its duration suggests ~{estimated} frames")
        if want.count is not None and want.count <= frames:
            source = "as asked"
    elif want.count is not None:
        frames, source = want.count, "as asked"
    else:
        return
    if frames > limits.frames_that_fit(width, height):
        raise VideoTooLong(path, frames=frames, source=source, width=width, height=height,
                           decoded=0, limits=limits)


@dataclass
class _Decoded:
    """The frames kept and what the decoder saw on the way (stamps: pts or ms durations)."""

    frames: list[np.ndarray] = field(default_factory=list)  # each (H, W, 3) uint8
    decoded: int = 0
    reached_count: bool = False
    first_stamp: int | None = None
    last_stamp: int | None = None
    stamp_sum: int = 0


def _collect(path: Path, frames: Iterable[_Frame],
             want: FrameRange, limits: MediaLimits,
             progress: Callable[[float], None] | None, length: int | None) -> _Decoded:
    """Keep the frames of `want` from (width, height, stamp, to_rgb) tuples, converting only the
    kept ones; VideoTooLong one frame past a cap, whatever the header said."""
    got = _Decoded()
    end = want.start + want.count * want.stride if want.count is not None else length
    try:
        _keep(path, frames, want, limits, progress, end, got)
    except _DECODER_ERRORS as exc:
        where = (f"the file is corrupt after frame {got.decoded}" if got.decoded
                 else f"not a video this reader can decode{_kind_hint(path, 'video')}")
        raise _bad_video(path, f"{where} ({type(exc).__name__}: {exc})") from None
    if not got.frames:
        if got.decoded and want.start >= got.decoded:
            raise StartPastEnd(path, want.start, got.decoded)
        raise _bad_video(path, "it holds no decodable frames")
    return got


def _keep(path: Path, frames: Iterable[_Frame],
          want: FrameRange, limits: MediaLimits, progress: Callable[[float], None] | None,
          end: int | None, got: _Decoded) -> None:
    kept_bytes = 0
    for index, (width, height, stamp, to_rgb) in enumerate(frames):
        got.decoded = index + 1
        if stamp is not None:
            got.first_stamp = stamp if got.first_stamp is None else got.first_stamp
            got.last_stamp = stamp
            got.stamp_sum += stamp
        _check_pixels(path, width, height, limits)  # the header may have lied about the size
        if progress is not None and index % _PROGRESS_EVERY == 0:
            progress(min(1.0, index / end) if end else 0.0)
        if not want.wants(index):
            continue
        if got.frames and got.frames[0].shape[:2] != (height, width):
            raise MediaError(f"cannot read video {path}: the frame size changes mid-stream, which "
                             "Reelgraph cannot hold in one VIDEO; re-encode it at one size")
        kept_bytes += frame_bytes(width, height)
        if len(got.frames) + 1 > limits.max_frames or kept_bytes > limits.max_bytes:
            raise VideoTooLong(path, frames=None, source="decoding", width=width, height=height,
                               decoded=got.decoded, limits=limits)
        got.frames.append(to_rgb())
        if want.count is not None and len(got.frames) >= want.count:
            got.reached_count = True
            return


def _stream_fps(format_name: str, stream: Any, got: _Decoded) -> float:
    # GIF's average_rate is rounded from centisecond delays; the decoded timestamps are exact.
    if "gif" not in format_name and stream.average_rate:
        return float(stream.average_rate)
    first, last = got.first_stamp, got.last_stamp
    if got.decoded >= 2 and stream.time_base and first is not None and last is not None \
            and last > first:
        return (got.decoded - 1) / float((last - first) * stream.time_base)
    rate = stream.guessed_rate or stream.base_rate
    return float(rate) if rate else DEFAULT_FPS


def _read_webp(path: Path, want: FrameRange, limits: MediaLimits,
               progress: Callable[[float], None] | None) -> Video:
    try:
        with Image.open(path) as im:
            _check_pixels(path, im.width, im.height, limits)
            length = int(getattr(im, "n_frames", 1))
            _refuse_early(path, want, length, None, im.width, im.height, limits)
            got = _collect(path, _webp_frames(im), want, limits, progress, length)
    except Image.DecompressionBombError:
        raise MediaTooLarge(path, None, None, limits.max_pixels) from None
    except _DECODER_ERRORS as exc:
        raise MediaError(f"cannot read WebP {path}: {_damage(exc)}") from None
    # WebP stores each frame's duration in ms; the rate is the mean over the frames shown
    last = got.last_stamp or 0
    shown = got.stamp_sum - last if got.decoded > 1 else got.stamp_sum
    intervals = max(1, got.decoded - 1)
    fps = intervals * 1000.0 / shown if shown > 0 else DEFAULT_FPS
    return _video_of(path, got, fps / want.stride)


def _webp_frames(im: Image.Image) -> Iterator[_Frame]:
    """(width, height, duration in ms, to_rgb) of each frame of an open WebP."""
    for frame in ImageSequence.Iterator(im):
        frame.load()  # decodes it (frames depend on the previous ones); sets info["duration"]
        yield (frame.width, frame.height, int(frame.info.get("duration") or 0),
               lambda frame=frame: np.array(frame.convert("RGB")))


def _video_of(path: Path, got: _Decoded, fps: float) -> Video:
    """(T, H, W, 3) float32 filled frame by frame, freeing each uint8 frame as it goes, so the
    peak is the float32 clip plus its uint8 frames (1.25x the clip), never two float copies."""
    first = got.frames[0]
    out = torch.empty((len(got.frames), *first.shape), dtype=torch.float32)
    for i in range(len(got.frames)):
        out[i] = torch.from_numpy(got.frames[i])
        got.frames[i] = None  # type: ignore[call-overload]  # release it now
    return Video(out.div_(255.0), fps=float(fps))


# ---- files and their problems ----------------------------------------------------------------

def _readable(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"cannot read {path}: the file is empty (0 bytes), as an interrupted "
                         "copy or download leaves it; copy it again")
    return path


def _bad_video(path: Path, otherwise: str) -> MediaError:
    """The error for a video that failed to read: a cut-short mp4/mov says so (the likeliest
    cause, with its fix), anything else says `otherwise`."""
    why = iso_truncation(path)
    if why:
        return MediaError(f"cannot read video {path}: the file is truncated: {why}; copy or "
                          "download it again")
    return MediaError(f"cannot read video {path}: {otherwise}")


def _damage(exc: BaseException) -> str:
    """A decoder's complaint about a file it recognised, as a reason a user can act on."""
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower():
        return f"the file is truncated ({text}); copy or download it again"
    return f"the file is corrupt ({type(exc).__name__}: {text}); re-export or copy it again"


def _kind_hint(path: Path, reading: str) -> str:
    """What the file starts like, when that explains why a reader refused it."""
    kind = sniff(path)
    if kind != "other":
        return f" (it starts like a {kind.upper()} but is damaged or truncated)"
    if reading == "image" and _starts_like_iso(path):
        return " (it looks like an mp4/mov video: use LoadVideo)"
    return ""


def _starts_like_iso(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8)[4:8] == b"ftyp"

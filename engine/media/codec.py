"""Reading and writing image and video files with PyAV and Pillow (see the package docstring for
formats, fps, padding and atomicity; engine.media.embed for where metadata goes).
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager, suppress
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from engine.errors import NodeError
from engine.media.embed import (ascii_payload, gif_with_comment, metadata_text, sniff,
                                 webp_with_xmp, xmp_packet)
from engine.media.formats import DEFAULT_CRF, DEFAULT_FPS, VIDEO_FORMATS, VideoFormat
from engine.values import Video


class MediaError(NodeError):
    """A media file that cannot be read or written; the message names the file."""


def exact_rate(fps: float) -> Fraction:
    """fps as the rational a container stores: 24.0 -> 24, 23.976... -> 24000/1001."""
    if not fps or fps <= 0 or not np.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


# ---- writing ---------------------------------------------------------------------------------

def write_png(path: Path | str, image: torch.Tensor | np.ndarray,
              text_chunks: dict[str, str] | None = None) -> Path:
    """Write one RGB image ((H, W, 3) or (1, H, W, 3), float [0, 1] or uint8) as PNG with the
    given iTXt chunks (e.g. `metadata_text(workflow, provenance)`)."""
    path = Path(path)
    pixels = _to_uint8(image)
    if pixels.ndim == 4:
        if pixels.shape[0] != 1:
            raise ValueError(f"write_png takes one image, got a batch of {pixels.shape[0]}")
        pixels = pixels[0]
    info = PngInfo()
    for key, value in (text_chunks or {}).items():
        info.add_itxt(key, value)
    with _atomic_output(path) as tmp:
        # compress_level 4: nearly the size of 9 at a fraction of the time
        Image.fromarray(pixels, "RGB").save(tmp, format="PNG", pnginfo=info, compress_level=4)
    return path


def write_video(path: Path | str, video: Video, format: str | None = None, *,
                crf: int | None = None, quality: int = 90,
                workflow: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None,
                progress: Callable[[float], None] | None = None) -> Path:
    """Encode `video` to `path` as mp4, webm, gif or webp (default: from the file suffix), with the
    workflow and provenance embedded. `crf` sets mp4/webm quality (lower is better; defaults in
    DEFAULT_CRF); `quality` (0-100) sets lossy WebP quality; GIF is palette-quantised."""
    path = Path(path)
    name = (format or path.suffix.lstrip(".")).lower()
    fmt = VIDEO_FORMATS.get(name)
    if fmt is None:
        raise MediaError(f"cannot write {path}: unknown video format {name!r}; "
                         f"choose one of {', '.join(VIDEO_FORMATS)}")
    if video.num_frames == 0:
        raise MediaError(f"cannot write {path}: the video has no frames")
    rate = exact_rate(video.fps)
    width, height = video.size
    if fmt.even_size:
        width, height = width + width % 2, height + height % 2
    meta = metadata_text(workflow, provenance)
    with _atomic_output(path) as tmp:
        container = av.open(str(tmp), "w", format=fmt.muxer, options=dict(fmt.muxer_options))
        try:
            if fmt.name in ("mp4", "webm"):
                container.metadata.update(meta)
            stream = container.add_stream(fmt.codec, rate=rate, options=_codec_options(fmt, crf, quality))
            stream.width, stream.height, stream.pix_fmt = width, height, fmt.pix_fmt
            frames = _rgb_frames(video, width, height, progress)
            if fmt.name == "gif":
                frames = _palettised(frames, width, height, rate)
            for frame in frames:
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        finally:
            container.close()
        if fmt.name == "gif" and meta:
            tmp.write_bytes(gif_with_comment(tmp.read_bytes(), ascii_payload(meta)))
        elif fmt.name == "webp" and meta:
            tmp.write_bytes(webp_with_xmp(tmp.read_bytes(), xmp_packet(meta), width, height))
    return path


def _codec_options(fmt: VideoFormat, crf: int | None, quality: int) -> dict[str, str]:
    if fmt.name == "mp4":
        return {"crf": str(DEFAULT_CRF["mp4"] if crf is None else crf), "preset": "medium"}
    if fmt.name == "webm":
        # b=0 selects constant-quality mode; cpu-used 4 keeps VP9 encoding within seconds
        return {"crf": str(DEFAULT_CRF["webm"] if crf is None else crf), "b": "0",
                "deadline": "good", "cpu-used": "4", "row-mt": "1"}
    if fmt.name == "webp":
        return {"quality": str(int(quality))}
    return {}


def _rgb_frames(video: Video, width: int, height: int,
                progress: Callable[[float], None] | None) -> Iterator[av.VideoFrame]:
    """One rgb24 VideoFrame per video frame (pts = frame index), edge-padded to width x height."""
    total = video.num_frames
    for i in range(total):
        pixels = _to_uint8(video.frames[i])  # (H, W, 3)
        pad_h, pad_w = height - pixels.shape[0], width - pixels.shape[1]
        if pad_h or pad_w:
            pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = i
        yield frame
        if progress is not None:
            progress((i + 1) / total)


def _palettised(frames: Iterator[av.VideoFrame], width: int, height: int,
                rate: Fraction) -> list[av.VideoFrame]:
    """Quantise frames to one 256-colour palette built from all of them (palettegen/paletteuse),
    which looks far better than the encoder's fixed palette. Needs every frame before the first
    comes out, so it holds the clip in memory (GIFs are short)."""
    graph = av.filter.Graph()
    source = graph.add_buffer(width=width, height=height, format="rgb24", time_base=1 / rate)
    split = graph.add("split")
    palette = graph.add("palettegen", "stats_mode=full")
    use = graph.add("paletteuse")
    sink = graph.add("buffersink")
    source.link_to(split)
    split.link_to(palette, 0, 0)
    split.link_to(use, 1, 0)
    palette.link_to(use, 0, 1)
    use.link_to(sink)
    graph.configure()
    for frame in frames:
        frame.time_base = 1 / rate
        graph.push(frame)
    graph.push(None)
    out: list[av.VideoFrame] = []
    while True:
        try:
            out.append(graph.pull())
        except (av.error.EOFError, av.error.BlockingIOError):
            return out


@contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    """A temp path in `path`'s folder; on success it is fsynced and renamed to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random name rather than mkstemp: the writer creates the file, so it gets the usual
    # permissions (mkstemp's 0600 would make every output private to this user).
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


def _to_uint8(pixels: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.detach().to("cpu")
        if pixels.dtype == torch.uint8:
            return pixels.numpy()
        return (pixels.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    if pixels.dtype == np.uint8:
        return pixels
    return (np.clip(pixels.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)


# ---- reading ---------------------------------------------------------------------------------

def read_image(path: Path | str) -> torch.Tensor:
    """An image file as IMAGE (1, H, W, 3) float32 in [0, 1]: EXIF rotation applied, alpha
    dropped, 16-bit scaled; the first frame of an animation."""
    path = _existing(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I"):  # 16-bit greyscale PNGs: keep the precision
                grey = np.asarray(im, dtype=np.float32) / 65535.0
                pixels = np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=2)
            else:
                pixels = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(np.ascontiguousarray(pixels))[None]


def read_video(path: Path | str, max_frames: int | None = None) -> Video:
    """The first `max_frames` frames (all when None or 0) of a video or animated image as a Video,
    with fps from the stream. A still image reads as a one-frame video at DEFAULT_FPS."""
    path = _existing(path)
    limit = max_frames or None
    if sniff(path) == "webp":
        return _read_webp(path, limit)
    frames: list[np.ndarray] = []
    pts: list[int] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                pts.append(frame.pts if frame.pts is not None else len(pts))
                if limit is not None and len(frames) >= limit:
                    break
            fps = _stream_fps(container.format.name, stream, pts)
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot read video {path}: {exc}") from None
    return _video_of(path, frames, fps)


def _stream_fps(format_name: str, stream: Any, pts: list[int]) -> float:
    # GIF's average_rate is rounded from centisecond delays; the decoded timestamps are exact.
    if "gif" not in format_name and stream.average_rate:
        return float(stream.average_rate)
    if len(pts) >= 2 and stream.time_base and pts[-1] > pts[0]:
        return (len(pts) - 1) / float((pts[-1] - pts[0]) * stream.time_base)
    rate = stream.guessed_rate or stream.base_rate
    return float(rate) if rate else DEFAULT_FPS


def _read_webp(path: Path, limit: int | None) -> Video:
    frames: list[np.ndarray] = []
    durations: list[int] = []
    try:
        with Image.open(path) as im:
            for frame in ImageSequence.Iterator(im):
                frames.append(np.asarray(frame.convert("RGB")))
                durations.append(int(frame.info.get("duration") or 0))
                if limit is not None and len(frames) >= limit:
                    break
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"cannot read WebP {path}: {exc}") from None
    # WebP stores each frame's duration in ms; the rate is the mean over the frames shown
    shown = sum(durations[:-1]) if len(durations) > 1 else sum(durations)
    intervals = max(1, len(durations) - 1)
    fps = intervals * 1000.0 / shown if shown > 0 else DEFAULT_FPS
    return _video_of(path, frames, fps)


def _video_of(path: Path, frames: list[np.ndarray], fps: float) -> Video:
    if not frames:
        raise MediaError(f"{path} holds no decodable frames")
    if len({f.shape for f in frames}) > 1:
        raise MediaError(f"{path}: the frame size changes mid-stream, which Reelgraph cannot hold "
                         "in one VIDEO; re-encode it at one size")
    stacked = torch.from_numpy(np.stack(frames))  # (T, H, W, 3) uint8
    return Video(stacked.float().div_(255.0), fps=float(fps))


def _existing(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"file not found: {path}")
    return path

"""Writing image and video files with PyAV and Pillow (see the package docstring for formats, fps,
padding and atomicity; engine.media.embed for where metadata goes; engine.media.reading reads).
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
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engine.media.embed import (ascii_payload, gif_with_comment, metadata_text, webp_with_xmp,
                                 xmp_packet)
from engine.media.errors import MediaError
from engine.media.formats import DEFAULT_CRF, VIDEO_FORMATS, VideoFormat
from engine.values import Video


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

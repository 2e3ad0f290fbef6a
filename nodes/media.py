"""I/O nodes: load images and videos, save them with the workflow embedded, and preview.

Inputs that name user files take a path relative to the input folder (settings "input_dir") or an
absolute path; they only read. Every file written goes through the context's confined output
paths, so nothing lands outside the output folder whatever a graph file says. Saved files embed
the workflow and the run's provenance (engine.media), so dropping one on the canvas restores its
graph. engine.media loads PyAV, Pillow and torch on first use, i.e. when one of these nodes runs.

Loading is capped (engine.media.limits) so that no file can eat the machine, and every file that
cannot be read is a NodeError naming it. Saving refuses NaN or infinite pixels, which encoders
would silently write as black.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import media
from engine.context import ExecutionContext
from engine.errors import NodeError
from engine.input_files import locate_input_file
from engine.media import limits
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as T
from engine.values import Video

if TYPE_CHECKING:
    import torch

PREVIEW_MAX_SIDE = 512  # pixels: previews are for the studio's panel, not for keeping
PREVIEW_MAX_IMAGES = 16


def resolve_input(ctx: ExecutionContext, value: str, input_name: str) -> Path:
    """A user file named by an absolute path or a path relative to the input folder."""
    if not isinstance(value, str) or not value.strip():
        raise NodeError("no file chosen; pick a file or type its path", input=input_name)
    path = locate_input_file(value, ctx.settings.get("input_dir"))
    if not path.is_file():
        raise NodeError(f"file not found: {path} (relative paths are read from the input "
                        "folder, settings 'input_dir')", input=input_name)
    return path


def _embedded(ctx: ExecutionContext) -> dict[str, Any]:
    return {"workflow": ctx.workflow_json or None, "provenance": dict(ctx.provenance)}


_CAP_SIDE = int(limits.MAX_PIXELS ** 0.5)
_DEFAULT_CAP_MB = limits.MAX_VIDEO_BYTES // 2**20


class LoadImage(NodeType):
    """Load an image file (PNG, JPEG, WebP, ...) as IMAGE: RGB in [0, 1], alpha dropped, EXIF
    rotation applied. Relative paths are read from the input folder. Images over 8192x8192
    (67 Mpx) are refused from their header before decoding; over 4096x4096 they load with a
    warning (video models work at about 1 Mpx)."""

    spec = NodeSpec(
        name="LoadImage", category="io", description=__doc__,
        inputs=(Input("image", T.STRING, "", file_kind="input",
                      tooltip="image file: absolute, or relative to the input folder; at most "
                              f"{_CAP_SIDE}x{_CAP_SIDE} pixels"),),
        outputs=(Output("image", T.IMAGE),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, image: str) -> dict[str, Any]:
        path = resolve_input(ctx, image, "image")
        try:
            pixels = media.read_image(path)
        except media.MediaError as exc:  # names the file and what is wrong with it
            raise NodeError(str(exc), input="image") from None
        height, width = pixels.shape[1:3]
        if width * height > limits.WARN_PIXELS:
            size = f"{limits.megapixels(width, height)}, {limits.human_bytes(pixels.nbytes)}"
            ctx.log("warning", f"{path.name} is {width}x{height} ({size} as float32); downscaling "
                               "it first saves memory and time (video models work at about 1 Mpx)")
        return {"image": pixels}


class LoadVideo(NodeType):
    """Load a video or animated image (mp4, webm, mov, mkv, GIF, WebP) as VIDEO: frames
    start_frame, start_frame + stride, ... (at most frame_count of them; 0 = to the end) at the
    file's frame rate divided by stride, so the clip keeps its duration. max_frames (older graphs)
    also limits the count; the smaller one applies.

    Caps, so that no file can eat the machine: the frames kept may take at most memory_cap_mb
    (default 2048 MB) as float32, at most 100,000 frames, each at most 8192x8192. A clip over a
    cap is refused from its header before decoding when the header says its length, otherwise
    decoding stops at the cap; the error says how many frames fit: pick a range with start_frame,
    frame_count and stride, or raise memory_cap_mb. Decoding peaks at about 1.25x the clip."""

    spec = NodeSpec(
        name="LoadVideo", category="io", description=__doc__, version=2,
        inputs=(Input("video", T.STRING, "", file_kind="input",
                      tooltip="video file: absolute, or relative to the input folder"),
                Input("start_frame", T.INT, 0, min=0, max=100_000_000,
                      tooltip="first frame to keep (0 = the first frame of the file)"),
                Input("frame_count", T.INT, 0, min=0, max=limits.MAX_VIDEO_FRAMES,
                      tooltip="keep at most this many frames (0 = to the end, refused when the "
                              "clip is over memory_cap_mb; the error says how many fit)"),
                Input("stride", T.INT, 1, min=1, max=1000,
                      tooltip="keep every n-th frame from start_frame; the fps is divided by it"),
                Input("max_frames", T.INT, 0, min=0, max=limits.MAX_VIDEO_FRAMES,
                      tooltip="older name for frame_count, kept for saved graphs: read at most "
                              "this many frames (0 = no limit); the smaller of the two applies"),
                Input("memory_cap_mb", T.INT, _DEFAULT_CAP_MB, min=1, max=1_048_576,
                      tooltip="refuse to keep frames taking more than this many MB as float32 "
                              f"(default {_DEFAULT_CAP_MB} MB = 2 GiB); pick a range instead, or "
                              "raise it if the machine has the memory")),
        outputs=(Output("video", T.VIDEO),),
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, video: str, start_frame: int = 0, frame_count: int = 0,
                stride: int = 1, max_frames: int = 0,
                memory_cap_mb: int = _DEFAULT_CAP_MB) -> dict[str, Any]:
        path = resolve_input(ctx, video, "video")
        count = min((n for n in (frame_count, max_frames) if n), default=0)
        caps = limits.MediaLimits(max_bytes=memory_cap_mb * 2**20)
        ctx.progress(0.0, f"decoding {path.name}")
        try:
            clip = media.read_video(path, count or None, start=start_frame, stride=stride,
                                    limits=caps,
                                    progress=lambda f: ctx.progress(f, f"decoding {path.name}"))
        except media.VideoTooLong as exc:
            raise NodeError(exc.describe(
                f"Pick a range: frame_count at most {exc.fit} (frames kept), start_frame to skip "
                "ahead, stride n to keep every n-th frame; or raise memory_cap_mb "
                f"(now {memory_cap_mb} MB)."), input="frame_count") from None
        except media.StartPastEnd as exc:
            raise NodeError(f"start_frame {exc.start} is past the end of {path.name}, which has "
                            f"{exc.frames} frames; set it to at most {max(0, exc.frames - 1)}",
                            input="start_frame") from None
        except media.MediaError as exc:  # names the file and what is wrong with it
            raise NodeError(str(exc), input="video") from None
        return {"video": clip}


class SaveImage(NodeType):
    """Save each image of a batch as PNG in the output folder (prefix_00001.png, ...), with the
    workflow and provenance embedded; drop one on the canvas to get its graph back."""

    spec = NodeSpec(
        name="SaveImage", category="io", description=__doc__,
        inputs=(Input("images", T.IMAGE),
                Input("filename_prefix", T.STRING, "reelgraph",
                      tooltip="file name start; may include sub-folders of the output folder")),
        is_output=True,
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, images: torch.Tensor, filename_prefix: str) -> dict[str, Any]:
        batch = _as_image_batch(images, "images")
        _require_finite(batch, "images", "image")
        chunks = media.metadata_text(**_embedded(ctx))
        for i in range(batch.shape[0]):
            path = ctx.unique_output_path(filename_prefix, ".png")
            media.write_png(path, batch[i], chunks)
            ctx.register_output(path)
            ctx.progress((i + 1) / batch.shape[0])
        return {}


class SaveVideo(NodeType):
    """Encode a VIDEO into the output folder as mp4 (H.264), webm (VP9), GIF or animated WebP,
    at its exact frame rate, with the workflow and provenance embedded in the file. `crf` sets
    mp4/webm quality (lower is better, ~18-28 typical); GIF and WebP ignore it. Odd sizes are
    padded by one edge pixel for mp4/webm."""

    spec = NodeSpec(
        name="SaveVideo", category="io", description=__doc__,
        inputs=(Input("video", T.VIDEO),
                Input("filename_prefix", T.STRING, "reelgraph",
                      tooltip="file name start; may include sub-folders of the output folder"),
                Input("format", T.STRING, "mp4", choices=tuple(media.VIDEO_FORMATS)),
                Input("crf", T.INT, 19, min=0, max=63,
                      tooltip="mp4/webm constant quality: lower is better and larger")),
        is_output=True,
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, video: Video, filename_prefix: str, format: str,
                crf: int) -> dict[str, Any]:
        if not isinstance(video, Video):
            raise NodeError(f"expected a VIDEO, got {type(video).__name__}", input="video")
        _require_finite(video.frames, "video", "frame")
        path = ctx.unique_output_path(filename_prefix, media.VIDEO_FORMATS[format].suffix)
        media.write_video(path, video, format, crf=crf, **_embedded(ctx),
                          progress=lambda f: ctx.progress(f, f"encoding {format}"))
        ctx.register_output(path)
        return {}


class Preview(NodeType):
    """Show an IMAGE or VIDEO in the studio: writes a small copy (longest side 512 px; PNG for
    images, mp4 for video) to the output folder's preview/ sub-folder."""

    spec = NodeSpec(
        name="Preview", category="io", description=__doc__,
        inputs=(Input("value", T.ANY, tooltip="an IMAGE or a VIDEO"),),
        is_output=True,
    )

    @classmethod
    def execute(cls, ctx: ExecutionContext, value: Any) -> dict[str, Any]:
        prefix = f"preview/{ctx.node_id}"
        embedded = _embedded(ctx)
        if isinstance(value, Video):
            _require_finite(value.frames, "value", "frame")
            small = Video(_shrink(value.frames), fps=value.fps)
            path = ctx.unique_output_path(prefix, ".mp4")
            media.write_video(path, small, "mp4", crf=23, **embedded)
            ctx.register_output(path)
            return {}
        batch = _as_image_batch(value, "value")
        _require_finite(batch, "value", "image")
        chunks = media.metadata_text(**embedded)
        for image in _shrink(batch[:PREVIEW_MAX_IMAGES]):
            path = ctx.unique_output_path(prefix, ".png")
            media.write_png(path, image, chunks)
            ctx.register_output(path)
        return {}


def _as_image_batch(value: Any, input_name: str) -> torch.Tensor:
    """(B, H, W, 3) from an IMAGE (a single (H, W, 3) image is accepted too)."""
    import torch

    if isinstance(value, torch.Tensor) and value.ndim == 3 and value.shape[-1] == 3:
        value = value[None]
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[-1] != 3:
        kind = type(value).__name__ if not isinstance(value, torch.Tensor) else f"tensor {tuple(value.shape)}"
        raise NodeError(f"expected an IMAGE (B, H, W, 3) or a VIDEO, got {kind}; decode latents "
                        "with VAEDecode first", input=input_name)
    return value


def _require_finite(frames: torch.Tensor, input_name: str, unit: str) -> None:
    """Refuse NaN or infinite pixels in (N, H, W, 3) `frames`: encoders would write them as black
    and the run would look fine."""
    import torch

    # One float32 reduction, no mask the size of the clip: finite unless some value is not (or
    # huge finite values overflow, which the per-frame scan below then clears)
    if torch.isfinite(frames.sum(dtype=torch.float32)):
        return
    for i, frame in enumerate(frames):
        nan = bool(torch.isnan(frame).any())
        if nan or bool(torch.isinf(frame).any()):
            what = "NaN values" if nan else "infinite values"
            raise NodeError(f"the {unit}s contain {what} ({unit} {i} is the first); an upstream "
                            "model produced invalid numbers — check the model file or try fp32",
                            input=input_name)


def _shrink(frames: torch.Tensor, max_side: int = PREVIEW_MAX_SIDE) -> torch.Tensor:
    """(N, H, W, 3) scaled down (antialiased) so the longest side is at most `max_side`."""
    import torch.nn.functional as F

    h, w = frames.shape[1:3]
    factor = max_side / max(h, w)
    if factor >= 1:
        return frames
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    nchw = frames.permute(0, 3, 1, 2).float()
    return F.interpolate(nchw, size=size, mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1).permute(0, 2, 3, 1)

"""Hostile or unlucky media files: a long clip, a huge image, a corrupt file or non-finite frames
must end in a NodeError that names the file (or the input) and says what to do, never in a machine
out of memory, a bare traceback or an all-black output. Every hostile file is written here, small
enough to keep each test within about a second and a few MB (the caps are lowered to match)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from engine import media
from engine.context import ExecutionContext, InterruptFlag
from engine.errors import NodeError
from engine.media import limits
from engine.values import Video
from nodes.media import LoadImage, LoadVideo, Preview, SaveImage, SaveVideo

ROOT = Path(__file__).resolve().parents[1]
GREY_STEP = 5  # frame i is grey level 5*i, so a decoded frame says which frame it was


def grey_clip(path: Path, frames: int, fps: int = 24, size: int = 16,
              fmt: str | None = None) -> Path:
    """A tiny lossless H.264 clip whose frame i is solid grey 5*i (mod 256), written with PyAV."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=fps,
                                      options={"crf": "0", "preset": "ultrafast"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            pixels = np.full((size, size, 3), (GREY_STEP * i) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def frame_numbers(video: Video) -> list[int]:
    """Which of grey_clip's first 52 frames each decoded frame is (lossless H.264 keeps the grey
    level to +-1 of 255, far less than the step between frames)."""
    return [round(float(f.mean()) * 255 / GREY_STEP) for f in video.frames]


def big_png(path: Path, width: int, height: int, rows: int | None = None) -> Path:
    """An all-black greyscale PNG of any size, written row by row in constant memory (a
    12000x12000 one is 140 KB: a decompression bomb). `rows` writes only that many rows of
    pixels: the header still says width x height, which is all a header check may read."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc
    comp = zlib.compressobj(1)
    row = b"\0" * (1 + width)  # filter byte + one byte per pixel
    idat = b"".join(comp.compress(row) for _ in range(height if rows is None else rows))
    idat += comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def make_ctx(tmp_path: Path, logs: list | None = None) -> ExecutionContext:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    sink = (lambda level, message: logs.append((level, message))) if logs is not None else None
    return ExecutionContext("n1", "X", "run", torch.device("cpu"), out, tmp_path / "tmp",
                            tmp_path / "cache", InterruptFlag(), lambda f, m, p: None,
                            settings={"input_dir": str(tmp_path)}, log_sink=sink)


def load_video(ctx: ExecutionContext, video: str, **inputs) -> Video:
    """LoadVideo with the spec's defaults for every input not given."""
    values = {i.name: i.default for i in LoadVideo.spec.inputs}
    values.update(video=video, **inputs)
    return LoadVideo.execute(ctx, **values)["video"]


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    return big_png(tmp_path_factory.mktemp("bomb") / "huge.png", 12000, 12000)


# ---- 1. long videos: a cap on frames and bytes, and a range to pick ----------------------------

def test_a_clip_over_the_cap_is_refused_from_its_header_without_decoding(tmp_path):
    path = grey_clip(tmp_path / "long.mp4", 2000)  # 2000 frames of 16x16 = 23.4 MiB as float32
    with pytest.raises(media.VideoTooLong) as err:
        media.read_video(path, limits=media.MediaLimits(max_bytes=2**20))
    assert err.value.decoded == 0  # the mp4 header declares 2000 frames: nothing was decoded
    assert err.value.frames == 2000 and err.value.fit == 2**20 // (16 * 16 * 3 * 4)
    with pytest.raises(NodeError) as err:  # the node says how to pick a range
        load_video(make_ctx(tmp_path), "long.mp4", memory_cap_mb=1)
    message = str(err.value)
    assert err.value.input == "frame_count"
    for needed in ("long.mp4", "2000 frames", "16x16", "memory_cap_mb", "frame_count",
                   "start_frame", "stride", "341"):
        assert needed in message, (needed, message)


def test_a_clip_whose_header_says_nothing_is_counted_while_decoding(tmp_path):
    path = grey_clip(tmp_path / "raw.h264", 600, fmt="h264")  # raw H.264: no count, no duration
    seen = []
    with pytest.raises(media.VideoTooLong) as err:
        media.read_video(path, limits=media.MediaLimits(max_frames=100), progress=seen.append)
    assert err.value.frames is None and err.value.decoded == 101  # stopped one frame past the cap
    with pytest.raises(media.VideoTooLong) as err:  # the byte cap counts the same way
        media.read_video(path, limits=media.MediaLimits(max_bytes=50 * 16 * 16 * 3 * 4))
    assert err.value.decoded == 51 and err.value.fit == 50


def test_a_range_decodes_exactly_the_requested_frames(tmp_path):
    path = grey_clip(tmp_path / "clip.mp4", 50, fps=24)
    assert frame_numbers(media.read_video(path)) == list(range(50))
    picked = media.read_video(path, 5, start=7, stride=3)
    assert frame_numbers(picked) == [7, 10, 13, 16, 19]
    assert picked.fps == 8.0  # every 3rd frame of 24 fps keeps the clip's duration
    assert frame_numbers(media.read_video(path, start=40, stride=4)) == [40, 44, 48]
    assert frame_numbers(media.read_video(path, 100, start=45)) == [45, 46, 47, 48, 49]  # at most

    ctx = make_ctx(tmp_path)
    video = load_video(ctx, "clip.mp4", start_frame=7, frame_count=5, stride=3)
    assert frame_numbers(video) == [7, 10, 13, 16, 19] and video.fps == 8.0
    # max_frames keeps its meaning (the first frames); with frame_count the smaller one wins
    assert frame_numbers(load_video(ctx, "clip.mp4", max_frames=4)) == [0, 1, 2, 3]
    assert frame_numbers(load_video(ctx, "clip.mp4", max_frames=4, frame_count=2)) == [0, 1]
    assert frame_numbers(load_video(ctx, "clip.mp4", max_frames=3, frame_count=9)) == [0, 1, 2]


def test_a_range_that_fits_loads_from_a_clip_over_the_cap(tmp_path):
    grey_clip(tmp_path / "long.mp4", 2000)
    video = load_video(make_ctx(tmp_path), "long.mp4", memory_cap_mb=1, start_frame=1000,
                       frame_count=300, stride=2)
    assert video.num_frames == 300
    levels = (video.frames.mean(dim=(1, 2, 3)) * 255).tolist()  # (T,)
    expected = [(GREY_STEP * (1000 + 2 * k)) % 256 for k in range(300)]
    assert max(abs(a - b) for a, b in zip(levels, expected)) <= 1.5
    with pytest.raises(NodeError, match="342 frames") as err:  # asking for more than fits: early
        load_video(make_ctx(tmp_path), "long.mp4", memory_cap_mb=1, frame_count=342)
    assert err.value.input == "frame_count"


def test_a_start_past_the_end_says_how_long_the_clip_is(tmp_path):
    grey_clip(tmp_path / "clip.mp4", 10)
    with pytest.raises(NodeError, match=r"start_frame 10 .* 10 frames") as err:
        load_video(make_ctx(tmp_path), "clip.mp4", start_frame=10)
    assert err.value.input == "start_frame"


def test_load_video_states_its_caps_and_loads_old_graphs(registry):
    spec = LoadVideo.spec
    assert spec.version >= 2  # results may differ from version 1 (fps with stride)
    side = int(limits.MAX_PIXELS ** 0.5)
    for stated in ("memory_cap_mb", "frame_count", f"{limits.MAX_VIDEO_FRAMES:,} frames",
                   f"{limits.MAX_VIDEO_BYTES // 2**20} MB", f"{side}x{side}"):
        assert stated in spec.description, stated  # the docstring states the caps in force
    assert f"{side}x{side}" in LoadImage.spec.description
    assert spec.input("max_frames") is not None  # graphs saved with it keep validating
    assert spec.input("memory_cap_mb").default == limits.MAX_VIDEO_BYTES // 2**20
    for name in ("extend_video", "connect_videos", "video_to_video"):
        doc = json.loads((ROOT / "workflows" / f"{name}.json").read_text())
        for node in doc["nodes"].values():
            if node["type"] == "LoadVideo":
                assert all(spec.input(key) is not None for key in node["inputs"])


# ---- 2. huge images: a pixel cap from the header, before decoding ------------------------------

@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, also refused
def test_a_huge_png_is_refused_from_its_header(tmp_path, huge_png):
    with pytest.raises(media.MediaTooLarge, match=r"12000x12000 .*8192x8192"):
        media.read_image(huge_png)
    with pytest.raises(NodeError, match="huge.png") as err:
        LoadImage.execute(make_ctx(tmp_path), image=str(huge_png))
    assert "downscale" in str(err.value).lower() and err.value.input == "image"
    with pytest.raises(media.MediaTooLarge, match="12000x12000"):  # a still read as a video
        media.read_video(huge_png)


def test_an_image_past_pillows_bomb_limit_gets_the_same_error(tmp_path):
    path = big_png(tmp_path / "bigger.png", 20000, 20000, rows=1)  # 400 Mpx: Pillow refuses it
    with pytest.raises(media.MediaTooLarge, match="bigger.png.*8192x8192"):
        media.read_image(path)


def test_reading_huge_files_stays_small_in_memory(huge_png):
    """In a fresh process (RSS is per process): refusing the 12000x12000 PNG as an image, as a
    video, and extracting its workflow (the studio's drop) must not decode its 432 MB of pixels."""
    probe = f"""
import resource, sys
sys.path.insert(0, {str(ROOT)!r})
from engine import media
from engine.media import reading, embed
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with open('/proc/self/status') as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmSize'))
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**31, resource.RLIM_INFINITY))  # whatever happens
before = peak_mb()
for read in (media.read_image, media.read_video):
    try:
        read({str(huge_png)!r})
    except media.MediaTooLarge:
        pass
assert media.read_embedded({str(huge_png)!r}).workflow is None
print(peak_mb() - before)
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 100  # MB; decoding would take 432+


def test_video_frames_obey_the_pixel_cap_before_decoding(tmp_path):
    path = grey_clip(tmp_path / "clip.mp4", 5)
    with pytest.raises(media.MediaTooLarge, match=r"16x16"):
        media.read_video(path, limits=media.MediaLimits(max_pixels=255))
    assert media.read_video(path, limits=media.MediaLimits(max_pixels=256)).num_frames == 5


def test_a_large_image_loads_with_a_warning(tmp_path, monkeypatch):
    media.write_png(tmp_path / "wide.png", torch.rand(20, 30, 3))
    monkeypatch.setattr(limits, "WARN_PIXELS", 500)
    logs: list = []
    image = LoadImage.execute(make_ctx(tmp_path, logs), image="wide.png")["image"]
    assert image.shape == (1, 20, 30, 3)
    assert [level for level, _ in logs] == ["warning"] and "30x20" in logs[0][1]


# ---- 3. corrupt files: a NodeError that names the file and what is wrong -----------------------

def _real_mp4(tmp_path: Path) -> bytes:
    media.write_video(tmp_path / "real.mp4", Video(torch.rand(20, 32, 32, 3), 16.0))
    return (tmp_path / "real.mp4").read_bytes()


def _png_bytes(tmp_path: Path) -> bytes:
    media.write_png(tmp_path / "real.png", torch.rand(64, 64, 3))
    return (tmp_path / "real.png").read_bytes()


def _unfinished_mp4(tmp_path: Path) -> bytes:
    """A recording cut before its index: PyAV writes the 'moov' box last (no faststart)."""
    data = grey_clip(tmp_path / "rec.mp4", 12).read_bytes()
    return data[:data.find(b"moov") - 4]


CORRUPT = {  # name: (content from tmp_path, what the error must say)
    "random.mp4": (lambda t: np.random.default_rng(0).bytes(5000), "not a video"),
    "half.mp4": (lambda t: _real_mp4(t)[: len(_real_mp4(t)) // 2], "truncated"),
    "head.mp4": (lambda t: _real_mp4(t)[:40], "truncated"),
    "unfinished.mp4": (_unfinished_mp4, "truncated"),
    "garbage.png": (lambda t: b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(3000),
                    "not an image"),
    "cut.png": (lambda t: _png_bytes(t)[:-2000], "truncated"),
    "empty.mp4": (lambda t: b"", "empty"),
    "empty.png": (lambda t: b"", "empty"),
    "notes.png": (lambda t: b"just some text, not pixels\n" * 20, "not an image"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_files_are_node_errors_naming_the_file(tmp_path, name):
    content, says = CORRUPT[name]
    (tmp_path / name).write_bytes(content(tmp_path))
    ctx = make_ctx(tmp_path)
    if name.endswith(".png"):
        with pytest.raises(NodeError) as err:
            LoadImage.execute(ctx, image=name)
        assert err.value.input == "image"
        message = str(err.value)
        assert name in message and says in message, message
    with pytest.raises(NodeError) as err:  # every file is also refused as a video
        load_video(ctx, name)
    assert name in str(err.value) and err.value.input == "video"
    if name.endswith(".mp4"):
        assert says in str(err.value), str(err.value)


def test_a_tag_that_is_not_utf8_does_not_stop_the_video_loading(tmp_path):
    path = media.write_video(tmp_path / "tagged.mp4", Video(torch.rand(4, 16, 16, 3), 16.0),
                             workflow={"title": "MARKERMARKER"})
    data = path.read_bytes()
    at = data.find(b"MARKERMARKER")
    path.write_bytes(data[:at] + b"\xff\xfe" + data[at + 2:])  # was a bare UnicodeDecodeError
    assert media.read_video(path).num_frames == 4
    assert media.read_embedded(path).workflow is None  # the damaged workflow is not trusted


def test_fuzzed_files_only_ever_raise_media_errors(tmp_path):
    """Bytes flipped across real files of each format: reading either works or raises MediaError."""
    sources = {"mp4": _real_mp4(tmp_path), "png": _png_bytes(tmp_path)}
    for fmt in ("gif", "webp", "webm"):
        sources[fmt] = media.write_video(tmp_path / f"real.{fmt}",
                                         Video(torch.rand(4, 24, 24, 3), 8.0)).read_bytes()
    rng = np.random.default_rng(7)
    for fmt, data in sources.items():
        for trial in range(12):
            damaged = bytearray(data)
            for at in rng.integers(0, len(data), size=8):
                damaged[at] = int(rng.integers(0, 256))
            path = tmp_path / f"fuzz{trial}.{fmt}"
            path.write_bytes(bytes(damaged))
            for read in (media.read_image, media.read_video):
                try:
                    read(path)
                except media.MediaError as exc:
                    assert path.name in str(exc)
            media.read_embedded(path)  # the studio's drop: never raises


# ---- 4. non-finite frames never reach a file ---------------------------------------------------

@pytest.mark.parametrize("bad, says", [(float("nan"), "NaN"), (float("inf"), "infinite")])
def test_save_and_preview_refuse_non_finite_frames(tmp_path, bad, says):
    frames = torch.rand(3, 8, 8, 3)
    frames[1, 2, 3, 0] = bad
    ctx = make_ctx(tmp_path)
    calls = [(SaveVideo, "video",
              dict(video=Video(frames, 8.0), filename_prefix="v", format="mp4", crf=20)),
             (SaveImage, "images", dict(images=frames, filename_prefix="i")),
             (Preview, "value", dict(value=Video(frames, 8.0))),
             (Preview, "value", dict(value=frames))]
    for node, input_name, inputs in calls:
        with pytest.raises(NodeError) as err:
            node.execute(ctx, **inputs)
        message = str(err.value)
        assert err.value.input == input_name
        is_video = isinstance(inputs.get("video", inputs.get("value")), Video)
        where = "frame 1" if is_video else "image 1"
        assert says in message and where in message and "fp32" in message, message
    assert ctx.files == [] and not any(p.is_file() for p in ctx.output_dir.rglob("*"))


def test_finite_frames_still_save(tmp_path):
    ctx = make_ctx(tmp_path)
    SaveImage.execute(ctx, images=torch.rand(1, 8, 8, 3).half(), filename_prefix="ok")
    assert len(ctx.files) == 1 and os.path.getsize(ctx.files[0]) > 0

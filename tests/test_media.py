"""Media I/O: files written by engine.media decode back with the right frames, size and fps, carry
the workflow that made them, are written atomically, and the I/O nodes stay inside the output
folder."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from engine import media
from engine.cache import ResultCache
from engine.context import ExecutionContext, InterruptFlag
from engine.document import Workflow, workflow_from_json
from engine.errors import NodeError
from engine.executor import Executor
from engine.values import Video
from nodes.media import LoadImage, LoadVideo, Preview, SaveImage, SaveVideo

WORKFLOW = {"format": "reelgraph.workflow", "version": 2, "meta": {"title": "naïve \"café\" <&>"},
            "nodes": {"n1": {"type": "SaveVideo", "inputs": {"filename_prefix": "shot/1"}}},
            "links": [], "layout": {}}
PROVENANCE = {"seed": 1234, "models": {"d": {"sha256": "ab" * 32}}}


def moving_square(frames: int = 6, height: int = 48, width: int = 64, step: int = 4) -> Video:
    """A white 12 px square moving right on black, plus a red bar to check colour order."""
    video = torch.zeros(frames, height, width, 3)
    for i in range(frames):
        video[i, 10:22, 4 + i * step:16 + i * step] = 1.0
    video[:, -6:, :, 0] = 1.0
    return Video(video, fps=16.0)


def make_ctx(tmp_path: Path, node_type: str = "X", **kw) -> ExecutionContext:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return ExecutionContext("n1", node_type, "run", torch.device("cpu"), out, tmp_path / "tmp",
                            tmp_path / "cache", InterruptFlag(), lambda f, m, p: None,
                            workflow_source=WORKFLOW, provenance=dict(PROVENANCE), **kw)


def decode_with_pyav(path: Path) -> tuple[int, tuple[int, int], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        return len(frames), (frames[0].width, frames[0].height), stream.average_rate


# ---- formats ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, fps, tolerance", [("mp4", 16.0, 0.02), ("webm", 24.0, 0.02),
                                                 ("gif", 20.0, 0.01), ("webp", 25.0, 0.03)])
def test_video_round_trip_keeps_frames_size_fps_and_pixels(tmp_path, fmt, fps, tolerance):
    clip = moving_square()
    clip.fps = fps
    path = media.write_video(tmp_path / f"clip.{fmt}", clip)
    back = media.read_video(path)
    assert back.frames.shape == clip.frames.shape
    assert back.fps == pytest.approx(fps, abs=1e-9)
    assert (back.frames - clip.frames).abs().mean().item() < tolerance
    # the square is where it was written in every frame (x-centroid of bright pixels)
    for i in range(clip.num_frames):
        xs = torch.nonzero(back.frames[i, 10:22, :, 1] > 0.5)[:, 1].float()
        assert xs.mean().item() == pytest.approx(9.5 + 4 * i, abs=0.5)
    assert back.frames[0, -3, 5].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=0.08)  # red, not blue


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif"])
def test_pyav_itself_decodes_what_we_wrote(tmp_path, fmt):
    path = media.write_video(tmp_path / f"clip.{fmt}", moving_square(frames=5))
    count, size, rate = decode_with_pyav(path)
    assert (count, size) == (5, (64, 48))
    if fmt != "gif":  # GIF's average_rate is rounded from 1/100 s delays
        assert rate == 16


def test_animated_webp_holds_every_frame(tmp_path):
    # FFmpeg cannot decode animated WebP, so check the file with Pillow's libwebp reader.
    path = media.write_video(tmp_path / "clip.webp", moving_square(frames=5))
    with Image.open(path) as im:
        assert (im.n_frames, im.size, im.info["loop"]) == (5, (64, 48), 0)


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_ntsc_rate_is_stored_exactly(tmp_path, fmt):
    clip = moving_square(frames=4)
    clip.fps = 24000 / 1001
    path = media.write_video(tmp_path / f"ntsc.{fmt}", clip)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == Fraction(24000, 1001)
    assert media.exact_rate(media.read_video(path).fps) == Fraction(24000, 1001)


def test_odd_size_is_edge_padded_for_yuv420_codecs_and_kept_for_gif(tmp_path):
    clip = Video(torch.rand(3, 33, 45, 3) * 0.2 + 0.4, fps=8.0)
    clip.frames[:, :, -1] = torch.tensor([0.9, 0.1, 0.1])  # a distinct last column to be repeated
    back = media.read_video(media.write_video(tmp_path / "odd.mp4", clip))
    assert back.frames.shape == (3, 34, 46, 3)
    # the padding column repeats the last real column (up to chroma subsampling)
    assert (back.frames[:, :, -1] - back.frames[:, :, -2]).abs().mean().item() < 0.03
    assert back.frames[:, :, -1, 0].mean().item() > 0.8
    assert media.read_video(media.write_video(tmp_path / "odd.gif", clip)).frames.shape == (3, 33, 45, 3)


def test_max_frames_reads_only_the_first_frames(tmp_path):
    clip = moving_square(frames=6)
    path = media.write_video(tmp_path / "clip.mp4", clip)
    head = media.read_video(path, max_frames=2)
    assert head.num_frames == 2
    assert (head.frames - clip.frames[:2]).abs().mean().item() < 0.02


def test_png_round_trip_is_exact_to_8_bits(tmp_path):
    image = torch.rand(1, 17, 23, 3)
    path = media.write_png(tmp_path / "a.png", image, media.metadata_text(WORKFLOW, None))
    back = media.read_image(path)
    assert back.shape == (1, 17, 23, 3) and back.dtype == torch.float32
    assert (back - image).abs().max().item() <= 0.5 / 255 + 1e-6


def test_read_image_drops_alpha_and_reads_a_still_as_one_frame_video(tmp_path):
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = media.read_image(tmp_path / "a.png")
    assert image.shape == (1, 5, 7, 3)
    assert image[0, 0, 0].tolist() == pytest.approx([0.0, 200 / 255, 0.0])
    still = media.read_video(tmp_path / "a.png")
    assert still.num_frames == 1 and still.size == (7, 5)


# ---- embedded workflow -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif", "webp"])
def test_workflow_and_provenance_come_back_from_videos(tmp_path, fmt):
    path = media.write_video(tmp_path / f"clip.{fmt}", moving_square(frames=3),
                             workflow=WORKFLOW, provenance=PROVENANCE)
    embedded = media.read_embedded(path)
    assert embedded.workflow == WORKFLOW
    assert embedded.provenance == PROVENANCE
    assert media.extract_workflow(path) == WORKFLOW
    assert [p.name for p in tmp_path.iterdir()] == [f"clip.{fmt}"]  # no sidecar, no temp file


def test_single_frame_webp_and_gif_carry_the_workflow_too(tmp_path):
    for fmt in ("webp", "gif"):
        path = media.write_video(tmp_path / f"one.{fmt}", Video(torch.rand(1, 9, 11, 3), 5.0),
                                 workflow=WORKFLOW)
        assert media.extract_workflow(path) == WORKFLOW
        assert media.read_video(path).frames.shape == (1, 9, 11, 3)
        with Image.open(path) as im:  # still a valid file for other readers
            im.load()
            assert im.size == (11, 9)


def test_mp4_metadata_is_a_container_tag_pyav_reads(tmp_path):
    path = media.write_video(tmp_path / "clip.mp4", moving_square(frames=3), workflow=WORKFLOW)
    with av.open(str(path)) as container:
        assert json.loads(container.metadata[media.WORKFLOW_KEY]) == WORKFLOW


def test_workflow_comes_back_from_png_and_restores_the_graph(tmp_path):
    path = media.write_png(tmp_path / "a.png", torch.rand(8, 8, 3),
                           media.metadata_text(WORKFLOW, PROVENANCE))
    found = media.extract_workflow(path)
    assert found == WORKFLOW
    assert workflow_from_json(found).nodes["n1"].inputs == {"filename_prefix": "shot/1"}


def test_files_without_a_workflow_give_none(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    (tmp_path / "notes.txt").write_text("not media")
    media.write_video(tmp_path / "bare.mp4", moving_square(frames=2))
    for name in ("plain.png", "notes.txt", "bare.mp4"):
        assert media.extract_workflow(tmp_path / name) is None


def test_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(media.MediaError, match="no frames"):
        media.write_video(tmp_path / "empty.mp4", Video(torch.zeros(0, 8, 8, 3), 8.0))
    with pytest.raises(media.MediaError, match="unknown video format"):
        media.write_video(tmp_path / "clip.avi", moving_square(frames=2))
    with pytest.raises(ValueError):  # fps 0 cannot be stored
        media.write_video(tmp_path / "clip.mp4", Video(torch.zeros(2, 8, 8, 3), 0.0))
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_the_file_whole(tmp_path):
    path = tmp_path / "clip.mp4"
    media.write_video(path, moving_square(frames=6))
    media.write_video(path, moving_square(frames=2))
    assert media.read_video(path).num_frames == 2
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_unreadable_files_raise_media_error_naming_them(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(media.MediaError, match="broken.mp4"):
        media.read_video(bad)
    with pytest.raises(media.MediaError, match="missing.png"):
        media.read_image(tmp_path / "missing.png")


# ---- nodes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif", "webp"])
def test_save_video_node_writes_a_registered_file_with_the_workflow(tmp_path, fmt):
    ctx = make_ctx(tmp_path, "SaveVideo")
    SaveVideo.execute(ctx, video=moving_square(frames=3), filename_prefix="renders/shot",
                      format=fmt, crf=30)
    assert ctx.files == [ctx.output_dir.resolve() / "renders" / f"shot_00001.{fmt}"]
    embedded = media.read_embedded(ctx.files[0])
    assert embedded.workflow == WORKFLOW and embedded.provenance == PROVENANCE
    assert media.read_video(ctx.files[0]).num_frames == 3


def test_save_image_node_writes_one_png_per_batch_item(tmp_path):
    ctx = make_ctx(tmp_path, "SaveImage")
    images = torch.rand(2, 6, 5, 3)
    SaveImage.execute(ctx, images=images, filename_prefix="still")
    assert [p.name for p in ctx.files] == ["still_00001.png", "still_00002.png"]
    for i, path in enumerate(ctx.files):
        assert (media.read_image(path)[0] - images[i]).abs().max().item() < 1 / 255
        assert media.extract_workflow(path) == WORKFLOW


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/abs", "a/../../b"])
def test_output_paths_cannot_escape_the_output_folder(tmp_path, prefix):
    ctx = make_ctx(tmp_path, "SaveVideo")
    with pytest.raises(NodeError, match="output"):
        SaveVideo.execute(ctx, video=moving_square(frames=2), filename_prefix=prefix,
                          format="gif", crf=20)
    with pytest.raises(NodeError, match="output"):
        SaveImage.execute(ctx, images=torch.rand(1, 4, 4, 3), filename_prefix=prefix)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [] and ctx.files == []


def test_preview_writes_small_files_under_preview(tmp_path):
    ctx = make_ctx(tmp_path, "Preview")
    Preview.execute(ctx, value=Video(torch.rand(3, 600, 900, 3), fps=8.0))
    Preview.execute(ctx, value=torch.rand(2, 40, 30, 3))
    assert [p.relative_to(ctx.output_dir.resolve()).as_posix() for p in ctx.files] == [
        "preview/n1_00001.mp4", "preview/n1_00001.png", "preview/n1_00002.png"]
    assert media.read_video(ctx.files[0]).size == (512, 342)  # longest side 512, even for yuv420p
    assert media.read_image(ctx.files[1]).shape == (1, 40, 30, 3)
    with pytest.raises(NodeError, match="expected an IMAGE"):
        Preview.execute(ctx, value="not an image")


def test_load_nodes_read_relative_to_the_input_folder(tmp_path):
    inputs = tmp_path / "inputs"
    media.write_video(inputs / "clip.webm", moving_square(frames=4))
    media.write_png(inputs / "still.png", torch.rand(9, 11, 3))
    ctx = make_ctx(tmp_path, "LoadVideo", settings={"input_dir": str(inputs)})
    video = LoadVideo.execute(ctx, video="clip.webm", max_frames=3)["video"]
    assert (video.num_frames, video.size, video.fps) == (3, (64, 48), 16.0)
    image = LoadImage.execute(ctx, image=str(inputs / "still.png"))["image"]  # absolute works too
    assert image.shape == (1, 9, 11, 3)
    with pytest.raises(NodeError, match="file not found") as err:
        LoadImage.execute(ctx, image="nope.png")
    assert err.value.input == "image"


def test_graph_run_embeds_the_running_workflow(tmp_path, registry):
    executor = Executor(registry, ResultCache(disk_dir=tmp_path / "cache"),
                        settings={"output_dir": str(tmp_path / "out")}, temp_dir=tmp_path / "tmp")
    wf = Workflow()
    wf.add_node("ImageGradient", {"width": 16, "height": 8}, node_id="grad")
    wf.add_node("SaveImage", {"filename_prefix": "gradient"}, node_id="save")
    wf.connect("grad", "image", "save", "images")
    report = executor.run(wf)
    assert report.status == "done", report.error
    (png,) = report.outputs
    restored = workflow_from_json(media.extract_workflow(png))
    assert restored.to_json() == wf.to_json()
    assert media.read_embedded(png).provenance["torch"] == torch.__version__

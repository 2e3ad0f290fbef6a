"""Frame interpolation: the classical method puts a moving object where it should be between two
frames, scene cuts are not morphed, the RIFE IFNet loads Practical-RIFE-layout weights from
safetensors and from `module.`-prefixed weights-only pickles, wrong files fail clearly, and the
FrameInterpolate node picks its method as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.context import ExecutionContext, InterruptFlag
from engine.errors import NodeError
from engine.interpolation import interpolate, load_rife, scene_cut_score
from engine.interpolation.rife import IFNet, IFNetConfig, warp
from engine.models.paths import ModelPaths
from engine.models.safe_load import ModelLoadError
from engine.values import Video
from nodes.interpolate import FrameInterpolate, LoadInterpolator

SIZE = 12  # square side, px
STEP = (6, 3)  # motion per frame (dx, dy), px: about half the square, as DIS tracks it reliably
TINY = IFNetConfig(widths=(16, 16, 8, 8), depth=2)  # v4.6 layout, a few thousand weights


def square_clip(frames: int = 4, height: int = 64, width: int = 72) -> Video:
    video = torch.zeros(frames, height, width, 3)
    for i in range(frames):
        x, y = 8 + i * STEP[0], 10 + i * STEP[1]
        video[i, y:y + SIZE, x:x + SIZE] = 1.0
    return Video(video, fps=12.0)


def centroid(frame: torch.Tensor) -> tuple[float, float, int]:
    """(x, y, area) of the pixels brighter than half."""
    ys, xs = torch.nonzero(frame[..., 0] > 0.5, as_tuple=True)
    return xs.float().mean().item(), ys.float().mean().item(), int(xs.numel())


def noise_scene(height: int = 64, width: int = 72, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    frame = torch.rand(height, width, 3, generator=g) * 0.3
    frame[..., 1] += 0.6  # a green, textured shot: nothing like the black one
    return frame


# ---- classical -------------------------------------------------------------------------------

@pytest.mark.parametrize("multiplier", [2, 3])
def test_classical_puts_the_square_between_its_positions(multiplier):
    clip = square_clip()
    out = interpolate(clip, multiplier, "classical")
    assert out.num_frames == (clip.num_frames - 1) * multiplier + 1
    assert out.fps == clip.fps * multiplier
    motion = float(np.hypot(*STEP))
    for j in range(out.num_frames):
        i, k = divmod(j, multiplier)
        if k == 0:  # originals pass through untouched
            assert torch.equal(out.frames[j], clip.frames[i])
            continue
        t = k / multiplier
        x, y, area = centroid(out.frames[j])
        expect_x = 8 + (i + t) * STEP[0] + (SIZE - 1) / 2
        expect_y = 10 + (i + t) * STEP[1] + (SIZE - 1) / 2
        assert np.hypot(x - expect_x, y - expect_y) < 0.15 * motion, (j, x, y)
        assert abs(area - SIZE * SIZE) < 0.2 * SIZE * SIZE  # one square, not two ghosts


def test_a_crossfade_would_fail_the_same_check():
    # The check above has teeth: averaging two frames leaves only the overlap of the two squares
    # bright, far too small an area (its centroid alone would pass).
    clip = square_clip(frames=2)
    area = centroid(clip.frames.mean(0))[2]
    assert abs(area - SIZE * SIZE) > 0.5 * SIZE * SIZE


def test_scene_cut_duplicates_the_nearest_frame():
    clip = square_clip(frames=4)
    clip.frames[2] = noise_scene(seed=1)
    clip.frames[3] = noise_scene(seed=2)
    out = interpolate(clip, 3, "classical", scene_cut_threshold=0.4)
    assert out.num_frames == 10
    # pair 1 -> 2 is the cut: t = 1/3 repeats frame 1, t = 2/3 repeats frame 2
    assert torch.equal(out.frames[4], clip.frames[1])
    assert torch.equal(out.frames[5], clip.frames[2])
    # pairs within a shot are interpolated, not repeated
    for j, (i0, i1) in ((1, (0, 1)), (7, (2, 3))):
        assert not torch.equal(out.frames[j], clip.frames[i0])
        assert not torch.equal(out.frames[j], clip.frames[i1])
    # threshold 1 disables detection: the cut is morphed
    morphed = interpolate(clip, 3, "classical", scene_cut_threshold=1.0)
    assert not torch.equal(morphed.frames[4], clip.frames[1])


def test_scene_cut_score_ignores_motion_and_sees_cuts():
    clip = square_clip(frames=2).frames.numpy()
    assert scene_cut_score(clip[0], clip[1]) < 0.15
    assert scene_cut_score(clip[0], noise_scene().numpy()) > 0.9


def test_progress_is_reported_per_pair_and_can_interrupt():
    seen = []
    interpolate(square_clip(frames=3), 2, "classical", progress=lambda f, m: seen.append(f))
    assert seen == [0.5, 1.0]

    class Stop(Exception):
        pass

    def stop(fraction, message):
        raise Stop

    with pytest.raises(Stop):
        interpolate(square_clip(frames=3), 2, "classical", progress=stop)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="multiplier"):
        interpolate(square_clip(frames=2), 0)
    with pytest.raises(ValueError, match="load_rife"):
        interpolate(square_clip(frames=2), 2, "rife")


# ---- RIFE ------------------------------------------------------------------------------------

def test_default_layout_matches_practical_rife_v46_keys_and_shapes():
    sd = IFNet().state_dict()
    assert sd["block0.conv0.0.0.weight"].shape == (96, 7, 3, 3)  # img0, img1, t
    assert sd["block1.conv0.0.0.weight"].shape == (64, 12, 3, 3)  # + mask and 4-channel flow
    assert sd["block3.lastconv.0.weight"].shape == (64, 24, 4, 4)  # 4 * 6 before PixelShuffle(2)
    assert sd["block2.convblock.7.beta"].shape == (1, 96, 1, 1)
    assert not any(k.startswith("encode.") for k in sd)
    assert IFNetConfig.from_state_dict(sd) == IFNetConfig()


def test_feature_head_layouts_are_detected_from_the_weights():
    v415 = IFNetConfig(widths=(24, 16, 16, 8), feature_channels=8, head_width=8, depth=2)
    v422 = IFNetConfig(widths=(24, 16, 16, 8), feature_channels=8, head_width=8, block_extra=8, depth=2)
    for config in (v415, v422):
        sd = IFNet(config).state_dict()
        assert IFNetConfig.from_state_dict(sd) == config
        assert not config.accumulate_mask
        with torch.no_grad():
            out = IFNet(config)(torch.rand(1, 3, 32, 64), torch.rand(1, 3, 32, 64), torch.full((1, 1, 1, 1), 0.5))
        assert out.shape == (1, 3, 32, 64)


def test_warp_by_a_whole_pixel_shifts_the_image():
    image = torch.rand(1, 3, 8, 10)
    flow = torch.zeros(1, 2, 8, 10)
    flow[:, 0] = 1.0  # sample one pixel to the right
    shifted = warp(image, flow)
    assert torch.allclose(shifted[..., :-1], image[..., 1:], atol=1e-5)
    assert torch.allclose(shifted[..., -1], image[..., -1], atol=1e-5)  # border padding


class NotATensor:
    """Any class: a weights-only load must refuse to construct it."""


def _random_weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in IFNet(TINY).state_dict().items()}


def test_rife_runs_from_safetensors_and_module_prefixed_pickle(tmp_path):
    weights = _random_weights(0)
    save_file(weights, str(tmp_path / "rife.safetensors"))
    torch.save({f"module.{k}": v for k, v in weights.items()}, tmp_path / "flownet.pkl")
    clip = Video(torch.rand(3, 40, 56, 3), fps=10.0)  # not a multiple of 32: padded and cropped
    outs = []
    for name in ("rife.safetensors", "flownet.pkl"):
        rife = load_rife(tmp_path / name)
        for key, value in weights.items():
            assert torch.equal(rife.model.state_dict()[key], value)
        out = interpolate(clip, 3, rife, scene_cut_threshold=1.0)
        assert out.frames.shape == (7, 40, 56, 3) and out.fps == 30.0
        assert torch.equal(out.frames[3], clip.frames[1])
        assert 0.0 <= out.frames.min().item() and out.frames.max().item() <= 1.0
        assert rife.info.family == "rife-4" and len(rife.info.sha256) == 64
        outs.append(out.frames)
    assert torch.allclose(outs[0], outs[1])  # same weights, same frames
    other = interpolate(clip, 3, load_rife(_save(tmp_path, _random_weights(1))), scene_cut_threshold=1.0)
    assert not torch.allclose(other.frames[1], outs[0][1])  # the weights are actually used


def _save(tmp_path: Path, weights: dict[str, torch.Tensor], name: str = "other.safetensors") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(path))
    return path


def test_wrong_files_fail_naming_the_file(tmp_path):
    unrelated = _save(tmp_path, {"encoder.weight": torch.zeros(2, 2)}, "vae.safetensors")
    with pytest.raises(ModelLoadError, match=r"vae\.safetensors.*not a RIFE 4\.x IFNet"):
        load_rife(unrelated)

    partial = _random_weights(0)
    del partial["block2.convblock.1.conv.weight"]
    with pytest.raises(ModelLoadError, match=r"partial\.safetensors.*1 missing.*block2\.convblock\.1"):
        load_rife(_save(tmp_path, partial, "partial.safetensors"))

    reshaped = _random_weights(0)
    reshaped["block1.convblock.0.beta"] = torch.ones(1, 3, 1, 1)
    with pytest.raises(ModelLoadError, match=r"reshaped\.safetensors.*shapes do not match"):
        load_rife(_save(tmp_path, reshaped, "reshaped.safetensors"))

    legacy = _random_weights(0)
    legacy["encode.0.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(ModelLoadError, match=r"legacy\.safetensors.*v4\.7-v4\.12"):
        load_rife(_save(tmp_path, legacy, "legacy.safetensors"))

    torch.save({"w": NotATensor()}, tmp_path / "evil.pkl")
    with pytest.raises(ModelLoadError, match=r"evil\.pkl"):
        load_rife(tmp_path / "evil.pkl")


# ---- nodes -----------------------------------------------------------------------------------

def make_ctx(tmp_path: Path, model_paths: ModelPaths | None) -> ExecutionContext:
    return ExecutionContext("fi", "FrameInterpolate", "run", torch.device("cpu"), tmp_path / "out",
                            tmp_path / "tmp", tmp_path / "cache", InterruptFlag(),
                            lambda f, m, p: None, model_paths=model_paths, provenance={})


def test_auto_uses_classical_without_weights_and_rife_with_them(tmp_path):
    clip = square_clip(frames=2)
    root = tmp_path / "models"
    (root / "interpolation").mkdir(parents=True)
    ctx = make_ctx(tmp_path, ModelPaths([root]))
    args = dict(video=clip, multiplier=2, model="", scene_cut_threshold=0.4)
    classical = FrameInterpolate.execute(ctx, method="auto", **args)["video"]
    assert torch.equal(classical.frames, interpolate(clip, 2, "classical").frames)
    assert ctx.provenance == {}
    with pytest.raises(NodeError, match="needs RIFE weights"):
        FrameInterpolate.execute(ctx, method="rife", **args)

    _save(root / "interpolation", _random_weights(0), "rife_tiny.safetensors")
    rife = FrameInterpolate.execute(ctx, method="auto", **args)["video"]
    expected = interpolate(clip, 2, load_rife(root / "interpolation" / "rife_tiny.safetensors"))
    assert torch.allclose(rife.frames, expected.frames)
    assert ctx.provenance["models"]["fi"]["path"] == "rife_tiny.safetensors"
    # "classical" ignores the weights that are there
    forced = FrameInterpolate.execute(ctx, method="classical", **args)["video"]
    assert torch.equal(forced.frames, classical.frames)


def test_linked_interpolator_is_used(tmp_path):
    root = tmp_path / "models"
    _save(root / "interpolation", _random_weights(0), "a.safetensors")
    ctx = make_ctx(tmp_path, ModelPaths([root]))
    loaded = LoadInterpolator.execute(ctx, model="a.safetensors")["interpolator"]
    assert loaded.info.path.endswith("a.safetensors")
    clip = square_clip(frames=2)
    out = FrameInterpolate.execute(ctx, video=clip, multiplier=4, method="rife", model="",
                                   scene_cut_threshold=0.4, interpolator=loaded)["video"]
    assert out.num_frames == 5 and out.fps == 48.0
    with pytest.raises(NodeError, match="not found"):
        LoadInterpolator.execute(ctx, model="missing.safetensors")


def test_auto_finds_practical_rifes_flownet_pkl_in_the_folder(tmp_path):
    root = tmp_path / "models"
    (root / "interpolation" / "rife46").mkdir(parents=True)
    weights = _random_weights(0)
    torch.save({f"module.{k}": v for k, v in weights.items()}, root / "interpolation" / "rife46" / "flownet.pkl")
    ctx = make_ctx(tmp_path, ModelPaths([root]))
    clip = square_clip(frames=2)
    FrameInterpolate.execute(ctx, video=clip, multiplier=2, method="auto", model="",
                             scene_cut_threshold=0.4)
    assert ctx.provenance["models"]["fi"]["path"] == "flownet.pkl"

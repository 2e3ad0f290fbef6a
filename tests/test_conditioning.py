"""Frame conditioning: known frames land on the right latent frames of the causal grid, the nodes
build the right latents, and stitching gives back original pixels plus only the new frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan

from engine.conditioning import condition_latent, fit_frames, stitch, video_condition
from engine.context import ExecutionContext, InterruptFlag
from engine.errors import NodeError
from engine.models.interfaces import LatentGrid
from engine.noise import init_noise
from engine.registry import NodeRegistry
from engine.sampling import sample
from engine.values import Conditioning, Video
from nodes import conditioning as conditioning_nodes
from nodes.conditioning import ImageToVideo, StitchVideo, VideoCondition

GRID = LatentGrid(channels=4)


class PoolVAE:
    """An exactly predictable causal 'VAE' on the Wan grid: latent 0 = frame 0, latent j = the mean
    of frames 4j-3..4j, spatially 8x8 average-pooled; channels = R, G, B, mean(RGB)."""

    grid = GRID

    def __init__(self) -> None:
        self.encoded: list[torch.Tensor] = []

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        self.encoded.append(frames.clone())
        b, t = frames.shape[:2]
        assert (t - 1) % 4 == 0, "a causal VAE encodes 4n+1 frames"
        x = frames.permute(0, 1, 4, 2, 3).reshape(b * t, 3, *frames.shape[2:4])
        x = F.avg_pool2d(x, 8).reshape(b, t, 3, frames.shape[2] // 8, frames.shape[3] // 8)
        groups = [x[:, :1].mean(1)] + [x[:, 4 * j - 3:4 * j + 1].mean(1)
                                       for j in range(1, (t + 3) // 4)]
        z = torch.stack(groups, dim=2)  # (B, 3, T', h, w)
        return torch.cat([z, z.mean(1, keepdim=True)], dim=1)

    def decode(self, latents: torch.Tensor, progress=None) -> torch.Tensor:
        rgb = latents[:, :3]  # (B, 3, T', h, w)
        frames = torch.cat([rgb[:, :, :1], rgb[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
        frames = frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        return frames.permute(0, 2, 3, 4, 1)  # (B, T, H, W, 3)


def grey_clip(n: int, start: float = 0.0, size: tuple[int, int] = (16, 32)) -> Video:
    """Frame i is flat grey (start + i) / 40: every frame distinguishable by its value."""
    values = (start + torch.arange(n, dtype=torch.float32)) / 40
    return Video(frames=values.view(n, 1, 1, 1).expand(n, size[0], size[1], 3).clone(), fps=12.0)


def ctx(tmp_path: Path) -> ExecutionContext:
    return ExecutionContext("n1", "X", "run", torch.device("cpu"), tmp_path, tmp_path, tmp_path,
                            InterruptFlag(), lambda f, m, p: None)


def frame_values(clip: Video, idx: list[int]) -> float:
    return float(clip.frames[idx].mean())


def test_nodes_register() -> None:
    registry = NodeRegistry()
    assert registry.register_module(conditioning_nodes) == 4  # + WanImageToVideo
    assert registry.get("VideoCondition") is VideoCondition
    assert registry.get("WanImageToVideo") is conditioning_nodes.WanImageToVideo


def test_image_to_video_knows_the_first_frame(tmp_path: Path) -> None:
    image = torch.zeros(1, 20, 40, 3)
    image[..., 0] = 0.8  # red
    out = ImageToVideo.execute(ctx(tmp_path), vae=PoolVAE(), image=image, width=32, height=16,
                               frames=9, seed=5, fps=16.0)["latent"]
    noise = init_noise(32, 16, 9, 1, seed=5, grid=GRID)
    assert out.shape == (1, 4, 3, 2, 4)
    assert out.frame_mask.tolist() == [[1.0, 0.0, 0.0]]
    torch.testing.assert_close(out.known[0, :, 0], torch.tensor([0.8, 0.0, 0.0, 0.8 / 3])
                               .view(4, 1, 1).expand(4, 2, 4))
    assert torch.equal(out.samples[:, :, 0], out.known[:, :, 0])
    assert torch.equal(out.samples[:, :, 1:], noise.samples[:, :, 1:])
    assert out.meta["sigma"] == 1.0 and out.meta["condition"] == {"head_frames": 1, "tail_frames": 0}


def test_extend_forward_places_the_last_frames_at_the_head() -> None:
    clip = grey_clip(13)
    vae = PoolVAE()
    lat = video_condition(vae, clip, None, "extend forward", keep_frames=5, generate_frames=8,
                          width=0, height=0, seed=1)
    assert lat.shape == (1, 4, 4, 2, 4)  # 5 + 8 = 13 frames -> 4 latent frames, 16x32 pixels
    assert lat.frame_mask.tolist() == [[1.0, 1.0, 0.0, 0.0]]
    assert len(vae.encoded) == 1 and vae.encoded[0].shape[1] == 5  # the head alone is encoded
    assert float(lat.known[0, 0, 0].mean()) == pytest.approx(frame_values(clip, [8]))
    assert float(lat.known[0, 0, 1].mean()) == pytest.approx(frame_values(clip, [9, 10, 11, 12]))


def test_extend_backward_places_the_first_frames_at_the_tail() -> None:
    clip = grey_clip(13, start=10)
    vae = PoolVAE()
    lat = video_condition(vae, clip, None, "extend backward", keep_frames=5, generate_frames=8,
                          width=0, height=0, seed=1)
    # tail = keep - 1 = 4 frames; 8 + 1 generated (the video's single first frame is new)
    assert lat.shape[2] == 4 and lat.frame_mask.tolist() == [[0.0, 0.0, 0.0, 1.0]]
    encoded = vae.encoded[0]  # encoded in place: grey, then the tail
    assert encoded.shape[1] == 13 and float(encoded[0, :9].mean()) == 0.5
    assert float(lat.known[0, 0, 3].mean()) == pytest.approx(frame_values(clip, [0, 1, 2, 3]))
    assert lat.meta["condition"] == {"head_frames": 0, "tail_frames": 4}


def test_connect_places_both_ends(tmp_path: Path) -> None:
    a, b = grey_clip(9), grey_clip(9, start=20)
    lat = VideoCondition.execute(ctx(tmp_path), vae=PoolVAE(), video=a, video_b=b, mode="connect",
                                 keep_frames=5, generate_frames=4, width=0, height=0,
                                 seed=0)["latent"]
    # 5 head + 4 new + 4 tail = 13 frames -> latents [A4, A5..8, new, B0..3]
    assert lat.frame_mask.tolist() == [[1.0, 1.0, 0.0, 1.0]]
    assert float(lat.known[0, 0, 0].mean()) == pytest.approx(frame_values(a, [4]))
    assert float(lat.known[0, 0, 1].mean()) == pytest.approx(frame_values(a, [5, 6, 7, 8]))
    assert float(lat.known[0, 0, 3].mean()) == pytest.approx(frame_values(b, [0, 1, 2, 3]))
    assert float(lat.known[0, :, 2].abs().sum()) == 0.0


def test_head_encodes_exactly_as_inside_the_full_video_with_a_real_causal_wan_vae() -> None:
    torch.manual_seed(0)
    wan = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()

    class WanAdapter:
        grid = GRID

        def encode(self, frames: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # (B, T, H, W, 3) in [0, 1] -> (B, 3, T, H, W) in [-1, 1]
                return wan.encode(frames.permute(0, 4, 1, 2, 3) * 2 - 1).latent_dist.mode()

    clip = torch.rand(13, 32, 32, 3, generator=torch.Generator().manual_seed(2))
    lat = condition_latent(init_noise(32, 32, 13, 1, seed=0, grid=GRID), WanAdapter(),
                           head=clip[:5])
    full = WanAdapter().encode(clip[None])  # (1, 4, 4, 4, 4)
    assert torch.equal(lat.known[:, :, :2], full[:, :, :2])


@pytest.mark.parametrize("kwargs, message", [
    ({"head": 4}, "head frames must be 4n\\+1.*1 or 5"),
    ({"tail": 5}, "tail frames must be a multiple of 4.*4 or 8"),
    ({"head": 9, "tail": 4}, "leave nothing to generate"),
])
def test_bad_frame_counts_are_clear_errors(kwargs: dict, message: str) -> None:
    latent = init_noise(16, 16, 13, 1, seed=0, grid=GRID)
    frames = {k: torch.rand(n, 16, 16, 3) for k, n in kwargs.items()}
    with pytest.raises(NodeError, match=message):
        condition_latent(latent, PoolVAE(), **frames)


def test_video_condition_input_errors() -> None:
    clip = grey_clip(9)
    with pytest.raises(NodeError, match="generate_frames must be a multiple of 4.*4 or 8"):
        video_condition(PoolVAE(), clip, None, "extend forward", 5, 6, 0, 0, 0)
    with pytest.raises(NodeError, match="keep_frames must be 4n\\+1.*5 or 9"):
        video_condition(PoolVAE(), clip, None, "extend forward", 6, 8, 0, 0, 0)
    with pytest.raises(NodeError, match="connect needs a second clip"):
        video_condition(PoolVAE(), clip, None, "connect", 5, 8, 0, 0, 0)
    with pytest.raises(NodeError, match="has 9 frames but 13 are kept"):
        video_condition(PoolVAE(), clip, None, "extend forward", 13, 8, 0, 0, 0)
    with pytest.raises(NodeError, match="at least 5"):
        video_condition(PoolVAE(), clip, None, "extend backward", 1, 8, 0, 0, 0)


def test_fit_frames_covers_and_centre_crops() -> None:
    image = torch.zeros(32, 64, 3)  # left half red, right half blue
    image[:, :32, 0] = 1.0
    image[:, 32:, 2] = 1.0
    out = fit_frames(image, 32, 32)  # 64x32 covers 32x32 at scale 1: keep columns 16..47
    assert out.shape == (32, 32, 3)
    assert torch.equal(out[:, :16], image[:, 16:32]) and torch.equal(out[:, 16:], image[:, 32:48])
    small = fit_frames(image, 16, 16)  # scale 0.5: 32x16 -> columns 8..23
    assert float(small[:, :7, 0].min()) > 0.99 and float(small[:, 9:, 2].min()) > 0.99


def test_stitch_keeps_original_pixels_and_only_new_frames() -> None:
    clip = grey_clip(13)
    generated = grey_clip(13, start=100)
    fwd = stitch(generated, clip, None, 5, 0)
    assert fwd.num_frames == 13 + 8
    assert torch.equal(fwd.frames[:13], clip.frames) and torch.equal(fwd.frames[13:],
                                                                     generated.frames[5:])
    back = stitch(generated, None, clip, 0, 4)
    assert back.num_frames == 9 + 13 and torch.equal(back.frames[9:], clip.frames)
    other = Video(frames=torch.rand(9, 32, 64, 3), fps=12.0)  # resized to the generated size
    joined = stitch(generated, clip, other, 5, 4)
    assert joined.num_frames == 13 + 4 + 9 and joined.size == generated.size


def test_extend_forward_end_to_end_through_sampling_decode_and_stitch(tmp_path: Path) -> None:
    clip = grey_clip(9)
    vae = PoolVAE()
    lat = VideoCondition.execute(ctx(tmp_path), vae=vae, video=clip, video_b=None,
                                 mode="extend forward", keep_frames=5, generate_frames=4,
                                 width=0, height=0, seed=3)["latent"]

    class Flat:  # analytic DiT: every generated latent flows to a flat 0.7 grey
        frame_timesteps = True

        def predict_velocity(self, x, timestep, context, context_mask=None, image_latent=None):
            s = (timestep.float() / 1000).clamp_min(1e-3).view(x.shape[0], 1, -1, 1, 1)
            return (x - 0.7) / s

    text = Conditioning(embeds=torch.ones(1, 2, 8), mask=torch.ones(1, 2))
    out = sample(Flat(), lat, text, steps=3, cfg=1.0, shift=3.0, sampler="euler")
    decoded = Video(frames=vae.decode(out.samples)[0], fps=clip.fps)
    assert decoded.num_frames == 9
    # the context frames re-create the clip's last frames (group means on this VAE)
    assert float(decoded.frames[0].mean()) == pytest.approx(frame_values(clip, [4]))
    result = StitchVideo.execute(ctx(tmp_path), generated=decoded, video=clip, video_b=None,
                                 mode="extend forward", keep_frames=5)["video"]
    assert result.num_frames == 9 + 4
    assert torch.equal(result.frames[:9], clip.frames)
    torch.testing.assert_close(result.frames[9:], torch.full((4, 16, 32, 3), 0.7), atol=1e-5,
                               rtol=0)

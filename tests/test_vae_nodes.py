"""LoadDiT, LoadVAE, VAEEncode and VAEDecode run through a real ExecutionContext on tiny models
written to a temporary model folder."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from engine.context import ExecutionContext, InterruptFlag
from engine.errors import Interrupted, NodeError
from engine.models.paths import ModelPaths
from engine.models.safe_load import file_sha256, save_state_dict
from engine.models.wan_dit import diffusers_to_original
from engine.sockets import SocketType
from engine.values import Latent, Video
from nodes.loaders import LoadDiT, LoadVAE
from nodes.vae import VAEDecode, VAEEncode


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1,
                           temperal_downsample=[True, True], scale_factor_spatial=4)
    save_state_dict(vae.state_dict(), root / "vae" / "wan" / "tiny_vae.safetensors")
    dit = WanTransformer3DModel(num_attention_heads=1, attention_head_dim=128, in_channels=16,
                                out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=1)
    original = diffusers_to_original(dit.state_dict())
    save_state_dict({f"model.diffusion_model.{k}": v for k, v in original.items()},
                    root / "unet" / "tiny_dit.safetensors")  # ComfyUI's alias folder, prefixed keys
    return root


class Recorder:
    def __init__(self):
        self.events: list[tuple[float, str]] = []

    def __call__(self, fraction, message, preview):
        self.events.append((fraction, message))


def make_ctx(tmp_path, model_root, node_type="VAEDecode"):
    recorder = Recorder()
    ctx = ExecutionContext(
        node_id="n1", node_type=node_type, run_id="run", device_source=torch.device("cpu"),
        output_dir=tmp_path / "out", temp_dir=tmp_path / "tmp", cache_dir=tmp_path / "cache",
        interrupt=InterruptFlag(), report_progress=recorder,
        model_paths=ModelPaths([model_root]))
    return ctx, recorder


def _video(frames: int, size: int, fps: float = 24.0) -> Video:
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(1, 3, frames, 4, 4, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(frames, size, size), mode="trilinear")
    return Video(frames=fine[0].permute(1, 2, 3, 0).contiguous(), fps=fps)  # (T, H, W, 3)


@pytest.fixture(scope="module")
def vae(model_root, tmp_path_factory):
    ctx, _ = make_ctx(tmp_path_factory.mktemp("ctx"), model_root, "LoadVAE")
    return LoadVAE.execute(ctx, vae="wan/tiny_vae.safetensors")["vae"]


def test_nodes_are_registered_with_their_sockets(registry):
    for cls in (LoadDiT, LoadVAE, VAEEncode, VAEDecode):
        assert registry.get(cls.spec.name) is cls
    assert LoadDiT.spec.input("model").file_kind == "diffusion_models"
    assert LoadDiT.spec.outputs[0].type == SocketType.DIT
    assert LoadVAE.spec.input("vae").file_kind == "vae"
    assert LoadVAE.spec.outputs[0].type == SocketType.VAE
    assert VAEDecode.spec.outputs[0].type == SocketType.VIDEO
    assert VAEEncode.spec.outputs[0].type == SocketType.LATENT
    assert LoadDiT.spec.description and VAEDecode.spec.description


def test_load_vae_records_provenance(tmp_path, model_root):
    ctx, recorder = make_ctx(tmp_path, model_root, "LoadVAE")
    vae = LoadVAE.execute(ctx, vae="wan/tiny_vae.safetensors", dtype="auto")["vae"]
    path = model_root / "vae" / "wan" / "tiny_vae.safetensors"
    assert vae.info.family == "wan-vae-2.1" and vae.grid.channels == 16
    assert ctx.provenance["models"]["n1"] == {
        "path": "tiny_vae.safetensors", "family": "wan-vae-2.1", "layout": "diffusers",
        "sha256": file_sha256(path)}
    assert recorder.events[-1][0] == 1.0
    with pytest.raises(NodeError) as err:
        LoadVAE.execute(ctx, vae="wan/missing.safetensors")
    assert err.value.input == "vae" and str(model_root / "vae") in str(err.value)


def test_load_dit_from_comfyui_alias_folder(tmp_path, model_root):
    ctx, _ = make_ctx(tmp_path, model_root, "LoadDiT")
    dit = LoadDiT.execute(ctx, model="tiny_dit.safetensors", dtype="bf16")["model"]
    assert dit.info.layout == "comfyui" and dit.info.family == "wan2.1-t2v"
    assert dit.policy.compute == torch.bfloat16
    assert ctx.provenance["models"]["n1"]["family"] == "wan2.1-t2v"
    out = dit.predict_velocity(torch.randn(1, 16, 1, 4, 4), torch.tensor([500.0]), torch.randn(1, 3, 32))
    assert out.shape == (1, 16, 1, 4, 4) and torch.isfinite(out).all()


def test_encode_then_decode_keeps_fps_and_frame_count(tmp_path, model_root, vae):
    ctx, recorder = make_ctx(tmp_path, model_root, "VAEEncode")
    video = _video(9, 32, fps=24.0)
    latent = VAEEncode.execute(ctx, video=video, vae=vae)["latent"]
    assert isinstance(latent, Latent) and latent.shape == (1, 16, 3, 8, 8)
    assert latent.fps == 24.0 and latent.meta["frames"] == 9 and latent.meta["width"] == 32
    assert "sigma" not in latent.meta  # a clean latent, not noise
    torch.testing.assert_close(latent.samples, vae.encode(video.frames[None]))

    ctx, recorder = make_ctx(tmp_path, model_root, "VAEDecode")
    out = VAEDecode.execute(ctx, latent=latent, vae=vae, tile_size=0, tile_overlap=64)["video"]
    assert isinstance(out, Video) and out.frames.shape == (9, 32, 32, 3) and out.fps == 24.0
    torch.testing.assert_close(out.frames, vae.decode(latent.samples)[0])
    fractions = [f for f, _ in recorder.events]
    assert len(fractions) == 3 and fractions == sorted(fractions) and fractions[-1] == 1.0


def test_decode_batch_plays_clips_back_to_back_and_tiles(tmp_path, model_root, vae):
    ctx, recorder = make_ctx(tmp_path, model_root)
    torch.manual_seed(4)
    samples = torch.randn(2, 16, 2, 8, 8)
    out = VAEDecode.execute(ctx, latent=Latent(samples, fps=8.0), vae=vae, tile_size=0,
                            tile_overlap=64)["video"]
    assert out.frames.shape == (10, 32, 32, 3) and out.fps == 8.0
    torch.testing.assert_close(out.frames[5:], vae.decode(samples[1:])[0])
    assert [round(f, 2) for f, _ in recorder.events] == [0.25, 0.5, 0.75, 1.0]
    tiled = VAEDecode.execute(ctx, latent=Latent(samples[:1]), vae=vae, tile_size=24,
                              tile_overlap=8)["video"]
    assert tiled.frames.shape == (5, 32, 32, 3)


def test_interrupt_stops_decoding(tmp_path, model_root, vae):
    ctx, recorder = make_ctx(tmp_path, model_root)
    ctx.interrupt.set()
    with pytest.raises(Interrupted):
        VAEDecode.execute(ctx, latent=Latent(torch.randn(1, 16, 3, 4, 4)), vae=vae, tile_size=0,
                          tile_overlap=64)
    assert recorder.events == []


def test_bad_inputs_name_the_input(tmp_path, model_root, vae):
    ctx, _ = make_ctx(tmp_path, model_root, "VAEEncode")
    with pytest.raises(NodeError, match="4n\\+1") as err:
        VAEEncode.execute(ctx, video=_video(6, 32), vae=vae)
    assert err.value.input == "video"
    ctx, _ = make_ctx(tmp_path, model_root)
    with pytest.raises(NodeError, match="48 channels") as err:
        VAEDecode.execute(ctx, latent=Latent(torch.zeros(1, 48, 2, 4, 4)), vae=vae, tile_size=0,
                          tile_overlap=64)
    assert err.value.input == "vae"

"""Wan VAE loading checked against diffusers (the oracle): tiny random 2.1 and 2.2 VAEs written in
each key layout load through Reelgraph and encode/decode exactly as the reference does; chunked
and tiled decoding stay faithful."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from engine.errors import NodeError
from engine.models.detect import WAN22_LATENTS_MEAN, detect_wan_vae
from engine.models.interfaces import LatentGrid, VideoAutoencoder
from engine.models.safe_load import ModelLoadError, save_state_dict
from engine.models.wan_dit import diffusers_to_original as dit_to_original
from engine.models.wan_vae import diffusers_to_original, load_vae, original_to_diffusers

# 3 levels -> 4x spatial; both temporal downsamples -> 4x temporal (Wan's 4n+1 frame rule)
VAE21 = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1,
             temperal_downsample=[True, True], scale_factor_spatial=4)
# Wan 2.2 style: residual blocks, 2x2 patchified input (12 channels), wider decoder, z_dim 48
VAE22 = dict(base_dim=8, decoder_base_dim=12, z_dim=48, dim_mult=[1, 2, 2], num_res_blocks=1,
             temperal_downsample=[True, True], is_residual=True, in_channels=12, out_channels=12,
             patch_size=2, scale_factor_spatial=8)


def _reference(config: dict) -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(**config).eval()


def _clip(frames: int, size: int, seed: int = 1) -> torch.Tensor:
    """A smooth random clip (1, T, H, W, 3) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, frames, 4, 4, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(frames, size, size), mode="trilinear")
    return fine.permute(0, 2, 3, 4, 1).contiguous()


def _ref_encode_decode(ref, clip):
    with torch.no_grad():
        z = ref.encode(clip.permute(0, 4, 1, 2, 3) * 2 - 1).latent_dist.mode()  # raw latents
        frames = (ref.decode(z).sample.permute(0, 2, 3, 4, 1) + 1) / 2
    return z, frames


@pytest.mark.parametrize("config,family,grid", [
    (VAE21, "wan-vae-2.1", LatentGrid(16, 4, 4, 2)),
    (VAE22, "wan-vae-2.2", LatentGrid(48, 4, 8, 2)),
])
def test_layouts_encode_and_decode_like_diffusers(tmp_path, config, family, grid):
    ref = _reference(config)
    state = ref.state_dict()
    original = diffusers_to_original(state, dict(ref.config))
    files = {
        "original": save_state_dict(original, tmp_path / "vae_original.safetensors"),
        "comfyui": save_state_dict({f"first_stage_model.{k}": v for k, v in original.items()},
                                   tmp_path / "vae_comfy.safetensors"),
        "diffusers": save_state_dict(state, tmp_path / "vae_diffusers.safetensors"),
    }
    torch.save(original, tmp_path / "vae_original.pth")  # Wan ships its VAEs as .pth
    files["pth"] = tmp_path / "vae_original.pth"
    clip = _clip(5, 32)
    raw, frames = _ref_encode_decode(ref, clip)
    for layout, path in files.items():
        vae = load_vae(path, device="cpu")
        assert isinstance(vae, VideoAutoencoder)
        assert vae.info.family == family and vae.grid == grid
        assert vae.info.layout == {"pth": "original"}.get(layout, layout)
        latents = vae.encode(clip)
        # normalised with the published statistics of that VAE generation
        torch.testing.assert_close(latents, (raw - vae.latents_mean) / vae.latents_std,
                                   atol=1e-5, rtol=1e-5)
        decoded = vae.decode(latents)
        assert decoded.shape == (1, 5, 32, 32, 3) and decoded.dtype == torch.float32
        torch.testing.assert_close(decoded, frames, atol=1e-5, rtol=1e-5)
    assert vae.latents_mean.flatten()[:2].tolist() == pytest.approx(
        [-0.7571, -0.7089] if family == "wan-vae-2.1" else WAN22_LATENTS_MEAN[:2])


def test_round_trip_shapes_and_chunked_progress(tmp_path):
    ref = _reference(VAE21)
    vae = load_vae(save_state_dict(ref.state_dict(), tmp_path / "v.safetensors"), device="cpu")
    clip = _clip(9, 32)
    latents = vae.encode(clip)
    assert latents.shape == (1, 16, 3, 8, 8)  # frames 4n+1 -> n+1 latent frames
    calls = []
    decoded = vae.decode(latents, progress=lambda f, m: calls.append((f, m)))
    assert decoded.shape == (1, 9, 32, 32, 3)
    assert 0.0 <= float(decoded.min()) and float(decoded.max()) <= 1.0
    assert [round(f, 3) for f, _ in calls] == [0.333, 0.667, 1.0]  # one report per latent frame
    assert calls[-1][1] == "decoding latent frame 3/3"
    _, expected = _ref_encode_decode(ref, clip)
    torch.testing.assert_close(decoded, expected, atol=1e-5, rtol=1e-5)


def test_interrupted_decode_leaves_the_model_clean(tmp_path):
    ref = _reference(VAE21)
    vae = load_vae(save_state_dict(ref.state_dict(), tmp_path / "v.safetensors"), device="cpu")
    latents = vae.encode(_clip(9, 16))
    full = vae.decode(latents)

    def stop(fraction, message):
        if fraction > 0.5:
            raise KeyboardInterrupt("stop")  # stands in for engine.errors.Interrupted

    with pytest.raises(KeyboardInterrupt):
        vae.decode(latents, progress=stop)
    with pytest.raises(KeyboardInterrupt):
        vae.decode(latents, progress=stop, tile=8, tile_overlap=4)
    # no stale causal cache, tiling switch or progress hook is left behind
    torch.testing.assert_close(vae.decode(latents), full)
    assert not vae.module.use_tiling


def test_tiled_decode_matches_diffusers_tiling_and_approximates_whole_frames(tmp_path):
    ref = _reference(VAE21)
    with torch.no_grad():  # the mid-block attention is global; without it, tiles see what frames see
        for block in (ref.encoder.mid_block, ref.decoder.mid_block):
            block.attentions[0].proj.weight.zero_()
            block.attentions[0].proj.bias.zero_()
    vae = load_vae(save_state_dict(ref.state_dict(), tmp_path / "v.safetensors"), device="cpu")
    latents = vae.encode(_clip(5, 64))  # (1, 16, 2, 16, 16)
    whole = vae.decode(latents)
    calls = []
    tiled = vae.decode(latents, progress=lambda f, m: calls.append(f), tile=48, tile_overlap=16)
    assert tiled.shape == whole.shape == (1, 5, 64, 64, 3)
    assert len(calls) == 2 * 4 and calls[-1] == 1.0  # 2 latent frames x 2x2 tiles
    ref.enable_tiling(48, 48, 32, 32)
    with torch.no_grad():
        oracle = ref.tiled_decode(latents * vae.latents_std + vae.latents_mean).sample
    torch.testing.assert_close(tiled, (oracle.permute(0, 2, 3, 4, 1) + 1) / 2, atol=1e-5, rtol=1e-5)
    # tiles see zero padding at their borders, so tiling approximates (measured mean 0.02)
    error = (tiled - whole).abs()
    assert float(error.mean()) < 0.05 and float((error < 0.05).float().mean()) > 0.8
    untouched = vae.decode(latents, tile=64, tile_overlap=16)  # one tile covers the frame
    torch.testing.assert_close(untouched, whole)
    with pytest.raises(NodeError, match="multiples of 4"):
        vae.decode(latents, tile=50, tile_overlap=16)


def test_bad_inputs_are_named(tmp_path):
    ref = _reference(VAE21)
    vae = load_vae(save_state_dict(ref.state_dict(), tmp_path / "v.safetensors"), device="cpu")
    with pytest.raises(NodeError, match=r"4n\+1 frames, got 6; trim to 5 or extend to 9"):
        vae.encode(_clip(6, 16))
    with pytest.raises(NodeError, match="multiple of 4"):
        vae.encode(_clip(5, 18))
    with pytest.raises(NodeError, match="different model family"):
        vae.decode(torch.zeros(1, 48, 2, 4, 4))

    torch.manual_seed(0)
    dit = WanTransformer3DModel(num_attention_heads=1, attention_head_dim=128, in_channels=16,
                                out_channels=16, text_dim=8, freq_dim=8, ffn_dim=16, num_layers=1)
    dit_file = save_state_dict(dit_to_original(dit.state_dict()), tmp_path / "dit.safetensors")
    with pytest.raises(ModelLoadError) as err:
        load_vae(dit_file, device="cpu")
    text = str(err.value)
    assert str(dit_file) in text and "expected a Wan VAE" in text and "LoadDiT" in text


def test_custom_latent_statistics_from_metadata(tmp_path):
    config = dict(VAE21, z_dim=4)
    ref = _reference(config)
    stats = {"latents_mean": [0.5, -0.5, 0.0, 1.0], "latents_std": [2.0, 1.0, 0.5, 1.0]}
    path = save_state_dict(ref.state_dict(), tmp_path / "tiny.safetensors",
                           metadata={"config": json.dumps(stats)})
    vae = load_vae(path, device="cpu")
    assert vae.grid.channels == 4
    assert vae.latents_std.flatten().tolist() == stats["latents_std"]
    raw, _ = _ref_encode_decode(ref, _clip(1, 16))
    torch.testing.assert_close(vae.encode(_clip(1, 16)), (raw - vae.latents_mean) / vae.latents_std)


def test_full_size_tables_agree_with_diffusers():
    """Wan 2.1's published VAE: our original keys map back through diffusers' own converter, and
    the configs of the published 2.1 and 2.2 VAEs are recovered from shapes alone."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    with init_empty_weights():
        v21 = AutoencoderKLWan()
        v22 = AutoencoderKLWan(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True,
                               in_channels=12, out_channels=12, patch_size=2,
                               scale_factor_spatial=16)
    names = list(v21.state_dict())
    tagged = {k: torch.tensor(i) for i, k in enumerate(names)}  # each tensor knows its name
    back = convert_wan_vae_to_diffusers(diffusers_to_original(tagged, dict(v21.config)))
    assert {k: int(v) for k, v in back.items()} == {k: i for i, k in enumerate(names)}

    for model in (v21, v22):
        shapes = {k: tuple(t.shape) for k, t in model.state_dict().items()}
        original = diffusers_to_original(shapes, dict(model.config))
        assert set(original_to_diffusers(original, dict(model.config))) == set(shapes)
        detected = detect_wan_vae(original)
        for key in ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample",
                    "is_residual", "in_channels", "out_channels", "patch_size",
                    "scale_factor_spatial", "scale_factor_temporal"):
            assert detected.config[key] == model.config[key], key
    # Wan 2.2's nested block names (as in Wan2.2_VAE.pth)
    assert "encoder.downsamples.0.downsamples.2.resample.1.weight" in original
    assert "decoder.upsamples.0.upsamples.3.time_conv.weight" in original
    assert "decoder.upsamples.2.upsamples.0.shortcut.weight" in original
    assert detected.config["decoder_base_dim"] == 256

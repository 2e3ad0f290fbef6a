"""Wan DiT loading checked against diffusers (the oracle): tiny random models written in every
supported key layout must load through Reelgraph and predict exactly what the reference predicts."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from engine.devices import pick_device
from engine.dtypes import DTypePolicy, dtype_policy
from engine.errors import NodeError
from engine.models.detect import detect_wan_dit, guess_arch
from engine.models.interfaces import DiffusionModel
from engine.models.safe_load import ModelLoadError, save_state_dict
from engine.models.wan_dit import diffusers_to_original, load_dit, original_to_diffusers

TINY = dict(patch_size=(1, 2, 2), text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2)
# width 128 = one Wan-sized head: the head count is inferred without any config
T2V = dict(TINY, num_attention_heads=1, attention_head_dim=128, in_channels=16, out_channels=16)
# narrower models: their head count travels in the safetensors metadata
TI2V = dict(TINY, num_attention_heads=2, attention_head_dim=32, in_channels=48, out_channels=48)
I2V22 = dict(TINY, num_attention_heads=2, attention_head_dim=32, in_channels=36, out_channels=16)
I2V21 = dict(I2V22, image_dim=24, added_kv_proj_dim=64)


def _reference(config: dict) -> WanTransformer3DModel:
    torch.manual_seed(0)
    model = WanTransformer3DModel(**config).eval()
    with torch.no_grad():  # the zero-initialised-by-design tensors get values so parity means something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _write_layouts(model: WanTransformer3DModel, folder, heads_in_metadata: bool) -> dict:
    """The model's weights in each supported layout: {layout: path}."""
    state = model.state_dict()
    original = diffusers_to_original(state)
    meta = {"config": json.dumps({"num_attention_heads": model.config.num_attention_heads})} \
        if heads_in_metadata else None
    paths = {
        "original": save_state_dict(original, folder / "wan_original.safetensors", meta),
        "comfyui": save_state_dict({f"model.diffusion_model.{k}": v for k, v in original.items()},
                                   folder / "wan_comfy.safetensors", meta),
        "diffusers": save_state_dict(state, folder / "wan_diffusers.safetensors", meta),
    }
    # a diffusers folder: weights + config.json (no metadata needed there)
    save_state_dict(state, folder / "transformer" / "diffusion_pytorch_model.safetensors")
    (folder / "transformer" / "config.json").write_text(json.dumps(dict(model.config), default=list))
    paths["folder"] = folder / "transformer"
    return paths


def _ref_call(model, x, t, ctx, image=None):
    with torch.no_grad():
        return model(x, t, ctx, encoder_hidden_states_image=image, return_dict=False)[0]


@pytest.mark.parametrize("name,config,family,variant", [
    ("t2v", T2V, "wan2.1-t2v", "t2v"),
    ("ti2v", TI2V, "wan2.2-ti2v", "ti2v"),
])
def test_layouts_load_to_identical_predictions(tmp_path, name, config, family, variant):
    ref = _reference(config)
    paths = _write_layouts(ref, tmp_path, heads_in_metadata=name != "t2v")
    torch.manual_seed(1)
    x = torch.randn(2, config["in_channels"], 3, 4, 6)  # (B, C, T, H, W)
    ctx = torch.randn(2, 7, 32)
    t = torch.tensor([900.0, 250.0])
    expected = _ref_call(ref, x, t, ctx)
    for layout, path in paths.items():
        dit = load_dit(path, device="cpu")
        assert isinstance(dit, DiffusionModel)
        assert dit.info.family == family and dit.variant == variant
        assert dit.info.layout == ("diffusers" if layout == "folder" else layout)
        assert (dit.in_channels, dit.out_channels, dit.text_dim) == (config["in_channels"],
                                                                      config["out_channels"], 32)
        assert dit.frame_timesteps == (variant == "ti2v")
        assert len(dit.info.sha256) == 64
        out = dit.predict_velocity(x, t, ctx)
        assert out.dtype == torch.float32 and out.device.type == "cpu"
        assert out.shape == (2, config["out_channels"], 3, 4, 6)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5, msg=f"layout {layout}")


def test_per_frame_timesteps_expand_to_tokens(tmp_path):
    ref = _reference(TI2V)
    dit = load_dit(_write_layouts(ref, tmp_path, True)["original"], device="cpu")
    torch.manual_seed(2)
    x, ctx = torch.randn(1, 48, 3, 4, 4), torch.randn(1, 5, 32)
    per_frame = torch.tensor([[0.0, 500.0, 800.0]])  # first frame known (t = 0), as in TI2V
    tokens = per_frame[:, :, None].expand(1, 3, (4 // 2) * (4 // 2)).reshape(1, -1)  # (B, T*h*w)
    expected = _ref_call(ref, x, tokens, ctx)
    torch.testing.assert_close(dit.predict_velocity(x, per_frame, ctx), expected, atol=1e-5, rtol=1e-5)
    # equal per-frame timesteps are the same as one timestep for the clip
    same = dit.predict_velocity(x, torch.full((1, 3), 500.0), ctx)
    torch.testing.assert_close(same, dit.predict_velocity(x, torch.tensor([500.0]), ctx),
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(same, dit.predict_velocity(x, per_frame, ctx), atol=1e-3)
    with pytest.raises(NodeError, match=r"\(B, T\)"):
        dit.predict_velocity(x, torch.zeros(1, 2), ctx)


def test_sample_prediction_becomes_the_flow_velocity(tmp_path):
    """A model trained to predict the clean latent (prediction_type "sample" in its metadata, as
    reelgraph-tiny) hands samplers the velocity (x_t - x0) / sigma; known frames (t = 0) get 0."""
    ref = _reference(TI2V)
    path = save_state_dict(ref.state_dict(), tmp_path / "x0.safetensors", {"config": json.dumps(
        {"num_attention_heads": 2, "prediction_type": "sample"})})
    dit = load_dit(path, device="cpu")
    assert dit.prediction_type == "sample" and dit.info.config["prediction_type"] == "sample"
    torch.manual_seed(4)
    x, ctx = torch.randn(1, 48, 3, 4, 4), torch.randn(1, 5, 32)
    per_frame = torch.tensor([[0.0, 500.0, 800.0]])
    tokens = per_frame[:, :, None].expand(1, 3, 4).reshape(1, -1)
    x0 = _ref_call(ref, x, tokens, ctx)
    v = dit.predict_velocity(x, per_frame, ctx)
    assert torch.equal(v[:, :, 0], torch.zeros_like(v[:, :, 0]))  # the known frame stays put
    sigma = torch.tensor([0.5, 0.8]).view(1, 1, 2, 1, 1)
    torch.testing.assert_close(v[:, :, 1:], (x[:, :, 1:] - x0[:, :, 1:]) / sigma, atol=1e-5, rtol=1e-5)
    # one Euler step from sigma to 0 with that velocity lands exactly on the predicted x0
    v_clip = dit.predict_velocity(x, torch.tensor([700.0]), ctx)
    x0_clip = _ref_call(ref, x, torch.tensor([700.0]), ctx)
    torch.testing.assert_close(x - 0.7 * v_clip, x0_clip, atol=1e-5, rtol=1e-5)
    # Wan releases carry no prediction_type: they predict the velocity itself
    plain = load_dit(save_state_dict(ref.state_dict(), tmp_path / "v.safetensors", {"config": json.dumps(
        {"num_attention_heads": 2})}), device="cpu")
    assert plain.prediction_type == "flow_prediction"
    torch.testing.assert_close(plain.predict_velocity(x, torch.tensor([700.0]), ctx), x0_clip,
                               atol=1e-5, rtol=1e-5)
    bad = save_state_dict(ref.state_dict(), tmp_path / "bad.safetensors", {"config": json.dumps(
        {"num_attention_heads": 2, "prediction_type": "epsilon"})})
    with pytest.raises(ModelLoadError, match=r"bad\.safetensors.*prediction_type 'epsilon'"):
        load_dit(bad, device="cpu")


def test_context_mask_zeroes_padding(tmp_path):
    ref = _reference(T2V)
    dit = load_dit(_write_layouts(ref, tmp_path, False)["diffusers"], device="cpu")
    torch.manual_seed(3)
    x, ctx, t = torch.randn(1, 16, 1, 4, 4), torch.randn(1, 6, 32), torch.tensor([400.0])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    zeroed = ctx.clone()
    zeroed[:, 4:] = 0  # what Wan's pipeline feeds for padding
    masked = dit.predict_velocity(x, t, ctx, context_mask=mask)
    torch.testing.assert_close(masked, _ref_call(ref, x, t, zeroed), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(masked, dit.predict_velocity(x, t, ctx), atol=1e-4)


def test_i2v_concatenates_image_latent(tmp_path):
    ref = _reference(I2V22)
    paths = _write_layouts(ref, tmp_path, True)
    torch.manual_seed(4)
    x, image = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 20, 2, 4, 4)  # 4 mask + 16 latent
    ctx, t = torch.randn(1, 5, 32), torch.tensor([700.0])
    expected = _ref_call(ref, torch.cat([x, image], dim=1), t, ctx)
    for layout in ("original", "comfyui"):
        dit = load_dit(paths[layout], device="cpu")
        assert (dit.info.family, dit.variant, dit.in_channels, dit.out_channels) == ("wan2.2-i2v", "i2v", 36, 16)
        torch.testing.assert_close(dit.predict_velocity(x, t, ctx, image_latent=image), expected,
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(NodeError, match="image_latent with 20 more channels"):
        dit.predict_velocity(x, t, ctx)


def test_wan21_i2v_with_clip_image_tokens(tmp_path):
    ref = _reference(I2V21)
    dit = load_dit(_write_layouts(ref, tmp_path, True)["original"], device="cpu")
    assert dit.info.family == "wan2.1-i2v" and dit.needs_image_embeds
    torch.manual_seed(5)
    x, image = torch.randn(1, 16, 1, 4, 4), torch.randn(1, 20, 1, 4, 4)
    ctx, clip = torch.randn(1, 9, 32), torch.randn(1, 3, 24)  # (B, L, D), CLIP tokens (B, N, 24)
    padded = torch.nn.functional.pad(ctx, (0, 0, 0, 512 - 9))  # Wan's 512-token text context
    expected = _ref_call(ref, torch.cat([x, image], 1), torch.tensor([300.0]), padded, clip)
    got = dit.predict_velocity(x, torch.tensor([300.0]), ctx, image_latent=image, image_embeds=clip)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(NodeError, match="image_embeds"):
        dit.predict_velocity(x, torch.tensor([300.0]), ctx, image_latent=image)


def test_conversion_tables_agree_with_diffusers_single_file_converter():
    """Our original keys for full-size Wan configs map back through diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    for config in ({"num_layers": 2}, {"num_layers": 2, "in_channels": 36, "image_dim": 1280,
                                        "added_kv_proj_dim": 5120}):
        with init_empty_weights():
            model = WanTransformer3DModel(**config)
        names = list(model.state_dict())
        tagged = {k: torch.tensor(i) for i, k in enumerate(names)}  # each tensor knows its name
        back = convert_wan_transformer_to_diffusers(diffusers_to_original(tagged))
        assert {k: int(v) for k, v in back.items()} == {k: i for i, k in enumerate(names)}
        shapes = {k: torch.empty(v.shape, device="meta") for k, v in model.state_dict().items()}
        original = diffusers_to_original(shapes)
        assert set(original_to_diffusers(original)) == set(shapes)
        detected = detect_wan_dit(original)  # 14B-sized: 40 heads of 128 inferred from the width
        for key, value in detected.config.items():
            expected = model.config[key]
            assert (tuple(value) if key == "patch_size" else value) == \
                (tuple(expected) if key == "patch_size" else expected), key


def test_wrong_architecture_and_damaged_files(tmp_path):
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1,
                           temperal_downsample=[False])
    vae_file = save_state_dict(vae.state_dict(), tmp_path / "wan_vae.safetensors")
    assert guess_arch({k: tuple(v.shape) for k, v in vae.state_dict().items()}) == "wan_vae"
    with pytest.raises(ModelLoadError) as err:
        load_dit(vae_file, device="cpu")
    text = str(err.value)
    assert str(vae_file) in text and "expected a Wan DiT" in text and "head.modulation" in text
    assert "LoadVAE" in text

    ref = _reference(T2V)
    good = _write_layouts(ref, tmp_path, False)["original"]
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated") as err:
        load_dit(cut, device="cpu")
    assert str(cut) in str(err.value)

    state = diffusers_to_original(ref.state_dict())
    del state["blocks.1.ffn.2.weight"]
    partial = save_state_dict(state, tmp_path / "partial.safetensors")
    with pytest.raises(ModelLoadError, match="1 missing") as err:
        load_dit(partial, device="cpu")
    assert "blocks.1.ffn.net.2.weight" in str(err.value) and str(partial) in str(err.value)

    narrow = save_state_dict(diffusers_to_original(_reference(TI2V).state_dict()),
                             tmp_path / "narrow.safetensors")  # width 64, no head count stored
    with pytest.raises(ModelLoadError, match="num_attention_heads"):
        load_dit(narrow, device="cpu")
    assert load_dit(narrow, device="cpu", config={"num_attention_heads": 2}).info.family == "wan2.2-ti2v"
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_dit(tmp_path / "absent.safetensors", device="cpu")


def test_dtype_policies(tmp_path):
    ref = _reference(T2V)
    path = _write_layouts(ref, tmp_path, False)["original"]
    torch.manual_seed(6)
    x, ctx, t = torch.randn(1, 16, 1, 4, 4), torch.randn(1, 3, 32), torch.tensor([600.0])
    exact = _ref_call(ref, x, t, ctx)

    half = load_dit(path, device="cpu", dtype="bf16")
    params = dict(half.module.named_parameters())
    assert params["blocks.0.attn1.to_q.weight"].dtype == torch.bfloat16
    # diffusers' precision-critical modules stay fp32
    assert params["scale_shift_table"].dtype == torch.float32
    assert params["condition_embedder.time_embedder.linear_1.weight"].dtype == torch.float32
    assert params["blocks.0.norm2.weight"].dtype == torch.float32
    out = half.predict_velocity(x, t, ctx)
    assert out.dtype == torch.float32
    assert (out - exact).abs().max() < 0.1 * exact.abs().max()

    fp8 = load_dit(path, device="cpu", dtype="fp8")
    assert fp8.policy == DTypePolicy(torch.float32, torch.float8_e4m3fn)
    assert dict(fp8.module.named_parameters())["blocks.0.ffn.net.0.proj.weight"].dtype == torch.float8_e4m3fn
    out = fp8.predict_velocity(x, t, ctx)
    assert torch.isfinite(out).all() and (out - exact).abs().max() < 0.2 * exact.abs().max()

    assert dtype_policy("auto", "cpu") == DTypePolicy(torch.float32)
    assert dtype_policy("auto", "cpu", kind="vae") == DTypePolicy(torch.float32)
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device() == torch.device("cpu") or pick_device().type == "mps"
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(ValueError, match="unknown dtype"):
        dtype_policy("int4", "cpu")


class _RecordingModule(torch.nn.Linear):
    """Records device moves instead of making them (no GPU is needed to check the policy)."""

    def __init__(self):
        super().__init__(2, 2)
        self.moves: list[str] = []

    def to(self, device, *args, **kwargs):
        self.moves.append(str(device))
        return self


def test_on_device_moves_for_the_call_and_back():
    from engine.devices import on_device

    module = _RecordingModule()
    with on_device(module, "cpu"):  # already there: nothing moves
        pass
    assert module.moves == []
    with on_device(module, "cuda:0"):
        assert module.moves == ["cuda:0"]
    assert module.moves == ["cuda:0", "cpu"]  # offloaded back afterwards
    with on_device(module, "cuda:0", offload=False):
        pass
    assert module.moves[-1] == "cuda:0"

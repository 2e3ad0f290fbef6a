"""Quantised Wan DiT files load and predict what their dequantised weights predict.

Every file is written by the test (tests/tiny_quantized.py): ComfyUI `*_fp8_scaled` files, plain
fp8 e4m3fn / e5m2, fp16 / bf16, and city96-style GGUF files (Q8_0, Q6_K, Q5_K, Q4_K, Q4_0, F16,
BF16). The oracle for each is a plain fp32 file holding the weights the quantised file stands for
(float8 * scale, or `gguf.quants.dequantize`, llama.cpp's numpy reference), loaded the ordinary way.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.dtypes import DTypePolicy
from engine.models.gguf_weights import GGUFLinear
from engine.models.quantized import ScaledFP8Linear
from engine.models.safe_load import ModelLoadError, read_shapes
from engine.models.wan_dit import load_dit, original_to_diffusers
from tests.tiny_models import tiny_dit, write_dit
from tests.tiny_quantized import (GGUF_TINY, PREFIX, Q4_K_M_MIX, fp8_reference_state,
                                  gguf_reference_state, write_fp8_dit, write_gguf_dit,
                                  write_reference_dit)

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
TINY_HEADS = 2  # tests/tiny_models.py DIT_TINY


def _inputs(channels: int = 16, text_dim: int = 32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, 2, 4, 4, generator=g)
    return x, torch.tensor([700.0]), torch.randn(1, 5, text_dim, generator=g)


def _predict(dit) -> torch.Tensor:
    return dit.predict_velocity(*_inputs(dit.in_channels, dit.text_dim))


def _block_linears(dit) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in dit.module.named_modules()
            if isinstance(m, torch.nn.Linear) and n.startswith("blocks.")]


# ---- ComfyUI scaled fp8 and plain fp8 ---------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    return tiny_dit("t2v", seed=3)


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    """{name: path}: the original fp32 file, fp8 files of each kind and their fp32 references."""
    d = tmp_path_factory.mktemp("fp8")
    out = {"original": write_dit(d / "original.safetensors", model=model)}
    kinds = {"scaled": dict(fp8=E4M3), "e4m3fn": dict(fp8=E4M3, scaled=False),
             "e5m2": dict(fp8=E5M2, scaled=False),
             "scaled_bare": dict(fp8=E4M3, bare_marker=True, scale_input=True)}
    for name, kwargs in kinds.items():
        out[name] = write_fp8_dit(d / f"wan_{name}.safetensors", model=model, **kwargs)
        out[f"{name}_ref"] = write_reference_dit(d / f"{name}_ref.safetensors",
                                                 fp8_reference_state(out[name]), TINY_HEADS)
    return out


def test_scaled_file_is_what_comfyui_writes(files):
    raw = load_file(str(files["scaled"]))
    q = f"{PREFIX}blocks.0.self_attn.q"
    assert raw[f"{q}.weight"].dtype == E4M3 and raw[f"{q}.scale_weight"].shape == ()
    assert f"{PREFIX}scaled_fp8" in raw and raw[f"{PREFIX}head.modulation"].dtype == torch.float32
    assert raw[f"{q}.weight"].float().abs().max() == 448.0  # absmax / 448 per Linear


@pytest.mark.parametrize("kind", ["scaled", "scaled_bare", "e4m3fn", "e5m2"])
def test_fp8_file_dequantised_at_fp32_matches_its_reference(files, kind):
    dit = load_dit(files[kind], device="cpu", dtype="fp32")
    ref = load_dit(files[f"{kind}_ref"], device="cpu", dtype="fp32")
    expected_format = "fp8_scaled" if kind.startswith("scaled") else f"fp8_{kind}"
    assert dit.info.config["weight_format"] == expected_format
    ours, theirs = dit.module.state_dict(), ref.module.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key].dtype == torch.float32 and torch.equal(ours[key], value), key
    torch.testing.assert_close(_predict(dit), _predict(ref), rtol=0, atol=1e-6)


def test_scaled_fp8_is_within_fp8_error_of_the_original(files, model):
    dit = load_dit(files["scaled"], device="cpu", dtype="fp32")
    original = load_dit(files["original"], device="cpu", dtype="fp32")
    ours, theirs = dit.module.state_dict(), original.module.state_dict()
    for key, value in theirs.items():
        # e4m3: 3 mantissa bits, so at most 1/16 relative rounding, relative to each tensor's absmax
        bound = value.abs().max() / 16 + 1e-12
        assert (ours[key] - value).abs().max() <= bound, key
    a, b = _predict(dit), _predict(original)
    assert (a - b).abs().max() <= 0.1 * b.abs().max()


@pytest.mark.parametrize("kind, stored", [("scaled", E4M3), ("e4m3fn", E4M3), ("e5m2", E5M2)])
def test_fp8_dtype_keeps_the_stored_weights_in_8_bits(files, kind, stored):
    dit = load_dit(files[kind], device="cpu", dtype="fp8")
    ref = load_dit(files[f"{kind}_ref"], device="cpu", dtype="fp32")
    assert dit.policy.storage is not None and dit.policy.compute == torch.float32
    linears = _block_linears(dit)
    assert linears and all(isinstance(m, ScaledFP8Linear) for _, m in linears)
    for name, layer in linears:
        assert layer.weight.dtype == stored  # as stored in the file: one byte per parameter
        assert layer.weight.element_size() == 1
        torch.testing.assert_close(layer.dequantized_weight(torch.float32),
                                   ref.module.get_submodule(name).weight, rtol=0, atol=0)
    assert isinstance(dit.module.proj_out, ScaledFP8Linear)
    assert dit.module.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    torch.testing.assert_close(_predict(dit), _predict(ref), rtol=0, atol=1e-5)
    # twice in a row: nothing cast the stored weights (layerwise casting skips these layers)
    torch.testing.assert_close(_predict(dit), _predict(ref), rtol=0, atol=1e-5)
    assert all(m.weight.dtype == stored for _, m in _block_linears(dit))


def test_scaled_fp8_in_half_precision(files):
    dit = load_dit(files["scaled"], device="cpu", dtype="bf16")
    ref = load_dit(files["scaled_ref"], device="cpu", dtype="fp32")
    layer = dit.module.blocks[0].attn1.to_q
    assert type(layer) is torch.nn.Linear and layer.weight.dtype == torch.bfloat16
    assert dit.module.blocks[0].norm2.weight.dtype == torch.float32  # kept in fp32, as diffusers does
    # the same rounding as dequantising in fp32 then casting
    torch.testing.assert_close(layer.weight, ref.module.blocks[0].attn1.to_q.weight.bfloat16(),
                               rtol=0, atol=0)
    a, b = _predict(dit), _predict(ref)
    assert (a - b).abs().max() <= 0.05 * b.abs().max()


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("choice", ["auto", "fp32", "fp16", "bf16", "fp8"])
def test_half_precision_files_load_with_every_dtype(tmp_path, model, half, choice):
    path = write_dit(tmp_path / "wan_half.safetensors", model=tiny_dit("t2v", seed=3).to(half))
    dit = load_dit(path, device="cpu", dtype=choice)
    assert dit.info.config["weight_format"] == {torch.float16: "fp16", torch.bfloat16: "bf16"}[half]
    out = _predict(dit)
    assert out.shape == (1, 16, 2, 4, 4) and torch.isfinite(out).all()


def test_newer_comfyui_scale_names_read_the_same(files, tmp_path):
    """Newer ComfyUI files: `weight_scale` + a `comfy_quant` JSON per layer, no marker."""
    raw = load_file(str(files["scaled"]))
    newer = {}
    for key, value in raw.items():
        if key.endswith(".scale_weight"):
            module = key[: -len(".scale_weight")]
            newer[f"{module}.weight_scale"] = value
            conf = json.dumps({"format": "float8_e4m3fn"}).encode()
            newer[f"{module}.comfy_quant"] = torch.tensor(list(conf), dtype=torch.uint8)
        elif not key.endswith("scaled_fp8"):
            newer[key] = value
    meta = {"config": json.dumps({"num_attention_heads": TINY_HEADS})}
    save_file(newer, str(tmp_path / "newer.safetensors"), meta)
    dit = load_dit(tmp_path / "newer.safetensors", device="cpu", dtype="fp32")
    ref = load_dit(files["scaled_ref"], device="cpu", dtype="fp32")
    assert dit.info.config["weight_format"] == "fp8_scaled"
    torch.testing.assert_close(_predict(dit), _predict(ref), rtol=0, atol=1e-6)
    newer[f"{PREFIX}blocks.0.self_attn.q.comfy_quant"] = torch.tensor(
        list(json.dumps({"format": "nvfp4"}).encode()), dtype=torch.uint8)
    save_file(newer, str(tmp_path / "nvfp4.safetensors"), meta)
    with pytest.raises(ModelLoadError, match=r"nvfp4\.safetensors.*blocks\.0\.self_attn\.q.*'nvfp4'"):
        load_dit(tmp_path / "nvfp4.safetensors", device="cpu", dtype="fp32")


def test_per_channel_scales_are_refused_by_name(files, tmp_path):
    raw = load_file(str(files["scaled"]))
    key = f"{PREFIX}blocks.0.ffn.0.scale_weight"
    raw[key] = torch.ones(4)
    save_file(raw, str(tmp_path / "rowwise.safetensors"),
              {"config": json.dumps({"num_attention_heads": TINY_HEADS})})
    with pytest.raises(ModelLoadError, match=r"rowwise\.safetensors.*blocks\.0\.ffn\.0\.scale_weight"):
        load_dit(tmp_path / "rowwise.safetensors", device="cpu", dtype="fp32")


# ---- GGUF --------------------------------------------------------------------------------------

GGUF_TYPES = ["Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_0", "F16", "BF16"]


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf")


def _gguf_with_reference(folder, quant, **kwargs):
    path = write_gguf_dit(folder / f"wan-{quant}.gguf", quant, **kwargs)
    oracle = gguf_reference_state(path)
    prefix = kwargs.get("prefix", "")
    oracle = {k[len(prefix):]: v for k, v in oracle.items()}
    if kwargs.get("flat_patch"):
        shape = (GGUF_TINY["num_attention_heads"] * GGUF_TINY["attention_head_dim"],
                 GGUF_TINY["in_channels"], *GGUF_TINY["patch_size"])
        oracle["patch_embedding.weight"] = oracle["patch_embedding.weight"].reshape(shape)
    ref = write_reference_dit(folder / f"ref-{quant}.safetensors", oracle,
                              GGUF_TINY["num_attention_heads"])
    return path, oracle, ref


@pytest.mark.parametrize("quant", GGUF_TYPES)
def test_gguf_weights_equal_the_numpy_reference_and_predict_the_same(gguf_dir, quant):
    path, oracle, ref_path = _gguf_with_reference(gguf_dir, quant)
    dit = load_dit(path, device="cpu", dtype="fp32")
    assert dit.info.layout == "original" and dit.info.family == "wan2.1-t2v"
    assert dit.info.config["weight_format"] == f"gguf {quant}"
    expected = original_to_diffusers(oracle)
    quantised = [(n, m) for n, m in dit.module.named_modules() if isinstance(m, GGUFLinear)]
    if quant in ("F16", "BF16"):
        assert not quantised  # plain tensors: ordinary layers
    else:
        # every block Linear and the head stay in ggml blocks; embedders are dequantised on load
        assert {n for n, _ in quantised} == ({n for n, _ in _block_linears(dit)} | {"proj_out"})
        for name, layer in quantised:
            assert layer.weight.dtype == torch.uint8 and layer.quant_name == quant
            bits = layer.weight.numel() * 8 / (layer.in_features * layer.out_features)
            assert bits < 9  # stays quantised in memory (Q8_0: 8.5 bits per weight)
            # bit for bit what llama.cpp's reference dequantiser gives
            assert torch.equal(layer.dequantized_weight(torch.float32), expected[f"{name}.weight"]), name
    state = dit.module.state_dict()
    for key, value in expected.items():
        if not isinstance(dit.module.get_submodule(key.rpartition(".")[0]), GGUFLinear):
            assert torch.equal(state[key].float(), value), key
    ref = load_dit(ref_path, device="cpu", dtype="fp32")
    torch.testing.assert_close(_predict(dit), _predict(ref), rtol=0, atol=1e-5)


def test_gguf_q4_k_m_mix_prefix_and_flattened_patch(gguf_dir):
    """A Q4_K_M-style mix, ComfyUI's key prefix, and a patch embedding stored flat with its shape
    in `comfy.gguf.orig_shape.*` metadata (as city96's converter does for reshaped tensors)."""
    path, oracle, ref_path = _gguf_with_reference(gguf_dir, "Q4_K", mix=Q4_K_M_MIX, prefix=PREFIX,
                                                  flat_patch=True)
    dit = load_dit(path, device="cpu", dtype="fp32")
    assert dit.info.layout == "comfyui"
    assert dit.info.config["gguf_types"] == {"F32": 43, "Q8_0": 5, "Q4_K": 17, "Q6_K": 4}
    assert dit.module.blocks[0].ffn.net[2].quant_name == "Q6_K"
    assert read_shapes(path)[f"{PREFIX}patch_embedding.weight"] == (256, 16, 1, 2, 2)
    ref = load_dit(ref_path, device="cpu", dtype="fp32")
    torch.testing.assert_close(_predict(dit), _predict(ref), rtol=0, atol=1e-5)


@pytest.mark.parametrize("choice", ["auto", "bf16", "fp16", "fp8"])
def test_gguf_with_other_dtype_choices_computes_in_that_dtype(gguf_dir, choice):
    path = write_gguf_dit(gguf_dir / f"wan-dtype-{choice}.gguf", "Q4_K")
    dit = load_dit(path, device="cpu", dtype=choice)
    expected = {"auto": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                "fp8": torch.float32}[choice]
    assert dit.policy == DTypePolicy(expected)  # the GGUF blocks are the storage
    layer = dit.module.blocks[0].attn1.to_q
    assert isinstance(layer, GGUFLinear) and layer.weight.dtype == torch.uint8
    assert dit.module.blocks[0].norm2.weight.dtype == torch.float32
    out = _predict(dit)
    assert torch.isfinite(out).all()


# ---- bad GGUF files ----------------------------------------------------------------------------

def _write_raw_gguf(path, tensors, arch="wan"):
    writer = gguf.GGUFWriter(str(path), arch=arch)
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_unsupported_gguf_quant_type_names_file_tensor_type_and_choices(gguf_dir, tmp_path):
    good = gguf.GGUFReader(str(write_gguf_dit(gguf_dir / "wan-base.gguf", "Q8_0")))
    tensors = {t.name: (np.array(t.data), t.tensor_type) for t in good.tensors}
    q = gguf.GGMLQuantizationType.IQ2_XXS
    block, size = gguf.GGML_QUANT_SIZES[q]
    rows, cols = 256, 256
    tensors["blocks.0.self_attn.q.weight"] = (np.zeros((rows, cols // block * size), np.uint8), q)
    path = _write_raw_gguf(tmp_path / "wan-iq2.gguf", tensors)
    with pytest.raises(ModelLoadError) as err:
        load_dit(path, device="cpu", dtype="fp32")
    message = str(err.value)
    for part in ("wan-iq2.gguf", "blocks.0.self_attn.q.weight", "IQ2_XXS", "Q4_K", "Q8_0", "Q6_K"):
        assert part in message


def test_gguf_of_another_architecture_is_refused(tmp_path):
    weight = (np.zeros((32, 32), np.float32), gguf.GGMLQuantizationType.F32)
    llama = _write_raw_gguf(tmp_path / "llama.gguf", {"token_embd.weight": weight}, arch="llama")
    with pytest.raises(ModelLoadError, match=r"llama\.gguf.*'llama'.*not a Wan DiT"):
        load_dit(llama, device="cpu", dtype="fp32")
    other = _write_raw_gguf(tmp_path / "not-wan.gguf", {"decoder.conv.weight": weight})
    with pytest.raises(ModelLoadError, match=r"not-wan\.gguf.*expected a Wan DiT"):
        load_dit(other, device="cpu", dtype="fp32")


@pytest.mark.parametrize("keep", [0.6, 0.01])
def test_truncated_gguf_is_named(gguf_dir, tmp_path, keep):
    data = write_gguf_dit(gguf_dir / "wan-whole.gguf", "Q8_0").read_bytes()
    cut = tmp_path / "wan-cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelLoadError, match=r"wan-cut\.gguf.*truncated"):
        load_dit(cut, device="cpu", dtype="fp32")


def test_a_file_named_gguf_that_is_not_one(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelLoadError, match=r"fake\.gguf.*not a GGUF file"):
        load_dit(path, device="cpu", dtype="fp32")


def test_gguf_files_are_listed_and_other_loaders_say_what_they_are(gguf_dir, tmp_path):
    from engine.models.paths import ModelPaths
    from engine.models.safe_load import load_state_dict
    from engine.models.wan_vae import load_vae

    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    (folder / "wan-q8.gguf").write_bytes(write_gguf_dit(gguf_dir / "wan-list.gguf", "Q8_0").read_bytes())
    assert ModelPaths([tmp_path]).list("diffusion_models") == ["wan-q8.gguf"]
    with pytest.raises(ModelLoadError, match="LoadDiT"):
        load_vae(folder / "wan-q8.gguf", device="cpu")
    with pytest.raises(ModelLoadError, match="GGUF files load as diffusion models only"):
        load_state_dict(folder / "wan-q8.gguf")


@pytest.mark.parametrize("kind", ["scaled", "e5m2"])
def test_auto_keeps_an_fp8_file_in_8_bits(files, kind):
    """dtype auto on an fp8 file: the float8 Linears stay as stored (a 14B fp8 file must not
    double in RAM), the result equals dequantising at fp32 (this suite computes in fp32)."""
    dit = load_dit(files[kind], device="cpu", dtype="auto")
    ref = load_dit(files[f"{kind}_ref"], device="cpu", dtype="fp32")
    layer = dit.module.blocks[0].attn1.to_q
    assert layer.weight.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
    assert dit.info.config["fp8_layers_kept"] > 0 and "kept in 8 bits" in dit.info.config["dtype_reason"]
    torch.testing.assert_close(_predict(dit), _predict(ref), rtol=0, atol=1e-5)

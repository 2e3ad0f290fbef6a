"""Hostile or damaged model files: configs read from a file are checked against the architecture's
sane ranges and against the file's tensor shapes before any module is built (a clear ModelLoadError
naming the file, the key and the allowed range, and no gigabytes allocated first); and weights that
compute NaN or inf stop the run with a node error instead of writing an all-black video."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from engine.errors import NodeError
from engine.models.safe_load import ModelLoadError, save_state_dict
from engine.models.t5_checkpoint import parse_t5_checkpoint
from engine.models.text_encoders import load_text_encoder
from engine.models.wan_dit import load_dit
from engine.models.wan_vae import load_vae
from engine.noise import seeded_noise
from engine.sampling import sample
from engine.values import Conditioning, Latent

REPO = Path(__file__).resolve().parents[1]
# width 64 (2 heads of 32): the head count travels in the metadata, as for reelgraph-tiny
DIT = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=4,
           out_channels=4, text_dim=8, freq_dim=16, ffn_dim=32, num_layers=2)
VAE = dict(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
           scale_factor_spatial=2, scale_factor_temporal=2,
           latents_mean=[0.0] * 4, latents_std=[1.0] * 4)


def dit_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return WanTransformer3DModel(**DIT).state_dict()  # diffusers keys


def write_dit(path: Path, config: dict | str, state: dict[str, torch.Tensor] | None = None) -> Path:
    """A tiny DiT whose metadata "config" entry is `config` (a dict, or raw text)."""
    meta = config if isinstance(config, str) else json.dumps({"num_attention_heads": 2, **config})
    return save_state_dict(state if state is not None else dit_state(), path, {"config": meta})


def tiny_umt5_state() -> dict[str, torch.Tensor]:
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    model = UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=16, d_kv=4, num_heads=4, d_ff=32,
                                        num_layers=2, relative_attention_num_buckets=8,
                                        is_encoder_decoder=False, feed_forward_proj="gated-gelu"))
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def write_bert_folder(folder: Path, **config: int) -> Path:
    """A tiny BERT model folder whose config.json carries `config` over the real values."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=64, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=32)).save_pretrained(folder)
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, **config}))
    return folder


# ---- 1. configs read from files -----------------------------------------------------------------
# Values here are out of range yet harmless if a check were missing (this process has no memory
# limit); the ones that would allocate gigabytes run in a limited child process further down.

@pytest.mark.parametrize("config,key,allowed", [
    ({"rope_max_seq_len": 20_000}, "rope_max_seq_len", "1..8192"),  # 10**9: in a child process
    ({"rope_max_seq_len": -1}, "rope_max_seq_len", "1..8192"),
    ({"rope_max_seq_len": 1024.5}, "rope_max_seq_len", "whole number"),
    ({"rope_max_seq_len": "1024"}, "rope_max_seq_len", "whole number"),
    ({"rope_max_seq_len": True}, "rope_max_seq_len", "whole number"),
    ({"num_attention_heads": 10**6}, "num_attention_heads", "1..256"),
    ({"num_attention_heads": 3}, "num_attention_heads", "width 64"),
    ({"attention_head_dim": 0}, "attention_head_dim", "1..512"),
    ({"attention_head_dim": 48}, "attention_head_dim", "width 64"),
    ({"num_layers": 300}, "num_layers", "1..256"),
    ({"num_layers": 3}, "num_layers", "tensors give 2"),
    ({"in_channels": 36}, "in_channels", "tensors give 4"),
    ({"text_dim": 100_000}, "text_dim", "1..65536"),
    ({"patch_size": [1, 2]}, "patch_size", "3 whole numbers"),
    ({"patch_size": [1, 4, 4]}, "patch_size", "tensors give [1, 2, 2]"),
    ({"image_dim": 1280}, "image_dim", "tensors give None"),
    ({"eps": -1.0}, "eps", "above 0"),
    ({"eps": "NaN"}, "eps", "a number"),
    ({"qk_norm": "evil"}, "qk_norm", "rms_norm_across_heads"),
    ({"prediction_type": "epsilon"}, "prediction_type", "flow_prediction"),
])
def test_dit_metadata_config_is_checked_before_building(tmp_path, config, key, allowed):
    path = write_dit(tmp_path / "dit.safetensors", config)
    with pytest.raises(ModelLoadError) as err:
        load_dit(path, device="cpu", compute_hash=False)
    text = str(err.value)
    assert str(path) in text and key in text and allowed in text, text


def test_dit_config_that_is_not_an_object_or_not_json(tmp_path):
    for raw in ("[1, 2]", "{not json", "7"):
        path = write_dit(tmp_path / "dit.safetensors", raw)
        with pytest.raises(ModelLoadError, match="'config'") as err:
            load_dit(path, device="cpu", compute_hash=False)
        assert str(path) in str(err.value)
    # the untouched file loads, with a sane rope length taken from its config
    dit = load_dit(write_dit(tmp_path / "ok.safetensors", {"rope_max_seq_len": 512}), device="cpu",
                   compute_hash=False)
    assert dit.module.config.rope_max_seq_len == 512


def test_dit_tensor_names_and_shapes_are_checked(tmp_path):
    state = dit_state()
    # a block numbered beyond the others (a billion: test_hostile_configs_fail_before_allocating)
    state["blocks.299.scale_shift_table"] = state.pop("blocks.1.scale_shift_table")
    path = write_dit(tmp_path / "far.safetensors", {}, state)
    with pytest.raises(ModelLoadError, match=r"num_layers = 300.*1\.\.256") as err:
        load_dit(path, device="cpu", compute_hash=False)
    assert str(path) in str(err.value)
    state["blocks.1.scale_shift_table"] = state.pop("blocks.299.scale_shift_table")
    state["blocks.3.scale_shift_table"] = state["blocks.1.scale_shift_table"].clone()
    path = write_dit(tmp_path / "gap.safetensors", {}, state)
    with pytest.raises(ModelLoadError, match="blocks 2 is missing"):
        load_dit(path, device="cpu", compute_hash=False)
    state = dit_state()
    del state["condition_embedder.text_embedder.linear_1.weight"]  # text_dim is read from it
    path = write_dit(tmp_path / "textless.safetensors", {}, state)
    with pytest.raises(ModelLoadError, match="text_embedder.linear_1.weight is missing"):
        load_dit(path, device="cpu", compute_hash=False)
    state = dit_state()
    state["patch_embedding.weight"] = torch.zeros(64, 4, 1, 0, 2)  # a zero patch: no division by it
    path = write_dit(tmp_path / "flat.safetensors", {}, state)
    with pytest.raises(ModelLoadError, match=r"patch_size.*1\.\.64"):
        load_dit(path, device="cpu", compute_hash=False)


def test_vae_metadata_config_must_match_its_tensors(tmp_path):
    torch.manual_seed(0)
    state = AutoencoderKLWan(**VAE).state_dict()
    cases = [({"z_dim": 999}, "z_dim", "tensors give 4"),
             ({"dim_mult": [1, 2, 4]}, "dim_mult", "tensors give [1, 2]"),
             ({"latents_mean": [0.0] * 3, "latents_std": [1.0] * 3}, "latents_mean", "4 values"),
             ({"latents_mean": [0.0] * 4, "latents_std": [1.0, 0.0, 1.0, 1.0]}, "latents_std",
              "above 0"),
             ({"latents_mean": [0.0, "x", 0.0, 0.0], "latents_std": [1.0] * 4}, "latents_mean",
              "numbers")]
    for config, key, allowed in cases:
        path = save_state_dict(state, tmp_path / "vae.safetensors", {"config": json.dumps(config)})
        with pytest.raises(ModelLoadError) as err:
            load_vae(path, device="cpu", compute_hash=False)
        text = str(err.value)
        assert str(path) in text and key in text and allowed in text, text


def test_t5_shapes_are_checked_before_building(tmp_path):
    state = tiny_umt5_state()
    bias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    broken = dict(state, **{bias: torch.zeros(8, 0)})  # zero heads: no division by zero
    with pytest.raises(ModelLoadError, match=r"num_heads = 0.*1\.\.256") as err:
        parse_t5_checkpoint(broken, source="t5.safetensors")
    assert "t5.safetensors" in str(err.value)
    far = {k.replace("encoder.block.1.", "encoder.block.300."): v for k, v in state.items()}
    with pytest.raises(ModelLoadError, match=r"num_layers = 301.*1\.\.256"):
        parse_t5_checkpoint(far, source="t5.safetensors")
    flat = dict(state, **{"shared.weight": torch.zeros(64)})
    with pytest.raises(ModelLoadError, match="shared.weight"):
        parse_t5_checkpoint(flat, source="t5.safetensors")
    scaled = dict(state, scaled_fp8=torch.zeros(1), **{
        "encoder.block.0.layer.1.DenseReluDense.wo.scale_weight": torch.ones(16, 1)})
    with pytest.raises(ModelLoadError, match="scale_weight"):  # would broadcast to a huge matrix
        parse_t5_checkpoint(scaled, source="t5.safetensors")


def test_text_encoder_folder_config_is_checked(tmp_path):
    for key, value, allowed in [("num_hidden_layers", 300, "1..256"),
                                ("vocab_size", -3, "1..1048576"),
                                ("hidden_size", 8.5, "whole number")]:
        folder = write_bert_folder(tmp_path / key, **{key: value})
        with pytest.raises(ModelLoadError) as err:
            load_text_encoder(folder, device="cpu", hash_weights=False)
        text = str(err.value)
        assert str(folder) in text and key in text and allowed in text, text
    folder = write_bert_folder(tmp_path / "layers", num_hidden_layers=3)
    with pytest.raises(ModelLoadError, match="num_hidden_layers = 3.*tensors give 1"):
        load_text_encoder(folder, device="cpu", hash_weights=False)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ModelLoadError, match="config.json") as err:
        load_text_encoder(folder, device="cpu", hash_weights=False)
    assert str(folder) in str(err.value)


# The hostile loads run in a child process under an address-space limit (so that, unfixed, they
# fail fast instead of eating the machine) and report how far their peak RSS grew.
_CHILD = textwrap.dedent("""
    import json, resource, sys
    import torch
    from engine.models.safe_load import ModelLoadError, load_state_dict
    from engine.models.t5_checkpoint import parse_t5_checkpoint
    from engine.models.text_encoders import load_text_encoder
    from engine.models.wan_dit import load_dit

    def status(field):
        return [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field)][0]

    cases = json.loads(sys.argv[1])
    load_dit(cases.pop("warm_dit"), device="cpu", compute_hash=False)  # lazy imports, first use
    parse_t5_checkpoint(load_state_dict(cases.pop("warm_t5"))).build_model(torch.float32)
    try:
        load_text_encoder(cases.pop("warm_bert"), device="cpu", hash_weights=False)
    except ModelLoadError:
        pass  # no tokenizer in the folder: fine, the model itself loaded
    soft, hard = (status("VmSize") + 2_500_000) * 1024, resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    before = status("VmHWM")
    results = {}
    for name, (kind, path) in cases.items():
        try:
            if kind == "dit":
                load_dit(path, device="cpu", compute_hash=False)
            elif kind == "t5":
                parse_t5_checkpoint(load_state_dict(path), source=path)
            else:
                load_text_encoder(path, device="cpu", hash_weights=False)
            results[name] = ["loaded", ""]
        except BaseException as exc:
            results[name] = [type(exc).__name__, str(exc)[:500]]
    results["grew_kb"] = status("VmHWM") - before
    print(json.dumps(results))
""")


def test_hostile_configs_fail_before_allocating(tmp_path):
    t5 = tiny_umt5_state()
    far_t5 = {k.replace("encoder.block.1.", "encoder.block.1000000000."): v for k, v in t5.items()}
    far_dit = {k.replace("blocks.1.", "blocks.999999999."): v for k, v in dit_state().items()}
    cases = {
        "warm_dit": str(write_dit(tmp_path / "ok.safetensors", {})),
        "warm_t5": str(save_state_dict(t5, tmp_path / "t5.safetensors")),
        "warm_bert": str(write_bert_folder(tmp_path / "bert")),
        # an 8 GB RoPE table for a 40 kB model; and one of ~0.5 GB that loads when unchecked
        "rope_1e9": ["dit", str(write_dit(tmp_path / "rope9.safetensors", {"rope_max_seq_len": 10**9}))],
        "rope_1e6": ["dit", str(write_dit(tmp_path / "rope6.safetensors", {"rope_max_seq_len": 10**6}))],
        "layers_1e5": ["dit", str(write_dit(tmp_path / "layers.safetensors", {"num_layers": 10**5}))],
        "block_1e9": ["dit", str(write_dit(tmp_path / "far.safetensors", {}, far_dit))],
        "t5_block_1e9": ["t5", str(save_state_dict(far_t5, tmp_path / "far_t5.safetensors"))],
        "bert_layers_1e5": ["text", str(write_bert_folder(tmp_path / "deep", num_hidden_layers=10**5))],
    }
    run = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cases)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    grew_mb = results.pop("grew_kb") / 1024
    for name, (kind, message) in results.items():
        assert kind == "ModelLoadError", (name, kind, message)
        assert "allowed range" in message, (name, message)
    assert grew_mb < 200, f"peak RSS grew by {grew_mb:.0f} MB while refusing hostile configs"


# ---- 3. non-finite predictions and decodes --------------------------------------------------------

def _poisoned(state: dict[str, torch.Tensor], value: float, only: str = "") -> dict[str, torch.Tensor]:
    return {k: torch.full_like(v, value) if v.is_floating_point() and only in k else v
            for k, v in state.items()}


def _noise_latent() -> Latent:
    return Latent(samples=seeded_noise((4, 2, 4, 4), 0, 1), meta={"sigma": 1.0})


def _cond() -> Conditioning:
    return Conditioning(embeds=torch.ones(1, 3, 8), mask=torch.ones(1, 3, dtype=torch.long))


@pytest.mark.parametrize("value,word", [(float("nan"), "NaN"), (float("inf"), "inf")])
def test_dit_producing_non_finite_velocity_is_a_node_error(tmp_path, value, word):
    state = _poisoned(dit_state(), value, only="proj_out.bias")
    dit = load_dit(write_dit(tmp_path / "nan.safetensors", {}, state), device="cpu",
                   compute_hash=False)
    with pytest.raises(NodeError) as err:
        sample(dit, _noise_latent(), _cond(), steps=4, cfg=1.0, shift=3.0, sampler="euler")
    text = str(err.value)
    assert f"produced {word} at step 1 of 4" in text and "nan.safetensors" in text
    assert "damaged" in text and "bf16 or fp32" in text and err.value.input == "model"


def test_non_finite_inputs_are_named(tmp_path):
    dit = load_dit(write_dit(tmp_path / "ok.safetensors", {}), device="cpu", compute_hash=False)
    latent = _noise_latent()
    latent.samples[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(NodeError, match="latent.*NaN") as err:
        sample(dit, latent, _cond(), steps=2, cfg=1.0, shift=3.0, sampler="euler")
    assert err.value.input == "latent"
    cond = _cond()
    cond.embeds[0, 1, 2] = float("inf")  # what an fp16 T5 overflow hands on
    with pytest.raises(NodeError, match="conditioning.*inf.*text encoder") as err:
        sample(dit, _noise_latent(), cond, steps=2, cfg=1.0, shift=3.0, sampler="euler")
    assert err.value.input == "conditioning"


def test_vae_producing_non_finite_frames_is_a_node_error(tmp_path):
    torch.manual_seed(0)
    good = AutoencoderKLWan(**VAE).state_dict()
    bad = load_vae(save_state_dict(_poisoned(good, float("nan"), only="decoder."),
                                   tmp_path / "nan_vae.safetensors"), device="cpu", compute_hash=False)
    latents = torch.zeros(1, 4, 2, 4, 4)
    with pytest.raises(NodeError) as err:
        bad.decode(latents)
    text = str(err.value)
    assert "VAE decoder (nan_vae.safetensors) produced NaN in latent frame 1 of 2" in text
    assert "bf16 or fp32" in text and err.value.input == "vae"
    with pytest.raises(NodeError, match=r"VAE encoder \(nan_enc.safetensors\) produced NaN"):
        load_vae(save_state_dict(_poisoned(good, float("nan"), only="encoder."),
                                 tmp_path / "nan_enc.safetensors"), device="cpu",
                 compute_hash=False).encode(torch.rand(1, 5, 8, 8, 3))
    ok = load_vae(save_state_dict(good, tmp_path / "ok_vae.safetensors"), device="cpu",
                  compute_hash=False)
    latents[0, 1, 1, 2, 2] = float("inf")
    with pytest.raises(NodeError, match="latent to decode contains inf") as err:
        ok.decode(latents)
    assert err.value.input == "latent"
    assert torch.isfinite(ok.decode(torch.zeros(1, 4, 2, 4, 4))).all()

"""Loading without whole-model copies: each tensor goes from the file to its final dtype on its own.

- Peak RSS of a load, measured in a child process on a mid-size random Wan DiT (dim 1536, the
  1.3B model's width, 6 blocks: a 0.57 GB fp16 file), stays within the final weights plus a few
  tensors, for fp16 -> bf16, fp16 -> fp8 storage and scaled fp8 -> fp8 storage. The old path
  (whole file mapped and touched, then a second copy in the compute dtype) needed file + copy.
- Streamed weights are exactly what a per-tensor cast of the file gives.
- A scaled-fp8 UMT5 loads with its Linear weights kept in float8 and encodes like the
  dequantised reference.
- `auto` -> bf16 on CPUs with fast bf16 (decision and the loader's log line).
- A second load of the same file does not hash it again, in this process or the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch

from engine.models.safe_load import load_state_dict, save_state_dict_streaming
from tests.tiny_models import write_dit, write_umt5, write_vae

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "model.diffusion_model."
MID = dict(num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
           text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=6)  # Wan 1.3B widths, 6 of 30 blocks


def mid_dit_specs() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """ComfyUI-layout names and shapes of the mid-size DiT (from a meta-built model)."""
    from diffusers import WanTransformer3DModel

    from engine.models.wan_dit import build_meta, diffusers_to_original

    meta = build_meta(WanTransformer3DModel, MID)
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    return {PREFIX + k: (v, torch.float16) for k, v in diffusers_to_original(shapes).items()}


def write_mid_dit(path: Path, scaled_fp8: bool = False) -> Path:
    """The mid-size DiT written tensor by tensor (fp16, or ComfyUI's scaled fp8 for every 2-D
    Linear weight with fp32 scales and a marker), random weights of std 0.02."""
    specs = mid_dit_specs()
    linear = {k for k, (shape, _) in specs.items() if k.endswith(".weight") and len(shape) == 2}
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for key, (shape, dtype) in specs.items():
        out[key] = (shape, torch.float8_e4m3fn if scaled_fp8 and key in linear else dtype)
        if scaled_fp8 and key in linear:
            out[key[: -len("weight")] + "scale_weight"] = ((), torch.float32)
    if scaled_fp8:
        out[PREFIX + "scaled_fp8"] = ((0,), torch.float8_e4m3fn)

    def make(key: str) -> torch.Tensor:
        shape, dtype = out[key]
        if key.endswith("scale_weight"):
            return torch.tensor(0.02 * 4 / 448.0)
        if not shape or 0 in shape:
            return torch.zeros(shape, dtype=dtype)
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        value = torch.randn(shape, generator=g) * 0.02
        if dtype == torch.float8_e4m3fn:
            return (value / (0.02 * 4 / 448.0)).clamp(-448, 448).to(dtype)
        return value.to(dtype)

    meta = {"config": json.dumps({"num_attention_heads": MID["num_attention_heads"]})}
    return save_state_dict_streaming(out, make, path, meta)


@pytest.fixture(scope="module")
def mid_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mid")
    return {"fp16": write_mid_dit(folder / "mid_fp16.safetensors"),
            "fp8_scaled": write_mid_dit(folder / "mid_fp8_scaled.safetensors", scaled_fp8=True),
            "tiny": write_dit(folder / "tiny.safetensors")}


# The child warms up (imports, first-use allocations) on a tiny DiT, then resets its peak RSS
# (/proc/self/clear_refs "5": VmHWM := VmRSS) and loads the mid-size file.
_CHILD = textwrap.dedent("""
    import gc, json, sys
    import torch
    from engine.models.wan_dit import load_dit

    def status(field):
        return [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field)][0]

    path, tiny, dtype = sys.argv[1:4]
    load_dit(tiny, device="cpu", dtype=dtype, compute_hash=False)
    gc.collect()
    base = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    dit = load_dit(path, device="cpu", dtype=dtype, compute_hash=False)
    peak = status("VmHWM:")
    tensors = [*dit.module.parameters(), *dit.module.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    dtypes = sorted({str(t.dtype) for t in dit.module.parameters()})
    print(json.dumps({"base": base, "peak": peak, "weights": weights, "dtypes": dtypes,
                      "format": dit.info.config.get("weight_format")}))
""")


def _measure(path: Path, tiny: Path, dtype: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), REELGRAPH_CPU_BF16="0")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(tiny), dtype], env=env,
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("source,dtype,expect", [
    ("fp16", "bf16", "torch.bfloat16"),
    ("fp16", "fp8", "torch.float8_e4m3fn"),
    ("fp8_scaled", "fp8", "torch.float8_e4m3fn"),
])
def test_load_peak_is_final_weights_plus_a_few_tensors(mid_files, source, dtype, expect):
    specs = mid_dit_specs()
    largest = max(torch.Size(shape).numel() for shape, _ in specs.values())
    file_bytes = mid_files[source].stat().st_size
    r = _measure(mid_files[source], mid_files["tiny"], dtype)
    assert expect in r["dtypes"]
    # Transient of one conversion: its raw copy plus float32 intermediates (dequantising computes
    # weight.float() * scale), at most 12 bytes per element of the largest tensor (8960 x 1536),
    # plus 64 MiB for allocator slack and the module's Python objects.
    bound = r["weights"] + 12 * largest + 64 * 2**20
    grew = r["peak"] - r["base"]
    mib = 2**20
    assert grew <= bound, (f"{source}->{dtype}: load grew RSS by {grew / mib:.0f} MiB; final "
                           f"weights {r['weights'] / mib:.0f} MiB, bound {bound / mib:.0f} MiB")
    # the old path held the mapped file beside a converted copy: file + weights
    assert grew < file_bytes + r["weights"] - 128 * mib or source == "fp8_scaled"


def test_streamed_weights_equal_a_per_tensor_cast(tmp_path):
    from diffusers import WanTransformer3DModel

    from engine.models.wan_dit import load_dit, original_to_diffusers

    path = write_dit(tmp_path / "dit.safetensors")
    raw = original_to_diffusers({k.removeprefix(PREFIX): v for k, v in load_state_dict(path).items()})
    keep = set(WanTransformer3DModel._keep_in_fp32_modules)
    for choice, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        got = dict(load_dit(path, device="cpu", dtype=choice, compute_hash=False).module.named_parameters())
        for key, value in raw.items():
            want = value.to(torch.float32 if keep.intersection(key.split(".")) else dtype)
            assert got[key].dtype == want.dtype and torch.equal(got[key], want), key
    fp8 = load_dit(path, device="cpu", dtype="fp8", compute_hash=False).module
    stored = dict(fp8.named_parameters())
    q = "blocks.0.attn1.to_q.weight"
    assert stored[q].dtype == torch.float8_e4m3fn
    assert torch.equal(stored[q].float(), raw[q].to(torch.float8_e4m3fn).float())


def test_layerwise_cast_plan_matches_diffusers():
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK

    from engine.dtypes import layerwise_cast_modules
    from tests.tiny_models import tiny_dit

    model = tiny_dit()
    planned = layerwise_cast_modules(model)
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    hooked = {n for n, m in model.named_modules() if getattr(m, "_diffusers_hook", None) is not None
              and m._diffusers_hook.get_hook(_LAYERWISE_CASTING_HOOK) is not None}
    assert planned == hooked and planned


# ---- text encoders ----------------------------------------------------------------------------

def _scaled_fp8_umt5(src: Path, dst: Path) -> Path:
    """ComfyUI's umt5_xxl_fp8_e4m3fn_scaled form of a UMT5 file: every Linear weight float8 with a
    per-tensor scale_weight, a scaled_fp8 marker; the embedding left in bf16 as ComfyUI's is."""
    from safetensors.torch import save_file

    out = {}
    for key, value in load_state_dict(src).items():
        if key.endswith((".q.weight", ".k.weight", ".v.weight", ".o.weight", "wi_0.weight",
                         "wi_1.weight", "wo.weight")):
            scale = value.abs().max().float() / 448.0
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        elif key == "shared.weight":
            out[key] = value.to(torch.bfloat16)
        else:
            out[key] = value.clone()
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(out, str(dst))
    return dst


def test_scaled_fp8_t5_keeps_fp8_and_matches_the_dequantised_reference(tmp_path):
    from engine.models.quantized import ScaledFP8Linear
    from engine.models.text_encoders import load_text_encoder

    path = _scaled_fp8_umt5(write_umt5(tmp_path / "src.safetensors"), tmp_path / "umt5_fp8.safetensors")
    ref = load_text_encoder(path, device="cpu", dtype="fp32", max_length=16, hash_weights=False)
    enc = load_text_encoder(path, device="cpu", dtype="fp8", max_length=16, hash_weights=False)
    linears = [m for m in enc.model.modules() if isinstance(m, ScaledFP8Linear)]
    assert len(linears) == 2 * 7  # q k v o wi_0 wi_1 wo in each of the 2 blocks
    assert all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    assert all(float(m.scale_weight) != 1.0 for m in linears)  # the file's scales, kept
    assert enc.model.shared.weight.dtype == torch.bfloat16  # 2 bytes a row, as stored
    assert not any(p.dtype == torch.float32 and p.numel() > 4096 for p in enc.model.parameters())
    prompts = ["a red circle moving right", "a blue square"]
    want, mask = ref.encode(prompts)
    got, mask2 = enc.encode(prompts)
    assert torch.equal(mask, mask2)
    # same float8 weights and scales both ways; the embedding rounds through bf16 in the fp8 copy
    ref_bf16 = load_text_encoder(path, device="cpu", dtype="fp32", max_length=16, hash_weights=False)
    ref_bf16.model.shared.weight.data = ref_bf16.model.shared.weight.data.bfloat16().float()
    torch.testing.assert_close(got, ref_bf16.encode(prompts)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_fp8_t5_from_a_16_bit_file_quantises_per_tensor(tmp_path):
    from engine.models.quantized import ScaledFP8Linear
    from engine.models.text_encoders import load_text_encoder

    path = write_umt5(tmp_path / "u.safetensors")
    ref = load_text_encoder(path, device="cpu", dtype="fp32", max_length=16, hash_weights=False)
    enc = load_text_encoder(path, device="cpu", dtype="fp8", max_length=16, hash_weights=False)
    assert sum(isinstance(m, ScaledFP8Linear) for m in enc.model.modules()) == 14
    got, want = enc.encode(["a cat"])[0], ref.encode(["a cat"])[0]
    rel = (got - want).norm() / want.norm()
    assert rel < 0.1, rel  # e4m3 with per-tensor scales: a few percent


# ---- dtype choice -----------------------------------------------------------------------------

def test_cpu_bf16_decision(monkeypatch):
    from engine.dtypes import DTypePolicy, cpu_fast_bf16, dtype_policy, explain_dtype

    assert cpu_fast_bf16(env="", flags={"amx_bf16", "avx512f"}) == (True, "this CPU has AMX-BF16")
    assert cpu_fast_bf16(env="", flags={"avx512_bf16"})[0]
    fast, why = cpu_fast_bf16(env="", flags={"avx2"})
    assert not fast and "neither" in why
    assert cpu_fast_bf16(env="0", flags={"amx_bf16"}) == (False, "REELGRAPH_CPU_BF16=0")
    assert cpu_fast_bf16(env="1", flags=set())[0]
    monkeypatch.setenv("REELGRAPH_CPU_BF16", "1")
    assert dtype_policy("auto", "cpu") == DTypePolicy(torch.bfloat16)
    assert dtype_policy("auto", "cpu", kind="text_encoder") == DTypePolicy(torch.bfloat16)
    assert dtype_policy("auto", "cpu", kind="vae") == DTypePolicy(torch.float32)
    assert dtype_policy("fp8", "cpu").compute == torch.bfloat16
    policy, why = explain_dtype("auto", "cpu")
    assert why == "auto -> bf16 on cpu (REELGRAPH_CPU_BF16=1)"
    monkeypatch.setenv("REELGRAPH_CPU_BF16", "0")
    assert dtype_policy("auto", "cpu") == DTypePolicy(torch.float32)
    assert dtype_policy("fp8", "cpu") == DTypePolicy(torch.float32, torch.float8_e4m3fn)
    assert explain_dtype("fp16", "cpu")[1] == "fp16 as chosen"


def _ctx(tmp_path, root, logs):
    from engine.context import ExecutionContext, InterruptFlag
    from engine.models.paths import ModelPaths

    return ExecutionContext(
        node_id="n1", node_type="LoadDiT", run_id="run", device_source=torch.device("cpu"),
        output_dir=tmp_path / "out", temp_dir=tmp_path / "tmp", cache_dir=tmp_path / "cache",
        interrupt=InterruptFlag(), report_progress=lambda *a: None,
        model_paths=ModelPaths([root]), log_sink=lambda level, msg: logs.append((level, msg)))


def test_loaders_log_the_dtype_choice_and_take_a_device(tmp_path, monkeypatch):
    from engine.errors import NodeError
    from nodes.loaders import LoadDiT
    from nodes.text import LoadTextEncoder

    root = tmp_path / "models"
    write_dit(root / "diffusion_models" / "d.safetensors")
    write_umt5(root / "text_encoders" / "t.safetensors")
    logs: list[tuple[str, str]] = []
    ctx = _ctx(tmp_path, root, logs)
    monkeypatch.setenv("REELGRAPH_CPU_BF16", "1")
    dit = LoadDiT.execute(ctx, model="d.safetensors", dtype="auto", device="cpu")["model"]
    assert dit.policy.compute == torch.bfloat16 and dit.device == torch.device("cpu")
    assert ("info", "d.safetensors: auto -> bf16 on cpu (REELGRAPH_CPU_BF16=1)") in logs
    enc = LoadTextEncoder.execute(ctx, model="t.safetensors", dtype="fp8", max_length=0,
                                  offload=True, device="cpu")["encoder"]
    assert enc.device == torch.device("cpu")
    assert any("t.safetensors: fp8 weights, computing in bf16" in m for _, m in logs)
    if not torch.cuda.is_available():
        with pytest.raises(NodeError) as err:
            LoadDiT.execute(ctx, model="d.safetensors", dtype="auto", device="cuda")
        assert err.value.input == "device"
    assert "AMX" in LoadDiT.spec.inputs[1].tooltip
    assert [i.name for i in LoadTextEncoder.spec.inputs][-1] == "device"


# ---- hashing ----------------------------------------------------------------------------------

def test_a_second_load_does_not_hash_again(tmp_path, monkeypatch):
    import engine.file_identity as fid
    from engine.models.text_encoders import load_text_encoder
    from engine.models.wan_dit import load_dit
    from engine.models.wan_vae import load_vae

    reads: list[str] = []
    real = fid._hash_bytes

    def counting(path):
        reads.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(fid, "_hash_bytes", counting)
    monkeypatch.setattr(fid, "_DEFAULT", None)
    fid.use_store(tmp_path / "cache")
    dit, vae = write_dit(tmp_path / "d.safetensors"), write_vae(tmp_path / "v.safetensors")
    t5 = write_umt5(tmp_path / "t.safetensors")
    for _ in range(2):
        a = load_dit(dit, device="cpu", dtype="fp32").info.sha256
        b = load_vae(vae, device="cpu").info.sha256
        c = load_text_encoder(t5, device="cpu", dtype="fp32").info.sha256
    assert sorted(reads) == ["d.safetensors", "t.safetensors", "v.safetensors"]
    # the next process: a fresh hasher on the same cache folder reads nothing either
    monkeypatch.setattr(fid, "_DEFAULT", None)
    fid.use_store(tmp_path / "cache")
    assert load_dit(dit, device="cpu", dtype="fp32").info.sha256 == a
    assert load_vae(vae, device="cpu").info.sha256 == b and c
    assert len(reads) == 3

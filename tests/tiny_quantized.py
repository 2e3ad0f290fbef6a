"""Tiny quantised Wan DiT files in the layouts ComfyUI users download: `*_fp8_scaled` safetensors
(ComfyUI's scaled fp8), plain fp8 e4m3fn / e5m2 safetensors, and city96-style GGUF files.

Each writer takes the target path and returns it; weights are seeded. `WORKFLOW_MODELS` names the
files the example workflows use (tests/test_workflows.py collects it).

GGUF: the installed `gguf` package can quantise Q8_0 (and Q4_0/Q5_0) but only dequantise the
K-quants, so K-quant tensors are written as valid random blocks (finite fp16 block scales, random
quants); their weights are whatever those blocks decode to, and tests take `gguf.quants.dequantize`
(llama.cpp's numpy reference) as the oracle. Widths are multiples of 256 where K-quants are used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tests.tiny_models import DIT_VARIANTS, tiny_dit

FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}
PREFIX = "model.diffusion_model."
# A Wan DiT whose Linear widths fit K-quant blocks (256): 2 heads of Wan's 128, text width 32 as the
# tiny UMT5 in tests/tiny_models.py, 16 latent channels as its VAE.
GGUF_TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128,
                 in_channels=16, out_channels=16, text_dim=32, freq_dim=32, ffn_dim=512,
                 num_layers=2)


def _original_state(model) -> dict[str, torch.Tensor]:
    from engine.models.wan_dit import diffusers_to_original

    return {k: v.detach().float().contiguous() for k, v in diffusers_to_original(model.state_dict()).items()}


def is_linear_weight(key: str, value: torch.Tensor) -> bool:
    """2-D `.weight` tensors: every Linear of the Wan DiT (the ones ComfyUI's files scale)."""
    return key.endswith(".weight") and value.ndim == 2


def write_fp8_dit(path: Path, variant: str = "t2v", seed: int = 0, model=None,
                  fp8: torch.dtype = torch.float8_e4m3fn, scaled: bool = True,
                  scale_input: bool = False, bare_marker: bool = False) -> Path:
    """A Wan DiT in ComfyUI's layout with float8 Linear weights. scaled: ComfyUI's `*_fp8_scaled`
    form (per-Linear `scale_weight` = absmax / fp8 max, a `scaled_fp8` marker, optionally the
    `scale_input` scalars); else plain fp8 (the weights cast as they are). Other tensors stay fp32."""
    from engine.models.safe_load import save_state_dict

    model = model if model is not None else tiny_dit(variant, seed)
    out: dict[str, torch.Tensor] = {}
    for key, value in _original_state(model).items():
        if not is_linear_weight(key, value):
            out[PREFIX + key] = value
            continue
        module = key[: -len(".weight")]
        if scaled:
            scale = value.abs().max().clamp(min=1e-12) / FP8_MAX[fp8]
            out[PREFIX + key] = (value / scale).to(fp8)
            out[f"{PREFIX}{module}.scale_weight"] = scale.reshape(()).float()
            if scale_input:
                out[f"{PREFIX}{module}.scale_input"] = torch.ones((), dtype=torch.float32)
        else:
            out[PREFIX + key] = value.to(fp8)
    if scaled:
        out[("" if bare_marker else PREFIX) + "scaled_fp8"] = torch.empty(0, dtype=fp8)
    meta = {"config": json.dumps({"num_attention_heads": model.config.num_attention_heads})}
    return save_state_dict(out, Path(path), meta)


def fp8_reference_state(path: Path) -> dict[str, torch.Tensor]:
    """The fp32 weights an fp8 file stands for (float8 * scale), in the original layout, no prefix."""
    from safetensors.torch import load_file

    raw = load_file(str(path))
    out = {}
    for key, value in raw.items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if name.endswith((".scale_weight", ".scale_input")) or name == "scaled_fp8":
            continue
        scale = raw.get(f"{key[: -len('.weight')]}.scale_weight") if key.endswith(".weight") else None
        value = value.float()
        out[name] = value * scale.float() if scale is not None else value
    return out


# ---- GGUF ------------------------------------------------------------------------------------

def random_blocks(qtype_name: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Valid random ggml blocks (uint8, (rows, bytes per row)) of a K-quant or Q8_0: random quants,
    finite fp16 block scales sized so the weights come out around 0.02 and roughly centred."""
    import gguf

    qtype = gguf.GGMLQuantizationType[qtype_name]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = rows * cols // block
    data = rng.integers(0, 256, size=(n, size), dtype=np.uint8)

    def put(offset: int, values: np.ndarray) -> None:
        data[:, offset:offset + 2] = values.astype(np.float16).reshape(n, 1).view(np.uint8)

    d = rng.uniform(0.5, 1.0, size=n)
    if qtype_name == "Q4_K":  # d, dmin, 12 bytes of 6-bit scales/mins, 4-bit quants
        put(0, d * 1e-4), put(2, d * 7.5e-4)
    elif qtype_name == "Q5_K":  # as Q4_K plus one high bit per quant
        put(0, d * 5e-5), put(2, d * 7.5e-4)
    elif qtype_name == "Q6_K":  # 6-bit quants, int8 scales, d last
        put(size - 2, d * 3e-5)
    elif qtype_name == "Q8_0":  # d, 32 int8 quants
        put(0, d * 2e-4)
    else:
        raise ValueError(f"no random block recipe for {qtype_name}")
    return data.reshape(rows, -1)


def _gguf_type(key: str, value: torch.Tensor, quant: str, mix: dict[str, str]) -> str:
    """The ggml type city96's converter + llama-quantize would give this tensor (simplified):
    1-D, small and `.modulation` tensors F32; 5-D patch embedding F32; Linear weights quantised
    when their rows fit the block size, else F16."""
    import gguf

    if value.ndim != 2 or ".modulation" in key or key == "head.modulation" or value.numel() <= 1024:
        return "F32"
    name = next((t for pattern, t in mix.items() if pattern in key), quant)
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]][0]
    return name if value.shape[1] % block == 0 else "F16"


def write_gguf_dit(path: Path, quant: str = "Q4_K", seed: int = 0, mix: dict[str, str] | None = None,
                   config: dict | None = None, prefix: str = "", flat_patch: bool = False,
                   arch: str = "wan") -> Path:
    """A Wan DiT as a GGUF file in city96's form: arch "wan", Wan's original names, 5-D patch
    embedding in F32. `quant` for the Linear weights; `mix` maps a key substring to another type
    (e.g. Q4_K_M keeps ffn down projections in Q6_K). Types `gguf.quants.quantize` supports are
    quantised from the weights, K-quants are random valid blocks. flat_patch: store the 5-D patch
    embedding flattened to 2-D with its shape in `comfy.gguf.orig_shape.<name>`."""
    import gguf
    from diffusers import WanTransformer3DModel

    from tests.tiny_models import _randomise

    torch.manual_seed(seed)
    model = _randomise(WanTransformer3DModel(**(config or GGUF_TINY)), seed)
    rng = np.random.default_rng(seed)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in _original_state(model).items():
        name = _gguf_type(key, value, quant, mix or {})
        qtype = gguf.GGMLQuantizationType[name]
        array = value.numpy()
        if flat_patch and array.ndim == 5:
            writer.add_array(f"comfy.gguf.orig_shape.{prefix}{key}", list(array.shape))
            array = array.reshape(array.shape[0], -1)
        if name in ("Q4_K", "Q5_K", "Q6_K"):
            data = random_blocks(name, *array.shape, rng)
        else:
            data = gguf.quants.quantize(array, qtype)
        writer.add_tensor(prefix + key, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def gguf_reference_state(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a GGUF file dequantised by llama.cpp's numpy reference (gguf.quants), fp32,
    in torch-order shapes: the oracle for the loader."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
        values = gguf.quants.dequantize(np.array(t.data), t.tensor_type)
        out[t.name] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(shape)
    return out


def write_reference_dit(path: Path, original: dict[str, torch.Tensor], heads: int) -> Path:
    """A plain fp32 ComfyUI-layout file holding `original` (Wan keys): the reference model."""
    from engine.models.safe_load import save_state_dict

    meta = {"config": json.dumps({"num_attention_heads": heads})}
    return save_state_dict({PREFIX + k: v.contiguous() for k, v in original.items()}, Path(path), meta)


# Wan 2.1 T2V 14B Q4_K_M as city96 publishes it mixes Q4_K with Q6_K for some projections.
Q4_K_M_MIX = {"ffn.2": "Q6_K", "self_attn.v": "Q6_K", "text_embedding": "Q8_0",
              "time_embedding": "Q8_0", "time_projection": "Q8_0"}

WORKFLOW_MODELS: dict[str, Callable[[Path], Path]] = {
    "diffusion_models/wan2.1_t2v_1.3B_fp8_scaled.safetensors": lambda p: write_fp8_dit(p, "t2v"),
    "diffusion_models/wan2.1-t2v-14b-Q4_K_M.gguf": lambda p: write_gguf_dit(p, "Q4_K", mix=Q4_K_M_MIX),
}

assert DIT_VARIANTS["t2v"]["text_dim"] == GGUF_TINY["text_dim"]  # same tiny text encoder

"""The Wan diffusion transformer: key conversion and loading (the loaded model: engine.models.
wan_dit_model.WanDiT).

The architecture is diffusers' `WanTransformer3DModel`; Reelgraph owns the loading around it:
checkpoints in Wan's original layout (and ComfyUI's prefixed copy of it) are renamed to diffusers
names with the tables below, the config is inferred from tensor shapes (engine.models.detect), and
the weights load strictly: a missing or unexpected tensor is an error naming the file, never a
silently random layer.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from engine.devices import pick_device
from engine.dtypes import DTypePolicy, apply_dtype_policy, dtype_policy, keep_file_fp8, param_targets
from engine.models.detect import Detection, detect_wan_dit
from engine.models.interfaces import ModelInfo
from engine.models.wan_dit_model import WanDiT
from engine.models.quantized import (dequantize, is_fp8_dtype, keep_fp8_linears, replace_module,
                                     split_scales, storage_format, without_quant_keys)
from engine.models.safe_load import (ModelLoadError, convert_state, file_sha256, load_state_dict,
                                     read_metadata, read_shapes)

# Original (Wan repo) module names -> diffusers names. Entries are matched against the part of a
# key before its final ".weight"/".bias", or against the whole key for bare parameters.
TOP_LEVEL_NAMES = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "img_emb.emb_pos": "condition_embedder.image_embedder.pos_embed",
}
# Inside `blocks.N.`. Wan applies its norms in the order norm1, norm3 (cross-attention, affine),
# norm2; diffusers numbers them in call order, so Wan's norm3 is diffusers' norm2.
BLOCK_NAMES = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "modulation": "scale_shift_table",
}
_BLOCK_KEY = re.compile(r"^(blocks\.\d+\.)(.+)$")


def _rename(key: str, top: Mapping[str, str], block: Mapping[str, str]) -> str | None:
    """`key` renamed by the tables, or None when no entry covers it."""
    match = _BLOCK_KEY.match(key)
    head, rest, table = (match.group(1), match.group(2), block) if match else ("", key, top)
    if rest in table:  # a bare parameter such as head.modulation
        return head + table[rest]
    module, _, param = rest.rpartition(".")
    if module in table:
        return f"{head}{table[module]}.{param}"
    return None


def _convert(state: Mapping[str, torch.Tensor], top: Mapping[str, str], block: Mapping[str, str],
             source: Any) -> dict[str, torch.Tensor]:
    out, unknown = {}, []
    for key, value in state.items():
        new = _rename(key, top, block)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ModelLoadError(source, f"{len(unknown)} tensors of this Wan DiT have no known "
                                     f"counterpart, e.g. {', '.join(sorted(unknown)[:4])}")
    return out


def original_to_diffusers(state: Mapping[str, torch.Tensor], source: Any = "<state dict>") -> dict[str, torch.Tensor]:
    """Rename a Wan-original DiT state dict (no prefix) to diffusers keys."""
    return _convert(state, TOP_LEVEL_NAMES, BLOCK_NAMES, source)


def diffusers_to_original(state: Mapping[str, torch.Tensor], source: Any = "<state dict>") -> dict[str, torch.Tensor]:
    """Rename a diffusers DiT state dict to Wan's original keys (inverse of original_to_diffusers)."""
    top = {v: k for k, v in TOP_LEVEL_NAMES.items()}
    block = {v: k for k, v in BLOCK_NAMES.items()}
    return _convert(state, top, block, source)


def to_diffusers(state: Mapping[str, torch.Tensor], detection: Detection,
                 source: Any = "<state dict>") -> dict[str, torch.Tensor]:
    """Any supported layout -> diffusers keys (prefix stripped, original names converted)."""
    n = len(detection.prefix)
    stripped = {k[n:]: v for k, v in state.items()} if n else dict(state)
    if detection.layout == "diffusers":
        return stripped
    return original_to_diffusers(stripped, source)


# ---- loading ----------------------------------------------------------------------------------

def config_overrides(path: Path, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Config facts not visible in shapes: a model folder's config.json, then a JSON "config"
    entry in safetensors metadata, then the caller's `extra` (each later one wins). Only parsed
    here; the values are checked against the architecture and the tensors by engine.models.detect."""
    merged: dict[str, Any] = {}
    if path.is_dir() and (path / "config.json").is_file():
        try:
            merged.update(_json_object((path / "config.json").read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelLoadError(path / "config.json", f"unreadable config.json ({exc})") from None
    meta = read_metadata(path).get("config")
    if meta:
        try:
            merged.update(_json_object(meta))
        except ValueError as exc:
            raise ModelLoadError(path, f"its metadata 'config' entry is not a JSON object "
                                       f"({exc})") from None
    merged.update(extra or {})
    return merged


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"found a JSON {type(value).__name__}")
    return value


def detect_then_load(path: Path, detect: Callable[[Mapping[str, Any]], Detection]
                     ) -> tuple[Detection, dict[str, torch.Tensor]]:
    """Run `detect` (which checks the config) on the safetensors headers before any tensor data is
    read; a pickle has no header, so it is loaded first. Quantisation entries (ComfyUI's scales and
    `scaled_fp8` marker) are hidden from `detect`; they stay in the returned state."""
    shapes = read_shapes(path)
    if shapes is None:
        state = load_state_dict(path)
        return detect(without_quant_keys(state)), state
    detection = detect(without_quant_keys(shapes))
    return detection, load_state_dict(path)


def build_meta(cls: type, config: Mapping[str, Any]) -> torch.nn.Module:
    """`cls(**config)` without random init: parameters on the meta device (no memory), buffers
    such as RoPE tables built for real."""
    from accelerate import init_empty_weights  # a diffusers dependency

    with init_empty_weights():
        return cls(**config)


def check_keys(module: torch.nn.Module, keys: Any, source: Any) -> None:
    """A ModelLoadError naming the file and the first keys at fault unless `keys` are exactly the
    module's tensors (checked before any weight is read)."""
    expected, keys = set(module.state_dict()), set(keys)
    missing, unexpected = sorted(expected - keys), sorted(keys - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ModelLoadError(source, f"its tensors do not match a {type(module).__name__} of the "
                                     f"detected config: {'; '.join(parts)}")


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Any
                ) -> torch.nn.Module:
    """Put `state` into a meta-built `module` strictly. The tensors are assigned, not copied:
    each parameter is the state's tensor itself, in its dtype (a mapped-file view stays one)."""
    check_keys(module, state, source)
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatches
        raise ModelLoadError(source, f"tensor shapes do not match the detected config: "
                                     f"{str(exc).strip().splitlines()[-1].strip()}") from None
    return module.eval().requires_grad_(False)


def build_strict(cls: type, config: Mapping[str, Any], state: dict[str, torch.Tensor],
                 source: Any) -> torch.nn.Module:
    """`cls(**config)` without random init (parameters on the meta device), then the state dict
    loaded strictly; a mismatch is a ModelLoadError naming the file and the first keys at fault."""
    return load_strict(build_meta(cls, config), state, source)


def load_dit(path: Path | str, device: torch.device | str | None = None,
             dtype: str | DTypePolicy | None = None, config: Mapping[str, Any] | None = None,
             offload: bool = True, compute_hash: bool = True) -> WanDiT:
    """Load a Wan DiT from a .safetensors/.pt/.gguf file or a diffusers folder, in any layout.

    device: where it computes (default `pick_device()`); the weights wait on the CPU between calls
    when `offload`. dtype: a DTYPE_CHOICES name or a DTypePolicy (default "auto").
    config: overrides for what shapes cannot tell (e.g. {"num_attention_heads": 4}).

    Weight files (see docs/models.md, "Weight files"): fp32/fp16/bf16 and plain fp8 tensors are cast
    to the policy; ComfyUI scaled fp8 is dequantised tensor by tensor, or with dtype fp8 kept in 8
    bits with its scales (engine.models.quantized); GGUF blocks stay quantised and are dequantised
    per layer at call time (engine.models.gguf_weights). `info.config["weight_format"]` says which.
    Every tensor goes from the file to its final dtype on its own (docs/models.md, "Memory when
    loading"): a load needs about the final weights in RAM, never the file plus a converted copy.
    """
    from diffusers import WanTransformer3DModel

    path = Path(path)
    device = pick_device(device)
    policy = dtype if isinstance(dtype, DTypePolicy) else dtype_policy(dtype or "auto", device, "dit")
    keep_fp32 = tuple(WanTransformer3DModel._keep_in_fp32_modules or ())
    overrides = config_overrides(path, config)
    if path.is_file() and path.suffix.lower() == GGUF_SUFFIX:
        module, detection, policy, fmt = _load_gguf(path, overrides, policy, keep_fp32)
    else:
        module, detection, fmt = _load_torch_weights(path, overrides, policy, keep_fp32,
                                                     auto=dtype in (None, "auto"))
    apply_dtype_policy(module, policy, keep_fp32)  # casts nothing left to cast; float8 hooks
    prediction = overrides.get("prediction_type", "flow_prediction")
    info = ModelInfo(path=str(path), family=detection.family, layout=detection.layout,
                     sha256=file_sha256(path) if compute_hash else "",
                     config={**_jsonable(detection.config), "prediction_type": prediction, **fmt})
    return WanDiT(module, info, detection.variant, device, policy, offload, prediction)


GGUF_SUFFIX = ".gguf"
# Module names whose weights are always dequantised on load, never kept quantised: diffusers' time
# embedder casts the timestep to its first parameter's dtype, and these layers are small.
DEQUANTIZED_ON_LOAD = ("condition_embedder",)


def _target_dtype(policy: DTypePolicy, keep_fp32: tuple[str, ...]) -> Callable[[str], torch.dtype]:
    """The dtype a parameter ends in under `policy` (apply_dtype_policy's rule)."""
    keep = set(keep_fp32)
    return lambda key: torch.float32 if keep.intersection(key.split(".")) else policy.compute


def _load_torch_weights(path: Path, overrides: Mapping[str, Any], policy: DTypePolicy,
                        keep_fp32: tuple[str, ...], auto: bool = False
                        ) -> tuple[torch.nn.Module, Detection, dict[str, Any]]:
    """safetensors / pickle / diffusers folder, plain or ComfyUI scaled fp8. With `auto`, an fp8
    file's float8 Linears stay as stored (engine.dtypes.keep_file_fp8).

    Every tensor goes from the file straight to its final dtype, one at a time: the plan (which
    dtype each parameter ends in, which float8 Linears stay as stored) is made from the header
    and the meta-built module before any weight is read; a tensor already in its final dtype
    stays a view of the mapped file, any other is read, converted and its raw copy dropped."""
    from diffusers import WanTransformer3DModel

    detection, lazy = detect_then_load(path, lambda shapes: detect_wan_dit(shapes, path, overrides))
    weights, scales, scaled = split_scales(lazy, path, read_metadata(path))
    fmt = {"weight_format": storage_format(weights, scaled)}
    keep_stored, why = keep_file_fp8("auto" if auto else "chosen",
                                     fmt["weight_format"].startswith("fp8"))
    if why:
        fmt["dtype_reason"] = why
    file_key = to_diffusers({k: k for k in weights}, detection, path)  # diffusers -> file key
    stored = {k: weights[f].dtype for k, f in file_key.items()}  # from the header: nothing read
    scales = to_diffusers(scales, detection, path)
    module = build_meta(WanTransformer3DModel, detection.config)
    check_keys(module, file_key, path)
    kept: set[str] = set()  # float8 Linears kept as stored (ScaledFP8Linear), with dtype fp8
    if policy.storage is not None or keep_stored:
        kept = {name for name, layer in module.named_modules()
                if type(layer) is torch.nn.Linear and name + ".weight" in stored
                and is_fp8_dtype(stored[name + ".weight"])
                and not any(name == s or name.startswith(s + ".") for s in DEQUANTIZED_ON_LOAD)}
    targets = param_targets(module, policy, keep_fp32, no_storage=kept)
    convert = {}
    for key, target in targets.items():
        if key.endswith(".weight") and key[: -len(".weight")] in kept:
            continue  # float8 as stored, scaled per call
        scale = scales.get(key)
        if scale is not None or is_fp8_dtype(stored[key]):
            convert[file_key[key]] = functools.partial(dequantize, scale=scale, dtype=target)
        elif stored[key] != target:
            convert[file_key[key]] = functools.partial(_cast, dtype=target)
    if read_shapes(path) is None:  # a pickle, already in memory: convert it in place
        state = convert_state(weights, convert)
    else:  # drop the unread views, then read again with conversions while streaming the file
        del lazy, weights
        state = load_state_dict(path, convert)
    state = {k: state[f] for k, f in file_key.items()}
    module = load_strict(module, state, path)
    del state
    if kept:
        fmt["fp8_layers_kept"] = keep_fp8_linears(module, scales, policy.compute, only=kept)
    return module, detection, fmt


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype)


def _load_gguf(path: Path, overrides: Mapping[str, Any], policy: DTypePolicy,
               keep_fp32: tuple[str, ...]
               ) -> tuple[torch.nn.Module, Detection, DTypePolicy, dict[str, Any]]:
    """A GGUF DiT: detection from the header's shapes, quantised Linear weights kept in blocks."""
    from diffusers import WanTransformer3DModel

    from engine.models.gguf_weights import GGUFLinear, gguf_architecture, gguf_shapes, main_quant_type, \
        read_gguf, type_counts

    arch = gguf_architecture(path)
    if arch is not None and arch != "wan":
        raise ModelLoadError(path, f"this GGUF holds a {arch!r} model (general.architecture), not a "
                                   "Wan DiT; LoadDiT reads Wan GGUF files (architecture \"wan\")")
    detection = detect_wan_dit(gguf_shapes(path), path, overrides)
    tensors, _ = read_gguf(path)
    gguf_tensors = to_diffusers(tensors, detection, path)
    # meta placeholders for quantised tensors: the strict key/shape check still covers them
    state = {k: (torch.empty(t.shape, device="meta") if t.quantized else t.data)
             for k, t in gguf_tensors.items()}
    module = build_strict(WanTransformer3DModel, detection.config, state, path)
    del state
    target = _target_dtype(policy, keep_fp32)
    for key, tensor in gguf_tensors.items():
        if not tensor.quantized:
            continue
        owner_name, _, leaf = key.rpartition(".")
        owner = module.get_submodule(owner_name)
        if (type(owner) is torch.nn.Linear and leaf == "weight"
                and not owner_name.startswith(DEQUANTIZED_ON_LOAD)):
            bias = owner.bias.detach() if owner.bias is not None else None
            replace_module(module, owner_name, GGUFLinear(tensor, bias, policy.compute))
        else:  # a quantised non-Linear tensor (rare) or an embedder weight: dequantise now
            setattr(owner, leaf, torch.nn.Parameter(tensor.dequantize(target(key)), requires_grad=False))
    left = [n for n, p in module.named_parameters() if p.is_meta]
    if left:
        raise ModelLoadError(path, f"tensors left unloaded: {', '.join(left[:3])}")
    fmt = {"weight_format": f"gguf {main_quant_type(tensors)}", "gguf_types": type_counts(tensors)}
    # GGUF blocks are the storage; float8 storage on top would only lose precision
    return module, detection, DTypePolicy(policy.compute), fmt


def _jsonable(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}

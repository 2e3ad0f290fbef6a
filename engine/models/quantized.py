"""Float8 weight files: ComfyUI's "scaled fp8" and plain fp8, dequantised on load or kept in 8 bits.

ComfyUI's `*_fp8_scaled` checkpoints hold each quantised Linear weight as float8 (e4m3fn) plus a
float32 scalar `<module>.scale_weight`; the real weight is `weight.to(float) * scale_weight`
(comfy/ops.py, `scaled_fp8_ops`). A `scaled_fp8` marker tensor sits at the top level (under the
model prefix or bare); only its dtype means anything (ComfyUI reads the float8 flavour off it, and a
float32 marker means e4m3fn). `<module>.scale_input` is an activation scale used only by ComfyUI's
fp8-matmul fast path (`torch._scaled_mm`); it does not change the weight, so it is dropped here.
Newer ComfyUI files name the same scalars `<module>.weight_scale` / `<module>.input_scale` and describe
each quantised layer in a `<module>.comfy_quant` JSON byte tensor (or in the safetensors metadata entry
`_quantization_metadata`); per-tensor float8 layers of that form are read the same way.

Two ways to use such weights (engine.models.wan_dit picks by the dtype choice):
- dequantise on load (`dequantize_state`): one tensor at a time, `W = W8.float() * scale`, then the
  target dtype, so a whole model never exists in float32 at once;
- keep them in 8 bits (`ScaledFP8Linear`): an `nn.Linear` subclass holding the stored float8 weight
  and its scale, upcast per call, so a 14B fp8 model stays at about one byte per parameter.

Quantised layers (this module's and engine.models.gguf_weights') set `quantized_weights = True`;
engine.dtypes.apply_dtype_policy leaves their weights alone, and `dequantized_weight(dtype)` gives
the real weight for code that needs it (e.g. merging a LoRA difference).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

import torch

from engine.models.safe_load import ModelLoadError

FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                               "float8_e5m2fnuz") if hasattr(torch, n))
MARKER = "scaled_fp8"
# per-layer scalars: (legacy ComfyUI name, newer ComfyUI name)
WEIGHT_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
INPUT_SCALE_SUFFIXES = (".scale_input", ".input_scale")
QUANT_CONF_SUFFIX = ".comfy_quant"
# newer ComfyUI layer formats this loader reads (per-tensor float8 scales)
_FP8_LAYER_FORMATS = ("float8_e4m3fn", "float8_e5m2")


def is_fp8(tensor: torch.Tensor) -> bool:
    return tensor.dtype in FP8_DTYPES


def is_fp8_dtype(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


def _is_quant_key(key: str) -> bool:
    leaf = key.rpartition(".")[2]
    return (leaf == MARKER or key.endswith(WEIGHT_SCALE_SUFFIXES + INPUT_SCALE_SUFFIXES)
            or key.endswith(QUANT_CONF_SUFFIX))


def without_quant_keys(shapes: Mapping[str, Any]) -> dict[str, Any]:
    """`shapes` (or tensors) without the scale, marker and layer-format entries, so architecture
    detection sees the same keys as in an unquantised file."""
    return {k: v for k, v in shapes.items() if not _is_quant_key(k)}


def split_scales(state: dict[str, torch.Tensor], source: Any,
                 metadata: Mapping[str, str] | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], bool]:
    """(weights, scales, scaled): the state dict without quantisation entries; the weight scale of
    each scaled tensor keyed by the weight's own key (`<module>.weight`), float32 scalars; whether
    the file is a ComfyUI scaled-fp8 file (marker, weight scales or layer formats present)."""
    weights: dict[str, torch.Tensor] = {}
    scales: dict[str, torch.Tensor] = {}
    scaled = False
    layer_formats = _layer_formats(state, metadata, source)
    for key, value in state.items():
        if not _is_quant_key(key):
            weights[key] = value
            continue
        scaled = True
        weight_suffix = next((s for s in WEIGHT_SCALE_SUFFIXES if key.endswith(s)), None)
        if weight_suffix is None:
            continue  # marker, input scales (ComfyUI's fp8-matmul path only), layer formats
        module = key[: -len(weight_suffix)]
        if value.numel() != 1:
            raise ModelLoadError(source, f"{key} has shape {list(value.shape)}; only one scale per "
                                         "weight (per-tensor scaled fp8) is supported")
        scales[f"{module}.weight"] = value.reshape(()).to(torch.float32)
    for module, fmt in layer_formats.items():
        if fmt not in _FP8_LAYER_FORMATS:
            raise ModelLoadError(source, f"layer {module} is quantised as {fmt!r}; this loader reads "
                                         f"per-tensor {' and '.join(_FP8_LAYER_FORMATS)} layers only")
    for key in scales:
        if key not in weights:
            raise ModelLoadError(source, f"{key} has a weight scale but no weight")
    return weights, scales, scaled or bool(layer_formats)


def _layer_formats(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None,
                   source: Any) -> dict[str, str]:
    """Newer ComfyUI files: module -> quantisation format, from `.comfy_quant` tensors or the
    `_quantization_metadata` JSON entry of the safetensors header."""
    formats: dict[str, str] = {}
    raw = (metadata or {}).get("_quantization_metadata")
    try:
        if raw:
            layers = json.loads(raw).get("layers", {})
            formats.update({str(k): str(v.get("format")) for k, v in layers.items()})
        for key, value in state.items():
            if key.endswith(QUANT_CONF_SUFFIX):
                conf = json.loads(bytes(value.to(torch.uint8).flatten().tolist()).decode("utf-8"))
                formats[key[: -len(QUANT_CONF_SUFFIX)]] = str(conf.get("format"))
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelLoadError(source, f"its quantisation description is damaged ({exc})") from None
    return formats


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """`weight * scale` computed in float32 (exact for float8 inputs), returned in `dtype`."""
    out = weight.to(torch.float32)
    if scale is not None:
        out = out * scale.to(device=out.device, dtype=torch.float32)
    return out.to(dtype)


def dequantize_state(state: dict[str, torch.Tensor], scales: Mapping[str, torch.Tensor],
                     target: Any, keep: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Dequantise every scaled or float8 tensor of `state` in place, one at a time (each float8
    tensor is released as its replacement is made, so peak memory is one tensor over the result).
    `target(key)` is the dtype a tensor ends in; keys in `keep` are left as stored."""
    kept = set(keep)
    for key in list(state):
        value = state[key]
        if key in kept or not (is_fp8(value) or key in scales):
            continue
        dtype = target(key) if callable(target) else target
        state[key] = dequantize(value, scales.get(key), dtype)
        del value
    return state


def dequantize_scaled_fp8_state(state: dict[str, torch.Tensor], source: Any,
                                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A state dict with ComfyUI's scaled fp8 undone (weight * scale) and any other float8 tensor
    upcast, both to `dtype`; scale, marker and layer-format entries removed (text encoders use it)."""
    weights, scales, _ = split_scales(state, source)
    return dequantize_state(weights, scales, dtype)


def storage_format(state: Mapping[str, torch.Tensor], scaled: bool) -> str:
    """How the weights are stored, for provenance: "fp8_scaled", "fp8_e4m3fn", "bf16", ... (the
    dtype holding most of the parameters)."""
    counts: dict[torch.dtype, int] = {}
    for value in state.values():
        if value.is_floating_point():
            counts[value.dtype] = counts.get(value.dtype, 0) + value.numel()
    if not counts:
        return "unknown"
    main = max(counts, key=counts.__getitem__)
    if scaled and main in FP8_DTYPES:
        return "fp8_scaled"
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    return names.get(main, str(main).replace("torch.float8_", "fp8_").replace("torch.", ""))


def quantize_fp8(weight: torch.Tensor, fp8: torch.dtype = torch.float8_e4m3fn
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8 weight, float32 scalar scale) with `weight ~= q * scale`: one scale per tensor,
    absmax / the format's largest value, as ComfyUI's scaled-fp8 files are made (a plain cast
    would clip weights beyond +-448 and waste range on small ones)."""
    amax = weight.detach().abs().max().float()
    scale = (amax / torch.finfo(fp8).max).clamp(min=1e-12)
    return (weight.float() / scale).to(fp8), scale.reshape(())


def fp8_linears(model: torch.nn.Module, compute_dtype: torch.dtype,
                scales: Mapping[str, torch.Tensor] | None = None) -> int:
    """Swap every plain nn.Linear of `model` for a ScaledFP8Linear: float8 weights are kept as
    they are (with their scale from `scales`, keyed `<module>.weight`), others are quantised one
    layer at a time (`quantize_fp8`), each original freed as its float8 copy is made. Returns the
    number of layers swapped."""
    count = 0
    for name, layer in list(model.named_modules()):
        if type(layer) is not torch.nn.Linear:
            continue
        weight = layer.weight.detach()
        scale = (scales or {}).get(f"{name}.weight")
        if not is_fp8(weight):
            weight, scale = quantize_fp8(weight)
        bias = layer.bias.detach() if layer.bias is not None else None
        replace_module(model, name, ScaledFP8Linear(weight, scale, bias, compute_dtype))
        count += 1
    return count


class ScaledFP8Linear(torch.nn.Linear):
    """A Linear whose weight stays float8 as stored (e4m3fn or e5m2), times a float32 scalar scale
    (1 for plain fp8 files), upcast to the input's dtype for each call."""

    quantized_weights = True

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None,
                 compute_dtype: torch.dtype):
        out_features, in_features = weight.shape
        with torch.device("meta"):  # no throw-away random init
            super().__init__(in_features, out_features, bias=bias is not None)
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            self.bias = torch.nn.Parameter(bias.to(compute_dtype), requires_grad=False)
        one = torch.ones((), dtype=torch.float32)
        self.register_buffer("scale_weight", (scale if scale is not None else one).reshape(()).float())
        self.compute_dtype = compute_dtype

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The real weight `weight * scale_weight` (computed in float32) in `dtype`."""
        return dequantize(self.weight, self.scale_weight, dtype or self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return torch.nn.functional.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, storage={self.weight.dtype}"


def replace_module(root: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    """Put `new` at dotted `name` inside `root`."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def keep_fp8_linears(module: torch.nn.Module, scales: Mapping[str, torch.Tensor],
                     compute_dtype: torch.dtype, skip: tuple[str, ...] = (),
                     only: set[str] | None = None) -> int:
    """After loading float8 tensors into `module` as stored: swap each nn.Linear whose weight is
    float8 for a ScaledFP8Linear holding it and its scale (`scales` keyed by parameter name), except
    under the module names in `skip`; every other float8 or scaled parameter is dequantised to
    float32 in place (engine.dtypes.apply_dtype_policy then casts it). With `only` (the layers a
    loader planned to keep, every other tensor already in its final dtype) exactly those are
    swapped and nothing else is touched. Returns the layers kept."""
    kept = 0
    for name, layer in list(module.named_modules()):
        if type(layer) is not torch.nn.Linear or not is_fp8(layer.weight):
            continue
        if only is not None and name not in only:
            continue
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        bias = layer.bias.detach() if layer.bias is not None else None
        replace_module(module, name, ScaledFP8Linear(layer.weight.detach(),
                                                     scales.get(f"{name}.weight"), bias, compute_dtype))
        kept += 1
    if only is not None:
        return kept
    for name, param in module.named_parameters():
        owner = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
        if getattr(owner, "quantized_weights", False):
            continue
        if is_fp8(param) or name in scales:
            param.data = dequantize(param.data, scales.get(name), torch.float32)
    return kept

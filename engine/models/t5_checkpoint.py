"""T5 / UMT5 encoder checkpoints in a single file: key layouts, conversion and config from shapes.

Layouts recognised (any common prefix such as `model.` or `text_encoders.t5xxl.transformer.` is
stripped first):
- "comfyui": Hugging Face keys (`shared.weight`, `encoder.block.N.layer.0.SelfAttention.q.weight`,
  `encoder.final_layer_norm.weight`), as ComfyUI's umt5_xxl_*.safetensors files use; ComfyUI's
  "scaled fp8" files (`scaled_fp8` marker, per-weight `.scale_weight`) are dequantized on load.
- "original": Wan's own T5 (wan/modules/t5.py: `token_embedding.weight`, `blocks.N.attn.q.weight`,
  `blocks.N.ffn.{gate.0,fc1,fc2}.weight`, `blocks.N.pos_embedding.embedding.weight`, `norm.weight`).

Wan's feed-forward is `fc2(fc1(x) * gelu_tanh(gate(x)))`, which is HF's gated-gelu
`wo(gelu_new(wi_0(x)) * wi_1(x))`: gate -> wi_0, fc1 -> wi_1, fc2 -> wo. A relative-position table in
every block means UMT5 (Wan's umt5-xxl); one shared table in block 0 means classic T5.

Invariants: `parse_t5_checkpoint` returns HF encoder keys only (decoder/head weights dropped), with
`encoder.embed_tokens.weight` tied to `shared.weight`, or raises ModelLoadError naming what is missing.
It reads shapes and dtypes only (plus the small scales and the embedded tokenizer), so the
tensors can stay unread views of the file; `build_model` then takes each tensor from the file to
its final dtype one at a time (engine.models.safe_load's `convert`), never a whole-model copy.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from engine.models.config_checks import T5_BOUNDS, check_numbering, check_shapes
from engine.models.quantized import (ScaledFP8Linear, dequantize, is_fp8, quantize_fp8,
                                     replace_module, split_scales)
from engine.models.safe_load import ModelLoadError, convert_state, load_state_dict

_HF_PROBE = "encoder.block.0.layer.0.SelfAttention.q.weight"
_WAN_PROBE = "blocks.0.attn.q.weight"

# Wan original -> HF, matched against the whole key (after the prefix is stripped).
_WAN_TO_HF: list[tuple[re.Pattern[str], str]] = [(re.compile(a), b) for a, b in [
    (r"token_embedding\.weight", "shared.weight"),
    (r"norm\.weight", "encoder.final_layer_norm.weight"),
    (r"pos_embedding\.embedding\.weight",
     "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
    (r"blocks\.(\d+)\.norm1\.weight", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"blocks\.(\d+)\.attn\.([qkvo])\.weight", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (r"blocks\.(\d+)\.pos_embedding\.embedding\.weight",
     r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight"),
    (r"blocks\.(\d+)\.norm2\.weight", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (r"blocks\.(\d+)\.ffn\.gate\.0\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),
    (r"blocks\.(\d+)\.ffn\.fc1\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"blocks\.(\d+)\.ffn\.fc2\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
]]


@dataclass
class T5Checkpoint:
    """An encoder state dict in HF keys plus the architecture read off its shapes."""

    state: dict[str, torch.Tensor]
    layout: str  # "comfyui" | "original"
    family: str  # "t5" | "umt5"
    vocab_size: int
    d_model: int
    d_kv: int
    num_heads: int
    d_ff: int
    num_layers: int
    num_buckets: int
    gated: bool  # gated-gelu (T5 v1.1, UMT5) vs relu (T5 v1.0)
    spiece_model: bytes | None = None  # tokenizer embedded in the file, if any
    source: str = "checkpoint"  # the file, for error messages
    scales: dict[str, torch.Tensor] = field(default_factory=dict)  # scaled fp8: HF key -> scale
    file_keys: dict[str, str] = field(default_factory=dict)  # HF key -> the key in the file
    path: Path | None = None  # a safetensors file to stream the tensors from while building

    def stores_fp8(self) -> bool:
        """Whether the file holds its Linear weights in float8 (plain or ComfyUI scaled)."""
        from engine.models.quantized import is_fp8_dtype

        return bool(self.scales) or any(is_fp8_dtype(t.dtype) for k, t in self.state.items()
                                         if k.endswith(".weight") and t.dim() == 2)

    def config_dict(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "d_model": self.d_model, "d_kv": self.d_kv,
                "num_heads": self.num_heads, "d_ff": self.d_ff, "num_layers": self.num_layers,
                "relative_attention_num_buckets": self.num_buckets,
                "feed_forward_proj": "gated-gelu" if self.gated else "relu"}

    def hf_config(self) -> Any:
        from transformers import T5Config, UMT5Config

        cls = UMT5Config if self.family == "umt5" else T5Config
        return cls(**self.config_dict(), is_encoder_decoder=False, use_cache=False,
                   dropout_rate=0.0)

    def build_model(self, dtype: torch.dtype, storage: torch.dtype | None = None,
                    keep_stored_fp8: bool = False) -> torch.nn.Module:
        """The transformers encoder with these weights, computing in `dtype`. Built on the meta
        device, then each tensor goes from the file to its final dtype one at a time (scaled fp8
        dequantised as it is read). With `storage` (float8), every Linear keeps float8 weights
        (as stored, scale and all, or quantised per tensor) upcast per call (ScaledFP8Linear),
        and a 16-bit embedding table stays as stored, its looked-up rows cast to `dtype`. With
        `keep_stored_fp8` (and no storage), only the Linears the file stores in float8 stay so."""
        from transformers import T5EncoderModel, UMT5EncoderModel

        cls = UMT5EncoderModel if self.family == "umt5" else T5EncoderModel
        with torch.device("meta"):
            model = cls(self.hf_config())
        # fp16 overflows in T5's output projections; transformers keeps `wo` in fp32 there too.
        keep = set(cls._keep_in_fp32_modules or ()) if dtype == torch.float16 else set()
        linears = {n for n, m in model.named_modules() if type(m) is torch.nn.Linear}
        if storage is None:
            linears = ({n for n in linears if (w := self.state.get(f"{n}.weight")) is not None
                        and is_fp8(w)} if keep_stored_fp8 else set())
        fp8_scales: dict[str, torch.Tensor] = {}
        plan: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        embedding_as_stored = False
        for key, value in self.state.items():
            if not value.is_floating_point():
                continue
            scale = self.scales.get(key)
            if key.endswith(".weight") and key[: -len(".weight")] in linears:
                if is_fp8(value):
                    fp8_scales[key] = scale if scale is not None else torch.ones(())
                else:
                    plan[key] = functools.partial(_to_fp8, key=key, scales=fp8_scales)
                continue
            if (storage is not None and key == "shared.weight" and scale is None
                    and value.dtype in (torch.bfloat16, torch.float16)):
                embedding_as_stored = value.dtype != dtype  # 2 bytes a weight, rows cast on lookup
                continue
            target = torch.float32 if keep.intersection(key.split(".")) else dtype
            if scale is not None or is_fp8(value):
                plan[key] = functools.partial(dequantize, scale=scale, dtype=target)
            elif value.dtype != target:
                plan[key] = functools.partial(_cast, dtype=target)
        state = self._read(plan)
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
        result = model.load_state_dict(state, strict=False, assign=True)
        del state
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left or result.unexpected_keys:
            raise ModelLoadError(self.source, f"the T5 weights do not fit the architecture inferred "
                                              f"from their shapes: missing {left[:5]}, unexpected "
                                              f"{list(result.unexpected_keys)[:5]}")
        for name in sorted(linears):
            layer = model.get_submodule(name)
            bias = layer.bias.detach() if layer.bias is not None else None
            replace_module(model, name, ScaledFP8Linear(layer.weight.detach(),
                                                        fp8_scales.get(f"{name}.weight"), bias, dtype))
        if linears:
            keep_feed_forward_dtype(model)
        if embedding_as_stored:
            for embedding in {id(m): m for m in (model.shared, model.get_input_embeddings())}.values():
                embedding.register_forward_hook(functools.partial(_cast_output, dtype=dtype))
        return model.eval()

    def _read(self, plan: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The HF-keyed state with `plan` applied: streamed from `path` when there is one (each
        planned tensor read alone and converted), else converted in place in memory."""
        if self.path is None or not self.file_keys:
            return dict(convert_state(self.state, plan))
        loaded = load_state_dict(self.path, {self.file_keys[k]: fn for k, fn in plan.items()})
        return {k: loaded[self.file_keys[k]] for k in self.state}


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype)


def keep_feed_forward_dtype(model: torch.nn.Module) -> None:
    """T5's feed-forward casts its hidden states to `wo.weight.dtype` before `wo` (for int8 /
    fp32-kept `wo`); with a float8 `wo` that would round the activations to float8. Give those
    blocks the same computation without that cast (ScaledFP8Linear upcasts its own weight)."""
    import types

    for module in model.modules():
        if hasattr(module, "wo") and type(module).__name__.endswith(("DenseGatedActDense",
                                                                     "DenseActDense")):
            module.forward = types.MethodType(_feed_forward, module)


def _feed_forward(self: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """transformers' T5 Dense(Gated)ActDense.forward minus the cast to `wo.weight.dtype`."""
    if hasattr(self, "wi_0"):  # gated-gelu (T5 v1.1, UMT5)
        hidden = self.act(self.wi_0(hidden)) * self.wi_1(hidden)
    else:
        hidden = self.act(self.wi(hidden))
    return self.wo(self.dropout(hidden))


def _cast_output(module: torch.nn.Module, args: Any, output: torch.Tensor, dtype: torch.dtype
                 ) -> torch.Tensor:
    return output.to(dtype)


def _to_fp8(weight: torch.Tensor, key: str, scales: dict[str, torch.Tensor]) -> torch.Tensor:
    """A 16/32-bit Linear weight quantised to float8 as it is read; its scale goes to `scales`."""
    q, scales[key] = quantize_fp8(weight)
    return q


def _find_prefix(keys: list[str], probe: str) -> str | None:
    hits = [k[: -len(probe)] for k in keys if k.endswith(probe)]
    hits = [p for p in hits if p == "" or p.endswith(".")]
    return min(hits, key=len) if hits else None


def _wan_to_hf(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        for pattern, target in _WAN_TO_HF:
            if pattern.fullmatch(key):
                out[pattern.sub(target, key)] = value
                break
        else:
            unknown.append(key)
    if unknown and not any(k.startswith(("decoder.", "head.")) for k in unknown):
        raise ModelLoadError(source, f"unexpected keys for Wan's T5 encoder: {unknown[:5]}")
    return out


def parse_t5_checkpoint(state: dict[str, torch.Tensor], source: str = "checkpoint",
                        path: Path | str | None = None) -> T5Checkpoint:
    """Detect the layout of a single-file T5/UMT5 encoder, convert to HF keys, infer its config.
    Nothing is converted here; `path` (the safetensors file `state` came from) lets `build_model`
    stream each tensor from it in its final dtype."""
    keys = list(state)
    spiece_key = next((k for k in keys if k.endswith("spiece_model")), None)
    spiece = state[spiece_key].to(torch.uint8).flatten().numpy().tobytes() if spiece_key else None
    hf_prefix, wan_prefix = _find_prefix(keys, _HF_PROBE), _find_prefix(keys, _WAN_PROBE)
    if hf_prefix is not None:
        layout, prefix = "comfyui", hf_prefix
    elif wan_prefix is not None:
        layout, prefix = "original", wan_prefix
    else:
        raise ModelLoadError(
            source, f"not a T5/UMT5 text encoder: found neither {_HF_PROBE!r} (HF/ComfyUI) nor "
            f"{_WAN_PROBE!r} (Wan) among its {len(keys)} keys (first: {keys[:3]}). "
            "BERT-family encoders must be given as a model folder with config.json.")
    in_file = {k[len(prefix):]: k for k in keys if k.startswith(prefix)}  # stripped -> file key
    if layout == "original" and "token_embedding.weight" not in in_file \
            and "token_embedding.weight" in state:  # full Wan T5Model: embedding sits at the top
        in_file["token_embedding.weight"] = "token_embedding.weight"
    stripped = {k: state[f] for k, f in in_file.items() if not k.endswith("spiece_model")}
    weights, scales, _ = split_scales(stripped, source)  # ComfyUI's scaled fp8: kept apart
    names = _wan_to_hf({k: k for k in weights}, source) if layout == "original" \
        else {k: k for k in weights}  # HF key -> stripped key
    names = {k: v for k, v in names.items() if k.startswith(("shared.", "encoder."))}
    if "shared.weight" not in names and "encoder.embed_tokens.weight" in names:
        names["shared.weight"] = names["encoder.embed_tokens.weight"]
    names.pop("encoder.embed_tokens.weight", None)  # re-tied to shared.weight when building
    hf = {k: weights[v] for k, v in names.items()}
    ckpt = _infer(hf, layout, spiece, source)
    ckpt.scales = {k: scales[v] for k, v in names.items() if v in scales}
    ckpt.file_keys = {k: in_file[v] for k, v in names.items()}
    is_file = path is not None and Path(path).suffix.lower() == ".safetensors"
    ckpt.path = Path(path) if is_file else None
    return ckpt


def _infer(hf: dict[str, torch.Tensor], layout: str, spiece: bytes | None, source: str
           ) -> T5Checkpoint:
    """The encoder's config from its tensor shapes, each size checked against T5_BOUNDS before
    anything is built (engine.models.config_checks)."""
    def need(key: str, ndim: int) -> tuple[int, ...]:
        if key not in hf:
            raise ModelLoadError(source, f"T5 encoder weight {key!r} is missing (truncated or not "
                                         "a T5 encoder file)")
        if hf[key].ndim != ndim:
            raise ModelLoadError(source, f"T5 encoder weight {key!r} has shape "
                                         f"{list(hf[key].shape)}; expected {ndim} dimensions")
        return tuple(hf[key].shape)

    vocab_size, d_model = need("shared.weight", 2)
    blocks = {int(m.group(1)) for k in hf if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
    num_layers = check_numbering(source, "encoder blocks", blocks, "num_layers",
                                 T5_BOUNDS["num_layers"])
    bias_key = "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias.weight"
    num_buckets, num_heads = need(bias_key.format(0), 2)
    inner = need("encoder.block.0.layer.0.SelfAttention.q.weight", 2)[0]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in hf
    d_ff = need(f"encoder.block.0.layer.1.DenseReluDense.{'wi_0' if gated else 'wi'}.weight", 2)[0]
    need("encoder.final_layer_norm.weight", 1)
    check_shapes(source, {"vocab_size": vocab_size, "d_model": d_model, "num_heads": num_heads,
                          "d_ff": d_ff, "num_buckets": num_buckets}, T5_BOUNDS)
    if inner % num_heads:
        raise ModelLoadError(source, f"its attention width {inner} does not split into {num_heads} "
                                     "heads (relative_attention_bias)")
    check_shapes(source, {"d_kv": inner // num_heads}, T5_BOUNDS)
    per_block_bias = num_layers > 1 and bias_key.format(1) in hf
    return T5Checkpoint(state=hf, layout=layout, family="umt5" if per_block_bias else "t5",
                        vocab_size=int(vocab_size), d_model=int(d_model), d_kv=int(inner // num_heads),
                        num_heads=int(num_heads), d_ff=int(d_ff), num_layers=num_layers,
                        num_buckets=int(num_buckets), gated=gated, spiece_model=spiece,
                        source=source)

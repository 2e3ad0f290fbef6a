"""The Wan diffusion transformer: key conversion, loading, and the `DiffusionModel` wrapper.

The architecture is diffusers' `WanTransformer3DModel`; Reelgraph owns the loading around it:
checkpoints in Wan's original layout (and ComfyUI's prefixed copy of it) are renamed to diffusers
names with the tables below, the config is inferred from tensor shapes (engine.models.detect), and
the weights load strictly: a missing or unexpected tensor is an error naming the file, never a
silently random layer.

Invariants of `WanDiT.predict_velocity`:
- Inputs and output are float32 CPU tensors (B, C, T, H, W); the module runs on its device/dtype.
- A timestep is (B,) for the whole clip or (B, T) per latent frame; per-frame values are expanded
  to every token of their frame (Wan 2.2 TI2V conditioning: known frames get t = 0).
- Padded text tokens (mask 0) are zeroed, as Wan's pipeline does, since the model attends to the
  whole context without a mask.
- What the network outputs is its `prediction_type`: "flow_prediction" (the velocity, every Wan
  release) or "sample" (the clean latent x0, as in JiT and the x0 runs of training/); a sample
  prediction is turned into the velocity (x_t - x0) / sigma here, so samplers see one contract.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from engine.devices import DTypePolicy, apply_dtype_policy, dtype_policy, on_device, pick_device
from engine.errors import NodeError
from engine.models.detect import PREDICTION_TYPES, TEXT_CONTEXT_LEN, Detection, detect_wan_dit
from engine.models.interfaces import ModelInfo
from engine.models.quantized import (dequantize_state, keep_fp8_linears, replace_module,
                                     split_scales, storage_format, without_quant_keys)
from engine.models.safe_load import (ModelLoadError, file_sha256, load_state_dict, read_metadata,
                                     read_shapes)

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


# ---- the wrapper ------------------------------------------------------------------------------

class WanDiT:
    """A loaded Wan DiT satisfying `engine.models.interfaces.DiffusionModel`."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, variant: str,
                 device: torch.device, policy: DTypePolicy, offload: bool = True,
                 prediction_type: str = "flow_prediction"):
        if prediction_type not in PREDICTION_TYPES:
            raise ModelLoadError(info.path, f"unknown prediction_type {prediction_type!r}; this "
                                            f"loader knows {', '.join(PREDICTION_TYPES)}")
        cfg = module.config
        self.prediction_type = prediction_type
        self.module = module
        self.info = info
        self.variant = variant  # "t2v" | "i2v" | "flf2v" | "ti2v"
        self.in_channels = int(cfg.in_channels)
        self.out_channels = int(cfg.out_channels)
        self.text_dim = int(cfg.text_dim)
        self.patch_size = tuple(int(p) for p in cfg.patch_size)  # (t, h, w)
        self.needs_image_embeds = cfg.image_dim is not None  # Wan 2.1 I2V/FLF2V: CLIP image tokens
        # trained with per-frame timesteps (known frames at t = 0): read by engine.sampling
        self.frame_timesteps = variant == "ti2v"
        self.device = device
        self.policy = policy
        self.offload = offload

    def __repr__(self) -> str:
        return f"WanDiT({self.info.family}, {self.info.path!r}, {self.policy.name} on {self.device})"

    @contextlib.contextmanager
    def loaded(self) -> Iterator["WanDiT"]:
        """Keep the weights on the device for a whole sampling loop."""
        with on_device(self.module, self.device, self.offload):
            yield self

    @torch.no_grad()
    def predict_velocity(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                         context_mask: torch.Tensor | None = None,
                         image_latent: torch.Tensor | None = None,
                         image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Flow-matching velocity (see DiffusionModel). `image_embeds` (B, N, image_dim) are the
        CLIP image tokens that Wan 2.1 I2V/FLF2V models (with an `img_emb`) need."""
        noisy = x
        if image_latent is not None:
            x = torch.cat([x, image_latent.to(x.dtype)], dim=1)  # (B, C + C', T, H, W)
        self._check_input(x)
        batch, _, frames, height, width = x.shape
        t = self._token_timesteps(timestep, batch, frames, height, width)
        ctx = self._context(context, context_mask, batch)
        if self.needs_image_embeds and image_embeds is None:
            raise NodeError(f"{self.info.family} model {Path(self.info.path).name} needs CLIP image "
                            "embeddings (image_embeds) besides the image latent: connect a CLIP "
                            "Vision Encode to Wan Image To Video (clip_vision_start)")
        with on_device(self.module, self.device, self.offload):
            dtype = self.policy.compute
            out = self.module(
                hidden_states=x.to(self.device, dtype),
                timestep=t.to(self.device, torch.float32),
                encoder_hidden_states=ctx.to(self.device, dtype),
                encoder_hidden_states_image=(self._image_tokens(image_embeds).to(self.device, dtype)
                                             if self.needs_image_embeds else None),
                return_dict=False,
            )[0]
        out = out.float().cpu()  # (B, out_channels, T, H, W)
        if self.prediction_type == "sample":
            out = self._velocity_from_sample(noisy.float(), out, timestep, batch, frames)
        return out

    def _image_tokens(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """(B, N, D) CLIP tokens -> what diffusers' image embedder takes. A first-last-frame
        embedder (positional embedding over two images' tokens) folds row pairs (2B, n, D) into
        (B, 2n, D) itself, so the start-then-end tokens (B, 2n, D) are unfolded for it here."""
        pos = getattr(self.module.condition_embedder.image_embedder, "pos_embed", None)
        if pos is None:
            return image_embeds
        need = int(pos.shape[1])
        if image_embeds.ndim != 3 or image_embeds.shape[1] != need:
            got = image_embeds.shape[1] if image_embeds.ndim == 3 else tuple(image_embeds.shape)
            raise NodeError(f"{self.info.family} model {Path(self.info.path).name} takes the CLIP "
                            f"tokens of a start and an end image ({need} tokens), got {got}: connect "
                            "CLIP Vision Encode outputs to both clip_vision_start and clip_vision_end "
                            "of Wan Image To Video")
        return image_embeds.reshape(-1, need // 2, image_embeds.shape[-1])

    @staticmethod
    def _velocity_from_sample(noisy: torch.Tensor, x0: torch.Tensor, timestep: torch.Tensor | float,
                              batch: int, frames: int) -> torch.Tensor:
        """x_t = (1 - sigma) x0 + sigma noise, so the velocity noise - x0 is (x_t - x0) / sigma.
        Frames at sigma 0 (known, clean frames) get velocity 0: they stay where they are."""
        sigma = torch.as_tensor(timestep, dtype=torch.float32) / 1000.0
        sigma = sigma.reshape(-1, 1) if sigma.ndim <= 1 else sigma  # (B or 1, 1) or (B, T)
        sigma = sigma.expand(batch, frames).reshape(batch, 1, frames, 1, 1)
        velocity = (noisy - x0) / sigma.clamp(min=1e-6)
        return torch.where(sigma > 0, velocity, torch.zeros_like(velocity))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise NodeError(f"the DiT expects latents (B, C, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            extra = self.in_channels - x.shape[1]
            hint = (f"; this {self.variant.upper()} model needs image_latent with {extra} more "
                    "channels (mask + encoded image)" if extra > 0 else "")
            raise NodeError(f"{self.info.family} model takes {self.in_channels} input channels, got "
                            f"{x.shape[1]}{hint}")
        for size, p, axis in zip(x.shape[2:], self.patch_size, ("frames", "height", "width")):
            if size % p:
                fix = ("use a frame count whose latent length divides evenly" if axis == "frames" else
                       f"choose a video {axis} that is a multiple of {p} times the VAE's spatial "
                       "compression (16 px for reelgraph-tiny and Wan 2.1, 32 px for Wan 2.2 TI2V)")
                raise NodeError(f"latent {axis} {size} is not a multiple of the DiT patch size {p}; {fix}")

    def _token_timesteps(self, timestep: torch.Tensor | float, batch: int, frames: int,
                         height: int, width: int) -> torch.Tensor:
        """(B,) stays (B,); (B, T) per latent frame -> (B, tokens) for diffusers' per-token path."""
        t = torch.as_tensor(timestep, dtype=torch.float32)
        if t.ndim == 0:
            return t.expand(batch).clone()
        if t.ndim == 1:
            if t.shape[0] not in (1, batch):
                raise NodeError(f"timestep must be (B,) = ({batch},) or (B, T), got {tuple(t.shape)}")
            return t.expand(batch).clone()
        pt, ph, pw = self.patch_size
        if t.shape != (batch, frames):
            raise NodeError(f"per-frame timesteps must be (B, T) = {(batch, frames)}, got {tuple(t.shape)}")
        per_patch_frame = t[:, ::pt]  # (B, T / pt): a temporal patch takes its first frame's time
        tokens_per_frame = (height // ph) * (width // pw)
        return per_patch_frame.repeat_interleave(tokens_per_frame, dim=1)  # (B, T/pt * H/ph * W/pw)

    def _context(self, context: torch.Tensor, mask: torch.Tensor | None, batch: int) -> torch.Tensor:
        if context.ndim != 3 or context.shape[-1] != self.text_dim:
            raise NodeError(f"the DiT expects text embeddings (B, L, {self.text_dim}), got "
                            f"{tuple(context.shape)}; use a text encoder of width {self.text_dim}")
        if context.shape[0] != batch:
            context = context.expand(batch, -1, -1)
        if mask is not None:
            context = context * mask.to(context.dtype).reshape(-1, context.shape[1], 1)
        if self.needs_image_embeds:
            # diffusers splits image tokens off a context of exactly 512 text tokens
            length = context.shape[1]
            if length > TEXT_CONTEXT_LEN:
                raise NodeError(f"this model takes at most {TEXT_CONTEXT_LEN} text tokens, got {length}")
            context = torch.nn.functional.pad(context, (0, 0, 0, TEXT_CONTEXT_LEN - length))
        return context


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


def build_strict(cls: type, config: Mapping[str, Any], state: dict[str, torch.Tensor],
                 source: Any) -> torch.nn.Module:
    """`cls(**config)` without random init (parameters on the meta device), then the state dict
    loaded strictly; a mismatch is a ModelLoadError naming the file and the first keys at fault."""
    from accelerate import init_empty_weights  # a diffusers dependency

    with init_empty_weights():  # parameters on meta; buffers (RoPE tables) built for real
        module = cls(**config)
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ModelLoadError(source, f"its tensors do not match a {cls.__name__} of the detected "
                                     f"config: {'; '.join(parts)}")
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatches
        raise ModelLoadError(source, f"tensor shapes do not match the detected config: "
                                     f"{str(exc).strip().splitlines()[-1].strip()}") from None
    return module.eval().requires_grad_(False)


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
        module, detection, fmt = _load_torch_weights(path, overrides, policy, keep_fp32)
    apply_dtype_policy(module, policy, keep_fp32)
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
                        keep_fp32: tuple[str, ...]
                        ) -> tuple[torch.nn.Module, Detection, dict[str, Any]]:
    """safetensors / pickle / diffusers folder, plain or ComfyUI scaled fp8."""
    from diffusers import WanTransformer3DModel

    detection, state = detect_then_load(path, lambda shapes: detect_wan_dit(shapes, path, overrides))
    state, scales, scaled = split_scales(state, path, read_metadata(path))
    fmt = {"weight_format": storage_format(state, scaled)}
    state = to_diffusers(state, detection, path)
    scales = to_diffusers(scales, detection, path)
    if policy.storage is None:
        # every float8 / scaled tensor straight to its final dtype, one at a time
        dequantize_state(state, scales, _target_dtype(policy, keep_fp32))
        return build_strict(WanTransformer3DModel, detection.config, state, path), detection, fmt
    module = build_strict(WanTransformer3DModel, detection.config, state, path)
    del state
    kept = keep_fp8_linears(module, scales, policy.compute, DEQUANTIZED_ON_LOAD)
    if kept:
        fmt["fp8_layers_kept"] = kept
    return module, detection, fmt


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

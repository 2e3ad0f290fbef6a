"""CLIP vision encoders: images -> CLIP image tokens for Wan 2.1 I2V / FLF2V (and anything else
that conditions on CLIP vision features).

The architecture is transformers' `CLIPVisionModelWithProjection` (or `CLIPVisionModel` when the
file has no projection); Reelgraph owns the loading around it. Layouts read:
- "comfyui": transformers keys at the top level (`vision_model.encoder.layers.N...`,
  `visual_projection.weight`), what ComfyUI's clip_vision_h.safetensors and most single-file
  CLIP vision checkpoints hold;
- "hf": a transformers model folder (config.json + weights), the same keys; the text half of a
  full CLIPModel folder (`text_model.*`, `text_projection`, `logit_scale`) is dropped;
- "open_clip": open_clip's `visual.*` keys (`visual.transformer.resblocks.N.attn.in_proj_weight`,
  `visual.proj`, ...), e.g. Wan's own open-clip-xlm-roberta-large-vit-huge-14 checkpoint; converted
  to transformers names (fused q/k/v split, the projection transposed).

The config comes from tensor shapes (width, layers, MLP width, patch and image size, projection
width); what shapes cannot tell (heads, activation) comes from config.json or a JSON "config" entry
in the safetensors metadata, else from the known OpenAI/LAION widths (ViT-B 768, ViT-L 1024: quick
GELU, 64-wide heads; ViT-H 1280: GELU, 16 heads of 80; ViT-bigG 1664: GELU, 16 heads of 104).
Weights load strictly: a missing or unexpected tensor is a ModelLoadError naming the file.

Invariants of `CLIPVision.encode`: images (B, H, W, 3) float in [0, 1] are preprocessed the way
CLIP (and ComfyUI) do: resized bicubic (antialiased) so the shorter side is the model's image size,
centre-cropped ("center") or squashed ("none"), rounded to 8-bit levels, normalised with CLIP's
mean/std. Outputs are float32 on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from engine.devices import on_device, pick_device
from engine.dtypes import DTypePolicy, dtype_policy
from engine.errors import NodeError
from engine.models.interfaces import ModelInfo
from engine.models.safe_load import (ModelLoadError, file_sha256, load_state_dict, read_metadata,
                                     read_shapes)
from engine.values import ClipVisionOutput

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROP_MODES = ("center", "none")

# width -> (heads, activation) of the released OpenAI / LAION CLIP vision towers
KNOWN_WIDTHS = {768: (12, "quick_gelu"), 1024: (16, "quick_gelu"), 1280: (16, "gelu"),
                1664: (16, "gelu")}
_HF_PREFIX = "vision_model."
_OPEN_CLIP_PREFIX = "visual."
_FULL_CLIP_TEXT = ("text_model.", "text_projection.", "logit_scale")
_LAYER = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.")
_RESBLOCK = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class ClipDetection:
    layout: str  # "comfyui" | "hf" | "open_clip"
    config: dict[str, Any]  # CLIPVisionConfig kwargs
    projection: bool  # has visual_projection


# ---- detection -------------------------------------------------------------------------------

def describe_keys(keys: Any) -> str:
    """What a file that is not a CLIP vision model looks like, for the error message."""
    keys = list(keys)
    if any(k.startswith(("model.diffusion_model.", "blocks.", "patch_embedding")) for k in keys):
        return "a Wan diffusion model (put it in diffusion_models and load it with Load DiT)"
    if any(k.startswith(("encoder.conv1", "decoder.conv1", "encoder.downsamples", "conv1.weight",
                         "encoder.conv_in", "decoder.conv_in")) for k in keys):
        return "a VAE (put it in vae and load it with Load VAE)"
    if any(k.startswith(("encoder.block.", "shared.", "token_embedding.")) for k in keys):
        return "a T5 text encoder (put it in text_encoders and load it with Load Text Encoder)"
    if any("lora" in k for k in keys):
        return "a LoRA (put it in loras and load it with Load LoRA)"
    sample = ", ".join(sorted(keys)[:3]) or "no tensors"
    return f"an unknown model (e.g. {sample})"


def detect_clip_vision(shapes: Mapping[str, Any], path: Path | str,
                       overrides: Mapping[str, Any] | None = None) -> ClipDetection:
    """Layout and CLIPVisionConfig of a CLIP vision checkpoint from its tensor names and shapes
    (values may be tensors or shape tuples). Raises ModelLoadError for anything else."""
    shape = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in shapes.items()}
    overrides = dict(overrides or {})
    if f"{_OPEN_CLIP_PREFIX}conv1.weight" in shape:
        shape = _open_clip_shapes(shape)
        layout = "open_clip"
    elif f"{_HF_PREFIX}embeddings.patch_embedding.weight" in shape:
        layout = "hf" if Path(path).is_dir() else "comfyui"
    else:
        raise ModelLoadError(path, "not a CLIP vision model: it has no CLIP vision patch embedding "
                                   f"(vision_model.embeddings.patch_embedding.weight); it looks like "
                                   f"{describe_keys(shape)}", input="clip_name")
    try:
        width, channels, patch, patch_w = shape[f"{_HF_PREFIX}embeddings.patch_embedding.weight"]
        positions = shape[f"{_HF_PREFIX}embeddings.position_embedding.weight"][0]
        intermediate = shape[f"{_HF_PREFIX}encoder.layers.0.mlp.fc1.weight"][0]
    except (KeyError, ValueError):
        raise ModelLoadError(path, "an incomplete CLIP vision model: the patch/position embedding or "
                                   "the first encoder layer is missing or misshapen",
                             input="clip_name") from None
    layers = 1 + max((int(m.group(1)) for k in shape if (m := _LAYER.match(k))), default=-1)
    grid = round((positions - 1) ** 0.5)
    if patch != patch_w or grid * grid != positions - 1:
        raise ModelLoadError(path, f"CLIP vision embeddings of an unsupported shape: patch "
                                   f"{patch}x{patch_w}, {positions} positions (expected a square "
                                   "patch and a square grid plus the class token)", input="clip_name")
    heads, act = KNOWN_WIDTHS.get(width, (None, None))
    heads = overrides.get("num_attention_heads", heads)
    act = overrides.get("hidden_act", act or "gelu")
    if heads is None:
        raise ModelLoadError(path, f"a CLIP vision model of width {width}, which is not a released "
                                   "CLIP size: its head count cannot be told from the tensors; put "
                                   "a config.json next to it (or a 'config' entry in its metadata) "
                                   "with num_attention_heads", input="clip_name")
    if not isinstance(heads, int) or heads < 1 or width % heads:
        raise ModelLoadError(path, f"num_attention_heads {heads!r} does not divide the width "
                                   f"{width}", input="clip_name")
    projection = "visual_projection.weight" in shape
    config: dict[str, Any] = dict(
        hidden_size=width, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_channels=channels, image_size=grid * patch,
        patch_size=patch, hidden_act=act,
        layer_norm_eps=float(overrides.get("layer_norm_eps", 1e-5)),
        projection_dim=shape["visual_projection.weight"][0] if projection else width)
    return ClipDetection(layout, config, projection)


def _open_clip_shapes(shape: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """open_clip shapes under transformers names (enough for detection)."""
    return {k: tuple(v.shape) for k, v in
            open_clip_to_transformers({k: torch.empty(s, device="meta") for k, s in shape.items()},
                                      "<shapes>").items()}


def open_clip_to_transformers(state: Mapping[str, torch.Tensor], source: Any
                              ) -> dict[str, torch.Tensor]:
    """open_clip `visual.*` keys -> transformers CLIPVisionModelWithProjection keys."""
    top = {"class_embedding": "embeddings.class_embedding", "conv1.weight":
           "embeddings.patch_embedding.weight", "positional_embedding":
           "embeddings.position_embedding.weight", "ln_pre.weight": "pre_layrnorm.weight",
           "ln_pre.bias": "pre_layrnorm.bias", "ln_post.weight": "post_layernorm.weight",
           "ln_post.bias": "post_layernorm.bias"}
    block = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if not key.startswith(_OPEN_CLIP_PREFIX):
            unknown.append(key)
            continue
        rest = key[len(_OPEN_CLIP_PREFIX):]
        if rest in top:
            out[_HF_PREFIX + top[rest]] = value
        elif rest == "proj":  # (width, proj) applied as x @ proj; a Linear holds its transpose
            out["visual_projection.weight"] = value.t()
        elif m := _RESBLOCK.match(key):
            n, name = m.group(1), m.group(2)
            base = f"{_HF_PREFIX}encoder.layers.{n}."
            module, _, param = name.rpartition(".")
            if name in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if name.endswith("weight") else "bias"
                for part, chunk in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                    out[f"{base}self_attn.{part}_proj.{kind}"] = chunk
            elif module in block:
                out[f"{base}{block[module]}.{param}"] = value
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ModelLoadError(source, f"{len(unknown)} tensors of this open_clip vision model have no "
                                     f"known counterpart, e.g. {', '.join(sorted(unknown)[:4])}",
                             input="clip_name")
    return out


def _to_transformers(state: dict[str, torch.Tensor], detection: ClipDetection,
                     source: Any) -> dict[str, torch.Tensor]:
    if detection.layout == "open_clip":
        # a full open_clip checkpoint also carries the text tower: keep the visual half
        state = open_clip_to_transformers(
            {k: v for k, v in state.items() if k.startswith(_OPEN_CLIP_PREFIX)}, source)
    else:
        state = {k: v for k, v in state.items() if not k.startswith(_FULL_CLIP_TEXT)}
    # a buffer older transformers versions saved; rebuilt by the module
    state.pop(f"{_HF_PREFIX}embeddings.position_ids", None)
    return state


# ---- the loaded model ------------------------------------------------------------------------

class CLIPVision:
    """A loaded CLIP vision encoder: `encode(images)` -> ClipVisionOutput."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, device: torch.device,
                 policy: DTypePolicy, offload: bool = True):
        self.module = module
        self.info = info
        self.device = device
        self.policy = policy
        self.offload = offload
        self.image_size = int(module.config.image_size)
        self.width = int(module.config.hidden_size)

    def __repr__(self) -> str:
        return f"CLIPVision({self.info.path!r}, {self.policy.name} on {self.device})"

    @contextlib.contextmanager
    def loaded(self) -> Iterator["CLIPVision"]:
        with on_device(self.module, self.device, self.offload):
            yield self

    @torch.no_grad()
    def encode(self, images: torch.Tensor, crop: str = "center") -> ClipVisionOutput:
        """images (B, H, W, 3) in [0, 1] -> ClipVisionOutput with the penultimate hidden states
        (B, 1 + (size/patch)^2, width): the tokens Wan conditions on (hidden_states[-2], as
        Wan and diffusers' WanImageToVideoPipeline.encode_image take them)."""
        pixels = preprocess(images, self.image_size, crop)  # (B, 3, S, S)
        with on_device(self.module, self.device, self.offload):
            out = self.module(pixel_values=pixels.to(self.device, self.policy.compute),
                              output_hidden_states=True)
        hidden = out.hidden_states
        embeds = getattr(out, "image_embeds", None)
        result = ClipVisionOutput(
            penultimate_hidden_states=hidden[-2].float().cpu(),
            last_hidden_state=out.last_hidden_state.float().cpu(),
            image_embeds=embeds.float().cpu() if embeds is not None else None)
        for name in ("penultimate_hidden_states", "last_hidden_state"):
            if not torch.isfinite(getattr(result, name)).all():
                raise NodeError(f"the CLIP vision model {Path(self.info.path).name} produced NaN "
                                f"or inf in {self.policy.name}; load it in fp32", input="clip_vision")
        return result


def preprocess(images: torch.Tensor, size: int, crop: str = "center") -> torch.Tensor:
    """(B, H, W, 3) float in [0, 1] -> CLIP pixel values (B, 3, size, size), float32.

    center: shorter side to `size` (bicubic, antialiased), centre crop; none: squash to
    size x size. Values are rounded to 8-bit levels first, as CLIP's processors see 8-bit images.
    """
    if crop not in CROP_MODES:
        raise NodeError(f"unknown crop {crop!r}; choose one of {', '.join(CROP_MODES)}", input="crop")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] < 3:
        raise NodeError(f"CLIP vision encodes images (B, H, W, 3), got {tuple(images.shape)}",
                        input="image")
    x = images[..., :3].permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        if crop == "center":
            scale = size / min(h, w)
            target = (max(size, round(h * scale)), max(size, round(w * scale)))
        else:
            target = (size, size)
        x = torch.nn.functional.interpolate(x, size=target, mode="bicubic", antialias=True,
                                            align_corners=False)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    x = (x.clamp(0.0, 1.0) * 255.0).round() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ---- loading ---------------------------------------------------------------------------------

def _overrides(path: Path, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config facts shapes cannot tell: config.json of a folder, the metadata 'config' entry."""
    merged: dict[str, Any] = {}
    sources: list[tuple[Any, str]] = []
    if path.is_dir() and (path / "config.json").is_file():
        sources.append((path / "config.json", (path / "config.json").read_text(encoding="utf-8")))
    meta = read_metadata(path).get("config")
    if meta:
        sources.append((path, meta))
    for where, text in sources:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ModelLoadError(where, f"its config is not valid JSON ({exc})",
                                 input="clip_name") from None
        if not isinstance(value, dict):
            raise ModelLoadError(where, "its config is not a JSON object", input="clip_name")
        if isinstance(value.get("vision_config"), dict):  # a full CLIPModel folder
            value = value["vision_config"]
        merged.update({k: value[k] for k in ("num_attention_heads", "hidden_act", "layer_norm_eps")
                       if k in value})
    merged.update(extra or {})
    return merged


def load_clip_vision(path: Path | str, device: torch.device | str | None = None,
                     dtype: str = "auto", config: Mapping[str, Any] | None = None,
                     offload: bool = True, compute_hash: bool = True) -> CLIPVision:
    """Load a CLIP vision encoder from a .safetensors/.pt file or a transformers folder.

    dtype: one of TEXT_ENCODER_DTYPE_CHOICES (auto: half precision on CUDA, fp32 elsewhere).
    config: overrides for what shapes cannot tell ({"num_attention_heads": ..., "hidden_act": ...}).
    """
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    from engine.models.wan_dit import build_strict  # strict meta-device build, shared loader code

    path = Path(path)
    overrides = _overrides(path, config)
    shapes = read_shapes(path)
    if shapes is not None:
        detection = detect_clip_vision(shapes, path, overrides)
        state = load_state_dict(path)
    else:
        state = load_state_dict(path)
        detection = detect_clip_vision(state, path, overrides)
    state = _to_transformers(state, detection, path)
    cls = CLIPVisionModelWithProjection if detection.projection else CLIPVisionModel
    cfg = CLIPVisionConfig(**detection.config)

    class _Built(cls):  # build_strict calls cls(**config); transformers models take a config object
        def __init__(self) -> None:
            super().__init__(cfg)

    _Built.__name__ = cls.__name__  # named in build_strict's messages
    try:
        module = build_strict(_Built, {}, state, path)
    except ModelLoadError as exc:
        raise ModelLoadError(path, exc.problem, input="clip_name") from None
    device = pick_device(device)
    policy = dtype_policy(dtype or "auto", device, "text_encoder")
    module.to(policy.compute)
    info = ModelInfo(path=str(path), family=f"clip-vision-{_size_name(detection.config)}",
                     layout=detection.layout, sha256=file_sha256(path) if compute_hash else "",
                     config=dict(detection.config))
    return CLIPVision(module, info, device, policy, offload)


def _size_name(config: Mapping[str, Any]) -> str:
    names = {768: "b", 1024: "l", 1280: "h", 1664: "g"}
    return f"vit-{names.get(config['hidden_size'], str(config['hidden_size']))}-{config['patch_size']}"

"""ComfyUI widget orders: how a node's positional `widgets_values` become named values.

A UI workflow stores a node's widget values as a list in the order the node type declares its
widgets, plus values the front end adds that are not inputs at all:
- `control_after_generate` ("fixed" / "increment" / "decrement" / "randomize") right after every
  seed-like INT (KSampler.seed, KSamplerAdvanced.noise_seed, PrimitiveInt.value);
- the upload button's value after LoadImage.image / LoadVideo.file ("image", "video" or null).
Older saves lack some of these, newer ones add widgets at the end, so both are detected from the
values rather than assumed. Some node packs (VideoHelperSuite) store a dict keyed by widget name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONTROL_MODES = ("fixed", "increment", "decrement", "randomize")
_SEED, _UPLOAD = "seed", "upload"
MAX_WIDGET_VALUES = 10_000  # far above any real node; a huge array is a hostile file


@dataclass(frozen=True)
class W:
    """One widget of a ComfyUI node type, in declaration order."""

    name: str
    extra: str | None = None  # _SEED: a control value may follow; _UPLOAD: an upload value may


def _w(*names: str) -> tuple[W, ...]:
    return tuple(W(n) for n in names)


_SIZE4 = _w("width", "height", "length", "batch_size")

# Widget order per ComfyUI node type (from ComfyUI's node definitions; only widgets, never the
# link-only inputs such as model or clip).
WIDGET_ORDER: dict[str, tuple[W, ...]] = {
    "UNETLoader": _w("unet_name", "weight_dtype"),
    "UnetLoaderGGUF": _w("unet_name"),  # ComfyUI-GGUF (custom node)
    "CLIPLoader": _w("clip_name", "type", "device"),
    "VAELoader": _w("vae_name"),
    "CLIPVisionLoader": _w("clip_name"),
    "CLIPVisionEncode": _w("crop"),
    "LoraLoader": _w("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": _w("lora_name", "strength_model"),
    "CLIPTextEncode": _w("text"),
    "EmptyHunyuanLatentVideo": _SIZE4,
    "EmptyLatentImage": _w("width", "height", "batch_size"),
    "ModelSamplingSD3": _w("shift"),
    "KSampler": (W("seed", _SEED), *_w("steps", "cfg", "sampler_name", "scheduler", "denoise")),
    "KSamplerAdvanced": (W("add_noise"), W("noise_seed", _SEED),
                         *_w("steps", "cfg", "sampler_name", "scheduler", "start_at_step",
                             "end_at_step", "return_with_leftover_noise")),
    "VAEDecode": (),
    "VAEDecodeTiled": _w("tile_size", "overlap", "temporal_size", "temporal_overlap"),
    "VAEEncode": (),
    "WanImageToVideo": _SIZE4,
    "WanFirstLastFrameToVideo": _SIZE4,
    "Wan22ImageToVideoLatent": _SIZE4,
    "CreateVideo": _w("fps"),
    "SaveVideo": _w("filename_prefix", "format", "codec"),
    "SaveAnimatedWEBP": _w("filename_prefix", "fps", "lossless", "quality", "method"),
    "SaveWEBM": _w("filename_prefix", "codec", "fps", "crf"),
    "SaveImage": _w("filename_prefix"),
    "PreviewImage": (),
    "LoadImage": (W("image", _UPLOAD),),
    "LoadVideo": (W("file", _UPLOAD),),
    "PrimitiveInt": (W("value", _SEED),),
    "PrimitiveFloat": _w("value"),
    "PrimitiveString": _w("value"),
    "PrimitiveStringMultiline": _w("value"),
    "PrimitiveBoolean": _w("value"),
    "Note": _w("text"),
    "MarkdownNote": _w("text"),
    "GetVideoComponents": (),
    "Reroute": (),
}

# Output names per ComfyUI node type, by slot (API prompts name outputs only by index).
OUTPUTS: dict[str, tuple[str, ...]] = {
    "UNETLoader": ("MODEL",), "UnetLoaderGGUF": ("MODEL",), "CLIPLoader": ("CLIP",), "VAELoader": ("VAE",),
    "CLIPVisionLoader": ("CLIP_VISION",), "CLIPVisionEncode": ("CLIP_VISION_OUTPUT",),
    "LoraLoader": ("MODEL", "CLIP"), "LoraLoaderModelOnly": ("MODEL",),
    "CLIPTextEncode": ("CONDITIONING",), "EmptyHunyuanLatentVideo": ("LATENT",),
    "EmptyLatentImage": ("LATENT",), "ModelSamplingSD3": ("MODEL",), "KSampler": ("LATENT",),
    "KSamplerAdvanced": ("LATENT",), "VAEDecode": ("IMAGE",), "VAEDecodeTiled": ("IMAGE",),
    "VAEEncode": ("LATENT",), "WanImageToVideo": ("positive", "negative", "latent"),
    "WanFirstLastFrameToVideo": ("positive", "negative", "latent"),
    "Wan22ImageToVideoLatent": ("LATENT",), "CreateVideo": ("VIDEO",), "LoadImage": ("IMAGE", "MASK"),
    "LoadVideo": ("VIDEO",), "GetVideoComponents": ("images", "audio", "fps"), "PrimitiveInt": ("INT",), "PrimitiveFloat": ("FLOAT",),
    "PrimitiveString": ("STRING",), "PrimitiveStringMultiline": ("STRING",),
    "PrimitiveBoolean": ("BOOLEAN",), "Reroute": ("*",),
}


@dataclass
class WidgetValues:
    """Named widget values of one node, and what the positional reading noticed."""

    values: dict[str, Any] = field(default_factory=dict)
    controls: dict[str, str] = field(default_factory=dict)  # seed widget -> control_after_generate
    notes: list[str] = field(default_factory=list)  # ignored or missing values, for the report


def name_widgets(comfy_type: str, raw: Any) -> WidgetValues | None:
    """Named values for `raw` widgets_values of a `comfy_type` node; None when the type's widget
    order is unknown (the caller keeps the raw list on a placeholder)."""
    order = WIDGET_ORDER.get(comfy_type)
    if order is None:
        return None
    out = WidgetValues()
    if raw is None:
        return out
    if isinstance(raw, dict):  # VideoHelperSuite style: already keyed by widget name
        known = {w.name for w in order}
        for key, value in raw.items():
            if key in known:
                out.values[key] = value
            else:
                out.notes.append(f"widget value {key!r} is not a widget of {comfy_type}; ignored")
        return out
    if not isinstance(raw, list):
        out.notes.append(f"widgets_values is {type(raw).__name__}, not a list; defaults used")
        return out
    i = 0
    for widget in order:
        if i >= len(raw):
            out.notes.append(f"no value for widget {widget.name!r} (an older save?); default used")
            continue
        out.values[widget.name] = raw[i]
        i += 1
        if widget.extra == _SEED and i < len(raw) and raw[i] in CONTROL_MODES:
            out.controls[widget.name] = raw[i]
            i += 1
        elif widget.extra == _UPLOAD and i < len(raw) and (raw[i] is None or isinstance(raw[i], str)):
            i += 1  # the upload button's own value ("image"/"video"): not an input
    if i < len(raw):
        out.notes.append(f"{len(raw) - i} extra widget value(s) after {', '.join(w.name for w in order) or 'none'} "
                         "ignored (a newer ComfyUI widget?)")
    return out

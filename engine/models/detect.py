"""Architecture detection: which model a checkpoint holds, in which key layout, with which config.

Works on tensor *shapes* only (a dict name -> shape, or the tensors themselves), so a safetensors
header is enough to tell a model's family without reading its weights.

Supported:
- Wan DiT (`WanTransformer3DModel`) in three layouts: "original" (Wan's own repo: `head.modulation`,
  `blocks.N.self_attn.q.weight`, `patch_embedding.weight`), "comfyui" (the same keys under
  `model.diffusion_model.`) and "diffusers" (`scale_shift_table`, `blocks.N.attn1.to_q.weight`,
  `condition_embedder...`). Variants: T2V (in = out channels), I2V (extra conditioning channels,
  with or without a CLIP image embedder `img_emb`), FLF2V (`img_emb.emb_pos`), TI2V (Wan 2.2 5B:
  48 latent channels).
- Wan VAE (`AutoencoderKLWan`) 2.1 (flat down/up lists, z_dim 16) and 2.2 (residual down/up
  blocks, patchified input, z_dim 48) in "original" and "diffusers" layouts ("comfyui" when the
  keys sit under `first_stage_model.` or `vae.`).

Invariants: the returned `config` is a complete set of constructor kwargs for the diffusers class,
so `Class(**config)` builds a model whose state dict matches the checkpoint once converted. Facts
that shapes cannot tell (attention heads, latent statistics) come from, in order: the caller's
overrides, a JSON "config" entry in the safetensors metadata or a model folder's config.json, then
the published Wan values. Anything unrecognised raises `ModelLoadError` naming the file, what was
expected and what was found. Every size is checked before it is returned (engine.models.config_checks):
those read off shapes and names against the architecture's sane ranges, and config entries against
those ranges and against the shapes, so nothing is built from a damaged or hostile config.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from engine.models.config_checks import (DIT_BOUNDS, VAE_BOUNDS, check_dit_heads,
                                         check_dit_overrides, check_latent_stats, check_numbering,
                                         check_shapes, check_vae_overrides)
from engine.models.safe_load import ModelLoadError

Shapes = dict[str, tuple[int, ...]]

DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
VAE_PREFIXES = ("first_stage_model.", "vae.")
WAN_HEAD_DIM = 128  # every published Wan DiT (1.3B, 5B, 14B) uses 128-wide attention heads
TEXT_CONTEXT_LEN = 512  # diffusers' Wan attention splits image tokens off a 512-token text context

# Published latent statistics (per channel) of the Wan VAEs; not stored in their weight files.
WAN21_LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
WAN21_LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813,
    0.0891, 0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108,
    -0.2158, 0.2502, -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313,
    -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944,
    0.3573, -0.0548, -0.1681, -0.0667]
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894,
    1.0901, 0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146,
    0.8986, 0.5659, 0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709,
    0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537,
    0.5444, 0.4089, 0.7468, 0.7744]


@dataclass(frozen=True)
class Detection:
    """What a checkpoint is. `prefix` is the key prefix the file uses (stripped before conversion)."""

    arch: str  # "wan_dit" | "wan_vae"
    family: str  # e.g. "wan2.1-t2v", "wan2.2-ti2v", "wan-vae-2.1", "wan-vae-2.2"
    layout: str  # "original" | "comfyui" | "diffusers"
    prefix: str
    config: dict[str, Any] = field(default_factory=dict)  # diffusers constructor kwargs
    variant: str = ""  # DiT: "t2v" | "i2v" | "flf2v" | "ti2v"


def shapes_of(tensors: Mapping[str, Any]) -> Shapes:
    """name -> shape for tensors, or for a safetensors header (entries with a "shape")."""
    out: Shapes = {}
    for key, value in tensors.items():
        if key == "__metadata__":
            continue
        shape = value.get("shape") if isinstance(value, dict) else getattr(value, "shape", value)
        out[key] = tuple(int(s) for s in shape)
    return out


def sample_keys(keys: Any, n: int = 4) -> str:
    """A short description of a key set for error messages."""
    keys = sorted(keys)
    head = ", ".join(keys[:n])
    return f"{head}{', ...' if len(keys) > n else ''} ({len(keys)} tensors)" if keys else "no tensors"


def guess_arch(shapes: Shapes) -> str | None:
    """"wan_dit", "wan_vae" or None, from marker keys in any supported layout."""
    keys = set(shapes)
    for prefix in ("", *DIT_PREFIXES):
        if {f"{prefix}head.modulation", f"{prefix}patch_embedding.weight"} <= keys:
            return "wan_dit"
        if {f"{prefix}scale_shift_table", f"{prefix}condition_embedder.time_proj.weight"} <= keys:
            return "wan_dit"
    for prefix in ("", *VAE_PREFIXES):
        if f"{prefix}decoder.middle.0.residual.0.gamma" in keys:
            return "wan_vae"
        if f"{prefix}decoder.mid_block.resnets.0.norm1.gamma" in keys:
            return "wan_vae"
    return None


def _wrong_kind(path: Any, expected: str, shapes: Shapes) -> ModelLoadError:
    other = guess_arch(shapes)
    hint = {"wan_dit": " They look like a Wan DiT: load this file with LoadDiT.",
            "wan_vae": " They look like a Wan VAE: load this file with LoadVAE."}.get(other or "", "")
    return ModelLoadError(path, f"expected {expected}, found keys like {sample_keys(shapes)}.{hint}")


# ---- Wan DiT ----------------------------------------------------------------------------------

# Tensors the config is read from: role -> (original name, diffusers name).
_DIT_PROBES = {
    "patch": ("patch_embedding.weight", "patch_embedding.weight"),
    "head": ("head.head.weight", "proj_out.weight"),
    "text": ("text_embedding.0.weight", "condition_embedder.text_embedder.linear_1.weight"),
    "time": ("time_embedding.0.weight", "condition_embedder.time_embedder.linear_1.weight"),
    "ffn": ("blocks.0.ffn.0.weight", "blocks.0.ffn.net.0.proj.weight"),
    "cross_norm": ("blocks.0.norm3.weight", "blocks.0.norm2.weight"),
    "img_in": ("img_emb.proj.1.weight", "condition_embedder.image_embedder.ff.net.0.proj.weight"),
    "img_kv": ("blocks.0.cross_attn.k_img.weight", "blocks.0.attn2.add_k_proj.weight"),
    "img_pos": ("img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"),
}
_UNSUPPORTED_DIT = {"vace_blocks.": "Wan VACE", "motion_encoder.": "Wan Animate",
                    "face_adapter.": "Wan Animate"}


def split_prefix(shapes: Shapes, prefixes: tuple[str, ...]) -> tuple[Shapes, str]:
    """Strip the first prefix that every key starts with (ComfyUI checkpoints nest the model)."""
    for prefix in prefixes:
        if shapes and all(k.startswith(prefix) for k in shapes):
            return {k[len(prefix):]: v for k, v in shapes.items()}, prefix
    return shapes, ""


def detect_wan_dit(tensors: Mapping[str, Any], source: Any = "<state dict>",
                   overrides: Mapping[str, Any] | None = None) -> Detection:
    """Detect a Wan DiT checkpoint and infer its `WanTransformer3DModel` config.

    Every size is checked (engine.models.config_checks) before it is returned: those inferred from
    shapes against the architecture's ranges, and `overrides` (a config.json or metadata) against
    those ranges and against the shapes, so a damaged config cannot size the module that is built.
    """
    shapes, prefix = split_prefix(shapes_of(tensors), DIT_PREFIXES)
    if {"head.modulation", "patch_embedding.weight", "blocks.0.self_attn.q.weight"} <= set(shapes):
        side, layout = 0, ("comfyui" if prefix else "original")
    elif {"scale_shift_table", "proj_out.weight", "blocks.0.attn1.to_q.weight"} <= set(shapes):
        side, layout = 1, "diffusers"
    else:
        raise _wrong_kind(source, "a Wan DiT (keys like head.modulation, "
                                  "blocks.0.self_attn.q.weight, patch_embedding.weight)", shapes)
    for marker, name in _UNSUPPORTED_DIT.items():
        if any(k.startswith(marker) for k in shapes):
            raise ModelLoadError(source, f"this is a {name} model (keys {marker}*); only Wan "
                                         "T2V/I2V/FLF2V/TI2V DiTs are supported")

    def shape(role: str, ndim: int, required: bool = True) -> tuple[int, ...] | None:
        name = _DIT_PROBES[role][side]
        found = shapes.get(name)
        if found is None and required:
            raise ModelLoadError(source, f"Wan DiT tensor {prefix}{name} is missing (a partial or "
                                         "damaged file)")
        if found is not None and len(found) != ndim:
            raise ModelLoadError(source, f"Wan DiT tensor {prefix}{name} has shape {list(found)}; "
                                         f"expected {ndim} dimensions")
        return found

    patch_shape = shape("patch", 5)  # (dim, in_channels, pt, ph, pw)
    inner, in_channels, patch = patch_shape[0], patch_shape[1], tuple(patch_shape[2:])
    check_shapes(source, {"dim": inner, "in_channels": in_channels, "patch_size": patch}, DIT_BOUNDS)
    head_rows = shape("head", 2)[0]  # out_channels * pt * ph * pw
    if head_rows % math.prod(patch):
        raise ModelLoadError(source, f"its output projection has {head_rows} rows, not a multiple "
                                     f"of the patch volume {math.prod(patch)}")
    block_ids = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
    img_in, img_kv, img_pos = (shape("img_in", 2, False), shape("img_kv", 2, False),
                               shape("img_pos", 3, False))
    config: dict[str, Any] = {
        "patch_size": patch,
        "in_channels": in_channels,
        "out_channels": head_rows // math.prod(patch),
        "text_dim": shape("text", 2)[1],
        "freq_dim": shape("time", 2)[1],
        "ffn_dim": shape("ffn", 2)[0],
        "num_layers": check_numbering(source, "blocks", block_ids, "num_layers",
                                      DIT_BOUNDS["num_layers"]),
        "cross_attn_norm": shapes.get(_DIT_PROBES["cross_norm"][side]) is not None,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": img_in[1] if img_in else None,
        "added_kv_proj_dim": img_kv[1] if img_kv else None,
        "pos_embed_seq_len": img_pos[1] if img_pos else None,
    }
    check_shapes(source, {k: config[k] for k in ("out_channels", "text_dim", "freq_dim", "ffn_dim",
                                                 "image_dim", "added_kv_proj_dim", "pos_embed_seq_len")},
                 DIT_BOUNDS)
    overrides = {k: v for k, v in (overrides or {}).items() if k in _DIT_CONFIG_KEYS}
    heads = _dit_heads(inner, overrides, source)
    config["num_attention_heads"] = heads
    config["attention_head_dim"] = inner // heads
    check_shapes(source, {"attention_head_dim": inner // heads}, DIT_BOUNDS)
    # only what shapes cannot show (e.g. rope_max_seq_len) comes from the config; the rest must agree
    config.update(check_dit_overrides(source, overrides, config, PREDICTION_TYPES))
    variant, family = _dit_family(config)
    return Detection("wan_dit", family, layout, prefix, config, variant)


# Config entries a Wan DiT's config.json or metadata may give (anything else there is ignored).
_DIT_CONFIG_KEYS = {"patch_size", "num_attention_heads", "attention_head_dim", "in_channels",
                    "out_channels", "text_dim", "freq_dim", "ffn_dim", "num_layers",
                    "cross_attn_norm", "qk_norm", "eps", "image_dim", "added_kv_proj_dim",
                    "rope_max_seq_len", "pos_embed_seq_len", "prediction_type"}
PREDICTION_TYPES = ("flow_prediction", "sample")  # what the network outputs (engine.models.wan_dit)


def _dit_heads(inner: int, overrides: Mapping[str, Any], source: Any) -> int:
    """Attention heads: not visible in any tensor shape, so from the config or Wan's 128-wide heads."""
    heads, head_dim = check_dit_heads(source, overrides, inner)
    if heads is not None:
        return heads
    if head_dim is not None:
        return inner // head_dim
    if inner % WAN_HEAD_DIM == 0:
        heads = inner // WAN_HEAD_DIM
        check_shapes(source, {"num_attention_heads": heads}, DIT_BOUNDS)
        return heads
    raise ModelLoadError(source, f"cannot tell the number of attention heads of this Wan DiT "
                                 f"(width {inner} is not a multiple of Wan's {WAN_HEAD_DIM}-wide "
                                 "heads); store {\"num_attention_heads\": N} in the safetensors "
                                 "metadata entry \"config\" or in a config.json beside it")


def _dit_family(config: Mapping[str, Any]) -> tuple[str, str]:
    cin, cout = config["in_channels"], config["out_channels"]
    if config["pos_embed_seq_len"]:
        return "flf2v", "wan2.1-flf2v"
    if config["image_dim"]:
        return "i2v", "wan2.1-i2v"
    if cin > cout:
        return "i2v", "wan2.2-i2v"
    if cout == 48:
        return "ti2v", "wan2.2-ti2v"
    # Wan 2.1 T2V and the Wan 2.2 A14B T2V experts share this layout.
    return "t2v", "wan2.1-t2v"


# ---- Wan VAE ----------------------------------------------------------------------------------

def detect_wan_vae(tensors: Mapping[str, Any], source: Any = "<state dict>",
                   overrides: Mapping[str, Any] | None = None) -> Detection:
    """Detect a Wan VAE checkpoint and infer its `AutoencoderKLWan` config.

    Sizes from shapes are checked against the architecture's ranges, and `overrides` (a config.json
    or metadata) must agree with the shapes, before anything is built (engine.models.config_checks).
    """
    shapes, prefix = split_prefix(shapes_of(tensors), VAE_PREFIXES)
    if {"decoder.middle.0.residual.0.gamma", "encoder.conv1.weight", "conv2.weight"} <= set(shapes):
        layout = "comfyui" if prefix else "original"
        enc_in, dec_out, post = "encoder.conv1.weight", "decoder.head.2.weight", "conv2.weight"
    elif {"decoder.mid_block.resnets.0.norm1.gamma", "encoder.conv_in.weight",
          "post_quant_conv.weight"} <= set(shapes):
        layout = "diffusers"
        enc_in, dec_out, post = "encoder.conv_in.weight", "decoder.conv_out.weight", "post_quant_conv.weight"
    else:
        raise _wrong_kind(source, "a Wan VAE (keys like decoder.middle.0.residual.0.gamma or "
                                  "decoder.mid_block.resnets.0.norm1.gamma)", shapes)
    conv_in, conv_out = _conv_shape(shapes, enc_in, source), _conv_shape(shapes, dec_out, source)
    base_dim, in_channels, z_dim = conv_in[0], conv_in[1], _conv_shape(shapes, post, source)[0]
    check_shapes(source, {"base_dim": base_dim, "in_channels": in_channels, "z_dim": z_dim,
                          "out_channels": conv_out[0]}, VAE_BOUNDS)
    levels = vae_levels(shapes, layout != "diffusers", source)
    check_shapes(source, {"levels": len(levels), "num_res_blocks": levels[0].resnets}, VAE_BOUNDS)
    if any(lv.out_dim % base_dim or lv.resnets != levels[0].resnets for lv in levels):
        raise ModelLoadError(source, f"its encoder levels (widths {[lv.out_dim for lv in levels]}, "
                                     f"residual blocks {[lv.resnets for lv in levels]}) do not fit "
                                     f"a Wan VAE of base width {base_dim}")
    dim_mult = [lv.out_dim // base_dim for lv in levels]
    check_shapes(source, {"dim_mult": dim_mult}, VAE_BOUNDS)
    patch = math.isqrt(in_channels // 3)
    if patch * patch * 3 != in_channels:
        raise ModelLoadError(source, f"a Wan VAE with {in_channels} input channels is not supported")
    residual = levels[0].residual
    if not residual and any(lv.attentions for lv in levels):
        raise ModelLoadError(source, "Wan VAEs with attention in the down blocks are not supported")
    temporal = [lv.temporal for lv in levels[:-1]]
    decoder_base = conv_out[1] // dim_mult[0]
    check_shapes(source, {"decoder_base_dim": decoder_base}, VAE_BOUNDS)
    config: dict[str, Any] = {
        "base_dim": base_dim,
        "decoder_base_dim": decoder_base if decoder_base != base_dim else None,
        "z_dim": z_dim,
        "dim_mult": dim_mult,
        "num_res_blocks": levels[0].resnets,
        "attn_scales": [],
        "temperal_downsample": temporal,
        "dropout": 0.0,
        "is_residual": residual,
        "in_channels": in_channels,
        "out_channels": conv_out[0],
        "patch_size": patch if patch > 1 else None,
        "scale_factor_temporal": 2 ** sum(temporal),
        "scale_factor_spatial": 2 ** (len(levels) - 1) * patch,
    }
    check_vae_overrides(source, overrides or {}, config)
    mean, std = _latent_stats(z_dim, overrides, source)
    config["latents_mean"], config["latents_std"] = mean, std
    family = "wan-vae-2.2" if residual else "wan-vae-2.1"
    return Detection("wan_vae", family, layout, prefix, config)


def _conv_shape(shapes: Shapes, key: str, source: Any) -> tuple[int, ...]:
    """The (out, in, t, h, w) shape of one of the VAE's causal 3-D convolutions."""
    shape = shapes[key]
    if len(shape) != 5:
        raise ModelLoadError(source, f"Wan VAE tensor {key} has shape {list(shape)}; expected a "
                                     "5-dimensional convolution weight")
    return shape


@dataclass(frozen=True)
class VaeLevel:
    """One resolution level of the Wan VAE encoder as stored in a checkpoint."""

    resnets: int  # residual blocks
    out_dim: int  # channels after the level
    temporal: bool  # its downsample also halves time
    attentions: int = 0
    residual: bool = False  # Wan 2.2 style (nested blocks with a shortcut around the level)


def vae_levels(shapes: Shapes, original: bool, source: Any = "<state dict>") -> list[VaeLevel]:
    """The encoder's levels, read from the down-block keys of either layout."""
    root = "encoder.downsamples." if original else "encoder.down_blocks."
    nested = ".downsamples." if original else ".resnets."
    residual = any(k.startswith(root) and nested in k[len(root):] for k in shapes)
    conv1 = ".residual.2.weight" if original else ".conv1.weight"

    def out_dim(key: str) -> int:
        if key not in shapes or not shapes[key]:
            raise ModelLoadError(source, f"Wan VAE tensor {key} is missing (a partial or damaged file)")
        return shapes[key][0]

    ids = sorted({int(m.group(1)) for k in shapes if (m := re.match(re.escape(root) + r"(\d+)\.", k))})
    if residual:
        levels = []
        for i in ids:
            res_ids = sorted({int(m.group(1)) for k in shapes
                              if (m := re.match(re.escape(f"{root}{i}{nested}") + r"(\d+)" + re.escape(conv1), k))})
            if not res_ids:
                raise ModelLoadError(source, f"Wan VAE level {root}{i} has no residual blocks "
                                             "(a partial or damaged file)")
            temporal = any(k.startswith(f"{root}{i}.") and ".time_conv." in k for k in shapes)
            levels.append(VaeLevel(len(res_ids), out_dim(f"{root}{i}{nested}{res_ids[-1]}{conv1}"),
                                   temporal, residual=True))
        return levels
    # Wan 2.1: one flat list of resnets / attentions / resamples; resamples end each level.
    levels, res, attn, width = [], 0, 0, 0
    for i in ids:
        prefix = f"{root}{i}."
        if f"{prefix}resample.1.weight" in shapes:
            levels.append(VaeLevel(res, width, f"{prefix}time_conv.weight" in shapes, attn))
            res, attn = 0, 0
        elif f"{prefix}to_qkv.weight" in shapes:
            attn += 1
        else:
            res += 1
            width = out_dim(f"{prefix}{conv1.lstrip('.')}")
    levels.append(VaeLevel(res, width, False, attn))
    return levels


def _latent_stats(z_dim: int, overrides: Mapping[str, Any] | None,
                  source: Any = "<state dict>") -> tuple[list[float], list[float]]:
    o = overrides or {}
    if o.get("latents_mean") is not None and o.get("latents_std") is not None:
        return (check_latent_stats(source, "latents_mean", o["latents_mean"], z_dim, positive=False),
                check_latent_stats(source, "latents_std", o["latents_std"], z_dim, positive=True))
    if z_dim == 16:
        return list(WAN21_LATENTS_MEAN), list(WAN21_LATENTS_STD)
    if z_dim == 48:
        return list(WAN22_LATENTS_MEAN), list(WAN22_LATENTS_STD)
    return [0.0] * z_dim, [1.0] * z_dim  # unknown VAE: identity normalisation

"""Tiny random CLIP vision encoders (and the Wan 2.1 I2V / FLF2V DiTs that use them) for tests and
the example workflows, under ComfyUI's file names and in its key layout.

The CLIP vision tower is transformers' CLIPVisionModelWithProjection at width 48 (the image_dim of
the tiny I2V/FLF2V DiTs in tests/tiny_models.py) with ViT-H/14's token grid: 224 px images in 14 px
patches, so it gives 257 tokens per image as clip_vision_h does. Its head count (48 is not a
released CLIP width) travels in the safetensors "config" metadata entry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from tests.tiny_models import _randomise, write_dit

CLIP_VISION_TINY = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                        num_attention_heads=2, image_size=224, patch_size=14, projection_dim=32,
                        hidden_act="gelu", layer_norm_eps=1e-5)


def tiny_clip_vision(seed: int = 0):
    """A transformers CLIPVisionModelWithProjection with seeded weights."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return _randomise(CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_VISION_TINY)), seed, 0.05)


def write_clip_vision(path: Path, seed: int = 0, model=None, layout: str = "comfyui") -> Path:
    """The tiny CLIP vision model as ComfyUI's clip_vision_h.safetensors holds one (transformers
    keys, no prefix), or with layout="open_clip" in open_clip's `visual.*` keys."""
    from engine.models.safe_load import save_state_dict

    model = model if model is not None else tiny_clip_vision(seed)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    if layout == "open_clip":
        state = _to_open_clip(state)
    config = {"num_attention_heads": model.config.num_attention_heads,
              "hidden_act": model.config.hidden_act}
    return save_state_dict(state, Path(path), {"config": json.dumps(config)})


def _to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIP vision keys -> open_clip `visual.*` keys (inverse of the loader's table)."""
    top = {"embeddings.class_embedding": "class_embedding",
           "embeddings.patch_embedding.weight": "conv1.weight",
           "embeddings.position_embedding.weight": "positional_embedding",
           "pre_layrnorm.weight": "ln_pre.weight", "pre_layrnorm.bias": "ln_pre.bias",
           "post_layernorm.weight": "ln_post.weight", "post_layernorm.bias": "ln_post.bias"}
    block = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    out: dict[str, torch.Tensor] = {}
    layers = sorted({int(k.split(".")[3]) for k in state if k.startswith("vision_model.encoder.")})
    for key, value in state.items():
        if key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
            continue
        rest = key[len("vision_model."):]
        if rest in top:
            out[f"visual.{top[rest]}"] = value
    for n in layers:
        base = f"vision_model.encoder.layers.{n}."
        for kind in ("weight", "bias"):
            out[f"visual.transformer.resblocks.{n}.attn.in_proj_{kind}"] = torch.cat(
                [state[f"{base}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for src, dst in block.items():
                out[f"visual.transformer.resblocks.{n}.{dst}.{kind}"] = state[f"{base}{src}.{kind}"]
    return out


WORKFLOW_MODELS: dict[str, Callable[[Path], Path]] = {
    "clip_vision/clip_vision_h.safetensors": write_clip_vision,
    "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors": lambda p: write_dit(p, "i2v"),
    "diffusion_models/wan2.1_flf2v_720p_14B_fp16.safetensors": lambda p: write_dit(p, "flf2v"),
}

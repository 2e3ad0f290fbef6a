"""Tiny random Wan 2.2 TI2V-5B stand-ins under ComfyUI's file names: a DiT with 48 latent
channels (in and out, per-frame timesteps) and a Wan 2.2 VAE (z_dim 48, 2x2 patchified input,
residual blocks) in Wan's original key layouts. Configs as tests/test_wan_dit_parity.py TI2V and
tests/test_wan_vae_parity.py VAE22."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from tests.tiny_models import DIT_TINY, _randomise

DIT_TI2V = dict(DIT_TINY, in_channels=48, out_channels=48)
VAE22_TINY = dict(base_dim=8, decoder_base_dim=12, z_dim=48, dim_mult=[1, 2, 2], num_res_blocks=1,
                  temperal_downsample=[True, True], is_residual=True, in_channels=12,
                  out_channels=12, patch_size=2, scale_factor_spatial=8)


def write_ti2v_dit(path: Path, seed: int = 5) -> Path:
    """A Wan 2.2 TI2V DiT in ComfyUI's layout (as wan2.2_ti2v_5B_fp16.safetensors)."""
    from diffusers import WanTransformer3DModel

    from engine.models.safe_load import save_state_dict
    from engine.models.wan_dit import diffusers_to_original

    torch.manual_seed(seed)
    model = _randomise(WanTransformer3DModel(**DIT_TI2V), seed)
    original = diffusers_to_original(model.state_dict())
    meta = {"config": json.dumps({"num_attention_heads": model.config.num_attention_heads})}
    return save_state_dict({f"model.diffusion_model.{k}": v for k, v in original.items()},
                           Path(path), meta)


def write_vae22(path: Path, seed: int = 0) -> Path:
    """A Wan 2.2 VAE in Wan's original layout (as ComfyUI's wan2.2_vae.safetensors)."""
    from diffusers import AutoencoderKLWan

    from engine.models.safe_load import save_state_dict
    from engine.models.wan_vae import diffusers_to_original

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**VAE22_TINY).eval()
    return save_state_dict(diffusers_to_original(vae.state_dict(), dict(vae.config)), Path(path))


WORKFLOW_MODELS: dict[str, Callable[[Path], Path]] = {
    "diffusion_models/wan2.2_ti2v_5B_fp16.safetensors": write_ti2v_dit,
    "vae/wan2.2_vae.safetensors": write_vae22,
}

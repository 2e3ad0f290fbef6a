"""Shared pieces of the reelgraph-tiny training scripts: model configs, paths, checkpoints, logging.

The VAE and DiT configs here are the single source of truth for the bundled model; the exported
weight files carry them in their safetensors metadata ("config"), which is what the engine's
loaders read for facts that tensor shapes cannot tell (attention heads, latent statistics).

Checkpoints (`training/runs/<name>/last.pt`) hold plain tensors and numbers only, so they are
read back with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "training" / "runs"  # checkpoints and logs (git-ignored)
MODELS = REPO / "resources" / "models"
VAE_FILE = MODELS / "vae" / "reelgraph-tiny_vae.safetensors"
DIT_FILE = MODELS / "diffusion_models" / "reelgraph-tiny_dit.safetensors"

# diffusers AutoencoderKLWan (Wan 2.1 layout) shrunk, with 48 latent channels like Wan 2.2 so the
# DiT (48 in/out channels) is detected as a TI2V-style model and the sampler gives it known frames
# clean at per-frame timestep 0 (how it is trained). Deviation from Wan (MODEL_CARD.md): 4x spatial
# compression instead of 8x (one level fewer); temporal stays 4x. Trained for about an hour on this
# CPU, the 8x VAE blurred a 14-24 px shape away (held-out round trips kept the colour of 50% and the
# motion of 8% of clips).
VAE_CONFIG: dict[str, Any] = {
    "base_dim": 16, "z_dim": 48, "dim_mult": [1, 2, 2], "num_res_blocks": 1, "attn_scales": [],
    "temperal_downsample": [True, True], "dropout": 0.0,
}
# diffusers WanTransformer3DModel shrunk: 4 heads of 32, 4 blocks; text_dim = MiniLM's 384. Wan's
# own 2x2 patch: a token is 8x8 pixels here and 192 latent values, which a 128-wide residual stream
# can nearly hold (a 4x4 patch is 768 values; MODEL_CARD.md, "Why the DiT fails, and what was tried").
DIT_CONFIG: dict[str, Any] = {
    "patch_size": [1, 2, 2], "num_attention_heads": 4, "attention_head_dim": 32,
    "in_channels": VAE_CONFIG["z_dim"], "out_channels": VAE_CONFIG["z_dim"], "text_dim": 384,
    "freq_dim": 256, "ffn_dim": 512, "num_layers": 4, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None, "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024, "pos_embed_seq_len": None,
}
# Training runs in stages of the same network: "coarse" on 4x4 patches (4x fewer tokens, so text,
# timestep and layout are learnt cheaply), then "fine" on the 2x2 patches above, started from the
# coarse weights with the patch embedding and output projection resampled (FlexiViT-style), then
# "focus", the same 2x2 network with the object's latent cells weighted up in the loss, then
# "shape", which trains it on clips paired with their shape partners so the shape word counts.
COARSE_PATCH = [1, 4, 4]
STAGE_RUNS = {"coarse": "dit", "fine": "dit_fine", "focus": "dit_focus", "shape": "dit_shape"}  # run folders under RUNS
COARSE_DIT_FILE = RUNS / "dit" / "coarse_dit.safetensors"
# What the DiT's output means (diffusers' prediction_type names): "flow_prediction", the velocity
# noise - x0, as every Wan release; or "sample", the clean latent x0, which the engine's WanDiT
# turns into the sampler's velocity. "sample" was tried because the 128-wide residual stream cannot
# hold a 768-value patch's isotropic noise but can hold the nearly low-rank clean latents; it
# denoised better but laid out motion and shape worse, so the bundled weights predict the velocity
# (MODEL_CARD.md, "Why the DiT fails, and what was tried").
DIT_PREDICTION = "flow_prediction"
# With "sample", the loss is the x0 error weighted 1 / max(sigma, X0_WEIGHT_FLOOR)^2: the
# velocity-space loss at sigma >= 0.2, capped below (uncapped, the nearly clean samples dominated
# the gradient and motion from pure noise came out wrong).
X0_WEIGHT_FLOOR = 0.2


def save_checkpoint(path: Path, **items: Any) -> None:
    """Atomically write a checkpoint of tensors / state dicts / numbers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(items, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import numpy as np

    # numpy float scalars (e.g. a learning rate) are plain data; allow them, nothing else
    with torch.serialization.safe_globals([np._core.multiarray.scalar, np.dtype, np.dtypes.Float64DType]):
        return torch.load(path, map_location="cpu", weights_only=True)


def export_safetensors(path: Path, state: dict[str, torch.Tensor], config: dict[str, Any],
                       extra: dict[str, str] | None = None) -> None:
    """Write weights (fp32, contiguous) with the config as JSON in the metadata entry "config"."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": json.dumps(config), "model": "reelgraph-tiny", **(extra or {})}
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


class Log:
    """Progress lines to stdout and to a log file beside the checkpoints."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", encoding="utf-8")
        self.start = time.time()

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} +{time.time() - self.start:6.0f}s] {msg}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

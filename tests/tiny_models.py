"""Tiny random Wan checkpoints in the real key layouts, for tests and the example workflows.

Real Wan files cannot ship with the repository, so the tests write stand-ins: the same
architecture classes (diffusers' WanTransformer3DModel / AutoencoderKLWan, transformers' UMT5),
a few kilobytes of random weights, saved under ComfyUI's layouts and file names. Each writer takes
the target path and returns it. Weights are seeded: the same call writes the same file.

`WORKFLOW_MODELS` maps "kind/file name" -> writer for the models the example workflows in
workflows/ name (tests/test_workflows.py collects it from every tests/tiny_*.py module).
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Callable

import torch

# A text width of 32 matches the tiny UMT5 below; 128-wide heads need no head count in metadata,
# the narrower ones carry it in the safetensors "config" entry.
DIT_TINY = dict(patch_size=(1, 2, 2), text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
                num_attention_heads=2, attention_head_dim=32)
DIT_VARIANTS = {
    "t2v": dict(DIT_TINY, in_channels=16, out_channels=16),
    # Wan 2.2 I2V-A14B: image channels (4 mask + 16 latent), no CLIP image embedder
    "i2v22": dict(DIT_TINY, in_channels=36, out_channels=16),
    # Wan 2.1 I2V-14B: image channels and a CLIP image embedder (width 1280 in the real model);
    # the image tokens leave the embedder at the model width, so added_kv_proj_dim = 2 * 32
    "i2v": dict(DIT_TINY, in_channels=36, out_channels=16, image_dim=48, added_kv_proj_dim=64),
    # Wan 2.1 FLF2V-14B: as I2V plus a positional embedding over two images' tokens
    "flf2v": dict(DIT_TINY, in_channels=36, out_channels=16, image_dim=48, added_kv_proj_dim=64,
                  pos_embed_seq_len=2 * 257),
}
# 3 levels -> 4x spatial, 4x temporal (Wan's 4n+1 frame rule); z_dim 16 as Wan 2.1
VAE21_TINY = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1,
                  temperal_downsample=[True, True], scale_factor_spatial=4)
UMT5_TINY = dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                 relative_attention_num_buckets=8)
TOKENIZER_SENTENCES = ["a red circle moving right on a black background",
                       "a blue square moving left on a gray background",
                       "the camera pans slowly across a misty forest at dawn",
                       "a cat sleeps on a warm windowsill in soft light"]


def _randomise(module: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """Seeded noise on every parameter, so zero-initialised-by-design tensors carry values too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return module.eval()


def tiny_dit(variant: str = "t2v", seed: int = 0):
    """A diffusers WanTransformer3DModel of `variant` (a DIT_VARIANTS key) with seeded weights."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return _randomise(WanTransformer3DModel(**DIT_VARIANTS[variant]), seed)


def write_dit(path: Path, variant: str = "t2v", seed: int = 0, model=None) -> Path:
    """A Wan DiT in ComfyUI's layout (Wan's original keys under `model.diffusion_model.`)."""
    from engine.models.safe_load import save_state_dict
    from engine.models.wan_dit import diffusers_to_original

    model = model if model is not None else tiny_dit(variant, seed)
    original = diffusers_to_original(model.state_dict())
    meta = {"config": json.dumps({"num_attention_heads": model.config.num_attention_heads})}
    return save_state_dict({f"model.diffusion_model.{k}": v for k, v in original.items()},
                           Path(path), meta)


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(**VAE21_TINY).eval()


def write_vae(path: Path, seed: int = 0) -> Path:
    """A Wan 2.1 VAE in Wan's original layout (as ComfyUI's wan_2.1_vae.safetensors)."""
    from engine.models.safe_load import save_state_dict
    from engine.models.wan_vae import diffusers_to_original

    vae = tiny_vae(seed)
    return save_state_dict(diffusers_to_original(vae.state_dict(), dict(vae.config)), Path(path))


@functools.lru_cache(maxsize=1)
def tokenizer_bytes() -> bytes:
    """A small sentencepiece model (trained once per process, in a second)."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as folder:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(TOKENIZER_SENTENCES * 10), model_prefix=f"{folder}/sp",
            vocab_size=48, hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1,
            unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2)
        return Path(f"{folder}/sp.model").read_bytes()


def write_umt5(path: Path, seed: int = 0) -> Path:
    """A UMT5 encoder in ComfyUI's single-file layout with its tokenizer embedded
    (as umt5_xxl_fp8_e4m3fn_scaled.safetensors, minus the scaling)."""
    import sentencepiece as spm
    from safetensors.torch import save_file
    from transformers import UMT5Config, UMT5EncoderModel

    spm_bytes = tokenizer_bytes()
    vocab = spm.SentencePieceProcessor(model_proto=spm_bytes).get_piece_size()
    torch.manual_seed(seed)
    model = UMT5EncoderModel(UMT5Config(vocab_size=vocab, **UMT5_TINY, dropout_rate=0.0,
                                        feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                                        use_cache=False))
    _randomise(model, seed, 0.1)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    state["spiece_model"] = torch.frombuffer(bytearray(spm_bytes), dtype=torch.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return Path(path)


WORKFLOW_MODELS: dict[str, Callable[[Path], Path]] = {
    "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors": write_umt5,
    "vae/wan_2.1_vae.safetensors": write_vae,
    "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors": lambda p: write_dit(p, "t2v"),
}

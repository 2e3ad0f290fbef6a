"""Tiny Wan 2.2 A14B text-to-video experts under ComfyUI's file names, for
workflows/text_to_video_two_experts.json (collected by tests/test_workflows.py).

The two A14B experts share Wan 2.1 T2V's layout; different seeds make them different models, so a
graph that swapped them (or used one twice) gives a different video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.tiny_models import write_dit

WORKFLOW_MODELS: dict[str, Callable[[Path], Path]] = {
    "diffusion_models/wan2.2_t2v_high_noise_14B_fp16.safetensors":
        lambda p: write_dit(p, "t2v", seed=1),
    "diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors":
        lambda p: write_dit(p, "t2v", seed=2),
}


def _write_i2v_expert(path: Path, seed: int) -> Path:
    from tests.tiny_quantized import write_fp8_dit

    return write_fp8_dit(path, "i2v22", seed=seed)  # ComfyUI's *_fp8_scaled form


# Wan 2.2 I2V-A14B experts as ComfyUI's template names them, for
# workflows/image_to_video_two_experts.json
WORKFLOW_MODELS.update({
    "diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors":
        lambda p: _write_i2v_expert(p, seed=3),
    "diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors":
        lambda p: _write_i2v_expert(p, seed=4),
})

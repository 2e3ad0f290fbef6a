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

"""Memory policy: budgets for VRAM and RAM, model sizes, the residency planner, the model manager
and block swap.

- `budget`: what the machine has (auto-detected) and what the user allows (settings, per run).
- `sizes`: bytes of a loaded module (quantised layers count their own storage), the Wan
  footprints computed from diffusers configs on the meta device, activation estimates.
- `planner`: pure functions that decide, from footprints and budgets, what is on the GPU at each
  stage, how many DiT blocks swap, whether cfg is batched and whether the VAE tiles.
- `manager`: the one place weights move between devices (engine.devices.on_device uses it).
- `block_swap`: streams transformer blocks CPU -> GPU with prefetch (diffusers' group offloading).
- `oom`: recognising out-of-memory errors and saying what to change.

Nothing here imports Qt; torch is imported only by the modules that move tensors.
"""

from engine.memory.budget import (Budgets, MemorySettings, current_settings, detect_budgets,
                                  settings_scope, text_encoder_device)
from engine.memory.planner import (DiTPlan, Footprint, Job, RunPlan, plan_dit, plan_run,
                                   plan_text_encoder, plan_vae_tile)

__all__ = ["Budgets", "MemorySettings", "current_settings", "detect_budgets", "settings_scope",
           "text_encoder_device",
           "DiTPlan", "Footprint", "Job", "RunPlan", "plan_dit", "plan_run", "plan_text_encoder",
           "plan_vae_tile"]

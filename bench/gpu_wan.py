"""Wan on a CUDA device: Reelgraph's sampler against diffusers' WanPipeline, same random weights,
same process. Prints s/step and peak VRAM; never run as a test.

Cases (random weights in the real shapes; nothing is downloaded):
- wan2.1-t2v-1.3b bf16, 832x480, 81 frames, 50 steps, cfg 5: diffusers WanPipeline (cond and
  uncond as two calls) vs engine.sampling.sample with batch_cfg=True and batch_cfg=False;
- a 14B-sized DiT with fp8 weight storage (ScaledFP8Linear) under a 24 GB VRAM budget, and the
  same in bf16 with block swap under a 24 GB budget (engine.memory plans the swap).

    python bench/gpu_wan.py                 # all cases, 50 steps (about an hour on an H100)
    python bench/gpu_wan.py --steps 3       # timing per step is stable after a few steps
    python bench/gpu_wan.py --case 1.3b     # one case
Without CUDA it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _random_dit(name: str, dtype):
    import torch
    from diffusers import WanTransformer3DModel

    from engine.memory.sizes import WAN_CONFIGS

    with torch.device("meta"):
        module = WanTransformer3DModel(**WAN_CONFIGS[name])
    module = module.to_empty(device="cpu").to(dtype)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():  # seeded, small: finite activations at any depth
            p.copy_((torch.randn(p.shape, generator=gen) * 0.02).to(p.dtype))
    return module.eval()


def _wrap(module, dtype_name: str, fp8: bool = False):
    import torch

    from engine.dtypes import dtype_policy
    from engine.models.interfaces import ModelInfo
    from engine.models.wan_dit_model import WanDiT

    device = torch.device("cuda", torch.cuda.current_device())
    policy = dtype_policy(dtype_name, device, "dit")
    if fp8:
        from engine.models.quantized import keep_fp8_linears

        for name, m in list(module.blocks.named_modules()):
            if isinstance(m, torch.nn.Linear):
                m.weight.data = m.weight.data.to(torch.float8_e4m3fn)
        keep_fp8_linears(module.blocks, {}, policy.compute)
    info = ModelInfo(path="random", family="wan2.1-t2v", layout="diffusers", sha256="", config={})
    return WanDiT(module, info, "t2v", device, policy, offload=True)


def _inputs(width: int, height: int, frames: int):
    import torch

    from engine.models.interfaces import LatentGrid
    from engine.noise import init_noise
    from engine.values import Conditioning

    gen = torch.Generator().manual_seed(1)
    cond = Conditioning(embeds=torch.randn(1, 512, 4096, generator=gen) * 0.1,
                        mask=torch.ones(1, 512),
                        negative_embeds=torch.randn(1, 512, 4096, generator=gen) * 0.1,
                        negative_mask=torch.ones(1, 512))
    return init_noise(width, height, frames, 1, 0, LatentGrid(16, 4, 8, 2)), cond


def _measure(label: str, fn, steps: int) -> None:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / (1 << 30)
    print(f"{label:55s} {seconds / steps:8.3f} s/step   peak VRAM {peak:6.2f} GiB", flush=True)


def case_1_3b(args) -> None:
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    from engine.sampling import sample

    module = _random_dit("wan2.1-t2v-1.3b", torch.bfloat16)
    latent, cond = _inputs(args.width, args.height, args.frames)
    dit = _wrap(module, "bf16")
    for batch_cfg in (True, False):
        _measure(f"reelgraph 1.3B bf16 batch_cfg={batch_cfg}",
                 lambda: sample(dit, latent, cond, steps=args.steps, cfg=5.0, shift=3.0,
                                batch_cfg=batch_cfg), args.steps)
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                    flow_shift=3.0, num_train_timesteps=1000)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=AutoencoderKLWan(),
                       transformer=module.to("cuda"), scheduler=sched).to("cuda")
    _measure("diffusers WanPipeline 1.3B bf16 (two calls per step)",
             lambda: pipe(prompt_embeds=cond.embeds.to("cuda", torch.bfloat16),
                          negative_prompt_embeds=cond.negative_embeds.to("cuda", torch.bfloat16),
                          height=args.height, width=args.width, num_frames=args.frames,
                          num_inference_steps=args.steps, guidance_scale=5.0, output_type="latent"),
             args.steps)
    del pipe, module, dit
    torch.cuda.empty_cache()


def case_14b(args) -> None:
    import torch

    from engine.memory import settings_scope
    from engine.sampling import sample

    latent, cond = _inputs(args.width, args.height, args.frames)
    budget = {"vram_budget_bytes": 24 * 10**9}
    for label, fp8 in (("14B fp8 (24 GB budget)", True), ("14B bf16, block swap (24 GB budget)", False)):
        dit = _wrap(_random_dit("wan2.1-t2v-14b", torch.bfloat16), "bf16", fp8=fp8)
        with settings_scope(budget):
            _measure(f"reelgraph {label}",
                     lambda: sample(dit, latent, cond, steps=args.steps, cfg=5.0, shift=3.0),
                     args.steps)
        print(f"    plan: {dit.memory_plan}")
        del dit
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--case", choices=("all", "1.3b", "14b"), default="all")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu_wan.py needs CUDA (no CUDA device here); nothing measured",
              file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  "
          f"{args.width}x{args.height}x{args.frames}, {args.steps} steps, cfg 5")
    if args.case in ("all", "1.3b"):
        case_1_3b(args)
    if args.case in ("all", "14b"):
        case_14b(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

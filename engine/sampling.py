"""The flow-matching sampling loop: noise -> clean latent with one or two DiTs, under text and frame
conditioning.

Flow matching: x_s = (1 - s) * x0 + s * noise for a noise level (sigma) s in [0, 1]; the DiT predicts
the velocity v = noise - x0 at model timestep t = 1000 * s.

Samplers (`engine.choices.SAMPLERS`): "unipc" is Wan's reference solver (UniPC bh2, 2nd order, set
up exactly as diffusers' WanPipeline); "uni_pc" / "uni_pc_bh2" are ComfyUI's (UniPC bh1 / bh2, up to
3rd order); "euler" and "dpmpp_2m" (DPM-Solver++(2M)) are diffusers' flow schedulers; "lcm" is the
flow LCM step (x0 = x - s * v, re-noised to the next sigma with seeded noise), for distilled models
at 4-8 steps and cfg 1. The update math of every sampler but lcm is a diffusers scheduler; the loop
is ours, because it adds what the pipelines lack: frame masks, per-frame timesteps, SDEdit, step
ranges, two experts, interrupt and previews at every step.

Schedules (`engine.choices.SCHEDULERS`) are sigma lists ending in 0. "default": the sampler's own
diffusers schedule with `shift` (today's and every older graph's behaviour). "simple", "normal",
"beta": ComfyUI's definitions on ComfyUI's discrete flow table sigma_i = shift(i / 1000), i = 1..1000
(ModelSamplingSD3's shift: shift(t) = shift * t / (1 + (shift - 1) * t)).

Invariants:
- All update math runs in float32 on the CPU tensors the model protocol returns.
- Classifier-free guidance v = v_neg + cfg * (v_pos - v_neg); cfg == 1 makes exactly one model call
  per step (the negative pass is skipped), otherwise two, or one call on a doubled batch (cond
  and uncond together) when cfg is batched: `batch_cfg` True / False forces it, None lets the
  model's memory plan decide (engine.memory.planner: batched when it fits; a model without a
  `plan_memory` runs the two calls). Prompts of different token lengths always run as two calls
  (padding would change what the model attends to).
- Before an expert is first loaded, a model with `plan_memory` (WanDiT, also under LoRAs) plans
  its residency for this latent: whole on the device or block swap (engine.memory).
- Two experts (Wan 2.2 A14B): the step at model timestep t uses `model` and `cfg` while
  t >= boundary * 1000 and `model_low_noise` and `cfg_low_noise` after, as diffusers' WanPipeline with
  `transformer_2` and `boundary_ratio`. One scheduler runs across the switch (multistep history is
  kept). Only the expert in use is inside its `loaded()` context; the other stays offloaded.
- Step range (ComfyUI's KSamplerAdvanced): steps [start, end) of the full schedule run. A range that
  stops early returns its latent with leftover noise and meta["sigma"] = the sigma it stopped at, or,
  without `return_with_leftover_noise`, jumps the last step to sigma 0 (a clean latent). Multistep
  samplers start their history afresh in each node, as ComfyUI does: only the one-node two-expert
  form equals diffusers' pipeline step for step with UniPC/DPM++; Euler and lcm chain exactly.
- Where the loop starts, by the latent's meta["sigma"] (missing = 0, clean):
  1.0, pure noise (NoiseInit, image/video conditioning nodes): used as is from step 0, except that
  with `add_noise` and a `seed` other than 0 it is re-drawn with per-item seed
  (latent seed + k) XOR fmix64(seed), so both NoiseInit's and DiTDenoise's seed change the video and
  seed 0 keeps old graphs' noise bit for bit. 0 < sigma < 1, leftover noise from a DiTDenoise: only
  continued with `add_noise` off, at the step whose sigma it carries. 0, clean (VAEEncode, a finished
  DiTDenoise): noised to the first step's sigma with noise from `seed` (SDEdit): x = (1 - s0) * x0 +
  s0 * noise; with denoise < 1 the first steps of the `steps`-step schedule are skipped (diffusers'
  img2img rule: int(steps * denoise) steps run).
- Frame masks: latent frames with frame_mask 1 are known. Between steps they hold their clean value
  (`latent.known`) and the result holds it bit-for-bit. A model trained with per-frame timesteps
  (`uses_frame_timesteps`: Wan 2.2 TI2V) sees them clean at timestep 0 in a (B, T') timestep; any
  other model sees them re-noised to the current sigma with a fixed noise from `seed` (the
  replacement method), with a scalar timestep. Each expert is asked which it takes.
- Noise the loop draws is float32 on the CPU from per-item seeds: SDEdit and replacement noise from
  seed + k; lcm's step-i noise from a hash of the item's base seed and the global step index, so a
  chain of step ranges re-draws exactly what one node would.
- `progress(step, total, x0_estimate)` and `check_interrupt()` are called at least once per step.
- Nothing non-finite passes: NaN or inf in the inputs, in a step's velocity (checked after every
  model call: one reduction) or in the result is a NodeError naming its source and the fix.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from engine.choices import SAMPLERS, SCHEDULERS
from engine.errors import NodeError
from engine.models.interfaces import DiffusionModel, model_label, non_finite, non_finite_fix
from engine.noise import seeded_noise
from engine.values import Conditioning, Latent

__all__ = ["SAMPLERS", "SCHEDULERS", "sample", "make_scheduler", "make_schedule", "schedule_sigmas",
           "default_boundary", "uses_frame_timesteps"]

NUM_TRAIN_TIMESTEPS = 1000  # model timestep = 1000 * sigma (Wan and every diffusers flow model)
END_STEP = 10000  # end_step at or above this (or -1) means "to the end", as ComfyUI's default
BOUNDARY_T2V, BOUNDARY_I2V = 0.875, 0.9  # Wan 2.2 A14B boundary_ratio (diffusers' model configs)
_MASK64 = 2**64 - 1
# UniPC-bh1's B(h) = h is infinite on a step to sigma 0 (NaN in diffusers); its last step stops
# here instead, as ComfyUI's uni_pc stops at 0.001 (the latent keeps 1e-4 of noise, invisible)
BH1_LAST_SIGMA = 1e-4

ProgressFn = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class Schedule:
    """The steps one sampling run takes.

    timesteps (n,): model timesteps of the steps that run; sigmas (n + 1,): the noise level before
    each of them and after the last (0, or the leftover level a step range stops at); skipped:
    steps of the full schedule before the first that runs; total: steps of the full schedule.
    """

    timesteps: torch.Tensor
    sigmas: torch.Tensor
    skipped: int
    total: int

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])


# ---- schedulers -------------------------------------------------------------------------------

def _unknown_sampler(sampler: str) -> NodeError:
    return NodeError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}",
                     input="sampler")


def make_scheduler(sampler: str, shift: float) -> Any:
    """A fresh diffusers scheduler for `sampler` with its default schedule under `shift`
    (schedulers are stateful: one per run). lcm's schedule is Euler's (its step is ours)."""
    # imported here: diffusers costs seconds to import, and every worker/CLI start loads this module
    from diffusers import (DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,
                           UniPCMultistepScheduler)

    if sampler in ("euler", "lcm"):
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    if sampler == "unipc":
        # The rest of the config (solver_order=2, bh2, lower_order_final) is diffusers' default,
        # which is also what the Wan-AI diffusers checkpoints ship.
        return UniPCMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS,
                                       prediction_type="flow_prediction", use_flow_sigmas=True,
                                       flow_shift=shift)
    if sampler in ("uni_pc", "uni_pc_bh2"):
        # ComfyUI's uni_pc: UniPC-bh1 of order 3 (min(3, steps - 1)), lower order at the end;
        # uni_pc_bh2 the same with the bh2 corrector. Orders are capped in `_scheduler_on`.
        return UniPCMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS,
                                       prediction_type="flow_prediction", use_flow_sigmas=True,
                                       flow_shift=shift, solver_order=3, lower_order_final=True,
                                       solver_type="bh1" if sampler == "uni_pc" else "bh2")
    if sampler == "dpmpp_2m":
        # DPM-Solver++(2M) in the flow parametrisation (alpha = 1 - sigma); first order on the
        # first and the final (to 0) step, as ComfyUI's dpmpp_2m
        return DPMSolverMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS,
                                           prediction_type="flow_prediction", use_flow_sigmas=True,
                                           flow_shift=shift, algorithm_type="dpmsolver++",
                                           solver_order=2, lower_order_final=True,
                                           final_sigmas_type="zero")
    raise _unknown_sampler(sampler)


def make_schedule(scheduler: Any, steps: int, denoise: float = 1.0) -> Schedule:
    """Set `scheduler` to `steps` steps and keep the last int(steps * denoise) of them."""
    scheduler.set_timesteps(steps, device="cpu")
    kept = _kept_steps(steps, denoise)
    start = steps - kept
    scheduler.set_begin_index(start)
    return Schedule(timesteps=scheduler.timesteps[start:].float(),
                    sigmas=scheduler.sigmas[start:].float(), skipped=start, total=steps)


def _kept_steps(steps: int, denoise: float) -> int:
    # the epsilon keeps 0.7 * 10 from landing on 6.999...; otherwise diffusers' img2img rule
    return min(int(steps * denoise + 1e-6), steps)


def flow_shift(t: np.ndarray | float, shift: float) -> np.ndarray | float:
    """ModelSamplingSD3's time shift of flow sigmas: shift * t / (1 + (shift - 1) * t)."""
    return shift * t / (1 + (shift - 1) * t)


def comfy_sigma_table(shift: float) -> np.ndarray:
    """ComfyUI's discrete flow table for Wan: sigma_i = shift(i / 1000), i = 1..1000 (float64)."""
    return flow_shift(np.arange(1, NUM_TRAIN_TIMESTEPS + 1, dtype=np.float64) / NUM_TRAIN_TIMESTEPS,
                      shift)


def schedule_sigmas(scheduler: str, steps: int, shift: float,
                    sampler: str = "euler") -> torch.Tensor:
    """The full sigma list (float32, ending in 0) of `scheduler` for `steps` steps under `shift`.

    simple: every (1000 / steps)-th entry of the table from the top. normal: the model sigma of
    timesteps spaced evenly from sigma_max to sigma_min (ComfyUI maps sigma_min back through the
    shift once more, so its end sits above the table's; reproduced). beta: table entries at the
    Beta(0.6, 0.6) quantiles of 1 - i/steps, repeats dropped (so it may have fewer steps).
    default: the diffusers scheduler's own list for `sampler`.
    """
    if scheduler == "default":
        sched = make_scheduler(sampler, shift)
        sched.set_timesteps(steps, device="cpu")
        return sched.sigmas.float()
    table = comfy_sigma_table(shift)
    n = len(table)
    if scheduler == "simple":
        sigmas = [table[-(1 + int(x * n / steps))] for x in range(steps)]
    elif scheduler == "normal":
        t_max, t_min = table[-1] * NUM_TRAIN_TIMESTEPS, table[0] * NUM_TRAIN_TIMESTEPS
        ts = np.linspace(t_max, t_min, steps)
        sigmas = list(flow_shift(ts / NUM_TRAIN_TIMESTEPS, shift))
        if math.isclose(sigmas[-1], 0.0, abs_tol=1e-5):  # never for shift > 0; ComfyUI's rule
            sigmas = list(flow_shift(np.linspace(t_max, t_min, steps + 1) / NUM_TRAIN_TIMESTEPS,
                                     shift))[:-1]
    elif scheduler == "beta":
        quantiles = 1.0 - np.linspace(0.0, 1.0, steps, endpoint=False)
        idx = [int(round(_beta_ppf(float(q), 0.6, 0.6) * (n - 1))) for q in quantiles]
        idx = [i for k, i in enumerate(idx) if k == 0 or i != idx[k - 1]]
        sigmas = [table[i] for i in idx]
    else:
        raise NodeError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}",
                        input="scheduler")
    return torch.tensor([*sigmas, 0.0], dtype=torch.float32)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below the mean; use symmetry
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                 + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def _beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of `_betainc` in x by bisection (the CDF is monotone; 100 halvings reach 1e-30)."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _scheduler_on(sampler: str, sigmas: torch.Tensor) -> Any:
    """A fresh diffusers scheduler for `sampler` set to the sigma list `sigmas` (n + 1, ending in
    0; the list already carries the shift)."""
    head = sigmas[:-1].double().numpy()
    n = len(head)
    sched = make_scheduler(sampler, 1.0)  # shift 1: the list is shifted already
    if sampler in ("euler", "lcm"):
        sched.set_timesteps(sigmas=head.astype(np.float32).tolist(), device="cpu")
    elif sampler in ("unipc", "uni_pc", "uni_pc_bh2"):
        if sampler != "unipc":  # ComfyUI's order: min(3, steps - 1), at least 1
            sched.register_to_config(solver_order=max(1, min(3, n - 1)))
        sched.set_timesteps(sigmas=head.copy(), device="cpu")  # UniPC wants an array
    elif sampler == "dpmpp_2m":
        # diffusers' DPM-Solver takes no sigma list: set the count, then its list. A first sigma of
        # 1 (alpha 0) would make log-SNR infinite; nudged down as diffusers' UniPC does
        sched.set_timesteps(n, device="cpu")
        head = head.copy()
        if abs(head[0] - 1.0) < 1e-6:
            head[0] -= 1e-6
        sched.sigmas = torch.from_numpy(np.concatenate([head, [0.0]]).astype(np.float32))
        sched.timesteps = torch.from_numpy(head * NUM_TRAIN_TIMESTEPS).to(torch.int64)
    else:
        raise _unknown_sampler(sampler)
    return _bh1_last_step(sched)


def _bh1_last_step(sched: Any) -> Any:
    if getattr(sched.config, "solver_type", None) == "bh1" and float(sched.sigmas[-1]) == 0.0:
        sched.sigmas[-1] = BH1_LAST_SIGMA
    return sched


def step_range(total: int, steps: int, denoise: float, start_step: int,
               end_step: int) -> tuple[int, int]:
    """[start, end) of the `total`-step schedule that runs, or a NodeError naming the input."""
    if end_step == -1 or end_step >= END_STEP:
        end = total
    elif end_step < -1:
        raise NodeError(f"end_step must be -1 or {END_STEP} (to the end) or a step from 1 to "
                        f"{total}; got {end_step}", input="end_step")
    elif end_step > total:
        raise NodeError(f"end_step {end_step} is past the end of the {total}-step schedule; use "
                        f"{total} or {END_STEP} (to the end), or raise steps", input="end_step")
    else:
        end = end_step
    if start_step < 0:
        raise NodeError(f"start_step must be 0 or more; got {start_step}", input="start_step")
    if start_step >= total:
        raise NodeError(f"start_step {start_step} is past the end of the {total}-step schedule "
                        f"(the last step is {total - 1}); lower start_step or raise steps",
                        input="start_step")
    skipped = total - _kept_steps(total, denoise) if denoise < 1.0 else 0
    if skipped and start_step:
        raise NodeError("denoise below 1 and start_step both choose where sampling starts; set "
                        "denoise to 1 and use start_step (or start_step 0 and denoise)",
                        input="denoise")
    start = max(start_step, skipped)
    if start >= end and start < total:
        raise NodeError(f"start_step {start} is not before end_step {end}: the range runs no "
                        f"step; make end_step larger than start_step", input="start_step"
                        if start_step else "end_step")
    return start, end


def default_boundary(model: Any) -> float:
    """Wan 2.2 A14B's switch point for `model`'s family: 0.9 for image-to-video experts (image
    channels or an image embedder), 0.875 for text-to-video."""
    variant = getattr(model, "variant", None)
    image = variant in ("i2v", "flf2v") or (getattr(model, "in_channels", 0)
                                            > getattr(model, "out_channels", 0))
    return BOUNDARY_I2V if image else BOUNDARY_T2V


# ---- seeds ------------------------------------------------------------------------------------

def _fmix64(z: int) -> int:
    """MurmurHash3's 64-bit finaliser: a bijection with fmix64(0) == 0."""
    z &= _MASK64
    z = ((z ^ (z >> 33)) * 0xFF51AFD7ED558CCD) & _MASK64
    z = ((z ^ (z >> 33)) * 0xC4CEB9FE1A85EC53) & _MASK64
    return z ^ (z >> 33)


def _draw(shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """Standard normal (len(seeds), *shape) float32 on the CPU, item k from seeds[k]."""
    return torch.stack([torch.randn(shape, dtype=torch.float32,
                                    generator=torch.Generator().manual_seed(s & _MASK64))
                        for s in seeds])


def base_seeds(latent: Latent, seed: int, batch: int) -> list[int]:
    """Per-item seeds of the noise DiTDenoise draws for the whole run: (latent seed + k) XOR
    fmix64(seed) when the latent says which seed drew it (NoiseInit), else seed + k."""
    latent_seed = latent.meta.get("seed")
    if isinstance(latent_seed, int) and not isinstance(latent_seed, bool):
        return [((latent_seed + k) & _MASK64) ^ _fmix64(seed) for k in range(batch)]
    return [(int(seed) + k) & _MASK64 for k in range(batch)]


def _step_seed(base: int, step: int) -> int:
    """Seed of the noise drawn after global step `step` (splitmix64 of base + (step + 1) * golden)."""
    return _fmix64(base + (step + 1) * 0x9E3779B97F4A7C15)


# ---- the loop ---------------------------------------------------------------------------------

class _Residency:
    """Holds at most one model inside its `loaded()` context (the expert in use)."""

    def __init__(self) -> None:
        self.current: Any = None
        self.stack: contextlib.ExitStack | None = None

    def use(self, model: Any) -> None:
        if model is self.current:
            return
        self.close()
        stack = contextlib.ExitStack()
        loaded = getattr(model, "loaded", None)
        if callable(loaded):
            stack.enter_context(loaded())
        self.current, self.stack = model, stack

    def close(self) -> None:
        if self.stack is not None:
            stack, self.stack, self.current = self.stack, None, None
            stack.close()


def sample(model: DiffusionModel, latent: Latent, cond: Conditioning, *, steps: int, cfg: float,
           shift: float, sampler: str = "unipc", seed: int = 0, denoise: float = 1.0,
           image_latent: torch.Tensor | None = None, progress: ProgressFn | None = None,
           check_interrupt: Callable[[], None] | None = None, scheduler: str = "default",
           start_step: int = 0, end_step: int = -1, add_noise: bool = True,
           return_with_leftover_noise: bool = False,
           model_low_noise: DiffusionModel | None = None, boundary: float | None = None,
           cfg_low_noise: float | None = None, batch_cfg: bool | None = None) -> Latent:
    """Denoise `latent` with `model` under `cond`; returns a clean Latent (meta["sigma"] = 0), or,
    for a step range that stops early with `return_with_leftover_noise`, the noisy latent with
    meta["sigma"] = its noise level.

    `image_latent` (B, C', T', H', W') is handed to the model unchanged (I2V channel conditioning);
    by default it is the latent's own `channel_cond`. The conditioning's `image_embeds` (CLIP image
    tokens) go to the model on both guidance passes.
    `model_low_noise` (Wan 2.2 A14B's second expert) takes the steps with timestep below
    `boundary` * 1000 (None: `default_boundary(model)`) with guidance `cfg_low_noise` (None: cfg).
    `progress(step, total, x0)` gets the current clean estimate (B, C, T', H', W') after each step.
    `batch_cfg`: None (automatic, from the memory plan), True / False: cond and uncond in one call
    of a doubled batch, or in two calls.
    """
    cfg_low = cfg if cfg_low_noise is None else float(cfg_low_noise)
    _check_args(steps, cfg, shift, denoise, cfg_low)
    if sampler not in SAMPLERS:
        raise _unknown_sampler(sampler)
    if model_low_noise is not None:
        boundary = default_boundary(model) if boundary is None else float(boundary)
        if not 0.0 <= boundary <= 1.0:
            raise NodeError(f"boundary must be between 0 and 1 (a fraction of the 1000 model "
                            f"timesteps); got {boundary}", input="boundary")
    if image_latent is None:
        image_latent = latent.channel_cond

    full = schedule_sigmas(scheduler, steps, shift, sampler)  # (total + 1,)
    total = int(full.shape[0]) - 1
    start, end = step_range(total, steps, denoise, start_step, end_step)
    leftover = end < total and return_with_leftover_noise
    if scheduler == "default" and (leftover or end == total):
        sched_obj = make_scheduler(sampler, shift)  # exactly the diffusers set-up older graphs ran
        sched_obj.set_timesteps(total, device="cpu")
        _bh1_last_step(sched_obj)
    else:
        # a range that stops early without leftover noise takes its last step to 0 (ComfyUI)
        run_sigmas = full if leftover or end == total else torch.cat([full[:end], full.new_zeros(1)])
        sched_obj = _scheduler_on(sampler, run_sigmas)
    sched_obj.set_begin_index(start)
    timesteps = sched_obj.timesteps[start:end].float()
    sigmas = sched_obj.sigmas[start:end + 1].float()

    x0 = latent.samples.float()  # (B, C, T', H', W')
    batch, _, frames = x0.shape[:3]
    known, mask = _known_frames(latent)  # (B, C, T', H', W') and (B, 1, T', 1, 1) bool, or None
    noise = seeded_noise(tuple(x0.shape[1:]), seed, batch)  # SDEdit and replacement noise
    bases = base_seeds(latent, seed, batch)
    level = float(latent.meta.get("sigma", 0.0) or 0.0)
    x = _start_latent(x0, level, add_noise, seed, bases, noise, sigmas, start, denoise, steps)
    if mask is not None:
        x = torch.where(mask, known, x)

    guided = cfg != 1.0 or (model_low_noise is not None and cfg_low != 1.0)
    text = _text_inputs(cond, batch, cfg if cfg != 1.0 else cfg_low if guided else 1.0)
    _check_finite_inputs(x0, known, text, image_latent)
    residency = _Residency()
    batched: dict[int, bool] = {}  # id(expert) -> cfg batched (planned when first used)
    try:
        with torch.no_grad():
            for i, t in enumerate(timesteps):
                if check_interrupt is not None:
                    check_interrupt()
                high = model_low_noise is None or float(t) >= boundary * NUM_TRAIN_TIMESTEPS
                expert, scale = (model, cfg) if high else (model_low_noise, cfg_low)
                if id(expert) not in batched:  # plan before the expert is loaded
                    batched[id(expert)] = _plan_memory(expert, tuple(x.shape), scale != 1.0,
                                                       batch_cfg, text)
                residency.use(expert)  # the other expert leaves the device first
                s = sigmas[i]
                x_in, timestep = x, t.expand(batch).clone()  # timestep (B,)
                frame_timesteps = uses_frame_timesteps(expert)
                if mask is not None and frame_timesteps:
                    # known frames are clean: tell the model so per frame; (B, T')
                    timestep = t * (~mask.view(batch, frames)).float()
                elif mask is not None:
                    x_in = torch.where(mask, (1.0 - s) * known + s * noise, x)
                v = _guided_velocity(expert, x_in, timestep, text, scale, image_latent,
                                     batched[id(expert)])
                if (bad := non_finite(v)) is not None:  # one reduction per step
                    raise NodeError(f"{model_label(expert, 'DiT')} produced {bad} at step {i + 1} of "
                                    f"{len(timesteps)}: {non_finite_fix(expert)}",
                                    input="model" if high else "model_low_noise")
                if mask is not None and frame_timesteps:
                    v = v.masked_fill(mask, 0.0)  # zero velocity keeps a clean frame where it is
                if sampler == "lcm":
                    x = _lcm_step(x_in, v, s, sigmas[i + 1], bases, start + i)
                else:
                    x = sched_obj.step(v, t, x_in, return_dict=False)[0].float()
                if mask is not None:
                    x = torch.where(mask, known, x)
                if progress is not None:
                    progress(i + 1, len(timesteps), x_in - s * v)  # clean estimate for the preview
    finally:
        residency.close()

    if (bad := non_finite(x)) is not None:  # finite velocities, yet the updates overflowed
        raise NodeError(f"sampling ended with {bad} in the latent: {non_finite_fix(model)}",
                        input="model")
    meta = dict(latent.meta)
    record: dict[str, Any] = {"steps": steps, "cfg": cfg, "shift": shift, "sampler": sampler,
                              "scheduler": scheduler, "seed": int(seed), "denoise": denoise,
                              "start_step": start, "end_step": end, "add_noise": bool(add_noise)}
    if model_low_noise is not None:
        record.update(boundary=boundary, cfg_low_noise=cfg_low)
    meta.update(sigma=float(sigmas[-1]) if leftover else 0.0, sampling=record)  # bh1's 1e-4 is 0
    return Latent(samples=x, frame_mask=latent.frame_mask, known=latent.known, fps=latent.fps,
                  meta=meta, channel_cond=latent.channel_cond)


def _start_latent(x0: torch.Tensor, level: float, add_noise: bool, seed: int, bases: list[int],
                  noise: torch.Tensor, sigmas: torch.Tensor, start: int, denoise: float,
                  steps: int) -> torch.Tensor:
    """The latent at the first step's sigma, from the input latent at noise level `level`."""
    if level >= 1.0:  # pure noise
        if start:
            what = "denoise below 1" if denoise < 1.0 else f"start_step {start}"
            raise NodeError(f"{what} needs a clean latent (from VAEEncode) or the leftover-noise "
                            "latent of a DiTDenoise, but this latent is pure noise (from NoiseInit "
                            "or a conditioning node); set denoise to 1 and start_step to 0",
                            input="denoise" if denoise < 1.0 else "start_step")
        if add_noise and seed != 0:  # re-drawn from both seeds; seed 0 keeps the latent's noise
            return _draw(tuple(x0.shape[1:]), bases)
        return x0
    if level > 0.0:  # leftover noise from a DiTDenoise step range
        if add_noise:
            raise NodeError(f"this latent still carries noise (sigma {level:.4g}, from a "
                            "DiTDenoise that returned with leftover noise); set add_noise off to "
                            "continue it", input="add_noise")
        s0 = float(sigmas[0]) if sigmas.numel() > 1 else 0.0
        if not math.isclose(level, s0, abs_tol=1e-4):
            raise NodeError(f"this latent was left at sigma {level:.4g} but start_step {start} of "
                            f"this schedule is at sigma {s0:.4g}; use the same steps, shift, sampler "
                            "and scheduler as the node before it, and its end_step as start_step",
                            input="start_step")
        return x0
    if sigmas.numel() <= 1:  # denoise rounds to no steps: the clean latent as it is
        return x0
    if not add_noise:
        raise NodeError("add_noise is off but this latent is clean (from VAEEncode or a finished "
                        "DiTDenoise): turn add_noise on to refine it, or feed it the latent of a "
                        "DiTDenoise with return_with_leftover_noise", input="add_noise")
    s0 = sigmas[0]
    return (1.0 - s0) * x0 + s0 * noise  # SDEdit: the clean input noised to the first kept sigma


def _lcm_step(x: torch.Tensor, v: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor,
              bases: list[int], step: int) -> torch.Tensor:
    """Flow LCM: jump to the clean estimate, then re-noise it to the next sigma with fresh noise."""
    x0 = x - s * v
    if float(s_next) <= 0.0:
        return x0
    noise = _draw(tuple(x.shape[1:]), [_step_seed(b, step) for b in bases])
    return (1.0 - s_next) * x0 + s_next * noise


def uses_frame_timesteps(model: DiffusionModel) -> bool:
    """Whether known frames go to `model` clean with per-frame timestep 0 (else re-noised).

    A model says so with a `frame_timesteps` attribute; without one, a Wan model of variant "ti2v"
    (Wan 2.2 TI2V, trained that way) does, and every other model does not.
    """
    flag = getattr(model, "frame_timesteps", None)
    if flag is not None:
        return bool(flag)
    return getattr(model, "variant", None) == "ti2v"


def _check_args(steps: int, cfg: float, shift: float, denoise: float, cfg_low: float) -> None:
    if steps < 1:
        raise NodeError(f"steps must be at least 1; got {steps}", input="steps")
    for name, value in (("cfg", cfg), ("cfg_low_noise", cfg_low)):
        if not math.isfinite(value) or value < 0:
            raise NodeError(f"{name} must be a finite number >= 0 (1 turns guidance off); got "
                            f"{value}", input=name)
    if not shift > 0:
        raise NodeError(f"shift must be above 0 (Wan uses 3 at 480p, 5 at 720p); got {shift}",
                        input="shift")
    if not 0.0 <= denoise <= 1.0:
        raise NodeError(f"denoise must be between 0 and 1; got {denoise}", input="denoise")


def _check_finite_inputs(x0: torch.Tensor, known: torch.Tensor | None,
                         text: dict[str, torch.Tensor | None],
                         image_latent: torch.Tensor | None) -> None:
    """NaN or inf going in would come out as NaN blamed on the DiT: name where it came from."""
    upstream = "the node that made it (a VAE or a sampler) computed it"
    checks = [(x0, "the latent", "latent", upstream),
              (known, "the latent's known frames", "latent", upstream),
              (image_latent, "the image latent", "latent", "the VAE that encoded the image computed it"),
              *((text[k], "the conditioning", "conditioning",
                 "the text encoder computed it; fp16 overflows in T5 — load it in bf16 or fp32")
                for k in ("pos", "neg") if k in text),
              (text.get("image"), "the conditioning's image embedding", "conditioning",
               "the CLIP vision encoder computed it")]
    for tensor, what, input_name, source in checks:
        if tensor is not None and (bad := non_finite(tensor)) is not None:
            raise NodeError(f"{what} given to the sampler contains {bad}: {source}", input=input_name)


def _known_frames(latent: Latent) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Clean known latents and a broadcastable bool mask (B, 1, T', 1, 1), or (None, None)."""
    if latent.frame_mask is None or not bool((latent.frame_mask > 0.5).any()):
        return None, None
    batch, _, frames = latent.samples.shape[:3]
    fm = latent.frame_mask
    if fm.shape[-1] != frames or fm.shape[0] not in (1, batch):
        raise NodeError(f"latent frame mask has shape {tuple(fm.shape)} but the latent has {batch} "
                        f"item(s) of {frames} latent frames", input="latent")
    if latent.known is None:
        raise NodeError("latent has known frames in its mask but no clean values for them",
                        input="latent")
    mask = (fm > 0.5).expand(batch, frames).reshape(batch, 1, frames, 1, 1)
    known = latent.known.float().expand_as(latent.samples)
    return known, mask


def _text_inputs(cond: Conditioning, batch: int, cfg: float) -> dict[str, torch.Tensor | None]:
    """Positive (and, when guiding, negative) embeddings and masks expanded to the latent batch."""

    def fit(t: torch.Tensor | None, what: str) -> torch.Tensor | None:
        if t is None or t.shape[0] == batch:
            return t
        if t.shape[0] == 1:
            return t.expand(batch, *t.shape[1:])
        raise NodeError(f"conditioning has {t.shape[0]} {what}s but the latent batch is {batch}; "
                        "use one prompt or one per batch item", input="conditioning")

    out = {"pos": fit(cond.embeds.float(), "prompt"), "pos_mask": fit(cond.mask, "prompt"),
           "image": fit(cond.image_embeds.float() if cond.image_embeds is not None else None,
                        "image embedding")}
    if cfg != 1.0:
        if cond.negative_embeds is None:
            raise NodeError("cfg above 1 needs a negative prompt in the conditioning (an empty one "
                            "works); give TextEncode a negative prompt or set cfg to 1",
                            input="conditioning")
        out["neg"] = fit(cond.negative_embeds.float(), "negative prompt")
        out["neg_mask"] = fit(cond.negative_mask, "negative prompt")
    return out


def _plan_memory(model: Any, shape: tuple[int, ...], guided: bool, batch_cfg: bool | None,
                 text: dict[str, torch.Tensor | None]) -> bool:
    """Whether `model`'s guidance runs as one batched call; a model with `plan_memory` (found
    through LoRA wrappers' `base`) also plans its residency for latents of `shape` here."""
    owner, lora_bytes = model, 0
    while not callable(getattr(owner, "plan_memory", None)) and getattr(owner, "base", None) is not None:
        lora_bytes += int(getattr(owner, "nbytes", 0) or 0)  # LoRA tensors staged on the device
        owner = owner.base
    planner = getattr(owner, "plan_memory", None)
    batched = bool(batch_cfg)
    if callable(planner):
        batched = bool(planner(shape, guided, lora_bytes=lora_bytes, batch_cfg=batch_cfg).batch_cfg)
    same_length = (text.get("neg") is None or text["pos"] is None
                   or text["pos"].shape[1:] == text["neg"].shape[1:])
    return guided and batched and same_length


def _guided_velocity(model: DiffusionModel, x: torch.Tensor, timestep: torch.Tensor,
                     text: dict[str, torch.Tensor | None], cfg: float,
                     image_latent: torch.Tensor | None, batched: bool = False) -> torch.Tensor:
    """(B, C, T', H', W') velocity with classifier-free guidance, in float32; `batched`: cond and
    uncond as one call of batch 2B (the model sees them stacked, positive first)."""
    if cfg != 1.0 and batched:
        b = x.shape[0]
        masks = [text["pos_mask"], text["neg_mask"]]
        if any(m is not None for m in masks):
            masks = [m if m is not None else torch.ones(text[k].shape[:2])
                     for m, k in zip(masks, ("pos", "neg"))]
            mask = torch.cat([m.reshape(b, -1).to(masks[0].dtype) for m in masks])
        else:
            mask = None
        two = lambda t: None if t is None else torch.cat([t, t])  # noqa: E731
        v = _velocity(model, two(x), two(timestep), torch.cat([text["pos"], text["neg"]]), mask,
                      two(image_latent), two(text["image"]))
        v_pos, v_neg = v[:b], v[b:]
        return v_neg + cfg * (v_pos - v_neg)
    v_pos = _velocity(model, x, timestep, text["pos"], text["pos_mask"], image_latent, text["image"])
    if cfg == 1.0:
        return v_pos
    v_neg = _velocity(model, x, timestep, text["neg"], text["neg_mask"], image_latent, text["image"])
    return v_neg + cfg * (v_pos - v_neg)


def _velocity(model: DiffusionModel, x: torch.Tensor, timestep: torch.Tensor,
              context: torch.Tensor | None, context_mask: torch.Tensor | None,
              image_latent: torch.Tensor | None,
              image_embeds: torch.Tensor | None = None) -> torch.Tensor:
    extra = {"image_embeds": image_embeds} if image_embeds is not None else {}
    v = model.predict_velocity(x, timestep, context, context_mask=context_mask,
                               image_latent=image_latent, **extra)
    if tuple(v.shape) != tuple(x.shape):
        raise NodeError(f"the DiT returned a velocity of shape {tuple(v.shape)} for a latent of "
                        f"shape {tuple(x.shape)}; use the VAE that belongs to this DiT", input="model")
    return v.float()

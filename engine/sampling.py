"""The flow-matching sampling loop: noise -> clean latent with a DiT, under text and frame conditioning.

Flow matching: x_s = (1 - s) * x0 + s * noise for a noise level (sigma) s in [0, 1]; the DiT predicts
the velocity v = noise - x0 at model timestep t = 1000 * s. The noise schedule and the update rule come
from diffusers' schedulers, set up exactly as diffusers' WanPipeline does (FlowMatchEulerDiscrete with
`shift`, or UniPCMultistep with flow sigmas and `flow_shift`); the loop itself is ours, because it adds
what the pipeline lacks: frame masks, per-frame timesteps, SDEdit from any latent, interrupt and
previews at every step.

Invariants:
- All update math runs in float32 on the CPU tensors the model protocol returns.
- Classifier-free guidance v = v_neg + cfg * (v_pos - v_neg); cfg == 1 makes exactly one model call
  per step (the negative pass is skipped), otherwise two.
- Frame masks: latent frames with frame_mask 1 are known. Between steps they hold their clean value
  (`latent.known`) and the result holds it bit-for-bit. A model trained with per-frame timesteps
  (`uses_frame_timesteps`: Wan 2.2 TI2V) sees them clean at timestep 0 in a (B, T') timestep; any
  other model sees them re-noised to the current sigma with a fixed seeded noise (the replacement
  method), with a scalar timestep.
- A model with a `loaded()` context manager is held on its device for the whole loop.
- Where the loop starts: a latent whose meta["sigma"] is 1.0 (NoiseInit, ImageToVideo,
  VideoCondition) is pure noise and is used as is. Any other latent is clean (VAEEncode, a previous
  DiTDenoise) and is noised to the first kept sigma with noise from `seed`:
  x = (1 - s0) * x0 + s0 * noise. With denoise < 1 (SDEdit) the first steps of the `steps`-step
  schedule are skipped (diffusers' img2img rule: int(steps * denoise) steps run).
- `progress(step, total, x0_estimate)` and `check_interrupt()` are called at least once per step.
- Nothing non-finite passes: NaN or inf in the inputs, in a step's velocity (checked after every
  model call: one reduction) or in the result is a NodeError naming its source and the fix.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from engine.choices import SAMPLERS
from engine.errors import NodeError
from engine.models.interfaces import DiffusionModel, model_label, non_finite, non_finite_fix
from engine.noise import seeded_noise
from engine.values import Conditioning, Latent

NUM_TRAIN_TIMESTEPS = 1000  # model timestep = 1000 * sigma (Wan and every diffusers flow model)

ProgressFn = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class Schedule:
    """The steps one sampling run takes.

    timesteps (n,): model timesteps of the steps that run; sigmas (n + 1,): the noise level before
    each of them and after the last (0); skipped: early steps dropped by denoise < 1.
    """

    timesteps: torch.Tensor
    sigmas: torch.Tensor
    skipped: int
    total: int

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])


def make_scheduler(sampler: str, shift: float) -> Any:
    """A fresh diffusers scheduler configured as in WanPipeline (schedulers are stateful: one per run)."""
    # imported here: diffusers costs seconds to import, and every worker/CLI start loads this module
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if sampler == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    if sampler == "unipc":
        # The rest of the config (solver_order=2, bh2, lower_order_final) is diffusers' default,
        # which is also what the Wan-AI diffusers checkpoints ship.
        return UniPCMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS,
                                       prediction_type="flow_prediction", use_flow_sigmas=True,
                                       flow_shift=shift)
    raise NodeError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}",
                    input="sampler")


def make_schedule(scheduler: Any, steps: int, denoise: float = 1.0) -> Schedule:
    """Set `scheduler` to `steps` steps and keep the last int(steps * denoise) of them."""
    scheduler.set_timesteps(steps, device="cpu")
    # the epsilon keeps 0.7 * 10 from landing on 6.999...; otherwise diffusers' img2img rule
    kept = min(int(steps * denoise + 1e-6), steps)
    start = steps - kept
    scheduler.set_begin_index(start)
    return Schedule(timesteps=scheduler.timesteps[start:].float(),
                    sigmas=scheduler.sigmas[start:].float(), skipped=start, total=steps)


def sample(model: DiffusionModel, latent: Latent, cond: Conditioning, *, steps: int, cfg: float,
           shift: float, sampler: str = "unipc", seed: int = 0, denoise: float = 1.0,
           image_latent: torch.Tensor | None = None, progress: ProgressFn | None = None,
           check_interrupt: Callable[[], None] | None = None) -> Latent:
    """Denoise `latent` with `model` under `cond`; returns a clean Latent (meta["sigma"] = 0).

    `image_latent` (B, C', T', H', W') is handed to the model unchanged (I2V channel conditioning);
    by default it is the latent's own `channel_cond`. The conditioning's `image_embeds` (CLIP image
    tokens) go to the model on both guidance passes.
    `progress(step, total, x0)` gets the current clean estimate (B, C, T', H', W') after each step.
    """
    _check_args(steps, cfg, shift, denoise)
    if image_latent is None:
        image_latent = latent.channel_cond
    scheduler = make_scheduler(sampler, shift)
    sched = make_schedule(scheduler, steps, denoise)
    x0 = latent.samples.float()  # (B, C, T', H', W')
    batch, _, frames = x0.shape[:3]
    known, mask = _known_frames(latent)  # (B, C, T', H', W') and (B, 1, T', 1, 1) bool, or None
    noise = seeded_noise(tuple(x0.shape[1:]), seed, batch)
    starts_from_noise = float(latent.meta.get("sigma", 0.0)) == 1.0

    if starts_from_noise and sched.skipped:
        raise NodeError("denoise below 1 needs a clean latent (from VAEEncode), but this latent is "
                        "pure noise (from NoiseInit or a conditioning node); set denoise to 1",
                        input="denoise")
    if starts_from_noise or sched.steps == 0:  # already noise, or denoise rounds to no steps
        x = x0
    else:
        s0 = sched.sigmas[0]
        x = (1.0 - s0) * x0 + s0 * noise  # SDEdit: the clean input noised to the first kept sigma
    if mask is not None:
        x = torch.where(mask, known, x)

    text = _text_inputs(cond, batch, cfg)
    _check_finite_inputs(x0, known, text, image_latent)
    frame_timesteps = uses_frame_timesteps(model)
    # a model with `loaded()` keeps its weights on the device for the whole loop, not per call
    loaded = getattr(model, "loaded", None)
    with (loaded() if callable(loaded) else contextlib.nullcontext()), torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            if check_interrupt is not None:
                check_interrupt()
            s = sched.sigmas[i]
            x_in, timestep = x, t.expand(batch).clone()  # timestep (B,)
            if mask is not None and frame_timesteps:
                # known frames are clean: tell the model so per frame; (B, T')
                timestep = t * (~mask.view(batch, frames)).float()
            elif mask is not None:
                x_in = torch.where(mask, (1.0 - s) * known + s * noise, x)
            v = _guided_velocity(model, x_in, timestep, text, cfg, image_latent)
            if (bad := non_finite(v)) is not None:  # one reduction per step
                raise NodeError(f"{model_label(model, 'DiT')} produced {bad} at step {i + 1} of "
                                f"{sched.steps}: {non_finite_fix(model)}", input="model")
            if mask is not None and frame_timesteps:
                v = v.masked_fill(mask, 0.0)  # zero velocity keeps a clean frame where it is
            x = scheduler.step(v, t, x_in, return_dict=False)[0].float()
            if mask is not None:
                x = torch.where(mask, known, x)
            if progress is not None:
                progress(i + 1, sched.steps, x_in - s * v)  # clean estimate for the preview

    if (bad := non_finite(x)) is not None:  # finite velocities, yet the updates overflowed
        raise NodeError(f"sampling ended with {bad} in the latent: {non_finite_fix(model)}",
                        input="model")
    meta = dict(latent.meta)
    meta.update(sigma=0.0, sampling={"steps": steps, "cfg": cfg, "shift": shift, "sampler": sampler,
                                     "seed": int(seed), "denoise": denoise})
    return Latent(samples=x, frame_mask=latent.frame_mask, known=latent.known, fps=latent.fps,
                  meta=meta, channel_cond=latent.channel_cond)


def uses_frame_timesteps(model: DiffusionModel) -> bool:
    """Whether known frames go to `model` clean with per-frame timestep 0 (else re-noised).

    A model says so with a `frame_timesteps` attribute; without one, a Wan model of variant "ti2v"
    (Wan 2.2 TI2V, trained that way) does, and every other model does not.
    """
    flag = getattr(model, "frame_timesteps", None)
    if flag is not None:
        return bool(flag)
    return getattr(model, "variant", None) == "ti2v"


def _check_args(steps: int, cfg: float, shift: float, denoise: float) -> None:
    if steps < 1:
        raise NodeError(f"steps must be at least 1; got {steps}", input="steps")
    if not math.isfinite(cfg) or cfg < 0:
        raise NodeError(f"cfg must be a finite number >= 0 (1 turns guidance off); got {cfg}",
                        input="cfg")
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


def _guided_velocity(model: DiffusionModel, x: torch.Tensor, timestep: torch.Tensor,
                     text: dict[str, torch.Tensor | None], cfg: float,
                     image_latent: torch.Tensor | None) -> torch.Tensor:
    """(B, C, T', H', W') velocity with classifier-free guidance, in float32."""
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


# ---- preview ----------------------------------------------------------------------------------

def latent_preview(latent: torch.Tensor) -> torch.Tensor:
    """A cheap RGB picture of latent frames: (C, ..., H', W') -> (..., H', W', 3) float in [0, 1].

    A fixed linear projection: channel c gets the hue angle 2*pi*c/C on the colour wheel, its
    contribution to R, G and B is the cosine of that angle against three directions 120 degrees
    apart, scaled by 1/sqrt(C); a tanh squashes the sum into [0, 1]. It shows layout and motion,
    not true colour (that needs the VAE decoder), and costs one (C x 3) matmul per latent pixel.
    """
    c = latent.shape[0]
    hues = torch.arange(c, dtype=torch.float32) * (2 * math.pi / c)  # (C,)
    axes = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])  # (3,) R, G, B directions
    factors = torch.cos(hues[:, None] - axes[None, :]) / math.sqrt(c)  # (C, 3)
    rgb = torch.einsum("c...,ck->...k", latent.float(), factors)  # (..., H', W', 3)
    return 0.5 + 0.5 * torch.tanh(rgb)

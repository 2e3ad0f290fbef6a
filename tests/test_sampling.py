"""The sampling loop against references: diffusers' schedules, exact analytic velocity fields, a tiny
real WanTransformer3DModel, and the node's progress / interrupt / preview behaviour."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanTransformer3DModel

from engine.context import ExecutionContext, InterruptFlag
from engine.errors import Interrupted, NodeError
from engine.models.interfaces import LatentGrid
from engine.noise import init_noise, seeded_noise
from engine.previews import hue_wheel_rgb
from engine.sampling import (make_schedule, make_scheduler, sample, schedule_sigmas,
                             uses_frame_timesteps)
from engine.values import Conditioning, Latent
from nodes.sampling import DiTDenoise

GRID = LatentGrid(channels=4)
TEXT_DIM = 8


def cond(neg: bool = True) -> Conditioning:
    pos = torch.ones(1, 3, TEXT_DIM)
    return Conditioning(embeds=pos, mask=torch.ones(1, 3, dtype=torch.long),
                        negative_embeds=-pos if neg else None,
                        negative_mask=torch.ones(1, 3, dtype=torch.long) if neg else None)


class Recorder:
    """A DiffusionModel test double: records every call and returns `field(x, sigma, context)`."""

    in_channels = out_channels = 4
    text_dim = TEXT_DIM

    def __init__(self, field, frame_timesteps: bool = False):
        self.field = field
        self.frame_timesteps = frame_timesteps
        self.calls: list[dict] = []

    def predict_velocity(self, x, timestep, context, context_mask=None, image_latent=None):
        self.calls.append({"x": x.clone(), "timestep": timestep.clone(), "context": context})
        return self.field(x, timestep, context)


def point_mass(target: torch.Tensor):
    """Exact flow velocity towards a point-mass target y: v(x, s) = (x - y) / s, s = t / 1000.

    Per-frame timesteps (B, T') give per-frame sigmas; a known frame (t = 0) gets a finite value.
    """
    def field(x, timestep, context):
        s = timestep.float() / 1000
        s = s.view(-1, 1, 1, 1, 1) if s.ndim == 1 else s.view(s.shape[0], 1, -1, 1, 1)
        return (x - target) / s.clamp_min(1e-3)
    return field


def noise_latent(frames: int = 9, seed: int = 0) -> Latent:
    return init_noise(16, 16, frames, 1, seed=seed, grid=GRID)


# ---- schedule -------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, shift", [(10, 5.0), (4, 3.0), (25, 1.0)])
def test_euler_schedule_matches_diffusers_and_shift_formula(steps: int, shift: float) -> None:
    ref = FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(steps)
    sched = make_schedule(make_scheduler("euler", shift), steps)
    assert torch.equal(sched.sigmas, ref.sigmas) and torch.equal(sched.timesteps, ref.timesteps)
    # the formula on diffusers' unshifted base grid (its endpoint is the scheduler's sigma_min)
    base = np.linspace(1.0, ref.sigma_min, steps)
    expected = shift * base / (1 + (shift - 1) * base)
    np.testing.assert_allclose(sched.sigmas[:-1].numpy(), expected, rtol=1e-5)
    assert float(sched.sigmas[-1]) == 0.0
    # and the loop really feeds the model those timesteps, step for step
    model = Recorder(lambda x, t, c: torch.zeros_like(x))
    sample(model, noise_latent(), cond(), steps=steps, cfg=1.0, shift=shift, sampler="euler")
    used = torch.stack([c["timestep"][0] for c in model.calls])
    np.testing.assert_allclose(used.numpy(), 1000 * expected, rtol=1e-5)


def test_unipc_schedule_is_wan_flow_schedule() -> None:
    steps, shift = 8, 5.0
    ref = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                  flow_shift=shift)
    ref.set_timesteps(steps)
    sched = make_schedule(make_scheduler("unipc", shift), steps)
    assert torch.equal(sched.sigmas, ref.sigmas.float())
    base = np.linspace(1, 1 / 1000, steps + 1)[:-1]
    np.testing.assert_allclose(sched.sigmas[:-1].numpy(), shift * base / (1 + (shift - 1) * base),
                               rtol=1e-5)


# ---- exact solutions -----------------------------------------------------------------------

def test_euler_with_exact_velocity_lands_on_the_target() -> None:
    target = torch.randn(1, 4, 3, 2, 2, generator=torch.Generator().manual_seed(5))
    out = sample(Recorder(point_mass(target)), noise_latent(), cond(), steps=7, cfg=1.0,
                 shift=3.0, sampler="euler")
    torch.testing.assert_close(out.samples, target, atol=1e-5, rtol=0)
    assert out.meta["sigma"] == 0.0 and out.meta["sampling"]["sampler"] == "euler"


def test_unipc_matches_euler_endpoint_on_a_straight_path() -> None:
    latent = noise_latent()
    target = torch.randn(latent.shape, generator=torch.Generator().manual_seed(9))
    # along the straight path from this noise to the target the velocity is constant
    straight = lambda x, t, c: (latent.samples - target).expand_as(x)  # noqa: E731
    ends = {s: sample(Recorder(straight), latent, cond(), steps=6, cfg=1.0, shift=5.0,
                      sampler=s).samples for s in ("euler", "unipc")}
    torch.testing.assert_close(ends["euler"], target, atol=1e-5, rtol=0)
    torch.testing.assert_close(ends["unipc"], ends["euler"], atol=1e-4, rtol=0)


# ---- guidance ------------------------------------------------------------------------------

def test_cfg_one_makes_one_call_per_step_and_guidance_two() -> None:
    pos_v, neg_v = 1.0, 3.0
    field = lambda x, t, c: torch.full_like(x, pos_v if c.sum() > 0 else neg_v)  # noqa: E731
    latent = noise_latent()
    one = Recorder(field)
    out1 = sample(one, latent, cond(), steps=5, cfg=1.0, shift=3.0, sampler="euler")
    assert len(one.calls) == 5
    two = Recorder(field)
    out4 = sample(two, latent, cond(), steps=5, cfg=4.0, shift=3.0, sampler="euler")
    assert len(two.calls) == 10
    # Euler integrates sigma 1 -> 0, so x_end = x_start - v for a constant v
    torch.testing.assert_close(out1.samples, latent.samples - pos_v)
    torch.testing.assert_close(out4.samples, latent.samples - (neg_v + 4.0 * (pos_v - neg_v)))


def test_cfg_without_negative_prompt_is_a_clear_error() -> None:
    with pytest.raises(NodeError, match="negative prompt"):
        sample(Recorder(point_mass(torch.zeros(1))), noise_latent(), cond(neg=False), steps=2,
               cfg=3.0, shift=3.0)


# ---- frame masks ---------------------------------------------------------------------------

def masked_latent() -> Latent:
    latent = noise_latent(frames=9)  # 3 latent frames
    known = torch.zeros(latent.shape)
    known[:, :, 0] = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(1)) * 3
    mask = torch.tensor([[1.0, 0.0, 0.0]])
    return Latent(samples=latent.samples.clone(), frame_mask=mask, known=known, meta=latent.meta)


@pytest.mark.parametrize("frame_timesteps", [True, False])
@pytest.mark.parametrize("sampler", ["euler", "unipc"])
def test_known_frames_end_bit_for_bit_at_their_clean_value(frame_timesteps: bool,
                                                           sampler: str) -> None:
    latent = masked_latent()
    model = Recorder(point_mass(torch.full(latent.shape, 0.25)), frame_timesteps=frame_timesteps)
    out = sample(model, latent, cond(), steps=4, cfg=2.0, shift=3.0, sampler=sampler, seed=3)
    assert torch.equal(out.samples[:, :, 0], latent.known[:, :, 0])
    # UniPC hands the model integer timesteps (as diffusers and Wan do), so the analytic field is
    # slightly off there; Euler's float timesteps make it exact
    torch.testing.assert_close(out.samples[:, :, 1:], torch.full((1, 4, 2, 2, 2), 0.25),
                               atol=1e-5 if sampler == "euler" else 1e-2, rtol=0)
    first = model.calls[0]
    if frame_timesteps:  # clean known frame, timestep 0 for it alone: (B, T')
        assert first["timestep"].shape == (1, 3) and float(first["timestep"][0, 0]) == 0.0
        assert float(first["timestep"][0, 1]) > 900
        assert torch.equal(first["x"][:, :, 0], latent.known[:, :, 0])
    else:  # replacement: the known frame re-noised to the current sigma, scalar timestep
        assert first["timestep"].shape == (1,)
        s = make_schedule(make_scheduler(sampler, 3.0), 4).sigmas[0]
        noise = seeded_noise((4, 3, 2, 2), 3, 1)
        torch.testing.assert_close(first["x"][:, :, 0],
                                   (1 - s) * latent.known[:, :, 0] + s * noise[:, :, 0])


# ---- denoise strength (SDEdit) --------------------------------------------------------------

def test_denoise_half_runs_half_the_steps_from_the_noised_input() -> None:
    clean = Latent(samples=torch.randn(1, 4, 3, 2, 2, generator=torch.Generator().manual_seed(4)))
    model = Recorder(point_mass(clean.samples))
    sample(model, clean, cond(), steps=10, cfg=1.0, shift=3.0, sampler="euler", seed=2, denoise=0.5)
    assert len(model.calls) == 5
    full = make_schedule(make_scheduler("euler", 3.0), 10)
    assert float(model.calls[0]["timestep"][0]) == pytest.approx(float(full.timesteps[5]))
    s0 = float(full.sigmas[5])
    expected_start = (1 - s0) * clean.samples + s0 * seeded_noise((4, 3, 2, 2), 2, 1)
    torch.testing.assert_close(model.calls[0]["x"], expected_start)
    assert s0 < 0.75  # the start is mostly the input, not noise


def test_denoise_below_one_on_pure_noise_is_refused() -> None:
    with pytest.raises(NodeError, match="denoise below 1 needs a clean latent"):
        sample(Recorder(point_mass(torch.zeros(1))), noise_latent(), cond(), steps=4, cfg=1.0,
               shift=3.0, denoise=0.5)


# ---- interrupt, progress, preview -----------------------------------------------------------

def test_interrupt_stops_within_one_step_and_progress_once_per_step() -> None:
    model = Recorder(lambda x, t, c: torch.zeros_like(x))
    seen: list[tuple[int, int, tuple]] = []
    checks = {"n": 0}

    def check() -> None:
        checks["n"] += 1
        if checks["n"] == 4:
            raise Interrupted("n1")

    with pytest.raises(Interrupted):
        sample(model, noise_latent(), cond(), steps=10, cfg=1.0, shift=3.0, sampler="euler",
               progress=lambda i, n, x0: seen.append((i, n, tuple(x0.shape))),
               check_interrupt=check)
    assert len(model.calls) == 3
    assert seen == [(i, 10, (1, 4, 3, 2, 2)) for i in (1, 2, 3)]


def test_latent_preview_is_a_fixed_projection_in_range() -> None:
    z = torch.randn(16, 5, 6) * 4
    rgb = hue_wheel_rgb(z)
    assert rgb.shape == (5, 6, 3) and float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    assert torch.equal(rgb, hue_wheel_rgb(z))
    assert torch.allclose(hue_wheel_rgb(torch.zeros(16, 2, 2)), torch.full((2, 2, 3), 0.5))


def test_dit_denoise_node_reports_progress_with_preview_and_stops(tmp_path: Path) -> None:
    reports: list[tuple[float, str, torch.Tensor]] = []
    flag = InterruptFlag()
    ctx = ExecutionContext("n7", "DiTDenoise", "run", torch.device("cpu"), tmp_path, tmp_path,
                           tmp_path, flag, lambda f, m, p: reports.append((f, m, p)))
    target = torch.full((1, 4, 3, 2, 2), 0.5)
    args = dict(conditioning=cond(), latent=noise_latent(), steps=4, cfg=1.0, shift=3.0,
                sampler="euler", seed=0, denoise=1.0)
    out = DiTDenoise.execute(ctx, model=Recorder(point_mass(target)), **args)
    torch.testing.assert_close(out["latent"].samples, target, atol=1e-5, rtol=0)
    assert [r[0] for r in reports] == [0.25, 0.5, 0.75, 1.0]
    preview = reports[0][2]  # the whole clip's clean estimate: (1, T', H', W', 3) uint8
    assert preview.shape == (1, 3, 2, 2, 3) and preview.dtype == torch.uint8

    def stop_after_two(x, t, c):
        if len(model.calls) == 2:
            flag.set()
        return torch.zeros_like(x)

    model = Recorder(stop_after_two)
    with pytest.raises(Interrupted):
        DiTDenoise.execute(ctx, model=model, **args)
    assert len(model.calls) == 2

    wrong = Recorder(stop_after_two)
    wrong.out_channels = wrong.in_channels = 16
    with pytest.raises(NodeError, match="latent has 4 channels but the DiT works on 16"):
        DiTDenoise.execute(ctx, model=wrong, **args)


# ---- a real (tiny, random) Wan DiT ------------------------------------------------------------

class TinyWanAdapter:
    """Test adapter: diffusers' WanTransformer3DModel behind the DiffusionModel protocol."""

    frame_timesteps = True

    def __init__(self, transformer: WanTransformer3DModel):
        self.transformer = transformer.eval()
        self.in_channels = self.out_channels = transformer.config.in_channels
        self.text_dim = transformer.config.text_dim
        self.timesteps: list[torch.Tensor] = []

    def predict_velocity(self, x, timestep, context, context_mask=None, image_latent=None):
        batch, _, frames, height, width = x.shape
        _, ph, pw = self.transformer.config.patch_size
        if timestep.ndim == 2:  # (B, T') per frame -> (B, T' * H'/ph * W'/pw) per patch token
            tokens = (height // ph) * (width // pw)
            timestep = timestep[:, :, None].expand(batch, frames, tokens).reshape(batch, -1)
        self.timesteps.append(timestep)
        out = self.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=context,
                               return_dict=False)[0]
        return out.float()


def test_tiny_wan_transformer_two_steps_with_a_frame_mask() -> None:
    torch.manual_seed(0)
    dit = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                in_channels=4, out_channels=4, text_dim=TEXT_DIM, freq_dim=16,
                                ffn_dim=32, num_layers=1, rope_max_seq_len=32)
    model = TinyWanAdapter(dit)
    latent = masked_latent()  # (1, 4, 3, 2, 2), first latent frame known
    out = sample(model, latent, cond(), steps=2, cfg=3.0, shift=5.0, sampler="unipc", seed=1)
    assert len(model.timesteps) == 4  # 2 steps x (positive + negative)
    per_token = model.timesteps[0]
    assert per_token.shape == (1, 3 * 1 * 1)  # 3 latent frames x (2/2) x (2/2) tokens
    assert float(per_token[0, 0]) == 0.0 and float(per_token[0, 1]) > 900
    assert torch.equal(out.samples[:, :, 0], latent.known[:, :, 0])
    assert torch.isfinite(out.samples).all()
    assert not torch.allclose(out.samples[:, :, 1:], latent.samples[:, :, 1:])


def test_model_is_held_loaded_for_the_whole_loop() -> None:
    events: list[str] = []

    class Held(Recorder):
        @contextlib.contextmanager
        def loaded(self):
            events.append("load")
            yield self
            events.append("unload")

        def predict_velocity(self, x, timestep, context, context_mask=None, image_latent=None):
            events.append("call")
            return torch.zeros_like(x)

    sample(Held(None), noise_latent(), cond(), steps=3, cfg=2.0, shift=3.0)
    assert events == ["load"] + ["call"] * 6 + ["unload"]


def test_which_models_take_per_frame_timesteps() -> None:
    assert uses_frame_timesteps(SimpleNamespace(variant="ti2v"))
    assert not uses_frame_timesteps(SimpleNamespace(variant="t2v"))
    assert not uses_frame_timesteps(SimpleNamespace(variant="ti2v", frame_timesteps=False))
    assert uses_frame_timesteps(SimpleNamespace(frame_timesteps=True))
    assert not uses_frame_timesteps(SimpleNamespace())


# ---- ComfyUI schedulers, written here from ComfyUI's definitions ---------------------------------
# ComfyUI's flow models (ModelSamplingDiscreteFlow + ModelSamplingSD3 shift) keep a table
# sigma_i = shift(i / 1000), i = 1..1000, with shift(t) = s t / (1 + (s - 1) t); sigma_max = 1.

def comfy_table(shift: float) -> np.ndarray:
    t = np.arange(1, 1001) / 1000.0
    return shift * t / (1 + (shift - 1) * t)


def comfy_simple(steps: int, shift: float) -> list[float]:
    # every (1000 / steps)-th table entry counted from the top, then 0
    table = comfy_table(shift)
    return [table[len(table) - 1 - int(i * len(table) / steps)] for i in range(steps)] + [0.0]


def comfy_normal(steps: int, shift: float) -> list[float]:
    # timesteps evenly from timestep(sigma_max) to timestep(sigma_min), each mapped by sigma(t)
    # (which shifts again), then 0
    table = comfy_table(shift)
    sig = lambda t: shift * (t / 1000) / (1 + (shift - 1) * (t / 1000))  # noqa: E731
    return [sig(t) for t in np.linspace(1000 * table[-1], 1000 * table[0], steps)] + [0.0]


def comfy_beta(steps: int, shift: float) -> list[float]:
    # table entries at the Beta(0.6, 0.6) quantiles of 1 - i/steps, consecutive repeats dropped
    stats = pytest.importorskip("scipy.stats")
    table = comfy_table(shift)
    idx = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), 0.6, 0.6) * 999)
    keep = [int(t) for k, t in enumerate(idx) if k == 0 or t != idx[k - 1]]
    return [table[i] for i in keep] + [0.0]


@pytest.mark.parametrize("steps, shift", [(4, 8.0), (10, 5.0), (30, 3.0), (7, 1.0)])
@pytest.mark.parametrize("name, formula", [("simple", comfy_simple), ("normal", comfy_normal),
                                           ("beta", comfy_beta)])
def test_comfy_schedulers_match_their_definitions(name, formula, steps: int, shift: float) -> None:
    ours = schedule_sigmas(name, steps, shift)
    np.testing.assert_allclose(ours.numpy(), np.array(formula(steps, shift), dtype=np.float32),
                               rtol=1e-6, atol=1e-7)
    assert float(ours[0]) == pytest.approx(1.0) and float(ours[-1]) == 0.0
    # and the loop feeds the model those sigmas as timesteps (euler: float timesteps)
    model = Recorder(lambda x, t, c: torch.zeros_like(x))
    sample(model, noise_latent(), cond(), steps=steps, cfg=1.0, shift=shift, sampler="euler",
           scheduler=name)
    used = torch.stack([c["timestep"][0] for c in model.calls])
    np.testing.assert_allclose(used.numpy(), 1000 * ours[:-1].numpy(), rtol=1e-6)


def test_default_scheduler_keeps_older_graphs_schedule() -> None:
    for sampler in ("unipc", "euler"):
        ref = make_schedule(make_scheduler(sampler, 5.0), 12)
        assert torch.equal(schedule_sigmas("default", 12, 5.0, sampler), ref.sigmas)


# ---- samplers against diffusers and against their formulas ---------------------------------------

def bent(x, t, c):
    """A smooth field that is not a straight path, so solvers of different order differ."""
    return torch.tanh(x) * 1.5 - 0.3 * x + 0.2


@pytest.mark.parametrize("sampler, solver_type", [("uni_pc", "bh1"), ("uni_pc_bh2", "bh2")])
def test_comfy_uni_pc_is_diffusers_unipc_of_that_variant(sampler: str, solver_type: str) -> None:
    steps, shift = 8, 5.0
    latent = noise_latent()
    out = sample(Recorder(bent), latent, cond(), steps=steps, cfg=1.0, shift=shift,
                 sampler=sampler, scheduler="simple").samples
    ref = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                  flow_shift=1.0, solver_order=3, solver_type=solver_type)
    ref.set_timesteps(sigmas=np.array(comfy_simple(steps, shift)[:-1]))
    if solver_type == "bh1":  # B(h) = h is infinite on a step to 0: stop just above, as ComfyUI
        ref.sigmas[-1] = 1e-4
    x = latent.samples.clone()
    for t in ref.timesteps:
        x = ref.step(bent(x, t, None), t, x, return_dict=False)[0]
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)
    other = "uni_pc_bh2" if sampler == "uni_pc" else "uni_pc"
    assert not torch.allclose(out, sample(Recorder(bent), latent, cond(), steps=steps, cfg=1.0,
                                          shift=shift, sampler=other, scheduler="simple").samples)


def test_dpmpp_2m_is_dpm_solver_pp_2m_in_flow_form() -> None:
    steps, shift = 7, 3.0
    latent = noise_latent()
    out = sample(Recorder(bent), latent, cond(), steps=steps, cfg=1.0, shift=shift,
                 sampler="dpmpp_2m", scheduler="normal").samples
    # DPM-Solver++(2M) on x = alpha x0 + sigma n with alpha = 1 - sigma, lambda = log(alpha/sigma):
    # first-order on the first step and on the last (to 0), the 2M correction otherwise
    sig = torch.tensor(comfy_normal(steps, shift), dtype=torch.float64)
    x, prev, h_prev = latent.samples.double(), None, None
    lam = lambda s: torch.log((1 - s) / s)  # noqa: E731
    for i in range(steps):
        s, s_next = sig[i].clamp(max=1 - 1e-6), sig[i + 1]
        d = x - s * bent(x.float(), None, None).double()  # x0 prediction
        if s_next == 0:
            x = d
            break
        h = lam(s_next) - lam(s)
        dd = d if prev is None else d + (d - prev) / (2 * (h_prev / h))
        x = (s_next / s) * x - (1 - s_next) * torch.expm1(-h) * dd
        prev, h_prev = d, h
    torch.testing.assert_close(out, x.float(), rtol=0, atol=1e-4)


def test_lcm_four_steps_lands_on_the_target_and_its_noise_follows_the_seed() -> None:
    latent = noise_latent()
    target = torch.randn(latent.shape, generator=torch.Generator().manual_seed(8))
    model = Recorder(point_mass(target))
    out = sample(model, latent, cond(), steps=4, cfg=1.0, shift=5.0, sampler="lcm",
                 scheduler="simple", seed=1)
    assert len(model.calls) == 4 and torch.isfinite(out.samples).all()
    torch.testing.assert_close(out.samples, target, atol=1e-5, rtol=0)
    # x0 = x - s v, then re-noised to the next sigma with noise from the seed: the model's second
    # input is (1 - s1) * x0 + s1 * noise, different for another DiT seed
    ins = {}
    for seed in (1, 2):
        rec = Recorder(bent)
        res = sample(rec, latent, cond(), steps=4, cfg=1.0, shift=5.0, sampler="lcm",
                     scheduler="simple", seed=seed, add_noise=False)
        assert torch.isfinite(res.samples).all()
        ins[seed] = rec.calls[1]["x"]
        s0, s1 = schedule_sigmas("simple", 4, 5.0)[:2]
        x0 = latent.samples - s0 * bent(latent.samples, None, None)
        assert float(((ins[seed] - (1 - s1) * x0) / s1).std()) == pytest.approx(1.0, abs=0.3)
    assert not torch.allclose(ins[1], ins[2])


# ---- the seed ------------------------------------------------------------------------------------

def final(latent: Latent, seed: int, sampler: str = "euler", **kw) -> torch.Tensor:
    return sample(Recorder(bent), latent, cond(), steps=4, cfg=1.0, shift=3.0, sampler=sampler,
                  seed=seed, **kw).samples


def test_dit_seed_changes_text_to_video_and_zero_keeps_noise_init_noise() -> None:
    latent = noise_latent(seed=5)
    model = Recorder(bent)
    sample(model, latent, cond(), steps=4, cfg=1.0, shift=3.0, sampler="euler", seed=0)
    assert torch.equal(model.calls[0]["x"], latent.samples)  # seed 0: older graphs unchanged
    outs = [final(latent, s) for s in (0, 1, 2, 3)]
    for i in range(4):
        for j in range(i):
            assert not torch.allclose(outs[i], outs[j]), (i, j)
    # NoiseInit's seed still matters under any DiT seed, and each re-draw is unit noise
    assert not torch.allclose(final(noise_latent(seed=6), 1), outs[1])
    model = Recorder(bent)
    sample(model, latent, cond(), steps=4, cfg=1.0, shift=3.0, sampler="euler", seed=9)
    assert float(model.calls[0]["x"].std()) == pytest.approx(1.0, abs=0.2)
    # add_noise off: the latent's own noise is used whatever the DiT seed
    assert torch.equal(final(latent, 1, add_noise=False), final(latent, 2, add_noise=False))
    assert torch.equal(final(latent, 1, add_noise=False), outs[0])


def test_batch_item_equals_a_single_run_with_its_noise_seed_under_a_dit_seed() -> None:
    batch = init_noise(16, 16, 9, 3, seed=10, grid=GRID)
    together = final(batch, 4)
    for k in range(3):
        torch.testing.assert_close(together[k:k + 1], final(noise_latent(seed=10 + k), 4),
                                   rtol=0, atol=1e-6)


# ---- step ranges -----------------------------------------------------------------------------------

def test_range_without_leftover_noise_finishes_with_a_jump_to_zero() -> None:
    target = torch.randn(1, 4, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    model = Recorder(point_mass(target))
    out = sample(model, noise_latent(), cond(), steps=10, cfg=1.0, shift=3.0, sampler="euler",
                 scheduler="simple", end_step=4)
    assert len(model.calls) == 4 and out.meta["sigma"] == 0.0
    torch.testing.assert_close(out.samples, target, atol=1e-5, rtol=0)
    left = sample(Recorder(point_mass(target)), noise_latent(), cond(), steps=10, cfg=1.0,
                  shift=3.0, sampler="euler", scheduler="simple", end_step=4,
                  return_with_leftover_noise=True)
    assert left.meta["sigma"] == pytest.approx(float(schedule_sigmas("simple", 10, 3.0)[4]))
    assert left.meta["sampling"]["end_step"] == 4


@pytest.mark.parametrize("sampler", ["unipc", "uni_pc", "dpmpp_2m", "euler", "lcm"])
def test_every_sampler_chains_over_a_split_and_ends_clean(sampler: str) -> None:
    latent = noise_latent()
    args = dict(steps=6, cfg=1.0, shift=5.0, sampler=sampler, scheduler="simple", seed=2)
    first = sample(Recorder(bent), latent, cond(), end_step=2, return_with_leftover_noise=True,
                   **args)
    second = sample(Recorder(bent), first, cond(), start_step=2, add_noise=False, **args)
    one = sample(Recorder(bent), latent, cond(), **args)
    assert torch.isfinite(second.samples).all() and second.meta["sigma"] == 0.0
    # single-step samplers chain exactly; multistep ones restart their history (as ComfyUI)
    tol = 1e-6 if sampler in ("euler", "lcm") else 0.5
    torch.testing.assert_close(second.samples, one.samples, rtol=0, atol=tol)


@pytest.mark.parametrize("kw, input_name, words", [
    (dict(start_step=8), "start_step", "past the end"),
    (dict(start_step=3, end_step=3), "start_step", "not before end_step"),
    (dict(end_step=0), "end_step", "not before end_step"),
    (dict(end_step=12), "end_step", "past the end"),
    (dict(sampler="dpm_fast"), "sampler", "unknown sampler"),
    (dict(scheduler="karras"), "scheduler", "unknown scheduler"),
    (dict(start_step=2), "start_step", "pure noise"),
    (dict(cfg_low_noise=-2.0), "cfg_low_noise", ">= 0"),
])
def test_bad_sampling_input_names_the_input(kw: dict, input_name: str, words: str) -> None:
    args = dict(steps=8, cfg=1.0, shift=3.0, sampler="euler")
    args.update(kw)
    with pytest.raises(NodeError, match=words) as err:
        sample(Recorder(bent), noise_latent(), cond(), **args)
    assert err.value.input == input_name


def test_continuing_a_latent_needs_matching_settings_and_add_noise_off() -> None:
    args = dict(steps=8, cfg=1.0, shift=3.0, sampler="euler", scheduler="simple")
    left = sample(Recorder(bent), noise_latent(), cond(), end_step=3,
                  return_with_leftover_noise=True, **args)
    with pytest.raises(NodeError, match="set add_noise off") as err:
        sample(Recorder(bent), left, cond(), start_step=3, **args)
    assert err.value.input == "add_noise"
    with pytest.raises(NodeError, match="same steps, shift") as err:
        sample(Recorder(bent), left, cond(), start_step=4, add_noise=False, **args)
    assert err.value.input == "start_step"
    clean = Latent(samples=torch.zeros(1, 4, 3, 2, 2))
    with pytest.raises(NodeError, match="latent is clean") as err:
        sample(Recorder(bent), clean, cond(), start_step=3, add_noise=False, **args)
    assert err.value.input == "add_noise"


def test_unknown_sampler_or_scheduler_fails_validation_naming_the_input(registry) -> None:
    spec = registry.get("DiTDenoise").spec
    assert spec.input("sampler").check_value("dpm_fast") is not None
    assert spec.input("scheduler").check_value("karras") is not None
    assert spec.input("scheduler").default == "default" and spec.input("sampler").default == "unipc"

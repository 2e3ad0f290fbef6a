"""Wan 2.2 A14B's two experts: one DiTDenoise with a high- and a low-noise model against diffusers'
WanPipeline(transformer, transformer_2, boundary_ratio), step for step; the same split chained by
hand over two step ranges (ComfyUI's KSamplerAdvanced way); residency (one expert loaded at a
time); and the example workflow end to end, its mp4 read back."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import av
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline

from engine.context import ExecutionContext, InterruptFlag
from engine.errors import NodeError
from engine.models.wan_dit import load_dit
from engine.noise import init_noise
from engine.models.interfaces import LatentGrid
from engine.sampling import default_boundary, make_scheduler, sample
from engine.values import Conditioning, Latent
from nodes.sampling import DiTDenoise
from tests.tiny_models import tiny_dit, write_dit

ROOT = Path(__file__).resolve().parents[1]
TEXT_LEN, TEXT_DIM = 7, 32  # tiny_models.DIT_TINY text_dim


class Recording:
    """Wraps a DiffusionModel: records the latent and timestep of every call and its residency."""

    def __init__(self, inner: Any, name: str, events: list[str]):
        self.inner, self.name, self.events = inner, name, events
        self.inputs: list[torch.Tensor] = []
        self.timesteps: list[torch.Tensor] = []
        self.image_latents: list[torch.Tensor | None] = []
        self.resident = False

    def __getattr__(self, key: str) -> Any:
        return getattr(self.inner, key)

    @contextlib.contextmanager
    def loaded(self):
        self.events.append(f"load {self.name}")
        inner = getattr(self.inner, "loaded", None)
        with (inner() if callable(inner) else contextlib.nullcontext()):
            self.resident = True
            try:
                yield self
            finally:
                self.resident = False
                self.events.append(f"unload {self.name}")

    def predict_velocity(self, x, timestep, context, context_mask=None, image_latent=None,
                         **kw):
        assert self.resident, f"{self.name} called outside its loaded() context"
        self.events.append(f"call {self.name}")
        self.inputs.append(x.clone())
        self.timesteps.append(timestep.clone())
        self.image_latents.append(image_latent)
        return self.inner.predict_velocity(x, timestep, context, context_mask=context_mask,
                                           image_latent=image_latent, **kw)


def text(seed: int = 0) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g), torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g)
    ones = torch.ones(1, TEXT_LEN, dtype=torch.long)
    return Conditioning(embeds=pos, mask=ones, negative_embeds=neg, negative_mask=ones)


@pytest.fixture(scope="module")
def experts(tmp_path_factory) -> dict[str, Any]:
    """The same seeded weights as a diffusers module (reference) and loaded from a ComfyUI-layout
    file through Reelgraph's loader (under test)."""
    folder = tmp_path_factory.mktemp("experts")
    out: dict[str, Any] = {}
    for name, seed in (("high", 1), ("low", 2)):
        out[f"ref_{name}"] = tiny_dit("t2v", seed=seed)
        out[name] = load_dit(write_dit(folder / f"{name}.safetensors", "t2v", seed=seed),
                             device="cpu", dtype="fp32")
    return out


def noise_latent(seed: int = 3, frames: int = 5) -> Latent:
    # 32 x 32 pixels on the Wan 2.1 grid (8x spatial): (1, 16, 2, 4, 4)
    return init_noise(32, 32, frames, 1, seed=seed, grid=LatentGrid(channels=16))


def diffusers_steps(ref_high, ref_low, scheduler, latent: Latent, cond: Conditioning, steps: int,
                    cfg: float, cfg_low: float, boundary: float) -> list[torch.Tensor]:
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=scheduler,
                       transformer=ref_high, transformer_2=ref_low, boundary_ratio=boundary)
    pipe.set_progress_bar_config(disable=True)
    seen: list[torch.Tensor] = []

    def record(pipeline, i, t, kwargs):
        seen.append(kwargs["latents"].detach().clone())
        return {}

    _, _, frames, h, w = latent.shape
    pipe(prompt_embeds=cond.embeds, negative_prompt_embeds=cond.negative_embeds, height=h * 8,
         width=w * 8, num_frames=(frames - 1) * 4 + 1, num_inference_steps=steps,
         guidance_scale=cfg, guidance_scale_2=cfg_low, latents=latent.samples.clone(),
         output_type="latent", callback_on_step_end=record)
    return seen


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
def test_two_experts_equal_diffusers_wan_pipeline_at_every_step(experts, sampler: str) -> None:
    steps, shift, cfg, cfg_low, boundary = 6, 5.0, 4.0, 2.5, 0.875
    latent, cond = noise_latent(), text()
    if sampler == "unipc":
        ref_sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            flow_shift=shift)
    else:
        ref_sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    expected = diffusers_steps(experts["ref_high"], experts["ref_low"], ref_sched, latent, cond,
                               steps, cfg, cfg_low, boundary)

    events: list[str] = []
    high, low = Recording(experts["high"], "high", events), Recording(experts["low"], "low", events)
    out = sample(high, latent, cond, steps=steps, cfg=cfg, shift=shift, sampler=sampler,
                 model_low_noise=low, boundary=boundary, cfg_low_noise=cfg_low)

    # both experts ran, split where diffusers splits (t >= 875 -> high), one loaded at a time
    sched = make_scheduler(sampler, shift)
    sched.set_timesteps(steps)
    n_high = int((sched.timesteps >= boundary * 1000).sum())
    assert 0 < n_high < steps
    assert len(high.inputs) == 2 * n_high and len(low.inputs) == 2 * (steps - n_high)
    assert events == (["load high"] + ["call high"] * 2 * n_high + ["unload high", "load low"]
                      + ["call low"] * 2 * (steps - n_high) + ["unload low"])
    # latents after every step: the next step's model input (positive pass), then the result
    ours = [x for x in (high.inputs + low.inputs)[2::2]] + [out.samples]
    assert len(ours) == len(expected) == steps
    for i, (a, b) in enumerate(zip(ours, expected)):
        torch.testing.assert_close(a, b.float(), rtol=0, atol=1e-5, msg=f"step {i + 1}")
    assert out.meta["sigma"] == 0.0 and out.meta["sampling"]["cfg_low_noise"] == cfg_low


@pytest.mark.parametrize("sampler", ["euler", "lcm"])
def test_two_step_ranges_chained_by_hand_equal_the_one_node_split(experts, sampler: str) -> None:
    steps, shift, boundary = 6, 5.0, 0.875
    latent, cond = noise_latent(), text()
    args = dict(steps=steps, shift=shift, sampler=sampler, seed=11)
    one = sample(experts["high"], latent, cond, cfg=3.0, model_low_noise=experts["low"],
                 boundary=boundary, cfg_low_noise=1.0, **args)

    sched = make_scheduler(sampler, shift)
    sched.set_timesteps(steps)
    k = int((sched.timesteps >= boundary * 1000).sum())
    first = sample(experts["high"], latent, cond, cfg=3.0, end_step=k,
                   return_with_leftover_noise=True, **args)
    assert first.meta["sigma"] == pytest.approx(float(sched.sigmas[k]))
    assert 0.0 < first.meta["sigma"] < 1.0
    second = sample(experts["low"], first, cond, cfg=1.0, start_step=k, add_noise=False, **args)
    assert second.meta["sigma"] == 0.0
    torch.testing.assert_close(second.samples, one.samples, rtol=0, atol=1e-6)


# ---- masks, channel conditioning and per-frame timesteps across the split --------------------------

class Field:
    """A tiny analytic DiffusionModel: velocity towards a target, optionally per-frame timesteps."""

    in_channels = out_channels = 4
    text_dim = 8

    def __init__(self, target: torch.Tensor, frame_timesteps: bool, events: list[str], name: str):
        self.target, self.frame_timesteps, self.events, self.name = target, frame_timesteps, events, name
        self.calls: list[dict] = []

    @contextlib.contextmanager
    def loaded(self):
        self.events.append(f"load {self.name}")
        yield self
        self.events.append(f"unload {self.name}")

    def predict_velocity(self, x, timestep, context, context_mask=None, image_latent=None, **kw):
        self.calls.append({"x": x.clone(), "t": timestep.clone(), "image_latent": image_latent})
        s = timestep.float() / 1000
        s = s.view(-1, 1, 1, 1, 1) if s.ndim == 1 else s.view(s.shape[0], 1, -1, 1, 1)
        return (x - self.target) / s.clamp_min(1e-3)


def masked_latent() -> Latent:
    base = init_noise(16, 16, 9, 1, seed=4, grid=LatentGrid(channels=4))  # (1, 4, 3, 2, 2)
    known = torch.zeros(base.shape)
    known[:, :, 0] = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(1)) * 3
    cc = torch.randn(1, 5, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    return Latent(samples=base.samples, frame_mask=torch.tensor([[1.0, 0.0, 0.0]]), known=known,
                  meta=base.meta, channel_cond=cc)


@pytest.mark.parametrize("frame_timesteps", [True, False])
def test_frame_masks_channel_cond_and_frame_timesteps_survive_the_split(frame_timesteps) -> None:
    latent = masked_latent()
    pos = torch.ones(1, 3, 8)
    cond = Conditioning(embeds=pos, mask=torch.ones(1, 3), negative_embeds=-pos,
                        negative_mask=torch.ones(1, 3))
    events: list[str] = []
    high = Field(torch.full(latent.shape, 0.5), frame_timesteps, events, "high")
    low = Field(torch.full(latent.shape, 0.25), frame_timesteps, events, "low")
    args = dict(steps=8, shift=3.0, sampler="euler", seed=5, cfg=2.0)
    one = sample(high, latent, cond, model_low_noise=low, boundary=0.875, **args)
    assert high.calls and low.calls
    assert torch.equal(one.samples[:, :, 0], latent.known[:, :, 0])  # known frame bit for bit
    for call in high.calls + low.calls:
        assert call["image_latent"] is latent.channel_cond  # channel_cond reaches both experts
        if frame_timesteps:
            assert call["t"].shape == (1, 3) and float(call["t"][0, 0]) == 0.0
        else:
            assert call["t"].shape == (1,)
    assert one.channel_cond is latent.channel_cond

    # by hand: high-noise range with leftover noise, then low-noise range without adding noise
    k = sum(1 for c in high.calls[::2])
    first = sample(high, latent, cond, end_step=k, return_with_leftover_noise=True, **args)
    assert torch.equal(first.samples[:, :, 0], latent.known[:, :, 0])
    assert first.channel_cond is latent.channel_cond and first.frame_mask is latent.frame_mask
    second = sample(low, first, cond, start_step=k, add_noise=False, **args)
    torch.testing.assert_close(second.samples, one.samples, rtol=0, atol=1e-6)
    assert torch.equal(second.samples[:, :, 0], latent.known[:, :, 0])


def test_default_boundary_comes_from_the_model_family() -> None:
    from types import SimpleNamespace as NS

    assert default_boundary(NS(variant="t2v", in_channels=16, out_channels=16)) == 0.875
    assert default_boundary(NS(variant="i2v", in_channels=36, out_channels=16)) == 0.9
    assert default_boundary(NS(variant="t2v", in_channels=36, out_channels=16)) == 0.9


def test_node_two_experts_defaults_and_refuses_mismatched_experts(tmp_path: Path) -> None:
    ctx = ExecutionContext("n1", "DiTDenoise", "run", torch.device("cpu"), tmp_path, tmp_path,
                           tmp_path, InterruptFlag(), lambda f, m, p: None)
    latent = masked_latent()
    latent = Latent(samples=latent.samples, meta=latent.meta)
    pos = torch.ones(1, 3, 8)
    cond = Conditioning(embeds=pos, mask=torch.ones(1, 3), negative_embeds=-pos,
                        negative_mask=torch.ones(1, 3))
    events: list[str] = []
    high = Field(torch.zeros(latent.shape), False, events, "high")
    low = Field(torch.zeros(latent.shape), False, events, "low")
    high.variant = low.variant = "t2v"
    args = dict(conditioning=cond, latent=latent, steps=8, cfg=1.0, shift=3.0, sampler="euler",
                seed=0, denoise=1.0)
    out = DiTDenoise.execute(ctx, model=high, model_low_noise=low, **args)["latent"]
    assert out.meta["sampling"]["boundary"] == 0.875 and out.meta["sampling"]["cfg_low_noise"] == 1.0
    switch = [float(c["t"][0]) for c in low.calls]
    assert switch and max(switch) < 875 and min(float(c["t"][0]) for c in high.calls) >= 875

    wide = Field(torch.zeros(latent.shape), False, events, "wide")
    wide.in_channels = 36
    with pytest.raises(NodeError) as err:
        DiTDenoise.execute(ctx, model=high, model_low_noise=wide, **args)
    assert err.value.input in ("model_low_noise", "latent")
    with pytest.raises(NodeError) as err:
        DiTDenoise.execute(ctx, model=high, model_low_noise=low, boundary=1.5, **args)
    assert err.value.input == "boundary"


# ---- the example workflow ------------------------------------------------------------------------

def test_two_expert_workflow_runs_and_writes_the_frames(registry, executor, tmp_path) -> None:
    from engine.document import load_workflow
    from engine.models.paths import ModelPaths
    from engine.validation import validate
    from tests.test_workflows import write_tiny_models

    workflow = load_workflow(ROOT / "workflows" / "text_to_video_two_experts.json")
    assert validate(workflow, registry) == []
    root = tmp_path / "models"
    write_tiny_models(workflow, registry, root)
    executor.model_paths = ModelPaths([root])
    report = executor.run(workflow, output_dir=tmp_path / "out")
    assert report.status == "done", report.error
    videos = [p for p in report.outputs if str(p).endswith(".mp4")]
    assert len(videos) == 1
    noise = workflow.nodes["noise"].inputs
    with av.open(str(videos[0])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == noise["frames"]
    assert frames[0].shape == (noise["height"], noise["width"], 3)
    # the hand-made split sits where the one-node form switches (t < 0.875 * 1000)
    from engine.sampling import schedule_sigmas

    high, low = workflow.nodes["high_noise"].inputs, workflow.nodes["low_noise"].inputs
    assert high["return_with_leftover_noise"] is True and low["add_noise"] is False
    k = high["end_step"]
    assert low["start_step"] == k
    ts = schedule_sigmas(high["scheduler"], high["steps"], high["shift"], high["sampler"]) * 1000
    assert float(ts[k - 1]) >= 875 > float(ts[k])

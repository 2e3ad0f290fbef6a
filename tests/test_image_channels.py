"""Image-channel conditioning (Wan 2.1 I2V-14B / FLF2V-14B, Wan 2.2 I2V-A14B) and CLIP vision.

Parity: diffusers' WanImageToVideoPipeline and Reelgraph (LoadCLIPVision -> CLIPVisionEncode ->
WanImageToVideo -> engine.sampling.sample) run on the same tiny random weights at fp32, and every
model call is compared: the 36-channel DiT input (noisy latent + mask + encoded frames), the CLIP
tokens, and the latent after each step.

What is aligned, and how:
- Weights: the same seeded diffusers modules; Reelgraph loads them back from files written in
  ComfyUI's layouts (DiT, VAE, clip_vision_h.safetensors).
- Noise: not injected. Reelgraph's NoiseInit draws (C, T', H', W') from a CPU generator seeded
  with `seed`; diffusers' randn_tensor draws (1, C, T', H', W') from the same generator, so the
  pipeline gets `generator=torch.Generator().manual_seed(seed)` and both start from the same noise.
- Text: diffusers gets `prompt_embeds` / `negative_prompt_embeds` directly (512 tokens, zero past
  the prompt, as Wan pads); Reelgraph a Conditioning with the same tensors and a full mask.
- Images: 224 x 224, the video's size and CLIP's input size, so neither side resizes: the pipeline
  computes its own CLIP tokens (CLIPImageProcessor, PIL backend) and VAE condition video from the
  same PIL image that Reelgraph reads as a float tensor. (Resizing differs between PIL's bicubic and
  torch's by a few 8-bit levels; that is measured separately below.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import NodeError
from engine.values import ClipVisionOutput, Conditioning
from tests.tiny_clip_vision import tiny_clip_vision, write_clip_vision
from tests.tiny_models import tiny_dit, tiny_vae, write_dit, write_vae

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224  # video size = CLIP input size: no resizing on either side (see module docstring)
TEXT_LEN = 512
SHIFT = 3.0
ATOL = 2e-5  # fp32, same ops on both sides; measured differences are ~1e-6


# ---- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("image_channels")
    out = {"vae": write_vae(root / "vae.safetensors"),
           "clip": write_clip_vision(root / "clip_vision_h.safetensors"),
           "clip_open": write_clip_vision(root / "open_clip.safetensors", layout="open_clip")}
    for variant in ("i2v", "flf2v", "i2v22"):
        out[variant] = write_dit(root / f"{variant}.safetensors", variant)
    return out


@pytest.fixture(scope="module")
def loaded(files):
    from engine.models.clip_vision import load_clip_vision
    from engine.models.wan_vae import load_vae

    return {"vae": load_vae(files["vae"], device="cpu", dtype="fp32"),
            "clip": load_clip_vision(files["clip"], device="cpu", dtype="fp32")}


def load_dit(path):
    from engine.models.wan_dit import load_dit as load

    return load(path, device="cpu", dtype="fp32", offload=False)


def picture(seed: int) -> np.ndarray:
    """A smooth 8-bit RGB picture (gradients and a disc) of SIZE x SIZE."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    c = torch.rand(3, 3, generator=g)
    disc = (((xx - c[0, 0]) ** 2 + (yy - c[0, 1]) ** 2) < 0.08).float()
    img = torch.stack([c[1, k] * xx + c[2, k] * yy + 0.4 * disc for k in range(3)], -1)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def as_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr)).float().div(255.0).unsqueeze(0)  # (1, H, W, 3)


def text(seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.zeros(1, TEXT_LEN, 32), torch.zeros(1, TEXT_LEN, 32)
    pos[:, :9] = torch.randn(1, 9, 32, generator=g)
    neg[:, :5] = torch.randn(1, 5, 32, generator=g)
    return pos, neg


def record_calls(module: torch.nn.Module, calls: list) -> torch.utils.hooks.RemovableHandle:
    def hook(_module, _args, kwargs):
        img = kwargs.get("encoder_hidden_states_image")
        calls.append({"x": kwargs["hidden_states"].detach().float().clone(),
                      "t": torch.as_tensor(kwargs["timestep"]).float().clone(),
                      "text": kwargs["encoder_hidden_states"].detach().float().clone(),
                      "image": None if img is None else img.detach().float().clone()})
    return module.register_forward_pre_hook(hook, with_kwargs=True)


def run_diffusers(variant: str, start: np.ndarray, end: np.ndarray | None, frames: int,
                  steps: int, cfg: float, seed: int):
    from diffusers import WanImageToVideoPipeline
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from engine.sampling import make_scheduler

    transformer = tiny_dit(variant)
    uses_clip = transformer.config.image_dim is not None
    pipe = WanImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=tiny_vae(), scheduler=make_scheduler("unipc", SHIFT),
        image_processor=CLIPImageProcessorPil() if uses_clip else None,
        image_encoder=tiny_clip_vision() if uses_clip else None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    calls: list = []
    steps_out: list[torch.Tensor] = []

    def on_step(_pipe, _i, _t, kwargs):
        steps_out.append(kwargs["latents"].detach().float().clone())
        return {}

    handle = record_calls(transformer, calls)
    pos, neg = text()
    out = pipe(image=Image.fromarray(start), last_image=None if end is None else Image.fromarray(end),
               prompt_embeds=pos, negative_prompt_embeds=neg, height=SIZE, width=SIZE,
               num_frames=frames, num_inference_steps=steps, guidance_scale=cfg,
               generator=torch.Generator().manual_seed(seed), output_type="latent",
               callback_on_step_end=on_step)
    handle.remove()
    clip = None
    if uses_clip:
        images = [Image.fromarray(start)] + ([Image.fromarray(end)] if end is not None else [])
        clip = pipe.encode_image(images if end is not None else images[0], torch.device("cpu"))
    return {"calls": calls, "steps": steps_out, "final": out.frames.float(), "clip": clip}


def run_reelgraph(dit, loaded, start: np.ndarray, end: np.ndarray | None, frames: int,
                  steps: int, cfg: float, seed: int, use_clip: bool):
    from engine.image_channels import wan_image_to_video
    from engine.sampling import sample

    pos, neg = text()
    cond = Conditioning(embeds=pos, mask=torch.ones(1, TEXT_LEN, dtype=torch.long),
                        negative_embeds=neg, negative_mask=torch.ones(1, TEXT_LEN, dtype=torch.long))
    clip_start = clip_end = None
    if use_clip:
        clip_start = loaded["clip"].encode(as_tensor(start))
        clip_end = loaded["clip"].encode(as_tensor(end)) if end is not None else None
    cond, latent = wan_image_to_video(
        loaded["vae"], cond, width=SIZE, height=SIZE, frames=frames, batch=1, seed=seed,
        start_image=as_tensor(start), end_image=None if end is None else as_tensor(end),
        clip_vision_start=clip_start, clip_vision_end=clip_end)
    calls: list = []
    handle = record_calls(dit.module, calls)
    # the noise is the latent's (NoiseInit's seed); DiTDenoise's seed 0 keeps it as drawn
    out = sample(dit, latent, cond, steps=steps, cfg=cfg, shift=SHIFT, sampler="unipc", seed=0)
    handle.remove()
    return {"calls": calls, "final": out.samples, "cond": cond, "latent": latent,
            "clip": (clip_start, clip_end)}


def compare(ref: dict, got: dict, steps: int, cfg: float) -> float:
    """Every model call and every step's latent; returns the largest difference seen."""
    per_step = 2 if cfg != 1.0 else 1
    assert len(ref["calls"]) == len(got["calls"]) == steps * per_step
    worst = 0.0
    for i, (a, b) in enumerate(zip(ref["calls"], got["calls"])):
        assert a["x"].shape == b["x"].shape, f"call {i}"
        for key in ("x", "t", "text", "image"):
            if a[key] is None or b[key] is None:
                assert a[key] is None and b[key] is None, f"call {i}: {key}"
                continue
            diff = (a[key] - b[key].expand_as(a[key])).abs().max().item()
            worst = max(worst, diff)
            assert diff <= ATOL, f"call {i}: {key} differs by {diff}"
    # the latent after each step: the next step's model input (first 16 channels), then the output
    ours = [c["x"][:, :16] for c in got["calls"][per_step::per_step]] + [got["final"]]
    assert len(ours) == len(ref["steps"]) == steps
    for i, (a, b) in enumerate(zip(ref["steps"], ours)):
        diff = (a - b).abs().max().item()
        worst = max(worst, diff)
        assert diff <= ATOL, f"step {i + 1}: latent differs by {diff}"
    return worst


# ---- parity ---------------------------------------------------------------------------------

CASES = {
    # variant, end image, frames, steps, cfg
    "i2v_14b": ("i2v", False, 5, 4, 5.0),
    "flf2v_14b": ("flf2v", True, 9, 3, 5.0),
    "i2v_a14b_no_clip": ("i2v22", False, 5, 3, 4.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_diffusers_wan_image_to_video_pipeline_at_every_step(case, files, loaded):
    variant, with_end, frames, steps, cfg = CASES[case]
    start, end = picture(1), picture(2) if with_end else None
    seed = 11
    ref = run_diffusers(variant, start, end, frames, steps, cfg, seed)
    dit = load_dit(files[variant])
    got = run_reelgraph(dit, loaded, start, end, frames, steps, cfg, seed,
                        use_clip=dit.needs_image_embeds)

    # the condition channels alone: mask + encoded frames, as prepare_latents builds them
    cond_channels = got["latent"].channel_cond
    assert cond_channels.shape[1] == 4 + 16
    assert torch.allclose(ref["calls"][0]["x"][:, 16:], cond_channels, atol=ATOL)
    mask = cond_channels[0, :4]  # (4, T', H', W')
    assert bool((mask[:, 0] == 1).all())
    assert bool((mask[:, 1:-1] == 0).all())
    assert bool((mask[:3, -1] == 0).all()) and bool((mask[3, -1] == float(with_end)).all())
    if ref["clip"] is not None:
        # CLIPVisionEncode == diffusers' encode_image (hidden_states[-2] after CLIPImageProcessor)
        tokens = got["cond"].image_embeds
        expected = ref["clip"].reshape(1, -1, ref["clip"].shape[-1])  # start then end tokens
        assert tokens.shape == expected.shape == (1, 257 * (2 if with_end else 1), 48)
        assert (tokens - expected).abs().max().item() <= ATOL
    else:
        assert got["cond"].image_embeds is None
    worst = compare(ref, got, steps, cfg)
    assert (ref["final"] - got["final"]).abs().max().item() <= ATOL
    print(f"{case}: max difference over all calls and steps {worst:.2e}")


def test_clip_vision_preprocessing_follows_clip_for_other_sizes(loaded):
    """Non-224 images: resize (bicubic, antialiased) + centre crop like CLIPImageProcessor. PIL
    resamples in 8-bit passes, torch in float, so a few pixels land one or two levels apart."""
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from engine.models.clip_vision import preprocess

    proc = CLIPImageProcessorPil()
    for h, w in ((160, 160), (300, 300), (96, 96)):
        arr = np.asarray(Image.fromarray(picture(3)).resize((w, h), Image.BICUBIC))
        ref = proc(images=Image.fromarray(arr), return_tensors="pt")["pixel_values"]
        got = preprocess(as_tensor(arr), 224)
        diff = (ref - got).abs() * torch.tensor([0.2686, 0.2613, 0.2758]).view(1, 3, 1, 1) * 255
        assert diff.max().item() <= 3.0, (h, w)  # in 8-bit levels
        assert diff.mean().item() <= 0.3, (h, w)
    # crop "none" squashes the whole picture; "center" keeps the middle square
    wide = as_tensor(np.concatenate([picture(4)[:, :112], picture(5)], axis=1))  # 224 x 336
    assert preprocess(wide, 224, "none").shape == preprocess(wide, 224, "center").shape
    assert not torch.allclose(preprocess(wide, 224, "none"), preprocess(wide, 224, "center"))


def test_open_clip_layout_loads_to_the_same_model(files, loaded):
    from engine.models.clip_vision import load_clip_vision

    other = load_clip_vision(files["clip_open"], device="cpu", dtype="fp32")
    assert other.info.layout == "open_clip" and loaded["clip"].info.layout == "comfyui"
    image = as_tensor(picture(6))
    a, b = loaded["clip"].encode(image), other.encode(image)
    assert torch.allclose(a.penultimate_hidden_states, b.penultimate_hidden_states, atol=1e-5)
    assert torch.allclose(a.image_embeds, b.image_embeds, atol=1e-5)


def test_transformers_folder_loads(tmp_path, loaded):
    from engine.models.clip_vision import load_clip_vision

    model = tiny_clip_vision()
    model.save_pretrained(tmp_path / "clip-folder")
    folder = load_clip_vision(tmp_path / "clip-folder", device="cpu", dtype="fp32")
    assert folder.info.layout == "hf"
    image = as_tensor(picture(6))
    assert torch.allclose(folder.encode(image).penultimate_hidden_states,
                          loaded["clip"].encode(image).penultimate_hidden_states, atol=1e-6)


def test_batch_of_images_makes_one_video_each_with_its_own_seed(loaded):
    from engine.image_channels import wan_image_to_video
    from engine.noise import init_noise

    pos, _ = text()
    cond = Conditioning(embeds=pos, mask=torch.ones(1, TEXT_LEN, dtype=torch.long))
    images = torch.cat([as_tensor(picture(1)), as_tensor(picture(2))])[:, ::7, ::7]  # 32 x 32
    clip = loaded["clip"].encode(images)
    out_cond, latent = wan_image_to_video(loaded["vae"], cond, width=32, height=32, frames=5,
                                          batch=1, seed=3, start_image=images,
                                          clip_vision_start=clip)
    assert latent.samples.shape[0] == 2 and latent.channel_cond.shape == (2, 20, 2, 8, 8)
    assert not torch.allclose(latent.channel_cond[0], latent.channel_cond[1])
    assert torch.equal(latent.samples[1:], init_noise(32, 32, 5, 1, 4, loaded["vae"].grid).samples)
    assert out_cond.image_embeds.shape == (2, 257, 48)
    assert latent.meta["sigma"] == 1.0
    # the conditioning that came in is not changed
    assert cond.image_embeds is None


# ---- bad input --------------------------------------------------------------------------------

def test_a_file_that_is_not_clip_vision_is_named(files):
    from engine.models.clip_vision import load_clip_vision
    from engine.models.safe_load import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"vae\.safetensors.*not a CLIP vision model.*a VAE"):
        load_clip_vision(files["vae"], device="cpu")
    with pytest.raises(ModelLoadError, match=r"not a CLIP vision model.*Wan diffusion model"):
        load_clip_vision(files["i2v"], device="cpu")


def test_unknown_width_without_head_count_asks_for_a_config(tmp_path):
    from engine.models.clip_vision import load_clip_vision
    from engine.models.safe_load import ModelLoadError, save_state_dict

    state = {k: v.contiguous() for k, v in tiny_clip_vision().state_dict().items()}
    path = save_state_dict(state, tmp_path / "bare.safetensors")  # no metadata
    with pytest.raises(ModelLoadError, match="num_attention_heads"):
        load_clip_vision(path, device="cpu")


def test_load_clip_vision_node_names_the_node_and_the_file(tmp_path, files, registry, executor):
    import shutil

    from engine.document import Workflow
    from engine.models.paths import ModelPaths

    root = tmp_path / "models"
    (root / "clip_vision").mkdir(parents=True)
    shutil.copy(files["vae"], root / "clip_vision" / "not_clip.safetensors")
    executor.model_paths = ModelPaths([root])
    wf = Workflow()
    wf.add_node("LoadCLIPVision", {"clip_name": "not_clip.safetensors"}, node_id="clip")
    wf.add_node("LoadImage", {"image": "resources/samples/yellow_triangle.png"}, node_id="img")
    wf.add_node("CLIPVisionEncode", {}, node_id="enc")
    wf.add_node("Preview", {}, node_id="show")
    wf.connect("clip", "clip_vision", "enc", "clip_vision")
    wf.connect("img", "image", "enc", "image")
    wf.connect("enc", "clip_vision_output", "show", "value")
    report = executor.run(wf, output_dir=tmp_path / "out")
    assert report.status != "done"
    message = str(report.error)
    assert "clip" in message and "not_clip.safetensors" in message and "a VAE" in message


def test_image_channel_dit_with_plain_noise_gets_the_denoise_message(files, loaded):
    from engine.noise import init_noise
    from nodes.sampling import DiTDenoise

    pos, neg = text()
    cond = Conditioning(embeds=pos, mask=torch.ones(1, TEXT_LEN, dtype=torch.long))
    latent = init_noise(32, 32, 5, 1, 0, loaded["vae"].grid)
    with pytest.raises(NodeError, match="Wan Image To Video"):
        DiTDenoise.execute(None, model=load_dit(files["i2v22"]), conditioning=cond, latent=latent,
                           steps=2, cfg=1.0, shift=3.0, sampler="unipc", seed=0, denoise=1.0)


def test_clip_models_without_clip_tokens_name_the_fix(files, loaded):
    from engine.image_channels import wan_image_to_video
    from engine.sampling import sample

    pos, _ = text()
    cond = Conditioning(embeds=pos[:, :16], mask=torch.ones(1, 16, dtype=torch.long))
    image = as_tensor(picture(1))[:, ::7, ::7]
    for variant in ("i2v", "flf2v"):
        c, latent = wan_image_to_video(loaded["vae"], cond, width=32, height=32, frames=5,
                                       batch=1, seed=0, start_image=image, end_image=image)
        with pytest.raises(NodeError, match="connect a CLIP Vision Encode to Wan Image To Video"):
            sample(load_dit(files[variant]), latent, c, steps=1, cfg=1.0, shift=3.0)
    # FLF2V with only the start image's tokens: both ends are needed
    clip = loaded["clip"].encode(image)
    c, latent = wan_image_to_video(loaded["vae"], cond, width=32, height=32, frames=5, batch=1,
                                   seed=0, start_image=image, end_image=image,
                                   clip_vision_start=clip)
    with pytest.raises(NodeError, match="clip_vision_start and clip_vision_end"):
        sample(load_dit(files["flf2v"]), latent, c, steps=1, cfg=1.0, shift=3.0)


def test_wan_image_to_video_refuses_bad_requests(loaded):
    from engine.image_channels import wan_image_to_video

    pos, _ = text()
    cond = Conditioning(embeds=pos, mask=torch.ones(1, TEXT_LEN, dtype=torch.long))
    image = as_tensor(picture(1))[:, ::7, ::7]
    kw = dict(width=32, height=32, batch=1, seed=0)
    with pytest.raises(NodeError, match="needs a start_image, an end_image or both") as err:
        wan_image_to_video(loaded["vae"], cond, frames=5, **kw)
    assert err.value.input == "start_image"
    with pytest.raises(NodeError, match="4n\\+1") as err:
        wan_image_to_video(loaded["vae"], cond, frames=6, start_image=image, **kw)
    assert err.value.input == "frames"
    two = torch.cat([image, image, image])
    with pytest.raises(NodeError, match="batch"):
        wan_image_to_video(loaded["vae"], cond, frames=5, start_image=two,
                           **{**kw, "batch": 2})
    other = ClipVisionOutput(penultimate_hidden_states=torch.zeros(1, 257, 64))
    with pytest.raises(NodeError, match="different CLIP vision models"):
        wan_image_to_video(loaded["vae"], cond, frames=5, start_image=image,
                           clip_vision_start=loaded["clip"].encode(image), clip_vision_end=other,
                           **kw)


# ---- end to end -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, frames", [("image_to_video_14b", 5),
                                          ("first_last_frame_to_video", 9)])
def test_example_workflow_writes_an_mp4_with_the_right_frames(name, frames, registry, executor,
                                                             tmp_path):
    import av

    from engine.document import load_workflow
    from engine.models.paths import ModelPaths
    from tests.test_workflows import write_tiny_models

    workflow = load_workflow(ROOT / "workflows" / f"{name}.json")
    root = tmp_path / "models"
    write_tiny_models(workflow, registry, root)
    executor.model_paths = ModelPaths([root])
    report = executor.run(workflow, output_dir=tmp_path / "out")
    assert report.status == "done", report.error
    videos = [Path(p) for p in report.outputs if str(p).endswith(".mp4")]
    assert len(videos) == 1
    with av.open(str(videos[0])) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    size = {n.type: n.inputs for n in workflow.nodes.values()}["WanImageToVideo"]
    assert len(decoded) == frames
    assert decoded[0].shape == (size["height"], size["width"], 3)


def test_clip_vision_output_and_image_channel_latent_spill_to_disk(loaded):
    from engine.image_channels import wan_image_to_video
    from engine.values import flatten, unflatten

    image = as_tensor(picture(1))[:, ::7, ::7]
    clip = loaded["clip"].encode(image)
    pos, _ = text()
    cond = Conditioning(embeds=pos, mask=torch.ones(1, TEXT_LEN, dtype=torch.long))
    cond, latent = wan_image_to_video(loaded["vae"], cond, width=32, height=32, frames=5, batch=1,
                                      seed=0, start_image=image, clip_vision_start=clip)
    for value in (clip, cond, latent):
        tensors: dict = {}
        back = unflatten(flatten(value, "v", tensors), tensors)
        assert type(back) is type(value)
        for f in dataclasses.fields(value):
            a, b = getattr(value, f.name), getattr(back, f.name)
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, f.name

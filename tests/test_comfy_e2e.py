"""Imported ComfyUI graphs run end to end on CPU, with tiny random checkpoints written under
ComfyUI's file names in a `ComfyUI/models/...` tree (the install folder is the model root), and
give the same video, pixel for pixel, as the same graph built by hand in Reelgraph: text to
video, image to video (Wan 2.1 I2V-14B with CLIP vision), TI2V (Wan 2.2 5B,
Wan22ImageToVideoLatent) and Wan 2.2's two experts (a KSamplerAdvanced pair)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from engine.comfy import import_comfy_data
from engine.document import Workflow
from engine.models.paths import ModelPaths
from engine.validation import validate
from tests.tiny_clip_vision import WORKFLOW_MODELS as CLIP_VISION_MODELS
from tests.tiny_experts import WORKFLOW_MODELS as EXPERT_MODELS
from tests.tiny_models import WORKFLOW_MODELS as BASE_MODELS
from tests.tiny_ti2v import WORKFLOW_MODELS as TI2V_MODELS

WRITERS = {**BASE_MODELS, **CLIP_VISION_MODELS, **EXPERT_MODELS, **TI2V_MODELS}
IMAGE = str(Path(__file__).resolve().parent.parent / "resources" / "samples" / "yellow_triangle.png")
TE, VAE21 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors"
PROMPT, NEGATIVE = "the camera pans slowly across a misty forest at dawn", "blurry, static"


def _prompt_head(vae: str, *dits: str) -> dict:
    """Loaders and the two prompts, ids 1-5 (+ one per extra DiT from 20)."""
    p = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": TE, "type": "wan", "device": "default"}},
         "2": {"class_type": "UNETLoader", "inputs": {"unet_name": dits[0], "weight_dtype": "default"}},
         "3": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
         "4": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 0]}},
         "5": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 0]}}}
    for i, dit in enumerate(dits[1:]):
        p[str(20 + i)] = {"class_type": "UNETLoader", "inputs": {"unet_name": dit, "weight_dtype": "default"}}
    return p


def _tail(p: dict, latent: list, fps: float = 16.0) -> dict:
    p["8"] = {"class_type": "VAEDecode", "inputs": {"samples": latent, "vae": ["3", 0]}}
    p["9"] = {"class_type": "CreateVideo", "inputs": {"images": ["8", 0], "fps": fps}}
    p["10"] = {"class_type": "SaveVideo", "inputs": {"video": ["9", 0], "filename_prefix": "comfy",
                                                     "format": "auto", "codec": "auto"}}
    return p


def _ksampler(model: list, pos: list, neg: list, latent: list, seed: int = 42) -> dict:
    return {"class_type": "KSampler", "inputs": {
        "model": model, "positive": pos, "negative": neg, "latent_image": latent, "seed": seed,
        "steps": 2, "cfg": 4.0, "sampler_name": "uni_pc", "scheduler": "simple", "denoise": 1.0}}


def _hand(vae: str, dit: str, **extra_dits: str) -> Workflow:
    wf = Workflow()
    wf.add_node("LoadTextEncoder", {"model": TE}, "te")
    wf.add_node("LoadDiT", {"model": dit}, "dit")
    for nid, name in extra_dits.items():
        wf.add_node("LoadDiT", {"model": name}, nid)
    wf.add_node("LoadVAE", {"vae": vae}, "vae")
    wf.add_node("TextEncode", {"prompt": PROMPT, "negative_prompt": NEGATIVE}, "enc")
    wf.connect("te", "encoder", "enc", "encoder")
    return wf


def _denoise(wf: Workflow, nid: str, model: str, cond: tuple[str, str], latent: tuple[str, str],
             **values) -> None:
    base = {"steps": 2, "cfg": 4.0, "shift": 5.0, "sampler": "uni_pc", "scheduler": "simple",
            "seed": 42, "denoise": 1.0}
    wf.add_node("DiTDenoise", {**base, **values}, nid)
    wf.connect(model, "model", nid, "model")
    wf.connect(*cond, nid, "conditioning")
    wf.connect(*latent, nid, "latent")


def _save(wf: Workflow, latent: str) -> Workflow:
    wf.add_node("VAEDecode", {}, "decode")
    wf.connect(latent, "latent", "decode", "latent")
    wf.connect("vae", "vae", "decode", "vae")
    wf.add_node("SaveVideo", {"filename_prefix": "hand", "format": "mp4"}, "save")
    wf.connect("decode", "video", "save", "video")
    return wf


def case_t2v():
    p = _prompt_head(VAE21, "wan2.1_t2v_1.3B_fp16.safetensors")
    p["6"] = {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32, "length": 5, "batch_size": 1}}
    p["7"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 5.0}}
    p["11"] = _ksampler(["7", 0], ["4", 0], ["5", 0], ["6", 0])
    wf = _hand(VAE21, "wan2.1_t2v_1.3B_fp16.safetensors")
    wf.add_node("NoiseInit", {"width": 32, "height": 32, "frames": 5, "batch": 1, "seed": 42, "fps": 16.0}, "noise")
    wf.connect("vae", "vae", "noise", "vae")
    _denoise(wf, "den", "dit", ("enc", "conditioning"), ("noise", "latent"))
    return _tail(p, ["11", 0]), _save(wf, "den")


def case_i2v_clip_vision():
    p = _prompt_head(VAE21, "wan2.1_i2v_480p_14B_fp16.safetensors")
    p["12"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"}}
    p["13"] = {"class_type": "LoadImage", "inputs": {"image": IMAGE}}
    p["14"] = {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["12", 0], "image": ["13", 0], "crop": "center"}}
    p["6"] = {"class_type": "WanImageToVideo", "inputs": {
        "positive": ["4", 0], "negative": ["5", 0], "vae": ["3", 0], "clip_vision_output": ["14", 0],
        "start_image": ["13", 0], "width": 32, "height": 32, "length": 5, "batch_size": 1}}
    p["7"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 5.0}}
    p["11"] = _ksampler(["7", 0], ["6", 0], ["6", 1], ["6", 2])
    wf = _hand(VAE21, "wan2.1_i2v_480p_14B_fp16.safetensors")
    wf.add_node("LoadCLIPVision", {"clip_name": "clip_vision_h.safetensors"}, "cv")
    wf.add_node("LoadImage", {"image": IMAGE}, "img")
    wf.add_node("CLIPVisionEncode", {"crop": "center"}, "cve")
    wf.connect("cv", "clip_vision", "cve", "clip_vision")
    wf.connect("img", "image", "cve", "image")
    wf.add_node("WanImageToVideo", {"width": 32, "height": 32, "frames": 5, "batch": 1, "seed": 42, "fps": 16.0}, "i2v")
    for src, out, inp in (("vae", "vae", "vae"), ("enc", "conditioning", "conditioning"),
                          ("cve", "clip_vision_output", "clip_vision_start"), ("img", "image", "start_image")):
        wf.connect(src, out, "i2v", inp)
    _denoise(wf, "den", "dit", ("i2v", "conditioning"), ("i2v", "latent"))
    return _tail(p, ["11", 0]), _save(wf, "den")


def case_ti2v():
    p = _prompt_head("wan2.2_vae.safetensors", "wan2.2_ti2v_5B_fp16.safetensors")
    p["13"] = {"class_type": "LoadImage", "inputs": {"image": IMAGE}}
    p["6"] = {"class_type": "Wan22ImageToVideoLatent", "inputs": {
        "vae": ["3", 0], "start_image": ["13", 0], "width": 32, "height": 32, "length": 5, "batch_size": 1}}
    p["7"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 5.0}}
    p["11"] = _ksampler(["7", 0], ["4", 0], ["5", 0], ["6", 0])
    wf = _hand("wan2.2_vae.safetensors", "wan2.2_ti2v_5B_fp16.safetensors")
    wf.add_node("LoadImage", {"image": IMAGE}, "img")
    wf.add_node("ImageToVideo", {"width": 32, "height": 32, "frames": 5, "seed": 42, "fps": 24.0}, "i2v")
    wf.connect("vae", "vae", "i2v", "vae")
    wf.connect("img", "image", "i2v", "image")
    _denoise(wf, "den", "dit", ("enc", "conditioning"), ("i2v", "latent"))
    return _tail(p, ["11", 0], fps=24.0), _save(wf, "den")


def case_two_experts():
    high, low = "wan2.2_t2v_high_noise_14B_fp16.safetensors", "wan2.2_t2v_low_noise_14B_fp16.safetensors"
    p = _prompt_head(VAE21, high, low)
    p["6"] = {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32, "length": 5, "batch_size": 1}}
    p["7"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 8.0}}
    p["17"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["20", 0], "shift": 8.0}}
    adv = {"steps": 4, "cfg": 3.5, "sampler_name": "euler", "scheduler": "simple", "positive": ["4", 0], "negative": ["5", 0]}
    p["11"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **adv, "model": ["7", 0], "latent_image": ["6", 0], "add_noise": "enable", "noise_seed": 7,
        "start_at_step": 0, "end_at_step": 2, "return_with_leftover_noise": "enable"}}
    p["15"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **adv, "model": ["17", 0], "latent_image": ["11", 0], "add_noise": "disable", "noise_seed": 7,
        "start_at_step": 2, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    wf = _hand(VAE21, high, dit_low=low)
    wf.add_node("NoiseInit", {"width": 32, "height": 32, "frames": 5, "batch": 1, "seed": 7, "fps": 16.0}, "noise")
    wf.connect("vae", "vae", "noise", "vae")
    common = dict(steps=4, cfg=3.5, shift=8.0, sampler="euler", scheduler="simple", seed=7)
    _denoise(wf, "high", "dit", ("enc", "conditioning"), ("noise", "latent"), **common,
             start_step=0, end_step=2, add_noise=True, return_with_leftover_noise=True)
    _denoise(wf, "low", "dit_low", ("enc", "conditioning"), ("high", "latent"), **common,
             start_step=2, end_step=10000, add_noise=False, return_with_leftover_noise=False)
    return _tail(p, ["15", 0]), _save(wf, "low")


CASES = {"t2v": case_t2v, "i2v_clip_vision": case_i2v_clip_vision, "ti2v": case_ti2v,
         "two_experts": case_two_experts}


def _frames(path: str) -> np.ndarray:
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("name", CASES)
def test_imported_graph_runs_and_matches_the_hand_built_one(name, registry, executor, tmp_path):
    prompt, hand = CASES[name]()
    install = tmp_path / "ComfyUI"  # the install folder itself is the model root
    names = {(k, n["inputs"][w]) for n in prompt.values()
             for t, (w, k) in {"UNETLoader": ("unet_name", "diffusion_models"), "CLIPLoader": ("clip_name", "text_encoders"),
                               "VAELoader": ("vae_name", "vae"),
                               "CLIPVisionLoader": ("clip_name", "clip_vision")}.items() if n["class_type"] == t}
    for kind, file in names:
        target = install / "models" / kind / file
        target.parent.mkdir(parents=True, exist_ok=True)
        WRITERS[f"{kind}/{file}"](target)
    paths = ModelPaths([install])
    executor.model_paths = paths
    result = import_comfy_data(prompt, registry, paths)
    assert result.exit_code == 0, result.report.to_text()
    assert not result.report.warnings, result.report.to_text()  # every model found, nothing lost
    imported = result.workflow
    assert validate(imported, registry) == [] and validate(hand, registry) == []
    videos = []
    for wf, folder in ((imported, "imported"), (hand, "hand")):
        report = executor.run(wf, output_dir=tmp_path / folder, use_cache=False)
        assert report.status == "done", report.error
        (video,) = [o for o in report.outputs if o.endswith(".mp4")]
        videos.append(_frames(video))
    assert videos[0].shape[0] == 5 and videos[0].shape[1:3] == (32, 32)
    np.testing.assert_array_equal(videos[0], videos[1])

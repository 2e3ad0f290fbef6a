"""ComfyUI's model folders: extra_model_paths.yaml (A1111-style and ComfyUI-style sections,
base_path, `|` blocks, relative paths, ~ and $VARS, is_default) and a model root that is the
ComfyUI install folder or its models/ folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Settings
from engine.models.extra_model_paths import read_extra_model_paths
from engine.models.paths import ModelPaths, model_paths_for

# Written for this test in the shape of ComfyUI's extra_model_paths.yaml.example.
YAML = """
# an A1111 install: base_path with ~ and folder keys below it
a111:
    base_path: ~/sd-webui/
    checkpoints: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    upscale_models: |
                  models/ESRGAN
                  models/RealESRGAN
    embeddings: embeddings
    controlnet: models/ControlNet

# a second ComfyUI tree named through an environment variable, listed first
comfyui:
    base_path: $SHARED_MODELS/comfy
    is_default: true
    diffusion_models: |
        models/diffusion_models
        models/unet
    clip: models/clip/
    text_encoders: models/text_encoders/
    clip_vision: models/clip_vision/
    vae_approx: models/vae_approx

# no base_path: relative to this file's folder
loose:
    loras: more_loras
empty_section:
"""

FILES = {  # where each file lives -> (kind, name it resolves by)
    "home/sd-webui/models/Stable-diffusion/sd15.safetensors": ("checkpoints", "sd15.safetensors"),
    "home/sd-webui/models/VAE/a1111_vae.pt": ("vae", "a1111_vae.pt"),
    "home/sd-webui/models/Lora/style.safetensors": ("loras", "style.safetensors"),
    "home/sd-webui/models/LyCORIS/sub/locon.safetensors": ("loras", "sub/locon.safetensors"),
    "home/sd-webui/models/ESRGAN/4x.pth": ("upscale_models", "4x.pth"),
    "home/sd-webui/models/RealESRGAN/x2.pth": ("upscale_models", "x2.pth"),
    "shared/comfy/models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors": ("diffusion_models", "wan2.1_t2v_1.3B_fp16.safetensors"),
    "shared/comfy/models/unet/old_unet.safetensors": ("diffusion_models", "old_unet.safetensors"),
    "shared/comfy/models/clip/umt5.safetensors": ("text_encoders", "umt5.safetensors"),
    "shared/comfy/models/text_encoders/umt5_b.safetensors": ("text_encoders", "umt5_b.safetensors"),
    "shared/comfy/models/clip_vision/clip_vision_h.safetensors": ("clip_vision", "clip_vision_h.safetensors"),
    "shared/comfy/models/vae_approx/taew2_1.safetensors": ("vae_approx", "taew2_1.safetensors"),
    "ComfyUI/more_loras/lightx2v.safetensors": ("loras", "lightx2v.safetensors"),
    "ComfyUI/models/vae/wan_2.1_vae.safetensors": ("vae", "wan_2.1_vae.safetensors"),
    "ComfyUI/models/loras/own.safetensors": ("loras", "own.safetensors"),
}


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHARED_MODELS", str(tmp_path / "shared"))
    for rel in FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "home/sd-webui/embeddings").mkdir(parents=True)
    (tmp_path / "ComfyUI/main.py").write_text("")
    (tmp_path / "ComfyUI/extra_model_paths.yaml").write_text(YAML)
    return tmp_path


@pytest.mark.parametrize("root", ["ComfyUI", "ComfyUI/models"])
def test_install_or_models_folder_finds_every_file(tree, root):
    paths = ModelPaths([tree / root])  # the YAML next to the install is read either way
    assert paths.problems == []
    for rel, (kind, name) in FILES.items():
        assert paths.resolve(kind, name) == tree / rel, rel
        assert name in paths.list(kind)


def test_search_order_is_default_first(tree):
    (tree / "ComfyUI/models/diffusion_models").mkdir()
    (tree / "ComfyUI/models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors").write_bytes(b"own")
    paths = ModelPaths([tree / "ComfyUI"])
    assert paths.resolve("diffusion_models", "wan2.1_t2v_1.3B_fp16.safetensors") == \
        tree / "shared/comfy/models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors"
    folders = paths.folders("loras")
    assert folders.index(tree / "ComfyUI/models/loras") < folders.index(tree / "home/sd-webui/models/Lora")


def test_yaml_from_the_settings(tree, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "extra_model_paths.yaml"
    moved.parent.mkdir()
    moved.write_text(YAML)
    monkeypatch.setattr("engine.models.paths.user_models_root", lambda: tmp_path / "none")
    paths = model_paths_for(Settings(model_roots=[], comfy_extra_model_paths=str(moved)))
    assert paths.resolve("checkpoints", "sd15.safetensors").is_file()
    assert paths.folders("loras")[-1] == moved.parent / "more_loras"  # relative to the YAML


def test_inventory_lists_unused_kinds_without_failing(tree):
    rows = ModelPaths([tree / "ComfyUI"]).inventory()
    by_kind = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    assert sum(r["count"] for r in by_kind["upscale_models"]) == 2
    assert all(r["used"] is False for k in ("checkpoints", "upscale_models", "vae_approx", "embeddings",
                                            "controlnet") for r in by_kind[k])
    assert all(r["used"] for r in by_kind["loras"])
    assert sum(r["count"] for r in by_kind["loras"]) == 4


@pytest.mark.parametrize("text, expected", [
    ("a: [unclosed", "not valid YAML"), ("- just\n- a list", "must map section names"),
    ("s: 5", "section 's' must map"), ("s:\n  base_path: 3\n  vae: x", "base_path must be"),
    ("s:\n  vae: {a: 1}", "s.vae must be a path"), ("!!python/object:os.system {}", "not valid YAML"),
])
def test_bad_yaml_is_a_problem_line_never_an_error(tmp_path, text, expected):
    path = tmp_path / "extra_model_paths.yaml"
    path.write_text(text)
    found = read_extra_model_paths(path)
    assert len(found.problems) == 1 and expected in found.problems[0], found.problems
    assert ModelPaths([tmp_path], [path]).problems  # and ModelPaths keeps going


def test_missing_yaml_is_a_problem(tmp_path):
    assert "cannot read" in read_extra_model_paths(tmp_path / "nope.yaml").problems[0]

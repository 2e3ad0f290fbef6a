"""Seeds with each control_after_generate mode, every ComfyUI node type the issue lists
(checked against the test data and the mapping), and `batch` taking a ComfyUI file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.batch.cli import main as batch_main
from engine.comfy import import_comfy_data
from engine.comfy.mapping import Mapper

DATA = Path(__file__).parent / "data" / "comfy"
ISSUE_TYPES = """UNETLoader CLIPLoader VAELoader CLIPVisionLoader CLIPVisionEncode LoraLoader
LoraLoaderModelOnly CLIPTextEncode EmptyHunyuanLatentVideo EmptyLatentImage ModelSamplingSD3 KSampler
KSamplerAdvanced VAEDecode VAEDecodeTiled VAEEncode WanImageToVideo WanFirstLastFrameToVideo
Wan22ImageToVideoLatent CreateVideo SaveVideo SaveAnimatedWEBP SaveWEBM SaveImage LoadImage LoadVideo
PrimitiveInt PrimitiveFloat PrimitiveString PrimitiveStringMultiline Reroute Note MarkdownNote""".split()


def _ui(seed_mode: str, prim_mode: str) -> dict:
    """A UI 1.0 workflow whose KSampler seed and a PrimitiveInt carry control modes."""
    nodes = [
        {"id": 1, "type": "EmptyHunyuanLatentVideo", "widgets_values": [64, 64, 5, 1], "mode": 0},
        {"id": 2, "type": "KSampler", "mode": 0,
         "inputs": [{"name": "latent_image", "link": 1}],
         "widgets_values": [1234, seed_mode, 4, 5.0, "euler", "simple", 1.0]},
        {"id": 3, "type": "PrimitiveInt", "mode": 0, "widgets_values": [99, prim_mode]},
    ]
    return {"version": 1.0, "nodes": nodes, "links": [
        {"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "LATENT"}]}


@pytest.mark.parametrize("mode", ["fixed", "increment", "decrement", "randomize"])
def test_seed_control_modes(registry, mode):
    wf = import_comfy_data(_ui(mode, mode), registry).workflow
    den = next(n for n in wf.nodes.values() if n.type == "DiTDenoise")
    noise = next(n for n in wf.nodes.values() if n.type == "NoiseInit")
    prim = next(n for n in wf.nodes.values() if n.type == "Int")
    assert den.inputs["seed"] == noise.inputs["seed"] == 1234 and prim.inputs["value"] == 99
    layout = wf.layout.get("nodes", {})
    for node, name in ((den, "seed"), (noise, "seed"), (prim, "value")):
        control = layout.get(node.id, {}).get("seed_control", {})
        if mode == "fixed":  # the studio's default: nothing to record
            assert name not in control
        else:
            assert control[name] == mode
            assert (name in layout[node.id].get("randomize", [])) == (mode == "randomize")


def test_every_listed_node_type_is_mapped_and_in_the_test_data():
    handled = {m[len("_map_"):] for m in dir(Mapper) if m.startswith("_map_")}
    handled |= {"CLIPTextEncode", "EmptyHunyuanLatentVideo", "EmptyLatentImage", "PrimitiveNode",
                "Reroute"}  # folded by samplers / removed while flattening
    assert set(ISSUE_TYPES) - handled == set()
    sources = [p.read_text() for p in DATA.glob("*.json")]
    sources += [p.read_text() for p in Path(__file__).parent.glob("test_comfy_*.py")]
    text = "\n".join(sources)
    missing = [t for t in ISSUE_TYPES if not re.search(rf'"{t}"', text)]
    assert missing == [], f"no test workflow uses {missing}"


def test_batch_takes_a_comfy_file_report_first(tmp_path, capsys):
    """The importer runs first (its report on stderr), then the batch validates the grid."""
    src = tmp_path / "wf.json"
    src.write_text(json.dumps(_ui("fixed", "fixed")))
    code = batch_main([str(src), "--grid", "nosuchnode.seed=1,2", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.index("ComfyUI") < err.index("nosuchnode")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("text, expected", [
    ('{"version": 0.4, "nodes": [{"id": 1, "type": "KSampler"', "not valid JSON"),  # truncated
    ('{"version": 0.4, "nodes": "x", "links": []}', "nodes"),  # wrong types
    ('{"1": {"class_type": "KSampler", "inputs": {"model": ["9", 0]}}}', "missing node 9"),
    ('{"1": {"class_type": "Reroute", "inputs": {"x": ["2", 0]}}, '
     '"2": {"class_type": "Reroute", "inputs": {"x": ["1", 0]}}}', "link loop"),
])
def test_batch_refuses_a_damaged_comfy_file(tmp_path, capsys, text, expected):
    src = tmp_path / "bad.json"
    src.write_text(text)
    code = batch_main([str(src), "--grid", "a.b=1", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and expected in err, err


def test_the_remaining_node_types(registry):
    """LoraLoader, VAEEncode, VAEDecodeTiled, WanFirstLastFrameToVideo, SaveImage and the
    float / string primitives, in one API prompt."""
    p = {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5.safetensors", "type": "wan"}},
        "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "flf.safetensors", "weight_dtype": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "vae.safetensors"}},
        "4": {"class_type": "LoraLoader", "inputs": {"model": ["2", 0], "clip": ["1", 0], "lora_name": "l.safetensors",
                                                     "strength_model": 0.7, "strength_clip": 1.0}},
        "5": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a fox"}},
        "6": {"class_type": "PrimitiveString", "inputs": {"value": "blurry"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": ["5", 0], "clip": ["4", 1]}},
        "8": {"class_type": "CLIPTextEncode", "inputs": {"text": ["6", 0], "clip": ["4", 1]}},
        "9": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
        "11": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"}},
        "12": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["11", 0], "image": ["9", 0], "crop": "none"}},
        "13": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["11", 0], "image": ["10", 0], "crop": "none"}},
        "14": {"class_type": "WanFirstLastFrameToVideo", "inputs": {
            "positive": ["7", 0], "negative": ["8", 0], "vae": ["3", 0], "clip_vision_start_image": ["12", 0],
            "clip_vision_end_image": ["13", 0], "start_image": ["9", 0], "end_image": ["10", 0],
            "width": 64, "height": 64, "length": 9, "batch_size": 1}},
        "15": {"class_type": "PrimitiveFloat", "inputs": {"value": 4.5}},
        "16": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["14", 0], "negative": ["14", 1], "latent_image": ["14", 2], "seed": 3,
            "steps": 4, "cfg": ["15", 0], "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "17": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["16", 0], "vae": ["3", 0], "tile_size": 256,
                                                          "overlap": 32, "temporal_size": 64, "temporal_overlap": 8}},
        "18": {"class_type": "SaveImage", "inputs": {"images": ["17", 0], "filename_prefix": "frames"}},
        "19": {"class_type": "VAEEncode", "inputs": {"pixels": ["9", 0], "vae": ["3", 0]}},
        "20": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
    }
    result = import_comfy_data(p, registry)
    wf = result.workflow
    by = {}
    for n in wf.nodes.values():
        by.setdefault(n.type, []).append(n)
    links = {(l.to_node, l.to_input): (wf.nodes[l.from_node].type, l.from_output) for l in wf.links}
    lora = by["LoadLoRA"][0]
    assert lora.inputs["strength"] == 0.7 and any("strength_clip" in str(e) for e in result.report.warnings)
    enc = by["TextEncode"][0]
    assert links[(enc.id, "prompt")] == ("Text", "text") and links[(enc.id, "negative_prompt")] == ("Text", "text")
    assert links[(enc.id, "encoder")] == ("LoadTextEncoder", "encoder")  # through LoraLoader's CLIP
    i2v = by["WanImageToVideo"][0]
    assert {k for (nid, k) in links if nid == i2v.id} >= {"start_image", "end_image", "clip_vision_start",
                                                          "clip_vision_end", "conditioning", "vae"}
    den = by["DiTDenoise"][0]
    assert links[(den.id, "cfg")] == ("Float", "value") and "cfg" not in den.inputs
    dec = by["VAEDecode"][0]
    assert (dec.inputs["tile_size"], dec.inputs["tile_overlap"]) == (256, 32)
    save = [n for n in by["SaveVideo"] if n.inputs.get("filename_prefix") == "frames"][0]
    assert save.inputs["format"] == "webp"  # SaveImage of video frames
    assert links[(by["VAEEncode"][0].id, "video")][0] == "LoadImage"
    assert by["Preview"]
    assert result.exit_code == 0

"""ComfyUI import: UI 0.4 / 1.0 workflows, API prompts, subgraphs and the copies embedded in
PNG / MP4 / WEBP files become Reelgraph workflows that validate, with values on the right inputs
and an import report that names every placeholder and everything that did not carry over."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from engine import cli
from engine.comfy import ComfyImportError, import_comfy_data, import_comfy_file
from engine.comfy.widgets import name_widgets
from engine.models.paths import ModelPaths
from engine.validation import validate

DATA = Path(__file__).parent / "data" / "comfy"
MODELS = {"diffusion_models": ["wan2.1_t2v_1.3B_fp16.safetensors", "wan2.1_i2v_480p_14B_fp16.safetensors",
                               "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                               "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"],
          "text_encoders": ["umt5_xxl_fp8_e4m3fn_scaled.safetensors"], "vae": ["wan_2.1_vae.safetensors"],
          "loras": ["wan21_i2v_lightx2v_rank64.safetensors"], "clip_vision": ["clip_vision_h.safetensors"]}


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@pytest.fixture
def models(tmp_path) -> ModelPaths:
    """A ComfyUI-style models folder with empty stand-in files, so every name resolves."""
    root = tmp_path / "ComfyUI" / "models"
    for kind, names in MODELS.items():
        for name in names:
            (root / kind).mkdir(parents=True, exist_ok=True)
            (root / kind / name).write_bytes(b"")
    return ModelPaths([root])


def of_type(wf, node_type: str) -> list:
    return [n for n in wf.nodes.values() if n.type == node_type]


def one(wf, node_type: str):
    found = of_type(wf, node_type)
    assert len(found) == 1, (node_type, [n.id for n in wf.nodes.values()])
    return found[0]


def link_into(wf, node_id: str, name: str):
    return wf.links_into(node_id).get(name)


def assert_t2v(wf, *, seed: int = 123456789, shift: float = 3.0, steps_linked: bool = True) -> None:
    den, noise, enc = one(wf, "DiTDenoise"), one(wf, "NoiseInit"), one(wf, "TextEncode")
    assert den.inputs["cfg"] == 6.0 and den.inputs["seed"] == seed and den.inputs["shift"] == shift
    assert den.inputs["sampler"] in ("uni_pc", "unipc")
    assert (noise.inputs["width"], noise.inputs["height"], noise.inputs["frames"]) == (832, 480, 33)
    assert noise.inputs["seed"] == seed and noise.inputs["fps"] == 16.0
    assert enc.inputs["prompt"].startswith("a red fox") and enc.inputs["negative_prompt"] == "blurry, low quality, static"
    assert link_into(wf, den.id, "conditioning").from_node == enc.id
    assert link_into(wf, den.id, "latent").from_node == noise.id
    assert link_into(wf, den.id, "model").from_node == one(wf, "LoadDiT").id
    assert link_into(wf, noise.id, "vae").from_node == one(wf, "LoadVAE").id
    assert link_into(wf, enc.id, "encoder").from_node == one(wf, "LoadTextEncoder").id
    if steps_linked:  # the Steps primitive feeds steps: the link wins, the stale 20 is gone
        assert "steps" not in den.inputs
        steps = link_into(wf, den.id, "steps")
        assert wf.nodes[steps.from_node].type == "Int" and wf.nodes[steps.from_node].inputs["value"] == 24
    assert one(wf, "LoadDiT").inputs["model"] == "wan2.1_t2v_1.3B_fp16.safetensors"
    decode = one(wf, "VAEDecode")
    assert link_into(wf, decode.id, "vae").from_node == one(wf, "LoadVAE").id  # through the Reroute
    saves = [n for n in of_type(wf, "SaveVideo") if n.mode == "normal"]
    assert saves and saves[0].inputs["format"] == "mp4"
    assert link_into(wf, saves[0].id, "video").from_node == decode.id  # CreateVideo dissolved


# ---- the text-to-video graph in every format ------------------------------------------------------

def test_ui_04_with_reroute_group_notes_mute_and_bypass(registry, models):
    result = import_comfy_file(DATA / "wan21_t2v_ui04.json", registry, models)
    wf, report = result.workflow, result.report
    assert validate(wf, registry) == []
    assert result.exit_code == 0 and report.placeholders == [] and report.warnings == []
    assert report.format == "UI 0.4"
    assert_t2v(wf)
    webp = next(n for n in of_type(wf, "SaveVideo") if n.inputs["format"] == "webp")
    assert webp.mode == "mute" and one(wf, "Preview").mode == "bypass"
    layout = wf.layout
    assert layout["groups"] == [{"title": "Load models", "rect": [10.0, -150.0, 380.0, 580.0], "color": "#3f789e"}]
    notes = {n["title"]: n for n in layout["notes"]}
    assert notes["Model Links"]["markdown"] and "diffusion_models" in notes["Model Links"]["text"]
    assert notes["Note"]["text"] == "Steps come from the Steps primitive."
    den = one(wf, "DiTDenoise")
    assert layout["nodes"][den.id]["pos"] == [880.0, 180.0]
    assert layout["nodes"][one(wf, "NoiseInit").id]["seed_control"] == {"seed": "randomize"}
    assert layout["nodes"][den.id]["randomize"] == ["seed"]
    assert layout["view"]["zoom"] == 0.8
    assert one(wf, "TextEncode").title is None and one(wf, "Int").title == "Steps"
    messages = " ".join(str(e) for e in report.entries)
    assert "Reroute" in messages and "ModelSamplingSD3" in messages and "layout.notes" in messages


def test_ui_10_object_links_gives_the_same_graph(registry, models):
    a = import_comfy_file(DATA / "wan21_t2v_ui04.json", registry, models).workflow
    b = import_comfy_file(DATA / "wan21_t2v_ui10.json", registry, models)
    assert b.report.format == "UI 1.0"
    assert validate(b.workflow, registry) == []
    assert {k: v.to_json() for k, v in a.nodes.items()} == {k: v.to_json() for k, v in b.workflow.nodes.items()}
    assert sorted(map(str, a.links)) == sorted(map(str, b.workflow.links))


def test_api_prompt(registry, models):
    result = import_comfy_file(DATA / "wan21_t2v_api.json", registry, models)
    assert result.report.format == "API prompt" and result.exit_code == 0
    assert validate(result.workflow, registry) == []
    assert_t2v(result.workflow)
    assert one(result.workflow, "Int").title == "Steps"


def test_subgraph_is_flattened_with_promoted_widget_values(registry, models):
    result = import_comfy_file(DATA / "wan21_t2v_subgraph.json", registry, models)
    wf = result.workflow
    assert validate(wf, registry) == [] and result.exit_code == 0
    den = one(wf, "DiTDenoise")
    assert den.id.startswith("ditdenoise_90:")  # inner ids stay traceable to the subgraph node
    # proxyWidgets on the subgraph node win over the inner nodes' own values (seed 1, shift 8)
    assert den.inputs["seed"] == 777 and den.inputs["shift"] == 5.0 and den.inputs["steps"] == 25
    assert one(wf, "NoiseInit").inputs["seed"] == 777
    assert link_into(wf, den.id, "model").from_node == one(wf, "LoadDiT").id
    assert link_into(wf, one(wf, "VAEDecode").id, "latent").from_node == den.id
    assert any("flattened" in e.message for e in result.report.entries)


# ---- embedded copies --------------------------------------------------------------------------------

def test_png_text_chunks(registry, models, tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("prompt", json.dumps(load("wan21_t2v_api.json")))
    info.add_text("workflow", json.dumps(load("wan21_t2v_ui04.json")))
    png = tmp_path / "ComfyUI_00001_.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    result = import_comfy_file(png, registry, models)
    assert "PNG" in result.report.origin and result.report.format == "UI 0.4"  # UI copy preferred
    assert validate(result.workflow, registry) == []
    assert_t2v(result.workflow)

    only_prompt = PngInfo()
    only_prompt.add_text("prompt", json.dumps(load("wan21_t2v_api.json")))
    Image.new("RGB", (8, 8)).save(png, pnginfo=only_prompt)
    assert import_comfy_file(png, registry, models).report.format == "API prompt"

    Image.new("RGB", (8, 8)).save(png)  # saved with metadata off
    with pytest.raises(ComfyImportError, match="no ComfyUI workflow"):
        import_comfy_file(png, registry, models)


def test_mp4_container_metadata(registry, models, tmp_path):
    import av
    import numpy as np

    mp4 = tmp_path / "ComfyUI_00001_.mp4"
    with av.open(str(mp4), "w", options={"movflags": "use_metadata_tags"}) as container:
        container.metadata["prompt"] = json.dumps(load("wan21_t2v_api.json"))
        container.metadata["workflow"] = json.dumps(load("wan21_t2v_ui10.json"))
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    result = import_comfy_file(mp4, registry, models)
    assert "video metadata" in result.report.origin and result.report.format == "UI 1.0"
    assert validate(result.workflow, registry) == []
    assert_t2v(result.workflow)


def test_animated_webp_exif(registry, models, tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "workflow:" + json.dumps(load("wan21_t2v_ui04.json"))
    exif[0x0110] = "prompt:" + json.dumps(load("wan21_t2v_api.json"))
    webp = tmp_path / "ComfyUI_00001_.webp"
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 0, 0), (255, 255, 255))]
    frames[0].save(webp, save_all=True, append_images=frames[1:], exif=exif.tobytes(), duration=62)
    result = import_comfy_file(webp, registry, models)
    assert "WEBP" in result.report.origin and result.report.format == "UI 0.4"
    assert_t2v(result.workflow)


# ---- Wan 2.2 two experts and image-to-video ----------------------------------------------------------

def test_wan22_two_experts_step_ranges(registry, models):
    result = import_comfy_file(DATA / "wan22_t2v_two_experts.json", registry, models)
    wf = result.workflow
    assert validate(wf, registry) == []
    high, low = wf.nodes["ditdenoise_57"], wf.nodes["ditdenoise_58"]
    assert link_into(wf, low.id, "latent").from_node == high.id
    assert wf.nodes[link_into(wf, high.id, "model").from_node].inputs["model"].startswith("wan2.2_t2v_high")
    assert wf.nodes[link_into(wf, low.id, "model").from_node].inputs["model"].startswith("wan2.2_t2v_low")
    assert high.inputs["shift"] == low.inputs["shift"] == 8.0 and high.inputs["cfg"] == 3.5
    assert one(wf, "NoiseInit").inputs["seed"] == 774388746670969 == high.inputs["seed"]
    assert one(wf, "LoadDiT" if False else "TextEncode").inputs["prompt"].startswith("a lighthouse")
    assert of_type(wf, "LoadDiT")[0].inputs["dtype"] in ("fp8", "auto")
    spec = registry.spec("DiTDenoise")
    if spec.input("start_step") is not None:  # the step range inputs (issue 15)
        assert (high.inputs["start_step"], high.inputs["end_step"]) == (0, 10)
        assert (low.inputs["start_step"], low.inputs["end_step"]) == (10, 10000)  # to the end
        assert high.inputs["add_noise"] is True and high.inputs["return_with_leftover_noise"] is True
        assert low.inputs["add_noise"] is False and low.inputs["return_with_leftover_noise"] is False
    else:
        assert any("steps 0-10" in e.message for e in result.report.warnings)


def test_i2v_with_clip_vision_and_lora(registry, models):
    result = import_comfy_file(DATA / "wan21_i2v_lora_ui10.json", registry, models)
    wf, report = result.workflow, result.report
    unknown = {p.node_id for p in validate(wf, registry) if p.code == "unknown_type"}
    assert [p for p in validate(wf, registry) if p.code != "unknown_type"] == []
    assert unknown == {e.node_id for e in report.placeholders}
    for ours, theirs in (("LoadLoRA", "LoraLoaderModelOnly"), ("LoadCLIPVision", "CLIPVisionLoader"),
                         ("CLIPVisionEncode", "CLIPVisionEncode"), ("WanImageToVideo", "WanImageToVideo")):
        if registry.get(ours) is None:
            assert any(e.comfy_type == theirs and "issue 15" in e.message for e in report.placeholders)
    den, enc = one(wf, "DiTDenoise"), one(wf, "TextEncode")
    assert den.inputs["steps"] == 4 and den.inputs["cfg"] == 1.0 and den.inputs["shift"] == 5.0
    assert enc.inputs["prompt"] == "the woman turns her head and smiles"
    assert wf.layout["nodes"][den.id]["seed_control"] == {"seed": "increment"}
    assert one(wf, "LoadImage").inputs["image"] == "portrait.png"  # the upload widget's "image" skipped
    save = one(wf, "SaveVideo")
    assert save.inputs["format"] == "webm" and save.inputs["crf"] == 32
    if registry.get("LoadLoRA") is not None:
        lora = one(wf, "LoadLoRA")
        assert lora.inputs["lora"] == "wan21_i2v_lightx2v_rank64.safetensors" and lora.inputs["strength"] == 0.8
        assert link_into(wf, den.id, "model").from_node == lora.id
    if registry.get("WanImageToVideo") is not None:
        i2v = one(wf, "WanImageToVideo")
        assert (i2v.inputs["width"], i2v.inputs["height"], i2v.inputs["frames"]) == (480, 832, 33)
        assert i2v.inputs["fps"] == 16.0 and i2v.inputs["seed"] == 42
        assert link_into(wf, den.id, "latent").from_node == i2v.id
        assert link_into(wf, i2v.id, "start_image").from_node == one(wf, "LoadImage").id
        assert wf.nodes[link_into(wf, i2v.id, "clip_vision_start").from_node].type == "CLIPVisionEncode"


# ---- models, widgets, placeholders ---------------------------------------------------------------------

def test_missing_model_file_is_reported_with_the_folders_searched(registry, models):
    (models.roots[0] / "vae" / "wan_2.1_vae.safetensors").unlink()
    report = import_comfy_file(DATA / "wan21_t2v_ui04.json", registry, models).report
    [warning] = report.warnings
    assert warning.comfy_type == "VAELoader" and "wan_2.1_vae.safetensors" in warning.message
    assert str(models.roots[0] / "vae") in warning.message


def test_positional_widgets():
    ks = name_widgets("KSampler", [5, "increment", 20, 7.5, "euler", "normal", 0.8])
    assert ks.values == {"seed": 5, "steps": 20, "cfg": 7.5, "sampler_name": "euler",
                         "scheduler": "normal", "denoise": 0.8}
    assert ks.controls == {"seed": "increment"}
    old = name_widgets("KSampler", [5, 20, 7.5, "euler", "normal", 0.8])  # saved before the control
    assert old.values["steps"] == 20 and old.controls == {}
    longer = name_widgets("VAELoader", ["vae.safetensors", "something-new"])
    assert longer.values == {"vae_name": "vae.safetensors"} and "1 extra" in longer.notes[0]
    assert name_widgets("LoadImage", ["cat.png", "image"]).values == {"image": "cat.png"}
    assert name_widgets("LoadVideo", ["clip.mp4", None]).values == {"file": "clip.mp4"}
    keyed = name_widgets("CreateVideo", {"fps": 24, "unknown": 1})
    assert keyed.values == {"fps": 24} and keyed.notes
    assert name_widgets("VHS_VideoCombine", [1, 2]) is None  # unknown order: kept raw on a placeholder


def test_unknown_node_becomes_a_placeholder_keeping_its_data(registry):
    data = load("wan21_t2v_ui04.json")
    data["nodes"].append({"id": 80, "type": "RIFE VFI", "pos": [1600, 600], "size": [300, 200], "mode": 0,
                          "inputs": [{"name": "frames", "type": "IMAGE", "link": 160}],
                          "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}],
                          "widgets_values": ["rife47.pth", 10, 2, True, True, 1.0]})
    data["links"].append([160, 8, 0, 80, 0, "IMAGE"])
    result = import_comfy_data(data, registry, source="rife.json")
    assert result.exit_code == 1
    [entry] = result.report.placeholders
    assert entry.comfy_type == "RIFE VFI" and "no Reelgraph equivalent" in entry.message
    node = result.workflow.nodes[entry.node_id]
    assert node.type == "RIFE VFI"
    assert node.extra["comfy"]["widgets_values"] == ["rife47.pth", 10, 2, True, True, 1.0]
    assert link_into(result.workflow, node.id, "frames").from_node == one(result.workflow, "VAEDecode").id
    problems = validate(result.workflow, registry)
    assert [p.code for p in problems] == ["unknown_type"]
    saved = json.loads(result.workflow.dumps())  # the placeholder survives a save
    assert saved["nodes"][node.id]["comfy"]["reason"] == entry.message


def test_primitive_node_value_goes_onto_the_widget(registry):
    """The front end's PrimitiveNode (not the PrimitiveInt node) exists only in the UI file."""
    data = load("wan21_t2v_ui04.json")
    for n in data["nodes"]:
        if n["id"] == 60:
            n.update(type="PrimitiveNode", widgets_values=[31, "randomize"])
    wf = import_comfy_data(data, registry).workflow
    assert one(wf, "DiTDenoise").inputs["steps"] == 31 and not of_type(wf, "Int")


# ---- CLI ------------------------------------------------------------------------------------------------

def test_cli_exit_codes(tmp_path, capsys):
    out = tmp_path / "wf.json"
    assert cli.main(["import", str(DATA / "wan21_t2v_ui04.json"), str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["format"] == "reelgraph.workflow" and saved["meta"]["comfy_import"]["format"] == "UI 0.4"
    assert "0 placeholder(s)" in capsys.readouterr().out

    data = load("wan21_t2v_api.json")
    data["99"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}}
    unknown = tmp_path / "api_with_upscaler.json"
    unknown.write_text(json.dumps(data))
    assert cli.main(["import", str(unknown), str(out)]) == 1
    assert "placeholder: #99 UpscaleModelLoader" in capsys.readouterr().out

    reelgraph = tmp_path / "already.json"
    reelgraph.write_text(out.read_text())
    assert cli.main(["import", str(reelgraph), str(tmp_path / "x.json")]) == 2
    assert "already a Reelgraph workflow" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("text, expected", [
    ('{"nodes": [{"id": 1, "type": "KSampler"', "not usable JSON"),
    ('[1, 2, 3]', "not a ComfyUI workflow"),
    ('{"nodes": "many", "links": []}', '"nodes" must be a list'),
    ('{"nodes": [{"id": 1, "type": 7}], "links": []}', '"type" must be a non-empty string'),
    ('{"nodes": [{"id": 1, "type": "VAEDecode", "inputs": []}], "links": [[1, 5, 0, 1, 0, "LATENT"]]}',
     "from node 5, which does not exist"),
    ('{"nodes": [{"id": 1, "type": "Reroute", "inputs": [{"name": "", "link": 2}], "outputs": []},'
     ' {"id": 2, "type": "Reroute", "inputs": [{"name": "", "link": 1}], "outputs": []},'
     ' {"id": 3, "type": "VAEDecode", "inputs": [{"name": "samples", "link": 3}]}],'
     ' "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 1, 0, 3, 0, "LATENT"]]}', "loop of reroutes"),
    ('{"nodes": [{"id": 1, "type": "KSampler", "widgets_values": [' + ",".join(["0"] * 20000) + ']}], "links": []}',
     "20000 widget values"),
    ('{"1": {"class_type": "KSampler", "inputs": {"model": ["9", 0]}}}', "links to missing node 9"),
    ('{"1": {"class_type": "KSampler", "inputs": ' + "[" * 100 + "]" * 100 + '}}', "levels deep"),
])
def test_cli_refuses_bad_input_with_one_line_per_problem(tmp_path, capsys, text, expected):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert cli.main(["import", str(bad), str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and str(bad) in err.splitlines()[0]


def test_hostile_values_never_crash(registry):
    data = load("wan21_t2v_ui04.json")
    for n in data["nodes"]:
        n["widgets_values"] = {"KSampler": [None, {}, [], "x"], "EmptyHunyuanLatentVideo": "832"}.get(
            n["type"], n.get("widgets_values"))
        n["pos"] = {"0": "a"} if n["type"] == "VAEDecode" else n["pos"]
        n["mode"] = "muted" if n["type"] == "CLIPLoader" else n["mode"]
    data["groups"] = [{"title": 5, "bounding": [1, 2]}, "x"]
    result = import_comfy_data(copy.deepcopy(data), registry)
    assert result.report.warnings  # bad values are named, the graph still loads
    assert validate(result.workflow, registry)  # and validation names them too


def test_validate_and_run_accept_a_comfy_file_directly(capsys):
    assert cli.main(["validate", str(DATA / "wan21_t2v_api.json")]) == 0
    captured = capsys.readouterr()
    assert "ok (" in captured.out and "API prompt" in captured.err

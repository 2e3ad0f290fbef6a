"""export-comfy: Reelgraph workflow -> ComfyUI API prompt. Each example workflow that maps
exports with exit 0, and re-importing the prompt gives the same graph (node types, effective
values and links, modulo node ids); values ComfyUI cannot hold ride in `_meta.reelgraph`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from engine import cli
from engine.comfy import import_comfy_data
from engine.comfy.export import ComfyExportError, export_comfy
from engine.document import load_workflow

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
MAPS = ["image_to_video", "image_to_video_14b", "text_to_video_gguf", "text_to_video_lora_4step",
        "text_to_video_two_experts", "video_to_video"]
# what each example that does not map needs (a Reelgraph-only node, or the one-node expert switch)
DOES_NOT_MAP = {"text_to_video": "Recaption", "interpolate": "FrameInterpolate",
                "connect_videos": "VideoCondition", "extend_video": "VideoCondition",
                "gradient_blend": "ImageGradient", "first_last_frame_to_video": "ImageGradient",
                "image_to_video_two_experts": "DiTDenoise"}


def canonical(wf, registry) -> Counter:
    """The graph modulo ids: each node as (type, effective widget values, inputs linked from
    which canonical upstream node and output), built bottom-up."""
    memo: dict[str, str] = {}
    incoming = wf.incoming()

    def sig(nid: str, depth: int = 0) -> str:
        if nid in memo:
            return memo[nid]
        node = wf.nodes[nid]
        spec = registry.spec(node.type)
        values = {i.name: i.default for i in spec.inputs if i.has_widget} if spec else {}
        values.update(node.inputs)
        links = {}
        for name, link in incoming.get(nid, {}).items():
            values.pop(name, None)
            links[name] = (sig(link.from_node, depth + 1), link.from_output)
        memo[nid] = json.dumps([node.type, node.mode, sorted((k, repr(v)) for k, v in values.items()),
                                sorted(links.items())])
        return memo[nid]

    return Counter(sig(nid) for nid in wf.nodes)


@pytest.mark.parametrize("name", MAPS)
def test_round_trip_of_each_example_that_maps(name, registry):
    wf = load_workflow(WORKFLOWS / f"{name}.json")
    result = export_comfy(wf, registry)
    assert result.exit_code == 0, result.report.lines()
    prompt = json.loads(json.dumps(result.prompt))  # plain JSON, as /prompt receives it
    for cid, node in prompt.items():
        assert cid.isdigit() and set(node) <= {"class_type", "inputs", "_meta"}
        for value in node["inputs"].values():
            if isinstance(value, list):  # every link names an exported node
                assert value[0] in prompt and isinstance(value[1], int)
    back = import_comfy_data(prompt, registry)
    assert back.exit_code == 0
    assert canonical(back.workflow, registry) == canonical(wf, registry)


def test_examples_that_do_not_map_say_which_node(registry):
    names = {p.stem for p in WORKFLOWS.glob("*.json")}
    assert names == set(MAPS) | set(DOES_NOT_MAP), "classify the new example workflow"
    for name, node_type in DOES_NOT_MAP.items():
        result = export_comfy(load_workflow(WORKFLOWS / f"{name}.json"), registry)
        assert result.exit_code == 1
        assert any(e.node_type == node_type for e in result.report.unmapped), (name, result.report.lines())


def test_comfy_shapes_of_the_rewrites(registry):
    """TextEncode -> two CLIPTextEncode, NoiseInit -> EmptyHunyuanLatentVideo + the sampler's seed,
    shift -> ModelSamplingSD3, step range -> KSamplerAdvanced, fps -> CreateVideo."""
    prompt = export_comfy(load_workflow(WORKFLOWS / "text_to_video_two_experts.json"), registry).prompt
    by_type: dict[str, list] = {}
    for node in prompt.values():
        by_type.setdefault(node["class_type"], []).append(node)
    assert len(by_type["CLIPTextEncode"]) == 2 and len(by_type["KSamplerAdvanced"]) == 2
    high, low = sorted(by_type["KSamplerAdvanced"], key=lambda n: n["inputs"]["start_at_step"])
    assert high["inputs"]["noise_seed"] == 0  # the NoiseInit's seed draws ComfyUI's start noise
    assert high["_meta"]["reelgraph"] == {"type": "DiTDenoise", "inputs": {"seed": 7}}
    assert (high["inputs"]["add_noise"], high["inputs"]["return_with_leftover_noise"]) == ("enable", "enable")
    assert (low["inputs"]["add_noise"], low["inputs"]["start_at_step"]) == ("disable", 4)
    assert prompt[high["inputs"]["positive"][0]]["inputs"]["text"].startswith("the camera pans")
    assert prompt[high["inputs"]["negative"][0]]["class_type"] == "CLIPTextEncode"
    assert prompt[high["inputs"]["model"][0]]["class_type"] == "ModelSamplingSD3"
    assert by_type["EmptyHunyuanLatentVideo"][0]["inputs"] == {"width": 32, "height": 32, "length": 5,
                                                               "batch_size": 1}
    assert by_type["CreateVideo"][0]["inputs"]["fps"] == 16.0


def test_without_meta_only_the_reported_values_differ(registry):
    wf = load_workflow(WORKFLOWS / "image_to_video.json")
    result = export_comfy(wf, registry)
    stripped = {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in result.prompt.items()}
    back = import_comfy_data(stripped, registry).workflow
    den = next(n for n in back.nodes.values() if n.type == "DiTDenoise")
    assert (den.inputs["sampler"], den.inputs["scheduler"]) == ("uni_pc_bh2", "simple")
    assert any("sampler='unipc'" in line for line in result.report.lines())


def test_placeholder_goes_back_as_its_comfy_node(registry):
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "a.safetensors", "weight_dtype": "default"}},
              "2": {"class_type": "TeaCache", "inputs": {"model": ["1", 0], "rel_l1_thresh": 0.2}}}
    wf = import_comfy_data(prompt, registry).workflow
    out = export_comfy(wf, registry)
    tea = next(n for n in out.prompt.values() if n["class_type"] == "TeaCache")
    assert tea["inputs"]["rel_l1_thresh"] == 0.2 and out.prompt[tea["inputs"]["model"][0]]["class_type"] == "UNETLoader"


def test_link_loop_is_refused(registry):
    wf = load_workflow(WORKFLOWS / "text_to_video_lora_4step.json")
    wf.connect("lora", "model", "dit", "model")  # dit.model is not an input, but the loop is
    wf.connect("denoise", "latent", "noise", "vae")
    with pytest.raises(ComfyExportError, match="link loop"):
        export_comfy(wf, registry)


def test_cli(tmp_path, capsys):
    out = tmp_path / "api.json"
    assert cli.main(["export-comfy", str(WORKFLOWS / "text_to_video_lora_4step.json"), str(out)]) == 0
    prompt = json.loads(out.read_text())
    assert {"KSampler", "LoraLoaderModelOnly", "CreateVideo", "SaveVideo"} <= {n["class_type"] for n in prompt.values()}
    assert cli.main(["export-comfy", "text_to_video", str(tmp_path / "t.json")]) == 1  # by example name
    assert "Recaption" in capsys.readouterr().out
    assert (tmp_path / "t.json").is_file()


@pytest.mark.parametrize("text, expected", [
    ('{"format": "reelgraph.workflow", "version": 3, "nodes": {"a": {"type": 5}}', "workflow"),  # truncated
    ('[1, 2, 3]', ""), ('{"nodes": "x"}', ""),
    ('{"1": {"class_type": "KSampler", "inputs": {}}}', ""),  # a ComfyUI prompt is not a Reelgraph workflow
])
def test_cli_bad_input_exit_2_without_traceback(tmp_path, capsys, text, expected):
    src = tmp_path / "bad.json"
    src.write_text(text)
    assert cli.main(["export-comfy", str(src), str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() and expected in err
    assert not (tmp_path / "o.json").exists()


def test_cli_link_loop_exit_2(tmp_path, capsys):
    data = json.loads((WORKFLOWS / "text_to_video_lora_4step.json").read_text())
    data["links"].append({"from": {"node": "denoise", "output": "latent"}, "to": {"node": "noise", "input": "vae"}})
    src = tmp_path / "loop.json"
    src.write_text(json.dumps(data))
    assert cli.main(["export-comfy", str(src), str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "link loop" in err and "Traceback" not in err

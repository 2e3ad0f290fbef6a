"""Subgraphs (issue 18, item 11): collapse / expand round trips, the file format and its
migration, validation, and the oracle: a collapsed graph runs exactly like its expanded graph
(same outputs, same signatures, so the cache of one serves the other)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.document import SUBGRAPH_TYPE, ExposedInput, Workflow, loads_workflow, workflow_from_json
from engine.errors import WorkflowError
from engine.migrations import CURRENT_VERSION
from engine.run_api import NodeStatus
from engine.subgraphs import (collapse, expand, flat_ids, flatten, import_definitions,
                              instance_spec, list_reusable, load_reusable, save_reusable)
from engine.validation import validate


def gradient_graph() -> Workflow:
    wf = Workflow()
    wf.add_node("ImageGradient", {"width": 64, "height": 48, "color_a": "#1b1f3a",
                                  "color_b": "#f2a541", "direction": "horizontal"}, "sky", (0, 0))
    wf.add_node("ImageGradient", {"width": 64, "height": 48, "direction": "radial"}, "vignette", (0, 300))
    wf.add_node("ImageBlend", {"factor": 0.6, "mode": "multiply"}, "blend", (350, 100))
    wf.add_node("SaveImage", {"filename_prefix": "g"}, "save", (700, 100))
    wf.connect("sky", "image", "blend", "image_a")
    wf.connect("vignette", "image", "blend", "image_b")
    wf.connect("blend", "image", "save", "images")
    return wf


def test_collapse_exposes_crossing_wires_and_expand_restores_the_graph(registry):
    wf = gradient_graph()
    collapsed, inst = collapse(wf, ["vignette", "blend"], registry, "Mix")
    node = collapsed.nodes[inst]
    assert node.type == SUBGRAPH_TYPE and node.subgraph in collapsed.subgraphs
    defn = collapsed.subgraphs[node.subgraph]
    assert [(i.name, i.targets) for i in defn.inputs] == [("image_a", (("blend", "image_a"),))]
    assert [(o.name, o.node, o.output) for o in defn.outputs] == [("image", "blend", "image")]
    spec = instance_spec(collapsed, node.subgraph, registry)
    assert [i.type.value for i in spec.inputs] == ["IMAGE"] and spec.outputs[0].type.value == "IMAGE"
    assert validate(collapsed, registry) == []
    assert collapsed.layout["nodes"][inst]["pos"] == [350, 100]  # where blend stood
    back, ids = expand(collapsed, inst, keep_ids=True, offset=(350, 100))
    assert ids == {"vignette": "vignette", "blend": "blend"}
    assert {n: v.inputs for n, v in back.nodes.items()} == {n: v.inputs for n, v in wf.nodes.items()}
    assert set(back.links) == set(wf.links)
    assert back.layout["nodes"]["blend"]["pos"] == [350, 100]


def test_file_round_trip_and_format(registry, tmp_path):
    collapsed, inst = collapse(gradient_graph(), ["vignette", "blend"], registry, "Mix")
    path = tmp_path / "c.json"
    collapsed.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == CURRENT_VERSION == 4
    assert data["nodes"][inst] == {"type": "Subgraph", "inputs": {}, "subgraph": "mix", "title": "Mix"}
    assert set(data["subgraphs"]["mix"]) >= {"title", "inputs", "outputs", "nodes", "links", "layout"}
    again = loads_workflow(path.read_text())
    assert again.to_json() == collapsed.to_json()
    # a file without subgraphs has no "subgraphs" key: older tools see nothing new
    assert "subgraphs" not in gradient_graph().to_json()


def test_version_3_files_migrate_unchanged(repo_root):
    doc = gradient_graph().to_json()
    doc["version"] = 3
    wf = workflow_from_json(doc)
    assert wf.version == 4 and wf.subgraphs == {} and set(wf.nodes) == {"sky", "vignette", "blend", "save"}


@pytest.mark.parametrize("bad, code", [
    ({"n": {"type": "Subgraph", "inputs": {}}}, "bad_shape"),  # no definition named
    ({"n": {"type": "Subgraph", "subgraph": "nope", "inputs": {}}}, "unknown_subgraph"),
    ({"n": {"type": "ImageBlend", "subgraph": "x", "inputs": {}}}, "bad_shape"),
])
def test_bad_instances_are_refused_with_one_error_type(bad, code):
    with pytest.raises(WorkflowError) as info:
        workflow_from_json({"format": "reelgraph.workflow", "version": 4, "nodes": bad})
    assert info.value.problems[0].code == code


def test_bad_definitions_name_the_subgraph():
    doc = {"format": "reelgraph.workflow", "version": 4, "nodes": {},
           "subgraphs": {"s": {"nodes": {"a": {"type": 3}}, "inputs": [{"name": "x"}]}}}
    with pytest.raises(WorkflowError) as info:
        workflow_from_json(doc)
    assert all("subgraph 's'" in p.message for p in info.value.problems)
    assert len(info.value.problems) == 2


def test_collapsed_graph_runs_exactly_like_the_expanded_graph(registry, executor):
    wf = gradient_graph()
    plain = executor.run(wf)
    collapsed, inst = collapse(wf, ["vignette", "blend"], registry, "Mix")
    assert flat_ids(collapsed, [inst]) == [f"{inst}/vignette", f"{inst}/blend"]
    plan_a = executor.plan(wf)
    plan_b = executor.plan(collapsed.flattened())
    assert sorted(plan_a.signatures.values()) == sorted(plan_b.signatures.values())
    again = executor.run(collapsed)  # every node is served from the cache the expanded run filled
    assert again.status == plain.status
    assert {r.status for r in again.nodes.values()} <= {NodeStatus.CACHED, NodeStatus.NOT_NEEDED}
    assert _same_outputs(executor, wf, collapsed)


def _same_outputs(executor, a: Workflow, b: Workflow) -> bool:
    from PIL import Image

    ra = executor.run(a, use_cache=False, output_dir=executor._output_dir(None) / "a")
    rb = executor.run(b, use_cache=False, output_dir=executor._output_dir(None) / "b")
    files_a = sorted((executor._output_dir(None) / "a").rglob("*.png"))
    files_b = sorted((executor._output_dir(None) / "b").rglob("*.png"))
    assert ra.status == rb.status and len(files_a) == len(files_b) == 1
    return np.array_equal(np.asarray(Image.open(files_a[0])), np.asarray(Image.open(files_b[0])))


def test_instance_values_modes_and_nesting(registry, executor):
    wf = gradient_graph()
    inner, mix = collapse(wf, ["blend"], registry, "Blend")
    outer, top = collapse(inner, [mix, "vignette"], registry, "Outer")
    flat = flatten(outer)
    assert set(flat.nodes) == {"sky", "save", f"{top}/vignette", f"{top}/{mix}/blend"}
    assert validate(outer, registry) == []
    # a value set on the instance reaches the inner input it exposes
    sky_in, sky_inst = collapse(gradient_graph(), ["sky"], registry, "Sky")
    sub = sky_in.subgraphs[sky_in.nodes[sky_inst].subgraph]
    sub.inputs.append(ExposedInput("width", (("sky", "width"),)))
    sky_in.nodes[sky_inst].inputs["width"] = 32
    sky_in.nodes[sky_inst].mode = "mute"
    flat = flatten(sky_in)
    assert flat.nodes[f"{sky_inst}/sky"].inputs["width"] == 32
    assert flat.nodes[f"{sky_inst}/sky"].mode == "mute"


def test_a_subgraph_that_contains_itself_is_refused(registry):
    collapsed, inst = collapse(gradient_graph(), ["blend"], registry, "Loop")
    defn = collapsed.subgraphs["loop"]
    defn.nodes["blend"].type, defn.nodes["blend"].subgraph = SUBGRAPH_TYPE, "loop"
    problems = validate(collapsed, registry)
    assert problems and problems[0].code == "subgraph_depth"


def test_collapse_refuses_a_loop_through_outside_nodes(registry):
    with pytest.raises(WorkflowError, match="loop"):
        collapse(gradient_graph(), ["vignette", "save"], registry)  # blend sits between them


def test_reusable_subgraphs_live_in_the_library(registry, tmp_path):
    collapsed, inst = collapse(gradient_graph(), ["vignette", "blend"], registry, "Mix")
    path = save_reusable(collapsed, "mix", "Vignette mix", tmp_path)
    assert [name for name, _ in list_reusable(tmp_path)] == ["Vignette mix"]
    name, lib = load_reusable(path)
    target = gradient_graph()
    def_id = import_definitions(target, lib, "mix")
    assert def_id == "mix" and target.subgraphs["mix"].to_json() == collapsed.subgraphs["mix"].to_json()

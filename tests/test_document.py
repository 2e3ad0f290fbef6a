"""The graph document: round-trips, unknown data kept, migrations, atomic saves, hostile input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.document import Workflow, load_workflow, loads_workflow, workflow_from_json
from engine.errors import WorkflowError
from engine.migrations import CURRENT_VERSION, FORMAT_NAME
from engine.validation import validate

DATA = Path(__file__).parent / "data"


def small_workflow() -> Workflow:
    wf = Workflow(meta={"title": "t"})
    wf.add_node("ImageGradient", {"width": 16, "height": 8}, node_id="a", pos=(1, 2))
    wf.add_node("ImageGradient", {"width": 16, "height": 8, "direction": "radial"}, node_id="b")
    wf.add_node("ImageBlend", {"factor": 0.25}, node_id="blend")
    wf.connect("a", "image", "blend", "image_a")
    wf.connect("b", "image", "blend", "image_b")
    return wf


def test_round_trip_is_exact(tmp_path):
    wf = small_workflow()
    path = tmp_path / "wf.json"
    wf.save(path)
    again = load_workflow(path)
    assert again.to_json() == wf.to_json()
    assert json.loads(path.read_text())["format"] == FORMAT_NAME
    assert again.layout["nodes"]["a"]["pos"] == [1, 2]


def test_unknown_fields_and_node_types_survive_a_save(tmp_path, registry):
    doc = small_workflow().to_json()
    doc["plugin_data"] = {"x": [1, 2]}
    doc["nodes"]["a"]["colour_hint"] = "warm"
    doc["nodes"]["mystery"] = {"type": "FancyUpscaler9000", "inputs": {"scale": 4, "model": "x.pth"}}
    doc["links"].append({"from": {"node": "mystery", "output": "image"},
                         "to": {"node": "blend", "input": "image_b"}, "note": "kept"})
    wf = workflow_from_json(doc)
    assert wf.nodes["mystery"].inputs == {"scale": 4, "model": "x.pth"}
    path = tmp_path / "kept.json"
    wf.save(path)
    saved = json.loads(path.read_text())
    assert saved["plugin_data"] == {"x": [1, 2]}
    assert saved["nodes"]["a"]["colour_hint"] == "warm"
    assert saved["nodes"]["mystery"] == {"type": "FancyUpscaler9000", "inputs": {"scale": 4, "model": "x.pth"}}
    problems = validate(wf, registry)
    assert any(p.code == "unknown_type" and p.node_id == "mystery" for p in problems)


def test_version_1_file_migrates_layout_and_links(registry):
    wf = load_workflow(DATA / "workflow_v1.json")
    assert wf.version == CURRENT_VERSION
    assert wf.layout["nodes"]["b"] == {"pos": [10, 200], "size": [220, 140]}
    assert wf.layout["nodes"]["blend"]["color"] == "#335"
    assert "pos" not in wf.nodes["a"].extra
    assert {str(l) for l in wf.links} == {"a.image -> blend.image_a", "b.image -> blend.image_b"}
    assert wf.extra == {"future_field": {"kept": True}}
    assert validate(wf, registry) == []


def test_newer_version_is_refused_clearly_then_opens_on_request():
    doc = small_workflow().to_json()
    doc["version"] = CURRENT_VERSION + 5
    doc["new_thing"] = 1
    with pytest.raises(WorkflowError) as info:
        workflow_from_json(doc)
    assert info.value.problems[0].code == "newer_version"
    assert "newer Reelgraph" in str(info.value)
    wf = workflow_from_json(doc, allow_newer=True)
    assert wf.to_json()["version"] == CURRENT_VERSION + 5  # never silently downgraded
    assert wf.to_json()["new_thing"] == 1


def test_save_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "wf.json"
    small_workflow().save(path)
    before = path.read_bytes()
    bigger = small_workflow()
    bigger.add_node("Int", {"value": 3}, node_id="n")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        bigger.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["wf.json"]  # no temp file left behind


@pytest.mark.parametrize("text,fragment", [
    ("", "not valid JSON"),
    ("[1, 2]", "top level must be a JSON object"),
    ('{"format": "comfy"}', "is this a Reelgraph workflow"),
    ('{"format": "reelgraph.workflow", "version": "2"}', "positive integer"),
    ('{"format": "reelgraph.workflow", "version": 2, "nodes": []}', '"nodes" must be an object'),
    ('{"format": "reelgraph.workflow", "version": 2, "nodes": {"a": {"type": 3}}}', "non-empty string"),
    ('{"format": "reelgraph.workflow", "version": 2, "links": [[1, 2]]}', "link #0"),
])
def test_structural_errors_are_named(text, fragment):
    with pytest.raises(WorkflowError) as info:
        loads_workflow(text)
    assert fragment in str(info.value)


def test_unreadable_file_is_a_workflow_error(tmp_path):
    with pytest.raises(WorkflowError, match="cannot read"):
        load_workflow(tmp_path / "missing.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(WorkflowError):
        load_workflow(tmp_path / "bin.json")


# ---- properties -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_loading_random_json_raises_only_workflow_error(value):
    try:
        wf = workflow_from_json(value)
    except WorkflowError:
        return
    assert isinstance(wf, Workflow)


def _mutations():
    base = small_workflow().to_json()
    paths = [("nodes",), ("links",), ("layout",), ("meta",), ("version",), ("nodes", "a"),
             ("nodes", "a", "inputs"), ("nodes", "a", "type"), ("nodes", "blend", "mode"),
             ("links", 0), ("links", 0, "from"), ("links", 0, "to", "input"), ("nodes", "a", "inputs", "width")]
    return base, paths


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 12), json_values, st.booleans())
def test_mutated_documents_raise_only_workflow_error_and_validate_never_raises(which, value, delete):
    from engine.registry import default_registry

    base, paths = _mutations()
    doc = json.loads(json.dumps(base))
    path = paths[which]
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    try:
        wf = workflow_from_json(doc)
    except WorkflowError:
        return
    problems = validate(wf, _REGISTRY.get() or default_registry())
    assert isinstance(problems, list)
    # whatever loaded must also save and load back identically (compared as text: NaN != NaN)
    assert workflow_from_json(json.loads(wf.dumps())).dumps() == wf.dumps()


class _RegistryCache:
    value = None

    def get(self):
        if self.value is None:
            from engine.registry import default_registry

            self.value = default_registry()
        return self.value


_REGISTRY = _RegistryCache()

node_ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=10)


@st.composite
def workflows(draw):
    wf = Workflow(meta={"note": draw(st.text(max_size=10))})
    ids = draw(st.lists(node_ids, min_size=1, max_size=6, unique=True))
    for nid in ids:
        kind = draw(st.sampled_from(["Int", "Float", "Text", "ImageGradient", "Unknown"]))
        inputs = {"value": draw(st.integers(-5, 5))} if kind == "Int" else {}
        if kind == "Float":
            inputs = {"value": draw(st.floats(allow_nan=False, allow_infinity=False))}
        if kind == "Text":
            inputs = {"text": draw(st.text(max_size=20))}
        wf.add_node(kind, inputs, node_id=nid, pos=(draw(st.integers(-999, 999)), 0))
        wf.nodes[nid].mode = draw(st.sampled_from(["normal", "bypass", "mute"]))
    for _ in range(draw(st.integers(0, 4))):
        a, b = draw(st.sampled_from(ids)), draw(st.sampled_from(ids))
        wf.connect(a, "value", b, draw(st.sampled_from(["value", "text"])))
    return wf


@settings(max_examples=200, deadline=None)
@given(workflows())
def test_save_load_round_trip_property(tmp_path_factory, wf):
    path = tmp_path_factory.mktemp("rt") / "wf.json"
    wf.save(path)
    assert load_workflow(path).to_json() == wf.to_json()

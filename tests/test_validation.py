"""Every validation problem is reported, all at once, naming node id, node type and input."""

from __future__ import annotations

import pytest

from engine.document import Workflow
from engine.errors import WorkflowError
from engine.validation import check, validate


def codes(problems):
    return {(p.code, p.node_id, p.input) for p in problems}


def test_valid_graph_has_no_problems(registry):
    wf = Workflow()
    wf.add_node("ImageGradient", {}, node_id="g")
    wf.add_node("ImageGradient", {"width": 4}, node_id="h")
    wf.add_node("ImageBlend", {}, node_id="b")
    wf.connect("g", "image", "b", "image_a")
    wf.connect("h", "image", "b", "image_b")
    assert validate(wf, registry) == []


def test_all_problem_kinds_reported_together(registry):
    wf = Workflow()
    wf.add_node("NoSuchNode", {}, node_id="ghost")
    wf.add_node("ImageGradient", {"width": 0, "direction": "diagonal", "height": "tall",
                                  "colour": "red"}, node_id="g")
    wf.add_node("ImageBlend", {"factor": 1.5, "image_a": 3}, node_id="b")  # image_b missing
    wf.add_node("Int", {"value": 2.5}, node_id="i")
    wf.add_node("Delay", {"steps": True}, node_id="d")
    wf.links.append(__import__("engine.document", fromlist=["Link"]).Link("i", "value", "b", "image_a"))
    wf.links.append(__import__("engine.document", fromlist=["Link"]).Link("g", "image", "b", "image_a"))
    wf.connect("nowhere", "x", "b", "factor")
    wf.connect("g", "pixels", "d", "value")
    problems = validate(wf, registry)
    found = codes(problems)
    assert ("unknown_type", "ghost", None) in found
    assert ("bad_value", "g", "width") in found  # below minimum
    assert ("bad_value", "g", "direction") in found  # not among choices
    assert ("bad_value", "g", "height") in found  # wrong JSON type
    assert ("unknown_input", "g", "colour") in found
    assert ("bad_value", "i", "value") in found  # float for INT
    assert ("bad_value", "d", "steps") in found  # bool for INT
    assert ("missing_input", "b", "image_b") in found
    assert ("duplicate_link", "b", "image_a") in found
    assert ("type_mismatch", "b", "image_a") in found  # INT -> IMAGE
    assert ("dangling_link", "b", "factor") in found  # missing source node
    assert ("dangling_link", "d", "value") in found  # no such output
    for p in problems:
        if p.node_id in ("g", "b", "i", "d"):
            assert p.node_type == {"g": "ImageGradient", "b": "ImageBlend", "i": "Int", "d": "Delay"}[p.node_id]
    messages = {(p.code, p.input): p.message for p in problems if p.node_id == "g"}
    assert "below the minimum 1" in messages[("bad_value", "width")]
    assert "'diagonal' is not one of" in messages[("bad_value", "direction")]
    mismatch = next(p for p in problems if p.code == "type_mismatch")
    assert "needs IMAGE, got INT" in mismatch.message


def test_cycle_is_reported(registry):
    wf = Workflow()
    wf.add_node("Delay", {}, node_id="a")
    wf.add_node("Delay", {}, node_id="b")
    wf.connect("a", "value", "b", "value")
    wf.connect("b", "value", "a", "value")
    problems = validate(wf, registry)
    assert [p.code for p in problems] == ["cycle"]
    assert "a -> b" in problems[0].message
    with pytest.raises(WorkflowError, match="cycle"):
        check(wf, registry)


def test_scope_ignores_problems_elsewhere(registry):
    wf = Workflow()
    wf.add_node("ImageGradient", {}, node_id="ok")
    wf.add_node("Broken", {}, node_id="elsewhere")
    assert validate(wf, registry, scope=["ok"]) == []
    assert validate(wf, registry)[0].code == "unknown_type"


def test_int_feeds_float_and_widget_defaults_satisfy_required(registry):
    wf = Workflow()
    wf.add_node("Int", {"value": 3}, node_id="i")
    wf.add_node("MathFloat", {}, node_id="m")
    wf.connect("i", "value", "m", "a")
    assert validate(wf, registry) == []


def test_workflow_error_lists_every_problem(registry):
    wf = Workflow()
    wf.add_node("ImageGradient", {"width": -1, "height": -1}, node_id="g")
    with pytest.raises(WorkflowError) as info:
        check(wf, registry, source="x.json")
    text = str(info.value)
    assert "2 problems" in text and "x.json" in text
    assert "node 'g' (ImageGradient), input 'width'" in text

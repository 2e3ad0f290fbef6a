"""The executor and its cache: only what is needed runs, in order; changes re-run only dependents;
failures and interrupts keep finished work; results survive a restart through the disk tier."""

from __future__ import annotations

import threading

import pytest
import torch

from engine.cache import ResultCache
from engine.context import InterruptFlag
from engine.document import Workflow
from engine.errors import WorkflowError
from engine.events import NodeDone, NodeFailed, NodeProgress, RunFinished
from engine.executor import Executor


def chain() -> Workflow:
    """g1, g2 -> blend -> blend2 (with g3); plus an unrelated branch 'other'."""
    wf = Workflow()
    wf.add_node("ImageGradient", {"width": 8, "height": 4}, node_id="g1")
    wf.add_node("ImageGradient", {"width": 8, "height": 4, "direction": "vertical"}, node_id="g2")
    wf.add_node("ImageGradient", {"width": 8, "height": 4, "direction": "radial"}, node_id="g3")
    wf.add_node("ImageBlend", {"factor": 0.5}, node_id="blend")
    wf.add_node("ImageBlend", {"factor": 0.5, "mode": "multiply"}, node_id="blend2")
    wf.add_node("Delay", {"steps": 2, "step_seconds": 0.0}, node_id="other")
    wf.connect("g1", "image", "blend", "image_a")
    wf.connect("g2", "image", "blend", "image_b")
    wf.connect("blend", "image", "blend2", "image_a")
    wf.connect("g3", "image", "blend2", "image_b")
    return wf


def statuses(report):
    return {nid: n.status for nid, n in report.nodes.items()}


def test_runs_only_what_the_target_needs_in_dependency_order(executor):
    events = []
    report = executor.run(chain(), targets=["blend"], on_event=events.append)
    assert report.status == "done"
    assert set(report.nodes) == {"g1", "g2", "blend"}
    done = [e.node_id for e in events if isinstance(e, NodeDone)]
    assert done.index("blend") > done.index("g1") and done.index("blend") > done.index("g2")
    assert isinstance(events[-1], RunFinished) and events[-1].status == "done"


def test_downstream_change_reruns_only_that_node_and_its_dependents(executor):
    wf = chain()
    first = executor.run(wf, targets=["blend2"])
    assert set(statuses(first).values()) == {"executed"}
    wf.nodes["blend2"].inputs["factor"] = 0.9
    second = executor.run(wf, targets=["blend2"])
    # blend's result is read from the cache, so what only blend reads is not needed at all
    assert statuses(second) == {"g1": "not_needed", "g2": "not_needed", "g3": "cached",
                                "blend": "cached", "blend2": "executed"}
    wf.nodes["g2"].inputs["color_b"] = "#ff0000"
    third = executor.run(wf, targets=["blend2"])
    assert statuses(third) == {"g1": "cached", "g2": "executed", "g3": "cached",
                               "blend": "executed", "blend2": "executed"}


def test_cached_result_equals_a_full_rerun(executor, registry, tmp_path):
    """Oracle: the cached path must give exactly what a brute-force uncached run gives."""
    wf = chain()
    executor.run(wf, targets=["blend2"])
    wf.nodes["blend2"].inputs["mode"] = "screen"
    cached_run = executor.run(wf, targets=["blend2"])
    fresh = Executor(registry, ResultCache(disk_dir=None), temp_dir=tmp_path)
    fresh_run = fresh.run(wf, targets=["blend2"], use_cache=False)
    assert statuses(cached_run)["g1"] == "not_needed" and statuses(fresh_run)["g1"] == "executed"
    assert torch.equal(cached_run.values["blend2"]["image"], fresh_run.values["blend2"]["image"])


def test_signatures_ignore_node_ids_titles_and_layout(executor):
    wf = chain()
    executor.run(wf, targets=["blend"])
    renamed = Workflow()
    renamed.add_node("ImageGradient", {"width": 8, "height": 4}, node_id="first", pos=(500, 500))
    renamed.add_node("ImageGradient", {"width": 8, "height": 4, "direction": "vertical",
                                       "color_a": "#000000"}, node_id="second")  # default written out
    renamed.add_node("ImageBlend", {"factor": 0.5}, node_id="mix").title = "My mix"
    renamed.connect("first", "image", "mix", "image_a")
    renamed.connect("second", "image", "mix", "image_b")
    report = executor.run(renamed, targets=["mix"])
    assert statuses(report) == {"mix": "cached", "first": "not_needed", "second": "not_needed"}


def test_no_cache_executes_everything(executor):
    wf = chain()
    executor.run(wf, targets=["blend"])
    report = executor.run(wf, targets=["blend"], use_cache=False)
    assert set(statuses(report).values()) == {"executed"}


def test_failing_node_keeps_upstream_cached_and_rerun_resumes(executor):
    wf = chain()
    wf.add_node("RaiseError", {"message": "boom: fix me"}, node_id="bad")
    wf.add_node("Delay", {"steps": 1, "step_seconds": 0.0}, node_id="after")
    wf.connect("other", "value", "bad", "value")
    wf.connect("bad", "value", "after", "value")
    events = []
    report = executor.run(wf, targets=["after"], on_event=events.append)
    assert report.status == "failed"
    assert report.error.node_id == "bad" and report.error.node_type == "RaiseError"
    assert "boom: fix me" in report.error.message
    failed = [e for e in events if isinstance(e, NodeFailed)]
    assert failed and failed[0].node_id == "bad" and "Traceback" in failed[0].traceback
    assert statuses(report)["other"] == "executed" and statuses(report)["after"] == "pending"
    wf.nodes["bad"].inputs["enabled"] = False
    again = executor.run(wf, targets=["after"])
    assert statuses(again) == {"other": "cached", "bad": "executed", "after": "executed"}


def test_interrupt_stops_a_long_node_within_one_step(executor):
    wf = Workflow()
    wf.add_node("Delay", {"steps": 1000, "step_seconds": 0.01}, node_id="long")
    flag = InterruptFlag()
    progress = []

    def on_event(event):
        if isinstance(event, NodeProgress):
            progress.append(event.fraction)
            if len(progress) == 3:
                flag.set()

    safety_net = threading.Timer(5.0, flag.set)
    safety_net.start()
    report = executor.run(wf, targets=["long"], on_event=on_event, interrupt=flag)
    safety_net.cancel()
    assert report.status == "interrupted"
    assert report.error.node_id == "long"
    # the very next step check raised: not one more progress event after the flag was set
    assert len(progress) == 3
    assert max(progress) < 0.05


def test_bypass_passes_input_through_and_mute_skips_dependents(executor):
    wf = chain()
    wf.nodes["blend2"].mode = "bypass"
    report = executor.run(wf, targets=["blend2"])
    assert statuses(report)["blend2"] == "bypassed"
    wf2 = chain()
    wf2.nodes["g1"].mode = "mute"
    report2 = executor.run(wf2, targets=["blend2", "other"])
    assert statuses(report2)["blend2"] == "skipped"
    assert "muted node 'g1'" in report2.nodes["blend2"].reason
    assert statuses(report2)["other"] == "executed"


def test_invalid_workflow_raises_before_running(executor):
    wf = chain()
    wf.nodes["blend"].inputs["factor"] = 7
    with pytest.raises(WorkflowError, match="above the maximum"):
        executor.run(wf, targets=["blend"])
    with pytest.raises(WorkflowError, match="no such node"):
        executor.run(wf, targets=["nope"])


def test_unknown_node_outside_the_run_does_not_block_it(executor):
    wf = chain()
    wf.add_node("SomePluginNode", {"x": 1}, node_id="plugin")
    assert executor.run(wf, targets=["blend"]).status == "done"


def test_disk_tier_serves_a_fresh_executor(tmp_path, registry):
    wf = Workflow()
    wf.add_node("Delay", {"value": 7, "steps": 2, "step_seconds": 0.05}, node_id="slow")
    first = Executor(registry, ResultCache(disk_dir=tmp_path / "c"), temp_dir=tmp_path)
    assert statuses(first.run(wf, targets=["slow"])) == {"slow": "executed"}
    assert first.cache.stats.disk_writes == 1
    second = Executor(registry, ResultCache(disk_dir=tmp_path / "c"), temp_dir=tmp_path)
    report = second.run(wf, targets=["slow"])
    assert statuses(report) == {"slow": "cached"}
    assert second.cache.stats.disk_hits == 1


def test_progress_events_carry_overall_fraction(executor):
    events = []
    executor.run(chain(), targets=["blend2"], on_event=events.append)
    overall = [e.overall for e in events if isinstance(e, NodeDone)]
    assert overall == sorted(overall) and overall[-1] == pytest.approx(1.0)


def test_a_model_added_to_a_folder_invalidates_nodes_that_pick_from_it(tmp_path, registry):
    """FrameInterpolate(method=auto) with no model chosen uses whatever the interpolation folder
    holds, so a file appearing there must change its cache key."""
    from engine.models.paths import ModelPaths
    from engine.signature import compute_signatures

    wf = Workflow()
    wf.add_node("FrameInterpolate", {"method": "auto"}, node_id="interp")
    ex = Executor(registry, ResultCache(disk_dir=None), model_paths=ModelPaths([tmp_path]),
                  temp_dir=tmp_path)
    before = compute_signatures(wf, registry, ["interp"], ex._fingerprint)
    (tmp_path / "interpolation").mkdir()
    (tmp_path / "interpolation" / "rife.safetensors").write_bytes(b"x")
    after = compute_signatures(wf, registry, ["interp"], ex._fingerprint)
    assert before != after


def test_the_output_observer_sees_every_node_that_ran_or_was_cached(executor):
    """Front ends (the studio's thumbnails and caption text) learn output values through
    `output_observer`, right after each NodeDone/NodeCached, cached or not."""
    seen: list[tuple[str, tuple]] = []
    executor.output_observer = lambda run_id, nid, outputs: seen.append(
        (nid, tuple(outputs["image"].shape)))
    executor.run(chain(), targets=["blend"])
    assert sorted(n for n, _ in seen) == ["blend", "g1", "g2"]
    assert all(shape == (1, 4, 8, 3) for _, shape in seen)
    seen.clear()
    report = executor.run(chain(), targets=["blend"])
    assert set(statuses(report).values()) <= {"cached", "not_needed"}
    assert [n for n, _ in seen] == ["blend"]  # served from the cache: its value is still shown

    def broken(*_):
        raise RuntimeError("a display bug")

    executor.output_observer = broken
    assert executor.run(chain(), targets=["blend2"]).status == "done"  # never fails a run

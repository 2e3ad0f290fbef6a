"""Demand-driven planning: a node runs only if its result is not cached and a node that must run
needs it; a node needed only by cached consumers is `not_needed` and never touched; the plan is
announced before anything runs; a cache entry that vanishes after planning is recovered by running
what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.cache import ResultCache
from engine.document import Workflow
from engine.errors import WorkflowError
from engine.events import NodeCached, NodeDone, NodeStarted, RunStarted
from engine.executor import Executor
from engine.registry import NodeRegistry
from engine.run_api import NodeStatus, RunStatus
from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as S

ROOT = Path(__file__).resolve().parents[1]


def statuses(report):
    return {nid: rec.status.value for nid, rec in report.nodes.items()}


def fan_in() -> Workflow:
    """slow -> a -> join <- b <- slow2; join -> out (the target)."""
    wf = Workflow()
    wf.add_node("Delay", {"value": 3, "steps": 1, "step_seconds": 0.0}, node_id="slow")
    wf.add_node("Delay", {"value": 4, "steps": 1, "step_seconds": 0.0}, node_id="slow2")
    wf.add_node("MathFloat", {"b": 1.0}, node_id="a")
    wf.add_node("MathFloat", {"b": 2.0}, node_id="b")
    wf.add_node("MathFloat", {"operation": "multiply"}, node_id="join")
    wf.add_node("MathFloat", {"b": 0.5}, node_id="out")
    wf.connect("slow", "value", "a", "a")
    wf.connect("slow2", "value", "b", "a")
    wf.connect("a", "result", "join", "a")
    wf.connect("b", "result", "join", "b")
    wf.connect("join", "result", "out", "a")
    return wf


def test_a_node_needed_only_by_cached_consumers_is_not_needed(executor):
    wf = fan_in()
    assert set(statuses(executor.run(wf, targets=["out"])).values()) == {"executed"}
    wf.nodes["out"].inputs["b"] = 0.25  # only the target changed
    events = []
    report = executor.run(wf, targets=["out"], on_event=events.append)
    assert statuses(report) == {"slow": "not_needed", "slow2": "not_needed", "a": "not_needed",
                                "b": "not_needed", "join": "cached", "out": "executed"}
    assert report.values["out"]["result"] == (3 + 1) * (4 + 2) + 0.25
    started = events[0]
    assert isinstance(started, RunStarted)
    assert started.plan == {"slow": "not_needed", "slow2": "not_needed", "a": "not_needed",
                            "b": "not_needed", "join": "cached", "out": "executed"}
    assert started.node_ids == ["join", "out"]
    touched = {e.node_id for e in events if isinstance(e, (NodeCached, NodeStarted, NodeDone))}
    assert touched == {"join", "out"}  # not-needed nodes get no event of their own


def test_the_plan_is_known_before_anything_runs(executor):
    wf = fan_in()
    executor.run(wf, targets=["join"])
    plan = executor.plan(wf, ["out"])
    assert plan.actions["join"] is NodeStatus.CACHED and plan.actions["out"] is NodeStatus.EXECUTED
    assert set(plan.with_action(NodeStatus.NOT_NEEDED)) == {"slow", "slow2", "a", "b"}
    assert plan.order == ["join", "out"]


def test_a_cache_entry_gone_after_planning_is_recomputed_with_what_it_needs(executor):
    """Another process may evict an entry between planning and reading: the run still succeeds,
    running that node and the not-needed ancestors it now needs."""
    wf = fan_in()
    executor.run(wf, targets=["out"])
    wf.nodes["out"].inputs["b"] = 0.75
    plan = executor.plan(wf, ["out"])
    executor.cache.discard(plan.signatures["join"])
    original_plan = executor.planner.plan
    executor.planner.plan = lambda *a, **k: plan  # the plan made while the entry still existed
    report = executor.run(wf, targets=["out"])
    executor.planner.plan = original_plan
    assert report.status is RunStatus.DONE
    assert report.values["out"]["result"] == (3 + 1) * (4 + 2) + 0.75
    got = statuses(report)
    assert got["join"] == "executed" and got["out"] == "executed"
    assert got["a"] == "cached" and got["b"] == "cached"  # read after all, not re-run


class Fetch(NodeType):
    """Stands in for a remote call: never cached, counts its calls."""

    calls = 0
    spec = NodeSpec(name="TestFetch", category="test", description="test", cacheable=False,
                    inputs=(Input("value", S.FLOAT, 1.0),), outputs=(Output("value", S.FLOAT),))

    @classmethod
    def execute(cls, ctx, value):
        cls.calls += 1
        return {"value": value}


def test_uncacheable_nodes_run_when_needed_and_not_behind_cached_consumers(tmp_path):
    registry = NodeRegistry()
    registry.discover_package("nodes")
    registry.register(Fetch)
    ex = Executor(registry, ResultCache(disk_dir=tmp_path / "c"), temp_dir=tmp_path)
    wf = Workflow()
    wf.add_node("TestFetch", {"value": 2.0}, node_id="fetch")
    wf.add_node("MathFloat", {"b": 1.0}, node_id="m")
    wf.connect("fetch", "value", "m", "a")
    Fetch.calls = 0
    ex.run(wf, targets=["m"])
    assert statuses(ex.run(wf, targets=["m"])) == {"fetch": "not_needed", "m": "cached"}
    assert Fetch.calls == 1
    assert statuses(ex.run(wf, targets=["fetch"])) == {"fetch": "executed"}  # a target always runs
    assert Fetch.calls == 2


def test_a_graph_with_nodes_but_no_output_is_refused(executor):
    wf = Workflow()
    wf.add_node("MathFloat", {"b": 1.0}, node_id="m")
    with pytest.raises(WorkflowError, match="no output node"):
        executor.run(wf)
    assert executor.run(Workflow()).status is RunStatus.DONE  # nothing to do is not an error


def test_a_file_replaced_with_the_same_size_and_mtime_invalidates(tmp_path, registry):
    """Input files are identified by content: a file overwritten by another of the same size,
    with its old mtime put back, still changes the key (and a remembered plan notices)."""
    from PIL import Image

    path = tmp_path / "frame.bmp"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    stat = path.stat()
    wf = Workflow()
    wf.add_node("LoadImage", {"image": "frame.bmp"}, node_id="img")
    wf.add_node("SaveImage", {}, node_id="save")
    wf.connect("img", "image", "save", "images")
    ex = Executor(registry, ResultCache(disk_dir=tmp_path / "c"), temp_dir=tmp_path,
                  settings={"input_dir": str(tmp_path), "output_dir": str(tmp_path / "out")})
    first = ex.run(wf)
    assert statuses(first)["img"] == "executed"
    assert statuses(ex.run(wf)) == {"img": "not_needed", "save": "cached"}
    Image.new("RGB", (8, 8), (0, 0, 255)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    again = ex.run(wf)
    assert statuses(again) == {"img": "executed", "save": "executed"}
    assert again.values["save"] == {} and again.outputs != first.outputs


_RERUN_PROBE = textwrap.dedent("""
    import json, sys
    from engine.config import load_settings
    from engine.run_api import RunRequest
    from engine.runtime import make_executor
    import engine.models.wan_dit as wan_dit, engine.models.wan_vae as wan_vae
    import engine.models.text_encoders as text_encoders
    loads = []
    for module, name in ((wan_dit, "load_dit"), (wan_vae, "load_vae"),
                         (text_encoders, "load_text_encoder")):
        original = getattr(module, name)
        setattr(module, name, lambda *a, _o=original, _n=name, **k: loads.append(_n) or _o(*a, **k))
    settings = load_settings()
    settings.output_dir = sys.argv[1]
    report = make_executor(settings).run(RunRequest(json.load(open(sys.argv[2])),
                                                    output_dir=sys.argv[1]))
    print(json.dumps({"statuses": {n: r.status.value for n, r in report.nodes.items()},
                      "loads": loads, "outputs": report.outputs}))
""")

_LIGHT_PROBE = textwrap.dedent("""
    import contextlib, io, sys
    from engine.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", "text_to_video", "--out", sys.argv[1], "--quiet"])
    heavy = [m for m in ("torch", "diffusers", "transformers", "av", "cv2") if m in sys.modules]
    print(code, ",".join(heavy))
""")


def test_a_rerun_in_a_new_process_executes_nothing_and_loads_no_model(tmp_path):
    """The default workflow, run, then run again by a fresh process on the same cache folder:
    nothing executes, no loader is called, torch is never even imported."""
    env = dict(os.environ, REELGRAPH_CACHE_DIR=str(tmp_path / "cache"))
    out = tmp_path / "out"
    first = subprocess.run([sys.executable, str(ROOT / "main.py"), "run", "text_to_video",
                            "--out", str(out), "--quiet"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    report = json.loads((out / "report.json").read_text())
    assert {n["status"] for n in report["nodes"].values()} == {"executed"}
    probe = subprocess.run([sys.executable, "-c", _RERUN_PROBE, str(out),
                            str(ROOT / "workflows" / "text_to_video.json")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result["loads"] == []
    statuses = result["statuses"]
    save = [nid for nid, s in statuses.items() if s == "cached"]
    assert len(save) == 1 and all(s == "not_needed" for nid, s in statuses.items() if nid not in save)
    assert result["outputs"] == report["outputs"] and Path(result["outputs"][0]).exists()
    light = subprocess.run([sys.executable, "-c", _LIGHT_PROBE, str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert light.returncode == 0, light.stderr
    assert light.stdout.split() == ["0"]  # exit 0, and no heavy library was imported


def test_targets_given_as_an_iterator_are_planned_once(executor):
    wf = fan_in()
    plan = executor.plan(wf, (t for t in ["out"]))
    assert plan.targets == ["out"] and len(plan.scope) == 6
    assert executor.run(wf, targets=["out"]).values["out"]["result"] == 24.5


def test_a_bypassed_node_that_cannot_pass_anything_is_marked_failed(executor):
    wf = Workflow()
    wf.add_node("Delay", {"steps": 1, "step_seconds": 0.0}, node_id="d")
    wf.nodes["d"].mode = "bypass"
    events = []
    report = executor.run(wf, targets=["d"], on_event=events.append)
    assert report.status is RunStatus.FAILED and report.nodes["d"].status is NodeStatus.FAILED
    assert "un-bypass it" in report.nodes["d"].reason
    assert any(type(e).__name__ == "NodeFailed" and e.node_id == "d" for e in events)


def test_an_empty_model_choice_reads_no_file_unless_the_node_picks_one(tmp_path, registry):
    """The builtin recaptioner reads no LLM: an LLM appearing in the folder must neither be
    hashed nor change its key. FrameInterpolate(auto) does pick from its folder."""
    from engine.models.paths import ModelPaths

    (tmp_path / "llm" / "big").mkdir(parents=True)
    (tmp_path / "llm" / "big" / "config.json").write_text("{}")
    wf = Workflow()
    wf.add_node("Recaption", {"prompt": "a fox"}, node_id="cap")
    ex = Executor(registry, ResultCache(disk_dir=None), model_paths=ModelPaths([tmp_path]),
                  temp_dir=tmp_path)
    before = ex.plan(wf, ["cap"]).signatures["cap"]
    (tmp_path / "llm" / "big" / "model.safetensors").write_bytes(b"x" * 1000)
    ex.planner._memo.clear()
    assert ex.plan(wf, ["cap"]).signatures["cap"] == before
    assert ex.hasher.hashed == 0

"""The spawned worker process: streams events, honours interrupts, and a dead worker is reported
to the caller (never a hang), then replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Settings
from engine.document import Workflow
from engine.events import NodeDone, NodeProgress, NodeStarted, RunFinished, RunStarted
from engine.worker import WorkerClient

PACK = Path(__file__).parent / "data" / "node_pack"


@pytest.fixture
def client(tmp_path):
    settings = Settings(cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"),
                        node_packs=[str(PACK)])
    c = WorkerClient(settings)
    yield c
    c.close()


def graph(**delay) -> Workflow:
    wf = Workflow()
    wf.add_node("ImageGradient", {"width": 8, "height": 8}, node_id="g")
    wf.add_node("Delay", {"steps": 5, "step_seconds": 0.01, **delay}, node_id="d")
    wf.add_node("CrashProcess", {"after_seconds": 0.3}, node_id="crash")
    wf.add_node("IgnoreInterrupt", {"seconds": 60.0}, node_id="stubborn")
    return wf


def test_worker_runs_a_graph_and_streams_events(client):
    events = []
    finished = client.run(graph().to_json(), targets=["g", "d"], on_event=events.append)
    assert finished.status == "done"
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStarted and kinds[-1] is RunFinished
    assert {e.node_id for e in events if isinstance(e, NodeDone)} == {"g", "d"}
    assert any(isinstance(e, NodeProgress) for e in events)
    assert finished.report.nodes["d"].status == "executed"
    again = client.run(graph().to_json(), targets=["g", "d"])
    assert again.report.nodes["g"].status == "cached"  # the worker keeps its cache


def test_interrupt_stops_the_run_and_the_worker_keeps_serving(client):
    run_id = client.submit(graph(steps=10_000).to_json(), targets=["d"])
    events = []
    while not any(isinstance(e, NodeProgress) for e in events):
        events += client.poll_events(5.0)
    pid = client.pid
    stop_events = client.stop(grace=10.0)
    finished = [e for e in stop_events if isinstance(e, RunFinished)]
    assert finished and finished[0].run_id == run_id and finished[0].status == "interrupted"
    assert client.pid == pid  # cooperative: no kill was needed
    assert client.run(graph().to_json(), targets=["g"]).status == "done"


def test_a_killed_worker_is_reported_as_crashed_not_a_hang(client):
    run_id = client.submit(graph(steps=10_000).to_json(), targets=["d"])
    events = []
    while not any(isinstance(e, NodeStarted) for e in events):
        events += client.poll_events(5.0)
    client.kill()
    finished = client.wait(run_id, timeout=20)
    assert finished.status == "crashed"
    assert "signal 9" in finished.error
    assert client.run(graph().to_json(), targets=["g"]).status == "done"  # replaced on demand


def test_a_node_that_kills_its_process_is_reported(client):
    finished = client.run(graph().to_json(), targets=["crash"])
    assert finished.status == "crashed"
    assert "exit code 3" in finished.error
    assert client.run(graph().to_json(), targets=["g"]).status == "done"


def test_stop_kills_and_restarts_a_worker_that_ignores_interrupts(client):
    run_id = client.submit(graph().to_json(), targets=["stubborn"])
    events = []
    while not any(isinstance(e, NodeStarted) for e in events):
        events += client.poll_events(5.0)
    old_pid = client.pid
    stop_events = client.stop(grace=0.5)
    finished = [e for e in stop_events if isinstance(e, RunFinished)]
    assert finished[-1].run_id == run_id and finished[-1].status == "interrupted"
    assert "did not stop" in finished[-1].error
    assert client.is_alive() and client.pid != old_pid
    assert client.run(graph().to_json(), targets=["g"]).status == "done"


def test_invalid_workflow_is_reported_not_raised(client):
    wf = graph()
    wf.nodes["g"].inputs["width"] = -3
    finished = client.run(wf.to_json(), targets=["g"])
    assert finished.status == "invalid"
    assert finished.report.problems[0].input == "width"

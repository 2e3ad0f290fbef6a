"""The one run API every front end speaks: typed reports that survive JSON and process pipes,
`ctx.log` messages that reach the report, the CLI, the studio's worker stream and the batch
manifest, settings that reach a running worker, one command-line parser, atomic saves that keep
the user's umask."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import main as entry
from engine.atomic_files import atomic_write_text
from engine.batch import build_jobs, parse_grid, prepare_tasks, read_manifest, run_batch
from engine.batch.local import LocalPool
from engine.config import Settings
from engine.document import Workflow
from engine.errors import Problem
from engine.events import LogMessage, RunFinished
from engine.registry import default_registry
from engine.run_api import (LogEntry, LogLevel, NodeRecord, NodeStatus, RunError, RunReport,
                            RunRequest, RunStatus)
from engine.worker import WorkerClient

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "tests" / "data" / "node_pack"


def test_a_report_round_trips_through_json():
    report = RunReport("r1", RunStatus.FAILED, seconds=1.25, outputs=["/o/a.mp4"],
                       nodes={"a": NodeRecord("Text", NodeStatus.NOT_NEEDED),
                              "b": NodeRecord("SaveVideo", NodeStatus.FAILED, 0.5, reason="boom")},
                       error=RunError("boom", "b", "SaveVideo", "Traceback ..."),
                       problems=[Problem("bad_value", "too big", "b", "SaveVideo", "crf")],
                       log=[LogEntry(LogLevel.WARNING, "careful", "a")])
    data = json.loads(json.dumps(report.to_json()))
    assert data["nodes"]["a"] == {"type": "Text", "status": "not_needed", "seconds": 0.0}
    assert RunReport.from_json(data) == report
    assert str(report.error) == "node 'b' (SaveVideo) failed: boom"
    assert report.summary() == "failed in 1.25 s: 1 not needed, 1 failed"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_recaption_fallback_warning_reaches_the_report(executor):
    wf = Workflow()
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    wf.add_node("Recaption", {"prompt": "a fox in snow", "backend": "openai", "model_name": "m",
                              "base_url": url, "on_error": "use prompt", "timeout": 5.0},
                node_id="cap")
    events = []
    report = executor.run(RunRequest(wf, ("cap",), approved_endpoints=(url,)),
                          on_event=events.append)
    assert report.ok and report.values["cap"]["caption"] == "a fox in snow"
    [entry_] = [e for e in report.log if e.node_id == "cap"]
    assert entry_.level is LogLevel.WARNING and "using the prompt unchanged" in entry_.message
    assert any(isinstance(e, LogMessage) and e.node_id == "cap" for e in events)


def warning_workflow(path: Path) -> Path:
    wf = Workflow()
    wf.add_node("SayWarning", {"message": "mind the gap"}, node_id="say")
    wf.save(path)
    return path


def test_node_messages_reach_the_cli_and_its_report(tmp_path):
    wf = warning_workflow(tmp_path / "wf.json")
    env = dict(os.environ, REELGRAPH_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "run", str(wf), "--out",
                             str(tmp_path / "out"), "--node-pack", str(PACK)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "warning: node 'say': mind the gap" in result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["log"] == [{"level": "warning", "message": "mind the gap", "node_id": "say"}]


def test_node_messages_reach_the_batch_manifest(tmp_path):
    wf = warning_workflow(tmp_path / "wf.json")
    from engine.document import load_workflow

    jobs = build_jobs(None, parse_grid(["say.message=left,right"]))
    tasks = prepare_tasks(load_workflow(wf), jobs, default_registry([PACK]))
    settings = Settings(cache_dir=str(tmp_path / "cache"), node_packs=[str(PACK)])
    with LocalPool(settings, workers=1) as pool:
        summary = run_batch(tasks, tmp_path / "out", pool)
    assert summary.exit_code == 0
    logs = {r.overrides[0]: r.log for r in read_manifest(tmp_path / "out" / "manifest.jsonl").values()}
    assert logs == {"say.message=left": [{"level": "warning", "message": "left", "node_id": "say"}],
                    "say.message=right": [{"level": "warning", "message": "right", "node_id": "say"}]}


def test_settings_changed_in_the_studio_reach_the_running_worker(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    Image.new("RGB", (4, 4), (0, 255, 0)).save(second / "only_here.png")
    wf = Workflow()
    wf.add_node("LoadImage", {"image": "only_here.png"}, node_id="img")
    wf.add_node("SaveImage", {}, node_id="save")
    wf.connect("img", "image", "save", "images")
    settings = Settings(cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"),
                        input_dir=str(first))
    with WorkerClient(settings) as client:
        missing = client.run(wf.to_json())
        assert missing.status is RunStatus.FAILED and "only_here.png" in missing.error
        pid = client.pid
        client.update_settings(Settings(cache_dir=str(tmp_path / "cache"),
                                        output_dir=str(tmp_path / "out"), input_dir=str(second)))
        found = client.run(wf.to_json())
        assert found.status is RunStatus.DONE, found.error
        assert client.pid == pid  # no restart
        assert isinstance(found, RunFinished) and found.report.nodes["img"].status is NodeStatus.EXECUTED


def test_one_parser_serves_every_command(tmp_path, capsys):
    with pytest.raises(SystemExit):
        entry.main(["--help"])
    help_text = capsys.readouterr().out
    for command in ("studio", "run", "validate", "nodes", "batch", "export-image"):
        assert command in help_text
    assert entry.main(["validate", "gradient_blend"]) == 0  # a bundled example by name
    assert entry.main(["validate", "no_such_workflow"]) == 2
    assert "bundled example" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert entry.main(["export-image", str(bad), str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_saved_files_keep_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        Workflow().save(tmp_path / "wf.json")
        assert stat.S_IMODE((tmp_path / "wf.json").stat().st_mode) == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "{}")
        assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
        os.chmod(tmp_path / "wf.json", 0o640)  # replacing a file keeps its mode
        Workflow().save(tmp_path / "wf.json")
        assert stat.S_IMODE((tmp_path / "wf.json").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_recaption_fallback_is_not_cached(executor):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    wf = Workflow()
    wf.add_node("Recaption", {"prompt": "a cat", "backend": "openai", "model_name": "m",
                              "base_url": url, "on_error": "use prompt", "timeout": 5.0},
                node_id="cap")
    request = RunRequest(wf, ("cap",), approved_endpoints=(url,))
    first, second = executor.run(request), executor.run(request)
    assert first.values["cap"]["caption"] == second.values["cap"]["caption"] == "a cat"
    assert second.nodes["cap"].status is NodeStatus.EXECUTED  # asked again, and said so again
    assert any("using the prompt unchanged" in e.message for e in second.log)

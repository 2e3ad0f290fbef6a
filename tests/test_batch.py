"""Batch runs on the local worker pool: matrices and grids, the manifest, failures that stay
alone, crash retries, and resuming after Ctrl+C. Two warm workers are shared by the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.batch import (BatchDir, BatchError, StopSignal, build_jobs, job_id, parse_grid,
                          prepare_tasks, read_manifest, read_matrix, run_batch)
from engine.batch.cli import main as batch_main
from engine.batch.local import LocalPool, worker_envs
from engine.config import Settings
from engine.document import load_workflow

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "tests" / "data" / "node_pack"
COLORS = {"red": "#ff0000", "green": "#00ff00", "blue": "#0000ff"}


def batch_workflow(path: Path, step_seconds: float = 0.02, steps: int = 2) -> Path:
    """workflows/gradient_blend.json made small, with a Delay feeding the gradient's height (job
    length) and a RaiseError, disabled, feeding its width (a failure switched on per job)."""
    wf = load_workflow(ROOT / "workflows" / "gradient_blend.json")
    for node in ("sky", "vignette"):
        wf.nodes[node].inputs.update(width=32, height=18)
    wf.add_node("Delay", {"value": 18, "steps": steps, "step_seconds": step_seconds}, node_id="wait")
    wf.add_node("RaiseError", {"value": 32, "enabled": False, "message": "bad prompt"}, node_id="fail")
    wf.connect("wait", "value", "sky", "height")
    wf.connect("fail", "value", "sky", "width")
    wf.save(path)
    return path


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    settings = Settings(cache_dir=str(tmp_path_factory.mktemp("cache")), node_packs=[str(PACK)])
    with LocalPool(settings, workers=2, retries=1, stop_grace=5.0) as p:
        p.start(wait=True)
        yield p


def tasks_for(workflow: Path, grid: list[str], rows=None):
    from engine.registry import default_registry

    jobs = build_jobs(rows, parse_grid(grid))
    return prepare_tasks(load_workflow(workflow), jobs, default_registry([PACK]))


class Recorder:
    """A progress sink that remembers which worker started which job."""

    def __init__(self, on_start=None):
        self.starts: list[tuple[str, str]] = []
        self.retries: list[tuple[str, str]] = []
        self.on_start = on_start

    def begin(self, summary, todo): ...

    def end(self, summary): ...

    def started(self, task, worker):
        self.starts.append((task.id, worker))
        if self.on_start:
            self.on_start(task, worker)

    def retrying(self, task, worker, error, attempt):
        self.retries.append((task.id, error))

    def finished(self, result): ...


def pixel(out: Path, relative: str) -> np.ndarray:
    return np.asarray(Image.open(out / relative).convert("RGB")).astype(int)


# ---- matrix files and ids (no workers) ----------------------------------------------------------

def test_csv_jsonl_and_grid_give_the_same_jobs_with_stable_ids(tmp_path):
    csv_file = tmp_path / "m.csv"
    csv_file.write_text("id,sky.color_a,blend.factor\nred,#ff0000,0.25\n,#00ff00,0.5\n")
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"id": "red", "sky.color_a": "#ff0000", "blend.factor": 0.25}\n\n'
                     '{"overrides": ["blend.factor=0.5", "sky.color_a=#00ff00"]}\n')
    from_csv, from_jsonl = build_jobs(read_matrix(csv_file)), build_jobs(read_matrix(jsonl))
    assert [j.id for j in from_csv] == [j.id for j in from_jsonl]
    assert from_csv[0].id == "red"
    assert from_csv[0].overrides == ("sky.color_a=#ff0000", "blend.factor=0.25")
    assert from_csv[1].id == job_id(["sky.color_a=#00ff00", "blend.factor=0.5"])  # order-free hash
    grid = build_jobs(None, parse_grid(["blend.factor=0.5", 'sky.color_a=["#00ff00"]']))
    assert [j.id for j in grid] == [from_csv[1].id]  # the same settings are the same job
    on_top = build_jobs(read_matrix(csv_file), parse_grid(["vignette.direction=radial,vertical"]))
    assert len(on_top) == 4 and on_top[0].id.startswith("red-")
    assert len({j.id for j in on_top}) == 4


def test_bad_matrix_rows_are_all_reported(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x.y": 1}\nnot json\n{"seed": 3}\n{"overrides": ["x.y"]}\n')
    with pytest.raises(BatchError) as info:
        read_matrix(bad)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "bad.jsonl line 2", "bad.jsonl line 3", "bad.jsonl line 4"]
    assert "unknown key 'seed'" in info.value.problems[1]
    ids = tmp_path / "ids.jsonl"
    ids.write_text('{"id": "a/b", "x.y": 1}\n{"id": "dup", "a.b": 1}\n{"id": "dup", "a.b": 2}\n'
                   '{"id": "dup", "a.b": 1}\n')
    with pytest.raises(BatchError) as info:
        build_jobs(read_matrix(ids))
    assert len(info.value.problems) == 2  # the identical repeat of 'dup' is the same job
    assert "id 'a/b' cannot name a folder" in info.value.problems[0]
    assert "'dup' is already used by ids.jsonl line 2" in info.value.problems[1]
    with pytest.raises(BatchError, match="nothing to run"):
        build_jobs(None, [])


def test_workers_are_pinned_one_per_gpu_or_share_the_cpu_threads(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert worker_envs(None, gpus=4) == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(4)]
    assert worker_envs(None, gpus=4, gpus_per_job=2) == [{"CUDA_VISIBLE_DEVICES": "0,1"},
                                                         {"CUDA_VISIBLE_DEVICES": "2,3"}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert worker_envs(3, gpus=2) == [{"CUDA_VISIBLE_DEVICES": v} for v in ("5", "7", "5")]
    assert worker_envs(2, gpus=0, cpu_count=9) == [{"OMP_NUM_THREADS": "4"}] * 2  # 1 core spare
    assert worker_envs(None, gpus=0, cpu_count=2) == [{"OMP_NUM_THREADS": "1"}]
    with pytest.raises(BatchError):
        worker_envs(None, gpus=1, gpus_per_job=2)


def test_invalid_overrides_are_rejected_up_front_one_line_each(tmp_path, capsys):
    wf = batch_workflow(tmp_path / "wf.json")
    matrix = tmp_path / "m.csv"
    matrix.write_text("id,sky.color_a,blend.mode\nok,#ff0000,multiply\nbadmode,#00ff00,glow\n")
    out = tmp_path / "out"
    code = batch_main([str(wf), "--matrix", str(matrix), "--grid", "blend.factor=0.5,7",
                       "--grid", "nobody.x=1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = [l for l in err.splitlines() if l.startswith("  - ")]
    assert any("every job:" in l and "'nobody'" in l for l in lines)  # shared problem listed once
    assert sum("'nobody'" in l for l in lines) == 1
    assert any(l.startswith("  - job 'badmode-") and "'mode'" in l for l in lines)
    assert sum("'factor'" in l for l in lines) == 2  # factor=7 is out of range in both rows
    assert "Traceback" not in err
    assert not out.exists()  # nothing ran


# ---- running on the pool ------------------------------------------------------------------------

def test_six_jobs_on_two_workers_give_six_outputs_and_a_complete_manifest(pool, tmp_path):
    wf = batch_workflow(tmp_path / "wf.json", step_seconds=0.1)
    tasks = tasks_for(wf, [f"sky.color_a={','.join(COLORS.values())}",
                           "vignette.direction=radial,horizontal"])
    assert len(tasks) == 6
    out, seen = tmp_path / "out", Recorder()
    summary = run_batch(tasks, out, pool, progress=seen)
    assert summary.exit_code == 0 and sorted(summary.done) == sorted(t.id for t in tasks)
    records = read_manifest(out / "manifest.jsonl")
    assert set(records) == {t.id for t in tasks}
    assert {w.split(" pid")[0] for _, w in seen.starts} == {"local-0", "local-1"}
    for task in tasks:
        record = records[task.id]
        assert record.status == "done" and record.overrides == list(task.overrides)
        assert record.outputs == [f"{task.id}/gradient_00001.png"] and record.seconds > 0
        rgb = pixel(out, record.outputs[0])
        assert rgb.shape == (18, 32, 3)
        color = next(c for c in COLORS.values() if f"sky.color_a={c}" in task.overrides)
        channel = list(COLORS.values()).index(color)
        assert rgb[9, 0].argmax() == channel  # the left edge carries the job's colour
    assert sorted(p.name for p in out.iterdir()) == sorted([*records, "manifest.jsonl", ".lock"])
    again = run_batch(tasks, out, pool)  # everything done: nothing runs again
    assert sorted(again.skipped) == sorted(records) and not again.done


def test_a_job_that_fails_at_run_time_fails_alone_and_is_retried_next_time(pool, tmp_path):
    wf = batch_workflow(tmp_path / "wf.json")
    matrix = tmp_path / "m.jsonl"
    matrix.write_text("".join(json.dumps(row) + "\n" for row in (
        {"sky.color_a": "#ff0000"}, {"sky.color_a": "#00ff00", "fail.enabled": True},
        {"sky.color_a": "#0000ff"}, {"sky.color_a": "#ffffff"})))
    tasks = tasks_for(wf, [], read_matrix(matrix))
    bad = next(t.id for t in tasks if "fail.enabled=true" in t.overrides)
    out = tmp_path / "out"
    summary = run_batch(tasks, out, pool)
    assert summary.exit_code == 1 and len(summary.done) == 3 and list(summary.failed) == [bad]
    assert "node 'fail' (RaiseError) failed: bad prompt" in summary.failed[bad]
    record = read_manifest(out / "manifest.jsonl")[bad]
    assert record.status == "failed" and record.outputs == [] and record.attempts == 1
    assert not (out / bad).exists() and not (out / ".partial").exists()
    again = run_batch(tasks, out, pool)  # done ones skipped, the failed one tried again
    assert len(again.skipped) == 3 and list(again.failed) == [bad]
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert sum(json.loads(l)["id"] == bad for l in lines) == 2


def test_a_killed_worker_is_replaced_and_its_job_retried(pool, tmp_path):
    """Job `once` loses its worker on the first attempt only; job `always` on every attempt, so it
    fails after 1 + retries attempts while the other jobs finish."""
    wf = batch_workflow(tmp_path / "wf.json", step_seconds=0.1, steps=10)
    matrix = tmp_path / "m.jsonl"
    matrix.write_text("".join(  # distinct Delay steps: no job can be served from another's cache
        json.dumps({"id": name, "sky.color_a": c, "wait.steps": steps}) + "\n" for name, c, steps in
        (("once", "#ff0000", 10), ("always", "#00ff00", 11), ("calm", "#0000ff", 12))))
    tasks = tasks_for(wf, [], read_matrix(matrix))
    killed: list[int] = []

    def kill_soon(task, worker):
        pid = int(worker.rsplit(" ", 1)[1])
        if task.id == "always" or (task.id == "once" and not killed):
            killed.append(pid)
            threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()

    seen = Recorder(on_start=kill_soon)
    out = tmp_path / "out"
    summary = run_batch(tasks, out, pool, progress=seen)
    records = read_manifest(out / "manifest.jsonl")
    assert records["once"].status == "done" and records["once"].attempts == 2
    assert int(records["once"].worker.rsplit(" ", 1)[1]) not in killed  # a fresh process
    assert records["calm"].status == "done" and records["calm"].attempts == 1
    assert records["always"].status == "failed" and records["always"].attempts == 2
    assert "signal 9" in records["always"].error
    assert summary.retries == 2 and len(killed) == 3
    assert all("signal 9" in error for _, error in seen.retries)
    assert pixel(out, records["once"].outputs[0])[9, 0].argmax() == 0  # its real output, red


def test_ctrl_c_leaves_a_consistent_manifest_and_a_rerun_does_only_the_missing_jobs(pool, tmp_path):
    wf = batch_workflow(tmp_path / "wf.json", step_seconds=0.1, steps=8)
    grid = "wait.steps=8,9,10,11"  # distinct Delays: no job is served from another's cache
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "batch", str(wf), "--grid", grid,
                             "--out", str(out), "--workers", "1"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not read_manifest(out / "manifest.jsonl") and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl+C does: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "stopping: interrupting running jobs" in err and "run the same command again" in err
    assert "Traceback" not in err  # workers ignore the terminal's SIGINT; the driver stops them
    lines = (out / "manifest.jsonl").read_text().splitlines()
    first = read_manifest(out / "manifest.jsonl")
    assert len(lines) == len(first) and 1 <= len(first) < 4  # whole lines, no duplicates
    assert all(r.status == "done" for r in first.values())  # the job running at ^C is not "failed"
    assert not (out / ".partial").exists()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(first)
    stamps = {jid: (out / r.outputs[0]).stat().st_mtime_ns for jid, r in first.items()}

    tasks = tasks_for(wf, [grid])
    summary = run_batch(tasks, out, pool)
    assert sorted(summary.skipped) == sorted(first)
    assert sorted(summary.done) == sorted({t.id for t in tasks} - set(first))
    assert all((out / first[jid].outputs[0]).stat().st_mtime_ns == ns for jid, ns in stamps.items())
    assert len(read_manifest(out / "manifest.jsonl")) == 4
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4


def test_a_torn_manifest_line_is_ignored_and_the_next_record_starts_cleanly(tmp_path):
    batch = BatchDir(tmp_path)
    from engine.batch.manifest import JobRecord

    batch.record(JobRecord("a", ["x.y=1"], "done"))
    with open(batch.manifest_path, "a") as f:
        f.write('{"id": "b", "overrides": [], "sta')  # killed mid-write
    batch.record(JobRecord("c", ["x.y=3"], "failed", error="boom"))
    assert sorted(batch.records()) == ["a", "c"]
    assert json.loads(batch.manifest_path.read_text().splitlines()[-1])["id"] == "c"


def test_stop_before_start_runs_nothing_and_records_nothing(pool, tmp_path):
    wf = batch_workflow(tmp_path / "wf.json")
    stop = StopSignal()
    stop.request()
    summary = run_batch(tasks_for(wf, ["blend.factor=0.1,0.2"]), tmp_path / "out", pool, stop=stop)
    assert summary.exit_code == 1 and len(summary.not_run) == 2 and not summary.done
    assert read_manifest(tmp_path / "out" / "manifest.jsonl") == {}


def test_executor_ray_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    wf = batch_workflow(tmp_path / "wf.json")
    code = batch_main([str(wf), "--grid", "blend.factor=0.5", "--out", str(tmp_path / "out"),
                       "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'reelgraph[ray]'" in err and "Traceback" not in err


def test_a_worker_that_cannot_start_fails_the_jobs_instead_of_restarting_forever(tmp_path):
    broken = tmp_path / "broken_pack"
    broken.mkdir()
    (broken / "dies_on_import.py").write_text("import os\nos._exit(7)\n")  # e.g. a broken CUDA
    wf = batch_workflow(tmp_path / "wf.json")
    tasks = tasks_for(wf, ["blend.factor=0.1,0.2"])
    settings = Settings(cache_dir=str(tmp_path / "cache"), node_packs=[str(broken)])
    with LocalPool(settings, workers=1, retries=0) as doomed:
        doomed.boot_attempts = 1  # one failed start is enough to give up here (each costs ~3 s)
        summary = run_batch(tasks, tmp_path / "out", doomed)
    assert sorted(summary.failed) == sorted(t.id for t in tasks)
    assert all("no worker process could start" in e and "exit code 7" in e
               for e in summary.failed.values())

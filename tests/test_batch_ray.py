"""The batch matrix on a local Ray instance: the same files as the local pool (byte for byte on
CPU), a failing job alone, and an actor killed mid-job replaced with its job retried.

Ray is a dev dependency: when it is missing this module fails at import; it never skips."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest
import ray  # deliberately not importorskip: CI installs the dev extras

from engine.batch import read_manifest, read_matrix, run_batch
from engine.batch.local import LocalPool
from engine.batch.ray_executor import RayPool
from engine.config import Settings
from tests.test_batch import PACK, Recorder, batch_workflow, pixel, tasks_for


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 << 20)  # outputs never travel through the object store
    yield
    ray.shutdown()


def test_ray_gives_the_same_outputs_as_the_local_pool(ray_instance, tmp_path):
    wf = batch_workflow(tmp_path / "wf.json", step_seconds=0.05, steps=4)
    rows = [{"id": "slow", "sky.color_a": "#ff0000", "wait.steps": 30},  # killed on its 1st attempt
            {"id": "broken", "sky.color_a": "#ffffff", "fail.enabled": True}]
    rows += [{"sky.color_a": c, "vignette.direction": d} for c in ("#00ff00", "#0000ff", "#ffff00")
             for d in ("radial", "horizontal")]
    matrix = tmp_path / "m.jsonl"
    matrix.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tasks_for(wf, [], read_matrix(matrix))
    settings = Settings(cache_dir=str(tmp_path / "cache"), node_packs=[str(PACK)])

    local = LocalPool(settings, workers=1)
    local.start()  # boots while Ray starts its actors
    killed: list[int] = []

    def kill_slow_once(task, worker):
        if task.id == "slow" and not killed:
            killed.append(int(worker.rsplit(" ", 1)[1]))
            threading.Timer(0.5, os.kill, (killed[0], signal.SIGKILL)).start()

    seen = Recorder(on_start=kill_slow_once)
    with RayPool(settings, workers=2, retries=1) as pool:
        pool.start()
        on_ray = run_batch(tasks, tmp_path / "ray", pool, progress=seen)
    with local:
        on_local = run_batch(tasks, tmp_path / "local", local)

    assert list(on_ray.failed) == list(on_local.failed) == ["broken"]
    assert "node 'fail' (RaiseError) failed: bad prompt" in on_ray.failed["broken"]
    assert sorted(on_ray.done) == sorted(on_local.done) and len(on_ray.done) == 7
    assert on_ray.retries == 1 and seen.retries[0][0] == "slow"
    ray_records = read_manifest(tmp_path / "ray" / "manifest.jsonl")
    local_records = read_manifest(tmp_path / "local" / "manifest.jsonl")
    assert ray_records["slow"].attempts == 2
    assert int(ray_records["slow"].worker.rsplit(" ", 1)[1]) != killed[0]
    pids = {r.worker.rsplit(" ", 1)[1] for r in ray_records.values()}
    assert len(pids) <= 3  # two long-lived actors (+ the replacement), not a process per job
    for jid in on_ray.done:
        assert ray_records[jid].worker.startswith("ray-")
        assert ray_records[jid].outputs == local_records[jid].outputs
        (ray_file,) = [tmp_path / "ray" / p for p in ray_records[jid].outputs]
        assert ray_file.read_bytes() == (tmp_path / "local" / ray_records[jid].outputs[0]).read_bytes()
    assert pixel(tmp_path / "ray", ray_records["slow"].outputs[0])[9, 0].argmax() == 0  # red
    assert not (tmp_path / "ray" / ".partial").exists()

"""A cache that can be trusted: damaged entries are detected and recomputed, the disk tier is one
index and one budget for every process, leftovers of killed writers are cleaned, files are known by
their content, the compute environment is part of every key, and loaded models stay resident."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from engine.cache import ResultCache
from engine.cache.disk import DiskTier
from engine.cache.ram import RamTier
from engine.document import Workflow
from engine.executor import Executor
from engine.file_identity import FileHasher
from engine.run_api import LogLevel
from engine.values import Latent


def gradient_graph() -> Workflow:
    wf = Workflow()
    wf.add_node("ImageGradient", {"width": 256, "height": 128}, node_id="g")  # 384 KiB: spilled
    wf.add_node("ImageBlend", {"factor": 0.5}, node_id="b")
    wf.connect("g", "image", "b", "image_a")
    wf.connect("g", "image", "b", "image_b")
    return wf


def payload_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*") if ".tmp-" not in p.name)


def test_a_flipped_byte_in_a_disk_entry_is_a_miss_that_is_recomputed(tmp_path, registry):
    wf = gradient_graph()
    first = Executor(registry, ResultCache(disk_dir=tmp_path / "c"), temp_dir=tmp_path)
    good = first.run(wf, targets=["b"]).values["b"]["image"]
    entry = first.plan(wf, ["b"]).signatures["b"]
    path = next(p for p in payload_files(tmp_path / "c") if p.stem == entry)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor bytes: the file still parses
    path.write_bytes(bytes(data))
    fresh = Executor(registry, ResultCache(disk_dir=tmp_path / "c"), temp_dir=tmp_path)
    report = fresh.run(wf, targets=["b"])
    assert report.nodes["b"].status.value == "executed"
    assert torch.equal(report.values["b"]["image"], good)
    warnings = [e for e in report.log if e.level is LogLevel.WARNING and e.node_id == "b"]
    assert warnings and "checksum" in warnings[0].message
    assert fresh.cache.stats.corrupt == 1
    again = Executor(registry, ResultCache(disk_dir=tmp_path / "c"), temp_dir=tmp_path)
    assert again.run(wf, targets=["b"]).nodes["b"].status.value == "cached"  # rewritten, good


def test_values_round_trip_through_the_disk_tier(tmp_path):
    tier = DiskTier(tmp_path, 1 << 30)
    latent = Latent(torch.randn(1, 4, 2, 3, 3), frame_mask=torch.ones(1, 2), fps=8.0,
                    meta={"seed": 3})
    value = {"outputs": {"latent": latent, "n": (1, 2.5)}, "files": ["x.mp4"]}
    assert tier.put("k" * 64, value) == (True, "")
    back, problem = DiskTier(tmp_path, 1 << 30).get("k" * 64)
    assert problem == ""
    got = back["outputs"]["latent"]
    assert torch.equal(got.samples, latent.samples) and got.meta == {"seed": 3} and got.fps == 8.0
    assert back["outputs"]["n"] == (1, 2.5) and back["files"] == ["x.mp4"]
    plain = {"outputs": {}, "files": ["/o/video.mp4"]}  # what a save node returns: JSON, no torch
    tier.put("j" * 64, plain)
    assert tier.get("j" * 64) == (plain, "")
    assert (tmp_path / "jj" / f"{'j' * 64}.json").exists()


def test_start_up_removes_what_killed_writers_left(tmp_path):
    tier = DiskTier(tmp_path, 1 << 30)
    tier.put("a" * 64, {"outputs": {"x": torch.ones(10)}, "files": []})
    tier.put("b" * 64, {"outputs": {"x": torch.ones(10)}, "files": []})
    tier.close()
    dead_pid = _dead_pid()
    (tmp_path / "cc").mkdir()
    orphan_tmp = tmp_path / "cc" / f".{'c' * 64}.tmp-{dead_pid}-abcd"
    orphan_tmp.write_bytes(b"half a file")
    live_tmp = tmp_path / "cc" / f".{'d' * 64}.tmp-{os.getpid()}-abcd"  # a writer still at work
    live_tmp.write_bytes(b"being written")
    unrecorded = tmp_path / "cc" / f"{'c' * 64}.safetensors"  # renamed, never recorded
    unrecorded.write_bytes(b"x")
    next(p for p in payload_files(tmp_path) if p.stem == "b" * 64).unlink()  # vanished payload
    reopened = DiskTier(tmp_path, 1 << 30)
    assert not orphan_tmp.exists() and not unrecorded.exists() and live_tmp.exists()
    assert reopened.swept == 2
    assert reopened.present(["a" * 64, "b" * 64, "c" * 64]) == {"a" * 64}


def test_a_result_bigger_than_the_whole_budget_is_not_written(tmp_path, registry):
    wf = gradient_graph()
    cache = ResultCache(disk_dir=tmp_path / "c", disk_budget_bytes=4096)
    ex = Executor(registry, cache, temp_dir=tmp_path)
    cache.disk.put("small" + "0" * 59, {"outputs": {"v": 1}, "files": []})
    report = ex.run(wf, targets=["b"])
    assert report.ok
    assert cache.disk.present(["small" + "0" * 59])  # nothing else was evicted for it
    assert len(cache.disk) == 1
    assert any("bigger than the whole disk cache budget" in e.message for e in report.log)


def _writer(root: str, worker: int, count: int, budget: int) -> None:
    tier = DiskTier(Path(root), budget)
    for i in range(count):
        tier.put(f"{worker:02d}{i:062d}", {"outputs": {"x": torch.full((25_000,), float(i))},
                                           "files": []})


def test_two_processes_sharing_a_disk_tier_stay_within_one_budget(tmp_path):
    budget = 1_000_000  # each entry is ~100 KB: room for about 9
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 12, budget)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    tier = DiskTier(tmp_path, budget)
    on_disk = sum(p.stat().st_size for p in payload_files(tmp_path))
    assert tier.bytes == on_disk <= budget
    assert 5 <= len(tier) <= 10
    assert tier.swept == 0  # every file on disk is in the one index


def test_an_unusable_cache_folder_falls_back_to_ram_and_says_so(tmp_path, registry):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    cache = ResultCache(disk_dir=blocker / "results")
    assert cache.disk is None and "RAM only" in cache.disk_error
    ex = Executor(registry, cache, temp_dir=tmp_path)
    report = ex.run(gradient_graph(), targets=["b"])
    assert report.ok and any("RAM only" in e.message for e in report.log)
    assert ex.run(gradient_graph(), targets=["b"]).nodes["b"].status.value == "cached"


def test_the_compute_environment_is_part_of_every_key(tmp_path, registry):
    wf = gradient_graph()
    ex = Executor(registry, ResultCache(disk_dir=None), temp_dir=tmp_path)
    env = ex.environment()
    assert env["device"] == "cpu" and env["versions"]["torch"] == torch.__version__
    assert env["versions"]["diffusers"] and env["versions"]["transformers"]
    before = ex.plan(wf, ["b"]).signatures
    other = Executor(registry, ResultCache(disk_dir=None), temp_dir=tmp_path)
    other._environment = {**env, "versions": {**env["versions"], "torch": "9.9.9"}}
    assert other.plan(wf, ["b"]).signatures["g"] != before["g"]
    gpu = Executor(registry, ResultCache(disk_dir=None), temp_dir=tmp_path,
                   settings={"device": "cuda:0"})  # never resolved: planning imports no torch
    assert gpu.environment()["device"] == "cuda"
    assert gpu.plan(wf, ["b"]).signatures["g"] != before["g"]


def test_file_hashes_are_remembered_across_processes(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(1 << 20))
    first = FileHasher(tmp_path / "hashes.sqlite3")
    digest = first.sha256(path)
    assert first.hashed == 1 and first.sha256(path) == digest and first.hashed == 1
    second = FileHasher(tmp_path / "hashes.sqlite3")  # a new process: same store
    assert second.sha256(path) == digest and second.hashed == 0
    path.write_bytes(os.urandom(1 << 20))  # replaced: a new version is hashed
    assert second.sha256(path) != digest and second.hashed == 1


def _model(name: str, size: int) -> dict:
    info = SimpleNamespace(family="wan", path=f"/models/{name}")
    return {"outputs": {"model": SimpleNamespace(info=info, nbytes=size)}, "files": []}


def test_models_used_by_one_run_are_never_evicted_for_each_other(tmp_path):
    cache = ResultCache(ram_budget_bytes=1 << 20, model_budget_bytes=10_000)
    warnings: list[str] = []
    cache.begin_run()
    cache.put("dit", _model("dit.safetensors", 8_000), warn=warnings.append)
    cache.put("t5", _model("t5.safetensors", 7_000), warn=warnings.append)
    assert "dit" in cache.ram and "t5" in cache.ram  # over budget, but both in use
    assert warnings and "does not fit the model RAM budget" in warnings[0]
    cache.begin_run()  # the next run uses both again: no reload
    assert cache.get("dit") is not None and cache.get("t5") is not None
    cache.begin_run()  # a run that needs another model: the least recently used one goes
    cache.get("t5")
    warnings.clear()
    cache.put("vae", _model("vae.safetensors", 2_000), warn=warnings.append)
    assert "dit" not in cache.ram and "t5" in cache.ram and "vae" in cache.ram
    assert len(warnings) == 1 and "unloaded a model" in warnings[0]
    assert "vae.safetensors" in warnings[0]


def test_a_model_bigger_than_the_whole_budget_stays_until_the_room_is_needed():
    tier = RamTier(1 << 20, model_budget_bytes=1_000)
    tier.begin_run()
    tier.put("big", object(), 5_000, is_model=True)
    tier.begin_run()
    assert tier.get("big") is not None  # kept: every run does not reload it
    tier.begin_run()
    tier.put("other", object(), 500, is_model=True)
    assert "big" not in tier and "other" in tier


def _dead_pid() -> int:
    proc = mp.get_context("spawn").Process(target=time.sleep, args=(0,))
    proc.start()
    proc.join()
    return proc.pid


def test_a_locked_or_failing_index_is_a_miss_never_an_error(tmp_path):
    import sqlite3

    tier = DiskTier(tmp_path, 1 << 30, busy_timeout=0.2)
    tier.put("a" * 64, {"outputs": {"x": torch.ones(3)}, "files": []})
    other = sqlite3.connect(str(tmp_path / "index.sqlite3"), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the busy timeout
    try:
        assert tier.get("a" * 64)[0] is not None  # WAL: reading never waits for the writer
        tier.drop("a" * 64)  # cannot write now: never raises
        assert tier.put("b" * 64, {"outputs": {"x": torch.ones(3)}, "files": []})[0] is False
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not tier._db.in_transaction  # nothing left holding the write lock
    assert tier.put("c" * 64, {"outputs": {"x": torch.ones(3)}, "files": []}) == (True, "")

    class Broken:  # an index that fails on every statement (disk I/O error, damaged file)
        in_transaction = False

        def execute(self, *args):
            raise sqlite3.OperationalError("disk I/O error")

    tier._db = Broken()
    assert tier.present(["c" * 64]) == set()
    value, problem = tier.get("c" * 64)
    assert value is None and "cannot be read" in problem
    tier.drop("c" * 64)


def test_an_engine_failure_still_closes_the_run_with_a_report(tmp_path, registry):
    from engine.events import RunFinished

    cache = ResultCache(disk_dir=None)
    ex = Executor(registry, cache, temp_dir=tmp_path)
    wf = gradient_graph()
    ex.run(wf, targets=["b"])

    def broken_get(key, warn=None):
        raise OSError("disk on fire")

    cache.get = broken_get
    events = []
    report = ex.run(wf, targets=["b"], on_event=events.append)
    assert report.status.value == "failed" and "disk on fire" in report.error.message
    assert isinstance(events[-1], RunFinished) and events[-1].report.status.value == "failed"
    assert report.nodes["b"].status.value == "pending"


def test_tensor_names_never_collide_on_disk(tmp_path):
    tier = DiskTier(tmp_path, 1 << 30)
    value = {"outputs": {"a.0": torch.zeros(2), "a": [torch.ones(2)]}, "files": []}
    tier.put("k" * 64, value)
    back, _ = tier.get("k" * 64)
    assert torch.equal(back["outputs"]["a.0"], torch.zeros(2))
    assert torch.equal(back["outputs"]["a"][0], torch.ones(2))


def test_models_the_plan_reads_later_are_protected_from_the_first_load():
    tier = RamTier(1 << 20, model_budget_bytes=10_000)
    tier.begin_run()
    tier.put("a", object(), 6_000, is_model=True)
    tier.begin_run(reads=["a"])  # the next run will read a, but loads b first
    tier.put("b", object(), 6_000, is_model=True)
    assert "a" in tier and "b" in tier


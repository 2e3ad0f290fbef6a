"""Bad input never crashes and never loses data (issue: trust and bad input, round 2): text that is
not valid Unicode, duplicate ids, deep nesting, files that are not files or far too big, settings
of the wrong kind, two runs into one folder, batch folders holding someone else's files, edited
workflows, damaged manifests, unwritable folders. Each case was reproduced first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine import safe_json
from engine.batch import BatchDir, BatchError, build_jobs, parse_grid, prepare_tasks, read_manifest
from engine.batch.local import LocalPool
from engine.batch.manifest import JobRecord, append_record
from engine.batch.matrix import read_matrix
from engine.config import Settings, load_settings
from engine.context import ExecutionContext, InterruptFlag
from engine.document import Workflow, load_workflow, loads_workflow
from engine.errors import WorkflowError
from engine.schema import unicode_problem
from engine.validation import validate

ROOT = Path(__file__).resolve().parents[1]
GRADIENT = ROOT / "workflows" / "gradient_blend.json"


def cli(*args, tmp_path, env=None, timeout=300):
    full_env = {**os.environ, "REELGRAPH_CACHE_DIR": str(tmp_path / "cache"), **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=tmp_path,
                          env=full_env, capture_output=True, timeout=timeout)


def problem_lines(stderr: bytes) -> list[str]:
    return [l for l in stderr.decode("utf-8", "replace").splitlines() if l.startswith("  - ")]


# ---- text that is not Unicode ------------------------------------------------------------------

def test_a_non_utf8_byte_in_a_set_argument_is_refused_at_validation(tmp_path):
    result = cli(b"run", str(GRADIENT).encode(), b"--out", b"o", b"--set",
                 b"save.filename_prefix=ab\xff", tmp_path=tmp_path)
    assert result.returncode == 2
    lines = problem_lines(result.stderr)
    assert len(lines) == 1 and "'save'" in lines[0] and "not valid Unicode" in lines[0]
    assert b"Traceback" not in result.stderr and not (tmp_path / "o").exists()


def test_a_lone_surrogate_in_a_matrix_is_refused_before_any_job_runs(tmp_path):
    matrix = tmp_path / "m.jsonl"
    matrix.write_text('{"id": "x", "save.filename_prefix": "a\\ud800b"}\n')
    result = cli("batch", str(GRADIENT), "--matrix", str(matrix), "--out", str(tmp_path / "b"),
                 tmp_path=tmp_path)
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert "not valid Unicode" in result.stderr.decode()
    assert not (tmp_path / "b" / "x").exists()


hostile_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                   blacklist_categories=()), max_size=40),
    st.text(alphabet=st.sampled_from(["\ud800", "\udfff", "\x00", "\x1b", "\n", "é", "a"]),
            max_size=40),
    st.integers(0, 3).map(lambda n: "x" * (10_000 * n)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=hostile_text)
def test_no_text_makes_validate_run_or_batch_raise_a_foreign_exception(text, executor, registry, tmp_path):
    """Whatever the string — in a text input, an override or a matrix value — validation
    accepts or refuses it, a run finishes or fails on a node, and the manifest round-trips it."""
    wf = Workflow()
    wf.add_node("Text", {"text": text}, node_id="t")
    wf.add_node("JoinText", {"separator": text}, node_id="j")
    wf.connect("t", "text", "j", "a")
    problems = validate(wf, registry)
    try:
        report = executor.run(wf, targets=["j"])
        assert not problems
        assert report.status.value in ("done", "failed")
    except WorkflowError as exc:
        assert problems or exc.problems
    try:
        jobs = build_jobs(None, parse_grid([f"t.text={json.dumps([text])}"]))
        prepare_tasks(wf, jobs, registry)
    except (WorkflowError, BatchError):
        pass
    record = JobRecord(id="job", overrides=[f"t.text={text}"], status="done")
    manifest = tmp_path / "manifest.jsonl"
    manifest.unlink(missing_ok=True)
    append_record(manifest, record)  # never raises, whatever the text
    back = read_manifest(manifest)["job"].overrides
    if unicode_problem(text) is None:  # (two lone surrogates may come back as one character)
        assert back == [f"t.text={text}"]


# ---- malformed documents -------------------------------------------------------------------------

def test_duplicate_node_ids_are_refused_not_merged(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"format": "reelgraph.workflow", "version": 2, "nodes": {'
                    '"a": {"type": "Int", "inputs": {"value": 1}}, '
                    '"a": {"type": "Float", "inputs": {"value": 2.0}}}, "links": []}')
    with pytest.raises(WorkflowError, match="'a' appears twice"):
        load_workflow(path)
    result = cli("validate", str(path), tmp_path=tmp_path)
    assert result.returncode == 2 and len(problem_lines(result.stderr)) == 1


def test_one_depth_limit_for_every_entry_point(tmp_path):
    deep = "[" * 493 + "]" * 493
    path = tmp_path / "deep.json"
    path.write_text('{"format": "reelgraph.workflow", "version": 2, "nodes": {"t": {"type": '
                    '"Text", "inputs": {"text": ' + deep + '}}}, "links": []}')
    for args in (("validate", str(path)), ("run", str(path), "--out", "o"),
                 ("batch", str(path), "--grid", "t.text=a", "--out", "b")):
        result = cli(*args, tmp_path=tmp_path)
        assert result.returncode == 2, args
        assert b"Traceback" not in result.stderr and b"levels deep" in result.stderr
    with pytest.raises(WorkflowError, match="levels deep"):
        from engine.document import workflow_from_json

        workflow_from_json({"format": "reelgraph.workflow", "version": 2,
                            "meta": json.loads(deep)})


def test_files_that_are_not_files_or_too_big_are_refused(tmp_path, monkeypatch):
    result = cli("validate", "/dev/zero", tmp_path=tmp_path, timeout=20)
    assert result.returncode == 2 and b"not a regular file" in result.stderr
    monkeypatch.setattr(safe_json, "MAX_WORKFLOW_BYTES", 1000)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"format": "reelgraph.workflow", "version": 2,
                               "meta": {"padding": "x" * 5000}}))
    with pytest.raises(WorkflowError, match="larger than"):
        load_workflow(big)
    monkeypatch.setattr(safe_json, "MAX_SMALL_FILE_BYTES", 100)
    matrix = tmp_path / "m.csv"
    matrix.write_text("id,t.text\n" + "a,b\n" * 100)
    with pytest.raises(BatchError, match="larger than"):
        read_matrix(matrix)


def test_settings_of_the_wrong_kind_are_named_and_replaced_by_defaults(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_roots": "/not/a/list", "ram_cache_bytes": "lots",
                                  "device": "tpu", "disk_cache_bytes": 1 << 30}))
    problems: list[str] = []
    loaded = load_settings(config, problems)
    assert loaded.disk_cache_bytes == 1 << 30 and loaded.model_roots == []
    assert loaded.ram_cache_bytes == Settings().ram_cache_bytes and loaded.device == ""
    assert len(problems) == 3
    assert all(str(config) in p for p in problems)
    assert any("'ram_cache_bytes'" in p and "whole number" in p for p in problems)
    result = cli("validate", str(GRADIENT), tmp_path=tmp_path, env={"REELGRAPH_CONFIG": str(config)})
    assert result.returncode == 0 and result.stderr.count(b"warning: ") == 3


def test_a_graph_without_an_output_node_is_exit_2(tmp_path):
    wf = Workflow()
    wf.add_node("Int", {"value": 3}, node_id="i")
    wf.save(tmp_path / "wf.json")
    result = cli("run", str(tmp_path / "wf.json"), "--out", "o", tmp_path=tmp_path)
    assert result.returncode == 2 and b"no output node" in result.stderr


# ---- outputs and reports -------------------------------------------------------------------------

def test_output_names_are_claimed_atomically(tmp_path):
    def context() -> ExecutionContext:
        return ExecutionContext("n", "SaveImage", "r", "cpu", tmp_path, tmp_path, tmp_path,
                                InterruptFlag(), lambda f, m, p: None)

    names: list[Path] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        ctx = context()
        barrier.wait()
        names.append(ctx.unique_output_path("clip", ".mp4"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 8 and all(p.exists() for p in names)
    ctx = context()
    path = ctx.unique_output_path("clip", ".mp4")
    ctx.release_claims()  # the node failed before writing: its empty claim goes
    assert not path.exists()


def test_two_runs_into_one_folder_keep_both_outputs_and_both_reports(tmp_path):
    out = tmp_path / "out"
    runs = [subprocess.Popen([sys.executable, str(ROOT / "main.py"), "run", str(GRADIENT),
                              "--out", str(out), "--no-cache", "--quiet"], cwd=tmp_path,
                             env=dict(os.environ, REELGRAPH_CACHE_DIR=str(tmp_path / f"c{i}")),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(3)]
    for run in runs:
        run.communicate(timeout=300)
        assert run.returncode == 0
    assert len(list(out.glob("gradient_*.png"))) == 3
    reports = [json.loads(p.read_text()) for p in (out / "reports").glob("*.json")]
    assert len({r["run_id"] for r in reports}) == 3
    assert json.loads((out / "report.json").read_text())["run_id"] in {r["run_id"] for r in reports}


def test_an_unwritable_report_or_output_folder_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    report = cli("run", str(GRADIENT), "--out", "o", "--report", str(blocker / "r.json"),
                 tmp_path=tmp_path)
    assert report.returncode == 0  # the run succeeded; only its report could not be written
    assert b"warning: could not write the report" in report.stderr and b"Traceback" not in report.stderr
    output = cli("run", str(GRADIENT), "--out", str(blocker / "out"), "--no-cache", tmp_path=tmp_path)
    assert output.returncode == 1 and b"Traceback" not in output.stderr
    assert b"cannot create the output folder" in output.stderr
    batch = cli("batch", str(GRADIENT), "--grid", "blend.factor=0.5", "--out", str(blocker / "b"),
                tmp_path=tmp_path)
    assert batch.returncode == 2 and b"Traceback" not in batch.stderr
    assert b"cannot write to the batch folder" in batch.stderr
    cache = cli("run", str(GRADIENT), "--out", "o2", tmp_path=tmp_path,
                env={"REELGRAPH_CACHE_DIR": str(blocker / "cache")})
    assert cache.returncode == 0 and b"RAM only" in cache.stderr  # the cache falls back


# ---- batch folders --------------------------------------------------------------------------------

def _tasks(registry, wf: Workflow, grid: list[str]):
    return prepare_tasks(wf, build_jobs(None, parse_grid(grid)), registry)


def test_a_batch_never_deletes_what_it_did_not_write(tmp_path, registry):
    wf = load_workflow(GRADIENT)
    tasks = _tasks(registry, wf, ["blend.factor=0.25"])
    out = tmp_path / "out"
    theirs = out / tasks[0].id
    theirs.mkdir(parents=True)
    (theirs / "holiday.jpg").write_text("precious")
    partial_file = out / ".partial" / "notes.txt"
    partial_file.parent.mkdir()
    partial_file.write_text("also precious")
    result = cli("batch", str(GRADIENT), "--grid", "blend.factor=0.25", "--out", str(out),
                 tmp_path=tmp_path)
    assert result.returncode == 2 and b"no batch wrote it" in result.stderr
    assert (theirs / "holiday.jpg").read_text() == "precious"
    assert partial_file.read_text() == "also precious"
    batch_dir = BatchDir(out)
    with batch_dir.lock():
        batch_dir.clear_partials()
    assert partial_file.exists()


def test_editing_the_workflow_reruns_the_jobs_done_on_the_old_one(tmp_path):
    wf_path = tmp_path / "wf.json"
    load_workflow(GRADIENT).save(wf_path)
    args = ("batch", str(wf_path), "--grid", "blend.factor=0.25,0.75", "--out", str(tmp_path / "b"))
    assert cli(*args, tmp_path=tmp_path).returncode == 0
    again = cli(*args, tmp_path=tmp_path)
    assert b"2 done (2 from earlier runs)" in again.stderr
    wf = load_workflow(wf_path)
    wf.nodes["sky"].inputs["color_a"] = "#00ff00"
    wf.save(wf_path)
    edited = cli(*args, tmp_path=tmp_path)
    assert edited.returncode == 0
    assert b"2 job(s) ran again: the workflow changed" in edited.stderr
    assert b"(0 from earlier runs)" in edited.stderr


def test_damaged_manifest_lines_and_bad_job_ids_are_refused_cleanly(tmp_path, registry):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('[1, 2]\n"text"\n{"id": 5, "status": "done"}\n'
                        '{"id": "ok", "overrides": [], "status": "done", "outputs": 7}\n')
    append_record(manifest, JobRecord(id="good", overrides=[], status="done"))
    assert list(read_manifest(manifest)) == ["good"]
    matrix = tmp_path / "m.jsonl"
    matrix.write_text('{"id": "fox\\n", "blend.factor": 0.5}\n')
    rows = read_matrix(matrix)
    with pytest.raises(BatchError, match="id"):
        build_jobs(rows)


def test_never_more_workers_than_jobs():
    pool = LocalPool(Settings(), workers=4, max_workers=1, gpus=0)
    assert pool.size == 1


def test_loads_workflow_never_raises_anything_else():
    for text in ("", "null", "[]", '{"format": 5}', "{" * 100_000, '{"a": ' * 3000 + "1" + "}" * 3000,
                 '{"format": "reelgraph.workflow", "version": 2, "nodes": []}'):
        with pytest.raises(WorkflowError):
            loads_workflow(text)

"""Batch runs: a workflow once per row of a job matrix (prompt x seed x parameter), on a local pool
of worker processes or on a Ray cluster, resumable through a manifest in the output folder.

    matrix.py        rows from JSONL/CSV, --grid axes, jobs with stable ids
    runner.py        validate every job up front, skip done ones, record results, summarise
    manifest.py      the output folder: atomic job folders, manifest.jsonl, the batch lock
    jobs.py          JobTask / JobResult and the backend protocol
    local.py         LocalPool: spawned WorkerClients (one per GPU), crash retries
    ray_executor.py  RayPool: one actor per GPU slot keeping its executor (optional `ray` extra)
    progress.py      the progress bar and the closing summary
    cli.py           `python main.py batch ...`

Library use (the CLI does the same):

    jobs = build_jobs(read_matrix("prompts.csv"), parse_grid(["noise.seed=1,2,3"]))
    tasks = prepare_tasks(load_workflow(path), jobs, registry)
    with LocalPool(settings, workers=2) as pool:
        summary = run_batch(tasks, "out/batch", pool)
"""

from engine.batch.jobs import JobResult, JobTask, StopSignal
from engine.batch.manifest import BatchDir, JobRecord, read_manifest
from engine.batch.matrix import BatchError, Job, Row, build_jobs, job_id, parse_grid, read_matrix
from engine.batch.runner import BatchSummary, prepare_tasks, run_batch

__all__ = ["BatchDir", "BatchError", "BatchSummary", "Job", "JobRecord", "JobResult", "JobTask",
           "Row", "StopSignal", "build_jobs", "job_id", "parse_grid", "prepare_tasks",
           "read_manifest", "read_matrix", "run_batch"]

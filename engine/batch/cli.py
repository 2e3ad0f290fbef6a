"""`python main.py batch WORKFLOW --matrix FILE --out DIR [...]`: a job matrix on a worker pool.

Exit codes (as for `run`): 0 every job is done; 1 some job failed (they are listed) or the batch
was interrupted; 2 the workflow, the matrix or an option is invalid (one line per problem, nothing
has run). Ctrl+C stops cooperatively (running jobs are interrupted, the manifest stays
consistent); a second Ctrl+C kills the workers at once. Re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from engine import bundle
from engine.batch.jobs import StopSignal
from engine.batch.matrix import BatchError, build_jobs, parse_grid, read_matrix
from engine.batch.progress import BatchProgress, summary_lines
from engine.batch.runner import pending_tasks, prepare_tasks, run_batch
from engine.cli import (EXIT_FAILED, EXIT_INVALID, EXIT_OK, load_any_workflow, load_settings_or_warn,
                        print_problems, unapproved_endpoints)
from engine.document import workflow_from_json
from engine.errors import Problem, WorkflowError


def main(argv: Sequence[str] | None = None) -> int:
    """`batch` on its own (the same parser as `main.py batch`)."""
    from engine.cli import main as cli_main

    return cli_main(["batch", *(argv or [])])


def cmd_batch(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except WorkflowError as exc:
        print_problems(exc, str(args.workflow))
        return EXIT_INVALID
    except BatchError as exc:
        print_problems(WorkflowError([Problem("batch", line) for line in exc.problems]),
                       what="invalid batch")
        return EXIT_INVALID
    except OSError as exc:  # the batch folder (or a file in it) cannot be read or written
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:  # before any job started (validating, starting Ray)
        print("interrupted before any job ran", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from engine.registry import default_registry

    problems = [f"--{name} must be at least {low}" for name, value, low in
                (("workers", args.workers, 1), ("gpus-per-job", args.gpus_per_job, 1),
                 ("retries", args.retries, 0)) if value is not None and value < low]
    if args.address and args.executor != "ray":
        problems.append("--address names a Ray cluster; add --executor ray")
    if args.matrix is None and not args.grid:
        problems.append("give the jobs: --matrix FILE and/or --grid NODE.INPUT=v1,v2,...")
    if problems:
        raise BatchError(problems)
    settings = load_settings_or_warn()
    settings.node_packs = [*settings.node_packs, *(str(p.resolve()) for p in args.node_pack)]
    settings.output_dir = str(args.out.resolve())
    # a ComfyUI file (JSON, or an output carrying one) is imported first, its report on stderr
    workflow = load_any_workflow(bundle.find_workflow(args.workflow))
    rows = read_matrix(args.matrix) if args.matrix is not None else None
    jobs = build_jobs(rows, parse_grid(args.grid))
    registry = default_registry(settings.node_packs)
    for error in registry.pack_errors:
        print(f"warning: node pack: {error}", file=sys.stderr)
    tasks = prepare_tasks(workflow, jobs, registry, use_cache=not args.no_cache,
                          approved_endpoints=tuple(args.allow_endpoint))
    refused = sorted({p.message for task in tasks
                      for p in (unapproved_endpoints(workflow_from_json(task.workflow_json),
                                                     settings, args.allow_endpoint) or
                                WorkflowError([])).problems})
    if refused:
        raise BatchError(refused)
    check_writable_folder(args.out)  # after validation: an invalid batch creates nothing

    stop = StopSignal()
    backend: Any = None

    def on_sigint(*_: Any) -> None:
        if backend is None:  # still starting (e.g. joining a Ray cluster): abort as usual
            raise KeyboardInterrupt
        again = stop.requested
        stop.request()
        print("\nkilling the workers" if again else "\nstopping: interrupting running jobs "
              "(Ctrl+C again to kill them)", file=sys.stderr)

    # Once the backend exists Ctrl+C only requests a stop, so the manifest and the workers are
    # never left half-done, up to and including closing the workers.
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        backend = _make_backend(args, settings, max_workers=max(1, len(pending_tasks(tasks, args.out))))
        try:
            where = f"{backend.label} ({backend.size} worker{'s' * (backend.size != 1)})"
            summary = run_batch(tasks, args.out, backend, stop=stop,
                                progress=BatchProgress(enabled=not args.quiet, where=where))
        finally:
            backend.close()
        if not args.quiet or summary.exit_code:
            for line in summary_lines(summary):
                print(line, file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, previous)
    return EXIT_OK if summary.exit_code == 0 else EXIT_FAILED


def check_writable_folder(folder: Path) -> None:
    """Refuse, before anything runs, a batch folder that cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BatchError(f"cannot write to the batch folder {folder}: {exc.strerror or exc}; "
                         "choose another --out") from None


def _make_backend(args: argparse.Namespace, settings: Any, max_workers: int) -> Any:
    if args.executor == "ray":
        from engine.batch.ray_executor import RayPool

        return RayPool(settings, address=args.address, workers=args.workers,
                       gpus_per_job=args.gpus_per_job, retries=args.retries,
                       max_workers=max_workers)
    from engine.batch.local import LocalPool

    return LocalPool(settings, workers=args.workers, gpus_per_job=args.gpus_per_job,
                     retries=args.retries, max_workers=max_workers)

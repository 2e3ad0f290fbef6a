"""Headless command line: `run`, `validate`, `nodes` (and `batch`, when engine.batch provides it).

Exit codes: 0 success; 1 a node failed while running (the message names it) or the run was
interrupted; 2 the workflow is invalid (one line per problem, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from engine.config import load_settings
from engine.context import InterruptFlag
from engine.document import atomic_write_text, load_workflow
from engine.errors import WorkflowError
from engine.events import Event, NodeCached, NodeDone, NodeFailed, NodeProgress, NodeStarted, RunFinished
from engine.overrides import apply_overrides
from engine.validation import validate

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reelgraph", description="Reelgraph headless commands. "
                                     "Run without a command to open the studio.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a workflow and write its outputs and a JSON report")
    run.add_argument("workflow", type=Path)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                     help="override an input value (repeatable)")
    run.add_argument("--out", type=Path, default=None, help="output folder (default: ./output)")
    run.add_argument("--report", type=Path, default=None, help="report file (default: OUT/report.json)")
    run.add_argument("--no-cache", action="store_true", help="execute every node; read and write no cache")
    run.add_argument("--target", action="append", default=None, metavar="NODE",
                     help="run only what this node needs (repeatable; default: every output node)")
    run.add_argument("--node-pack", action="append", default=[], type=Path,
                     help="load user nodes from this folder (code: only folders you trust)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    val = sub.add_parser("validate", help="check workflows without running them")
    val.add_argument("workflows", type=Path, nargs="+")
    val.add_argument("--node-pack", action="append", default=[], type=Path)

    nodes = sub.add_parser("nodes", help="list the node catalogue")
    nodes.add_argument("--json", action="store_true", help="machine-readable catalogue")
    nodes.add_argument("--node-pack", action="append", default=[], type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "validate":
        return cmd_validate(args)
    if args.command == "nodes":
        return cmd_nodes(args)
    return EXIT_INVALID


def _print_problems(exc: WorkflowError) -> None:
    head = f"{exc.source}: " if exc.source else ""
    print(f"{head}invalid workflow ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}):",
          file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.runtime import make_executor

    settings = load_settings()
    settings.node_packs = [*settings.node_packs, *map(str, args.node_pack)]
    out_dir = (args.out or Path(settings.output_dir)).resolve()
    settings.output_dir = str(out_dir)
    executor = make_executor(settings, use_disk_cache=not args.no_cache)
    for error in executor.registry.pack_errors:
        print(f"warning: node pack: {error}", file=sys.stderr)
    try:
        workflow = load_workflow(args.workflow)
        workflow = apply_overrides(workflow, args.overrides, executor.registry)
        executor.plan(workflow, args.target)  # validate before anything runs
    except WorkflowError as exc:
        exc.source = exc.source or str(args.workflow)
        _print_problems(exc)
        return EXIT_INVALID

    interrupt = InterruptFlag()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupt.set())
    bar = _ProgressBar(enabled=not args.quiet)
    try:
        report = executor.run(workflow, targets=args.target, output_dir=out_dir,
                              use_cache=not args.no_cache, on_event=bar.on_event, interrupt=interrupt)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    data = report.to_json()
    data.update({"workflow": str(args.workflow), "overrides": list(args.overrides),
                 "output_dir": str(out_dir)})
    report_path = args.report or out_dir / "report.json"
    atomic_write_text(Path(report_path), json.dumps(data, indent=2) + "\n")
    if report.status == "done":
        n_exec = sum(1 for n in report.nodes.values() if n["status"] == "executed")
        n_cached = sum(1 for n in report.nodes.values() if n["status"] == "cached")
        print(f"done in {report.seconds:.2f} s: {n_exec} executed, {n_cached} cached; "
              f"{len(report.outputs)} output file(s) in {out_dir}", file=sys.stderr)
        for path in report.outputs:
            print(path)
        return EXIT_OK
    err = report.error or {}
    if report.status == "interrupted":
        print(f"interrupted ({err.get('message', '')}); finished nodes stay cached", file=sys.stderr)
    else:
        print(f"error: node {err.get('node_id')!r} ({err.get('node_type')}) failed: "
              f"{err.get('message')}", file=sys.stderr)
    return EXIT_FAILED


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.registry import default_registry

    settings = load_settings()
    registry = default_registry([*settings.node_packs, *map(str, args.node_pack)])
    status = EXIT_OK
    for path in args.workflows:
        try:
            workflow = load_workflow(path)
            problems = validate(workflow, registry)
            if problems:
                raise WorkflowError(problems, source=str(path))
            print(f"{path}: ok ({len(workflow.nodes)} nodes, {len(workflow.links)} links)")
        except WorkflowError as exc:
            exc.source = exc.source or str(path)
            _print_problems(exc)
            status = EXIT_INVALID
    return status


def cmd_nodes(args: argparse.Namespace) -> int:
    from engine.registry import default_registry

    settings = load_settings()
    registry = default_registry([*settings.node_packs, *map(str, args.node_pack)])
    if args.json:
        print(json.dumps(registry.catalogue(), indent=2, default=str))
        return EXIT_OK
    for spec in sorted(registry.specs(), key=lambda s: (s.category, s.name)):
        ins = ", ".join(f"{i.name}:{i.type.value}{'?' if i.optional else ''}" for i in spec.inputs)
        outs = ", ".join(f"{o.name}:{o.type.value}" for o in spec.outputs)
        print(f"{spec.category:<14} {spec.name:<18} ({ins}) -> ({outs})")
        summary = spec.description.strip().splitlines()[0] if spec.description.strip() else ""
        if summary:
            print(f"{'':<14} {summary}")
    return EXIT_OK


class _ProgressBar:
    """A one-line progress bar on stderr fed by run events (tqdm when attached to a terminal)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None
        self.current = ""
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=1000, unit="‰", leave=False, file=sys.stderr,
                            bar_format="{l_bar}{bar}| {elapsed}<{remaining}")

    def on_event(self, event: Event) -> None:
        overall = getattr(event, "overall", None)
        if isinstance(event, (NodeStarted, NodeCached)):
            self.current = f"{event.node_id} ({event.node_type})"
        if isinstance(event, NodeFailed):
            print(f"\nnode {event.node_id!r} ({event.node_type}) failed: {event.message}", file=sys.stderr)
        if self.bar is not None and isinstance(event, (NodeStarted, NodeProgress, NodeDone, NodeCached)):
            self.bar.set_description_str(self.current, refresh=False)
            self.bar.n = int(1000 * (overall or 0.0))
            self.bar.refresh()
        if isinstance(event, RunFinished) and self.bar is not None:
            self.bar.n = 1000 if event.status == "done" else self.bar.n
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

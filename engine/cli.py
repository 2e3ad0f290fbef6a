"""The headless commands — `run`, `validate`, `nodes`, `batch` — on one argparse parser.

main.py adds the studio's own commands to the same parser (`add_commands`); `engine.cli.main`
runs the headless ones alone. Exit codes, for every command: 0 success; 1 a node failed while
running (the message names it), a batch job failed, or the run was interrupted; 2 the input is
invalid (one line per problem, never a traceback) — nothing ran.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from engine.errors import Problem, WorkflowError
from engine.events import Event, LogMessage, NodeCached, NodeDone, NodeFailed, NodeProgress, NodeStarted, RunFinished
from engine.run_api import CachePolicy, LogLevel, RunReport, RunRequest, RunStatus

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def print_problems(exc: WorkflowError, source: str | None = None, what: str = "invalid workflow") -> None:
    """The one way every command reports an invalid input: a head line, then one line each."""
    where = exc.source or source
    head = f"{where}: " if where else ""
    n = len(exc.problems)
    print(f"{head}{what} ({n} problem{'s' if n != 1 else ''}):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)


def add_commands(sub: Any) -> None:
    """Add the headless commands to an argparse subparsers object. Handlers import what they
    need when called, so building the parser (every CLI call) stays cheap."""
    run = sub.add_parser("run", help="run a workflow and write its outputs and a JSON report")
    run.add_argument("workflow", type=Path, help="a workflow file, or the name of a bundled example")
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
    run.add_argument("--allow-endpoint", action="append", default=[], metavar="URL",
                     help="let this run send text to URL, an address the workflow names that is "
                          "not one of your providers (it gets no API key)")
    run.set_defaults(handler=cmd_run)

    val = sub.add_parser("validate", help="check workflows without running them")
    val.add_argument("workflows", type=Path, nargs="+")
    val.add_argument("--node-pack", action="append", default=[], type=Path)
    val.set_defaults(handler=cmd_validate)

    nodes = sub.add_parser("nodes", help="list the node catalogue")
    nodes.add_argument("--json", action="store_true", help="machine-readable catalogue")
    nodes.add_argument("--node-pack", action="append", default=[], type=Path)
    nodes.set_defaults(handler=cmd_nodes)

    imp = sub.add_parser("import", help="turn a ComfyUI workflow (JSON, or a PNG/MP4/WEBM/WEBP "
                         "that carries one) into a Reelgraph workflow and print the import report",
                         description="Import a ComfyUI workflow. Exit 0 when every node mapped, 1 when "
                         "some became placeholders (listed with reasons), 2 when the file is not a "
                         "ComfyUI workflow.")
    imp.add_argument("comfy_file", type=Path, help="ComfyUI UI workflow or API prompt (.json), or an "
                     "output file carrying one (.png, .mp4, .webm, .webp)")
    imp.add_argument("out", type=Path, help="the Reelgraph workflow to write (.json)")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")
    imp.add_argument("--node-pack", action="append", default=[], type=Path)
    imp.set_defaults(handler=cmd_import)

    exp = sub.add_parser("export-comfy", help="write a Reelgraph workflow as a ComfyUI API prompt "
                         "(what ComfyUI's /prompt accepts)",
                         description="Export a Reelgraph workflow as a ComfyUI API prompt. Exit 0 when "
                         "every node mapped, 1 when some were left out (listed), 2 when the workflow "
                         "cannot be read or exported.")
    exp.add_argument("workflow", type=Path, help="a Reelgraph workflow file, or the name of a bundled example")
    exp.add_argument("out", type=Path, help="the API prompt to write (.json)")
    exp.add_argument("--node-pack", action="append", default=[], type=Path)
    exp.set_defaults(handler=cmd_export_comfy)

    batch = sub.add_parser("batch", help="run a workflow once per row of a job matrix (resumable)",
                           description="Run a workflow once per row of a job matrix (prompt x seed "
                           "x parameter); resumable: re-running skips the jobs already done.")
    add_batch_arguments(batch)
    batch.set_defaults(handler=_cmd_batch)


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", type=Path, help="a workflow file, or the name of a bundled example")
    p.add_argument("--matrix", type=Path, help="JSONL or CSV file: one job per row, NODE.INPUT "
                   "keys/columns and an optional id")
    p.add_argument("--grid", action="append", default=[], metavar="NODE.INPUT=V1,V2,...",
                   help="cartesian product axis (repeatable; on top of --matrix when both)")
    p.add_argument("--out", type=Path, required=True,
                   help="batch folder: DIR/<job id>/ per job plus DIR/manifest.jsonl")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes or "
                   "Ray actors (default: one per GPU, or 1 without GPUs)")
    p.add_argument("--address", default=None, help="Ray cluster address ('auto' or host:port); "
                   "default: start a local Ray")
    p.add_argument("--gpus-per-job", type=int, default=1, metavar="G")
    p.add_argument("--retries", type=int, default=2, metavar="R",
                   help="retries of a job whose worker crashed (node errors are not retried)")
    p.add_argument("--no-cache", action="store_true", help="execute every node of every job")
    p.add_argument("--node-pack", action="append", default=[], type=Path,
                   help="load user nodes from this folder (code: only folders you trust)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--allow-endpoint", action="append", default=[], metavar="URL",
                   help="let the jobs send text to URL, an address the workflow names that is not "
                        "one of your providers (it gets no API key)")


def _cmd_batch(args: argparse.Namespace) -> int:
    from engine.batch.cli import cmd_batch

    return cmd_batch(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reelgraph", description="Reelgraph headless commands. "
                                     "Run without a command to open the studio.")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


def load_settings_or_warn() -> Any:
    """The user's settings; problems in the settings file are printed as warnings, never fatal."""
    from engine.config import load_settings

    problems: list[str] = []
    settings = load_settings(problems=problems)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return settings


# ---- run -------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from engine import bundle
    from engine.context import InterruptFlag
    from engine.runtime import make_executor

    settings = load_settings_or_warn()
    settings.node_packs = [*settings.node_packs, *map(str, args.node_pack)]
    out_dir = (args.out or Path(settings.output_dir)).resolve()
    settings.output_dir = str(out_dir)
    try:
        path = bundle.find_workflow(args.workflow)
        workflow = load_any_workflow(path)  # a ComfyUI file is imported on the fly
    except WorkflowError as exc:
        print_problems(exc, str(args.workflow))
        return EXIT_INVALID
    refused = unapproved_endpoints(workflow, settings, args.allow_endpoint)
    if refused:
        print_problems(refused, str(path), "needs your approval")
        return EXIT_INVALID
    executor = make_executor(settings, use_disk_cache=not args.no_cache)
    for error in executor.registry.pack_errors:
        print(f"warning: node pack: {error}", file=sys.stderr)
    request = RunRequest(workflow, tuple(args.target) if args.target else None,
                         tuple(args.overrides), CachePolicy.OFF if args.no_cache else CachePolicy.USE,
                         str(out_dir), source=str(path),
                         approved_endpoints=tuple(args.allow_endpoint))
    interrupt = InterruptFlag()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupt.set())
    bar = _ProgressBar(enabled=not args.quiet)
    try:
        report = executor.run(request, on_event=bar.on_event, interrupt=interrupt)
    except WorkflowError as exc:
        print_problems(exc, str(path))
        return EXIT_INVALID
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    context = dict(workflow=str(path), overrides=list(args.overrides), output_dir=str(out_dir))
    if args.report:
        targets = [args.report]
    else:  # one file per run, so runs sharing a folder never lose each other's report
        targets = [out_dir / "reports" / f"{time.strftime('%Y%m%d-%H%M%S')}-{report.run_id}.json",
                   out_dir / "report.json"]  # and the latest run's, where scripts look for it
    for target in targets:
        try:
            write_report(report, target, **context)
        except OSError as exc:  # the run itself is done; its outputs are on disk
            print(f"warning: could not write the report {target}: {exc.strerror or exc}",
                  file=sys.stderr)
            break
    return finish_message(report, out_dir)


def unapproved_endpoints(workflow: Any, settings: Any, approved: list[str]) -> WorkflowError | None:
    """A WorkflowError listing the addresses the workflow names that the user has neither
    configured as providers nor approved with --allow-endpoint, or None."""
    from engine.errors import Problem
    from engine.providers import endpoints_needing_approval

    urls = endpoints_needing_approval(workflow, settings.to_json(), approved)
    if not urls:
        return None
    return WorkflowError([Problem("endpoint", f"the workflow sends text to {url}, which is not one "
                                  f"of your providers; to allow it, add --allow-endpoint {url} "
                                  "(no API key is sent) or add it as a provider in your settings")
                          for url in urls])


def write_report(report: RunReport, path: Path, **context: Any) -> None:
    from engine.atomic_files import atomic_write_text

    data = report.to_json()
    data.update(context)
    atomic_write_text(Path(path), json.dumps(data, indent=2, ensure_ascii=True) + "\n")


def finish_message(report: RunReport, out_dir: Path) -> int:
    """Print how the run ended; returns the exit code."""
    if report.status is RunStatus.DONE:
        print(f"{report.summary()}; {len(report.outputs)} output file(s) in {out_dir}", file=sys.stderr)
        for path in report.outputs:
            print(path)
        return EXIT_OK
    if report.status is RunStatus.INTERRUPTED:
        print(f"interrupted ({report.error}); finished nodes stay cached", file=sys.stderr)
    else:
        print(f"error: {report.error}", file=sys.stderr)
    return EXIT_FAILED


# ---- ComfyUI import -----------------------------------------------------------------------------

def cmd_import(args: argparse.Namespace) -> int:
    from engine.comfy import ComfyImportError, import_comfy_file
    from engine.models.paths import model_paths_for
    from engine.registry import default_registry

    settings = load_settings_or_warn()
    registry = default_registry([*settings.node_packs, *map(str, args.node_pack)])
    try:
        result = import_comfy_file(args.comfy_file, registry,
                                   model_paths_for(settings))
    except ComfyImportError as exc:
        _print_comfy_error(exc, str(args.comfy_file))
        return EXIT_INVALID
    try:
        result.workflow.save(args.out)
    except OSError as exc:
        print(f"{args.out}: cannot write the workflow: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(result.report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(result.report.to_text())
        print(f"wrote {args.out}")
    return result.exit_code


def cmd_export_comfy(args: argparse.Namespace) -> int:
    from engine import bundle
    from engine.atomic_files import atomic_write_text
    from engine.comfy.export import ComfyExportError, export_comfy
    from engine.document import load_workflow
    from engine.registry import default_registry

    settings = load_settings_or_warn()
    registry = default_registry([*settings.node_packs, *map(str, args.node_pack)])
    try:
        workflow = load_workflow(bundle.find_workflow(args.workflow))
        result = export_comfy(workflow, registry)
    except WorkflowError as exc:
        print_problems(exc, str(args.workflow))
        return EXIT_INVALID
    except ComfyExportError as exc:
        print(f"{args.workflow}: cannot export to ComfyUI ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_INVALID
    try:
        atomic_write_text(args.out, json.dumps(result.prompt, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        print(f"{args.out}: cannot write the prompt: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.workflow}: {result.report.summary_line()}")
    for line in result.report.lines():
        print(f"  {line}")
    print(f"wrote {args.out}")
    return result.exit_code


def _print_comfy_error(exc: Any, source: str) -> None:
    n = len(exc.problems)
    print(f"{exc.source or source}: not an importable ComfyUI workflow "
          f"({n} problem{'s' if n != 1 else ''}):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)


def load_any_workflow(path: Path, registry: Any = None) -> Any:
    """A Reelgraph workflow file, or a ComfyUI one imported in memory (its report on stderr).
    Raises WorkflowError either way, naming the file."""
    from engine.document import load_workflow

    try:
        return load_workflow(path)
    except WorkflowError as exc:
        original = exc
    if not _maybe_comfy(path, original):
        raise original
    from engine.comfy import ComfyImportError, import_comfy_file
    from engine.models.paths import model_paths_for

    try:
        settings = load_settings_or_warn()
        result = import_comfy_file(path, registry, model_paths_for(settings))
    except ComfyImportError as exc:
        if exc.problems[0].startswith(("not a ComfyUI workflow", "already a Reelgraph")):
            raise original from None
        # a ComfyUI file too damaged to import: its problems, one line each
        raise WorkflowError([Problem("comfy_import", p) for p in exc.problems], source=str(path)) from None
    print(result.report.to_text(), file=sys.stderr)
    return result.workflow


def _maybe_comfy(path: Path, exc: WorkflowError) -> bool:
    """Whether a file that failed to load as a Reelgraph workflow is worth trying as ComfyUI's:
    media files, and JSON whose "format" is missing."""
    if path.suffix.lower() in (".png", ".mp4", ".webm", ".webp", ".mkv", ".mov"):
        return True
    return any('"format" must be' in str(p) for p in exc.problems)


# ---- validate and nodes ------------------------------------------------------------------------

def cmd_validate(args: argparse.Namespace) -> int:
    from engine import bundle
    from engine.registry import default_registry
    from engine.validation import validate

    settings = load_settings_or_warn()
    registry = default_registry([*settings.node_packs, *map(str, args.node_pack)])
    status = EXIT_OK
    for given in args.workflows:
        try:
            path = bundle.find_workflow(given)
            workflow = load_any_workflow(path, registry)  # ComfyUI files imported on the fly
            problems = validate(workflow, registry)
            if problems:
                raise WorkflowError(problems, source=str(path))
            print(f"{path}: ok ({len(workflow.nodes)} nodes, {len(workflow.links)} links)")
        except WorkflowError as exc:
            print_problems(exc, str(given))
            status = EXIT_INVALID
    return status


def cmd_nodes(args: argparse.Namespace) -> int:
    from engine.registry import default_registry

    settings = load_settings_or_warn()
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
    """A one-line progress bar on stderr fed by run events (tqdm when attached to a terminal);
    node failures and warnings are printed as they happen, whether or not the bar shows."""

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
            self.write(f"node {event.node_id!r} ({event.node_type}) failed: {event.message}")
        if isinstance(event, LogMessage) and event.level in (LogLevel.WARNING, LogLevel.ERROR):
            where = f"node {event.node_id!r}: " if event.node_id else ""
            self.write(f"{event.level.value}: {where}{event.message}")
        if self.bar is not None and isinstance(event, (NodeStarted, NodeProgress, NodeDone, NodeCached)):
            self.bar.set_description_str(self.current, refresh=False)
            self.bar.n = int(1000 * (overall or 0.0))
            self.bar.refresh()
        if isinstance(event, RunFinished) and self.bar is not None:
            self.bar.n = 1000 if event.status is RunStatus.DONE else self.bar.n
            self.bar.refresh()

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

"""Reelgraph's one entry point, with one command-line parser.

    python main.py                          open the studio (workflows/text_to_video.json)
    python main.py studio [WORKFLOW]        the same, opening WORKFLOW
    python main.py run WORKFLOW [...]       run a graph headless, write outputs + a JSON report
    python main.py batch WORKFLOW [...]     run a prompt x seed x parameter matrix
    python main.py validate WORKFLOW...     check graphs without running them
    python main.py nodes [--json]           the node catalogue
    python main.py export-image WF OUT.png  render a graph's canvas to a PNG (no display needed)

WORKFLOW is a file, or the name of a bundled example (`text_to_video`). Exit codes: 0 success,
1 a node or job failed or the run was stopped, 2 invalid input (nothing ran).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from engine.cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, add_commands, print_problems


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="reelgraph", description=__doc__.split("\n\n")[0],
                                     epilog="Without a command, the studio opens.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    studio = sub.add_parser("studio", help="open the studio (the default)")
    studio.add_argument("workflow", nargs="?", help="workflow file to open")
    studio.add_argument("--no-worker-prestart", action="store_true",
                        help="start the worker process on the first run instead of at launch")
    studio.set_defaults(handler=cmd_studio)
    add_commands(sub)
    export = sub.add_parser("export-image", help="render a workflow's canvas to a PNG")
    export.add_argument("workflow", type=Path)
    export.add_argument("out_png", type=Path)
    export.set_defaults(handler=cmd_export_image)
    return parser, sub


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser, sub = _build()
    if not args or (args[0] not in sub.choices and args[0] not in ("-h", "--help")):
        args = ["studio", *args]  # `main.py` and `main.py WF.json` open the studio
    ns = parser.parse_args(args)
    return ns.handler(ns)


def cmd_studio(args: argparse.Namespace) -> int:
    from app.main import run_studio

    return run_studio(args.workflow, prestart_worker=not args.no_worker_prestart)


def cmd_export_image(args: argparse.Namespace) -> int:
    from engine.errors import WorkflowError

    try:
        from app.export import export_image

        export_image(args.workflow, args.out_png)
    except WorkflowError as exc:
        print_problems(exc, str(args.workflow))
        return EXIT_INVALID
    except OSError as exc:
        print(f"export-image: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {args.out_png}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

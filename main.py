"""Reelgraph's one entry point.

    python main.py                          open the studio (workflows/text_to_video.json)
    python main.py run WORKFLOW [...]       run a graph headless, write outputs + a JSON report
    python main.py batch WORKFLOW [...]     run a prompt x seed x parameter matrix
    python main.py validate WORKFLOW...     check graphs without running them
    python main.py nodes [--json]           the node catalogue
    python main.py export-image WF OUT.png  render a graph's canvas to a PNG (no display needed)
"""

from __future__ import annotations

import sys
from typing import Sequence

HEADLESS = {"run", "validate", "nodes"}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in HEADLESS:
        from engine.cli import main as cli_main

        return cli_main(args)
    if args and args[0] == "batch":
        from engine.batch.cli import main as batch_main

        return batch_main(args[1:])
    if args and args[0] == "export-image":
        from app.export import main as export_main

        return export_main(args[1:])
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    from app.main import run_studio

    return run_studio(args)


if __name__ == "__main__":
    sys.exit(main())

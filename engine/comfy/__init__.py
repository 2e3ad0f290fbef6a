"""ComfyUI import: UI workflows (0.4 / 1.0, subgraphs), API prompts and the copies embedded in
ComfyUI's PNG / video / WEBP outputs become a Reelgraph workflow plus an import report.

    result = import_comfy_file("wan_t2v.json", registry, model_paths)
    result.workflow.save("wan_t2v.reelgraph.json"); print(result.report.to_text())

Modules: formats (finding the JSON in a file), widgets (positional widget values by name),
graph (UI / API JSON -> one flat graph), mapping (node mapping and graph rewrites), report.
Import-light: no torch; Pillow and PyAV load only for WEBP and video files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.comfy.errors import ComfyImportError
from engine.comfy.report import ImportReport

__all__ = ["ComfyImportError", "ImportReport", "ImportResult", "import_comfy_data",
           "import_comfy_file", "looks_like_comfy_file"]


@dataclass
class ImportResult:
    workflow: Any  # engine.document.Workflow
    report: ImportReport

    @property
    def exit_code(self) -> int:
        """0 when every node mapped, 1 when some became placeholders (the CLI's codes)."""
        return 1 if self.report.placeholders else 0


def import_comfy_file(path: str | Path, registry: Any = None, model_paths: Any = None) -> ImportResult:
    """Import the ComfyUI workflow in `path`. Raises only ComfyImportError."""
    from engine.comfy.formats import read_comfy_file

    found = read_comfy_file(path)
    return import_comfy_data(found.data, registry, model_paths, source=str(path), origin=found.origin)


def import_comfy_data(data: Any, registry: Any = None, model_paths: Any = None, *,
                      source: str = "<workflow>", origin: str = "json") -> ImportResult:
    """Import parsed ComfyUI JSON (a UI workflow or an API prompt). Raises only ComfyImportError."""
    from engine import safe_json
    from engine.comfy.formats import detect
    from engine.comfy.graph import parse_api, parse_ui
    from engine.comfy.mapping import Mapper
    from engine.document import workflow_from_json
    from engine.errors import WorkflowError

    if registry is None:
        from engine.registry import default_registry

        registry = default_registry()
    try:
        safe_json.check_depth(data)
    except safe_json.JsonFileError as exc:
        raise ComfyImportError(str(exc), source) from None
    found = detect(data, source, origin)
    report = ImportReport(source=source, origin=origin)
    try:
        graph = parse_ui(found.data, source) if found.kind == "ui" else parse_api(found.data, source)
        report.format = f"UI {graph.version}" if graph.kind == "ui" else "API prompt"
        workflow = Mapper(graph, registry, report, model_paths).run()
    except ComfyImportError:
        raise
    except RecursionError:
        raise ComfyImportError("the workflow is nested too deeply", source) from None
    except Exception as exc:  # defensive: a hostile file never surfaces as a traceback
        raise ComfyImportError(f"malformed ComfyUI workflow ({type(exc).__name__}: {exc})", source) from None
    loop = _loop(workflow)
    if loop:  # ComfyUI refuses these too; a Reelgraph graph must be acyclic
        raise ComfyImportError(f"link loop through ComfyUI nodes {', '.join(loop[:10])}"
                               f"{' ...' if len(loop) > 10 else ''}", source)
    workflow.meta["title"] = Path(source).stem if source else "Imported from ComfyUI"
    workflow.meta["comfy_import"] = {"source": Path(source).name, "origin": origin,
                                     "format": report.format,
                                     "placeholders": len(report.placeholders),
                                     "warnings": len(report.warnings)}
    try:  # what we built must load like any saved workflow
        workflow = workflow_from_json(workflow.to_json(), source=source, copy_data=False)
    except WorkflowError as exc:
        raise ComfyImportError([str(p) for p in exc.problems], source) from None
    return ImportResult(workflow, report)


def _loop(workflow: Any) -> list[str]:
    """The ComfyUI ids of the nodes on or behind a link loop (a topological sort leaves them), or []."""
    from engine.graph_index import GraphIndex

    stuck = GraphIndex(workflow).topological_order(set(workflow.nodes))[1]
    ids = []
    for nid in stuck:
        comfy = workflow.nodes[nid].extra.get("comfy")
        ids.append(str(comfy.get("id")) if isinstance(comfy, dict) and comfy.get("id") else nid)
    return sorted(set(ids))


def looks_like_comfy_file(path: str | Path) -> bool:
    """Whether `path` is (or embeds) a ComfyUI workflow rather than a Reelgraph one: a cheap
    check for `run` / `validate`, which accept both."""
    from engine.comfy.formats import read_comfy_file

    try:
        read_comfy_file(path)
    except ComfyImportError:
        return False
    return True

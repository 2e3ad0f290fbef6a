"""Where the files that ship with Reelgraph live: the bundled demo model (resources/models), the
sample media (resources/samples) and the example workflows (workflows/).

Two layouts, one answer:
- a source checkout (also an editable install): resources/ and workflows/ sit next to the
  engine/ package, at the repository root;
- an installed wheel: pyproject.toml ships them as the data package `reelgraph_data`
  (site-packages/reelgraph_data/resources/ and .../workflows/, no Python code inside).

Invariants:
- A checkout wins over an installed data package, so `python main.py` in a checkout always reads
  that checkout's files even when a Reelgraph wheel is installed in the same environment.
- `resources_dir()` and `workflows_dir()` always share one parent, `data_root()`; a path written
  relative to it in a workflow ("resources/samples/x.png") resolves the same in both layouts.
- Nothing here raises when the files are missing: the folders are returned as they would be, and
  the callers that need a file (`bundled_workflow`, the model lookup) report what is missing.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import engine
from engine.errors import Problem, WorkflowError

DATA_PACKAGE = "reelgraph_data"  # the wheel's name for the repository's resources/ + workflows/
DEFAULT_WORKFLOW_NAME = "text_to_video"  # what the studio opens on first launch


def code_root() -> Path:
    """The folder that holds the `engine` package (a checkout root or a site-packages folder):
    what a fresh Python process needs on sys.path to import this Reelgraph."""
    return Path(engine.__file__).resolve().parent.parent


@cache
def data_root() -> Path:
    """The folder that holds resources/ and workflows/: the checkout root when the engine runs from
    a checkout, else the installed `reelgraph_data` package, else (nothing found) the checkout
    layout, so error messages name the folder a developer would expect."""
    checkout = code_root()
    if (checkout / "pyproject.toml").is_file() and (checkout / "resources").is_dir():
        return checkout
    installed = _installed_data_root()
    return installed if installed is not None else checkout


def _installed_data_root() -> Path | None:
    """site-packages/reelgraph_data from a wheel, or None when that package is not installed."""
    try:
        spec = importlib.util.find_spec(f"{DATA_PACKAGE}.resources")
    except ModuleNotFoundError:  # no reelgraph_data at all
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    # A namespace package (it has no __init__.py): its one folder is the shipped resources/.
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


def resources_dir() -> Path:
    """resources/: the bundled model (models/), its card and the sample media (samples/)."""
    return data_root() / "resources"


def bundled_models_dir() -> Path:
    """The model root bundled with the app (ComfyUI layout: diffusion_models/, vae/, ...)."""
    return resources_dir() / "models"


def workflows_dir() -> Path:
    """workflows/: the example graphs."""
    return data_root() / "workflows"


def bundled_workflow_names() -> list[str]:
    """Names of the example workflows (file names without .json), sorted."""
    folder = workflows_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def bundled_workflow(name: str) -> Path:
    """The example workflow called `name` ("text_to_video" or "text_to_video.json").
    Raises WorkflowError naming the examples there are when none is called that."""
    stem = name.strip().removesuffix(".json")
    path = workflows_dir() / f"{stem}.json"
    if stem and "/" not in stem and "\\" not in stem and path.is_file():
        return path
    names = ", ".join(bundled_workflow_names()) or f"none found in {workflows_dir()}"
    raise WorkflowError(Problem("unknown_workflow",
                                f"no bundled example workflow named {name!r}; the examples are: {names}"))


def default_workflow() -> Path:
    """The demo graph the studio opens when nothing else is asked for (it may be missing)."""
    return workflows_dir() / f"{DEFAULT_WORKFLOW_NAME}.json"


def find_workflow(value: str | Path) -> Path:
    """What a command-line workflow argument names: an existing file as it is, else a bundled
    example by name. Raises WorkflowError saying both were tried."""
    path = Path(value).expanduser()
    if path.exists():
        return path  # a file, or something else the loader will say it cannot read
    try:
        return bundled_workflow(str(value))
    except WorkflowError as exc:
        raise WorkflowError(Problem(
            "unknown_workflow", f"no workflow file {str(value)!r}, and {exc.problems[0].message}"),
            source=str(value)) from None

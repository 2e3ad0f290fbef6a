"""Packaging: engine.bundle in this checkout, and a non-editable wheel that works on its own.

The wheel tests build `pip wheel` from a copy of the work tree, install it with --no-deps into a
fresh venv outside the checkout, and run the installed `reelgraph` console script on the bundled
default workflow from a folder outside the checkout. The fresh venv borrows this venv's
dependencies through a .pth file that names this venv's site-packages as a plain path: Python
adds such a line to sys.path without running that folder's own .pth files, so the editable-install
finder that maps `engine` to this checkout stays inactive there. About 20 s in all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from engine import bundle
from engine.errors import WorkflowError

ROOT = Path(__file__).resolve().parents[1]
# What the wheel is built from (README.md: pyproject's readme); everything else stays behind.
SOURCES = ("pyproject.toml", "README.md", "main.py", "engine", "nodes", "app", "resources", "workflows")
CODE_PACKAGES = ("engine", "nodes", "app")
DATA_FOLDERS = ("resources", "workflows")
DIT = "reelgraph-tiny_dit.safetensors"


# --- engine.bundle in the checkout ---------------------------------------------------------------

def test_bundle_in_checkout_is_the_repository_root():
    assert bundle.data_root() == ROOT
    assert bundle.code_root() == ROOT
    assert bundle.resources_dir() == ROOT / "resources"
    assert bundle.workflows_dir() == ROOT / "workflows"
    assert (bundle.bundled_models_dir() / "diffusion_models" / DIT).is_file()
    assert bundle.default_workflow() == ROOT / "workflows" / "text_to_video.json"


def test_bundled_workflow_by_name_with_or_without_suffix():
    assert bundle.bundled_workflow("text_to_video") == ROOT / "workflows" / "text_to_video.json"
    assert bundle.bundled_workflow("gradient_blend.json") == ROOT / "workflows" / "gradient_blend.json"
    assert "text_to_video" in bundle.bundled_workflow_names()


@pytest.mark.parametrize("name", ["no_such_example", "", "../pyproject", "models/x"])
def test_unknown_bundled_workflow_lists_the_examples(name):
    with pytest.raises(WorkflowError, match="the examples are: .*text_to_video"):
        bundle.bundled_workflow(name)


def test_find_workflow_prefers_an_existing_file_then_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text_to_video").write_text("{}")  # a local file shadows the example's name
    assert bundle.find_workflow("text_to_video") == Path("text_to_video")
    assert bundle.find_workflow("interpolate") == ROOT / "workflows" / "interpolate.json"
    with pytest.raises(WorkflowError, match="no workflow file 'missing.json', and no bundled example"):
        bundle.find_workflow("missing.json")


# --- the wheel ------------------------------------------------------------------------------------

def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built offline from a copy of the work tree (the checkout itself is not touched:
    setuptools would write build/ and the egg-info into it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(tmp / "dist")])
    (found,) = (tmp / "dist").glob("reelgraph-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with the wheel installed; returns its python."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    # Install before the .pth exists, so pip sees no other reelgraph (this venv's editable one).
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "-q", str(wheel)])
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        env=_clean_env(venv.parent)).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (purelib / "reelgraph_borrowed_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    return python


def _clean_env(tmp: Path) -> dict[str, str]:
    """This environment less anything that points at the checkout or at the test session's own
    Reelgraph folders; HOME and the cache inside `tmp`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REELGRAPH_", "XDG_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(tmp / "home"), REELGRAPH_CACHE_DIR=str(tmp / "cache"), HF_HUB_OFFLINE="1")
    return env


def test_wheel_ships_every_code_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"main.py"}
    for package in CODE_PACKAGES:
        expected |= {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")}
    for folder in DATA_FOLDERS:
        expected |= {f"{bundle.DATA_PACKAGE}/{p.relative_to(ROOT).as_posix()}"
                     for p in (ROOT / folder).rglob("*") if p.is_file()}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    # No generic top-level names in site-packages: the data lives under reelgraph_data/ only.
    assert not {n for n in names if n.split("/")[0] in DATA_FOLDERS}
    assert not {n for n in names if "__pycache__" in n}


PROBE = """
import json, sys, sysconfig, tempfile
import engine
from engine import bundle
from engine.batch import ray_executor
from engine.input_files import locate_input_file
from engine.models.paths import default_model_paths
paths = default_model_paths()
print(json.dumps({
    "purelib": sysconfig.get_paths()["purelib"],
    "engine": engine.__file__,
    "code_root": str(bundle.code_root()),
    "ray_pythonpath": ray_executor._PROJECT_ROOT,
    "data_root": str(bundle.data_root()),
    "default_workflow": str(bundle.default_workflow()),
    "examples": bundle.bundled_workflow_names(),
    "dit_names": paths.list("diffusion_models"),
    "dit": str(paths.resolve("diffusion_models", "%s")),
    "sample": str(locate_input_file("resources/samples/yellow_triangle.png", tempfile.gettempdir())),
}))
""" % DIT


def test_installed_bundle_finds_the_model_and_workflows_in_site_packages(installed, tmp_path):
    env = _clean_env(tmp_path)
    found = json.loads(_run([str(installed), "-c", PROBE], cwd=tmp_path, env=env).stdout)
    site = Path(found["purelib"])
    assert Path(found["engine"]) == site / "engine" / "__init__.py", "engine came from the checkout"
    assert Path(found["code_root"]) == site == Path(found["ray_pythonpath"])
    assert Path(found["data_root"]) == site / bundle.DATA_PACKAGE
    assert Path(found["default_workflow"]).is_file()
    assert Path(found["default_workflow"]).is_relative_to(site)
    assert set(found["examples"]) == {p.stem for p in (ROOT / "workflows").glob("*.json")}
    assert DIT in found["dit_names"]
    assert Path(found["dit"]) == site / bundle.DATA_PACKAGE / "resources/models/diffusion_models" / DIT
    assert Path(found["sample"]) == site / bundle.DATA_PACKAGE / "resources/samples/yellow_triangle.png"


def test_installed_console_script_runs_the_default_workflow_outside_the_checkout(installed, tmp_path):
    env = _clean_env(tmp_path)
    cwd = tmp_path / "work"
    cwd.mkdir()
    default = _run([str(installed), "-c", "from engine import bundle; print(bundle.default_workflow())"],
                   cwd=cwd, env=env).stdout.strip()
    assert not Path(default).is_relative_to(ROOT)
    out = tmp_path / "out"
    _run([str(installed.parent / "reelgraph"), "run", default, "--out", str(out), "--no-cache",
          "--quiet"], cwd=cwd, env=env)
    videos = list(out.glob("*.mp4"))
    assert videos and all(v.stat().st_size > 0 for v in videos)

"""Every example workflow that ships in workflows/ validates and runs end to end.

Workflows built for real checkpoints (Wan 14B, LoRAs, CLIP vision) name them by ComfyUI's file
names. Those cannot ship, so the test writes a tiny random checkpoint in the real key layout under
each such name into a temporary model root first: every `tests/tiny_*.py` module may export
`WORKFLOW_MODELS`, a dict "kind/file name" -> writer(path) (see tests/tiny_models.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from engine.document import load_workflow
from engine.validation import validate

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))


def workflow_model_writers() -> dict:
    writers: dict = {}
    for module_path in sorted(Path(__file__).parent.glob("tiny_*.py")):
        module = importlib.import_module(f"tests.{module_path.stem}")
        writers.update(getattr(module, "WORKFLOW_MODELS", {}))
    return writers


def model_files(workflow, registry) -> list[tuple[str, str]]:
    """(kind, name) of every model file input of `workflow` that is set (media inputs, file_kind
    "input", are the user's files, not models)."""
    found = []
    for node in workflow.nodes.values():
        node_type = registry.get(node.type)
        if node_type is None:
            continue
        for spec in node_type.spec.inputs:
            value = node.inputs.get(spec.name)
            if spec.file_kind and spec.file_kind != "input" and isinstance(value, str) and value:
                found.append((spec.file_kind, value))
    return found


def write_tiny_models(workflow, registry, root: Path) -> None:
    """Every model file `workflow` names, written as a tiny checkpoint under `root`/kind/name."""
    writers = workflow_model_writers()
    for kind, name in model_files(workflow, registry):
        target = root / kind / name
        target.parent.mkdir(parents=True, exist_ok=True)
        writers[f"{kind}/{name}"](target)


def test_there_are_example_workflows():
    assert any(p.name == "gradient_blend.json" for p in WORKFLOWS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_example_workflow_validates_and_runs(path, registry, executor, tmp_path):
    from engine.models.paths import ModelPaths

    workflow = load_workflow(path)
    assert validate(workflow, registry) == []
    writers = workflow_model_writers()
    tiny_root = tmp_path / "models"
    for kind, name in model_files(workflow, registry):
        try:
            executor.model_paths.resolve(kind, name)
        except Exception:
            writer = writers.get(f"{kind}/{name}")
            assert writer is not None, (f"{path.name} needs {kind}/{name}; add a tiny writer for "
                                        "it to a tests/tiny_*.py WORKFLOW_MODELS")
            target = tiny_root / kind / name
            target.parent.mkdir(parents=True, exist_ok=True)
            writer(target)
    if tiny_root.exists():
        executor.model_paths = ModelPaths([tiny_root, *executor.model_paths.roots])
    report = executor.run(workflow, output_dir=tmp_path / "out")
    assert report.status == "done", report.error
    assert report.outputs, "an example workflow should write at least one output"
    for output in report.outputs:
        assert Path(output).is_file() and Path(output).stat().st_size > 0
        assert tmp_path / "out" in Path(output).parents

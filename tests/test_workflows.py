"""Every example workflow that ships in workflows/ validates and runs end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.document import load_workflow
from engine.validation import validate

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))


def test_there_are_example_workflows():
    assert any(p.name == "gradient_blend.json" for p in WORKFLOWS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_example_workflow_validates_and_runs(path, registry, executor, tmp_path):
    workflow = load_workflow(path)
    assert validate(workflow, registry) == []
    report = executor.run(workflow, output_dir=tmp_path / "out")
    assert report.status == "done", report.error
    assert report.outputs, "an example workflow should write at least one output"
    for output in report.outputs:
        assert Path(output).is_file() and Path(output).stat().st_size > 0
        assert tmp_path / "out" in Path(output).parents

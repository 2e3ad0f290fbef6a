"""The headless CLI as users and later issues call it: exit codes, reports, overrides, catalogue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
GRADIENT = ROOT / "workflows" / "gradient_blend.json"


def cli(*args, tmp_path, cache="cache"):
    env = dict(os.environ, REELGRAPH_CACHE_DIR=str(tmp_path / cache))
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_run_writes_outputs_and_a_report_then_reuses_the_disk_cache(tmp_path):
    out = tmp_path / "out"
    first = cli("run", GRADIENT, "--out", out, "--report", tmp_path / "r1.json", tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads((tmp_path / "r1.json").read_text())
    assert report["status"] == "done"
    assert {n["status"] for n in report["nodes"].values()} == {"executed"}
    assert all(isinstance(n["seconds"], float) for n in report["nodes"].values())
    png = Path(report["outputs"][0])
    assert png.parent == out and png.exists()
    pixels = np.asarray(Image.open(png))
    assert pixels.shape == (144, 256, 3)
    assert pixels[72, 128].sum() > pixels[0, 0].sum()  # vignette: brighter centre than corner
    # a new process, only the blend factor changed: upstream gradients come from the disk tier
    second = cli("run", GRADIENT, "--out", out, "--set", "blend.factor=0.2", "--report",
                 tmp_path / "r2.json", tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr
    nodes = json.loads((tmp_path / "r2.json").read_text())["nodes"]
    assert nodes["blend"]["status"] == "executed" and nodes["save"]["status"] == "executed"
    assert nodes["sky"]["status"] == "cached" and nodes["vignette"]["status"] == "cached"


def test_no_cache_executes_everything(tmp_path):
    cli("run", GRADIENT, "--out", tmp_path / "o", tmp_path=tmp_path)
    again = cli("run", GRADIENT, "--out", tmp_path / "o", "--no-cache", "--report", tmp_path / "r.json",
                tmp_path=tmp_path)
    assert again.returncode == 0
    nodes = json.loads((tmp_path / "r.json").read_text())["nodes"]
    assert {n["status"] for n in nodes.values()} == {"executed"}


def test_invalid_workflow_exits_2_with_one_line_per_problem(tmp_path):
    result = cli("run", GRADIENT, "--set", "sky.width=-5", "--set", "blend.mode=glow",
                 "--set", "nobody.x=1", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    problem_lines = [l for l in result.stderr.splitlines() if l.startswith("  - ")]
    assert len(problem_lines) == 1 and "nobody" in problem_lines[0]  # override errors come first
    result = cli("run", GRADIENT, "--set", "sky.width=-5", "--set", "blend.mode=glow", tmp_path=tmp_path)
    lines = [l for l in result.stderr.splitlines() if l.startswith("  - ")]
    assert result.returncode == 2 and len(lines) == 2
    assert any("'sky' (ImageGradient), input 'width'" in l for l in lines)
    assert any("'blend' (ImageBlend), input 'mode'" in l for l in lines)


def test_failure_while_running_exits_1_and_names_the_node(tmp_path):
    wf = json.loads(GRADIENT.read_text())
    wf["nodes"]["sky"]["inputs"]["color_a"] = "not-a-colour"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(wf))
    result = cli("run", path, "--out", tmp_path / "o", "--report", tmp_path / "r.json", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "'sky' (ImageGradient)" in result.stderr and "color_a" in result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "failed" and report["error"]["node_id"] == "sky"


def test_validate_and_catalogue(tmp_path):
    ok = cli("validate", GRADIENT, tmp_path=tmp_path)
    assert ok.returncode == 0 and "ok (4 nodes, 3 links)" in ok.stdout
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "reelgraph.workflow", "version": 2, "nodes": {"x": {"type": "Nope"}}}')
    bad = cli("validate", GRADIENT, broken, tmp_path=tmp_path)
    assert bad.returncode == 2 and "unknown node type 'Nope'" in bad.stderr
    catalogue = cli("nodes", "--json", tmp_path=tmp_path)
    assert catalogue.returncode == 0
    entries = {n["name"]: n for n in json.loads(catalogue.stdout)}
    blend = entries["ImageBlend"]
    assert blend["category"] == "image" and blend["description"]
    factor = next(i for i in blend["inputs"] if i["name"] == "factor")
    assert factor == {"name": "factor", "type": "FLOAT", "default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}
    assert blend["outputs"] == [{"name": "image", "type": "IMAGE"}]

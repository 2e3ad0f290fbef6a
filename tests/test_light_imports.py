"""Listing and validating nodes stays light: torch and the other heavy libraries load only when a
node that needs them runs (`validate` took 2.1 s, 1.7 s of it importing torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "diffusers", "transformers", "cv2", "av", "PIL", "safetensors",
         "sentencepiece", "accelerate")

# Runs in a fresh interpreter: this test process has torch loaded already (conftest).
PROBE = f"""
import contextlib, io, json, sys
from engine.registry import default_registry
import engine.cli

registry = default_registry()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    validate_rc = engine.cli.main(["validate", "workflows/text_to_video.json"])
    nodes_rc = engine.cli.main(["nodes", "--json"])
print(json.dumps({{
    "nodes": len(registry.names()), "pack_errors": registry.pack_errors,
    "validate_rc": validate_rc, "nodes_rc": nodes_rc,
    "heavy": [m for m in {HEAVY!r} if m in sys.modules],
}}))
"""


def test_registry_validate_and_nodes_import_no_heavy_library():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["pack_errors"] == []  # a node module that failed to import would hide its cost
    assert result["nodes"] > 20
    assert result["validate_rc"] == 0 and result["nodes_rc"] == 0
    assert result["heavy"] == []


def test_heavy_modules_re_export_the_light_constants():
    from engine import choices, conditioning, dtypes, interpolation, media, sampling
    from engine.media import codec
    from engine.models import text_encoders

    assert dtypes.DTYPE_CHOICES is choices.DTYPE_CHOICES
    assert text_encoders.DTYPE_CHOICES is choices.TEXT_ENCODER_DTYPE_CHOICES
    assert sampling.SAMPLERS is choices.SAMPLERS
    assert conditioning.MODES is choices.CONDITIONING_MODES
    assert codec.VIDEO_FORMATS is media.VIDEO_FORMATS
    assert media.write_video is codec.write_video  # lazy package attributes resolve
    assert interpolation.load_rife.__module__ == "engine.interpolation.rife"

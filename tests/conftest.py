"""Test-wide setup: offscreen Qt, no hub access, and every cache/config/output folder inside a
temporary directory so tests never touch the user's real Reelgraph folders."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Must happen before anything creates a QApplication or imports transformers.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# dtype "auto" computes in bf16 on CPUs with fast bf16 (engine.dtypes.cpu_fast_bf16); tests pin it
# off so results do not depend on the machine (tests of the choice itself pass it explicitly).
os.environ["REELGRAPH_CPU_BF16"] = "0"
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="reelgraph-tests-"))
os.environ["REELGRAPH_CONFIG"] = str(_SESSION_TMP / "config.json")
os.environ["REELGRAPH_CACHE_DIR"] = str(_SESSION_TMP / "cache")
os.environ["XDG_DATA_HOME"] = str(_SESSION_TMP / "data")
os.environ["XDG_STATE_HOME"] = str(_SESSION_TMP / "state")
os.environ["XDG_CONFIG_HOME"] = str(_SESSION_TMP / "config")
os.environ["XDG_CACHE_HOME"] = str(_SESSION_TMP / "xdgcache")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # two cores shared by two xdist workers


@pytest.fixture(scope="session")
def registry():
    from engine.registry import default_registry

    return default_registry()


@pytest.fixture
def executor(tmp_path, registry):
    from engine.cache import ResultCache
    from engine.executor import Executor
    from engine.models.paths import default_model_paths

    return Executor(registry, ResultCache(disk_dir=tmp_path / "cache"),
                    model_paths=default_model_paths(),  # includes the bundled resources/models
                    settings={"output_dir": str(tmp_path / "out")}, temp_dir=tmp_path / "tmp")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT

"""User settings: where models, caches and outputs live, and which node packs to load.

Read from `<user_config_dir>/reelgraph/config.json` (or the file named by REELGRAPH_CONFIG); every
field has a default so a fresh machine needs no file. Environment variables override single fields
(REELGRAPH_CACHE_DIR, REELGRAPH_OUTPUT_DIR, REELGRAPH_MODEL_ROOTS) — tests and CI use them to stay
inside a temporary folder. Settings hold no secrets: API keys are read from the environment by the
node that needs them, by variable name.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

APP_NAME = "reelgraph"


@dataclass
class Settings:
    model_roots: list[str] = field(default_factory=list)  # extra model roots (e.g. ComfyUI/models)
    node_packs: list[str] = field(default_factory=list)  # folders of user node packs (code!)
    cache_dir: str = ""
    output_dir: str = ""
    input_dir: str = ""
    ram_cache_bytes: int = 0  # results kept in RAM; 0 = automatic
    model_ram_bytes: int = 0  # loaded models kept in RAM between runs; 0 = automatic
    disk_cache_bytes: int = 20 << 30
    device: str = ""  # "" = automatic (cuda when present)

    def __post_init__(self) -> None:
        if not self.cache_dir:
            self.cache_dir = platformdirs.user_cache_dir(APP_NAME)
        if not self.output_dir:
            self.output_dir = str(Path.cwd() / "output")
        if not self.input_dir:
            self.input_dir = str(Path.cwd())
        if not self.ram_cache_bytes:
            self.ram_cache_bytes = _default_ram_budget()
        if not self.model_ram_bytes:
            self.model_ram_bytes = _default_model_budget()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Settings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def config_path() -> Path:
    env = os.environ.get("REELGRAPH_CONFIG")
    return Path(env) if env else Path(platformdirs.user_config_dir(APP_NAME)) / "config.json"


def load_settings(path: Path | None = None) -> Settings:
    """Settings from the config file plus environment overrides. A broken file is ignored with
    a warning in `Settings`-less form: the app must start even when the config is damaged."""
    path = path or config_path()
    data: dict[str, Any] = {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            data = loaded
    except (OSError, ValueError):
        pass
    env = os.environ
    if env.get("REELGRAPH_CACHE_DIR"):
        data["cache_dir"] = env["REELGRAPH_CACHE_DIR"]
    if env.get("REELGRAPH_OUTPUT_DIR"):
        data["output_dir"] = env["REELGRAPH_OUTPUT_DIR"]
    if env.get("REELGRAPH_INPUT_DIR"):
        data["input_dir"] = env["REELGRAPH_INPUT_DIR"]
    try:
        return Settings.from_json(data)
    except TypeError:
        return Settings()


def save_settings(settings: Settings, path: Path | None = None) -> None:
    from engine.atomic_files import atomic_write_text

    atomic_write_text(path or config_path(), json.dumps(settings.to_json(), indent=2) + "\n")


def physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _default_ram_budget() -> int:
    """Results (latents, frames): a quarter of physical memory, at most 16 GiB."""
    return int(min(physical_memory() // 4, 16 << 30))


def _default_model_budget() -> int:
    """Loaded models: 60 % of physical memory, so two 14B-class experts and a text encoder stay
    side by side on a 64 GB machine, with room left for results and the run itself."""
    return int(physical_memory() * 0.6)

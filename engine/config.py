"""User settings: where models, caches and outputs live, and which node packs to load.

Read from `<user_config_dir>/reelgraph/config.json` (or the file named by REELGRAPH_CONFIG); every
field has a default so a fresh machine needs no file. Environment variables override single fields
(REELGRAPH_CACHE_DIR, REELGRAPH_OUTPUT_DIR, REELGRAPH_MODEL_ROOTS) — tests and CI use them to stay
inside a temporary folder. Settings hold no secrets: each remote provider names the environment
variable that holds its key, read only when that provider is called (engine.providers).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from engine import safe_json

APP_NAME = "reelgraph"


@dataclass
class Settings:
    model_roots: list[str] = field(default_factory=list)  # extra model roots (e.g. ComfyUI/models)
    # ComfyUI's extra_model_paths.yaml to read model folders from ("" = none; one next to a
    # ComfyUI install given as a model root is read anyway): engine.models.extra_model_paths
    comfy_extra_model_paths: str = ""
    node_packs: list[str] = field(default_factory=list)  # folders of user node packs (code!)
    cache_dir: str = ""
    output_dir: str = ""
    input_dir: str = ""
    ram_cache_bytes: int = 0  # results kept in RAM; 0 = automatic
    model_ram_bytes: int = 0  # loaded models kept in RAM between runs; 0 = automatic
    disk_cache_bytes: int = 20 << 30
    device: str = ""  # "" = automatic (cuda when present)
    # memory and speed (engine.memory): budgets the residency planner plans within
    vram_budget_bytes: int = 0  # GPU memory the engine may use; 0 = what the card has free
    ram_budget_bytes: int = 0  # RAM for running (pinned copies, activations); 0 = MemAvailable
    block_swap_blocks: int = -1  # DiT blocks streamed from RAM: -1 = automatic, 0 = never, N
    batch_cfg: str = "auto"  # cond + uncond in one call: "auto" (when memory allows), "on", "off"
    compile_blocks: bool = False  # torch.compile the DiT's transformer blocks (slow first step)
    # remote endpoints a graph may name, {name: {base_url, api_key_env}} (engine.providers):
    # the key's environment variable is chosen here, never by a workflow
    providers: dict[str, dict[str, str]] = field(default_factory=dict)

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
    def from_json(cls, data: dict[str, Any], problems: list[str] | None = None) -> "Settings":
        """Settings from a dict; a value of the wrong kind is left at its default, and why is
        appended to `problems` (naming the key) when a list is given."""
        clean, found = check_settings(data)
        if problems is not None:
            problems.extend(found)
        return cls(**clean)


def config_path() -> Path:
    env = os.environ.get("REELGRAPH_CONFIG")
    return Path(env) if env else Path(platformdirs.user_config_dir(APP_NAME)) / "config.json"


def check_settings(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the valid known fields of `data`, one message per invalid one). Unknown keys are kept out
    silently: a newer Reelgraph may have written them."""
    clean: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in data.items():
        kind = _FIELD_KINDS.get(key)
        if kind is None:
            continue
        if kind == "providers":  # keep the usable entries; name the others
            from engine.providers import check_provider_settings

            found, why_not = check_provider_settings(value)
            clean[key] = {name: p.to_json() for name, p in found.items()}
            problems += [f"setting 'providers': {why}; left out" for why in why_not]
            continue
        why = _value_problem(kind, value)
        if why:
            problems.append(f"setting {key!r}: {why}; using the default")
        else:
            clean[key] = list(value) if kind == "paths" else value
    return clean, problems


_FIELD_KINDS = {"model_roots": "paths", "node_packs": "paths", "cache_dir": "path",
                "comfy_extra_model_paths": "path",
                "output_dir": "path", "input_dir": "path", "ram_cache_bytes": "bytes",
                "model_ram_bytes": "bytes", "disk_cache_bytes": "bytes", "device": "device",
                "providers": "providers", "vram_budget_bytes": "bytes", "ram_budget_bytes": "bytes",
                "block_swap_blocks": "blocks", "batch_cfg": "batch_cfg", "compile_blocks": "bool"}
_DEVICE = re.compile(r"(|auto|cpu|mps|cuda(:\d+)?)")


def _value_problem(kind: str, value: Any) -> str:
    if kind == "paths":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            return "must be a list of folder paths"
    elif kind == "path":
        if not isinstance(value, str):
            return "must be a folder path (text)"
    elif kind == "bytes":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return "must be a whole number of bytes (0 = automatic)"
    elif kind == "device" and not (isinstance(value, str) and _DEVICE.fullmatch(value)):
        return "must be one of '', 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"
    elif kind == "blocks":
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            return "must be a whole number of blocks: -1 = automatic, 0 = never swap, N = swap N"
    elif kind == "batch_cfg" and value not in ("auto", "on", "off"):
        return "must be 'auto', 'on' or 'off'"
    elif kind == "bool" and not isinstance(value, bool):
        return "must be true or false"
    return ""


def load_settings(path: Path | None = None, problems: list[str] | None = None) -> Settings:
    """Settings from the config file plus environment overrides. The app must start even when
    the config is damaged: a file that cannot be read or parsed, and any value of the wrong kind,
    is replaced by defaults, and each problem, naming the file and key, is appended to
    `problems` for the caller to show."""
    path = path or config_path()
    found: list[str] = []
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = safe_json.loads(safe_json.read_text_file(path, safe_json.MAX_SMALL_FILE_BYTES,
                                                              "settings file"))
            if isinstance(loaded, dict):
                data = loaded
            else:
                found.append("the settings file must hold a JSON object; using the defaults")
        except safe_json.JsonFileError as exc:
            found.append(f"{exc}; using the defaults")
    env = os.environ
    if env.get("REELGRAPH_CACHE_DIR"):
        data["cache_dir"] = env["REELGRAPH_CACHE_DIR"]
    if env.get("REELGRAPH_OUTPUT_DIR"):
        data["output_dir"] = env["REELGRAPH_OUTPUT_DIR"]
    if env.get("REELGRAPH_INPUT_DIR"):
        data["input_dir"] = env["REELGRAPH_INPUT_DIR"]
    settings = Settings.from_json(data, found)
    if problems is not None:
        problems.extend(f"{path}: {p}" for p in found)
    return settings


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

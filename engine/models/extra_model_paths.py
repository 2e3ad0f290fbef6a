"""ComfyUI's `extra_model_paths.yaml`: named sections, each an optional `base_path`, an optional
`is_default`, and folder keys whose value is one path or several (a `|` block, one per line):

    comfyui:
        base_path: ~/ComfyUI/          # ~ and $VARS expanded; relative to the YAML's folder
        is_default: true                # these folders are searched first
        diffusion_models: |
            models/diffusion_models
            models/unet
        loras: models/loras/

Read the way ComfyUI reads it (utils/extra_config.py): a path is joined to the section's
base_path, else taken relative to the YAML file's folder. Never raises for a bad file: each
problem becomes one line in `problems`. Keys Reelgraph does not use (checkpoints, embeddings,
controlnet, ...) are kept in `ExtraFolders.folders` under their own name so they can be listed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_YAML_BYTES = 1 << 20  # a config file, not data
FILE_NAME = "extra_model_paths.yaml"


@dataclass
class ExtraFolders:
    """Folders by ComfyUI folder key, in file order; `default` ones (is_default) listed apart."""

    folders: dict[str, list[Path]] = field(default_factory=dict)
    default: dict[str, list[Path]] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def merge(self, other: "ExtraFolders") -> None:
        for mine, theirs in ((self.folders, other.folders), (self.default, other.default)):
            for key, paths in theirs.items():
                mine.setdefault(key, []).extend(p for p in paths if p not in mine.get(key, []))
        self.sources.extend(other.sources)
        self.problems.extend(other.problems)


def read_extra_model_paths(path: str | Path) -> ExtraFolders:
    """The folders an extra_model_paths.yaml names (problems listed, never raised)."""
    path = Path(os.path.expandvars(str(path))).expanduser()
    found = ExtraFolders(sources=[path])
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            found.problems.append(f"{path}: larger than {MAX_YAML_BYTES >> 20} MiB; not read")
            return found
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        found.problems.append(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}")
        return found
    try:
        import yaml  # PyYAML, imported only when a YAML file is read

        data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError and anything a hostile file provokes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        found.problems.append(f"{path}: not valid YAML ({first})")
        return found
    if data is None:
        return found
    if not isinstance(data, dict):
        found.problems.append(f"{path}: must map section names to folder settings")
        return found
    here = path.resolve().parent
    for section, conf in data.items():
        if conf is None:
            continue
        if not isinstance(conf, dict):
            found.problems.append(f"{path}: section {section!r} must map folder names to paths")
            continue
        _section(found, path, here, str(section), conf)
    return found


def _section(found: ExtraFolders, path: Path, here: Path, section: str, conf: dict[str, Any]) -> None:
    base: Path | None = None
    raw_base = conf.get("base_path")
    if raw_base is not None:
        if not isinstance(raw_base, str) or not raw_base.strip():
            found.problems.append(f"{path}: {section}.base_path must be a folder path")
            return
        base = _expand(raw_base.strip())
        if not base.is_absolute():
            base = here / base
    default = conf.get("is_default") is True
    for key, value in conf.items():
        if key in ("base_path", "is_default"):
            continue
        if isinstance(value, str):
            lines = value.split("\n")
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            lines = value
        else:
            found.problems.append(f"{path}: {section}.{key} must be a path or a `|` block of paths")
            continue
        for line in lines:
            line = line.strip()
            if not line:
                continue
            folder = _expand(line)
            if not folder.is_absolute():
                folder = (base or here) / folder
            target = (found.default if default else found.folders).setdefault(str(key), [])
            folder = Path(os.path.normpath(folder))
            if folder not in target:
                target.append(folder)


def _expand(text: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(text)))

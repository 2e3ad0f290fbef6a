"""Safe weight loading: the one place Reelgraph turns a file on disk into tensors.

Invariants:
- `.safetensors` is read with the safetensors library (no code can run). Its header is checked
  first, before any tensor is read: the JSON, every entry's dtype, shape and data offsets (each
  tensor's bytes match its shape, tensors neither overlap nor leave gaps, the data ends where the
  file does), so a truncated download or a damaged file is reported as such, with the byte counts.
- `.pt/.pth/.ckpt/.pkl/.bin` are read only with `torch.load(weights_only=True, map_location="cpu")`.
  A pickle that needs anything beyond tensors and plain containers (i.e. could run code) is refused;
  there is no unsafe fallback, whatever the caller asks. A file that is neither a zip archive
  (torch.save) nor a pickle is refused before torch reads it.
- Every failure is a `ModelLoadError` naming the file, what is wrong with it and what to do.
- Tensors come back on the CPU; devices and dtypes are the loader's business (engine.devices, engine.dtypes).
- Memory: a safetensors tensor kept in its file's dtype is a view of the memory-mapped file (pages
  are read when first used and can be dropped again by the kernel). A tensor the loader wants in
  another form (`convert`: another dtype, float8 storage, dequantised) is read on its own into
  private memory, converted, and its raw copy freed before the next one is read, so a load never
  holds the file and the converted model at once: peak = final weights + about one tensor.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.errors import NodeError

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit for the JSON header
# safetensors dtype -> bytes per element, for the dtypes torch can load
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "C64": 8, "F8_E4M3": 1,
               "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1}
# safetensors dtype -> torch dtype, for reading a tensor's bytes without the library
_TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                 "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                 "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
                 "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
                 "U16": "uint16", "U32": "uint32", "U64": "uint64", "C64": "complex64"}
# A conversion applied to one tensor as it is read (e.g. fp16 -> bf16, float8 * scale -> bf16).
Converter = Callable[[torch.Tensor], torch.Tensor]
# Top-level keys under which training scripts nest the real state dict.
_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict", "ema")


class ModelLoadError(NodeError):
    """A model file that cannot be loaded: missing, empty, truncated, unsafe or of the wrong kind."""

    def __init__(self, path: Path | str, problem: str, input: str | None = None):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"cannot load model file {self.path}: {problem}", input=input)


def load_state_dict(path: Path | str, convert: Mapping[str, Converter] | None = None
                    ) -> dict[str, torch.Tensor]:
    """All tensors in a weight file (or a model folder's weight shards), keyed by name, on the CPU.

    `convert` maps names (as in the file) to a function giving the tensor the caller will keep;
    each such tensor is read alone into private memory and converted, its raw copy freed before
    the next is read (see the module doc); other tensors stay views of the mapped file."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, convert)
    _check_exists(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(path, convert)
    if suffix in PICKLE_SUFFIXES:
        return convert_state(_load_pickle(path), convert)
    if suffix == ".gguf":  # quantised blocks need a loader that keeps them (engine.models.gguf_weights)
        raise ModelLoadError(path, "unsupported file type '.gguf' for this model: GGUF files load "
                                   "as diffusion models only (LoadDiT, Wan DiTs); use a "
                                   ".safetensors file")
    raise ModelLoadError(path, f"unsupported file type {suffix or '(no suffix)'!r}; "
                               f"expected .safetensors or one of {', '.join(PICKLE_SUFFIXES)}")


def convert_state(state: dict[str, torch.Tensor], convert: Mapping[str, Converter] | None
                  ) -> dict[str, torch.Tensor]:
    """Apply `convert` to a state dict already in memory, in place and one tensor at a time (each
    original is released as its replacement is made: peak = the state + one converted tensor)."""
    for key, fn in (convert or {}).items():
        if key in state:
            state[key] = fn(state[key])
    return state


def read_safetensors_header(path: Path | str) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names -> dtype/shape/offsets, plus
    "__metadata__"), validated entry by entry against the file size. Reads only the header."""
    path = Path(path)
    _check_exists(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelLoadError(path, f"truncated or not a safetensors file ({size} bytes, "
                                       "shorter than the 8-byte header length)")
        (n,) = struct.unpack("<Q", head)  # little-endian u64: the JSON header's length
        if n > size - 8 or n > MAX_HEADER_BYTES:
            raise ModelLoadError(path, f"not a safetensors file, or truncated: its first 8 bytes "
                                       f"give a header of {n} bytes but the file has only {size} "
                                       "bytes; download or copy it again")
        raw = f.read(n)
    if not raw.startswith(b"{"):
        raise ModelLoadError(path, "not a safetensors file: its header is not a JSON object")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelLoadError(path, f"not a safetensors file, or its header is damaged: the header "
                                   f"is not valid JSON ({_one_line(exc)}); download it again") from None
    if not isinstance(header, dict):
        raise ModelLoadError(path, "not a safetensors file: its header is not a JSON object")
    _check_entries(path, header, data_size=size - 8 - n, file_size=size)
    return header


def read_shapes(path: Path | str) -> dict[str, tuple[int, ...]] | None:
    """name -> shape of every tensor, from the safetensors headers of a file or of a model folder's
    shards (or a GGUF header), without reading any tensor data; None for pickles, which must be
    loaded to be seen."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            return None
    elif path.suffix.lower() == ".safetensors":
        files = [path]
    elif path.suffix.lower() == ".gguf":
        from engine.models.gguf_weights import gguf_shapes  # lazy: gguf_weights imports this module

        return gguf_shapes(path)
    else:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        shapes.update({k: tuple(v["shape"]) for k, v in read_safetensors_header(file).items()
                       if k != "__metadata__"})
    return shapes


def read_metadata(path: Path | str) -> dict[str, str]:
    """The string metadata stored in a safetensors header ({} for other formats or none)."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".safetensors":
        return {}
    meta = read_safetensors_header(path).get("__metadata__") or {}
    return dict(meta)  # str -> str, checked with the header


def save_state_dict(tensors: dict[str, torch.Tensor], path: Path | str,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write tensors as safetensors (contiguous CPU copies), with optional string metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(flat, str(path), metadata=metadata)
    return path


def save_state_dict_streaming(specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
                              make: Callable[[str], torch.Tensor], path: Path | str,
                              metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file one tensor at a time: `specs` gives each name's shape and dtype
    (the header is written first), `make(name)` the tensor, which is written and dropped before
    the next is made, so writing a multi-GB checkpoint needs one tensor of memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = {v: k for k, v in _TORCH_DTYPES.items()}
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, (shape, dtype) in specs.items():
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": names[str(dtype).removeprefix("torch.")], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the library writes it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, (shape, dtype) in specs.items():
            tensor = make(name)
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(f"{name}: made {tuple(tensor.shape)} {tensor.dtype}, the header "
                                 f"says {tuple(shape)} {dtype}")
            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            f.write(memoryview(data.numpy()))
            del tensor, data
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


def _check_entries(path: Path, header: dict[str, Any], data_size: int, file_size: int) -> None:
    """Every tensor entry well formed, its bytes matching its shape, the tensors tiling the data
    section exactly (no overlap, no gap, nothing past the end): the safetensors format's rules."""
    spans = []  # (begin, end, name) within the data section
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise ModelLoadError(path, "damaged safetensors header: __metadata__ must map "
                                           "names to strings")
            continue
        if not isinstance(entry, dict):
            raise ModelLoadError(path, f"damaged safetensors header: tensor {name!r} has no "
                                       "dtype/shape/data_offsets entry")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise ModelLoadError(path, f"tensor {name!r} has the unknown dtype {dtype!r} (known: "
                                       f"{', '.join(DTYPE_BYTES)})")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise ModelLoadError(path, f"tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
                and offsets[0] <= offsets[1]):
            raise ModelLoadError(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
        need = math.prod(shape) * DTYPE_BYTES[dtype]
        if need != offsets[1] - offsets[0]:
            raise ModelLoadError(path, f"tensor {name!r} ({dtype} of shape {shape}) needs {need} "
                                       f"bytes but its data_offsets {offsets[0]}..{offsets[1]} span "
                                       f"{offsets[1] - offsets[0]}; the header is damaged")
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    end, last = 0, None
    for begin, stop, name in spans:
        if begin < end:
            raise ModelLoadError(path, f"tensors {last!r} and {name!r} overlap (bytes {begin}..{end} "
                                       "of the data); the header is damaged")
        if begin > end:
            raise ModelLoadError(path, f"tensor {name!r} starts at byte {begin} of the data but the "
                                       f"tensor before it ends at {end}; the header is damaged")
        end, last = stop, name
    if end > data_size:
        outside = next(name for _, stop, name in spans if stop > data_size)
        raise ModelLoadError(path, f"truncated: the header says {_size(end)} of tensor data, the "
                                   f"file has {_size(data_size)} (tensor {outside!r} has offsets "
                                   f"outside the file; expected {file_size - data_size + end} bytes "
                                   f"in all, found {file_size}); download or copy it again")
    if end < data_size:
        raise ModelLoadError(path, f"damaged: the header accounts for {_size(end)} of tensor data but "
                                   f"the file holds {_size(data_size)} after it")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _size(n: int) -> str:
    """A byte count for messages: "4.0 MB (4194304 bytes)"."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def _load_safetensors(path: Path, convert: Mapping[str, Converter] | None = None
                      ) -> dict[str, torch.Tensor]:
    header = read_safetensors_header(path)  # clear messages for damage, before the library's own
    try:
        state = load_file(str(path), device="cpu")  # views of the mapped file: nothing read yet
    except (SafetensorError, OSError, RuntimeError, ValueError, TypeError) as exc:
        raise ModelLoadError(path, f"corrupt safetensors file ({_one_line(exc)}); download it "
                                   "again") from None
    todo = [k for k in (convert or {}) if k in state]
    if not todo:
        return state
    # Converted tensors are read with plain reads, not through the mapping: a page touched in the
    # mapping stays in this process's memory until every view of the file is gone, which would
    # hold the whole file beside the converted model until the load ends.
    todo.sort(key=lambda k: header[k]["data_offsets"][0])  # one forward pass over the file
    # One scratch buffer, as large as the largest tensor to convert, takes every raw read: a fresh
    # buffer per tensor would leave freed holes between the kept results and grow the heap by
    # a third more than the weights.
    scratch = torch.empty(max(_nbytes(header[k]) for k in todo), dtype=torch.uint8)
    with open(path, "rb", buffering=0) as f:
        data_start = 8 + struct.unpack("<Q", f.read(8))[0]
        for key in todo:
            raw = _read_tensor(path, f, header[key], data_start, scratch)
            out = convert[key](raw)  # type: ignore[index]
            if out.untyped_storage().data_ptr() == scratch.untyped_storage().data_ptr():
                out = out.clone()  # a conversion that returned its input: not the scratch
            state[key] = out  # replaces the unread view
            del raw, out
    return state


def _nbytes(entry: Mapping[str, Any]) -> int:
    begin, end = entry["data_offsets"]
    return end - begin


def _read_tensor(path: Path, f: Any, entry: Mapping[str, Any], data_start: int,
                 scratch: torch.Tensor) -> torch.Tensor:
    """One tensor of a safetensors file read into the front of `scratch` (valid until the next)."""
    begin, end = entry["data_offsets"]
    dtype = getattr(torch, _TORCH_DTYPES.get(entry["dtype"], ""), None)
    if dtype is None:
        raise ModelLoadError(path, f"this torch build cannot hold {entry['dtype']} tensors")
    buf = scratch[: end - begin]
    view = memoryview(buf.numpy()) if end > begin else memoryview(bytearray(0))
    f.seek(data_start + begin)
    done = 0
    while done < end - begin:
        n = f.readinto(view[done:])
        if not n:
            raise ModelLoadError(path, f"truncated: the file ended inside tensor data at byte "
                                       f"{data_start + begin + done}; download it again")
        done += n
    return buf.view(dtype).reshape(entry["shape"])


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    _check_pickle_container(path)
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
    except Exception as exc:  # noqa: BLE001 - torch's unpickler meets hostile bytes with any type
        raise ModelLoadError(path, f"corrupt checkpoint ({type(exc).__name__}: {_one_line(exc)}); "
                                   "download it again") from None
    return _tensors_of(path, obj)


def _check_pickle_container(path: Path) -> None:
    """torch.save writes a zip archive (legacy files: a pickle, protocol 2+). Anything else is not
    a checkpoint; a zip whose central directory (at its end) is missing was cut short."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise ModelLoadError(path, f"truncated or corrupt checkpoint: it starts as a zip archive "
                                       f"(torch.save's format) but its directory at the end is "
                                       f"missing ({_size(path.stat().st_size)}); download it again")
        return
    if not magic.startswith(b"\x80"):
        raise ModelLoadError(path, f"not a PyTorch checkpoint: it is neither a zip archive "
                                   f"(torch.save) nor a pickle (it starts with {magic!r})")


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


def _load_folder(folder: Path, convert: Mapping[str, Converter] | None = None
                 ) -> dict[str, torch.Tensor]:
    """Weights of a diffusers/HF model folder: every *.safetensors shard (else *.bin shards)."""
    shards = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not shards:
        raise ModelLoadError(folder, "the folder holds no .safetensors or .bin weight files")
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(load_state_dict(shard, convert))
    return tensors


def _one_line(exc: BaseException) -> str:
    """First sentence of an exception message (torch's are paragraphs)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first.split(". ")[0].rstrip(".")

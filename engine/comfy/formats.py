"""Finding the ComfyUI workflow in a file: a .json (UI workflow or API prompt), or the copies
ComfyUI embeds in its outputs.

- PNG (SaveImage): tEXt/iTXt/zTXt chunks `workflow` (UI) and `prompt` (API). Read by walking
  the chunks here, bounded, rather than through Pillow, whose text-chunk limit (1 MiB) is below
  what large workflows need.
- MP4 / WEBM / MKV / MOV (SaveVideo, SaveWEBM): container metadata `workflow` / `prompt`, and
  the `comment` tag VideoHelperSuite writes (JSON holding both). Read with PyAV.
- Animated WEBP (SaveAnimatedWEBP): EXIF ASCII tags holding "workflow:{...}" / "prompt:{...}"
  (Make, Model and the tags before them). Read with Pillow. XMP is not read.
The UI copy is preferred when both are present: it carries the layout, modes and notes.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import safe_json
from engine.comfy.errors import ComfyImportError
from engine.comfy.graph import looks_like_api, looks_like_ui

MAX_MEDIA_BYTES = 4 << 30  # a PNG or video is read for its metadata only; refuse absurd files
MAX_TEXT_BYTES = safe_json.MAX_WORKFLOW_BYTES
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Found:
    """A ComfyUI graph found in a file: `kind` "ui" or "api", its JSON, and where it was."""

    kind: str
    data: dict[str, Any]
    origin: str


def read_comfy_file(path: str | Path) -> Found:
    """The ComfyUI workflow a file holds. Raises only ComfyImportError (one line per problem)."""
    path = Path(path)
    src = str(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ComfyImportError("not a regular file", src)
            head = f.read(16)
    except OSError as exc:
        raise ComfyImportError(f"cannot read the file: {exc.strerror or exc}", src) from None
    if st.st_size > MAX_MEDIA_BYTES:
        raise ComfyImportError(f"larger than {MAX_MEDIA_BYTES >> 30} GiB; is it the right file?", src)
    if head.startswith(_PNG_MAGIC):
        return _pick(_png_texts(path, src), "PNG text chunk", src)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _pick(_webp_texts(path, src), "WEBP EXIF", src)
    if head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3":
        return _pick(_video_texts(path, src), "video metadata", src)
    try:
        text = safe_json.read_text_file(path, safe_json.MAX_WORKFLOW_BYTES, "file")
    except safe_json.JsonFileError as exc:
        raise ComfyImportError(str(exc), src) from None
    return detect(_json(text, src, "the file"), src, "json file")


def detect(data: Any, source: str | None, origin: str) -> Found:
    """Which ComfyUI format `data` is; ComfyImportError when neither."""
    if isinstance(data, dict) and data.get("format") == "reelgraph.workflow":
        raise ComfyImportError("already a Reelgraph workflow; open or run it directly", source)
    if looks_like_ui(data):
        return Found("ui", data, origin)
    if looks_like_api(data):
        return Found("api", data, origin)
    raise ComfyImportError("not a ComfyUI workflow (neither a UI workflow with \"nodes\" and "
                           "\"links\" nor an API prompt of {id: {class_type, inputs}})", source)


def _json(text: str | bytes, source: str, what: str) -> Any:
    try:
        return safe_json.loads(text)
    except safe_json.JsonFileError as exc:
        raise ComfyImportError(f"{what} is not usable JSON: {exc}", source) from None


def _pick(texts: dict[str, str], where: str, source: str) -> Found:
    """Prefer the UI copy (layout, modes, notes), else the API prompt."""
    tried = []
    for key in ("workflow", "prompt"):
        if key in texts:
            data = _json(texts[key], source, f"the {where} {key!r}")
            try:
                found = detect(data, source, f"{where} {key!r}")
            except ComfyImportError as exc:
                tried.append(f"{key!r}: {exc.problems[0]}")
                continue
            return found
    if "comment" in texts:  # VideoHelperSuite: {"prompt": ..., "workflow": ...} in one tag
        data = _json(texts["comment"], source, f"the {where} 'comment'")
        if isinstance(data, dict):
            inner = {k: data[k] for k in ("workflow", "prompt") if isinstance(data.get(k), dict)}
            for key in ("workflow", "prompt"):
                if key in inner:
                    return detect(inner[key], source, f"{where} 'comment' {key!r}")
    detail = f" ({'; '.join(tried)})" if tried else ""
    raise ComfyImportError(f"no ComfyUI workflow in the {where}s{detail}; was it saved with "
                           "metadata turned off?", source)


def _png_texts(path: Path, source: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    total = 0
    try:
        with open(path, "rb") as f:
            f.read(8)
            while True:
                head = f.read(8)
                if len(head) < 8:
                    break
                length, ctype = struct.unpack(">I4s", head)
                if ctype in (b"tEXt", b"iTXt", b"zTXt"):
                    total += length
                    if total > MAX_TEXT_BYTES:
                        raise ComfyImportError("PNG text chunks are too large", source)
                    body = f.read(length)
                    if len(body) < length:
                        raise ComfyImportError("the PNG is truncated", source)
                    key, text = _png_text(ctype, body)
                    if key and key not in texts:
                        texts[key] = text
                    f.seek(4, 1)
                elif ctype == b"IEND":
                    break
                else:
                    f.seek(length + 4, 1)
    except OSError as exc:
        raise ComfyImportError(f"cannot read the PNG: {exc.strerror or exc}", source) from None
    return texts


def _png_text(ctype: bytes, body: bytes) -> tuple[str, str]:
    key, _, rest = body.partition(b"\0")
    try:
        if ctype == b"tEXt":
            return key.decode("latin-1"), rest.decode("latin-1")
        if ctype == b"zTXt":
            return key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
        compressed, rest = rest[0], rest[2:]  # iTXt: flag, method, language\0, translated\0, text
        _lang, _, rest = rest.partition(b"\0")
        _trans, _, rest = rest.partition(b"\0")
        return key.decode("latin-1"), (_inflate(rest) if compressed else rest).decode("utf-8")
    except (UnicodeDecodeError, zlib.error, IndexError, ValueError):
        return "", ""


def _inflate(data: bytes) -> bytes:
    z = zlib.decompressobj()
    out = z.decompress(data, MAX_TEXT_BYTES + 1)  # bounded: a zip bomb stops here
    if len(out) > MAX_TEXT_BYTES:
        raise ValueError("text chunk too large")
    return out


def _webp_texts(path: Path, source: str) -> dict[str, str]:
    try:
        from PIL import Image

        with Image.open(path) as im:
            exif = im.getexif()
            values = list(exif.values())
    except Exception as exc:  # Pillow raises many kinds on damaged files
        raise ComfyImportError(f"cannot read the WEBP: {exc}", source) from None
    texts: dict[str, str] = {}
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and ":" in value:
            key, _, text = value.partition(":")
            if key in ("workflow", "prompt") and key not in texts:
                texts[key] = text.rstrip("\0")
    return texts


def _video_texts(path: Path, source: str) -> dict[str, str]:
    try:
        import av

        with av.open(str(path), metadata_errors="ignore") as container:
            meta = dict(container.metadata)
            for stream in container.streams:  # some muxers keep tags on the stream
                for key, value in stream.metadata.items():
                    meta.setdefault(key, value)
    except Exception as exc:  # PyAV raises many kinds on damaged files
        raise ComfyImportError(f"cannot read the video's metadata: {exc}", source) from None
    return {k.lower(): v for k, v in meta.items() if isinstance(v, str)}

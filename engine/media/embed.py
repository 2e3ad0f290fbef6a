"""Embedding the workflow and provenance in media files, and reading them back.

Where each format keeps them (keys `WORKFLOW_KEY`, `PROVENANCE_KEY`, values compact JSON):
- PNG: iTXt chunks (written by `write_png` from `metadata_text`).
- mp4: container tags (movflags=use_metadata_tags writes custom keys); webm: Matroska tags,
  which readers upper-case, so lookups ignore case. Both written by PyAV in engine.media.codec.
- GIF: one comment extension, inserted before the first frame, holding {WORKFLOW_KEY: ...,
  PROVENANCE_KEY: ...} as ASCII JSON (GIF comments are 7-bit text).
- WebP: an XMP chunk (flagged in the VP8X header) with the two values as attributes.
No sidecar files. Extraction sniffs the file's first bytes, not its name, and never raises for
unreadable or foreign files: it returns nothing. It reads headers and tags, never pixels (a PNG is
decoded only to find text chunks after its pixels, and only under the pixel cap), so dropping a
huge or hostile file on the canvas costs nothing.
"""

from __future__ import annotations

import html
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from PIL import Image

from engine.media.limits import MAX_PIXELS

WORKFLOW_KEY = "reelgraph_workflow"
PROVENANCE_KEY = "reelgraph_provenance"
_XMP_NS = "https://reelgraph.dev/ns/xmp/1.0/"
# What parsers raise on damaged or foreign files (Pillow plugins also raise SyntaxError,
# struct.error or IndexError on some malformed headers)
_PARSER_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, IndexError,
                  av.error.FFmpegError, Image.DecompressionBombError)


def metadata_text(workflow: dict[str, Any] | None, provenance: dict[str, Any] | None) -> dict[str, str]:
    """The key -> JSON text pairs embedded in outputs (keys absent when the value is None)."""
    out: dict[str, str] = {}
    if workflow is not None:
        out[WORKFLOW_KEY] = json.dumps(workflow, ensure_ascii=False, separators=(",", ":"))
    if provenance is not None:
        out[PROVENANCE_KEY] = json.dumps(provenance, ensure_ascii=False, separators=(",", ":"),
                                         default=str)
    return out


def ascii_payload(meta: dict[str, str]) -> bytes:
    """GIF comments are 7-bit text: one JSON object, non-ASCII escaped."""
    values = {k: json.loads(v) for k, v in meta.items()}
    return json.dumps(values, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def gif_with_comment(data: bytes, text: bytes) -> bytes:
    """Insert a comment extension right after the global colour table, before the first frame,
    where readers (Pillow among them) report it as the file's comment."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise ValueError("the GIF muxer produced an unexpected file header")
    flags = data[10]
    start = 13 + (3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0)
    blocks = b"".join(bytes([len(text[i:i + 255])]) + text[i:i + 255] for i in range(0, len(text), 255))
    return b"GIF89a" + data[6:start] + b"\x21\xfe" + blocks + b"\x00" + data[start:]


def xmp_packet(meta: dict[str, str]) -> bytes:
    """A minimal XMP packet carrying each value as an XML-escaped reelgraph:* attribute."""
    attrs = "".join(f' reelgraph:{key.removeprefix("reelgraph_")}="{html.escape(value, quote=True)}"'
                    for key, value in meta.items())
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
            f'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            f'rdf:about="" xmlns:reelgraph="{_XMP_NS}"{attrs}/></rdf:RDF></x:xmpmeta>').encode("utf-8")


def _riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(fourcc, payload) of each chunk of a WebP (RIFF) file."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP file")
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        chunks.append((data[pos:pos + 4], data[pos + 8:pos + 8 + size]))
        pos += 8 + size + (size & 1)  # payloads are padded to an even length
    return chunks


def webp_with_xmp(data: bytes, xmp: bytes, width: int, height: int) -> bytes:
    """Append an XMP chunk and set the XMP flag of the VP8X header. libwebp_anim writes a simple
    (VP8/VP8L only) file for some single frames; those get a VP8X header with the canvas size."""
    chunks = [c for c in _riff_chunks(data) if c[0] != b"XMP "]
    if chunks and chunks[0][0] == b"VP8X":
        header = bytearray(chunks[0][1])
        chunks = chunks[1:]
    else:
        header = bytearray(10)
        header[4:7] = (width - 1).to_bytes(3, "little")
        header[7:10] = (height - 1).to_bytes(3, "little")
    header[0] |= 0x04  # XMP metadata present
    chunks = [(b"VP8X", bytes(header)), *chunks, (b"XMP ", xmp)]
    body = b"".join(k + len(p).to_bytes(4, "little") + p + b"\0" * (len(p) & 1) for k, p in chunks)
    return b"RIFF" + (4 + len(body)).to_bytes(4, "little") + b"WEBP" + body


@dataclass(frozen=True)
class Embedded:
    """What an output file carries about how it was made."""

    workflow: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None


def extract_workflow(path: Path | str) -> dict[str, Any] | None:
    """The workflow embedded in a PNG, mp4, webm, GIF or WebP written by Reelgraph, or None when
    the file carries none or is not readable media (dropping it on the canvas then does nothing)."""
    return read_embedded(path).workflow


def read_embedded(path: Path | str) -> Embedded:
    """The embedded workflow and provenance of a file (each None when absent)."""
    path = Path(path)
    try:
        texts = _embedded_texts(path)
    except _PARSER_ERRORS:
        return Embedded()
    return Embedded(_json_object(texts.get(WORKFLOW_KEY)), _json_object(texts.get(PROVENANCE_KEY)))


def _embedded_texts(path: Path) -> dict[str, Any]:
    kind = sniff(path)
    if kind == "png":
        with Image.open(path) as im:
            # Text before the pixels (where write_png puts it) is in info without decoding;
            # im.text also finds text after them, by decoding the image.
            found = {k: v for k, v in im.info.items() if isinstance(v, str)}
            if WORKFLOW_KEY in found or im.width * im.height > MAX_PIXELS:
                return found
            return dict(getattr(im, "text", {}) or {})
    if kind == "gif":
        with Image.open(path) as im:
            comment = im.info.get("comment")
        values = _json_object(comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment)
        return values or {}
    if kind == "webp":
        xmp = next((p for k, p in _riff_chunks(path.read_bytes()) if k == b"XMP "), b"")
        text = xmp.decode("utf-8", "replace")
        found = {}
        for key in (WORKFLOW_KEY, PROVENANCE_KEY):
            match = re.search(rf'reelgraph:{key.removeprefix("reelgraph_")}="([^"]*)"', text)
            if match:
                found[key] = html.unescape(match.group(1))
        return found
    # surrogateescape: a tag that is not UTF-8 (a damaged file) must not hide the others; its
    # undecodable bytes become lone surrogates, and such a tag is dropped rather than trusted
    with av.open(str(path), metadata_errors="surrogateescape") as container:
        return {k.lower(): v for k, v in container.metadata.items() if _is_utf8(v)}


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def sniff(path: Path) -> str:
    """'png', 'gif', 'webp' or 'other', from the file's first bytes (not its name)."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return "other"

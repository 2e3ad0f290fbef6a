"""Header-only looks at media files, before anything is decoded: the size an image declares, and
whether an mp4/mov file is cut short. Neither raises for foreign or damaged files: they answer
None ("no verdict") and leave the real reader to report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# Still-image formats that read_video hands to Pillow: all have strong magic bytes, so a video is
# never mistaken for one (Pillow's TGA or MPEG detection would claim some random or video files).
STILL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
_MAX_BOXES = 10_000  # top-level boxes walked at most: real files have a few, hostile ones millions
_ISO_TOP_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin", b"uuid", b"styp",
                  b"moof", b"sidx"}


@dataclass(frozen=True)
class ImageHeader:
    format: str  # Pillow's name: "PNG", "JPEG", ...
    width: int
    height: int
    animated: bool  # an animated PNG (other formats: False)


def image_header(path: Path) -> ImageHeader | None:
    """What a still-image header says, or None when the file is not one of STILL_FORMATS.
    Raises Image.DecompressionBombError when Pillow itself finds the size absurd."""
    try:
        with Image.open(path, formats=STILL_FORMATS) as im:
            # an APNG says so in its acTL chunk, before any pixels (GIF would have to seek on)
            animated = im.format == "PNG" and bool(getattr(im, "is_animated", False))
            return ImageHeader(im.format or "", im.width, im.height, animated)
    except Image.DecompressionBombError:
        raise
    except Exception:  # noqa: BLE001 - any parser failure means "not a readable still"
        return None


def iso_truncation(path: Path) -> str | None:
    """Why an ISO media file (mp4, mov, m4v) looks cut short, from its top-level boxes; None when
    it looks whole or is not an ISO file. A box that runs past the end of the file, or a file with
    no 'moov' (the index every player needs, written last by most recorders), means the copy,
    download or recording did not finish."""
    size = path.stat().st_size
    kinds: list[bytes] = []
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            if len(kinds) >= _MAX_BOXES:
                return None
            f.seek(pos)
            header = f.read(16)
            if len(header) < 8:
                return f"it ends inside a box header at byte {pos}" if kinds else None
            box, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if not kinds and kind not in _ISO_TOP_BOXES:
                return None  # not an ISO file
            if box == 1 and len(header) == 16:  # 64-bit size follows the type
                box = int.from_bytes(header[8:16], "big")
            elif box == 0:  # the box runs to the end of the file
                box = size - pos
            if box < 8:
                return None  # not a layout this walk understands: no verdict
            kinds.append(kind)
            if pos + box > size:
                name = kind.decode("latin-1")
                return (f"it ends inside its '{name}' box ({size - pos} of its {box} bytes "
                        "are there)")
            pos += box
    if b"moov" in kinds or b"moof" in kinds:  # moof: a fragment of a stream, not cut short
        return None
    return "it has no 'moov' box (the index, which recorders write last)"

"""Tiny generated images for the file tests, and a switch that hides Pillow from the library."""

from __future__ import annotations

import io
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

PILLOW_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "BMP": "BMP", "WEBP": "WEBP", "TIFF": "TIFF"}


def make_image(fmt: str, width: int, height: int, **save_options: object) -> bytes:
    """An image of ``width`` x ``height`` in ``fmt`` (a Pillow format name: PNG, JPEG, ...)."""
    mode = "RGB" if fmt in ("JPEG", "WEBP", "BMP") else "L"
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 200).save(buffer, format=fmt, **save_options)
    return buffer.getvalue()


def big_endian_tiff(width: int, height: int) -> bytes:
    """A minimal Motorola-order TIFF header (Pillow writes Intel order)."""
    entries = [(256, 4, 1, width), (257, 3, 1, height)]
    ifd = struct.pack(">H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack(">I", value) if kind == 4 else struct.pack(">HH", value, 0)
        ifd += struct.pack(">HHI", tag, kind, count) + packed
    return b"MM\x00*" + struct.pack(">I", 8) + ifd + b"\x00\x00\x00\x00"


def core_header_bmp(width: int, height: int) -> bytes:
    """A BMP with the old 12-byte BITMAPCOREHEADER."""
    return (
        b"BM" + struct.pack("<IHHI", 26, 0, 0, 26) + struct.pack("<IHHHH", 12, width, height, 1, 24)
    )


def top_down_bmp(width: int, height: int) -> bytes:
    """A BMP whose negative height marks top-down rows."""
    data = bytearray(make_image("BMP", width, height))
    data[22:26] = struct.pack("<i", -height)
    return bytes(data)


@contextmanager
def pillow_hidden() -> Iterator[None]:
    """Make ``from PIL import Image`` fail inside the library, as if the extra were missing."""
    saved = {name: sys.modules[name] for name in list(sys.modules) if name.split(".")[0] == "PIL"}
    for name in saved:
        sys.modules[name] = None  # type: ignore[assignment]
    sys.modules["PIL"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "PIL"]:
            del sys.modules[name]
        sys.modules.update(saved)

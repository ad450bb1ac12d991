"""Image headers: which format a file is (by its content) and how large, and whether a model takes it.

Owns the image rules check (``_config.ImageRules``) and the readers behind it. It reads bytes it
is given and, for ``verify_image_file``, one file; it never touches the network, and its
functions block, so callers run them in a worker thread (``anyio.to_thread.run_sync``).

Two header readers, one answer:

* **Pillow**, when installed (extra ``images``): ``Image.open`` reads the header only and decodes
  no pixels. It knows every variant of the five formats (MPO camera JPEGs, BigTIFF, animated
  WEBP), so it is preferred.
* **A small built-in reader** otherwise, for PNG, JPEG, BMP, WEBP and TIFF: the format from the
  magic bytes, the size from the header fields (PNG ``IHDR``, JPEG ``SOFn``, BMP ``DIB``, WEBP
  ``VP8``/``VP8L``/``VP8X``, TIFF tags 256/257).

Why a reader rather than skipping the resolution check without Pillow: a file the service will
refuse (too small, too large, too long) still costs a round trip, an upload and, when the
service only notices after queueing, a slot of the one task in progress a model allows. The
reader is about a hundred lines, so every rule holds with or without the extra. A file whose
magic matches but whose header the built-in reader cannot follow (a damaged file, BigTIFF) is
rejected with a message that says so and names the extra that reads more.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from types import ModuleType
from typing import Final, cast

import attrs

from ._config import ImageFormat, ImageRules
from ._errors import ValidationError

__all__ = [
    "EXTENSIONS",
    "MIME_TYPES",
    "ImageHeader",
    "check_byte_size",
    "check_complete",
    "check_image",
    "read_header",
    "sniff_format",
    "verify_image_file",
]

MIME_TYPES: Final[dict[str, str]] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}
EXTENSIONS: Final[dict[str, str]] = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "BMP": ".bmp",
    "WEBP": ".webp",
    "TIFF": ".tiff",
}
#: Pillow's names for the formats the service knows; MPO is how Pillow names many camera JPEGs.
_PILLOW_FORMATS: Final[dict[str, ImageFormat]] = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "BMP": "BMP",
    "DIB": "BMP",
    "WEBP": "WEBP",
    "TIFF": "TIFF",
}
#: More pixels than any model takes (5760x3240 is the largest).
LARGEST_ACCEPTED_PIXELS: Final = 5760 * 3240
#: Enough of a file to sniff its format.
SNIFF_BYTES: Final = 32


@attrs.frozen
class ImageHeader:
    """What the header of an image says.

    Attributes:
        format: the format by content: one the service knows (``"JPEG"``, ``"PNG"``, ...) or,
            for a file it does not take, the best name we have for it (``"GIF"``).
        width: pixels across.
        height: pixels down.
    """

    format: str
    width: int
    height: int


def sniff_format(head: bytes) -> str | None:
    """The format an image's first bytes announce, or None for unknown content.

    Besides the five formats the service takes, names a few it does not (GIF, HEIC, AVIF) so an
    error can say what the file is.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM") and len(head) >= 18:
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "HEIC"
    return None


def _pillow_image() -> ModuleType | None:
    """``PIL.Image`` when Pillow is installed, imported on first use."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def read_header(data: bytes) -> ImageHeader | None:
    """Format and size of an image from its bytes, without decoding pixels. Blocks; run it in a thread.

    Returns:
        The header, or None when the content is not an image either reader recognises.

    Raises:
        ValueError: the content looks like an image but its header cannot be read (the message
            says why).
    """
    pillow = _pillow_image()
    if pillow is None:
        return _read_builtin(data)
    try:
        declared = _read_builtin(data)
    except ValueError:
        declared = None
    if declared is not None and declared.width * declared.height > LARGEST_ACCEPTED_PIXELS:
        # Far over every model's limit: answer from the header fields, since Pillow would warn
        # (DecompressionBombWarning) or fail on a size this large before our rules could speak.
        return declared
    return _read_with_pillow(pillow, data)


def _read_with_pillow(pillow: ModuleType, data: bytes) -> ImageHeader | None:
    try:
        # Image.open parses the header; pixels are only decoded by load(), which we never call.
        with pillow.open(io.BytesIO(data)) as image:
            name = str(image.format)
            width, height = image.size
    except pillow.UnidentifiedImageError:
        return None
    except pillow.DecompressionBombError:
        # Far beyond any size the service takes; report the declared size we could not read.
        sniffed = sniff_format(data[:SNIFF_BYTES])
        raise ValueError(
            f"its {sniffed or 'image'} header declares more pixels than any accepted size"
        ) from None
    except (OSError, SyntaxError, struct.error) as exc:
        raise ValueError(f"its header could not be read ({exc})") from None
    return ImageHeader(format=_PILLOW_FORMATS.get(name, name), width=width, height=height)


# --- the built-in reader ----------------------------------------------------------------------


def _read_builtin(data: bytes) -> ImageHeader | None:
    name = sniff_format(data[:SNIFF_BYTES])
    if name is None:
        return None
    reader = _BUILTIN_READERS.get(name)
    if reader is None:
        # A format the service does not take: its name is all the check needs.
        return ImageHeader(format=name, width=0, height=0)
    try:
        size = reader(data)
    except (struct.error, IndexError):
        size = None
    if size is None or size[0] <= 0 or size[1] <= 0:
        raise ValueError(
            f"its {name} header could not be read (the file may be damaged); installing"
            " dashscope-async[images] adds Pillow, which reads more variants"
        )
    return ImageHeader(format=name, width=size[0], height=size[1])


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return cast("tuple[int, int]", (width, height))


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RSTn, SOI.
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD9)})


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + length
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    (dib_size,) = struct.unpack("<I", data[14:18])
    if dib_size == 12:  # BITMAPCOREHEADER: unsigned 16-bit sides
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    # A negative height means the rows are stored top-down.
    return width, abs(height)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    (magic,) = struct.unpack(order + "H", data[2:4])
    if magic != 42:  # 43 is BigTIFF, left to Pillow
        return None
    (offset,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    sides: dict[int, int] = {}
    for entry in range(count):
        start = offset + 2 + 12 * entry
        tag, kind = struct.unpack(order + "HH", data[start : start + 4])
        if tag in (256, 257):
            value_format = order + ("H" if kind == 3 else "I")
            value_end = start + 8 + struct.calcsize(value_format)
            (sides[tag],) = struct.unpack(value_format, data[start + 8 : value_end])
    if 256 not in sides or 257 not in sides:
        return None
    return sides[256], sides[257]


_BUILTIN_READERS: Final = {
    "PNG": _png_size,
    "JPEG": _jpeg_size,
    "BMP": _bmp_size,
    "WEBP": _webp_size,
    "TIFF": _tiff_size,
}


# --- completeness -----------------------------------------------------------------------------


def _png_complete(data: bytes) -> str | None:
    position = 8
    while position + 12 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        end = position + 12 + length
        if end > len(data):
            return f"its PNG chunk at byte {position} runs past the end of the file"
        kind = data[position + 4 : position + 8]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[position + 4 : end - 4]) != crc:
            return f"its PNG chunk {kind.decode('latin-1')!r} at byte {position} is damaged"
        if kind == b"IEND":
            return None
        position = end
    return "it ends before the PNG's IEND chunk"


def _jpeg_complete(data: bytes) -> str | None:
    # Walk the segments to the main image's scan (an EXIF thumbnail inside APP1 has its own
    # EOI, which must not count), then require an end-of-image marker after it.
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return f"its JPEG segment at byte {position} is damaged"
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker == 0xDA:
            if data.rfind(b"\xff\xd9") <= position:
                return "it ends before the JPEG's end-of-image marker"
            return None
        if marker == 0xD9:
            return "the JPEG ends before its image data"
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        position += 2 + length
    return "it ends before the JPEG's image data"


def _webp_complete(data: bytes) -> str | None:
    (size,) = struct.unpack("<I", data[4:8])
    if size + 8 > len(data):
        return f"the WEBP declares {size + 8:,} bytes but the file has {len(data):,}"
    return None


def _bmp_complete(data: bytes) -> str | None:
    (size,) = struct.unpack("<I", data[2:6])
    (offset,) = struct.unpack("<I", data[10:14])
    if size > len(data) or offset > len(data):
        return f"the BMP declares {max(size, offset):,} bytes but the file has {len(data):,}"
    return None


_COMPLETENESS: Final = {
    "PNG": _png_complete,
    "JPEG": _jpeg_complete,
    "WEBP": _webp_complete,
    "BMP": _bmp_complete,
}


def _decode_with_pillow(pillow: ModuleType, data: bytes, name: str) -> str | None:
    try:
        with pillow.open(io.BytesIO(data)) as image:
            if name == "PNG":
                image.verify()  # every chunk and its CRC, with no pixels in memory
                return None
            if name == "JPEG":
                # Decode at 1/8 scale: every byte of the scan is read, little memory is used.
                image.draft("L", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (OSError, SyntaxError, ValueError, struct.error, zlib.error) as exc:
        return f"its {name} data cannot be decoded ({exc})"
    return None


def check_complete(data: bytes, header: ImageHeader) -> str | None:
    """Why an image whose header passed is not whole (cut off, damaged), or None when it is.

    The built-in reader follows PNG chunks (with their CRCs) to ``IEND``, JPEG segments to the
    scan and its end-of-image marker, and the lengths WEBP and BMP declare. With Pillow
    installed the image is also decoded (JPEG at 1/8 scale, PNG by ``verify``), which finds
    damage inside the compressed data as well. Blocks; run it in a thread.
    """
    check = _COMPLETENESS.get(header.format)
    try:
        problem = None if check is None else check(data)
    except (struct.error, IndexError):
        problem = "it ends in the middle of its header"
    if problem is not None:
        return problem
    pillow = _pillow_image()
    if pillow is None:
        return None
    return _decode_with_pillow(pillow, data, header.format)


# --- the rules --------------------------------------------------------------------------------


def _megabytes(size: int) -> str:
    return f"{size:,} bytes ({size / (1024 * 1024):.2f} MB)"


def check_byte_size(size: int, rules: ImageRules, *, field: str, source: str, model: str) -> None:
    """Refuse a file larger than the model takes, before reading it.

    Raises:
        ValidationError: ``size`` bytes is over the limit.
    """
    if size > rules.max_bytes:
        raise ValidationError(
            field,
            f"{source}: is {_megabytes(size)}; {model} takes at most {_megabytes(rules.max_bytes)}",
        )


def check_image(
    data: bytes, rules: ImageRules, *, field: str, source: str, model: str
) -> ImageHeader:
    """Check an image's bytes against a model's rules. Blocks; run it in a thread.

    Checks, in order: size in bytes, format by content, resolution (either orientation), aspect
    ratio, and that the file is whole (``check_complete``).

    Args:
        data: the whole file.
        rules: the model's limits.
        field: the request field, for the error (``"image"``, ``"style_ref"``, ``"sketch"``).
        source: how to name the input in an error (its path, or "the image bytes").
        model: the model's name, for the error.

    Returns:
        The image's header.

    Raises:
        ValidationError: a rule is broken; the message names the input, the rule and the model.
    """

    def refuse(rule: str) -> ValidationError:
        return ValidationError(field, f"{source}: {rule}")

    check_byte_size(len(data), rules, field=field, source=source, model=model)
    try:
        header = read_header(data)
    except ValueError as exc:
        raise refuse(f"looks like an image, but {exc}") from None
    accepted = ", ".join(sorted(rules.formats))
    if header is None:
        raise refuse(f"is not an image {model} can read (by its content); it takes {accepted}")
    if header.format not in rules.formats:
        raise refuse(f"is {header.format} (by its content); {model} takes {accepted}")
    long_side, short_side = max(header.width, header.height), min(header.width, header.height)
    size = f"{header.width}x{header.height}"
    if short_side < rules.min_side:
        raise refuse(
            f"is {size} pixels; {model} needs at least {rules.min_side} pixels on each side"
        )
    max_long, max_short = rules.max_size
    if long_side > max_long or short_side > max_short:
        raise refuse(
            f"is {size} pixels; {model} takes at most {max_long}x{max_short} (either orientation)"
        )
    if long_side > rules.max_aspect_ratio * short_side:
        raise refuse(
            f"is {size} pixels, {long_side / short_side:.2f}:1; {model} takes a long side at most"
            f" {rules.max_aspect_ratio:g} times the short side"
        )
    incomplete = check_complete(data, header)
    if incomplete is not None:
        raise refuse(f"is not a whole {header.format} file: {incomplete}")
    return header


def verify_image_file(path: Path) -> str:
    """The format of a downloaded file, checked by its content. Blocks; run it in a thread.

    Returns:
        The format name (``"PNG"``, ``"JPEG"``, ...).

    Raises:
        ValueError: the file is not an image (the message says what it starts with).
    """
    with path.open("rb") as file:
        head = file.read(SNIFF_BYTES)
    name = sniff_format(head)
    if name is None:
        raise ValueError(f"the content is not an image (it starts {head[:16]!r})")
    pillow = _pillow_image()
    if pillow is not None:
        try:
            with pillow.open(path) as image:
                name = _PILLOW_FORMATS.get(str(image.format), str(image.format))
        except (OSError, SyntaxError, pillow.DecompressionBombError) as exc:
            raise ValueError(f"the {name} content cannot be read as an image ({exc})") from None
    return name

"""The pictures the emulator serves: result images drawn from the inputs, and sample inputs.

Owns pixels only: given input bytes and a style, returns encoded image bytes. Uses Pillow when
installed; without it, draws plain PNGs of the right size with zlib, so the emulator still works
(less prettily). Blocking and CPU-bound: the core calls it lazily, once per image, on download.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache
from types import ModuleType

__all__ = ["render_repaint", "render_sketch", "sample_image", "stand_in_image"]

REPAINT_SHORT_SIDE = 1536
SKETCH_SIDE = 768


def _pillow() -> ModuleType | None:
    try:
        import PIL.Image
    except ImportError:
        return None
    return PIL


def _tint(seed: int) -> tuple[int, int, int]:
    # A colour per style, spread around the wheel so neighbouring styles look different.
    hue = (seed * 47) % 360
    sector, rest = divmod(hue, 60)
    rising, falling = int(255 * rest / 60), int(255 * (60 - rest) / 60)
    return [
        (255, rising, 0),
        (falling, 255, 0),
        (0, 255, rising),
        (0, falling, 255),
        (rising, 0, 255),
        (255, 0, falling),
    ][sector]


def plain_png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, written without Pillow (rows compress to almost nothing)."""
    row = b"\x00" + bytes(color) * width
    pixels = zlib.compress(row * height, 6)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def repaint_size(width: int, height: int) -> tuple[int, int]:
    """The output size for an input: the same aspect ratio, the short side 1536 px."""
    if width <= height:
        return REPAINT_SHORT_SIDE, round(height * REPAINT_SHORT_SIDE / width)
    return round(width * REPAINT_SHORT_SIDE / height), REPAINT_SHORT_SIDE


def _open_rgb(pil: ModuleType, data: bytes | None, size: tuple[int, int]) -> object:
    image_module = pil.Image
    if data is not None:
        try:
            with image_module.open(io.BytesIO(data)) as source:
                return source.convert("RGB").resize(size)
        except (OSError, ValueError, SyntaxError):
            pass
    return image_module.new("RGB", size, (200, 200, 200))


def _label(pil: ModuleType, image: object, text: str) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)  # type: ignore[arg-type]
    width = image.size[0]  # type: ignore[attr-defined]
    band = max(24, width // 24)
    draw.rectangle((0, 0, width, band + 8), fill=(0, 0, 0))
    draw.text((8, 4), text, fill=(255, 255, 255), font_size=band)


def _encode(image: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # type: ignore[attr-defined]
    return buffer.getvalue()


def render_repaint(
    data: bytes | None, width: int, height: int, style_index: int, *, detailed: bool = True
) -> bytes:
    """A repainted portrait: the input posterized and tinted by style, labelled, short side 1536.

    Args:
        data: the input image's bytes (None draws a grey canvas).
        width: the input's width.
        height: the input's height.
        style_index: the style, which picks the tint and the label.
        detailed: False draws a plain image of the right size (fast, for load tests).
    """
    size = repaint_size(width, height)
    pil = _pillow() if detailed else None
    if pil is None:
        return plain_png(*size, _tint(style_index))
    from PIL import ImageChops, ImageOps

    image = ImageOps.posterize(_open_rgb(pil, data, size), 3)  # type: ignore[arg-type]
    image = ImageChops.multiply(image, pil.Image.new("RGB", size, _tint(style_index)))
    _label(pil, image, f"style {style_index} - repainted by the DashScope emulator")
    return _encode(image)


def render_sketch(
    data: bytes | None, style: str, prompt: str, index: int, *, detailed: bool = True
) -> bytes:
    """A 768x768 image from a sketch: its strokes filled with a style colour, labelled."""
    size = (SKETCH_SIDE, SKETCH_SIDE)
    seed = sum(style.encode()) + 11 * index
    pil = _pillow() if detailed else None
    if pil is None:
        return plain_png(*size, _tint(seed))
    from PIL import ImageChops, ImageFilter, ImageOps

    gray = _open_rgb(pil, data, size).convert("L")  # type: ignore[attr-defined]
    strokes = ImageOps.invert(gray).filter(ImageFilter.MaxFilter(5))
    canvas = pil.Image.new("RGB", size, _tint(seed))
    paper = pil.Image.new("RGB", size, (250, 246, 236))
    image = ImageChops.composite(canvas, paper, strokes)
    _label(pil, image, f"{style} #{index + 1}: {prompt[:40]}")
    return _encode(image)


@lru_cache(maxsize=4)
def sample_image(kind: str) -> bytes:
    """A sample input: ``"portrait"`` (768x1024 PNG) or ``"sketch"`` (768x768 PNG)."""
    pil = _pillow()
    width, height = (768, 1024) if kind == "portrait" else (768, 768)
    if pil is None:
        return plain_png(width, height, (230, 200, 170) if kind == "portrait" else (255, 255, 255))
    from PIL import ImageDraw

    if kind == "portrait":
        image = pil.Image.new("RGB", (width, height), (120, 160, 200))
        draw = ImageDraw.Draw(image)
        draw.ellipse((234, 220, 534, 600), fill=(235, 200, 170))  # a face
        draw.ellipse((314, 350, 354, 390), fill=(40, 40, 40))
        draw.ellipse((414, 350, 454, 390), fill=(40, 40, 40))
        draw.arc((324, 420, 444, 520), 20, 160, fill=(150, 60, 60), width=8)
        draw.rectangle((184, 640, 584, 1024), fill=(60, 90, 140))  # shoulders
    else:
        image = pil.Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        draw.line((384, 700, 384, 300), fill=(0, 0, 0), width=12)  # a tree
        draw.ellipse((214, 120, 554, 420), outline=(0, 0, 0), width=10)
        draw.line((100, 700, 668, 700), fill=(0, 0, 0), width=8)
    return _encode(image)


@lru_cache(maxsize=8)
def stand_in_image(kind: str, width: int, height: int, seed: int) -> bytes:
    """The picture a made-up input URL stands for: the sample ``kind`` at ``width`` x ``height``,
    tinted by ``seed`` (so different URLs give different pictures)."""
    tint = _tint(seed)
    pil = _pillow()
    if pil is None:
        return plain_png(width, height, tint)
    from PIL import ImageChops

    with pil.Image.open(io.BytesIO(sample_image(kind))) as sample:
        image = sample.convert("RGB").resize((width, height))
    wash = tuple(255 - (255 - channel) // 4 for channel in tint)  # a light wash of the tint
    return _encode(ImageChops.multiply(image, pil.Image.new("RGB", (width, height), wash)))

"""Image headers and the model rules, with Pillow and with the built-in reader."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dashscope_async import _images
from dashscope_async._config import SKETCH_TO_IMAGE, STYLE_REPAINT, ImageRules
from dashscope_async._errors import ValidationError
from dashscope_async._images import (
    ImageHeader,
    check_image,
    read_header,
    sniff_format,
    verify_image_file,
)
from tests.images_util import (
    big_endian_tiff,
    core_header_bmp,
    make_image,
    pillow_hidden,
    top_down_bmp,
)

Reader = Callable[[], AbstractContextManager[None]]


@contextmanager
def _pillow_present() -> Iterator[None]:
    assert _images._pillow_image() is not None
    yield


@contextmanager
def _pillow_missing() -> Iterator[None]:
    with pillow_hidden():
        assert _images._pillow_image() is None
        yield


@pytest.fixture(params=["pillow", "builtin"])
def reader(request: pytest.FixtureRequest) -> Reader:
    """Runs the test twice: the library with Pillow, then as if Pillow were not installed.

    Make the test images first (Pillow makes them), then call the library inside ``with reader():``.
    """
    return _pillow_present if request.param == "pillow" else _pillow_missing


def jpeg_with_exif(width: int, height: int) -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * 3000  # ImageDescription: pushes the frame header past a long APP1
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def jpeg_with_fill_bytes(width: int, height: int) -> bytes:
    data = make_image("JPEG", width, height)
    return data[:2] + b"\xff\xff\xff" + data[2:]


VARIANTS: dict[str, Callable[[int, int], bytes]] = {
    "png": lambda w, h: make_image("PNG", w, h),
    "jpeg": lambda w, h: make_image("JPEG", w, h),
    "jpeg-progressive": lambda w, h: make_image("JPEG", w, h, progressive=True),
    "jpeg-exif": jpeg_with_exif,
    "jpeg-fill-bytes": jpeg_with_fill_bytes,
    "bmp": lambda w, h: make_image("BMP", w, h),
    "bmp-top-down": top_down_bmp,
    "webp-lossy": lambda w, h: make_image("WEBP", w, h),
    "webp-lossless": lambda w, h: make_image("WEBP", w, h, lossless=True),
    "webp-extended": lambda w, h: make_image("WEBP", w, h, exif=b"Exif\x00\x00II*\x00"),
    "tiff": lambda w, h: make_image("TIFF", w, h),
}
FORMATS = {
    "png": "PNG",
    "jpeg": "JPEG",
    "jpeg-progressive": "JPEG",
    "jpeg-exif": "JPEG",
    "jpeg-fill-bytes": "JPEG",
    "bmp": "BMP",
    "bmp-top-down": "BMP",
    "webp-lossy": "WEBP",
    "webp-lossless": "WEBP",
    "webp-extended": "WEBP",
    "tiff": "TIFF",
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_both_readers_read_format_and_size(variant: str, reader: Reader) -> None:
    data = VARIANTS[variant](300, 257)
    with reader():
        assert read_header(data) == ImageHeader(FORMATS[variant], 300, 257)


def test_the_builtin_reader_reads_big_endian_tiff_and_core_bmp() -> None:
    with pillow_hidden():
        assert read_header(big_endian_tiff(640, 480)) == ImageHeader("TIFF", 640, 480)
        assert read_header(core_header_bmp(512, 300)) == ImageHeader("BMP", 512, 300)


@settings(max_examples=30, deadline=None)
@given(
    fmt=st.sampled_from(["PNG", "JPEG", "BMP", "WEBP", "TIFF"]),
    width=st.integers(1, 700),
    height=st.integers(1, 700),
)
def test_the_builtin_reader_agrees_with_pillow(fmt: str, width: int, height: int) -> None:
    data = make_image(fmt, width, height)
    with_pillow = read_header(data)
    with pillow_hidden():
        assert read_header(data) == with_pillow == ImageHeader(fmt, width, height)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GIF89a\x01\x00", "GIF"),
        (b"\x00\x00\x00\x1cftypheic", "HEIC"),
        (b"\x00\x00\x00\x1cftypavif", "AVIF"),
        (b"<html><body>", None),
        (b"", None),
    ],
)
def test_sniff_names_formats_the_service_does_not_take(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


def test_unknown_content_has_no_header(reader: Reader) -> None:
    with reader():
        assert read_header(b"<?xml version='1.0'?><Error/>" * 4) is None


def test_a_damaged_header_is_an_error_not_a_guess(reader: Reader) -> None:
    truncated = make_image("JPEG", 300, 300)[:40]
    with reader(), pytest.raises(ValidationError) as caught:
        check_image(truncated, STYLE_REPAINT.image_rules, field="image", source="me.jpg", model="m")
    assert caught.value.field == "image"
    assert "me.jpg" in str(caught.value)


# --- the rules --------------------------------------------------------------------------------

REPAINT = STYLE_REPAINT.image_rules
SKETCH = SKETCH_TO_IMAGE.image_rules

RULE_CASES = [
    # (id, rules, format, width, height, fragment of the message or None when accepted)
    ("repaint-smallest", REPAINT, "PNG", 256, 256, None),
    ("repaint-largest", REPAINT, "PNG", 5760, 3240, None),
    ("repaint-largest-portrait", REPAINT, "PNG", 3240, 5760, None),
    ("repaint-2-to-1", REPAINT, "JPEG", 1024, 512, None),
    ("repaint-bmp", REPAINT, "BMP", 300, 300, None),
    ("repaint-webp", REPAINT, "WEBP", 300, 300, None),
    ("repaint-too-small", REPAINT, "PNG", 255, 300, "at least 256"),
    ("repaint-too-long", REPAINT, "PNG", 5761, 3000, "at most 5760x3240"),
    ("repaint-too-wide-short", REPAINT, "PNG", 3500, 3241, "at most 5760x3240"),
    ("repaint-aspect", REPAINT, "PNG", 1025, 512, "2 times"),
    ("repaint-aspect-portrait", REPAINT, "PNG", 300, 601, "2 times"),
    ("repaint-tiff", REPAINT, "TIFF", 300, 300, "is TIFF"),
    ("repaint-gif", REPAINT, "GIF", 300, 300, "is GIF"),
    ("sketch-smallest", SKETCH, "PNG", 256, 256, None),
    ("sketch-largest", SKETCH, "TIFF", 2048, 2048, None),
    ("sketch-webp", SKETCH, "WEBP", 400, 300, None),
    ("sketch-too-large", SKETCH, "PNG", 2049, 2000, "at most 2048x2048"),
    ("sketch-too-small", SKETCH, "JPEG", 300, 200, "at least 256"),
    ("sketch-aspect", SKETCH, "PNG", 1800, 600, "2 times"),
    ("sketch-bmp", SKETCH, "BMP", 300, 300, "is BMP"),
]


@pytest.mark.parametrize(
    ("rules", "fmt", "width", "height", "refusal"),
    [case[1:] for case in RULE_CASES],
    ids=[case[0] for case in RULE_CASES],
)
def test_rules(
    rules: ImageRules, fmt: str, width: int, height: int, refusal: str | None, reader: Reader
) -> None:
    data = make_image(fmt, width, height)
    if refusal is None:
        with reader():
            header = check_image(data, rules, field="sketch", source="a.png", model="the-model")
        assert (header.format, header.width, header.height) == (fmt, width, height)
        return
    with reader(), pytest.raises(ValidationError) as caught:
        check_image(data, rules, field="sketch", source="a.png", model="the-model")
    assert caught.value.field == "sketch"
    assert caught.value.rule.startswith("a.png: ")
    assert refusal in caught.value.rule
    assert "the-model" in caught.value.rule


def test_rules_refuse_more_than_ten_megabytes_before_reading_the_header(reader: Reader) -> None:
    data = make_image("PNG", 300, 300)
    padded = data + b"\x00" * (REPAINT.max_bytes + 1 - len(data))
    with reader(), pytest.raises(ValidationError, match="10,485,761 bytes") as caught:
        check_image(padded, REPAINT, field="image", source="big.png", model="m")
    assert "at most 10,485,760 bytes" in caught.value.rule
    # Exactly at the limit is fine.
    with reader():
        check_image(padded[:-1], REPAINT, field="image", source="big.png", model="m")


def test_rules_refuse_content_that_is_not_an_image(reader: Reader) -> None:
    with reader(), pytest.raises(ValidationError, match="not an image") as caught:
        check_image(b"just some text" * 10, SKETCH, field="sketch", source="notes.png", model="m")
    assert "JPEG, PNG, TIFF, WEBP" in caught.value.rule


def test_rules_judge_the_content_not_the_name(reader: Reader) -> None:
    # A PNG named .jpg is a PNG; a BMP named .png is still a BMP, which sketches may not be.
    png, bmp = make_image("PNG", 300, 300), make_image("BMP", 300, 300)
    with reader():
        assert check_image(png, REPAINT, field="f", source="x.jpg", model="m").format == "PNG"
    with reader(), pytest.raises(ValidationError, match="is BMP"):
        check_image(bmp, SKETCH, field="f", source="x.png", model="m")


@pytest.mark.parametrize("side", [10000, 60000], ids=["bomb-warning-size", "bomb-error-size"])
def test_a_huge_declared_size_is_refused_by_the_rules(side: int, reader: Reader) -> None:
    # Sizes Pillow warns about (over 89M pixels) or refuses (over 179M): our rule answers first,
    # with no DecompressionBombWarning (which this suite turns into an error).
    data = bytearray(make_image("PNG", 300, 300))
    data[16:24] = struct.pack(">II", side, side)
    with reader(), pytest.raises(ValidationError, match=f"{side}x{side} pixels"):
        check_image(bytes(data), REPAINT, field="image", source="bomb.png", model="m")


# --- downloaded files -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_verify_image_file_names_the_format(tmp_path: Path, fmt: str, reader: Reader) -> None:
    path = tmp_path / "x.part"
    path.write_bytes(make_image(fmt, 64, 64))
    with reader():
        assert verify_image_file(path) == fmt


def test_verify_image_file_refuses_other_content(tmp_path: Path, reader: Reader) -> None:
    path = tmp_path / "x.part"
    path.write_bytes(b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>")
    with reader(), pytest.raises(ValueError, match="not an image"):
        verify_image_file(path)


# --- completeness -----------------------------------------------------------------------------


def _noisy(fmt: str, width: int = 300, height: int = 300) -> bytes:
    """An image whose compressed data is long, so a cut lands inside it."""
    pixels = bytes((x * 7919 + y * 104729) % 251 for y in range(height) for x in range(width))
    image = Image.frombytes("L", (width, height), pixels).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_a_file_cut_in_half_is_refused_by_either_reader(fmt: str, reader: Reader) -> None:
    whole = _noisy(fmt)
    half = whole[: len(whole) // 2]
    with reader():
        check_image(whole, STYLE_REPAINT.image_rules, field="image", source="x", model="m")
        with pytest.raises(ValidationError, match=r"whole|header could not be read"):
            check_image(half, STYLE_REPAINT.image_rules, field="image", source="x", model="m")


def test_a_damaged_png_of_the_right_length_is_found_by_its_crc(reader: Reader) -> None:
    whole = bytearray(_noisy("PNG"))
    middle = len(whole) // 2
    whole[middle : middle + 64] = bytes(64)
    with reader():
        problem = _images.check_complete(bytes(whole), ImageHeader("PNG", 300, 300))
    assert problem is not None and "damaged" in problem


def test_a_jpeg_whose_exif_thumbnail_ends_early_is_still_whole(reader: Reader) -> None:
    data = jpeg_with_exif(400, 300)
    with reader():
        assert _images.check_complete(data, ImageHeader("JPEG", 400, 300)) is None

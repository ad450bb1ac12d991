"""What the service says about input images, and what a URL the emulator cannot fetch stands for.

Owns each model's wording of its input errors (as the model's API page words them), the size
rules applied to an input's width and height, and stand-ins: the plausible image, fixed by the
URL, that a made-up URL outside loopback stands for. Pure values and arithmetic: the core decides
when they apply, ``_render`` draws the pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

import attrs

from .._config import ImageRules, ModelKind, ModelSpec
from ._tasks import InputProblem

__all__ = ["INPUT_WORDING", "InputWording", "StandIn", "fits", "stand_in"]


@attrs.frozen
class InputWording:
    """One model's answers to bad inputs (a FAILED task's ``code`` and ``message``).

    Attributes:
        unreachable: the input could not be downloaded (also a malformed URL at submit).
        bad_format: the input is not an image of a format the model reads.
        too_large: the input is over the size limit (10 MB).
        bad_resolution: the input's sides or aspect ratio are out of range.
    """

    unreachable: InputProblem
    bad_format: InputProblem
    too_large: InputProblem
    bad_resolution: InputProblem


_REPAINT_FORMAT: Final = InputProblem("InvalidImageFormat", "The input image is in invalid format")
# The sketch page lists no format code: its InvalidURL message names the formats instead.
_SKETCH_UNREACHABLE: Final = InputProblem(
    "InvalidURL",
    "The request URL is invalid, please check the request URL is available and the request image"
    " format is one of the following types: JPEG, JPG, PNG, BMP, and WEBP.",
)

#: Each model's wording, verbatim from its API page's error table.
INPUT_WORDING: Final[Mapping[ModelKind, InputWording]] = {
    "repaint": InputWording(
        unreachable=InputProblem(
            "InvalidURL", "The request URL is invalid, make sure the url is correct and is an image"
        ),
        bad_format=_REPAINT_FORMAT,
        too_large=_REPAINT_FORMAT,
        bad_resolution=InputProblem(
            "InvalidImageResolution", "The input image resolution is too large or small"
        ),
    ),
    "sketch": InputWording(
        unreachable=_SKETCH_UNREACHABLE,
        bad_format=_SKETCH_UNREACHABLE,
        too_large=_SKETCH_UNREACHABLE,
        bad_resolution=InputProblem(
            "InvalidFile.Resolution",
            "The image resolution is invalid, please make sure that the aspect ratio is smaller"
            " than 2.0, and largest length of image is smaller than 4096.",
        ),
    ),
}


def fits(width: int, height: int, rules: ImageRules, *, aspect: bool = True) -> bool:
    """Whether an image of ``width`` x ``height`` passes a model's size rules.

    Args:
        width: the image's width in pixels.
        height: the image's height in pixels.
        rules: the model's rules.
        aspect: also check the aspect ratio (a repaint's style reference is only advised to).
    """
    long_side, short_side = max(width, height), min(width, height)
    max_long, max_short = rules.max_size
    if short_side < rules.min_side or long_side > max_long or short_side > max_short:
        return False
    return not aspect or long_side <= rules.max_aspect_ratio * short_side


@attrs.frozen
class StandIn:
    """The image a URL the emulator cannot fetch stands for: a size and a drawing seed."""

    width: int
    height: int
    seed: int


# Sizes people send: portraits for the repaint, mostly square sketches (the output is square).
_STAND_IN_SIZES: Final[Mapping[ModelKind, tuple[tuple[int, int], ...]]] = {
    "repaint": ((768, 1024), (1024, 768), (1024, 1024), (1080, 1440), (720, 1280)),
    "sketch": ((768, 768), (512, 512), (1024, 1024), (768, 1024)),
}


def stand_in(url: str, spec: ModelSpec) -> StandIn:
    """The stand-in for ``url`` as an input of ``spec``'s model: the same URL, the same image."""
    digest = hashlib.sha256(url.encode()).digest()
    sizes = [size for size in _STAND_IN_SIZES[spec.kind] if fits(*size, spec.image_rules)]
    width, height = sizes[digest[0] % len(sizes)]
    return StandIn(width, height, int.from_bytes(digest[1:5], "big"))

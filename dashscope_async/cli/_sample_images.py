"""The demo's input images, drawn with Pillow: cartoon portraits, a style reference, sketches.

Owns only drawing and saving them (blocking; call from a worker thread). The portraits keep the
repaint model's rules (at least 256 px a side, at most 2:1), the sketches the sketch model's
(black strokes on white, at most 2048 px).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs
from PIL import Image, ImageDraw

Color = tuple[int, int, int]
#: Drawn this many times larger, then scaled down: smooth edges without an anti-aliasing API.
SUPERSAMPLE: Final = 2


@attrs.frozen
class Portrait:
    """How one cartoon face looks."""

    name: str
    skin: Color
    hair: Color
    hair_style: str  # "long", "short", "bun", "curly"
    shirt: Color
    background: tuple[Color, Color]
    glasses: bool = False
    beard: bool = False


PORTRAITS: Final = (
    Portrait(
        "ada",
        skin=(241, 200, 170),
        hair=(94, 54, 30),
        hair_style="long",
        shirt=(52, 120, 196),
        background=((255, 226, 170), (250, 170, 140)),
        glasses=True,
    ),
    Portrait(
        "ben",
        skin=(196, 140, 104),
        hair=(30, 26, 24),
        hair_style="short",
        shirt=(208, 76, 62),
        background=((186, 226, 255), (120, 170, 235)),
        beard=True,
    ),
    Portrait(
        "chloe",
        skin=(250, 214, 190),
        hair=(212, 160, 70),
        hair_style="bun",
        shirt=(70, 160, 110),
        background=((230, 210, 255), (180, 150, 235)),
    ),
)


def _gradient(size: tuple[int, int], top: Color, bottom: Color) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(height - 1, 1)
        color = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (width, y)], fill=color)
    return image


def _darker(color: Color, amount: float = 0.75) -> Color:
    return (round(color[0] * amount), round(color[1] * amount), round(color[2] * amount))


def draw_portrait(person: Portrait, size: tuple[int, int] = (512, 640)) -> Image.Image:
    """A friendly cartoon head and shoulders, made of ellipses and arcs."""
    s = SUPERSAMPLE
    width, height = size[0] * s, size[1] * s
    image = _gradient((width, height), *person.background)
    draw = ImageDraw.Draw(image)
    cx = width // 2
    head_w, head_h = int(width * 0.42), int(height * 0.44)
    head_top = int(height * 0.17)
    head = (cx - head_w // 2, head_top, cx + head_w // 2, head_top + head_h)
    outline = _darker(person.skin, 0.6)
    line = 3 * s
    # Long hair falls behind the shoulders and the head.
    if person.hair_style == "long":
        draw.rounded_rectangle(
            (head[0] - 24 * s, head_top + head_h // 4, head[2] + 24 * s, int(height * 0.8)),
            radius=60 * s,
            fill=person.hair,
        )
    # Shoulders and neck.
    draw.ellipse(
        (int(width * 0.08), int(height * 0.72), int(width * 0.92), int(height * 1.25)),
        fill=person.shirt,
        outline=_darker(person.shirt),
        width=line,
    )
    neck_w = head_w // 3
    draw.rectangle(
        (cx - neck_w // 2, head[3] - 30 * s, cx + neck_w // 2, int(height * 0.76)), fill=person.skin
    )
    draw.chord(
        (cx - neck_w // 2, int(height * 0.72), cx + neck_w // 2, int(height * 0.8)),
        0,
        180,
        fill=person.skin,
    )
    # Ears, then the head.
    ear_y = head_top + int(head_h * 0.45)
    for side in (-1, 1):
        ex = cx + side * head_w // 2
        draw.ellipse(
            (ex - 18 * s, ear_y - 28 * s, ex + 18 * s, ear_y + 28 * s),
            fill=person.skin,
            outline=outline,
            width=line,
        )
    draw.ellipse(head, fill=person.skin, outline=outline, width=line)
    # Hair on top.
    if person.hair_style == "bun":
        draw.ellipse(
            (cx - 55 * s, head_top - 85 * s, cx + 55 * s, head_top + 20 * s), fill=person.hair
        )
    if person.hair_style in ("long", "bun", "short"):
        depth = 0.36 if person.hair_style != "short" else 0.28
        draw.chord(
            (
                head[0] - 6 * s,
                head_top - 14 * s,
                head[2] + 6 * s,
                head_top + int(head_h * depth * 2),
            ),
            180,
            360,
            fill=person.hair,
        )
    # Eyes, brows, nose, mouth, cheeks.
    eye_y = head_top + int(head_h * 0.47)
    eye_dx = head_w // 5
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse(
            (ex - 22 * s, eye_y - 15 * s, ex + 22 * s, eye_y + 15 * s),
            fill=(255, 255, 255),
            outline=outline,
            width=2 * s,
        )
        draw.ellipse((ex - 10 * s, eye_y - 10 * s, ex + 10 * s, eye_y + 10 * s), fill=(50, 40, 36))
        draw.ellipse((ex - 3 * s, eye_y - 7 * s, ex + 3 * s, eye_y - 1 * s), fill=(255, 255, 255))
        draw.arc(
            (ex - 26 * s, eye_y - 48 * s, ex + 26 * s, eye_y - 16 * s),
            200,
            340,
            fill=_darker(person.hair, 0.8),
            width=5 * s,
        )
        draw.ellipse(
            (ex - 20 * s, eye_y + 36 * s, ex + 20 * s, eye_y + 54 * s), fill=(244, 164, 160)
        )
        if person.glasses:
            draw.ellipse(
                (ex - 34 * s, eye_y - 28 * s, ex + 34 * s, eye_y + 28 * s),
                outline=(40, 40, 40),
                width=4 * s,
            )
    if person.glasses:
        draw.line(
            (cx - eye_dx + 34 * s, eye_y, cx + eye_dx - 34 * s, eye_y),
            fill=(40, 40, 40),
            width=4 * s,
        )
    nose_y = head_top + int(head_h * 0.62)
    draw.arc(
        (cx - 14 * s, nose_y - 16 * s, cx + 14 * s, nose_y + 8 * s),
        20,
        160,
        fill=outline,
        width=line,
    )
    mouth_y = head_top + int(head_h * 0.74)
    if person.beard:
        draw.chord(
            (head[0] + 10 * s, head_top + int(head_h * 0.55), head[2] - 10 * s, head[3] + 10 * s),
            0,
            180,
            fill=person.hair,
        )
        draw.ellipse(
            (cx - 40 * s, mouth_y - 14 * s, cx + 40 * s, mouth_y + 18 * s), fill=person.skin
        )
    draw.chord(
        (cx - 38 * s, mouth_y - 22 * s, cx + 38 * s, mouth_y + 16 * s),
        10,
        170,
        fill=(170, 60, 70),
        outline=_darker((170, 60, 70)),
        width=2 * s,
    )
    return image.resize(size, Image.Resampling.LANCZOS)


def draw_style_reference(size: tuple[int, int] = (512, 512), seed: int = 7) -> Image.Image:
    """A swirling, colourful 'painting' whose style a custom repaint copies."""
    s = SUPERSAMPLE
    width, height = size[0] * s, size[1] * s
    image = _gradient((width, height), (18, 40, 110), (10, 16, 50))
    draw = ImageDraw.Draw(image)
    rng = random.Random(seed)
    palette = [(255, 214, 64), (250, 140, 40), (110, 190, 255), (240, 240, 200), (80, 120, 230)]
    for _ in range(46):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(20, 90) * s
        color = rng.choice(palette)
        for turn in range(9):
            r = radius * (1 - turn / 10)
            start = rng.uniform(0, 360)
            draw.arc((x - r, y - r, x + r, y + r), start, start + 250, fill=color, width=5 * s)
    for _ in range(5):  # a few bright stars
        x, y = rng.uniform(0, width), rng.uniform(0, height * 0.5)
        r = rng.uniform(14, 26) * s
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 236, 120))
    return image.resize(size, Image.Resampling.LANCZOS)


def _branch(
    draw: ImageDraw.ImageDraw,
    x: float,
    y: float,
    angle: float,
    length: float,
    depth: int,
    rng: random.Random,
) -> None:
    if depth == 0 or length < 6:
        return
    x2 = x + length * math.cos(math.radians(angle))
    y2 = y - length * math.sin(math.radians(angle))
    draw.line(
        (x, y, x2, y2), fill=(0, 0, 0), width=max(int(depth * 1.6 * SUPERSAMPLE), SUPERSAMPLE)
    )
    for turn in (-1, 1):
        _branch(
            draw,
            x2,
            y2,
            angle + turn * rng.uniform(20, 38),
            length * rng.uniform(0.68, 0.8),
            depth - 1,
            rng,
        )


def draw_tree_sketch(size: int = 768, seed: int = 3) -> Image.Image:
    """A towering tree in black strokes on white, with the ground and a sun."""
    s = SUPERSAMPLE
    side = size * s
    image = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    ground = side * 0.88
    draw.line((side * 0.05, ground, side * 0.95, ground), fill=(0, 0, 0), width=4 * s)
    # The trunk as two strokes, then the crown as a branching tree.
    draw.line((side * 0.45, ground, side * 0.48, side * 0.66), fill=(0, 0, 0), width=5 * s)
    draw.line((side * 0.55, ground, side * 0.52, side * 0.66), fill=(0, 0, 0), width=5 * s)
    rng = random.Random(seed)
    for angle in (55, 80, 100, 125):
        _branch(draw, side * 0.5, side * 0.66, angle, side * 0.13, 7, rng)
    draw.ellipse(
        (side * 0.78, side * 0.07, side * 0.92, side * 0.21), outline=(0, 0, 0), width=4 * s
    )
    for k in range(8):
        a = math.radians(k * 45)
        cx, cy, r1, r2 = side * 0.85, side * 0.14, side * 0.09, side * 0.12
        draw.line(
            (
                cx + r1 * math.cos(a),
                cy + r1 * math.sin(a),
                cx + r2 * math.cos(a),
                cy + r2 * math.sin(a),
            ),
            fill=(0, 0, 0),
            width=3 * s,
        )
    return image.resize((size, size), Image.Resampling.LANCZOS)


def draw_house_sketch(size: int = 768) -> Image.Image:
    """A cottage with a door, windows, a chimney and a path, in black strokes on white."""
    s = SUPERSAMPLE
    side = size * s
    image = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    w = 5 * s

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (side * x0, side * y0, side * x1, side * y1)

    draw.rectangle(box(0.22, 0.45, 0.78, 0.82), outline=(0, 0, 0), width=w)
    draw.polygon(
        [(side * 0.16, side * 0.47), (side * 0.5, side * 0.2), (side * 0.84, side * 0.47)],
        outline=(0, 0, 0),
        width=w,
    )
    draw.rectangle(box(0.64, 0.22, 0.72, 0.36), outline=(0, 0, 0), width=w)
    draw.rectangle(box(0.44, 0.6, 0.56, 0.82), outline=(0, 0, 0), width=w)
    for x0 in (0.28, 0.62):
        draw.rectangle(box(x0, 0.53, x0 + 0.1, 0.63), outline=(0, 0, 0), width=w)
        draw.line(
            (side * (x0 + 0.05), side * 0.53, side * (x0 + 0.05), side * 0.63),
            fill=(0, 0, 0),
            width=3 * s,
        )
        draw.line(
            (side * x0, side * 0.58, side * (x0 + 0.1), side * 0.58), fill=(0, 0, 0), width=3 * s
        )
    draw.line((side * 0.05, side * 0.82, side * 0.95, side * 0.82), fill=(0, 0, 0), width=w)
    draw.line((side * 0.46, side * 0.82, side * 0.36, side * 0.97), fill=(0, 0, 0), width=3 * s)
    draw.line((side * 0.54, side * 0.82, side * 0.64, side * 0.97), fill=(0, 0, 0), width=3 * s)
    for k in range(3):  # smoke
        y = side * (0.16 - k * 0.05)
        draw.arc(
            (side * (0.66 + 0.03 * k), y - side * 0.03, side * (0.74 + 0.03 * k), y + side * 0.03),
            180,
            360,
            fill=(0, 0, 0),
            width=3 * s,
        )
    return image.resize((size, size), Image.Resampling.LANCZOS)


#: File name -> how to draw it.
SAMPLES: Final[dict[str, Callable[[], Image.Image]]] = {
    **{f"{p.name}.png": (lambda p=p: draw_portrait(p)) for p in PORTRAITS},  # type: ignore[misc]
    "style-swirls.png": draw_style_reference,
    "tree-sketch.png": draw_tree_sketch,
    "house-sketch.png": draw_house_sketch,
}


def write_sample_images(folder: Path) -> dict[str, Path]:
    """Draw every sample into ``folder`` (created if missing); returns name -> path. Blocks."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, draw in SAMPLES.items():
        path = folder / name
        draw().save(path, format="PNG", optimize=True)
        written[name] = path
    return written

"""The ``styles`` command: the preset styles of both models, with their indexes and names.

Owns the descriptions shown to users; the styles themselves live in ``_models``.
"""

from __future__ import annotations

import json
from typing import Final

import click
from rich.table import Table

from .._config import SKETCH_TO_IMAGE, STYLE_REPAINT
from .._models import RepaintStyle, SketchStyle, style_label
from ._app import json_option, settings_of

REPAINT_DESCRIPTIONS: Final[dict[RepaintStyle, str]] = {
    RepaintStyle.RETRO_COMIC: "retro comic (复古漫画)",
    RepaintStyle.FAIRY_TALE_3D: "3D fairy tale (3D童话)",
    RepaintStyle.ANIME: "anime (二次元)",
    RepaintStyle.FRESH: "fresh, light colours (小清新)",
    RepaintStyle.FUTURISTIC: "futuristic tech (未来科技)",
    RepaintStyle.CHINESE_INK: "Chinese ink painting (国画古风)",
    RepaintStyle.WARRIOR_GENERAL: "warrior general (将军百战)",
    RepaintStyle.COLORFUL_CARTOON: "colourful cartoon (炫彩卡通)",
    RepaintStyle.ELEGANT_CHINESE: "elegant Chinese (清雅国风)",
    RepaintStyle.NEW_YEAR: "New Year celebration (喜迎新年)",
    RepaintStyle.GONGBI: "gongbi fine-line painting (国风工笔)",
    RepaintStyle.NEW_YEAR_GREETINGS: "New Year greetings (恭贺新禧)",
    RepaintStyle.FAIRY_TALE_WORLD: "fairy-tale world (童话世界)",
    RepaintStyle.CLAY_WORLD: "clay world (黏土世界)",
    RepaintStyle.PIXEL_WORLD: "pixel world (像素世界)",
    RepaintStyle.ADVENTURE_WORLD: "adventure world (冒险世界)",
    RepaintStyle.JAPANESE_MANGA_WORLD: "Japanese manga world (日漫世界)",
    RepaintStyle.WORLD_3D: "3D world (3D世界)",
    RepaintStyle.ANIME_WORLD: "anime world (二次元世界)",
    RepaintStyle.HAND_DRAWN_WORLD: "hand-drawn world (手绘世界)",
    RepaintStyle.CRAYON_WORLD: "crayon world (蜡笔世界)",
    RepaintStyle.FRIDGE_MAGNET_WORLD: "fridge-magnet world (冰箱贴世界)",
    RepaintStyle.BADGE_WORLD: "badge world (吧唧世界)",
}
#: The user guide names these five as supported; the API reference lists all eight.
SKETCH_GUIDE_STYLES: Final = frozenset(
    {
        SketchStyle.FLAT_ILLUSTRATION,
        SketchStyle.OIL_PAINTING,
        SketchStyle.ANIME,
        SketchStyle.CARTOON_3D,
        SketchStyle.WATERCOLOR,
    }
)


def style_name(style: RepaintStyle | SketchStyle) -> str:
    """The name users type: ``anime``, ``oil-painting``."""
    return style_label(style)


def styles_json() -> dict[str, list[dict[str, object]]]:
    return {
        STYLE_REPAINT.name: [
            {"index": int(s), "name": style_name(s), "description": REPAINT_DESCRIPTIONS[s]}
            for s in RepaintStyle
        ]
        + [{"index": -1, "name": "custom", "description": "the style of --style-ref IMAGE"}],
        SKETCH_TO_IMAGE.name: [
            {
                "index": None,
                "name": style_name(s),
                "value": s.value,
                "description": s.value.strip("<>")
                + (
                    ""
                    if s in SKETCH_GUIDE_STYLES or s is SketchStyle.AUTO
                    else " (API reference only)"
                ),
            }
            for s in SketchStyle
        ],
    }


@click.command()
@json_option
@click.pass_context
def styles(ctx: click.Context) -> None:
    """List the preset styles of both models (index, name, description).

    \b
    Repaint takes a name or an index:   --style anime   or   --style 2
    Sketch takes a name:                --style watercolor
    """
    settings = settings_of(ctx)
    out = settings.stdout()
    if settings.json_output:
        out.print_json(json.dumps(styles_json(), ensure_ascii=False))
        return
    repaint = Table(
        title=f"{STYLE_REPAINT.name}  (repaint --style NAME|INDEX)", title_justify="left"
    )
    repaint.add_column("index", justify="right")
    repaint.add_column("name")
    repaint.add_column("description")
    for style in RepaintStyle:
        repaint.add_row(str(int(style)), style_name(style), REPAINT_DESCRIPTIONS[style])
    repaint.add_row("-1", "custom", "the style of a reference image: --style-ref IMAGE")
    sketch = Table(title=f"{SKETCH_TO_IMAGE.name}  (sketch --style NAME)", title_justify="left")
    sketch.add_column("name")
    sketch.add_column("sent as")
    sketch.add_column("note")
    for sketch_style in SketchStyle:
        note = "the model picks" if sketch_style is SketchStyle.AUTO else ""
        if sketch_style not in SKETCH_GUIDE_STYLES and sketch_style is not SketchStyle.AUTO:
            note = "in the API reference, not in the user guide's list"
        sketch.add_row(style_name(sketch_style), sketch_style.value, note)
    out.print(repaint)
    out.print()
    out.print(sketch)

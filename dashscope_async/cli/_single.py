"""The ``repaint`` and ``sketch`` commands: a few jobs from the command line, results downloaded.

Owns turning options into requests and job names; running them is ``_batch.run_jobs``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from .._errors import ValidationError
from .._models import RepaintStyle, Request, SketchStyle, SketchToImage, StyleRepaint
from ._app import CliError, Settings, json_option, run_async, settings_of
from ._batch import BatchReport, JobSpec, report_batch, run_jobs
from ._manifest import check_local_files
from ._params import REPAINT_STYLE, SKETCH_STYLE
from ._styles import style_name

_IS_URL = ("http://", "https://", "oss://", "data:")


def _stem(source: str) -> str:
    if source.lower().startswith(_IS_URL):
        tail = source.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return Path(tail).stem or "image"
    return Path(source).stem or "image"


def unique_keys(names: Sequence[str]) -> list[str]:
    """``names`` with repeats numbered (``a``, ``a-2``), so result files never collide."""
    seen: dict[str, int] = {}
    keys: list[str] = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        keys.append(name if count == 1 else f"{name}-{count}")
    return keys


def _checked(build: object) -> Request:
    assert isinstance(build, StyleRepaint | SketchToImage)
    try:
        check_local_files(build)
    except ValidationError as exc:
        raise CliError(str(exc), hint="nothing was sent; check the file") from None
    return build


def _run(ctx: click.Context, settings: Settings, specs: list[JobSpec], out_dir: Path) -> None:
    client = settings.client()

    async def go() -> BatchReport:
        async with client:
            return await run_jobs(
                client, specs, out_dir=out_dir, settings=settings, console=settings.stderr()
            )

    report = run_async(settings, go)
    report_batch(settings, report, specs, results_file=None, out_dir=out_dir)
    ctx.exit(int(report.exit_code))


_OUTPUT = click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to save the result images in.",
)


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--style", type=REPAINT_STYLE, help="A preset style: name or index (see `styles`).")
@click.option("--style-ref", help="An image (file or URL) whose style to copy instead.")
@_OUTPUT
@json_option
@click.pass_context
def repaint(
    ctx: click.Context,
    images: tuple[str, ...],
    style: RepaintStyle | None,
    style_ref: str | None,
    out_dir: Path,
) -> None:
    """Repaint portraits (files or URLs) in a preset style or a reference image's style.

    \b
    dashscope-async repaint me.jpg --style anime -o out/
    dashscope-async repaint a.png b.png --style 3 -o out/
    dashscope-async repaint me.jpg --style-ref van-gogh.jpg -o out/
    """
    settings = settings_of(ctx)
    if (style is None) == (style_ref is None):
        raise CliError(
            "give one of --style NAME|INDEX and --style-ref IMAGE",
            hint="`dashscope-async styles` lists the preset styles",
        )
    settings.resolved_api_key()
    suffix = "custom" if style is None else style_name(style)
    keys = unique_keys([f"{_stem(image)}-{suffix}" for image in images])
    specs: list[JobSpec] = []
    for image, key in zip(images, keys, strict=True):
        try:
            request = StyleRepaint(image, style=style, style_ref=style_ref)
        except ValidationError as exc:
            raise CliError(str(exc)) from None
        specs.append(JobSpec(request=_checked(request), label=key, key=key))
    _run(ctx, settings, specs, out_dir)


def _color(text: str) -> tuple[int, int, int]:
    try:
        red, green, blue = (int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"write a colour as R,G,B (0-255), not {text!r}") from None
    return red, green, blue


@click.command()
@click.argument("sketch_image", metavar="SKETCH")
@click.option("--prompt", required=True, help="What to draw (the service reads 75 characters).")
@click.option("--style", type=SKETCH_STYLE, default="auto", show_default=True, help="See `styles`.")
@click.option(
    "-n",
    "count",
    type=click.IntRange(1, 4),
    default=1,
    show_default=True,
    help="Images to make (billed per image).",
)
@click.option(
    "--weight",
    type=click.IntRange(0, 10),
    default=10,
    show_default=True,
    help="How closely to follow the sketch.",
)
@click.option("--extract", is_flag=True, help="The input is a photo: extract its edges first.")
@click.option(
    "--color",
    "colors",
    multiple=True,
    help="Stroke colour R,G,B when strokes are not black (repeatable).",
)
@_OUTPUT
@json_option
@click.pass_context
def sketch(
    ctx: click.Context,
    sketch_image: str,
    prompt: str,
    style: SketchStyle,
    count: int,
    weight: int,
    extract: bool,
    colors: tuple[str, ...],
    out_dir: Path,
) -> None:
    """Turn a SKETCH (file or URL) and a prompt into images.

    \b
    dashscope-async sketch tree.png --prompt "a towering tree" --style watercolor -o out/
    """
    settings = settings_of(ctx)
    settings.resolved_api_key()
    try:
        request = SketchToImage(
            sketch_image,
            prompt=prompt,
            n=count,
            style=style,
            sketch_weight=weight,
            sketch_extraction=extract,
            sketch_color=[_color(c) for c in colors],
        )
    except ValidationError as exc:
        raise CliError(str(exc)) from None
    key = f"{_stem(sketch_image)}-{style_name(style)}"
    _run(ctx, settings, [JobSpec(request=_checked(request), label=key, key=key)], out_dir)

"""The ``demo`` command: a mixed batch against the built-in emulator, no key and no network.

Draws sample inputs, serves the emulator on loopback in this process (tasks take about a tenth
of their real time), runs several repaint styles, a custom style and two sketches at the real
limits (2 submissions/s, 1 task in progress per model) with live progress, saves the results
beside an ``index.html`` gallery, and reports each job and each model's slot utilisation.
"""

from __future__ import annotations

import json
import os
import webbrowser
from pathlib import Path
from typing import Any, Final

import attrs
import click

from .._client import AsyncDashScope
from .._models import RepaintStyle, SketchStyle, SketchToImage, StyleRepaint
from .._polling import PollPolicy
from ._app import ExitCode, escape, json_option, run_async, settings_of
from ._batch import BatchReport, JobSpec, run_jobs, typical_seconds
from ._emulator import serve_emulator
from ._gallery import GalleryItem, write_gallery
from ._report import (
    ModelUtilisation,
    plural,
    summary_line,
    summary_table,
    utilisation,
    utilisation_table,
)
from ._sample_images import write_sample_images
from ._styles import REPAINT_DESCRIPTIONS, style_name

DEFAULT_OUTPUT: Final = Path("dashscope-demo-output")
#: A repaint (typically 15 s) takes about 1.5 s, a sketch (25 s) about 2.5 s.
DEFAULT_TIME_SCALE: Final = 0.1


@attrs.frozen
class DemoJob:
    """A job of the demo and how the gallery shows it."""

    spec: JobSpec
    caption: str
    inputs: tuple[tuple[str, Path], ...]


def demo_jobs(samples: dict[str, Path]) -> list[DemoJob]:
    """Five preset repaint styles, a custom style copied from a painting, and two sketches."""
    jobs: list[DemoJob] = []
    repaints = [
        ("ada", RepaintStyle.ANIME),
        ("ben", RepaintStyle.FAIRY_TALE_3D),
        ("chloe", RepaintStyle.CHINESE_INK),
        ("ada", RepaintStyle.CLAY_WORLD),
        ("ben", RepaintStyle.PIXEL_WORLD),
    ]
    for person, style in repaints:
        key = f"{person}-{style_name(style)}"
        image = samples[f"{person}.png"]
        jobs.append(
            DemoJob(
                JobSpec(StyleRepaint(os.fspath(image), style=style), label=key, key=key),
                caption=f"repaint, style {int(style)}: {REPAINT_DESCRIPTIONS[style]}",
                inputs=((f"{person}.png", image),),
            )
        )
    portrait, painting = samples["chloe.png"], samples["style-swirls.png"]
    jobs.append(
        DemoJob(
            JobSpec(
                StyleRepaint(os.fspath(portrait), style_ref=os.fspath(painting)),
                label="chloe-custom-style",
                key="chloe-custom-style",
            ),
            caption="repaint in the style of a reference painting (style_index -1)",
            inputs=(("chloe.png", portrait), ("style reference", painting)),
        )
    )
    for name, prompt, sketch_style in (
        ("tree", "a towering tree on a sunny hill", SketchStyle.WATERCOLOR),
        ("house", "a cosy cottage in a meadow", SketchStyle.FLAT_ILLUSTRATION),
    ):
        sketch = samples[f"{name}-sketch.png"]
        key = f"{name}-{style_name(sketch_style)}"
        jobs.append(
            DemoJob(
                JobSpec(
                    SketchToImage(os.fspath(sketch), prompt=prompt, style=sketch_style, n=1),
                    label=key,
                    key=key,
                ),
                caption=f"sketch to image, {sketch_style.value}: “{prompt}”",
                inputs=((f"{name}-sketch.png", sketch),),
            )
        )
    return jobs


def _gallery_items(jobs: list[DemoJob], report: BatchReport) -> list[GalleryItem]:
    items: list[GalleryItem] = []
    for index, job in enumerate(jobs):
        record = report.records[index]
        detail = f"task {record.task_id}" if record.task_id else ""
        if record.error:
            detail = f"{detail} - {record.error}" if detail else record.error
        items.append(
            GalleryItem(
                title=job.spec.label,
                caption=job.caption,
                inputs=job.inputs,
                results=tuple(Path(f) for f in record.files),
                status=record.status,
                detail=detail,
            )
        )
    return items


@attrs.frozen
class DemoResult:
    report: BatchReport
    utilisation: list[ModelUtilisation]
    emulator_stats: Any = None


async def _run_demo(
    out_dir: Path, time_scale: float, settings: Any, console: Any, jobs: list[DemoJob]
) -> DemoResult:
    expected = typical_seconds(time_scale)
    async with serve_emulator(time_scale=time_scale) as server:
        async with AsyncDashScope(api_key=server.api_key, base_url=server.base_url) as client:
            report = await run_jobs(
                client,
                [job.spec for job in jobs],
                out_dir=out_dir / "results",
                settings=settings,
                console=console,
                poll=PollPolicy(run_time_priors=expected, max_interval=1.0),
                expected_seconds=expected,
            )
        return DemoResult(report, utilisation(report.outcomes), server.stats())


def _utilisation_json(figures: list[ModelUtilisation]) -> dict[str, Any]:
    return {
        f.model: {
            "tasks": f.tasks,
            "busy_seconds": round(f.busy_seconds, 3),
            "span_seconds": round(f.span_seconds, 3),
            "utilisation": round(f.ratio, 3),
        }
        for f in figures
    }


@click.command()
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUTPUT,
    show_default=True,
    help="Folder for the inputs, the results and index.html.",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0.001, max=1.0),
    default=DEFAULT_TIME_SCALE,
    show_default=True,
    help="How fast the emulator's tasks run compared with the real service.",
)
@click.option(
    "--open", "open_gallery", is_flag=True, help="Open index.html in a browser at the end."
)
@json_option
@click.pass_context
def demo(ctx: click.Context, out_dir: Path, time_scale: float, open_gallery: bool) -> None:
    """Try it without an API key: a mixed batch on the built-in emulator (under a minute).

    Runs five repaint styles, a custom style and two sketches at the real limits (2
    submissions per second, 1 task in progress per model) against an emulator on
    127.0.0.1, with live progress; saves the results and an index.html gallery.
    """
    settings = settings_of(ctx)
    out_dir = out_dir.resolve()
    samples = write_sample_images(out_dir / "inputs")
    jobs = demo_jobs(samples)
    console = settings.stderr()
    if settings.show_progress:
        console.print(
            f"[bold]dashscope-async demo[/]: {plural(len(jobs), 'job')} on the built-in emulator"
            f" (127.0.0.1, tasks at {time_scale:g}x their real time, real limits)"
        )

    async def go() -> DemoResult:
        return await _run_demo(out_dir, time_scale, settings, console, jobs)

    result = run_async(settings, go)
    report = result.report
    gallery = write_gallery(
        out_dir / "index.html",
        _gallery_items(jobs, report),
        title="dashscope-async demo",
        subtitle="Each input beside what the (emulated) service made of it.",
        footer=(
            "Made by the built-in emulator, which transforms the inputs visibly; the real"
            " service paints them. Run `dashscope-async repaint` with a key for the real thing."
        ),
    )
    out = settings.stdout()
    if settings.json_output:
        out.print_json(
            json.dumps(
                {
                    **report.to_json(),
                    "gallery": os.fspath(gallery),
                    "utilisation": _utilisation_json(result.utilisation),
                }
            )
        )
    elif not settings.quiet:
        labels = {i: job.spec.label for i, job in enumerate(jobs)}
        out.print(summary_table(report.records, labels=labels, relative_to=out_dir, title="Jobs"))
        if result.utilisation:
            out.print(utilisation_table(result.utilisation))
        out.print(summary_line(report.records, report.elapsed))
        out.print(f"Gallery: [link=file://{gallery}]{escape(os.fspath(gallery))}[/link]")
    if open_gallery:
        webbrowser.open(gallery.as_uri())
    if report.exit_code is not ExitCode.OK:
        ctx.exit(int(report.exit_code))

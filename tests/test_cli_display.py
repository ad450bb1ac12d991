"""What the CLI draws, on fixed-width consoles (80, 120 and 200 columns): summary rows that
never wrap, a live footer that keeps its counts, elapsed time and ETA, a Ctrl-C notice that
reads whole; one spelling of style names; the emulator command's help and banner."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from rich.console import Console

import dashscope_async as ds
from dashscope_async.cli import cli
from dashscope_async.cli._progress import BatchProgress, short_task_id
from dashscope_async.cli._report import STILL_RUNNING, JobRecord, summary_line, summary_table
from dashscope_async.testing import Emulator
from dashscope_async.testing.__main__ import banner

WIDTHS = (80, 120, 200)
REPAINT = ds.STYLE_REPAINT.name
SKETCH = ds.SKETCH_TO_IMAGE.name
TASK_IDS = [f"{i:08x}-5ff8-4d82-bcb6-0f6a3c2d1e{i:02d}" for i in range(4)]


def render(renderable: object, width: int) -> list[str]:
    file = io.StringIO()
    console = Console(file=file, width=width, color_system=None, legacy_windows=False)
    console.print(renderable)
    return [line.rstrip() for line in file.getvalue().rstrip("\n").split("\n")]


def records() -> list[JobRecord]:
    return [
        JobRecord(
            0,
            REPAINT,
            "succeeded",
            key="portrait-0001-anime",
            task_id=TASK_IDS[0],
            files=("out/portrait-0001-anime_0.png",),
            seconds=14.2,
            images=1,
        ),
        JobRecord(
            1, REPAINT, "running", key="portrait-0002", task_id=TASK_IDS[1], error=STILL_RUNNING
        ),
        JobRecord(
            2,
            SKETCH,
            "failed",
            key="tree",
            task_id=TASK_IDS[2],
            error="task failed: InternalError.Algo",
            error_code="InternalError.Algo",
            seconds=3.0,
        ),
        JobRecord(3, SKETCH, "canceled", key="house", error="canceled before it was submitted"),
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_summary_rows_never_wrap_and_show_short_task_ids(width: int) -> None:
    lines = render(summary_table(records()), width)
    assert all(len(line) <= width for line in lines)
    header, rule, *rows = lines
    assert header.split()[:4] == ["job", "model", "status", "task"] and set(rule) == {"─"}
    assert len(rows) == len(records())  # one line per job
    for record, row in zip(records(), rows, strict=True):
        label = record.key or ""
        assert row.startswith(label if width >= 120 else label[:10])
        assert f" {record.status} " in row
        if record.task_id:
            assert short_task_id(record.task_id) in row and record.task_id not in row
        if record.files:  # a path cut to fit keeps its file name
            assert row.endswith("portrait-0001-anime_0.png"[-15:])


def test_short_task_ids_keep_short_ones_whole() -> None:
    assert short_task_id(TASK_IDS[0]) == TASK_IDS[0][:8] + "…"
    assert short_task_id("t-1") == "t-1"
    assert short_task_id(None) == ""


def progress(clock: list[float]) -> BatchProgress:
    jobs = [(f"portrait-{i:04d}-clay-world", REPAINT) for i in range(6)]
    jobs += [(f"sketch-{i}", SKETCH) for i in range(3)]
    shown = BatchProgress(
        Console(file=io.StringIO()),
        jobs,
        live=False,
        typical_seconds={REPAINT: 1.5, SKETCH: 2.5},
        clock=lambda: clock[0],
    )
    for index, task_id in enumerate(TASK_IDS[:2]):
        shown.on_event(
            ds.RunnerEvent(ds.EventKind.SUBMITTED, index, REPAINT, clock[0], task_id=task_id)
        )
        shown.on_event(ds.RunnerEvent(ds.EventKind.THROTTLED, index, REPAINT, clock[0], delay=1.0))
    clock[0] = 2.0
    shown.settle(0, "succeeded", run_seconds=1.5)
    return shown


@pytest.mark.parametrize("width", WIDTHS)
def test_the_live_footer_keeps_counts_elapsed_and_eta_at_every_width(width: int) -> None:
    clock = [0.0]
    shown = progress(clock)
    lines = render(shown, width)
    assert all(len(line) <= width for line in lines), lines
    bar, footer = lines[-2:]
    assert set(bar.strip()) <= {"━", "╸", "╺"}
    for part in ("1/9 done", "ok 1", "failed 0", "elapsed 2 s", "ETA ~"):
        assert part in footer, (width, footer)
    if width >= 120:
        assert "throttled 2" in footer
    assert all(short_task_id(task_id) in "\n".join(lines) for task_id in TASK_IDS[:2])


@pytest.mark.parametrize("width", WIDTHS)
def test_the_ctrl_c_notice_reads_whole_on_a_line_of_its_own(width: int) -> None:
    clock = [0.0]
    shown = progress(clock)
    shown.stopping = True
    lines = render(shown, width)
    assert all(len(line) <= width for line in lines)
    assert lines[-1] == "stopping: canceling what has not started; Ctrl-C again to force"
    assert "ETA" in lines[-2] and "elapsed" in lines[-2]
    narrow = [line for line in render(shown, 40) if "stopping" in line]
    assert narrow == ["stopping (Ctrl-C again to force)"]


def test_the_eta_follows_the_run_times_seen_not_the_service_typical_ones() -> None:
    clock = [0.0]
    shown = BatchProgress(
        Console(file=io.StringIO()),
        [("a", REPAINT), ("b", REPAINT), ("c", REPAINT)],
        live=False,
        # The registry's 15 s, at an emulator's time scale of 0.1.
        typical_seconds={REPAINT: 1.5},
        clock=lambda: clock[0],
    )
    assert shown.eta() == pytest.approx(4.5)
    shown.settle(0, "succeeded", run_seconds=0.5)
    assert shown.eta() == pytest.approx(1.0)
    # A replayed job adds no run time: the estimate stays what the service showed.
    shown.settle(1, "succeeded")
    assert shown.eta() == pytest.approx(0.5)


def test_the_summary_line_counts_tasks_left_running() -> None:
    line = summary_line(records(), 12.34)
    assert line.startswith("4 jobs: 1 succeeded, 1 failed, 1 running, 1 canceled in 12.3 s")
    assert "1 task is still running on the service: it may finish and be billed" in line
    assert "to collect it" in line
    assert summary_line(records()[:1], 1.0) == "1 job: 1 succeeded in 1.0 s"


def test_style_names_have_one_form_shown_and_both_accepted() -> None:
    assert ds.RepaintStyle.parse("clay-world") is ds.RepaintStyle.CLAY_WORLD
    assert ds.RepaintStyle.parse("clay_world") is ds.RepaintStyle.CLAY_WORLD
    assert ds.SketchStyle.parse("oil_painting") is ds.SketchStyle.OIL_PAINTING
    with pytest.raises(ds.ValidationError) as repaint:
        ds.RepaintStyle.parse("clay")
    with pytest.raises(ds.ValidationError) as sketch:
        ds.SketchStyle.parse("oil")
    assert "clay-world" in str(repaint.value) and "clay_world" not in str(repaint.value)
    assert "oil-painting" in str(sketch.value) and "oil_painting" not in str(sketch.value)
    shown = CliRunner().invoke(cli, ["styles"], terminal_width=200)
    assert "clay-world" in shown.output and "clay_world" not in shown.output
    refused = CliRunner().invoke(cli, ["--api-key", "sk-x", "repaint", "a.png", "--style", "clay"])
    assert refused.exit_code == 2 and "clay-world" in refused.output


def test_the_emulator_command_has_its_options_and_defaults() -> None:
    shown = CliRunner().invoke(
        cli, ["emulator", "--help"], prog_name="dashscope-async", terminal_width=120
    )
    assert shown.exit_code == 0
    assert shown.output.startswith("Usage: dashscope-async emulator [OPTIONS]")
    for option, default in (
        ("--port", "8089"),
        ("--time-scale", "1.0"),
        ("--seed", "fresh each start"),
        ("--api-key", "sk-emulator"),
    ):
        assert option in shown.output
        assert f"[default: {default}" in shown.output
    for flag in ("--faults", "--no-limits", "--strict-urls"):
        assert flag in shown.output
    bad = CliRunner().invoke(cli, ["emulator", "--time-scale", "0"])
    assert bad.exit_code == 2 and "--time-scale" in bad.output


def test_the_emulator_banner_names_sample_images_it_serves() -> None:
    emulator = Emulator()
    with emulator.serve_sync(port=0) as server:
        text = banner(server)
        urls = [line.split()[-1] for line in text.splitlines() if "/samples/" in line]
        assert len(urls) == 2
        for url in urls:
            answer = httpx.get(url, timeout=10)
            assert answer.status_code == 200 and answer.content[:4] == b"\x89PNG"
    assert f"DASHSCOPE_API_KEY={server.api_key}" in text


def test_a_dry_run_counts_one_job_in_the_singular(tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text('{"kind": "repaint", "image": "https://e.x/a.png", "style": "anime"}\n')
    shown = CliRunner().invoke(cli, ["batch", str(manifest), "-o", str(tmp_path), "--dry-run"])
    assert shown.exit_code == 0, shown.output
    assert "dry run: 1 valid job, nothing sent" in shown.output
    assert "at most 1 image," in shown.output
    assert "1 jobs" not in shown.output and "1 images" not in shown.output

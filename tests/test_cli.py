"""The command line without a service: options, manifests, budgets, styles, exit codes, reports,
progress and the demo's pictures. Runs through click's CliRunner; nothing reaches the network
(every command here stops before a request, or never makes one)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from rich.console import Console

from dashscope_async import (
    AuthenticationError,
    Budget,
    BudgetExceededError,
    GeneratedImage,
    JobCanceledError,
    PermissionDeniedError,
    RepaintStyle,
    SketchStyle,
    SketchToImage,
    StyleRepaint,
    TaskFailedError,
    TaskInfo,
    TaskResult,
    TaskStatus,
    ValidationError,
)
from dashscope_async._config import SKETCH_TO_IMAGE, STYLE_REPAINT
from dashscope_async._errors import APIConnectionError
from dashscope_async._events import EventKind, RunnerEvent
from dashscope_async._images import check_image
from dashscope_async._runner import Outcome
from dashscope_async.cli import cli
from dashscope_async.cli._app import ExitCode, error_from_library
from dashscope_async.cli._batch import estimate_batch
from dashscope_async.cli._demo import demo_jobs
from dashscope_async.cli._gallery import GalleryItem, render_gallery
from dashscope_async.cli._manifest import parse_manifest
from dashscope_async.cli._params import parse_budget, parse_since
from dashscope_async.cli._progress import BatchProgress
from dashscope_async.cli._report import (
    STILL_RUNNING,
    UNSAVED,
    UNSAVED_NO_JOURNAL,
    record_from_outcome,
    utilisation,
    write_results,
)
from dashscope_async.cli._sample_images import write_sample_images
from dashscope_async.cli._single import unique_keys

KEY = "sk-cli-test-secret-0123456789"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL", raising=False)
    return CliRunner()


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample_images(tmp_path_factory.mktemp("samples"))


# --- budgets and times ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("100", Budget(images=100)),
        ("images:7", Budget(images=7)),
        ("12 images", Budget(images=12)),
        ("5.00CNY", Budget(cny=Decimal("5.00"))),
        ("cny:5", Budget(cny=Decimal("5"))),
        ("CNY=0.5", Budget(cny=Decimal("0.5"))),
        ("3 rmb", Budget(cny=Decimal("3"))),
        ("¥2", Budget(cny=Decimal("2"))),
    ],
)
def test_budget_forms(text: str, budget: Budget) -> None:
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["", "-1", "five", "5 usd", "1.5", "cny:", "cny:1.2.3"])
def test_bad_budgets_name_the_option(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_budget(text)
    assert caught.value.field == "--budget"


def test_since_reads_durations_and_dates() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now=now) == now - timedelta(minutes=30)
    assert parse_since("2h", now=now) == now - timedelta(hours=2)
    assert parse_since("1d", now=now) == now - timedelta(days=1)
    assert parse_since("2026-02-28T08:00", now=now) == datetime(2026, 2, 28, 8, tzinfo=UTC)
    with pytest.raises(ValidationError):
        parse_since("yesterday", now=now)


# --- manifests --------------------------------------------------------------------------------


def test_csv_manifest_reads_both_kinds(samples: dict[str, Path]) -> None:
    text = (
        "key,kind,image,style,style_ref,sketch,prompt,n,weight\n"
        f"a,repaint,{samples['ada.png']},anime,,,,,\n"
        f"b,repaint,{samples['ben.png']},,{samples['style-swirls.png']},,,,\n"
        f",sketch,,watercolor,,{samples['tree-sketch.png']},a tree,2,7\n"
    )
    jobs, problems = parse_manifest(text, base=Path("/"), fmt="csv")
    assert problems == []
    assert [job.line for job in jobs] == [2, 3, 4]
    assert jobs[0].request == StyleRepaint(str(samples["ada.png"]), style=RepaintStyle.ANIME)
    assert jobs[1].request.style_ref == str(samples["style-swirls.png"])  # type: ignore[union-attr]
    sketch = jobs[2].request
    assert isinstance(sketch, SketchToImage)
    assert (sketch.n, sketch.sketch_weight, sketch.style) == (2, 7, SketchStyle.WATERCOLOR)
    assert jobs[2].key is None and jobs[2].label == "line 4"


def test_jsonl_manifest_with_models_urls_and_relative_paths(
    samples: dict[str, Path],
) -> None:
    folder = samples["ada.png"].parent
    text = "\n".join(
        [
            "# comments and blank lines are skipped",
            "",
            json.dumps({"model": STYLE_REPAINT.name, "input": "ada.png", "style": 2}),
            json.dumps(
                {
                    "kind": "sketch",
                    "sketch": "https://example.com/s.png",
                    "prompt": "x",
                    "sketch_extraction": True,
                    "sketch_color": [[0, 0, 0]],
                    "key": "k",
                }
            ),
        ]
    )
    jobs, problems = parse_manifest(text, base=folder, fmt="jsonl")
    assert problems == []
    assert [job.line for job in jobs] == [3, 4]
    assert jobs[0].request == StyleRepaint(str(folder / "ada.png"), style=RepaintStyle.ANIME)
    assert isinstance(jobs[1].request, SketchToImage)
    assert jobs[1].request.sketch_extraction is True
    assert jobs[1].request.sketch_color == ((0, 0, 0),)


@pytest.mark.parametrize(
    ("line", "field", "rule_part"),
    [
        ({"kind": "paint", "image": "https://e.x/a.png"}, "kind", "repaint or sketch"),
        ({"model": "wanx-v9", "image": "https://e.x/a.png"}, "model", "unknown model"),
        ({"image": "https://e.x/a.png", "style": "nope"}, "style", "no preset style"),
        ({"image": "https://e.x/a.png"}, "style", "preset style"),
        ({"kind": "repaint", "style": "anime"}, "image", "missing"),
        ({"kind": "sketch", "sketch": "https://e.x/s.png"}, "prompt", "missing"),
        ({"sketch": "https://e.x/s.png", "prompt": "p", "n": 9}, "n", "from 1 to 4"),
        ({"sketch": "https://e.x/s.png", "prompt": "p", "n": "two"}, "n", "whole number"),
        ({"sketch": "https://e.x/s.png", "prompt": "p", "weight": 11}, "sketch_weight", "0 to 10"),
        (
            {"sketch": "https://e.x/s.png", "prompt": "p", "sketch_extraction": "maybe"},
            "sketch_extraction",
            "true or false",
        ),
        (
            {"sketch": "https://e.x/s.png", "prompt": "p", "sketch_color": "red"},
            "sketch_color",
            "R,G,B",
        ),
        ({"kind": "sketch", "image": "https://e.x/s.png", "prompt": "p"}, "image", "'sketch'"),
        ({"image": "https://e.x/a.png", "style": "anime", "colour": "x"}, "colour", "known fields"),
        ({"image": "ftp://e.x/a.png", "style": "anime"}, "image", "scheme"),
        ({"image": "missing.png", "style": "anime"}, "image", "no such file"),
        ([1, 2], "json", "JSON object"),
    ],
)
def test_each_manifest_problem_names_its_line_and_field(
    tmp_path: Path, line: object, field: str, rule_part: str
) -> None:
    good = json.dumps({"image": "https://e.x/ok.png", "style": "anime"})
    text = f"{good}\n{json.dumps(line)}\n"
    jobs, problems = parse_manifest(text, base=tmp_path, fmt="jsonl")
    assert len(jobs) == 1
    assert len(problems) == 1
    assert (problems[0].line, problems[0].field) == (2, field)
    assert rule_part in problems[0].rule


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    text = "kind,image,style,key\nrepaint,a.png,anime,x\nrepaint,https://e.x/b.png,99,y\nrepaint,https://e.x/c.png,anime,x\n{broken\n"
    jobs, problems = parse_manifest(text, base=tmp_path, fmt="csv")
    assert [job.line for job in jobs] == []
    assert [(p.line, p.field) for p in problems] == [
        (2, "image"),
        (3, "style"),
        (4, "key"),
        (5, "kind"),
    ]
    assert "already used on line 2" in problems[2].rule
    _, problems = parse_manifest("{broken\n", base=tmp_path, fmt="jsonl")
    assert problems[0].field == "json" and "not valid JSON" in problems[0].rule
    assert parse_manifest("", base=tmp_path, fmt="jsonl")[1][0].rule == "has no jobs"


def test_local_images_are_checked_against_the_model_rules(tmp_path: Path) -> None:
    Image.new("RGB", (100, 100)).save(tmp_path / "tiny.png")
    text = json.dumps({"image": "tiny.png", "style": "anime"}) + "\n"
    _, problems = parse_manifest(text, base=tmp_path, fmt="jsonl")
    assert problems[0].field == "image"
    assert "tiny.png" in problems[0].rule


# --- commands that stop before any request ----------------------------------------------------


def test_help_and_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "repaint", "sketch", "batch", "tasks", "styles", "emulator"):
        assert command in result.output
    assert runner.invoke(cli, ["--version"]).exit_code == 0


def test_styles_lists_both_models_as_json(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["styles", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    repaint = {entry["name"]: entry["index"] for entry in data[STYLE_REPAINT.name]}
    assert repaint["anime"] == 2 and repaint["badge-world"] == 40 and repaint["custom"] == -1
    assert len(repaint) == len(RepaintStyle) + 1
    sketch = {entry["name"]: entry["value"] for entry in data[SKETCH_TO_IMAGE.name]}
    assert sketch["watercolor"] == "<watercolor>" and len(sketch) == len(SketchStyle)
    # Every listed name is accepted back.
    for name, index in repaint.items():
        if name != "custom":
            assert RepaintStyle.parse(name) == index
    for name, value in sketch.items():
        assert SketchStyle.parse(name) == value


def test_styles_table(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["styles"])
    assert result.exit_code == 0
    assert "anime" in result.output and "<watercolor>" in result.output


def test_missing_key_exits_3_with_a_hint(runner: CliRunner, samples: dict[str, Path]) -> None:
    result = runner.invoke(cli, ["repaint", str(samples["ada.png"]), "--style", "anime"])
    assert result.exit_code == ExitCode.NO_API_KEY
    assert int(ExitCode.NO_API_KEY) == 3
    assert "no API key" in result.stderr and "DASHSCOPE_API_KEY" in result.stderr
    assert "Traceback" not in result.output


def test_missing_file_exits_2_without_traceback(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        cli, ["--api-key", KEY, "repaint", str(tmp_path / "nope.jpg"), "--style", "2"]
    )
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "no such file" in result.stderr
    assert "Traceback" not in result.output
    assert KEY not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["repaint", "x.png", "--style", "sparkly"],
        ["repaint", "x.png", "--style", "-1"],
        ["repaint", "x.png"],
        ["repaint", "x.png", "--style", "anime", "--style-ref", "y.png"],
        ["sketch", "x.png", "--prompt", "p", "--style", "cubism"],
        ["sketch", "x.png", "--prompt", "p", "-n", "5"],
        ["sketch", "x.png", "--prompt", "p", "--color", "red"],
        ["tasks", "list", "--status", "DONE"],
        ["tasks", "list", "--since", "soon"],
        ["batch", "m.csv", "-o", "out", "--budget", "lots"],
        ["--verbose", "--quiet", "styles"],
    ],
)
def test_bad_options_exit_2(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(cli, ["--api-key", KEY, *args])
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert "Traceback" not in result.output


def test_bad_manifest_exits_2_listing_every_problem(runner: CliRunner, tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(
        "kind,image,style\nrepaint,missing.png,anime\nrepaint,https://e.x/a.png,99\n"
    )
    result = runner.invoke(cli, ["batch", str(manifest), "-o", str(tmp_path / "out")])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "2 problems; nothing was sent" in result.stderr
    assert "jobs.csv:2: image:" in result.stderr and "jobs.csv:3: style:" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_manifest_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["batch", str(tmp_path / "none.csv"), "-o", str(tmp_path)])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "no such manifest file" in result.stderr


def test_dry_run_needs_no_key_and_estimates(runner: CliRunner, tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    lines = [{"image": "https://e.x/a.png", "style": "anime"}] * 3 + [
        {"sketch": "https://e.x/s.png", "prompt": "p", "n": 2}
    ]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = runner.invoke(cli, ["--json", "batch", str(manifest), "-o", "out", "--dry-run"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dry_run"] is True
    assert (data["jobs"], data["images"], data["cny"]) == (4, 5, "0.48")
    assert 45.0 <= data["seconds"] < 60.0  # three repaints in a row (~15 s each)
    capped = runner.invoke(
        cli, ["batch", str(manifest), "-o", "out", "--dry-run", "--budget", "2", "--json"]
    )
    assert json.loads(capped.stdout)["over_budget"] == 2


def test_estimate_keeps_models_in_parallel() -> None:
    requests: list[StyleRepaint | SketchToImage] = [
        StyleRepaint("https://e.x/a.png", style=2),
        SketchToImage("https://e.x/s.png", prompt="p"),
    ]
    estimate = estimate_batch(requests, budget=None)
    slowest = max(STYLE_REPAINT.typical_run_seconds, SKETCH_TO_IMAGE.typical_run_seconds)
    assert slowest <= estimate.seconds < slowest + 5
    assert estimate.cny == Decimal("0.18")


# --- error messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ValidationError("image", "bad"), ExitCode.BAD_INPUT),
        (AuthenticationError("no", status_code=401, code="InvalidApiKey"), ExitCode.NO_API_KEY),
        (PermissionDeniedError("no", status_code=403, code="AccessDenied"), ExitCode.SERVICE_ERROR),
        (APIConnectionError("refused"), ExitCode.SERVICE_ERROR),
    ],
)
def test_library_errors_map_to_documented_codes(error: Exception, code: ExitCode) -> None:
    assert isinstance(error, Exception)
    cli_error = error_from_library(error)  # type: ignore[arg-type]
    assert cli_error.exit_code == code
    assert KEY not in cli_error.message


# --- reports ----------------------------------------------------------------------------------

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _result(task_id: str, submit: float, start: float, end: float) -> TaskResult:
    return TaskResult(
        task_id=task_id,
        status=TaskStatus.SUCCEEDED,
        submit_time=T0 + timedelta(seconds=submit),
        scheduled_time=T0 + timedelta(seconds=start),
        end_time=T0 + timedelta(seconds=end),
        images=(GeneratedImage("http://127.0.0.1/x.png"),),
    )


REPAINT = StyleRepaint("https://e.x/a.png", style=RepaintStyle.ANIME)


def test_records_say_how_each_job_ended(tmp_path: Path) -> None:
    failed_task = TaskInfo(
        task_id="t2", status=TaskStatus.FAILED, code="InternalError.Algo", message="x"
    )
    outcomes = [
        Outcome(
            0,
            REPAINT,
            result=_result("t1", 0, 0, 2),
            task_id="t1",
            key="a",
            files=(tmp_path / "a-0.png",),
            finished_at=2.0,
        ),
        Outcome(1, REPAINT, error=TaskFailedError(failed_task), task_id="t2", finished_at=3.0),
        Outcome(2, REPAINT, error=BudgetExceededError("over"), finished_at=3.0),
        Outcome(3, REPAINT, error=JobCanceledError("stop"), finished_at=3.0),
        Outcome(
            4,
            REPAINT,
            result=_result("t5", 0, 0, 2),
            error=JobCanceledError("stopped saving", task_id="t5", task_succeeded=True),
            task_id="t5",
            finished_at=3.0,
        ),
        Outcome(5, REPAINT, error=JobCanceledError("stop", task_id="t6"), task_id="t6"),
    ]
    records = [record_from_outcome(o, line=o.index + 2) for o in outcomes]
    assert [r.status for r in records] == [
        "succeeded",
        "failed",
        "over-budget",
        "canceled",
        "succeeded",  # its task succeeded and was billed; only the images are missing
        "running",
    ]
    assert records[4].error == UNSAVED and records[4].images == 1 and not records[4].files
    assert records[5].error == STILL_RUNNING
    # Without a journal, running the command again would pay for a new task: it never says so.
    unjournaled = record_from_outcome(outcomes[4], journaled=False)
    assert unjournaled.status == "succeeded"
    assert unjournaled.error == UNSAVED_NO_JOURNAL.format(task_id="t5")
    assert "tasks get t5" in unjournaled.error
    assert records[0].files == (str(tmp_path / "a-0.png"),) and records[0].images == 1
    assert records[1].error_code == "InternalError.Algo"
    assert records[2].error_code == "BudgetExceededError"
    results = tmp_path / "results.jsonl"
    write_results(results, reversed(records))
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2, 3, 4, 5]
    assert lines[0]["key"] == "a" and lines[0]["task_id"] == "t1" and lines[0]["line"] == 2
    assert set(lines[0]) >= {"key", "status", "task_id", "files", "error"}


def test_utilisation_is_busy_time_over_the_span() -> None:
    outcomes = [
        Outcome(0, REPAINT, result=_result("t1", 0.0, 0.0, 2.0)),
        Outcome(1, REPAINT, result=_result("t2", 0.5, 2.0, 4.0)),
        Outcome(2, REPAINT, result=_result("t3", 1.0, 5.0, 7.0)),  # idle 4 -> 5
    ]
    (figure,) = utilisation(outcomes)
    assert figure.tasks == 3
    assert figure.busy_seconds == pytest.approx(6.0)
    assert figure.span_seconds == pytest.approx(7.0)
    assert figure.ratio == pytest.approx(6 / 7)


def test_progress_counts_states_throttles_and_eta() -> None:
    now = [0.0]
    progress = BatchProgress(
        Console(file=None, quiet=True),
        [("a", STYLE_REPAINT.name), ("b", STYLE_REPAINT.name), ("c", STYLE_REPAINT.name)],
        live=False,
        typical_seconds={STYLE_REPAINT.name: 10.0},
        clock=lambda: now[0],
    )

    def event(kind: EventKind, index: int) -> None:
        progress.on_event(
            RunnerEvent(
                kind=kind, index=index, model=STYLE_REPAINT.name, at=now[0], task_id=f"t{index}"
            )
        )

    assert progress.eta() == pytest.approx(30.0)
    event(EventKind.THROTTLED, 0)
    event(EventKind.SUBMITTED, 0)
    now[0] = 4.0
    event(EventKind.SUCCEEDED, 0)
    progress.settle(0, "succeeded", run_seconds=4.0)
    # The one finished task ran 4 s on the service: two left, one at a time.
    assert progress.eta() == pytest.approx(8.0)
    event(EventKind.SUBMITTED, 1)
    now[0] = 5.0
    event(EventKind.FAILED, 1)
    assert (progress.count("succeeded"), progress.count("failed"), progress.throttles) == (1, 1, 1)
    assert progress.jobs[1].task_id == "t1"
    rendered = Console(file=io.StringIO(), width=100)
    rendered.print(progress)
    text = rendered.file.getvalue()  # type: ignore[attr-defined]
    assert "2/3 done" in text and "throttled 1" in text and "ETA" in text


# --- the demo's inputs and gallery ------------------------------------------------------------


def test_sample_images_meet_the_models_rules(samples: dict[str, Path]) -> None:
    for name, path in samples.items():
        spec = SKETCH_TO_IMAGE if "sketch" in name else STYLE_REPAINT
        header = check_image(
            path.read_bytes(), spec.image_rules, field="image", source=name, model=spec.name
        )
        assert header.format == "PNG"
    jobs = demo_jobs(samples)
    models = [job.spec.request.model for job in jobs]
    assert models.count(STYLE_REPAINT.name) >= 4 and SKETCH_TO_IMAGE.name in models
    assert any(getattr(job.spec.request, "style_ref", None) for job in jobs)
    assert len({job.spec.key for job in jobs}) == len(jobs)


def test_gallery_refers_to_images_relatively(tmp_path: Path) -> None:
    item = GalleryItem(
        title="ada <anime>",
        caption="repaint",
        inputs=(("ada.png", tmp_path / "inputs" / "ada.png"),),
        results=(tmp_path / "results" / "ada anime-0.png",),
        status="succeeded",
    )
    page = render_gallery([item], page_dir=tmp_path, title="demo", subtitle="s")
    assert 'src="inputs/ada.png"' in page
    assert 'src="results/ada%20anime-0.png"' in page
    assert "ada &lt;anime&gt;" in page
    assert "http" not in page.replace("http-equiv", "")


def test_gallery_footer_shows_code_not_backticks(tmp_path: Path) -> None:
    page = render_gallery(
        [],
        page_dir=tmp_path,
        title="demo",
        subtitle="s",
        footer="Run `dashscope-async repaint <me.jpg>` with a key; a lone ` stays",
    )
    footer = page.split("<footer>", 1)[1]
    assert "Run `dashscope-async" in footer  # an odd number of backticks: left as text
    page = render_gallery(
        [], page_dir=tmp_path, title="demo", subtitle="s", footer="Run `a <b>` now"
    )
    assert "<footer>Run <code>a &lt;b&gt;</code> now</footer>" in page


def test_unique_keys_number_repeats() -> None:
    assert unique_keys(["a", "b", "a", "a"]) == ["a", "b", "a-2", "a-3"]

"""Running jobs from the command line: the shared engine (runner, live progress, Ctrl-C, results)
and the ``batch`` command (a manifest, a journal to resume from, a budget, a dry run).

Owns how a CLI batch starts and stops: jobs go through one ``AsyncTaskRunner`` at the account's
limits; the first Ctrl-C cancels what has not started (PENDING tasks are cancelled on the service
by leaving the runner) and still reports what finished. Never talks HTTP itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import anyio
import attrs
import click
from rich.console import Console

from .._budget import Budget
from .._config import MODELS
from .._errors import ValidationError
from .._models import Request
from .._polling import PollPolicy
from .._runner import AsyncTaskRunner, Job, Outcome, TaskService
from ._app import (
    CliError,
    ExitCode,
    Interrupt,
    Settings,
    escape,
    json_option,
    run_async,
    settings_of,
)
from ._manifest import ManifestError, load_manifest
from ._params import BUDGET
from ._progress import BatchProgress
from ._report import JobRecord, record_from_outcome, summary_table, write_results

#: The journal kept in the output folder unless ``--journal`` names another file.
DEFAULT_JOURNAL_NAME: Final = "journal.sqlite"
RESULTS_NAME: Final = "results.jsonl"
#: Manifest problems listed before the rest are counted.
MAX_PROBLEMS_SHOWN: Final = 20


@attrs.frozen
class JobSpec:
    """One job as the CLI runs it: the request, its key and how tables name it."""

    request: Request
    label: str
    key: str | None = None
    line: int | None = None


@attrs.define
class BatchReport:
    """How a CLI batch went."""

    records: list[JobRecord]
    outcomes: list[Outcome]
    interrupted: bool
    elapsed: float

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        return ExitCode.OK if all(r.ok for r in self.records) else ExitCode.JOBS_FAILED

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    def to_json(self, *, results_file: Path | None = None) -> dict[str, Any]:
        return {
            "status": "interrupted"
            if self.interrupted
            else ("ok" if self.exit_code is ExitCode.OK else "failed"),
            "exit_code": int(self.exit_code),
            "counts": self.counts(),
            "elapsed_seconds": round(self.elapsed, 3),
            "results_file": None if results_file is None else os.fspath(results_file),
            "jobs": [r.to_json() for r in sorted(self.records, key=lambda r: r.index)],
        }


def typical_seconds(scale: float = 1.0) -> dict[str, float]:
    """Each model's typical run time, times ``scale`` (the ETA's first guess)."""
    return {name: spec.typical_run_seconds * scale for name, spec in MODELS.items()}


def _missing_record(spec: JobSpec, index: int, progress: BatchProgress) -> JobRecord:
    """A job with no outcome: the batch was interrupted before it ended (or started)."""
    view = progress.jobs[index]
    if view.state == "canceled" or view.task_id is None:
        error = (
            "interrupted before it was submitted"
            if view.task_id is None
            else "interrupted; its task was cancelled"
        )
    else:
        error = f"interrupted while its task was {view.state}; it may still finish and be billed"
    return JobRecord(
        index=index,
        model=spec.request.model,
        status="canceled",
        key=spec.key,
        line=spec.line,
        task_id=view.task_id,
        error=error,
        error_code="JobCanceledError",
    )


async def run_jobs(
    client: TaskService,
    specs: Sequence[JobSpec],
    *,
    out_dir: Path,
    settings: Settings,
    console: Console,
    journal: Path | None = None,
    budget: Budget | None = None,
    ordered: bool = False,
    poll: PollPolicy | None = None,
    expected_seconds: Mapping[str, float] | None = None,
) -> BatchReport:
    """Run the jobs through one runner with live progress; Ctrl-C stops them cleanly."""
    progress = BatchProgress(
        console,
        [(spec.label, spec.request.model) for spec in specs],
        live=console.is_terminal,
        typical_seconds=expected_seconds or typical_seconds(),
        enabled=settings.show_progress,
    )

    def stopping() -> None:
        progress.stopping = True

    interrupt = Interrupt(on_first=stopping)
    outcomes: dict[int, Outcome] = {}
    jobs = [Job(spec.request, key=spec.key) for spec in specs]
    if journal is not None:
        await anyio.Path(journal).parent.mkdir(parents=True, exist_ok=True)
    with progress:
        async with anyio.create_task_group() as watchers:
            work = anyio.CancelScope()
            watchers.start_soon(interrupt.watch, work)
            with work:
                async with AsyncTaskRunner(
                    client,
                    download_dir=out_dir,
                    budget=budget,
                    poll=poll,
                    on_event=progress.on_event,
                    journal=journal,
                ) as runner:
                    async with runner.map(jobs, ordered=ordered) as batch:
                        async for outcome in batch:
                            outcomes[outcome.index] = outcome
            watchers.cancel_scope.cancel()
    records = [
        record_from_outcome(outcomes[i], key=spec.key, line=spec.line)
        if i in outcomes
        else _missing_record(spec, i, progress)
        for i, spec in enumerate(specs)
    ]
    return BatchReport(
        records=records,
        outcomes=[outcomes[i] for i in sorted(outcomes)],
        interrupted=interrupt.requested,
        elapsed=progress.elapsed,
    )


def report_batch(
    settings: Settings,
    report: BatchReport,
    specs: Sequence[JobSpec],
    *,
    results_file: Path | None,
    out_dir: Path,
) -> None:
    """Print the summary (a table, or JSON with ``--json``)."""
    out = settings.stdout()
    if settings.json_output:
        out.print_json(json.dumps(report.to_json(results_file=results_file)))
        return
    if settings.quiet:
        return
    labels = {i: spec.label for i, spec in enumerate(specs)}
    out.print(summary_table(report.records, labels=labels, relative_to=Path.cwd()))
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts().items()))
    out.print(f"{len(report.records)} jobs: {counts} in {report.elapsed:.1f} s")
    if results_file is not None:
        out.print(f"results: {escape(os.fspath(results_file))}")
    if report.interrupted:
        out.print(
            "[yellow]interrupted:[/] jobs not yet submitted were dropped and PENDING tasks"
            " cancelled; run the same command again to resume"
        )


# --- dry run ------------------------------------------------------------------------------


@attrs.frozen
class DryRunEstimate:
    """What a batch would cost and take, by the limits and typical run times."""

    jobs: int
    images: int
    cny: Decimal
    seconds: float
    over_budget: int = 0
    by_model: Mapping[str, tuple[int, int]] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "images": self.images,
            "cny": str(self.cny),
            "seconds": round(self.seconds, 1),
            "over_budget": self.over_budget,
            "by_model": {m: {"jobs": j, "images": i} for m, (j, i) in self.by_model.items()},
        }


def estimate_batch(requests: Sequence[Request], *, budget: Budget | None) -> DryRunEstimate:
    """Images, cost and time of running ``requests``: at most the images asked for, one task
    at a time per model (the models in parallel).

    Uses the library's estimator (``_estimate``) when this version has it.
    """
    try:
        from .._estimate import estimate
    except ImportError:
        return _estimate_locally(requests, budget=budget)
    figures = estimate(requests, budget=budget)
    return DryRunEstimate(
        jobs=figures.jobs,
        images=figures.images,
        cny=figures.cost_cny,
        seconds=figures.wall_seconds,
        over_budget=figures.over_budget,
        by_model={m: (e.jobs, e.images) for m, e in figures.models.items() if e.jobs},
    )


def _estimate_locally(requests: Sequence[Request], *, budget: Budget | None) -> DryRunEstimate:
    pricing = budget or Budget()
    images = 0
    cny = Decimal(0)
    seconds_by_model: dict[str, float] = {}
    by_model: dict[str, tuple[int, int]] = {}
    over = 0
    for request in requests:
        asked = request.images_requested
        cost = pricing.cost(request.model, asked)
        if budget is not None and (
            (budget.images is not None and images + asked > budget.images)
            or (budget.cny is not None and cny + cost > budget.cny)
        ):
            over += 1
            continue
        images += asked
        cny += cost
        spec = MODELS[request.model]
        seconds_by_model[request.model] = (
            seconds_by_model.get(request.model, 0.0)
            + spec.typical_run_seconds / spec.max_in_progress
        )
        jobs_of_model, images_of_model = by_model.get(request.model, (0, 0))
        by_model[request.model] = (jobs_of_model + 1, images_of_model + asked)
    return DryRunEstimate(
        jobs=len(requests),
        images=images,
        cny=cny,
        seconds=max(seconds_by_model.values(), default=0.0),
        over_budget=over,
        by_model=by_model,
    )


def _print_estimate(settings: Settings, estimate: DryRunEstimate) -> None:
    out = settings.stdout()
    if settings.json_output:
        out.print_json(json.dumps({"dry_run": True, **estimate.to_json()}))
        return
    out.print(f"dry run: {estimate.jobs} valid jobs, nothing sent")
    for model, (jobs, images) in sorted(estimate.by_model.items()):
        out.print(f"  {model}: {jobs} jobs, at most {images} images")
    out.print(f"  at most {estimate.images} images, CNY {estimate.cny:.2f} (list prices)")
    minutes, seconds = divmod(round(estimate.seconds), 60)
    out.print(
        f"  about {minutes} min {seconds} s at the default limits (1 task at a time per model)"
    )
    if estimate.over_budget:
        out.print(f"  [yellow]{estimate.over_budget} jobs would be over the budget[/]")


# --- the command --------------------------------------------------------------------------


def manifest_error(exc: ManifestError) -> CliError:
    shown = exc.problems[:MAX_PROBLEMS_SHOWN]
    lines = [f"{exc.source}:{p.line}: {p.field}: {p.rule}" for p in shown]
    more = len(exc.problems) - len(shown)
    if more > 0:
        lines.append(f"... and {more} more")
    noun = "problem" if len(exc.problems) == 1 else "problems"
    return CliError(
        f"the manifest has {len(exc.problems)} {noun}; nothing was sent:\n" + "\n".join(lines),
        hint="fix these lines and run again (see `dashscope-async batch --help` for the fields)",
    )


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the result images, the results file and (by default) the journal.",
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"The journal to record in and resume from [default: OUTPUT/{DEFAULT_JOURNAL_NAME}].",
)
@click.option("--no-journal", is_flag=True, help="Keep no journal (a rerun starts over).")
@click.option(
    "--budget",
    type=BUDGET,
    help="Spend at most this: a number of images (100) or CNY (5.00CNY, cny:5).",
)
@click.option(
    "--dry-run", is_flag=True, help="Validate and estimate images, cost and time; send nothing."
)
@click.option("--ordered", is_flag=True, help="Report jobs in manifest order, not as they finish.")
@click.option(
    "--results",
    "results_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Where to write the results (JSON Lines) [default: OUTPUT/{RESULTS_NAME}].",
)
@json_option
@click.pass_context
def batch(
    ctx: click.Context,
    manifest: Path,
    out_dir: Path,
    journal: Path | None,
    no_journal: bool,
    budget: Budget | None,
    dry_run: bool,
    ordered: bool,
    results_file: Path | None,
) -> None:
    """Run every job of a CSV or JSON Lines MANIFEST at the account's limits.

    \b
    One job per line: kind (repaint | sketch) or model; image + style | style_ref
    (repaint), or sketch + prompt [style, n, sketch_weight, sketch_extraction,
    sketch_color] (sketch); an optional unique key. The whole manifest is
    validated before anything is sent. Re-running the same command resumes
    from the journal: finished jobs are not sent again.

    \b
    Exit status: 0 all jobs succeeded, 1 some did not, 2 bad input,
    3 no API key, 4 service error, 130 interrupted.
    """
    settings = settings_of(ctx)
    try:
        specs_source = load_manifest(manifest)
    except ManifestError as exc:
        raise manifest_error(exc) from None
    except ValidationError as exc:
        raise CliError(str(exc), hint="give the path of a .csv or .jsonl manifest") from None
    specs = [
        JobSpec(request=job.request, label=job.label, key=job.key, line=job.line)
        for job in specs_source
    ]
    if dry_run:
        _print_estimate(settings, estimate_batch([s.request for s in specs], budget=budget))
        return
    if journal is not None and no_journal:
        raise CliError("give --journal or --no-journal, not both")
    if journal is None and not no_journal:
        journal = out_dir / DEFAULT_JOURNAL_NAME
    results_path = results_file or out_dir / RESULTS_NAME
    client = settings.client()

    async def go() -> BatchReport:
        async with client:
            return await run_jobs(
                client,
                specs,
                out_dir=out_dir,
                settings=settings,
                console=settings.stderr(),
                journal=journal,
                budget=budget,
                ordered=ordered,
            )

    report = run_async(settings, go)
    write_results(results_path, report.records)
    report_batch(settings, report, specs, results_file=results_path, out_dir=out_dir)
    ctx.exit(int(report.exit_code))

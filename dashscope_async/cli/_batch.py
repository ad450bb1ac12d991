"""Running jobs from the command line: the shared engine (runner, live progress, Ctrl-C, results)
and the ``batch`` command (a manifest, a journal to resume from, a budget, a dry run).

Owns how a CLI batch starts and stops: jobs go through one ``AsyncTaskRunner`` at the account's
limits; the first Ctrl-C cancels what has not started (PENDING tasks are canceled on the service
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
from .._errors import APIConnectionError, AuthenticationError, JournalError, ValidationError
from .._journal import JobState, Journal, JournalEntry, fingerprint, job_key
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
from ._progress import BatchProgress, short_task_id
from ._report import (
    STILL_RUNNING,
    JobRecord,
    plural,
    read_earlier_seconds,
    record_from_outcome,
    status_counts,
    summary_line,
    summary_table,
    write_results,
)

#: The journal kept in the output folder unless ``--journal`` names another file.
DEFAULT_JOURNAL_NAME: Final = "journal.sqlite"
RESULTS_NAME: Final = "results.jsonl"
#: Manifest problems listed before the rest are counted.
MAX_PROBLEMS_SHOWN: Final = 20
#: Task failure codes that say "please try again later": ``--retry-failed`` runs these again.
#: A failed task is not billed, so running it again costs only the new task.
RETRYABLE_TASK_CODES: Final = frozenset(
    {"InternalError", "InternalError.Algo", "InternalError.Timeout", "SystemError"}
)


def retryable_failure(entry: JournalEntry) -> bool:
    """True for a job whose task FAILED on the service for a passing reason (never billed)."""
    return (
        entry.state is JobState.FAILED
        and entry.error_type in ("TaskFailedError", "RecordedFailureError")
        and entry.error_code in RETRYABLE_TASK_CODES
    )


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
        if all(r.ok for r in self.records):
            return ExitCode.OK
        return service_exit_code([o.error for o in self.outcomes]) or ExitCode.JOBS_FAILED

    def counts(self) -> dict[str, int]:
        return status_counts(self.records)

    @property
    def left_running(self) -> int:
        """Jobs whose task was left running on the service (it may finish and be billed)."""
        return sum(1 for record in self.records if record.status == "running")

    def to_json(self, *, results_file: Path | None = None) -> dict[str, Any]:
        return {
            "status": "interrupted"
            if self.interrupted
            else ("ok" if self.exit_code is ExitCode.OK else "failed"),
            "exit_code": int(self.exit_code),
            "counts": self.counts(),
            "still_running_on_service": self.left_running,
            "elapsed_seconds": round(self.elapsed, 3),
            "results_file": None if results_file is None else os.fspath(results_file),
            "jobs": [r.to_json() for r in sorted(self.records, key=lambda r: r.index)],
        }


def service_exit_code(errors: Sequence[BaseException | None]) -> ExitCode | None:
    """The status for a batch in which no job got through because of the service itself:
    3 when it refused the key, 4 when it could not be reached (every job, no exception)."""
    if not errors or any(error is None for error in errors):
        return None
    if all(isinstance(error, AuthenticationError) for error in errors):
        return ExitCode.NO_API_KEY
    if all(isinstance(error, APIConnectionError) for error in errors):
        return ExitCode.SERVICE_ERROR
    return None


def typical_seconds(scale: float = 1.0) -> dict[str, float]:
    """Each model's typical run time, times ``scale`` (the ETA's first guess)."""
    return {name: spec.typical_run_seconds * scale for name, spec in MODELS.items()}


def _missing_record(spec: JobSpec, index: int, progress: BatchProgress) -> JobRecord:
    """A job with no outcome: the batch was interrupted before the job started."""
    view = progress.jobs[index]
    if view.task_id is None:
        status, error = "canceled", "interrupted before it was submitted"
    else:  # never expected: a task exists but no outcome said what became of it
        status, error = "running", STILL_RUNNING
    return JobRecord(
        index=index,
        model=spec.request.model,
        status=status,
        key=spec.key,
        line=spec.line,
        task_id=view.task_id,
        error=error,
        error_code="JobCanceledError",
    )


@attrs.frozen
class ChangedJob:
    """A job whose request differs from the one an earlier run finished under its name."""

    spec: JobSpec
    entry: JournalEntry

    def describe(self) -> str:
        where = f"line {self.spec.line}" if self.spec.line is not None else self.spec.label
        name = f" (key {self.spec.key})" if self.spec.key is not None else ""
        task = f" as task {short_task_id(self.entry.task_id)}" if self.entry.task_id else ""
        return f"{where}{name}: changed since an earlier run succeeded with it{task}"


@attrs.frozen
class ResumePlan:
    """What a rerun takes up from its journal, by job index."""

    journal: Path
    total: int
    done: frozenset[int] = frozenset()
    in_flight: frozenset[int] = frozenset()
    retrying: frozenset[int] = frozenset()

    @property
    def to_submit(self) -> int:
        return self.total - len(self.done) - len(self.in_flight)

    def describe(self) -> str:
        """``resuming out/journal.sqlite: 7 done, 2 in flight, 1 to submit``."""
        parts = [f"{len(self.done)} done", f"{len(self.in_flight)} in flight"]
        submit = f"{self.to_submit} to submit"
        if self.retrying:
            submit += f" ({len(self.retrying)} failed, retried)"
        return f"resuming {self.journal}: {', '.join([*parts, submit])}"


async def journal_keys(specs: Sequence[JobSpec]) -> list[str]:
    """Each job's name in the journal (``job_key``); stats local inputs in one worker thread."""
    return await anyio.to_thread.run_sync(
        lambda: [job_key(spec.request, index, spec.key) for index, spec in enumerate(specs)]
    )


async def plan_resume(
    journal: Path, specs: Sequence[JobSpec], *, retry_failed: bool = False
) -> ResumePlan | None:
    """Read what earlier runs recorded for these jobs; None when there is no journal yet.

    Refuses (a ``CliError``, nothing sent) when a job's request changed since an earlier run
    succeeded with it: running it would put a new record over that success in the results
    file while the old images stay on disk. With ``retry_failed``, jobs whose task failed for a
    passing reason (``RETRYABLE_TASK_CODES``) are marked to run again.
    """
    if not await anyio.Path(journal).is_file():
        return None
    keys = await journal_keys(specs)
    try:
        async with await Journal.open(journal) as opened:
            entries = await opened.lookup_many(keys)
            succeeded = await opened.entries(JobState.SUCCEEDED)
            changed = await _changed_jobs(specs, keys, entries, succeeded)
            if changed:
                raise _changed_error(changed)
            retrying: set[int] = set()
            if retry_failed:
                for index, key in enumerate(keys):
                    entry = entries.get(key)
                    if entry is not None and retryable_failure(entry):
                        await opened.record_canceled(key)
                        retrying.add(index)
    except JournalError as exc:
        raise CliError(str(exc), hint="is a batch still running with this journal?") from None
    done, in_flight = set(), set()
    for index, key in enumerate(keys):
        entry = entries.get(key)
        if entry is None or index in retrying:
            continue
        if entry.state.is_final:
            done.add(index)
        elif entry.state in (JobState.INTENT, JobState.SUBMITTED):
            in_flight.add(index)
    return ResumePlan(
        journal=journal,
        total=len(specs),
        done=frozenset(done),
        in_flight=frozenset(in_flight),
        retrying=frozenset(retrying),
    )


async def _changed_jobs(
    specs: Sequence[JobSpec],
    keys: Sequence[str],
    entries: Mapping[str, JournalEntry],
    succeeded: Sequence[JournalEntry],
) -> list[ChangedJob]:
    changed: dict[int, ChangedJob] = {}
    # A key of the user's choosing says nothing of the request: compare fingerprints.
    keyed = [
        (index, entry)
        for index, spec in enumerate(specs)
        if spec.key is not None
        and (entry := entries.get(keys[index])) is not None
        and entry.state is JobState.SUCCEEDED
    ]
    prints = await anyio.to_thread.run_sync(
        lambda: [fingerprint(specs[index].request) for index, _ in keyed]
    )
    for (index, entry), now in zip(keyed, prints, strict=True):
        if now != entry.fingerprint:
            changed[index] = ChangedJob(specs[index], entry)
    # A job without a key is named by its request and position: a success recorded at a
    # position under another name means the request there changed.
    for entry in succeeded:
        index = entry.index
        if (
            0 <= index < len(specs)
            and specs[index].key is None
            and entry.key != keys[index]
            and entry.key.endswith(f":{index}")
        ):
            changed.setdefault(index, ChangedJob(specs[index], entry))
    return [changed[i] for i in sorted(changed)]


def _changed_error(changed: Sequence[ChangedJob]) -> CliError:
    shown = [job.describe() for job in changed[:MAX_PROBLEMS_SHOWN]]
    if len(changed) > len(shown):
        shown.append(f"... and {len(changed) - len(shown)} more")
    return CliError(
        f"{plural(len(changed), 'job')} changed since an earlier run of this batch succeeded;"
        " nothing was sent:\n" + "\n".join(shown),
        hint=(
            "rerunning would replace those successes in the results file while their images"
            " stay on disk: restore the lines, give changed jobs new keys, or use a new"
            " --output folder (or --journal)"
        ),
    )


def _run_seconds(outcome: Outcome) -> float | None:
    result = outcome.result
    if result is None or result.end_time is None:
        return None
    start = result.scheduled_time or result.submit_time
    return None if start is None else (result.end_time - start).total_seconds()


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
    retry_failed: bool = False,
    earlier_seconds: Mapping[str, float] | None = None,
    interrupt: Interrupt | None = None,
) -> BatchReport:
    """Run the jobs through one runner with live progress; Ctrl-C stops them cleanly.

    The first Ctrl-C (``interrupt``) cancels every job: those not submitted are dropped,
    PENDING tasks are canceled on the service, and each job still gets its outcome, so a task
    left RUNNING is reported as such. With a journal, a rerun first says what it resumes.
    """
    progress = BatchProgress(
        console,
        [(spec.label, spec.request.model) for spec in specs],
        live=console.is_terminal,
        typical_seconds=expected_seconds or typical_seconds(),
        enabled=settings.show_progress,
    )
    runners: list[AsyncTaskRunner] = []

    def stopping() -> None:
        progress.stopping = True
        for running in runners:
            running.cancel_all()

    interrupt = interrupt if interrupt is not None else Interrupt()
    interrupt.on_first, interrupt.on_second = stopping, settings.abort_network
    plan: ResumePlan | None = None
    if journal is not None:
        await anyio.Path(journal).parent.mkdir(parents=True, exist_ok=True)
        plan = await plan_resume(journal, specs, retry_failed=retry_failed)
        if plan is not None and settings.show_progress:
            console.print(escape(plan.describe()))
    replayed = plan.done if plan is not None else frozenset()
    records: dict[int, JobRecord] = {}
    outcomes: dict[int, Outcome] = {}
    jobs = [Job(spec.request, key=spec.key) for spec in specs]
    with progress:
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(interrupt.watch)
            async with AsyncTaskRunner(
                client,
                download_dir=out_dir,
                budget=budget,
                poll=poll,
                on_event=progress.on_event,
                journal=journal,
            ) as runner:
                runners.append(runner)
                if interrupt.requested:
                    runner.cancel_all()
                async with runner.map(jobs, ordered=ordered) as batch:
                    async for outcome in batch:
                        index = outcome.index
                        spec = specs[index]
                        record = record_from_outcome(
                            outcome,
                            key=spec.key,
                            line=spec.line,
                            replayed=index in replayed,
                            earlier_seconds=earlier_seconds,
                            journaled=journal is not None,
                        )
                        outcomes[index], records[index] = outcome, record
                        progress.settle(
                            index,
                            record.status,
                            error=record.error,
                            run_seconds=None if index in replayed else _run_seconds(outcome),
                        )
            watchers.cancel_scope.cancel()
    return BatchReport(
        records=[
            records[i] if i in records else _missing_record(spec, i, progress)
            for i, spec in enumerate(specs)
        ],
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
    if results_file is not None:
        out.print(f"results (whole task ids): {escape(os.fspath(results_file))}")
    if report.interrupted:
        out.print(
            "[yellow]interrupted:[/] jobs not yet submitted were dropped and PENDING tasks"
            " canceled; run the same command again to resume"
        )
    out.print(summary_line(report.records, report.elapsed))


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
    out.print(f"dry run: {plural(estimate.jobs, 'valid job')}, nothing sent")
    for model, (jobs, images) in sorted(estimate.by_model.items()):
        out.print(f"  {model}: {plural(jobs, 'job')}, at most {plural(images, 'image')}")
    out.print(f"  at most {plural(estimate.images, 'image')}, CNY {estimate.cny:.2f} (list prices)")
    minutes, seconds = divmod(round(estimate.seconds), 60)
    out.print(
        f"  about {minutes} min {seconds} s at the default limits (1 task at a time per model)"
    )
    if estimate.over_budget:
        out.print(f"  [yellow]{plural(estimate.over_budget, 'job')} would be over the budget[/]")


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
    "--retry-failed",
    is_flag=True,
    help=(
        "On a rerun, run again the jobs whose task failed for a passing reason"
        ' (InternalError*, SystemError: "please try again later"); failed tasks are not billed.'
    ),
)
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
    retry_failed: bool,
    results_file: Path | None,
) -> None:
    """Run every job of a CSV or JSON Lines MANIFEST at the account's limits.

    \b
    One job per line: kind (repaint | sketch) or model; image + style | style_ref
    (repaint), or sketch + prompt [style, n, sketch_weight, sketch_extraction,
    sketch_color] (sketch); an optional unique key. The whole manifest is
    validated before anything is sent. Re-running the same command resumes
    from the journal: finished jobs are not sent again, tasks still running
    are collected, and a job changed since it succeeded is refused.

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
    if retry_failed and no_journal:
        raise CliError("--retry-failed reruns what a journal recorded; drop --no-journal")
    if journal is None and not no_journal:
        journal = out_dir / DEFAULT_JOURNAL_NAME
    results_path = results_file or out_dir / RESULTS_NAME
    earlier = read_earlier_seconds(results_path) if journal is not None else {}
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
                retry_failed=retry_failed,
                earlier_seconds=earlier,
            )

    report = run_async(settings, go)
    write_results(results_path, report.records)
    report_batch(settings, report, specs, results_file=results_path, out_dir=out_dir)
    ctx.exit(int(report.exit_code))

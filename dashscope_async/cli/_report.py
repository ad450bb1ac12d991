"""What a finished (or interrupted) batch reports: per-job records, the results file, the summary
table and each model's slot utilisation.

Owns the shapes users read and parse (the results file's fields are documented in
docs/reference/cli.md). Pure: builds values and rich tables; writes only the results file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import attrs
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from .. import _wire
from .._errors import (
    APIError,
    BudgetExceededError,
    JobCanceledError,
    TaskFailedError,
    TaskTimeoutError,
)
from .._models import TaskStatus
from .._runner import Outcome
from ._progress import short_model, short_task_id

__all__ = [
    "STATUSES",
    "STILL_RUNNING",
    "UNSAVED",
    "UNSAVED_NO_JOURNAL",
    "JobRecord",
    "ModelUtilisation",
    "plural",
    "record_from_outcome",
    "summary_line",
    "summary_table",
    "utilisation",
    "write_results",
]

#: Every status a job can end a command with, in the order summaries list them.
STATUSES: Final = ("succeeded", "failed", "over-budget", "running", "canceled")
#: What a job whose task was left running on the service means for the user (and their bill).
STILL_RUNNING: Final = (
    "still running on the service; it may finish and be billed;"
    " run the same command again to collect it"
)
#: A job stopped after its task succeeded, before its images were saved (a journal resumes it).
UNSAVED: Final = (
    "its task succeeded (and was billed), but the run stopped before its images were saved;"
    " run the same command again to save them"
)
#: The same without a journal (a template for the task id): running the command again would
#: pay for a new task.
UNSAVED_NO_JOURNAL: Final = (
    "its task succeeded (and was billed), but the run stopped before its images were saved;"
    " `dashscope-async tasks get {task_id}` shows their URLs (valid 24 hours)"
)


def plural(count: int, noun: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@attrs.frozen
class JobRecord:
    """One line of the results file.

    Attributes:
        key: the job's key (the manifest's, or the one the command chose), if any.
        line: the manifest line, for batches.
        index: the job's position in its batch.
        model: the model.
        status: ``succeeded``, ``failed``, ``over-budget``, ``running`` (stopped while its task
            ran on the service: it may still finish and be billed; a rerun collects it) or
            ``canceled`` (nothing runs or is billed for it).
        task_id: the service's task id, if a task was created.
        files: the saved images.
        error: why it did not succeed.
        error_code: the service's code or the error's type, for scripts.
        seconds: from being handed in to ending (for a replayed job, in the run that did it).
        images: images produced.
        replayed: True when an earlier run finished the job and this one replayed it from the
            journal without a request.
    """

    index: int
    model: str
    status: str
    key: str | None = None
    line: int | None = None
    task_id: str | None = None
    files: tuple[str, ...] = ()
    error: str | None = None
    error_code: str | None = None
    seconds: float | None = None
    images: int = 0
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _wire.converter.unstructure(self)
        data["files"] = list(self.files)
        return data


def left_running(error: BaseException | None) -> bool:
    """True when the job stopped while its task may still run (and be billed) on the service."""
    if isinstance(error, JobCanceledError):
        return (
            error.task_id is not None and not error.canceled_on_service and not error.task_succeeded
        )
    return isinstance(error, TaskTimeoutError) and error.status is not TaskStatus.PENDING


def _stopped_while_saving(error: BaseException | None) -> bool:
    """True when the job's task succeeded (billed) and the job was stopped saving its images."""
    return isinstance(error, JobCanceledError) and error.task_succeeded


def _status(outcome: Outcome) -> str:
    if outcome.ok or _stopped_while_saving(outcome.error):
        return "succeeded"
    if left_running(outcome.error):
        return "running"
    if isinstance(outcome.error, JobCanceledError):
        return "canceled"
    if isinstance(outcome.error, BudgetExceededError):
        return "over-budget"
    return "failed"


def _error_code(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, TaskFailedError) and error.task.code:
        return error.task.code
    if isinstance(error, APIError) and error.code:
        return error.code
    code = getattr(error, "code", None)  # a failure replayed from the journal keeps its code
    return code if isinstance(code, str) and code else type(error).__name__


def _replayed_seconds(outcome: Outcome, earlier: Mapping[str, float]) -> float | None:
    """A replayed job's duration in the run that did it: as the results file of that run
    said, else from the service's times."""
    if outcome.task_id is not None and outcome.task_id in earlier:
        return earlier[outcome.task_id]
    result = outcome.result
    if result is None or result.submit_time is None or result.end_time is None:
        return None
    return round(max((result.end_time - result.submit_time).total_seconds(), 0.0), 3)


def record_from_outcome(
    outcome: Outcome,
    *,
    key: str | None = None,
    line: int | None = None,
    replayed: bool = False,
    earlier_seconds: Mapping[str, float] | None = None,
    journaled: bool = True,
) -> JobRecord:
    """The results-file record of one outcome.

    Args:
        replayed: the job was replayed from the journal (an earlier run finished it).
        earlier_seconds: durations by task id from an earlier results file, for replayed jobs.
        journaled: the run keeps a journal (running it again resumes, paying nothing twice).
    """
    status = _status(outcome)
    if replayed:
        seconds = _replayed_seconds(outcome, earlier_seconds or {})
    else:
        seconds = round(outcome.seconds, 3) if outcome.finished_at else None
    error = None if outcome.error is None else str(outcome.error)
    error_code = _error_code(outcome.error)
    if _stopped_while_saving(outcome.error):
        unsaved = UNSAVED if journaled else UNSAVED_NO_JOURNAL.format(task_id=outcome.task_id)
        error, error_code = unsaved, None
    elif status == "running":
        error = STILL_RUNNING
    elif status == "canceled":
        error = (
            "canceled before it was submitted"
            if outcome.task_id is None
            else "canceled; its task was canceled on the service (not billed)"
        )
    return JobRecord(
        index=outcome.index,
        model=outcome.request.model,
        status=status,
        key=outcome.key if outcome.key is not None else key,
        line=line,
        task_id=outcome.task_id,
        files=tuple(os.fspath(path) for path in outcome.files),
        error=error,
        error_code=error_code,
        seconds=seconds,
        images=0 if outcome.result is None else len(outcome.result.images),
        replayed=replayed,
    )


def read_earlier_seconds(path: Path) -> dict[str, float]:
    """Durations by task id from an earlier results file (empty if there is none). Blocks."""
    seconds: dict[str, float] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return seconds
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        task_id, value = data.get("task_id"), data.get("seconds")
        if isinstance(task_id, str) and isinstance(value, int | float) and value >= 0:
            seconds[task_id] = float(value)
    return seconds


def status_counts(records: Iterable[JobRecord]) -> dict[str, int]:
    """Jobs by status, in the order of ``STATUSES``."""
    found: dict[str, int] = {}
    for record in records:
        found[record.status] = found.get(record.status, 0) + 1
    return {status: found[status] for status in (*STATUSES, *sorted(found)) if status in found}


def summary_line(records: Sequence[JobRecord], elapsed: float) -> str:
    """The closing line: ``8 jobs: 6 succeeded, 2 running in 12.3 s``, then what a task left
    running on the service means, if any was."""
    counts = ", ".join(f"{n} {status}" for status, n in status_counts(records).items())
    line = f"{plural(len(records), 'job')}: {counts or 'none'} in {elapsed:.1f} s"
    running = sum(1 for r in records if r.status == "running")
    if running:
        they, verb, them = ("it", "is", "it") if running == 1 else ("they", "are", "them")
        line += (
            f"\n[yellow]{plural(running, 'task')} {verb} still running on the service: {they}"
            f" may finish and be billed; run the same command again to collect {them}[/]"
        )
    return line


def write_results(path: Path, records: Iterable[JobRecord]) -> None:
    """Write the results file (JSON Lines, one record per job, in job order). Blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    with part.open("w", encoding="utf-8") as file:
        for record in sorted(records, key=lambda r: r.index):
            file.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
    part.replace(path)


def _display_path(path: str, relative_to: Path | None) -> str:
    if relative_to is None:
        return path
    try:
        return os.path.relpath(path, relative_to)
    except ValueError:
        return path


_STATUS_STYLES: Final = {
    "succeeded": "green",
    "failed": "red",
    "canceled": "magenta",
    "over-budget": "yellow",
    "running": "bold yellow",
}


@attrs.frozen
class SummaryTable:
    """The jobs of a command, one row each, fitted to the console's width when drawn.

    The short columns (model, status, task, seconds) keep their width; the job's name and
    the file or error share the rest and end in an ellipsis when they do not fit, so no row
    ever wraps.
    """

    rows: tuple[tuple[str, str, str, str, str, str], ...]
    #: Rows whose last cell is file paths: cut from the left, so the file names stay.
    paths: frozenset[int] = frozenset()
    title: str | None = None

    #: Columns between cells: padding on both sides and the separator.
    GAP: ClassVar[int] = 3
    #: The job column's share of the width the short columns leave.
    JOB_SHARE: ClassVar[float] = 0.4

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        headers = ("job", "model", "status", "task", "s", "file / error")
        widths = [max([len(h), *(len(row[i]) for row in self.rows)]) for i, h in enumerate(headers)]
        short = sum(widths[1:5])
        room = max(options.max_width - short - self.GAP * (len(headers) - 1), 2 * 10)
        job = min(widths[0], max(10, round(room * self.JOB_SHARE)))
        detail = max(min(widths[5], room - job), 1)
        table = Table(
            title=self.title,
            title_justify="left",
            header_style="bold",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        table.add_column(headers[0], no_wrap=True, overflow="ellipsis", width=job)
        for header in headers[1:4]:
            table.add_column(header, no_wrap=True)
        table.add_column(headers[4], no_wrap=True, justify="right")
        table.add_column(headers[5], no_wrap=True, overflow="ellipsis", width=detail)
        for number, (label, model, status, task, seconds, text) in enumerate(self.rows):
            if number in self.paths and len(text) > detail:
                text = "…" + text[len(text) - detail + 1 :]
            table.add_row(
                Text(label),
                model,
                Text(status, style=_STATUS_STYLES.get(status, "")),
                task,
                seconds,
                Text(text),
            )
        yield table


def summary_table(
    records: Sequence[JobRecord],
    *,
    labels: Mapping[int, str] | None = None,
    relative_to: Path | None = None,
    title: str | None = None,
) -> SummaryTable:
    """One row per job: job, model, status, short task id, seconds, file (or error).

    Each row stays on one line at any width (``SummaryTable``): task ids are shortened and
    long cells end in an ellipsis; the results file and ``--json`` hold ids and messages whole
    (``tasks get`` takes a whole id).
    """
    rows: list[tuple[str, str, str, str, str, str]] = []
    paths: set[int] = set()
    for record in sorted(records, key=lambda r: r.index):
        label = (labels or {}).get(record.index) or record.key or f"#{record.index}"
        if record.files:
            detail = ", ".join(_display_path(f, relative_to) for f in record.files)
            paths.add(len(rows))
        elif record.status == "running":
            detail = "still running on the service: may be billed"  # the closing line says more
        else:
            detail = record.error or ""
        rows.append(
            (
                label,
                short_model(record.model),
                record.status,
                short_task_id(record.task_id),
                "" if record.seconds is None else f"{record.seconds:.1f}",
                detail,
            )
        )
    return SummaryTable(tuple(rows), frozenset(paths), title)


@attrs.frozen
class ModelUtilisation:
    """How busy one model's slot was: the time tasks ran over the span from first submit to
    last end (1.0: never idle)."""

    model: str
    tasks: int
    busy_seconds: float
    span_seconds: float

    @property
    def ratio(self) -> float:
        return self.busy_seconds / self.span_seconds if self.span_seconds > 0 else 0.0


def utilisation(outcomes: Iterable[Outcome]) -> list[ModelUtilisation]:
    """Each model's slot utilisation, from the service's times (submit, start, end) of its tasks.

    Jobs replayed from a journal or without service times are left out.
    """
    by_model: dict[str, list[tuple[float, float, float]]] = {}
    for outcome in outcomes:
        result = outcome.result
        if result is None or result.submit_time is None or result.end_time is None:
            continue
        start = result.scheduled_time or result.submit_time
        by_model.setdefault(outcome.request.model, []).append(
            (
                result.submit_time.timestamp(),
                start.timestamp(),
                result.end_time.timestamp(),
            )
        )
    figures: list[ModelUtilisation] = []
    for model, spans in sorted(by_model.items()):
        first = min(submitted for submitted, _, _ in spans)
        last = max(end for _, _, end in spans)
        busy = sum(max(end - start, 0.0) for _, start, end in spans)
        figures.append(ModelUtilisation(model, len(spans), busy, last - first))
    return figures


def utilisation_table(figures: Sequence[ModelUtilisation]) -> Table:
    table = Table(title="Slot utilisation (1 task in progress per model)", title_justify="left")
    table.add_column("model")
    table.add_column("tasks", justify="right")
    table.add_column("busy s", justify="right")
    table.add_column("span s", justify="right")
    table.add_column("utilisation", justify="right")
    for figure in figures:
        table.add_row(
            figure.model,
            str(figure.tasks),
            f"{figure.busy_seconds:.1f}",
            f"{figure.span_seconds:.1f}",
            f"{figure.ratio:.0%}",
        )
    return table

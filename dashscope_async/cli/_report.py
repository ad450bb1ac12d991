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
from typing import Any

import attrs
from rich.table import Table

from .. import _wire
from .._errors import APIError, BudgetExceededError, JobCanceledError, TaskFailedError
from .._runner import Outcome
from ._progress import short_model

__all__ = [
    "JobRecord",
    "ModelUtilisation",
    "record_from_outcome",
    "summary_table",
    "utilisation",
    "write_results",
]


@attrs.frozen
class JobRecord:
    """One line of the results file.

    Attributes:
        key: the job's key (the manifest's, or the one the command chose), if any.
        line: the manifest line, for batches.
        index: the job's position in its batch.
        model: the model.
        status: ``succeeded``, ``failed``, ``canceled`` or ``over-budget``.
        task_id: the service's task id, if a task was created.
        files: the saved images.
        error: why it did not succeed.
        error_code: the service's code or the error's type, for scripts.
        seconds: from being handed in to ending.
        images: images produced.
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

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _wire.converter.unstructure(self)
        data["files"] = list(self.files)
        return data


def _status(outcome: Outcome) -> str:
    if outcome.ok:
        return "succeeded"
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
    return type(error).__name__


def record_from_outcome(
    outcome: Outcome, *, key: str | None = None, line: int | None = None
) -> JobRecord:
    """The results-file record of one outcome."""
    return JobRecord(
        index=outcome.index,
        model=outcome.request.model,
        status=_status(outcome),
        key=outcome.key if outcome.key is not None else key,
        line=line,
        task_id=outcome.task_id,
        files=tuple(os.fspath(path) for path in outcome.files),
        error=None if outcome.error is None else str(outcome.error),
        error_code=_error_code(outcome.error),
        seconds=round(outcome.seconds, 3) if outcome.finished_at else None,
        images=0 if outcome.result is None else len(outcome.result.images),
    )


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


def summary_table(
    records: Sequence[JobRecord],
    *,
    labels: Mapping[int, str] | None = None,
    relative_to: Path | None = None,
    title: str | None = None,
) -> Table:
    """One row per job: job, model, status, task id, seconds, file (or error)."""
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("job", overflow="fold")
    table.add_column("model")
    table.add_column("status")
    table.add_column("task id", overflow="fold")
    table.add_column("seconds", justify="right")
    table.add_column("file / error", overflow="fold")
    styles = {"succeeded": "green", "failed": "red", "canceled": "magenta", "over-budget": "yellow"}
    for record in sorted(records, key=lambda r: r.index):
        label = (labels or {}).get(record.index) or record.key or f"#{record.index}"
        detail = (
            ", ".join(_display_path(f, relative_to) for f in record.files)
            if record.files
            else (record.error or "")
        )
        table.add_row(
            label,
            short_model(record.model),
            f"[{styles.get(record.status, '')}]{record.status}[/]",
            record.task_id or "",
            "" if record.seconds is None else f"{record.seconds:.1f}",
            detail,
        )
    return table


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

"""The ``tasks`` commands: look up, list and cancel the account's tasks by id.

Owns how tasks are shown (a table, or JSON with ``--json``). One client call per command.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.table import Table

from .. import _wire
from .._config import MODELS
from .._errors import BadRequestError
from .._models import TaskInfo, TaskListItem, TaskStatus
from ._app import CliError, ExitCode, escape, json_option, run_async, settings_of
from ._params import SINCE, TASK_STATUS
from ._reconcile import reconcile


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return value


def task_json(task: TaskInfo | TaskListItem) -> dict[str, Any]:
    """A task as JSON-ready data (times as ISO 8601 strings)."""
    data = _json_ready(_wire.converter.unstructure(task))
    data.pop("extra", None)
    return dict(data)


def _model_name(text: str) -> str:
    for name, spec in MODELS.items():
        if text in (name, spec.kind):
            return name
    return text


@click.group()
def tasks() -> None:
    """Look up, list and cancel tasks of the account (any key of it); settle a journal's
    ambiguous jobs (reconcile)."""


@tasks.command("get")
@click.argument("task_id")
@json_option
@click.pass_context
def get_task(ctx: click.Context, task_id: str) -> None:
    """Show one task: status, times, result URLs, failures."""
    settings = settings_of(ctx)
    client = settings.client()

    async def go() -> TaskInfo:
        async with client:
            return await client.get_task(task_id)

    info = run_async(settings, go)
    out = settings.stdout()
    if settings.json_output:
        out.print_json(json.dumps(task_json(info)))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("task id", info.task_id)
    table.add_row("status", info.status.value)
    table.add_row("submitted", _when(info.submit_time))
    table.add_row("started", _when(info.scheduled_time))
    table.add_row("ended", _when(info.end_time))
    if info.run_seconds is not None:
        table.add_row("ran", f"{info.run_seconds:.1f} s")
    for image in info.images:
        table.add_row(f"image {image.index}", escape(image.url))
    for failure in info.failures:
        table.add_row(f"image {failure.index}", f"failed: {failure.code} {failure.message}")
    if info.code or info.message:
        table.add_row("error", escape(f"{info.code or ''} {info.message or ''}".strip()))
    if info.usage is not None:
        table.add_row("billed images", str(info.usage.image_count))
    out.print(table)


@tasks.command("list")
@click.option("--model", help="Only this model (its name, or repaint / sketch).")
@click.option(
    "--status", type=TASK_STATUS, help="Only tasks in this status (PENDING, RUNNING, ...)."
)
@click.option(
    "--since",
    type=SINCE,
    default="24h",
    show_default=True,
    help="From this long ago (30m, 2h, 1d) or this date/time.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Show at most this many.",
)
@json_option
@click.pass_context
def list_tasks(
    ctx: click.Context,
    model: str | None,
    status: TaskStatus | None,
    since: datetime,
    limit: int,
) -> None:
    """List the account's tasks (the service keeps them 24 hours)."""
    settings = settings_of(ctx)
    client = settings.client()
    end = datetime.now(UTC)
    if since >= end:
        raise CliError("--since must be in the past")
    since = max(since, end - timedelta(days=30))

    async def go() -> list[TaskListItem]:
        found: list[TaskListItem] = []
        async with client:
            listing = client.list_tasks(
                start=since,
                end=end,
                model=None if model is None else _model_name(model),
                status=status,
            )
            async for item in listing:
                found.append(item)
                if len(found) >= limit:
                    await listing.aclose()  # type: ignore[attr-defined]
                    break
        return found

    items = run_async(settings, go)
    out = settings.stdout()
    if settings.json_output:
        out.print_json(json.dumps([task_json(item) for item in items]))
        return
    table = Table(header_style="bold")
    for column in ("task id", "model", "status", "created", "ended"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(
            item.task_id,
            item.model or "",
            item.status.value,
            _when(item.created),
            _when(item.end_time),
        )
    out.print(table)
    out.print(f"{len(items)} tasks since {_when(since)}")


@tasks.command("cancel")
@click.argument("task_id")
@json_option
@click.pass_context
def cancel_task(ctx: click.Context, task_id: str) -> None:
    """Cancel a PENDING task (a running task cannot be cancelled)."""
    settings = settings_of(ctx)
    client = settings.client()

    async def go() -> None:
        async with client:
            try:
                await client.cancel_task(task_id)
            except BadRequestError as exc:
                raise CliError(
                    f"task {task_id} was not cancelled: {exc.message or exc}",
                    hint="only PENDING tasks can be cancelled; `tasks get ID` shows its status",
                    code=ExitCode.SERVICE_ERROR,
                ) from None

    run_async(settings, go)
    out = settings.stdout()
    if settings.json_output:
        out.print_json(json.dumps({"task_id": task_id, "canceled": True}))
    else:
        out.print(f"task {task_id} cancelled")


tasks.add_command(reconcile)

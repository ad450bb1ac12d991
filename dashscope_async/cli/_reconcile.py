"""``tasks reconcile``: settle, by a person, the jobs a journal lists as ambiguous.

A job is ambiguous when its submit got no answer and the runner could not prove which task, if
any, it created (``AmbiguousSubmitError``); its journal keeps it as an intent, and no run
submits it again. This command shows each one with the account's tasks of its model created
around its send time that no job of the journal owns (the candidates), and records the person's
decision: ``--adopt KEY=TASK_ID`` (the next run re-attaches to that task, never resubmits) or
``--none KEY`` (no task exists: the next run submits it). It never submits anything.
"""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from pathlib import Path
from typing import Final

import anyio
import attrs
import click
from rich.table import Table

from .._errors import JournalError
from .._journal import JobState, Journal, JournalEntry
from .._models import TaskListItem
from .._runner import TaskService
from ._app import CliError, json_option, run_async, settings_of

__all__ = ["Ambiguous", "ambiguous_jobs", "reconcile"]

#: Candidates are looked for from this long before a submit was sent (clock differences) ...
BEFORE_SEND: Final = timedelta(seconds=30)
#: ... to this long after it (a request the service processed late).
AFTER_SEND: Final = timedelta(minutes=10)


@attrs.frozen
class Ambiguous:
    """One ambiguous job and the tasks that may be its."""

    entry: JournalEntry
    candidates: tuple[TaskListItem, ...]


async def ambiguous_jobs(service: TaskService, journal: Journal) -> list[Ambiguous]:
    """Every job the journal holds as an unanswered submit, with its candidate tasks."""
    known = await journal.task_ids()
    found: list[Ambiguous] = []
    now = service.clock.wall()
    for entry in await journal.entries(JobState.INTENT):
        if entry.sent_at is None:
            found.append(Ambiguous(entry, ()))
            continue
        start = entry.sent_at - BEFORE_SEND
        end = min(entry.sent_at + AFTER_SEND, now)
        items = [
            item
            async for item in service.list_tasks(
                start=start, end=max(end, start), model=entry.model
            )
            if item.task_id not in known
        ]
        found.append(Ambiguous(entry, tuple(items)))
    return found


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, task_id = value.partition("=")
        if not sep or not key or not task_id:
            raise CliError(f"--adopt takes KEY=TASK_ID, not {value!r}")
        pairs[key] = task_id
    return pairs


@click.command("reconcile")
@click.argument("journal_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--adopt",
    "adopt",
    multiple=True,
    metavar="KEY=TASK_ID",
    help="Record that this job's submit created this task (the next run collects it).",
)
@click.option(
    "--none",
    "none",
    multiple=True,
    metavar="KEY",
    help="Record that this job's submit created no task (the next run submits it).",
)
@json_option
@click.pass_context
def reconcile(
    ctx: click.Context, journal_path: Path, adopt: tuple[str, ...], none: tuple[str, ...]
) -> None:
    """Show the jobs of JOURNAL_PATH whose submit got no answer, with the tasks that may be
    theirs; settle them with --adopt KEY=TASK_ID or --none KEY.

    \b
    Example:  dashscope-async tasks reconcile out/journal.sqlite
              dashscope-async tasks reconcile out/journal.sqlite --adopt cat-7=5b1f...
    """
    settings = settings_of(ctx)
    adopted = _pairs(adopt)
    if not anyio.run(anyio.Path(journal_path).is_file):
        raise CliError(f"no journal at {journal_path}", hint="give the file a batch wrote")
    client = settings.client()

    async def go() -> list[Ambiguous]:
        try:
            async with client, await Journal.open(journal_path) as journal:
                jobs = await ambiguous_jobs(client, journal)
                open_keys = {job.entry.key for job in jobs}
                for key in [*adopted, *none]:
                    if key not in open_keys:
                        raise CliError(f"{key!r} is not an ambiguous job of this journal")
                for key, task_id in adopted.items():
                    await client.get_task(task_id)  # it exists (an unknown id fails here)
                    await journal.record_submitted(key, task_id)
                for key in none:
                    await journal.record_canceled(key)
                return jobs
        except JournalError as exc:
            raise CliError(str(exc), hint="is a batch still running with it?") from None

    jobs = run_async(settings, go)
    settled = set(adopted) | set(none)
    out = settings.stdout()
    if settings.json_output:
        document = [
            {
                "key": job.entry.key,
                "model": job.entry.model,
                "sent_at": None if job.entry.sent_at is None else job.entry.sent_at.isoformat(),
                "candidates": [item.task_id for item in job.candidates],
                "settled": job.entry.key in settled,
            }
            for job in jobs
        ]
        out.print_json(json.dumps(document))
        return
    if not jobs:
        out.print("no ambiguous jobs: every submit of this journal has its answer")
        return
    table = Table(header_style="bold")
    for column in ("key", "model", "sent at", "candidate tasks", "settled"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        sent = job.entry.sent_at
        table.add_row(
            job.entry.key,
            job.entry.model,
            "" if sent is None else sent.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "\n".join(f"{item.task_id} ({item.status.value})" for item in job.candidates)
            or "none found",
            "yes" if job.entry.key in settled else "",
        )
    out.print(table)
    if not settled:
        out.print(
            "settle each with --adopt KEY=TASK_ID (its task) or --none KEY (no task: run it"
            " again); the runner never guesses"
        )

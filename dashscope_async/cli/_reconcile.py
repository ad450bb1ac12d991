"""The ``tasks reconcile`` command: settle, by hand, the submits a journal left ambiguous.

Owns showing a person what may have become of each unanswered submit (the account's tasks of
its model created around its send time that no job of the store knows), and writing what the
person decides: ``--adopt KEY=TASK_ID`` (the job's task; the next run re-attaches to it) or
``--no-task KEY`` (it made none; the next run submits it again). Works on a batch's journal file
and on a fleet's Redis store alike (``--store``). It never submits and never cancels a task; the
runner's own rules (``_runner._reconcile``) stay the only automatic ones.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import attrs
import click
from rich.table import Table

from .._errors import JournalError
from .._journal import JobState, JournalEntry
from .._models import TaskListItem
from .._store import JobStore
from ._app import CliError, json_option, run_async, settings_of
from ._journal import open_store
from ._tasks import task_json

#: Tasks are looked for from this long before the send (clock differences) ...
BEFORE_SEND: Final = timedelta(seconds=30)
#: ... until this long after it (a request the service processed late).
AFTER_SEND: Final = timedelta(minutes=30)


@attrs.frozen
class Unsettled:
    """An ambiguous job and the tasks that may be its own."""

    entry: JournalEntry
    candidates: tuple[TaskListItem, ...]


def _pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, task_id = value.rpartition("=")
        if not sep or not key or not task_id:
            raise CliError(f"--adopt takes KEY=TASK_ID, not {value!r}")
        pairs.append((key, task_id))
    return pairs


async def _ambiguous(store: JobStore, held_of: Any) -> list[JournalEntry]:
    unanswered = await store.entries(JobState.INTENT)
    held = set() if held_of is None else await held_of([e.key for e in unanswered])
    return [e for e in unanswered if e.key not in held and e.sent_at is not None]


async def _settleable(store: JobStore, held_of: Any, key: str) -> JournalEntry:
    for entry in await _ambiguous(store, held_of):
        if entry.key == key:
            return entry
    raise CliError(
        f"job {key!r} is not ambiguous in this store (unknown, answered, or held by a live"
        " worker right now)",
        hint="see `dashscope-async journal` for where it stands",
    )


@click.command("reconcile")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option(
    "--store", "store_url", metavar="URL", help="A fleet's Redis store instead of a file."
)
@click.option("--namespace", default="dashscope", show_default=True, help="The store's namespace.")
@click.option(
    "--adopt",
    "adopt",
    multiple=True,
    metavar="KEY=TASK_ID",
    help="Record TASK_ID as the job's task: the next run re-attaches to it.",
)
@click.option(
    "--no-task",
    "--none",
    "no_task",
    multiple=True,
    metavar="KEY",
    help="Record that the job's submit made no task: the next run submits it again"
    " (--none is the same).",
)
@json_option
@click.pass_context
def reconcile(
    ctx: click.Context,
    path: Path | None,
    store_url: str | None,
    namespace: str,
    adopt: tuple[str, ...],
    no_task: tuple[str, ...],
) -> None:
    """Show each ambiguous job of a JOURNAL (or a fleet's --store) with the tasks that may be
    its own; settle one with --adopt KEY=TASK_ID or --no-task KEY.

    \b
    Examples:  dashscope-async tasks reconcile out/journal.sqlite
               dashscope-async tasks reconcile --store redis://10.0.0.5:6379/0 --namespace acme
               dashscope-async tasks reconcile out/journal.sqlite --adopt portrait-7=TASK_ID
    """
    settings = settings_of(ctx)
    adoptions = _pairs(adopt)
    client = settings.client()

    async def settle() -> dict[str, Any]:
        done: dict[str, Any] = {"adopted": [], "no_task": []}
        async with client, open_store(path, store_url, namespace) as (store, held_of):
            for key, task_id in adoptions:
                await _settleable(store, held_of, key)
                if task_id in await store.task_ids():
                    raise CliError(f"task {task_id} is already another job's in this store")
                await client.get_task(task_id)  # it exists (TaskNotFoundError otherwise)
                await store.record_submitted(key, task_id)
                done["adopted"].append({"key": key, "task_id": task_id})
            for key in no_task:
                await _settleable(store, held_of, key)
                await store.record_canceled(key)
                done["no_task"].append({"key": key})
        return done

    async def survey() -> list[Unsettled]:
        found: list[Unsettled] = []
        async with client, open_store(path, store_url, namespace) as (store, held_of):
            known = await store.task_ids()
            now = client.clock.wall()
            for entry in await _ambiguous(store, held_of):
                assert entry.sent_at is not None
                start = entry.sent_at - BEFORE_SEND
                end = min(entry.sent_at + AFTER_SEND, now)
                items = [
                    item
                    async for item in client.list_tasks(start=start, end=end, model=entry.model)
                    if item.task_id not in known
                ]
                found.append(Unsettled(entry, tuple(items)))
        return found

    out = settings.stdout()
    try:
        if adoptions or no_task:
            done = run_async(settings, settle)
            if settings.json_output:
                out.print_json(json.dumps(done))
                return
            for item in done["adopted"]:
                out.print(f"adopted: {item['key']} -> {item['task_id']} (the next run re-attaches)")
            for item in done["no_task"]:
                out.print(f"no task: {item['key']} (the next run submits it again)")
            return
        unsettled = run_async(settings, survey)
    except JournalError as exc:
        raise CliError(str(exc)) from None
    if settings.json_output:
        document = [
            {
                "key": u.entry.key,
                "model": u.entry.model,
                "sent_at": None if u.entry.sent_at is None else u.entry.sent_at.isoformat(),
                "candidates": [task_json(item) for item in u.candidates],
            }
            for u in unsettled
        ]
        out.print_json(json.dumps(document))
        return
    if not unsettled:
        out.print("no ambiguous jobs")
        return
    for u in unsettled:
        table = Table(
            title=f"{u.entry.key}: {u.entry.model}, sent {u.entry.sent_at}", title_justify="left"
        )
        for column in ("candidate task", "status", "created"):
            table.add_column(column, overflow="fold")
        for item in u.candidates:
            table.add_row(item.task_id, item.status.value, str(item.created or ""))
        out.print(table)
        if not u.candidates:
            out.print("  no unknown task of its model around its send: --no-task KEY to resubmit")

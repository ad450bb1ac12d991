"""The ``journal`` command: where a batch's journal (or a fleet's job store) stands.

Owns reading a job store for people: a batch's SQLite journal, or with ``--store redis://...``
the ``RedisJournal`` every worker of a fleet shares. The stores live in ``_journal`` and
``_redis_journal``. Sends no request to the service and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import anyio
import attrs
import click
from rich.table import Table

from .._errors import JournalError
from .._journal import JobState, Journal, JournalEntry
from .._store import JobStore
from ._app import CliError, json_option, settings_of

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@attrs.frozen
class StoreReport:
    """What the command shows: counts by state, failed jobs, and unanswered submits.

    Attributes:
        counts: jobs in each state.
        failed: the jobs that ended with an error.
        ambiguous: jobs whose submit was sent and never answered, and that no live worker
            holds: a task may exist; settle them before running them again.
        in_flight: jobs with an unanswered submit that a live worker holds right now.
    """

    counts: dict[JobState, int]
    failed: list[JournalEntry]
    ambiguous: list[JournalEntry]
    in_flight: list[JournalEntry]


async def _report(
    store: JobStore, held_of: Callable[[list[str]], Awaitable[set[str]]] | None
) -> StoreReport:
    unanswered = await store.entries(JobState.INTENT)
    # A file is held by one process at a time: nothing of it is in flight while we read it.
    held = set() if held_of is None else await held_of([entry.key for entry in unanswered])
    return StoreReport(
        counts=await store.counts(),
        failed=await store.entries(JobState.FAILED),
        ambiguous=[e for e in unanswered if e.key not in held],
        in_flight=[e for e in unanswered if e.key in held],
    )


@asynccontextmanager
async def open_store(
    path: Path | None, store_url: str | None, namespace: str
) -> AsyncIterator[tuple[JobStore, Callable[[list[str]], Awaitable[set[str]]] | None]]:
    """The journal at ``path``, or the Redis store at ``store_url``, open for the block; with
    how to tell which unanswered jobs a live worker holds (None for a file: nobody else can)."""
    if (path is None) == (store_url is None):
        raise CliError("give a journal file or --store URL (one of them)")
    if store_url is not None:
        if not store_url.lower().startswith(REDIS_SCHEMES):
            raise CliError(
                f"--store takes a Redis URL (redis://, rediss://, unix://), not {store_url!r}",
                hint="for a batch's SQLite journal give its path instead",
            )
        try:
            from .._redis_journal import RedisJournal
        except ImportError:
            raise CliError(
                "reading a Redis store needs redis-py", hint="pip install 'dashscope-async[redis]'"
            ) from None
        try:
            shared = RedisJournal(store_url, namespace=namespace, outage_grace=5.0)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        async with shared:
            yield shared, shared.claimed
        return
    assert path is not None
    if not await anyio.Path(path).is_file():
        raise CliError(f"no journal at {path}", hint="give the file a batch wrote (--journal)")
    try:
        journal = await Journal.open(path)
    except JournalError as exc:
        raise CliError(str(exc), hint="is a batch still running with it?") from None
    async with journal:
        yield journal, None


async def read_store(path: Path | None, store_url: str | None, namespace: str) -> StoreReport:
    """The report of the journal at ``path``, or of the Redis store at ``store_url``."""
    try:
        async with open_store(path, store_url, namespace) as (store, held_of):
            return await _report(store, held_of)
    except JournalError as exc:
        raise CliError(str(exc), hint="is Redis running at that address?") from None


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _unanswered_json(entry: JournalEntry) -> dict[str, object]:
    return {
        "key": entry.key,
        "model": entry.model,
        "sent_at": _when(entry.sent_at),
        "attempts": entry.attempts,
    }


@click.command("journal")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="A fleet's shared job store instead of a file: its Redis URL (redis://host:6379/0).",
)
@click.option(
    "--namespace",
    default="dashscope",
    show_default=True,
    help="The store's namespace (the workers' RedisJournal(namespace=...)).",
)
@json_option
@click.pass_context
def journal(ctx: click.Context, path: Path | None, store_url: str | None, namespace: str) -> None:
    """Show where a batch's JOURNAL (or a fleet's --store) stands: jobs by state, why the failed
    ones failed, and which submits went unanswered (ambiguous: settle them before a rerun).

    \b
    Examples:  dashscope-async journal out/journal.sqlite
               dashscope-async journal --store redis://127.0.0.1:6379/0 --namespace acme
    """
    settings = settings_of(ctx)
    report = anyio.run(read_store, path, store_url, namespace)
    out = settings.stdout()
    if settings.json_output:
        document = {
            "counts": {state.value: n for state, n in report.counts.items()},
            "failed": [
                {"key": e.key, "task_id": e.task_id, "error": e.error_type, "code": e.error_code}
                for e in report.failed
            ],
            "ambiguous": [_unanswered_json(e) for e in report.ambiguous],
            "in_flight": [_unanswered_json(e) for e in report.in_flight],
        }
        out.print_json(json.dumps(document))
        return
    where = f"store {store_url} ({namespace})" if store_url is not None else f"journal {path}"
    table = Table(title=where, title_justify="left")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state, count in report.counts.items():
        table.add_row(state.value, str(count))
    out.print(table)
    for entry in report.failed:
        out.print(f"failed: {entry.key}  {entry.error_type} {entry.error_code or ''}".rstrip())
    for entry in report.ambiguous:
        out.print(
            f"ambiguous: {entry.key}  {entry.model}, sent {_when(entry.sent_at)}, no answer"
            " recorded: a task may exist"
        )
    for entry in report.in_flight:
        out.print(f"in flight: {entry.key}  {entry.model}, sent {_when(entry.sent_at)}")
    if report.ambiguous:
        where_args = f"--store {store_url} --namespace {namespace}" if path is None else str(path)
        out.print(f"settle them with: dashscope-async tasks reconcile {where_args}")

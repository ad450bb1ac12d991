"""The ``journal`` command: where a batch's journal stands, without running anything.

Owns reading a journal for people; the journal itself lives in ``_journal``. Sends no request.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import click
from rich.table import Table

from .._errors import JournalError
from .._journal import JobState, Journal, JournalEntry
from ._app import CliError, json_option, settings_of


async def read_journal(
    path: Path,
) -> tuple[dict[JobState, int], list[JournalEntry], list[JournalEntry]]:
    """Counts by state, the failed entries and the ambiguous ones of the journal at ``path``."""
    if not await anyio.Path(path).is_file():
        raise CliError(f"no journal at {path}", hint="give the file a batch wrote (--journal)")
    try:
        async with await Journal.open(path) as journal:
            return (
                await journal.counts(),
                await journal.entries(JobState.FAILED),
                # An intent is a submit with no recorded answer: a task may exist.
                await journal.entries(JobState.INTENT),
            )
    except JournalError as exc:
        raise CliError(str(exc), hint="is a batch still running with it?") from None


@click.command("journal")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def journal(ctx: click.Context, path: Path) -> None:
    """Show where a batch's JOURNAL stands: jobs by state, why the failed ones failed, and the
    ambiguous ones (a submit with no answer; settle them with `tasks reconcile`).

    \b
    Example:  dashscope-async journal out/journal.sqlite
    """
    settings = settings_of(ctx)
    counts, failed, ambiguous = anyio.run(read_journal, path)
    out = settings.stdout()
    if settings.json_output:
        document = {
            "counts": {state.value: n for state, n in counts.items()},
            "failed": [
                {"key": e.key, "task_id": e.task_id, "error": e.error_type, "code": e.error_code}
                for e in failed
            ],
            "ambiguous": [
                {
                    "key": e.key,
                    "model": e.model,
                    "sent_at": None if e.sent_at is None else e.sent_at.isoformat(),
                }
                for e in ambiguous
            ],
        }
        out.print_json(json.dumps(document))
        return
    table = Table(title=f"journal {path}", title_justify="left")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state, count in counts.items():
        table.add_row(state.value, str(count))
    out.print(table)
    for entry in failed:
        out.print(f"failed: {entry.key}  {entry.error_type} {entry.error_code or ''}".rstrip())
    for entry in ambiguous:
        sent = "" if entry.sent_at is None else f" sent {entry.sent_at.isoformat()}"
        out.print(f"ambiguous: {entry.key}  {entry.model}{sent}")
    if ambiguous:
        out.print(f"settle them with: dashscope-async tasks reconcile {path}")

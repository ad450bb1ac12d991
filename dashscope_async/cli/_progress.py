"""Live progress of a batch: each job's state, done and failed counts, throttles, and an ETA.

Fed by the runner's events (``on_event``), drawn with rich: a live table on a terminal, one line
per finished job otherwise. Never changes what the runner does; a display error never fails a job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import attrs
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .._config import MODELS
from .._events import EventKind, RunnerEvent
from .._polling import RunTimeStats
from ._app import escape

#: Rows shown at once; beyond this the table shows the jobs in flight and the latest finished.
MAX_ROWS: Final = 14

_STYLES: Final = {
    "queued": "dim",
    "submitted": "cyan",
    "pending": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "bold red",
    "canceled": "magenta",
    "over-budget": "yellow",
}
_ENDED: Final = frozenset({"succeeded", "failed", "canceled"})
#: Characters of a task id shown in tables (the whole id is in ``--json`` and the results file).
SHORT_TASK_ID: Final = 8


def short_task_id(task_id: str | None) -> str:
    """The first characters of a task id, enough to tell a batch's tasks apart."""
    if not task_id:
        return ""
    return task_id if len(task_id) <= SHORT_TASK_ID + 1 else task_id[:SHORT_TASK_ID] + "…"


def short_model(model: str) -> str:
    """``repaint`` or ``sketch`` for the known models; the name otherwise."""
    spec = MODELS.get(model)
    return spec.kind if spec is not None else model


@attrs.define
class JobView:
    """What the display knows about one job."""

    index: int
    label: str
    model: str
    state: str = "queued"
    task_id: str | None = None
    submitted: float | None = None
    running: float | None = None
    ended: float | None = None
    error: str | None = None
    throttles: int = 0
    #: How the job ended the command (``settle``); ``running``: its task was left running.
    final: str | None = None

    @property
    def done(self) -> bool:
        """True once the job has ended (whatever its task is doing)."""
        return self.final is not None or self.state in _ENDED


class BatchProgress:
    """Tracks a batch through runner events and draws it.

    Args:
        console: where to draw (stderr).
        jobs: (label, model) of each job, by index.
        live: draw a live table (a terminal); otherwise print a line per finished job.
        typical_seconds: run seconds to assume per model before any task of it finished (the
            registry's, times the emulator's time scale when that is known).
        enabled: False draws nothing at all (``--quiet``, ``--json``).
        clock: seconds, monotonic.

    The ETA comes from the library's model of run times (``RunTimeStats``), fed with the
    service's own run times of the tasks that finished in this run (replayed jobs add none),
    and the models' limits on tasks in progress.
    """

    def __init__(
        self,
        console: Console,
        jobs: Sequence[tuple[str, str]],
        *,
        live: bool,
        typical_seconds: Mapping[str, float] | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._console = console
        self.jobs = [JobView(i, label, model) for i, (label, model) in enumerate(jobs)]
        self.run_times = RunTimeStats(priors=dict(typical_seconds or {}))
        self._enabled = enabled
        self._clock = clock
        self._started = clock()
        self._order: list[int] = []  # indexes in the order they last changed
        self.throttles = 0
        self.retries = 0
        self.stopping = False
        self._live: Live | None = (
            Live(self, console=console, refresh_per_second=8, transient=False)
            if live and enabled
            else None
        )

    # --- input --------------------------------------------------------------------------------

    def on_event(self, event: RunnerEvent) -> None:
        """The runner's ``on_event`` callback."""
        if not 0 <= event.index < len(self.jobs):
            return
        job = self.jobs[event.index]
        now = self._clock()
        if event.task_id:
            job.task_id = event.task_id
        kind = event.kind
        if kind is EventKind.SUBMITTED:
            job.state, job.submitted = "pending", now
        elif kind is EventKind.RUNNING:
            job.state = "running"
            job.submitted = job.submitted or now
            job.running = job.running or now
        elif kind is EventKind.THROTTLED:
            job.throttles += 1
            self.throttles += 1
        elif kind is EventKind.RETRIED:
            self.retries += 1
        elif kind in (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELED) and not job.final:
            job.state, job.ended, job.error = kind.value, now, event.error
        self._touch(event.index)

    def settle(
        self,
        index: int,
        status: str,
        *,
        error: str | None = None,
        run_seconds: float | None = None,
    ) -> None:
        """How the job ended, as the command reports it (``running`` for a task left running
        on the service), and its run time on the service if it ran in this run."""
        if not 0 <= index < len(self.jobs):
            return
        job = self.jobs[index]
        job.state = job.final = status
        job.ended = job.ended or self._clock()
        job.error = error
        if run_seconds is not None:
            self.run_times.observe(job.model, run_seconds)
        self._touch(index)
        self._print_line(job)

    def _touch(self, index: int) -> None:
        if index in self._order:
            self._order.remove(index)
        self._order.append(index)

    def _print_line(self, job: JobView) -> None:
        if self._live is not None or not self._enabled:
            return
        done = sum(1 for j in self.jobs if j.done)
        style = _STYLES.get(job.state, "")
        detail = f" - {escape(job.error)}" if job.error else ""
        self._console.print(
            f"[{done}/{len(self.jobs)}] {escape(job.label)} ({short_model(job.model)}):"
            f" [{style}]{job.state}[/]{detail}"
        )

    # --- figures ------------------------------------------------------------------------------

    def count(self, state: str) -> int:
        return sum(1 for job in self.jobs if job.state == state)

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def eta(self) -> float | None:
        """Seconds until the last job ends: per model, the expected run time of each job left,
        less what the running ones have run, over the tasks it may have in progress."""
        now = self._clock()
        finishes: list[float] = []
        for model in {job.model for job in self.jobs}:
            per_job = self.run_times.expected(model).median
            left = 0.0
            for job in self.jobs:
                if job.model != model or job.done:
                    continue
                started = job.running or job.submitted
                left += per_job if started is None else max(per_job - (now - started), 0.0)
            spec = MODELS.get(model)
            finishes.append(left / max(spec.max_in_progress if spec is not None else 1, 1))
        return max(finishes, default=0.0)

    # --- drawing ------------------------------------------------------------------------------

    def _rows(self) -> list[JobView]:
        if len(self.jobs) <= MAX_ROWS:
            return self.jobs
        active = [j for j in self.jobs if j.state != "queued" and not j.done]
        recent = [self.jobs[i] for i in reversed(self._order) if self.jobs[i].done]
        chosen = {j.index for j in active[:MAX_ROWS]}
        for job in recent:
            if len(chosen) >= MAX_ROWS:
                break
            chosen.add(job.index)
        return [self.jobs[i] for i in sorted(chosen)]

    def _table(self, now: float) -> Table:
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        table.add_column("job", overflow="ellipsis", no_wrap=True, max_width=28)
        table.add_column("model", no_wrap=True)
        table.add_column("state", overflow="ellipsis", no_wrap=True)
        table.add_column("task", no_wrap=True)
        table.add_column("s", justify="right", no_wrap=True)
        for job in self._rows():
            seconds = ""
            if job.submitted is not None:
                seconds = f"{(job.ended or now) - job.submitted:.1f}"
            state = Text(job.state, style=_STYLES.get(job.state, ""))
            if job.throttles:
                state.append(f" (throttled x{job.throttles})", style="dim")
            table.add_row(
                Text(job.label), short_model(job.model), state, short_task_id(job.task_id), seconds
            )
        return table

    def footer(self, width: int) -> list[Text]:
        """The counts, elapsed time and ETA in ``width`` columns: the counts and times always,
        the rest as room allows; the Ctrl-C notice on a line of its own."""
        total = len(self.jobs)
        succeeded, failed = self.count("succeeded"), self.count("failed")
        stopped = total - succeeded - failed - sum(1 for j in self.jobs if not j.done)
        done = total - sum(1 for j in self.jobs if not j.done)
        eta = self.eta()
        # (text, style, kept at any width)
        parts: list[tuple[str, str, bool]] = [
            (f"{done}/{total} done", "bold", True),
            (f"ok {succeeded}", "green", True),
            (f"failed {failed}", "red" if failed else "", True),
            (f"stopped {stopped}", "magenta", False) if stopped else ("", "", False),
            (f"throttled {self.throttles}", "", False),
            (f"elapsed {self.elapsed:.0f} s", "", True),
            (f"ETA ~{eta:.0f} s", "", True)
            if eta is not None and done < total
            else ("", "", False),
        ]
        parts = [part for part in parts if part[0]]
        while sum(len(text) + 2 for text, _, _ in parts) - 2 > width and any(
            not kept for _, _, kept in parts
        ):
            dropped = next(i for i in range(len(parts) - 1, -1, -1) if not parts[i][2])
            del parts[dropped]
        line = Text(no_wrap=True, overflow="ellipsis")
        for number, (text, style, _) in enumerate(parts):
            if number:
                line.append("  ")
            line.append(text, style=style)
        lines = [line]
        if self.stopping:
            notice = "stopping: canceling what has not started; Ctrl-C again to force"
            if len(notice) > width:
                notice = "stopping (Ctrl-C again to force)"
            lines.append(Text(notice, style="bold yellow", no_wrap=True, overflow="ellipsis"))
        return lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        done = sum(1 for job in self.jobs if job.done)
        # A grid puts the bar on a line of its own (a bare ProgressBar ends no line).
        bottom = Table.grid()
        bottom.add_row(
            ProgressBar(total=max(len(self.jobs), 1), completed=done, width=min(40, width))
        )
        for line in self.footer(width):
            bottom.add_row(line)
        yield Group(self._table(self._clock()), Text(""), bottom)

    def __enter__(self) -> BatchProgress:
        self._started = self._clock()
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()

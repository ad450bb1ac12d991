"""Live progress of a batch: each job's state, done and failed counts, throttles, and an ETA.

Fed by the runner's events (``on_event``), drawn with rich: a live table on a terminal, one line
per finished job otherwise. Never changes what the runner does; a display error never fails a job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import attrs
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .._config import MODELS
from .._events import EventKind, RunnerEvent
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
}
_FINAL: Final = frozenset({"succeeded", "failed", "canceled"})


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
    ended: float | None = None
    error: str | None = None
    throttles: int = 0


class BatchProgress:
    """Tracks a batch through runner events and draws it.

    Args:
        console: where to draw (stderr).
        jobs: (label, model) of each job, by index.
        live: draw a live table (a terminal); otherwise print a line per finished job.
        typical_seconds: run seconds to assume per model before any job of it finished.
        enabled: False draws nothing at all (``--quiet``, ``--json``).
        clock: seconds, monotonic.
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
        self._typical = dict(typical_seconds or {})
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
        elif kind is EventKind.THROTTLED:
            job.throttles += 1
            self.throttles += 1
        elif kind is EventKind.RETRIED:
            self.retries += 1
        elif kind in (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELED):
            job.state, job.ended, job.error = kind.value, now, event.error
            self._print_line(job)
        self._touch(event.index)

    def _touch(self, index: int) -> None:
        if index in self._order:
            self._order.remove(index)
        self._order.append(index)

    def _print_line(self, job: JobView) -> None:
        if self._live is not None or not self._enabled:
            return
        done = sum(1 for j in self.jobs if j.state in _FINAL)
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
        """Seconds until the last job ends, if the models keep their one-at-a-time pace."""
        now = self._clock()
        finishes: list[float] = []
        for model in {job.model for job in self.jobs}:
            jobs = [job for job in self.jobs if job.model == model]
            runs = [
                job.ended - job.submitted
                for job in jobs
                if job.state == "succeeded" and job.ended is not None and job.submitted is not None
            ]
            per_job = sum(runs) / len(runs) if runs else self._typical.get(model)
            if per_job is None:
                return None
            left = 0.0
            for job in jobs:
                if job.state in _FINAL:
                    continue
                if job.submitted is not None:
                    left += max(per_job - (now - job.submitted), 0.0)
                else:
                    left += per_job
            finishes.append(left / max(MODELS[model].max_in_progress if model in MODELS else 1, 1))
        return max(finishes, default=0.0)

    # --- drawing ------------------------------------------------------------------------------

    def _rows(self) -> list[JobView]:
        if len(self.jobs) <= MAX_ROWS:
            return self.jobs
        active = [j for j in self.jobs if j.state not in ("queued", *_FINAL)]
        recent = [self.jobs[i] for i in reversed(self._order) if self.jobs[i].state in _FINAL]
        chosen = {j.index for j in active[:MAX_ROWS]}
        for job in recent:
            if len(chosen) >= MAX_ROWS:
                break
            chosen.add(job.index)
        return [self.jobs[i] for i in sorted(chosen)]

    def __rich__(self) -> RenderableType:
        now = self._clock()
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        table.add_column("job", overflow="ellipsis", max_width=28)
        table.add_column("model")
        table.add_column("state")
        table.add_column("task id", overflow="ellipsis", max_width=20)
        table.add_column("s", justify="right")
        for job in self._rows():
            seconds = ""
            if job.submitted is not None:
                seconds = f"{(job.ended or now) - job.submitted:.1f}"
            state = Text(job.state, style=_STYLES.get(job.state, ""))
            if job.throttles:
                state.append(f" (throttled x{job.throttles})", style="dim")
            table.add_row(job.label, short_model(job.model), state, job.task_id or "", seconds)
        total = len(self.jobs)
        succeeded, failed, canceled = (
            self.count("succeeded"),
            self.count("failed"),
            self.count("canceled"),
        )
        done = succeeded + failed + canceled
        eta = self.eta()
        footer = Text()
        footer.append(f"{done}/{total} done", style="bold")
        footer.append(f"  ok {succeeded}", style="green")
        footer.append(f"  failed {failed}", style="red" if failed else "")
        if canceled:
            footer.append(f"  canceled {canceled}", style="magenta")
        footer.append(f"  throttled {self.throttles}")
        footer.append(f"  elapsed {self.elapsed:.1f} s")
        if eta is not None and done < total:
            footer.append(f"  ETA ~{eta:.0f} s")
        if self.stopping:
            footer.append(
                "  stopping: cancelling what has not started (Ctrl-C again to force)",
                style="bold yellow",
            )
        bar = ProgressBar(total=max(total, 1), completed=done, width=40)
        return Group(table, Text(""), bar, footer)

    def __enter__(self) -> BatchProgress:
        self._started = self._clock()
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()

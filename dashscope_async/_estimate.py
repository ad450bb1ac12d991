"""The dry run: what a batch would cost and how long it would take, before anything is sent.

Owns the arithmetic of an estimate: images and CNY per model, jobs a journal already finished,
jobs a budget would stop, and wall time from the limits and typical run times. It never sends a
request, never opens a journal (the caller passes its entries) and never sleeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Protocol

import attrs

from ._budget import Budget, BudgetLedger
from ._config import model_spec
from ._errors import ValidationError
from ._journal import JobState, JournalEntry, billed_images, job_key
from ._limits import Limits
from ._models import Request, SketchToImage, StyleRepaint

__all__ = ["Estimate", "ModelEstimate", "estimate"]


class KeyedRequest(Protocol):
    """A request with a key, such as ``ds.Job``."""

    @property
    def request(self) -> Request: ...

    @property
    def key(self) -> str | None: ...


@attrs.frozen
class ModelEstimate:
    """One model's share of a batch.

    Attributes:
        model: the model.
        jobs: jobs that would run (submitted, or re-attached to a task the journal knows).
        images: images those jobs ask for: the most the service can bill.
        cost_cny: what those images cost.
        wall_seconds: how long this model's jobs take: the slower of submitting them at the
            model's pace and running them ``max_in_progress`` at a time.
        done: jobs the journal already finished (replayed without requests).
        over_budget: jobs the budget would stop before they are submitted.
    """

    model: str
    jobs: int = 0
    images: int = 0
    cost_cny: Decimal = Decimal(0)
    wall_seconds: float = 0.0
    done: int = 0
    over_budget: int = 0


def _frozen(shares: Mapping[str, ModelEstimate]) -> Mapping[str, ModelEstimate]:
    return MappingProxyType(dict(shares))


def _mapping_repr(shares: Mapping[str, ModelEstimate]) -> str:
    return repr(dict(shares))


@attrs.frozen
class Estimate:
    """What a batch would do: images, cost, time, and what a journal or budget changes.

    The cost assumes every image asked for is billed (the service bills successful images
    only, so the real cost is at most this). Models run side by side, so the batch takes as long
    as its slowest model.

    Attributes:
        models: each model's share, by name.
        spent_images: images the journal says were already billed (they count against a budget).
        spent_cny: what they cost.

    Example:
        ```python
        plan = ds.estimate(requests, budget=ds.Budget(cny="10"))
        print(plan.images, plan.cost_cny, plan.wall_seconds, plan.over_budget)
        ```
    """

    models: Mapping[str, ModelEstimate] = attrs.field(converter=_frozen, repr=_mapping_repr)
    spent_images: int = 0
    spent_cny: Decimal = Decimal(0)

    @property
    def jobs(self) -> int:
        """Jobs that would run."""
        return sum(share.jobs for share in self.models.values())

    @property
    def images(self) -> int:
        """Images those jobs ask for."""
        return sum(share.images for share in self.models.values())

    @property
    def cost_cny(self) -> Decimal:
        """What those images cost at most, in CNY."""
        return sum((share.cost_cny for share in self.models.values()), Decimal(0))

    @property
    def wall_seconds(self) -> float:
        """How long the batch takes: its slowest model, since models run side by side."""
        return max((share.wall_seconds for share in self.models.values()), default=0.0)

    @property
    def done(self) -> int:
        """Jobs the journal already finished."""
        return sum(share.done for share in self.models.values())

    @property
    def over_budget(self) -> int:
        """Jobs the budget would stop."""
        return sum(share.over_budget for share in self.models.values())

    def describe(self) -> str:
        """A few lines for people: per model, then the total.

        Example:
            ```python
            print(ds.estimate(requests).describe())
            ```
        """
        lines = []
        for share in self.models.values():
            extra = []
            if share.done:
                extra.append(f"{share.done} already done")
            if share.over_budget:
                extra.append(f"{share.over_budget} over budget")
            note = f" ({', '.join(extra)})" if extra else ""
            lines.append(
                f"{share.model}: {_count(share.jobs, 'job')}, {_count(share.images, 'image')},"
                f" CNY {share.cost_cny}, about {_duration(share.wall_seconds)}{note}"
            )
        lines.append(
            f"total: {_count(self.jobs, 'job')}, {_count(self.images, 'image')},"
            f" CNY {self.cost_cny}, about {_duration(self.wall_seconds)}"
        )
        if self.spent_images:
            lines.append(
                f"already billed: {_count(self.spent_images, 'image')}, CNY {self.spent_cny}"
            )
        return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@attrs.define
class _Tally:
    submits: int = 0
    runs: int = 0
    images: int = 0
    done: int = 0
    over_budget: int = 0


def _entries_by_key(
    entries: Mapping[str, JournalEntry] | Iterable[JournalEntry] | None,
) -> dict[str, JournalEntry]:
    if entries is None:
        return {}
    if isinstance(entries, Mapping):
        return dict(entries)
    return {entry.key: entry for entry in entries}


def estimate(
    requests: Iterable[Request | KeyedRequest],
    *,
    limits: Limits | None = None,
    budget: Budget | None = None,
    journal_entries: Mapping[str, JournalEntry] | Iterable[JournalEntry] | None = None,
    typical_run_seconds: Mapping[str, float] | None = None,
) -> Estimate:
    """Estimate a batch without sending anything: images, CNY, wall time, jobs done or stopped.

    With ``journal_entries`` (from ``Journal.entries()``), jobs the journal finished are left
    out, jobs it knows a task for count without a new submit, and images it says were billed
    count against ``budget``. The budget is applied in batch order, each job reserving every
    image it asks for, as the runner does.

    Per model, the time is the slower of submitting its jobs at ``limits``' pace
    (``1 / submit_rate + safety_margin`` apart) and running them ``max_in_progress`` at a time
    for ``typical_run_seconds`` each (the model registry's unless given).

    Matching requests to journal entries needs their ``job_key``, which reads local input
    files' metadata: from async code, call this through ``anyio.to_thread.run_sync``.

    Args:
        requests: the batch: requests, or ``ds.Job``s with keys.
        limits: the limits the runner would keep (default: the service's).
        budget: the spending cap the runner would keep; its prices are used if it has any.
        journal_entries: a journal's entries, as a list or by key.
        typical_run_seconds: seconds one task runs, by model, instead of the registry's.

    Example:
        ```python
        async with await ds.Journal.open("batch.sqlite") as journal:
            entries = await journal.entries()
        plan = await anyio.to_thread.run_sync(
            lambda: ds.estimate(jobs, budget=ds.Budget(images=500), journal_entries=entries)
        )
        print(plan.describe())
        ```
    """
    limits = limits or Limits()
    known = _entries_by_key(journal_entries)
    ledger = BudgetLedger(budget) if budget is not None else None

    def price(model: str) -> Decimal:
        return budget.price(model) if budget is not None else model_spec(model).price_per_image

    spent_images = 0
    spent_cny = Decimal(0)
    for recorded in known.values():
        if recorded.state is JobState.SUCCEEDED and recorded.result is not None:
            billed = billed_images(recorded.result)
            spent_images += billed
            spent_cny += price(recorded.model) * billed
            if ledger is not None:
                ledger.record(recorded.model, billed)

    tallies: dict[str, _Tally] = {}
    for index, item in enumerate(requests):
        if isinstance(item, StyleRepaint | SketchToImage):
            request, key = item, None
        else:
            request, key = item.request, item.key
        model = request.model
        tally = tallies.setdefault(model, _Tally())
        entry: JournalEntry | None = None
        if known:
            entry = _journal_entry(known, request, index, key)
        if entry is not None and entry.state.is_final:
            tally.done += 1
            continue
        images = request.images_requested
        has_task = entry is not None and entry.state is JobState.SUBMITTED
        if ledger is not None:
            if has_task:
                # Already on the service: no cap can stop it now.
                ledger.record(model, images)
            elif not ledger.try_reserve(model, images):
                tally.over_budget += 1
                continue
        tally.runs += 1
        tally.images += images
        if not has_task:
            tally.submits += 1

    run_seconds = dict(typical_run_seconds or {})
    shares: dict[str, ModelEstimate] = {}
    for model, tally in tallies.items():
        model_limits = limits.for_model(model)
        typical = run_seconds.get(model, model_spec(model).typical_run_seconds)
        wall = max(
            tally.submits * limits.submit_spacing(model),
            tally.runs * typical / model_limits.max_in_progress,
        )
        shares[model] = ModelEstimate(
            model=model,
            jobs=tally.runs,
            images=tally.images,
            cost_cny=price(model) * tally.images,
            wall_seconds=wall,
            done=tally.done,
            over_budget=tally.over_budget,
        )
    return Estimate(models=shares, spent_images=spent_images, spent_cny=spent_cny)


def _journal_entry(
    known: Mapping[str, JournalEntry], request: Request, index: int, key: str | None
) -> JournalEntry | None:
    try:
        return known.get(job_key(request, index, key))
    except ValidationError:
        # An input that cannot be read now was never run under this key; the run will say why.
        return None

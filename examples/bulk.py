"""A bulk job: repaint a folder (or a list) of portraits, in order, within a spending cap.

Every input becomes one job keyed by its name; the runner keeps the account's limits, saves each
result image under ``--out`` as ``<key>-0.png`` as soon as it is ready, and stops submitting once
the next job could pass ``--budget-cny``. Outcomes come back in input order, so the report
(``report.csv``) lines up with the input whatever order the tasks finished in.

Run it::

    export DASHSCOPE_API_KEY=sk-...
    python -m examples.bulk photos/*.jpg --style anime --budget-cny 2.40 --out repainted/

    # or against the built-in emulator, with generated portraits:
    python -m examples.bulk --emulator --count 12 --budget-cny 1.00 --out /tmp/repainted

Works on asyncio and trio (``--trio``).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path

import anyio
import attrs

import dashscope_async as ds

REPORT_FIELDS = ("index", "key", "status", "task_id", "files", "error", "seconds")


@attrs.frozen
class BulkSummary:
    """What a bulk run did: counts, the money spent, and one report row per input, in order."""

    succeeded: int
    failed: int
    over_budget: int
    spent_cny: Decimal
    rows: tuple[dict[str, str], ...]


def jobs_from(sources: Iterable[str], style: ds.RepaintStyle) -> Iterator[ds.Job]:
    """One job per input (a URL or a path), keyed by its file name without the extension.

    A generator: the runner pulls jobs as it has room, so a list of 100,000 inputs is never
    held as 100,000 requests at once.
    """
    for position, source in enumerate(sources):
        name = source.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
        stem = Path(name).stem or f"input-{position}"
        yield ds.Job(ds.StyleRepaint(source, style=style), key=f"{position:05d}-{stem}")


def report_row(outcome: ds.Outcome) -> dict[str, str]:
    """One line of the report for one outcome."""
    if outcome.ok:
        status = "ok"
    elif isinstance(outcome.error, ds.BudgetExceededError):
        status = "over budget"
    else:
        status = "failed"
    return {
        "index": str(outcome.index),
        "key": outcome.key or "",
        "status": status,
        "task_id": outcome.task_id or "",
        "files": " ".join(str(path) for path in outcome.files),
        "error": ""
        if outcome.error is None
        else f"{type(outcome.error).__name__}: {outcome.error}",
        "seconds": f"{outcome.seconds:.1f}",
    }


async def repaint_all(
    client: ds.AsyncDashScope,
    sources: Sequence[str],
    *,
    style: ds.RepaintStyle,
    out: Path,
    budget_cny: Decimal | None,
    limits: ds.Limits | None = None,
    poll: ds.PollPolicy | None = None,
) -> BulkSummary:
    """Repaint every input; return the summary and write ``out/report.csv``.

    Example:
        ```python
        async with ds.AsyncDashScope() as client:
            summary = await repaint_all(
                client, ["a.jpg", "b.jpg"], style=ds.RepaintStyle.ANIME,
                out=Path("out"), budget_cny=Decimal("1.00"),
            )
        ```
    """
    budget = None if budget_cny is None else ds.Budget(cny=budget_cny)
    rows: list[dict[str, str]] = []
    counts = {"ok": 0, "failed": 0, "over budget": 0}
    async with ds.AsyncTaskRunner(
        client, download_dir=out, budget=budget, limits=limits, poll=poll
    ) as runner:
        # ``async with`` makes sure that leaving early (Ctrl-C, an exception) cancels the rest:
        # jobs not yet submitted are dropped and PENDING tasks are cancelled on the service.
        async with runner.map(jobs_from(sources, style), ordered=True) as outcomes:
            async for outcome in outcomes:
                row = report_row(outcome)
                rows.append(row)
                counts[row["status"]] += 1
                print(f"[{outcome.index + 1}/{len(sources)}] {row['key']}: {row['status']}")
        spent = runner.ledger.spent_cny if runner.ledger is not None else Decimal(0)
    await write_report(out / "report.csv", rows)
    return BulkSummary(
        succeeded=counts["ok"],
        failed=counts["failed"],
        over_budget=counts["over budget"],
        spent_cny=spent,
        rows=tuple(rows),
    )


async def write_report(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """Write the rows as CSV (in a worker thread: file I/O must not block the event loop)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    await anyio.Path(path).parent.mkdir(parents=True, exist_ok=True)
    await anyio.Path(path).write_text(buffer.getvalue(), encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Repaint many portraits within a budget.")
    parser.add_argument("sources", nargs="*", help="image URLs or paths")
    parser.add_argument("--style", default="anime", help="a preset style name or index")
    parser.add_argument("--out", type=Path, default=Path("repainted"))
    parser.add_argument("--budget-cny", type=Decimal, default=None)
    parser.add_argument("--emulator", action="store_true", help="run against the emulator")
    parser.add_argument("--count", type=int, default=8, help="inputs to make with --emulator")
    parser.add_argument("--trio", action="store_true", help="run on trio instead of asyncio")
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> BulkSummary:
    style = ds.RepaintStyle.parse(args.style)
    if args.emulator:
        from examples._emulated import emulated

        async with emulated() as service:
            sources = [str(service.portrait)] * args.count
            return await repaint_all(
                service.client, sources, style=style, out=args.out, budget_cny=args.budget_cny
            )
    async with ds.AsyncDashScope() as client:
        return await repaint_all(
            client, args.sources, style=style, out=args.out, budget_cny=args.budget_cny
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.sources and not args.emulator:
        print("give image URLs or paths, or --emulator", file=sys.stderr)
        return 2
    summary = anyio.run(amain, args, backend="trio" if args.trio else "asyncio")
    print(
        f"{summary.succeeded} repainted, {summary.failed} failed, {summary.over_budget} over"
        f" budget; spent CNY {summary.spent_cny}; report: {args.out / 'report.csv'}"
    )
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks [slots|overhead|memory|throughput|budget] [--quick] [--plots DIR]``.

Runs the benchmarks and prints their tables. ``slots`` runs every client side by side on
identical emulators; ``overhead`` is our CPU per job against bare httpx requests; ``memory`` is
100,000 jobs from a generator; ``throughput`` is jobs per second with every limit lifted;
``budget`` is slot utilisation against ``PollPolicy.polls_per_task`` over many batches.
``--quick`` runs the slot scenarios at scaled time only (about a minute); ``--plots DIR`` writes
the chart and the figures as JSON; ``replot --plots DIR`` redraws the chart from that JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import attrs

from benchmarks.overhead import OverheadFigures, overhead
from benchmarks.poll_budget import run_budgets
from benchmarks.slots import Scenario, SlotFigures, measure
from benchmarks.throughput import MemoryFigures, ThroughputFigures, throughput

QUICK_SCENARIOS = [
    Scenario("1.5 s lognormal (scale 0.1)", 1.5, 0.1, "lognormal", told_run_time=True),
    Scenario("1 s uniform ±10 %", 1.0, 1.0, "uniform", told_run_time=True),
]
FULL_SCENARIOS = [
    Scenario("15 s lognormal", 15.0, 1.0, "lognormal"),
    Scenario("15 s uniform ±10 %", 15.0, 1.0, "uniform"),
    *QUICK_SCENARIOS,
]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _ratio(value: float, ours: float) -> str:
    if not (math.isfinite(value) and math.isfinite(ours)) or ours == 0:
        return "-"
    return f"{value / ours:.2f}x"


def slot_tables(results: Sequence[SlotFigures]) -> str:
    """Two narrow tables per scenario: the slot, then the polls and the lag."""
    parts: list[str] = []
    for scenario in dict.fromkeys(f.scenario for f in results):
        rows = [f for f in results if f.scenario == scenario]
        ours = next(f for f in rows if f.client == "dashscope_async")

        def versus(f: SlotFigures, value: float, our_value: float) -> str:
            # A client that did not finish every job has no comparable makespan or polls.
            return _ratio(value, our_value) if f.succeeded == f.jobs else "-"

        parts.append(f"\n{scenario}, {ours.jobs} jobs\n")
        parts.append(
            table(
                ["client", "ok", "utilisation", "makespan s", "x ours", "throttled", "peak"],
                [
                    [
                        f.client,
                        f"{f.succeeded}/{f.jobs}",
                        f"{100 * f.utilisation:.1f} %",
                        f"{f.makespan:.1f}",
                        versus(f, f.makespan, ours.makespan),
                        f.throttled,
                        f.peak_in_progress,
                    ]
                    for f in rows
                ],
            )
        )
        parts.append("")
        parts.append(
            table(
                ["client", "polls/task", "x ours", "first task", "lag med / p95 s"],
                [
                    [
                        f.client,
                        f"{f.polls_per_task:.1f} / {f.polls_p95:.0f}",
                        versus(f, f.polls_per_task, ours.polls_per_task),
                        f"{f.first_task_polls} / {f.first_task_lag:.2f} s",
                        f"{f.lag_median:.2f} / {f.lag_p95:.2f}",
                    ]
                    for f in rows
                ],
            )
        )
    return "\n".join(parts)


async def _run_scenarios(scenarios: Sequence[Scenario], queue_ahead: bool) -> list[SlotFigures]:
    results: list[list[SlotFigures]] = [[] for _ in scenarios]

    async def one(index: int) -> None:
        results[index] = await measure(scenarios[index], queue_ahead=queue_ahead)

    async with anyio.create_task_group() as tg:
        for index in range(len(scenarios)):
            tg.start_soon(one, index)
    return [f for figures in results for f in figures]


def run_slots(quick: bool) -> list[SlotFigures]:
    scenarios = QUICK_SCENARIOS if quick else FULL_SCENARIOS
    return anyio.run(_run_scenarios, scenarios, True)


def run_memory() -> MemoryFigures:
    # A fresh process, so the baseline is the library's and nothing else's.
    code = (
        "from benchmarks.throughput import memory; f = memory();"
        "print(f.jobs, f.baseline_mb, f.peak_mb)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=900
    ).stdout.split()
    return MemoryFigures(
        jobs=int(output[0]), baseline_mb=float(output[1]), peak_mb=float(output[2])
    )


def machine() -> str:
    """The machine the figures come from, for the page."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )


COLORS = {
    "official SDK, loop": "tab:gray",
    "httpx + aiometer, 3 s polls": "navajowhite",
    "httpx + aiometer, 1 s polls": "tab:orange",
    "dashscope_async": "tab:blue",
    "dashscope_async, queue_ahead=1": "tab:cyan",
}


def plot(slots: Sequence[SlotFigures], directory: Path) -> None:
    """Utilisation and polls per task, by scenario and client (those that finished every job)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    scenarios = list(dict.fromkeys(f.scenario for f in slots))
    finished = [f for f in slots if f.succeeded == f.jobs]
    clients = list(dict.fromkeys(f.client for f in finished))
    fig, axes = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    width = 0.8 / len(clients)
    for offset, client in enumerate(clients):
        mine = {f.scenario: f for f in finished if f.client == client}
        xs = [i + (offset - (len(clients) - 1) / 2) * width for i in range(len(scenarios))]
        util = [100 * mine[s].utilisation if s in mine else 0 for s in scenarios]
        polls = [mine[s].polls_per_task if s in mine else 0 for s in scenarios]
        color = COLORS.get(client)
        bars = axes[0].bar(xs, util, width, label=client, color=color)
        axes[0].bar_label(bars, fmt="%.1f", fontsize=7)
        bars = axes[1].bar(xs, polls, width, label=client, color=color)
        axes[1].bar_label(bars, fmt="%.1f", fontsize=7)
    axes[0].set_ylabel("slot utilisation (%)")
    axes[0].set_ylim(0, 127)
    axes[0].set_yticks(range(0, 101, 20))
    axes[0].set_title("20 style-repaint jobs per client at the real limits, side by side")
    axes[0].legend(fontsize=8, ncols=len(clients), loc="upper center")
    axes[1].set_ylabel("polls per task")
    axes[1].set_xticks(range(len(scenarios)), scenarios, fontsize=9)
    fig.tight_layout()
    fig.savefig(directory / "slots.png", dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("which", nargs="*", default=["slots", "budget", "overhead", "memory"])
    parser.add_argument("--quick", action="store_true", help="scaled time only (about a minute)")
    parser.add_argument("--plots", type=Path, help="write the chart and its figures here")
    args = parser.parse_args(argv)
    print(f"Machine: {machine()}")

    if "replot" in args.which and args.plots:
        saved = json.loads((args.plots / "slots.json").read_text())
        plot([SlotFigures(**{**f, "lags": tuple(f["lags"])}) for f in saved], args.plots)
        return 0
    if "slots" in args.which:
        slots = run_slots(args.quick)
        print("\nEvery client side by side (loopback HTTP, real limits, identical emulators)")
        print(slot_tables(slots))
        if args.plots:
            args.plots.mkdir(parents=True, exist_ok=True)
            figures_json = json.dumps([attrs.asdict(f) for f in slots], indent=1)
            (args.plots / "slots.json").write_text(figures_json)
            plot(slots, args.plots)
    if "overhead" in args.which:
        jobs = 2000 if args.quick else 10_000
        runs: list[OverheadFigures] = [overhead(jobs, backend) for backend in ("asyncio", "trio")]
        print("\nClient overhead: CPU per job, ours against the bare httpx requests it makes\n")
        print(
            table(
                ["backend", "jobs", "requests", "bare ms/job", "ours", "ratio", "client", "ratio"],
                [
                    [
                        f.backend,
                        f"{f.jobs:,}",
                        f"{f.ours_requests:,} / {f.bare_requests:,}",
                        f"{f.bare_per_job_ms:.3f}",
                        f"{f.ours_per_job_ms:.3f}",
                        f"{f.ratio:.2f}x",
                        f"{f.client_per_job_ms:.3f}",
                        f"{f.client_ratio:.2f}x",
                    ]
                    for f in runs
                ],
            )
        )
    if "throughput" in args.which:
        tput: list[tuple[str, ThroughputFigures]] = [
            (backend, throughput(20_000, backend)) for backend in ("asyncio", "trio")
        ]
        print("\nThroughput with every limit lifted (in-process emulator, one core)\n")
        print(
            table(
                ["backend", "jobs", "seconds", "jobs/s with emulator", "jobs/s client only"],
                [
                    [
                        name,
                        f.jobs,
                        f"{f.seconds:.2f}",
                        f"{f.jobs_per_second:,.0f}",
                        f"{f.client_jobs_per_second:,.0f}",
                    ]
                    for name, f in tput
                ],
            )
        )
    if "budget" in args.which:
        batches = 4 if args.quick else 12
        print("\nPoll budget: slot utilisation against polls per task (virtual time, from cold)\n")
        print(
            table(
                [
                    "shape",
                    "jobs",
                    "polls_per_task",
                    "batches",
                    "polls/task",
                    "utilisation",
                    "worst",
                    ">= 99.0 %",
                    "lag median",
                ],
                [
                    [
                        f.shape,
                        f.jobs,
                        f"{f.polls_per_task:g}",
                        f.batches,
                        f"{statistics.fmean(f.polls):.2f} (max {max(f.polls):.2f})",
                        f"{100 * statistics.fmean(f.utilisation):.2f} %",
                        f"{100 * min(f.utilisation):.2f} %",
                        f"{100 * f.share_at_least(0.99):.0f} %",
                        f"{f.lag_median:.3f} s",
                    ]
                    for f in run_budgets(batches=batches, long_batches=max(2, batches // 2))
                ],
            )
        )
    if "memory" in args.which:
        figures = run_memory()
        print("\nMemory for a generator of jobs (loopback emulator in another process)\n")
        print(
            table(
                ["jobs", "baseline MB", "peak MB", "above baseline MB"],
                [
                    [
                        f"{figures.jobs:,}",
                        f"{figures.baseline_mb:.1f}",
                        f"{figures.peak_mb:.1f}",
                        f"{figures.above_baseline_mb:.1f}",
                    ]
                ],
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

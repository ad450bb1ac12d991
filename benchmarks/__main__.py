"""``python -m benchmarks [slots|throughput|memory] [--quick] [--plots DIR]``: run and print tables."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import attrs

from benchmarks.slots import SlotFigures, measure
from benchmarks.throughput import MemoryFigures, ThroughputFigures, throughput

SLOT_JOBS = 20


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def slot_rows(results: Sequence[SlotFigures]) -> list[list[object]]:
    return [
        [
            f.client,
            f"{f.time_scale:g}",
            f.jobs,
            f"{f.makespan:.1f}",
            f"{100 * f.utilisation:.1f} %",
            f"{f.polls_per_task:.1f} / {f.polls_p95:.0f}",
            f"{f.lag_median:.3f} / {f.lag_p95:.3f}",
            f.throttled,
            f.peak_in_progress,
            f.max_submits_per_second,
        ]
        for f in results
    ]


SLOT_HEADERS = [
    "client",
    "time scale",
    "jobs",
    "makespan s",
    "slot utilisation",
    "polls/task mean / p95",
    "lag s median / p95",
    "throttled",
    "peak in progress",
    "max submits in 1 s",
]


def run_slots(scales: Sequence[float]) -> list[SlotFigures]:
    results: list[SlotFigures] = []
    for scale in scales:
        ours, theirs = anyio.run(measure, scale, SLOT_JOBS)
        results += [ours, theirs]
    return results


def run_memory() -> MemoryFigures:
    # A fresh process, so the baseline is the library's and nothing else's.
    code = (
        "from benchmarks.throughput import memory; f = memory();"
        "print(f.jobs, f.baseline_mb, f.peak_mb)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    return MemoryFigures(
        jobs=int(output[0]), baseline_mb=float(output[1]), peak_mb=float(output[2])
    )


def plot(slots: Sequence[SlotFigures], directory: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    scales = sorted({f.time_scale for f in slots}, reverse=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labels, values, colors = [], [], []
    for scale in scales:
        for f in slots:
            if f.time_scale == scale:
                short = "ours" if f.client == "dashscope_async" else "official SDK"
                labels.append(f"{short}\n{scale * 15:g} s tasks")
                values.append(100 * f.utilisation)
                colors.append("tab:blue" if short == "ours" else "tab:gray")
    bars = axes[0].bar(labels, values, color=colors)
    axes[0].bar_label(bars, fmt="%.1f %%", fontsize=9)
    axes[0].set_ylabel("slot utilisation (%)")
    axes[0].set_ylim(0, 112)
    axes[0].set_title(f"{SLOT_JOBS} style-repaint jobs at the real limits")
    for f in slots:
        if f.lags:
            axes[1].plot(sorted(f.lags), label=f"{f.client}, time scale {f.time_scale:g}")
    axes[1].set_ylabel("seconds from a task's end to its detection")
    axes[1].set_xlabel("tasks, sorted")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(directory / "slots.png", dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("which", nargs="*", default=["slots", "throughput", "memory"])
    parser.add_argument("--quick", action="store_true", help="scaled time only (about a minute)")
    parser.add_argument("--plots", type=Path, help="write PNG charts to this folder")
    args = parser.parse_args(argv)

    if "replot" in args.which and args.plots:
        saved = json.loads((args.plots / "slots.json").read_text())
        plot([SlotFigures(**{**f, "lags": tuple(f["lags"])}) for f in saved], args.plots)
        return 0
    if "slots" in args.which:
        scales = [0.1] if args.quick else [1.0, 0.1]
        slots = run_slots(scales)
        if args.plots:
            args.plots.mkdir(parents=True, exist_ok=True)
            figures_json = json.dumps([attrs.asdict(f) for f in slots], indent=1)
            (args.plots / "slots.json").write_text(figures_json)
        print("\nSlot utilisation, polls and detection lag (loopback HTTP, real limits)\n")
        print(table(SLOT_HEADERS, slot_rows(slots)))
        if args.plots:
            plot(slots, args.plots)
    if "throughput" in args.which:
        runs: list[tuple[str, ThroughputFigures]] = [
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
                    for name, f in runs
                ],
            )
        )
        print(f"(polls per job: {statistics.fmean(f.polls / f.jobs for _, f in runs):.2f})")
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

"""What the CLI's batch engine reports about money: a task left running at Ctrl-C, a rerun that
resumes (what it takes up, the durations it keeps), ``--retry-failed``, and a changed request
that would overwrite an earlier success. Against the in-process emulator, whose records say what
the service really did.

Real time with short tasks: the journal works in a worker thread (virtual clocks jump then).
"""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import attrs
import pytest
from rich.console import Console

import dashscope_async as ds
from dashscope_async.cli._app import CliError, ExitCode, Interrupt, Settings
from dashscope_async.cli._batch import BatchReport, JobSpec, plan_resume, run_jobs
from dashscope_async.cli._report import read_earlier_seconds, summary_line, write_results
from dashscope_async.testing import Emulator, EmulatorConfig

pytestmark = pytest.mark.anyio

REPAINT = ds.STYLE_REPAINT.name


def emulator() -> Emulator:
    # A repaint runs 15 s x 0.04 = 0.6 s.
    return Emulator(EmulatorConfig(time_scale=0.04, seed=11, render_results=False))


def specs(emulator: Emulator, count: int, *, keys: bool = False) -> list[JobSpec]:
    url = emulator.sample_image_url("portrait")
    return [
        JobSpec(
            ds.StyleRepaint(f"{url}?job={i}", style=i),
            label=f"job-{i}",
            key=f"job-{i}" if keys else None,
            line=i + 1,
        )
        for i in range(count)
    ]


async def run(
    emulator: Emulator,
    jobs: list[JobSpec],
    tmp_path: Path,
    *,
    interrupt: Interrupt | None = None,
    retry_failed: bool = False,
    journal: str = "journal.sqlite",
) -> BatchReport:
    out = tmp_path / "out"
    results = out / "results.jsonl"
    earlier = read_earlier_seconds(results)
    async with emulator.client() as client:
        report = await run_jobs(
            client,
            jobs,
            out_dir=out,
            settings=Settings(),
            console=Console(file=io.StringIO(), width=120),
            journal=out / journal,
            retry_failed=retry_failed,
            earlier_seconds=earlier,
            interrupt=interrupt,
        )
    write_results(results, report.records)
    return report


def submitted(emulator: Emulator) -> int:
    return emulator.stats.submissions[REPAINT]


async def test_a_job_stopped_while_its_task_runs_is_reported_as_still_running(
    tmp_path: Path,
) -> None:
    service = emulator()
    interrupt = Interrupt()

    async def interrupt_when_a_task_runs() -> None:
        with anyio.fail_after(10):
            while True:
                statuses = [service.status(task_id) for task_id in service.tasks]
                if ds.TaskStatus.RUNNING in statuses:
                    break
                await anyio.sleep(0.005)
        interrupt.request()

    async with anyio.create_task_group() as group:
        group.start_soon(interrupt_when_a_task_runs)
        report = await run(service, specs(service, 4), tmp_path, interrupt=interrupt)
    assert report.interrupted and report.exit_code is ExitCode.INTERRUPTED
    (running,) = [r for r in report.records if r.status == "running"]
    assert running.task_id is not None
    # The service was asked to cancel it and could not: it runs on, and will be billed.
    assert service.status(running.task_id) in (ds.TaskStatus.RUNNING, ds.TaskStatus.SUCCEEDED)
    assert running.error is not None and "may finish and be billed" in running.error
    assert {r.status for r in report.records} <= {"running", "canceled"}
    for record in report.records:
        if record.status == "canceled":
            assert record.task_id is None or (
                service.status(record.task_id) is ds.TaskStatus.CANCELED
            )
    summary = report.to_json()
    assert summary["still_running_on_service"] == 1
    assert summary["counts"]["running"] == 1
    line = summary_line(report.records, report.elapsed)
    assert "1 task is still running on the service" in line
    assert line.startswith("4 jobs: ")

    # The rerun says what it takes up, collects the running task and sends only the rest.
    before = submitted(service)
    out = tmp_path / "out"
    plan = await plan_resume(out / "journal.sqlite", specs(service, 4))
    assert plan is not None
    assert plan.describe().endswith(": 0 done, 1 in flight, 3 to submit")
    again = await run(service, specs(service, 4), tmp_path)
    assert [r.status for r in again.records] == ["succeeded"] * 4
    assert submitted(service) - before == 3
    (collected,) = [r for r in again.records if r.task_id == running.task_id]
    assert collected.status == "succeeded" and collected.files


async def test_a_rerun_replays_finished_jobs_with_their_durations(tmp_path: Path) -> None:
    service = emulator()
    first = await run(service, specs(service, 2), tmp_path)
    assert [r.status for r in first.records] == ["succeeded"] * 2
    before = submitted(service)
    second = await run(service, specs(service, 2), tmp_path)
    assert submitted(service) == before
    assert [r.replayed for r in second.records] == [True, True]
    assert [r.seconds for r in second.records] == [r.seconds for r in first.records]
    assert all(r.seconds is not None and r.seconds > 0.1 for r in second.records)
    assert [r.task_id for r in second.records] == [r.task_id for r in first.records]
    assert summary_line(second.records[:1], 1.0).startswith("1 job: 1 succeeded in 1.0 s")


def other_specs(emulator: Emulator, count: int) -> list[JobSpec]:
    """Another manifest's jobs: unkeyed, at the same lines, of other requests."""
    url = emulator.sample_image_url("portrait")
    return [
        JobSpec(ds.StyleRepaint(f"{url}?other={i}", style=i), label=f"other-{i}", line=i + 1)
        for i in range(count)
    ]


def image_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".png"}


async def test_unkeyed_jobs_of_two_manifests_in_one_folder_never_share_a_file(
    tmp_path: Path,
) -> None:
    # Each manifest keeps its own journal (--journal), both save into one --output folder.
    service = emulator()
    first = await run(service, specs(service, 3), tmp_path, journal="first.sqlite")
    saved_first = image_files(tmp_path / "out")
    second = await run(service, other_specs(service, 3), tmp_path, journal="second.sqlite")
    assert [r.status for r in first.records + second.records] == ["succeeded"] * 6
    assert [r.replayed for r in second.records] == [False] * 3  # other jobs: all run
    files = image_files(tmp_path / "out")
    assert len(files) == 6  # job 2 of the second manifest did not replace job 2 of the first
    assert {name: files[name] for name in saved_first} == saved_first
    first_names = {Path(f).name for r in first.records for f in r.files}
    second_names = {Path(f).name for r in second.records for f in r.files}
    assert first_names == set(saved_first) and not first_names & second_names
    # Running the first manifest again replays it from the journal into the same files.
    before = submitted(service)
    again = await run(service, specs(service, 3), tmp_path, journal="first.sqlite")
    assert submitted(service) == before
    assert [r.replayed for r in again.records] == [True] * 3
    assert {Path(f).name for r in again.records for f in r.files} == first_names
    assert image_files(tmp_path / "out") == files  # no copies, nothing replaced


async def test_retry_failed_reruns_only_failures_worth_retrying(tmp_path: Path) -> None:
    service = emulator()
    service.faults.fail_tasks(code="InternalError.Algo")
    service.faults.fail_tasks(code="DataInspectionFailed")
    jobs = specs(service, 3)
    first = await run(service, jobs, tmp_path)
    codes = [(r.status, r.error_code) for r in first.records]
    assert codes == [
        ("failed", "InternalError.Algo"),
        ("failed", "DataInspectionFailed"),
        ("succeeded", None),
    ]
    before = submitted(service)
    # A plain rerun replays the failures: nothing is sent.
    plain = await run(service, jobs, tmp_path)
    assert submitted(service) == before
    assert [r.error_code for r in plain.records] == [
        "InternalError.Algo",
        "DataInspectionFailed",
        None,
    ]
    retried = await run(service, jobs, tmp_path, retry_failed=True)
    # Only the "please try again later" failure was sent again.
    assert submitted(service) == before + 1
    assert [r.status for r in retried.records] == ["succeeded", "failed", "succeeded"]
    assert retried.records[0].task_id != first.records[0].task_id
    assert retried.records[2].replayed and not retried.records[0].replayed


@pytest.mark.parametrize("keys", [False, True], ids=["derived-keys", "own-keys"])
async def test_a_request_changed_since_it_succeeded_is_refused_before_any_request(
    tmp_path: Path, keys: bool
) -> None:
    service = emulator()
    jobs = specs(service, 2, keys=keys)
    await run(service, jobs, tmp_path)
    changed = [
        jobs[0],
        attrs.evolve(jobs[1], request=ds.StyleRepaint(service.sample_image_url(), style=9)),
    ]
    before = submitted(service)
    with pytest.raises(CliError) as refused:
        await run(service, changed, tmp_path)
    assert refused.value.exit_code == ExitCode.BAD_INPUT
    assert (
        "line 2" in refused.value.message
        and "changed since an earlier run" in refused.value.message
    )
    assert submitted(service) == before
    # The earlier success is still what the results file says.
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all('"succeeded"' in line for line in lines)

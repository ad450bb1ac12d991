"""The ``journal`` command reads a batch's journal and sends nothing."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
from click.testing import CliRunner

import dashscope_async as ds
from dashscope_async.cli import cli
from dashscope_async.testing import Emulator, EmulatorConfig
from tests.fake_service import FakeClient


def write_journal(path: Path) -> None:
    async def run() -> None:
        fake = FakeClient(run_seconds=0.01)
        fake.failing_prompts.add("bad")
        jobs = [
            ds.SketchToImage("https://example.com/s.png", prompt="good"),
            ds.SketchToImage("https://example.com/s.png", prompt="bad"),
        ]
        poll = ds.PollPolicy(min_interval=0.005, run_time_priors={ds.SKETCH_TO_IMAGE.name: 0.01})
        async with ds.AsyncTaskRunner(fake.as_client(), journal=path, poll=poll) as runner:
            async for _ in runner.map(jobs):
                pass

    anyio.run(run)


def test_journal_shows_counts_and_failures(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    write_journal(path)
    result = CliRunner().invoke(cli, ["--json", "journal", str(path)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["counts"]["succeeded"] == 1
    assert document["counts"]["failed"] == 1
    assert document["failed"][0]["error"] == "TaskFailedError"
    assert document["failed"][0]["code"] == "InternalError.Algo"

    table = CliRunner().invoke(cli, ["journal", str(path)])
    assert table.exit_code == 0
    assert "succeeded" in table.output and "TaskFailedError" in table.output


def test_a_missing_journal_is_one_clear_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["journal", str(tmp_path / "nope.sqlite")])
    assert result.exit_code == 2
    assert "no journal at" in result.output
    assert "Traceback" not in result.output


def write_ambiguous_journal(path: Path, base_url: str, api_key: str) -> tuple[str, str]:
    """A journal whose one job's submit was sent and never answered; the task it made."""

    async def run() -> tuple[str, str]:
        request = ds.SketchToImage("https://example.com/s.png", prompt="lost")
        async with ds.AsyncDashScope(api_key=api_key, base_url=base_url) as client:
            sent_at = client.clock.wall()
            task = await client.submit(request)  # its answer, as far as the journal knows, lost
            async with await ds.Journal.open(path) as journal:
                await journal.record_intent(
                    "lost-1", index=0, model=request.model, fingerprint="f", sent_at=sent_at
                )
        return "lost-1", task.task_id

    return anyio.run(run)


def test_ambiguous_jobs_are_listed_and_settled_by_a_person(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    emulator = Emulator(EmulatorConfig(time_scale=0.01, render_results=False))
    with emulator.serve_sync() as server:
        key, task_id = write_ambiguous_journal(path, server.base_url, server.api_key)
        env = {"DASHSCOPE_API_KEY": server.api_key, "DASHSCOPE_HTTP_BASE_URL": server.base_url}
        listed = CliRunner().invoke(cli, ["--json", "journal", str(path)])
        assert listed.exit_code == 0, listed.output
        assert [job["key"] for job in json.loads(listed.output)["ambiguous"]] == [key]

        shown = CliRunner(env=env).invoke(cli, ["--json", "tasks", "reconcile", str(path)])
        assert shown.exit_code == 0, shown.output
        (job,) = json.loads(shown.output)
        assert job["candidates"] == [task_id] and not job["settled"]

        wrong = CliRunner(env=env).invoke(cli, ["tasks", "reconcile", str(path), "--none", "x"])
        assert wrong.exit_code != 0 and "not an ambiguous job" in wrong.output

        settled = CliRunner(env=env).invoke(
            cli, ["tasks", "reconcile", str(path), "--adopt", f"{key}={task_id}"]
        )
        assert settled.exit_code == 0, settled.output
        assert len(emulator.tasks) == 1  # settling never submits

    async def recorded() -> ds.JournalEntry | None:
        async with await ds.Journal.open(path) as journal:
            return await journal.lookup(key)

    entry = anyio.run(recorded)
    assert entry is not None and entry.task_id == task_id
    assert entry.state is ds.JobState.SUBMITTED  # the next run collects it, never resubmits

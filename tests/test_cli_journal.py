"""The ``journal`` command reads a batch's journal and sends nothing."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
from click.testing import CliRunner

import dashscope_async as ds
from dashscope_async.cli import cli
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

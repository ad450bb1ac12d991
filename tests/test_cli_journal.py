"""The ``journal`` command reads a batch's journal and sends nothing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

import dashscope_async as ds
from dashscope_async.cli import cli
from dashscope_async.redis import RedisJournal
from tests.fake_service import FakeClient
from tests.redis_server import redis_server

MODEL = ds.STYLE_REPAINT.name
SENT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


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


def test_journal_lists_an_unanswered_submit_as_ambiguous(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"

    async def crash_after_sending() -> None:
        async with await ds.Journal.open(path) as journal:
            await journal.record_intent(
                "portrait-7", index=7, model=MODEL, fingerprint="f" * 64, sent_at=SENT
            )

    anyio.run(crash_after_sending)
    result = CliRunner().invoke(cli, ["--json", "journal", str(path)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["ambiguous"] == [
        {"key": "portrait-7", "model": MODEL, "sent_at": SENT.isoformat(), "attempts": 1}
    ]
    assert document["in_flight"] == []
    table = CliRunner().invoke(cli, ["journal", str(path)])
    assert "ambiguous: portrait-7" in table.output


@pytest.mark.redis
def test_journal_reads_a_fleets_redis_store(tmp_path: Path) -> None:
    namespace = f"cli-{uuid.uuid4().hex[:8]}"
    with redis_server() as server:

        async def fleet_state() -> None:
            async with RedisJournal(server.url, namespace=namespace) as journal:
                for key in ("left-behind", "in-flight", "done"):
                    await journal.record_intent(
                        key, index=0, model=MODEL, fingerprint="f" * 64, sent_at=SENT
                    )
                await journal.record_submitted("done", "t-1")
                await journal.record_failed("done", ds.APIConnectionError("reset"))
                async with journal.claim("in-flight"):  # a live worker holds it
                    result = await anyio.to_thread.run_sync(
                        lambda: CliRunner().invoke(
                            cli,
                            ["--json", "journal", "--store", server.url, "--namespace", namespace],
                        )
                    )
                outputs.append(result.output)

        outputs: list[str] = []
        anyio.run(fleet_state)
    document = json.loads(outputs[0])
    assert document["counts"]["intent"] == 2
    assert [e["key"] for e in document["ambiguous"]] == ["left-behind"]
    assert [e["key"] for e in document["in_flight"]] == ["in-flight"]
    assert [e["key"] for e in document["failed"]] == ["done"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "one of them"),
        (["x.sqlite", "--store", "redis://127.0.0.1:1/0"], "one of them"),
        (["--store", "postgres://db"], "Redis URL"),
    ],
)
def test_journal_wants_one_store(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["journal", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output

"""``tasks reconcile``: a person settles what a journal (or a fleet's store) left ambiguous.

The emulator serves on loopback; jobs are left ambiguous by writing their intents straight into
the store, as a worker killed between sending a submit and reading its answer leaves them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

import dashscope_async as ds
from dashscope_async.cli import cli
from dashscope_async.redis import RedisJournal
from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer
from tests.redis_server import redis_server

MODEL = ds.STYLE_REPAINT.name


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with Emulator(EmulatorConfig(time_scale=0.02, seed=2, render_results=False)).serve_sync() as s:
        yield s


@asynccontextmanager
async def store_of(kind: str, where: str) -> AsyncIterator[ds.JobStore]:
    if kind == "file":
        async with await ds.Journal.open(where) as journal:
            yield journal
    else:
        async with RedisJournal(where, namespace="cli-reconcile") as shared:
            yield shared


@pytest.mark.parametrize("kind", ["file", pytest.param("redis", marks=pytest.mark.redis)])
def test_ambiguous_jobs_are_shown_with_their_candidates_and_settled(
    server: RunningServer, tmp_path: Path, kind: str
) -> None:
    with redis_server() if kind == "redis" else _no_server() as redis:
        where = str(tmp_path / "journal.sqlite") if redis is None else redis.url
        store_args = (
            [where] if kind == "file" else ["--store", where, "--namespace", "cli-reconcile"]
        )
        image = f"{server.result_url}/samples/portrait.png?job={uuid.uuid4().hex}"

        async def leave_ambiguous() -> str:
            sent_at = datetime.now(UTC)
            async with store_of(kind, where) as store:
                for key in ("job-a", "job-b"):
                    await store.record_intent(
                        key, index=0, model=MODEL, fingerprint="f" * 64, sent_at=sent_at
                    )
            # job-a's submit made a task; its worker died before reading the answer.
            async with ds.AsyncDashScope(api_key=server.api_key, base_url=server.base_url) as c:
                task = await c.submit(ds.StyleRepaint(image, style=ds.RepaintStyle.ANIME))
            return task.task_id

        task_id = anyio.run(leave_ambiguous, backend="asyncio")
        common = ["--api-key", server.api_key, "--base-url", server.base_url, "--json"]
        shown = CliRunner().invoke(cli, [*common, "tasks", "reconcile", *store_args])
        assert shown.exit_code == 0, shown.output
        listed = {item["key"]: item for item in json.loads(shown.output)}
        assert set(listed) == {"job-a", "job-b"}
        assert [c["task_id"] for c in listed["job-a"]["candidates"]] == [task_id]

        settle = [*common, "tasks", "reconcile", *store_args, "--adopt", f"job-a={task_id}"]
        settled = CliRunner().invoke(cli, [*settle, "--no-task", "job-b"])
        assert settled.exit_code == 0, settled.output
        assert json.loads(settled.output) == {
            "adopted": [{"key": "job-a", "task_id": task_id}],
            "no_task": [{"key": "job-b"}],
        }

        async def read() -> dict[str, ds.JournalEntry]:
            async with store_of(kind, where) as store:
                return await store.lookup_many(["job-a", "job-b"])

        entries = anyio.run(read, backend="asyncio")
        assert (entries["job-a"].state, entries["job-a"].task_id) == (
            ds.JobState.SUBMITTED,
            task_id,
        )
        assert entries["job-b"].state is ds.JobState.CANCELED

        # Settled jobs are no longer ambiguous, and a task id is adopted for one job only.
        again = CliRunner().invoke(cli, [*common, "tasks", "reconcile", *store_args])
        assert json.loads(again.output) == []
        twice = CliRunner().invoke(cli, [*settle])
        assert twice.exit_code == 2
        assert "not ambiguous" in twice.output


@pytest.mark.parametrize("value", ["no-equals", "=t-1", "job="])
def test_a_bad_adopt_value_is_refused_before_anything(value: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--api-key", "sk-test", "tasks", "reconcile", str(tmp_path / "j"), "--adopt", value]
    )
    assert result.exit_code == 2
    assert "KEY=TASK_ID" in result.output


class _no_server:
    """No Redis: the file case."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None

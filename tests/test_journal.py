"""The SQLite journal: every record, resume-like sequences, the file's guarantees, job identity."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

import dashscope_async as ds
from dashscope_async._journal import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    JobState,
    Journal,
    JournalEntry,
    JournalError,
    JournalInUseError,
    JournalVersionError,
    _JournalFile,
    fingerprint,
    job_key,
)
from dashscope_async._wire import CHINA_TZ

REPAINT = ds.STYLE_REPAINT.name
SKETCH = ds.SKETCH_TO_IMAGE.name
SENT = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
# Shaped like a DashScope key, so a leak would be recognisable.
API_KEY = "sk-0123456789abcdef0123456789abcdef"

pytestmark = pytest.mark.timeout(60)


def repaint(i: int = 0) -> ds.StyleRepaint:
    return ds.StyleRepaint(f"https://example.com/{i}.jpg", style=ds.RepaintStyle.ANIME)


def result(task_id: str = "t-1", *, images: int = 1, usage: int | None = 1) -> ds.TaskResult:
    return ds.TaskResult(
        task_id=task_id,
        status=ds.TaskStatus.SUCCEEDED,
        submit_time=datetime(2024, 5, 1, 20, 0, 0, 250000, tzinfo=CHINA_TZ),
        scheduled_time=datetime(2024, 5, 1, 20, 0, 1, tzinfo=CHINA_TZ),
        end_time=datetime(2024, 5, 1, 20, 0, 16, 999000, tzinfo=CHINA_TZ),
        images=tuple(
            ds.GeneratedImage(
                url=f"https://results.example.com/{task_id}/{i}.png?Expires=1", index=i
            )
            for i in range(images)
        ),
        failures=(ds.ImageFailure(index=images, code="DataInspectionFailed", message="no"),),
        metrics=ds.TaskMetrics(total=images + 1, succeeded=images, failed=1),
        usage=None if usage is None else ds.Usage(image_count=usage),
        request_id="req-1",
        extra={"style_index": 2, "nested": {"a": [1, 2]}},
    )


async def intent(journal: Journal, key: str, *, index: int = 0, model: str = REPAINT) -> None:
    await journal.record_intent(key, index=index, model=model, fingerprint="f" * 64, sent_at=SENT)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "batch.sqlite"


def file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


# --- records ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_intent_is_a_new_entry_with_one_attempt(path: Path) -> None:
    async with await Journal.open(path) as journal:
        assert await journal.lookup("a") is None
        before = datetime.now(UTC)
        await journal.record_intent("a", index=3, model=REPAINT, fingerprint="abc", sent_at=SENT)
        entry = await journal.lookup("a")
    assert entry is not None
    assert (entry.key, entry.index, entry.model, entry.fingerprint) == ("a", 3, REPAINT, "abc")
    assert entry.state is JobState.INTENT
    assert entry.sent_at == SENT
    assert entry.sent_at.tzinfo is not None
    assert entry.attempts == 1
    assert (entry.task_id, entry.result, entry.error_type) == (None, None, None)
    assert entry.files == ()
    assert before - timedelta(seconds=1) <= entry.updated_at <= datetime.now(UTC)


@pytest.mark.anyio
async def test_a_submit_records_the_task_id(path: Path) -> None:
    async with await Journal.open(path) as journal:
        await intent(journal, "a")
        await journal.record_submitted("a", "task-1")
        entry = await journal.lookup("a")
    assert entry is not None
    assert entry.state is JobState.SUBMITTED
    assert entry.task_id == "task-1"
    assert entry.sent_at == SENT


@pytest.mark.anyio
async def test_a_result_comes_back_whole(path: Path) -> None:
    original = result("task-9", images=2, usage=2)
    async with await Journal.open(path) as journal:
        await intent(journal, "a")
        await journal.record_submitted("a", "task-9")
        await journal.record_succeeded("a", original, [Path("out/a-0.png"), "out/a-1.png"])
    async with await Journal.open(path) as journal:
        entry = await journal.lookup("a")
    assert entry is not None
    assert entry.state is JobState.SUCCEEDED
    assert entry.result == original
    assert isinstance(entry.result, ds.TaskResult)
    assert entry.result.extra == original.extra  # not part of attrs equality
    assert entry.result.submit_time == original.submit_time
    assert entry.result.run_seconds == original.run_seconds
    assert entry.result.failures[0].code == "DataInspectionFailed"
    assert entry.files == ("out/a-0.png", "out/a-1.png")
    assert entry.task_id == "task-9"


@pytest.mark.anyio
async def test_a_failure_keeps_type_code_and_text(path: Path) -> None:
    info = ds.TaskInfo(
        task_id="task-2", status=ds.TaskStatus.FAILED, code="InvalidImage", message="bad image"
    )
    async with await Journal.open(path) as journal:
        await intent(journal, "a")
        await journal.record_submitted("a", "task-2")
        await journal.record_failed("a", ds.TaskFailedError(info))
        await intent(journal, "b")
        await journal.record_failed("b", RuntimeError("boom"))
        failed_a, failed_b = await journal.lookup("a"), await journal.lookup("b")
    assert failed_a is not None and failed_b is not None
    assert failed_a.state is JobState.FAILED
    assert (failed_a.error_type, failed_a.error_code) == ("TaskFailedError", "InvalidImage")
    assert failed_a.error_message is not None and "bad image" in failed_a.error_message
    assert failed_a.task_id == "task-2"
    assert (failed_b.error_type, failed_b.error_code, failed_b.error_message) == (
        "RuntimeError",
        None,
        "boom",
    )


@pytest.mark.anyio
async def test_a_failure_carrying_a_task_id_fills_in_a_missing_one(path: Path) -> None:
    async with await Journal.open(path) as journal:
        await intent(journal, "a")
        await journal.record_failed(
            "a", ds.TaskNotFoundError("task t-7 is unknown or expired", task_id="t-7")
        )
        entry = await journal.lookup("a")
    assert entry is not None
    assert entry.task_id == "t-7"
    assert entry.error_type == "TaskNotFoundError"


@pytest.mark.anyio
async def test_a_cancelled_job_is_submitted_again_as_a_new_attempt(path: Path) -> None:
    async with await Journal.open(path) as journal:
        await intent(journal, "a")
        await journal.record_submitted("a", "task-1")
        await journal.record_canceled("a")
        canceled = await journal.lookup("a")
        later = SENT + timedelta(minutes=5)
        await journal.record_intent("a", index=0, model=REPAINT, fingerprint="f", sent_at=later)
        again = await journal.lookup("a")
    assert canceled is not None and canceled.state is JobState.CANCELED
    assert again is not None
    assert again.state is JobState.INTENT
    assert again.attempts == 2
    assert again.sent_at == later
    assert again.task_id is None  # the cancelled task is not this attempt's


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        (JobState.INTENT, True),
        (JobState.SUBMITTED, False),
        (JobState.SUCCEEDED, False),
        (JobState.FAILED, True),
        (JobState.CANCELED, True),
    ],
)
async def test_a_new_intent_is_refused_when_a_task_exists(
    path: Path, state: JobState, allowed: bool
) -> None:
    async with await Journal.open(path) as journal:
        await intent(journal, "a")
        if state is not JobState.INTENT:
            await journal.record_submitted("a", "task-1")
        if state is JobState.SUCCEEDED:
            await journal.record_succeeded("a", result("task-1"))
        elif state is JobState.FAILED:
            await journal.record_failed("a", RuntimeError("x"))
        elif state is JobState.CANCELED:
            await journal.record_canceled("a")
        if allowed:
            await intent(journal, "a")
            entry = await journal.lookup("a")
            assert entry is not None
            assert (entry.state, entry.attempts, entry.error_type) == (JobState.INTENT, 2, None)
        else:
            with pytest.raises(JournalError, match=r"task-1.*twice"):
                await intent(journal, "a")
            entry = await journal.lookup("a")
            assert entry is not None
            assert (entry.state, entry.attempts) == (state, 1)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "record",
    [
        lambda j: j.record_submitted("ghost", "t"),
        lambda j: j.record_succeeded("ghost", result()),
        lambda j: j.record_failed("ghost", RuntimeError("x")),
        lambda j: j.record_canceled("ghost"),
        lambda j: j.record_files("ghost", ["x.png"]),
    ],
)
async def test_records_need_an_intent_first(path: Path, record: Any) -> None:
    async with await Journal.open(path) as journal:
        with pytest.raises(JournalError, match=r"ghost.*record its intent"):
            await record(journal)
        assert await journal.entries() == []


@pytest.mark.anyio
async def test_files_are_replaced(path: Path) -> None:
    async with await Journal.open(path) as journal:
        await intent(journal, "a")
        await journal.record_succeeded("a", result(), ["old.png"])
        await journal.record_files("a", [Path("new-0.png"), "new-1.png"])
        entry = await journal.lookup("a")
    assert entry is not None
    assert entry.files == ("new-0.png", "new-1.png")
    assert entry.state is JobState.SUCCEEDED


@pytest.mark.anyio
async def test_a_naive_send_time_is_refused(path: Path) -> None:
    async with await Journal.open(path) as journal:
        with pytest.raises(ValueError, match="aware"):
            await journal.record_intent(
                "a", index=0, model=REPAINT, fingerprint="f", sent_at=datetime(2024, 1, 1)
            )


# --- inspection -------------------------------------------------------------------------------


async def mixed_batch(journal: Journal) -> None:
    """Jobs 0-6: two succeeded (one of each model), one failed, one cancelled, one submitted,
    two intents."""
    for index, key in enumerate("abcdefg"):
        await intent(journal, key, index=index, model=SKETCH if key == "b" else REPAINT)
    for key in "abcde":
        await journal.record_submitted(key, f"task-{key}")
    await journal.record_succeeded("a", result("task-a", images=1, usage=1))
    # A sketch with 3 images billed, and one without usage (counted by its images).
    await journal.record_succeeded("b", result("task-b", images=3, usage=None))
    await journal.record_failed("c", RuntimeError("x"))
    await journal.record_canceled("d")


@pytest.mark.anyio
async def test_counts_cover_every_state(path: Path) -> None:
    async with await Journal.open(path) as journal:
        assert await journal.counts() == dict.fromkeys(JobState, 0)
        await mixed_batch(journal)
        counts = await journal.counts()
    assert counts == {
        JobState.INTENT: 2,
        JobState.SUBMITTED: 1,
        JobState.SUCCEEDED: 2,
        JobState.FAILED: 1,
        JobState.CANCELED: 1,
    }


@pytest.mark.anyio
async def test_entries_in_batch_order_and_by_state(path: Path) -> None:
    async with await Journal.open(path) as journal:
        await intent(journal, "late", index=9)
        await mixed_batch(journal)
        everything = await journal.entries()
        intents = await journal.entries(JobState.INTENT)
        succeeded = await journal.entries(JobState.SUCCEEDED)
    assert [e.key for e in everything] == [*"abcdefg", "late"]
    assert [e.key for e in intents] == ["f", "g", "late"]
    assert [e.key for e in succeeded] == ["a", "b"]


@pytest.mark.anyio
async def test_spent_counts_billed_images_of_successes_per_model(path: Path) -> None:
    async with await Journal.open(path) as journal:
        assert await journal.spent() == {}
        await mixed_batch(journal)
        await intent(journal, "h", index=7)
        await journal.record_succeeded("h", result("task-h", images=1, usage=0))
        spent = await journal.spent()
    assert spent == {REPAINT: 1, SKETCH: 3}


@pytest.mark.anyio
async def test_task_ids_are_every_task_the_batch_created(path: Path) -> None:
    async with await Journal.open(path) as journal:
        assert await journal.task_ids() == set()
        await mixed_batch(journal)
        task_ids = await journal.task_ids()
    # f and g are intents: no task id yet.
    assert task_ids == {f"task-{key}" for key in "abcde"}


@pytest.mark.anyio
async def test_lookup_many_finds_thousands_at_once(path: Path) -> None:
    keys = [f"job-{i}" for i in range(1200)]
    async with await Journal.open(path) as journal:
        for index, key in enumerate(keys[::3]):
            await intent(journal, key, index=index)
        found = await journal.lookup_many([*keys, "missing", keys[0]])
    assert set(found) == set(keys[::3])
    assert all(found[key].key == key for key in found)


# --- resume-like sequences --------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_reopened_journal_holds_what_was_recorded(path: Path) -> None:
    async with await Journal.open(path) as journal:
        await mixed_batch(journal)
        before = await journal.entries()
    async with await Journal.open(path) as journal:
        after = await journal.entries()
        counts = await journal.counts()
        # Resume: the unfinished ones go on.
        await journal.record_succeeded("e", result("task-e"))
        await journal.record_submitted("f", "task-f")
        await journal.record_failed("g", ds.TaskNotFoundError("expired", task_id="task-g"))
    assert after == before
    assert counts[JobState.SUCCEEDED] == 2
    async with await Journal.open(path) as journal:
        final = {e.key: e.state for e in await journal.entries()}
    assert final == {
        "a": JobState.SUCCEEDED,
        "b": JobState.SUCCEEDED,
        "c": JobState.FAILED,
        "d": JobState.CANCELED,
        "e": JobState.SUCCEEDED,
        "f": JobState.SUBMITTED,
        "g": JobState.FAILED,
    }


CHILD = textwrap.dedent(
    """
    import os, sys
    from datetime import UTC, datetime
    import anyio
    from dashscope_async._journal import Journal

    async def main() -> None:
        journal = await Journal.open(sys.argv[1])
        for i in range(5):
            await journal.record_intent(
                f"job-{i}", index=i, model="wanx-style-repaint-v1", fingerprint="f",
                sent_at=datetime.now(UTC),
            )
            if i < 3:
                await journal.record_submitted(f"job-{i}", f"task-{i}")
        print("recorded", flush=True)
        if sys.argv[2] == "hold":
            sys.stdin.readline()
        os.kill(os.getpid(), 9)

    anyio.run(main)
    """
)


def start_child(path: Path) -> subprocess.Popen[str]:
    """A child that records five jobs, says so, and holds the journal until told to die."""
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def run_child(path: Path) -> subprocess.CompletedProcess[str]:
    """A child that records five jobs and kills itself."""
    command = [sys.executable, "-c", CHILD, str(path), "die"]
    return await anyio.to_thread.run_sync(
        lambda: subprocess.run(command, capture_output=True, text=True, timeout=60)
    )


@pytest.mark.anyio
async def test_records_survive_a_killed_process(path: Path) -> None:
    child = await run_child(path)
    assert child.returncode == -9, child.stderr
    async with await Journal.open(path) as journal:
        counts = await journal.counts()
        entries = await journal.entries()
    assert counts[JobState.SUBMITTED] == 3
    assert counts[JobState.INTENT] == 2
    assert [e.task_id for e in entries] == ["task-0", "task-1", "task-2", None, None]


# --- the file ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_new_file_gets_the_schema_in_wal_mode(path: Path) -> None:
    journal = await Journal.open(path)
    await journal.aclose()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {
            row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    finally:
        raw.close()
    assert tables == {"jobs"}


@pytest.mark.anyio
async def test_records_are_synced_fully(path: Path) -> None:
    seen: list[int] = []

    def spy(file: _JournalFile) -> None:
        seen.append(file._db.execute("PRAGMA synchronous").fetchone()[0])

    async with await Journal.open(path) as journal:
        await journal._read(spy)
    assert seen == [2]  # FULL


@pytest.mark.anyio
async def test_a_newer_schema_is_refused(path: Path) -> None:
    await (await Journal.open(path)).aclose()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(JournalVersionError, match=r"schema version 2.*upgrade dashscope_async"):
        await Journal.open(path)
    # Refused without harm: the file is left as it was.
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    raw.close()


@pytest.mark.anyio
async def test_the_current_schema_opens_without_change(path: Path) -> None:
    async with await Journal.open(path) as journal:
        await intent(journal, "a")
    async with await Journal.open(path) as journal:
        assert (await journal.counts())[JobState.INTENT] == 1


@pytest.mark.anyio
async def test_another_database_is_not_taken_for_a_journal(path: Path) -> None:
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE customers (name TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(JournalError, match="not a dashscope_async journal"):
        await Journal.open(path)
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]
    raw.close()


@pytest.mark.anyio
async def test_a_file_that_is_not_sqlite_is_refused(path: Path) -> None:
    await anyio.Path(path).write_bytes(b"this is a text file, not a database\n" * 100)
    with pytest.raises(JournalError, match="not a SQLite journal"):
        await Journal.open(path)


@pytest.mark.anyio
async def test_a_second_opener_in_the_same_process_is_refused(path: Path) -> None:
    first = await Journal.open(path)
    try:
        with pytest.raises(JournalInUseError, match="open in another runner"):
            await Journal.open(path)
    finally:
        await first.aclose()
    second = await Journal.open(path)
    await second.aclose()


@pytest.mark.anyio
async def test_another_process_is_refused_while_the_journal_is_open(path: Path) -> None:
    async with await Journal.open(path):
        child = await run_child(path)
        assert child.returncode == 1
        assert "JournalInUseError" in child.stderr
    assert not (await _entries(path))


@pytest.mark.anyio
async def test_a_killed_holder_releases_the_journal(path: Path) -> None:
    with start_child(path) as child:
        assert child.stdout is not None
        line = await anyio.to_thread.run_sync(child.stdout.readline)
        assert line.strip() == "recorded"
        try:
            with pytest.raises(JournalInUseError):
                await Journal.open(path)
        finally:
            child.kill()
            await anyio.to_thread.run_sync(child.wait, 30)
    assert len(await _entries(path)) == 5


async def _entries(path: Path) -> list[JournalEntry]:
    async with await Journal.open(path) as journal:
        return await journal.entries()


@pytest.mark.anyio
async def test_a_closed_journal_refuses_calls(path: Path) -> None:
    journal = await Journal.open(path)
    was_closed = journal.closed
    await journal.aclose()
    await journal.aclose()  # twice is fine
    assert (was_closed, journal.closed) == (False, True)
    assert "closed" in repr(journal)
    with pytest.raises(JournalError, match="closed"):
        await journal.counts()
    with pytest.raises(JournalError, match="closed"):
        await intent(journal, "a")


@pytest.mark.anyio
async def test_credentials_never_reach_the_file(path: Path) -> None:
    async with await Journal.open(path) as journal:
        await intent(journal, "a")
        await journal.record_failed(
            "a",
            ds.AuthenticationError(
                f"Invalid API-key provided: {API_KEY}", status_code=401, code="InvalidApiKey"
            ),
        )
        await intent(journal, "b")
        await journal.record_failed("b", RuntimeError(f"headers: Authorization: Bearer {API_KEY}"))
        entry = await journal.lookup("a")
        # Still readable: only the key is masked.
        assert entry is not None and entry.error_message is not None
        assert "API-key provided" in entry.error_message
        assert API_KEY.encode() not in file_bytes(path)
    assert API_KEY.encode() not in file_bytes(path)


# --- threads and cancellation -----------------------------------------------------------------


@pytest.mark.anyio
async def test_database_work_runs_in_one_worker_thread_at_a_time(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    inside = 0
    overlap = 0
    original = _JournalFile.update

    def spy(self: _JournalFile, *args: Any) -> None:
        nonlocal inside, overlap
        threads.add(threading.get_ident())
        inside += 1
        overlap = max(overlap, inside)
        time.sleep(0.002)  # long enough that concurrent callers would meet here
        try:
            original(self, *args)
        finally:
            inside -= 1

    monkeypatch.setattr(_JournalFile, "update", spy)
    async with await Journal.open(path) as journal:
        for i in range(20):
            await intent(journal, f"job-{i}", index=i)
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(journal.record_submitted, f"job-{i}", f"task-{i}")
        counts = await journal.counts()
    assert counts[JobState.SUBMITTED] == 20
    assert loop_thread not in threads
    assert overlap == 1


@pytest.mark.anyio
async def test_a_record_lands_even_when_its_job_is_cancelled(path: Path) -> None:
    async with await Journal.open(path) as journal:
        await intent(journal, "a")
        with anyio.CancelScope() as scope:
            scope.cancel()
            await journal.record_submitted("a", "task-1")
        entry = await journal.lookup("a")
    assert entry is not None and entry.task_id == "task-1"


# --- job identity -----------------------------------------------------------------------------

# Worked out by hand from the form documented on ``fingerprint`` (sha256 of the prefix line and
# the canonical JSON), not by running it.
REPAINT_CANONICAL = (
    b"dashscope_async.fingerprint.v1\n"
    b'{"fields":{"image":{"url":"https://example.com/me.jpg"},"style":2,"style_ref":null},'
    b'"model":"wanx-style-repaint-v1"}'
)
REPAINT_DIGEST = "2b687e843656e5112402f0d7a7bbb9f5f980e67445a9bbafff908d06cc69fff7"
SKETCH_DIGEST = "55d796ca126adb675768ad735869d9e36efc7818c45441c1d1e6b818dcdc60b4"


def test_the_fingerprint_is_the_documented_hash() -> None:
    assert hashlib.sha256(REPAINT_CANONICAL).hexdigest() == REPAINT_DIGEST
    assert fingerprint(ds.StyleRepaint("https://example.com/me.jpg", style=2)) == REPAINT_DIGEST
    sketch = ds.SketchToImage(b"sketch", prompt="一棵大树", style="watercolor")
    assert fingerprint(sketch) == SKETCH_DIGEST


def test_the_fingerprint_is_the_same_in_another_process() -> None:
    code = (
        "import dashscope_async as ds; from dashscope_async._journal import fingerprint;"
        "print(fingerprint(ds.SketchToImage(b'sketch', prompt='一棵大树', style='watercolor')))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=60,
    )
    assert output.stdout.strip() == SKETCH_DIGEST


def test_the_same_request_written_differently_has_one_fingerprint() -> None:
    forms = [
        ds.StyleRepaint("https://example.com/me.jpg", style=ds.RepaintStyle.ANIME),
        ds.StyleRepaint("https://example.com/me.jpg", style=2),
        ds.StyleRepaint("https://example.com/me.jpg", style="anime"),
    ]
    assert {fingerprint(request) for request in forms} == {REPAINT_DIGEST}
    assert fingerprint(ds.StyleRepaint(b"abc", style=1)) == fingerprint(
        ds.StyleRepaint(bytes(bytearray(b"abc")), style=1)
    )


BASE_SKETCH = ds.SketchToImage("https://example.com/s.png", prompt="a tree")


@pytest.mark.parametrize(
    "changed",
    [
        attrs.evolve(BASE_SKETCH, sketch="https://example.com/t.png"),
        attrs.evolve(BASE_SKETCH, sketch=b"https://example.com/s.png"),
        attrs.evolve(BASE_SKETCH, prompt="a tree "),
        attrs.evolve(BASE_SKETCH, n=2),
        attrs.evolve(BASE_SKETCH, style=ds.SketchStyle.ANIME),
        attrs.evolve(BASE_SKETCH, sketch_weight=9),
        attrs.evolve(BASE_SKETCH, sketch_extraction=True),
        attrs.evolve(BASE_SKETCH, sketch_color=[(0, 0, 0)]),
        attrs.evolve(BASE_SKETCH, sketch_color=[(0, 0, 1)]),
    ],
    ids=lambda r: "",
)
def test_every_field_changes_the_fingerprint(changed: ds.SketchToImage) -> None:
    assert fingerprint(changed) != fingerprint(BASE_SKETCH)
    assert fingerprint(changed) != fingerprint(attrs.evolve(changed, sketch_color=[(9, 9, 9)]))


@pytest.mark.parametrize(
    "changed",
    [
        ds.StyleRepaint("https://example.com/me.jpg", style=ds.RepaintStyle.CLAY_WORLD),
        ds.StyleRepaint("https://example.com/you.jpg", style=ds.RepaintStyle.ANIME),
        ds.StyleRepaint("https://example.com/me.jpg", style_ref="https://example.com/me.jpg"),
        ds.StyleRepaint("oss://example.com/me.jpg", style=ds.RepaintStyle.ANIME),
    ],
)
def test_every_repaint_field_changes_the_fingerprint(changed: ds.StyleRepaint) -> None:
    assert fingerprint(changed) != REPAINT_DIGEST


def test_the_models_never_share_a_fingerprint() -> None:
    # Same image, same style number: still two different requests.
    repaint_request = ds.StyleRepaint("https://example.com/a.png", style=ds.RepaintStyle.ANIME)
    sketch_request = ds.SketchToImage("https://example.com/a.png", prompt="x", style="anime")
    assert fingerprint(repaint_request) != fingerprint(sketch_request)


def test_a_local_file_is_known_by_path_size_and_modification_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "me.png"
    image.write_bytes(b"first version")
    os.utime(image, ns=(1_700_000_000_000_000_000, 1_700_000_000_123_456_789))
    canonical = json.dumps(
        {
            "fields": {
                "image": {
                    "mtime_ns": 1_700_000_000_123_456_789,
                    "path": str(image.resolve()),
                    "size": 13,
                },
                "style": 2,
                "style_ref": None,
            },
            "model": REPAINT,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    expected = hashlib.sha256(b"dashscope_async.fingerprint.v1\n" + canonical).hexdigest()

    monkeypatch.chdir(tmp_path)
    forms: list[str | os.PathLike[str]] = [
        str(image),
        image,
        "me.png",
        Path("me.png"),
        image.as_uri(),
        f"{tmp_path}/./me.png",
    ]
    for form in forms:
        assert fingerprint(ds.StyleRepaint(form, style=2)) == expected, form

    image.write_bytes(b"second version")  # a new size and a new time
    assert fingerprint(ds.StyleRepaint(image, style=2)) != expected
    os.utime(image, ns=(1_700_000_000_000_000_000, 1_700_000_000_123_456_789))
    image.write_bytes(b"first versioN")
    os.utime(image, ns=(1_700_000_000_000_000_000, 1_700_000_000_123_456_790))
    assert fingerprint(ds.StyleRepaint(image, style=2)) != expected


def test_a_missing_local_file_cannot_be_fingerprinted(tmp_path: Path) -> None:
    with pytest.raises(ds.ValidationError, match="sketch"):
        fingerprint(ds.SketchToImage(tmp_path / "gone.png", prompt="x"))


@attrs.frozen
class RepaintOfTheFuture(ds.StyleRepaint):
    """A request type as a later version might grow it: a new field with a default."""

    strength: int = attrs.field(default=5, kw_only=True)


def test_a_field_added_later_keeps_old_fingerprints_at_its_default() -> None:
    assert fingerprint(RepaintOfTheFuture("https://example.com/me.jpg", style=2)) == REPAINT_DIGEST
    changed = RepaintOfTheFuture("https://example.com/me.jpg", style=2, strength=6)
    assert fingerprint(changed) != REPAINT_DIGEST


def test_job_keys() -> None:
    request = repaint()
    assert job_key(request, 4, key="portrait-1") == "portrait-1"
    assert job_key(request, 4) == f"{fingerprint(request)}:4"
    # Two identical requests of one batch are two jobs.
    assert job_key(request, 0) != job_key(repaint(), 1)
    assert job_key(request, 0) == job_key(repaint(), 0)
    with pytest.raises(ds.ValidationError, match="key"):
        job_key(request, 0, key="")

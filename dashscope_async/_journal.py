"""The SQLite journal: what each job of a batch has done, so a batch survives a crash.

Owns the journal file (stdlib ``sqlite3``), its schema, and the two ways a job is named across
runs (``fingerprint`` and ``job_key``). It records what the runner tells it; it never sends a
request, never decides whether a job runs, and never stores a credential.

Durability: the file is in WAL mode with ``synchronous=FULL``, so every record is on disk when
its call returns. That matters most for the intent: the runner writes it before a submit is sent,
and if a crash (or a power cut) could lose it, a resumed batch would not know to reconcile the
submit and could pay for the job twice. ``NORMAL`` survives a killed process but not a power cut;
one fsync per record costs far less than a submit.

One process at a time: the file is held with SQLite's exclusive locking mode for as long as the
journal is open, so a second runner (in this process or another) is refused with
``JournalInUseError`` instead of resuming the same batch in parallel and submitting jobs twice.
The operating system drops the lock when the holder dies, even by SIGKILL.

Nothing blocks the event loop: every database call runs in a worker thread, one at a time (a
``CapacityLimiter(1)`` over ``anyio.to_thread``), on a connection made for that purpose.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import anyio
import anyio.to_thread
import attrs
import cattrs

from ._budget import Budget
from ._checks import check_job_key
from ._errors import JournalError, JournalInUseError, JournalVersionError, ValidationError
from ._files import PASS_THROUGH_SCHEMES, _local_path
from ._logging import redact
from ._models import Request, TaskResult
from ._wire import converter as wire_converter

__all__ = [
    "SCHEMA_VERSION",
    "JobState",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalInUseError",
    "JournalVersionError",
    "billed_images",
    "fingerprint",
    "job_key",
]

#: The schema this version writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final = 1
#: ``PRAGMA application_id`` of a journal ("DSJL"): a SQLite file without it is not ours.
APPLICATION_ID: Final = 0x44534A4C
#: Keys per ``IN (...)`` query, well under SQLite's bound-parameter limit.
LOOKUP_CHUNK: Final = 500
FINGERPRINT_PREFIX: Final = b"dashscope_async.fingerprint.v1\n"

T = TypeVar("T")


class JobState(enum.StrEnum):
    """What a job has done, as the journal knows it.

    Attributes:
        INTENT: a submit is about to be sent, or was sent and got no answer: a task may exist.
        SUBMITTED: the service accepted it: the task id is known.
        SUCCEEDED: ended with a result (terminal).
        FAILED: ended with an error (terminal).
        CANCELED: cancelled before it ran (not billed): run again on resume.
    """

    INTENT = "intent"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        """True for SUCCEEDED and FAILED: a resumed batch replays these without requests."""
        return self in (JobState.SUCCEEDED, JobState.FAILED)


@attrs.frozen
class JournalEntry:
    """One job as the journal recorded it.

    Attributes:
        key: the job's key (``job_key``).
        index: its position in the batch when it was last recorded.
        model: the model it runs on.
        fingerprint: the request's ``fingerprint`` when it was recorded.
        state: what it has done.
        sent_at: when its latest submit was (about to be) sent.
        task_id: the service's task id, once known.
        result: the task's result, once SUCCEEDED.
        error_type: the class name of the error it FAILED with (``"TaskFailedError"``).
        error_code: the error's ``code``, if it had one (``"DataInspectionFailed"``).
        error_message: the error's text (with anything shaped like a credential masked).
        files: images saved for it.
        attempts: intents recorded for it (submits sent or about to be sent).
        updated_at: when it was last recorded (UTC).
    """

    key: str
    index: int
    model: str
    fingerprint: str
    state: JobState
    sent_at: datetime | None
    task_id: str | None
    result: TaskResult | None
    error_type: str | None
    error_code: str | None
    error_message: str | None
    files: tuple[str, ...]
    attempts: int
    updated_at: datetime


# --- job identity -------------------------------------------------------------------------------

# The fields every version-1 fingerprint spells out, defaults included. A field added to a request
# type later enters the fingerprint only when it differs from its default, so fingerprints
# recorded by this version stay valid after an upgrade.
_FINGERPRINT_V1_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "wanx-style-repaint-v1": ("image", "style", "style_ref"),
    "wanx-sketch-to-image-lite": (
        "sketch",
        "prompt",
        "n",
        "style",
        "sketch_weight",
        "sketch_extraction",
        "sketch_color",
        "size",
    ),
}


_IMAGE_FIELDS: Final = frozenset({"image", "style_ref", "sketch"})


def _image_identity(field: str, value: object) -> object:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, str) and value.lower().startswith(PASS_THROUGH_SCHEMES):
        return {"url": value}
    if isinstance(value, str | os.PathLike):
        try:
            path = _local_path(value).resolve()
            status = path.stat()
        except (OSError, ValueError) as exc:
            raise ValidationError(field, f"cannot read {os.fspath(value)!r}: {exc}") from None
        return {"path": str(path), "size": status.st_size, "mtime_ns": status.st_mtime_ns}
    raise ValidationError(field, f"not an image input: {type(value).__name__}")


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


_FACTORY_TYPE: Final[type[Any]] = type(attrs.Factory(list))


def _field_default(field: attrs.Attribute[Any]) -> object:
    default: object = field.default
    if isinstance(default, _FACTORY_TYPE):
        return default.factory()
    return default


def fingerprint(request: Request) -> str:
    """A stable SHA-256 (hex) of what a request asks for: the same request, the same value.

    It is the hash of ``b"dashscope_async.fingerprint.v1\\n"`` followed by the JSON
    ``{"fields": {...}, "model": <model name>}`` (keys sorted, no spaces, UTF-8, non-ASCII kept),
    where ``fields`` holds every request field: enums as their values (``style`` of a repaint is
    its index, of a sketch its ``"<...>"`` text), tuples as lists, and each image input as
    ``{"url": ...}`` (http, https, oss, data), ``{"sha256": <hex of the bytes>}`` (bytes), or
    ``{"path": <resolved path>, "size": <bytes>, "mtime_ns": <modification time in ns>}`` (a
    local file, so editing the file makes a new job). This form is fixed for version 1: the
    same value in every process and every later version of this library (a field added later
    counts only when it is not at its default).

    Blocks on ``os.stat`` for local-file inputs: from async code, call it through
    ``anyio.to_thread.run_sync``.

    Raises:
        ValidationError: a local input file cannot be read.

    Example:
        ```python
        request = ds.StyleRepaint("https://example.com/me.jpg", style=ds.RepaintStyle.ANIME)
        assert fingerprint(request) == fingerprint(
            ds.StyleRepaint("https://example.com/me.jpg", style=2)
        )
        ```
    """
    always = _FINGERPRINT_V1_FIELDS.get(request.model, ())
    fields: dict[str, object] = {}
    for field in attrs.fields(type(request)):
        value = getattr(request, field.name)
        if field.name not in always and value == _field_default(field):
            continue
        if field.name in _IMAGE_FIELDS:
            fields[field.name] = _image_identity(field.name, value)
        else:
            fields[field.name] = _plain(value)
    canonical = json.dumps(
        {"fields": fields, "model": request.model},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(FINGERPRINT_PREFIX + canonical.encode("utf-8")).hexdigest()


def job_key(request: Request, index: int, key: str | None = None) -> str:
    """The name a job has in the journal: ``key`` if given, else ``"<fingerprint>:<index>"``.

    The index is part of a derived key so two identical requests of one batch stay two jobs.
    Give your own keys (``ds.Job(request, key=...)``) when the batch may be reordered or edited
    between runs: derived keys follow the positions.

    Blocks on ``os.stat`` for local-file inputs when no ``key`` is given (see ``fingerprint``).

    Raises:
        ValidationError: ``key`` is empty, or a local input file cannot be read.

    Example:
        ```python
        job_key(request, 0, key="portrait-0001")   # "portrait-0001"
        job_key(request, 7)                        # "3f1c...e2:7"
        ```
    """
    if key is not None:
        return check_job_key("key", key)
    return f"{fingerprint(request)}:{index}"


def billed_images(result: TaskResult) -> int:
    """Images the service billed for a result (``TaskInfo.billed_images``)."""
    return result.billed_images


# --- the file -------------------------------------------------------------------------------------

# Results go through the wire converter, with datetimes as ISO text (JSON has no time type).
_converter: Final = wire_converter.copy()


def _structure_datetime(value: object, _: type) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO time, not {type(value).__name__}")
    return datetime.fromisoformat(value)


_converter.register_unstructure_hook(datetime, datetime.isoformat)
_converter.register_structure_hook(datetime, _structure_datetime)

_SCHEMA: Final = """
CREATE TABLE jobs (
    key TEXT PRIMARY KEY NOT NULL,
    job_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    sent_at TEXT,
    task_id TEXT,
    result TEXT,
    billed_images INTEGER NOT NULL DEFAULT 0,
    error_type TEXT,
    error_code TEXT,
    error_message TEXT,
    files TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
CREATE INDEX jobs_by_state ON jobs (state);
"""

_COLUMNS: Final = (
    "key, job_index, model, fingerprint, state, sent_at, task_id, result, error_type,"
    " error_code, error_message, files, attempts, updated_at"
)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _aware(name: str, moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (with a time zone)")
    return moment.isoformat()


def _result_json(result: TaskResult) -> str:
    return json.dumps(_converter.unstructure(result), sort_keys=True, ensure_ascii=False)


def _result_from_json(text: str) -> TaskResult:
    try:
        return _converter.structure(json.loads(text), TaskResult)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise JournalError(f"a recorded result cannot be read: {exc}") from None


def _entry(row: sqlite3.Row) -> JournalEntry:
    return JournalEntry(
        key=row["key"],
        index=row["job_index"],
        model=row["model"],
        fingerprint=row["fingerprint"],
        state=JobState(row["state"]),
        sent_at=None if row["sent_at"] is None else datetime.fromisoformat(row["sent_at"]),
        task_id=row["task_id"],
        result=None if row["result"] is None else _result_from_json(row["result"]),
        error_type=row["error_type"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        files=tuple(json.loads(row["files"])),
        attempts=row["attempts"],
        updated_at=datetime.fromisoformat(row["updated_at"]),
    )


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class _JournalFile:
    """The blocking half: one SQLite connection, used by one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(
                path, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {str(path)!r}: {exc}") from None
        self._db.row_factory = sqlite3.Row
        try:
            self._prepare()
        except BaseException:
            self._db.close()
            raise

    def _prepare(self) -> None:
        where = f"the journal {str(self.path)!r}"
        try:
            # Held from the first write until close: the one-process-at-a-time guarantee.
            self._db.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise JournalInUseError(
                    f"{where} is open in another runner; two runners resuming one batch could"
                    " submit a job twice, so wait for it to finish (or stop it) first"
                ) from None
            raise JournalError(f"cannot use {where}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{where} is not a SQLite journal: {exc}") from None
        try:
            if str(mode).lower() != "wal":
                raise JournalError(f"{where} cannot use write-ahead logging (mode {mode!r})")
            self._check_or_create_schema(where)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _check_or_create_schema(self, where: str) -> None:
        application_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if application_id == 0 and version == 0 and tables == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        if application_id != APPLICATION_ID:
            raise JournalError(
                f"{where} is a SQLite database but not a dashscope_async journal; give a new"
                " file name"
            )
        if version > SCHEMA_VERSION:
            raise JournalVersionError(
                f"{where} has schema version {version}, written by a newer dashscope_async;"
                f" this version reads up to {SCHEMA_VERSION}: upgrade dashscope_async"
            )
        if version < 1:
            raise JournalError(f"{where} has no schema version; it is damaged")

    # --- reads ----------------------------------------------------------------------------------

    def lookup_many(self, keys: Sequence[str]) -> dict[str, JournalEntry]:
        found: dict[str, JournalEntry] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start : start + LOOKUP_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE key IN ({marks})", chunk)
            found.update((row["key"], _entry(row)) for row in rows)
        return found

    def entries(self, state: JobState | None) -> list[JournalEntry]:
        if state is None:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY job_index, key")
        else:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state = ? ORDER BY job_index, key",
                (state.value,),
            )
        return [_entry(row) for row in rows]

    def counts(self) -> dict[JobState, int]:
        counted = dict.fromkeys(JobState, 0)
        for state, count in self._db.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
            counted[JobState(state)] = count
        return counted

    def task_ids(self) -> set[str]:
        rows = self._db.execute("SELECT task_id FROM jobs WHERE task_id IS NOT NULL")
        return {task_id for (task_id,) in rows}

    def spent(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT model, sum(billed_images) FROM jobs WHERE state = ? GROUP BY model ORDER BY model",
            (JobState.SUCCEEDED.value,),
        )
        return {model: int(total) for model, total in rows}

    # --- writes ---------------------------------------------------------------------------------

    def record_intent(
        self, key: str, index: int, model: str, fingerprint: str, sent_at: str
    ) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(
                "SELECT state, task_id FROM jobs WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO jobs (key, job_index, model, fingerprint, state, sent_at,"
                    " attempts, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
                    (key, index, model, fingerprint, JobState.INTENT.value, sent_at, _now()),
                )
            else:
                state = JobState(row["state"])
                if state in (JobState.SUBMITTED, JobState.SUCCEEDED):
                    raise JournalError(
                        f"job {key!r} already has task {row['task_id']} ({state.value}); submitting"
                        " it again would pay for it twice"
                    )
                # A new attempt: what the last one left behind no longer describes the job.
                self._db.execute(
                    "UPDATE jobs SET job_index = ?, model = ?, fingerprint = ?, state = ?,"
                    " sent_at = ?, task_id = NULL, result = NULL, billed_images = 0,"
                    " error_type = NULL, error_code = NULL, error_message = NULL, files = '[]',"
                    " attempts = attempts + 1, updated_at = ? WHERE key = ?",
                    (index, model, fingerprint, JobState.INTENT.value, sent_at, _now(), key),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def update(self, key: str, assignments: str, values: Sequence[object]) -> None:
        cursor = self._db.execute(
            f"UPDATE jobs SET {assignments}, updated_at = ? WHERE key = ?",
            (*values, _now(), key),
        )
        if cursor.rowcount == 0:
            raise JournalError(
                f"job {key!r} is not in the journal; record its intent before anything else"
            )

    def close(self) -> None:
        self._db.close()


class Journal:
    """A batch's journal: what each job has done, in a SQLite file that survives a crash.

    Open it with ``await Journal.open(path)`` and close it with ``aclose()``, or use it as an
    async context manager. The runner records each job through it (``journal=`` on
    ``AsyncTaskRunner``); you can read it to see where a batch stands. Only one journal object
    may have a file open at a time (``JournalInUseError`` otherwise).

    Example:
        ```python
        async with await Journal.open("batch.sqlite") as journal:
            print(await journal.counts())   # {JobState.INTENT: 0, JobState.SUBMITTED: 2, ...}
            for entry in await journal.entries(JobState.FAILED):
                print(entry.key, entry.error_type, entry.error_message)
        ```
    """

    def __init__(self, file: _JournalFile, limiter: anyio.CapacityLimiter) -> None:
        self._file: _JournalFile | None = file
        self._path = file.path
        self._limiter = limiter

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Journal:
        """Open a journal file, creating it (and its schema) if it does not exist.

        Raises:
            JournalInUseError: another runner has it open.
            JournalVersionError: a newer version of this library wrote it.
            JournalError: it is not a journal, or cannot be opened.
        """
        limiter = anyio.CapacityLimiter(1)
        file = await anyio.to_thread.run_sync(_JournalFile, Path(path), limiter=limiter)
        return cls(file, limiter)

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    @property
    def closed(self) -> bool:
        """True once ``aclose`` was called."""
        return self._file is None

    async def _read(self, call: Callable[[_JournalFile], T]) -> T:
        file = self._require_open()
        return await anyio.to_thread.run_sync(call, file, limiter=self._limiter)

    async def _write(self, call: Callable[[_JournalFile], None]) -> None:
        file = self._require_open()
        # A fact the runner asked to record lands even if its job is being cancelled: a lost
        # task id would cost a reconcile on resume, a lost intent could cost a double submit.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(call, file, limiter=self._limiter)

    def _require_open(self) -> _JournalFile:
        if self._file is None:
            raise JournalError(f"the journal {str(self._path)!r} is closed")
        return self._file

    # --- reads ----------------------------------------------------------------------------------

    async def lookup(self, key: str) -> JournalEntry | None:
        """The entry of one job, or None if the journal has never seen it."""
        return (await self.lookup_many((key,))).get(key)

    async def lookup_many(self, keys: Sequence[str]) -> dict[str, JournalEntry]:
        """The entries of many jobs at once, by key; keys never seen are left out."""
        keys = list(keys)
        return await self._read(lambda file: file.lookup_many(keys))

    async def entries(self, state: JobState | None = None) -> list[JournalEntry]:
        """Every entry (or those in ``state``), in batch order."""
        return await self._read(lambda file: file.entries(state))

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included).

        Example:
            ```python
            counts = await journal.counts()
            print(f"{counts[JobState.SUCCEEDED]} done, {counts[JobState.FAILED]} failed")
            ```
        """
        return await self._read(_JournalFile.counts)

    async def spent(self) -> dict[str, int]:
        """Images billed so far, by model: the service's usage of every SUCCEEDED job."""
        return await self._read(_JournalFile.spent)

    async def task_ids(self) -> set[str]:
        """Every task id the journal holds: tasks of this batch, never another job's lost submit.

        Reconciling an ``intent`` on resume looks for an unknown task in the account's task
        list; tasks created by earlier runs of the batch are known here.
        """
        return await self._read(_JournalFile.task_ids)

    @property
    def shared(self) -> bool:
        """False: one journal object holds the file, so no other process writes to it."""
        return False

    @asynccontextmanager
    async def claim(self, key: str) -> AsyncIterator[JournalEntry | None]:
        """Hold the job ``key`` while the block runs, yielding its entry (``JobStore.claim``).

        The file is held by one journal object at a time, so there is no other holder to wait
        for: this is the lookup.
        """
        yield await self.lookup(key)

    def spending(self, budget: Budget) -> None:
        """None: a runner on a SQLite journal keeps its budget in its own process."""
        return None

    # --- writes ---------------------------------------------------------------------------------

    async def record_intent(
        self, key: str, *, index: int, model: str, fingerprint: str, sent_at: datetime
    ) -> None:
        """Record that a submit is about to be sent (call it before sending).

        Counts an attempt, and clears what an earlier attempt left (task id, result, error).

        Raises:
            JournalError: the job already has a task (SUBMITTED or SUCCEEDED): a new submit
                would pay for it twice.
            ValueError: ``sent_at`` has no time zone.
        """
        sent = _aware("sent_at", sent_at)
        await self._write(lambda file: file.record_intent(key, index, model, fingerprint, sent))

    async def record_submitted(self, key: str, task_id: str) -> None:
        """Record that the service accepted the job's submit as task ``task_id``."""
        await self._write(
            lambda file: file.update(
                key, "state = ?, task_id = ?", (JobState.SUBMITTED.value, task_id)
            )
        )

    async def record_succeeded(
        self, key: str, result: TaskResult, files: Sequence[str | os.PathLike[str]] = ()
    ) -> None:
        """Record the job's result (and the images saved for it, if any)."""
        text = _result_json(result)
        saved = json.dumps([os.fspath(path) for path in files])
        await self._write(
            lambda file: file.update(
                key,
                "state = ?, task_id = ?, result = ?, billed_images = ?, files = ?,"
                " error_type = NULL, error_code = NULL, error_message = NULL",
                (JobState.SUCCEEDED.value, result.task_id, text, billed_images(result), saved),
            )
        )

    async def record_failed(self, key: str, error: BaseException) -> None:
        """Record the error the job ended with: its class name, its ``code`` if any, its text.

        The text is stored with anything shaped like a credential masked.
        """
        code = getattr(error, "code", None)
        task_id = getattr(error, "task_id", None)
        values = (
            JobState.FAILED.value,
            type(error).__name__,
            None if code is None else str(code),
            redact(str(error)),
            task_id if isinstance(task_id, str) else None,
        )
        await self._write(
            lambda file: file.update(
                key,
                "state = ?, error_type = ?, error_code = ?, error_message = ?,"
                " task_id = coalesce(?, task_id)",
                values,
            )
        )

    async def record_canceled(self, key: str) -> None:
        """Record that the job was cancelled before it ran (not billed; run again on resume)."""
        await self._write(lambda file: file.update(key, "state = ?", (JobState.CANCELED.value,)))

    async def record_files(self, key: str, files: Sequence[str | os.PathLike[str]]) -> None:
        """Record the images saved for the job (replacing any recorded before)."""
        saved = json.dumps([os.fspath(path) for path in files])
        await self._write(lambda file: file.update(key, "files = ?", (saved,)))

    # --- life -----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the file (and release it for other runners). Safe to call twice."""
        file, self._file = self._file, None
        if file is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(file.close, limiter=self._limiter)

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._file is None else "open"
        return f"<Journal {str(self._path)!r} {state}>"

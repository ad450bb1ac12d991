"""Test doubles for client tests: a clock that records sleeps, and a scripted mock service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import attrs
import httpx

from dashscope_async._client import AsyncDashScope

API_KEY = "sk-test-0123456789abcdef"
BASE_URL = "https://dashscope.test/api/v1"
WALL_START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

Reply = httpx.Response | Exception
Handler = Callable[[httpx.Request], httpx.Response]


@attrs.define
class RecordingClock:
    """A clock whose sleeps return at once and are recorded; time moves only by sleeping."""

    t: float = 0.0
    sleeps: list[float] = attrs.field(factory=list)

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await anyio.lowlevel.checkpoint()

    def wall(self) -> datetime:
        return WALL_START + timedelta(seconds=self.t)


def _as_replies(replies: Iterable[Reply]) -> list[Reply]:
    return list(replies)


@attrs.define
class ScriptedService:
    """Answers requests from a queue of replies (a response or an exception to raise).

    When the queue runs dry, ``fallback`` answers (by default a test failure).
    """

    replies: list[Reply] = attrs.field(factory=list, converter=_as_replies)
    fallback: Handler | None = None
    requests: list[httpx.Request] = attrs.field(factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.replies:
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply
        if self.fallback is not None:
            return self.fallback(request)
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def then(self, *replies: Reply) -> ScriptedService:
        self.replies.extend(replies)
        return self


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def error_response(
    status: int, code: str | None, message: str = "refused", headers: dict[str, str] | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"message": message, "request_id": f"req-{status}"}
    if code is not None:
        body["code"] = code
    return httpx.Response(status, json=body, headers=headers)


def submit_ok(task_id: str = "task-1") -> httpx.Response:
    return json_response(
        200, {"output": {"task_id": task_id, "task_status": "PENDING"}, "request_id": "req-submit"}
    )


def task_answer(
    status: str, task_id: str = "task-1", results: Iterable[dict[str, Any]] = (), **output: Any
) -> httpx.Response:
    body_output: dict[str, Any] = {"task_id": task_id, "task_status": status, **output}
    results = list(results)
    if results:
        body_output["results"] = results
    return json_response(200, {"output": body_output, "request_id": f"req-{status.lower()}"})


@contextlib.asynccontextmanager
async def mock_client(
    service: Handler, *, clock: RecordingClock | None = None, **options: Any
) -> AsyncIterator[AsyncDashScope]:
    """A client whose HTTP pool answers through ``service``."""
    options.setdefault("base_url", BASE_URL)
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(service)) as http,
        AsyncDashScope(
            API_KEY, clock=clock or RecordingClock(), http_client=http, **options
        ) as client,
    ):
        yield client

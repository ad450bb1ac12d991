"""The retry table: which answers are retried, how often, after which delays; the submit rules.

Sleeps are recorded by a fake clock (or run in virtual time), never slept.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import dashscope_async as ds
from dashscope_async._client import AsyncDashScope
from dashscope_async._downloads import DownloadLimits, download_image
from dashscope_async._error_map import error_from_response
from dashscope_async._poll_loop import TaskPoll, poll_until_done
from dashscope_async._polling import PollPlanner, PollPolicy
from dashscope_async._retry import (
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
    RequestKind,
    RetryPolicy,
    Verdict,
    backoff_delay,
    is_transient,
    parse_retry_after,
    verdict_for_exception,
    verdict_for_response,
)
from tests.images_util import make_image
from tests.mock_service import (
    API_KEY,
    BASE_URL,
    WALL_START,
    RecordingClock,
    ScriptedService,
    error_response,
    json_response,
    mock_client,
    submit_ok,
    task_answer,
)


@pytest.fixture
def anyio_backend(virtual_anyio_backend: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return virtual_anyio_backend


REPAINT = ds.StyleRepaint("https://example.com/me.jpg", style=ds.RepaintStyle.ANIME)
NOW = WALL_START


# --- delays -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries_taken", "expected"), [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]
)
def test_backoff_doubles_up_to_eight_seconds(retries_taken: int, expected: float) -> None:
    assert backoff_delay(retries_taken, jitter=0.0) == expected
    # The jitter is multiplicative, in (0.75, 1].
    assert backoff_delay(retries_taken, jitter=0.999999) == pytest.approx(expected * 0.75, rel=1e-5)
    assert backoff_delay(retries_taken, jitter=0.999999) > expected * 0.75


def test_backoff_with_real_randomness_stays_in_range() -> None:
    policy = RetryPolicy()
    delays = [policy.delay(1, None, now=NOW) for _ in range(200)]
    assert all(0.75 < d <= 1.0 for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "bad", "retry-after": "9"}, 9.0),
        ({"retry-after": format_datetime(NOW + timedelta(seconds=20), usegmt=True)}, 20.0),
        ({"retry-after": format_datetime(NOW - timedelta(seconds=20), usegmt=True)}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00"}, None),  # no zone: not an HTTP date
        ({"retry-after": "120"}, 120.0),  # uncapped here: the policy caps it
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers), now=NOW) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "61"}, MAX_RETRY_AFTER),
        ({"retry-after-ms": "3600000"}, MAX_RETRY_AFTER),
        ({"retry-after": "junk"}, 1.0),  # falls back to the backoff (retries_taken=1, no jitter)
        ({}, 1.0),
    ],
)
def test_policy_delay_honours_the_server_up_to_a_cap(
    headers: dict[str, str], expected: float
) -> None:
    policy = RetryPolicy(random_fraction=lambda: 0.0)
    assert policy.delay(1, httpx.Headers(headers), now=NOW) == expected


# --- verdicts -----------------------------------------------------------------------------------


def _error(status: int, code: str | None = None, *, json_body: bool = True) -> ds.APIError:
    if json_body:
        response = error_response(status, code)
    else:
        response = httpx.Response(status, text="<html>Bad Gateway</html>")
    return error_from_response(response, now=NOW)


SUBMIT = RequestKind.SUBMIT
#: Every kind that may be sent twice follows the read column of the table.
REPEATABLE = [kind for kind in RequestKind if kind.repeatable]
R, X, A = Verdict.RETRY, Verdict.RAISE, Verdict.AMBIGUOUS

RESPONSE_TABLE = [
    # status, code, service JSON?, verdict for a read, verdict for a submit
    (400, "InvalidParameter", True, X, X),
    (400, "DataInspectionFailed", True, X, X),
    (400, "Arrearage", True, X, X),
    (401, "InvalidApiKey", True, X, X),
    (403, "AccessDenied", True, X, X),
    (404, "ModelNotFound", True, X, X),
    (408, "RequestTimeOut", True, R, A),
    (429, "Throttling", True, R, R),
    (429, "Throttling.RateQuota", True, R, R),
    (429, "Throttling.Burst", True, R, R),
    (429, None, False, R, R),
    (429, "Throttling.AllocationQuota", True, X, X),
    (429, "PrepaidBillOverdue", True, X, X),
    (429, "PostpaidBillOverdue", True, X, X),
    (429, "CommodityNotPurchased", True, X, X),
    (500, "InternalError", True, R, R),
    (500, "InternalError.Algo", True, R, R),
    (500, None, False, R, A),
    (503, "ModelUnavailable", True, R, R),
    (503, None, False, R, A),
    (502, None, False, R, A),
    (502, "BadGateway", True, R, A),
    (504, None, False, R, A),
    (504, "GatewayTimeout", True, R, A),
]


@pytest.mark.parametrize(("status", "code", "json_body", "read", "submit"), RESPONSE_TABLE)
def test_response_verdicts(
    status: int, code: str | None, json_body: bool, read: Verdict, submit: Verdict
) -> None:
    error = _error(status, code, json_body=json_body)
    headers = httpx.Headers()
    for kind in REPEATABLE:
        assert verdict_for_response(kind, error, headers) is read
        # What the client retries is what the poll loop and the runner treat as transient.
        assert is_transient(kind, error) is (read is R)
    assert verdict_for_response(SUBMIT, error, headers) is submit
    assert is_transient(SUBMIT, error) is (submit is R)


def test_throttles_raise_at_once_when_the_caller_paces_itself() -> None:
    error = _error(429, "Throttling.RateQuota")
    for kind in RequestKind:
        assert verdict_for_response(kind, error, httpx.Headers(), retry_throttled=False) is X


@pytest.mark.parametrize(
    ("status", "code", "told", "read", "submit"),
    [
        (400, "InvalidParameter", "true", R, X),  # a read follows the server
        (500, "InternalError", "false", X, X),
        (429, "Throttling", "false", X, X),
        (502, None, "true", R, A),  # a submit never retries where a task may exist
        (502, None, "false", X, A),
        (400, "DataInspectionFailed", "true", X, X),  # content decisions are final
        (500, "InternalError", "maybe", R, R),  # unreadable: ignored
    ],
)
def test_x_should_retry(
    status: int, code: str | None, told: str, read: Verdict, submit: Verdict
) -> None:
    error = _error(status, code, json_body=code is not None)
    headers = httpx.Headers({"x-should-retry": told})
    for kind in REPEATABLE:
        assert verdict_for_response(kind, error, headers) is read
    assert verdict_for_response(SUBMIT, error, headers) is submit


_request = httpx.Request("POST", BASE_URL)

EXCEPTION_TABLE = [
    (httpx.ConnectError("refused", request=_request), R, R),
    (httpx.ConnectTimeout("slow", request=_request), R, R),
    (httpx.PoolTimeout("busy", request=_request), R, R),
    (httpx.ReadTimeout("slow", request=_request), R, A),
    (httpx.WriteTimeout("slow", request=_request), R, A),
    (httpx.ReadError("reset", request=_request), R, A),
    (httpx.WriteError("reset", request=_request), R, A),
    (httpx.RemoteProtocolError("dropped", request=_request), R, A),
    (httpx.UnsupportedProtocol("gopher", request=_request), X, X),
    (httpx.LocalProtocolError("bad header", request=_request), X, X),
]


@pytest.mark.parametrize(("exc", "read", "submit"), EXCEPTION_TABLE)
def test_exception_verdicts(exc: httpx.TransportError, read: Verdict, submit: Verdict) -> None:
    for kind in REPEATABLE:
        assert verdict_for_exception(kind, exc) is read
    assert verdict_for_exception(SUBMIT, exc) is submit


# --- the client's loop: attempts and sleeps -------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [
        error_response(408, "RequestTimeOut"),
        error_response(429, "Throttling"),
        error_response(500, "InternalError"),
        httpx.Response(502, text="bad gateway"),
        error_response(503, "ModelUnavailable"),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
    ],
)
async def test_reads_retry_then_succeed(failure: httpx.Response | Exception) -> None:
    clock = RecordingClock()
    service = ScriptedService([failure, failure, task_answer("RUNNING")])
    async with mock_client(service, clock=clock) as client:
        info = await client.get_task("task-1")
    assert info.status is ds.TaskStatus.RUNNING
    assert len(service.requests) == 3
    assert len(clock.sleeps) == 2
    assert 0.375 < clock.sleeps[0] <= 0.5
    assert 0.75 < clock.sleeps[1] <= 1.0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (error_response(429, "Throttling.RateQuota"), ds.RateLimitError),
        (error_response(500, "InternalError"), ds.ServerError),
        (httpx.ConnectError("refused"), ds.APIConnectionError),
        (httpx.ReadTimeout("slow"), ds.APITimeoutError),
    ],
)
async def test_reads_give_up_after_max_retries(
    failure: httpx.Response | Exception, error: type[Exception]
) -> None:
    clock = RecordingClock()
    service = ScriptedService(fallback=lambda request: _raise_or_return(failure))
    async with mock_client(service, clock=clock, max_retries=3) as client:
        with pytest.raises(error) as caught:
            await client.get_task("task-1")
    assert len(service.requests) == 4
    assert len(clock.sleeps) == 3
    if isinstance(failure, Exception):
        assert caught.value.__cause__ is failure


def _raise_or_return(reply: httpx.Response | Exception) -> httpx.Response:
    if isinstance(reply, Exception):
        raise reply
    return reply


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (error_response(400, "InvalidParameter"), ds.BadRequestError),
        (error_response(400, "DataInspectionFailed"), ds.BadRequestError),
        (error_response(400, "Arrearage"), ds.PermissionDeniedError),
        (error_response(401, "InvalidApiKey"), ds.AuthenticationError),
        (error_response(403, "AccessDenied"), ds.PermissionDeniedError),
        (error_response(404, "ModelNotFound"), ds.NotFoundError),
        (error_response(429, "Throttling.AllocationQuota"), ds.QuotaExceededError),
    ],
)
async def test_final_answers_are_never_retried(
    failure: httpx.Response, error: type[Exception]
) -> None:
    for call in ("get", "submit"):
        clock = RecordingClock()
        service = ScriptedService([failure])
        async with mock_client(service, clock=clock) as client:
            with pytest.raises(error):
                if call == "get":
                    await client.get_task("task-1")
                else:
                    await client.submit(REPAINT)
        assert len(service.requests) == 1
        assert clock.sleeps == []


@pytest.mark.anyio
async def test_max_retries_zero_means_one_attempt() -> None:
    service = ScriptedService([error_response(503, "ModelUnavailable")])
    async with mock_client(service, max_retries=0) as client:
        with pytest.raises(ds.ServerError):
            await client.get_task("task-1")
    assert len(service.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "expected_sleep"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": format_datetime(WALL_START + timedelta(seconds=12), usegmt=True)}, 12.0),
        ({"retry-after": "600"}, MAX_RETRY_AFTER),
    ],
)
async def test_the_client_sleeps_what_the_server_asks(
    headers: dict[str, str], expected_sleep: float
) -> None:
    clock = RecordingClock()
    service = ScriptedService(
        [error_response(429, "Throttling", headers=headers), task_answer("RUNNING")]
    )
    async with mock_client(service, clock=clock) as client:
        await client.get_task("task-1")
    assert clock.sleeps == [pytest.approx(expected_sleep)]


@pytest.mark.anyio
async def test_rate_limit_error_carries_retry_after() -> None:
    service = ScriptedService(
        [error_response(429, "Throttling.RateQuota", headers={"retry-after": "4"})]
    )
    async with mock_client(service) as client:
        with pytest.raises(ds.RateLimitError) as caught:
            await client.submit(REPAINT, retry_throttled=False)
    assert caught.value.retry_after == 4.0
    assert len(service.requests) == 1


@pytest.mark.anyio
async def test_retries_sleep_on_the_event_loop_clock_by_default() -> None:
    # The default clock sleeps through anyio: in virtual time the backoff takes no real time.
    transport = httpx.MockTransport(
        ScriptedService([error_response(500, "InternalError")] * 2 + [task_answer("RUNNING")])
    )
    real_start, loop_start = time.monotonic(), anyio.current_time()
    async with (
        httpx.AsyncClient(transport=transport) as http,
        AsyncDashScope(API_KEY, base_url=BASE_URL, http_client=http) as client,
    ):
        await client.get_task("task-1")
    assert 0.375 + 0.75 < anyio.current_time() - loop_start <= 1.5
    assert time.monotonic() - real_start < 1.0


# --- submit rules ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
        httpx.PoolTimeout("busy"),
        error_response(429, "Throttling"),
        error_response(429, "Throttling.RateQuota"),
        error_response(500, "InternalError"),
        error_response(503, "ModelUnavailable"),
    ],
)
async def test_submit_is_retried_when_no_task_can_exist(
    failure: httpx.Response | Exception,
) -> None:
    clock = RecordingClock()
    service = ScriptedService([failure, submit_ok("task-2")])
    async with mock_client(service, clock=clock) as client:
        task = await client.submit(REPAINT)
    assert task.task_id == "task-2"
    assert len(service.requests) == 2
    assert len(clock.sleeps) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("slow"),
        httpx.WriteTimeout("slow"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.Response(502, text="<html>bad gateway</html>"),
        error_response(502, "BadGateway"),
        httpx.Response(504, text="gateway timeout"),
        httpx.Response(500, text="oops"),
        error_response(408, "RequestTimeOut"),
        json_response(200, {"output": {}}),
        httpx.Response(200, text="<html>not json</html>"),
        json_response(200, {"output": {"task_id": ""}}),
    ],
)
async def test_submit_with_no_usable_answer_is_ambiguous(
    failure: httpx.Response | Exception,
) -> None:
    clock = RecordingClock(t=42.0)
    service = ScriptedService([failure])
    async with mock_client(service, clock=clock) as client:
        with pytest.raises(ds.AmbiguousSubmitError) as caught:
            await client.submit(REPAINT)
    assert len(service.requests) == 1
    assert clock.sleeps == []
    assert caught.value.model == "wanx-style-repaint-v1"
    assert caught.value.sent_at == WALL_START + timedelta(seconds=42)
    assert caught.value.sent_at.tzinfo is not None
    assert caught.value.__cause__ is not None
    if isinstance(failure, Exception):
        assert caught.value.__cause__ is failure


@pytest.mark.anyio
async def test_ambiguity_after_a_retry_reports_the_last_send() -> None:
    clock = RecordingClock()
    service = ScriptedService([error_response(429, "Throttling"), httpx.ReadTimeout("slow")])
    async with mock_client(service, clock=clock) as client:
        with pytest.raises(ds.AmbiguousSubmitError) as caught:
            await client.submit(REPAINT)
    assert caught.value.sent_at == WALL_START + timedelta(seconds=clock.sleeps[0])


@pytest.mark.anyio
async def test_unparseable_success_of_a_submit_names_the_field() -> None:
    service = ScriptedService([json_response(200, {"output": {"task_status": "PENDING"}})])
    async with mock_client(service) as client:
        with pytest.raises(ds.AmbiguousSubmitError) as caught:
            await client.submit(REPAINT)
    cause = caught.value.__cause__
    assert isinstance(cause, ds.ResponseValidationError)
    assert cause.field is not None and "task_id" in cause.field


@pytest.mark.anyio
async def test_submit_connect_failures_exhausted_are_connection_errors() -> None:
    service = ScriptedService(fallback=lambda request: _raise_or_return(httpx.ConnectError("no")))
    async with mock_client(service) as client:
        with pytest.raises(ds.APIConnectionError) as caught:
            await client.submit(REPAINT)
    assert not isinstance(caught.value, ds.AmbiguousSubmitError)
    assert len(service.requests) == 3


@pytest.mark.anyio
async def test_submit_throttles_exhausted_raise_rate_limit() -> None:
    clock = RecordingClock()
    service = ScriptedService(fallback=lambda request: error_response(429, "Throttling"))
    async with mock_client(service, clock=clock) as client:
        with pytest.raises(ds.RateLimitError):
            await client.submit(REPAINT)
    assert len(service.requests) == 3
    assert len(clock.sleeps) == 2


@pytest.mark.anyio
async def test_submit_without_throttle_retries_raises_the_first_429() -> None:
    clock = RecordingClock()
    service = ScriptedService([error_response(429, "Throttling.RateQuota")])
    async with mock_client(service, clock=clock) as client:
        with pytest.raises(ds.RateLimitError):
            await client.submit(REPAINT, retry_throttled=False)
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_submit_without_throttle_retries_still_retries_connect_errors() -> None:
    service = ScriptedService([httpx.ConnectError("refused"), submit_ok()])
    async with mock_client(service) as client:
        task = await client.submit(REPAINT, retry_throttled=False)
    assert task.task_id == "task-1"


# --- malformed answers ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "field_part"),
    [
        ({"output": {"task_status": "RUNNING"}}, "task_id"),
        ({"output": {"task_id": "t", "task_status": "SUCCEEDED", "results": "x"}}, "results"),
        ({"request_id": "r"}, "output"),
        (
            {"output": {"task_id": "t", "task_status": "RUNNING", "task_metrics": {"TOTAL": "x"}}},
            "TOTAL",
        ),
    ],
)
async def test_malformed_task_answers_name_the_field(body: Any, field_part: str) -> None:
    # An answer we cannot read says nothing about the task: retried like a 5xx, then raised.
    service = ScriptedService(fallback=lambda request: json_response(200, body))
    async with mock_client(service) as client:
        with pytest.raises(ds.ResponseValidationError) as caught:
            await client.get_task("t")
    assert caught.value.field is not None
    assert field_part in caught.value.field
    assert len(service.requests) == 1 + client.max_retries


@pytest.mark.anyio
async def test_a_task_answer_that_is_not_json() -> None:
    service = ScriptedService(fallback=lambda request: httpx.Response(200, text="<html>"))
    async with mock_client(service, max_retries=0) as client:
        with pytest.raises(ds.ResponseValidationError) as caught:
            await client.get_task("t")
    assert caught.value.field == "$"
    assert len(service.requests) == 1


@pytest.mark.anyio
async def test_a_gateway_page_instead_of_a_task_answer_is_retried() -> None:
    service = ScriptedService(
        [httpx.Response(200, text="<html>busy</html>", headers={"content-type": "text/html"})]
    ).then(task_answer("RUNNING", task_id="t"))
    async with mock_client(service) as client:
        info = await client.get_task("t")
    assert info.status is ds.TaskStatus.RUNNING
    assert len(service.requests) == 2


@pytest.mark.anyio
async def test_a_malformed_list_page_names_the_field() -> None:
    service = ScriptedService([json_response(200, {"data": [{"status": "RUNNING"}]})])
    async with mock_client(service, max_retries=0) as client:
        with pytest.raises(ds.ResponseValidationError) as caught:
            async for _ in client.list_tasks(start=datetime(2026, 1, 1, tzinfo=UTC)):
                pass
    assert caught.value.field is not None and "task_id" in caught.value.field


# --- the policy as a property: every kind, any answers, any Retry-After ---------------------------

#: One answer to one attempt: what kind of answer, and the Retry-After it carries.
Answer = tuple[str, str | None]

_retry_after_values = st.one_of(
    st.none(),
    st.integers(0, 10**7).map(str),
    st.floats(0, 1e6, allow_nan=False).map(lambda seconds: f"{seconds:.3f}"),
    st.integers(0, 10**9).map(lambda millis: f"ms:{millis}"),
    st.integers(-86400, 30 * 86400).map(
        lambda seconds: format_datetime(WALL_START + timedelta(seconds=seconds), usegmt=True)
    ),
    st.sampled_from(["soon", "-5", "inf", "nan", "1e400", ""]),
)
_answers: st.SearchStrategy[Answer] = st.one_of(
    st.tuples(st.sampled_from(["ok", "running"]), st.none()),
    st.tuples(
        st.sampled_from(["429", "408", "500", "502-html", "503", "504", "200-html", "401", "400"]),
        _retry_after_values,
    ),
    st.tuples(st.sampled_from(["connect", "read-timeout"]), st.none()),
)

_POLICY_ANSWER = {
    "data": {
        "policy": "cG9saWN5",
        "signature": "c2ln",
        "upload_dir": "dashscope-instant/abc",
        "upload_host": "https://upload.test",
        "expire_in_seconds": 300,
        "max_file_size_mb": 100,
        "capacity_limit_mb": 1000,
        "oss_access_key_id": "LTAI-test",
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    },
    "request_id": "req-policy",
}


def _success(kind: RequestKind, running: bool) -> httpx.Response:
    if kind is RequestKind.SUBMIT:
        return submit_ok()
    if kind is RequestKind.LIST:
        return json_response(200, {"data": [], "total": 0, "total_page": 1, "page_no": 1})
    if kind is RequestKind.CANCEL:
        return json_response(200, {"request_id": "req-cancel"})
    if kind is RequestKind.UPLOAD:
        return json_response(200, _POLICY_ANSWER)
    if kind is RequestKind.DOWNLOAD:
        return httpx.Response(200, content=make_image("PNG", 4, 4))
    status = "RUNNING" if running else "SUCCEEDED"
    results = [] if running else [{"url": "https://result.test/a.png"}]
    return task_answer(status, results=results)


def _reply(kind: RequestKind, answer: Answer) -> httpx.Response | Exception:
    name, retry_after = answer
    headers: dict[str, str] = {}
    if retry_after is not None:
        if retry_after.startswith("ms:"):
            headers["retry-after-ms"] = retry_after.removeprefix("ms:")
        else:
            headers["retry-after"] = retry_after
    if name in ("ok", "running"):
        return _success(kind, running=name == "running")
    if name == "connect":
        return httpx.ConnectError("refused")
    if name == "read-timeout":
        return httpx.ReadTimeout("slow")
    if name == "200-html":
        return httpx.Response(200, text="<html>busy</html>", headers=headers)
    if name == "502-html":
        return httpx.Response(502, text="<html>Bad Gateway</html>", headers=headers)
    codes = {"429": "Throttling.RateQuota", "408": "RequestTimeOut", "401": "InvalidApiKey"}
    return error_response(int(name), codes.get(name, "InternalError"), headers=headers)


def _longest_wait_allowed(cap: float) -> float:
    # A server's ask (capped), the backoff's cap, the planner's longest regular gap, or its
    # sleep to the start of a first task's likely end (below the model's typical run time).
    typical = ds.STYLE_REPAINT.typical_run_seconds
    return max(cap, MAX_RETRY_DELAY, PollPolicy().max_interval, typical)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(list(RequestKind)),
    answers=st.lists(_answers, max_size=12),
    cap=st.floats(0, 120, allow_nan=False),
    max_retries=st.integers(0, 4),
    deadline=st.floats(0, 300, allow_nan=False),
)
def test_every_wait_is_capped_clipped_and_metered(
    backend: str,
    kind: RequestKind,
    answers: list[Answer],
    cap: float,
    max_retries: int,
    deadline: float,
) -> None:
    """Whatever the service answers: no sleep longer than the cap allows, the poll loop never
    past its deadline, and one budget turn for every metered request sent."""

    async def scenario() -> None:
        clock = RecordingClock()
        service = ScriptedService([_reply(kind, answer) for answer in answers])
        service.fallback = lambda request: _success(kind, running=False)
        turns = 0

        async def meter() -> None:
            nonlocal turns
            turns += 1

        with contextlib.suppress(ds.DashScopeError):
            async with mock_client(
                service, clock=clock, max_retries=max_retries, max_retry_after=cap
            ) as client:
                if kind is RequestKind.POLL:
                    try:
                        await poll_until_done(
                            TaskPoll("task-1", "wanx-style-repaint-v1", submitted_at=0.0),
                            service=client,
                            planner=PollPlanner(),
                            clock=clock,
                            deadline=deadline,
                            meter=meter,
                        )
                    finally:
                        assert clock.t <= deadline + 1e-9
                    await client.get_task("task-1", meter=meter)
                elif kind is RequestKind.LIST:
                    async for _ in client.list_tasks(before_page=meter):
                        pass
                elif kind is RequestKind.CANCEL:
                    await client.cancel_task("task-1", meter=meter)
                elif kind is RequestKind.SUBMIT:
                    await client.submit(REPAINT)
                elif kind is RequestKind.UPLOAD:
                    await client._get_upload_policy(REPAINT.model)
                else:
                    with tempfile.TemporaryDirectory() as folder:
                        await download_image(
                            client.http,
                            "https://result.test/a.png",
                            folder,
                            limits=DownloadLimits(retries=max_retries),
                            clock=clock,
                        )
        assert all(0 <= pause <= _longest_wait_allowed(cap) for pause in clock.sleeps)
        if kind.metered:
            assert turns == len(service.requests)
        else:
            assert turns == 0
        if kind is not RequestKind.POLL:
            # Retries are bounded too: the first attempt and max_retries more (one page here).
            assert len(service.requests) <= max_retries + 1
            assert len(clock.sleeps) <= max_retries
            assert clock.t <= max_retries * _longest_wait_allowed(cap)

    anyio.run(scenario, backend=backend)

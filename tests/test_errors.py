"""The error tree and the mapping of every documented status and code onto it."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

import dashscope_async as ds
from dashscope_async._error_map import error_class, error_from_response
from dashscope_async._models import TaskInfo, TaskStatus
from tests.mock_service import ScriptedService, error_response, mock_client

NOW = datetime(2026, 3, 1, tzinfo=UTC)

# Every code of the service's error table (reference/dashscope-api.md, 5.1), with its status.
MAPPING_TABLE: list[tuple[int, str | None, type[ds.APIError]]] = [
    (400, "InvalidParameter", ds.BadRequestError),
    (400, "InvalidParameter.DataInspection", ds.BadRequestError),
    (400, "DataInspectionFailed", ds.BadRequestError),
    (400, "BadRequest.EmptyInput", ds.BadRequestError),
    (400, "BadRequest.EmptyParameters", ds.BadRequestError),
    (400, "BadRequest.EmptyModel", ds.BadRequestError),
    (400, "InvalidURL", ds.BadRequestError),
    (400, "InvalidImageResolution", ds.BadRequestError),
    (400, "InvalidImageFormat", ds.BadRequestError),
    (400, "UnsupportedOperation", ds.BadRequestError),
    (400, "Arrearage", ds.PermissionDeniedError),
    (400, None, ds.BadRequestError),
    (401, "InvalidApiKey", ds.AuthenticationError),
    (403, "AccessDenied", ds.PermissionDeniedError),
    (403, "AccessDenied.Unpurchased", ds.PermissionDeniedError),
    (403, "Workspace.AccessDenied", ds.PermissionDeniedError),
    (403, "Model.AccessDenied", ds.PermissionDeniedError),
    (404, "ModelNotFound", ds.NotFoundError),
    (404, "WorkSpaceNotFound", ds.NotFoundError),
    (408, "RequestTimeOut", ds.APIError),
    (409, None, ds.APIError),
    (413, "BadRequest.TooLarge", ds.APIError),
    (415, "BadRequest.UnsupportedFileFormat", ds.APIError),
    (429, "Throttling", ds.RateLimitError),
    (429, "Throttling.RateQuota", ds.RateLimitError),
    (429, "Throttling.Burst", ds.RateLimitError),
    (429, "LimitRequests", ds.RateLimitError),
    (429, None, ds.RateLimitError),
    (429, "Throttling.AllocationQuota", ds.QuotaExceededError),
    (429, "PrepaidBillOverdue", ds.QuotaExceededError),
    (429, "PostpaidBillOverdue", ds.QuotaExceededError),
    (429, "CommodityNotPurchased", ds.QuotaExceededError),
    (500, "InternalError", ds.ServerError),
    (500, "InternalError.Algo", ds.ServerError),
    (500, "InternalError.Timeout", ds.ServerError),
    (500, "SystemError", ds.ServerError),
    (502, None, ds.ServerError),
    (503, "ModelUnavailable", ds.ServerError),
    (503, "ServiceUnavailable", ds.ServerError),
    (504, None, ds.ServerError),
    (302, None, ds.APIError),
]


@pytest.mark.parametrize(("status", "code", "cls"), MAPPING_TABLE)
def test_error_class_table(status: int, code: str | None, cls: type[ds.APIError]) -> None:
    assert error_class(status, code) is cls


@pytest.mark.parametrize(("status", "code", "cls"), MAPPING_TABLE)
def test_errors_from_answers(status: int, code: str | None, cls: type[ds.APIError]) -> None:
    error = error_from_response(error_response(status, code, "the message"), now=NOW)
    assert type(error) is cls
    assert error.status_code == status
    assert error.code == code
    assert error.message == "the message"
    assert error.request_id == f"req-{status}"
    assert error.retry_after is None
    assert f"HTTP {status}" in str(error)
    assert f"req-{status}" in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "code", "cls"), [r for r in MAPPING_TABLE if r[0] < 500])
async def test_the_client_raises_the_mapped_error(
    status: int, code: str | None, cls: type[ds.APIError]
) -> None:
    service = ScriptedService(fallback=lambda request: error_response(status, code))
    async with mock_client(service, max_retries=0) as client:
        with pytest.raises(cls) as caught:
            await client.get_task("task-1")
    assert type(caught.value) is cls
    assert caught.value.code == code


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, text="<html><body>502 Bad Gateway</body></html>"),
        httpx.Response(502, content=b"\xff\xfe\x00garbage"),
        httpx.Response(502, json=["not", "an", "object"]),
        httpx.Response(502, json={"code": 17, "message": ["odd"]}),
        httpx.Response(502),
    ],
)
def test_non_json_error_bodies_are_tolerated(response: httpx.Response) -> None:
    error = error_from_response(response, now=NOW)
    assert type(error) is ds.ServerError
    assert error.code is None
    assert error.message.startswith("Bad Gateway")


@pytest.mark.parametrize(
    ("headers", "body_request_id", "expected"),
    [
        ({"x-request-id": "hdr-1"}, None, "hdr-1"),
        ({"x-dashscope-request-id": "hdr-2"}, None, "hdr-2"),
        ({"x-request-id": "hdr-1"}, "body-1", "body-1"),
        ({}, None, None),
    ],
)
def test_request_id_from_body_or_headers(
    headers: dict[str, str], body_request_id: str | None, expected: str | None
) -> None:
    body = {"code": "InvalidParameter", "message": "m"}
    if body_request_id:
        body["request_id"] = body_request_id
    error = error_from_response(httpx.Response(400, json=body, headers=headers), now=NOW)
    assert error.request_id == expected
    if expected is None:
        assert "request_id" not in str(error)


def test_retry_after_is_carried() -> None:
    response = error_response(429, "Throttling", headers={"retry-after": "2"})
    assert error_from_response(response, now=NOW).retry_after == 2.0


def test_the_tree() -> None:
    for cls in (
        ds.BadRequestError,
        ds.AuthenticationError,
        ds.PermissionDeniedError,
        ds.NotFoundError,
        ds.RateLimitError,
        ds.QuotaExceededError,
        ds.ServerError,
    ):
        assert issubclass(cls, ds.APIError)
    assert not issubclass(ds.QuotaExceededError, ds.RateLimitError)
    assert issubclass(ds.APITimeoutError, ds.APIConnectionError)
    assert issubclass(ds.TaskCanceledError, ds.TaskFailedError)
    assert issubclass(ds.ValidationError, ValueError)
    for root in (
        ds.APIError,
        ds.APIConnectionError,
        ds.AmbiguousSubmitError,
        ds.TaskError,
        ds.ResponseValidationError,
        ds.ResultExpiredError,
        ds.ValidationError,
        ds.BudgetExceededError,
    ):
        assert issubclass(root, ds.DashScopeError)


def test_task_errors_carry_the_task() -> None:
    info = TaskInfo(task_id="t-1", status=TaskStatus.FAILED, code="X", message="bad input")
    error = ds.TaskFailedError(info)
    assert error.task is info and error.task_id == "t-1" and error.code == "X"
    assert str(error) == "task t-1 ended FAILED: X: bad input"
    bare = ds.TaskFailedError(TaskInfo(task_id="t-2", status=TaskStatus.FAILED))
    assert "no reason given" in str(bare)
    timeout = ds.TaskTimeoutError("late", task_id="t-3", status=TaskStatus.RUNNING)
    assert timeout.status is TaskStatus.RUNNING and timeout.task_id == "t-3"


def test_validation_error_names_the_field() -> None:
    error = ds.ValidationError("n", "must be from 1 to 4")
    assert (error.field, error.rule, str(error)) == (
        "n",
        "must be from 1 to 4",
        "n: must be from 1 to 4",
    )

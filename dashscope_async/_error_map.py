"""Turns the service's error answers into the exception tree of ``_errors.py``: one table.

Owns the mapping from HTTP status plus the service's ``code`` to an exception class, and where a
request id and a Retry-After are read from. It never sends a request and never decides about
retries (``_retry.py`` does).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Final

import httpx

from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
)
from ._retry import MAX_RETRY_AFTER, read_retry_after
from ._wire import ErrorWire, load

__all__ = ["QUOTA_CODES", "error_class", "error_from_response", "request_id_of"]

#: 429 codes that mean a quota or bill, not a rate: waiting a second does not help.
QUOTA_CODES: Final = frozenset(
    {
        "Throttling.AllocationQuota",
        "PrepaidBillOverdue",
        "PostpaidBillOverdue",
        "CommodityNotPurchased",
    }
)

#: Codes whose class does not follow from the status alone.
_BY_CODE: Final[Mapping[str, type[APIError]]] = {
    "Arrearage": PermissionDeniedError,  # an overdue account, sent as 400
    **dict.fromkeys(QUOTA_CODES, QuotaExceededError),
}

_BY_STATUS: Final[Mapping[int, type[APIError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}

_REQUEST_ID_HEADERS: Final = ("x-request-id", "x-dashscope-request-id")
_MAX_MESSAGE_CHARS: Final = 300


def error_class(status_code: int, code: str | None) -> type[APIError]:
    """The exception class for an error answer.

    Example:
        ```python
        assert error_class(429, "Throttling.AllocationQuota") is QuotaExceededError
        assert error_class(400, "Arrearage") is PermissionDeniedError
        ```
    """
    if code is not None and code in _BY_CODE and 400 <= status_code < 500:
        return _BY_CODE[code]
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    if status_code >= 500:
        return ServerError
    return APIError


def request_id_of(response: httpx.Response, body_request_id: str | None = None) -> str | None:
    """The request id from the body, else from the ``x-request-id`` headers."""
    if body_request_id:
        return body_request_id
    for name in _REQUEST_ID_HEADERS:
        value: str | None = response.headers.get(name)
        if value:
            return value
    return None


def error_from_response(
    response: httpx.Response, *, now: datetime, max_retry_after: float = MAX_RETRY_AFTER
) -> APIError:
    """The exception for an error answer; a body that is not the service's JSON is tolerated.

    The service's error JSON (``{"code", "message", "request_id"}``) sets ``code`` and
    ``message``; otherwise ``code`` is None and the message describes the answer.
    ``retry_after`` is the server's ``Retry-After``, capped at ``max_retry_after`` seconds.
    """
    body = _service_error(response)
    code = body.code if body is not None and body.code else None
    message = body.message if body is not None and body.message else None
    if message is None:
        message = response.reason_phrase or "error"
        text = response.text.strip()
        if text and body is None:
            message = f"{message}: {text[:_MAX_MESSAGE_CHARS]}"
    cls = error_class(response.status_code, code)
    return cls(
        message,
        status_code=response.status_code,
        code=code,
        request_id=request_id_of(response, body.request_id if body is not None else None),
        retry_after=read_retry_after(response.headers, now=now, cap=max_retry_after),
    )


def _service_error(response: httpx.Response) -> ErrorWire | None:
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return load(data, ErrorWire, what="error answer")
    except ResponseValidationError:
        return None

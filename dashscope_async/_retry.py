"""When a failed API call is tried again, and after how long: the retry table, as pure functions.

Owns the decision (retry, raise, or declare a submit ambiguous) and the delay (backoff with
jitter, ``retry-after-ms`` / ``Retry-After``, ``x-should-retry``). It never sends a request and
never sleeps: the client asks it, then sleeps on its injected clock.

The table:

| call | retried | raised at once | ambiguous (submit only) |
|---|---|---|---|
| task GET, list, cancel, upload policy | 408, 429 Throttling*, 5xx, connect errors, timeouts, dropped connections | other 4xx, quota and billing 429s | - |
| submit POST | connect failures before sending, 429 Throttling*, 5xx other than 502/504 carrying the service's error JSON | other 4xx, quota and billing 429s | read/write timeout, dropped connection, 408, 502, 504, a 5xx without the service's JSON, an unreadable 2xx |
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
from collections.abc import Callable
from datetime import datetime
from typing import Final

import attrs
import httpx

from ._errors import APIError, RateLimitError

__all__ = [
    "MAX_RETRY_AFTER",
    "CallKind",
    "RetryPolicy",
    "Verdict",
    "backoff_delay",
    "parse_retry_after",
    "should_retry_header",
    "verdict_for_exception",
    "verdict_for_response",
]

INITIAL_RETRY_DELAY: Final = 0.5
MAX_RETRY_DELAY: Final = 8.0
#: A server's Retry-After is honoured up to this many seconds.
MAX_RETRY_AFTER: Final = 60.0

#: Codes that are final whatever the status: content, billing and quota decisions.
NEVER_RETRIED_CODES: Final = frozenset(
    {
        "DataInspectionFailed",
        "Arrearage",
        "Throttling.AllocationQuota",
        "PrepaidBillOverdue",
        "PostpaidBillOverdue",
        "CommodityNotPurchased",
    }
)

# The request never left: no task can exist, so a submit may go again.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# We could not even build or route the request: retrying cannot help.
_NEVER_RETRIED_EXCEPTIONS: Final = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


class CallKind(enum.Enum):
    """What a request does, which decides how safe it is to send again."""

    READ = "read"
    """Task GET, list, cancel and upload policy: sending twice does no harm."""
    SUBMIT = "submit"
    """A task submit: sending twice may create (and bill) two tasks."""


class Verdict(enum.Enum):
    """What to do about a failed attempt."""

    RETRY = "retry"
    RAISE = "raise"
    AMBIGUOUS = "ambiguous"
    """A submit went out and its fate is unknown: raise AmbiguousSubmitError, never retry."""


@attrs.frozen
class RetryPolicy:
    """How many times to retry, and the source of jitter (replaceable in tests).

    Attributes:
        max_retries: retries after the first attempt (so ``max_retries + 1`` attempts at most).
        random_fraction: returns a float in [0, 1); the jitter factor is
            ``1 - 0.25 * random_fraction()``.
    """

    max_retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    random_fraction: Callable[[], float] = attrs.field(default=random.random, repr=False, eq=False)

    def delay(self, retries_taken: int, headers: httpx.Headers | None, *, now: datetime) -> float:
        """Seconds to wait before retry number ``retries_taken + 1``.

        The server's ``retry-after-ms`` or ``Retry-After`` wins (capped at ``MAX_RETRY_AFTER``);
        otherwise ``min(0.5 * 2**retries_taken, 8)`` scaled by a jitter factor in (0.75, 1].
        """
        if headers is not None:
            asked = parse_retry_after(headers, now=now)
            if asked is not None:
                return min(asked, MAX_RETRY_AFTER)
        return backoff_delay(retries_taken, jitter=self.random_fraction())


def backoff_delay(retries_taken: int, *, jitter: float) -> float:
    """``min(0.5 * 2**retries_taken, 8)`` seconds, times ``1 - 0.25 * jitter``.

    Example:
        ```python
        assert backoff_delay(0, jitter=0.0) == 0.5
        assert backoff_delay(10, jitter=0.0) == 8.0
        ```
    """
    base = min(INITIAL_RETRY_DELAY * 2.0 ** min(retries_taken, 16), MAX_RETRY_DELAY)
    return base * (1.0 - 0.25 * jitter)


def parse_retry_after(headers: httpx.Headers, *, now: datetime) -> float | None:
    """The wait the server asked for, in seconds, or None when it asked for none we can read.

    ``retry-after-ms`` (milliseconds) first, then ``Retry-After`` as seconds or an HTTP date
    (measured from ``now``, an aware datetime). Negative or non-finite values are ignored.
    Not capped: the caller caps it.
    """
    millis: str | None = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _finite_non_negative(millis)
        if seconds is not None:
            return seconds / 1000.0
    text: str | None = headers.get("retry-after")
    if text is None:
        return None
    seconds = _finite_non_negative(text)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        return None
    return max((when - now).total_seconds(), 0.0)


def _finite_non_negative(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def should_retry_header(headers: httpx.Headers) -> bool | None:
    """The server's ``x-should-retry: true|false``, or None when absent or unreadable."""
    value = headers.get("x-should-retry", "").strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def verdict_for_exception(kind: CallKind, exc: httpx.TransportError) -> Verdict:
    """What to do when an attempt got no answer at all."""
    if isinstance(exc, _NEVER_RETRIED_EXCEPTIONS):
        return Verdict.RAISE
    if kind is CallKind.READ or isinstance(exc, _NOT_SENT):
        return Verdict.RETRY
    # Read/write timeouts, resets and protocol errors happen after the request may have
    # reached the service: a task may exist.
    return Verdict.AMBIGUOUS


def verdict_for_response(
    kind: CallKind,
    error: APIError,
    headers: httpx.Headers,
    *,
    retry_throttled: bool = True,
) -> Verdict:
    """What to do with an error answer (``error`` is its mapped exception).

    ``x-should-retry`` overrides the table for reads; for a submit it can only forbid a retry,
    never create one where a task may exist. ``retry_throttled=False`` raises a 429 at once
    (the caller paces and retries throttles itself).
    """
    status = error.status_code
    if error.code in NEVER_RETRIED_CODES:
        return Verdict.RAISE
    told = should_retry_header(headers)
    if kind is CallKind.READ:
        if told is not None:
            return Verdict.RETRY if told else Verdict.RAISE
        if status == 429:
            return (
                Verdict.RETRY
                if isinstance(error, RateLimitError) and retry_throttled
                else Verdict.RAISE
            )
        return Verdict.RETRY if status == 408 or status >= 500 else Verdict.RAISE
    # A submit.
    if status == 429:
        allowed = isinstance(error, RateLimitError) and retry_throttled
        return Verdict.RETRY if allowed and told is not False else Verdict.RAISE
    if status in (408, 502, 504):
        # A gateway gave up waiting for the service, which may have created the task.
        return Verdict.AMBIGUOUS
    if status >= 500:
        if error.code is None:
            return Verdict.AMBIGUOUS
        # The service itself answered with its error JSON: it refused the task.
        return Verdict.RAISE if told is False else Verdict.RETRY
    return Verdict.RAISE

"""The one retry policy: per request kind, what is transient, how long to wait, and the caps.

Owns every retry decision of the library: which failures of which request kind are worth
another attempt (``verdict_for_*``, ``is_transient``), the one backoff formula
(``backoff_delay``), how ``retry-after-ms`` / ``Retry-After`` are read and capped
(``read_retry_after``; 60 s unless configured), and how a wait is clipped to the caller's
deadline (``clip_to_deadline``). It never sends a request and never sleeps: the client, the poll
loop, the limiters and the file transfers ask it, then sleep on their injected clock.

The table (``RequestKind``):

| kind | retried (transient) | raised at once | ambiguous | metered by the poll budget |
|---|---|---|---|---|
| submit | connect failures before sending, 429 Throttling*, 5xx other than 502/504 carrying the service's error JSON | other 4xx, quota and billing 429s | read/write timeout, dropped connection, 408, 502, 504, a 5xx without the service's JSON, an unreadable 2xx | no |
| poll, list, cancel | 408, 429 Throttling*, 5xx, connect errors, timeouts, dropped connections, an unreadable 2xx | other 4xx, quota and billing 429s | - | yes: every attempt takes its own turn |
| upload (policy and form upload) | 408, 429, 5xx, connect errors, timeouts, dropped connections | other 4xx (a 403 from the upload host refreshes the policy once) | - | no |
| download | 408, 429, 5xx, connect errors, timeouts, dropped connections, a body cut short | 403 and other 4xx (an expired URL) | - | no |

Every wait is ``backoff_delay`` (``min(base * 2**n, cap)`` less up to ``spread`` of it at
random) unless the server asked for one; a server's wait is honoured up to ``max_retry_after``;
either is clipped to the caller's deadline.
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

from ._checks import check_seconds
from ._errors import (
    APIConnectionError,
    APIError,
    RateLimitError,
    ResponseValidationError,
)
from ._validators import whole_number

__all__ = [
    "MAX_RETRY_AFTER",
    "RequestKind",
    "RetryPolicy",
    "Verdict",
    "backoff_delay",
    "cap_retry_after",
    "check_max_retry_after",
    "clip_to_deadline",
    "is_transient",
    "parse_retry_after",
    "read_retry_after",
    "should_retry_header",
    "transient_status",
    "verdict_for_exception",
    "verdict_for_response",
    "verdict_for_unreadable",
]

INITIAL_RETRY_DELAY: Final = 0.5
MAX_RETRY_DELAY: Final = 8.0
#: The jitter takes up to this fraction off a backoff, so that callers do not retry in step.
BACKOFF_SPREAD: Final = 0.25
#: A server's Retry-After is honoured up to this many seconds unless configured otherwise.
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


class RequestKind(enum.Enum):
    """What a request does, which decides how safe it is to send again and who meters it."""

    SUBMIT = "submit"
    """A task submit: sending twice may create (and bill) two tasks."""
    POLL = "poll"
    """``GET /tasks/{id}``."""
    LIST = "list"
    """A page of ``GET /tasks``."""
    CANCEL = "cancel"
    """``POST /tasks/{id}/cancel``."""
    UPLOAD = "upload"
    """An upload policy (``GET /uploads``) or the form upload to the upload host."""
    DOWNLOAD = "download"
    """A result image from the result host."""

    @property
    def repeatable(self) -> bool:
        """True when sending the request twice does no harm (every kind but a submit)."""
        return self is not RequestKind.SUBMIT

    @property
    def metered(self) -> bool:
        """True for the task endpoints the account's poll budget meters (20 QPS together)."""
        return self in (RequestKind.POLL, RequestKind.LIST, RequestKind.CANCEL)


class Verdict(enum.Enum):
    """What to do about a failed attempt."""

    RETRY = "retry"
    RAISE = "raise"
    AMBIGUOUS = "ambiguous"
    """A submit went out and its fate is unknown: raise AmbiguousSubmitError, never retry."""


def check_max_retry_after(value: float) -> float:
    """``value`` as a cap on a server's Retry-After (``check_seconds``' rule for every option)."""
    return check_seconds("max_retry_after", value)


def _max_retry_after(_instance: object, _attribute: object, value: float) -> None:
    check_max_retry_after(value)


@attrs.frozen
class RetryPolicy:
    """How many times to retry, how long a server may make us wait, and the jitter's source.

    Attributes:
        max_retries: retries after the first attempt (so ``max_retries + 1`` attempts at most).
        max_retry_after: a server's ``Retry-After`` is honoured up to this many seconds.
        random_fraction: returns a float in [0, 1); the jitter factor is
            ``1 - 0.25 * random_fraction()``.
    """

    max_retries: int = attrs.field(default=2, validator=whole_number("max_retries"))
    max_retry_after: float = attrs.field(default=MAX_RETRY_AFTER, validator=_max_retry_after)
    random_fraction: Callable[[], float] = attrs.field(default=random.random, repr=False, eq=False)

    def delay(
        self,
        retries_taken: int,
        headers: httpx.Headers | None,
        *,
        now: datetime,
        remaining: float | None = None,
    ) -> float:
        """Seconds to wait before retry number ``retries_taken + 1``.

        The server's ``retry-after-ms`` or ``Retry-After`` wins (capped at ``max_retry_after``);
        otherwise ``min(0.5 * 2**retries_taken, 8)`` scaled by a jitter factor in (0.75, 1].
        Either is clipped to ``remaining``, the seconds left before the caller's deadline.
        """
        asked = (
            None
            if headers is None
            else read_retry_after(headers, now=now, cap=self.max_retry_after)
        )
        if asked is None:
            asked = backoff_delay(retries_taken, jitter=self.random_fraction())
        return clip_to_deadline(asked, remaining)


def backoff_delay(
    retries_taken: int,
    *,
    jitter: float,
    base: float = INITIAL_RETRY_DELAY,
    cap: float = MAX_RETRY_DELAY,
    spread: float = BACKOFF_SPREAD,
) -> float:
    """The one backoff formula: ``min(base * 2**retries_taken, cap) * (1 - spread * jitter)``.

    ``jitter`` is a random fraction in [0, 1) (0 for a deterministic schedule); the result is
    never more than ``cap`` and never negative.

    Example:
        ```python
        assert backoff_delay(0, jitter=0.0) == 0.5
        assert backoff_delay(10, jitter=0.0) == 8.0
        assert backoff_delay(3, jitter=0.0, base=1.0, cap=30.0) == 8.0
        ```
    """
    # min() first: 2**n overflows a float long before any sane cap is reached.
    full = min(base * 2.0 ** min(max(retries_taken, 0), 64), cap)
    return max(full * (1.0 - spread * min(max(jitter, 0.0), 1.0)), 0.0)


def clip_to_deadline(delay: float, remaining: float | None) -> float:
    """``delay``, but never past the caller's deadline ``remaining`` seconds away (None: none)."""
    if remaining is None:
        return max(delay, 0.0)
    return min(max(delay, 0.0), max(remaining, 0.0))


def cap_retry_after(seconds: float | None, cap: float = MAX_RETRY_AFTER) -> float | None:
    """A server's wait, honoured up to ``cap`` seconds; None when there is none to honour."""
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap)


def read_retry_after(
    headers: httpx.Headers, *, now: datetime, cap: float = MAX_RETRY_AFTER
) -> float | None:
    """The wait the server asked for, capped at ``cap`` seconds, or None when it asked none."""
    return cap_retry_after(parse_retry_after(headers, now=now), cap)


def parse_retry_after(headers: httpx.Headers, *, now: datetime) -> float | None:
    """The wait the server asked for, in seconds, or None when it asked for none we can read.

    ``retry-after-ms`` (milliseconds) first, then ``Retry-After`` as seconds or an HTTP date
    (measured from ``now``, an aware datetime). Negative or non-finite values are ignored.
    Not capped: ``read_retry_after`` caps it.
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
    except (TypeError, ValueError, IndexError, OverflowError):
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


def transient_status(kind: RequestKind, status: int) -> bool:
    """True when an answer with this status is worth another attempt of a repeatable request.

    For the upload and result hosts (OSS), whose error bodies are not the service's: 408, 429
    and 5xx. The service's own answers go through ``verdict_for_response``, which also reads
    the error code.
    """
    return kind.repeatable and (status >= 500 or status in (408, 429))


def verdict_for_exception(kind: RequestKind, exc: httpx.TransportError) -> Verdict:
    """What to do when an attempt got no answer at all."""
    if isinstance(exc, _NEVER_RETRIED_EXCEPTIONS):
        return Verdict.RAISE
    if kind.repeatable or isinstance(exc, _NOT_SENT):
        return Verdict.RETRY
    # Read/write timeouts, resets and protocol errors happen after the request may have
    # reached the service: a task may exist.
    return Verdict.AMBIGUOUS


def verdict_for_unreadable(kind: RequestKind) -> Verdict:
    """What to do with a 2xx whose body cannot be read (a gateway's HTML page, cut-off JSON)."""
    # It says nothing about the task; only a submit's may hide one that was created.
    return Verdict.RETRY if kind.repeatable else Verdict.AMBIGUOUS


def _table_verdict(kind: RequestKind, error: APIError) -> Verdict:
    """The table's verdict for an error answer, before any ``x-should-retry``."""
    status = error.status_code
    if error.code in NEVER_RETRIED_CODES:
        return Verdict.RAISE
    if status == 429:
        # Throttling* is retried; quota and billing 429s (other classes) are final.
        return Verdict.RETRY if isinstance(error, RateLimitError) else Verdict.RAISE
    if kind.repeatable:
        return Verdict.RETRY if status == 408 or status >= 500 else Verdict.RAISE
    if status in (408, 502, 504):
        # A gateway gave up waiting for the service, which may have created the task.
        return Verdict.AMBIGUOUS
    if status >= 500:
        # With the service's error JSON, the service itself refused the task; without, a
        # proxy answered and the task's fate is unknown.
        return Verdict.RETRY if error.code is not None else Verdict.AMBIGUOUS
    return Verdict.RAISE


def verdict_for_response(
    kind: RequestKind,
    error: APIError,
    headers: httpx.Headers,
    *,
    retry_throttled: bool = True,
) -> Verdict:
    """What to do with an error answer (``error`` is its mapped exception).

    ``x-should-retry`` overrides the table for repeatable requests; for a submit it can only
    forbid a retry, never create one where a task may exist. ``retry_throttled=False`` raises a
    429 at once (the caller paces and retries throttles itself).
    """
    verdict = _table_verdict(kind, error)
    if error.code in NEVER_RETRIED_CODES:
        return verdict
    if error.status_code == 429 and not retry_throttled:
        return Verdict.RAISE
    told = should_retry_header(headers)
    if told is None or verdict is Verdict.AMBIGUOUS:
        return verdict
    if kind.repeatable:
        return Verdict.RETRY if told else Verdict.RAISE
    return Verdict.RAISE if not told else verdict


def is_transient(kind: RequestKind, error: BaseException) -> bool:
    """True when an error the client raised says only "not now": the same request may go again.

    The same table as the client's own retries, applied to what it raised (after its retries,
    or at once with ``retry=False``): a throttle, a 408 or 5xx, no answer, an unreadable answer
    for repeatable requests. Everything else (a refusal, a quota, an ambiguous submit, a bug)
    is final.
    """
    if isinstance(error, APIError):
        return _table_verdict(kind, error) is Verdict.RETRY
    if isinstance(error, APIConnectionError | ResponseValidationError):
        # A submit raises APIConnectionError only when nothing was sent.
        return kind.repeatable or isinstance(error, APIConnectionError)
    return False

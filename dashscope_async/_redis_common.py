"""What the Redis-backed parts (the limiter, the job store) share: connecting, naming, asyncio.

Owns how a Redis URL or client becomes a connection (timeouts, a short retry ladder), the one
retry loop every call rides a Redis outage out with (``Outage``), how an address is shown without its
password, the asyncio-only check, and how a lease's heartbeat runs beside the work it guards.
Sends no command of its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import anyio

from ._logging import get_logger
from ._retry import backoff_delay

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import (
        ClusterDownError,
        ReadOnlyError,
        RedisError,
        ResponseError,
        TryAgainError,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dashscope_async.redis needs redis-py: pip install 'dashscope-async[redis]'"
    ) from exc

__all__ = [
    "Outage",
    "beside",
    "check_namespace",
    "connect",
    "redacted_address",
    "require_asyncio",
]

T = TypeVar("T")

logger = get_logger("redis")

#: Backoff between Redis attempts during an outage: 0.1 s doubling up to 2 s.
OUTAGE_BACKOFF: Final = 0.1
OUTAGE_BACKOFF_MAX: Final = 2.0
#: Errors Redis answers that mean "not now" (a failover, a resharding), retried like an outage.
#: Any other answered error (a script's own error, a wrong type) is raised at once: trying it
#: again would only fail again.
NOT_NOW: Final = (ReadOnlyError, TryAgainError, ClusterDownError)


def require_asyncio(owner: str, operation: str) -> None:
    """Raise a clear RuntimeError when ``owner.operation`` is called off asyncio."""
    # sniffio ships with trio, so when it cannot be imported the loop is asyncio.
    try:
        import sniffio
    except ImportError:  # pragma: no cover - trio (and so sniffio) is installed in tests
        return
    library = sniffio.current_async_library()
    if library != "asyncio":
        raise RuntimeError(
            f"{owner}.{operation} needs asyncio, but this code runs on {library}: "
            "redis-py's client is asyncio-only. Run the worker on asyncio, or use the "
            "in-process equivalent (the runner's default), which works on trio."
        )


def redacted_address(url: str) -> str:
    """``url`` with no password: scheme, host, port and database only."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_namespace(namespace: str) -> None:
    """Namespaces prefix every key inside a hash tag, so they must be non-empty and brace-free."""
    if not isinstance(namespace, str) or not namespace or any(c in namespace for c in "{}"):
        raise ValueError(f"namespace must be non-empty and free of braces: {namespace!r}")


def connect(url_or_client: str | aioredis.Redis[Any]) -> tuple[aioredis.Redis[Any], bool, str]:
    """A client for ``url_or_client``: (client, whether we own it, its address for messages)."""
    if isinstance(url_or_client, str):
        client: aioredis.Redis[Any] = aioredis.Redis.from_url(
            url_or_client,
            socket_connect_timeout=5.0,
            socket_timeout=5.0,
            # A down Redis should fail the call quickly, not after a long retry ladder.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        )
        return client, True, redacted_address(url_or_client)
    kwargs = url_or_client.connection_pool.connection_kwargs
    address = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
    return url_or_client, False, address


@asynccontextmanager
async def beside(heartbeat: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run ``heartbeat`` while the block runs; the block's own errors pass through unwrapped.

    A task group wraps whatever its host raises in an ``ExceptionGroup``; a job's typed error
    raised while it holds a lease must reach the runner as itself.
    """
    error: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(heartbeat)
        try:
            yield
        except Exception as exc:
            error = exc
        finally:
            group.cancel_scope.cancel()
    if error is not None:
        raise error


class Outage:
    """One Redis client's outage, and the one retry loop every call of that client goes through.

    A failed call is tried again with backoff (``OUTAGE_BACKOFF`` doubling up to
    ``OUTAGE_BACKOFF_MAX``, the retry policy's formula) for up to ``grace`` seconds. The grace
    is counted from the first failure of the outage, not of this call, so once Redis has been
    gone that long every call fails at its first attempt (callers queued behind each other do
    not wait a grace each), and succeeds again as soon as Redis is back. Every call given here
    must be safe to repeat: a script whose answer was lost may have run.

    Args:
        grace: seconds of an outage a call rides out before its error is raised.
        what: names the Redis in log lines ("the shared limiter's Redis").
    """

    def __init__(self, grace: float, what: str) -> None:
        if not grace >= 0:
            raise ValueError(f"outage_grace must be at least 0: {grace!r}")
        self.grace = grace
        self.what = what
        #: Loop time Redis first failed in the current outage; None while it answers.
        self.since: float | None = None
        self._random = random.Random()

    @property
    def ongoing(self) -> bool:
        """True from a failed call until the next call that reaches Redis."""
        return self.since is not None

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        patient: bool = True,
        attempt_timeout: float | None = None,
    ) -> T:
        """``operation()``, retried through the outage; raises its last ``RedisError`` or
        ``OSError`` once the grace has run out (an error Redis answered, other than a "not now",
        at once). ``patient=False`` makes one attempt;
        ``attempt_timeout`` counts an attempt unanswered that long as failed."""
        retries_taken = 0
        while True:
            try:
                with anyio.fail_after(math.inf if attempt_timeout is None else attempt_timeout):
                    result = await operation()
            except (RedisError, OSError) as exc:  # TimeoutError is an OSError
                if isinstance(exc, ResponseError) and not isinstance(exc, NOT_NOW):
                    raise
                now = anyio.current_time()
                if self.since is None:
                    self.since = now
                    logger.warning("%s is unreachable (%s); retrying", self.what, exc)
                left = self.since + self.grace - now
                if not patient or left <= 0:
                    raise
                pause = backoff_delay(
                    retries_taken,
                    jitter=self._random.random(),
                    base=OUTAGE_BACKOFF,
                    cap=OUTAGE_BACKOFF_MAX,
                )
                await anyio.sleep(min(pause, left))
                retries_taken += 1
                continue
            if self.since is not None:
                logger.warning(
                    "%s answers again after %.1f s", self.what, anyio.current_time() - self.since
                )
                self.since = None
            return result

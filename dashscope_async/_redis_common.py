"""What the Redis-backed parts (the limiter, the job store) share: connecting, naming, asyncio.

Owns how a Redis URL or client becomes a connection (timeouts, a short retry ladder), how long
a call waits for an unreachable Redis (``patiently``), how an address is shown without its
password, the asyncio-only check, and how a lease's heartbeat runs beside the work it guards.
Sends no command of its own.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import anyio

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dashscope_async.redis needs redis-py: pip install 'dashscope-async[redis]'"
    ) from exc

__all__ = [
    "beside",
    "check_namespace",
    "connect",
    "patiently",
    "redacted_address",
    "require_asyncio",
]

T = TypeVar("T")

#: The first and the longest pause between tries while Redis is unreachable.
FIRST_PAUSE: Final = 0.05
LONGEST_PAUSE: Final = 1.0


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


async def patiently(call: Callable[[], Awaitable[T]], *, patience: float) -> T:
    """``call()``, tried again while Redis is unreachable, for up to ``patience`` seconds.

    Pauses double from ``FIRST_PAUSE`` to ``LONGEST_PAUSE`` (with jitter); the last error is
    raised once ``patience`` has run out. Every call given here must be safe to repeat: a
    script whose answer was lost may have run.
    """
    deadline = anyio.current_time() + patience
    pause = FIRST_PAUSE
    while True:
        try:
            return await call()
        except (RedisError, OSError):
            left = deadline - anyio.current_time()
            if left <= 0:
                raise
        await anyio.sleep(min(left, pause * random.uniform(0.5, 1.0)))
        pause = min(pause * 2, LONGEST_PAUSE)

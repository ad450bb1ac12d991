"""``Emulator``: the one object a test holds: the core, its records and faults, and the ways in.

Owns wiring: in-process (an httpx transport and a ready client) or served on loopback (three
ports). The rules themselves live in ``_core.py``. Imports the client only inside ``client()``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import anyio
import attrs
import httpx

from .._models import TaskStatus
from ._config import EmulatorConfig
from ._core import EmulatorCore, HostUrls
from ._faults import Faults
from ._stats import EmulatorStats
from ._tasks import EmulatedTask
from ._transport import EmulatorTransport

if TYPE_CHECKING:
    from .._client import AsyncDashScope
    from ._server import LoopbackServer

__all__ = ["IN_PROCESS_URLS", "Emulator", "RunningServer"]

#: In-process addresses: loopback (the client sends plain http:// only there), one port per
#: host, so credentials meant for the API host are told apart from the others. Nothing listens.
IN_PROCESS_URLS: Final = HostUrls(
    base_url="http://127.0.0.1:1/api/v1",
    upload_url="http://127.0.0.1:2",
    result_url="http://127.0.0.1:3",
)


@attrs.frozen
class RunningServer:
    """An emulator serving on loopback.

    Attributes:
        base_url: the API base URL, including ``/api/v1``.
        upload_url: the upload host.
        result_url: the result host.
        api_key: a key the server accepts.
        emulator: the emulator behind it (its ``stats``, ``faults``, ``tasks``).
    """

    base_url: str
    upload_url: str
    result_url: str
    api_key: str = attrs.field(repr=False)
    emulator: Emulator = attrs.field(repr=False)


@attrs.frozen
class _EmulatorClock:
    """The client's clock for in-process use: the emulator's time and wall clock."""

    emulator: Emulator

    def now(self) -> float:
        return self.emulator.now()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(seconds, 0.0))

    def wall(self) -> datetime:
        return self.emulator.wall()


class Emulator:
    """A stand-in for DashScope: its routes, rules, limits, uploads and result images.

    In-process, it answers through ``transport()`` on the event loop's clock
    (``anyio.current_time``), so trio's ``MockClock`` or a virtual-time loop drive it. Served,
    ``serve()`` runs it on three loopback ports on the real monotonic clock. Use one or the other.

    Args:
        config: the settings (the service's defaults when None).
        clock: monotonic seconds to read instead of the event loop's clock.
        **overrides: ``EmulatorConfig`` fields to change, e.g. ``time_scale=0.01``.

    Example:
        ```python
        emulator = Emulator(time_scale=0.01)
        async with emulator.client() as client:
            result = await client.generate(
                ds.StyleRepaint(emulator.sample_image_url("portrait"), style=ds.RepaintStyle.ANIME)
            )
        assert emulator.stats.submissions["wanx-style-repaint-v1"] == 1
        ```
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> None:
        config = config or EmulatorConfig()
        if overrides:
            config = attrs.evolve(config, **overrides)
        self._clock_given = clock is not None
        self._core = EmulatorCore(config, clock or anyio.current_time, IN_PROCESS_URLS)

    def __repr__(self) -> str:
        return f"Emulator(base_url={self.base_url!r}, tasks={len(self._core.tasks)})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    # --- what it is -------------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        """The settings."""
        return self._core.config

    @property
    def api_key(self) -> str:
        """A key the emulator accepts."""
        return self._core.config.api_key

    @property
    def base_url(self) -> str:
        """The API base URL, including ``/api/v1``."""
        return self._core.urls.base_url

    @property
    def upload_url(self) -> str:
        """The upload host's URL."""
        return self._core.urls.upload_url

    @property
    def result_url(self) -> str:
        """The result host's URL."""
        return self._core.urls.result_url

    @property
    def stats(self) -> EmulatorStats:
        """What it recorded; tasks are first brought up to the current time when possible."""
        # Outside an event loop the clock cannot be read: the records stand as they are.
        with contextlib.suppress(RuntimeError):
            self._core.advance()
        return self._core.stats

    @property
    def faults(self) -> Faults:
        """Faults to inject (scripted or by chance)."""
        return self._core.faults

    @property
    def tasks(self) -> Mapping[str, EmulatedTask]:
        """Every task it accepted, by id, in submission order (read-only)."""
        return MappingProxyType(self._core.tasks)

    def task(self, task_id: str) -> EmulatedTask:
        """One task by id (``KeyError`` if it never existed)."""
        return self._core.tasks[task_id]

    def tasks_created_by(self, request_input: Mapping[str, object]) -> tuple[str, ...]:
        """The ids of every task a submit with this ``input`` object created, oldest first.

        The emulator records which input created which task, so a test can tell a job's own
        task from one it adopted by mistake (a task made by another job's input).

        Example:
            ```python
            body = json.loads(request_body)
            assert len(emulator.tasks_created_by(body["input"])) <= 1  # never paid twice
            ```
        """
        return tuple(self._core.tasks_by_input.get(_canonical(request_input), ()))

    def input_of(self, task_id: str) -> Mapping[str, object]:
        """The ``input`` object of the submit that created a task (``KeyError`` if none did)."""
        value = self._core.tasks[task_id].raw_body.get("input")
        return value if isinstance(value, dict) else {}

    def submits_received(self, since: float = float("-inf")) -> tuple[Mapping[str, object], ...]:
        """The ``input`` of every submit that reached the service at or after clock time
        ``since``, whatever became of it (answered, refused, lost, held for late processing)."""
        return tuple(
            json.loads(key) or {} for at, key in self._core.submit_arrivals if at >= since and key
        )

    def status(self, task_id: str) -> TaskStatus:
        """A task's status now."""
        now = self._core.advance()
        return self._core.tasks[task_id].status_at(now)

    def now(self) -> float:
        """The emulator's clock reading."""
        return self._core.now()

    def wall(self) -> datetime:
        """The emulator's wall-clock time: its start plus elapsed clock time."""
        return self._core.wall()

    def stored_object(self, key: str) -> bytes | None:
        """An uploaded object's bytes by its key or ``oss://`` URL."""
        return self._core.stored_object(key)

    # --- inputs -----------------------------------------------------------------------------

    def sample_image_url(self, kind: str = "portrait") -> str:
        """A URL on the result host of a sample input: ``"portrait"`` or ``"sketch"``."""
        if kind not in ("portrait", "sketch"):
            raise ValueError("kind must be 'portrait' or 'sketch'")
        return f"{self.result_url}/samples/{kind}.png"

    def add_image(self, data: bytes, name: str | None = None) -> str:
        """Serve ``data`` from the result host (publicly) and return its URL: a test's input."""
        return self._core.publish(name or f"{self._core.new_id()}.bin", data)

    # --- in-process -------------------------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport into the emulator's three hosts (no sockets)."""
        return EmulatorTransport(self._core)

    def client_clock(self) -> _EmulatorClock:
        """A client clock that agrees with the emulator's time and wall clock."""
        return _EmulatorClock(self)

    def client(self, **options: Any) -> AsyncDashScope:
        """An ``AsyncDashScope`` wired to this emulator in-process.

        Args:
            **options: more ``AsyncDashScope`` arguments (``max_retries``, ``timeout``, ...).

        Example:
            ```python
            async with emulator.client() as client:
                task = await client.submit(request)
            ```
        """
        from .._client import AsyncDashScope

        options.setdefault("api_key", self.api_key)
        options.setdefault("base_url", self.base_url)
        options.setdefault("clock", self.client_clock())
        # The transport holds no sockets, so this client needs no closing of its own.
        options.setdefault("http_client", httpx.AsyncClient(transport=self.transport()))
        return AsyncDashScope(**options)

    # --- served -----------------------------------------------------------------------------

    @asynccontextmanager
    async def serve(self, *, port: int = 0) -> AsyncIterator[RunningServer]:
        """Serve on 127.0.0.1: the API host on ``port`` (0: any free port), uploads and results
        on ports of their own. The server runs in its own thread and event loop, on the real
        monotonic clock, so asyncio and trio code alike can use it.

        Example:
            ```python
            async with Emulator(time_scale=0.01).serve() as server:
                client = ds.AsyncDashScope(api_key=server.api_key, base_url=server.base_url)
            ```
        """
        server = self._loopback_server(port)
        await anyio.to_thread.run_sync(server.start)
        try:
            yield self._running()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(server.stop)

    @contextmanager
    def serve_sync(self, *, port: int = 0) -> Iterator[RunningServer]:
        """``serve()`` for synchronous code (a plain test, a blocking SDK, a script).

        Example:
            ```python
            with Emulator(time_scale=0.01).serve_sync() as server:
                dashscope.base_http_api_url = server.base_url
            ```
        """
        server = self._loopback_server(port)
        server.start()
        try:
            yield self._running()
        finally:
            server.stop()

    def _loopback_server(self, port: int) -> LoopbackServer:
        from ._server import LoopbackServer

        if not self._clock_given:
            self._core.reset_clock(time.monotonic)
        return LoopbackServer(self._core, api_port=port)

    def _running(self) -> RunningServer:
        return RunningServer(
            base_url=self.base_url,
            upload_url=self.upload_url,
            result_url=self.result_url,
            api_key=self.api_key,
            emulator=self,
        )


def _canonical(value: Mapping[str, object]) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)

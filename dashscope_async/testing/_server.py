"""The served way in: the core behind a small ASGI app, on three loopback ports, in uvicorn.

Owns sockets and the server thread: it binds 127.0.0.1 only (port 0 picks a free port), runs
uvicorn on its own asyncio loop in its own thread (so asyncio and trio tests can both use it),
and carries out faults as a network would, really dropping connections. The ASGI app is written
by hand rather than with Starlette: the core already routes, so the app only moves bytes, and the
``testing`` extra stays at uvicorn alone.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import anyio.lowlevel

from ._core import Call, EmulatorCore, HostRole, HostUrls, Reply

__all__ = ["LoopbackServer"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 10.0


def asgi_app(core: EmulatorCore, role: HostRole) -> ASGIApp:
    """The ASGI app of one host."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        call = Call(
            host=role,
            method=scope["method"],
            path=scope["path"],
            query=dict(urllib.parse.parse_qsl(scope["query_string"].decode("latin-1"))),
            headers={
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in scope["headers"]
            },
            body=b"".join(chunks),
        )
        reply = core.handle(call)
        fault = reply.fault
        if fault is not None:
            if fault.kind in ("slow", "timeout_after", "late"):
                await anyio.sleep(fault.delay)
            if fault.kind in ("drop_before", "drop_after", "timeout_after", "late"):
                await _drop_connection(receive)
                return
        content = reply.body
        if reply.render is not None:
            content = await anyio.to_thread.run_sync(reply.render)
        if scope["method"] == "HEAD":
            content = b""
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type.encode()),
                    (b"content-length", str(len(content)).encode()),
                    *((name.encode(), value.encode()) for name, value in reply.headers),
                    *_redirect_to_itself(reply, scope),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    return app


def _redirect_to_itself(reply: Reply, scope: Scope) -> list[tuple[bytes, bytes]]:
    if reply.fault is None or reply.fault.kind != "redirect_loop":
        return []
    query = scope["query_string"]
    return [(b"location", scope["path"].encode() + (b"?" + query if query else b""))]


async def _drop_connection(receive: Receive) -> None:
    """Close the TCP connection without an answer, as a failing network does."""
    # uvicorn's request cycle (the owner of ``receive``) holds the connection's transport.
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:  # pragma: no cover - another server: a 500 is the best it can do
        raise ConnectionAbortedError("dropped by the emulator")
    transport.abort()
    # Let the loop see the lost connection, so uvicorn does not answer for us.
    for _ in range(3):
        await anyio.lowlevel.checkpoint()
    if cycle is not None and hasattr(cycle, "disconnected"):
        cycle.disconnected = True


def bind(port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (port 0: any free port)."""
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it every answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class LoopbackServer:
    """Three uvicorn servers (API, upload, result hosts) on one thread and event loop."""

    def __init__(self, core: EmulatorCore, *, api_port: int = 0) -> None:
        self._core = core
        self._api_port = api_port
        self._servers: list[Any] = []
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        """Bind, point the core at the real addresses, and serve (blocks until serving)."""
        import uvicorn

        sockets = [bind(self._api_port), bind(0), bind(0)]
        ports = [sock.getsockname()[1] for sock in sockets]
        self._core.urls = HostUrls(
            base_url=f"http://{HOST}:{ports[0]}/api/v1",
            upload_url=f"http://{HOST}:{ports[1]}",
            result_url=f"http://{HOST}:{ports[2]}",
        )
        roles: tuple[HostRole, ...] = ("api", "upload", "result")
        self._servers = [
            uvicorn.Server(
                uvicorn.Config(
                    asgi_app(self._core, role),
                    http="h11",
                    lifespan="off",
                    # No logging setup and no log level: inside an app served by uvicorn,
                    # the emulator must not quieten the host's own uvicorn loggers.
                    log_config=None,
                    access_log=False,
                    timeout_graceful_shutdown=1,
                )
            )
            for role in roles
        ]

        async def serve_all() -> None:
            async with anyio.create_task_group() as group:
                for server, sock in zip(self._servers, sockets, strict=True):
                    group.start_soon(server.serve, [sock])

        def run() -> None:
            try:
                anyio.run(serve_all, backend="asyncio")
            except BaseException as exc:  # reported to the starting thread
                self._error = exc
            finally:
                for sock in sockets:
                    sock.close()
                self._started.set()

        self._thread = threading.Thread(target=run, name="dashscope-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not all(server.started for server in self._servers):
            if self._started.wait(0.01) or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulator's server did not start: {self._error!r}")

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

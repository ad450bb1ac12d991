"""The in-process way in: an ``httpx.AsyncBaseTransport`` that hands requests to the core.

Owns turning ``httpx.Request`` into ``Call`` and ``Reply`` into ``httpx.Response``, and carrying out
faults the way a network would (a slow answer sleeps on the event loop's clock; a dropped
connection raises the error httpx would). No sockets. Image drawing runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import anyio
import anyio.lowlevel
import httpx

from ._core import Call, EmulatorCore, Reply
from ._faults import Fault

__all__ = ["EmulatorTransport", "fault_body", "streams_body", "to_httpx_response"]

#: The chunk an endless body repeats after the real answer's first bytes.
_ENDLESS_CHUNK: Final = bytes(64 * 1024)


def streams_body(fault: Fault | None) -> bool:
    """True when a fault changes how the body is sent (endless, trickling)."""
    return fault is not None and fault.kind in ("endless_body", "trickle")


async def fault_body(fault: Fault, content: bytes) -> AsyncIterator[bytes]:
    """The body a streaming fault sends: ``content`` a byte at a time, or ``content``'s first
    bytes followed by zeros without end."""
    if fault.kind == "trickle":
        for position in range(len(content)):
            yield content[position : position + 1]
            await anyio.sleep(fault.delay)
        return
    yield content[:64]
    while True:
        yield _ENDLESS_CHUNK
        await anyio.lowlevel.checkpoint()


class _FaultStream(httpx.AsyncByteStream):
    """A streaming fault's body for httpx. Iterated through a plain iterator object, not an
    async generator, so a client that stops reading early leaves nothing to finalize."""

    def __init__(self, fault: Fault, content: bytes) -> None:
        self._fault = fault
        self._content = content
        self._sent = 0
        self._closed = False

    def __aiter__(self) -> _FaultStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        if self._fault.kind == "trickle":
            if self._sent >= len(self._content):
                raise StopAsyncIteration
            if self._sent:
                await anyio.sleep(self._fault.delay)
            chunk = self._content[self._sent : self._sent + 1]
        else:
            await anyio.lowlevel.checkpoint()
            chunk = self._content[:64] if not self._sent else _ENDLESS_CHUNK
        self._sent += len(chunk)
        return chunk

    async def aclose(self) -> None:
        self._closed = True


class EmulatorTransport(httpx.AsyncBaseTransport):
    """Routes requests to the emulator's API, upload and result hosts by their address.

    Example:
        ```python
        http = httpx.AsyncClient(transport=emulator.transport())
        ```
    """

    def __init__(self, core: EmulatorCore) -> None:
        self._core = core

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        role = self._core.urls.role_of(url.scheme, url.host, url.port)
        if role is None:
            raise httpx.ConnectError(
                f"the emulator does not serve {url.scheme}://{url.host}:{url.port}",
                request=request,
            )
        body = await request.aread()
        call = Call(
            host=role,
            method=request.method,
            path=url.path,
            query=dict(url.params.items()),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
        )
        reply = self._core.handle(call)
        fault = reply.fault
        if fault is not None:
            if fault.kind in ("drop_before", "drop_after"):
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                )
            if fault.kind == "timeout_after":
                raise httpx.ReadTimeout("timed out waiting for the emulator", request=request)
            if fault.kind == "late":
                # The client gives up after its timeout; the service goes on with the request.
                await anyio.sleep(fault.delay)
                raise httpx.ReadTimeout("timed out waiting for the emulator", request=request)
            if fault.kind == "slow":
                await anyio.sleep(fault.delay)
            if fault.kind == "redirect_loop":
                return httpx.Response(302, headers={"location": str(url)}, request=request)
        content = reply.body
        if reply.render is not None:
            content = await anyio.to_thread.run_sync(reply.render)
        if fault is not None and streams_body(fault):
            return httpx.Response(
                reply.status,
                headers={"content-type": reply.content_type},
                stream=_FaultStream(fault, content),
                request=request,
            )
        return to_httpx_response(reply, content, request)


def to_httpx_response(reply: Reply, content: bytes, request: httpx.Request) -> httpx.Response:
    """An httpx response for a reply whose body is ``content``."""
    if request.method == "HEAD":
        content = b""
    headers = [("content-type", reply.content_type), *reply.headers]
    return httpx.Response(reply.status, headers=headers, content=content, request=request)

"""The in-process way in: an ``httpx.AsyncBaseTransport`` that hands requests to the core.

Owns turning ``httpx.Request`` into ``Call`` and ``Reply`` into ``httpx.Response``, and carrying out
faults the way a network would (a slow answer sleeps on the event loop's clock; a dropped
connection raises the error httpx would). No sockets. Image drawing runs in a worker thread.
"""

from __future__ import annotations

import anyio
import httpx

from ._core import Call, EmulatorCore, Reply

__all__ = ["EmulatorTransport", "to_httpx_response"]


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
        content = reply.body
        if reply.render is not None:
            content = await anyio.to_thread.run_sync(reply.render)
        return to_httpx_response(reply, content, request)


def to_httpx_response(reply: Reply, content: bytes, request: httpx.Request) -> httpx.Response:
    """An httpx response for a reply whose body is ``content``."""
    if request.method == "HEAD":
        content = b""
    headers = [("content-type", reply.content_type), *reply.headers]
    if reply.fault is not None and reply.fault.kind == "redirect_loop":
        headers.append(("location", str(request.url)))
    return httpx.Response(reply.status, headers=headers, content=content, request=request)

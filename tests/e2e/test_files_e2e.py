"""Local files in and images out over real loopback HTTP: the client, an API host, an upload host
and a result host, each on its own port.

The hosts here are a small stand-in written for this file (the policy endpoint, the submit
endpoint, an OSS-style form upload and a result store with signed, expiring URLs) that records
every credential reaching the upload or result host. They run in uvicorn on a background thread,
so the tests themselves run on asyncio and trio.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
import uvicorn

from dashscope_async._client import AsyncDashScope
from dashscope_async._errors import ResultExpiredError, ValidationError
from dashscope_async._models import GeneratedImage, SketchToImage, StyleRepaint
from tests.images_util import make_image

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@attrs.define
class Hosts:
    """The state shared by the three hosts, and what they saw."""

    ports: dict[str, int] = attrs.field(factory=dict)
    objects: dict[str, bytes] = attrs.field(factory=dict)
    submits: list[tuple[dict[str, str], dict[str, Any]]] = attrs.field(factory=list)
    policy_calls: int = 0
    leaks: list[tuple[str, str]] = attrs.field(factory=list)
    requests: list[tuple[str, str, str]] = attrs.field(factory=list)

    def url(self, host: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[host]}{path}"

    def signed_result(self, key: str, *, expires_at: float) -> str:
        return self.url(
            "results", f"/{key}?Expires={int(expires_at)}&Signature=s{uuid.uuid4().hex}"
        )


def asgi_app(hosts: Hosts, name: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        hosts.requests.append((name, scope["method"], scope["path"]))
        if name != "api":
            for header in ("authorization", "x-dashscope-workspace"):
                if header in headers:
                    hosts.leaks.append((name, header))
        status, content, content_type = route(hosts, name, scope, headers, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})

    return app


def oss_error(code: str, message: str) -> bytes:
    return f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()


def route(
    hosts: Hosts, name: str, scope: Scope, headers: dict[str, str], body: bytes
) -> tuple[int, bytes, str]:
    path: str = scope["path"]
    if name == "api":
        if headers.get("authorization") != "Bearer sk-e2e-key":
            return (
                401,
                b'{"code":"InvalidApiKey","message":"Invalid API-key provided."}',
                "application/json",
            )
        if path == "/api/v1/uploads":
            hosts.policy_calls += 1
            policy = {
                "policy": "cG9saWN5",
                "signature": "sig",
                "upload_dir": "dashscope-instant/e2e",
                "upload_host": hosts.url("upload", "/"),
                "expire_in_seconds": 300,
                "max_file_size_mb": 100,
                "capacity_limit_mb": 999,
                "oss_access_key_id": "LTAI-e2e",
                "x_oss_object_acl": "private",
                "x_oss_forbid_overwrite": "true",
            }
            return 200, json.dumps({"request_id": "p", "data": policy}).encode(), "application/json"
        hosts.submits.append((headers, json.loads(body)))
        answer = {
            "request_id": "s",
            "output": {"task_id": f"t-{len(hosts.submits)}", "task_status": "PENDING"},
        }
        return 200, json.dumps(answer).encode(), "application/json"
    if name == "upload":
        head = f"Content-Type: {headers['content-type']}\r\n\r\n".encode()
        form = {
            str(part.get_param("name", header="content-disposition")): part.get_payload(decode=True)
            for part in BytesParser(policy=HTTP).parsebytes(head + body).iter_parts()
        }
        key = form["key"].decode()  # type: ignore[union-attr]
        if key in hosts.objects:
            return (
                409,
                oss_error("FileAlreadyExists", "The object you specified already exists"),
                "application/xml",
            )
        if form.get("OSSAccessKeyId") != b"LTAI-e2e" or form.get("Signature") != b"sig":
            return 403, oss_error("AccessDenied", "Invalid according to Policy"), "application/xml"
        hosts.objects[key] = form["file"]  # type: ignore[assignment]
        return 200, b"", "text/plain"
    # The result host: signed URLs that expire, as OSS answers them.
    query = dict(
        pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair
    )
    if int(query.get("Expires", "0")) < time.time():
        return 403, oss_error("AccessDenied", "Request has expired."), "application/xml"
    content = hosts.objects.get(path.lstrip("/"))
    if content is None:
        return 404, oss_error("NoSuchKey", "The specified key does not exist."), "application/xml"
    return 200, content, "image/png"


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    state = Hosts()
    servers = []
    for name in ("api", "upload", "results"):
        config = uvicorn.Config(
            asgi_app(state, name), host="127.0.0.1", port=0, log_level="error", lifespan="off"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the loopback server did not start"
            time.sleep(0.01)
        state.ports[name] = server.servers[0].sockets[0].getsockname()[1]
        servers.append((server, thread))
    yield state
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
async def client(hosts: Hosts) -> Any:
    async with AsyncDashScope(
        api_key="sk-e2e-key", base_url=hosts.url("api", "/api/v1"), workspace="ws-e2e"
    ) as client:
        yield client


@pytest.mark.anyio
async def test_a_local_file_goes_up_and_the_submit_points_at_it(
    client: AsyncDashScope, hosts: Hosts, tmp_path: Path
) -> None:
    photo_a, photo_b = tmp_path / "a" / "photo.jpg", tmp_path / "b" / "photo.jpg"
    for side, photo in enumerate((photo_a, photo_b)):
        photo.parent.mkdir()
        photo.write_bytes(make_image("JPEG", 400 + side, 500))
    before = len(hosts.submits)
    await client.submit(StyleRepaint(photo_a, style=2))
    await client.submit(StyleRepaint(str(photo_b), style_ref=photo_a))

    (headers_a, body_a), (headers_b, body_b) = hosts.submits[before:]
    key_a = body_a["input"]["image_url"].removeprefix("oss://")
    key_b = body_b["input"]["image_url"].removeprefix("oss://")
    assert key_a != key_b  # same file name, two objects: nothing overwritten
    assert hosts.objects[key_a] == await anyio.Path(photo_a).read_bytes()
    assert hosts.objects[key_b] == await anyio.Path(photo_b).read_bytes()
    assert body_b["input"]["style_ref_url"] == body_a["input"]["image_url"]  # reused upload
    assert headers_a["x-dashscope-ossresourceresolve"] == "enable"
    assert headers_b["x-dashscope-ossresourceresolve"] == "enable"
    assert hosts.leaks == []


@pytest.mark.anyio
async def test_a_rejected_file_sends_no_request(
    client: AsyncDashScope, hosts: Hosts, tmp_path: Path
) -> None:
    sketch = tmp_path / "huge.png"
    sketch.write_bytes(make_image("PNG", 2100, 1500))
    seen = len(hosts.requests)
    with pytest.raises(ValidationError, match="at most 2048x2048"):
        await client.submit(SketchToImage(sketch, prompt="a towering tree"))
    assert len(hosts.requests) == seen


@pytest.mark.anyio
async def test_downloads_equal_the_stored_bytes_and_expired_urls_fail(
    client: AsyncDashScope, hosts: Hosts, tmp_path: Path
) -> None:
    image = make_image("PNG", 1536, 2048)
    hosts.objects["results/t-1/0.png"] = image
    fresh = GeneratedImage(hosts.signed_result("results/t-1/0.png", expires_at=time.time() + 3600))
    path = await client.download(fresh, tmp_path / "out" / "portrait")
    assert path.name == "portrait.png"
    assert await anyio.Path(path).read_bytes() == image

    # Expired a minute ago: within the clock allowance, so the result host is asked (403).
    stale = GeneratedImage(hosts.signed_result("results/t-1/0.png", expires_at=time.time() - 60))
    with pytest.raises(ResultExpiredError) as caught:
        await client.download(stale, tmp_path / "out" / "stale.png")
    assert caught.value.url == hosts.url("results", "/results/t-1/0.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["portrait.png"]
    assert hosts.leaks == []

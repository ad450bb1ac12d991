"""Hostile input, one row per case: every bad input is refused with a typed error that names the
field, before a single request reaches the (emulated) service, and never echoes the key.

Each row builds what a hostile or careless caller would hand the library (a request, a client,
a runner, a call) and says which error must come out and which field it must name. The test
then checks the error's type, the field, that the API key appears nowhere in the message, and
that the emulator recorded zero requests on any route.
"""

from __future__ import annotations

import base64
import os
import pathlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

import dashscope_async as ds
from dashscope_async.testing import Emulator
from tests.images_util import make_image

KEY = "sk-hostile-0123456789abcdef"


@attrs.frozen
class Context:
    emulator: Emulator
    client: ds.AsyncDashScope
    folder: Path

    def file(self, name: str, data: bytes) -> str:
        path = self.folder / name
        path.write_bytes(data)
        return str(path)


Action = Callable[[Context], Awaitable[object]]


@attrs.frozen
class Row:
    name: str
    error: type[Exception]
    field: str
    action: Action


def _cut(data: bytes, keep: int) -> bytes:
    return data[:keep]


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def _submit_repaint(ctx: Context, image: object, **options: Any) -> object:
    options.setdefault("style", ds.RepaintStyle.ANIME)
    return await ctx.client.submit(ds.StyleRepaint(image, **options))  # type: ignore[arg-type]


async def _submit_sketch(ctx: Context, sketch: object, **options: Any) -> object:
    options.setdefault("prompt", "a towering tree")
    return await ctx.client.submit(ds.SketchToImage(sketch, **options))  # type: ignore[arg-type]


def _repaint_file(name: str, data: bytes) -> Action:
    async def act(ctx: Context) -> object:
        return await _submit_repaint(ctx, ctx.file(name, data))

    return act


def _sketch_file(name: str, data: bytes) -> Action:
    async def act(ctx: Context) -> object:
        return await _submit_sketch(ctx, ctx.file(name, data))

    return act


def _repaint(image: object, **options: Any) -> Action:
    async def act(ctx: Context) -> object:
        return await _submit_repaint(ctx, image, **options)

    return act


def _sketch(sketch: object = "https://example.com/tree.png", **options: Any) -> Action:
    async def act(ctx: Context) -> object:
        return await _submit_sketch(ctx, sketch, **options)

    return act


def _client(**options: Any) -> Action:
    async def act(ctx: Context) -> object:
        options.setdefault("api_key", KEY)
        options.setdefault("base_url", ctx.emulator.base_url)
        return ds.AsyncDashScope(**options)

    return act


def _call(method: str, *args: Any, **kwargs: Any) -> Action:
    async def act(ctx: Context) -> object:
        return await getattr(ctx.client, method)(*args, **kwargs)

    return act


def _runner(**options: Any) -> Action:
    async def act(ctx: Context) -> object:
        return ds.AsyncTaskRunner(ctx.client, **options)

    return act


def _map(**options: Any) -> Action:
    async def act(ctx: Context) -> object:
        runner = ds.AsyncTaskRunner(ctx.client)
        await runner.__aenter__()
        try:  # map's own refusal, not wrapped by the runner's task group on the way out
            return runner.map([ds.StyleRepaint("https://example.com/a.png", style=2)], **options)
        finally:
            await runner.__aexit__(None, None, None)

    return act


def _limits_of(**options: Any) -> Action:
    async def act(ctx: Context) -> object:
        return ds.Limits(**options)

    return act


def _limits(**options: Any) -> Action:
    async def act(ctx: Context) -> object:
        return ds.DownloadLimits(**options)

    return act


def _untrusted(image: Callable[[Context], object]) -> Action:
    """A request submitted through a client built for untrusted input."""

    async def act(ctx: Context) -> object:
        async with ctx.emulator.client(api_key=KEY, allow_local_files=False) as client:
            request = ds.StyleRepaint(image(ctx), style=ds.RepaintStyle.ANIME)  # type: ignore[arg-type]
            return await client.submit(request)

    return act


class _BytesPath(os.PathLike[bytes]):
    def __fspath__(self) -> bytes:
        return b"/tmp/portrait.png"


def _fifo(ctx: Context) -> str:
    path = ctx.folder / "fifo.png"
    os.mkfifo(path)
    return str(path)


async def _submit_fifo(ctx: Context) -> object:
    return await _submit_repaint(ctx, _fifo(ctx))


async def _huge_sparse_file(ctx: Context) -> object:
    path = ctx.folder / "huge.png"
    with path.open("wb") as file:
        file.write(make_image("PNG", 300, 300))
        file.truncate(11 * 1024 * 1024)
    return await _submit_repaint(ctx, str(path))


async def _data_uri_too_small(ctx: Context) -> object:
    return await _submit_repaint(ctx, _data_uri(make_image("PNG", 100, 100)))


PNG = make_image("PNG", 300, 300)
JPEG = make_image("JPEG", 300, 300)
WEBP = make_image("WEBP", 300, 300)
BMP = make_image("BMP", 300, 300)

ROWS: list[Row] = [
    # --- local files and inline data ----------------------------------------------------------
    Row("a FIFO", ds.ValidationError, "image", _submit_fifo),
    Row("a character device", ds.ValidationError, "image", _repaint("/dev/zero")),
    Row("a directory", ds.ValidationError, "image", _repaint("/tmp")),
    Row("a missing file", ds.ValidationError, "image", _repaint("/no/such/portrait.png")),
    Row("a file over 10 MB", ds.ValidationError, "image", _huge_sparse_file),
    Row("a PNG cut in its image data", ds.ValidationError, "image",
        _repaint_file("cut.png", _cut(PNG, len(PNG) - 20))),
    Row("a JPEG cut before its end", ds.ValidationError, "image",
        _repaint_file("cut.jpg", _cut(JPEG, len(JPEG) - 40))),
    Row("a WEBP shorter than it says", ds.ValidationError, "sketch",
        _sketch_file("cut.webp", _cut(WEBP, len(WEBP) - 10))),
    Row("a BMP shorter than it says", ds.ValidationError, "image",
        _repaint_file("cut.bmp", _cut(BMP, len(BMP) - 100))),
    Row("a text file named .png", ds.ValidationError, "image",
        _repaint_file("notes.png", b"hello, these are not pixels")),
    Row("empty bytes", ds.ValidationError, "image", _repaint(b"")),
    Row("bytes that are no image", ds.ValidationError, "image", _repaint(b"<html></html>")),
    Row("a NUL in a path", ds.ValidationError, "image", _repaint("/tmp/a\x00.png")),
    Row("a bytes os.PathLike", ds.ValidationError, "image", _repaint(_BytesPath())),
    Row("a NUL in a file:// URL", ds.ValidationError, "image", _repaint("file:///tmp/a%00.png")),
    Row("a file:// URL of another host", ds.ValidationError, "image",
        _repaint("file://server/share/a.png")),
    Row("data: URI, invalid base64", ds.ValidationError, "image",
        _repaint("data:image/png;base64,@@not*base64@@")),
    Row("data: URI of HTML", ds.ValidationError, "image",
        _repaint(_data_uri(b"<html>hi</html>", "text/html"))),
    Row("data: URI of HTML bytes typed as PNG", ds.ValidationError, "image",
        _repaint(_data_uri(b"<html>hi</html>"))),
    Row("data: URI of a 100x100 PNG", ds.ValidationError, "image", _data_uri_too_small),
    Row("data: URI of 15 MB", ds.ValidationError, "image",
        _repaint("data:image/png;base64," + "A" * (20 * 1024 * 1024))),
    Row("data: URI without base64", ds.ValidationError, "image",
        _repaint("data:image/png,rawpixels")),
    Row("data: URI for sketch (not accepted)", ds.ValidationError, "sketch",
        _sketch(_data_uri(PNG))),
    Row("data: URI as style_ref, cut PNG", ds.ValidationError, "style_ref",
        _repaint("https://example.com/me.jpg", style=None,
                 style_ref=_data_uri(_cut(PNG, len(PNG) - 20)))),
    # --- URLs ---------------------------------------------------------------------------------
    Row("a NUL in a URL", ds.ValidationError, "image", _repaint("https://example.com/a\x00.png")),
    Row("a control character in a URL", ds.ValidationError, "image",
        _repaint("https://example.com/\x07a.png")),
    Row("port 99999", ds.ValidationError, "image", _repaint("https://example.com:99999/a.png")),
    Row("port 0", ds.ValidationError, "image", _repaint("https://example.com:0/a.png")),
    Row("an unclosed IPv6 host", ds.ValidationError, "image", _repaint("http://[::1/a.png")),
    Row("an empty oss:// URL", ds.ValidationError, "sketch", _sketch("oss://")),
    Row("a 1 MB URL", ds.ValidationError, "image",
        _repaint("https://example.com/" + "a" * (1024 * 1024))),
    Row("a URL with spaces", ds.ValidationError, "image", _repaint("https://example.com/a b.png")),
    Row("a URL with Chinese characters", ds.ValidationError, "image",
        _repaint("https://example.com/照片.png")),
    Row("a URL with no host", ds.ValidationError, "image", _repaint("https:///a.png")),
    Row("an ftp:// URL", ds.ValidationError, "image", _repaint("ftp://example.com/a.png")),
    Row("an empty string", ds.ValidationError, "image", _repaint("   ")),
    Row("an int as image", ds.InputTypeError, "image", _repaint(12345)),
    # --- prompts ------------------------------------------------------------------------------
    Row("a prompt of zero-width spaces", ds.ValidationError, "prompt",
        _sketch(prompt="\u200b\u200b\ufeff")),
    Row("a prompt with a NUL", ds.ValidationError, "prompt", _sketch(prompt="a tree\x00")),
    Row("a prompt with a lone surrogate", ds.ValidationError, "prompt",
        _sketch(prompt="a tree \udcff")),
    Row("a prompt that is a list", ds.InputTypeError, "prompt", _sketch(prompt=["a", "b"])),
    Row("an empty prompt", ds.ValidationError, "prompt", _sketch(prompt="")),
    # --- keys and workspaces ------------------------------------------------------------------
    Row("an int API key", ds.InputTypeError, "api_key", _client(api_key=12345)),
    Row("a key with a line break", ds.ValidationError, "api_key",
        _client(api_key="sk-secret\nInjected: 1")),
    Row("a key with a NUL", ds.ValidationError, "api_key", _client(api_key="sk-secret\x00")),
    Row("a non-ASCII key", ds.ValidationError, "api_key", _client(api_key="sk-sécret")),
    Row("an empty key", ds.ValidationError, "api_key", _client(api_key="  ")),
    Row("a workspace with a line break", ds.ValidationError, "workspace",
        _client(workspace="ws-1\nX-Evil: 1")),
    Row("a workspace that is an int", ds.InputTypeError, "workspace", _client(workspace=7)),
    # --- types and options --------------------------------------------------------------------
    Row("submit('url')", ds.InputTypeError, "request", _call("submit", "https://example.com/a.png")),
    Row("submit(None)", ds.InputTypeError, "request", _call("submit", None)),
    Row("prepare(a dict)", ds.InputTypeError, "request", _call("prepare", {"image": "x"})),
    Row("max_retries='2'", ds.InputTypeError, "max_retries", _client(max_retries="2")),
    Row("max_retries=-1", ds.ValidationError, "max_retries", _client(max_retries=-1)),
    Row("max_retries=True", ds.InputTypeError, "max_retries", _client(max_retries=True)),
    Row("timeout='5' on the client", ds.InputTypeError, "timeout", _client(timeout="5")),
    Row("timeout=nan on the client", ds.ValidationError, "timeout", _client(timeout=float("nan"))),
    Row("allow_local_files='no'", ds.InputTypeError, "allow_local_files",
        _client(allow_local_files="no")),
    Row("download_limits as a dict", ds.InputTypeError, "download_limits",
        _client(download_limits={"max_bytes": 1})),
    Row("wait(timeout='5')", ds.InputTypeError, "timeout", _call("wait", "task-1", timeout="5")),
    Row("wait(timeout=-1)", ds.ValidationError, "timeout", _call("wait", "task-1", timeout=-1)),
    Row("wait(poll_interval=0)", ds.ValidationError, "poll_interval",
        _call("wait", "task-1", poll_interval=0)),
    Row("get_task('')", ds.ValidationError, "task_id", _call("get_task", "")),
    Row("AsyncTaskRunner(max_pending='5')", ds.InputTypeError, "max_pending", _runner(max_pending="5")),
    Row("AsyncTaskRunner(max_pending=0)", ds.ValidationError, "max_pending",
        _runner(max_pending=0)),
    Row("AsyncTaskRunner(reconcile_grace=-1)", ds.ValidationError, "reconcile_grace",
        _runner(reconcile_grace=-1)),
    Row("AsyncTaskRunner(reconcile_grace='2')", ds.InputTypeError, "reconcile_grace",
        _runner(reconcile_grace="2")),
    Row("AsyncTaskRunner(limits='x')", ds.InputTypeError, "limits", _runner(limits="x")),
    Row("AsyncTaskRunner(poll=a dict)", ds.InputTypeError, "poll", _runner(poll={"deadline": 5})),
    Row("AsyncTaskRunner(budget=5)", ds.InputTypeError, "budget", _runner(budget=5)),
    Row("AsyncTaskRunner(download_dir=5)", ds.InputTypeError, "download_dir",
        _runner(download_dir=5)),
    Row("AsyncTaskRunner(journal=5)", ds.InputTypeError, "journal", _runner(journal=5)),
    Row("Limits(models='x')", ds.InputTypeError, "models", _limits_of(models="x")),
    Row("runner.map(max_pending='5')", ds.InputTypeError, "max_pending", _map(max_pending="5")),
    Row("DownloadLimits(max_bytes=0)", ds.ValidationError, "max_bytes", _limits(max_bytes=0)),
    Row("DownloadLimits(timeout='5')", ds.InputTypeError, "timeout", _limits(timeout="5")),
    Row("DownloadLimits(timeout=0)", ds.ValidationError, "timeout", _limits(timeout=0)),
    # --- untrusted input: allow_local_files=False ---------------------------------------------
    Row("untrusted: an existing path", ds.ValidationError, "image",
        _untrusted(lambda ctx: ctx.file("p.png", PNG))),
    Row("untrusted: a missing path", ds.ValidationError, "image",
        _untrusted(lambda ctx: "/etc/no-such-file")),
    Row("untrusted: /etc/passwd", ds.ValidationError, "image", _untrusted(lambda ctx: "/etc/passwd")),
    Row("untrusted: a file:// URL", ds.ValidationError, "image",
        _untrusted(lambda ctx: "file:///etc/passwd")),
    Row("untrusted: a pathlib.Path", ds.ValidationError, "image",
        _untrusted(lambda ctx: pathlib.Path("/etc/hosts"))),
    # --- the service's documented rules (reference/dashscope-api.md) --------------------------
    Row("repaint: 255x255, under 256 a side", ds.ValidationError, "image",
        _repaint(make_image("PNG", 255, 300))),
    Row("repaint: 5761x3240, over 5760x3240", ds.ValidationError, "image",
        _repaint(make_image("PNG", 5761, 3240))),
    Row("repaint: 3241 short side", ds.ValidationError, "image",
        _repaint(make_image("PNG", 5000, 3241))),
    Row("repaint: 2.01:1", ds.ValidationError, "image", _repaint(make_image("PNG", 603, 300))),
    Row("repaint: GIF", ds.ValidationError, "image", _repaint(make_image("GIF", 300, 300))),
    Row("repaint: TIFF (sketch only)", ds.ValidationError, "image",
        _repaint(make_image("TIFF", 300, 300))),
    Row("repaint: style_ref too small", ds.ValidationError, "style_ref",
        _repaint(PNG, style=None, style_ref=make_image("PNG", 100, 100))),
    Row("repaint: style index 10 (not offered)", ds.ValidationError, "style", _repaint(PNG, style=10)),
    Row("repaint: style -1 without style_ref", ds.ValidationError, "style", _repaint(PNG, style=-1)),
    Row("repaint: both style and style_ref", ds.ValidationError, "style_ref",
        _repaint(PNG, style_ref="https://example.com/ref.png")),
    Row("repaint: neither style nor style_ref", ds.ValidationError, "style",
        _repaint(PNG, style=None)),
    Row("repaint: style True", ds.InputTypeError, "style", _repaint(PNG, style=True)),
    Row("sketch: 2049x2049, over 2048", ds.ValidationError, "sketch",
        _sketch(make_image("PNG", 2049, 2049))),
    Row("sketch: BMP (repaint only)", ds.ValidationError, "sketch", _sketch(BMP)),
    Row("sketch: n=0", ds.ValidationError, "n", _sketch(n=0)),
    Row("sketch: n=5", ds.ValidationError, "n", _sketch(n=5)),
    Row("sketch: n='2'", ds.InputTypeError, "n", _sketch(n="2")),
    Row("sketch: sketch_weight=11", ds.ValidationError, "sketch_weight", _sketch(sketch_weight=11)),
    Row("sketch: sketch_weight=-1", ds.ValidationError, "sketch_weight", _sketch(sketch_weight=-1)),
    Row("sketch: size 1024*1024", ds.ValidationError, "size", _sketch(size="1024*1024")),
    Row("sketch: unknown style", ds.ValidationError, "style", _sketch(style="<cubism>")),
    Row("sketch: sketch_extraction='yes'", ds.InputTypeError, "sketch_extraction",
        _sketch(sketch_extraction="yes")),
    Row("sketch: a colour channel 256", ds.ValidationError, "sketch_color[0]",
        _sketch(sketch_color=[[256, 0, 0]])),
    Row("sketch: a colour that is a string", ds.InputTypeError, "sketch_color",
        _sketch(sketch_color="red")),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_bad_input_is_refused_before_any_request(row: Row, tmp_path: Path) -> None:
    emulator = Emulator(api_keys=(KEY,))
    async with emulator.client(api_key=KEY) as client:
        context = Context(emulator, client, tmp_path)
        with pytest.raises(row.error) as caught:
            await row.action(context)
    error = caught.value
    assert type(error) is row.error, repr(error)  # a wrong type and a wrong value differ
    message = str(error)
    if isinstance(error, ds.ValidationError):
        assert error.field == row.field, message
    else:
        assert message.startswith(f"{row.field}:"), message
    assert KEY not in message and "secret" not in message and "Injected" not in message
    assert error.__cause__ is None or KEY not in str(error.__cause__)
    assert sum(emulator.stats.requests.values()) == 0, emulator.stats.requests


def test_the_table_covers_every_case() -> None:
    assert len(ROWS) == len({row.name for row in ROWS})  # one row per case, no repeats
    assert len(ROWS) >= 90


@pytest.mark.anyio
async def test_untrusted_clients_say_nothing_about_whether_a_path_exists(tmp_path: Path) -> None:
    emulator = Emulator()
    existing = tmp_path / "p.png"
    existing.write_bytes(PNG)
    messages = []
    async with emulator.client(allow_local_files=False) as client:
        for path in (str(existing), str(tmp_path / "missing.png"), "/etc/passwd", str(tmp_path)):
            with pytest.raises(ds.ValidationError) as caught:
                await client.submit(ds.StyleRepaint(path, style=2))
            messages.append(caught.value.rule)
        # Bytes given in code cannot probe the file system: they still work, as do URLs.
        task = await client.submit(ds.StyleRepaint(PNG, style=2))
        assert task.task_id
    assert len(set(messages)) == 1 and "allow_local_files=False" in messages[0]
    assert client.allow_local_files is False


@pytest.mark.anyio
async def test_the_runner_honours_allow_local_files(tmp_path: Path) -> None:
    emulator = Emulator()
    local = tmp_path / "p.png"
    local.write_bytes(PNG)
    async with emulator.client(allow_local_files=False) as client:
        async with ds.AsyncTaskRunner(client) as runner:
            outcome = await runner.submit(ds.StyleRepaint(str(local), style=2)).wait()
    assert isinstance(outcome.error, ds.ValidationError)
    assert emulator.stats.requests["upload"] == 0
    assert emulator.stats.requests["submit"] == 0


@pytest.mark.anyio
async def test_a_failed_tasks_message_never_carries_the_key() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        output = {
            "task_id": "t-1",
            "task_status": "FAILED",
            "code": "InvalidParameter",
            "message": f"the request with key {KEY} was refused",
        }
        return httpx.Response(200, json={"request_id": "r-1", "output": output})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = ds.AsyncDashScope(
            api_key=KEY, base_url="https://dashscope.test/api/v1", http_client=http
        )
        with pytest.raises(ds.TaskFailedError) as caught:
            await client.wait("t-1")
    assert caught.value.code == "InvalidParameter"
    assert KEY not in str(caught.value)
    assert caught.value.task.message == "the request with key <redacted> was refused"

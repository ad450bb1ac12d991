"""Local inputs (checks, uploads, data: URIs) and result downloads, against httpx.MockTransport.

Time is a fake clock: policy expiry, pacing and retry delays are read from it and its sleeps
return at once, so nothing here sleeps for real.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import httpx
import pytest

from dashscope_async import _files
from dashscope_async._client import AsyncDashScope
from dashscope_async._config import STYLE_REPAINT
from dashscope_async._downloads import (
    DownloadLimits,
    download_image,
    result_file_name,
    save_result_images,
)
from dashscope_async._errors import (
    APIConnectionError,
    BadRequestError,
    PermissionDeniedError,
    ResponseValidationError,
    ResultExpiredError,
    ServerError,
    ValidationError,
)
from dashscope_async._files import InputPreparer, load_local_image
from dashscope_async._models import (
    GeneratedImage,
    SketchToImage,
    StyleRepaint,
    TaskResult,
    TaskStatus,
)
from dashscope_async._wire import UploadPolicyWire, converter
from tests.images_util import make_image, pillow_hidden

UPLOAD_HOST = "https://upload.test"
RESULT_HOST = "https://results.test"
KEY_PATTERN = re.compile(r"dashscope-instant/abc/2024-01-01/[0-9a-f]{32}\.[a-z]+")


# --- test doubles -----------------------------------------------------------------------------


@attrs.define
class FakeClock:
    """Time that moves only when something sleeps on it."""

    now_value: float = 1000.0
    sleeps: list[float] = attrs.field(factory=list)
    wall_start: datetime = datetime(2024, 1, 1, tzinfo=UTC)

    def now(self) -> float:
        return self.now_value

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_value += max(seconds, 0.0)
        await anyio.lowlevel.checkpoint()

    def wall(self) -> datetime:
        return self.wall_start + timedelta(seconds=self.now_value)


def policy(**changes: object) -> UploadPolicyWire:
    fields: dict[str, object] = {
        "policy": "eyJwb2xpY3kiOiJ0ZXN0In0=",
        "signature": "sig",
        "upload_dir": "dashscope-instant/abc/2024-01-01",
        "upload_host": UPLOAD_HOST,
        "expire_in_seconds": 300,
        "max_file_size_mb": 100,
        "capacity_limit_mb": 999999,
        "oss_access_key_id": "LTAI-test",
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    }
    fields.update(changes)
    return UploadPolicyWire(**fields)  # type: ignore[arg-type]


@attrs.define
class PolicySource:
    """Stands in for the client's credentialed policy fetch."""

    clock: FakeClock
    fetched: list[tuple[str, float]] = attrs.field(factory=list)
    fail_next: int = 0
    hold: anyio.Event | None = None
    called: anyio.Event = attrs.field(factory=anyio.Event)

    async def __call__(self, model: str) -> UploadPolicyWire:
        self.fetched.append((model, self.clock.now()))
        self.called.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise APIConnectionError("policy endpoint down")
        return policy()


def parse_form(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """A multipart body as {field: (filename, value)}, in order."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        fields[str(part.get_param("name", header="content-disposition"))] = (
            part.get_filename(),
            payload,
        )
    return fields


@attrs.define
class Service:
    """Upload and result hosts behind a MockTransport; records every request."""

    requests: list[httpx.Request] = attrs.field(factory=list)
    upload_answers: list[int | Exception] = attrs.field(factory=list)
    stored: dict[str, bytes] = attrs.field(factory=dict)
    #: path -> an answer, or a function making a fresh one per request (a stream reads once)
    results: dict[str, httpx.Response | Callable[[], httpx.Response]] = attrs.field(factory=dict)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if str(request.url).startswith(UPLOAD_HOST):
            answer = self.upload_answers.pop(0) if self.upload_answers else 200
            if isinstance(answer, Exception):
                raise answer
            if answer != 200:
                return httpx.Response(answer, text=oss_error("InternalError", "try again"))
            form = parse_form(request)
            key = form["key"][1].decode()
            assert key not in self.stored, "the policy forbids overwriting"
            self.stored[key] = form["file"][1]
            return httpx.Response(200)
        answer_ = self.results.get(request.url.path)
        if answer_ is None:
            return httpx.Response(404, text=oss_error("NoSuchKey", "no such key"))
        return answer_ if isinstance(answer_, httpx.Response) else answer_()

    def http(self, **options: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle), **options)  # type: ignore[arg-type]

    @property
    def uploads(self) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url).startswith(UPLOAD_HOST)]


def oss_error(code: str, message: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
        f"{code}</Code><Message>{message}</Message><RequestId>RID1</RequestId></Error>"
    )


def assert_no_credentials(requests: list[httpx.Request]) -> None:
    assert requests
    for request in requests:
        assert "authorization" not in request.headers, request.url
        assert "x-dashscope-workspace" not in request.headers, request.url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service() -> Service:
    return Service()


@pytest.fixture
def policies(clock: FakeClock) -> PolicySource:
    return PolicySource(clock)


@pytest.fixture
async def http(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    # Credentials set the ways a careless caller might: none of them may reach these hosts.
    async with service.http(
        headers={"Authorization": "Bearer sk-secret", "X-DashScope-WorkSpace": "ws-1"},
        auth=("user", "password"),
    ) as client:
        yield client


@pytest.fixture
def preparer(http: httpx.AsyncClient, policies: PolicySource, clock: FakeClock) -> InputPreparer:
    return InputPreparer(http=http, fetch_policy=policies, clock=clock)


@pytest.fixture
def portrait(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(make_image("JPEG", 400, 600))
    return path


# --- inputs -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_urls_pass_through_without_any_request(
    preparer: InputPreparer, service: Service, policies: PolicySource
) -> None:
    http_url = "https://example.com/me.jpg"
    prepared = await preparer.prepare(StyleRepaint(http_url, style_ref="oss://bucket/ref.png"))
    assert prepared.urls == {"image": http_url, "style_ref": "oss://bucket/ref.png"}
    assert prepared.oss_resolve is True
    plain = await preparer.prepare(SketchToImage(http_url, prompt="a tree"))
    assert plain.urls == {"sketch": http_url}
    assert plain.oss_resolve is False
    png = base64.b64encode(make_image("PNG", 300, 300)).decode()
    data_uri = f"data:image/png;base64,{png}"
    assert (await preparer.prepare(StyleRepaint(data_uri, style=2))).urls["image"] == data_uri
    assert service.requests == []
    assert policies.fetched == []


@pytest.mark.anyio
async def test_a_local_file_is_uploaded_with_the_policy_form(
    preparer: InputPreparer, service: Service, policies: PolicySource, portrait: Path
) -> None:
    prepared = await preparer.prepare(StyleRepaint(str(portrait), style=2))

    assert policies.fetched == [("wanx-style-repaint-v1", 1000.0)]
    (upload,) = service.uploads
    assert upload.method == "POST"
    assert str(upload.url).rstrip("/") == UPLOAD_HOST
    form = parse_form(upload)
    assert list(form) == [
        "OSSAccessKeyId",
        "Signature",
        "policy",
        "key",
        "x-oss-object-acl",
        "x-oss-forbid-overwrite",
        "success_action_status",
        "x-oss-content-type",
        "file",  # last: OSS ignores fields after the file
    ]
    values = {name: value.decode() for name, (_, value) in form.items() if name != "file"}
    key = values.pop("key")
    assert values == {
        "OSSAccessKeyId": "LTAI-test",
        "Signature": "sig",
        "policy": "eyJwb2xpY3kiOiJ0ZXN0In0=",
        "x-oss-object-acl": "private",
        "x-oss-forbid-overwrite": "true",
        "success_action_status": "200",
        "x-oss-content-type": "image/jpeg",
    }
    assert KEY_PATTERN.fullmatch(key)
    assert key.endswith(".jpg")
    assert form["file"][1] == await anyio.Path(portrait).read_bytes()
    assert prepared.urls == {"image": f"oss://{key}"}
    assert prepared.oss_resolve is True
    assert_no_credentials(service.requests)


@pytest.mark.anyio
async def test_bytes_and_path_like_inputs_are_uploaded(
    preparer: InputPreparer, service: Service, portrait: Path
) -> None:
    sketch = make_image("PNG", 512, 512)
    prepared = await preparer.prepare(SketchToImage(sketch, prompt="a tree"))
    # Bytes have no name: the key takes the extension of the content.
    assert prepared.urls["sketch"].endswith(".png")
    assert service.stored[prepared.urls["sketch"].removeprefix("oss://")] == sketch

    by_path = await preparer.prepare(StyleRepaint(portrait, style=2))
    stored = service.stored[by_path.urls["image"].removeprefix("oss://")]
    assert stored == await anyio.Path(portrait).read_bytes()


def test_file_urls_and_home_relative_paths_are_local_files(
    portrait: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = STYLE_REPAINT.image_rules
    image = load_local_image("image", portrait.as_uri(), rules, model="m")
    assert image.content == portrait.read_bytes()
    assert (image.format, image.suffix) == ("JPEG", ".jpg")
    monkeypatch.setenv("HOME", str(portrait.parent))
    assert load_local_image("image", "~/photo.jpg", rules, model="m").digest == image.digest
    with pytest.raises(ValidationError, match="another host"):
        load_local_image("image", "file://server/share/photo.jpg", rules, model="m")


@pytest.mark.anyio
async def test_two_files_with_the_same_name_get_different_keys(
    preparer: InputPreparer, service: Service, tmp_path: Path
) -> None:
    first, second = tmp_path / "a" / "photo.jpg", tmp_path / "b" / "photo.jpg"
    for folder, path in enumerate((first, second)):
        path.parent.mkdir()
        path.write_bytes(make_image("JPEG", 300 + folder, 300))
    one = await preparer.prepare(StyleRepaint(str(first), style=1))
    two = await preparer.prepare(StyleRepaint(str(second), style=1))
    assert one.urls["image"] != two.urls["image"]
    assert len(service.stored) == 2


@pytest.mark.anyio
async def test_the_same_bytes_are_uploaded_once_per_model(
    preparer: InputPreparer,
    service: Service,
    policies: PolicySource,
    portrait: Path,
    tmp_path: Path,
) -> None:
    style = tmp_path / "style.png"
    style.write_bytes(make_image("PNG", 512, 512))
    urls = [
        (await preparer.prepare(StyleRepaint(str(portrait), style_ref=str(style)))).urls
        for _ in range(3)
    ]
    assert {u["style_ref"] for u in urls} == {urls[0]["style_ref"]}
    assert {u["image"] for u in urls} == {urls[0]["image"]}
    assert len(service.uploads) == 2
    # Another model gets its own upload: the service binds files to a model.
    sketch = await preparer.prepare(SketchToImage(str(style), prompt="tree"))
    assert sketch.urls["sketch"] != urls[0]["style_ref"]
    assert len(service.uploads) == 3
    assert [model for model, _ in policies.fetched] == [
        "wanx-style-repaint-v1",
        "wanx-sketch-to-image-lite",
    ]


@pytest.mark.anyio
async def test_reuse_can_be_turned_off_and_expires(
    http: httpx.AsyncClient,
    policies: PolicySource,
    clock: FakeClock,
    service: Service,
    portrait: Path,
) -> None:
    fresh = InputPreparer(http, policies, clock, reuse_uploads=False)
    first = await fresh.prepare(StyleRepaint(str(portrait), style=1))
    second = await fresh.prepare(StyleRepaint(str(portrait), style=1))
    assert first.urls != second.urls
    reusing = InputPreparer(http, policies, clock)
    third = await reusing.prepare(StyleRepaint(str(portrait), style=1))
    clock.now_value += _files.UPLOAD_REUSE_SECONDS + 1
    fourth = await reusing.prepare(StyleRepaint(str(portrait), style=1))
    assert third.urls != fourth.urls
    assert len(service.uploads) == 4


# --- checks before anything is sent -----------------------------------------------------------


@pytest.fixture(params=["pillow", "builtin"])
def header_reader(request: pytest.FixtureRequest) -> str:
    return str(request.param)


INVALID = [
    # (id, request factory taking the file path, file content, expected field, fragment)
    ("repaint-too-small", "image", ("PNG", 200, 300), "at least 256"),
    ("repaint-too-large", "image", ("PNG", 5800, 3000), "at most 5760x3240"),
    ("repaint-aspect", "image", ("PNG", 1100, 512), "2 times"),
    ("repaint-format", "image", ("TIFF", 300, 300), "is TIFF"),
    ("style-ref-too-small", "style_ref", ("JPEG", 300, 100), "at least 256"),
    ("sketch-too-large", "sketch", ("PNG", 2100, 2048), "at most 2048x2048"),
    ("sketch-format", "sketch", ("BMP", 300, 300), "is BMP"),
    ("sketch-aspect", "sketch", ("PNG", 256, 520), "2 times"),
]


def request_with(field: str, path: str, good: str) -> StyleRepaint | SketchToImage:
    if field == "sketch":
        return SketchToImage(path, prompt="a tree")
    if field == "style_ref":
        return StyleRepaint(good, style_ref=path)
    return StyleRepaint(path, style_ref=good)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("field", "image", "fragment"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID]
)
async def test_a_rejected_file_sends_nothing(
    preparer: InputPreparer,
    service: Service,
    policies: PolicySource,
    tmp_path: Path,
    portrait: Path,
    field: str,
    image: tuple[str, int, int],
    fragment: str,
    header_reader: str,
) -> None:
    path = tmp_path / "bad-input.img"
    path.write_bytes(make_image(*image))
    request = request_with(field, str(path), str(portrait))
    with pytest.raises(ValidationError) as caught:
        if header_reader == "builtin":
            with pillow_hidden():
                await preparer.prepare(request)
        else:
            await preparer.prepare(request)
    assert caught.value.field == field
    assert str(path) in caught.value.rule
    assert fragment in caught.value.rule
    # Nothing left the process: no policy fetch (a credentialed API call), no upload.
    assert service.requests == []
    assert policies.fetched == []


@pytest.mark.anyio
async def test_missing_unreadable_oversized_and_directory_inputs(
    preparer: InputPreparer,
    service: Service,
    policies: PolicySource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ValidationError, match=r"nope\.jpg: no such file"):
        await preparer.prepare(StyleRepaint(str(missing), style=1))
    with pytest.raises(ValidationError, match="is a directory"):
        await preparer.prepare(StyleRepaint(str(tmp_path), style=1))

    huge = tmp_path / "huge.png"
    with huge.open("wb") as file:
        file.truncate(11 * 1024 * 1024)
    read: list[Path] = []
    original_read = Path.read_bytes

    def spy_read_bytes(self: Path) -> bytes:
        read.append(self)
        return original_read(self)

    monkeypatch.setattr(Path, "read_bytes", spy_read_bytes)
    with pytest.raises(ValidationError, match=r"huge\.png: is 11,534,336 bytes"):
        await preparer.prepare(SketchToImage(str(huge), prompt="tree"))
    assert read == []  # refused from its size alone

    locked = tmp_path / "locked.png"
    locked.write_bytes(make_image("PNG", 300, 300))

    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything: take the permission away another way
        real_open = os.open

        def denied(path: Any, flags: int, *args: Any) -> int:
            if os.fspath(path) == os.fspath(locked):
                raise PermissionError(13, "Permission denied")
            return real_open(path, flags, *args)

        monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ValidationError, match=r"locked\.png: cannot be read") as caught:
        await preparer.prepare(SketchToImage(str(locked), prompt="tree"))
    assert caught.value.field == "sketch"
    assert service.requests == []
    assert policies.fetched == []


@pytest.mark.anyio
async def test_every_input_is_checked_before_the_first_upload(
    preparer: InputPreparer,
    service: Service,
    policies: PolicySource,
    portrait: Path,
    tmp_path: Path,
) -> None:
    bad_ref = tmp_path / "ref.gif"
    bad_ref.write_bytes(make_image("GIF", 300, 300))
    with pytest.raises(ValidationError, match="is GIF") as caught:
        await preparer.prepare(StyleRepaint(str(portrait), style_ref=str(bad_ref)))
    assert caught.value.field == "style_ref"
    assert service.requests == []  # the good portrait was not uploaded either
    assert policies.fetched == []


@pytest.mark.anyio
async def test_files_are_read_in_a_worker_thread(
    preparer: InputPreparer, portrait: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    readers: list[threading.Thread] = []
    original = _files.load_local_image

    def spy(*args: object, **kwargs: object) -> _files.LocalImage:
        readers.append(threading.current_thread())
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_files, "load_local_image", spy)
    await preparer.prepare(StyleRepaint(str(portrait), style=1))
    assert readers
    assert threading.main_thread() not in readers


# --- policies ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_policy_is_reused_until_shortly_before_it_expires(
    preparer: InputPreparer, policies: PolicySource, clock: FakeClock, tmp_path: Path
) -> None:
    async def upload_new_file() -> None:
        path = tmp_path / f"{len(os.listdir(tmp_path))}.png"
        path.write_bytes(make_image("PNG", 300 + len(os.listdir(tmp_path)), 300))
        await preparer.prepare(SketchToImage(str(path), prompt="tree"))

    await upload_new_file()
    clock.now_value += 300 - _files.POLICY_REFRESH_MARGIN - 1
    await upload_new_file()
    assert len(policies.fetched) == 1
    clock.now_value += 2  # now inside the refresh margin
    await upload_new_file()
    assert [at for _, at in policies.fetched] == [1000.0, 1271.0]


@pytest.mark.anyio
async def test_concurrent_callers_share_one_policy_fetch(
    preparer: InputPreparer, policies: PolicySource, service: Service
) -> None:
    policies.hold = anyio.Event()
    images = [make_image("PNG", 300 + i, 300) for i in range(8)]
    async with anyio.create_task_group() as tg:
        for image in images:
            tg.start_soon(preparer.prepare, SketchToImage(image, prompt="tree"))
        await policies.called.wait()
        await anyio.wait_all_tasks_blocked()
        policies.hold.set()
    assert len(policies.fetched) == 1
    assert len(service.uploads) == 8


@pytest.mark.anyio
async def test_a_failed_policy_fetch_is_not_cached(
    preparer: InputPreparer, policies: PolicySource, service: Service, portrait: Path
) -> None:
    policies.fail_next = 1
    with pytest.raises(APIConnectionError):
        await preparer.prepare(StyleRepaint(str(portrait), style=1))
    assert service.requests == []
    await preparer.prepare(StyleRepaint(str(portrait), style=1))
    assert len(policies.fetched) == 2
    assert len(service.uploads) == 1


@pytest.mark.anyio
async def test_shared_cache_waiters_take_over_when_the_producer_fails() -> None:
    cache: _files._SharedCache[str, int] = _files._SharedCache(FakeClock())
    release = anyio.Event()
    calls: list[int] = []
    got: list[int] = []

    async def produce() -> tuple[int, float]:
        calls.append(1)
        if len(calls) == 1:
            await release.wait()
            raise RuntimeError("first producer fails")
        return 42, 10.0

    async def first() -> None:
        with pytest.raises(RuntimeError):
            await cache.get("k", produce)

    async def waiter() -> None:
        got.append(await cache.get("k", produce))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        for _ in range(5):
            tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert len(calls) == 1  # the waiters wait; they do not produce
        release.set()
    assert got == [42] * 5
    assert len(calls) == 2


@pytest.mark.anyio
async def test_the_pacer_spaces_policy_fetches_at_the_rate() -> None:
    clock = FakeClock()
    pacer = _files._Pacer(100.0, clock)
    times = []
    for _ in range(5):
        await pacer.wait_turn()
        times.append(clock.now())
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
    assert gaps == [0.01] * 4
    clock.now_value += 5  # idle time does not bank a burst
    await pacer.wait_turn()
    await pacer.wait_turn()
    assert round(clock.now() - times[-1], 6) == 5.01


@pytest.mark.anyio
async def test_policy_fetches_are_paced(
    http: httpx.AsyncClient, clock: FakeClock, policies: PolicySource, tmp_path: Path
) -> None:
    preparer = InputPreparer(http, policies, clock, policy_rate=2.0)
    for i in range(3):
        preparer._policies.forget("wanx-sketch-to-image-lite")
        await preparer.prepare(SketchToImage(make_image("PNG", 300 + i, 300), prompt="t"))
    assert [at for _, at in policies.fetched] == [1000.0, 1000.5, 1001.0]


# --- uploads that fail ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "first_failure",
    [503, 500, httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
    ids=["503", "500", "connect", "timeout"],
)
async def test_an_upload_is_retried_under_a_new_key(
    preparer: InputPreparer,
    service: Service,
    clock: FakeClock,
    portrait: Path,
    first_failure: int | Exception,
) -> None:
    service.upload_answers = [first_failure, 200]
    prepared = await preparer.prepare(StyleRepaint(str(portrait), style=1))
    first, second = (parse_form(r)["key"][1].decode() for r in service.uploads)
    assert first != second  # the first may have landed, and overwriting is forbidden
    assert prepared.urls["image"] == f"oss://{second}"
    assert len(clock.sleeps) == 1
    assert 0.375 <= clock.sleeps[0] <= 0.5


@pytest.mark.anyio
async def test_upload_retries_run_out(
    preparer: InputPreparer, service: Service, clock: FakeClock, portrait: Path
) -> None:
    service.upload_answers = [503] * 10
    with pytest.raises(ServerError) as caught:
        await preparer.prepare(StyleRepaint(str(portrait), style=1))
    assert caught.value.code == "InternalError"
    assert caught.value.request_id == "RID1"
    assert len(service.uploads) == preparer.upload_retries + 1
    assert len(clock.sleeps) == preparer.upload_retries
    assert clock.sleeps == sorted(clock.sleeps)  # backing off


@pytest.mark.anyio
async def test_a_refused_upload_is_not_retried(
    preparer: InputPreparer, service: Service, portrait: Path
) -> None:
    service.upload_answers = [400]
    with pytest.raises(BadRequestError, match="upload host"):
        await preparer.prepare(StyleRepaint(str(portrait), style=1))
    assert len(service.uploads) == 1


@pytest.mark.anyio
async def test_a_403_refreshes_the_policy_once(
    preparer: InputPreparer, service: Service, policies: PolicySource, portrait: Path
) -> None:
    service.upload_answers = [403, 200]
    await preparer.prepare(StyleRepaint(str(portrait), style=1))
    assert len(policies.fetched) == 2
    service.upload_answers = [403, 403]
    with pytest.raises(PermissionDeniedError):
        await preparer.prepare(SketchToImage(make_image("PNG", 300, 300), prompt="t"))


@pytest.mark.anyio
async def test_a_file_larger_than_the_policy_allows_is_refused(
    http: httpx.AsyncClient, clock: FakeClock, service: Service
) -> None:
    async def tiny_policy(model: str) -> UploadPolicyWire:
        return policy(max_file_size_mb=0)

    preparer = InputPreparer(http, tiny_policy, clock)
    with pytest.raises(ValidationError, match="upload policy"):
        await preparer.prepare(SketchToImage(make_image("PNG", 300, 300), prompt="t"))
    assert service.requests == []


# --- data: URIs -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_small_repaint_files_can_go_inline_as_data_uris(
    http: httpx.AsyncClient, clock: FakeClock, policies: PolicySource, service: Service
) -> None:
    small = make_image("PNG", 300, 300)
    preparer = InputPreparer(http, policies, clock, inline_data_uri_max_bytes=len(small))
    prepared = await preparer.prepare(StyleRepaint(small, style=1))
    import base64

    assert prepared.urls["image"] == "data:image/png;base64," + base64.b64encode(small).decode()
    assert prepared.oss_resolve is False
    assert service.requests == []
    assert policies.fetched == []

    larger = make_image("PNG", 301, 300) + b"\x00" * len(small)
    assert (
        (await preparer.prepare(StyleRepaint(larger, style=1))).urls["image"].startswith("oss://")
    )
    # Sketch-to-image does not take data: URIs, whatever the option says.
    sketch = await preparer.prepare(SketchToImage(small, prompt="t"))
    assert sketch.urls["sketch"].startswith("oss://")


# --- downloads --------------------------------------------------------------------------------

PNG = make_image("PNG", 64, 48)
JPEG = make_image("JPEG", 64, 48)


def result_url(path: str, **query: str) -> str:
    url = httpx.URL(RESULT_HOST + path, params={"Expires": "9999999999", "Signature": "s", **query})
    return str(url)


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.anyio
async def test_download_saves_the_bytes_and_sends_no_credentials(
    http: httpx.AsyncClient, service: Service, tmp_path: Path
) -> None:
    service.results["/1/abc.png"] = httpx.Response(200, content=PNG)
    dest = tmp_path / "out" / "portrait.png"
    path = await download_image(http, GeneratedImage(result_url("/1/abc.png")), dest)
    assert path == dest
    assert path.read_bytes() == PNG
    assert listing(dest.parent) == ["portrait.png"]  # no temporary file left
    assert_no_credentials(service.requests)


@pytest.mark.anyio
async def test_download_names_files_from_the_content(
    http: httpx.AsyncClient, service: Service, tmp_path: Path
) -> None:
    # The URL says .png; the content is a JPEG: the content decides.
    service.results["/1/abc.png"] = httpx.Response(200, content=JPEG)
    url = result_url("/1/abc.png")
    assert await download_image(http, url, tmp_path / "portrait") == tmp_path / "portrait.jpg"
    into_folder = await download_image(http, url, tmp_path)
    assert into_folder.parent == tmp_path
    assert re.fullmatch(r"abc-[0-9a-f]{10}\.jpg", into_folder.name)
    new_dir = tmp_path / "new"
    assert await download_image(http, url, f"{new_dir}/") == new_dir / into_folder.name
    assert listing(tmp_path) == sorted([into_folder.name, "new", "portrait.jpg"])


@pytest.mark.anyio
async def test_download_retries_5xx_and_dropped_connections(
    http: httpx.AsyncClient, service: Service, clock: FakeClock, tmp_path: Path
) -> None:
    answers: list[httpx.Response | Exception] = [
        httpx.Response(503, text=oss_error("ServiceUnavailable", "busy")),
        httpx.ConnectError("reset"),
        httpx.Response(200, stream=DroppingStream(PNG[:20])),
        httpx.Response(200, content=PNG),
    ]

    async def flaky(request: httpx.Request) -> httpx.Response:
        service.requests.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with httpx.AsyncClient(transport=httpx.MockTransport(flaky)) as client:
        path = await download_image(
            client,
            result_url("/x.png"),
            tmp_path / "x.png",
            clock=clock,
            limits=DownloadLimits(retries=3),
        )
    assert path.read_bytes() == PNG
    assert len(service.requests) == 4
    assert len(clock.sleeps) == 3
    assert listing(tmp_path) == ["x.png"]


class DroppingStream(httpx.AsyncByteStream):
    """A body that stops half way, as a dropped connection does."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        raise httpx.ReadError("connection reset mid-body")


@pytest.mark.anyio
async def test_a_failed_download_never_replaces_the_old_file(
    http: httpx.AsyncClient, service: Service, clock: FakeClock, tmp_path: Path
) -> None:
    dest = tmp_path / "x.png"
    dest.write_bytes(b"the old file")
    service.results["/x.png"] = lambda: httpx.Response(200, stream=DroppingStream(PNG[:20]))
    with pytest.raises(APIConnectionError):
        await download_image(
            http, result_url("/x.png"), dest, clock=clock, limits=DownloadLimits(retries=2)
        )
    assert dest.read_bytes() == b"the old file"
    assert listing(tmp_path) == ["x.png"]
    assert len(service.requests) == 3

    service.results["/x.png"] = httpx.Response(500)
    with pytest.raises(ServerError):
        await download_image(
            http, result_url("/x.png"), dest, clock=clock, limits=DownloadLimits(retries=0)
        )
    assert listing(tmp_path) == ["x.png"]


@pytest.mark.anyio
async def test_the_final_name_only_ever_holds_a_whole_file(
    http: httpx.AsyncClient, service: Service, tmp_path: Path
) -> None:
    dest = tmp_path / "x.png"
    seen_during: list[bytes | None] = []

    class WatchedStream(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for start in range(0, len(PNG), 64):
                yield PNG[start : start + 64]
                # Mid-download: the final name does not exist yet; a temporary file does.
                seen_during.append(dest.read_bytes() if dest.exists() else None)

    service.results["/x.png"] = httpx.Response(200, stream=WatchedStream())
    await download_image(http, result_url("/x.png"), dest)
    assert seen_during
    assert set(seen_during) == {None}
    assert dest.read_bytes() == PNG


@pytest.mark.anyio
async def test_a_cancelled_download_leaves_nothing_behind(
    http: httpx.AsyncClient, service: Service, tmp_path: Path
) -> None:
    started = anyio.Event()

    class StallingStream(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield PNG[:30]
            started.set()
            await anyio.sleep_forever()
            yield b""  # pragma: no cover

    service.results["/x.png"] = httpx.Response(200, stream=StallingStream())
    async with anyio.create_task_group() as tg:
        tg.start_soon(download_image, http, result_url("/x.png"), tmp_path / "x.png")
        await started.wait()
        await anyio.wait_all_tasks_blocked()
        assert any(name.endswith(".part") for name in listing(tmp_path))
        tg.cancel_scope.cancel()
    assert listing(tmp_path) == []


@pytest.mark.anyio
async def test_content_that_is_not_an_image_is_refused(
    http: httpx.AsyncClient, service: Service, tmp_path: Path
) -> None:
    service.results["/x.png"] = httpx.Response(200, text="<html>maintenance</html>")
    with pytest.raises(ResponseValidationError, match="not an image"):
        await download_image(http, result_url("/x.png"), tmp_path / "x.png")
    assert listing(tmp_path) == []
    assert len(service.requests) == 1  # not retried: it would send the same thing


@pytest.mark.anyio
async def test_a_403_from_the_result_host_is_an_expired_result(
    http: httpx.AsyncClient, service: Service, tmp_path: Path
) -> None:
    service.results["/1/abc.png"] = httpx.Response(
        403, text=oss_error("AccessDenied", "Request has expired.")
    )
    with pytest.raises(ResultExpiredError) as caught:
        await download_image(http, result_url("/1/abc.png"), tmp_path / "x.png")
    assert caught.value.url == RESULT_HOST + "/1/abc.png"  # no signature in the error
    assert "Signature" not in str(caught.value)
    assert len(service.requests) == 1
    assert listing(tmp_path) == []


@pytest.mark.anyio
async def test_a_url_past_its_life_is_expired_without_a_request(
    http: httpx.AsyncClient, service: Service, clock: FakeClock, tmp_path: Path
) -> None:
    signed_at = clock.wall() - timedelta(hours=25)
    v1 = result_url("/a.png", Expires=str(int((signed_at + timedelta(hours=24)).timestamp())))
    v4 = str(
        httpx.URL(
            RESULT_HOST + "/b.png",
            params={"x-oss-date": signed_at.strftime("%Y%m%dT%H%M%SZ"), "x-oss-expires": "86400"},
        )
    )
    for url in (v1, v4):
        with pytest.raises(ResultExpiredError, match="24 hours"):
            await download_image(http, url, tmp_path / "x.png", clock=clock)
    assert service.requests == []
    # A 404 for a URL past its own expiry (but within the clock allowance) is expiry too.
    recent = result_url(
        "/c.png", Expires=str(int((clock.wall() - timedelta(seconds=5)).timestamp()))
    )
    with pytest.raises(ResultExpiredError):
        await download_image(http, recent, tmp_path / "x.png", clock=clock)
    assert len(service.requests) == 1


@pytest.mark.anyio
async def test_download_verification_works_without_pillow(
    http: httpx.AsyncClient, service: Service, tmp_path: Path
) -> None:
    service.results["/x"] = httpx.Response(200, content=JPEG)
    with pillow_hidden():
        path = await download_image(http, result_url("/x"), tmp_path / "x")
    assert path.name == "x.jpg"


def test_result_file_names() -> None:
    assert result_file_name(7, 0, "png") == "000007-0.png"
    assert result_file_name(123456789, 3, ".jpg") == "123456789-3.jpg"
    # An unkeyed job carries its request's fingerprint: job 7 of two batches, two names.
    assert result_file_name(7, 0, "png", fingerprint="9c41d07e3a" + "5" * 54) == (
        "000007-9c41d07e3a-0.png"
    )
    assert result_file_name(7, 0, "png", fingerprint="0" * 64) != result_file_name(
        7, 0, "png", fingerprint="1" * 64
    )
    assert re.fullmatch(
        r"portraits_alice-[0-9a-f]{10}-1\.jpg", result_file_name("portraits/alice", 1, ".jpg")
    )
    assert re.fullmatch(
        r"etc_passwd-[0-9a-f]{10}-0\.png", result_file_name("../../etc/passwd", 0, "png")
    )
    assert re.fullmatch(r"job-[0-9a-f]{10}-0", result_file_name("..", 0, ""))


@pytest.mark.anyio
async def test_save_result_images_names_every_image(
    http: httpx.AsyncClient, service: Service, tmp_path: Path
) -> None:
    service.results["/r0.png"] = httpx.Response(200, content=PNG)
    service.results["/r2.png"] = httpx.Response(200, content=JPEG)
    result = TaskResult(
        task_id="t-1",
        status=TaskStatus.SUCCEEDED,
        images=(
            GeneratedImage(result_url("/r0.png"), index=0),
            GeneratedImage(result_url("/r2.png"), index=2),
        ),
    )
    by_index = await save_result_images(http, result, tmp_path / "out", 7)
    assert [p.name for p in by_index] == ["000007-0.png", "000007-2.jpg"]
    by_key = await save_result_images(http, result, tmp_path / "out", "job.v2")
    stem = result_file_name("job.v2", 0, "").removesuffix("-0")
    assert [p.name for p in by_key] == [f"{stem}-0.png", f"{stem}-2.jpg"]
    again = await save_result_images(http, result, tmp_path / "out", 7)
    assert again == by_index  # deterministic: a rerun overwrites
    assert len(listing(tmp_path / "out")) == 4
    assert by_index[1].read_bytes() == JPEG
    assert_no_credentials(service.requests)


# --- through the client -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_client_submits_an_uploaded_file_as_oss_with_the_resolve_header(
    service: Service, portrait: Path, tmp_path: Path
) -> None:
    api_requests: list[httpx.Request] = []

    async def route(request: httpx.Request) -> httpx.Response:
        if request.url.host != "api.test":
            return await service.handle(request)
        await request.aread()
        api_requests.append(request)
        if request.url.path == "/api/v1/uploads":
            data = _wire_policy()
            return httpx.Response(200, json={"request_id": "r1", "data": data})
        return httpx.Response(
            200, json={"request_id": "r2", "output": {"task_id": "t-1", "task_status": "PENDING"}}
        )

    service.results["/out/t-1.png"] = httpx.Response(200, content=PNG)
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(route)) as http,
        AsyncDashScope(
            api_key="sk-test-secret-key",
            base_url="https://api.test/api/v1",
            workspace="ws-1",
            http_client=http,
        ) as client,
    ):
        task = await client.submit(StyleRepaint(str(portrait), style=2))
        saved = await client.download(GeneratedImage(result_url("/out/t-1.png")), tmp_path / "r")

    assert task.task_id == "t-1"
    policy_call, submit = api_requests
    assert policy_call.url.params["model"] == "wanx-style-repaint-v1"
    assert policy_call.headers["authorization"] == "Bearer sk-test-secret-key"
    (key,) = service.stored
    assert json.loads(submit.content)["input"]["image_url"] == f"oss://{key}"
    assert submit.headers["x-dashscope-ossresourceresolve"] == "enable"
    assert await anyio.Path(saved).read_bytes() == PNG
    assert_no_credentials(service.requests)


def _wire_policy() -> dict[str, object]:
    return dict(converter.unstructure(policy()))

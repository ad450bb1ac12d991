"""AsyncDashScope against a scripted mock service: methods, headers, errors, submit rules, wait."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

import dashscope_async as ds
from dashscope_async._client import URL_CACHE_SIZE, AsyncDashScope, list_windows
from dashscope_async._poll_schedule import optimal_schedule
from tests.mock_service import (
    API_KEY,
    BASE_URL,
    WALL_START,
    RecordingClock,
    ScriptedService,
    error_response,
    json_response,
    mock_client,
    submit_ok,
    task_answer,
)

pytestmark = pytest.mark.anyio

REPAINT = ds.StyleRepaint("https://example.com/me.jpg", style=ds.RepaintStyle.ANIME)
SKETCH = ds.SketchToImage("https://example.com/tree.png", prompt="a towering tree", n=2)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DASHSCOPE_API_KEY", "DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)


# --- construction -------------------------------------------------------------------------------


async def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ds.ValidationError, match="DASHSCOPE_API_KEY") as caught:
        AsyncDashScope()
    assert caught.value.field == "api_key"


async def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", API_KEY)
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "https://example.test/api/v1/")
    monkeypatch.setenv("DASHSCOPE_WORKSPACE", "ws-1")
    async with AsyncDashScope() as client:
        assert client.base_url == "https://example.test/api/v1"
        assert client.workspace == "ws-1"


async def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-from-env-000000")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "https://env.test/api/v1")
    monkeypatch.setenv("DASHSCOPE_WORKSPACE", "ws-env")
    service = ScriptedService([task_answer("RUNNING")])
    async with mock_client(service, base_url="https://arg.test/api/v1", workspace="ws-arg") as c:
        await c.get_task("task-1")
    sent = service.requests[0]
    assert sent.url.host == "arg.test"
    assert sent.headers["X-DashScope-WorkSpace"] == "ws-arg"
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"


async def test_default_base_url_is_beijing() -> None:
    async with AsyncDashScope(API_KEY) as client:
        assert client.base_url == "https://dashscope.aliyuncs.com/api/v1"
        assert client.workspace is None


@pytest.mark.parametrize(
    "url",
    ["http://dashscope.aliyuncs.com/api/v1", "http://10.0.0.5:8000/api/v1", "http://example.test"],
)
async def test_plain_http_is_refused_off_loopback(url: str) -> None:
    with pytest.raises(ds.ValidationError, match="clear text") as caught:
        AsyncDashScope(API_KEY, base_url=url)
    assert caught.value.field == "base_url"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/api/v1", "http://localhost:9/api/v1", "http://[::1]:80/api/v1"]
)
async def test_plain_http_is_allowed_on_loopback(url: str) -> None:
    async with AsyncDashScope(API_KEY, base_url=url) as client:
        assert client.base_url == url


async def test_plain_http_off_loopback_needs_an_explicit_opt_in() -> None:
    async with AsyncDashScope(
        API_KEY, base_url="http://10.0.0.5/api/v1", allow_insecure_http=True
    ) as client:
        assert client.base_url == "http://10.0.0.5/api/v1"


@pytest.mark.parametrize("url", ["ftp://x.test/api", "not a url", "https://x.test/api?x=1"])
async def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ds.ValidationError):
        AsyncDashScope(API_KEY, base_url=url)


async def test_the_key_is_never_shown() -> None:
    async with AsyncDashScope(API_KEY, workspace="ws-1") as client:
        assert API_KEY not in repr(client)
        assert API_KEY not in str(client)
        assert API_KEY not in repr(vars(client))
        assert "Authorization" not in client.http.headers
        assert API_KEY not in str(client.http.headers)


# --- methods ------------------------------------------------------------------------------------


async def test_submit_repaint_sends_the_documented_request() -> None:
    service = ScriptedService([submit_ok("task-9")])
    async with mock_client(service) as client:
        task = await client.submit(REPAINT)
    assert task == ds.Task(
        task_id="task-9",
        status=ds.TaskStatus.PENDING,
        model="wanx-style-repaint-v1",
        request_id="req-submit",
    )
    (sent,) = service.requests
    assert sent.method == "POST"
    assert str(sent.url) == BASE_URL + "/services/aigc/image-generation/generation"
    assert sent.headers["X-DashScope-Async"] == "enable"
    assert sent.headers["Content-Type"] == "application/json"
    assert "X-DashScope-OssResourceResolve" not in sent.headers
    assert sent.headers["User-Agent"].startswith(f"dashscope-async/{ds.__version__} python/")
    assert " httpx/" in sent.headers["User-Agent"]
    assert json.loads(sent.content) == {
        "model": "wanx-style-repaint-v1",
        "input": {"image_url": "https://example.com/me.jpg", "style_index": 2},
    }


async def test_submit_sketch_always_sends_n() -> None:
    service = ScriptedService([submit_ok()])
    async with mock_client(service) as client:
        task = await client.submit(SKETCH)
    assert task.model == "wanx-sketch-to-image-lite"
    (sent,) = service.requests
    assert sent.url.path == "/api/v1/services/aigc/image2image/image-synthesis"
    body = json.loads(sent.content)
    assert body["parameters"]["n"] == 2
    assert body["input"] == {
        "sketch_image_url": "https://example.com/tree.png",
        "prompt": "a towering tree",
    }


async def test_submit_of_oss_urls_asks_the_service_to_resolve_them() -> None:
    service = ScriptedService([submit_ok()])
    request = ds.StyleRepaint("oss://dashscope-instant/abc/me.png", style=3)
    async with mock_client(service) as client:
        await client.submit(request)
    assert service.requests[0].headers["X-DashScope-OssResourceResolve"] == "enable"


async def test_get_task_parses_a_success() -> None:
    service = ScriptedService(
        [
            task_answer(
                "SUCCEEDED",
                results=[{"url": "https://result.test/a.png"}, {"code": "X", "message": "bad"}],
                submit_time="2024-01-01 08:00:00.000",
            )
        ]
    )
    async with mock_client(service) as client:
        info = await client.get_task("task-1")
    assert isinstance(info, ds.TaskResult)
    assert info.images == (ds.GeneratedImage(url="https://result.test/a.png", index=0),)
    assert info.failures == (ds.ImageFailure(index=1, code="X", message="bad"),)
    assert info.submit_time == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    (sent,) = service.requests
    assert sent.method == "GET"
    assert str(sent.url) == BASE_URL + "/tasks/task-1"


async def test_get_task_without_retry_sends_one_request() -> None:
    # The runner meters every poll itself: one call must be one request.
    service = ScriptedService([error_response(503, "ServiceUnavailable"), task_answer("RUNNING")])
    async with mock_client(service) as client:
        with pytest.raises(ds.ServerError):
            await client.get_task("task-1", retry=False)
        assert len(service.requests) == 1
        assert (await client.get_task("task-1")).status is ds.TaskStatus.RUNNING


async def test_get_task_quotes_the_id() -> None:
    service = ScriptedService([task_answer("RUNNING", task_id="a/b?c")])
    async with mock_client(service) as client:
        await client.get_task("a/b?c")
    assert service.requests[0].url.raw_path == b"/api/v1/tasks/a%2Fb%3Fc"


@pytest.mark.parametrize("task_id", ["", "   "])
async def test_get_task_refuses_an_empty_id(task_id: str) -> None:
    async with mock_client(ScriptedService()) as client:
        with pytest.raises(ds.ValidationError, match="task_id"):
            await client.get_task(task_id)


async def test_cancel_task_posts_to_cancel() -> None:
    service = ScriptedService([json_response(200, {"request_id": "r"})])
    async with mock_client(service) as client:
        await client.cancel_task("task-1")
    (sent,) = service.requests
    assert sent.method == "POST"
    assert sent.url.path == "/api/v1/tasks/task-1/cancel"


async def test_cancel_of_a_running_task_is_a_bad_request() -> None:
    service = ScriptedService(
        [error_response(400, "UnsupportedOperation", "Failed to cancel the task")]
    )
    async with mock_client(service) as client:
        with pytest.raises(ds.BadRequestError) as caught:
            await client.cancel_task("task-1")
    assert caught.value.code == "UnsupportedOperation"
    assert len(service.requests) == 1


async def test_upload_policy_is_fetched_from_the_api_host() -> None:
    policy = {
        "policy": "p",
        "signature": "s",
        "upload_dir": "dir",
        "upload_host": "https://upload.test",
        "expire_in_seconds": 300,
        "max_file_size_mb": 100,
        "capacity_limit_mb": 1000,
        "oss_access_key_id": "id",
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    }
    service = ScriptedService([json_response(200, {"data": policy, "request_id": "r"})])
    async with mock_client(service) as client:
        got = await client._get_upload_policy("wanx-style-repaint-v1")
    assert got.upload_host == "https://upload.test"
    (sent,) = service.requests
    assert sent.url.path == "/api/v1/uploads"
    assert dict(sent.url.params) == {"action": "getPolicy", "model": "wanx-style-repaint-v1"}
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"


async def test_download_delegates_to_the_downloads_module(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from dashscope_async import _downloads

    calls: list[tuple[Any, ...]] = []

    async def fake_download(
        http: httpx.AsyncClient, image: ds.GeneratedImage, dest: Any, **options: Any
    ) -> Path:
        calls.append((http, image, dest))
        assert options["limits"] == ds.DownloadLimits()
        return Path(dest)

    monkeypatch.setattr(_downloads, "download_image", fake_download)
    image = ds.GeneratedImage(url="https://result.test/a.png")
    async with mock_client(ScriptedService()) as client:
        assert await client.download(image, "out.png") == Path("out.png")
        assert calls == [(client.http, image, "out.png")]


# --- credentials ----------------------------------------------------------------------------------


async def test_credentials_go_only_to_the_api_host() -> None:
    service = ScriptedService(fallback=lambda request: httpx.Response(200, content=b"img"))
    async with mock_client(service, workspace="ws-1") as client:
        await client.http.get("https://result.test/a.png")
        await client.http.get("https://dashscope.test/elsewhere")
    for sent in service.requests:
        assert "Authorization" not in sent.headers
        assert "X-DashScope-WorkSpace" not in sent.headers


@pytest.mark.parametrize(
    ("url", "is_api"),
    [
        (BASE_URL + "/tasks/x", True),
        (BASE_URL, True),
        ("https://dashscope.test/api/v1x/tasks", False),
        ("https://dashscope.test/api", False),
        ("http://dashscope.test/api/v1/tasks", False),
        ("https://dashscope.test:8443/api/v1/tasks", False),
        ("https://result.test/api/v1/tasks", False),
    ],
)
async def test_only_urls_under_the_base_url_get_credentials(url: str, is_api: bool) -> None:
    async with mock_client(ScriptedService(), workspace="ws-1") as client:
        headers = client._request_headers(httpx.URL(url), {})
    assert ("Authorization" in headers) is is_api
    assert (headers.get("X-DashScope-WorkSpace") == "ws-1") is is_api


async def test_api_urls_are_parsed_once_while_in_use_and_the_cache_stays_bounded() -> None:
    async with mock_client(ScriptedService()) as client:
        first = client._api_url("/tasks/t-0")
        assert client._api_url("/tasks/t-0") is first
        assert str(first) == f"{client.base_url}/tasks/t-0"
        for n in range(1, URL_CACHE_SIZE + 10):
            client._api_url(f"/tasks/t-{n}")
        assert len(client._urls) == URL_CACHE_SIZE
        assert client._api_url("/tasks/t-0") is not first  # the oldest went first
        assert client._api_url("/tasks/t-0") == first


async def test_redirects_are_not_followed_with_credentials() -> None:
    service = ScriptedService(
        [httpx.Response(302, headers={"Location": "https://evil.test/steal"})]
    )
    async with mock_client(service) as client:
        with pytest.raises(ds.APIError) as caught:
            await client.get_task("task-1")
    assert caught.value.status_code == 302
    assert len(service.requests) == 1


# --- lifetime -------------------------------------------------------------------------------------


async def test_a_user_client_stays_open() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(ScriptedService())) as http:
        async with AsyncDashScope(API_KEY, http_client=http) as client:
            assert client.http is http
        assert not http.is_closed


# --- wait -----------------------------------------------------------------------------------------


async def test_wait_polls_at_once_then_at_the_planners_cadence() -> None:
    clock = RecordingClock()
    service = ScriptedService([task_answer("PENDING")] * 5 + [task_answer("RUNNING")] * 3).then(
        task_answer("SUCCEEDED", results=[{"url": "https://result.test/a.png"}])
    )
    async with mock_client(service, clock=clock) as client:
        result = await client.wait("task-1")
    assert result.status is ds.TaskStatus.SUCCEEDED
    assert len(service.requests) == 9
    # PENDING, of a model wait() was not told: a tenth of the 15 s prior; once seen to start
    # RUNNING, the planner's first-task schedule: a probe at a tenth of the prior, a sleep to
    # the first poll of the schedule for 15 s with the 15 % spread of an unknown model, then
    # the schedule.
    assert clock.sleeps[:5] == [1.5] * 5
    first = optimal_schedule(
        15.0, 0.15, polls=ds.PollPolicy().cold_polls_per_task, min_interval=0.04
    ).times[0]
    assert 15.0 * math.exp(-3 * 0.15) < first < 15.0
    assert clock.sleeps[5:7] == pytest.approx([1.5, first - 1.5])
    assert all(0.04 <= pause < 1.5 for pause in clock.sleeps[7:])


async def test_wait_with_a_fixed_interval() -> None:
    clock = RecordingClock()
    service = ScriptedService([task_answer("RUNNING")] * 3).then(
        task_answer("SUCCEEDED", results=[{"url": "https://result.test/a.png"}])
    )
    async with mock_client(service, clock=clock) as client:
        await client.wait("task-1", poll_interval=3)
    assert clock.sleeps == [3, 3, 3]


async def test_wait_with_a_fixed_interval_keeps_it_once_a_waiting_task_starts() -> None:
    """Seen PENDING, then RUNNING: no probe and no sleep to the planner's first poll."""
    clock = RecordingClock()
    service = ScriptedService([task_answer("PENDING")] * 2 + [task_answer("RUNNING")] * 3).then(
        task_answer("SUCCEEDED", results=[{"url": "https://result.test/a.png"}])
    )
    async with mock_client(service, clock=clock) as client:
        await client.wait("task-1", poll_interval=3)
    assert clock.sleeps == [3] * 5


@pytest.mark.parametrize(
    ("status", "error"),
    [
        ("FAILED", ds.TaskFailedError),
        ("CANCELED", ds.TaskCanceledError),
        ("UNKNOWN", ds.TaskNotFoundError),
        ("SOMETHING_NEW", ds.TaskFailedError),
    ],
)
async def test_wait_ends_on_every_terminal_status(status: str, error: type[Exception]) -> None:
    service = ScriptedService([task_answer("RUNNING"), task_answer(status, code="C", message="m")])
    async with mock_client(service) as client:
        with pytest.raises(error) as caught:
            await client.wait("task-1")
    assert isinstance(caught.value, ds.TaskError)
    assert caught.value.task_id == "task-1"
    assert len(service.requests) == 2


async def test_a_failed_task_carries_the_task() -> None:
    service = ScriptedService(
        [task_answer("FAILED", code="InvalidImageResolution", message="too small")]
    )
    async with mock_client(service) as client:
        with pytest.raises(ds.TaskFailedError) as caught:
            await client.wait("task-1")
    assert caught.value.code == "InvalidImageResolution"
    assert caught.value.task.message == "too small"
    assert type(caught.value) is ds.TaskFailedError


async def test_wait_times_out_with_the_last_status() -> None:
    clock = RecordingClock()
    service = ScriptedService(fallback=lambda request: task_answer("RUNNING"))
    async with mock_client(service, clock=clock) as client:
        with pytest.raises(ds.TaskTimeoutError) as caught:
            await client.wait("task-1", timeout=10)
    assert caught.value.task_id == "task-1"
    assert caught.value.status is ds.TaskStatus.RUNNING
    assert clock.t == pytest.approx(10)
    # Polls at 0, 1.5, ..., 9; the next would pass the deadline: wait out the last second only.
    assert clock.sleeps == pytest.approx([1.5] * 6 + [1.0])
    assert len(service.requests) == 7


@pytest.mark.parametrize(
    "failure",
    [
        error_response(429, "Throttling.RateQuota"),
        error_response(503, "ModelUnavailable"),
        error_response(500, None),
        error_response(408, "RequestTimeOut"),
        httpx.Response(200, text="<html><body>gateway</body></html>"),
        httpx.Response(200, text='{"output": {"task_id": "'),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
    ],
)
async def test_a_failed_poll_is_not_the_tasks_failure(failure: httpx.Response | Exception) -> None:
    clock = RecordingClock()
    # max_retries=0: the poll's own retry loop gives up at once, so wait() must carry on.
    service = ScriptedService([failure, failure]).then(
        task_answer("SUCCEEDED", results=[{"url": "https://result.test/a.png"}])
    )
    async with mock_client(service, clock=clock, max_retries=0) as client:
        result = await client.wait("task-1")
    assert result.images
    assert len(service.requests) == 3


async def test_wait_rides_out_failed_polls_until_its_deadline() -> None:
    clock = RecordingClock()
    service = ScriptedService(fallback=lambda request: error_response(500, "InternalError"))
    async with mock_client(service, clock=clock, max_retries=0) as client:
        with pytest.raises(ds.TaskTimeoutError):
            await client.wait("task-1", timeout=60)
    assert clock.t == pytest.approx(60)
    # The poll loop's backoff: 0.5, 1, 2, 4, 8, 8, ... (one request per poll, no retries).
    assert clock.sleeps[:6] == [0.5, 1, 2, 4, 8, 8]
    assert max(clock.sleeps) == 8
    # A poll after every sleep but the last, which only waits out the time left.
    assert len(service.requests) == len(clock.sleeps)


async def test_wait_does_not_swallow_a_refusal() -> None:
    service = ScriptedService([error_response(401, "InvalidApiKey")])
    async with mock_client(service) as client:
        with pytest.raises(ds.AuthenticationError):
            await client.wait("task-1")
    assert len(service.requests) == 1


async def test_generate_submits_then_waits() -> None:
    service = ScriptedService(
        [
            submit_ok("task-7"),
            task_answer("RUNNING", task_id="task-7"),
            task_answer("SUCCEEDED", task_id="task-7", results=[{"url": "https://r.test/a.png"}]),
        ]
    )
    async with mock_client(service) as client:
        result = await client.generate(REPAINT)
    assert result.task_id == "task-7"
    assert [r.method for r in service.requests] == ["POST", "GET", "GET"]


# --- list -----------------------------------------------------------------------------------------


def _page(task_ids: list[str], page_no: int, total_page: int) -> httpx.Response:
    return json_response(
        200,
        {
            "request_id": "r",
            "total": 99,
            "total_page": total_page,
            "page_no": page_no,
            "page_size": 2,
            "data": [
                {
                    "task_id": task_id,
                    "status": "SUCCEEDED",
                    "model_name": "wanx-style-repaint-v1",
                    "gmt_create": 1_700_000_000_000,
                    "region": "cn-beijing",
                }
                for task_id in task_ids
            ],
        },
    )


async def test_list_tasks_awaits_before_page_once_per_request() -> None:
    service = ScriptedService([_page(["a", "b"], 1, 2), _page(["c"], 2, 2)])
    turns: list[int] = []

    async def before_page() -> None:
        turns.append(len(service.requests))  # requests sent so far

    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    async with mock_client(service) as client:
        listing = client.list_tasks(start=start, page_size=2, before_page=before_page)
        items = [item.task_id async for item in listing]
    assert items == ["a", "b", "c"]
    assert turns == [0, 1]  # one turn before each of the two pages, none per item


async def test_list_tasks_pages_for_you() -> None:
    service = ScriptedService([_page(["a", "b"], 1, 2), _page(["c"], 2, 2)])
    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    async with mock_client(service) as client:
        items = [
            item
            async for item in client.list_tasks(
                start=start,
                end=start + timedelta(hours=1),
                model="wanx-style-repaint-v1",
                status=ds.TaskStatus.SUCCEEDED,
                page_size=2,
            )
        ]
    assert [item.task_id for item in items] == ["a", "b", "c"]
    assert items[0].created == datetime.fromtimestamp(1_700_000_000, UTC)
    assert items[0].extra == {"region": "cn-beijing"}
    first, second = (dict(r.url.params) for r in service.requests)
    assert first == {
        "start_time": "20260301080000",
        "end_time": "20260301090000",
        "page_no": "1",
        "page_size": "2",
        "model_name": "wanx-style-repaint-v1",
        "status": "SUCCEEDED",
    }
    assert second["page_no"] == "2"
    assert service.requests[0].url.path == "/api/v1/tasks"


async def test_list_tasks_splits_long_ranges_into_days() -> None:
    service = ScriptedService(fallback=lambda request: _page([], 1, 0))
    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    async with mock_client(service) as client:
        items = [i async for i in client.list_tasks(start=start, end=start + timedelta(hours=50))]
    assert items == []
    windows = [(r.url.params["start_time"], r.url.params["end_time"]) for r in service.requests]
    assert windows == [
        ("20260301080000", "20260302080000"),
        ("20260302080000", "20260303080000"),
        ("20260303080000", "20260303100000"),
    ]


async def test_list_tasks_yields_a_task_once_across_windows() -> None:
    service = ScriptedService([_page(["a", "b"], 1, 1), _page(["b", "c"], 1, 1)])
    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    async with mock_client(service) as client:
        ids = [
            i.task_id async for i in client.list_tasks(start=start, end=start + timedelta(hours=30))
        ]
    assert ids == ["a", "b", "c"]


async def test_list_tasks_defaults_to_the_last_day() -> None:
    service = ScriptedService([_page([], 1, 0)])
    async with mock_client(service) as client:
        assert [i async for i in client.list_tasks()] == []
    params = service.requests[0].url.params
    assert params["end_time"] == "20260301200000"  # WALL_START in China time
    assert params["start_time"] == "20260228200000"


async def test_list_tasks_with_only_a_start_covers_the_next_day() -> None:
    service = ScriptedService([_page([], 1, 0)])
    async with mock_client(service) as client:
        assert [i async for i in client.list_tasks(start=WALL_START)] == []
    params = service.requests[0].url.params
    assert (params["start_time"], params["end_time"]) == ("20260301200000", "20260302200000")


async def test_breaking_out_of_list_tasks_stops_paging() -> None:
    service = ScriptedService(fallback=lambda request: _page(["a", "b"], 1, 5))
    async with mock_client(service) as client:
        async for _item in client.list_tasks(start=WALL_START):
            break
    assert len(service.requests) == 1


async def test_list_tasks_works_with_aclosing() -> None:
    from contextlib import aclosing

    service = ScriptedService(fallback=lambda request: _page(["a", "b"], 1, 5))
    async with mock_client(service) as client:
        listing = client.list_tasks(start=WALL_START)
        async with aclosing(listing) as items:  # type: ignore[type-var]
            assert (await anext(items)).task_id == "a"
        assert [item async for item in listing] == []
    assert len(service.requests) == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"start": datetime(2026, 1, 1)}, "start"),
        ({"end": datetime(2026, 1, 1)}, "end"),
        ({"start": WALL_START, "end": WALL_START - timedelta(seconds=1)}, "end"),
        ({"page_size": 0}, "page_size"),
        ({"status": "NOPE"}, "status"),
    ],
)
async def test_list_tasks_checks_its_arguments(options: dict[str, Any], field: str) -> None:
    async with mock_client(ScriptedService()) as client:
        with pytest.raises(ds.ValidationError) as caught:
            async for _item in client.list_tasks(**options):
                pass
    assert caught.value.field == field


def test_list_windows_cover_the_range_exactly() -> None:
    start = WALL_START
    windows = list_windows(start, start + timedelta(hours=48))
    assert windows == [
        (start, start + timedelta(hours=24)),
        (start + timedelta(hours=24), start + timedelta(hours=48)),
    ]
    assert list_windows(start, start) == [(start, start)]


# --- logging --------------------------------------------------------------------------------------


async def test_requests_are_logged_without_query_or_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    service = ScriptedService(
        [
            json_response(
                200,
                {
                    "data": {
                        "policy": "p",
                        "signature": "s",
                        "upload_dir": "d",
                        "upload_host": "https://u.test",
                        "expire_in_seconds": 1,
                        "max_file_size_mb": 1,
                        "capacity_limit_mb": 1,
                        "oss_access_key_id": "i",
                        "x_oss_object_acl": "a",
                        "x_oss_forbid_overwrite": "f",
                    }
                },
            ),
            error_response(401, "InvalidApiKey", f"Invalid API-key provided: {API_KEY}"),
        ]
    )
    async with mock_client(service) as client:
        await client._get_upload_policy("wanx-style-repaint-v1")
        with pytest.raises(ds.AuthenticationError) as caught:
            await client.get_task("task-1")
        logging.getLogger("dashscope_async").debug("headers: %s", dict(service.requests[0].headers))
    assert API_KEY not in str(caught.value)
    assert API_KEY not in caught.value.message
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("dashscope_async")]
    assert "GET /api/v1/uploads (attempt 1)" in messages
    assert "GET /api/v1/tasks/task-1 (attempt 1)" in messages
    assert all("getPolicy" not in m for m in messages)
    assert all(API_KEY not in m for m in messages)
    assert any("<redacted>" in m for m in messages)


# --- connection leaks (a real loopback server) ----------------------------------------------------


async def _serve_http(stream: anyio.abc.ByteStream, answers: list[tuple[int, bytes]]) -> None:
    """A minimal HTTP/1.1 keep-alive server: one scripted answer per request."""
    async with stream:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                try:
                    buffer += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                buffer += await stream.receive()
            buffer = buffer[length:]
            status, body = answers.pop(0) if answers else (200, b"{}")
            await stream.send(
                b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (status, len(body), body)
            )


async def test_no_connection_is_left_open() -> None:
    running = json.dumps({"output": {"task_id": "t", "task_status": "RUNNING"}}).encode()
    failure = json.dumps({"code": "InternalError", "message": "m"}).encode()
    answers = [(500, failure), (200, running), (400, failure), (200, running)]
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, lambda stream: _serve_http(stream, answers))
        async with AsyncDashScope(
            API_KEY, base_url=f"http://127.0.0.1:{port}/api/v1", clock=RecordingClock()
        ) as client:
            await client.get_task("t")  # a retried 500, then an answer
            with pytest.raises(ds.BadRequestError):
                await client.get_task("t")
            await client.get_task("t")
            pool = client.http._transport._pool  # type: ignore[attr-defined]
            assert len(pool.connections) == 1
            assert all(c.is_idle() for c in pool.connections)
        assert client.http.is_closed
        assert pool.connections == []
        tg.cancel_scope.cancel()


def test_the_redacting_filter_masks_credentials(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dashscope_async")
    log = logging.getLogger("dashscope_async")
    log.debug("sent %s", {"Authorization": f"Bearer {API_KEY}"})
    log.debug("api_key=%s", "sk-anotherkey12345")
    try:
        raise RuntimeError(f"boom with {API_KEY}")
    except RuntimeError:
        log.exception("failed")
    text = caplog.text
    assert API_KEY not in text
    assert "sk-anotherkey12345" not in text
    assert text.count("<redacted>") >= 3
    assert "boom with" in text


def test_redact_leaves_ordinary_text_alone() -> None:
    from dashscope_async._logging import redact

    assert redact("GET /api/v1/tasks/abc (attempt 1)") == "GET /api/v1/tasks/abc (attempt 1)"
    assert redact("my key is hunter2", "hunter2") == "my key is <redacted>"
    assert redact("Authorization: Bearer xyz") == "Authorization: Bearer <redacted>"


async def test_connection_errors_do_not_carry_the_key() -> None:
    service = ScriptedService(
        fallback=lambda request: (_ for _ in ()).throw(
            httpx.ConnectError(f"refused while sending {request.headers['Authorization']}")
        )
    )
    async with mock_client(service, max_retries=0) as client:
        with pytest.raises(ds.APIConnectionError) as caught:
            await client.get_task("task-1")
    assert API_KEY not in str(caught.value)

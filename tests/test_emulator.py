"""The emulator's rules, in-process over httpx (not through our client), on a manual clock.

Every timing rule runs on a clock the test moves by hand, so nothing here sleeps for real.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from datetime import timedelta
from typing import Any

import attrs
import httpx
import pytest
from PIL import Image

from dashscope_async import _wire
from dashscope_async.testing import Emulator, EmulatorConfig, Fault
from tests.images_util import make_image

pytestmark = pytest.mark.anyio

KEY = "sk-emulator"
AUTH = {"Authorization": f"Bearer {KEY}"}
SUBMIT_HEADERS = {**AUTH, "X-DashScope-Async": "enable"}
REPAINT = "/services/aigc/image-generation/generation"
SKETCH = "/services/aigc/image2image/image-synthesis"
REPAINT_MODEL = "wanx-style-repaint-v1"
SKETCH_MODEL = "wanx-sketch-to-image-lite"


@attrs.define
class ManualClock:
    """Monotonic seconds that move only when the test says so."""

    t: float = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def config() -> EmulatorConfig:
    return EmulatorConfig(seed=1)


@pytest.fixture
def emulator(clock: ManualClock, config: EmulatorConfig) -> Emulator:
    return Emulator(config, clock=clock)


@pytest.fixture
async def http(emulator: Emulator) -> Any:
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url=emulator.base_url
    ) as client:
        yield client


def repaint_body(url: str, style: int = 2, **extra: Any) -> dict[str, Any]:
    return {"model": REPAINT_MODEL, "input": {"image_url": url, "style_index": style, **extra}}


def sketch_body(url: str, n: int = 1, **parameters: Any) -> dict[str, Any]:
    return {
        "model": SKETCH_MODEL,
        "input": {"sketch_image_url": url, "prompt": "a towering tree"},
        "parameters": {"n": n, **parameters},
    }


async def submit(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> str:
    path = SKETCH if body["model"] == SKETCH_MODEL else REPAINT
    response = await http.post(path, json=body, headers={**SUBMIT_HEADERS, **headers})
    assert response.status_code == 200, response.text
    return _wire.load(response.json(), _wire.SubmitResponseWire, what="submit").output.task_id


async def get_task(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await http.get(f"/tasks/{task_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    _wire.task_info_from_wire(data)  # every answer parses as the documented shape
    return data


def error_of(response: httpx.Response) -> tuple[int, str | None]:
    return response.status_code, response.json().get("code")


# --- headers and bodies --------------------------------------------------------------------------


async def test_a_missing_or_unknown_key_is_401(http: httpx.AsyncClient, emulator: Emulator) -> None:
    body = repaint_body(emulator.sample_image_url())
    missing = await http.post(REPAINT, json=body, headers={"X-DashScope-Async": "enable"})
    wrong = await http.post(
        REPAINT,
        json=body,
        headers={"Authorization": "Bearer sk-other", "X-DashScope-Async": "enable"},
    )
    assert missing.json()["message"] == "No API-key provided."
    assert error_of(missing) == error_of(wrong) == (401, "InvalidApiKey")
    assert (await http.get("/tasks/abc")).status_code == 401
    assert emulator.tasks == {}


async def test_a_submit_without_the_async_header_is_refused(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    response = await http.post(
        REPAINT, json=repaint_body(emulator.sample_image_url()), headers=AUTH
    )
    assert error_of(response) == (403, "AccessDenied")
    assert response.json()["message"] == "current user api does not support synchronous calls"


URL = "http://127.0.0.1:3/samples/portrait.png"
BAD_BODIES = [
    pytest.param(REPAINT, {"input": {}}, "BadRequest.EmptyModel", id="no-model"),
    pytest.param(REPAINT, {"model": "wanx-v9"}, "InvalidParameter", id="unknown-model"),
    pytest.param(SKETCH, repaint_body(URL), "InvalidParameter", id="model-on-the-wrong-path"),
    pytest.param(REPAINT, {"model": REPAINT_MODEL}, "BadRequest.EmptyInput", id="no-input"),
    pytest.param(REPAINT, {"model": REPAINT_MODEL, "input": {"style_index": 2}}, "InvalidParameter", id="no-image"),
    pytest.param(REPAINT, {"model": REPAINT_MODEL, "input": {"image_url": URL}}, "InvalidParameter", id="no-style"),
    pytest.param(REPAINT, repaint_body(URL, style=12), "InvalidParameter", id="style-12"),
    pytest.param(REPAINT, repaint_body(URL, style=-1), "InvalidParameter", id="custom-without-ref"),
    pytest.param(REPAINT, repaint_body("ftp://127.0.0.1/a.png"), "InvalidURL", id="ftp"),
    pytest.param(REPAINT, repaint_body("http://127.0.0.1/照片.png"), "InvalidURL", id="chinese-url"),
    pytest.param(REPAINT, repaint_body("data:text/plain;base64,aGk="), "InvalidURL", id="data-not-image"),
    pytest.param(SKETCH, sketch_body("data:image/png;base64,aGk="), "InvalidParameter", id="sketch-data-uri"),
    pytest.param(SKETCH, {"model": SKETCH_MODEL, "input": {"sketch_image_url": URL}}, "InvalidParameter", id="no-prompt"),
    pytest.param(SKETCH, sketch_body(URL, n=5), "InvalidParameter", id="n-5"),
    pytest.param(SKETCH, sketch_body(URL, n=True), "InvalidParameter", id="n-bool"),
    pytest.param(SKETCH, sketch_body(URL, size="1024*1024"), "InvalidParameter", id="size"),
    pytest.param(SKETCH, sketch_body(URL, style="<pop art>"), "InvalidParameter", id="style"),
    pytest.param(SKETCH, sketch_body(URL, sketch_weight=11), "InvalidParameter", id="weight"),
    pytest.param(SKETCH, sketch_body(URL, sketch_color=[[0, 0]]), "InvalidParameter", id="color"),
    pytest.param(SKETCH, sketch_body(URL, sketch_extraction="yes"), "InvalidParameter", id="extraction"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "code"), BAD_BODIES)
async def test_bad_bodies_get_the_documented_400(
    http: httpx.AsyncClient, emulator: Emulator, path: str, body: dict[str, Any], code: str
) -> None:
    response = await http.post(path, json=body, headers=SUBMIT_HEADERS)
    assert error_of(response) == (400, code)
    assert response.json()["request_id"]
    assert emulator.tasks == {}


async def test_a_submit_answers_pending_and_keeps_the_body(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    body = sketch_body(emulator.sample_image_url("sketch"), n=2, style="<watercolor>")
    body["parameters"]["wait_timeout"] = 5  # the official SDK leaks this; the service ignores it
    response = await http.post(SKETCH + "/", json=body, headers=SUBMIT_HEADERS)  # trailing slash
    assert response.status_code == 200
    answer = response.json()
    assert answer["output"]["task_status"] == "PENDING"
    task = emulator.task(answer["output"]["task_id"])
    assert task.raw_body == body
    assert isinstance(task.body, _wire.SketchBody)
    assert task.body.parameters.n == 2
    assert task.request_id == answer["request_id"]


# --- a task's life ------------------------------------------------------------------------------


async def test_a_repaint_runs_its_course_with_every_documented_field(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    task_id = await submit(http, repaint_body(emulator.sample_image_url("portrait"), style=3))
    output = (await get_task(http, task_id))["output"]
    assert output["task_status"] == "PENDING"  # the slot is free: it is being scheduled
    assert "scheduled_time" not in output
    clock.advance(0.1)
    output = (await get_task(http, task_id))["output"]
    assert output["task_status"] == "RUNNING"
    assert "end_time" not in output

    clock.advance(30)
    answer = await get_task(http, task_id)
    output = answer["output"]
    assert output["task_status"] == "SUCCEEDED"
    assert output["style_index"] == 3
    assert (output["error_code"], output["error_message"]) == (0, "Success")
    submitted, scheduled, started = (
        _wire.parse_service_time(output[name])
        for name in ("submit_time", "scheduled_time", "start_time")
    )
    assert submitted and scheduled and started
    # A few tens of milliseconds apart, as the service shows them.
    assert 0.02 <= (scheduled - submitted).total_seconds() <= 0.06
    assert 0.005 <= (started - scheduled).total_seconds() <= 0.04
    assert output["task_metrics"] == {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0}
    assert answer["usage"] == {"image_count": 1}
    info = _wire.task_info_from_wire(answer)
    assert info.end_time is not None and info.scheduled_time is not None
    run = (info.end_time - info.scheduled_time).total_seconds()
    assert 12 < run < 18  # ~15 s

    image = await http.get(output["results"][0]["url"])
    assert image.status_code == 200
    with Image.open(io.BytesIO(image.content)) as picture:
        assert picture.size == (1536, 2048)  # the 768x1024 sample, short side 1536
    assert emulator.stats.downloads == 1


async def test_tasks_beyond_the_concurrency_limit_wait_and_start_in_order(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    url = emulator.sample_image_url()
    first = await submit(http, repaint_body(url))
    clock.advance(1)
    second = await submit(http, repaint_body(url, style=4))
    third = await submit(http, repaint_body(url, style=5))
    assert (await get_task(http, second))["output"]["task_status"] == "PENDING"

    clock.advance(60)
    outputs = [(await get_task(http, task_id))["output"] for task_id in (first, second, third)]
    assert [output["task_status"] for output in outputs] == ["SUCCEEDED"] * 3
    times = [
        (
            _wire.parse_service_time(output["scheduled_time"]),
            _wire.parse_service_time(output["end_time"]),
        )
        for output in outputs
    ]
    # Each starts a few tens of milliseconds after the one before it ends.
    gaps = [(times[i][0] - times[i - 1][1]).total_seconds() for i in (1, 2)]  # type: ignore[operator]
    assert all(0.02 <= gap <= 0.06 for gap in gaps)
    stats = emulator.stats
    assert stats.peak_in_progress[REPAINT_MODEL] == 3
    assert stats.peak_running[REPAINT_MODEL] == 1
    first_gap = emulator.task(first).scheduling_seconds
    assert stats.busy_time(REPAINT_MODEL) == pytest.approx(
        stats.makespan(REPAINT_MODEL) - first_gap - sum(gaps), abs=2e-3
    )
    # Queued back to back, the slot is held all along: scheduling is the service's time.
    assert stats.held_time(REPAINT_MODEL) == pytest.approx(stats.makespan(REPAINT_MODEL))
    assert stats.slot_utilisation(REPAINT_MODEL) == pytest.approx(1.0)
    assert stats.utilisation(REPAINT_MODEL) < 1.0


async def test_reject_mode_answers_429_when_the_slot_is_taken(
    clock: ManualClock,
) -> None:
    emulator = Emulator(EmulatorConfig().with_model(REPAINT_MODEL, when_busy="reject"), clock=clock)
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url=emulator.base_url
    ) as http:
        await submit(http, repaint_body(emulator.sample_image_url()))
        clock.advance(1)
        refused = await http.post(
            REPAINT, json=repaint_body(emulator.sample_image_url()), headers=SUBMIT_HEADERS
        )
        assert error_of(refused) == (429, "Throttling.RateQuota")
        clock.advance(30)
        await submit(http, repaint_body(emulator.sample_image_url()))
    assert emulator.stats.throttled_submits[REPAINT_MODEL] == 1


async def test_the_submit_rate_is_a_one_second_sliding_window_per_model(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    url = emulator.sample_image_url()
    await submit(http, repaint_body(url))
    clock.advance(0.6)
    await submit(http, repaint_body(url))
    third = await http.post(REPAINT, json=repaint_body(url), headers=SUBMIT_HEADERS)
    assert error_of(third) == (429, "Throttling.RateQuota")
    assert third.json()["message"] == "Requests rate limit exceeded, please try again later."
    await submit(http, sketch_body(emulator.sample_image_url("sketch")))  # another model's window
    clock.advance(0.4)  # the first submit has left the window
    await submit(http, repaint_body(url))
    stats = emulator.stats
    assert stats.submissions[REPAINT_MODEL] == 3
    assert stats.throttled_submits[REPAINT_MODEL] == 1
    assert stats.max_submits_in_any_window(REPAINT_MODEL, 1.0) == 2
    assert stats.submit_times[REPAINT_MODEL] == [1000.0, 1000.6, 1001.0]


async def test_task_endpoints_share_20_qps(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    answers = [(await http.get(f"/tasks/t{i}", headers=AUTH)).status_code for i in range(20)]
    assert answers == [200] * 20
    assert error_of(await http.get("/tasks", headers=AUTH)) == (429, "Throttling.RateQuota")
    clock.advance(1.0)
    assert (await http.post("/tasks/x/cancel", headers=AUTH)).status_code == 400  # not 429
    assert emulator.stats.throttled_task_requests == 1
    assert emulator.stats.max_task_requests_in_any_window() == 20


async def test_limits_can_be_switched_off(clock: ManualClock) -> None:
    emulator = Emulator(EmulatorConfig().without_limits(), clock=clock)
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url=emulator.base_url
    ) as http:
        ids = [await submit(http, repaint_body(emulator.sample_image_url())) for _ in range(10)]
        for task_id in ids * 3:
            await get_task(http, task_id)
    assert emulator.stats.peak_running[REPAINT_MODEL] == 10
    assert emulator.stats.throttled == 0


async def test_unknown_and_expired_tasks_read_unknown(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    assert (await get_task(http, "no-such-task"))["output"] == {
        "task_id": "no-such-task",
        "task_status": "UNKNOWN",
    }
    task_id = await submit(http, repaint_body(emulator.sample_image_url()))
    clock.advance(23 * 3600 + 60)
    assert (await get_task(http, task_id))["output"]["task_status"] == "SUCCEEDED"
    clock.advance(3600)  # 24 h after the task ended
    assert (await get_task(http, task_id))["output"]["task_status"] == "UNKNOWN"


async def test_only_pending_tasks_can_be_cancelled(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    url = emulator.sample_image_url()
    running = await submit(http, repaint_body(url))
    clock.advance(1)
    pending = await submit(http, repaint_body(url))
    cancelled = await http.post(f"/tasks/{pending}/cancel", headers=AUTH)
    assert cancelled.status_code == 200 and set(cancelled.json()) == {"request_id"}
    refused = await http.post(f"/tasks/{running}/cancel", headers=AUTH)
    assert error_of(refused) == (400, "UnsupportedOperation")
    assert "PENDING" in refused.json()["message"]
    output = (await get_task(http, pending))["output"]
    assert output["task_status"] == "CANCELED"
    assert "scheduled_time" not in output
    clock.advance(100)
    assert emulator.stats.busy_intervals[REPAINT_MODEL] == [
        emulator.stats.busy_intervals[REPAINT_MODEL][0]
    ]


async def test_run_times_are_seeded_lognormal_around_the_typical_time(clock: ManualClock) -> None:
    def runs(seed: int) -> list[float]:
        emulator = Emulator(EmulatorConfig(seed=seed, time_scale=0.5).without_limits(), clock=clock)
        core = emulator._core
        for _ in range(200):
            core.handle(
                _call(
                    "POST",
                    "/api/v1" + SKETCH,
                    json.dumps(sketch_body(emulator.sample_image_url("sketch"))),
                )
            )
        return [task.run_seconds for task in emulator.tasks.values()]

    first, again, other = runs(3), runs(3), runs(4)
    assert first == again != other
    assert statistics.mean(first) == pytest.approx(12.5, rel=0.02)  # 25 s x 0.5
    assert statistics.stdev(first) / statistics.mean(first) == pytest.approx(0.05, abs=0.015)


def _call(method: str, path: str, body: str = "") -> Any:
    from dashscope_async.testing import Call

    return Call(
        "api", method, path, {}, {k.lower(): v for k, v in SUBMIT_HEADERS.items()}, body.encode()
    )


# --- the task list ------------------------------------------------------------------------------


async def test_the_task_list_is_flat_filtered_and_paged(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    repaints = [await submit(http, repaint_body(emulator.sample_image_url())) for _ in range(2)]
    sketch = await submit(http, sketch_body(emulator.sample_image_url("sketch")))
    clock.advance(27)  # the sketch (~25 s) and the first repaint (~15 s) are done

    response = await http.get("/tasks/", headers=AUTH, params={"page_size": 2})
    page = response.json()
    assert set(page) == {"request_id", "total", "total_page", "page_no", "page_size", "data"}
    assert (page["total"], page["total_page"], len(page["data"])) == (3, 2, 2)
    newest = page["data"][0]
    assert newest["task_id"] == sketch and newest["model_name"] == SKETCH_MODEL
    assert newest["status"] == "SUCCEEDED"
    assert isinstance(newest["gmt_create"], int) and newest["end_time"] > newest["gmt_create"]
    assert (
        newest["user_api_unique_key"]
        == f"apikey:v1:aigc:image2image:image-synthesis:{SKETCH_MODEL}"
    )
    assert KEY not in json.dumps(page)

    only_repaints = await http.get("/tasks", headers=AUTH, params={"model_name": REPAINT_MODEL})
    assert {item["task_id"] for item in only_repaints.json()["data"]} == set(repaints)
    running = await http.get("/tasks", headers=AUTH, params={"status": "RUNNING"})
    assert {item["task_id"] for item in running.json()["data"]} == {repaints[1]}

    now = emulator.wall()
    before = {
        "start_time": _wire.format_list_time(now - timedelta(hours=3)),
        "end_time": _wire.format_list_time(now - timedelta(hours=2)),
    }
    assert (await http.get("/tasks", headers=AUTH, params=before)).json()["total"] == 0
    too_long = {**before, "end_time": _wire.format_list_time(now + timedelta(hours=23))}
    assert error_of(await http.get("/tasks", headers=AUTH, params=too_long)) == (
        400,
        "InvalidParameter",
    )
    listed = _wire.load(page, _wire.TaskListWire, what="list")
    assert listed.page_no == 1


# --- uploads and oss:// -------------------------------------------------------------------------


async def upload(http: httpx.AsyncClient, data: bytes, model: str, name: str = "a.png") -> str:
    answer = await http.get(
        "/uploads", params={"action": "getPolicy", "model": model}, headers=AUTH
    )
    policy = _wire.load(answer.json(), _wire.UploadPolicyResponseWire, what="policy").data
    key = f"{policy.upload_dir}/{name}"
    response = await http.post(
        policy.upload_host,
        data={
            "OSSAccessKeyId": policy.oss_access_key_id,
            "Signature": policy.signature,
            "policy": policy.policy,
            "key": key,
            "x-oss-object-acl": policy.x_oss_object_acl,
            "x-oss-forbid-overwrite": policy.x_oss_forbid_overwrite,
            "success_action_status": "200",
        },
        files={"file": (name, data, "image/png")},
    )
    assert response.status_code == 200, response.text
    return f"oss://{key}"


async def test_an_uploaded_file_resolves_only_with_the_resolve_header(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    sketch = make_image("PNG", 512, 512)
    url = await upload(http, sketch, SKETCH_MODEL)
    assert (
        emulator.upload_url.startswith("http://127.0.0.1:")
        and emulator.upload_url != emulator.base_url
    )
    assert emulator.stored_object(url) == sketch

    refused = await http.post(SKETCH, json=sketch_body(url), headers=SUBMIT_HEADERS)
    assert error_of(refused) == (400, "InvalidParameter.DataInspection")
    task_id = await submit(http, sketch_body(url), **{"X-DashScope-OssResourceResolve": "enable"})
    clock.advance(40)
    assert (await get_task(http, task_id))["output"]["task_status"] == "SUCCEEDED"
    assert emulator.task(task_id).oss_resolve


async def test_the_upload_host_checks_the_policy_and_forbids_overwrites(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    answer = await http.get(
        "/uploads", params={"action": "getPolicy", "model": SKETCH_MODEL}, headers=AUTH
    )
    policy = answer.json()["data"]
    form = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": policy["signature"],
        "policy": policy["policy"],
        "key": f"{policy['upload_dir']}/a.png",
        "success_action_status": "200",
    }
    files = {"file": ("a.png", b"png", "image/png")}
    host = policy["upload_host"]
    assert (await http.post(host, data=form, files=files)).status_code == 200
    again = await http.post(host, data=form, files=files)
    assert again.status_code == 409 and b"<Code>FileAlreadyExists</Code>" in again.content
    forged = await http.post(host, data={**form, "Signature": "forged"}, files=files)
    assert forged.status_code == 403 and b"SignatureDoesNotMatch" in forged.content
    outside = await http.post(host, data={**form, "key": "elsewhere/a.png"}, files=files)
    assert outside.status_code == 403 and b"AccessDenied" in outside.content
    clock.advance(301)
    late = await http.post(host, data={**form, "key": f"{policy['upload_dir']}/b.png"}, files=files)
    assert late.status_code == 403 and b"Policy expired" in late.content
    assert emulator.stats.uploads == 1


# --- inputs checked after queueing --------------------------------------------------------------

INPUT_FAILURES = [
    pytest.param(make_image("PNG", 200, 300), REPAINT_MODEL, "InvalidImageResolution", id="too-small"),
    pytest.param(make_image("PNG", 1200, 400), REPAINT_MODEL, "InvalidImageResolution", id="3-to-1"),
    pytest.param(make_image("PNG", 2100, 1500), SKETCH_MODEL, "InvalidFile.Resolution", id="sketch-too-big"),
    pytest.param(make_image("PNG", 1200, 400), SKETCH_MODEL, "InvalidFile.Resolution", id="sketch-3-to-1"),
    pytest.param(make_image("GIF", 400, 400), REPAINT_MODEL, "InvalidImageFormat", id="gif"),
    # The sketch page has no format code: its InvalidURL message names the formats it reads.
    pytest.param(make_image("BMP", 400, 400), SKETCH_MODEL, "InvalidURL", id="bmp-sketch"),
    pytest.param(b"not an image at all", SKETCH_MODEL, "InvalidURL", id="text"),
]  # fmt: skip


@pytest.mark.parametrize(("image", "model", "code"), INPUT_FAILURES)
async def test_bad_inputs_fail_the_task_after_queueing(
    http: httpx.AsyncClient,
    emulator: Emulator,
    clock: ManualClock,
    image: bytes,
    model: str,
    code: str,
) -> None:
    url = emulator.add_image(image)
    body = repaint_body(url) if model == REPAINT_MODEL else sketch_body(url, n=2)
    task_id = await submit(http, body)
    clock.advance(5)
    answer = await get_task(http, task_id)
    assert answer["output"]["task_status"] == "FAILED"
    assert answer["output"]["code"] == code
    # The repaint page shows a failed task's usage as image_num; the sketch counts images.
    assert answer["usage"] == ({"image_num": 0} if model == REPAINT_MODEL else {"image_count": 0})
    total = 1 if model == REPAINT_MODEL else 2
    assert answer["output"]["task_metrics"] == {"TOTAL": total, "SUCCEEDED": 0, "FAILED": total}


@pytest.mark.parametrize(
    ("url", "config"),
    [
        # The emulator reaches no network: strict, a made-up URL fails as the service's would.
        ("https://example.com/portrait.png", EmulatorConfig(seed=1, unknown_urls="fail")),
        ("oss://dashscope-instant/nothing-here.png", EmulatorConfig(seed=1)),
        ("http://127.0.0.1:3/inputs/missing.png", EmulatorConfig(seed=1)),
        ("http://127.0.0.1:9/nothing-listens.png", EmulatorConfig(seed=1)),
    ],
)
async def test_unreachable_inputs_fail_with_invalid_url(
    http: httpx.AsyncClient, clock: ManualClock, url: str
) -> None:
    headers = {"X-DashScope-OssResourceResolve": "enable"}
    task_id = await submit(http, repaint_body(url), **headers)
    clock.advance(5)
    output = (await get_task(http, task_id))["output"]
    assert (output["task_status"], output["code"]) == ("FAILED", "InvalidURL")


async def test_a_data_uri_portrait_is_accepted_and_keeps_its_aspect(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    import base64

    portrait = make_image("JPEG", 600, 300)
    uri = "data:image/jpeg;base64," + base64.b64encode(portrait).decode()
    task_id = await submit(http, repaint_body(uri))
    clock.advance(30)
    output = (await get_task(http, task_id))["output"]
    image = await http.get(output["results"][0]["url"])
    with Image.open(io.BytesIO(image.content)) as picture:
        assert picture.size == (3072, 1536)


# --- sketches, partial and whole failures -------------------------------------------------------


async def test_a_partial_failure_counts_only_successes(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    emulator.faults.fail_tasks(failed_images=1, code="DataInspectionFailed")
    task_id = await submit(http, sketch_body(emulator.sample_image_url("sketch"), n=3))
    clock.advance(60)
    answer = await get_task(http, task_id)
    output = answer["output"]
    assert output["task_status"] == "SUCCEEDED"
    assert output["task_metrics"] == {"TOTAL": 3, "SUCCEEDED": 2, "FAILED": 1}
    assert answer["usage"] == {"image_count": 2}
    assert output["results"][2] == {
        "code": "DataInspectionFailed",
        "message": "Output data may contain inappropriate content.",
    }
    for item in output["results"][:2]:
        image = await http.get(item["url"])
        with Image.open(io.BytesIO(image.content)) as picture:
            assert picture.size == (768, 768)
    failed_url = (emulator.task(task_id).result_urls or [])[2]  # signed, but never handed out
    assert (await http.get(failed_url)).status_code == 404


async def test_an_injected_failure_fails_the_whole_task(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    emulator.faults.fail_tasks(code="InternalError.Algo", model=REPAINT_MODEL)
    failing = await submit(http, repaint_body(emulator.sample_image_url()))
    clock.advance(30)
    healthy = await submit(http, repaint_body(emulator.sample_image_url()))
    clock.advance(30)
    answer = await get_task(http, failing)
    assert (answer["output"]["task_status"], answer["output"]["code"]) == (
        "FAILED",
        "InternalError.Algo",
    )
    assert answer["usage"] == {"image_num": 0}  # as the repaint page shows a failed task
    assert "results" not in answer["output"]
    assert (await get_task(http, healthy))["output"]["task_status"] == "SUCCEEDED"


# --- result URLs --------------------------------------------------------------------------------


async def test_result_urls_are_signed_and_expire(
    clock: ManualClock,
) -> None:
    emulator = Emulator(EmulatorConfig(result_url_lifetime=600, render_results=False), clock=clock)
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url=emulator.base_url
    ) as http:
        task_id = await submit(http, repaint_body(emulator.sample_image_url()))
        clock.advance(20)
        url = (await get_task(http, task_id))["output"]["results"][0]["url"]
        assert url.startswith(emulator.result_url + "/") and "Expires=" in url
        assert (await http.get(url)).content.startswith(b"\x89PNG")
        forged = await http.get(url.replace("Signature=", "Signature=x"))
        assert forged.status_code == 403 and b"SignatureDoesNotMatch" in forged.content
        clock.advance(600)
        expired = await http.get(url)
    assert expired.status_code == 403
    assert b"<Code>AccessDenied</Code>" in expired.content and b"expired" in expired.content


# --- faults -------------------------------------------------------------------------------------


async def test_scripted_faults_hit_the_next_calls_of_a_route(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    body = repaint_body(emulator.sample_image_url())
    emulator.faults.script("submit", Fault.error(503), times=2)
    emulator.faults.script("get_task", Fault.bare_500())
    assert error_of(await http.post(REPAINT, json=body, headers=SUBMIT_HEADERS)) == (
        503,
        "ServiceUnavailable",
    )
    assert error_of(await http.post(REPAINT, json=body, headers=SUBMIT_HEADERS)) == (
        503,
        "ServiceUnavailable",
    )
    assert emulator.tasks == {}  # an error answer created nothing
    task_id = await submit(http, body)
    bare = await http.get(f"/tasks/{task_id}", headers=AUTH)
    assert bare.status_code == 500 and bare.headers["content-type"] == "text/html"
    assert (await http.get(f"/tasks/{task_id}", headers=AUTH)).status_code == 200
    assert emulator.stats.faults_injected == {"submit": 2, "get_task": 1}


async def test_a_drop_before_creates_nothing_and_a_drop_after_creates_the_task(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    body = repaint_body(emulator.sample_image_url())
    emulator.faults.script("submit", Fault.drop_before())
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(REPAINT, json=body, headers=SUBMIT_HEADERS)
    assert emulator.tasks == {}
    emulator.faults.script("submit", Fault.drop_after())
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(REPAINT, json=body, headers=SUBMIT_HEADERS)
    emulator.faults.script("submit", Fault.timeout_after())
    with pytest.raises(httpx.ReadTimeout):
        await http.post(REPAINT, json=body, headers=SUBMIT_HEADERS)
    assert len(emulator.tasks) == 2  # ambiguous submits: the tasks exist
    assert emulator.stats.duplicate_submissions[REPAINT_MODEL] == 1


async def test_malformed_json_and_slow_answers(http: httpx.AsyncClient, emulator: Emulator) -> None:
    emulator.faults.script("get_task", Fault.malformed_json())
    emulator.faults.script("list_tasks", Fault.slow(0.01))
    response = await http.get("/tasks/abc", headers=AUTH)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert (await http.get("/tasks", headers=AUTH)).json()["total"] == 0


async def test_chances_are_seeded(clock: ManualClock) -> None:
    async def outcomes() -> list[int]:
        emulator = Emulator(EmulatorConfig(seed=5).without_limits(), clock=clock)
        emulator.faults.chance("get_task", Fault.throttle(), 0.3)
        async with httpx.AsyncClient(
            transport=emulator.transport(), base_url=emulator.base_url
        ) as http:
            return [(await http.get("/tasks/a", headers=AUTH)).status_code for _ in range(50)]

    first = await outcomes()
    assert first == await outcomes()
    assert 5 < first.count(429) < 25


# --- records ------------------------------------------------------------------------------------


async def test_it_records_polls_detection_lag_and_credential_leaks(
    http: httpx.AsyncClient, emulator: Emulator, clock: ManualClock
) -> None:
    task_id = await submit(http, repaint_body(emulator.sample_image_url()))
    await get_task(http, task_id)
    clock.advance(40)
    end = emulator.task(task_id).ended_at
    assert end is not None
    url = (await get_task(http, task_id))["output"]["results"][0]["url"]
    await get_task(http, task_id)
    stats = emulator.stats
    assert stats.polls[task_id] == 3
    assert stats.detection_lag[task_id] == pytest.approx(1040.0 - end)
    assert stats.credential_leaks == []

    await http.get(url, headers={"Authorization": f"Bearer {KEY}", "X-DashScope-WorkSpace": "ws"})
    leaks = emulator.stats.credential_leaks
    assert [(leak.host, leak.header) for leak in leaks] == [
        ("result", "authorization"),
        ("result", "x-dashscope-workspace"),
    ]
    assert "?" not in leaks[0].path and KEY not in repr(leaks)
    assert not math.isnan(stats.utilisation(REPAINT_MODEL))


async def test_the_key_never_shows_in_a_repr(emulator: Emulator) -> None:
    assert KEY not in repr(emulator) + repr(emulator.config)

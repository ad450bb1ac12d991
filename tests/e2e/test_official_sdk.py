"""The official ``dashscope`` SDK (2.x), pointed at the emulator server, gets the documented shapes.

This is how we know the emulator speaks the real protocol: the SDK's own request building,
headers, upload flow (policy, OSS form, ``oss://``, the resolve header), polling quirks (a
trailing slash and model parameters in the poll's query string) and response parsing all run
unchanged against it. The SDK blocks, so these are plain (synchronous) tests, except the
``AioImageSynthesis`` one, which needs asyncio (aiohttp).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import pytest

from dashscope_async import _wire
from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer
from tests.images_util import make_image

dashscope = pytest.importorskip("dashscope")
from dashscope.aigc import AioImageSynthesis  # noqa: E402
from dashscope.api_entities.aio_session import close_shared_aio_session  # noqa: E402
from dashscope.client.base_api import BaseAsyncApi  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SKETCH_MODEL = "wanx-sketch-to-image-lite"
REPAINT_MODEL = "wanx-style-repaint-v1"
MADE_UP = "https://help-static-aliyun-doc.aliyuncs.com/assets/img/zh-CN/6609471071/p743851.jpg"


@pytest.fixture
def sdk(emulator_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(dashscope, "base_http_api_url", emulator_server.base_url)
    monkeypatch.setattr(dashscope, "api_key", emulator_server.api_key)
    yield dashscope


def test_style_repaint_through_the_generic_async_api(
    sdk: Any, emulator_server: RunningServer
) -> None:
    emulator = emulator_server.emulator
    response = BaseAsyncApi.call(
        model="wanx-style-repaint-v1",
        input={"image_url": emulator.sample_image_url("portrait"), "style_index": 3},
        task_group="aigc",
        task="image-generation",
        function="generation",
    )
    assert response.status_code == HTTPStatus.OK, response
    output = response.output
    assert output["task_status"] == "SUCCEEDED"
    assert output["style_index"] == 3 and output["error_code"] == 0
    assert {"submit_time", "scheduled_time", "end_time"} <= set(output)
    assert response.usage["image_count"] == 1
    image = httpx.get(output["results"][0]["url"])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert emulator.stats.credential_leaks == []


def test_sketch_with_image_synthesis_and_a_local_file_upload(
    sdk: Any, emulator_server: RunningServer, tmp_path: Path
) -> None:
    emulator = emulator_server.emulator
    sketch = tmp_path / "tree.png"
    sketch.write_bytes(make_image("PNG", 512, 512))
    uploads_before = emulator.stats.uploads
    response = sdk.ImageSynthesis.call(
        model=SKETCH_MODEL,
        prompt="a towering tree",
        sketch_image_url=str(sketch),
        n=2,
        style="<watercolor>",
        size="768*768",
        task="image2image",
    )
    assert response.status_code == HTTPStatus.OK, response
    assert response.output.task_status == "SUCCEEDED"
    assert len(response.output.results) == 2
    assert all(
        result.url.startswith(emulator_server.result_url) for result in response.output.results
    )
    assert response.usage.image_count == 2
    task = emulator.task(response.output.task_id)
    assert task.oss_resolve
    assert task.body.input.sketch_image_url.startswith("oss://")  # type: ignore[union-attr]
    assert emulator.stored_object(task.body.input.sketch_image_url) == sketch.read_bytes()  # type: ignore[union-attr]
    assert emulator.stats.uploads == uploads_before + 1
    assert emulator.stats.credential_leaks == []


def test_the_sdk_sees_failures_and_unknown_tasks(sdk: Any, emulator_server: RunningServer) -> None:
    emulator = emulator_server.emulator
    emulator.faults.fail_tasks(failed_images=1, code="DataInspectionFailed", model=SKETCH_MODEL)
    response = sdk.ImageSynthesis.call(
        model=SKETCH_MODEL,
        prompt="a towering tree",
        sketch_image_url=emulator.sample_image_url("sketch"),
        n=2,
        task="image2image",
    )
    results = response.output.results
    assert response.output.task_status == "SUCCEEDED"
    assert results[0].url and (results[1].url, results[1].code) == ("", "DataInspectionFailed")
    assert response.usage.image_count == 1
    unknown = sdk.ImageSynthesis.fetch("no-such-task")
    assert unknown.status_code == HTTPStatus.OK and unknown.output.task_status == "UNKNOWN"
    refused = sdk.ImageSynthesis.async_call(
        model=SKETCH_MODEL,
        prompt="x",
        sketch_image_url="http://127.0.0.1/a.png",
        n=9,
        task="image2image",
    )
    assert (refused.status_code, refused.code) == (400, "InvalidParameter")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_sketch_with_aio_image_synthesis(
    sdk: Any, emulator_server: RunningServer, anyio_backend: str
) -> None:
    emulator = emulator_server.emulator
    try:
        response = await AioImageSynthesis.call(
            model=SKETCH_MODEL,
            prompt="a towering tree",
            sketch_image_url=emulator.sample_image_url("sketch"),
            n=1,
            style="<anime>",
            task="image2image",
        )
    finally:
        await close_shared_aio_session()
    assert response.status_code == HTTPStatus.OK, response
    assert response.output.task_status == "SUCCEEDED"
    assert len(response.output.results) == 1
    task_id = response.output.task_id
    # The SDK polls GET /tasks/{id}/?n=1&style=... : the emulator took those as polls of the task.
    assert emulator.stats.polls[task_id] >= 1


# --- users' tests: made-up URLs, file names, ids ------------------------------------------------


@contextmanager
def served(config: EmulatorConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    """Another emulator server, with the SDK pointed at it for the rest of the test."""
    with Emulator(config).serve_sync() as server:
        monkeypatch.setattr(dashscope, "base_http_api_url", server.base_url)
        monkeypatch.setattr(dashscope, "api_key", server.api_key)
        yield server


def sketch_call(sdk: Any, url: str, **options: Any) -> Any:
    options.setdefault("n", 1)
    return sdk.ImageSynthesis.call(
        model=SKETCH_MODEL,
        prompt="a towering tree",
        sketch_image_url=url,
        style="<watercolor>",
        size="768*768",
        task="image2image",
        **options,
    )


def file_name(url: str) -> str:
    """The name the service's sample code saves a result under."""
    return PurePosixPath(unquote(urlparse(url).path)).parts[-1]


def test_a_made_up_url_succeeds_through_image_synthesis_call(
    sdk: Any, emulator_server: RunningServer
) -> None:
    # The very URL of the SDK's documentation example: nothing is fetched off loopback.
    response = sketch_call(sdk, MADE_UP)
    assert response.status_code == HTTPStatus.OK, response
    assert response.output.task_status == "SUCCEEDED"
    assert response.usage.image_count == 1
    image = httpx.get(response.output.results[0].url)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_strict_mode_fails_a_made_up_url(sdk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with served(EmulatorConfig(time_scale=0.02, unknown_urls="fail"), monkeypatch):
        response = sketch_call(sdk, MADE_UP)
    assert response.status_code == HTTPStatus.OK  # the task ran, and failed
    assert response.output.task_status == "FAILED"
    assert response.output.code == "InvalidURL"
    assert "request image format is one of the following types" in response.output.message


def test_two_tasks_result_urls_never_share_a_file_name(
    sdk: Any, emulator_server: RunningServer, tmp_path: Path
) -> None:
    first = sketch_call(sdk, emulator_server.emulator.sample_image_url("sketch"), n=2)
    second = sketch_call(sdk, MADE_UP, n=2)
    urls = [result.url for response in (first, second) for result in response.output.results]
    assert len(urls) == 4
    # Saved as the service's sample code saves them: by the URL's file name.
    for url in urls:
        (tmp_path / file_name(url)).write_bytes(httpx.get(url).content)
    assert len(list(tmp_path.iterdir())) == 4
    assert all(file_name(url).endswith(("-1.png", "-2.png")) for url in urls)


def test_two_emulators_give_different_ids(sdk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = []
    for _ in range(2):
        with served(EmulatorConfig(time_scale=0.02), monkeypatch) as server:
            response = sdk.ImageSynthesis.async_call(
                model=SKETCH_MODEL,
                prompt="a towering tree",
                sketch_image_url=server.emulator.sample_image_url("sketch"),
                n=1,
                task="image2image",
            )
            assert response.status_code == HTTPStatus.OK, response
            ids.append(response.output.task_id)
    assert ids[0] != ids[1]


# --- fidelity -----------------------------------------------------------------------------------


def test_the_sdk_gets_each_models_input_error_words(
    sdk: Any, emulator_server: RunningServer
) -> None:
    emulator = emulator_server.emulator
    too_big = emulator.add_image(make_image("PNG", 2100, 1500))
    sketch = sketch_call(sdk, too_big)
    assert (sketch.output.task_status, sketch.output.code) == ("FAILED", "InvalidFile.Resolution")
    assert sketch.output.message.endswith("largest length of image is smaller than 4096.")
    repaint = BaseAsyncApi.call(
        model=REPAINT_MODEL,
        input={"image_url": emulator.add_image(make_image("PNG", 200, 300)), "style_index": 1},
        task_group="aigc",
        task="image-generation",
        function="generation",
    )
    assert repaint.output["code"] == "InvalidImageResolution"
    assert repaint.output["message"] == "The input image resolution is too large or small"
    assert repaint.usage == {"image_num": 0}  # a failed repaint's usage, as its page shows it


def test_the_sdk_is_refused_an_unknown_workspace(sdk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with served(EmulatorConfig(time_scale=0.02, workspaces=["ws-main"]), monkeypatch) as server:
        url = server.emulator.sample_image_url("sketch")
        refused = sdk.ImageSynthesis.async_call(
            model=SKETCH_MODEL, prompt="a tree", sketch_image_url=url, n=1, task="image2image",
            workspace="ws-gone",
        )  # fmt: skip
        accepted = sketch_call(sdk, url, workspace="ws-main")
    assert (refused.status_code, refused.code) == (404, "WorkSpaceNotFound")
    assert accepted.output.task_status == "SUCCEEDED"


def test_the_sdks_list_filters_by_api_key_id_and_region(
    sdk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = EmulatorConfig(api_keys=("sk-one", "sk-two"), time_scale=0.02)
    with served(config, monkeypatch) as server:
        url = server.emulator.sample_image_url("sketch")
        mine = sketch_call(sdk, url).output.task_id
        theirs = sketch_call(sdk, url, api_key="sk-two").output.task_id
        everything = sdk.ImageSynthesis.list(page_size=100)
        key_id = next(i for i in everything.output["data"] if i["task_id"] == theirs)["api_key_id"]
        by_key = sdk.ImageSynthesis.list(api_key_id=key_id)
        here = sdk.ImageSynthesis.list(region="cn-beijing")
        elsewhere = sdk.ImageSynthesis.list(region="ap-southeast-1")
    assert {item["task_id"] for item in everything.output["data"]} == {mine, theirs}
    assert [item["task_id"] for item in by_key.output["data"]] == [theirs]
    assert here.output["total"] == 2 and elsewhere.output["total"] == 0


def test_the_sdk_sees_the_services_time_gaps_and_run_time_shapes(
    sdk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = EmulatorConfig(time_scale=0.02).with_models(run_distribution="uniform", run_jitter=0.1)
    with served(config, monkeypatch) as server:
        url = server.emulator.sample_image_url("portrait")
        response = BaseAsyncApi.call(
            model=REPAINT_MODEL,
            input={"image_url": url, "style_index": 2},
            task_group="aigc",
            task="image-generation",
            function="generation",
        )
    output = response.output

    def moment(name: str) -> datetime:
        parsed = _wire.parse_service_time(output[name])
        assert parsed is not None
        return parsed

    # Tens of milliseconds at the service's pace; here x 0.02, so under 2 ms, and in order.
    assert moment("submit_time") <= moment("scheduled_time") <= moment("start_time")
    run = (moment("end_time") - moment("scheduled_time")).total_seconds()
    assert 15 * 0.02 * 0.9 - 0.002 <= run <= 15 * 0.02 * 1.1 + 0.002  # uniform, +-10 %

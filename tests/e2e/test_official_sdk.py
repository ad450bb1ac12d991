"""The official ``dashscope`` SDK (2.x), pointed at the emulator server, gets the documented shapes.

This is how we know the emulator speaks the real protocol: the SDK's own request building,
headers, upload flow (policy, OSS form, ``oss://``, the resolve header), polling quirks (a
trailing slash and model parameters in the poll's query string) and response parsing all run
unchanged against it. The SDK blocks, so these are plain (synchronous) tests, except the
``AioImageSynthesis`` one, which needs asyncio (aiohttp).
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashscope_async.testing import RunningServer
from tests.images_util import make_image

dashscope = pytest.importorskip("dashscope")
from dashscope.aigc import AioImageSynthesis  # noqa: E402
from dashscope.api_entities.aio_session import close_shared_aio_session  # noqa: E402
from dashscope.client.base_api import BaseAsyncApi  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SKETCH_MODEL = "wanx-sketch-to-image-lite"


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

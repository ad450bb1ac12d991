"""The emulator on the event loop's clock: virtual time drives tasks, and the pytest fixtures."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

import dashscope_async as ds
from dashscope_async.testing import Emulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(virtual_anyio_backend: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return virtual_anyio_backend


async def test_virtual_time_moves_tasks_along() -> None:
    emulator = Emulator()  # the service's own run times: ~15 s, in no real time
    body = {
        "model": "wanx-style-repaint-v1",
        "input": {"image_url": emulator.sample_image_url(), "style_index": 1},
    }
    headers = {"Authorization": f"Bearer {emulator.api_key}", "X-DashScope-Async": "enable"}
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url=emulator.base_url
    ) as http:
        answer = await http.post(
            "/services/aigc/image-generation/generation", json=body, headers=headers
        )
        task_id = answer.json()["output"]["task_id"]
        await anyio.sleep(5)
        assert emulator.status(task_id) is ds.TaskStatus.RUNNING
        await anyio.sleep(15)
        assert emulator.status(task_id) is ds.TaskStatus.SUCCEEDED
    assert emulator.stats.busy_time("wanx-style-repaint-v1") == pytest.approx(15, rel=0.2)


async def test_the_client_helper_runs_a_job_end_to_end() -> None:
    emulator = Emulator()
    async with emulator.client() as client:
        result = await client.generate(
            ds.SketchToImage(emulator.sample_image_url("sketch"), prompt="a towering tree", n=2)
        )
        assert len(result.images) == 2
        # The client's wall clock is the emulator's, so the task list's window finds the task.
        listed = [item.task_id async for item in client.list_tasks()]
    assert listed == [result.task_id]
    assert emulator.stats.credential_leaks == []


async def test_the_fixtures_give_an_emulator_and_a_client(
    dashscope_emulator: Emulator, dashscope_client: ds.AsyncDashScope
) -> None:
    request = ds.StyleRepaint(dashscope_emulator.sample_image_url(), style=ds.RepaintStyle.ANIME)
    result = await dashscope_client.generate(request)
    assert dashscope_emulator.task(result.task_id).body.input.image_url == request.image  # type: ignore[union-attr]
    assert dashscope_emulator.config.time_scale == 0.01

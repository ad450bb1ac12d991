"""The emulator served over real loopback HTTP: three ports, real drops, uploads, downloads."""

from __future__ import annotations

import anyio
import httpx
import pytest

from dashscope_async.testing import Emulator, EmulatorConfig, Fault, RunningServer
from tests.images_util import make_image

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(60)]

SKETCH = "/services/aigc/image2image/image-synthesis"


def headers(server: RunningServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}", "X-DashScope-Async": "enable"}


async def test_three_hosts_on_loopback_ports_serve_a_whole_task() -> None:
    emulator = Emulator(EmulatorConfig(time_scale=0.002))
    async with emulator.serve() as server, httpx.AsyncClient() as http:
        ports = {
            httpx.URL(url).port for url in (server.base_url, server.upload_url, server.result_url)
        }
        assert len(ports) == 3
        assert all(
            httpx.URL(url).host == "127.0.0.1" for url in (server.base_url, server.result_url)
        )
        policy = (
            await http.get(
                server.base_url + "/uploads",
                params={"action": "getPolicy", "model": "wanx-sketch-to-image-lite"},
                headers={"Authorization": f"Bearer {server.api_key}"},
            )
        ).json()["data"]
        assert policy["upload_host"] == server.upload_url
        key = f"{policy['upload_dir']}/tree.png"
        uploaded = await http.post(
            server.upload_url,
            data={
                "OSSAccessKeyId": policy["oss_access_key_id"],
                "Signature": policy["signature"],
                "policy": policy["policy"],
                "key": key,
                "success_action_status": "200",
            },
            files={"file": ("tree.png", make_image("PNG", 400, 400), "image/png")},
        )
        assert uploaded.status_code == 200
        body = {
            "model": "wanx-sketch-to-image-lite",
            "input": {"sketch_image_url": f"oss://{key}", "prompt": "a tree"},
            "parameters": {"n": 1},
        }
        answer = await http.post(
            server.base_url + SKETCH,
            json=body,
            headers={**headers(server), "X-DashScope-OssResourceResolve": "enable"},
        )
        task_id = answer.json()["output"]["task_id"]
        ends = emulator.task(task_id).ended_at  # the slot was free: it started at once
        assert ends is not None
        await anyio.sleep(ends - emulator.now() + 0.01)
        output = (
            await http.get(f"{server.base_url}/tasks/{task_id}", headers=headers(server))
        ).json()["output"]
        image = await http.get(output["results"][0]["url"])
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert emulator.stats.credential_leaks == []


async def test_dropped_connections_really_drop_and_ambiguous_submits_create_tasks() -> None:
    emulator = Emulator(EmulatorConfig(time_scale=0.01))
    body = {
        "model": "wanx-sketch-to-image-lite",
        "input": {"sketch_image_url": emulator.sample_image_url("sketch"), "prompt": "a tree"},
    }
    async with emulator.serve() as server, httpx.AsyncClient() as http:
        emulator.faults.script("submit", Fault.drop_before())
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.base_url + SKETCH, json=body, headers=headers(server))
        assert emulator.tasks == {}
        emulator.faults.script("submit", Fault.drop_after())
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.base_url + SKETCH, json=body, headers=headers(server))
        assert len(emulator.tasks) == 1
        ok = await http.post(server.base_url + SKETCH, json=body, headers=headers(server))
        assert ok.status_code == 200


async def test_credentials_sent_to_the_result_host_are_recorded() -> None:
    emulator = Emulator()
    async with emulator.serve() as server, httpx.AsyncClient() as http:
        response = await http.get(
            emulator.sample_image_url("portrait"), headers={"Authorization": "Bearer sk-emulator"}
        )
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert server.result_url in emulator.sample_image_url()
    assert [(leak.host, leak.header) for leak in emulator.stats.credential_leaks] == [
        ("result", "authorization")
    ]

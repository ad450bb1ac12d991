"""The CLI's batch engine (``run_jobs``) against the scripted fake service, in virtual time:
results saved and reported, failures and budget stops counted, the exit status they give."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from rich.console import Console

import dashscope_async as ds
from dashscope_async.cli._app import ExitCode, Settings
from dashscope_async.cli._batch import BatchReport, JobSpec, run_jobs
from tests.fake_service import FakeClient
from tests.images_util import make_image


@pytest.fixture
def anyio_backend(virtual_anyio_backend: object) -> object:
    return virtual_anyio_backend


def _result_host() -> httpx.AsyncClient:
    png = make_image("PNG", 64, 64)

    def answer(request: httpx.Request) -> httpx.Response:
        assert "authorization" not in request.headers
        return httpx.Response(200, content=png, headers={"content-type": "image/png"})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def _head(path: Path) -> bytes:
    return path.read_bytes()[:4]


def _fake() -> FakeClient:
    fake = FakeClient(run_seconds=3.0)
    fake.http = _result_host()
    return fake


def _specs(*prompts: str, repaints: int = 2) -> list[JobSpec]:
    specs = [
        JobSpec(ds.StyleRepaint(f"https://e.x/{i}.png", style=2), label=f"r{i}", key=f"r{i}")
        for i in range(repaints)
    ]
    specs += [
        JobSpec(ds.SketchToImage("https://e.x/s.png", prompt=p), label=p, key=p, line=9)
        for p in prompts
    ]
    return specs


async def _run(
    fake: FakeClient, specs: list[JobSpec], tmp_path: Path, budget: ds.Budget | None = None
) -> BatchReport:
    console = Console(file=io.StringIO(), width=100)
    try:
        return await run_jobs(
            fake.as_client(),
            specs,
            out_dir=tmp_path,
            settings=Settings(),
            console=console,
            budget=budget,
        )
    finally:
        http: object = fake.http
        assert isinstance(http, httpx.AsyncClient)
        await http.aclose()


@pytest.mark.anyio
async def test_every_job_is_saved_and_reported(tmp_path: Path) -> None:
    fake = _fake()
    report = await _run(fake, _specs("tree"), tmp_path)
    assert report.exit_code is ExitCode.OK
    records = report.records
    assert [r.status for r in records] == ["succeeded"] * 3
    assert [r.key for r in records] == ["r0", "r1", "tree"]
    for record in records:
        assert record.task_id in fake.tasks
        (file,) = record.files
        assert Path(file).parent == tmp_path
        assert _head(Path(file)) == b"\x89PNG"
    assert records[2].line == 9
    summary = report.to_json(results_file=tmp_path / "r.jsonl")
    assert summary["status"] == "ok" and summary["counts"] == {"succeeded": 3}
    json.dumps(summary)


@pytest.mark.anyio
async def test_a_failed_job_makes_the_exit_status_1(tmp_path: Path) -> None:
    fake = _fake()
    fake.failing_prompts.add("doomed")
    report = await _run(fake, _specs("fine", "doomed", repaints=0), tmp_path)
    assert report.exit_code is ExitCode.JOBS_FAILED
    statuses = {r.key: (r.status, r.error_code) for r in report.records}
    assert statuses == {"fine": ("succeeded", None), "doomed": ("failed", "InternalError.Algo")}


@pytest.mark.anyio
async def test_budget_stops_jobs_before_they_are_sent(tmp_path: Path) -> None:
    fake = _fake()
    report = await _run(fake, _specs(repaints=3), tmp_path, budget=ds.Budget(images=2))
    statuses = [r.status for r in report.records]
    assert statuses.count("succeeded") == 2 and statuses.count("over-budget") == 1
    assert len(fake.tasks) == 2
    assert report.exit_code is ExitCode.JOBS_FAILED

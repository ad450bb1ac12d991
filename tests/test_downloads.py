"""Downloads against the emulator's result host gone wrong: endless and trickling bodies, redirect
loops, repeated file names; and names unique per job, whatever the keys look like.

Bodies that never end and trickles run in virtual time (published inputs are served without a
worker thread, so the clock only moves on the trickle's own sleeps); the runner's naming test
runs a fast emulator in real time.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import anyio
import pytest

import dashscope_async as ds
from dashscope_async._downloads import result_file_name
from dashscope_async._journal import fingerprint
from dashscope_async.testing import Emulator, EmulatorConfig, Fault
from tests.images_util import make_image
from tests.virtual_time import virtual_time

PNG = make_image("PNG", 300, 300)


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@virtual_time
async def test_an_endless_body_stops_at_the_size_cap() -> None:
    with tempfile.TemporaryDirectory() as folder:
        await _test_an_endless_body_stops_at_the_size_cap(Path(folder))


async def _test_an_endless_body_stops_at_the_size_cap(tmp_path: Path) -> None:
    emulator = Emulator()
    url = emulator.add_image(PNG, "portrait.png")
    emulator.faults.script("result", Fault.endless_body())
    limits = ds.DownloadLimits(max_bytes=2 * 1024 * 1024)
    async with emulator.client(download_limits=limits) as client:
        with pytest.raises(ds.DownloadTooLargeError) as caught:
            await client.download(ds.GeneratedImage(url), tmp_path / "out.png")
    assert "2,097,152 bytes" in str(caught.value)
    assert caught.value.url == url
    assert _files(tmp_path) == []  # no partial file left behind
    assert emulator.stats.requests["result"] == 1  # a cap is not retried


@virtual_time
async def test_a_trickle_ends_at_the_whole_download_deadline() -> None:
    with tempfile.TemporaryDirectory() as folder:
        await _test_a_trickle_ends_at_the_whole_download_deadline(Path(folder))


async def _test_a_trickle_ends_at_the_whole_download_deadline(tmp_path: Path) -> None:
    emulator = Emulator()
    url = emulator.add_image(PNG, "portrait.png")
    emulator.faults.script("result", Fault.trickle(bytes_per_second=1.0), times=10)
    limits = ds.DownloadLimits(timeout=5.0)
    async with emulator.client(download_limits=limits) as client:
        started = anyio.current_time()
        with pytest.raises(ds.DownloadTimeoutError, match=r"within 5 s"):
            await client.download(ds.GeneratedImage(url), tmp_path / "out.png")
        waited = anyio.current_time() - started
    assert 5.0 <= waited < 6.0  # the deadline, not len(PNG) seconds
    assert _files(tmp_path) == []


@virtual_time
async def test_a_redirect_loop_is_a_typed_error_not_a_hang() -> None:
    with tempfile.TemporaryDirectory() as folder:
        await _test_a_redirect_loop_is_a_typed_error_not_a_hang(Path(folder))


async def _test_a_redirect_loop_is_a_typed_error_not_a_hang(tmp_path: Path) -> None:
    emulator = Emulator()
    url = emulator.add_image(PNG, "portrait.png")
    emulator.faults.script("result", Fault.redirect_loop(), times=100)
    async with emulator.client() as client:
        with pytest.raises(ds.DownloadError, match="redirected"):
            await client.download(ds.GeneratedImage(url), tmp_path / "out.png")
    assert emulator.stats.requests["result"] == 21  # httpx's limit of 20 redirects, once
    assert _files(tmp_path) == []


@virtual_time
async def test_an_announced_size_over_the_cap_is_refused_before_the_body() -> None:
    with tempfile.TemporaryDirectory() as folder:
        await _test_an_announced_size_over_the_cap_is_refused_before_the_body(Path(folder))


async def _test_an_announced_size_over_the_cap_is_refused_before_the_body(tmp_path: Path) -> None:
    emulator = Emulator()
    url = emulator.add_image(PNG, "portrait.png")
    async with emulator.client(download_limits=ds.DownloadLimits(max_bytes=100)) as client:
        with pytest.raises(ds.DownloadTooLargeError, match="announced"):
            await client.download(ds.GeneratedImage(url), tmp_path)
    assert _files(tmp_path) == []


@virtual_time
async def test_urls_with_the_same_file_name_never_overwrite_each_other() -> None:
    with tempfile.TemporaryDirectory() as folder:
        await _test_urls_with_the_same_file_name_never_overwrite_each_other(Path(folder))


async def _test_urls_with_the_same_file_name_never_overwrite_each_other(tmp_path: Path) -> None:
    emulator = Emulator()
    first = emulator.add_image(PNG, "a/image.png")
    second = emulator.add_image(make_image("PNG", 320, 320), "b/image.png")
    async with emulator.client() as client:
        one = await client.download(ds.GeneratedImage(first), tmp_path)
        two = await client.download(ds.GeneratedImage(second), tmp_path)
        again = await client.download(ds.GeneratedImage(first), tmp_path)
    assert one != two and one.name.startswith("image-") and two.name.startswith("image-")
    assert again == one  # the same image fetched again replaces only itself
    assert one.read_bytes() == PNG and two.read_bytes() != PNG
    assert len(_files(tmp_path)) == 2


FAST = EmulatorConfig(time_scale=0.0005, render_results=False, result_file_name="image.png")


@pytest.mark.anyio
async def test_results_served_under_one_file_name_are_saved_apart(tmp_path: Path) -> None:
    emulator = Emulator(FAST.without_limits())
    async with emulator.client() as client:
        results = [
            await client.generate(ds.StyleRepaint(emulator.sample_image_url(), style=2))
            for _ in range(2)
        ]
        urls = [result.images[0].url for result in results]
        assert {url.split("?")[0].rsplit("/", 1)[1] for url in urls} == {"image.png"}
        saved = [await client.download(result.images[0], tmp_path) for result in results]
    assert saved[0] != saved[1]
    assert len(_files(tmp_path)) == 2
    with pytest.raises(ValueError, match="file name"):
        EmulatorConfig(result_file_name="a/b.png")


@pytest.mark.anyio
async def test_distinct_job_keys_never_share_a_result_file(tmp_path: Path) -> None:
    emulator = Emulator(FAST.without_limits())
    sample = emulator.sample_image_url()
    keys: list[str | None] = [
        "张三",
        "李四",
        "photos/alice",
        "photos_alice",
        "000002",
        "Alice",
        "alice",
    ]
    jobs = [ds.Job(ds.StyleRepaint(sample, style=2), key=key) for key in keys]
    jobs.insert(2, ds.Job(ds.StyleRepaint(sample, style=3)))  # unkeyed, at index 2
    async with (
        emulator.client() as client,
        ds.AsyncTaskRunner(client, download_dir=tmp_path, limits=ds.Limits.lifted()) as runner,
    ):
        outcomes = [outcome async for outcome in runner.map(jobs)]
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes]
    paths = [path for outcome in outcomes for path in outcome.files]
    assert len(paths) == len(jobs)
    assert len(set(paths)) == len(jobs)
    assert len(_files(tmp_path)) == len(jobs)  # nothing overwrote anything
    by_index = {outcome.index: outcome.files[0].name for outcome in outcomes}
    unkeyed = result_file_name(2, 0, ".png", fingerprint=fingerprint(jobs[2].request))
    assert by_index[2] == unkeyed and re.fullmatch(r"000002-[0-9a-f]{10}-0\.png", unkeyed)
    assert by_index[5] != unkeyed and by_index[5].startswith("000002-")
    assert {by_index[i] for i in range(len(jobs))} == {
        result_file_name(job.key, 0, ".png") if job.key is not None else unkeyed for job in jobs
    }


@pytest.mark.anyio
async def test_an_unkeyed_jobs_result_is_saved_when_its_local_input_is_gone(
    tmp_path: Path,
) -> None:
    # The file is uploaded, then deleted while its task runs: the billed result is still saved.
    source = tmp_path / "portrait.png"
    source.write_bytes(make_image("PNG", 300, 300))
    emulator = Emulator(EmulatorConfig(time_scale=0.02, render_results=False))
    out = tmp_path / "out"
    async with emulator.client() as client, ds.AsyncTaskRunner(client, download_dir=out) as runner:
        handle = runner.submit(ds.StyleRepaint(str(source), style=2))
        await handle.wait_submitted()
        source.unlink()
        outcome = await handle.wait()
    assert outcome.ok, outcome.error
    (saved,) = outcome.files
    assert saved.parent == out and re.fullmatch(r"000000-[0-9a-f]{10}-0\.png", saved.name)


@pytest.mark.anyio
async def test_no_log_line_or_error_carries_a_result_signature(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = Emulator(FAST)
    emulator.faults.script("result", Fault.error(503), times=1)
    caplog.set_level(logging.DEBUG)
    async with emulator.client() as client:
        result = await client.generate(ds.StyleRepaint(emulator.sample_image_url(), style=2))
        assert "Signature=" in result.images[0].url
        await client.download(result.images[0], tmp_path)  # one 503, then retried
        emulator.faults.script("result", Fault.error(404, "NoSuchKey"), times=1)
        with pytest.raises(ds.APIError) as caught:
            await client.download(result.images[0], tmp_path)
    library_lines = [r.getMessage() for r in caplog.records if r.name.startswith("dashscope_async")]
    assert any("retrying" in line for line in library_lines)
    assert not any("Signature" in line for line in library_lines)
    assert "Signature" not in str(caught.value)

"""The command line given hostile input, as a subprocess against the emulator on loopback: every
row exits with its documented status and a message (never a traceback), and sends nothing.

Rows: non-UTF-8 arguments, a CSV field over 128 KiB, duplicate JSON keys and CSV columns,
non-string keys and prompts, an unreachable service (status 4), Ctrl-C while a manifest is
read (status 130), and a second Ctrl-C that only shortens the wait for cancels (the results
file is still written).
"""

from __future__ import annotations

import base64
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import attrs
import pytest

from dashscope_async.testing import Emulator, EmulatorConfig, Fault
from tests.e2e.test_cli_e2e import REPO, Served, cli_env, start_batch, submissions
from tests.images_util import make_image

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

URL = "https://example.com/portrait.png"
SMALL_DATA_URI = "data:image/png;base64," + base64.b64encode(make_image("PNG", 100, 100)).decode()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    emulator = Emulator(EmulatorConfig(time_scale=0.05))
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(emulator.serve()) as server:
            yield Served(emulator, str(server.base_url), str(server.api_key))


def _requests(served: Served) -> int:
    return sum(served.emulator.stats.requests.values())


def _run(
    served: Served, *args: str | bytes, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    command = [os.fsencode(sys.executable), b"-m", b"dashscope_async"]
    command += [arg if isinstance(arg, bytes) else os.fsencode(arg) for arg in args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=cli_env(served),
        cwd=REPO,
        check=False,
    )


@attrs.frozen
class CliRow:
    name: str
    args: tuple[str | bytes, ...]
    status: int
    says: tuple[str, ...]
    manifest: str | None = None
    manifest_name: str = "jobs.jsonl"


ROWS = [
    CliRow("a non-UTF-8 prompt", ("sketch", URL, "--prompt", b"\xff", "-o", "OUT"), 2, ("prompt",)),
    CliRow("a non-UTF-8 style", ("repaint", URL, "--style", b"\xff", "-o", "OUT"), 2, ("--style",)),
    CliRow(
        "a non-UTF-8 base URL",
        ("--base-url", b"http://127.0.0.1:9/\xff", "repaint", URL, "--style", "anime", "-o", "OUT"),
        2,
        ("base_url",),
    ),
    CliRow("a non-UTF-8 task id", ("tasks", "get", b"\xff"), 2, ("task_id",)),
    CliRow(
        "a CSV field over 128 KiB",
        ("batch", "MANIFEST", "-o", "OUT"),
        2,
        ("jobs.csv:2: image:", "128 KiB"),
        manifest=f"kind,image,style\nrepaint,https://example.com/{'a' * 140_000}.png,anime\n",
        manifest_name="jobs.csv",
    ),
    CliRow(
        "duplicate JSON keys",
        ("batch", "MANIFEST", "-o", "OUT"),
        2,
        ("jobs.jsonl:1: style:", "twice"),
        manifest=json.dumps({"kind": "repaint", "image": URL, "style": "anime"})[:-1]
        + ', "style": "fresh"}\n',
    ),
    CliRow(
        "duplicate CSV columns",
        ("batch", "MANIFEST", "-o", "OUT"),
        2,
        ("jobs.csv:1: style:", "twice"),
        manifest=f"kind,image,style,Style\nrepaint,{URL},anime,fresh\n",
        manifest_name="jobs.csv",
    ),
    CliRow(
        "a key that is an object",
        ("batch", "MANIFEST", "-o", "OUT"),
        2,
        ("jobs.jsonl:1: key:", "must be a string"),
        manifest=json.dumps({"kind": "repaint", "image": URL, "style": "anime", "key": {"a": 1}})
        + "\n",
    ),
    CliRow(
        "a data: URI too small to be accepted",
        ("batch", "MANIFEST", "-o", "OUT"),
        2,
        ("jobs.jsonl:1: image:", "100x100"),
        manifest=json.dumps({"kind": "repaint", "image": SMALL_DATA_URI, "style": "anime"}) + "\n",
    ),
    CliRow(
        "a prompt that is a list",
        ("batch", "MANIFEST", "-o", "OUT"),
        2,
        ("jobs.jsonl:1: prompt:", "must be a string"),
        manifest=json.dumps({"kind": "sketch", "sketch": URL, "prompt": ["a", "b"]}) + "\n",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_hostile_command_lines_exit_with_a_message(
    row: CliRow, served: Served, tmp_path: Path
) -> None:
    manifest = tmp_path / row.manifest_name
    if row.manifest is not None:
        manifest.write_text(row.manifest, encoding="utf-8")
    args = [
        os.fspath(manifest) if a == "MANIFEST" else os.fspath(tmp_path / "out") if a == "OUT" else a
        for a in row.args
    ]
    before = _requests(served)
    done = _run(served, *args)
    assert done.returncode == row.status, done.stderr
    assert "Traceback" not in done.stderr
    for words in row.says:
        assert words in done.stderr, done.stderr
    assert served.api_key not in done.stderr + done.stdout
    assert _requests(served) == before  # nothing was sent


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_batch_against_an_unreachable_service_exits_4(served: Served, tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    lines = [json.dumps({"kind": "repaint", "image": URL, "style": "anime"}) for _ in range(2)]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    base_url = f"http://127.0.0.1:{_closed_port()}/api/v1"
    done = _run(served, "--base-url", base_url, "batch", os.fspath(manifest), "-o", os.fspath(out))
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [record["status"] for record in records] == ["failed", "failed"]


def _open_writer(fifo: Path, process: subprocess.Popen[str]) -> int:
    """The FIFO's write end, opened once the command line has opened it to read."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO:
                raise
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the command line never opened its manifest"
        time.sleep(0.01)


def test_ctrl_c_while_a_manifest_is_read_exits_130(served: Served, tmp_path: Path) -> None:
    # The manifest is a pipe that never ends (as `batch <(make-jobs)` gives): the command line
    # is still reading it, whatever the machine's speed, when Ctrl-C comes.
    manifest = tmp_path / "jobs.jsonl"
    os.mkfifo(manifest)
    before = _requests(served)
    process = start_batch(served, manifest, "out", cwd=tmp_path)
    writer = _open_writer(manifest, process)
    try:
        line = json.dumps({"kind": "repaint", "image": URL, "style": "anime"})
        os.write(writer, (line + "\n").encode() * 10)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        os.close(writer)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    assert _requests(served) == before
    assert not (tmp_path / "out").exists()  # stopped before anything was set up


def test_a_second_ctrl_c_only_shortens_the_wait_for_cancels(served: Served, tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    sample = served.emulator.sample_image_url()
    lines = [
        json.dumps({"key": f"job-{i}", "kind": "repaint", "image": sample, "style": "anime"})
        for i in range(6)
    ]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    # Cancels hang: without a second Ctrl-C the runner would wait its full cleanup time (10 s).
    served.emulator.faults.script("cancel_task", Fault.slow(60), times=20)
    before = submissions(served.emulator)
    cancels_before = served.emulator.stats.requests["cancel_task"]
    process = start_batch(served, manifest, out)
    try:
        deadline = time.monotonic() + 30
        while submissions(served.emulator) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while (
            served.emulator.stats.requests["cancel_task"] == cancels_before
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        # A cancel is on its way: the first Ctrl-C was handled, so this one is the second.
        second = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
        waited = time.monotonic() - second
    finally:
        served.emulator.faults.clear()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert served.emulator.stats.requests["cancel_task"] > cancels_before  # a cancel was waited on
    assert waited < 8.0  # not the 10 s cleanup: the second Ctrl-C cut the wait short
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6  # the results file is written, every job in it
    del stdout

"""The command line end to end: the real entry point (``python -m dashscope_async``) as a
subprocess, against the emulator serving on loopback.

The emulator runs in this process on a background event loop (so its record of what it saw can
be read), the CLI in a child process pointed at it with --base-url and --api-key. Covers the demo,
a bad manifest (nothing sent), --json output, exit codes, and a batch interrupted with SIGINT and
resumed from its journal without sending any job twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import attrs
import pytest
from PIL import Image

import dashscope_async as ds
from dashscope_async.cli._sample_images import write_sample_images
from dashscope_async.testing import Emulator, EmulatorConfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]


@attrs.frozen
class Served:
    emulator: Any
    base_url: str
    api_key: str = attrs.field(repr=False)

    def cli(
        self, *args: str, timeout: float = 60, **options: Any
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dashscope_async", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=cli_env(self),
            cwd=options.get("cwd", REPO),
            check=False,
        )


def cli_env(served: Served | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env["COLUMNS"] = "160"
    if served is not None:
        env["DASHSCOPE_API_KEY"] = served.api_key
        env["DASHSCOPE_HTTP_BASE_URL"] = served.base_url
    return env


def start_batch(
    served: Served, manifest: Path, out: Path | str, *, cwd: Path | None = None
) -> subprocess.Popen[str]:
    """``dashscope-async batch MANIFEST -o OUT`` against the served emulator, running on."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dashscope_async",
            "batch",
            os.fspath(manifest),
            "-o",
            os.fspath(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(served),
        cwd=cwd,
    )


def submissions(emulator: Any) -> int:
    """Submissions the emulator accepted or refused, over both models."""
    counted = emulator.stats.submissions
    return int(sum(counted.values()) if isinstance(counted, dict) else counted)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    emulator = Emulator(EmulatorConfig(time_scale=0.05))
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(emulator.serve()) as server:
            yield Served(emulator, str(server.base_url), str(server.api_key))


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample_images(tmp_path_factory.mktemp("inputs"))


def repaint_manifest(path: Path, samples: dict[str, Path], count: int) -> Path:
    styles = ["anime", "clay-world", "pixel-world", "chinese-ink", "3", "7", "31", "fresh"]
    people = ["ada", "ben", "chloe"]
    lines = [
        json.dumps(
            {
                "key": f"job-{i}",
                "kind": "repaint",
                "image": os.fspath(samples[f"{people[i % 3]}.png"]),
                "style": styles[i % len(styles)],
            }
        )
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_demo_end_to_end(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "dashscope_async", "demo", "-o", "out"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(None),
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    out = tmp_path / "out"
    page = (out / "index.html").read_text()
    results = sorted((out / "results").iterdir())
    assert len(results) >= 8
    for image in results:
        with Image.open(image) as opened:
            opened.verify()
        assert f'src="results/{image.name}"' in page
    for sample in ("ada.png", "tree-sketch.png", "style-swirls.png"):
        assert f'src="inputs/{sample}"' in page
    for key in ("ada-anime", "chloe-custom-style", "tree-watercolor", "house-flat-illustration"):
        assert key in result.stdout
    assert "succeeded" in result.stdout and "utilisation" in result.stdout.lower()


def test_a_bad_manifest_sends_nothing(served: Served, tmp_path: Path) -> None:
    manifest = tmp_path / "bad.csv"
    manifest.write_text(
        "kind,image,style\n"
        f"repaint,{tmp_path / 'missing.png'},anime\n"
        "repaint,https://127.0.0.1:9/a.png,no-such-style\n"
    )
    before = submissions(served.emulator)
    result = served.cli("batch", os.fspath(manifest), "-o", os.fspath(tmp_path / "out"))
    assert result.returncode == 2
    assert "bad.csv:2: image" in result.stderr and "bad.csv:3: style" in result.stderr
    assert "Traceback" not in result.stderr
    assert submissions(served.emulator) == before
    assert not (tmp_path / "out").exists()


def test_batch_json_output_and_results_file(
    served: Served, samples: dict[str, Path], tmp_path: Path
) -> None:
    manifest = repaint_manifest(tmp_path / "jobs.jsonl", samples, 2)
    with (tmp_path / "jobs.jsonl").open("a") as file:
        file.write(
            json.dumps(
                {
                    "key": "tree",
                    "kind": "sketch",
                    "sketch": os.fspath(samples["tree-sketch.png"]),
                    "prompt": "a tree",
                    "n": 2,
                }
            )
            + "\n"
        )
    out = tmp_path / "out"
    result = served.cli("--json", "batch", os.fspath(manifest), "-o", os.fspath(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "ok" and summary["counts"] == {"succeeded": 3}
    jobs = {job["key"]: job for job in summary["jobs"]}
    assert len(jobs["tree"]["files"]) == 2
    assert all(Path(f).is_file() for job in jobs.values() for f in job["files"])
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["key"] for line in lines] == ["job-0", "job-1", "tree"]
    assert all(line["status"] == "succeeded" and line["task_id"] for line in lines)
    assert served.api_key not in result.stdout + result.stderr


def test_exit_codes_for_missing_and_refused_keys(served: Served, samples: dict[str, Path]) -> None:
    image = os.fspath(samples["ada.png"])
    env = cli_env(None)
    missing = subprocess.run(
        [sys.executable, "-m", "dashscope_async", "repaint", image, "--style", "anime"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert missing.returncode == 3 and "no API key" in missing.stderr
    refused = served.cli("--api-key", "sk-wrong-key-123456", "tasks", "get", "no-such-task")
    assert refused.returncode == 3, refused.stderr
    assert "sk-wrong-key-123456" not in refused.stdout + refused.stderr
    unknown = served.cli("tasks", "get", "no-such-task")
    assert unknown.returncode == 4, unknown.stdout
    assert "no task no-such-task" in unknown.stderr and unknown.stdout == ""


def test_interrupted_batch_resumes_without_sending_a_job_twice(
    served: Served, samples: dict[str, Path], tmp_path: Path
) -> None:
    count = 8
    manifest = repaint_manifest(tmp_path / "jobs.jsonl", samples, count)
    out = tmp_path / "out"
    before = submissions(served.emulator)
    process = start_batch(served, manifest, out)
    deadline = time.monotonic() + 30
    while submissions(served.emulator) - before < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stdout
    first = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {line["status"] for line in first} <= {"succeeded", "canceled", "running"}
    assert any(line["status"] == "canceled" for line in first)
    # What the results say about each task is what the service did with it.
    for line in first:
        if line["status"] == "running":
            assert served.emulator.status(line["task_id"]) in (
                ds.TaskStatus.RUNNING,
                ds.TaskStatus.SUCCEEDED,
            )
            assert "may finish and be billed" in line["error"]
        elif line["status"] == "canceled" and line["task_id"]:
            assert served.emulator.status(line["task_id"]) is ds.TaskStatus.CANCELED
        elif line["status"] == "succeeded":
            # Also a job stopped while saving its images: its task was billed.
            assert served.emulator.status(line["task_id"]) is ds.TaskStatus.SUCCEEDED
    left_running = sum(line["status"] == "running" for line in first)
    if left_running:
        assert "still running on the service" in stdout
    sent_first = submissions(served.emulator) - before

    again = served.cli("batch", os.fspath(manifest), "-o", os.fspath(out))
    assert again.returncode == 0, again.stderr
    done_first = sum(line["status"] == "succeeded" for line in first)
    assert f"{done_first} done, {left_running} in flight" in again.stderr, (first, again.stderr)
    second = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["status"] for line in second] == ["succeeded"] * count
    # Jobs finished before the interrupt were replayed, not sent again, and keep their times;
    # a task left running was collected, not sent again.
    finished_first = {
        line["key"]: (line["task_id"], line["seconds"])
        for line in first
        if line["status"] in ("succeeded", "running")
    }
    for line in second:
        if line["key"] in finished_first:
            task_id, seconds = finished_first[line["key"]]
            assert line["task_id"] == task_id
            if seconds is not None and line["replayed"]:
                assert line["seconds"] == seconds
    assert submissions(served.emulator) - before <= sent_first + (count - len(finished_first))

"""Every Python code block of README.md and docs/ runs against the emulator, as a reader would run
it (see ``tests/doc_snippets.py`` for how blocks are told apart and run)."""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

import dashscope_async as ds
from dashscope_async.cli._sample_images import write_sample_images
from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer
from tests.doc_snippets import NOT_RUN, ROOT, Snippet, excerpt_mismatches, python_snippets
from tests.loopback_guard import sitecustomize as loopback_guard

SNIPPETS = python_snippets()
#: Seconds one block may take (programs start a Python process; tasks run at 1/100 speed).
BLOCK_TIMEOUT = 120
#: Fragment namespaces, one per page, kept across the page's blocks (in page order).
SESSIONS: dict[Path, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def served() -> Iterator[RunningServer]:
    emulator = Emulator(EmulatorConfig(time_scale=0.01))
    with emulator.serve_sync(port=0) as server:
        yield server


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local files the docs name: portraits, a painting and a sketch."""
    folder = tmp_path_factory.mktemp("reader")
    samples = write_sample_images(folder / "samples")

    def save(source: str, target: str) -> None:
        path = folder / target
        path.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(samples[source]) as image:
            image.convert("RGB").save(path)

    for target in ("me.jpg", "small-portrait.jpg", "photos/me.jpg", "photos/ann.jpg"):
        save("ada.png", target)
    save("ben.png", "photos/bob.jpg")
    save("style-swirls.png", "photos/van-gogh.png")
    save("tree-sketch.png", "tree.png")
    return folder


def reader_env(server: RunningServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env.update(
        DASHSCOPE_HTTP_BASE_URL=server.base_url,
        DASHSCOPE_API_KEY=server.api_key,
        # The guard's site hook first: the programs' sockets reach loopback only.
        PYTHONPATH=os.pathsep.join([str(GUARD), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def loopback_only(resolve: Callable[..., Any]) -> Callable[..., Any]:
    """``socket.getaddrinfo`` that refuses every host but loopback: a block never reaches out."""

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"the docs' tests reach loopback only, not {name}")
        return resolve(host, *args, **kwargs)

    return guarded


#: The folder whose ``sitecustomize`` keeps the programs' sockets on loopback.
GUARD = Path(loopback_guard.__file__).parent


def run_process(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT, check=False
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def session(snippet: Snippet, server: RunningServer) -> dict[str, Any]:
    """The page's namespace, with the names ``SESSION_NAMES`` promises."""
    namespace = SESSIONS.get(snippet.page)
    if namespace is None:
        portrait = server.emulator.sample_image_url("portrait")
        sketch = server.emulator.sample_image_url("sketch")
        requests = [ds.StyleRepaint(f"{portrait}?n={i}", style=i) for i in range(2)]

        class Progress:
            advanced = 0

            def advance(self) -> None:
                self.advanced += 1

        namespace = SESSIONS[snippet.page] = {
            "__name__": "__main__",
            "ds": ds,
            "anyio": anyio,
            "httpx": __import__("httpx"),
            "pytest": pytest,
            "Path": Path,
            "Emulator": Emulator,
            "EmulatorConfig": EmulatorConfig,
            "requests": requests,
            "jobs": requests,
            "request": requests[0],
            "urls": [portrait, f"{portrait}?n=2"],
            "photos": [portrait, f"{portrait}?n=3"],
            "url": sketch,
            "image_url": portrait,
            "sketch_url": sketch,
            "model": ds.STYLE_REPAINT.name,
            "progress": Progress(),
        }
    return namespace


def run_fragment(snippet: Snippet, server: RunningServer, env: dict[str, str]) -> None:
    namespace = session(snippet, server)

    async def go() -> None:
        async with ds.AsyncDashScope(api_key=env["DASHSCOPE_API_KEY"]) as client:
            async with ds.AsyncTaskRunner(client, download_dir="out") as runner:
                namespace.update(client=client, runner=runner, emulator=server.emulator)
                with anyio.fail_after(BLOCK_TIMEOUT):
                    result = eval(snippet.compiled(), namespace)  # the docs' own code
                    if inspect.iscoroutine(result):
                        await result

    anyio.run(go, backend="asyncio")


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.name for s in SNIPPETS])
def test_the_block_runs(
    snippet: Snippet,
    served: RunningServer,
    files: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if snippet.kind == "not-run":
        assert snippet.title is not None
        reason = snippet.title.removeprefix(NOT_RUN).strip(" :-")
        assert len(reason) > 10, f"{snippet.name}: say why it is not run"
        pytest.skip(f"{snippet.name}: {snippet.title}")
    if snippet.kind == "excerpt":
        assert excerpt_mismatches(snippet) == [], f"{snippet.name} differs from {snippet.title}"
        return
    env = reader_env(served)
    if snippet.kind == "program":
        (files / "snippet.py").write_text(snippet.code, encoding="utf-8")
        run_process([sys.executable, "snippet.py"], files, env)
    elif snippet.kind == "test":
        folder = files / f"test-{snippet.line}"
        folder.mkdir(exist_ok=True)
        (folder / "test_snippet.py").write_text(snippet.code, encoding="utf-8")
        run_process(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_snippet.py"],
            folder,
            env,
        )
    else:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(files)
        monkeypatch.setattr(socket, "getaddrinfo", loopback_only(socket.getaddrinfo))
        monkeypatch.setattr(socket.socket, "connect", loopback_guard.guarded_connect)
        monkeypatch.setattr(socket.socket, "connect_ex", loopback_guard.guarded_connect_ex)
        run_fragment(snippet, served, env)


def test_the_collector_finds_every_kind() -> None:
    kinds = {s.kind for s in SNIPPETS}
    assert {"program", "test", "fragment"} <= kinds
    assert len(SNIPPETS) >= 40


@pytest.mark.parametrize("address", ["10.0.0.5", "::ffff:10.0.0.5"])
def test_a_program_the_docs_start_cannot_reach_past_loopback(
    address: str, tmp_path: Path, served: RunningServer
) -> None:
    # A literal address never goes through getaddrinfo: the socket itself refuses it. The probe
    # tries only once it has seen the guard in place, so a broken guard sends nothing either.
    family = "AF_INET6" if ":" in address else "AF_INET"
    program = (
        "import socket\n"
        "if socket.socket.connect.__name__ != 'guarded_connect':\n"
        "    raise SystemExit('the loopback guard is not installed')\n"
        f"s = socket.socket(socket.{family})\n"
        "try:\n"
        f"    s.connect(({address!r}, 6379))\n"
        "except OSError as exc:\n"
        "    assert 'loopback only' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('connected')\n"
        "s = socket.socket(socket.AF_INET)\n"
        "assert 'loopback only' not in repr(s.connect_ex(('127.0.0.1', 9)))\n"
    )
    (tmp_path / "probe.py").write_text(program, encoding="utf-8")
    run_process([sys.executable, "probe.py"], tmp_path, reader_env(served))

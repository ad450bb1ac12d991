"""A throwaway ``redis-server`` on a free loopback port, for the tests that need a real Redis.

``RedisServer.start()`` runs Debian's ``redis-server`` in a temporary directory (no persistence
unless ``appendonly=True``, bound to 127.0.0.1 only) and waits until it answers; ``stop()`` ends
it, and ``start()`` again restarts it on the same port (with its data, when append-only). When the binary is
missing the test is skipped with the reason shown, or failed under ``CI=true``, where CI's
script installs it and a silent skip would hide the scale-out tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port", "redis_server", "require_redis_server"]

_MISSING = (
    "redis-server is not installed (Debian: apt-get install redis-server); "
    "the shared-limiter and scale-out tests need a real Redis"
)


def require_redis_server() -> str:
    """The path of ``redis-server``; skip the test without it (fail under ``CI=true``)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(_MISSING)
        pytest.skip(_MISSING)
    return binary


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1.

    Attributes:
        port: the port it listens on.
        url: its ``redis://`` URL (database 0).
    """

    def __init__(self, binary: str, directory: Path, *, appendonly: bool = False) -> None:
        self._binary = binary
        self._directory = directory
        self._appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        self._process = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self._appendonly else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self._directory),
                "--logfile",
                str(self._directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _answers_ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = self._directory / "redis.log"
                detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{detail}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (it keeps its data only when append-only)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen server must be able to hear the TERM
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def freeze(self) -> None:
        """Stop the process (SIGSTOP): connections stay open and nothing answers, as a hung
        server or a partitioned network behaves."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen server go on (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None


@contextmanager
def redis_server(*, appendonly: bool = False) -> Iterator[RedisServer]:
    """A running server for the ``with`` block; skipped (or failed on CI) without the binary."""
    binary = require_redis_server()
    with tempfile.TemporaryDirectory(prefix="dashscope-redis-") as directory:
        server = RedisServer(binary, Path(directory), appendonly=appendonly)
        server.start()
        try:
            yield server
        finally:
            server.stop()

"""Virtual time for tests on both backends: pacing, polling and backoff run in no real time.

On trio this is trio's own ``MockClock(autojump_threshold=0)``. On asyncio it is an event loop
whose clock only moves when every task is waiting on a timer: then it jumps straight to the next
timer, as trio's autojump does. Use it only for tests without sockets or threads doing real
work, since time may jump while they run.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import selectors
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import pytest
import trio.testing


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeEventLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout is None or timeout <= 0:
            return ready if ready or timeout is not None else super().select(None)
        self._loop.advance(timeout)
        return []


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a virtual clock that jumps to the next timer when all tasks wait."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


VIRTUAL_BACKENDS: list[Any] = [
    pytest.param(("asyncio", {"loop_factory": VirtualTimeEventLoop}), id="asyncio"),
    pytest.param(("trio", {}), id="trio"),
]


def backend_options(param: tuple[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Fresh options per test: a trio MockClock must not be shared between tests."""
    name, options = param
    if name == "trio":
        return name, {"clock": trio.testing.MockClock(autojump_threshold=0)}
    return name, dict(options)


def virtual_time(test: Callable[[], Awaitable[None]]) -> Callable[[str], None]:
    """Run an async test (taking no fixtures) in virtual time on asyncio and on trio.

    Each run gets a fresh event loop and clock through ``anyio.run``. Prefer this to the
    ``virtual_anyio_backend`` fixture for tests whose tasks hand work to each other a lot: trio's
    autojumping clock is only dependable in a plain ``trio.run``, not in the guest-mode run that
    anyio's pytest plugin shares between tests.
    """

    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    @functools.wraps(test)
    def run(backend: str) -> None:
        run_in_virtual_time(test, backend)

    # pytest reads the signature to find fixtures; the wrapper takes only the backend.
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("backend", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    )
    return run


def run_in_virtual_time(scenario: Callable[[], Awaitable[None]], backend: str) -> None:
    """Run ``scenario`` on a fresh event loop of ``backend`` in virtual time (for parametrized
    tests, which ``virtual_time`` cannot wrap)."""
    options: dict[str, Any] = (
        {"clock": trio.testing.MockClock(autojump_threshold=0)}
        if backend == "trio"
        else {"loop_factory": VirtualTimeEventLoop}
    )
    anyio.run(scenario, backend=backend, backend_options=options)

"""pytest fixtures for testing apps against the emulator (loaded through the pytest11 entry point).

Imports nothing heavy at load time, so installing dashscope_async never slows or breaks pytest:
the emulator (and, for the server, uvicorn) is imported only when a test asks for a fixture.

Fixtures:
    dashscope_emulator_config: the ``EmulatorConfig`` the other fixtures use; override it in your
        ``conftest.py``. Default: the service's limits, task run times scaled by 0.01.
    dashscope_emulator: an in-process ``Emulator`` (no sockets; the event loop's clock).
    dashscope_client: an ``AsyncDashScope`` wired to ``dashscope_emulator``.
    dashscope_emulator_server: the emulator served on 127.0.0.1 (``server.base_url``,
        ``server.api_key``, ``server.emulator``), for code that opens its own connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from dashscope_async import AsyncDashScope
    from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer


@pytest.fixture
def dashscope_emulator_config() -> EmulatorConfig:
    """The emulator's settings for this test; override to change limits, faults' seed or speed."""
    from dashscope_async.testing import EmulatorConfig

    return EmulatorConfig(time_scale=0.01)


@pytest.fixture
def dashscope_emulator(dashscope_emulator_config: EmulatorConfig) -> Emulator:
    """An in-process emulator: use ``emulator.transport()`` or the ``dashscope_client`` fixture."""
    from dashscope_async.testing import Emulator

    return Emulator(dashscope_emulator_config)


@pytest.fixture
def dashscope_client(dashscope_emulator: Emulator) -> AsyncDashScope:
    """An ``AsyncDashScope`` that talks to ``dashscope_emulator`` in-process."""
    return dashscope_emulator.client()


@pytest.fixture
def dashscope_emulator_server(
    dashscope_emulator_config: EmulatorConfig,
) -> Iterator[RunningServer]:
    """The emulator on loopback ports, in its own thread (works for sync, asyncio and trio tests)."""
    from dashscope_async.testing import Emulator

    with Emulator(dashscope_emulator_config).serve_sync() as server:
        yield server

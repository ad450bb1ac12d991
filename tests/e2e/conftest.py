"""End-to-end fixtures: the emulator served on loopback for the whole module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dashscope_async.testing import Emulator, EmulatorConfig, RunningServer


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[RunningServer]:
    """The emulator on 127.0.0.1, tasks 50 times faster than the service."""
    with Emulator(EmulatorConfig(time_scale=0.02, seed=11)).serve_sync() as server:
        yield server

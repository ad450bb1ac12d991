from __future__ import annotations

from typing import Any

import anyio
import pytest


@pytest.fixture
def anyio_backend(virtual_anyio_backend: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return virtual_anyio_backend


@pytest.mark.anyio
async def test_an_hour_of_sleeping_takes_no_real_time() -> None:
    import time

    real_start = time.monotonic()
    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for delay in (3600.0, 1800.0, 0.5):
            tg.start_soon(anyio.sleep, delay)
    assert anyio.current_time() - start == pytest.approx(3600.0)
    assert time.monotonic() - real_start < 5.0


@pytest.mark.anyio
async def test_timers_fire_in_order() -> None:
    fired: list[float] = []

    async def sleeper(delay: float) -> None:
        await anyio.sleep(delay)
        fired.append(delay)

    async with anyio.create_task_group() as tg:
        for delay in (3.0, 1.0, 2.0):
            tg.start_soon(sleeper, delay)
    assert fired == [1.0, 2.0, 3.0]

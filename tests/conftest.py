"""Shared test setup: every async test runs on asyncio and on trio.

Tests of timing logic ask for the ``virtual_time`` fixture's backends by overriding
``anyio_backend`` with ``virtual_anyio_backend`` (see ``tests/virtual_time.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.virtual_time import VIRTUAL_BACKENDS, backend_options


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=VIRTUAL_BACKENDS)
def virtual_anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Use as ``anyio_backend`` in a module whose tests want virtual time."""
    return backend_options(request.param)

"""Shared test setup: every async test runs on asyncio and on trio.

Tests of timing logic ask for the ``virtual_time`` fixture's backends by overriding
``anyio_backend`` with ``virtual_anyio_backend`` (see ``tests/virtual_time.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def _library_logger_restored() -> Iterator[None]:
    """The command line configures the library's logger; in-process CLI tests must not leak it."""
    logger = logging.getLogger("dashscope_async")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]

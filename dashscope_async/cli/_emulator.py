"""The ``emulator`` command, and the demo's way of starting the emulator in-process.

Owns the bridge to ``dashscope_async.testing`` (the emulator itself lives there): starting its
loopback server with a time scale and reading what it recorded. Binds to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import click

from ..testing import Emulator, EmulatorConfig, EmulatorStats
from ..testing.__main__ import serve as serve_emulator_until_interrupted
from ..testing._config import DEFAULT_API_KEY
from ._app import ExitCode


@attrs.frozen
class RunningEmulator:
    """An emulator serving on loopback: where to reach it and with which key."""

    base_url: str
    api_key: str = attrs.field(repr=False)
    emulator: Emulator = attrs.field(repr=False)

    def stats(self) -> EmulatorStats:
        """What the emulator recorded."""
        return self.emulator.stats


@asynccontextmanager
async def serve_emulator(*, time_scale: float, seed: int = 7) -> AsyncIterator[RunningEmulator]:
    """Start the emulator's loopback server in this process, at the real limits."""
    emulator = Emulator(EmulatorConfig(time_scale=time_scale, seed=seed))
    async with emulator.serve() as server:
        yield RunningEmulator(base_url=server.base_url, api_key=server.api_key, emulator=emulator)


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8089,
    show_default=True,
    help="The API host's port on 127.0.0.1 (0: any free port); uploads and results get their own.",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0.0, min_open=True, max=100.0),
    default=1.0,
    show_default=True,
    help="Multiply task run times (0.1: ten times faster than the service).",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Repeat task ids, run times and faults from this seed [default: fresh each start].",
)
@click.option(
    "--api-key",
    "api_key",
    default=DEFAULT_API_KEY,
    show_default=True,
    help="The key the emulator accepts.",
)
@click.option("--no-limits", is_flag=True, help="Lift every rate and concurrency limit.")
@click.option(
    "--strict-urls",
    is_flag=True,
    help=(
        "Fail tasks whose input URLs cannot be fetched (InvalidURL), as the service does;"
        " by default a made-up URL stands for a plausible image."
    ),
)
@click.option(
    "--faults",
    default="",
    metavar="SPEC",
    help=(
        "Faults to inject, route:fault:probability items, comma-separated, e.g."
        " 'submit:503:0.1,get_task:429:0.05,task:InternalError.Algo:0.1'."
    ),
)
@click.pass_context
def emulator(ctx: click.Context, /, **options: Any) -> None:
    """Serve the DashScope emulator on 127.0.0.1 for local development.

    It speaks the service's protocol and keeps its limits (2 submissions/s and
    1 task in progress per model); tasks run for the models' typical times
    times --time-scale. On start it prints the base URL, the key and sample
    image URLs to use as inputs.

    \b
    Example:
      dashscope-async emulator --time-scale 0.1
      export DASHSCOPE_HTTP_BASE_URL=http://127.0.0.1:8089/api/v1
      export DASHSCOPE_API_KEY=sk-emulator
      dashscope-async repaint http://127.0.0.1:.../samples/portrait.png --style anime
    """
    # The emulator's own entry point builds and serves it; this command owns the options.
    try:
        status = serve_emulator_until_interrupted(argparse.Namespace(**options))
    except KeyboardInterrupt:
        ctx.exit(int(ExitCode.INTERRUPTED))
    ctx.exit(status)

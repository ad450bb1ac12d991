"""The ``emulator`` command, and the demo's way of starting the emulator in-process.

Owns the bridge to ``dashscope_async.testing`` (the emulator itself lives there): starting its
loopback server with a time scale and reading what it recorded. Binds to 127.0.0.1 only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import click

from ..testing import Emulator, EmulatorConfig, EmulatorStats
from ..testing.__main__ import main as emulator_main
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


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def emulator(ctx: click.Context) -> None:
    """Serve the DashScope emulator on 127.0.0.1 for local development.

    \b
    Options are the emulator's own (see `dashscope-async emulator --help`), e.g.:
      dashscope-async emulator --port 8089 --time-scale 0.1
    then point a client at it with --base-url http://127.0.0.1:8089/api/v1.
    """
    # The emulator's own entry point owns its options (--port, --time-scale, --faults, ...).
    try:
        status = emulator_main(["--help"] if ctx.args == ["-h"] else ctx.args)
    except KeyboardInterrupt:
        ctx.exit(int(ExitCode.INTERRUPTED))
    ctx.exit(status)

"""The ``emulator`` command, and the demo's way of starting the emulator in-process.

Owns the bridge to ``dashscope_async.testing`` (the emulator itself lives there): starting its
loopback server with a time scale and reading what it recorded. Binds to 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import click

from ._app import CliError, ExitCode


@attrs.frozen
class RunningEmulator:
    """An emulator serving on loopback: where to reach it and with which key."""

    base_url: str
    api_key: str = attrs.field(repr=False)
    emulator: Any = attrs.field(repr=False)

    def stats(self) -> Any:
        """What the emulator recorded (its ``stats``), if it keeps any."""
        return getattr(self.emulator, "stats", None)


def _missing_emulator() -> CliError:
    return CliError(
        "the DashScope emulator (dashscope_async.testing) is not available in this installation",
        hint="install the extra: pip install 'dashscope-async[cli,testing]'",
        code=ExitCode.BAD_INPUT,
    )


@asynccontextmanager
async def serve_emulator(*, time_scale: float, seed: int = 7) -> AsyncIterator[RunningEmulator]:
    """Start the emulator's loopback server in this process, at the real limits."""
    try:
        from .. import testing
    except ImportError:
        raise _missing_emulator() from None
    emulator_type = getattr(testing, "Emulator", None)
    config_type = getattr(testing, "EmulatorConfig", None)
    if emulator_type is None or config_type is None:
        raise _missing_emulator()
    try:
        config = config_type(time_scale=time_scale, seed=seed)
    except TypeError:
        config = config_type(time_scale=time_scale)
    emulator = emulator_type(config)
    async with emulator.serve() as server:
        yield RunningEmulator(
            base_url=str(server.base_url),
            api_key=str(server.api_key),
            emulator=emulator,
        )


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
    if importlib.util.find_spec("dashscope_async.testing.__main__") is None:
        if "--help" in ctx.args or "-h" in ctx.args:
            click.echo(ctx.get_help())
            return
        raise _missing_emulator()
    # The emulator's own entry point owns its options (--port, --time-scale, --faults, ...).
    sys.argv = ["dashscope-async emulator", *ctx.args]
    try:
        runpy.run_module("dashscope_async.testing", run_name="__main__", alter_sys=True)
    except KeyboardInterrupt:
        ctx.exit(int(ExitCode.INTERRUPTED))

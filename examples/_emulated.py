"""Run an example against the built-in emulator instead of the service (``--emulator``).

The emulator (``dashscope_async.testing``, extra ``testing``) serves the real protocol on three
loopback ports (API, uploads, results); tasks run ``time_scale`` times their real duration. The
input portrait is drawn here with Pillow and sent as a local file, the way your own files would
be: the client checks it, uploads it and submits it as ``oss://``.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import attrs

import dashscope_async as ds
from dashscope_async.testing import Emulator, EmulatorConfig

#: Tasks run this many times their real duration: a 15-second repaint takes under a second.
TIME_SCALE = 0.05


@attrs.frozen
class Emulated:
    """A client wired to a running emulator, the emulator itself, and a portrait file to send.

    Attributes:
        client: an ``AsyncDashScope`` for the emulator's API host.
        emulator: the emulator (its ``stats``, ``tasks``, ``faults``).
        portrait: a 512x640 PNG on disk.
    """

    client: ds.AsyncDashScope
    emulator: Emulator
    portrait: Path


def _draw_portrait(folder: Path) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (512, 640), (236, 224, 210))
    draw = ImageDraw.Draw(image)
    draw.ellipse((156, 120, 356, 360), fill=(224, 180, 150))  # a face, more or less
    draw.rectangle((136, 380, 376, 640), fill=(60, 90, 140))
    path = folder / "portrait.png"
    image.save(path)
    return path


@asynccontextmanager
async def emulated(
    time_scale: float | None = None, *, allow_local_files: bool = True
) -> AsyncIterator[Emulated]:
    """Serve the emulator on 127.0.0.1 and give a client for it, with a portrait to send.

    Args:
        time_scale: multiplies the service's run times (``TIME_SCALE`` when None).
        allow_local_files: the client's option: False for code that builds requests from what
            other people send (the web app, the bot).

    Example:
        ```python
        async with emulated() as service:
            result = await service.client.generate(ds.StyleRepaint(service.portrait, style="anime"))
        ```
    """
    missing = [name for name in ("PIL", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(
            "the emulator needs the testing extra: pip install 'dashscope-async[testing]'"
        )
    emulator = Emulator(EmulatorConfig(time_scale=TIME_SCALE if time_scale is None else time_scale))
    with tempfile.TemporaryDirectory() as folder:
        portrait = await anyio.to_thread.run_sync(_draw_portrait, Path(folder))
        async with (
            emulator.serve() as server,
            ds.AsyncDashScope(
                api_key=server.api_key,
                base_url=server.base_url,
                allow_local_files=allow_local_files,
            ) as client,
        ):
            yield Emulated(client=client, emulator=emulator, portrait=portrait)

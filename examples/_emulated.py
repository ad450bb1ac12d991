"""Run an example against the built-in emulator instead of the service (``--emulator``).

The emulator (``dashscope_async.testing``, extra ``testing``) serves the real protocol on a
loopback port; tasks run ``time_scale`` times their real duration. Input portraits are drawn
here with Pillow and uploaded as local files, the way your own files would be.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs

import dashscope_async as ds


@attrs.frozen
class Emulated:
    """A client wired to a running emulator, and a portrait file to send it."""

    client: ds.AsyncDashScope
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
async def emulated(time_scale: float = 0.05) -> AsyncIterator[Emulated]:
    """Start the emulator on 127.0.0.1 and give a client for it.

    Example:
        ```python
        async with emulated() as service:
            result = await service.client.generate(ds.StyleRepaint(service.portrait, style="anime"))
        ```
    """
    try:
        testing: Any = importlib.import_module("dashscope_async.testing")
        emulator = testing.Emulator(testing.EmulatorConfig(time_scale=time_scale))
    except (ImportError, AttributeError):
        raise SystemExit(
            "the emulator needs the testing extra: pip install 'dashscope-async[testing]'"
        ) from None
    with tempfile.TemporaryDirectory() as folder:
        portrait = await anyio.to_thread.run_sync(_draw_portrait, Path(folder))
        async with emulator.serve() as server:
            async with ds.AsyncDashScope(
                api_key=str(server.api_key), base_url=str(server.base_url)
            ) as client:
                yield Emulated(client=client, portrait=portrait)

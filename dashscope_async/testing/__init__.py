"""The DashScope emulator: a faithful stand-in for the service, for tests, demos and local work.

It speaks the service's wire protocol (paths, headers, JSON shapes, error codes), keeps its limits
(a one-second sliding window of submissions per model, tasks beyond the concurrency limit waiting
as PENDING, 20 QPS on the task endpoints), runs the upload-policy and form-upload flow, serves
result images from a separate host with expiring signed URLs, injects faults on request and
records what it saw. Run it in-process (an httpx transport, on the event loop's clock, so virtual
time works) or as a loopback server (``Emulator.serve()``, ``python -m dashscope_async.testing``).

Example:
    ```python
    from dashscope_async.testing import Emulator

    emulator = Emulator(time_scale=0.01)
    async with emulator.client() as client:
        result = await client.generate(
            ds.SketchToImage(emulator.sample_image_url("sketch"), prompt="a towering tree")
        )
    ```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import DEFAULT_API_KEY, EmulatorConfig, ModelBehaviour, RunDistribution
    from ._core import Call, HostUrls, Reply
    from ._emulator import Emulator, RunningServer
    from ._faults import Fault, Faults, TaskFault
    from ._stats import CredentialLeak, EmulatorStats
    from ._tasks import EmulatedTask, InputProblem

# Names load on first use: the pytest plugin lives in this package, and pytest imports it on
# every run, so importing the package must cost next to nothing.
_HOMES = {
    "DEFAULT_API_KEY": "_config",
    "EmulatorConfig": "_config",
    "ModelBehaviour": "_config",
    "RunDistribution": "_config",
    "Call": "_core",
    "HostUrls": "_core",
    "Reply": "_core",
    "Emulator": "_emulator",
    "RunningServer": "_emulator",
    "Fault": "_faults",
    "Faults": "_faults",
    "TaskFault": "_faults",
    "CredentialLeak": "_stats",
    "EmulatorStats": "_stats",
    "EmulatedTask": "_tasks",
    "InputProblem": "_tasks",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DEFAULT_API_KEY",
    "Call",
    "CredentialLeak",
    "EmulatedTask",
    "Emulator",
    "EmulatorConfig",
    "EmulatorStats",
    "Fault",
    "Faults",
    "HostUrls",
    "InputProblem",
    "ModelBehaviour",
    "Reply",
    "RunDistribution",
    "RunningServer",
    "TaskFault",
]

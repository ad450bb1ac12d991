"""``TaskService``: the calls the runner makes of the service, as a small protocol.

Owns the seam between the runner and the client. ``AsyncDashScope`` implements it; a test double
implements it too (typed, without ``cast`` or patching), so the runner can be driven by a
scripted service. Nothing here does any work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Protocol

import httpx

from .._clock import Clock
from .._files import PreparedInputs
from .._models import Request, Task, TaskInfo, TaskListItem, TaskStatus

__all__ = ["TaskService"]


class TaskService(Protocol):
    """What ``AsyncTaskRunner`` needs of the service; ``AsyncDashScope`` is the real one.

    Example:
        ```python
        async with ds.AsyncDashScope() as client:
            service: ds.TaskService = client
            async with ds.AsyncTaskRunner(service) as runner:
                ...
        ```
    """

    @property
    def clock(self) -> Clock:
        """The clock every wait of the runner reads."""
        ...

    @property
    def http(self) -> httpx.AsyncClient:
        """The connection pool result images are downloaded with (no credentials)."""
        ...

    async def prepare(self, request: Request) -> PreparedInputs:
        """Check and upload a request's local inputs."""
        ...

    async def submit(
        self,
        request: Request,
        *,
        retry_throttled: bool = True,
        prepared: PreparedInputs | None = None,
    ) -> Task:
        """Send one submit; raise ``AmbiguousSubmitError`` when its fate is unknown."""
        ...

    async def get_task(self, task_id: str, *, retry: bool = True) -> TaskInfo:
        """One poll (``retry=False``: one request, for the runner's poll loop to meter)."""
        ...

    async def cancel_task(
        self, task_id: str, *, meter: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Cancel a PENDING task; ``meter`` is awaited before every attempt (the poll budget)."""
        ...

    def list_tasks(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        model: str | None = None,
        status: TaskStatus | str | None = None,
        page_size: int = 50,
        *,
        before_page: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[TaskListItem]:
        """The account's task list, page by page; ``before_page`` before every request."""
        ...

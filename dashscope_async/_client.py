"""AsyncDashScope, the low-level client: one typed method per service call, with auth and retries.

Owns credentials (attached per request, only to URLs under the API base URL), the User-Agent,
the request loop (asking ``_retry`` whether and when to try again) and the mapping of answers
onto models and errors. It must not pace, queue or
budget requests across jobs (the runner does), and must not attach credentials to any other host:
the same ``httpx.AsyncClient`` also carries uploads and downloads.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote

import attrs
import httpx

from . import _downloads, _files, _wire
from ._checks import (
    check_flag,
    check_header_value,
    check_instance,
    check_seconds,
    check_text,
    check_url,
    check_whole_number,
    wrong_type,
)
from ._clock import SYSTEM_CLOCK, Clock
from ._config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL, WORKSPACE_ENV, env
from ._downloads import DEFAULT_DOWNLOAD_LIMITS, DownloadLimits
from ._error_map import error_from_response
from ._errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    DashScopeError,
    ResponseValidationError,
    TaskCanceledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
)
from ._logging import log_request, redact
from ._models import (
    GeneratedImage,
    ImageFailure,
    Request,
    Task,
    TaskInfo,
    TaskListItem,
    TaskResult,
    TaskStatus,
    check_request,
)
from ._poll_loop import TaskPoll, poll_until_done
from ._polling import PollPlanner, PollPolicy
from ._retry import (
    MAX_RETRY_AFTER,
    RequestKind,
    RetryPolicy,
    Verdict,
    check_max_retry_after,
    verdict_for_exception,
    verdict_for_response,
    verdict_for_unreadable,
)
from ._version import __version__

__all__ = ["DEFAULT_TIMEOUT", "AsyncDashScope"]

T = TypeVar("T")

#: Per-request timeout: 60 s in all, 10 s to connect.
DEFAULT_TIMEOUT: Final = httpx.Timeout(60.0, connect=10.0)
DEFAULT_MAX_RETRIES: Final = 2
WORKSPACE_HEADER: Final = "X-DashScope-WorkSpace"
#: The service accepts task-list windows of at most this long.
LIST_WINDOW: Final = timedelta(hours=24)
#: Far longer than any task id the service hands out (36 characters).
MAX_TASK_ID_LENGTH: Final = 256
#: API URLs kept parsed (``_api_url``): the submit routes and the tasks being polled.
URL_CACHE_SIZE: Final = 256
#: ``wait``'s polls: the first at once, then the adaptive planner's schedule.
WAIT_POLICY: Final = PollPolicy(first_poll=0.0)
#: The planner's key for tasks whose model ``wait`` was not told.
UNKNOWN_MODEL: Final = ""

_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


def _user_agent() -> str:
    return f"dashscope-async/{__version__} python/{platform.python_version()} httpx/{httpx.__version__}"


@attrs.frozen
class _Credentials:
    api_key: str = attrs.field(repr=False)
    workspace: str | None = None


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_base_url(url: str, *, allow_insecure_http: bool) -> str:
    if not isinstance(url, str):
        raise wrong_type("base_url", "a string", url)
    check_url("base_url", url)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise ValidationError("base_url", f"not a URL: {url!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValidationError("base_url", f"must be an http(s) URL with a host, not {url!r}")
    if parsed.query or parsed.fragment:
        raise ValidationError("base_url", "must not carry a query string or fragment")
    if parsed.scheme == "http" and not (allow_insecure_http or _is_loopback(parsed.host)):
        raise ValidationError(
            "base_url",
            f"refusing plain http:// to {parsed.host}: the API key would cross the network in "
            "clear text; use https://, or pass allow_insecure_http=True if you must",
        )
    return url.rstrip("/")


def _check_task_id(task_id: str) -> str:
    if not isinstance(task_id, str) or not task_id.strip():
        raise ValidationError("task_id", "must be a non-empty string")
    check_text("task_id", task_id, what="task id")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise ValidationError("task_id", f"is {len(task_id):,} characters; task ids are short")
    return quote(task_id, safe="")


def _check_aware(field: str, moment: datetime | None) -> None:
    if moment is not None and moment.tzinfo is None:
        raise ValidationError(field, "must be timezone-aware (e.g. datetime.now(UTC))")


def list_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end]`` split into consecutive windows of at most 24 hours, oldest first."""
    windows: list[tuple[datetime, datetime]] = []
    cursor = start
    while True:
        stop = min(cursor + LIST_WINDOW, end)
        windows.append((cursor, stop))
        if stop >= end:
            return windows
        cursor = stop


@attrs.define
class _TaskListing:
    """The task list as an async iterator that fetches one page when the last is used up.

    A plain iterator object, not an async generator, so leaving a loop early leaves nothing to
    finalize on either backend.
    """

    fetch_page: Callable[
        [Mapping[str, str | int], Callable[[], Awaitable[None]] | None],
        Awaitable[_wire.TaskListWire],
    ]
    queries: list[dict[str, str | int]]
    before_page: Callable[[], Awaitable[None]] | None = None
    _window: int = 0
    _page_no: int = 1
    _buffer: deque[TaskListItem] = attrs.field(factory=deque)
    _seen: set[str] = attrs.field(factory=set)

    def __aiter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        """Stop early (for ``contextlib.aclosing``); there is nothing to release."""
        self._window = len(self.queries)
        self._buffer.clear()

    async def __anext__(self) -> TaskListItem:
        while not self._buffer:
            if self._window >= len(self.queries):
                raise StopAsyncIteration
            page = await self.fetch_page(
                {**self.queries[self._window], "page_no": self._page_no}, self.before_page
            )
            for entry in page.data:
                if entry.task_id not in self._seen:
                    self._seen.add(entry.task_id)
                    self._buffer.append(_wire.task_list_item_from_wire(entry))
            if not page.data or self._page_no >= page.total_page:
                self._window += 1
                self._page_no = 1
            else:
                self._page_no += 1
        return self._buffer.popleft()


class AsyncDashScope:
    """The low-level DashScope client: one typed method per service call, retried as is safe.

    Args:
        api_key: the API key; defaults to ``DASHSCOPE_API_KEY``. Never shown in a repr, log
            record or exception.
        base_url: the API root including ``/api/v1``; defaults to ``DASHSCOPE_HTTP_BASE_URL``,
            then the Beijing endpoint.
        workspace: sent as ``X-DashScope-WorkSpace``; defaults to ``DASHSCOPE_WORKSPACE``.
            Needed with a RAM sub-account key.
        timeout: per-request timeout (seconds or an ``httpx.Timeout``).
        max_retries: retries after a failed attempt, where retrying is safe.
        max_retry_after: a server's ``Retry-After`` (or ``retry-after-ms``) is honoured up to
            this many seconds; a longer ask waits this long. It caps every wait a server can
            ask of this client and of runners using it (polls and paused submissions too).
        http_client: your own ``httpx.AsyncClient`` (proxies, limits, transports). It is not
            closed by this client; credentials are never set on it as default headers.
        clock: where time and sleeps come from (tests pass a virtual clock).
        allow_insecure_http: allow a plain ``http://`` base URL on a non-loopback host.
        inline_data_uri_max_bytes: send style-repaint files up to this size inline as
            ``data:`` URIs instead of uploading them (0, the default, always uploads).
        allow_local_files: False refuses local paths and ``file://`` URLs in requests with a
            ``ValidationError`` before anything is read, and without saying whether the path
            exists. Use it in servers and bots that build requests from what callers send
            (see the security guide). Bytes, ``data:`` URIs and remote URLs still work.
        download_limits: the size cap, deadline and retries of every result download
            (``download``, and the runner's ``download_dir=``).

    Raises:
        ValidationError: no API key (names ``DASHSCOPE_API_KEY``), a key or workspace a header
            cannot carry (the message never shows the key), or a base URL refused.
        InputTypeError: an option of the wrong type (a ValidationError and a TypeError; the
            message names it).

    Example:
        ```python
        async with ds.AsyncDashScope() as client:
            task = await client.submit(
                ds.StyleRepaint("https://example.com/me.jpg", style=ds.RepaintStyle.ANIME)
            )
            result = await client.wait(task.task_id, timeout=300)
            print(result.images[0].url)
        ```
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        workspace: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_after: float = MAX_RETRY_AFTER,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = SYSTEM_CLOCK,
        allow_insecure_http: bool = False,
        inline_data_uri_max_bytes: int = 0,
        allow_local_files: bool = True,
        download_limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
    ) -> None:
        key = api_key if api_key is not None else env(API_KEY_ENV)
        if key is None or (isinstance(key, str) and not key.strip()):
            raise ValidationError(
                "api_key",
                f"no API key: pass api_key= or set the {API_KEY_ENV} environment variable",
            )
        chosen_workspace = workspace if workspace is not None else env(WORKSPACE_ENV)
        self._credentials = _Credentials(
            api_key=check_header_value("api_key", key, secret=True),
            workspace=None
            if chosen_workspace is None
            else check_header_value("workspace", chosen_workspace, secret=False),
        )
        check_whole_number("max_retries", max_retries, minimum=0)
        check_whole_number("inline_data_uri_max_bytes", inline_data_uri_max_bytes, minimum=0)
        if not isinstance(timeout, httpx.Timeout) and timeout is not None:
            check_seconds("timeout", timeout, strictly_positive=True)
        check_flag("allow_insecure_http", allow_insecure_http)
        check_flag("allow_local_files", allow_local_files)
        check_instance("download_limits", download_limits, DownloadLimits, "a ds.DownloadLimits")
        self._download_limits = download_limits
        self._base_url = _check_base_url(
            base_url or env(BASE_URL_ENV) or DEFAULT_BASE_URL,
            allow_insecure_http=allow_insecure_http,
        )
        self._base = httpx.URL(self._base_url + "/")
        self._urls: dict[str, httpx.URL] = {}
        self._timeout = timeout
        self._retry = RetryPolicy(
            max_retries=max_retries, max_retry_after=check_max_retry_after(max_retry_after)
        )
        # Shared by every wait() of this client, so it learns each model's run time.
        self._wait_planner = PollPlanner(WAIT_POLICY)
        self._clock = clock
        self._user_agent = _user_agent()
        self._owns_http = http_client is None
        self._http = (
            http_client
            if http_client is not None
            else httpx.AsyncClient(
                timeout=timeout, follow_redirects=False, headers={"User-Agent": self._user_agent}
            )
        )
        self._inputs = _files.InputPreparer(
            http=self._http,
            fetch_policy=self._get_upload_policy,
            clock=clock,
            inline_data_uri_max_bytes=inline_data_uri_max_bytes,
            allow_local_files=allow_local_files,
        )

    # --- properties and lifetime --------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API root, without a trailing slash (``https://dashscope.aliyuncs.com/api/v1``)."""
        return self._base_url

    @property
    def workspace(self) -> str | None:
        """The workspace sent as ``X-DashScope-WorkSpace``, if any."""
        return self._credentials.workspace

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP connection pool. It carries no credentials of its own."""
        return self._http

    @property
    def clock(self) -> Clock:
        """The clock every wait and backoff of this client uses."""
        return self._clock

    @property
    def download_limits(self) -> DownloadLimits:
        """The size cap, deadline and retries of every result download."""
        return self._download_limits

    @property
    def allow_local_files(self) -> bool:
        """Whether requests may name local paths (False for code handling untrusted input)."""
        return self._inputs.allow_local_files

    @property
    def max_retries(self) -> int:
        """Retries after a failed attempt, where retrying is safe."""
        return self._retry.max_retries

    @property
    def max_retry_after(self) -> float:
        """The longest ``Retry-After`` honoured, in seconds (longer asks are cut to it)."""
        return self._retry.max_retry_after

    def __repr__(self) -> str:
        return f"AsyncDashScope(base_url={self._base_url!r}, workspace={self.workspace!r})"

    async def aclose(self) -> None:
        """Close the connection pool, unless it was passed in as ``http_client``."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- service calls ------------------------------------------------------------------------

    async def prepare(self, request: Request) -> _files.PreparedInputs:
        """Check and upload a request's local inputs; what ``submit`` would send for its images.

        ``submit`` does this itself. Call it first when the upload should not happen at the
        moment of submitting (the runner uploads before it takes a model's slot), and pass the
        result to ``submit(..., prepared=...)``.

        Raises:
            ValidationError: a local input breaks the model's rules (names the file and rule).

        Example:
            ```python
            prepared = await client.prepare(ds.StyleRepaint("me.jpg", style="anime"))
            task = await client.submit(request, prepared=prepared)
            ```
        """
        return await self._inputs.prepare(check_request(request))

    async def submit(
        self,
        request: Request,
        *,
        retry_throttled: bool = True,
        prepared: _files.PreparedInputs | None = None,
    ) -> Task:
        """Submit a task; returns as soon as the service accepted it.

        Local files are uploaded first. The submit is retried only when no task can have been
        created (a connection that never opened, a 429, a 5xx the service itself answered).

        Args:
            request: a ``StyleRepaint`` or ``SketchToImage``.
            retry_throttled: retry 429 ``Throttling`` answers here (default). Pass False when
                you pace submissions yourself: a 429 then raises ``RateLimitError`` at once,
                with ``retry_after`` when the service sent one.
            prepared: the result of ``prepare(request)``, when the inputs were prepared already.

        Returns:
            The accepted task (normally PENDING).

        Raises:
            AmbiguousSubmitError: the submit was sent but no usable answer came back; a task
                may exist. Never retried: reconcile through ``list_tasks``.
            APIError: the service refused it (see the error reference for each code).
            APIConnectionError: no connection could be made (no task exists).

        Example:
            ```python
            task = await client.submit(ds.SketchToImage(url, prompt="a towering tree"))
            print(task.task_id)
            ```
        """
        check_request(request)
        if prepared is None:
            prepared = await self._inputs.prepare(request)
        headers = {"X-DashScope-Async": "enable", "Content-Type": "application/json"}
        if prepared.oss_resolve:
            headers["X-DashScope-OssResourceResolve"] = "enable"
        model = request.model
        try:
            return await self._call(
                "POST",
                request.spec.submit_path,
                kind=RequestKind.SUBMIT,
                parse=lambda data: _wire.task_from_submit(data, model=model),
                content=json.dumps(
                    _wire.submit_body(request, prepared.urls), ensure_ascii=False
                ).encode(),
                headers=headers,
                model=model,
                retry_throttled=retry_throttled,
            )
        except AmbiguousSubmitError as exc:
            exc.request = request  # whoever settles it later needs to know what was sent
            raise

    async def get_task(
        self,
        task_id: str,
        *,
        retry: bool = True,
        meter: Callable[[], Awaitable[None]] | None = None,
    ) -> TaskInfo:
        """One task's status and results (``GET /tasks/{task_id}``).

        Args:
            task_id: the task's id.
            retry: retry a throttled or failed poll here (default). Pass False when you
                schedule polls yourself: each attempt is then one request you metered.
            meter: awaited before every attempt, retries included (a poll budget's turn).

        Returns:
            A ``TaskInfo``; a ``TaskResult`` when the task SUCCEEDED.

        Example:
            ```python
            info = await client.get_task(task.task_id)
            print(info.status)
            ```
        """
        path = f"/tasks/{_check_task_id(task_id)}"
        info = await self._call(
            "GET",
            path,
            kind=RequestKind.POLL,
            parse=_wire.task_info_from_wire,
            retry=retry,
            meter=meter,
        )
        return self._scrub_task(info)

    async def cancel_task(
        self, task_id: str, *, meter: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Cancel a PENDING task (``POST /tasks/{task_id}/cancel``).

        Args:
            task_id: the task's id.
            meter: awaited before every attempt, retries included (a poll budget's turn).

        Raises:
            BadRequestError: code ``UnsupportedOperation``: the task is no longer PENDING.

        Example:
            ```python
            await client.cancel_task(task.task_id)
            ```
        """
        path = f"/tasks/{_check_task_id(task_id)}/cancel"
        await self._call("POST", path, kind=RequestKind.CANCEL, parse=_ignore_body, meter=meter)

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
        """The account's tasks (all keys and workspaces), paged for you, oldest window first.

        The service lists at most 24 hours at a time; a longer range is asked for window by
        window. With neither bound, the last 24 hours; with one, the 24 hours after ``start``
        or before ``end``. A task seen twice (at a window edge, or because the list moved
        while paging) is yielded once. Each page is fetched when the previous one is used up;
        nothing runs in the background, so breaking out of the loop is safe and needs no
        cleanup. Arguments are checked at the call, before any request.

        Args:
            start: aware datetime, inclusive.
            end: aware datetime.
            model: only tasks of this model (``"wanx-style-repaint-v1"``).
            status: only tasks in this status.
            page_size: entries per request.
            before_page: awaited before every request for a page, a retried page's attempts
                included (to meter requests yourself: one turn per request sent).

        Example:
            ```python
            since = datetime.now(UTC) - timedelta(hours=1)
            async for item in client.list_tasks(start=since, model=ds.STYLE_REPAINT.name):
                print(item.task_id, item.status)
            ```
        """
        _check_aware("start", start)
        _check_aware("end", end)
        check_whole_number("page_size", page_size, minimum=1)
        if start is None and end is None:
            end = self._clock.wall()
        if start is None:
            assert end is not None
            start = end - LIST_WINDOW
        if end is None:
            end = start + LIST_WINDOW
        if end < start:
            raise ValidationError("end", "must not be before start")
        filters: dict[str, str | int] = {"page_size": page_size}
        if model is not None:
            filters["model_name"] = model
        if status is not None:
            wanted = TaskStatus(status)
            if wanted is TaskStatus.UNRECOGNIZED:
                raise ValidationError("status", f"no task status {status!r}")
            filters["status"] = wanted.value
        queries = [
            {
                "start_time": _wire.format_list_time(window_start),
                "end_time": _wire.format_list_time(window_end),
                **filters,
            }
            for window_start, window_end in list_windows(start, end)
        ]
        return _TaskListing(fetch_page=self._list_page, queries=queries, before_page=before_page)

    async def _list_page(
        self,
        params: Mapping[str, str | int],
        meter: Callable[[], Awaitable[None]] | None,
    ) -> _wire.TaskListWire:
        return await self._call(
            "GET",
            "/tasks",
            kind=RequestKind.LIST,
            parse=lambda data: _wire.load(data, _wire.TaskListWire, what="task list"),
            params=params,
            meter=meter,
        )

    async def wait(
        self,
        task_id: str,
        *,
        # A deadline on the client's clock: no wait, backoff or request runs past it.
        timeout: float | None = None,  # noqa: ASYNC109
        poll_interval: float | None = None,
    ) -> TaskResult:
        """Poll a task until it ends; return its result or raise why it has none.

        The first poll goes at once; then the adaptive planner the runner uses decides (it
        learns each model's run time from the tasks this client waited for), or every
        ``poll_interval`` seconds. It is the runner's poll loop: a throttled, failed, lost or
        unreadable poll (a 408, 429, 5xx, no answer, a 200 that is not the service's JSON) is
        retried with backoff, or after the server's ``Retry-After`` up to ``max_retry_after``,
        never taken for the task's failure; and no wait runs past ``timeout``.

        Args:
            task_id: the task to wait for.
            timeout: seconds to wait in all; None waits as long as the task runs. 0 polls
                once: the result if the task has ended, else ``TaskTimeoutError`` (the one
                poll a deadline never cuts short, bounded by the request timeout).
            poll_interval: a fixed pause between polls instead of the planner's.

        Returns:
            The SUCCEEDED task; ``failures`` lists images that failed beside the good ones.

        Raises:
            TaskFailedError: FAILED, or a status this version does not know.
            TaskCanceledError: CANCELED.
            TaskNotFoundError: UNKNOWN (a wrong id, or a task older than 24 hours).
            TaskTimeoutError: still in progress at the deadline (``status`` says where).
            APIError: a poll was refused (a wrong key, no permission, ...).

        Example:
            ```python
            try:
                result = await client.wait(task.task_id, timeout=120)
            except ds.TaskTimeoutError as exc:
                print("still", exc.status)
            ```
        """
        return await self._wait(
            TaskPoll(task_id, UNKNOWN_MODEL), timeout=timeout, poll_interval=poll_interval
        )

    async def _wait(
        self,
        poll: TaskPoll,
        *,
        timeout: float | None,  # noqa: ASYNC109 - a deadline on the client's clock
        poll_interval: float | None = None,
    ) -> TaskResult:
        _check_task_id(poll.task_id)
        if timeout is not None:
            check_seconds("timeout", timeout)
        if poll_interval is not None:
            check_seconds("poll_interval", poll_interval, strictly_positive=True)
        planner = self._wait_planner
        if poll_interval is not None:
            # A fresh planner knows no run time, so every gap is clamped to the interval.
            planner = PollPlanner(
                PollPolicy(first_poll=0.0, min_interval=poll_interval, max_interval=poll_interval)
            )
        deadline = None if timeout is None else self._clock.now() + timeout
        try:
            info = await poll_until_done(
                poll, service=self, planner=planner, clock=self._clock, deadline=deadline
            )
        except TaskTimeoutError as exc:
            raise TaskTimeoutError(
                f"task {poll.task_id} still {exc.status.value} after {timeout} s",
                task_id=poll.task_id,
                status=exc.status,
            ) from None
        return result_or_raise(info)

    async def generate(
        self,
        request: Request,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - passed on to wait()
    ) -> TaskResult:
        """Submit a task and wait for its result.

        Args:
            request: a ``StyleRepaint`` or ``SketchToImage``.
            timeout: seconds to wait for the task after it was accepted, as ``wait()``'s
                (checked before the submit: a bad one spends nothing).

        Example:
            ```python
            result = await client.generate(ds.SketchToImage(url, prompt="a towering tree"))
            ```
        """
        if timeout is not None:
            check_seconds("timeout", timeout)
        task = await self.submit(request)
        poll = TaskPoll(task.task_id, request.model, task.status, submitted_at=self._clock.now())
        return await self._wait(poll, timeout=timeout)

    async def download(self, image: GeneratedImage, dest: str | os.PathLike[str]) -> Path:
        """Save a result image to ``dest``; no credentials go to the result host.

        Bounded by the client's ``download_limits`` (size and deadline). Saved into a folder,
        the file is named from the URL's file name and a hash of the URL, so two results that
        end in the same name never overwrite each other.

        Raises:
            DownloadTooLargeError: more than ``download_limits.max_bytes``.
            DownloadTimeoutError: not done within ``download_limits.timeout``.
            ResultExpiredError: the URL is past its life.

        Example:
            ```python
            path = await client.download(result.images[0], "out.png")
            ```
        """
        return await _downloads.download_image(
            self._http, image, dest, limits=self._download_limits, clock=self._clock
        )

    async def _get_upload_policy(self, model: str) -> _wire.UploadPolicyWire:
        """A temporary upload policy for ``model`` (``GET /uploads?action=getPolicy``)."""
        response = await self._call(
            "GET",
            "/uploads",
            kind=RequestKind.UPLOAD,
            parse=lambda data: _wire.load(
                data, _wire.UploadPolicyResponseWire, what="upload policy"
            ),
            params={"action": "getPolicy", "model": model},
        )
        return response.data

    # --- the request loop ---------------------------------------------------------------------

    def _api_url(self, path: str) -> httpx.URL:
        """The URL of ``path`` under the base URL, parsed once while it is in recent use (the
        submit routes, a task polled again and again)."""
        urls = self._urls
        url = urls.get(path)
        if url is None:
            url = urls[path] = httpx.URL(self._base_url + path)
            if len(urls) > URL_CACHE_SIZE:
                del urls[next(iter(urls))]  # the oldest parsed
        return url

    def _is_api_url(self, url: httpx.URL) -> bool:
        base = self._base
        return (
            url.scheme == base.scheme
            and url.host == base.host
            and url.port == base.port
            and (url.path + "/").startswith(base.path)
        )

    def _request_headers(self, url: httpx.URL, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"User-Agent": self._user_agent, "Accept": "application/json", **extra}
        if self._is_api_url(url):
            headers["Authorization"] = f"Bearer {self._credentials.api_key}"
            if self._credentials.workspace:
                headers[WORKSPACE_HEADER] = self._credentials.workspace
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        *,
        kind: RequestKind,
        parse: Callable[[Any], T],
        params: Mapping[str, str | int] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
        retry_throttled: bool = True,
        retry: bool = True,
        meter: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        url = self._api_url(path)
        if params:
            url = url.copy_merge_params(dict(params))
        retries_taken = 0
        while True:
            request = self._http.build_request(
                method,
                url,
                content=content,
                headers=self._request_headers(url, headers or {}),
                timeout=self._timeout,
            )
            if meter is not None:
                await meter()  # every attempt is one request the caller metered
            log_request(method, url.path, attempt=retries_taken)
            sent_at = self._clock.wall()
            answer_headers: httpx.Headers | None = None
            try:
                response = await self._http.send(request, follow_redirects=False)
            except httpx.TransportError as exc:
                verdict = verdict_for_exception(kind, exc)
                failure: DashScopeError = self._connection_error(exc)
                cause: BaseException | None = exc
                why = f"no answer ({type(exc).__name__})"
            else:
                if response.is_success:
                    try:
                        return parse(_json_of(response))
                    except ResponseValidationError as exc:
                        verdict = verdict_for_unreadable(kind)
                        failure, cause = exc, None
                        why = f"HTTP {response.status_code} with an unreadable body"
                else:
                    error = self._scrub(
                        error_from_response(
                            response,
                            now=self._clock.wall(),
                            max_retry_after=self._retry.max_retry_after,
                        )
                    )
                    verdict = verdict_for_response(
                        kind, error, response.headers, retry_throttled=retry_throttled
                    )
                    failure, cause, answer_headers = error, None, response.headers
                    why = f"HTTP {response.status_code} without the service's answer"
            if verdict is Verdict.RETRY and retry and retries_taken < self._retry.max_retries:
                await self._backoff(retries_taken, answer_headers)
                retries_taken += 1
                continue
            if verdict is Verdict.AMBIGUOUS:
                raise self._ambiguous(model, sent_at, why) from (cause or failure)
            raise failure from cause

    async def _backoff(self, retries_taken: int, headers: httpx.Headers | None) -> None:
        await self._clock.sleep(self._retry.delay(retries_taken, headers, now=self._clock.wall()))

    def _ambiguous(self, model: str | None, sent_at: datetime, why: str) -> AmbiguousSubmitError:
        name = model or "unknown"
        return AmbiguousSubmitError(
            f"submit for {name} sent at {sent_at.isoformat()} got {why}: a task may exist; "
            "look for it with list_tasks before submitting again",
            model=name,
            sent_at=sent_at,
        )

    def _connection_error(self, exc: httpx.TransportError) -> APIConnectionError:
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        return cls(self._redact(f"{type(exc).__name__}: {exc}"))

    def _scrub(self, error: APIError) -> APIError:
        # A service message that echoes the key must not carry it into logs or tracebacks.
        cleaned = self._redact(error.message)
        if cleaned == error.message:
            return error
        return type(error)(
            cleaned,
            status_code=error.status_code,
            code=error.code,
            request_id=error.request_id,
            retry_after=error.retry_after,
        )

    def _scrub_task(self, info: TaskInfo) -> TaskInfo:
        # A failed task's message may echo the request, and with it the key: the same scrub as
        # for API errors, so TaskFailedError and every log line stay clean.
        message = None if info.message is None else self._redact(info.message)
        failures = tuple(
            ImageFailure(f.index, f.code, self._redact(f.message)) for f in info.failures
        )
        if message == info.message and failures == info.failures:
            return info
        return attrs.evolve(info, message=message, failures=failures)

    def _redact(self, text: str) -> str:
        return redact(text, self._credentials.api_key)


def _json_of(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise ResponseValidationError(
            f"the answer to {response.request.method} {response.request.url.path} is not JSON",
            field="$",
        ) from None


def _ignore_body(data: Any) -> None:
    return None


def result_or_raise(info: TaskInfo) -> TaskResult:
    if isinstance(info, TaskResult):
        return info
    if info.status is TaskStatus.CANCELED:
        raise TaskCanceledError(info)
    if info.status is TaskStatus.UNKNOWN:
        raise TaskNotFoundError(
            f"task {info.task_id} is UNKNOWN: the id is wrong or the task is older than 24 hours",
            task_id=info.task_id,
        )
    # FAILED, and any status this version does not know: terminal, never polled forever.
    raise TaskFailedError(info)

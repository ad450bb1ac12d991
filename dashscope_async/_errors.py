"""The exception tree: every error this library raises, and nothing else.

It must not import the client or the runner; the client maps service answers onto these classes.

```
DashScopeError
├── ValidationError            bad input, found before any request was spent (also a ValueError)
│   └── InputTypeError             a value of the wrong Python type (also a TypeError)
├── BudgetExceededError        the runner's spending cap would be passed; nothing was submitted
├── LimiterUnavailableError    a shared limiter (Redis) cannot be reached; nothing was submitted
├── JournalError               the journal file cannot be used
│   ├── JournalInUseError          another runner has it open
│   └── JournalVersionError        a newer version of this library wrote it
├── APIError                   the service answered with an error (status_code, code, request_id)
│   ├── BadRequestError            400 InvalidParameter*, InvalidURL, DataInspectionFailed, ...
│   ├── AuthenticationError        401 InvalidApiKey
│   ├── PermissionDeniedError      403 AccessDenied*, and 400 Arrearage (the account is overdue)
│   ├── NotFoundError              404 ModelNotFound, WorkSpaceNotFound
│   ├── RateLimitError             429 Throttling, Throttling.RateQuota (retried)
│   ├── QuotaExceededError         429 Throttling.AllocationQuota and billing throttles (final)
│   └── ServerError                5xx
├── ResponseValidationError    an answer of the wrong shape (names the field)
├── APIConnectionError         no answer: the connection failed
│   └── APITimeoutError            no answer in time
├── AmbiguousSubmitError       a submit was sent but its fate is unknown: a task may exist
├── JobCanceledError           the caller cancelled the job, or left the runner, before it ended
├── JobError                   something other than the service failed inside one job (its cause)
├── RecordedFailureError       the job failed in an earlier run, as its journal recorded
├── TaskError                  a task reached a state other than success (carries task_id)
│   ├── TaskFailedError            FAILED (carries the task's TaskInfo)
│   │   └── TaskCanceledError          CANCELED
│   ├── TaskNotFoundError          UNKNOWN: an unknown or expired task id
│   └── TaskTimeoutError           still PENDING or RUNNING when the caller's deadline passed
├── ResultExpiredError         a result URL is past its life (403 from the result host)
└── DownloadError              a result image could not be saved within its limits
    ├── DownloadTooLargeError      the result host sent more than the size cap
    └── DownloadTimeoutError       the download did not end before its deadline
```
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import Request, TaskInfo, TaskStatus

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AmbiguousSubmitError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "DashScopeError",
    "DownloadError",
    "DownloadTimeoutError",
    "DownloadTooLargeError",
    "InputTypeError",
    "JobCanceledError",
    "JobError",
    "JournalError",
    "JournalInUseError",
    "JournalVersionError",
    "LimiterUnavailableError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RecordedFailureError",
    "ResponseValidationError",
    "ResultExpiredError",
    "ServerError",
    "TaskCanceledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "ValidationError",
]


class DashScopeError(Exception):
    """The root of every error raised by dashscope_async.

    Example:
        ```python
        try:
            result = await client.generate(request)
        except ds.DashScopeError as exc:
            print("the job did not produce an image:", exc)
        ```
    """


class ValidationError(DashScopeError, ValueError):
    """Bad input, found on the client before any request was sent.

    Attributes:
        field: the request field (or file, or manifest line) at fault.
        rule: the rule it broke, in words.

    Example:
        ```python
        try:
            ds.SketchToImage("https://example.com/s.png", prompt="tree", n=9)
        except ds.ValidationError as exc:
            assert exc.field == "n"
        ```
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class InputTypeError(ValidationError, TypeError):
    """Bad input of the wrong Python type (``max_retries="2"``, ``PollPolicy(deadline=True)``).

    Both a ``ValidationError`` (so one ``except ds.ValidationError`` refuses every bad input
    before a request is spent) and a ``TypeError`` (what Python code raises for a wrong type).
    The rule names what the field takes and the type it was given, never the value (it may be
    a secret).

    Attributes:
        field: the parameter or field at fault.
        rule: what it takes, in words (``"must be a number of seconds, not 'str'"``).

    Example:
        ```python
        try:
            ds.PollPolicy(min_interval="1")
        except ds.ValidationError as exc:  # or: except TypeError
            assert isinstance(exc, TypeError) and exc.field == "min_interval"
        ```
    """


class BudgetExceededError(DashScopeError):
    """Submitting this job would pass the runner's spending cap, so it was not submitted.

    Example:
        ```python
        async with ds.AsyncTaskRunner(client, budget=ds.Budget(images=10)) as runner:
            async for outcome in runner.map(requests):
                if isinstance(outcome.error, ds.BudgetExceededError):
                    print("not run: over budget")
        ```
    """


class LimiterUnavailableError(DashScopeError):
    """The shared limiter's Redis could not be reached, so nothing was submitted.

    Raised before a submit, never after one: a job that meets it was not sent to the service and
    can be run again once Redis is back.

    Example:
        ```python
        async for outcome in runner.map(requests):
            if isinstance(outcome.error, ds.LimiterUnavailableError):
                retry_later.append(outcome.request)
        ```
    """


class JournalError(DashScopeError):
    """The journal file cannot be used: not a journal, damaged, closed, or asked the impossible.

    Example:
        ```python
        try:
            journal = await ds.Journal.open("batch.sqlite")
        except ds.JournalError as exc:
            print("cannot use the journal:", exc)
        ```
    """


class JournalInUseError(JournalError):
    """Another runner (in this process or another) has the journal open.

    Two runners resuming one batch at once could both submit the same job, so the second is
    refused. The lock goes away when the first closes the journal or its process ends.
    """


class JournalVersionError(JournalError):
    """The journal was written by a newer version of this library; upgrade to use it."""


class APIError(DashScopeError):
    """The service answered with an error.

    Attributes:
        status_code: the HTTP status.
        code: the service's error code, such as ``"InvalidParameter"``, when it sent one.
        message: the service's message, or a description of the answer.
        request_id: the service's request id, when it sent one (quote it to support).
        retry_after: seconds the service asked us to wait, when it said so (capped by the
            client's ``max_retry_after``, 60 s by default).

    Example:
        ```python
        try:
            await client.submit(request)
        except ds.APIError as exc:
            print(exc.status_code, exc.code, exc.request_id)
        ```
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        parts = [f"HTTP {status_code}"]
        if code:
            parts.append(code)
        text = f"{' '.join(parts)}: {message}"
        if request_id:
            text += f" (request_id={request_id})"
        super().__init__(text)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequestError(APIError):
    """400: the service refused the request's content (InvalidParameter, InvalidURL, ...).

    Not retried: the same request would be refused again.

    Example:
        ```python
        try:
            await client.submit(request)
        except ds.BadRequestError as exc:
            print("fix the request:", exc.code, exc.message)
        ```
    """


class AuthenticationError(APIError):
    """401: the API key is missing or invalid (InvalidApiKey).

    Example:
        ```python
        try:
            await client.get_task(task_id)
        except ds.AuthenticationError:
            print("check DASHSCOPE_API_KEY (a China (Beijing) key is needed)")
        ```
    """


class PermissionDeniedError(APIError):
    """403, or 400 Arrearage: the account may not use this model, workspace or service.

    Example:
        ```python
        except ds.PermissionDeniedError as exc:
            if exc.code == "Arrearage":
                print("the account is overdue: top it up")
        ```
    """


class NotFoundError(APIError):
    """404: the model or workspace does not exist (ModelNotFound, WorkSpaceNotFound).

    Example:
        ```python
        except ds.NotFoundError as exc:
            print("unknown model or workspace:", exc.code)
        ```
    """


class RateLimitError(APIError):
    """429 Throttling or Throttling.RateQuota: too many requests; retried after a pause.

    The client retries it (after ``retry_after`` when the service sent one); the runner pauses
    the model for every job instead.

    Example:
        ```python
        try:
            await client.submit(request, retry_throttled=False)
        except ds.RateLimitError as exc:
            await anyio.sleep(exc.retry_after or 1.0)
        ```
    """


class QuotaExceededError(APIError):
    """429 Throttling.AllocationQuota (or a billing throttle): a quota is used up; not retried.

    Example:
        ```python
        except ds.QuotaExceededError:
            print("the free quota or the allocated quota is used up")
        ```
    """


class ServerError(APIError):
    """5xx: the service failed to handle the request.

    Reads are retried; a submit is retried only when the service answered with its own error
    JSON (no task was created).

    Example:
        ```python
        except ds.ServerError as exc:
            print("service trouble, request id", exc.request_id)
        ```
    """


class ResponseValidationError(DashScopeError):
    """The service answered with JSON of a shape this library does not understand.

    Attributes:
        field: the path of the field at fault, such as ``"output.task_id"``.

    Example:
        ```python
        except ds.ResponseValidationError as exc:
            print("unexpected answer at", exc.field)
        ```
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class APIConnectionError(DashScopeError):
    """No answer from the service: the connection could not be made or was lost.

    Example:
        ```python
        except ds.APIConnectionError:
            print("network trouble; nothing was created")
        ```
    """


class APITimeoutError(APIConnectionError):
    """No answer from the service within the timeout.

    Example:
        ```python
        client = ds.AsyncDashScope(timeout=httpx.Timeout(30.0, connect=5.0))
        ```
    """


class AmbiguousSubmitError(DashScopeError):
    """A submit was sent, but no usable answer came back: a task may or may not exist.

    The client never retries such a submit blindly, since a duplicate task is billed again.
    The runner reconciles it through the account's task list; when the list cannot prove within
    its time which task (if any) the submit created, the job ends with this error, and its
    journal keeps it as *ambiguous* so it can be settled later (``dashscope-async tasks
    reconcile``).

    Attributes:
        model: the model the submit was for.
        sent_at: when the submit was sent (aware UTC datetime); a task created by it was created
            at or after this moment.
        request: the request that was sent, when known.
        candidates: ids of tasks that may be this submit's (the runner could not tell whose).

    Example:
        ```python
        try:
            task = await client.submit(request)
        except ds.AmbiguousSubmitError as exc:
            async for item in client.list_tasks(start=exc.sent_at, model=exc.model):
                print("maybe ours:", item.task_id)
        ```
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        sent_at: datetime,
        request: Request | None = None,
        candidates: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.model = model
        self.sent_at = sent_at
        self.request = request
        self.candidates = candidates


class JobCanceledError(DashScopeError):
    """The job was cancelled on our side: by ``handle.cancel()``, ``runner.cancel_all()``, by
    leaving ``map`` early, or by leaving the runner.

    Attributes:
        task_id: the task's id if it had been submitted, else None.
        canceled_on_service: True when the task was PENDING and the service confirmed the cancel;
            False for a task that was already RUNNING (it may still finish and be billed).
        task_succeeded: True when the task had already SUCCEEDED (and is billed) and the job was
            cancelled while saving its images; the outcome carries the result, and a journaled
            batch run again saves them without a new task.

    Example:
        ```python
        handle = runner.submit(request)
        handle.cancel()
        outcome = await handle.wait()
        assert isinstance(outcome.error, ds.JobCanceledError)
        ```
    """

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = None,
        canceled_on_service: bool = False,
        task_succeeded: bool = False,
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.canceled_on_service = canceled_on_service
        self.task_succeeded = task_succeeded


class JobError(DashScopeError):
    """Something other than the service failed inside one job: the job ends with this outcome.

    Anything raised while a job is prepared, submitted, polled, downloaded or saved belongs to
    that job (a file that cannot be read, a result URL that redirects in a loop, a download
    folder that is a file, a bug): the batch and the runner carry on with the other jobs.

    Attributes:
        cause: the exception that was raised (also ``__cause__``).
        task_id: the task's id, when a task had been created (it may have been billed).

    Example:
        ```python
        async for outcome in runner.map(requests):
            if isinstance(outcome.error, ds.JobError):
                print("job", outcome.index, "broke:", repr(outcome.error.cause))
        ```
    """

    def __init__(self, message: str, *, cause: BaseException, task_id: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.task_id = task_id
        self.__cause__ = cause


class RecordedFailureError(DashScopeError):
    """The job failed in an earlier run of the batch, as its journal recorded; nothing was sent.

    A resumed batch replays finished jobs from the journal, failures included, so a failure is
    never paid for twice. Start a new journal (or drop the job's key) to run it again.

    Attributes:
        error_type: the class name of the original error, such as ``"TaskFailedError"``.
        code: the service's code, when the original error had one.
        task_id: the task's id, when there was a task.

    Example:
        ```python
        async for outcome in runner.map(jobs):
            if isinstance(outcome.error, ds.RecordedFailureError):
                print("failed last time:", outcome.error.error_type, outcome.error.code)
        ```
    """

    def __init__(
        self, message: str, *, error_type: str, code: str | None = None, task_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.code = code
        self.task_id = task_id


class TaskError(DashScopeError):
    """A task ended, or stopped being visible, without producing its result.

    Attributes:
        task_id: the task's id.

    Example:
        ```python
        except ds.TaskError as exc:
            print("task", exc.task_id, "gave no result:", exc)
        ```
    """

    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskFailedError(TaskError):
    """The task ended FAILED on the service.

    Attributes:
        task: the task as the service last reported it.
        code: the service's failure code, such as ``"InvalidImageResolution"``.

    Example:
        ```python
        try:
            result = await client.generate(request)
        except ds.TaskFailedError as exc:
            print(exc.code, exc.task.message)
        ```
    """

    def __init__(self, task: TaskInfo) -> None:
        detail = (
            f"{task.code}: {task.message}" if task.code else (task.message or "no reason given")
        )
        super().__init__(
            f"task {task.task_id} ended {task.status.value}: {detail}", task_id=task.task_id
        )
        self.task = task
        self.code = task.code


class TaskCanceledError(TaskFailedError):
    """The task was cancelled before it ran.

    Example:
        ```python
        except ds.TaskCanceledError as exc:
            print("cancelled, not billed:", exc.task_id)
        ```
    """


class TaskNotFoundError(TaskError):
    """The service reports UNKNOWN: the id is wrong, or the task is older than 24 hours.

    Example:
        ```python
        except ds.TaskNotFoundError as exc:
            print("gone:", exc.task_id)
        ```
    """


class TaskTimeoutError(TaskError):
    """The caller's deadline passed while the task was still PENDING or RUNNING.

    Attributes:
        status: the last status seen; a RUNNING task may still finish and be billed.

    Example:
        ```python
        try:
            await client.wait(task_id, timeout=120)
        except ds.TaskTimeoutError as exc:
            print("still", exc.status, "- look it up later by", exc.task_id)
        ```
    """

    def __init__(self, message: str, *, task_id: str, status: TaskStatus) -> None:
        super().__init__(message, task_id=task_id)
        self.status = status


class ResultExpiredError(DashScopeError):
    """A result image can no longer be fetched: its URL has passed its 24-hour life.

    Attributes:
        url: the expired URL, without its signature.

    Example:
        ```python
        try:
            await client.download(result.images[0], "out.png")
        except ds.ResultExpiredError as exc:
            print("too late to fetch", exc.url)
        ```
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class DownloadError(DashScopeError):
    """A result image could not be saved within the download's limits.

    Attributes:
        url: the image's URL, without its signature.

    Example:
        ```python
        try:
            await client.download(result.images[0], "out.png")
        except ds.DownloadError as exc:
            print("not saved:", exc)
        ```
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class DownloadTooLargeError(DownloadError):
    """The result host sent (or announced) more bytes than the download's size cap.

    Example:
        ```python
        client = ds.AsyncDashScope(download_limits=ds.DownloadLimits(max_bytes=128 * 2**20))
        ```
    """


class DownloadTimeoutError(DownloadError):
    """The download, retries included, did not end before its deadline (a host that trickles).

    Example:
        ```python
        client = ds.AsyncDashScope(download_limits=ds.DownloadLimits(timeout=600))
        ```
    """

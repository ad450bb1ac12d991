"""dashscope_async: an anyio-native client for DashScope's asynchronous image tasks.

Example:
    ```python
    import dashscope_async as ds

    async with ds.AsyncDashScope() as client:
        result = await client.generate(
            ds.StyleRepaint("https://example.com/me.jpg", style=ds.RepaintStyle.ANIME)
        )
        print(result.images[0].url)
    ```
"""

from ._budget import Budget, BudgetLedger, Spending
from ._client import AsyncDashScope
from ._clock import Clock
from ._config import MODELS, SKETCH_TO_IMAGE, STYLE_REPAINT, ImageRules, ModelSpec
from ._downloads import DownloadLimits
from ._errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    DashScopeError,
    DownloadError,
    DownloadTimeoutError,
    DownloadTooLargeError,
    InputTypeError,
    JobCanceledError,
    JobError,
    JournalError,
    JournalInUseError,
    JournalVersionError,
    LimiterUnavailableError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RecordedFailureError,
    ResponseValidationError,
    ResultExpiredError,
    ServerError,
    TaskCanceledError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
)
from ._estimate import Estimate, ModelEstimate, estimate
from ._events import EventKind, EventStream, RunnerEvent
from ._journal import JobState, Journal, JournalEntry
from ._limits import Limiter, Limits, LocalLimiter, ModelLimits, SlotLease
from ._models import (
    GeneratedImage,
    ImageFailure,
    ImageInput,
    PromptTruncatedWarning,
    RepaintStyle,
    Request,
    SketchStyle,
    SketchToImage,
    StyleRepaint,
    Task,
    TaskInfo,
    TaskListItem,
    TaskMetrics,
    TaskResult,
    TaskStatus,
    Usage,
)
from ._polling import PollPlanner, PollPolicy, RunTimeStats
from ._runner import AsyncTaskRunner, Batch, Job, JobHandle, JobStatus, Outcome, TaskService
from ._store import JobStore
from ._version import __version__

__all__ = [
    "MODELS",
    "SKETCH_TO_IMAGE",
    "STYLE_REPAINT",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AmbiguousSubmitError",
    "AsyncDashScope",
    "AsyncTaskRunner",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "Budget",
    "BudgetExceededError",
    "BudgetLedger",
    "Clock",
    "DashScopeError",
    "DownloadError",
    "DownloadLimits",
    "DownloadTimeoutError",
    "DownloadTooLargeError",
    "Estimate",
    "EventKind",
    "EventStream",
    "GeneratedImage",
    "ImageFailure",
    "ImageInput",
    "ImageRules",
    "InputTypeError",
    "Job",
    "JobCanceledError",
    "JobError",
    "JobHandle",
    "JobState",
    "JobStatus",
    "JobStore",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalInUseError",
    "JournalVersionError",
    "Limiter",
    "LimiterUnavailableError",
    "Limits",
    "LocalLimiter",
    "ModelEstimate",
    "ModelLimits",
    "ModelSpec",
    "NotFoundError",
    "Outcome",
    "PermissionDeniedError",
    "PollPlanner",
    "PollPolicy",
    "PromptTruncatedWarning",
    "QuotaExceededError",
    "RateLimitError",
    "RecordedFailureError",
    "RepaintStyle",
    "Request",
    "ResponseValidationError",
    "ResultExpiredError",
    "RunTimeStats",
    "RunnerEvent",
    "ServerError",
    "SketchStyle",
    "SketchToImage",
    "SlotLease",
    "Spending",
    "StyleRepaint",
    "Task",
    "TaskCanceledError",
    "TaskError",
    "TaskFailedError",
    "TaskInfo",
    "TaskListItem",
    "TaskMetrics",
    "TaskNotFoundError",
    "TaskResult",
    "TaskService",
    "TaskStatus",
    "TaskTimeoutError",
    "Usage",
    "ValidationError",
    "__version__",
    "estimate",
]

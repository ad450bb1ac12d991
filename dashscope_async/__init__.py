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

from ._clock import Clock
from ._config import MODELS, SKETCH_TO_IMAGE, STYLE_REPAINT, ImageRules, ModelSpec
from ._errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    DashScopeError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
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
from ._version import __version__

__all__ = [
    "MODELS",
    "SKETCH_TO_IMAGE",
    "STYLE_REPAINT",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AmbiguousSubmitError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "Clock",
    "DashScopeError",
    "GeneratedImage",
    "ImageFailure",
    "ImageInput",
    "ImageRules",
    "ModelSpec",
    "NotFoundError",
    "PermissionDeniedError",
    "PromptTruncatedWarning",
    "QuotaExceededError",
    "RateLimitError",
    "RepaintStyle",
    "Request",
    "ResponseValidationError",
    "ResultExpiredError",
    "ServerError",
    "SketchStyle",
    "SketchToImage",
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
    "TaskStatus",
    "TaskTimeoutError",
    "Usage",
    "ValidationError",
    "__version__",
]

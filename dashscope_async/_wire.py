"""The service's JSON, both ways: wire shapes as attrs classes and the one cattrs converter.

Owns field names, time formats and the mapping between wire shapes and the public models. The
client and the emulator both speak through this module, so a shape is written once. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, TypeVar, get_origin

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.gen import make_dict_structure_fn
from cattrs.v import transform_error

from ._errors import ResponseValidationError
from ._models import (
    GeneratedImage,
    ImageFailure,
    Request,
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

__all__ = [
    "CHINA_TZ",
    "ErrorWire",
    "RepaintBody",
    "SketchBody",
    "SubmitResponseWire",
    "TaskListWire",
    "TaskResponseWire",
    "UploadPolicyResponseWire",
    "converter",
    "dump",
    "format_list_time",
    "format_service_time",
    "load",
    "parse_service_time",
    "submit_body",
    "task_from_submit",
    "task_info_from_wire",
    "task_list_item_from_wire",
]

#: The service reports times in China Standard Time.
CHINA_TZ: Final = timezone(timedelta(hours=8), "CST")
SERVICE_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S.%f"
LIST_TIME_FORMAT: Final = "%Y%m%d%H%M%S"

T = TypeVar("T")

# --- request bodies ---------------------------------------------------------------------------


@attrs.frozen
class RepaintInput:
    image_url: str
    style_index: int
    style_ref_url: str | None = None


@attrs.frozen
class RepaintBody:
    """``wanx-style-repaint-v1`` has no ``parameters`` object."""

    model: str
    input: RepaintInput


@attrs.frozen
class SketchInput:
    sketch_image_url: str
    prompt: str


@attrs.frozen
class SketchParameters:
    # Defaults are the service's own, so a body parsed without them reads as the service would.
    style: str = "<auto>"
    size: str = "768*768"
    n: int = 4
    sketch_weight: int = 10
    sketch_extraction: bool = False
    sketch_color: list[list[int]] = attrs.field(factory=list)


@attrs.frozen
class SketchBody:
    model: str
    input: SketchInput
    parameters: SketchParameters = attrs.field(factory=SketchParameters)


def submit_body(request: Request, urls: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The JSON body of a submit.

    Args:
        request: the validated request.
        urls: resolved URLs for image fields that were local files or bytes, by field name
            (``"image"``, ``"style_ref"``, ``"sketch"``). URL inputs are sent as given.
    """
    resolved = dict(urls or {})

    def url_of(field: str, value: object) -> str:
        if field in resolved:
            return resolved[field]
        if not isinstance(value, str):
            raise ValueError(f"{field} is a local file or bytes and was not resolved to a URL")
        return value

    body: RepaintBody | SketchBody
    if isinstance(request, StyleRepaint):
        body = RepaintBody(
            model=request.model,
            input=RepaintInput(
                image_url=url_of("image", request.image),
                style_index=request.style_index,
                style_ref_url=None
                if request.style_ref is None
                else url_of("style_ref", request.style_ref),
            ),
        )
    elif isinstance(request, SketchToImage):
        body = SketchBody(
            model=request.model,
            input=SketchInput(
                sketch_image_url=url_of("sketch", request.sketch), prompt=request.prompt
            ),
            parameters=SketchParameters(
                style=request.style.value,
                size=request.size,
                # Always sent: the service's default is 4 images, each billed.
                n=request.n,
                sketch_weight=request.sketch_weight,
                sketch_extraction=request.sketch_extraction,
                sketch_color=[list(color) for color in request.sketch_color],
            ),
        )
    else:  # pragma: no cover - the Request union is closed
        raise TypeError(f"not a request: {type(request).__name__}")
    return dump(body)


# --- responses --------------------------------------------------------------------------------


@attrs.frozen
class ErrorWire:
    """The error body every endpoint uses."""

    code: str | None = None
    message: str | None = None
    request_id: str | None = None


@attrs.frozen
class SubmitOutputWire:
    task_id: str
    task_status: str = "PENDING"


@attrs.frozen
class SubmitResponseWire:
    output: SubmitOutputWire
    request_id: str | None = None


@attrs.frozen
class ResultItemWire:
    url: str | None = None
    code: str | None = None
    message: str | None = None


@attrs.frozen
class TaskMetricsWire:
    TOTAL: int = 0
    SUCCEEDED: int = 0
    FAILED: int = 0


@attrs.frozen
class UsageWire:
    image_count: int = 0


@attrs.frozen
class TaskOutputWire:
    task_id: str
    task_status: str
    submit_time: str | None = None
    scheduled_time: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    code: str | None = None
    message: str | None = None
    results: list[ResultItemWire] | None = None
    task_metrics: TaskMetricsWire | None = None
    # wanx-style-repaint-v1 extras
    style_index: int | None = None
    error_code: int | None = None
    error_message: str | None = None


@attrs.frozen
class TaskResponseWire:
    output: TaskOutputWire
    request_id: str | None = None
    usage: UsageWire | None = None


@attrs.frozen
class TaskListItemWire:
    task_id: str
    status: str
    model_name: str | None = None
    gmt_create: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    request_id: str | None = None
    api_key_id: str | None = None
    caller_parent_id: str | None = None
    caller_uid: str | None = None
    region: str | None = None
    user_api_unique_key: str | None = None


@attrs.frozen
class TaskListWire:
    """The task list is flat: no ``output`` wrapper."""

    request_id: str | None = None
    total: int = 0
    total_page: int = 0
    page_no: int = 1
    page_size: int = 10
    data: list[TaskListItemWire] = attrs.field(factory=list)


@attrs.frozen
class UploadPolicyWire:
    policy: str
    signature: str
    upload_dir: str
    upload_host: str
    expire_in_seconds: int
    max_file_size_mb: int
    capacity_limit_mb: int
    oss_access_key_id: str
    x_oss_object_acl: str
    x_oss_forbid_overwrite: str


@attrs.frozen
class UploadPolicyResponseWire:
    data: UploadPolicyWire
    request_id: str | None = None


converter: Final = cattrs.Converter(detailed_validation=True, forbid_extra_keys=False)


# JSON must have the shape it claims. Left alone, cattrs turns 5 into "5", a string into a list
# of its characters, and a string into an attrs class of defaults: a wrong answer would pass.
def _structure_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value


def _structure_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number, not {type(value).__name__}")
    return value


def _structure_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, not {type(value).__name__}")
    return value


def _is_list(shape: Any) -> bool:
    return get_origin(shape) is list


def _only(expected: type, what: str, inner: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def structure(value: Any, cls: Any) -> Any:
        if not isinstance(value, expected):
            raise TypeError(f"expected {what}, not {type(value).__name__}")
        return inner(value, cls)

    return structure


def _list_hook(shape: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return _only(list, "a list", list_structure_factory(shape, conv))


def _object_hook(shape: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return _only(Mapping, "an object", make_dict_structure_fn(shape, conv))


converter.register_structure_hook(str, _structure_str)
converter.register_structure_hook(int, _structure_int)
converter.register_structure_hook(bool, _structure_bool)
converter.register_structure_hook_factory(_is_list, _list_hook)
converter.register_structure_hook_factory(attrs.has, _object_hook)


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _strip_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_strip_none(item) for item in value]
    return value


def dump(value: object) -> dict[str, Any]:
    """Unstructure a wire shape to JSON-ready data, leaving out fields that are None."""
    data = _strip_none(converter.unstructure(value))
    assert isinstance(data, dict)
    return data


def load(data: object, shape: type[T], *, what: str) -> T:
    """Structure JSON data into a wire shape.

    Raises:
        ResponseValidationError: the data does not fit; the message names the field.
    """
    try:
        return converter.structure(data, shape)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            problems = transform_error(exc, path="$")
            first = problems[0] if problems else str(exc)
            field = first.rsplit(" @ ", 1)[-1] if " @ " in first else None
        else:
            first, field = str(exc), None
        raise ResponseValidationError(
            f"unexpected {what} from the service: {'; '.join(problems) if isinstance(exc, cattrs.BaseValidationError) else first}",
            field=field,
        ) from None


# --- times ------------------------------------------------------------------------------------


def parse_service_time(text: str | None) -> datetime | None:
    """``"2023-12-20 21:36:31.896"`` (China time) as an aware datetime; None stays None."""
    if not text:
        return None
    # fromisoformat is many times faster than strptime, and this runs on every poll; the
    # checks keep it to the service's shape (a space, then seconds with or without a fraction).
    if 19 <= len(text) <= 26 and text[10] == " ":
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                return moment.replace(tzinfo=CHINA_TZ)
    raise ResponseValidationError(f"unexpected time format {text!r}", field="time")


def format_service_time(moment: datetime) -> str:
    """An aware datetime in the service's format (China time, milliseconds)."""
    local = moment.astimezone(CHINA_TZ)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def format_list_time(moment: datetime) -> str:
    """An aware datetime as the task list's ``YYYYMMDDhhmmss`` (China time)."""
    return moment.astimezone(CHINA_TZ).strftime(LIST_TIME_FORMAT)


def parse_list_time(text: str) -> datetime:
    """The task list's ``YYYYMMDDhhmmss`` (China time) as an aware datetime."""
    return datetime.strptime(text, LIST_TIME_FORMAT).replace(tzinfo=CHINA_TZ)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)


# Integer arithmetic, not float seconds: 1.001 * 1000 is 1000.999..., which truncates to 1000.
def from_epoch_ms(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + value * _MILLISECOND


def to_epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MILLISECOND


# --- wire to public models --------------------------------------------------------------------

_MODELED_OUTPUT_FIELDS: Final = frozenset(
    attrs.fields_dict(TaskOutputWire).keys() - {"style_index", "error_code", "error_message"}
)


def task_from_submit(data: object, *, model: str) -> Task:
    """A submit's answer as a ``Task``."""
    wire = load(data, SubmitResponseWire, what="submit answer")
    if not wire.output.task_id:
        raise ResponseValidationError(
            "the submit answer has an empty task_id", field="$.output.task_id"
        )
    return Task(
        task_id=wire.output.task_id,
        status=TaskStatus(wire.output.task_status),
        model=model,
        request_id=wire.request_id,
    )


def task_info_from_wire(data: object) -> TaskInfo:
    """A ``GET /tasks/{id}`` answer as a ``TaskInfo`` (a ``TaskResult`` when SUCCEEDED)."""
    wire = load(data, TaskResponseWire, what="task answer")
    out = wire.output
    images: list[GeneratedImage] = []
    failures: list[ImageFailure] = []
    for index, item in enumerate(out.results or ()):
        if item.url:
            images.append(GeneratedImage(url=item.url, index=index))
        else:
            failures.append(
                ImageFailure(index=index, code=item.code or "Unknown", message=item.message or "")
            )
    raw_output = data["output"] if isinstance(data, Mapping) else {}
    extra = {key: value for key, value in raw_output.items() if key not in _MODELED_OUTPUT_FIELDS}
    status = TaskStatus(out.task_status)
    metrics = out.task_metrics
    cls = TaskResult if status is TaskStatus.SUCCEEDED else TaskInfo
    return cls(
        task_id=out.task_id,
        status=status,
        submit_time=parse_service_time(out.submit_time),
        scheduled_time=parse_service_time(out.scheduled_time or out.start_time),
        end_time=parse_service_time(out.end_time),
        images=tuple(images),
        failures=tuple(failures),
        code=out.code or None,
        message=out.message or None,
        metrics=None
        if metrics is None
        else TaskMetrics(total=metrics.TOTAL, succeeded=metrics.SUCCEEDED, failed=metrics.FAILED),
        usage=None if wire.usage is None else Usage(image_count=wire.usage.image_count),
        request_id=wire.request_id,
        extra=extra,
    )


def task_list_item_from_wire(item: TaskListItemWire) -> TaskListItem:
    known = {
        "task_id",
        "status",
        "model_name",
        "gmt_create",
        "start_time",
        "end_time",
        "request_id",
        "api_key_id",
    }
    raw = converter.unstructure(item)
    return TaskListItem(
        task_id=item.task_id,
        status=TaskStatus(item.status),
        model=item.model_name,
        created=from_epoch_ms(item.gmt_create),
        start_time=from_epoch_ms(item.start_time),
        end_time=from_epoch_ms(item.end_time),
        request_id=item.request_id,
        api_key_id=item.api_key_id,
        extra={key: value for key, value in raw.items() if key not in known and value is not None},
    )

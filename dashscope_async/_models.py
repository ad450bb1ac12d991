"""The public data types: requests (validated when built), tasks, results, and their enums.

Plain attrs values; no I/O and no JSON here (``_wire.py`` converts them to and from the service's
JSON). A request that exists is a request the service's documented rules accept, as far as the
client can tell without reading files or fetching URLs.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Final, TypeAlias

import attrs

from ._checks import check_flag, check_text, check_url, check_whole_number, wrong_type
from ._config import SKETCH_TO_IMAGE, STYLE_REPAINT, ModelSpec
from ._errors import ValidationError

__all__ = [
    "GeneratedImage",
    "ImageFailure",
    "ImageInput",
    "RepaintStyle",
    "Request",
    "SketchStyle",
    "SketchToImage",
    "StyleRepaint",
    "Task",
    "TaskInfo",
    "TaskListItem",
    "TaskMetrics",
    "TaskResult",
    "TaskStatus",
    "Usage",
]

ImageInput: TypeAlias = "str | os.PathLike[str] | bytes"
"""An input image: an ``http(s)://`` or ``oss://`` URL, a ``data:`` URI (style repaint only),
a local path (``str`` or ``os.PathLike``) or the image's bytes.

Example:
    ```python
    ds.StyleRepaint(Path("me.jpg").read_bytes(), style="anime")
    ```
"""

URL_SCHEMES: Final = ("http://", "https://", "oss://")
PROMPT_SOFT_LIMIT: Final = 75
#: Longer than any path a file system takes (Linux allows 4096 bytes).
MAX_PATH_LENGTH: Final = 4096


def style_label(style: enum.Enum) -> str:
    """The one name shown for a preset style: ``clay-world``, ``oil-painting``.

    ``RepaintStyle.parse`` and ``SketchStyle.parse`` accept it, the member name
    (``CLAY_WORLD``, ``clay_world``) and, for repaint, the index.
    """
    return style.name.lower().replace("_", "-")


class PromptTruncatedWarning(UserWarning):
    """A sketch prompt is longer than the service reads; it will cut the rest off.

    Example:
        ```python
        warnings.simplefilter("error", ds.PromptTruncatedWarning)  # make it an error instead
        ```
    """


class RepaintStyle(enum.IntEnum):
    """The preset styles of ``wanx-style-repaint-v1`` (the service's ``style_index``).

    Example:
        ```python
        ds.StyleRepaint("https://example.com/me.jpg", style=ds.RepaintStyle.ANIME)
        ```
    """

    RETRO_COMIC = 0
    FAIRY_TALE_3D = 1
    ANIME = 2
    FRESH = 3
    FUTURISTIC = 4
    CHINESE_INK = 5
    WARRIOR_GENERAL = 6
    COLORFUL_CARTOON = 7
    ELEGANT_CHINESE = 8
    NEW_YEAR = 9
    GONGBI = 14
    NEW_YEAR_GREETINGS = 15
    FAIRY_TALE_WORLD = 30
    CLAY_WORLD = 31
    PIXEL_WORLD = 32
    ADVENTURE_WORLD = 33
    JAPANESE_MANGA_WORLD = 34
    WORLD_3D = 35
    ANIME_WORLD = 36
    HAND_DRAWN_WORLD = 37
    CRAYON_WORLD = 38
    FRIDGE_MAGNET_WORLD = 39
    BADGE_WORLD = 40

    @classmethod
    def parse(cls, value: str | int) -> RepaintStyle:
        """A style from its index (``2``, ``"2"``) or name (``"anime"``, ``"ANIME"``, ``"anime-world"``).

        Raises:
            ValidationError: no such style.
        """
        text = str(value).strip()
        try:
            return cls(int(text))
        except ValueError:
            pass
        key = text.upper().replace("-", "_").replace(" ", "_")
        try:
            return cls[key]
        except KeyError:
            names = ", ".join(style_label(m) for m in cls)
            raise ValidationError(
                "style", f"no preset style {value!r}; choose from {names}"
            ) from None


class SketchStyle(enum.StrEnum):
    """The styles of ``wanx-sketch-to-image-lite`` (the service's ``parameters.style``).

    The API reference lists all eight; the user guide says only five are supported (flat
    illustration, oil painting, anime, 3D cartoon, watercolor), so prefer those.

    Example:
        ```python
        ds.SketchToImage(url, prompt="a cat", style=ds.SketchStyle.WATERCOLOR)
        ds.SketchStyle.parse("oil-painting")  # SketchStyle.OIL_PAINTING
        ```
    """

    AUTO = "<auto>"
    CARTOON_3D = "<3d cartoon>"
    ANIME = "<anime>"
    OIL_PAINTING = "<oil painting>"
    WATERCOLOR = "<watercolor>"
    SKETCH = "<sketch>"
    CHINESE_PAINTING = "<chinese painting>"
    FLAT_ILLUSTRATION = "<flat illustration>"

    @classmethod
    def parse(cls, value: str) -> SketchStyle:
        """A style from its wire value (``"<anime>"``) or name (``"anime"``, ``"oil-painting"``).

        Raises:
            ValidationError: no such style.
        """
        text = value.strip()
        try:
            return cls(text.lower())
        except ValueError:
            pass
        key = text.strip("<>").upper().replace("-", "_").replace(" ", "_")
        aliases = {"3D_CARTOON": "CARTOON_3D"}
        try:
            return cls[aliases.get(key, key)]
        except KeyError:
            names = ", ".join(style_label(m) for m in cls)
            raise ValidationError(
                "style", f"no sketch style {value!r}; choose from {names}"
            ) from None


class TaskStatus(enum.StrEnum):
    """A task's state on the service.

    ``UNRECOGNIZED`` stands for a status this version does not know; it is treated as terminal
    so that nothing polls forever.

    Example:
        ```python
        info = await client.get_task(task_id)
        if info.status.is_terminal:
            print("done:", info.status)
        ```
    """

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"
    UNRECOGNIZED = "UNRECOGNIZED"

    @property
    def is_terminal(self) -> bool:
        """True once the task will not change again."""
        return self not in _IN_PROGRESS

    @classmethod
    def _missing_(cls, value: object) -> TaskStatus:
        return cls.UNRECOGNIZED


_IN_PROGRESS: Final = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUSPENDED})


# --- input checks -----------------------------------------------------------------------------


def check_image_input(field: str, value: object, *, spec: ModelSpec) -> None:
    """Reject image inputs that can never work, without touching the file system or network.

    Local paths are refused here only for their form (a NUL, a bytes path); whether they exist
    is checked when the job is prepared. A ``data:`` URI's form and size are checked here; it is
    decoded and checked as an image when the job is prepared, like a file.
    """
    if isinstance(value, bytes | bytearray):
        if not value:
            raise ValidationError(field, "image bytes are empty")
        return
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        if not isinstance(path, str):
            raise ValidationError(
                field,
                f"a path must be text; {type(value).__name__} gives bytes ({path[:60]!r}):"
                " decode it with os.fsdecode, or pass the file's content as bytes",
            )
        _check_path_text(field, path)
        return
    if not isinstance(value, str):
        raise wrong_type(field, "a URL, a path or bytes", value)
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    lowered = value.lower()
    if lowered.startswith("data:"):
        check_data_uri(field, value, spec=spec)
        return
    if lowered.startswith(URL_SCHEMES):
        check_url(field, value)
        return
    if lowered.startswith("file://"):
        _check_path_text(field, value)
        return  # a local path, read when the job is prepared
    if "://" in value.split("?", 1)[0][:16]:
        scheme = value.split("://", 1)[0]
        raise ValidationError(
            field, f"unsupported URL scheme {scheme!r}; use http(s), oss, data or a path"
        )
    # Anything else is a local path; whether it exists is checked when the job is prepared.
    _check_path_text(field, value)


def _check_path_text(field: str, path: str) -> None:
    if "\x00" in path:
        raise ValidationError(field, "a path cannot contain a NUL character")
    if len(path) > MAX_PATH_LENGTH:
        raise ValidationError(field, f"a path of {len(path):,} characters is too long")


_DATA_URI: Final = re.compile(
    r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,", re.IGNORECASE
)


def check_data_uri(field: str, uri: str, *, spec: ModelSpec) -> str:
    """The base64 payload of a ``data:<mime>;base64,<data>`` URI whose form and size are right.

    Cheap enough to run when a request is built (no decoding); ``decode_data_uri`` decodes.

    Raises:
        ValidationError: the model takes no data URIs, or the URI is malformed, not of an
            image type, or holds more bytes than the model takes.
    """
    rules = spec.image_rules
    if not rules.accepts_data_uri:
        raise ValidationError(
            field, f"{spec.name} does not accept data: URIs; pass a URL or a file"
        )
    match = _DATA_URI.match(uri)
    if match is None:
        raise ValidationError(field, "a data: URI must be data:<mime>;base64,<data>")
    if not match["mime"].lower().startswith("image/"):
        raise ValidationError(field, f"the data: URI is {match['mime']!r}, not an image/ type")
    payload = uri[match.end() :]
    # Base64 carries 3 bytes in every 4 characters.
    if len(payload) // 4 * 3 > rules.max_bytes + 2:
        raise ValidationError(
            field,
            f"the data: URI holds about {len(payload) // 4 * 3:,} bytes; {spec.name} takes at"
            f" most {rules.max_bytes:,}",
        )
    return payload


def decode_data_uri(field: str, uri: str, *, spec: ModelSpec) -> bytes:
    """The bytes of a ``data:`` URI, once ``check_data_uri`` passed. Decodes: run it in a thread.

    Raises:
        ValidationError: a rule of ``check_data_uri`` is broken, or the payload is not base64.
    """
    payload = check_data_uri(field, uri, spec=spec)
    try:
        content = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(field, "the data: URI's payload is not valid base64") from None
    if not content:
        raise ValidationError(field, "the data: URI holds no bytes")
    return content


def _image_validator(spec: ModelSpec) -> Any:
    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check_image_input(attribute.name, value, spec=spec)

    return validate


def _optional_image_validator(spec: ModelSpec) -> Any:
    inner = _image_validator(spec)

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            inner(instance, attribute, value)

    return validate


def _to_repaint_style(value: RepaintStyle | int | str | None) -> RepaintStyle | None:
    if value is None or isinstance(value, RepaintStyle):
        return value
    if isinstance(value, bool):
        raise wrong_type("style", "a ds.RepaintStyle, its index or its name", value)
    if isinstance(value, int) and value == -1:
        raise ValidationError(
            "style", "style index -1 means a custom style: pass style_ref= instead"
        )
    return RepaintStyle.parse(value)


def _to_sketch_style(value: SketchStyle | str) -> SketchStyle:
    if isinstance(value, SketchStyle):
        return value
    if not isinstance(value, str):
        raise wrong_type("style", "a ds.SketchStyle or its name", value)
    return SketchStyle.parse(value)


def _int_in(field: str, low: int, high: int) -> Any:
    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check_whole_number(field, value, minimum=low, maximum=high)

    return validate


def _to_colors(value: object) -> tuple[tuple[int, int, int], ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise wrong_type("sketch_color", "a sequence of [R, G, B] triples", value)
    colors: list[tuple[int, int, int]] = []
    for position, color in enumerate(value):
        where = f"sketch_color[{position}]"
        if isinstance(color, str | bytes) or not isinstance(color, Sequence) or len(color) != 3:
            raise ValidationError(where, f"must be an [R, G, B] triple, not {color!r}")
        for channel in color:
            check_whole_number(where, channel, minimum=0, maximum=255)
        colors.append((color[0], color[1], color[2]))
    return tuple(colors)


def _check_prompt(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_text("prompt", value, what="prompt")
    assert isinstance(value, str)
    if len(value) > PROMPT_SOFT_LIMIT:
        warnings.warn(
            f"prompt is {len(value)} characters; the service reads the first {PROMPT_SOFT_LIMIT}"
            " and drops the rest",
            PromptTruncatedWarning,
            stacklevel=4,
        )


def _check_size(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value != "768*768":
        raise ValidationError(
            "size", f'the only size the service offers is "768*768", not {value!r}'
        )


def _check_bool(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_flag(attribute.name, value)


# --- requests ---------------------------------------------------------------------------------


@attrs.frozen
class StyleRepaint:
    """Repaint a portrait in a preset style, or in the style of a reference image.

    Give exactly one of ``style`` (a preset) and ``style_ref`` (a custom style image, sent as
    ``style_index: -1``). One image per task; CNY 0.12 each.

    Args:
        image: the portrait: an http(s) or ``oss://`` URL, a ``data:`` URI, a path or bytes.
            256x256 to 5760x3240, long side at most twice the short; JPEG, PNG, BMP or WEBP;
            at most 10 MB.
        style: a preset style (``RepaintStyle``, its index, or its name).
        style_ref: an image whose style to copy, in the same forms as ``image``.

    Raises:
        ValidationError: both or neither of ``style`` and ``style_ref``, or an input that can
            never work.

    Example:
        ```python
        anime = ds.StyleRepaint("https://example.com/me.jpg", style=ds.RepaintStyle.ANIME)
        custom = ds.StyleRepaint("me.jpg", style_ref="https://example.com/van-gogh.jpg")
        ```
    """

    model: ClassVar[str] = STYLE_REPAINT.name
    spec: ClassVar[ModelSpec] = STYLE_REPAINT

    image: ImageInput = attrs.field(validator=_image_validator(STYLE_REPAINT))
    style: RepaintStyle | None = attrs.field(default=None, converter=_to_repaint_style)
    style_ref: ImageInput | None = attrs.field(
        default=None, kw_only=True, validator=_optional_image_validator(STYLE_REPAINT)
    )

    def __attrs_post_init__(self) -> None:
        if self.style is None and self.style_ref is None:
            raise ValidationError("style", "give a preset style= or a custom style_ref= image")
        if self.style is not None and self.style_ref is not None:
            raise ValidationError(
                "style_ref", "give either a preset style= or a style_ref= image, not both"
            )

    @property
    def style_index(self) -> int:
        """The service's ``style_index``: the preset's index, or -1 for a custom style."""
        return -1 if self.style is None else int(self.style)

    @property
    def images_requested(self) -> int:
        """Images this request asks for (and at most pays for): always 1."""
        return 1


@attrs.frozen
class SketchToImage:
    """Turn a sketch and a prompt into images (``wanx-sketch-to-image-lite``).

    ``n`` defaults to 1 here, not to the service's 4: the service bills per image, so more
    images are opt-in. CNY 0.06 per image.

    Args:
        sketch: the sketch: an http(s) or ``oss://`` URL, a path or bytes. 256 to 2048 pixels a
            side; JPEG, PNG, TIFF or WEBP; at most 10 MB.
        prompt: what to draw; the service reads the first 75 characters (a longer prompt
            warns with ``PromptTruncatedWarning``).
        n: images to make, 1 to 4.
        style: a ``SketchStyle`` (or its name).
        sketch_weight: 0 to 10; higher follows the sketch more closely.
        sketch_extraction: extract edges from a photo instead of reading strokes.
        sketch_color: the stroke colours, as RGB triples, when strokes are not black.
        size: the output size; the service offers only ``"768*768"``.

    Raises:
        ValidationError: a value outside the documented range.

    Example:
        ```python
        request = ds.SketchToImage(
            "https://example.com/tree.png", prompt="a towering tree", style="watercolor"
        )
        ```
    """

    model: ClassVar[str] = SKETCH_TO_IMAGE.name
    spec: ClassVar[ModelSpec] = SKETCH_TO_IMAGE

    sketch: ImageInput = attrs.field(validator=_image_validator(SKETCH_TO_IMAGE))
    prompt: str = attrs.field(validator=_check_prompt)
    n: int = attrs.field(default=1, kw_only=True, validator=_int_in("n", 1, 4))
    style: SketchStyle = attrs.field(
        default=SketchStyle.AUTO, kw_only=True, converter=_to_sketch_style
    )
    sketch_weight: int = attrs.field(
        default=10, kw_only=True, validator=_int_in("sketch_weight", 0, 10)
    )
    sketch_extraction: bool = attrs.field(default=False, kw_only=True, validator=_check_bool)
    sketch_color: tuple[tuple[int, int, int], ...] = attrs.field(
        default=(), kw_only=True, converter=_to_colors
    )
    size: str = attrs.field(default="768*768", kw_only=True, validator=_check_size)

    @property
    def images_requested(self) -> int:
        """Images this request asks for (and at most pays for)."""
        return self.n


Request: TypeAlias = StyleRepaint | SketchToImage
"""Any request the client can submit: a ``StyleRepaint`` or a ``SketchToImage``.

Example:
    ```python
    requests: list[ds.Request] = [ds.StyleRepaint(url, style="anime"), ds.SketchToImage(url, prompt="x")]
    ```
"""


def check_request(request: object) -> Request:
    """``request`` itself, when it is a request the client can submit.

    Raises:
        InputTypeError: anything else (a URL string, None, a dict), naming the types it takes.
    """
    if not isinstance(request, StyleRepaint | SketchToImage):
        raise wrong_type("request", "a ds.StyleRepaint or ds.SketchToImage", request)
    return request


# --- tasks and results ------------------------------------------------------------------------


@attrs.frozen
class Task:
    """A task the service accepted: the answer to a submit.

    Attributes:
        task_id: the service's id; valid for 24 hours.
        status: the status at submission, normally PENDING.
        model: the model it runs on.
        request_id: the submit's request id.

    Example:
        ```python
        task = await client.submit(request)
        print(task.task_id, task.status)  # ... PENDING
        ```
    """

    task_id: str
    status: TaskStatus
    model: str
    request_id: str | None = None


@attrs.frozen
class GeneratedImage:
    """One image a task produced.

    Attributes:
        url: where to fetch it; a signed URL valid for 24 hours. Download it promptly.
        index: its position among the task's results.

    Example:
        ```python
        for image in result.images:
            await client.download(image, f"out-{image.index}.png")
        ```
    """

    url: str
    index: int = 0


@attrs.frozen
class ImageFailure:
    """One image of a task that failed while others succeeded (a partial success).

    Attributes:
        index: its position among the task's results.
        code: the service's code, such as ``"DataInspectionFailed"``.
        message: the service's message.

    Example:
        ```python
        for failure in result.failures:
            print("image", failure.index, "failed:", failure.code)
        ```
    """

    index: int
    code: str
    message: str = ""


@attrs.frozen
class TaskMetrics:
    """How many images a task was asked for, and how many succeeded or failed.

    Example:
        ```python
        if info.metrics and info.metrics.failed:
            print(info.metrics.failed, "of", info.metrics.total, "images failed")
        ```
    """

    total: int = 0
    succeeded: int = 0
    failed: int = 0


@attrs.frozen
class Usage:
    """What a task is billed for: successful images only.

    Example:
        ```python
        billed = result.usage.image_count if result.usage else 0
        ```
    """

    image_count: int = 0


@attrs.frozen
class TaskInfo:
    """A task as ``GET /tasks/{id}`` reports it.

    Times are aware datetimes (the service reports China time, UTC+8). ``images`` and
    ``failures`` are both filled for a partly successful task.

    Attributes:
        task_id: the service's id.
        status: where the task is now.
        submit_time: when the service accepted it.
        scheduled_time: when it started running.
        end_time: when it ended.
        images: the images it made.
        failures: images that failed in a task that otherwise succeeded.
        code: the failure code of a FAILED task.
        message: the failure message of a FAILED task.
        metrics: counts of images asked for, succeeded and failed.
        usage: what is billed.
        request_id: the poll's request id.
        extra: fields of ``output`` this version does not model (kept, not interpreted).

    Example:
        ```python
        info = await client.get_task(task_id)
        print(info.status, info.run_seconds)
        ```
    """

    task_id: str
    status: TaskStatus
    submit_time: datetime | None = None
    scheduled_time: datetime | None = None
    end_time: datetime | None = None
    images: tuple[GeneratedImage, ...] = ()
    failures: tuple[ImageFailure, ...] = ()
    code: str | None = None
    message: str | None = None
    metrics: TaskMetrics | None = None
    usage: Usage | None = None
    request_id: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def run_seconds(self) -> float | None:
        """How long the task ran (scheduled to end), when the service reported both times."""
        if self.scheduled_time is None or self.end_time is None:
            return None
        return (self.end_time - self.scheduled_time).total_seconds()

    @property
    def billed_images(self) -> int:
        """Images the service bills for this task: its usage, else the images it holds."""
        return self.usage.image_count if self.usage is not None else len(self.images)


@attrs.frozen
class TaskResult(TaskInfo):
    """A task that ended SUCCEEDED: at least one image, and maybe some ``failures``.

    Example:
        ```python
        result = await client.generate(request)
        for image in result.images:
            await client.download(image, f"out-{image.index}.png")
        ```
    """

    @property
    def partial(self) -> bool:
        """True when some images failed while others succeeded."""
        return bool(self.failures)


@attrs.frozen
class TaskListItem:
    """One task in the account's task list (``GET /tasks``).

    Attributes:
        task_id: the service's id.
        status: its status at listing time.
        model: the model it ran on.
        created: when it was created.
        start_time: when it started running, if it has.
        end_time: when it ended, if it has.
        request_id: the request id of its submit.
        api_key_id: which of the account's keys submitted it.
        extra: other fields of the entry, kept as sent.

    Example:
        ```python
        async for item in client.list_tasks(model=ds.STYLE_REPAINT.name):
            print(item.task_id, item.status, item.created)
        ```
    """

    task_id: str
    status: TaskStatus
    model: str | None = None
    created: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    request_id: str | None = None
    api_key_id: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

"""What we know about the service: base URLs, environment variables and the model registry.

Pure data and lookups; no I/O beyond reading environment variables, and no HTTP.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Final, Literal

import attrs

from ._errors import ValidationError

__all__ = [
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "MODELS",
    "SKETCH_TO_IMAGE",
    "STYLE_REPAINT",
    "ImageRules",
    "ModelSpec",
    "model_spec",
]

DEFAULT_BASE_URL: Final = "https://dashscope.aliyuncs.com/api/v1"
API_KEY_ENV: Final = "DASHSCOPE_API_KEY"
BASE_URL_ENV: Final = "DASHSCOPE_HTTP_BASE_URL"
WORKSPACE_ENV: Final = "DASHSCOPE_WORKSPACE"

#: Per account, shared by get, list and cancel.
TASK_ENDPOINT_QPS: Final = 20
#: Per account and model.
UPLOAD_POLICY_QPS: Final = 100
#: Task ids and result URLs live this long on the service.
TASK_RETENTION_SECONDS: Final = 24 * 3600
#: Uploaded files (oss:// URLs) live this long.
UPLOAD_RETENTION_SECONDS: Final = 48 * 3600

ModelKind = Literal["repaint", "sketch"]
ImageFormat = Literal["JPEG", "PNG", "BMP", "WEBP", "TIFF"]


@attrs.frozen
class ImageRules:
    """The service's limits on an input image of one model.

    Example:
        ```python
        rules = ds.STYLE_REPAINT.image_rules
        print(rules.min_side, rules.max_size, sorted(rules.formats))
        ```
    """

    formats: frozenset[ImageFormat]
    min_side: int
    #: (long side, short side) maximum, checked in either orientation.
    max_size: tuple[int, int]
    max_bytes: int = 10 * 1024 * 1024
    max_aspect_ratio: float = 2.0
    accepts_data_uri: bool = False


@attrs.frozen
class ModelSpec:
    """One model: where it is submitted, its account limits, its price and typical run time.

    Attributes:
        name: the model name the service knows.
        kind: ``"repaint"`` or ``"sketch"``.
        submit_path: the submit endpoint under the base URL.
        submit_rate: submissions per second the account may make (service default 2).
        max_in_progress: tasks in progress the account may have (service default 1).
        price_per_image: CNY per successful image.
        typical_run_seconds: how long one task usually runs on the service (a median).
        image_rules: limits on the input images.
        run_time_spread: how much run times vary around ``typical_run_seconds``, as the
            standard deviation of their logarithms (0.08: most runs within about ±16 %).

    Example:
        ```python
        spec = ds.MODELS["wanx-sketch-to-image-lite"]
        print(spec.submit_rate, spec.max_in_progress, spec.price_per_image)
        ```
    """

    name: str
    kind: ModelKind
    submit_path: str
    submit_rate: float
    max_in_progress: int
    price_per_image: Decimal
    typical_run_seconds: float
    image_rules: ImageRules
    run_time_spread: float = 0.08


STYLE_REPAINT: Final = ModelSpec(
    name="wanx-style-repaint-v1",
    kind="repaint",
    submit_path="/services/aigc/image-generation/generation",
    submit_rate=2.0,
    max_in_progress=1,
    price_per_image=Decimal("0.12"),
    typical_run_seconds=15.0,
    image_rules=ImageRules(
        formats=frozenset({"JPEG", "PNG", "BMP", "WEBP"}),
        min_side=256,
        max_size=(5760, 3240),
        accepts_data_uri=True,
    ),
)
"""`wanx-style-repaint-v1`: portrait style repaint, CNY 0.12 an image.

Example:
    ```python
    print(ds.STYLE_REPAINT.submit_path)
    ```
"""

SKETCH_TO_IMAGE: Final = ModelSpec(
    name="wanx-sketch-to-image-lite",
    kind="sketch",
    submit_path="/services/aigc/image2image/image-synthesis",
    submit_rate=2.0,
    max_in_progress=1,
    price_per_image=Decimal("0.06"),
    typical_run_seconds=25.0,
    image_rules=ImageRules(
        formats=frozenset({"JPEG", "PNG", "TIFF", "WEBP"}),
        min_side=256,
        max_size=(2048, 2048),
    ),
)
"""`wanx-sketch-to-image-lite`: sketch to image, CNY 0.06 an image.

Example:
    ```python
    print(ds.SKETCH_TO_IMAGE.image_rules.max_size)
    ```
"""

MODELS: Final[dict[str, ModelSpec]] = {spec.name: spec for spec in (STYLE_REPAINT, SKETCH_TO_IMAGE)}
"""Every supported model by name.

Example:
    ```python
    for name, spec in ds.MODELS.items():
        print(name, spec.typical_run_seconds)
    ```
"""


def model_spec(name: str) -> ModelSpec:
    """Look up a model by name.

    Raises:
        ValidationError: the model is not one this library supports.
    """
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ValidationError("model", f"unknown model {name!r}; known models: {known}") from None


def env(name: str) -> str | None:
    """An environment variable, with empty values treated as unset."""
    value = os.environ.get(name, "").strip()
    return value or None

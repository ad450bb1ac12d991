"""Local files in, images out: turns request inputs into URLs the service can read, and saves
result images to disk.

Never sends credentials: uploads go to the upload host and downloads to the result host with no
Authorization or workspace header. (Stub: URL inputs pass through; local files and bytes arrive
with the uploads work.)
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import httpx

from ._clock import SYSTEM_CLOCK, Clock
from ._errors import ValidationError
from ._models import GeneratedImage, Request, SketchToImage, StyleRepaint
from ._wire import UploadPolicyWire

__all__ = ["InputPreparer", "PreparedInputs", "download_image"]

PolicyFetcher = Callable[[str], Awaitable[UploadPolicyWire]]


@attrs.frozen
class PreparedInputs:
    """What a submit sends for a request's images.

    Attributes:
        urls: the URL to send for each image field (``"image"``, ``"style_ref"``, ``"sketch"``).
        oss_resolve: True when any URL is ``oss://``: the submit then carries
            ``X-DashScope-OssResourceResolve: enable``.
    """

    urls: dict[str, str]
    oss_resolve: bool


def image_fields(request: Request) -> dict[str, object]:
    """The image inputs of a request, by field name."""
    if isinstance(request, StyleRepaint):
        fields: dict[str, object] = {"image": request.image}
        if request.style_ref is not None:
            fields["style_ref"] = request.style_ref
        return fields
    if isinstance(request, SketchToImage):
        return {"sketch": request.sketch}
    raise TypeError(f"not a request: {type(request).__name__}")  # pragma: no cover


@attrs.define
class InputPreparer:
    """Checks and uploads a request's local inputs; one per client.

    Args:
        http: the client's HTTP connection pool (no credentials are attached by it).
        fetch_policy: fetches an upload policy for a model from the API host.
        clock: for policy expiry.
    """

    http: httpx.AsyncClient
    fetch_policy: PolicyFetcher
    clock: Clock = SYSTEM_CLOCK

    async def prepare(self, request: Request) -> PreparedInputs:
        """URLs for every image input of ``request``, uploading local files and bytes first.

        Raises:
            ValidationError: a local input breaks the model's rules (names the file and rule).
        """
        urls: dict[str, str] = {}
        for field, value in image_fields(request).items():
            if isinstance(value, str) and ("://" in value or value.startswith("data:")):
                urls[field] = value
            else:
                raise ValidationError(field, "local files and bytes are not supported yet")
        return PreparedInputs(
            urls=urls, oss_resolve=any(u.startswith("oss://") for u in urls.values())
        )


async def download_image(
    http: httpx.AsyncClient, image: GeneratedImage, dest: str | os.PathLike[str]
) -> Path:
    """Save one result image to ``dest`` (stub: replaced by the downloads work)."""
    raise ValidationError("dest", "downloads are not supported yet")

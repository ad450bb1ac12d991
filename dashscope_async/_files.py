"""Local files in, images out: turns request inputs into URLs the service can read, and saves
result images to disk.

Inputs: URLs pass through; local paths and bytes are read and checked in a worker thread against
the model's image rules (``_images.check_image``) before any request is sent, then uploaded
through the service's policy-and-form flow (``oss://`` keys) or, for style repaint and small files
when asked, sent as a ``data:`` URI. Outputs: result images are streamed to a temporary file,
checked to be an image, and renamed into place.

Never sends credentials: every request here goes to the upload host or a result host through
``_send_without_credentials``, which drops Authorization and workspace headers and the client's
auth. Never blocks the event loop: every file operation runs in ``anyio.to_thread``. It does not
fetch upload policies itself (the client does, with credentials, through ``fetch_policy``).
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import random
import re
import stat
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Final, Generic, TypeVar

import anyio
import attrs
import httpx

from ._clock import SYSTEM_CLOCK, Clock
from ._config import UPLOAD_POLICY_QPS, ImageRules
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ResultExpiredError,
    ServerError,
    ValidationError,
)
from ._images import EXTENSIONS, MIME_TYPES, check_byte_size, check_image, verify_image_file
from ._logging import logger
from ._models import GeneratedImage, Request, SketchToImage, StyleRepaint, TaskResult
from ._retry import RequestKind, backoff_delay, transient_status
from ._wire import UploadPolicyWire

__all__ = [
    "CREDENTIAL_HEADERS",
    "InputPreparer",
    "LocalImage",
    "PreparedInputs",
    "download_image",
    "image_fields",
    "load_local_image",
    "result_file_name",
    "save_result_images",
]

PolicyFetcher = Callable[[str], Awaitable[UploadPolicyWire]]

K = TypeVar("K")
V = TypeVar("V")

#: Headers that carry credentials; none of them may reach an upload or result host.
CREDENTIAL_HEADERS: Final = ("authorization", "x-dashscope-workspace", "x-api-key")
#: Inputs sent to the service as they are.
PASS_THROUGH_SCHEMES: Final = ("http://", "https://", "oss://", "data:")
#: A policy is refreshed this long before the service says it expires (at most half its life).
POLICY_REFRESH_MARGIN: Final = 30.0
#: An upload is reused this long. Uploads live 48 hours, but a task queued behind a long batch
#: must still find its input when it finally runs.
UPLOAD_REUSE_SECONDS: Final = 24 * 3600.0
#: Uploads remembered for reuse, per preparer; the oldest are forgotten first.
UPLOAD_REUSE_ENTRIES: Final = 1024
#: A result URL's own expiry time is trusted only when our clock is this far past it.
CLOCK_SKEW_ALLOWANCE: Final = 300.0
DOWNLOAD_CHUNK_BYTES: Final = 256 * 1024


# --- inputs -----------------------------------------------------------------------------------


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


@attrs.frozen
class LocalImage:
    """A local input, read and checked: ready to upload or inline.

    Attributes:
        field: the request field it came from.
        source: how errors name it (its path, or "the image bytes").
        format: its format by content (``"PNG"``, ...).
        suffix: the file name suffix its upload key gets (the original one, else the format's).
        content: the file's bytes.
        digest: SHA-256 of the content, for reusing an earlier upload of the same bytes.
    """

    field: str
    source: str
    format: str
    suffix: str
    content: bytes = attrs.field(repr=False)
    digest: str

    @property
    def mime_type(self) -> str:
        return MIME_TYPES.get(self.format, "application/octet-stream")


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


def _is_pass_through(value: object) -> bool:
    return isinstance(value, str) and value.lower().startswith(PASS_THROUGH_SCHEMES)


def _local_path(value: str | os.PathLike[str]) -> Path:
    text = os.fspath(value)
    if text.lower().startswith("file://"):
        parts = urllib.parse.urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL {text!r} names another host")
        return Path(urllib.request.url2pathname(parts.path))
    return Path(text).expanduser()


_SAFE_SUFFIX: Final = re.compile(r"\.[A-Za-z0-9]{1,8}")


def load_local_image(field: str, value: object, rules: ImageRules, *, model: str) -> LocalImage:
    """Read a local path (``str``, ``os.PathLike``, ``file://``) or bytes and check it. Blocks.

    Args:
        field: the request field, for errors.
        value: the input.
        rules: the model's limits.
        model: the model's name, for errors.

    Raises:
        ValidationError: the file is missing or unreadable, or breaks a rule (names the file,
            the field and the rule).
    """
    suffix = ""
    if isinstance(value, bytes | bytearray):
        source = f"the {field} bytes"
        content = bytes(value)
    elif isinstance(value, str | os.PathLike):
        source = os.fspath(value)
        try:
            path = _local_path(value)
        except ValueError as exc:
            raise ValidationError(field, f"{source}: {exc}") from None
        content = _read_file(path, rules, field=field, source=source, model=model)
        if _SAFE_SUFFIX.fullmatch(path.suffix):
            suffix = path.suffix.lower()
    else:
        raise ValidationError(field, f"expected a URL, a path or bytes, not {type(value).__name__}")
    header = check_image(content, rules, field=field, source=source, model=model)
    return LocalImage(
        field=field,
        source=source,
        format=header.format,
        suffix=suffix or EXTENSIONS.get(header.format, ""),
        content=content,
        digest=hashlib.sha256(content).hexdigest(),
    )


def _read_file(path: Path, rules: ImageRules, *, field: str, source: str, model: str) -> bytes:
    def refuse(rule: str) -> ValidationError:
        return ValidationError(field, f"{source}: {rule}")

    try:
        status = path.stat()
    except FileNotFoundError:
        raise refuse("no such file") from None
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(status.st_mode):
        raise refuse("is a directory, not an image file")
    # Refuse an oversized file before reading any of it.
    check_byte_size(status.st_size, rules, field=field, source=source, model=model)
    try:
        return path.read_bytes()
    except PermissionError:
        raise refuse("cannot be read (permission denied)") from None
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror or exc})") from None


def _data_uri(image: LocalImage) -> str:
    return f"data:{image.mime_type};base64,{base64.b64encode(image.content).decode('ascii')}"


# --- shared, expiring values (policies, uploads) ----------------------------------------------


@attrs.define
class _Expiring(Generic[V]):
    value: V
    expires_at: float


@attrs.define
class _SharedCache(Generic[K, V]):
    """Values that expire, each produced once: concurrent callers of one key wait for one producer.

    A producer that fails produces nothing: the next waiter tries for itself.
    """

    clock: Clock
    max_entries: int = 1024
    _entries: dict[K, _Expiring[V]] = attrs.field(factory=dict, init=False)
    _pending: dict[K, anyio.Event] = attrs.field(factory=dict, init=False)

    async def get(self, key: K, produce: Callable[[], Awaitable[tuple[V, float]]]) -> V:
        """The fresh value of ``key``, or the one ``produce`` returns with its lifetime."""
        while True:
            entry = self._entries.get(key)
            if entry is not None and self.clock.now() < entry.expires_at:
                return entry.value
            pending = self._pending.get(key)
            if pending is None:
                break
            await pending.wait()
        done = self._pending[key] = anyio.Event()
        started = self.clock.now()
        try:
            value, lifetime = await produce()
            self._store(key, _Expiring(value, started + lifetime))
            return value
        finally:
            del self._pending[key]
            done.set()

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def _store(self, key: K, entry: _Expiring[V]) -> None:
        self._entries.pop(key, None)
        self._entries[key] = entry
        if len(self._entries) > self.max_entries:
            now = self.clock.now()
            for stale in [k for k, e in self._entries.items() if e.expires_at <= now]:
                del self._entries[stale]
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]


@attrs.define
class _Pacer:
    """Spaces calls evenly at ``rate`` per second, with no bursts."""

    rate: float
    clock: Clock
    _next_turn: float = attrs.field(default=-math.inf, init=False)

    async def wait_turn(self) -> None:
        now = self.clock.now()
        turn = max(now, self._next_turn)
        self._next_turn = turn + 1.0 / self.rate
        if turn > now:
            await self.clock.sleep(turn - now)


# --- talking to the upload and result hosts ---------------------------------------------------


async def _send_without_credentials(
    http: httpx.AsyncClient, request: httpx.Request, *, stream: bool = False
) -> httpx.Response:
    """Send to an upload or result host: credential headers dropped, the client's auth off."""
    for name in CREDENTIAL_HEADERS:
        request.headers.pop(name, None)
    return await http.send(request, stream=stream, auth=None, follow_redirects=True)


def _without_query(url: str) -> str:
    """A URL safe to show: signed URLs carry their signature in the query."""
    return urllib.parse.urlsplit(url)._replace(query="", fragment="").geturl()


_XML_FIELD: Final = re.compile(r"<(Code|Message|RequestId)>([^<]*)</\1>")

_STATUS_ERRORS: Final[dict[int, type[APIError]]] = {
    400: BadRequestError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def _host_error(response: httpx.Response, *, host: str) -> APIError:
    """An error answer of an object-storage host (OSS answers XML) as an ``APIError``."""
    fields = dict(_XML_FIELD.findall(response.text[:4096]))
    status = response.status_code
    cls = ServerError if status >= 500 else _STATUS_ERRORS.get(status, APIError)
    message = fields.get("Message") or response.reason_phrase or "no message"
    return cls(
        f"the {host} refused {_without_query(str(response.request.url))}: {message}",
        status_code=status,
        code=fields.get("Code"),
        request_id=fields.get("RequestId") or response.headers.get("x-oss-request-id"),
    )


def _connection_error(exc: httpx.TransportError, *, host: str) -> APIConnectionError:
    try:
        url = _without_query(str(exc.request.url))
    except RuntimeError:  # raised by httpx when the error carries no request
        url = "?"
    cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    return cls(f"no answer from the {host} at {url}: {type(exc).__name__}")


# --- the preparer -----------------------------------------------------------------------------


@attrs.define
class InputPreparer:
    """Checks, uploads or inlines a request's local inputs; one per client.

    Local paths and bytes are read and checked in a worker thread; every input of a request is
    checked before the first request goes out, so a file the service would refuse costs nothing.

    Args:
        http: the client's HTTP connection pool (no credentials are attached by it).
        fetch_policy: fetches an upload policy for a model from the API host.
        clock: for policy expiry, pacing and retry delays.
        inline_data_uri_max_bytes: style repaint only: send files of at most this many bytes as
            a ``data:`` URI in the submit instead of uploading them (no policy fetch, no upload
            round trip). 0, the default, uploads every file.
        upload_retries: retries of an upload after a 5xx answer or a connection error; each
            retry uses a new key, because the policy forbids overwriting and the first attempt
            may have landed.
        reuse_uploads: send the ``oss://`` URL of an earlier upload of the same bytes for the
            same model (within a day) instead of uploading again; handy for one ``style_ref``
            across a batch.
        policy_rate: upload policy fetches per second, per model (the service allows 100).

    Example:
        ```python
        preparer = InputPreparer(http, fetch_policy, inline_data_uri_max_bytes=256 * 1024)
        prepared = await preparer.prepare(ds.StyleRepaint("me.jpg", style=ds.RepaintStyle.ANIME))
        prepared.urls["image"]  # "data:image/jpeg;base64,..." or "oss://..."
        ```
    """

    http: httpx.AsyncClient
    fetch_policy: PolicyFetcher
    clock: Clock = SYSTEM_CLOCK
    inline_data_uri_max_bytes: int = attrs.field(
        default=0, kw_only=True, validator=attrs.validators.ge(0)
    )
    upload_retries: int = attrs.field(default=3, kw_only=True, validator=attrs.validators.ge(0))
    reuse_uploads: bool = attrs.field(default=True, kw_only=True)
    policy_rate: float = attrs.field(
        default=float(UPLOAD_POLICY_QPS), kw_only=True, validator=attrs.validators.gt(0)
    )
    _policies: _SharedCache[str, UploadPolicyWire] = attrs.field(init=False)
    _uploads: _SharedCache[tuple[str, str], str] = attrs.field(init=False)
    _pacers: dict[str, _Pacer] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self._policies = _SharedCache(self.clock)
        self._uploads = _SharedCache(self.clock, max_entries=UPLOAD_REUSE_ENTRIES)

    async def prepare(self, request: Request) -> PreparedInputs:
        """URLs for every image input of ``request``, uploading local files and bytes first.

        Raises:
            ValidationError: a local input is missing, unreadable or breaks the model's rules
                (names the file, the field and the rule); nothing was sent.
            APIError: the upload host refused an upload (after retries for 5xx).
            APIConnectionError: the upload host could not be reached (after retries).
        """
        spec = request.spec
        fields = image_fields(request)
        local: dict[str, LocalImage] = {}
        for field, value in fields.items():
            if not _is_pass_through(value):
                local[field] = await anyio.to_thread.run_sync(
                    partial(load_local_image, field, value, spec.image_rules, model=spec.name)
                )
        urls: dict[str, str] = {}
        for field, value in fields.items():
            image = local.get(field)
            if image is None:
                urls[field] = str(value)
            elif (
                spec.image_rules.accepts_data_uri
                and len(image.content) <= self.inline_data_uri_max_bytes
            ):
                urls[field] = await anyio.to_thread.run_sync(_data_uri, image)
            else:
                urls[field] = await self._upload_once(spec.name, image)
        return PreparedInputs(
            urls=urls, oss_resolve=any(url.startswith("oss://") for url in urls.values())
        )

    async def _upload_once(self, model: str, image: LocalImage) -> str:
        if not self.reuse_uploads:
            return await self._upload(model, image)

        async def upload() -> tuple[str, float]:
            return await self._upload(model, image), UPLOAD_REUSE_SECONDS

        return await self._uploads.get((model, image.digest), upload)

    async def _policy(self, model: str) -> UploadPolicyWire:
        async def fetch() -> tuple[UploadPolicyWire, float]:
            pacer = self._pacers.get(model)
            if pacer is None:
                pacer = self._pacers[model] = _Pacer(self.policy_rate, self.clock)
            await pacer.wait_turn()
            policy = await self.fetch_policy(model)
            life = float(policy.expire_in_seconds)
            return policy, max(life - POLICY_REFRESH_MARGIN, life / 2)

        return await self._policies.get(model, fetch)

    async def _upload(self, model: str, image: LocalImage) -> str:
        retries_taken = 0
        refreshed_policy = False
        while True:
            policy = await self._policy(model)
            if len(image.content) > policy.max_file_size_mb * 1024 * 1024:
                raise ValidationError(
                    image.field,
                    f"{image.source}: is larger than the upload policy's"
                    f" {policy.max_file_size_mb} MB",
                )
            key = f"{policy.upload_dir.rstrip('/')}/{uuid.uuid4().hex}{image.suffix}"
            request = self.http.build_request(
                "POST",
                policy.upload_host,
                data={
                    "OSSAccessKeyId": policy.oss_access_key_id,
                    "Signature": policy.signature,
                    "policy": policy.policy,
                    "key": key,
                    "x-oss-object-acl": policy.x_oss_object_acl,
                    "x-oss-forbid-overwrite": policy.x_oss_forbid_overwrite,
                    "success_action_status": "200",
                    "x-oss-content-type": image.mime_type,
                },
                # OSS reads form fields up to the file part, so the file goes last (httpx
                # writes data fields before files).
                files={"file": (key.rsplit("/", 1)[-1], image.content, image.mime_type)},
            )
            failure: Exception
            try:
                response = await _send_without_credentials(self.http, request)
            except httpx.TransportError as exc:
                failure = _connection_error(exc, host="upload host")
            else:
                if response.is_success:
                    logger.debug("uploaded %s as oss://%s", image.field, key)
                    return f"oss://{key}"
                error = _host_error(response, host="upload host")
                if response.status_code == 403 and not refreshed_policy:
                    # Most likely the cached policy expired early or was revoked: fetch a new one.
                    refreshed_policy = True
                    self._policies.forget(model)
                    continue
                if not transient_status(RequestKind.UPLOAD, response.status_code):
                    raise error
                failure = error
            if retries_taken >= self.upload_retries:
                raise failure
            logger.debug("upload attempt %d failed (%s); retrying", retries_taken + 1, failure)
            await self.clock.sleep(backoff_delay(retries_taken, jitter=random.random()))
            retries_taken += 1


# --- downloads --------------------------------------------------------------------------------


class _RetryableDownloadError(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _url_expiry(url: str) -> datetime | None:
    """When a signed URL says it expires: OSS V1 ``Expires`` or V4 ``x-oss-date`` + ``x-oss-expires``."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    try:
        if "Expires" in query:
            return datetime.fromtimestamp(int(query["Expires"]), UTC)
        if "x-oss-date" in query and "x-oss-expires" in query:
            signed = datetime.strptime(query["x-oss-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            return datetime.fromtimestamp(signed.timestamp() + int(query["x-oss-expires"]), UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _expired_error(url: str, detail: str) -> ResultExpiredError:
    public = _without_query(url)
    return ResultExpiredError(
        f"result image {public} can no longer be fetched ({detail}); result URLs live 24 hours,"
        " so download them promptly",
        url=public,
    )


def _safe_stem(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned[:120] or "image"


def result_file_name(key_or_index: str | int, image_index: int, ext: str) -> str:
    """The file name a result image is saved under: ``<job>-<image><ext>``.

    Args:
        key_or_index: the job's key, or its index (zero-padded to six digits so names sort).
        image_index: the image's position among the task's results.
        ext: the extension, with or without its dot (``"png"``, ``".png"``), or ``""``.

    Example:
        ```python
        assert result_file_name(7, 0, "png") == "000007-0.png"
        assert result_file_name("portraits/alice", 1, ".jpg") == "portraits_alice-1.jpg"
        ```
    """
    stem = f"{key_or_index:06d}" if isinstance(key_or_index, int) else _safe_stem(key_or_index)
    if ext and not ext.startswith("."):
        ext = "." + ext
    return f"{stem}-{image_index}{ext}"


def _extension_for(name: str) -> str:
    return EXTENSIONS.get(name, f".{name.lower()}")


@attrs.frozen
class _Target:
    directory: Path
    #: The final name, when the caller chose it; else ``stem`` plus the content's extension.
    name: str | None
    stem: str


def _plan_target(dest: str | os.PathLike[str], url: str, index: int) -> _Target:
    text = os.fspath(dest)
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or path.is_dir():
        url_name = Path(urllib.parse.urlsplit(url).path).stem
        target = _Target(path, None, _safe_stem(url_name) if url_name else f"image-{index}")
    elif not path.suffix:
        target = _Target(path.parent, None, path.name)
    else:
        target = _Target(path.parent, path.name, path.stem)
    target.directory.mkdir(parents=True, exist_ok=True)
    return target


def _make_directory(directory: str | os.PathLike[str]) -> Path:
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


async def _stream_to(http: httpx.AsyncClient, url: str, part: Path, *, wall: datetime) -> None:
    """One attempt: GET ``url`` into ``part``. Raises ``_RetryableDownloadError`` for 5xx and drops."""
    request = http.build_request("GET", url)
    try:
        response = await _send_without_credentials(http, request, stream=True)
    except httpx.TransportError as exc:
        raise _RetryableDownloadError(_connection_error(exc, host="result host")) from None
    try:
        if response.status_code != 200:
            await response.aread()
            error = _host_error(response, host="result host")
            expiry = _url_expiry(url)
            if response.status_code == 403 or (
                response.status_code == 404 and expiry is not None and wall >= expiry
            ):
                raise _expired_error(url, f"HTTP {response.status_code} {error.code or ''}".strip())
            if transient_status(RequestKind.DOWNLOAD, response.status_code):
                raise _RetryableDownloadError(error)
            raise error
        received = 0
        try:
            chunks = response.aiter_bytes(DOWNLOAD_CHUNK_BYTES)
            try:
                async with await anyio.open_file(part, "wb") as file:
                    async for chunk in chunks:
                        await file.write(chunk)
                        received += len(chunk)
            finally:
                # A download cancelled mid-body closes its stream now, not at collection.
                if isinstance(chunks, AsyncGenerator):
                    await chunks.aclose()
        except httpx.TransportError as exc:
            raise _RetryableDownloadError(_connection_error(exc, host="result host")) from None
        # A body cut short without an error from the connection: compare with what was promised
        # (only when the body is not content-encoded, since the length counts encoded bytes).
        expected = response.headers.get("content-length", "")
        encoding = response.headers.get("content-encoding", "identity").lower()
        if expected.isdigit() and encoding == "identity" and int(expected) != received:
            raise _RetryableDownloadError(
                APIConnectionError(
                    f"the result host sent {received} of {expected} bytes of {_without_query(url)}"
                )
            )
    finally:
        await response.aclose()


async def _download(
    http: httpx.AsyncClient,
    url: str,
    target: _Target,
    *,
    retries: int,
    clock: Clock,
) -> Path:
    expiry = _url_expiry(url)
    if expiry is not None and (clock.wall() - expiry).total_seconds() > CLOCK_SKEW_ALLOWANCE:
        raise _expired_error(url, f"it expired at {expiry.isoformat()}")
    retries_taken = 0
    while True:
        # Hidden and unique: never mistaken for a result, never shared by two downloads.
        part = target.directory / f".{target.stem}.{uuid.uuid4().hex[:12]}.part"
        try:
            await _stream_to(http, url, part, wall=clock.wall())
            try:
                found = await anyio.to_thread.run_sync(verify_image_file, part)
            except ValueError as exc:
                raise ResponseValidationError(
                    f"the result host sent something other than an image for"
                    f" {_without_query(url)}: {exc}"
                ) from None
            final = target.directory / (target.name or target.stem + _extension_for(found))
            await anyio.to_thread.run_sync(os.replace, part, final)
            return final
        except _RetryableDownloadError as exc:
            failure = exc.error
        finally:
            # Whatever happened, no partial file stays behind (shielded: also on cancellation).
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_discard, part)
        if retries_taken >= retries:
            raise failure
        logger.debug("download attempt %d failed (%s); retrying", retries_taken + 1, failure)
        await clock.sleep(backoff_delay(retries_taken, jitter=random.random()))
        retries_taken += 1


async def download_image(
    http: httpx.AsyncClient,
    image: GeneratedImage | str,
    dest: str | os.PathLike[str],
    *,
    retries: int = 3,
    clock: Clock = SYSTEM_CLOCK,
) -> Path:
    """Save one result image to ``dest``, never under its final name until it is whole.

    The image is streamed to a hidden temporary file beside ``dest``, checked to be an image by
    its content, and renamed into place (an atomic rename: a reader sees the old file or the
    whole new one). Sends no credentials. 5xx answers and dropped connections are retried with
    backoff.

    Args:
        http: an HTTP client (the client's pool; it attaches no credentials here).
        image: a result image, or its URL.
        dest: a file path; a path without a suffix gets the extension of the content; an
            existing directory (or a path ending in ``/``) gets a name from the URL plus that
            extension. Missing parent directories are created.
        retries: retries after a 5xx answer or a connection error.
        clock: for the retry delays and the URL's expiry.

    Returns:
        The path of the saved file.

    Raises:
        ResultExpiredError: the URL is past its life (403 from the result host, or its own
            expiry time has passed).
        ResponseValidationError: the result host sent something that is not an image.
        APIError: any other refusal of the result host.
        APIConnectionError: no answer after the retries.

    Example:
        ```python
        path = await download_image(client.http, result.images[0], "out/portrait")
        # out/portrait.png
        ```
    """
    url = image.url if isinstance(image, GeneratedImage) else image
    index = image.index if isinstance(image, GeneratedImage) else 0
    target = await anyio.to_thread.run_sync(_plan_target, dest, url, index)
    return await _download(http, url, target, retries=retries, clock=clock)


async def save_result_images(
    http: httpx.AsyncClient,
    result: TaskResult,
    directory: str | os.PathLike[str],
    stem: str | int,
    *,
    retries: int = 3,
    clock: Clock = SYSTEM_CLOCK,
) -> list[Path]:
    """Save every image of a result under ``directory`` as ``result_file_name(stem, i, ext)``.

    The runner's ``download_dir=`` option calls this as each job finishes. Names are
    deterministic, so a rerun overwrites rather than duplicates.

    Args:
        http: an HTTP client (no credentials are sent).
        result: a finished task.
        directory: where to save (created if missing).
        stem: the job's key or index.
        retries: retries per image after a 5xx answer or a connection error.
        clock: for the retry delays and URL expiry.

    Returns:
        The saved paths, in the order of ``result.images``.

    Example:
        ```python
        paths = await save_result_images(client.http, result, "out", 7)
        # [PosixPath('out/000007-0.png')]
        ```
    """
    folder = await anyio.to_thread.run_sync(_make_directory, directory)
    saved: list[Path] = []
    for image in result.images:
        target = _Target(folder, None, result_file_name(stem, image.index, ""))
        saved.append(await _download(http, image.url, target, retries=retries, clock=clock))
    return saved

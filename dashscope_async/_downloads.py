"""Result images out: streamed from the result host to disk, bounded in size and time, each under
a name no other job or URL shares.

Owns the download limits (``DownloadLimits``: a size cap and a whole-download deadline), the
result file names (``result_file_name``: a readable slug plus a short stable hash of the job's
key, so distinct jobs never share a file) and the atomic save (a hidden temporary file, checked
to be an image, renamed into place). Sends no credentials: every request goes through
``_files.send_without_credentials``. Never puts a signed URL's query (its signature) in a log
line or an error. Never blocks the event loop: file work runs in worker threads.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import urllib.parse
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, cast

import anyio
import attrs
import httpx

from ._clock import SYSTEM_CLOCK, Clock
from ._errors import (
    APIConnectionError,
    DownloadError,
    DownloadTimeoutError,
    DownloadTooLargeError,
    ResponseValidationError,
    ResultExpiredError,
    ValidationError,
)
from ._files import (
    connection_error,
    host_error,
    send_without_credentials,
    without_query,
)
from ._images import EXTENSIONS, verify_image_file
from ._journal import fingerprint
from ._logging import logger
from ._models import GeneratedImage, Request, TaskResult
from ._retry import RequestKind, backoff_delay, transient_status
from ._validators import at_least_one, positive, whole_number

__all__ = [
    "DEFAULT_DOWNLOAD_LIMITS",
    "DownloadLimits",
    "download_image",
    "result_file_name",
    "save_result_images",
    "unkeyed_job_hash",
]

#: A result host's URL is trusted to say when it expires only this far past our clock.
CLOCK_SKEW_ALLOWANCE: Final = 300.0
DOWNLOAD_CHUNK_BYTES: Final = 256 * 1024
#: Hex digits of a name's hash: distinct keys of one batch never meet (a 40-bit space).
NAME_HASH_DIGITS: Final = 10
#: The readable part of a name is cut to this many characters.
NAME_SLUG_LENGTH: Final = 60


@attrs.frozen
class DownloadLimits:
    """How much one result image's download may take.

    A real result is a few megabytes (a 1536-pixel repaint PNG is about 3 MB), so the default
    cap leaves a wide margin while still stopping a host that sends without end.

    Attributes:
        max_bytes: the most bytes one image may have; more ends the download with
            ``DownloadTooLargeError`` (default 64 MiB).
        timeout: seconds for the whole download of one image, retries included; past it the
            download ends with ``DownloadTimeoutError`` (default 300; None for no deadline).
        retries: retries after a 5xx answer or a dropped connection.

    Example:
        ```python
        limits = ds.DownloadLimits(max_bytes=16 * 2**20, timeout=60)
        client = ds.AsyncDashScope(download_limits=limits)
        ```
    """

    max_bytes: int = attrs.field(
        default=64 * 1024 * 1024, validator=at_least_one("max_bytes", unit="bytes")
    )
    timeout: float | None = attrs.field(
        default=300.0, validator=positive("timeout", unit="seconds", optional=True)
    )
    retries: int = attrs.field(default=3, validator=whole_number("retries"))


DEFAULT_DOWNLOAD_LIMITS: Final = DownloadLimits()


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
    public = without_query(url)
    return ResultExpiredError(
        f"result image {public} can no longer be fetched ({detail}); result URLs live 24 hours,"
        " so download them promptly",
        url=public,
    )


# --- names ------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return cleaned[:NAME_SLUG_LENGTH].rstrip("._-")


def _short_hash(text: str) -> str:
    data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:NAME_HASH_DIGITS]


def job_file_stem(job: str | int, fingerprint: str | None = None) -> str:
    """The part of a result file's name that names its job.

    A key becomes a readable slug and a hash of the whole key (``photos_alice-3f2a9c01be``), so
    keys that slug alike (``photos/alice`` and ``photos_alice``, ``张三`` and ``李四``), keys that
    differ only in case, and a key that looks like an index (``"000002"``) never share a file.
    A job without a key is named by its index, zero-padded to six digits, and the start of its
    request's ``fingerprint`` (``000007-9c41d07e3a``): job 7 of another batch saved into the
    same folder is another request, so it gets a file of its own. Names are stable: the same
    job (the same key, or the same request at the same position) in a rerun gets the same name.
    """
    if isinstance(job, int):
        index = f"{job:06d}"
        return index if fingerprint is None else f"{index}-{fingerprint[:NAME_HASH_DIGITS]}"
    return f"{_slug(job) or 'job'}-{_short_hash(job)}"


def unkeyed_job_hash(request: Request, task_id: str) -> str:
    """What names a job without a key beside its index: its request's ``fingerprint`` (the one
    its journal knows it by), or, if a local input cannot be read any more (a file deleted
    while its task ran), a hash of its task id: a finished, billed result is saved either way.

    Blocks on ``os.stat`` for local inputs: call it in a worker thread.
    """
    try:
        return fingerprint(request)
    except ValidationError:
        return hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()


def result_file_name(
    job: str | int, image_index: int, ext: str, *, fingerprint: str | None = None
) -> str:
    """The file name a result image is saved under: ``<job>-<image><ext>``.

    Args:
        job: the job's key, or its index (see ``job_file_stem``).
        image_index: the image's position among the task's results.
        ext: the extension, with or without its dot (``"png"``, ``".png"``), or ``""``.
        fingerprint: for a job without a key, its request's fingerprint
            (``_journal.fingerprint``), so jobs of different batches never share a name.

    Example:
        ```python
        assert result_file_name(7, 0, "png") == "000007-0.png"
        assert result_file_name(7, 0, "png", fingerprint="9c41d07e3a55") == "000007-9c41d07e3a-0.png"
        result_file_name("portraits/alice", 1, ".jpg")  # 'portraits_alice-<10 hex>-1.jpg'
        ```
    """
    if ext and not ext.startswith("."):
        ext = "." + ext
    return f"{job_file_stem(job, fingerprint)}-{image_index}{ext}"


def _url_file_stem(url: str, index: int) -> str:
    """A name for an image saved into a folder by its URL: the URL's own file name, plus a hash
    of the URL without its query, so two URLs that end in the same name never share a file
    (and the same image fetched again replaces its own)."""
    public = without_query(url)
    tail = Path(urllib.parse.unquote(urllib.parse.urlsplit(public).path)).stem
    return f"{_slug(tail) or f'image-{index}'}-{_short_hash(public)}"


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
        target = _Target(path, None, _url_file_stem(url, index))
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


# --- one download -----------------------------------------------------------------------------


def _too_large(url: str, limits: DownloadLimits, what: str) -> DownloadTooLargeError:
    public = without_query(url)
    return DownloadTooLargeError(
        f"the result host {what} for {public}, over the download cap of {limits.max_bytes:,}"
        " bytes (DownloadLimits.max_bytes)",
        url=public,
    )


def _timed_out(url: str, limits: DownloadLimits) -> DownloadTimeoutError:
    public = without_query(url)
    return DownloadTimeoutError(
        f"the download of {public} did not end within {limits.timeout:g} s"
        " (DownloadLimits.timeout)",
        url=public,
    )


@attrs.frozen
class _Attempt:
    """What every attempt at one image shares: the URL, the limits and one deadline."""

    url: str
    limits: DownloadLimits
    #: On the event loop's clock (``anyio.current_time``); infinite without a timeout.
    deadline: float

    def network(self) -> anyio.CancelScope:
        """A scope for one wait on the network, cancelled at the deadline.

        Only network waits are bounded this way (not file writes in worker threads), so the
        deadline speaks of the host's pace alone.
        """
        return anyio.CancelScope(deadline=self.deadline)

    def timed_out(self) -> DownloadTimeoutError:
        return _timed_out(self.url, self.limits)


async def _stream_to(
    http: httpx.AsyncClient, attempt: _Attempt, part: Path, *, wall: datetime
) -> None:
    """One attempt: GET the URL into ``part``. Raises ``_RetryableDownloadError`` for 5xx and drops."""
    url, limits = attempt.url, attempt.limits
    request = http.build_request("GET", url)
    try:
        with attempt.network() as waiting:
            response = await send_without_credentials(http, request, stream=True)
    except httpx.TooManyRedirects:
        public = without_query(url)
        raise DownloadError(
            f"the result host redirected {public} too many times (a redirect loop?)", url=public
        ) from None
    except httpx.TransportError as exc:
        raise _RetryableDownloadError(connection_error(exc, host="result host")) from None
    if waiting.cancelled_caught:
        raise attempt.timed_out()
    try:
        if response.status_code != 200:
            with attempt.network():
                await response.aread()
            error = host_error(response, host="result host")
            expiry = _url_expiry(url)
            if response.status_code == 403 or (
                response.status_code == 404 and expiry is not None and wall >= expiry
            ):
                raise _expired_error(url, f"HTTP {response.status_code} {error.code or ''}".strip())
            if transient_status(RequestKind.DOWNLOAD, response.status_code):
                raise _RetryableDownloadError(error)
            raise error
        expected = response.headers.get("content-length", "")
        # The length counts encoded bytes; the cap counts decoded ones.
        identity = response.headers.get("content-encoding", "identity").lower() == "identity"
        if expected.isdigit() and identity and int(expected) > limits.max_bytes:
            raise _too_large(url, limits, f"announced {int(expected):,} bytes")
        received = await _write_body(response, attempt, part)
        # A body cut short without an error from the connection: compare with what was promised.
        if expected.isdigit() and identity and int(expected) != received:
            raise _RetryableDownloadError(
                APIConnectionError(
                    f"the result host sent {received} of {expected} bytes of {without_query(url)}"
                )
            )
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()


def _body_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body's chunks as one async generator that the caller closes when it stops early.

    A plain body is read from the response's stream itself, one generator deep, so stopping
    at the cap leaves no half-read generator of httpx behind; an encoded body goes through
    httpx's decoder (decoded bytes are what the cap counts, so a compressed body cannot slip
    past it).
    """
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding == "identity" and isinstance(response.stream, httpx.AsyncByteStream):
        body = response.stream.__aiter__()
    else:
        body = response.aiter_bytes(DOWNLOAD_CHUNK_BYTES)
    # httpx types both as AsyncIterator; they are async generators, closed by the caller.
    return cast("AsyncGenerator[bytes, None]", body)


async def _write_body(response: httpx.Response, attempt: _Attempt, part: Path) -> int:
    """Stream the body into ``part``; the number of (decoded) bytes written."""
    received = 0
    try:
        async with await anyio.open_file(part, "wb") as file:
            async with aclosing(_body_chunks(response)) as chunks:
                while True:
                    with attempt.network() as waiting:
                        chunk = await anext(chunks, None)
                    if waiting.cancelled_caught:
                        raise attempt.timed_out()
                    if chunk is None:
                        return received
                    received += len(chunk)
                    if received > attempt.limits.max_bytes:
                        raise _too_large(
                            attempt.url,
                            attempt.limits,
                            f"sent more than {attempt.limits.max_bytes:,} bytes",
                        )
                    await file.write(chunk)
    except httpx.TransportError as exc:
        raise _RetryableDownloadError(connection_error(exc, host="result host")) from None


async def _download(
    http: httpx.AsyncClient, url: str, target: _Target, *, limits: DownloadLimits, clock: Clock
) -> Path:
    expiry = _url_expiry(url)
    if expiry is not None and (clock.wall() - expiry).total_seconds() > CLOCK_SKEW_ALLOWANCE:
        raise _expired_error(url, f"it expired at {expiry.isoformat()}")
    timeout = math.inf if limits.timeout is None else limits.timeout
    attempt = _Attempt(url, limits, anyio.current_time() + timeout)
    retries_taken = 0
    while True:
        # Hidden and unique: never mistaken for a result, never shared by two downloads.
        part = target.directory / f".{target.stem}.{uuid.uuid4().hex[:12]}.part"
        try:
            await _stream_to(http, attempt, part, wall=clock.wall())
            try:
                found = await anyio.to_thread.run_sync(verify_image_file, part)
            except ValueError as exc:
                raise ResponseValidationError(
                    f"the result host sent something other than an image for"
                    f" {without_query(url)}: {exc}"
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
        if retries_taken >= limits.retries:
            raise failure
        delay = backoff_delay(retries_taken, jitter=random.random())
        if anyio.current_time() + delay >= attempt.deadline:
            raise attempt.timed_out() from failure
        logger.debug("download attempt %d failed (%s); retrying", retries_taken + 1, failure)
        await clock.sleep(delay)
        retries_taken += 1


async def download_image(
    http: httpx.AsyncClient,
    image: GeneratedImage | str,
    dest: str | os.PathLike[str],
    *,
    limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
    clock: Clock = SYSTEM_CLOCK,
) -> Path:
    """Save one result image to ``dest``, never under its final name until it is whole.

    The image is streamed to a hidden temporary file beside ``dest``, checked to be an image by
    its content, and renamed into place (an atomic rename: a reader sees the old file or the
    whole new one). Sends no credentials. 5xx answers and dropped connections are retried with
    backoff, within the limits' deadline.

    Args:
        http: an HTTP client (the client's pool; it attaches no credentials here).
        image: a result image, or its URL.
        dest: a file path; a path without a suffix gets the extension of the content; an
            existing directory (or a path ending in ``/``) gets a name from the URL's file name
            and a hash of the URL (so two URLs ending in the same name never share a file),
            plus that extension. Missing parent directories are created.
        limits: the size cap, the deadline and the retries.
        clock: for the retry delays and the URL's expiry.

    Returns:
        The path of the saved file.

    Raises:
        ResultExpiredError: the URL is past its life (403 from the result host, or its own
            expiry time has passed).
        DownloadTooLargeError: the host announced or sent more than ``limits.max_bytes``.
        DownloadTimeoutError: the download did not end within ``limits.timeout``.
        DownloadError: the host redirected in a loop.
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
    return await _download(http, url, target, limits=limits, clock=clock)


async def save_result_images(
    http: httpx.AsyncClient,
    result: TaskResult,
    directory: str | os.PathLike[str],
    job: str | int,
    *,
    fingerprint: str | None = None,
    limits: DownloadLimits = DEFAULT_DOWNLOAD_LIMITS,
    clock: Clock = SYSTEM_CLOCK,
) -> list[Path]:
    """Save every image of a result under ``directory`` as ``result_file_name(job, i, ext)``.

    The runner's ``download_dir=`` option calls this as each job finishes. Names are unique per
    job and stable, so a rerun of the same job replaces its own files and no other job's, not
    even those of another batch saved into the same folder.

    Args:
        http: an HTTP client (no credentials are sent).
        result: a finished task.
        directory: where to save (created if missing).
        job: the job's key (a string) or its index (an int).
        fingerprint: for a job without a key, its request's fingerprint (see
            ``result_file_name``).
        limits: the size cap, the deadline and the retries, per image.
        clock: for the retry delays and URL expiry.

    Returns:
        The saved paths, in the order of ``result.images``.

    Example:
        ```python
        paths = await save_result_images(client.http, result, "out", "portrait-7")
        # [PosixPath('out/portrait-7-<10 hex>-0.png')]
        ```
    """
    folder = await anyio.to_thread.run_sync(_make_directory, directory)
    saved: list[Path] = []
    for image in result.images:
        target = _Target(
            folder, None, result_file_name(job, image.index, "", fingerprint=fingerprint)
        )
        saved.append(await _download(http, image.url, target, limits=limits, clock=clock))
    return saved

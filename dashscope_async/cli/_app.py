"""What every command shares: global settings, exit codes, consoles, and user-facing errors.

Owns the translation of the library's errors into one clear message, a hint and a documented
exit status, and the running of a command's coroutine (asyncio) with Ctrl-C handled. Never
prints, logs or writes the API key; never runs jobs itself.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import IO, Any, NoReturn, TypeVar

import anyio
import attrs
import click
import httpx
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape as rich_escape

from .._client import DEFAULT_TIMEOUT, AsyncDashScope
from .._config import API_KEY_ENV, env
from .._errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    DashScopeError,
    PermissionDeniedError,
    TaskNotFoundError,
    ValidationError,
)
from .._logging import SecretRedactingFilter

T = TypeVar("T")


class ExitCode(enum.IntEnum):
    """The exit statuses of ``dashscope-async`` (documented in docs/reference/cli.md)."""

    OK = 0
    """Everything asked for succeeded."""
    JOBS_FAILED = 1
    """The command ran, but at least one job did not succeed."""
    BAD_INPUT = 2
    """Bad usage or input (options, files, manifest): nothing was sent."""
    NO_API_KEY = 3
    """No API key was given, or the service refused it."""
    SERVICE_ERROR = 4
    """The service could not be reached, or refused the call."""
    INTERRUPTED = 130
    """Stopped with Ctrl-C (SIGINT)."""


class CliError(click.ClickException):
    """A user error: one message, an optional hint, an exit status; never a traceback."""

    def __init__(
        self, message: str, *, hint: str | None = None, code: ExitCode = ExitCode.BAD_INPUT
    ) -> None:
        super().__init__(message)
        self.hint = hint
        # click declares exit_code per class; each CliError carries its own status.
        self.__dict__["exit_code"] = int(code)

    def show(self, file: IO[Any] | None = None) -> None:
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        console.print(f"[bold red]Error:[/] {escape(self.message)}", markup=True)
        if self.hint:
            console.print(f"[dim]Hint:[/] {escape(self.hint)}", markup=True)


def escape(text: str) -> str:
    """Text made safe to print through rich markup."""
    return rich_escape(text)


class AbortableTransport(httpx.AsyncBaseTransport):
    """The command line's network: after ``abort()``, every request in flight or to come fails
    at once as a connection error.

    A second Ctrl-C aborts it, so the runner's last cancels of PENDING tasks end now instead of
    at their timeout, and the batch still reports every job and writes its results file.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self._in_flight: set[anyio.CancelScope] = set()
        self.aborted = False

    def _refused(self, request: httpx.Request) -> httpx.ConnectError:
        return httpx.ConnectError("interrupted: no longer waiting for the service", request=request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.aborted:
            raise self._refused(request)
        with anyio.CancelScope() as scope:
            self._in_flight.add(scope)
            try:
                return await self._inner.handle_async_request(request)
            finally:
                self._in_flight.discard(scope)
        raise self._refused(request)  # cancelled by abort(), not by the caller

    def abort(self) -> None:
        """Fail every request from now on, and those waiting for an answer now."""
        self.aborted = True
        for scope in tuple(self._in_flight):
            scope.cancel()

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.define
class Settings:
    """The global options, shared by every command through click's context object."""

    api_key: str | None = attrs.field(default=None, repr=False)
    base_url: str | None = None
    workspace: str | None = None
    verbose: bool = False
    quiet: bool = False
    json_output: bool = False
    _network: AbortableTransport | None = attrs.field(default=None, init=False, repr=False)
    _http: httpx.AsyncClient | None = attrs.field(default=None, init=False, repr=False)

    def resolved_api_key(self) -> str:
        """The key from ``--api-key`` or ``DASHSCOPE_API_KEY``, or a CliError (exit 3)."""
        key = self.api_key or env(API_KEY_ENV)
        if not key:
            raise CliError(
                "no API key: this command talks to DashScope and needs one",
                hint=(
                    f"set {API_KEY_ENV} or pass --api-key (a China (Beijing) region key); "
                    "or try `dashscope-async demo`, which needs none"
                ),
                code=ExitCode.NO_API_KEY,
            )
        return key

    def client(self) -> AsyncDashScope:
        """A client for these settings (the key is required), on the abortable network."""
        key = self.resolved_api_key()
        if self._http is None:
            self._network = AbortableTransport(httpx.AsyncHTTPTransport())
            self._http = httpx.AsyncClient(
                transport=self._network, timeout=DEFAULT_TIMEOUT, follow_redirects=False
            )
        try:
            return AsyncDashScope(
                api_key=key,
                base_url=self.base_url,
                workspace=self.workspace,
                http_client=self._http,
            )
        except ValidationError as exc:
            option = {"api_key": "--api-key", "workspace": "--workspace"}.get(
                exc.field, "--base-url"
            )
            raise CliError(str(exc), hint=f"check {option}; nothing was sent") from None

    def abort_network(self) -> None:
        """Stop waiting for the service: every request now fails at once (a second Ctrl-C)."""
        if self._network is not None:
            self._network.abort()

    async def aclose(self) -> None:
        """Close the network the clients of these settings used."""
        http, self._http, self._network = self._http, None, None
        if http is not None:
            await http.aclose()

    @property
    def show_progress(self) -> bool:
        return not (self.quiet or self.json_output)

    def stdout(self) -> Console:
        """Where results go (tables, JSON)."""
        return Console(highlight=False, soft_wrap=self.json_output)

    def stderr(self) -> Console:
        """Where progress and messages go."""
        return Console(stderr=True, highlight=False, quiet=self.quiet)


def settings_of(ctx: click.Context) -> Settings:
    """The settings stored by the top-level group."""
    found = ctx.find_object(Settings)
    if found is None:  # a command invoked without the group, as in some tests
        found = ctx.ensure_object(Settings)
    return found


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        settings_of(ctx).json_output = True
    return value


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` on a subcommand, the same as the global one (so it works in either place)."""
    return click.option(
        "--json",
        "json_flag",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print machine-readable JSON on stdout instead of tables.",
    )(command)


def configure_logging(settings: Settings) -> None:
    """Library log records to stderr: warnings by default, everything with --verbose."""
    level = logging.DEBUG if settings.verbose else logging.WARNING
    if settings.quiet:
        level = logging.ERROR
    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    handler.addFilter(SecretRedactingFilter())
    library = logging.getLogger("dashscope_async")
    library.handlers[:] = [handler]
    library.setLevel(level)
    library.propagate = False


def error_from_library(exc: DashScopeError, settings: Settings | None = None) -> CliError:
    """The one message (and hint, and exit status) for an error the library raised."""
    message = str(exc)
    if isinstance(exc, ValidationError):
        return CliError(message, hint="nothing was sent; fix the input and run again")
    if isinstance(exc, AuthenticationError):
        return CliError(
            f"the service refused the API key ({exc.code or 'InvalidApiKey'})",
            hint=f"check {API_KEY_ENV} or --api-key; these models need a China (Beijing) key",
            code=ExitCode.NO_API_KEY,
        )
    if isinstance(exc, PermissionDeniedError):
        return CliError(
            message,
            hint="a RAM sub-account key needs --workspace; an overdue account is refused too",
            code=ExitCode.SERVICE_ERROR,
        )
    if isinstance(exc, APIConnectionError):
        where = settings.base_url if settings and settings.base_url else "the service"
        return CliError(
            f"could not reach {where}: {message}",
            hint="check your network and --base-url (or DASHSCOPE_HTTP_BASE_URL)",
            code=ExitCode.SERVICE_ERROR,
        )
    if isinstance(exc, TaskNotFoundError):
        return CliError(
            message,
            hint="task ids live 24 hours and belong to one account",
            code=ExitCode.SERVICE_ERROR,
        )
    if isinstance(exc, APIError):
        return CliError(message, code=ExitCode.SERVICE_ERROR)
    return CliError(message, code=ExitCode.SERVICE_ERROR)


def run_async(settings: Settings, function: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine on asyncio, turning library errors into CLI errors."""

    async def guarded() -> T:
        try:
            return await function()
        except DashScopeError as exc:
            raise error_from_library(exc, settings) from None
        finally:
            with anyio.CancelScope(shield=True):
                await settings.aclose()

    try:
        return anyio.run(guarded, backend="asyncio")
    except KeyboardInterrupt:
        raise CliError("interrupted", code=ExitCode.INTERRUPTED) from None
    except OSError as exc:
        raise CliError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None


@attrs.define
class Interrupt:
    """Ctrl-C during a batch: the first asks the work to stop cleanly; a second only shortens
    the wait (``on_second``: stop waiting for the service's answers to the last cancels).

    Without ``on_second`` (nothing to shorten), a second Ctrl-C exits at once (status 130).
    """

    requested: bool = False
    on_first: Callable[[], None] | None = None
    on_second: Callable[[], None] | None = None

    def request(self) -> None:
        """The first Ctrl-C (also called by tests): mark the stop and tell ``on_first``."""
        if self.requested:
            return
        self.requested = True
        if self.on_first is not None:
            self.on_first()

    async def watch(self, scope: anyio.CancelScope | None = None) -> NoReturn:
        """On the first SIGINT, ``request()`` and cancel ``scope`` (if given); on the next ones,
        call ``on_second`` (or exit at once, status 130, without one)."""
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                if self.requested:
                    if self.on_second is None:
                        os._exit(int(ExitCode.INTERRUPTED))
                    self.on_second()
                    continue
                self.request()
                if scope is not None:
                    scope.cancel()
        raise AssertionError("the signal receiver never ends")  # pragma: no cover

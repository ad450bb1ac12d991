"""The emulator's core: one synchronous state machine that answers the API, upload and result hosts.

Owns the service's rules: routes, headers, body validation and its 400 codes, limits (per-model
sliding-window submit rate, tasks in progress, 20 QPS on the task endpoints), task state,
uploads, signed result URLs and the records in ``stats``. Every decision reads the injected clock
and nothing runs in the background, so a test's virtual clock drives it. It speaks only in
``Call`` and ``Reply`` values: no sockets, no event loop (the transport and the server do that),
and it never imports the client.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import heapq
import hmac
import ipaddress
import json
import math
import random
import re
import threading
import urllib.parse
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Final, Literal

import attrs

from .. import _wire
from .._config import MODELS, ModelSpec
from .._images import read_header
from .._models import RepaintStyle, SketchStyle, TaskStatus
from .._wire import (
    ErrorWire,
    RepaintBody,
    RepaintInput,
    ResultItemWire,
    SketchBody,
    SketchInput,
    SketchParameters,
    SubmitOutputWire,
    SubmitResponseWire,
    TaskListItemWire,
    TaskListWire,
    TaskMetricsWire,
    TaskOutputWire,
    TaskResponseWire,
    UploadPolicyResponseWire,
    UploadPolicyWire,
    UsageWire,
)
from . import _render
from ._config import EmulatorConfig, ModelBehaviour
from ._faults import Fault, Faults, Route
from ._stats import CredentialLeak, EmulatorStats
from ._tasks import EmulatedTask, InputProblem, Lane

__all__ = ["Call", "EmulatorCore", "HostUrls", "Reply"]

HostRole = Literal["api", "upload", "result"]
JSON: Final = "application/json"
XML: Final = "application/xml"
API_PREFIX: Final = "/api/v1"
ACCESS_KEY_ID: Final = "LTAI5tDashScopeEmulator"
ACCOUNT_ID: Final = "1234567890123456"
CREDENTIAL_HEADERS: Final = ("authorization", "x-dashscope-workspace", "x-api-key")
VALID_STYLE_INDEXES: Final = frozenset({-1, *(int(style) for style in RepaintStyle)})
SKETCH_STYLES: Final = frozenset(style.value for style in SketchStyle)
PROMPT_LIMIT: Final = 75
_DATA_URI: Final = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
_SUBMIT_ROUTES: Final = {spec.submit_path: spec for spec in MODELS.values()}
_LIST_TIME: Final = re.compile(r"^\d{14}$")
_RESULT_CACHE_SIZE: Final = 16


@attrs.frozen
class HostUrls:
    """Where the three hosts are: the API base URL (with ``/api/v1``), the upload and result hosts."""

    base_url: str
    upload_url: str
    result_url: str

    def role_of(self, scheme: str, host: str, port: int | None) -> HostRole | None:
        """Which host an address is, if it is one of the emulator's."""
        for role, url in (
            ("api", self.base_url),
            ("upload", self.upload_url),
            ("result", self.result_url),
        ):
            parsed = urllib.parse.urlsplit(url)
            if parsed.hostname == host and parsed.port == port and parsed.scheme == scheme:
                return role  # type: ignore[return-value]
        return None


@attrs.frozen
class Call:
    """One HTTP request, as the core sees it.

    Attributes:
        host: which host it reached.
        method: upper-case HTTP method.
        path: the URL path (percent-decoded).
        query: query parameters (the first value of each name).
        headers: headers with lower-case names.
        body: the request body.
    """

    host: HostRole
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""


@attrs.frozen
class Reply:
    """The core's answer. ``render`` (blocking) produces the body when it is an image to draw;
    ``fault`` tells the transport to delay or drop it."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    render: Callable[[], bytes] | None = None
    fault: Fault | None = None
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class _StoredObject:
    data: bytes
    model: str
    stored_at: float


@attrs.frozen
class _Policy:
    upload_dir: str
    model: str
    expires_at: float
    max_bytes: int


class _Refusal(Exception):
    """A request the service refuses: carries the answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _json(status: int, value: object) -> Reply:
    return Reply(status, json.dumps(value, ensure_ascii=False).encode())


def _wire_reply(value: object, status: int = 200) -> Reply:
    return _json(status, _wire.dump(value))


def _oss_error(status: int, code: str, message: str, request_id: str) -> Reply:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
        f"  <Code>{code}</Code>\n  <Message>{message}</Message>\n"
        f"  <RequestId>{request_id}</RequestId>\n  <HostId>emulator</HostId>\n</Error>\n"
    )
    return Reply(status, body.encode(), XML)


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class EmulatorCore:
    """The service, minus the network. Thread-safe: every call runs under one lock.

    Args:
        config: the settings.
        clock: monotonic seconds; every decision reads it.
        urls: where the three hosts are (they change when a server binds its ports).
    """

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float], urls: HostUrls) -> None:
        self.config = config
        self.clock = clock
        self.urls = urls
        self.stats = EmulatorStats()
        self.faults = Faults(seed=config.seed)
        self.tasks: dict[str, EmulatedTask] = {}
        self._lock = threading.RLock()
        self._rng = random.Random(config.seed)
        self._origin: float | None = None
        self._wall_start = config.wall_start or datetime.now(UTC)
        self._secret = hashlib.sha256(f"emulator-{config.seed}-{uuid.uuid4()}".encode()).digest()
        self._keys = {
            key: "ak-" + hashlib.sha256(key.encode()).hexdigest()[:16] for key in config.api_keys
        }
        self._lanes: dict[str, Lane] = {}
        self._task_requests: deque[float] = deque()
        self._policy_requests: dict[str, deque[float]] = {}
        self._policies: dict[str, _Policy] = {}
        self._objects: dict[str, _StoredObject] = {}
        self._public: dict[str, bytes] = {}
        self._seen_bodies: dict[str, set[str]] = {}
        self._input_checks: dict[tuple[str, str], InputProblem | tuple[int, int] | None] = {}
        self._rendered: OrderedDict[str, bytes] = OrderedDict()
        #: Requests held by a ``late`` fault: (when to process, order, the call).
        self._held: list[tuple[float, int, Call]] = []
        self._held_count = 0
        #: Every submit that reached the service: (clock time it arrived, its input, as JSON).
        self.submit_arrivals: list[tuple[float, str]] = []
        #: Which input created which task: input (canonical JSON) -> task ids, oldest first.
        self.tasks_by_input: dict[str, list[str]] = {}

    # --- time -------------------------------------------------------------------------------

    def now(self) -> float:
        """The clock's reading; the first reading is the emulator's time zero."""
        moment = self.clock()
        if self._origin is None:
            self._origin = moment
        return moment

    def wall(self, moment: float | None = None) -> datetime:
        """The wall-clock time of a clock reading (now by default): ``wall_start`` + elapsed."""
        if moment is None:
            moment = self.now()
        origin = self._origin if self._origin is not None else moment
        return self._wall_start + timedelta(seconds=moment - origin)

    def reset_clock(self, clock: Callable[[], float]) -> None:
        """Read another clock from now on (a server reads the real monotonic clock)."""
        with self._lock:
            if self.tasks:
                raise RuntimeError("the emulator already holds tasks on another clock")
            self.clock, self._origin = clock, None

    def advance(self) -> float:
        """Bring every task up to now, processing held requests as their time comes; returns now."""
        with self._lock:
            now = self.now()
            while self._held and self._held[0][0] <= now:
                due, _, call = heapq.heappop(self._held)
                for lane in self._lanes.values():
                    lane.advance(due)
                with contextlib.suppress(_Refusal):
                    self._dispatch(self._route_of(call), call, due)
            for lane in self._lanes.values():
                lane.advance(now)
            return now

    # --- entry ------------------------------------------------------------------------------

    def handle(self, call: Call) -> Reply:
        """Answer one request."""
        with self._lock:
            now = self.advance()
            route = self._route_of(call)
            self.stats.requests[route or "other"] += 1
            if route == "submit":
                self._note_arrival(call, now)
            if call.host != "api":
                for header in CREDENTIAL_HEADERS:
                    if header in call.headers:
                        self.stats.credential_leaks.append(
                            CredentialLeak(call.host, header, call.method, call.path)
                        )
            fault = self.faults.next_fault(route) if route and self.faults.armed else None
            if fault is not None:
                assert route is not None
                self.stats.faults_injected[route] += 1
                if fault.kind == "late":
                    self._held_count += 1
                    heapq.heappush(self._held, (now + fault.process_after, self._held_count, call))
                    return Reply(0, fault=fault)
                early = self._early_fault(fault, route)
                if early is not None:
                    return early
            try:
                reply = self._dispatch(route, call, now)
            except _Refusal as refusal:
                reply = refusal.reply
            if fault is None:
                return reply
            if fault.kind == "malformed_json":
                return Reply(200, b'{"output": {"task_id": "', JSON, fault=fault)
            if fault.kind == "html_200":
                return Reply(200, b"<html><body><p>OK</p></body></html>", "text/html", fault=fault)
            return attrs.evolve(reply, fault=fault)

    def _early_fault(self, fault: Fault, route: Route) -> Reply | None:
        if fault.kind == "drop_before":
            return Reply(0, fault=fault)
        if fault.kind == "redirect_loop":
            return Reply(302, b"", "text/plain", fault=fault)
        if fault.kind == "bare_500":
            return Reply(
                500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", "text/html"
            )
        if fault.kind == "error":
            request_id = self._new_id()
            if route in ("upload", "result"):
                reply = _oss_error(
                    fault.status, fault.code or "InternalError", fault.message or "", request_id
                )
            else:
                reply = _wire_reply(ErrorWire(fault.code, fault.message, request_id), fault.status)
            if fault.retry_after is not None:
                reply = attrs.evolve(reply, headers=(("retry-after", fault.retry_after),))
            return reply
        return None

    def _route_of(self, call: Call) -> Route | None:
        if call.host == "upload":
            return "upload" if call.method == "POST" else None
        if call.host == "result":
            return "result" if call.method in ("GET", "HEAD") else None
        path = call.path.rstrip("/")
        if not path.startswith(API_PREFIX):
            return None
        path = path[len(API_PREFIX) :]
        if path.startswith("/services/") and call.method == "POST":
            return "submit"
        if path == "/tasks" and call.method == "GET":
            return "list_tasks"
        if path.startswith("/tasks/"):
            rest = path[len("/tasks/") :]
            if call.method == "POST" and rest.endswith("/cancel") and rest.count("/") == 1:
                return "cancel_task"
            if call.method == "GET" and "/" not in rest:
                return "get_task"
        if path == "/uploads" and call.method == "GET":
            return "upload_policy"
        return None

    def _dispatch(self, route: Route | None, call: Call, now: float) -> Reply:
        path = call.path.rstrip("/")
        if route == "result":
            return self._serve_result(call, now)
        if route == "upload":
            return self._upload(call, now)
        if route is None:
            if call.host == "api":
                return self._api_error(404, "NotFound", f"no such route: {call.method} {call.path}")
            return _oss_error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                self._new_id(),
            )
        key_id = self._authenticate(call)
        path = path[len(API_PREFIX) :]
        if route == "submit":
            return self._submit(call, path, key_id, now)
        if route == "upload_policy":
            return self._upload_policy(call, key_id, now)
        self._check_task_qps(now)
        if route == "get_task":
            return self._get_task(path[len("/tasks/") :], now)
        if route == "cancel_task":
            return self._cancel(path[len("/tasks/") : -len("/cancel")], now)
        return self._list(call, now)

    # --- helpers ----------------------------------------------------------------------------

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _api_error(self, status: int, code: str, message: str) -> Reply:
        return _wire_reply(ErrorWire(code, message, self._new_id()), status)

    def _refuse(self, status: int, code: str, message: str) -> _Refusal:
        return _Refusal(self._api_error(status, code, message))

    def _authenticate(self, call: Call) -> str:
        header = call.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not key.strip():
            raise self._refuse(401, "InvalidApiKey", "No API-key provided.")
        key_id = self._keys.get(key.strip())
        if key_id is None:
            raise self._refuse(401, "InvalidApiKey", "Invalid API-key provided.")
        return key_id

    def _throttle(self, times: deque[float], rate: float | None, now: float) -> bool:
        """True when one more request now would break ``rate`` per sliding window; else records it."""
        if rate is None:
            return False
        window, allowed = (1.0, int(rate)) if rate >= 1 else (1.0 / rate, 1)
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= allowed:
            return True
        times.append(now)
        return False

    def _throttled(self) -> _Refusal:
        return self._refuse(
            429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."
        )

    def _check_task_qps(self, now: float) -> None:
        if self._throttle(self._task_requests, self.config.task_qps, now):
            self.stats.throttled_task_requests += 1
            raise self._throttled()
        self.stats.task_request_times.append(now)

    def lane(self, model: str) -> Lane:
        lane = self._lanes.get(model)
        if lane is None:
            lane = self._lanes[model] = Lane(
                model=model,
                behaviour=self.config.behaviour(model),
                stats=self.stats,
                check_inputs=self._check_inputs,
                input_failure_seconds=self.config.input_failure_seconds * self.config.time_scale,
            )
        return lane

    # --- submit -----------------------------------------------------------------------------

    def _note_arrival(self, call: Call, now: float) -> None:
        self.submit_arrivals.append((now, _input_key(call.body)))

    def _submit(self, call: Call, path: str, key_id: str, now: float) -> Reply:
        if call.headers.get("x-dashscope-async", "").lower() != "enable":
            raise self._refuse(
                403, "AccessDenied", "current user api does not support synchronous calls"
            )
        try:
            raw = json.loads(call.body)
        except (ValueError, UnicodeDecodeError):
            raise self._refuse(
                400, "InvalidParameter", "The request body is not valid JSON."
            ) from None
        if not isinstance(raw, dict):
            raise self._refuse(400, "InvalidParameter", "The request body must be a JSON object.")
        model = raw.get("model")
        if not model:
            raise self._refuse(
                400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.'
            )
        spec = MODELS.get(model) if isinstance(model, str) else None
        if spec is None:
            raise self._refuse(400, "InvalidParameter", "Model not exist.")
        if _SUBMIT_ROUTES.get(path) is not spec:
            # The service's own words, full-width exclamation mark included.
            raise self._refuse(400, "InvalidParameter", "url error, please check url！")  # noqa: RUF001
        if not raw.get("input"):
            raise self._refuse(
                400, "BadRequest.EmptyInput", 'Required parameter "input" missing from request.'
            )
        if not isinstance(raw["input"], dict):
            raise self._refuse(400, "InvalidParameter", "input must be an object")
        body = self._repaint_body(raw, spec) if spec.kind == "repaint" else self._sketch_body(raw)
        oss_resolve = call.headers.get("x-dashscope-ossresourceresolve", "").lower() == "enable"
        if not oss_resolve and any(url.startswith("oss://") for _, url in _input_urls(body)):
            raise self._refuse(
                400,
                "InvalidParameter.DataInspection",
                "Unable to download the media resource during the data inspection process.",
            )
        lane = self.lane(spec.name)
        if lane.behaviour.when_busy == "reject" and lane.is_full():
            self.stats.throttled_submits[spec.name] += 1
            raise self._throttled()
        if self._throttle(lane.recent_submits, lane.behaviour.submit_rate, now):
            self.stats.throttled_submits[spec.name] += 1
            raise self._throttled()
        return self._create_task(call, raw, body, spec, key_id, oss_resolve, now, lane)

    def _create_task(
        self,
        call: Call,
        raw: dict[str, Any],
        body: RepaintBody | SketchBody,
        spec: ModelSpec,
        key_id: str,
        oss_resolve: bool,
        now: float,
        lane: Lane,
    ) -> Reply:
        run = _draw_run_seconds(lane.behaviour, self.config.time_scale, self._rng)
        task = EmulatedTask(
            task_id=self._new_id(),
            model=spec.name,
            body=body,
            raw_body=raw,
            request_id=self._new_id(),
            api_key_id=key_id,
            workspace=call.headers.get("x-dashscope-workspace"),
            oss_resolve=oss_resolve,
            images=body.parameters.n if isinstance(body, SketchBody) else 1,
            run_seconds=run,
            submitted_at=now,
            fault=self.faults.next_task_fault(spec.name),
        )
        self.tasks[task.task_id] = task
        stats = self.stats
        stats.submissions[spec.name] += 1
        stats.submit_times.setdefault(spec.name, []).append(now)
        fingerprint = json.dumps(raw, sort_keys=True, ensure_ascii=False)
        seen = self._seen_bodies.setdefault(spec.name, set())
        if fingerprint in seen:
            stats.duplicate_submissions[spec.name] += 1
        seen.add(fingerprint)
        self.tasks_by_input.setdefault(_input_key(call.body), []).append(task.task_id)
        lane.submit(task, now)
        return _wire_reply(
            SubmitResponseWire(SubmitOutputWire(task.task_id, "PENDING"), task.request_id)
        )

    def _field_error(self, field: str) -> _Refusal:
        return self._refuse(400, "InvalidParameter", f"Field required: {field}")

    def _repaint_body(self, raw: dict[str, Any], spec: ModelSpec) -> RepaintBody:
        given = raw["input"]
        image_url = given.get("image_url")
        if not isinstance(image_url, str) or not image_url:
            raise self._field_error("input.image_url")
        style_index = given.get("style_index")
        if style_index is None:
            raise self._field_error("input.style_index")
        if (
            isinstance(style_index, bool)
            or not isinstance(style_index, int)
            or style_index not in VALID_STYLE_INDEXES
        ):
            raise self._refuse(
                400,
                "InvalidParameter",
                f"Value error, style_index {style_index!r} is not supported : input.style_index",
            )
        style_ref = given.get("style_ref_url")
        if style_index == -1 and (not isinstance(style_ref, str) or not style_ref):
            raise self._field_error("input.style_ref_url (style_index is -1)")
        if style_index != -1:
            style_ref = None  # the preset wins, as the service documents
        for url in (image_url, style_ref):
            if url is not None and not _well_formed(url, data_uri=True):
                raise self._refuse(400, "InvalidURL", "Invalid URL provided in your request.")
        return RepaintBody(spec.name, RepaintInput(image_url, style_index, style_ref))

    def _sketch_body(self, raw: dict[str, Any]) -> SketchBody:
        given = raw["input"]
        prompt = given.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise self._field_error("input.prompt")
        sketch = given.get("sketch_image_url")
        if not isinstance(sketch, str) or not sketch:
            raise self._field_error("input.sketch_image_url")
        if not _well_formed(sketch, data_uri=False):
            raise self._refuse(
                400,
                "InvalidParameter",
                f"Value error, format of image {sketch} is not valid : payload.input.sketch",
            )
        parameters = raw.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise self._refuse(400, "InvalidParameter", "parameters must be an object")
        defaults = SketchParameters()

        def bad(field: str, value: object) -> _Refusal:
            return self._refuse(
                400,
                "InvalidParameter",
                f"Value error, {field} {value!r} is not valid : parameters.{field}",
            )

        style = parameters.get("style", defaults.style)
        if style not in SKETCH_STYLES:
            raise bad("style", style)
        size = parameters.get("size", defaults.size)
        if size != "768*768":
            raise bad("size", size)
        numbers = {}
        for field, low, high, default in (
            ("n", 1, 4, defaults.n),
            ("sketch_weight", 0, 10, defaults.sketch_weight),
        ):
            value = parameters.get(field, default)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(field, value)
            numbers[field] = value
        extraction = parameters.get("sketch_extraction", False)
        if not isinstance(extraction, bool):
            raise bad("sketch_extraction", extraction)
        colors = parameters.get("sketch_color", [])
        if not isinstance(colors, list) or not all(
            isinstance(color, list)
            and len(color) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
            for color in colors
        ):
            raise bad("sketch_color", colors)
        return SketchBody(
            raw["model"],
            # The service reads the first 75 characters and drops the rest.
            SketchInput(sketch, prompt[:PROMPT_LIMIT]),
            SketchParameters(
                style, size, numbers["n"], numbers["sketch_weight"], extraction, colors
            ),
        )

    # --- inputs (checked when a task starts) ------------------------------------------------

    def _check_inputs(self, task: EmulatedTask, now: float) -> InputProblem | None:
        spec = MODELS[task.model]
        for field, url in _input_urls(task.body):
            verdict = self._input_checks.get((task.model, url))
            if verdict is None:
                verdict = self._check_input(url, spec, now, aspect=field != "style_ref_url")
                if not url.startswith("data:"):  # data URIs are unique and may be large keys
                    self._input_checks[(task.model, url)] = verdict
            if isinstance(verdict, InputProblem):
                return verdict
        return None

    def _check_input(
        self, url: str, spec: ModelSpec, now: float, *, aspect: bool
    ) -> InputProblem | tuple[int, int]:
        data = self.fetch_input(url, spec.name, now)
        if isinstance(data, InputProblem):
            return data
        rules = spec.image_rules
        if len(data) > rules.max_bytes:
            return InputProblem("InvalidImageFormat", "The input image is larger than 10MB.")
        try:
            header = read_header(data)
        except ValueError:
            header = None
        if header is None or header.format not in rules.formats:
            return InputProblem("InvalidImageFormat", "The input image format is not supported.")
        long_side, short_side = max(header.width, header.height), min(header.width, header.height)
        max_long, max_short = rules.max_size
        if short_side < rules.min_side or long_side > max_long or short_side > max_short:
            return InputProblem(
                "InvalidImageResolution", "The input image resolution is too large or small"
            )
        if aspect and long_side > rules.max_aspect_ratio * short_side:
            return InputProblem(
                "InvalidImageResolution", "The aspect ratio of the input image is out of range."
            )
        return header.width, header.height

    def fetch_input(self, url: str, model: str, now: float) -> bytes | InputProblem:
        """The bytes behind an input URL, as the service would download them."""
        unreachable = InputProblem("InvalidURL", "Invalid URL provided in your request.")
        if url.startswith("data:"):
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=True)
            except (binascii.Error, ValueError):
                return unreachable
        if url.startswith("oss://"):
            stored = self._objects.get(url.removeprefix("oss://"))
            if (
                stored is None
                or stored.model != model
                or now - stored.stored_at > self.config.upload_lifetime
            ):
                return unreachable
            return stored.data
        parsed = urllib.parse.urlsplit(url)
        role = self.urls.role_of(parsed.scheme, parsed.hostname or "", parsed.port)
        if role == "result":
            reply = self._serve_result(
                Call(
                    "result",
                    "GET",
                    urllib.parse.unquote(parsed.path),
                    dict(urllib.parse.parse_qsl(parsed.query)),
                    {},
                ),
                now,
            )
            if reply.status != 200:
                return unreachable
            return reply.render() if reply.render is not None else reply.body
        if (
            role is not None
            or not self.config.fetch_loopback
            or not _is_loopback(parsed.hostname or "")
        ):
            return unreachable  # uploads are private; the emulator reaches no other network
        import httpx

        try:
            # The real service downloads inputs itself; here a loopback server of the test's.
            response = httpx.get(url, timeout=5.0)
        except httpx.HTTPError:
            return unreachable
        return response.content if response.status_code == 200 else unreachable

    # --- task endpoints ---------------------------------------------------------------------

    def _visible(self, task: EmulatedTask, now: float) -> bool:
        ended = task.ended_at
        return ended is None or ended > now or now - ended < self.config.task_retention

    def _get_task(self, task_id: str, now: float) -> Reply:
        task = self.tasks.get(urllib.parse.unquote(task_id))
        if task is None or not self._visible(task, now):
            return _wire_reply(TaskResponseWire(TaskOutputWire(task_id, "UNKNOWN"), self._new_id()))
        self.stats.polls[task.task_id] += 1
        status = task.status_at(now)
        if status.is_terminal and status is not TaskStatus.CANCELED:
            lags = self.stats.detection_lag
            if task.task_id not in lags:
                assert task.ended_at is not None
                lags[task.task_id] = now - task.ended_at
        return _wire_reply(self._task_response(task, status))

    def _task_response(self, task: EmulatedTask, status: TaskStatus) -> TaskResponseWire:
        wall = self._service_time
        started = task.started_at is not None and not task.canceled
        terminal = status.is_terminal
        output = TaskOutputWire(
            task_id=task.task_id,
            task_status=status.value,
            submit_time=wall(task.submitted_at),
            scheduled_time=wall(task.started_at) if started else None,
            end_time=wall(task.ended_at) if terminal else None,
        )
        usage = None
        if status in (TaskStatus.RUNNING, TaskStatus.SUCCEEDED, TaskStatus.FAILED):
            failed = task.failed_indexes if terminal else frozenset()
            done = task.images - len(failed) if terminal else 0
            changes: dict[str, Any] = {
                "task_metrics": TaskMetricsWire(task.images, done, len(failed))
            }
            if isinstance(task.body, RepaintBody):
                changes["start_time"] = output.scheduled_time
                changes["style_index"] = task.body.input.style_index
            if status is TaskStatus.SUCCEEDED:
                changes["results"] = self._results(task, failed)
                if isinstance(task.body, RepaintBody):
                    changes["error_code"], changes["error_message"] = 0, "Success"
            failure = task.failure
            if status is TaskStatus.FAILED and failure is not None:
                changes["code"], changes["message"] = failure
            output = attrs.evolve(output, **changes)
            if terminal:
                usage = UsageWire(image_count=done)
        return TaskResponseWire(output, self._new_id(), usage)

    def _service_time(self, moment: float | None) -> str | None:
        return None if moment is None else _wire.format_service_time(self.wall(moment))

    def _results(self, task: EmulatedTask, failed: frozenset[int]) -> list[ResultItemWire]:
        if task.result_urls is None:
            assert task.ended_at is not None
            expires = int(self.wall(task.ended_at).timestamp() + self.config.result_url_lifetime)
            task.result_urls = [
                self._signed_url(f"results/{task.task_id}/{index}.png", expires)
                for index in range(task.images)
            ]
        items = []
        for index, url in enumerate(task.result_urls):
            if index in failed:
                assert task.fault is not None
                items.append(ResultItemWire(code=task.fault.code, message=task.fault.message))
            else:
                items.append(ResultItemWire(url=url))
        return items

    def _cancel(self, task_id: str, now: float) -> Reply:
        task = self.tasks.get(urllib.parse.unquote(task_id))
        if task is None or task.status_at(now) is not TaskStatus.PENDING:
            raise self._refuse(
                400,
                "UnsupportedOperation",
                "Failed to cancel the task, please confirm if the task is in PENDING status.",
            )
        self.lane(task.model).cancel(task, now)
        return _json(200, {"request_id": self._new_id()})

    def _list(self, call: Call, now: float) -> Reply:
        query = call.query
        start, end = self._list_window(query.get("start_time"), query.get("end_time"), now)
        try:
            page_no = int(query.get("page_no", "1"))
            page_size = int(query.get("page_size", "10"))
        except ValueError:
            raise self._refuse(
                400, "InvalidParameter", "page_no and page_size must be numbers"
            ) from None
        if page_no < 1 or not 1 <= page_size <= 100:
            raise self._refuse(
                400, "InvalidParameter", "page_no must be >= 1 and page_size 1 to 100"
            )
        model, status, only = query.get("model_name"), query.get("status"), query.get("task_id")
        if status is not None and status not in TaskStatus.__members__:
            raise self._refuse(400, "InvalidParameter", f"unknown status {status!r}")
        matches = []
        for task in reversed(self.tasks.values()):  # newest first
            created = self.wall(task.submitted_at)
            if not start <= created < end or not self._visible(task, now):
                continue
            if (model and task.model != model) or (only and task.task_id != only):
                continue
            task_status = task.status_at(now)
            if status and task_status.value != status:
                continue
            matches.append((task, task_status))
        page = matches[(page_no - 1) * page_size : page_no * page_size]
        return _wire_reply(
            TaskListWire(
                request_id=self._new_id(),
                total=len(matches),
                total_page=math.ceil(len(matches) / page_size),
                page_no=page_no,
                page_size=page_size,
                data=[self._list_item(task, task_status) for task, task_status in page],
            )
        )

    def _list_window(
        self, start_text: str | None, end_text: str | None, now: float
    ) -> tuple[datetime, datetime]:
        def parse(text: str) -> datetime:
            if not _LIST_TIME.match(text):
                raise self._refuse(400, "InvalidParameter", f"time {text!r} is not YYYYMMDDhhmmss")
            try:
                return _wire.parse_list_time(text)
            except ValueError:
                raise self._refuse(
                    400, "InvalidParameter", f"time {text!r} is not a date"
                ) from None

        day = timedelta(hours=24)
        # The list's times have whole seconds: an end second covers all of that second.
        second = timedelta(seconds=1)
        if not start_text and not end_text:
            latest = self.wall(now)
            return latest - day, latest + second
        if not start_text:
            end = parse(end_text or "")
            start = end - day
        else:
            start = parse(start_text)
            end = parse(end_text) if end_text else start + day
        if end < start or end - start > day:
            raise self._refuse(400, "InvalidParameter", "the time range must be within 24 hours")
        return start, end + second

    def _list_item(self, task: EmulatedTask, status: TaskStatus) -> TaskListItemWire:
        spec = MODELS[task.model]
        _, group, kind, function = spec.submit_path.strip("/").split("/")
        started = task.started_at if task.started_at is not None and not task.canceled else None
        return TaskListItemWire(
            task_id=task.task_id,
            status=status.value,
            model_name=task.model,
            gmt_create=self._epoch_ms(task.submitted_at),
            start_time=self._epoch_ms(started),
            end_time=self._epoch_ms(task.ended_at) if status.is_terminal else None,
            request_id=task.request_id,
            api_key_id=task.api_key_id,
            caller_parent_id=ACCOUNT_ID,
            caller_uid=ACCOUNT_ID,
            region=self.config.region,
            user_api_unique_key=f"apikey:v1:{group}:{kind}:{function}:{task.model}",
        )

    def _epoch_ms(self, moment: float | None) -> int | None:
        return None if moment is None else _wire.to_epoch_ms(self.wall(moment))

    # --- uploads ----------------------------------------------------------------------------

    def _upload_policy(self, call: Call, key_id: str, now: float) -> Reply:
        if call.query.get("action") != "getPolicy":
            raise self._refuse(400, "InvalidParameter", "action must be getPolicy")
        model = call.query.get("model", "")
        spec = MODELS.get(model)
        if spec is None:
            raise self._refuse(400, "InvalidParameter", "Model not exist.")
        times = self._policy_requests.setdefault(model, deque())
        if self._throttle(times, self.config.upload_policy_qps, now):
            self.stats.throttled_upload_policies += 1
            raise self._throttled()
        lifetime = self.config.policy_lifetime
        expires = self.wall(now) + timedelta(seconds=lifetime)
        upload_dir = f"dashscope-instant/{key_id}/{self.wall(now):%Y-%m-%d}/{self._new_id()}"
        max_bytes = 100 * 1024 * 1024
        document = {
            "expiration": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "conditions": [
                ["content-length-range", 0, max_bytes],
                ["starts-with", "$key", upload_dir],
                {"bucket": "dashscope-file-mgr"},
                {"x-oss-object-acl": "private"},
                {"x-oss-forbid-overwrite": "true"},
            ],
        }
        policy = base64.b64encode(json.dumps(document).encode()).decode()
        self._policies[policy] = _Policy(upload_dir, model, now + lifetime, max_bytes)
        return _wire_reply(
            UploadPolicyResponseWire(
                UploadPolicyWire(
                    policy=policy,
                    signature=self._sign(policy),
                    upload_dir=upload_dir,
                    upload_host=self.urls.upload_url,
                    expire_in_seconds=int(lifetime),
                    max_file_size_mb=max_bytes // (1024 * 1024),
                    capacity_limit_mb=999999999,
                    oss_access_key_id=ACCESS_KEY_ID,
                    x_oss_object_acl="private",
                    x_oss_forbid_overwrite="true",
                ),
                self._new_id(),
            )
        )

    def _sign(self, text: str) -> str:
        return base64.b64encode(
            hmac.new(self._secret, text.encode(), hashlib.sha1).digest()
        ).decode()

    def _upload(self, call: Call, now: float) -> Reply:
        request_id = self._new_id()
        form = _parse_form(call.headers.get("content-type", ""), call.body)
        if form is None:
            return _oss_error(
                400,
                "MalformedPOSTRequest",
                "The body of your POST request is not well-formed multipart/form-data.",
                request_id,
            )
        missing = [
            name
            for name in ("OSSAccessKeyId", "policy", "Signature", "key", "file")
            if name not in form
        ]
        if missing:
            return _oss_error(
                400, "InvalidArgument", f"Missing form fields: {', '.join(missing)}.", request_id
            )
        text = {
            name: value.decode(errors="replace") for name, value in form.items() if name != "file"
        }
        if text["OSSAccessKeyId"] != ACCESS_KEY_ID:
            return _oss_error(
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
                request_id,
            )
        policy = self._policies.get(text["policy"])
        if policy is None or not hmac.compare_digest(text["Signature"], self._sign(text["policy"])):
            return _oss_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
                request_id,
            )
        if now > policy.expires_at:
            return _oss_error(
                403, "AccessDenied", "Invalid according to Policy: Policy expired.", request_id
            )
        key = text["key"]
        if not key.startswith(policy.upload_dir + "/") or key == policy.upload_dir + "/":
            return _oss_error(
                403,
                "AccessDenied",
                f'Invalid according to Policy: Policy Condition failed: ["starts-with", "$key", "{policy.upload_dir}"]',
                request_id,
            )
        data = form["file"]
        if len(data) > policy.max_bytes:
            return _oss_error(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size.",
                request_id,
            )
        if key in self._objects and text.get("x-oss-forbid-overwrite", "true").lower() == "true":
            return _oss_error(
                409,
                "FileAlreadyExists",
                "The object you specified already exists and can not be overwritten.",
                request_id,
            )
        self._objects[key] = _StoredObject(data, policy.model, now)
        self.stats.uploads += 1
        status = text.get("success_action_status", "204")
        return Reply(int(status) if status in ("200", "201") else 204, b"", "text/plain")

    def stored_object(self, key: str) -> bytes | None:
        """An uploaded object's bytes (for tests), by its key (the part after ``oss://``)."""
        stored = self._objects.get(key.removeprefix("oss://"))
        return None if stored is None else stored.data

    # --- result host ------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh id from the emulator's seeded generator."""
        with self._lock:
            return self._new_id()

    def publish(self, name: str, data: bytes) -> str:
        """Serve ``data`` publicly from the result host; returns its URL."""
        with self._lock:
            self._public[name] = data
        return f"{self.urls.result_url}/inputs/{urllib.parse.quote(name)}"

    def _signed_url(self, key: str, expires: int) -> str:
        signature = self._sign(f"GET\n{expires}\n/{key}")
        query = urllib.parse.urlencode(
            {"Expires": expires, "OSSAccessKeyId": ACCESS_KEY_ID, "Signature": signature}
        )
        return f"{self.urls.result_url}/{key}?{query}"

    def _serve_result(self, call: Call, now: float) -> Reply:
        request_id = self._new_id()
        path = call.path.lstrip("/")
        no_such_key = _oss_error(404, "NoSuchKey", "The specified key does not exist.", request_id)
        if path.startswith("samples/"):
            kind = path.removeprefix("samples/").removesuffix(".png")
            if kind not in ("portrait", "sketch"):
                return no_such_key
            return Reply(200, content_type="image/png", render=lambda: _render.sample_image(kind))
        if path.startswith("inputs/"):
            data = self._public.get(path.removeprefix("inputs/"))
            return no_such_key if data is None else Reply(200, data, "application/octet-stream")
        match = re.fullmatch(r"results/([^/]+)/(\d+)\.png", path)
        if match is None:
            return no_such_key
        query = call.query
        expires_text, signature = query.get("Expires", ""), query.get("Signature", "")
        if not expires_text.isdigit() or not hmac.compare_digest(
            signature, self._sign(f"GET\n{expires_text}\n/{path}")
        ):
            return _oss_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
                request_id,
            )
        if self.wall(now).timestamp() > int(expires_text):
            return _oss_error(403, "AccessDenied", "Request has expired.", request_id)
        task = self.tasks.get(match[1])
        index = int(match[2])
        if (
            task is None
            or not self._visible(task, now)
            or task.status_at(now) is not TaskStatus.SUCCEEDED
            or index >= task.images
            or index in task.failed_indexes
        ):
            return no_such_key
        self.stats.downloads += 1
        return Reply(200, content_type="image/png", render=lambda: self._render(task, index, now))

    def _render(self, task: EmulatedTask, index: int, now: float) -> bytes:
        """Draw a result image (blocking; cached, few at a time, to keep memory small)."""
        key = f"{task.task_id}/{index}"
        with self._lock:
            cached = self._rendered.get(key)
            if cached is not None:
                self._rendered.move_to_end(key)
                return cached
        detailed = self.config.render_results
        body = task.body
        if isinstance(body, RepaintBody):
            data = self.fetch_input(body.input.image_url, task.model, now) if detailed else None
            source = data if isinstance(data, bytes) else None
            verdict = self._input_checks.get((task.model, body.input.image_url))
            width, height = verdict if isinstance(verdict, tuple) else (1536, 1536)
            if source is not None and not isinstance(verdict, tuple):
                header = read_header(source)
                width, height = (header.width, header.height) if header else (1536, 1536)
            image = _render.render_repaint(
                source, width, height, body.input.style_index, detailed=detailed
            )
        else:
            data = (
                self.fetch_input(body.input.sketch_image_url, task.model, now) if detailed else None
            )
            image = _render.render_sketch(
                data if isinstance(data, bytes) else None,
                body.parameters.style,
                body.input.prompt,
                index,
                detailed=detailed,
            )
        with self._lock:
            self._rendered[key] = image
            while len(self._rendered) > _RESULT_CACHE_SIZE:
                self._rendered.popitem(last=False)
        return image


def _draw_run_seconds(behaviour: ModelBehaviour, time_scale: float, rng: random.Random) -> float:
    """One task's run time: drawn from the behaviour's distribution, its mean ``run_seconds``
    (scaled)."""
    mean = behaviour.run_seconds * time_scale
    match behaviour.run_distribution:
        case "uniform":
            jitter = behaviour.run_jitter
            return mean * rng.uniform(1 - jitter, 1 + jitter)
        case "pareto":
            # Pareto I with minimum m has mean m * a / (a - 1): choose m to keep the mean.
            tail = behaviour.run_tail
            return mean * (tail - 1) / tail * rng.paretovariate(tail)
        case _:
            sigma = behaviour.run_sigma
            if sigma == 0:
                return mean
            # exp(N(mu, sigma)) has mean exp(mu + sigma^2 / 2).
            return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)


def _input_key(body: bytes) -> str:
    """A submit's ``input``, as canonical JSON: the same input gives the same key."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    value = raw.get("input") if isinstance(raw, dict) else None
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _input_urls(body: RepaintBody | SketchBody) -> list[tuple[str, str]]:
    if isinstance(body, SketchBody):
        return [("sketch_image_url", body.input.sketch_image_url)]
    urls = [("image_url", body.input.image_url)]
    if body.input.style_ref_url is not None:
        urls.append(("style_ref_url", body.input.style_ref_url))
    return urls


def _well_formed(url: str, *, data_uri: bool) -> bool:
    if url.startswith("data:"):
        return data_uri and _DATA_URI.match(url) is not None
    if any(ord(ch) > 127 or ch.isspace() for ch in url):
        return False  # the service refuses Chinese characters and spaces in URLs
    if url.startswith("oss://"):
        return len(url) > len("oss://")
    parsed = urllib.parse.urlsplit(url)
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def _parse_form(content_type: str, body: bytes) -> dict[str, bytes] | None:
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not message.is_multipart():
        return None
    form: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            form[name] = payload
    return form

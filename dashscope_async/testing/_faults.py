"""Faults on demand: which answer a route gives next, and which tasks fail.

Owns the fault values and the script (next k calls of a route) and the seeded chances. It decides
only *which* fault applies; the core and the transports carry it out. No I/O, no time.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Final, Literal

import attrs

__all__ = ["ROUTES", "Fault", "FaultKind", "Faults", "Route", "TaskFault"]

Route = Literal[
    "submit", "get_task", "list_tasks", "cancel_task", "upload_policy", "upload", "result"
]
#: Every route a fault can target; ``"*"`` in ``Faults`` methods means all of them.
ROUTES: Final[tuple[Route, ...]] = (
    "submit",
    "get_task",
    "list_tasks",
    "cancel_task",
    "upload_policy",
    "upload",
    "result",
)

FaultKind = Literal[
    "error",  # a JSON error answer (status + code)
    "bare_500",  # 500 with an HTML body: not JSON
    "slow",  # the right answer, late
    "drop_before",  # the connection drops before the request is processed: nothing happened
    "drop_after",  # processed (a submit created its task), then the connection drops
    "timeout_after",  # processed, then no answer until the client times out
    "malformed_json",  # processed, answered 200 with a body that is not JSON
    "late",  # held: the client times out first, the request is processed (a task made) later
    "redirect_loop",  # a result URL that redirects to itself, for ever
    "html_200",  # processed, answered 200 with an HTML page (a gateway's), not the service's JSON
]


@attrs.frozen
class Fault:
    """One faulty answer. Build it with the class methods.

    Example:
        ```python
        emulator.faults.script("submit", Fault.error(503), times=2)
        emulator.faults.script("submit", Fault.drop_after())  # an ambiguous submit
        emulator.faults.script("get_task", Fault.throttle(retry_after="86400"))
        ```

    Attributes:
        retry_after: sent as the error answer's ``Retry-After`` header, verbatim (seconds or an
            HTTP date), when given.
    """

    kind: FaultKind
    status: int = 500
    code: str | None = None
    message: str | None = None
    delay: float = 0.0
    retry_after: str | None = None
    #: For ``late``: seconds after the request arrived that the service processes it.
    process_after: float = 0.0

    @classmethod
    def throttle(cls, *, retry_after: str | None = None) -> Fault:
        """429 ``Throttling.RateQuota``, as the service answers an excess request."""
        return cls(
            "error",
            429,
            "Throttling.RateQuota",
            "Requests rate limit exceeded, please try again later.",
            retry_after=retry_after,
        )

    @classmethod
    def server_error(cls, code: str = "InternalError") -> Fault:
        """500 with the service's error JSON."""
        return cls(
            "error",
            500,
            code,
            "An internal error has occured, please try again later or contact service support.",
        )

    @classmethod
    def error(
        cls,
        status: int,
        code: str | None = None,
        message: str | None = None,
        *,
        retry_after: str | None = None,
    ) -> Fault:
        """Any status with an error JSON (408, 502, 503 ``ServiceUnavailable``, 504, ...)."""
        defaults = {
            408: ("RequestTimeout", "Request timed out."),
            502: ("BadGateway", "Bad gateway."),
            503: ("ServiceUnavailable", "The service is temporarily unavailable."),
            504: ("GatewayTimeout", "Gateway timeout."),
            429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
        }
        default_code, default_message = defaults.get(status, ("InternalError", "Internal error."))
        return cls(
            "error",
            status,
            code or default_code,
            message or default_message,
            retry_after=retry_after,
        )

    @classmethod
    def bare_500(cls) -> Fault:
        """500 with an HTML body, as a proxy in front of the service may answer."""
        return cls("bare_500", 500)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """The right answer after ``seconds`` (on the emulator's event loop clock)."""
        return cls("slow", 200, delay=seconds)

    @classmethod
    def drop_before(cls) -> Fault:
        """The connection drops before the request is processed (no task is created)."""
        return cls("drop_before", 0)

    @classmethod
    def drop_after(cls) -> Fault:
        """The request is processed (a submit creates its task), then the connection drops."""
        return cls("drop_after", 0)

    @classmethod
    def timeout_after(cls, seconds: float = 30.0) -> Fault:
        """Processed, then no answer: in-process a ``ReadTimeout``; a server holds, then drops."""
        return cls("timeout_after", 0, delay=seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        """Processed, then answered 200 with a body that is not JSON."""
        return cls("malformed_json", 200)

    @classmethod
    def late(cls, process_after: float, *, timeout: float = 1.0) -> Fault:
        """Held past the client's patience: after ``timeout`` seconds the connection is given up
        (in process a ``ReadTimeout``), and ``process_after`` seconds after it arrived the service
        processes the request all the same (a submit creates its task then)."""
        if process_after < 0 or timeout < 0:
            raise ValueError("process_after and timeout must be at least 0")
        return cls("late", 0, delay=timeout, process_after=process_after)

    @classmethod
    def redirect_loop(cls) -> Fault:
        """A result host answer that redirects to itself (``302``, the same URL), for ever."""
        return cls("redirect_loop", 302)

    @classmethod
    def html_200(cls) -> Fault:
        """Processed, then answered 200 with an HTML page, as a gateway in front may answer."""
        return cls("html_200", 200)


TASK_FAILURE_MESSAGES: Final = {
    "InternalError.Algo": "An internal error occurred in the algorithm service, please try again later.",
    "InternalError.Timeout": "An internal timeout error has occured during execution, please try again later or contact service support.",
    "DataInspectionFailed": "Output data may contain inappropriate content.",
}


@attrs.frozen
class TaskFault:
    """How a task ends badly: all its images fail, or ``failed_images`` of them.

    Attributes:
        code: the failure code (``"InternalError.Algo"``, ``"DataInspectionFailed"``, ...).
        failed_images: None fails the whole task; a number fails that many of its ``n``
            images (the last ones), leaving a partial success when at least one succeeds.
    """

    code: str = "InternalError.Algo"
    failed_images: int | None = None

    @property
    def message(self) -> str:
        return TASK_FAILURE_MESSAGES.get(self.code, "An internal error has occured.")


@attrs.define
class _Chance:
    probability: float
    fault: Fault


@attrs.define
class Faults:
    """The faults the emulator will inject: scripted (the next k calls) or by seeded chance.

    Scripted faults come first, in the order they were added; chances apply when no script does.

    Example:
        ```python
        emulator.faults.script("get_task", Fault.throttle(), times=3)
        emulator.faults.chance("submit", Fault.error(503), 0.1)
        emulator.faults.fail_tasks(times=1, code="DataInspectionFailed")
        emulator.faults.fail_tasks(times=1, failed_images=1)  # a partial success for n > 1
        ```
    """

    seed: int = 0
    _scripts: dict[str, deque[Fault]] = attrs.field(factory=dict)
    _chances: dict[str, list[_Chance]] = attrs.field(factory=dict)
    _task_scripts: dict[str | None, deque[TaskFault]] = attrs.field(factory=dict)
    _task_chances: list[tuple[float, TaskFault, str | None]] = attrs.field(factory=list)
    _rng: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(f"faults-{self.seed}")

    def script(self, route: Route | Literal["*"], fault: Fault, *, times: int = 1) -> None:
        """Give the next ``times`` calls of ``route`` this fault (for ever: ``chance(..., 1.0)``)."""
        for name in _routes(route):
            self._scripts.setdefault(name, deque()).extend([fault] * times)

    def chance(self, route: Route | Literal["*"], fault: Fault, probability: float) -> None:
        """Give each call of ``route`` this fault with ``probability`` (seeded)."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        for name in _routes(route):
            self._chances.setdefault(name, []).append(_Chance(probability, fault))

    def fail_tasks(
        self,
        *,
        times: int = 1,
        code: str = "InternalError.Algo",
        failed_images: int | None = None,
        model: str | None = None,
    ) -> None:
        """Make the next ``times`` tasks (of ``model``, or any) fail, wholly or partly."""
        self._task_scripts.setdefault(model, deque()).extend(
            [TaskFault(code, failed_images)] * times
        )

    def fail_tasks_randomly(
        self,
        probability: float,
        *,
        code: str = "InternalError.Algo",
        failed_images: int | None = None,
        model: str | None = None,
    ) -> None:
        """Make each task fail with ``probability`` (seeded)."""
        self._task_chances.append((probability, TaskFault(code, failed_images), model))

    def clear(self) -> None:
        """Forget every scripted fault and chance."""
        self._scripts.clear()
        self._chances.clear()
        self._task_scripts.clear()
        self._task_chances.clear()

    def next_fault(self, route: Route) -> Fault | None:
        """The fault for this call of ``route``, if any (consumes a scripted one)."""
        scripted = self._scripts.get(route)
        if scripted:
            return scripted.popleft()
        for chance in self._chances.get(route, ()):
            if self._rng.random() < chance.probability:
                return chance.fault
        return None

    def next_task_fault(self, model: str) -> TaskFault | None:
        """How the task just created ends badly, if it does."""
        for key in (model, None):
            scripted = self._task_scripts.get(key)
            if scripted:
                return scripted.popleft()
        for probability, fault, only in self._task_chances:
            if only in (None, model) and self._rng.random() < probability:
                return fault
        return None

    @property
    def armed(self) -> bool:
        """True when any request fault may fire (the hot path skips the lookup otherwise)."""
        return any(self._scripts.values()) or any(self._chances.values())


def _routes(route: str) -> tuple[Route, ...]:
    if route == "*":
        return ROUTES
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; routes: {', '.join(ROUTES)} or '*'")
    return (route,)


def parse_fault_spec(spec: str) -> list[tuple[str, Fault | TaskFault, float]]:
    """Parse the command line's ``--faults``: ``route:fault:probability`` items, comma-separated.

    Faults: ``408``, ``429``, ``500``, ``502``, ``503``, ``504``, ``bare500``, ``slow=<s>``,
    ``drop``, ``drop-after``, ``timeout``, ``badjson``, ``late=<s>``, ``redirect-loop``; for route ``task``: a failure code
    (``InternalError.Algo``, ``DataInspectionFailed``) or ``partial``.

    Example:
        ```python
        parse_fault_spec("submit:503:0.1,get_task:429:0.05,task:InternalError.Algo:0.1")
        ```
    """
    items: list[tuple[str, Fault | TaskFault, float]] = []
    for raw in filter(None, (part.strip() for part in spec.split(","))):
        try:
            route, name, probability_text = raw.rsplit(":", 2)
            probability = float(probability_text)
        except ValueError:
            raise ValueError(f"fault {raw!r} is not route:fault:probability") from None
        if route == "task":
            fault: Fault | TaskFault = (
                TaskFault("DataInspectionFailed", failed_images=1)
                if name == "partial"
                else TaskFault(name)
            )
        else:
            _routes(route)
            fault = _named_fault(name)
        items.append((route, fault, probability))
    return items


def _named_fault(name: str) -> Fault:
    if name.isdigit():
        return Fault.error(int(name)) if name != "500" else Fault.server_error()
    if name.startswith("slow="):
        return Fault.slow(float(name.removeprefix("slow=")))
    if name.startswith("late="):
        return Fault.late(float(name.removeprefix("late=")))
    named = {
        "redirect-loop": Fault.redirect_loop,
        "bare500": Fault.bare_500,
        "drop": Fault.drop_before,
        "drop-after": Fault.drop_after,
        "timeout": Fault.timeout_after,
        "badjson": Fault.malformed_json,
    }
    if name not in named:
        raise ValueError(f"unknown fault {name!r}")
    return named[name]()

"""Option values the command line reads from text: budgets, times, styles, task statuses.

Owns parsing and the messages for values that do not parse. No I/O.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import click

from .._budget import Budget
from .._errors import ValidationError
from .._models import RepaintStyle, SketchStyle, TaskStatus

_CNY_FORMS: Final = (
    re.compile(r"^(?:cny|rmb|¥)\s*[:=]?\s*(?P<amount>[0-9.]+)$", re.IGNORECASE),
    re.compile(r"^(?P<amount>[0-9.]+)\s*(?:cny|rmb|yuan|¥)$", re.IGNORECASE),
)
_IMAGE_FORMS: Final = (
    re.compile(r"^(?P<count>[0-9]+)$"),
    re.compile(r"^(?:images?)\s*[:=]?\s*(?P<count>[0-9]+)$", re.IGNORECASE),
    re.compile(r"^(?P<count>[0-9]+)\s*(?:images?|img)$", re.IGNORECASE),
)
_DURATION: Final = re.compile(
    r"^(?P<amount>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[smhd])$", re.IGNORECASE
)
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_budget(text: str) -> Budget:
    """A spending cap from ``100`` / ``images:100`` (images) or ``5.00CNY`` / ``cny:5`` (money).

    Raises:
        ValidationError: the text is neither form.

    Example:
        ```python
        assert parse_budget("100") == Budget(images=100)
        assert parse_budget("cny:5").cny == Decimal("5")
        ```
    """
    value = text.strip()
    for form in _IMAGE_FORMS:
        match = form.match(value)
        if match:
            return Budget(images=int(match["count"]))
    for form in _CNY_FORMS:
        match = form.match(value)
        if match:
            try:
                return Budget(cny=Decimal(match["amount"]))
            except InvalidOperation:
                break
    raise ValidationError(
        "--budget",
        f"{text!r} is not a budget; give a number of images (100) or an amount in CNY"
        " (5.00CNY or cny:5)",
    )


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A moment from a duration ago (``30m``, ``2h``, ``1d``) or an ISO date/time (UTC if naive).

    Raises:
        ValidationError: neither form.
    """
    value = text.strip()
    moment_now = now or datetime.now(UTC)
    match = _DURATION.match(value)
    if match:
        seconds = float(match["amount"]) * _UNIT_SECONDS[match["unit"].lower()]
        return moment_now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            "--since",
            f"{text!r} is neither a duration (30m, 2h, 1d) nor a date/time (2026-03-01T12:00)",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class _LibraryParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A click type whose parser raises the library's ValidationError."""

    def parse(self, value: str) -> Any:
        """The value ``value`` names; each subclass says how (raising ValidationError)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValidationError as exc:
            self.fail(exc.rule, param, ctx)


class BudgetType(_LibraryParam):
    name = "budget"

    def parse(self, value: str) -> Budget:
        return parse_budget(value)


class SinceType(_LibraryParam):
    name = "since"

    def parse(self, value: str) -> datetime:
        return parse_since(value)


class RepaintStyleType(_LibraryParam):
    name = "style"

    def parse(self, value: str) -> RepaintStyle:
        if value.strip() == "-1":
            raise ValidationError("--style", "index -1 is a custom style: use --style-ref FILE")
        return RepaintStyle.parse(value)


class SketchStyleType(_LibraryParam):
    name = "style"

    def parse(self, value: str) -> SketchStyle:
        return SketchStyle.parse(value)


class TaskStatusType(_LibraryParam):
    name = "status"

    def parse(self, value: str) -> TaskStatus:
        status = TaskStatus(value.strip().upper())
        if status is TaskStatus.UNRECOGNIZED:
            names = ", ".join(s.value for s in TaskStatus if s is not TaskStatus.UNRECOGNIZED)
            raise ValidationError("--status", f"no status {value!r}; choose from {names}")
        return status


BUDGET: Final = BudgetType()
SINCE: Final = SinceType()
REPAINT_STYLE: Final = RepaintStyleType()
SKETCH_STYLE: Final = SketchStyleType()
TASK_STATUS: Final = TaskStatusType()

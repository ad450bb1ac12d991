"""The field validators of the settings types (``Limits``, ``PollPolicy``, ``ReconcileRules``).

Owns the number rules every setting shares, each raising ``ValidationError`` that names the
field and the rule, so a bad setting cannot exist. Request fields have their own, model-specific
rules in ``_models``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._errors import ValidationError

__all__ = ["at_least_one", "non_negative", "positive", "whole_number"]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def positive(field: str, *, finite: bool = False) -> Any:
    """A number greater than 0 (and finite, when asked)."""

    def check(_instance: object, _attribute: attrs.Attribute[Any], value: float) -> None:
        if not (_is_number(value) and value > 0 and (not finite or math.isfinite(value))):
            rule = "a finite number" if finite else "a number"
            raise ValidationError(field, f"must be {rule} greater than 0, not {value!r}")

    return check


def non_negative(field: str, *, optional: bool = False, finite: bool = False) -> Any:
    """A number of at least 0 (or None, when ``optional``; finite, when asked)."""

    def check(_instance: object, _attribute: attrs.Attribute[Any], value: float | None) -> None:
        if value is None and optional:
            return
        if value is None or not (
            _is_number(value) and value >= 0 and (not finite or math.isfinite(value))
        ):
            rule = "a finite number" if finite else "a number"
            raise ValidationError(field, f"must be {rule} of at least 0, not {value!r}")

    return check


def at_least_one(field: str) -> Any:
    """A whole number of at least 1 (not a bool)."""

    def check(_instance: object, _attribute: attrs.Attribute[Any], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationError(field, f"must be a whole number of at least 1, not {value!r}")

    return check


def whole_number(field: str) -> Any:
    """A whole number of at least 0 (not a bool)."""

    def check(_instance: object, _attribute: attrs.Attribute[Any], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(field, f"must be a whole number of at least 0, not {value!r}")

    return check

"""The field validators of the settings types (``Limits``, ``PollPolicy``, ``RetryPolicy``,
``ReconcileRules``, ``DownloadLimits``, the runner's pipeline settings).

Owns no rule: each validator adapts a rule of ``_checks`` to attrs, so a setting and a call
argument of the same kind are refused alike (``InputTypeError`` for a wrong type,
``ValidationError`` for a wrong value, both naming the field), and a bad setting cannot exist.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._checks import check_number, check_whole_number

__all__ = ["at_least_one", "fraction", "non_negative", "positive", "whole_number", "within"]

_Validator = Any  # attrs' validator protocol: (instance, attribute, value) -> None


def positive(field: str, *, unit: str = "", optional: bool = False) -> _Validator:
    """A finite number greater than 0 (or None, when ``optional``)."""

    def check(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None or not optional:
            check_number(field, value, unit=unit, more_than=0)

    return check


def non_negative(field: str, *, unit: str = "", optional: bool = False) -> _Validator:
    """A finite number of at least 0 (or None, when ``optional``)."""

    def check(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None or not optional:
            check_number(field, value, unit=unit, at_least=0)

    return check


def within(field: str, *, at_most: float, optional: bool = False) -> _Validator:
    """A finite number from 0 to ``at_most`` (or None, when ``optional``)."""

    def check(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None or not optional:
            check_number(field, value, at_least=0, at_most=at_most)

    return check


def fraction(field: str) -> _Validator:
    """A number from 0 to 1."""

    def check(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
        check_number(field, value, at_least=0, at_most=1)

    return check


def at_least_one(field: str, *, unit: str = "") -> _Validator:
    """A whole number of at least 1 (not a bool)."""

    def check(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
        check_whole_number(field, value, minimum=1, unit=unit)

    return check


def whole_number(field: str, *, unit: str = "") -> _Validator:
    """A whole number of at least 0 (not a bool)."""

    def check(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
        check_whole_number(field, value, minimum=0, unit=unit)

    return check

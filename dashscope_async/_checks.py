"""The rules for values a caller hands in: numbers, flags, URLs, prompts, keys and workspaces.

One place for every such rule, so the settings types (through ``_validators``), the request
types, the client, the runner and the command line refuse the same inputs with the same words.
Each check raises ``InputTypeError`` for a value of the wrong Python type (a ``ValidationError``
that is also a ``TypeError``; the rule names what the field takes and the type given) or
``ValidationError`` for a value the rules refuse (naming the field and the rule). None touches
files or the network, and none echoes a secret it was given.

The number rules: a number is an ``int`` or a ``float``, never a ``bool``; a whole number is an
``int``, never a ``bool``; both must be finite (NaN and infinities are refused, and so is an
``int`` too large for a float where a float is kept) and within the field's bounds. A whole
number needs no float, so a large one is only held to its bounds.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
import urllib.parse
from typing import Final

from ._errors import InputTypeError, ValidationError

__all__ = [
    "MAX_URL_LENGTH",
    "check_flag",
    "check_header_value",
    "check_instance",
    "check_job_key",
    "check_number",
    "check_seconds",
    "check_text",
    "check_url",
    "check_whole_number",
    "control_character",
    "wrong_type",
]

#: Longer than any URL a service or object store hands out (signed OSS URLs are under 2 KB).
MAX_URL_LENGTH: Final = 8192
#: Control characters a prompt may carry: tab and line breaks.
_ALLOWED_CONTROLS: Final = frozenset("\t\n\r")
#: Characters that show nothing: whitespace, zero-width and other format characters.
_INVISIBLE_CATEGORIES: Final = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


#: Text of printable ASCII, tab and line breaks, showing at least one character: it passes
#: every rule of ``check_text`` (the common case, matched in one pass instead of four).
_PLAIN_TEXT: Final = re.compile(r"[\t\n\r -~]*[!-~][\t\n\r -~]*")
#: A URL of printable ASCII without spaces: it passes ``check_url``'s character rules.
_PLAIN_URL_CHARACTERS: Final = re.compile(r"[!-~]*")


def _type_name(value: object) -> str:
    return type(value).__name__


def wrong_type(field: str, expected: str, value: object) -> InputTypeError:
    """The error for a value of the wrong type: names ``field``, what it takes and the type
    given (never the value, which may be a secret)."""
    return InputTypeError(field, f"must be {expected}, not {_type_name(value)!r}")


def control_character(text: str, *, allowed: frozenset[str] = frozenset()) -> str | None:
    """The first control character (C0, DEL or C1) of ``text`` outside ``allowed``, if any."""
    for char in text:
        code = ord(char)
        if (code < 32 or 127 <= code < 160) and char not in allowed:
            return char
    return None


def _lone_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def check_url(field: str, url: str) -> None:
    """Refuse an ``http(s)://`` or ``oss://`` URL the service could never fetch.

    The rules: at most ``MAX_URL_LENGTH`` characters; no control characters, spaces or
    non-ASCII characters (the service refuses them; percent-encode instead); http(s) needs a
    host and a port from 1 to 65535; ``oss://`` needs a key after the scheme.

    Raises:
        ValidationError: a rule is broken (the message names ``field``).
    """
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(
            field, f"is a URL of {len(url):,} characters; at most {MAX_URL_LENGTH:,} are accepted"
        )
    if not _PLAIN_URL_CHARACTERS.fullmatch(url):  # else both character rules hold
        bad = control_character(url)
        if bad is not None:
            raise ValidationError(field, f"the URL contains the control character {bad!r}")
        if _lone_surrogate(url) or any(ord(ch) > 127 or ch.isspace() for ch in url):
            raise ValidationError(
                field,
                "the service rejects URLs with spaces or non-ASCII characters; percent-encode them",
            )
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "oss":
        if not rest.strip("/"):
            raise ValidationError(field, "an oss:// URL needs an object key after oss://")
        return
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(field, f"is not a valid URL ({exc})") from None
    if not parts.hostname:
        raise ValidationError(field, f"{url[:80]!r} has no host")
    if port is not None and port == 0:
        raise ValidationError(field, "the URL's port must be from 1 to 65535")


def check_text(field: str, value: object, *, what: str = "text") -> str:
    """A non-empty string that shows something: no NUL or other control characters (tab and
    line breaks allowed), no lone surrogates, not only invisible characters.

    Raises:
        InputTypeError: not a string.
        ValidationError: a rule is broken (the message names ``field``).
    """
    if not isinstance(value, str):
        raise wrong_type(field, "a string", value)
    if _PLAIN_TEXT.fullmatch(value):
        return value
    if _lone_surrogate(value):
        raise ValidationError(
            field, f"the {what} contains a lone surrogate (text that is not valid Unicode)"
        )
    bad = control_character(value, allowed=_ALLOWED_CONTROLS)
    if bad is not None:
        raise ValidationError(field, f"the {what} contains the control character {bad!r}")
    if all(unicodedata.category(char) in _INVISIBLE_CATEGORIES or char.isspace() for char in value):
        raise ValidationError(
            field, f"the {what} is empty or shows nothing (only blank characters)"
        )
    return value


def check_header_value(field: str, value: object, *, secret: bool) -> str:
    """A value sent in an HTTP header (an API key, a workspace id): printable ASCII, no spaces.

    Surrounding whitespace is stripped. The message of a refused ``secret`` never shows it.

    Raises:
        InputTypeError: not a string.
        ValidationError: empty, or a character a header cannot carry.
    """
    if not isinstance(value, str):
        raise wrong_type(field, "a string", value)
    text = value.strip()
    if not text:
        raise ValidationError(field, "must not be empty")
    for position, char in enumerate(text):
        if not 33 <= ord(char) <= 126:
            shown = "a character" if secret else repr(char)
            raise ValidationError(
                field,
                f"{shown} at position {position} cannot be sent in a header: only printable"
                " ASCII without spaces is allowed",
            )
    return text


def _shown(value: float) -> str:
    """A refused number as the message shows it (a huge int is cut short)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _bounds(
    at_least: float | None,
    more_than: float | None,
    at_most: float | None,
    less_than: float | None,
) -> str:
    low = (
        f"more than {more_than:g}"
        if more_than is not None
        else None
        if at_least is None
        else f"at least {at_least:g}"
    )
    high = (
        f"less than {less_than:g}"
        if less_than is not None
        else None
        if at_most is None
        else f"at most {at_most:g}"
    )
    if at_least is not None and at_most is not None and more_than is None and less_than is None:
        return f"from {at_least:g} to {at_most:g}"
    return " and ".join(part for part in (low, high) if part is not None)


def _check_bounds(
    field: str,
    value: float,
    unit: str,
    *,
    given: float,
    at_least: float | None = None,
    more_than: float | None = None,
    at_most: float | None = None,
    less_than: float | None = None,
) -> None:
    if (
        (at_least is not None and value < at_least)
        or (more_than is not None and value <= more_than)
        or (at_most is not None and value > at_most)
        or (less_than is not None and value >= less_than)
    ):
        bound = _bounds(at_least, more_than, at_most, less_than)
        raise ValidationError(field, f"must be {bound}{unit}, not {_shown(given)}")


def check_number(
    field: str,
    value: object,
    *,
    unit: str = "",
    at_least: float | None = None,
    more_than: float | None = None,
    at_most: float | None = None,
    less_than: float | None = None,
) -> float:
    """A finite real number (``int`` or ``float``, not ``bool``) within the given bounds.

    Args:
        field: the parameter or field, named in the error.
        value: what the caller gave.
        unit: what the number counts, for the message (``"seconds"``).
        at_least, more_than, at_most, less_than: the bounds (inclusive and exclusive).

    Returns:
        ``value`` as a float.

    Raises:
        InputTypeError: not an int or float (a bool, a str, None, ...).
        ValidationError: NaN, infinite (or an int too large for a float), or out of bounds.

    Example:
        ```python
        assert check_number("min_interval", 1, unit="seconds", more_than=0) == 1.0
        ```
    """
    noun = f"a number of {unit}" if unit else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type(field, noun, value)
    try:
        number = float(value)
    except OverflowError:
        raise ValidationError(
            field, f"is too large: at most {sys.float_info.max:g}, not {_shown(value)}"
        ) from None
    if not math.isfinite(number):
        raise ValidationError(field, f"must be a finite number, not {_shown(value)}")
    _check_bounds(
        field,
        number,
        f" {unit}" if unit else "",
        given=value,
        at_least=at_least,
        more_than=more_than,
        at_most=at_most,
        less_than=less_than,
    )
    return number


def check_whole_number(
    field: str,
    value: object,
    *,
    minimum: int | None = 0,
    maximum: int | None = None,
    unit: str = "",
) -> int:
    """An ``int`` (not a ``bool``) from ``minimum`` to ``maximum`` (None: unbounded).

    Raises:
        InputTypeError: not an int (a float, even ``2.0``, a bool, a str, ...).
        ValidationError: out of range.

    Example:
        ```python
        assert check_whole_number("max_retries", 2, minimum=0) == 2
        ```
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(field, f"a whole number of {unit}" if unit else "a whole number", value)
    shown_unit = f" {unit}" if unit else ""
    _check_bounds(field, value, shown_unit, given=value, at_least=minimum, at_most=maximum)
    return value


def check_seconds(field: str, value: object, *, strictly_positive: bool = False) -> float:
    """A finite number of seconds, at least 0 (more than 0 when ``strictly_positive``).

    Raises:
        InputTypeError: not a number.
        ValidationError: not finite, or below the minimum.

    Example:
        ```python
        assert check_seconds("timeout", 5) == 5.0
        ```
    """
    if strictly_positive:
        return check_number(field, value, unit="seconds", more_than=0)
    return check_number(field, value, unit="seconds", at_least=0)


def check_job_key(field: str, value: object) -> str:
    """A job key: a non-empty string.

    Raises:
        InputTypeError: not a string.
        ValidationError: empty.
    """
    if not isinstance(value, str):
        raise wrong_type(field, "a string", value)
    if not value:
        raise ValidationError(field, "a job key must not be empty")
    return value


def check_instance(
    field: str, value: object, types: type | tuple[type, ...], expected: str
) -> None:
    """``value`` is one of ``types`` (an option that takes a settings object, a path, ...).

    Raises:
        InputTypeError: it is not; the message says ``expected``.
    """
    if not isinstance(value, types):
        raise wrong_type(field, expected, value)


def check_flag(field: str, value: object) -> bool:
    """``True`` or ``False``, and nothing that merely looks like one (``1``, ``"yes"``).

    Raises:
        InputTypeError: anything but a bool.
    """
    if not isinstance(value, bool):
        raise wrong_type(field, "True or False", value)
    return value

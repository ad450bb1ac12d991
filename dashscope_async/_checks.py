"""The rules for values a caller hands in: URLs, prompts, keys and workspaces, numeric options.

One place for every such rule, so the request types, the client, the runner and the command
line refuse the same inputs with the same words. Each check raises ``ValidationError`` (a value
the rules refuse, naming the field and the rule) or ``TypeError`` (a value of the wrong Python
type, naming the parameter and the types it takes); none touches files or the network, and none
echoes a secret it was given.
"""

from __future__ import annotations

import math
import re
import unicodedata
import urllib.parse
from typing import Final

from ._errors import ValidationError

__all__ = [
    "MAX_URL_LENGTH",
    "check_header_value",
    "check_seconds",
    "check_text",
    "check_url",
    "check_whole_number",
    "control_character",
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
        ValidationError: not a string, or a rule is broken (the message names ``field``).
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {_type_name(value)}")
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
        TypeError: not a string.
        ValidationError: empty, or a character a header cannot carry.
    """
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected a str, not {_type_name(value)}")
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


def check_whole_number(
    field: str, value: object, *, minimum: int, maximum: int | None = None
) -> int:
    """An ``int`` (not a ``bool``) from ``minimum`` to ``maximum``.

    Raises:
        TypeError: not an int.
        ValidationError: out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field}: expected an int, not {_type_name(value)} {value!r:.40}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValidationError(field, f"must be {bound}, not {value}")
    return value


def check_seconds(
    field: str, value: object, *, minimum: float = 0.0, strictly_positive: bool = False
) -> float:
    """A finite number of seconds (``int`` or ``float``, not ``bool``), at least ``minimum``.

    Raises:
        TypeError: not a number.
        ValidationError: not finite, or below the minimum.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field}: expected a number of seconds, not {_type_name(value)}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValidationError(field, f"must be a finite number of seconds, not {value}")
    if strictly_positive and seconds <= 0:
        raise ValidationError(field, f"must be more than 0 seconds, not {value}")
    if seconds < minimum:
        raise ValidationError(field, f"must be at least {minimum:g} seconds, not {value}")
    return seconds

"""The library's logger, and the filter that keeps credentials out of every record it emits.

Owns the ``dashscope_async`` logger and what requests may say in it: method and path only, never
a query string, a header or a key. It must not configure handlers or levels (that is the
application's choice).
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["SecretRedactingFilter", "log_request", "logger", "redact"]

REDACTED: Final = "<redacted>"

#: The library's logger; every module logs through it or a child of it.
logger: Final = logging.getLogger("dashscope_async")

# "Authorization: Bearer sk-...", "'authorization': 'Bearer ...'", "api_key=sk-...", and bare
# DashScope keys ("sk-" followed by a long token) wherever they appear.
_SECRET_PATTERNS: Final = (
    re.compile(
        r"(?i)((?:authorization|api[-_]?key|x-api-key)['\"]?\s*[:=]\s*['\"]?(?:bearer\s+)?)"
        r"[^\s'\",;}]+"
    ),
    re.compile(r"(?i)(bearer\s+)[^\s'\",;}]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
)


def redact(text: str, *secrets: str) -> str:
    """``text`` with the given secrets, and anything shaped like a credential, replaced.

    Example:
        ```python
        assert redact("Bearer sk-abcdefgh123") == "Bearer <redacted>"
        ```
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(
            lambda match: (match.group(1) if match.groups() else "") + REDACTED, text
        )
    return text


class SecretRedactingFilter(logging.Filter):
    """Rewrites a record whose message or arguments carry a credential.

    Installed on the library's logger, so a key that reaches a record by accident (an exception
    text, a header dump from a subclass) is masked before any handler sees it.

    Example:
        ```python
        logging.getLogger("my_app").addFilter(SecretRedactingFilter())
        ```
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Pre-render the traceback so handlers print the redacted text, not the raw one.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted)
            record.exc_info = None
        return True


def _install_filter(target: logging.Logger) -> None:
    if not any(isinstance(f, SecretRedactingFilter) for f in target.filters):
        target.addFilter(SecretRedactingFilter())


def get_logger(name: str) -> logging.Logger:
    """A logger under ``dashscope_async`` with the redacting filter on it.

    A logger's filters see only the records it creates itself, not its children's, so every
    library logger carries its own.
    """
    child = logging.getLogger(f"dashscope_async.{name}") if name else logger
    _install_filter(child)
    return child


_install_filter(logger)


def log_request(method: str, path: str, *, attempt: int) -> None:
    """Debug-log one outgoing request: method and path only (no query, headers or body)."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s %s (attempt %d)", method, path, attempt + 1)

"""Path objects that pass a request's checks when it is built, then turn odd inside the job.

A request refuses a lone surrogate, a NUL or a bytes path when it is built; what the runner
must still survive is a path object whose ``__fspath__`` changes its answer after that check
(or raises an exception that is not ours) when the job reads the file.
"""

from __future__ import annotations

import os


class BytesPath(os.PathLike[bytes]):
    """A path object that is bytes from the start (refused when the request is built)."""

    def __fspath__(self) -> bytes:
        return b"/tmp/portrait.png"


class ChangesOnceChecked(os.PathLike[str]):
    """A fine path for the request's check; ``later`` (or a ``RuntimeError``) afterwards."""

    def __init__(self, later: str | bytes | None) -> None:
        self._later = later
        self._calls = 0

    def __fspath__(self) -> str:
        self._calls += 1
        if self._calls == 1:
            return "/tmp/portrait.png"
        if self._later is None:
            raise RuntimeError("an exception that is not ours")
        return self._later  # type: ignore[return-value]  # bytes: the odd answer under test

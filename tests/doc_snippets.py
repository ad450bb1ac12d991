"""The code blocks of README.md and docs/, found and run as a reader would run them.

Every ``python`` block is one of three kinds, told apart by what it holds:

- a **program** (it calls ``anyio.run``, ``asyncio.run`` or ``trio.run``): saved to a file and run
  with ``python file.py``, whole, in a folder holding the local files the docs name;
- a **test** (it defines ``test_`` functions): saved as ``test_snippet.py`` and run with pytest,
  whole (so a missing ``@pytest.mark.anyio`` fails, as it would for the reader);
- an **excerpt** (captioned ``From examples/x.py``): each of its lines must be in that file,
  which its own tests run, so the page never drifts from code that works;
- a **fragment** (anything else, top-level ``await`` allowed): run in the page's session, as in
  ``python -m asyncio``, after the page's earlier fragments. The session starts with the names
  the prose around fragments speaks of (``SESSION_NAMES``): a ``client`` and a ``runner`` on the
  emulator, ``requests``, ``urls``...

Programs and fragments reach the emulator served on loopback through ``DASHSCOPE_HTTP_BASE_URL``
and ``DASHSCOPE_API_KEY``, as the reader's code would reach the service. A block whose caption
(``title="..."``) starts with ``Not run`` is skipped; its caption says why. Shell blocks
(``bash``, ``console``) and data blocks (``text``, ``csv``, ``json``) are not run here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from types import CodeType
from typing import Final, Literal

import attrs

ROOT: Final = Path(__file__).resolve().parent.parent
FENCE: Final = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
TITLE: Final = re.compile(r'title="(?P<title>[^"]*)"')
NOT_RUN: Final = "Not run"
#: The names a fragment may use without defining them, and what they are.
SESSION_NAMES: Final = {
    "ds": "import dashscope_async as ds",
    "anyio": "import anyio",
    "httpx": "import httpx",
    "pytest": "import pytest",
    "Path": "from pathlib import Path",
    "Emulator, EmulatorConfig": "from dashscope_async.testing import Emulator, EmulatorConfig",
    "emulator": "the served emulator",
    "client": "an AsyncDashScope on the emulator (from the environment)",
    "runner": "an AsyncTaskRunner on that client, with download_dir='out'",
    "requests, jobs, request": "two style repaints of the emulator's sample portrait",
    "urls, photos, url, image_url, sketch_url": "sample image URLs the emulator serves",
    "model": "'wanx-style-repaint-v1'",
    "progress": "an object with advance()",
}

Kind = Literal["program", "test", "fragment", "excerpt", "not-run"]
#: A caption naming the file a block is taken from: the block is checked against that file.
EXCERPT: Final = re.compile(r"^From (?P<path>[\w./-]+\.py)$")


@attrs.frozen
class Snippet:
    """One code block of a page."""

    page: Path
    line: int
    language: str
    title: str | None
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"

    @property
    def kind(self) -> Kind:
        if self.title is not None and self.title.startswith(NOT_RUN):
            return "not-run"
        if self.title is not None and EXCERPT.match(self.title):
            return "excerpt"
        if re.search(r"^\s*(async\s+)?def test_", self.code, re.MULTILINE):
            return "test"
        if re.search(r"\b(anyio|asyncio|trio)\.run\(", self.code):
            return "program"
        return "fragment"

    def compiled(self) -> CodeType:
        """The fragment's code object (top-level ``await`` allowed)."""
        code: CodeType = compile(
            self.code, self.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        return code


def pages() -> list[Path]:
    """README.md and every page under docs/ (not the build extensions)."""
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [page for page in found if "_ext" not in page.parts]


def snippets(page: Path) -> Iterator[Snippet]:
    """The fenced code blocks of ``page`` with a language, de-indented (admonitions, tabs)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        match = FENCE.match(lines[number])
        if match is None or not match["info"].strip():
            number += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        start, body = number, []
        number += 1
        while number < len(lines) and lines[number].strip() != fence:
            text = lines[number]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            number += 1
        number += 1
        title = TITLE.search(info)
        yield Snippet(
            page=page,
            line=start + 1,
            language=info.split()[0].strip("{}.").lower(),
            title=None if title is None else title["title"],
            code="\n".join(body) + "\n",
        )


def python_snippets() -> list[Snippet]:
    """Every ``python`` block of every page, in page order."""
    return [s for page in pages() for s in snippets(page) if s.language in ("python", "py")]


def excerpt_mismatches(snippet: Snippet) -> list[str]:
    """The lines of an excerpt that its source file does not have (after stripping)."""
    assert snippet.title is not None
    match = EXCERPT.match(snippet.title)
    assert match is not None
    source = (ROOT / match["path"]).read_text(encoding="utf-8")
    have = {_code_of(line) for line in source.splitlines()}
    return [
        line
        for line in snippet.code.splitlines()
        if _code_of(line) not in have and _code_of(line) not in ("", "...", '"""')
    ]


def _code_of(line: str) -> str:
    """A line without its comment and its spacing: what an excerpt must keep."""
    text = line.strip()
    hash_at = text.find("#")
    while hash_at != -1:
        before = text[:hash_at]
        if before.count('"') % 2 == 0 and before.count("'") % 2 == 0:
            text = before
            break
        hash_at = text.find("#", hash_at + 1)
    return " ".join(text.split())

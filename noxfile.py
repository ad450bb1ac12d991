"""The one entry point for checks: ``nox -s tests lint typecheck docs build bench demo``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = os.environ.get("NOX_PYTHON", "3.11")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite on asyncio and trio (extra arguments go to pytest)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint rules (including the ASYNC rules) and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests, the benchmarks and the examples."""
    session.install("-e", ".[dev,bench]", "mypy>=1.10", "types-redis")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with --strict (Mermaid fetched once from the npm registry),
    then load every page in headless Chromium: no code block or table wider than its column,
    every diagram drawn; screenshots of the main pages in site-screenshots/."""
    session.install("-e", ".[dev,docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
    session.run("python", "docs/_ext/browser_check.py", "site", "--screenshots", "site-screenshots")


#: Run on the built wheel: it must hold the package (and its metadata) and nothing else.
_WHEEL_HOLDS_THE_PACKAGE_ONLY = """
import sys, zipfile
(wheel,) = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
tops = {name.split("/", 1)[0] for name in names}
others = {top for top in tops if top != "dashscope_async" and not top.endswith(".dist-info")}
assert not others, f"the wheel holds more than the package: {sorted(others)}"
assert "dashscope_async/py.typed" in names, "the wheel lacks py.typed"
print(f"{wheel}: {len(names)} files, dashscope_async only")
"""


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel into dist/ and check them: metadata (twine check --strict)
    and a wheel that holds the package alone."""
    session.install("build>=1.2", "twine>=5")
    shutil.rmtree("dist", ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", "dist")
    artefacts = sorted(str(path) for path in Path("dist").iterdir())
    session.run("twine", "check", "--strict", *artefacts)
    (wheel,) = (name for name in artefacts if name.endswith(".whl"))
    session.run("python", "-c", _WHEEL_HOLDS_THE_PACKAGE_ONLY, wheel)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmarks against the emulator; prints tables and writes plots."""
    session.install("-e", ".[dev,bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The demo: a mixed batch on the built-in emulator, results in ./dashscope-demo-output/."""
    session.install("-e", ".[cli]")
    session.run("dashscope-async", "demo", *session.posargs)

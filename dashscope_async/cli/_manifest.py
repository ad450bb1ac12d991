"""Batch manifests: a CSV or JSON Lines file of jobs, read and validated whole before any is sent.

One job per line (CSV: per row after the header). Columns / keys:

- ``kind`` (``repaint`` or ``sketch``) or ``model`` (the model's name); inferred from the
  inputs when both are missing;
- repaint: ``image``, and ``style`` (a preset's name or index) or ``style_ref`` (an image);
- sketch: ``sketch``, ``prompt``, and optionally ``style``, ``n``, ``sketch_weight`` (or
  ``weight``), ``sketch_extraction``, ``sketch_color`` (``[[R,G,B],...]`` or ``R,G,B;R,G,B``);
- ``input``: the image or sketch, whichever the kind takes;
- ``key``: an optional name for the job (unique), used for result files and the journal.

Relative paths are read relative to the manifest's folder. Owns parsing and validation (every
problem, each naming its line and field); reads local images to check them, sends nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from .._checks import check_text
from .._config import MODELS, SKETCH_TO_IMAGE, STYLE_REPAINT, ModelSpec
from .._errors import ValidationError
from .._files import image_fields, is_read_before_sending, load_local_image
from .._models import Request, SketchToImage, StyleRepaint

__all__ = ["ManifestJob", "ManifestProblem", "load_manifest", "parse_manifest"]

Kind = Literal["repaint", "sketch"]

_KIND_NAMES: Final[dict[str, Kind]] = {
    "repaint": "repaint",
    "style-repaint": "repaint",
    "style_repaint": "repaint",
    "sketch": "sketch",
    "sketch-to-image": "sketch",
    "sketch_to_image": "sketch",
}
_SPECS: Final[dict[Kind, ModelSpec]] = {"repaint": STYLE_REPAINT, "sketch": SKETCH_TO_IMAGE}
_FIELDS: Final = {
    "key",
    "kind",
    "model",
    "input",
    "image",
    "style",
    "style_ref",
    "sketch",
    "prompt",
    "n",
    "sketch_weight",
    "weight",
    "sketch_extraction",
    "sketch_color",
}
_ALLOWED: Final[dict[Kind, set[str]]] = {
    "repaint": {"key", "kind", "model", "input", "image", "style", "style_ref"},
    "sketch": {
        "key",
        "kind",
        "model",
        "input",
        "sketch",
        "prompt",
        "style",
        "n",
        "sketch_weight",
        "weight",
        "sketch_extraction",
        "sketch_color",
    },
}
_TRUE: Final = {"true", "yes", "1", "on"}
_FALSE: Final = {"false", "no", "0", "off"}


@attrs.frozen
class ManifestJob:
    """One valid job of a manifest.

    Attributes:
        line: the line it was read from (1-based; a CSV's header is line 1).
        request: the request.
        key: its key, when the manifest gave one.
    """

    line: int
    request: Request
    key: str | None = None

    @property
    def label(self) -> str:
        """How tables name the job: its key, else its line."""
        return self.key if self.key is not None else f"line {self.line}"


@attrs.frozen
class ManifestProblem:
    """One thing wrong with a manifest: where, which field, which rule."""

    line: int
    field: str
    rule: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.rule}"


class ManifestError(ValidationError):
    """A manifest with problems; ``problems`` lists every one."""

    def __init__(self, source: str, problems: list[ManifestProblem]) -> None:
        first = problems[0]
        super().__init__(f"{source}:{first.line}:{first.field}", first.rule)
        self.source = source
        self.problems = problems


#: The longest CSV field Python's reader takes (its default limit); nothing real comes near it.
CSV_FIELD_LIMIT: Final = csv.field_size_limit()


def _records(text: str, fmt: Literal["csv", "jsonl"]) -> Iterable[tuple[int, Any]]:
    """(line, record) pairs; a record that is not an object is yielded as is, to be refused,
    and a line that cannot be read at all as a ``ManifestProblem``."""
    if fmt == "csv":
        yield from _csv_records(text)
        return
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            yield number, json.loads(stripped, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            yield number, ManifestProblem(number, exc.key, "is given twice on this line")
        except json.JSONDecodeError as exc:
            yield (
                number,
                ManifestProblem(number, "json", f"not valid JSON ({exc.msg}, column {exc.colno})"),
            )
        except RecursionError:
            yield number, ManifestProblem(number, "json", "is nested too deeply")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys (compared as the manifest reads them) appear once each."""
    seen: set[str] = set()
    for name, _ in pairs:
        normal = name.strip().lower()
        if normal in seen:
            raise _DuplicateKey(normal)
        seen.add(normal)
    return dict(pairs)


def _csv_records(text: str) -> Iterable[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        yield 1, _csv_problem(text, 1, [], exc)
        return
    seen: set[str] = set()
    for name in header:
        normal = name.strip().lower()
        if normal and normal in seen:
            yield 1, ManifestProblem(1, normal, "is a column twice in the header")
            return
        seen.add(normal)
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line + 1, _csv_problem(text, line + 1, header, exc)
            return  # the reader cannot find its place again after this
        yield line + 1, row
        line = reader.line_num


def _csv_problem(text: str, line: int, header: Sequence[str], exc: csv.Error) -> ManifestProblem:
    """What a line the CSV reader gave up on is: most often a field over the size limit."""
    if "field larger than field limit" not in str(exc):
        return ManifestProblem(line, "csv", f"cannot be read as CSV ({exc})")
    lines = text.splitlines()
    raw = lines[line - 1] if 0 < line <= len(lines) else ""
    column = next((i for i, part in enumerate(raw.split(",")) if len(part) > CSV_FIELD_LIMIT), None)
    field = (
        header[column].strip().lower() or "(unnamed column)"
        if column is not None and column < len(header)
        else "csv"
    )
    return ManifestProblem(
        line,
        field,
        f"a field is longer than {CSV_FIELD_LIMIT:,} characters (128 KiB); no manifest field"
        " needs that much",
    )


def _format_of(path: Path, text: str) -> Literal["csv", "jsonl"]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _clean(record: Mapping[Any, Any]) -> dict[str, Any]:
    """Keys lower-cased and stripped; empty cells and nulls dropped."""
    cleaned: dict[str, Any] = {}
    for name, value in record.items():
        if name is None:  # a CSV row with more cells than the header has names
            cleaned[""] = value
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        cleaned[str(name).strip().lower()] = value.strip() if isinstance(value, str) else value
    return cleaned


def _kind(record: Mapping[str, Any]) -> Kind:
    kind_text = record.get("kind")
    model_text = record.get("model")
    kind: Kind | None = None
    if kind_text is not None:
        kind = _KIND_NAMES.get(str(kind_text).lower())
        if kind is None:
            raise ValidationError("kind", f"{kind_text!r} is not a kind; use repaint or sketch")
    if model_text is not None:
        spec = MODELS.get(str(model_text))
        if spec is None:
            known = ", ".join(sorted(MODELS))
            raise ValidationError("model", f"unknown model {model_text!r}; known: {known}")
        if kind is not None and spec.kind != kind:
            raise ValidationError("model", f"{model_text} is not a {kind} model")
        kind = spec.kind
    if kind is None:
        if "sketch" in record or "prompt" in record:
            return "sketch"
        if "image" in record or "style_ref" in record:
            return "repaint"
        raise ValidationError("kind", "say which job this is: kind (repaint or sketch) or model")
    return kind


def _text(field: str, value: Any) -> str:
    """A field that must be text: a number, list or object is refused, never stringified."""
    if not isinstance(value, str):
        kind = {dict: "an object", list: "a list", bool: "true/false"}.get(type(value), "a number")
        raise ValidationError(field, f"must be a string, not {kind} ({json.dumps(value)[:40]})")
    return check_text(field, value)


def _integer(field: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValidationError(field, f"must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise ValidationError(field, f"must be a whole number, not {value!r}") from None


def _boolean(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValidationError(field, f"must be true or false, not {value!r}")


def _colors(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValidationError("sketch_color", f"not a JSON list: {value!r}") from None
    try:
        return [[int(part) for part in color.split(",")] for color in text.split(";")]
    except ValueError:
        raise ValidationError(
            "sketch_color", f"write colours as R,G,B;R,G,B or [[R,G,B]], not {value!r}"
        ) from None


def _image(field: str, value: Any, base: Path) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a URL or a path, not {value!r}")
    if "://" in value[:16] or value.lower().startswith("data:"):
        return value
    path = Path(value).expanduser()
    return os.fspath(path if path.is_absolute() else base / path)


def _request(record: dict[str, Any], base: Path) -> Request:
    kind = _kind(record)
    unknown = sorted(set(record) - _ALLOWED[kind])
    if unknown:
        extra = unknown[0] or "(unnamed column)"
        primary = "image" if kind == "repaint" else "sketch"
        if extra in ("image", "sketch"):
            hint = f"; a {kind} job's input is {primary!r} (or 'input')"
        elif extra in _FIELDS:
            hint = ""
        else:
            hint = f"; known fields: {', '.join(sorted(_ALLOWED[kind]))}"
        raise ValidationError(extra, f"not a field of a {kind} job{hint}")
    primary = "image" if kind == "repaint" else "sketch"
    if "input" in record and primary in record:
        raise ValidationError("input", f"give input or {primary}, not both")
    source = record.get(primary, record.get("input"))
    if source is None:
        raise ValidationError(primary, "missing")
    image = _image(primary, source, base)
    if kind == "repaint":
        style_ref = record.get("style_ref")
        return StyleRepaint(
            image,
            style=record.get("style"),
            style_ref=None if style_ref is None else _image("style_ref", style_ref, base),
        )
    if "weight" in record and "sketch_weight" in record:
        raise ValidationError("weight", "give weight or sketch_weight, not both")
    options: dict[str, Any] = {}
    if "n" in record:
        options["n"] = _integer("n", record["n"])
    weight = record.get("sketch_weight", record.get("weight"))
    if weight is not None:
        options["sketch_weight"] = _integer("sketch_weight", weight)
    if "sketch_extraction" in record:
        options["sketch_extraction"] = _boolean("sketch_extraction", record["sketch_extraction"])
    if "sketch_color" in record:
        options["sketch_color"] = _colors(record["sketch_color"])
    if "style" in record:
        options["style"] = record["style"]
    if "prompt" not in record:
        raise ValidationError("prompt", "missing: a sketch job needs a prompt")
    return SketchToImage(image, prompt=_text("prompt", record["prompt"]), **options)


def check_local_files(request: Request) -> None:
    """Read and check each local input (a path, a ``file://`` URL, bytes or a ``data:`` URI)
    against its model's rules, as a submit would (blocks: file I/O)."""
    for field, value in image_fields(request).items():
        if is_read_before_sending(value):
            load_local_image(field, value, request.spec.image_rules, model=request.model)


def parse_manifest(
    text: str,
    *,
    base: Path,
    fmt: Literal["csv", "jsonl"],
    check_files: bool = True,
) -> tuple[list[ManifestJob], list[ManifestProblem]]:
    """Every job of a manifest's text, and every problem found (each naming line and field).

    Blocks (reads the local images when ``check_files``); call it in a worker thread.

    Example:
        ```python
        jobs, problems = parse_manifest(
            '{"kind": "repaint", "image": "https://example.com/a.png", "style": "anime"}\\n',
            base=Path("."), fmt="jsonl",
        )
        assert not problems and jobs[0].line == 1
        ```
    """
    jobs: list[ManifestJob] = []
    problems: list[ManifestProblem] = []
    keys: dict[str, int] = {}
    for line, raw in _records(text, fmt):
        if isinstance(raw, ManifestProblem):
            problems.append(raw)
            continue
        if not isinstance(raw, Mapping):
            problems.append(ManifestProblem(line, "json", "each line must be a JSON object"))
            continue
        record = _clean(raw)
        key = record.get("key")
        try:
            if key is not None:
                key = _text("key", key)
                if key in keys:
                    raise ValidationError("key", f"{key!r} is already used on line {keys[key]}")
                keys[key] = line
            request = _request(record, base)
            if check_files:
                check_local_files(request)
        except ValidationError as exc:
            problems.append(ManifestProblem(line, exc.field, exc.rule))
            continue
        jobs.append(ManifestJob(line=line, request=request, key=key))
    if not jobs and not problems:
        problems.append(ManifestProblem(1, "manifest", "has no jobs"))
    return jobs, problems


def load_manifest(path: str | os.PathLike[str], *, check_files: bool = True) -> list[ManifestJob]:
    """Read and validate a manifest file. Blocks; call it in a worker thread.

    Raises:
        ManifestError: anything wrong (``problems`` lists all of it).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValidationError(os.fspath(path), "no such manifest file") from None
    except UnicodeDecodeError:
        raise ValidationError(os.fspath(path), "is not UTF-8 text") from None
    except OSError as exc:
        raise ValidationError(os.fspath(path), f"cannot be read ({exc.strerror})") from None
    jobs, problems = parse_manifest(
        text, base=file.resolve().parent, fmt=_format_of(file, text), check_files=check_files
    )
    if problems:
        raise ManifestError(os.fspath(path), problems)
    return jobs

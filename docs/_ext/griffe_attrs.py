"""A griffe extension that gives attrs classes their ``__init__`` signature in the API pages.

attrs writes ``__init__`` at import time, so griffe's static analysis sees no parameters and the
reference would show ``StyleRepaint()``. This rebuilds the signature from the annotated fields,
as griffe's own dataclasses extension does for ``@dataclass``. Documentation build only.
"""

from __future__ import annotations

from typing import Any

import griffe

_ATTRS_DECORATORS = frozenset(
    {
        "attrs.define",
        "attrs.frozen",
        "attrs.mutable",
        "attr.s",
        "attr.attrs",
        "attr.define",
        "attr.frozen",
        "attr.mutable",
    }
)
_FIELD_FUNCTIONS = frozenset({"attrs.field", "attr.ib", "attr.attrib", "attr.field"})


def _call_arguments(expr: object) -> dict[str, Any]:
    if not isinstance(expr, griffe.ExprCall):
        return {}
    return {
        argument.name: argument.value
        for argument in expr.arguments
        if isinstance(argument, griffe.ExprKeyword)
    }


def _attrs_decorator(cls: griffe.Class) -> griffe.Expr | str | None:
    for decorator in cls.decorators:
        value = decorator.value
        path = value.function.canonical_path if isinstance(value, griffe.ExprCall) else None
        if path is None and isinstance(value, griffe.Expr):
            path = value.canonical_path
        if path in _ATTRS_DECORATORS:
            return value
    return None


def _own_parameters(cls: griffe.Class, class_kw_only: bool) -> list[griffe.Parameter]:
    parameters: list[griffe.Parameter] = []
    for member in cls.members.values():
        if member.is_alias or not isinstance(member, griffe.Attribute):
            continue
        if member.annotation is None or "property" in member.labels:
            continue
        if "class-attribute" in member.labels and "instance-attribute" not in member.labels:
            continue  # ClassVar
        value = member.value
        options: dict[str, Any] = {}
        if isinstance(value, griffe.ExprCall) and value.function.canonical_path in _FIELD_FUNCTIONS:
            options = _call_arguments(value)
        elif value is not None:
            options = {"default": value}
        if str(options.get("init")) == "False":
            continue
        if "factory" in options:
            default: str | griffe.Expr | None = f"{options['factory']}()"
            if str(options["factory"]).startswith("lambda"):
                default = "..."
        else:
            default = options.get("default")
        kw_only = class_kw_only or str(options.get("kw_only")) == "True"
        name = str(options["alias"]).strip("'\"") if "alias" in options else member.name.lstrip("_")
        parameters.append(
            griffe.Parameter(
                name,
                annotation=member.annotation,
                kind=griffe.ParameterKind.keyword_only
                if kw_only
                else griffe.ParameterKind.positional_or_keyword,
                default=default,
                docstring=member.docstring,
            )
        )
    return parameters


def _set_init(cls: griffe.Class) -> None:
    decorator = _attrs_decorator(cls)
    if decorator is None or "__init__" in cls.members:
        return
    collected: dict[str, griffe.Parameter] = {}
    try:
        lineage = [*reversed(cls.mro()), cls]
    except ValueError:
        lineage = [cls]
    for ancestor in lineage:
        ancestor_decorator = _attrs_decorator(ancestor)
        if ancestor_decorator is None:
            continue
        kw_only = str(_call_arguments(ancestor_decorator).get("kw_only")) == "True"
        for parameter in _own_parameters(ancestor, kw_only):
            collected[parameter.name] = parameter
    positional = [p for p in collected.values() if p.kind is not griffe.ParameterKind.keyword_only]
    keyword = [p for p in collected.values() if p.kind is griffe.ParameterKind.keyword_only]
    self_parameter = griffe.Parameter(
        "self", kind=griffe.ParameterKind.positional_or_keyword, annotation=None
    )
    cls.set_member(
        "__init__",
        griffe.Function(
            "__init__",
            lineno=0,
            endlineno=0,
            parent=cls,
            parameters=griffe.Parameters(self_parameter, *positional, *keyword),
            returns="None",
        ),
    )


def _walk(obj: griffe.Module | griffe.Class, seen: set[str]) -> None:
    if obj.canonical_path in seen:
        return
    seen.add(obj.canonical_path)
    if isinstance(obj, griffe.Class):
        _set_init(obj)
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Module | griffe.Class):
            _walk(member, seen)


class AttrsInitExtension(griffe.Extension):
    """Rebuild ``__init__`` for every attrs class of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _walk(pkg, set())

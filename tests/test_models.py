"""The request models' validation rules (each names its field), style parsing and task types."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dashscope_async as ds
from dashscope_async._models import PROMPT_SOFT_LIMIT, TaskStatus

URL = "https://example.com/a.png"

# --- StyleRepaint -------------------------------------------------------------------------------


def test_repaint_with_a_preset() -> None:
    request = ds.StyleRepaint(URL, style=ds.RepaintStyle.ANIME)
    assert request.style_index == 2
    assert request.model == "wanx-style-repaint-v1"
    assert request.images_requested == 1


def test_repaint_with_a_reference_style_is_index_minus_one() -> None:
    request = ds.StyleRepaint(URL, style_ref="https://example.com/ref.png")
    assert request.style is None
    assert request.style_index == -1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "style"),
        ({"style": 2, "style_ref": URL}, "style_ref"),
        ({"style": -1}, "style"),
        ({"style": 11}, "style"),
        ({"style": "nope"}, "style"),
        ({"style": True}, "style"),
        ({"style": 2, "image": ""}, "image"),
        ({"style": 2, "image": "   "}, "image"),
        ({"style": 2, "image": b""}, "image"),
        ({"style": 2, "image": 42}, "image"),
        ({"style": 2, "image": "ftp://example.com/a.png"}, "image"),
        ({"style": 2, "image": "https://example.com/a b.png"}, "image"),
        ({"style": 2, "image": "https://example.com/图片.png"}, "image"),
        ({"style": 2, "image": "https:///a.png"}, "image"),
        ({"style": 2, "image": "data:image/png,abc"}, "image"),
        ({"style_ref": "s3://bucket/x.png"}, "style_ref"),
    ],
)
def test_repaint_rules(options: dict[str, Any], field: str) -> None:
    options.setdefault("image", URL)
    image = options.pop("image")
    with pytest.raises(ds.ValidationError) as caught:
        ds.StyleRepaint(image, **options)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "image",
    [
        URL,
        "http://example.com/a.png",
        "oss://dashscope-instant/abc/a.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "photos/me.jpg",
        Path("photos/me.jpg"),
        b"\x89PNG",
    ],
)
def test_repaint_accepts_every_input_form(image: Any) -> None:
    assert ds.StyleRepaint(image, style=0).image == image


def test_sketch_refuses_data_uris() -> None:
    with pytest.raises(ds.ValidationError) as caught:
        ds.SketchToImage("data:image/png;base64,AAAA", prompt="tree")
    assert caught.value.field == "sketch"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, ds.RepaintStyle.ANIME),
        ("2", ds.RepaintStyle.ANIME),
        ("anime", ds.RepaintStyle.ANIME),
        ("ANIME", ds.RepaintStyle.ANIME),
        ("anime-world", ds.RepaintStyle.ANIME_WORLD),
        ("clay world", ds.RepaintStyle.CLAY_WORLD),
        (" 40 ", ds.RepaintStyle.BADGE_WORLD),
    ],
)
def test_repaint_style_parsing(value: str | int, expected: ds.RepaintStyle) -> None:
    assert ds.RepaintStyle.parse(value) is expected
    assert ds.StyleRepaint(URL, style=value).style is expected


def test_repaint_styles_are_the_documented_indices() -> None:
    assert sorted(int(s) for s in ds.RepaintStyle) == [*range(10), 14, 15, *range(30, 41)]


# --- SketchToImage ------------------------------------------------------------------------------


def test_sketch_defaults() -> None:
    request = ds.SketchToImage(URL, prompt="a tree")
    assert (request.n, request.style, request.sketch_weight) == (1, ds.SketchStyle.AUTO, 10)
    assert (request.sketch_extraction, request.sketch_color, request.size) == (False, (), "768*768")
    assert request.images_requested == 1
    assert request.model == "wanx-sketch-to-image-lite"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"n": 0}, "n"),
        ({"n": 5}, "n"),
        ({"n": 2.0}, "n"),
        ({"n": True}, "n"),
        ({"sketch_weight": -1}, "sketch_weight"),
        ({"sketch_weight": 11}, "sketch_weight"),
        ({"sketch_weight": 5.5}, "sketch_weight"),
        ({"sketch_extraction": 1}, "sketch_extraction"),
        ({"sketch_color": "red"}, "sketch_color"),
        ({"sketch_color": 7}, "sketch_color"),
        ({"sketch_color": [(0, 0)]}, "sketch_color[0]"),
        ({"sketch_color": [(0, 0, 0), (0, 0, 256)]}, "sketch_color[1]"),
        ({"sketch_color": [(0, -1, 0)]}, "sketch_color[0]"),
        ({"sketch_color": [(0, True, 0)]}, "sketch_color[0]"),
        ({"sketch_color": ["abc"]}, "sketch_color[0]"),
        ({"size": "1024*1024"}, "size"),
        ({"style": "nope"}, "style"),
        ({"style": 3}, "style"),
        ({"sketch": ""}, "sketch"),
    ],
)
def test_sketch_rules(options: dict[str, Any], field: str) -> None:
    options.setdefault("prompt", "a tree")
    sketch = options.pop("sketch", URL)
    with pytest.raises(ds.ValidationError) as caught:
        ds.SketchToImage(sketch, **options)
    assert caught.value.field == field


def test_sketch_colours_become_tuples() -> None:
    request = ds.SketchToImage(URL, prompt="t", sketch_color=[[134, 134, 134], [0, 0, 0]])
    assert request.sketch_color == ((134, 134, 134), (0, 0, 0))


def test_a_long_prompt_warns_but_is_allowed() -> None:
    with pytest.warns(ds.PromptTruncatedWarning, match="75"):
        request = ds.SketchToImage(URL, prompt="x" * (PROMPT_SOFT_LIMIT + 1))
    assert len(request.prompt) == PROMPT_SOFT_LIMIT + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.SketchToImage(URL, prompt="x" * PROMPT_SOFT_LIMIT)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<anime>", ds.SketchStyle.ANIME),
        ("anime", ds.SketchStyle.ANIME),
        ("oil-painting", ds.SketchStyle.OIL_PAINTING),
        ("Oil Painting", ds.SketchStyle.OIL_PAINTING),
        ("3d cartoon", ds.SketchStyle.CARTOON_3D),
        ("<3d cartoon>", ds.SketchStyle.CARTOON_3D),
        ("<WATERCOLOR>", ds.SketchStyle.WATERCOLOR),
    ],
)
def test_sketch_style_parsing(value: str, expected: ds.SketchStyle) -> None:
    assert ds.SketchStyle.parse(value) is expected
    assert ds.SketchToImage(URL, prompt="t", style=value).style is expected


@given(
    n=st.integers(1, 4),
    weight=st.integers(0, 10),
    colors=st.lists(st.tuples(*[st.integers(0, 255)] * 3), max_size=4),
    extraction=st.booleans(),
    style=st.sampled_from(list(ds.SketchStyle)),
)
def test_every_valid_sketch_builds(
    n: int, weight: int, colors: list[tuple[int, int, int]], extraction: bool, style: Any
) -> None:
    request = ds.SketchToImage(
        URL,
        prompt="p",
        n=n,
        sketch_weight=weight,
        sketch_color=colors,
        sketch_extraction=extraction,
        style=style,
    )
    assert request.sketch_color == tuple(colors)
    assert request.images_requested == n


@given(n=st.integers().filter(lambda v: not 1 <= v <= 4))
def test_every_invalid_n_is_refused(n: int) -> None:
    with pytest.raises(ds.ValidationError):
        ds.SketchToImage(URL, prompt="p", n=n)


def test_requests_are_frozen_values() -> None:
    request = ds.SketchToImage(URL, prompt="p")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.n = 3  # type: ignore[misc]
    assert request == ds.SketchToImage(URL, prompt="p")
    assert hash(request) == hash(ds.SketchToImage(URL, prompt="p"))


# --- tasks and results --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (TaskStatus.PENDING, False),
        (TaskStatus.RUNNING, False),
        (TaskStatus.SUSPENDED, False),
        (TaskStatus.SUCCEEDED, True),
        (TaskStatus.FAILED, True),
        (TaskStatus.CANCELED, True),
        (TaskStatus.UNKNOWN, True),
        (TaskStatus.UNRECOGNIZED, True),
    ],
)
def test_terminal_statuses(status: TaskStatus, terminal: bool) -> None:
    assert status.is_terminal is terminal


@given(st.text().filter(lambda t: t not in {s.value for s in TaskStatus}))
def test_an_unknown_status_is_unrecognized(text: str) -> None:
    assert TaskStatus(text) is TaskStatus.UNRECOGNIZED


def test_run_seconds_and_partial() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    result = ds.TaskResult(
        task_id="t",
        status=TaskStatus.SUCCEEDED,
        scheduled_time=start,
        end_time=start + timedelta(seconds=15),
        images=(ds.GeneratedImage(url=URL),),
        failures=(ds.ImageFailure(index=1, code="DataInspectionFailed"),),
    )
    assert result.run_seconds == 15
    assert result.partial
    assert ds.TaskInfo(task_id="t", status=TaskStatus.RUNNING).run_seconds is None
    assert not ds.TaskResult(task_id="t", status=TaskStatus.SUCCEEDED).partial


def test_extra_fields_stay_out_of_repr_and_equality() -> None:
    one = ds.TaskInfo(task_id="t", status=TaskStatus.RUNNING, extra={"secret_ish": 1})
    two = ds.TaskInfo(task_id="t", status=TaskStatus.RUNNING)
    assert one == two
    assert "secret_ish" not in repr(one)

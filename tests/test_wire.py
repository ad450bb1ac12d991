"""The wire converter: request bodies, every answer shape both ways, times, strictness."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dashscope_async as ds
from dashscope_async import _wire
from dashscope_async._models import TaskStatus

URL = "https://example.com/a.png"

# --- request bodies -----------------------------------------------------------------------------


def test_repaint_body_has_no_parameters() -> None:
    body = _wire.submit_body(ds.StyleRepaint(URL, style=ds.RepaintStyle.CLAY_WORLD))
    assert body == {
        "model": "wanx-style-repaint-v1",
        "input": {"image_url": URL, "style_index": 31},
    }


def test_repaint_body_with_a_reference_style() -> None:
    body = _wire.submit_body(ds.StyleRepaint(URL, style_ref="https://example.com/ref.png"))
    assert body["input"] == {
        "image_url": URL,
        "style_index": -1,
        "style_ref_url": "https://example.com/ref.png",
    }


def test_sketch_body_sends_every_parameter() -> None:
    request = ds.SketchToImage(
        URL,
        prompt="a tree",
        n=3,
        style=ds.SketchStyle.WATERCOLOR,
        sketch_weight=4,
        sketch_color=[(1, 2, 3)],
    )
    assert _wire.submit_body(request) == {
        "model": "wanx-sketch-to-image-lite",
        "input": {"sketch_image_url": URL, "prompt": "a tree"},
        "parameters": {
            "style": "<watercolor>",
            "size": "768*768",
            "n": 3,
            "sketch_weight": 4,
            "sketch_extraction": False,
            "sketch_color": [[1, 2, 3]],
        },
    }


def test_resolved_urls_replace_local_inputs() -> None:
    request = ds.StyleRepaint(b"\x89PNG", style_ref="ref.png")
    body = _wire.submit_body(request, {"image": "oss://a/1.png", "style_ref": "oss://a/2.png"})
    assert body["input"]["image_url"] == "oss://a/1.png"
    assert body["input"]["style_ref_url"] == "oss://a/2.png"
    with pytest.raises(ValueError, match="image"):
        _wire.submit_body(request)


def _shows_something(text: str) -> bool:
    """A prompt the service can read: some character that is not blank or zero-width."""
    return any(
        not char.isspace() and unicodedata.category(char) not in ("Zs", "Zl", "Zp", "Cf")
        for char in text
    )


@given(
    n=st.integers(1, 4),
    weight=st.integers(0, 10),
    colors=st.lists(st.tuples(*[st.integers(0, 255)] * 3), max_size=3),
    style=st.sampled_from(list(ds.SketchStyle)),
    prompt=st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=75).filter(
        _shows_something
    ),
)
def test_sketch_body_round_trips(
    n: int, weight: int, colors: list[tuple[int, int, int]], style: ds.SketchStyle, prompt: str
) -> None:
    request = ds.SketchToImage(
        URL, prompt=prompt, n=n, sketch_weight=weight, sketch_color=colors, style=style
    )
    body = _wire.submit_body(request)
    parsed = _wire.load(body, _wire.SketchBody, what="body")
    assert parsed.parameters.n == n
    assert parsed.parameters.sketch_color == [list(c) for c in colors]
    assert parsed.input.prompt == prompt
    assert _wire.dump(parsed) == body


@given(style=st.sampled_from(list(ds.RepaintStyle)))
def test_repaint_body_round_trips(style: ds.RepaintStyle) -> None:
    body = _wire.submit_body(ds.StyleRepaint(URL, style=style))
    parsed = _wire.load(body, _wire.RepaintBody, what="body")
    assert parsed.input.style_index == int(style)
    assert _wire.dump(parsed) == body


def test_a_sketch_body_without_parameters_reads_as_the_service_would() -> None:
    body = {"model": "wanx-sketch-to-image-lite", "input": {"sketch_image_url": URL, "prompt": "t"}}
    parsed = _wire.load(body, _wire.SketchBody, what="body")
    assert parsed.parameters.n == 4  # the service's default, which is why we always send n


# --- answers ------------------------------------------------------------------------------------

SUCCESS = {
    "request_id": "req-1",
    "output": {
        "task_id": "t-1",
        "task_status": "SUCCEEDED",
        "submit_time": "2023-12-20 21:36:31.896",
        "scheduled_time": "2023-12-20 21:36:32.001",
        "end_time": "2023-12-20 21:36:58.5",
        "results": [
            {"url": "https://result.test/1.png"},
            {"code": "InternalError.Timeout", "message": "timeout"},
        ],
        "task_metrics": {"TOTAL": 2, "SUCCEEDED": 1, "FAILED": 1},
        "brand_new_field": {"x": 1},
    },
    "usage": {"image_count": 1},
}


def test_task_answer_to_result() -> None:
    info = _wire.task_info_from_wire(SUCCESS)
    assert isinstance(info, ds.TaskResult)
    assert info.partial
    assert info.images == (ds.GeneratedImage(url="https://result.test/1.png", index=0),)
    assert info.failures == (
        ds.ImageFailure(index=1, code="InternalError.Timeout", message="timeout"),
    )
    assert info.metrics == ds.TaskMetrics(total=2, succeeded=1, failed=1)
    assert info.usage == ds.Usage(image_count=1)
    assert info.request_id == "req-1"
    assert info.submit_time == datetime(2023, 12, 20, 13, 36, 31, 896000, tzinfo=UTC)
    assert info.end_time == datetime(2023, 12, 20, 13, 36, 58, 500000, tzinfo=UTC)
    assert info.extra == {"brand_new_field": {"x": 1}}


def test_repaint_extras_are_kept_and_start_time_stands_in_for_scheduled() -> None:
    answer = {
        "output": {
            "task_id": "t",
            "task_status": "FAILED",
            "start_time": "2024-01-01 00:00:00",
            "style_index": 3,
            "error_code": 0,
            "error_message": "Success",
            "code": "InvalidImageResolution",
            "message": "The input image resolution is too large or small",
        },
        "usage": {"image_count": 0},
    }
    info = _wire.task_info_from_wire(answer)
    assert type(info) is ds.TaskInfo
    assert info.code == "InvalidImageResolution"
    assert info.scheduled_time == datetime(2023, 12, 31, 16, 0, tzinfo=UTC)
    assert info.extra == {"style_index": 3, "error_code": 0, "error_message": "Success"}


@pytest.mark.parametrize("status", ["PENDING", "RUNNING", "CANCELED", "UNKNOWN", "FAILED"])
def test_statuses_other_than_success_are_task_info(status: str) -> None:
    info = _wire.task_info_from_wire({"output": {"task_id": "t", "task_status": status}})
    assert type(info) is ds.TaskInfo
    assert info.status is TaskStatus(status)


def test_an_unknown_status_is_unrecognized_not_an_error() -> None:
    info = _wire.task_info_from_wire({"output": {"task_id": "t", "task_status": "ARCHIVED"}})
    assert info.status is TaskStatus.UNRECOGNIZED
    assert info.status.is_terminal


def test_submit_answer() -> None:
    task = _wire.task_from_submit(
        {"output": {"task_id": "t", "task_status": "PENDING"}, "request_id": "r", "x": 1},
        model="m",
    )
    assert task == ds.Task(task_id="t", status=TaskStatus.PENDING, model="m", request_id="r")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"output": {"task_id": ""}}, "$.output.task_id"),
        ({"output": {}}, "$.output.task_id"),
        ({"output": {"task_id": 17}}, "$.output.task_id"),
        ({"output": "t"}, "$.output"),
        ([], None),
    ],
)
def test_malformed_submit_answers_name_the_field(data: Any, field: str | None) -> None:
    with pytest.raises(ds.ResponseValidationError) as caught:
        _wire.task_from_submit(data, model="m")
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"output": {"task_status": "RUNNING"}}, "$.output.task_id"),
        ({"output": {"task_id": "t", "task_status": 1}}, "$.output.task_status"),
        ({"output": {"task_id": "t", "task_status": "S", "results": "x"}}, "$.output.results"),
        ({"output": {"task_id": "t", "task_status": "S", "results": ["x"]}}, "$.output.results[0]"),
        (
            {"output": {"task_id": "t", "task_status": "S", "results": [{"url": 1}]}},
            "$.output.results[0].url",
        ),
        (
            {"output": {"task_id": "t", "task_status": "S", "task_metrics": {"TOTAL": True}}},
            "$.output.task_metrics.TOTAL",
        ),
        (
            {"output": {"task_id": "t", "task_status": "S"}, "usage": {"image_count": "1"}},
            "$.usage.image_count",
        ),
    ],
)
def test_malformed_task_answers_name_the_field(data: Any, field: str) -> None:
    with pytest.raises(ds.ResponseValidationError) as caught:
        _wire.task_info_from_wire(data)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_a_bad_time_is_a_response_error() -> None:
    with pytest.raises(ds.ResponseValidationError):
        _wire.task_info_from_wire(
            {"output": {"task_id": "t", "task_status": "RUNNING", "submit_time": "yesterday"}}
        )


LIST_PAGE: dict[str, Any] = {
    "request_id": "r",
    "total": 1,
    "total_page": 1,
    "page_no": 1,
    "page_size": 10,
    "data": [
        {
            "api_key_id": "k-1",
            "caller_parent_id": "p",
            "caller_uid": "u",
            "gmt_create": 1_703_079_391_896,
            "start_time": 1_703_079_392_000,
            "end_time": None,
            "region": "cn-beijing",
            "request_id": "req-0",
            "status": "RUNNING",
            "task_id": "t-1",
            "model_name": "wanx-style-repaint-v1",
            "user_api_unique_key": "apikey:v1:aigc:image-generation:generation:wanx-style-repaint-v1",
        }
    ],
}


def test_task_list_items() -> None:
    page = _wire.load(LIST_PAGE, _wire.TaskListWire, what="task list")
    (item,) = [_wire.task_list_item_from_wire(entry) for entry in page.data]
    assert item.task_id == "t-1"
    assert item.status is TaskStatus.RUNNING
    assert item.model == "wanx-style-repaint-v1"
    assert item.created == datetime(2023, 12, 20, 13, 36, 31, 896000, tzinfo=UTC)
    assert item.end_time is None
    assert item.api_key_id == "k-1"
    assert item.extra == {
        "caller_parent_id": "p",
        "caller_uid": "u",
        "region": "cn-beijing",
        "user_api_unique_key": "apikey:v1:aigc:image-generation:generation:wanx-style-repaint-v1",
    }


def test_task_list_round_trips() -> None:
    page = _wire.load(LIST_PAGE, _wire.TaskListWire, what="task list")
    dumped = _wire.dump(page)
    expected = {
        **LIST_PAGE,
        "data": [{k: v for k, v in LIST_PAGE["data"][0].items() if v is not None}],
    }
    assert dumped == expected


def test_an_empty_list_page() -> None:
    page = _wire.load({"request_id": "r"}, _wire.TaskListWire, what="task list")
    assert page.data == [] and page.total_page == 0


def test_upload_policy_and_error_shapes() -> None:
    policy = {
        "policy": "p",
        "signature": "s",
        "upload_dir": "dashscope-instant/abc",
        "upload_host": "https://dashscope-file.oss-cn-beijing.aliyuncs.com",
        "expire_in_seconds": 300,
        "max_file_size_mb": 100,
        "capacity_limit_mb": 999,
        "oss_access_key_id": "id",
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    }
    answer = {"request_id": "r", "data": policy}
    parsed = _wire.load(answer, _wire.UploadPolicyResponseWire, what="policy")
    assert _wire.dump(parsed) == answer
    with pytest.raises(ds.ResponseValidationError) as caught:
        _wire.load(
            {"data": {**policy, "upload_host": None}}, _wire.UploadPolicyResponseWire, what="p"
        )
    assert caught.value.field == "$.data.upload_host"
    error = _wire.load(
        {"code": "X", "message": "m", "request_id": "r", "more": 1}, _wire.ErrorWire, what="e"
    )
    assert error == _wire.ErrorWire(code="X", message="m", request_id="r")


# hypothesis: every task answer built from valid parts round-trips through the wire shape.
_text = st.text(min_size=1, max_size=20)
_result_items = st.lists(
    st.one_of(
        st.builds(_wire.ResultItemWire, url=_text),
        st.builds(_wire.ResultItemWire, code=_text, message=_text),
    ),
    max_size=4,
)


@given(
    task_id=_text,
    status=st.sampled_from([s.value for s in TaskStatus if s is not TaskStatus.UNRECOGNIZED]),
    results=_result_items,
    counts=st.tuples(*[st.integers(0, 4)] * 3),
)
def test_task_answers_round_trip(
    task_id: str, status: str, results: list[_wire.ResultItemWire], counts: tuple[int, int, int]
) -> None:
    wire = _wire.TaskResponseWire(
        output=_wire.TaskOutputWire(
            task_id=task_id,
            task_status=status,
            results=results,
            task_metrics=_wire.TaskMetricsWire(*counts),
        ),
        request_id="r",
        usage=_wire.UsageWire(image_count=counts[1]),
    )
    data = _wire.dump(wire)
    assert _wire.load(data, _wire.TaskResponseWire, what="task") == wire
    info = _wire.task_info_from_wire(data)
    assert len(info.images) + len(info.failures) == len(results)
    assert [image.index for image in info.images] == [i for i, r in enumerate(results) if r.url]


# --- times --------------------------------------------------------------------------------------


def test_china_time_parsing() -> None:
    parsed = _wire.parse_service_time("2023-12-20 21:36:31.896")
    assert parsed == datetime(2023, 12, 20, 13, 36, 31, 896000, tzinfo=UTC)
    assert parsed is not None and parsed.utcoffset() == timedelta(hours=8)
    assert _wire.parse_service_time("2023-12-20 21:36:31") == datetime(
        2023, 12, 20, 13, 36, 31, tzinfo=UTC
    )
    assert _wire.parse_service_time(None) is None
    assert _wire.parse_service_time("") is None


def test_list_times_are_china_time() -> None:
    moment = datetime(2026, 3, 1, 20, 30, 5, tzinfo=UTC)
    assert _wire.format_list_time(moment) == "20260302043005"
    assert _wire.parse_list_time("20260302043005") == moment


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    )
)
def test_service_time_round_trips_to_the_millisecond(moment: datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert _wire.parse_service_time(_wire.format_service_time(moment)) == moment


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    )
)
def test_list_time_round_trips_to_the_second(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    assert _wire.parse_list_time(_wire.format_list_time(moment)) == moment


@given(st.integers(0, 4_102_444_800_000))
def test_epoch_milliseconds_round_trip(millis: int) -> None:
    moment = _wire.from_epoch_ms(millis)
    assert moment is not None and moment.tzinfo is not None
    assert _wire.to_epoch_ms(moment) == millis

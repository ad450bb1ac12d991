"""One set of number rules for every setting and every numeric call argument.

Each field below is declared with its documented rule (a number or a whole number; its bounds;
whether None is allowed), and every field meets the same hostile values: a string, a bool,
None, a list, NaN, infinities, a negative, zero, a float where a whole number belongs, huge
values. A wrong type is ``ds.InputTypeError`` (a ``ValidationError`` and a ``TypeError``), a
wrong value a plain ``ds.ValidationError``; both name the field, and a client call refuses
before any request (the emulator's records say so). A hypothesis test then draws any float for
every number field and checks the same verdicts.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dashscope_async as ds
from dashscope_async._retry import RetryPolicy
from dashscope_async.testing import Emulator

REPAINT = ds.STYLE_REPAINT.name
URL = "https://example.com/portrait.png"


@attrs.frozen
class Context:
    emulator: Emulator
    client: ds.AsyncDashScope


Act = Callable[[Context, object], Awaitable[object]]


@attrs.frozen
class Field:
    """A field and its rule, as the docs state it; set to a value by ``make`` (a settings type
    or request built) or by ``act`` (a client or runner call)."""

    name: str
    make: Callable[[object], object] | None = None
    act: Act | None = None
    whole: bool = False
    at_least: float | None = None
    more_than: float | None = None
    at_most: float | None = None
    less_than: float | None = None
    optional: bool = False

    @property
    def call(self) -> bool:
        """A client or runner call: only refused values are tried (an accepted one would send
        a request, or start a runner)."""
        return self.act is not None

    async def apply(self, ctx: Context, value: object) -> object:
        if self.make is not None:
            return self.make(value)
        assert self.act is not None
        return await self.act(ctx, value)

    def accepts(self, value: object) -> bool | type[Exception]:
        """True, or the error class the rule raises for ``value``."""
        if value is None and self.optional:
            return True
        if isinstance(value, bool) or not isinstance(value, int | float):
            return ds.InputTypeError
        if self.whole and not isinstance(value, int):
            return ds.InputTypeError
        if self.whole:  # an int is exact, however large
            return self._within(value)
        try:
            number = float(value)
        except OverflowError:
            return ds.ValidationError  # a float cannot hold it
        if not math.isfinite(number):
            return ds.ValidationError
        return self._within(number)

    def _within(self, number: float) -> bool | type[Exception]:
        if (
            (self.at_least is not None and number < self.at_least)
            or (self.more_than is not None and number <= self.more_than)
            or (self.at_most is not None and number > self.at_most)
            or (self.less_than is not None and number >= self.less_than)
        ):
            return ds.ValidationError
        return True


def setting(name: str, make: Callable[[Any], object], **rule: Any) -> Field:
    return Field(name, make=make, **rule)


def call(name: str, act: Act, **rule: Any) -> Field:
    return Field(name, act=act, **rule)


POSITIVE: dict[str, Any] = {"more_than": 0}
NON_NEGATIVE: dict[str, Any] = {"at_least": 0}
WHOLE_NON_NEGATIVE: dict[str, Any] = {"whole": True, "at_least": 0}
WHOLE_POSITIVE: dict[str, Any] = {"whole": True, "at_least": 1}


def _runner_option(name: str) -> Act:
    async def apply(ctx: Context, value: Any) -> object:
        return ds.AsyncTaskRunner(ctx.client, **{name: value})

    return apply


def _client_option(name: str) -> Act:
    async def apply(ctx: Context, value: object) -> object:
        return ctx.emulator.client(**{name: value})

    return apply


async def _map_max_pending(ctx: Context, value: object) -> object:
    runner = ds.AsyncTaskRunner(ctx.client)
    await runner.__aenter__()
    try:  # map's own refusal, not wrapped by the runner's task group on the way out
        return runner.map([], max_pending=value)  # type: ignore[arg-type]
    finally:
        await runner.__aexit__(None, None, None)


async def _wait(ctx: Context, **options: object) -> object:
    return await ctx.client.wait("task-1", **options)  # type: ignore[arg-type]


async def _wait_timeout(ctx: Context, value: object) -> object:
    return await _wait(ctx, timeout=value)


async def _wait_poll_interval(ctx: Context, value: object) -> object:
    return await _wait(ctx, poll_interval=value)


async def _generate_timeout(ctx: Context, value: object) -> object:
    request = ds.StyleRepaint(URL, style=ds.RepaintStyle.ANIME)
    return await ctx.client.generate(request, timeout=value)  # type: ignore[arg-type]


async def _list_page_size(ctx: Context, value: object) -> object:
    return ctx.client.list_tasks(page_size=value)  # type: ignore[arg-type]


def _sketch(**options: object) -> Callable[[object], object]:
    (name,) = options

    def make(value: object) -> object:
        return ds.SketchToImage(URL, prompt="a tree", **{name: value})  # type: ignore[arg-type]

    return make


FIELDS: list[Field] = [
    # --- Limits and ModelLimits ----------------------------------------------------------------
    setting("submit_rate", lambda v: ds.ModelLimits(submit_rate=v), **POSITIVE),
    setting("max_in_progress", lambda v: ds.ModelLimits(max_in_progress=v), **WHOLE_POSITIVE),
    setting("queue_ahead", lambda v: ds.ModelLimits(queue_ahead=v), **WHOLE_NON_NEGATIVE),
    setting("poll_rate", lambda v: ds.Limits(poll_rate=v), **POSITIVE),
    setting("safety_margin", lambda v: ds.Limits(safety_margin=v), **NON_NEGATIVE),
    setting("throttle_backoff", lambda v: ds.Limits(throttle_backoff=v), **POSITIVE),
    setting("throttle_backoff_max", lambda v: ds.Limits(throttle_backoff_max=v), **POSITIVE),
    setting("throttle_jitter", lambda v: ds.Limits(throttle_jitter=v), at_least=0, at_most=1),
    # --- PollPolicy ----------------------------------------------------------------------------
    setting("first_poll", lambda v: ds.PollPolicy(first_poll=v), **NON_NEGATIVE, optional=True),
    # max_interval is the largest float, so any min_interval the number rule allows fits below.
    setting(
        "min_interval",
        lambda v: ds.PollPolicy(min_interval=v, max_interval=sys.float_info.max),
        **POSITIVE,
    ),
    setting("max_interval", lambda v: ds.PollPolicy(max_interval=v, min_interval=1e-300), **POSITIVE),
    setting("deadline", lambda v: ds.PollPolicy(deadline=v), **NON_NEGATIVE, optional=True),
    setting("polls_per_task", lambda v: ds.PollPolicy(polls_per_task=v), **POSITIVE),
    setting("cold_polls_per_task", lambda v: ds.PollPolicy(cold_polls_per_task=v), **POSITIVE),
    setting("cold_probes[0]", lambda v: ds.PollPolicy(cold_probes=(v,)), more_than=0, less_than=1),
    setting("overrun_growth", lambda v: ds.PollPolicy(overrun_growth=v), **POSITIVE),
    setting("error_backoff", lambda v: ds.PollPolicy(error_backoff=v), **POSITIVE),
    setting("error_backoff_max", lambda v: ds.PollPolicy(error_backoff_max=v), **POSITIVE),
    setting(f"run_time_priors[{REPAINT!r}]",
            lambda v: ds.PollPolicy(run_time_priors={REPAINT: v}), **POSITIVE),
    # --- RunTimeStats --------------------------------------------------------------------------
    setting("window", lambda v: ds.RunTimeStats(window=v), **WHOLE_POSITIVE),
    setting("prior_log_sigma", lambda v: ds.RunTimeStats(prior_log_sigma=v), at_least=0,
            at_most=5),
    setting("prior_weight", lambda v: ds.RunTimeStats(prior_weight=v), **POSITIVE),
    setting("cold_log_sigma", lambda v: ds.RunTimeStats(cold_log_sigma=v), at_least=0,
            at_most=5, optional=True),
    setting("min_log_sigma", lambda v: ds.RunTimeStats(min_log_sigma=v), at_least=0,
            at_most=5),
    # --- RetryPolicy, DownloadLimits, Budget ---------------------------------------------------
    setting("max_retries", lambda v: RetryPolicy(max_retries=v), **WHOLE_NON_NEGATIVE),
    setting("max_retry_after", lambda v: RetryPolicy(max_retry_after=v), **NON_NEGATIVE),
    setting("max_bytes", lambda v: ds.DownloadLimits(max_bytes=v), **WHOLE_POSITIVE),
    setting("timeout", lambda v: ds.DownloadLimits(timeout=v), **POSITIVE, optional=True),
    setting("retries", lambda v: ds.DownloadLimits(retries=v), **WHOLE_NON_NEGATIVE),
    setting("budget.images", lambda v: ds.Budget(images=v), **WHOLE_NON_NEGATIVE, optional=True),
    # --- the runner's options ------------------------------------------------------------------
    call("max_pending", _runner_option("max_pending"), **WHOLE_POSITIVE),
    call("reconcile_grace", _runner_option("reconcile_grace"), **NON_NEGATIVE),
    call("reconcile_timeout", _runner_option("reconcile_timeout"), **NON_NEGATIVE),
    call("task_retention", _runner_option("task_retention"), **POSITIVE),
    call("throttle_timeout", _runner_option("throttle_timeout"), **NON_NEGATIVE, optional=True),
    call("max_pending", _map_max_pending, **WHOLE_POSITIVE, optional=True),
    # --- the client's options and calls --------------------------------------------------------
    call("timeout", _client_option("timeout"), **POSITIVE, optional=True),
    call("max_retries", _client_option("max_retries"), **WHOLE_NON_NEGATIVE),
    call("max_retry_after", _client_option("max_retry_after"), **NON_NEGATIVE),
    call("inline_data_uri_max_bytes", _client_option("inline_data_uri_max_bytes"),
         **WHOLE_NON_NEGATIVE),
    call("timeout", _wait_timeout, **NON_NEGATIVE, optional=True),
    call("poll_interval", _wait_poll_interval, **POSITIVE, optional=True),
    call("timeout", _generate_timeout, **NON_NEGATIVE, optional=True),
    call("page_size", _list_page_size, **WHOLE_POSITIVE),
    # --- request fields ------------------------------------------------------------------------
    setting("n", _sketch(n=1), whole=True, at_least=1, at_most=4),
    setting("sketch_weight", _sketch(sketch_weight=1), whole=True, at_least=0, at_most=10),
    setting("sketch_color[0]", lambda v: ds.SketchToImage(URL, prompt="a tree",
            sketch_color=[[v, 0, 0]]), whole=True, at_least=0, at_most=255),
]  # fmt: skip

VALUES: list[tuple[str, object]] = [
    ("a-str", "5"),
    ("a-bool", True),
    ("None", None),
    ("a-list", [1]),
    ("NaN", math.nan),
    ("inf", math.inf),
    ("-inf", -math.inf),
    ("negative", -1),
    ("negative-float", -0.5),
    ("zero", 0),
    ("a-float-2.0", 2.0),
    ("one", 1),
    ("huge-float", 1e308),
    ("huge-int", 10**400),
    ("tiny", 1e-300),
]

CASES = [
    pytest.param(field, value, id=f"{field.name}@{position}-{label}")
    for position, field in enumerate(FIELDS)
    for label, value in VALUES
    if not (field.call and field.accepts(value) is True)
]


def _check_refusal(field: Field, value: object, error: BaseException, expected: type) -> None:
    if expected is ds.InputTypeError:
        assert type(error) is ds.InputTypeError, repr(error)
        assert isinstance(error, TypeError)
        assert f"not {type(value).__name__!r}" in error.rule, error.rule
    else:
        assert type(error) is ds.ValidationError, repr(error)
        assert not isinstance(error, TypeError)
    assert error.field == field.name, str(error)
    assert str(error).startswith(f"{field.name}: "), str(error)
    assert len(str(error)) < 200  # a huge value is not printed whole


@pytest.mark.anyio
@pytest.mark.parametrize(("field", "value"), CASES)
async def test_every_number_rule_refuses_alike(field: Field, value: object) -> None:
    emulator = Emulator()
    expected = field.accepts(value)
    async with emulator.client() as client:
        context = Context(emulator, client)
        if expected is True:
            await field.apply(context, value)
        else:
            assert isinstance(expected, type)
            with pytest.raises(expected) as caught:
                await field.apply(context, value)
            _check_refusal(field, value, caught.value, expected)
    assert sum(emulator.stats.requests.values()) == 0, emulator.stats.requests


def test_the_table_covers_every_setting() -> None:
    covered = {field.name for field in FIELDS}
    for settings_type in (ds.ModelLimits, ds.PollPolicy, RetryPolicy, ds.DownloadLimits):
        for attribute in attrs.fields(settings_type):
            if attribute.name in ("cold_probes", "run_time_priors", "random_fraction"):
                continue  # their elements are in the table
            assert attribute.name in covered, (settings_type.__name__, attribute.name)
    numbers = [a.name for a in attrs.fields(ds.Limits) if a.name != "models"]
    assert set(numbers) <= covered


def test_catching_validation_error_catches_wrong_types_too() -> None:
    with pytest.raises(ds.ValidationError) as caught:
        ds.PollPolicy(min_interval="1")  # type: ignore[arg-type]
    assert isinstance(caught.value, TypeError)
    assert str(caught.value) == "min_interval: must be a number of seconds, not 'str'"
    with pytest.raises(TypeError):
        ds.Limits(poll_rate=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="poll_rate: must be more than 0, not -1"):
        ds.Limits(poll_rate=-1)


@settings(max_examples=500, deadline=None)
@given(data=st.data(), field=st.sampled_from([f for f in FIELDS if f.make is not None]))
def test_any_number_gets_the_verdict_its_rule_gives(data: st.DataObject, field: Field) -> None:
    integers = st.integers(min_value=-(10**400), max_value=10**400)
    value = data.draw(integers if field.whole else st.one_of(st.floats(), integers))
    expected = field.accepts(value)
    assert field.make is not None
    try:
        field.make(value)
    except ds.ValidationError as error:
        assert expected is not True and isinstance(expected, type), (field.name, value, error)
        _check_refusal(field, value, error, expected)
    else:
        assert expected is True, (field.name, value)

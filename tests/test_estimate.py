"""Dry-run estimates: images, CNY, wall time, what a journal finished and what a budget stops."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

import dashscope_async as ds
from dashscope_async._estimate import Estimate, ModelEstimate, estimate
from dashscope_async._journal import JobState, JournalEntry, job_key

REPAINT = ds.STYLE_REPAINT.name
SKETCH = ds.SKETCH_TO_IMAGE.name


def repaint(i: int = 0) -> ds.StyleRepaint:
    return ds.StyleRepaint(f"https://example.com/{i}.jpg", style=ds.RepaintStyle.ANIME)


def sketch(n: int = 1, i: int = 0) -> ds.SketchToImage:
    return ds.SketchToImage(f"https://example.com/{i}.png", prompt="a tree", n=n)


def entry(
    key: str, state: JobState, *, model: str = REPAINT, billed: int | None = None
) -> JournalEntry:
    result = None
    if state is JobState.SUCCEEDED:
        result = ds.TaskResult(
            task_id=f"task-{key}",
            status=ds.TaskStatus.SUCCEEDED,
            images=(ds.GeneratedImage("https://r.example.com/x.png"),),
            usage=None if billed is None else ds.Usage(image_count=billed),
        )
    return JournalEntry(
        key=key,
        index=0,
        model=model,
        fingerprint="f",
        state=state,
        sent_at=None,
        task_id=None if state is JobState.INTENT else f"task-{key}",
        result=result,
        error_type="TaskFailedError" if state is JobState.FAILED else None,
        error_code=None,
        error_message=None,
        files=(),
        attempts=1,
        updated_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


# Default limits: 2 submits/s plus a 0.05 s margin (0.55 s apart), one task at a time; runs of
# 15 s (repaint) and 25 s (sketch); CNY 0.12 and 0.06 an image.
@pytest.mark.parametrize(
    ("requests", "limits", "run_seconds", "expected"),
    [
        pytest.param(
            [repaint(i) for i in range(10)],
            None,
            None,
            {REPAINT: (10, 10, "1.20", 150.0)},
            id="one model, run-bound",
        ),
        pytest.param(
            [repaint(i) for i in range(4)] + [sketch(n=4, i=i) for i in range(3)],
            None,
            None,
            {REPAINT: (4, 4, "0.48", 60.0), SKETCH: (3, 12, "0.72", 75.0)},
            id="two models side by side",
        ),
        pytest.param(
            [repaint(i) for i in range(6)],
            ds.Limits.default().with_model(REPAINT, submit_rate=0.1, max_in_progress=3),
            None,
            {REPAINT: (6, 6, "0.72", 6 * 10.05)},
            id="submit-bound at a slow rate",
        ),
        pytest.param(
            [repaint(i) for i in range(6)],
            ds.Limits.default().with_model(REPAINT, max_in_progress=3),
            None,
            {REPAINT: (6, 6, "0.72", 30.0)},
            id="three in progress",
        ),
        pytest.param(
            [sketch(n=2, i=i) for i in range(5)],
            None,
            {SKETCH: 0.4},
            {SKETCH: (5, 10, "0.60", 5 * 0.55)},
            id="short runs make it submit-bound",
        ),
        pytest.param([], None, None, {}, id="nothing"),
    ],
)
def test_figures(
    requests: list[ds.Request],
    limits: ds.Limits | None,
    run_seconds: dict[str, float] | None,
    expected: dict[str, tuple[int, int, str, float]],
) -> None:
    plan = estimate(requests, limits=limits, typical_run_seconds=run_seconds)
    figures = {
        model: (share.jobs, share.images, str(share.cost_cny))
        for model, share in plan.models.items()
    }
    assert figures == {model: figures[:3] for model, figures in expected.items()}
    for model, (*_, seconds) in expected.items():
        assert plan.models[model].wall_seconds == pytest.approx(seconds)
    assert plan.jobs == sum(jobs for jobs, *_ in expected.values())
    assert plan.images == sum(images for _, images, *_ in expected.values())
    assert plan.cost_cny == sum((Decimal(cost) for *_, cost, _ in expected.values()), Decimal(0))
    assert plan.wall_seconds == pytest.approx(max((s for *_, s in expected.values()), default=0))
    assert (plan.done, plan.over_budget, plan.spent_images) == (0, 0, 0)


@pytest.mark.parametrize(
    ("requests", "budget", "over_budget", "images"),
    [
        pytest.param(
            [repaint(i) for i in range(8)], ds.Budget(images=5), {REPAINT: 3}, 5, id="images"
        ),
        pytest.param(
            # 0.12, 0.24, 0.30; then a repaint (0.42) and a sketch (0.36) pass the cap.
            [repaint(0), repaint(1), sketch(), repaint(2), sketch(i=1)],
            ds.Budget(cny="0.30"),
            {REPAINT: 1, SKETCH: 1},
            3,
            id="cny, in batch order",
        ),
        pytest.param(
            # A later, cheaper job still fits after a dearer one was stopped.
            [sketch(n=4), repaint(0), sketch(n=1)],
            ds.Budget(cny="0.31"),
            {SKETCH: 0, REPAINT: 1},
            5,
            id="cny, a cheaper job fits",
        ),
        pytest.param(
            [repaint(i) for i in range(4)],
            ds.Budget(cny="1", prices={REPAINT: "0.5", SKETCH: "0.1"}),
            {REPAINT: 2},
            2,
            id="own prices",
        ),
        pytest.param([repaint(i) for i in range(4)], ds.Budget(images=0), {REPAINT: 4}, 0, id="0"),
    ],
)
def test_the_budget_stops_jobs(
    requests: list[ds.Request], budget: ds.Budget, over_budget: dict[str, int], images: int
) -> None:
    plan = estimate(requests, budget=budget)
    assert {
        m: s.over_budget for m, s in plan.models.items() if s.over_budget or m in over_budget
    } == (over_budget)
    assert plan.images == images
    assert plan.over_budget == sum(over_budget.values())


def test_prices_come_from_the_budget_when_it_has_them() -> None:
    budget = ds.Budget(prices={REPAINT: "0.5", SKETCH: "0.25"})
    plan = estimate([repaint(), sketch(n=2)], budget=budget)
    assert plan.models[REPAINT].cost_cny == Decimal("0.5")
    assert plan.models[SKETCH].cost_cny == Decimal("0.50")
    assert plan.cost_cny == Decimal("1.00")


def test_a_journal_leaves_out_finished_jobs() -> None:
    requests: list[ds.Request | ds.Job] = [repaint(i) for i in range(5)]
    requests.append(ds.Job(sketch(n=2), key="my-sketch"))
    keys = [
        job_key(r, i) if isinstance(r, ds.StyleRepaint) else "my-sketch"
        for i, r in enumerate(requests)
    ]
    entries = [
        entry(keys[0], JobState.SUCCEEDED, billed=1),
        entry(keys[1], JobState.FAILED),
        entry(keys[2], JobState.SUBMITTED),  # runs, but is not submitted again
        entry(keys[3], JobState.CANCELED),  # runs again
        entry("my-sketch", JobState.SUCCEEDED, model=SKETCH, billed=2),
        # Not in this batch, but billed to the same journal.
        entry("elsewhere", JobState.SUCCEEDED, billed=1),
    ]
    plan = estimate(requests, journal_entries=entries)
    assert plan.models[REPAINT] == ModelEstimate(
        model=REPAINT,
        jobs=3,
        images=3,
        cost_cny=Decimal("0.36"),
        wall_seconds=45.0,
        done=2,
    )
    assert plan.models[SKETCH].jobs == 0
    assert plan.models[SKETCH].done == 1
    assert plan.done == 3
    assert (plan.spent_images, plan.spent_cny) == (4, Decimal("0.36"))
    # By key works as well as a list.
    assert estimate(requests, journal_entries={e.key: e for e in entries}) == plan


def test_only_tasks_still_to_submit_need_submit_turns() -> None:
    requests = [repaint(i) for i in range(4)]
    entries = [entry(job_key(r, i), JobState.SUBMITTED) for i, r in enumerate(requests[:3])]
    fast_runs = {REPAINT: 0.01}
    plan = estimate(requests, journal_entries=entries, typical_run_seconds=fast_runs)
    # One submit (0.55 s), not four (2.2 s); four tasks to wait for.
    assert plan.wall_seconds == pytest.approx(0.55)
    assert plan.models[REPAINT].jobs == 4


def test_what_a_journal_spent_counts_against_the_budget() -> None:
    requests = [repaint(i) for i in range(6)]
    entries = [
        entry(job_key(requests[0], 0), JobState.SUCCEEDED, billed=1),
        entry(job_key(requests[1], 1), JobState.SUCCEEDED, billed=1),
        # Already on the service: it will be billed whatever the cap says.
        entry(job_key(requests[2], 2), JobState.SUBMITTED),
    ]
    plan = estimate(requests, budget=ds.Budget(images=4), journal_entries=entries)
    share = plan.models[REPAINT]
    # 2 billed + 1 on the service + 1 new job = 4; the last two are stopped.
    assert (share.done, share.jobs, share.over_budget) == (2, 2, 2)


def test_a_missing_input_file_is_simply_not_done(tmp_path: Path) -> None:
    gone = ds.StyleRepaint(tmp_path / "gone.png", style=2)
    plan = estimate([gone], journal_entries=[entry("x", JobState.SUCCEEDED, billed=1)])
    assert (plan.jobs, plan.done) == (1, 0)


def test_without_a_journal_no_input_file_is_read(tmp_path: Path) -> None:
    # job keys (and their file metadata) are only needed to match journal entries.
    gone = ds.StyleRepaint(tmp_path / "gone.png", style=2)
    assert estimate([gone]).jobs == 1


def test_describe_says_it_for_people() -> None:
    plan = estimate(
        [sketch(), *(repaint(i) for i in range(300)), sketch(i=1)],
        budget=ds.Budget(images=250),
    )
    assert plan.describe().splitlines() == [
        f"{SKETCH}: 1 job, 1 image, CNY 0.06, about 25 s (1 over budget)",
        f"{REPAINT}: 249 jobs, 249 images, CNY 29.88, about 1 h 02 min (51 over budget)",
        "total: 250 jobs, 250 images, CNY 29.94, about 1 h 02 min",
    ]
    assert estimate([repaint(i) for i in range(5)]).describe().splitlines()[-1] == (
        "total: 5 jobs, 5 images, CNY 0.60, about 1 min 15 s"
    )


def test_an_estimate_is_a_value() -> None:
    plan = estimate([repaint()])
    assert isinstance(plan, Estimate)
    assert plan == estimate([repaint(1)])
    with pytest.raises(TypeError):
        plan.models["x"] = ModelEstimate(model="x")  # type: ignore[index]

"""The emulator as close to the service as its pages say, and kind to its users' tests.

Run-time shapes, made-up input URLs, result names, task ids, the models' own error wording,
workspaces, the task list's filters and the task times. In-process, on a manual clock.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

from dashscope_async.testing import Call, Emulator, EmulatorConfig, ModelBehaviour

pytestmark = pytest.mark.anyio

KEY = "sk-emulator"
SUBMIT_HEADERS = {"authorization": f"Bearer {KEY}", "x-dashscope-async": "enable"}
REPAINT_PATH = "/api/v1/services/aigc/image-generation/generation"
SKETCH_PATH = "/api/v1/services/aigc/image2image/image-synthesis"
REPAINT = "wanx-style-repaint-v1"
SKETCH = "wanx-sketch-to-image-lite"


class ManualClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def submit(emulator: Emulator, body: dict[str, Any], **headers: str) -> Any:
    path = REPAINT_PATH if body["model"] == REPAINT else SKETCH_PATH
    reply = emulator._core.handle(
        Call("api", "POST", path, {}, {**SUBMIT_HEADERS, **headers}, json.dumps(body).encode())
    )
    return json.loads(reply.body)


def sketch_body(url: str, n: int = 1) -> dict[str, Any]:
    return {
        "model": SKETCH,
        "input": {"sketch_image_url": url, "prompt": "a towering tree"},
        "parameters": {"n": n},
    }


def repaint_body(url: str, style: int = 2) -> dict[str, Any]:
    return {"model": REPAINT, "input": {"image_url": url, "style_index": style}}


# --- run-time distributions ---------------------------------------------------------------------


def run_times(config: EmulatorConfig, count: int = 600) -> list[float]:
    emulator = Emulator(config.without_limits(), clock=ManualClock())
    url = emulator.sample_image_url("sketch")
    for _ in range(count):
        submit(emulator, sketch_body(url))
    return [task.run_seconds for task in emulator.tasks.values()]


async def test_uniform_run_times_stay_within_the_jitter_and_fill_it() -> None:
    config = EmulatorConfig(seed=5, time_scale=0.5).with_models(
        run_distribution="uniform", run_jitter=0.1
    )
    runs = run_times(config)
    mean = 12.5  # 25 s x 0.5
    assert all(mean * 0.9 <= run <= mean * 1.1 for run in runs)
    assert min(runs) < mean * 0.91 and max(runs) > mean * 1.09  # the whole band, not a point
    assert statistics.mean(runs) == pytest.approx(mean, rel=0.01)
    # A flat band of half-width j has a standard deviation of j / sqrt(3).
    assert statistics.stdev(runs) / mean == pytest.approx(0.1 / 3**0.5, rel=0.1)


async def test_pareto_run_times_keep_the_mean_with_a_heavy_tail() -> None:
    config = EmulatorConfig(seed=5, time_scale=0.5).with_models(
        run_distribution="pareto", run_tail=2.5
    )
    runs = run_times(config, count=2000)
    mean = 12.5
    assert min(runs) >= mean * 0.6  # the minimum m = mean * (a - 1) / a
    assert statistics.median(runs) < mean  # most runs are shorter than the mean...
    assert max(runs) > mean * 3  # ...a few far longer
    assert statistics.mean(runs) == pytest.approx(mean, rel=0.1)
    beyond_three = sum(run > 3 * mean for run in runs) / len(runs)
    assert beyond_three == pytest.approx((0.6 / 3) ** 2.5, abs=0.01)  # (m / x) ** a


async def test_lognormal_stays_the_default_and_every_shape_is_seeded() -> None:
    assert ModelBehaviour().run_distribution == "lognormal"
    for shape in ("lognormal", "uniform", "pareto"):
        config = EmulatorConfig(seed=11).with_models(run_distribution=shape)
        first, again = run_times(config, 20), run_times(config, 20)
        other = run_times(EmulatorConfig(seed=12).with_models(run_distribution=shape), 20)
        assert first == again != other


async def test_a_zero_spread_runs_exactly_the_mean() -> None:
    for changes in ({"run_sigma": 0.0}, {"run_distribution": "uniform", "run_jitter": 0.0}):
        runs = run_times(EmulatorConfig(seed=1).with_models(**changes), 5)
        assert runs == [25.0] * 5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("run_distribution", "normal"),
        ("run_jitter", 1.0),
        ("run_jitter", -0.1),
        ("run_tail", 1.0),
        ("run_sigma", -1.0),
        ("run_seconds", 0.0),
    ],
)
def test_a_bad_run_time_setting_is_refused_when_built(field: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError), match=field):
        ModelBehaviour(**{field: value})  # type: ignore[arg-type]


def test_with_models_changes_every_model_even_those_not_listed() -> None:
    config = EmulatorConfig(models={REPAINT: ModelBehaviour(run_seconds=3.0)})
    changed = config.with_models(run_distribution="uniform")
    assert changed.behaviour(REPAINT).run_seconds == 3.0
    assert {changed.behaviour(model).run_distribution for model in (REPAINT, SKETCH)} == {"uniform"}

"""The emulator's settings: keys, limits, run times, lifetimes and the time scale.

Pure values (attrs, frozen); the defaults are the service's own, read from the model registry in
``dashscope_async._config``. No I/O and no behaviour here: the core reads these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import attrs

from .._config import MODELS, TASK_ENDPOINT_QPS, TASK_RETENTION_SECONDS, UPLOAD_POLICY_QPS
from .._config import UPLOAD_RETENTION_SECONDS as UPLOAD_LIFETIME_SECONDS

__all__ = ["DEFAULT_API_KEY", "EmulatorConfig", "ModelBehaviour", "RunDistribution"]

#: The key the emulator accepts unless told otherwise.
DEFAULT_API_KEY = "sk-emulator"


#: How run times spread around their mean: ``"lognormal"`` (the service's shape: a tight spread,
#: ``run_sigma``), ``"uniform"`` (flat within ``run_jitter`` of the mean) or ``"pareto"``
#: (heavy-tailed: most runs a little shorter than the mean, a few several times longer;
#: ``run_tail`` sets how heavy). Every shape keeps the mean at ``run_seconds``.
RunDistribution = Literal["lognormal", "uniform", "pareto"]


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not (isinstance(value, int | float) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive number or None (no limit)")


@attrs.frozen
class ModelBehaviour:
    """How one model behaves on the emulator.

    Attributes:
        submit_rate: accepted submissions per one-second sliding window; None lifts the limit.
            A rate below 1 means one submission per ``1 / rate`` seconds.
        max_in_progress: tasks submitted and not yet finished the account may have; None
            lifts the limit.
        when_busy: ``"queue"`` (the service's way: tasks beyond ``max_in_progress`` wait as
            PENDING and start in submission order) or ``"reject"`` (answer 429 instead).
        run_seconds: mean run time of a task before ``time_scale``.
        run_distribution: the shape of run times around that mean: ``"lognormal"``,
            ``"uniform"`` or ``"pareto"`` (heavy-tailed).
        run_sigma: lognormal only: the spread of the logarithm (0.05 means about 5 %; 0 makes
            every run exactly ``run_seconds``).
        run_jitter: uniform only: each run lies within this fraction of the mean (0.1: +-10 %).
        run_tail: pareto only: the tail index, above 1; the smaller, the heavier the tail (at
            2.5, runs are at least 0.6 of the mean and about 2 % exceed three times it).

    Example:
        ```python
        ModelBehaviour(submit_rate=2, max_in_progress=1, run_seconds=15.0)
        ModelBehaviour(run_seconds=15.0, run_distribution="uniform", run_jitter=0.1)
        ModelBehaviour(run_seconds=15.0, run_distribution="pareto", run_tail=2.0)
        ```
    """

    submit_rate: float | None = attrs.field(default=2.0, validator=_positive_or_none)
    max_in_progress: int | None = attrs.field(default=1, validator=_positive_or_none)
    when_busy: Literal["queue", "reject"] = "queue"
    run_seconds: float = attrs.field(default=15.0, validator=attrs.validators.gt(0))
    run_distribution: RunDistribution = attrs.field(
        default="lognormal", validator=attrs.validators.in_(("lognormal", "uniform", "pareto"))
    )
    run_sigma: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    run_jitter: float = attrs.field(
        default=0.1, validator=[attrs.validators.ge(0), attrs.validators.lt(1)]
    )
    run_tail: float = attrs.field(default=2.5, validator=attrs.validators.gt(1))


def _default_models() -> dict[str, ModelBehaviour]:
    return {
        name: ModelBehaviour(
            submit_rate=spec.submit_rate,
            max_in_progress=spec.max_in_progress,
            run_seconds=spec.typical_run_seconds,
        )
        for name, spec in MODELS.items()
    }


@attrs.frozen
class EmulatorConfig:
    """Everything the emulator can be told; the defaults are the service's.

    Attributes:
        api_keys: keys the API host accepts (others get 401 ``InvalidApiKey``).
        time_scale: multiplies every task's run time: 0.01 makes a 15 s repaint take 0.15 s.
            Limits (submit rate, task-endpoint QPS) keep their real one-second windows.
        seed: seeds run times, task ids and probabilistic faults.
        models: per-model limits and run times.
        task_qps: get, list and cancel requests per one-second window, shared by the account
            (service: 20); None lifts it.
        upload_policy_qps: upload-policy requests per second per model (service: 100).
        result_url_lifetime: seconds a result URL is valid after its task ended (24 h).
        task_retention: seconds a finished task stays visible; then it reads UNKNOWN (24 h).
        upload_lifetime: seconds an uploaded object can be used as ``oss://`` (48 h).
        policy_lifetime: seconds an upload policy is valid (300).
        input_failure_seconds: run time, before ``time_scale``, of a task whose inputs the
            service refuses after queueing.
        render_results: draw result images from the inputs (Pillow); False serves a small
            placeholder, for load tests.
        fetch_loopback: fetch http(s) inputs on other loopback servers (the emulator's own
            hosts are always read directly).
        wall_start: the wall-clock time the emulator's clock starts at; None means now.
        region: reported in the task list.

    Example:
        ```python
        fast = EmulatorConfig(time_scale=0.01, seed=7)
        unlimited = EmulatorConfig().without_limits()
        ```
    """

    api_keys: tuple[str, ...] = attrs.field(default=(DEFAULT_API_KEY,), converter=tuple, repr=False)
    time_scale: float = 1.0
    seed: int = 0
    models: Mapping[str, ModelBehaviour] = attrs.field(factory=_default_models)
    task_qps: float | None = attrs.field(
        default=float(TASK_ENDPOINT_QPS), validator=_positive_or_none
    )
    upload_policy_qps: float | None = attrs.field(
        default=float(UPLOAD_POLICY_QPS), validator=_positive_or_none
    )
    result_url_lifetime: float = float(TASK_RETENTION_SECONDS)
    task_retention: float = float(TASK_RETENTION_SECONDS)
    upload_lifetime: float = float(UPLOAD_LIFETIME_SECONDS)
    policy_lifetime: float = 300.0
    input_failure_seconds: float = 1.0
    render_results: bool = True
    fetch_loopback: bool = True
    wall_start: datetime | None = None
    region: str = "cn-beijing"

    def __attrs_post_init__(self) -> None:
        if not self.time_scale > 0 or math.isinf(self.time_scale):
            raise ValueError("time_scale must be a positive, finite number")
        if not self.api_keys:
            raise ValueError("api_keys must name at least one key")
        if self.wall_start is not None and self.wall_start.tzinfo is None:
            raise ValueError("wall_start must be timezone-aware")

    @property
    def api_key(self) -> str:
        """The first accepted key: the one to give a client."""
        return self.api_keys[0]

    def behaviour(self, model: str) -> ModelBehaviour:
        """The behaviour of ``model`` (the service's defaults for a model not configured)."""
        return self.models.get(model) or _default_models()[model]

    def with_model(self, model: str, **changes: Any) -> EmulatorConfig:
        """A copy with one model's behaviour changed.

        Example:
            ```python
            config = EmulatorConfig().with_model("wanx-style-repaint-v1", max_in_progress=3)
            ```
        """
        models = dict(self.models)
        models[model] = attrs.evolve(self.behaviour(model), **changes)
        return attrs.evolve(self, models=models)

    def with_models(self, **changes: Any) -> EmulatorConfig:
        """A copy with every model's behaviour changed alike.

        Example:
            ```python
            jittery = EmulatorConfig().with_models(run_distribution="uniform", run_jitter=0.1)
            ```
        """
        models = {
            name: attrs.evolve(self.behaviour(name), **changes)
            for name in dict.fromkeys([*MODELS, *self.models])
        }
        return attrs.evolve(self, models=models)

    def without_limits(self) -> EmulatorConfig:
        """A copy with every rate and concurrency limit lifted ('off')."""
        lifted = self.with_models(submit_rate=None, max_in_progress=None)
        return attrs.evolve(lifted, task_qps=None, upload_policy_qps=None)

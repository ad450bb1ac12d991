"""Queue-ahead: which models keep a task waiting PENDING on the service, and when that stops.

Owns, per model and for one runner: whether queue-ahead is on (``ModelLimits.queue_ahead`` above
0, and the service has not refused a queued task), how many of this runner's tasks of the model
exist or may exist (from the submit's send until the job leaves its slot), and so whether a
submit about to go will wait behind running tasks. When the service answers such a submit with a
throttling 429, queue-ahead is off for that model for the rest of the run: the limiter hands out
``max_in_progress`` slots only, an event and a log line say so, and the job is submitted again,
paced as always, once a running slot is free. It never sends anything and never sleeps on a clock;
the pipeline asks it before and after each submit.
"""

from __future__ import annotations

import anyio
import attrs

from .._limits import Limiter
from .._logging import get_logger

__all__ = ["QueueAhead"]

logger = get_logger("runner")


@attrs.define
class _ModelQueue:
    configured: bool
    max_in_progress: int
    on: bool
    outstanding: int = 0
    waiters: int = 0
    changed: anyio.Event = attrs.field(factory=anyio.Event)


@attrs.define
class QueueAhead:
    """One runner's view of queue-ahead, per model."""

    limiter: Limiter
    _models: dict[str, _ModelQueue] = attrs.field(init=False, factory=dict)

    def _model(self, model: str) -> _ModelQueue:
        queue = self._models.get(model)
        if queue is None:
            limits = self.limiter.limits.for_model(model)
            configured = limits.queue_ahead > 0
            queue = self._models[model] = _ModelQueue(
                configured, limits.max_in_progress, configured
            )
        return queue

    def enabled(self, model: str) -> bool:
        """Whether ``model``'s tasks may wait PENDING behind running ones now."""
        return self._model(model).on

    def blocked(self, model: str) -> bool:
        """With queue-ahead off after a refusal: no running slot is free for a submit now."""
        queue = self._model(model)
        return queue.configured and not queue.on and queue.outstanding >= queue.max_in_progress

    async def wait_for_turn(self, model: str) -> None:
        """Wait while ``blocked``: until a running slot is free for us."""
        queue = self._model(model)
        while self.blocked(model):
            queue.waiters += 1
            try:
                await queue.changed.wait()
            finally:
                queue.waiters -= 1

    def sending(self, model: str) -> int:
        """A submit of ``model`` goes now: count its task. Returns how many run times of the
        model's slots pass before it starts: 0 when a slot is free, 1 when it waits PENDING
        behind running tasks of ours (queued ahead), more when others wait before it. Models
        without queue-ahead are not counted (their slots alone keep them in order)."""
        queue = self._model(model)
        if not queue.configured:
            return 0
        waiting_before = queue.outstanding - queue.max_in_progress
        queue.outstanding += 1
        return 0 if waiting_before < 0 else waiting_before // queue.max_in_progress + 1

    def gone(self, model: str) -> None:
        """A counted task does not exist (its submit was refused) or has ended."""
        queue = self._model(model)
        if not queue.configured:
            return
        queue.outstanding -= 1
        if queue.waiters:
            queue.changed.set()
            queue.changed = anyio.Event()

    def refused(self, model: str) -> bool:
        """The service refused a submit queued ahead (429): turn queue-ahead off for ``model``
        for the rest of the run. True if this call turned it off."""
        queue = self._model(model)
        if not queue.on:
            return False
        queue.on = False
        self.limiter.stop_queue_ahead(model)
        logger.warning(
            "%s: the service refused a task queued behind a running one (429); queue-ahead is"
            " off for this model for the rest of the run, and the job is submitted again once"
            " a slot is free",
            model,
        )
        return True

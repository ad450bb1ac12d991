"""How well a client kept a model's slot busy in an emulated run, the service's own time left out.

Once a slot is free the emulated service takes a few tens of milliseconds to start the next task
(its scheduling), as the real one does; no client can shorten that. ``client_utilisation``
counts the slot busy from the moment the service holds it for a task (its start less its
scheduling time) to the task's end, over the makespan: what the client's pacing, polling and
queueing decided. ``EmulatorStats.utilisation`` counts only the running time.
"""

from __future__ import annotations

import attrs

from dashscope_async.testing import Emulator


def client_utilisation(emulator: Emulator, model: str) -> float:
    """Busy time over makespan, the service's scheduling of each task counted as busy."""
    held = [
        (task.started_at - task.scheduling_seconds, task.ended_at)
        for task in emulator.tasks.values()
        if task.model == model and task.started_at is not None and task.ended_at is not None
    ]
    stats = emulator.stats
    return attrs.evolve(stats, busy_intervals={**stats.busy_intervals, model: held}).utilisation(
        model
    )

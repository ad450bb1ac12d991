"""``python -m benchmarks.scale_out``: the submit rate four worker processes reach together.

Four OS processes, each with its own ``AsyncDashScope``, ``RedisLimiter`` and
``AsyncTaskRunner``, share one Redis and one emulator server, with the slot limit lifted and the
submit rate raised to 10/s: the aggregate rate reached, as a ratio of that limit (the limit is
the peer: nothing can go faster without being refused). Real time, asyncio (redis-py); needs
``redis-server``. The end-to-end test ``tests/e2e/test_scale_out.py`` checks the same run for
the limits kept; this script only prints the figure.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.e2e.test_scale_out import run_at_raised_rate
from tests.redis_server import redis_server

RATE = 10


def main() -> None:
    with redis_server() as redis, tempfile.TemporaryDirectory() as folder:
        times = run_at_raised_rate(redis, Path(folder), rate=RATE, safety_margin=0.005)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    rows = [("submits", str(len(times))), ("limit", f"{RATE}/s"), ("reached", f"{achieved:.2f}/s")]
    rows.append(("ratio to the limit", f"{achieved / RATE:.2f}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
    main()

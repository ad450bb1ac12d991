"""Enqueue a batch of style-repaint jobs and print each result as the workers finish it.

Usage (with Redis and some workers running, see worker.py; from the repository root)::

    python -m examples.queue_worker.enqueue https://example.com/a.jpg https://example.com/b.jpg
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import Any

from taskiq import AsyncBroker

from .worker import broker as default_broker
from .worker import generate


async def enqueue_and_wait(
    images: list[str],
    *,
    style: int,
    wait_seconds: float,
    broker: AsyncBroker | None = None,
) -> list[dict[str, Any]]:
    """Enqueue one job per image; return the results in the order given.

    Args:
        images: image URLs to repaint, one job each.
        style: the ``RepaintStyle`` index.
        wait_seconds: how long to wait for each job's result.
        broker: the queue to send through (the workers' own ``broker`` by default).

    Example:
        ```python
        results = await enqueue_and_wait(["https://example.com/a.jpg"], style=2, wait_seconds=600)
        ```
    """
    broker = broker or default_broker
    await broker.startup()
    try:
        batch = uuid.uuid4().hex[:8]
        kicker = generate.kicker().with_broker(broker)
        queued = [
            await kicker.kiq(
                f"{batch}-{number}", {"model": "repaint", "image": url, "style": style}
            )
            for number, url in enumerate(images)
        ]
        results: list[dict[str, Any]] = []
        for job in queued:
            outcome = await job.wait_result(timeout=wait_seconds)
            if outcome.is_err:
                results.append({"error": str(outcome.error)})
            else:
                results.append(outcome.return_value)
        return results
    finally:
        await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image URLs to repaint")
    parser.add_argument("--style", type=int, default=2, help="RepaintStyle index (2 = anime)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait per job")
    args = parser.parse_args()
    results = asyncio.run(
        enqueue_and_wait(args.images, style=args.style, wait_seconds=args.timeout)
    )
    for url, result in zip(args.images, results, strict=True):
        print(url, "->", result)


if __name__ == "__main__":
    main()

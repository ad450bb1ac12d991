"""Enqueue a batch of style-repaint jobs and print each result as the workers finish it.

Usage (with Redis and some workers running, see worker.py; from the repository root)::

    python -m examples.queue_worker.enqueue https://example.com/a.jpg https://example.com/b.jpg
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

import anyio

import dashscope_async as ds
from dashscope_async.queue import JobQueue, QueuedOutcome

from .worker import queue as default_queue


async def enqueue_and_wait(
    images: list[str],
    *,
    style: int,
    wait_seconds: float,
    queue: JobQueue | None = None,
    keys: list[str] | None = None,
) -> list[QueuedOutcome]:
    """Enqueue one job per image; return the outcomes in the order given.

    Args:
        images: image URLs to repaint, one job each.
        style: the ``RepaintStyle`` index.
        wait_seconds: how long to wait for each job's outcome.
        queue: the queue to send through (the workers' own by default).
        keys: the jobs' keys (their idempotency keys); new ones by default.

    Example:
        ```python
        outcomes = await enqueue_and_wait(["https://example.com/a.jpg"], style=2, wait_seconds=600)
        ```
    """
    queue = queue or default_queue
    batch = uuid.uuid4().hex[:8]
    keys = keys or [f"{batch}-{number}" for number in range(len(images))]
    await queue.broker.startup()
    try:
        queued = [
            await queue.enqueue(ds.StyleRepaint(url, style=ds.RepaintStyle(style)), key=key)
            for key, url in zip(keys, images, strict=True)
        ]
        outcomes = []
        for job in queued:
            with anyio.fail_after(wait_seconds):
                outcomes.append(await queue.outcome(job))
        return outcomes
    finally:
        await queue.broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image URLs to repaint")
    parser.add_argument("--style", type=int, default=2, help="RepaintStyle index (2 = anime)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait per job")
    args = parser.parse_args()
    outcomes = asyncio.run(
        enqueue_and_wait(args.images, style=args.style, wait_seconds=args.timeout)
    )
    for url, outcome in zip(args.images, outcomes, strict=True):
        if outcome.result is not None:
            print(url, "->", [image.url for image in outcome.result.images])
        else:
            print(url, "failed:", outcome.error_type, outcome.error_message)


if __name__ == "__main__":
    main()

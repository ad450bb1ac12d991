"""A chat-bot style service: many users send photos, each gets progress messages and a fair turn.

The account allows one task in progress per model, so requests queue. A runner alone serves them
first come, first served: a user who sends 30 photos would make everyone behind them wait for all
30. This bot keeps one queue per user and hands the runner the next job round-robin across users,
only a few at a time, so a user with one photo waits for at most one job of every other user.
Progress messages ("queued", "painting", "done") come from the runner's events.

The chat side is a stand-in: ``Bot.handle`` is what your Telegram/Discord/Slack handler calls,
and ``send`` is how you reply. Plain asyncio, as most bot frameworks are. Users' messages choose
the inputs, so the bot's client is built with ``allow_local_files=False``: a path in a message is
refused, never read from the bot's disk.

Run it against the built-in emulator, three users sending photos at once::

    python -m examples.bot --emulator
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from collections import deque
from collections.abc import Awaitable, Callable

import attrs

import dashscope_async as ds

#: Replies go out through this: ``await send(user, text)``.
Send = Callable[[str, str], Awaitable[None]]


@attrs.frozen
class PhotoRequest:
    """One user's request: which job it is for them, and what to make."""

    user: str
    number: int
    request: ds.Request

    @property
    def key(self) -> str:
        # The runner carries the key on every event, so events map back to users.
        return f"{self.user}#{self.number}"


class FairQueue:
    """Requests per user, handed out round-robin: every user with work gets the next turn in order.

    Example:
        ```python
        queue = FairQueue()
        await queue.put(PhotoRequest("ann", 1, request))
        job = await queue.get()
        ```
    """

    def __init__(self) -> None:
        self._by_user: dict[str, deque[PhotoRequest]] = {}
        self._turns: deque[str] = deque()  # users with waiting work, in turn order
        self._ready = asyncio.Condition()

    def ahead_of(self, user: str) -> int:
        """Waiting jobs that go before the newest job of ``user`` (if nobody else sends more)."""
        own = len(self._by_user.get(user, ()))
        others = sum(min(len(queue), own) for name, queue in self._by_user.items() if name != user)
        return others + own - 1

    async def put(self, job: PhotoRequest) -> None:
        async with self._ready:
            queue = self._by_user.setdefault(job.user, deque())
            if not queue:
                self._turns.append(job.user)
            queue.append(job)
            self._ready.notify()

    async def get(self) -> PhotoRequest:
        async with self._ready:
            await self._ready.wait_for(lambda: bool(self._turns))
            user = self._turns.popleft()
            queue = self._by_user[user]
            job = queue.popleft()
            if queue:
                self._turns.append(user)  # back of the line for the user's next job
            else:
                del self._by_user[user]
            return job


class Bot:
    """Takes requests from many users, runs them fairly, and reports progress to each user.

    Args:
        runner: the runner every job goes through (one per process).
        send: how to reply to a user.
        in_flight: jobs handed to the runner at once. Keep it small (about the tasks in
            progress the account allows, summed over the models in use) so that the order is
            decided here, fairly, and not in the runner's first-come queue.

    Example:
        ```python
        async with ds.AsyncTaskRunner(client) as runner, asyncio.TaskGroup() as group:
            bot = Bot(runner, send=reply)
            group.create_task(bot.serve())
            await bot.handle("ann", ds.StyleRepaint(url, style="anime"))
        ```
    """

    def __init__(self, runner: ds.AsyncTaskRunner, send: Send, *, in_flight: int = 2) -> None:
        self._runner = runner
        self._send = send
        self._in_flight = in_flight
        self._queue = FairQueue()
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._numbers: dict[str, itertools.count[int]] = {}
        self._open_jobs = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def handle(self, user: str, request: ds.Request) -> None:
        """Take one request from ``user`` (what your chat handler calls); returns at once."""
        number = next(self._numbers.setdefault(user, itertools.count(1)))
        self._open_jobs += 1
        self._idle.clear()
        await self._queue.put(PhotoRequest(user, number, request))
        ahead = self._queue.ahead_of(user)
        self._outbox.put_nowait((user, f"Photo {number}: queued, {ahead} ahead of it."))

    async def drained(self) -> None:
        """Wait until every request taken so far has been answered."""
        await self._idle.wait()
        await self._outbox.join()

    async def serve(self) -> None:
        """Run the workers, the progress reporter and the message sender until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._sender())
            group.create_task(self._progress())
            for _ in range(self._in_flight):
                group.create_task(self._worker())

    async def _progress(self) -> None:
        # The runner's event stream: every step of every job, with the key we gave it.
        async with self._runner.events() as events:
            async for event in events:
                if event.key is None:
                    continue
                user, _, number = event.key.partition("#")
                text = PROGRESS_TEXT.get(event.kind)
                if text is not None:
                    self._outbox.put_nowait((user, text.format(number=number)))

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            text = await self._run(job)
            self._outbox.put_nowait((job.user, text))
            self._open_jobs -= 1
            if self._open_jobs == 0:
                self._idle.set()

    async def _run(self, job: PhotoRequest) -> str:
        try:
            result = await self._runner.run(job.request, key=job.key)
        except ds.TaskFailedError as exc:
            return f"Photo {job.number}: the service could not make it ({exc.code})."
        except ds.ValidationError as exc:
            return f"Photo {job.number}: that image will not work: {exc.rule}."
        except ds.DashScopeError as exc:
            return f"Photo {job.number}: failed ({type(exc).__name__}); try again later."
        urls = " ".join(image.url for image in result.images)
        return f"Photo {job.number}: done! {urls}"

    async def _sender(self) -> None:
        while True:
            user, text = await self._outbox.get()
            try:
                await self._send(user, text)
            finally:
                self._outbox.task_done()


#: What a user is told when the runner reports a step of their job.
PROGRESS_TEXT = {
    ds.EventKind.SUBMITTED: "Photo {number}: started.",
    ds.EventKind.RUNNING: "Photo {number}: painting...",
    ds.EventKind.THROTTLED: "Photo {number}: the service is busy, retrying shortly.",
}


async def demo(client: ds.AsyncDashScope, image_url: str, *, poll: ds.PollPolicy | None) -> None:
    """Three users at once: ann sends four photos, then bob and cy one each; bob and cy wait for
    one of ann's photos, not four."""

    async def send(user: str, text: str) -> None:
        print(f"to {user}: {text}")

    async with ds.AsyncTaskRunner(client, poll=poll) as runner:
        bot = Bot(runner, send)
        async with asyncio.TaskGroup() as group:
            serving = group.create_task(bot.serve())
            for _ in range(4):
                await bot.handle("ann", ds.StyleRepaint(image_url, style=ds.RepaintStyle.ANIME))
            await bot.handle("bob", ds.StyleRepaint(image_url, style=ds.RepaintStyle.CLAY_WORLD))
            await bot.handle("cy", ds.StyleRepaint(image_url, style=ds.RepaintStyle.PIXEL_WORLD))
            await bot.drained()
            serving.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--emulator", action="store_true", help="run against the emulator")
    parser.add_argument("--image", default="https://example.com/portrait.jpg")
    args = parser.parse_args(argv)
    if args.emulator:
        return asyncio.run(_demo_on_emulator())
    # Users' messages choose the inputs: the client refuses local paths and file:// URLs.
    asyncio.run(demo(ds.AsyncDashScope(allow_local_files=False), args.image, poll=None))
    return 0


async def _demo_on_emulator() -> int:
    from examples._emulated import emulated

    async with emulated(allow_local_files=False) as service:
        await demo(service.client, service.emulator.sample_image_url("portrait"), poll=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

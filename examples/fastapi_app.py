"""A FastAPI app that repaints portraits and draws sketches, with one runner for its lifetime.

Every request handler awaits ``runner.run(...)``. The runner is shared by all requests, so however
many users call the app at once, the account's limits hold (per model: 2 submissions per second,
1 task in progress) and jobs are served first come, first served. A client that disconnects
cancels its job: a task still PENDING is cancelled on the service, so it is not billed.

Run it from the repository root (needs ``pip install -e ".[examples]"``)::

    export DASHSCOPE_API_KEY=sk-...
    uvicorn examples.fastapi_app:app

    curl -X POST localhost:8000/repaint -H 'content-type: application/json' \\
         -d '{"image_url": "https://example.com/me.jpg", "style": "anime"}'

Without an account, run it against the built-in emulator (extra ``testing``); it serves the
emulator on loopback for the app's lifetime and prints sample image URLs to send::

    uvicorn examples.fastapi_app:emulated_app

Or run the emulator on its own (``python -m dashscope_async.testing --port 8001``) and point the
app at it: ``export DASHSCOPE_HTTP_BASE_URL=http://127.0.0.1:8001/api/v1
DASHSCOPE_API_KEY=sk-emulator``.

Requests come from callers, so the app's client is built with ``allow_local_files=False``: a
path (or ``file://`` URL) in a request body is refused before anything is read, with the same
answer whether the file exists or not, so a caller can neither make the server upload its own
files nor probe which exist. The app refuses to start with a client that reads local files.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

import dashscope_async as ds

#: How long one HTTP request may wait for its image, in seconds (queueing included).
REQUEST_DEADLINE = 300.0


class RepaintIn(BaseModel):
    """Repaint a portrait in a preset style (``anime``, ``clay-world``, ... or an index)."""

    image_url: str
    style: str = "anime"


class SketchIn(BaseModel):
    """Draw a sketch as ``n`` images in a style (``watercolor``, ``anime``, ...)."""

    sketch_url: str
    prompt: str
    style: str = "auto"
    n: int = Field(default=1, ge=1, le=4)


class ImagesOut(BaseModel):
    """The task that made the images, and where to fetch them (the URLs live 24 hours)."""

    task_id: str
    image_urls: list[str]
    failed_images: int = 0


def get_runner(request: Request) -> ds.AsyncTaskRunner:
    """The app's one runner, for handlers (``runner: Runner``)."""
    runner: ds.AsyncTaskRunner = request.app.state.runner
    return runner


Runner = Annotated[ds.AsyncTaskRunner, Depends(get_runner)]

#: Makes the app's client: ``untrusted_input_client``, or any ``async with`` that yields one.
Connect = Callable[[], AbstractAsyncContextManager[ds.AsyncDashScope]]


def untrusted_input_client() -> ds.AsyncDashScope:
    """The client for requests built from what callers send: local paths and ``file://`` URLs
    are refused (the key comes from ``DASHSCOPE_API_KEY``)."""
    return ds.AsyncDashScope(allow_local_files=False)


def create_app(
    connect: Connect = untrusted_input_client,
    *,
    limits: ds.Limits | None = None,
    poll: ds.PollPolicy | None = None,
    budget: ds.Budget | None = None,
) -> FastAPI:
    """Build the app. ``connect`` makes the client, entered for the app's lifetime (tests pass
    one wired to the emulator); it must be built with ``allow_local_files=False``.

    Example:
        ```python
        app = create_app(lambda: ds.AsyncDashScope(workspace="ws-123", allow_local_files=False))
        ```
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client and one runner for the app's whole life: the limits are per account, so
        # they must be kept in one place, not per request.
        async with connect() as client:
            if client.allow_local_files:
                raise RuntimeError(
                    "the app builds requests from what callers send: give it a client made"
                    " with allow_local_files=False"
                )
            async with ds.AsyncTaskRunner(
                client, limits=limits, poll=poll, budget=budget
            ) as runner:
                app.state.runner = runner
                yield
        # Leaving the runner cancels jobs still queued; PENDING tasks are cancelled on the service.

    app = FastAPI(title="dashscope_async example", lifespan=lifespan)

    @app.post("/repaint")
    async def repaint(body: RepaintIn, runner: Runner) -> ImagesOut:
        """Repaint one portrait; answers when the image is ready."""
        request = _build(lambda: ds.StyleRepaint(body.image_url, style=body.style))
        return await _run(runner, request)

    @app.post("/sketch")
    async def sketch(body: SketchIn, runner: Runner) -> ImagesOut:
        """Turn one sketch into images; answers when they are ready."""
        request = _build(
            lambda: ds.SketchToImage(
                body.sketch_url, prompt=body.prompt, style=body.style, n=body.n
            )
        )
        return await _run(runner, request)

    @app.get("/health")
    async def health(runner: Runner) -> dict[str, str]:
        """Liveness: the runner is up."""
        return {"status": "ok"}

    return app


def _build(make: Callable[[], ds.Request]) -> ds.Request:
    # Requests validate when built: a bad style or URL is the caller's mistake, not ours.
    try:
        return make()
    except ds.ValidationError as exc:
        raise HTTPException(status_code=422, detail=f"{exc.field}: {exc.rule}") from None


async def _run(runner: ds.AsyncTaskRunner, request: ds.Request) -> ImagesOut:
    """Await the job and translate its typed error into an HTTP answer."""
    try:
        result = await runner.run(request)
    except ds.ValidationError as exc:  # a local file or a value the service rules out
        raise HTTPException(status_code=422, detail=f"{exc.field}: {exc.rule}") from None
    except ds.BudgetExceededError:
        raise HTTPException(status_code=402, detail="the spending cap is reached") from None
    except ds.TaskFailedError as exc:  # the service ran it and it failed (content, bad image)
        raise HTTPException(status_code=422, detail=f"the task failed: {exc.code}") from None
    except ds.TaskTimeoutError:
        raise HTTPException(status_code=504, detail="the image took too long") from None
    except ds.DashScopeError as exc:  # auth, quota, the service down: our problem, not theirs
        raise HTTPException(status_code=503, detail=type(exc).__name__) from None
    return ImagesOut(
        task_id=result.task_id,
        image_urls=[image.url for image in result.images],
        failed_images=len(result.failures),
    )


@asynccontextmanager
async def connect_to_emulator() -> AsyncIterator[ds.AsyncDashScope]:
    """The emulator served on loopback for the app's lifetime, and a client for it.

    Example:
        ```python
        app = create_app(connect_to_emulator)
        ```
    """
    from examples._emulated import emulated

    async with emulated(allow_local_files=False) as service:
        emulator = service.emulator
        # A plain print: the served emulator sets uvicorn's own loggers to warnings only.
        print(
            f"emulator ready: POST /repaint with image_url={emulator.sample_image_url('portrait')},"
            f" POST /sketch with sketch_url={emulator.sample_image_url('sketch')}",
            file=sys.stderr,
            flush=True,
        )
        yield service.client


# ``uvicorn examples.fastapi_app:app``: the client reads DASHSCOPE_API_KEY when the app starts.
app = create_app(poll=ds.PollPolicy(deadline=REQUEST_DEADLINE))
# ``uvicorn examples.fastapi_app:emulated_app``: no account needed.
emulated_app = create_app(connect_to_emulator, poll=ds.PollPolicy(deadline=REQUEST_DEADLINE))

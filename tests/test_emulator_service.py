"""The emulator as close to the service as its pages say, and kind to its users' tests.

Run-time shapes, made-up input URLs, result names, task ids, the models' own error wording,
workspaces, the task list's filters and the task times. In-process, on a manual clock.
"""

from __future__ import annotations

import io
import json
import random
import re
import statistics
import urllib.parse
from pathlib import PurePosixPath
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import dashscope_async as ds
from dashscope_async import _wire
from dashscope_async._config import ModelKind
from dashscope_async.testing import Call, Emulator, EmulatorConfig, ModelBehaviour
from dashscope_async.testing._inputs import INPUT_WORDING, fits, stand_in
from tests.images_util import make_image

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


def api(
    emulator: Emulator,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    *,
    key: str = KEY,
    workspace: str | None = None,
) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {key}"}
    if workspace is not None:
        headers["x-dashscope-workspace"] = workspace
    reply = emulator._core.handle(Call("api", method, "/api/v1" + path, query or {}, headers))
    return reply.status, json.loads(reply.body)


def task_of(emulator: Emulator, task_id: str) -> dict[str, Any]:
    status, answer = api(emulator, "GET", f"/tasks/{task_id}")
    assert status == 200
    return answer  # type: ignore[no-any-return]


def download(emulator: Emulator, url: str) -> Any:
    parsed = urllib.parse.urlsplit(url)
    return emulator._core.handle(
        Call(
            "result",
            "GET",
            urllib.parse.unquote(parsed.path),
            dict(urllib.parse.parse_qsl(parsed.query)),
            {},
        )
    )


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


async def test_a_zero_spread_runs_exactly_the_mean_and_a_zero_mean_is_instant() -> None:
    for changes in ({"run_sigma": 0.0}, {"run_distribution": "uniform", "run_jitter": 0.0}):
        runs = run_times(EmulatorConfig(seed=1).with_models(**changes), 5)
        assert runs == [25.0] * 5
    for shape in ("lognormal", "uniform", "pareto"):
        config = EmulatorConfig(seed=1).with_models(run_distribution=shape, run_seconds=0.0)
        assert run_times(config, 3) == [0.0] * 3


def test_a_heavy_tail_is_capped_at_fifty_times_the_mean() -> None:
    from dashscope_async.testing._core import _draw_run_seconds

    class FreakDraws(random.Random):
        def paretovariate(self, alpha: float) -> float:
            return 1e12

    behaviour = ModelBehaviour(run_seconds=10.0, run_distribution="pareto", run_tail=1.5)
    assert _draw_run_seconds(behaviour, 0.5, FreakDraws()) == pytest.approx(10.0 * 0.5 * 50)
    runs = run_times(EmulatorConfig(seed=5).with_models(run_distribution="pareto", run_tail=1.05))
    assert max(runs) <= 25.0 * 50


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("run_distribution", "normal"),
        ("run_jitter", 1.0),
        ("run_jitter", -0.1),
        ("run_tail", 1.0),
        ("run_sigma", -1.0),
        ("run_seconds", -1.0),
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


# --- made-up input URLs -------------------------------------------------------------------------

MADE_UP = "https://example.com/cat.png"


async def test_a_made_up_url_stands_for_an_image_that_passes_the_rules() -> None:
    clock = ManualClock()
    emulator = Emulator(EmulatorConfig(seed=2), clock=clock)
    repaint = submit(emulator, repaint_body(MADE_UP))["output"]["task_id"]
    clock.advance(40)
    sketch = submit(emulator, sketch_body("http://images.example.org/tree.jpg?v=2", n=2))
    clock.advance(60)
    answer = task_of(emulator, repaint)
    assert answer["output"]["task_status"] == "SUCCEEDED", answer
    assert answer["usage"] == {"image_count": 1}
    sketch_answer = task_of(emulator, sketch["output"]["task_id"])
    assert sketch_answer["output"]["task_metrics"] == {"TOTAL": 2, "SUCCEEDED": 2, "FAILED": 0}
    # The results are drawn from the stand-in: a repaint keeps its aspect at short side 1536.
    expected = stand_in(MADE_UP, ds.STYLE_REPAINT)
    reply = download(emulator, answer["output"]["results"][0]["url"])
    assert reply.status == 200
    with Image.open(io.BytesIO(reply.render())) as picture:
        short = min(expected.width, expected.height)
        assert picture.size == (
            round(expected.width * 1536 / short),
            round(expected.height * 1536 / short),
        )
    for item in sketch_answer["output"]["results"]:
        with Image.open(io.BytesIO(download(emulator, item["url"]).render())) as picture:
            assert picture.size == (768, 768)


async def test_a_made_up_url_succeeds_through_the_client_and_the_same_url_is_the_same_image() -> (
    None
):
    emulator = Emulator(time_scale=0.001)
    async with emulator.client() as client:
        first = await client.generate(ds.StyleRepaint(MADE_UP, style=ds.RepaintStyle.ANIME))
        again = await client.generate(ds.StyleRepaint(MADE_UP, style=ds.RepaintStyle.ANIME))
        other = await client.generate(
            ds.SketchToImage("https://cdn.example.net/doodle.webp", prompt="a house")
        )
    assert first.status is ds.TaskStatus.SUCCEEDED and other.status is ds.TaskStatus.SUCCEEDED
    picture = emulator._core.fetch_input(MADE_UP, REPAINT, emulator.now())
    assert picture == emulator._core.fetch_input(MADE_UP, REPAINT, emulator.now())
    assert isinstance(picture, bytes) and picture.startswith(b"\x89PNG")
    assert first.images[0].url != again.images[0].url


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60))
def test_every_stand_in_passes_its_models_rules(path: str) -> None:
    url = "https://example.com/" + path
    for spec in (ds.STYLE_REPAINT, ds.SKETCH_TO_IMAGE):
        made_up = stand_in(url, spec)
        assert fits(made_up.width, made_up.height, spec.image_rules)
        assert made_up == stand_in(url, spec)  # fixed by the URL


@pytest.mark.parametrize(("model", "body"), [(REPAINT, repaint_body), (SKETCH, sketch_body)])
async def test_strict_mode_fails_a_made_up_url_with_the_models_invalid_url(
    model: str, body: Any
) -> None:
    clock = ManualClock()
    emulator = Emulator(EmulatorConfig(seed=2, unknown_urls="fail"), clock=clock)
    task_id = submit(emulator, body(MADE_UP))["output"]["task_id"]
    clock.advance(5)
    output = task_of(emulator, task_id)["output"]
    kind: ModelKind = "repaint" if model == REPAINT else "sketch"
    expected = INPUT_WORDING[kind].unreachable
    assert (output["task_status"], output["code"], output["message"]) == (
        "FAILED",
        "InvalidURL",
        expected.message,
    )
    # Loopback inputs keep working in strict mode: samples and added images.
    good = emulator.add_image(make_image("PNG", 512, 512))
    task_id = submit(emulator, body(good))["output"]["task_id"]
    clock.advance(60)
    assert task_of(emulator, task_id)["output"]["task_status"] == "SUCCEEDED"


@pytest.fixture
def loopback_image() -> Any:
    """A PNG served by a plain HTTP server of the test's own on 127.0.0.1."""
    import http.server
    import threading

    picture = make_image("PNG", 640, 640)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/sketch.png"
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(len(picture) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(picture)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("unknown_urls", ["image", "fail"])
def test_loopback_urls_are_fetched_as_they_are_in_either_mode(
    loopback_image: str, unknown_urls: Any
) -> None:
    def outcome(url: str, **changes: Any) -> tuple[str, str | None]:
        clock = ManualClock()
        config = EmulatorConfig(seed=2, unknown_urls=unknown_urls, **changes)
        emulator = Emulator(config, clock=clock)
        task_id = submit(emulator, sketch_body(url))["output"]["task_id"]
        clock.advance(60)
        output = task_of(emulator, task_id)["output"]
        return output["task_status"], output.get("code")

    assert outcome(loopback_image + "/sketch.png") == ("SUCCEEDED", None)
    # A loopback URL is never a stand-in: missing, or not fetched, it fails.
    assert outcome(loopback_image + "/missing.png") == ("FAILED", "InvalidURL")
    not_fetched = outcome(loopback_image + "/sketch.png", fetch_loopback=False)
    assert not_fetched == ("FAILED", "InvalidURL")


def test_a_bad_unknown_urls_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown_urls"):
        EmulatorConfig(unknown_urls="ignore")  # type: ignore[arg-type]


# --- the models' own wording --------------------------------------------------------------------

WORDING_CASES = [
    pytest.param(REPAINT, make_image("PNG", 200, 300), "InvalidImageResolution",
                 "The input image resolution is too large or small", id="repaint-small"),
    pytest.param(REPAINT, make_image("GIF", 400, 400), "InvalidImageFormat",
                 "The input image is in invalid format", id="repaint-gif"),
    pytest.param(SKETCH, make_image("PNG", 2100, 1500), "InvalidFile.Resolution",
                 "The image resolution is invalid, please make sure that the aspect ratio is "
                 "smaller than 2.0, and largest length of image is smaller than 4096.",
                 id="sketch-big"),
    pytest.param(SKETCH, b"GIF89a not really", "InvalidURL",
                 "The request URL is invalid, please check the request URL is available and the "
                 "request image format is one of the following types: JPEG, JPG, PNG, BMP, and "
                 "WEBP.", id="sketch-format"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "image", "code", "message"), WORDING_CASES)
async def test_each_model_words_its_input_errors_as_its_page_does(
    model: str, image: bytes, code: str, message: str
) -> None:
    clock = ManualClock()
    emulator = Emulator(EmulatorConfig(seed=3), clock=clock)
    url = emulator.add_image(image)
    task_id = submit(emulator, repaint_body(url) if model == REPAINT else sketch_body(url))
    clock.advance(5)
    output = task_of(emulator, task_id["output"]["task_id"])["output"]
    assert (output["task_status"], output["code"], output["message"]) == ("FAILED", code, message)


async def test_a_malformed_repaint_url_is_refused_at_submit_in_the_pages_words() -> None:
    emulator = Emulator(EmulatorConfig(seed=3), clock=ManualClock())
    for url in ("https://example.com/a cat.png", "ftp://example.com/cat.png", "http://h:99999/x"):
        answer = submit(emulator, repaint_body(url))
        assert (answer["code"], answer["message"]) == (
            "InvalidURL",
            "The request URL is invalid, make sure the url is correct and is an image",
        )
    assert emulator.tasks == {}


# --- result file names --------------------------------------------------------------------------

RESULT_PATH = re.compile(r"^/1d/[0-9a-f]{2}/\d{8}/[0-9a-f]{8}/[0-9a-f-]{36}-[1-4]\.png$")


async def test_every_image_of_every_task_has_its_own_file_name_shaped_like_the_services() -> None:
    clock = ManualClock()
    emulator = Emulator(EmulatorConfig(seed=4, render_results=False).without_limits(), clock=clock)
    sample = emulator.sample_image_url("sketch")
    ids = [submit(emulator, sketch_body(sample, n=4))["output"]["task_id"] for _ in range(5)]
    ids.append(submit(emulator, repaint_body(emulator.sample_image_url()))["output"]["task_id"])
    clock.advance(60)
    urls = [item["url"] for i in ids for item in task_of(emulator, i)["output"]["results"]]
    assert len(urls) == 21
    paths = [urllib.parse.urlsplit(url).path for url in urls]
    assert all(RESULT_PATH.match(path) for path in paths), paths
    # Saved by the URL's file name, as the service's sample code does: nothing overwritten.
    names = [PurePosixPath(urllib.parse.unquote(path)).parts[-1] for path in paths]
    assert len(set(names)) == len(names)
    # The index counts from 1 within a task, as the service's names do.
    first_task = names[:4]
    assert [name.rsplit("-", 1)[1] for name in first_task] == ["1.png", "2.png", "3.png", "4.png"]
    assert all(download(emulator, url).status == 200 for url in urls)
    # Asked again, a task answers the same URLs.
    assert [item["url"] for item in task_of(emulator, ids[0])["output"]["results"]] == urls[:4]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=8))
def test_no_two_images_share_a_name_even_across_emulators_with_one_seed(sizes: list[int]) -> None:
    names: list[str] = []
    for _ in range(2):  # the same seed twice: the same task ids, still fresh file names
        clock = ManualClock()
        config = EmulatorConfig(seed=4, render_results=False).without_limits()
        emulator = Emulator(config, clock=clock)
        bodies = [
            sketch_body(emulator.sample_image_url("sketch"), n=n)
            if n
            else repaint_body(emulator.sample_image_url())
            for n in sizes
        ]
        ids = [submit(emulator, body)["output"]["task_id"] for body in bodies]
        clock.advance(60)
        for task_id, n in zip(ids, sizes, strict=True):
            results = task_of(emulator, task_id)["output"]["results"]
            assert len(results) == max(n, 1)
            names += [file_name(item["url"]) for item in results]
    assert len(set(names)) == len(names) == 2 * sum(max(n, 1) for n in sizes)


def file_name(url: str) -> str:
    """The name the service's own sample code saves a result under."""
    return PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).parts[-1]


async def test_a_result_name_is_served_only_as_it_was_handed_out() -> None:
    clock = ManualClock()
    emulator = Emulator(EmulatorConfig(seed=4, render_results=False), clock=clock)
    task_id = submit(emulator, sketch_body(emulator.sample_image_url("sketch"), n=2))
    clock.advance(60)
    results = task_of(emulator, task_id["output"]["task_id"])["output"]["results"]
    first = results[0]["url"]
    assert download(emulator, first).status == 200
    parsed = urllib.parse.urlsplit(first)
    expires = int(dict(urllib.parse.parse_qsl(parsed.query))["Expires"])
    key = parsed.path.lstrip("/")
    # Signed, yet never handed out: another index, extension or id is no image.
    for other in (
        key.replace("-1.png", "-2.png"),
        key.replace("-1.png", "-1.jpg"),
        key.replace("-1.png", ".png"),
        key[:-10] + "0000-1.png",
    ):
        assert download(emulator, emulator._core._signed_url(other, expires)).status == 404
    assert download(emulator, first.split("?")[0]).status == 403  # unsigned


# --- task ids -----------------------------------------------------------------------------------


def first_ids(emulator: Emulator, count: int = 3) -> list[str]:
    sample = emulator.sample_image_url("sketch")
    return [submit(emulator, sketch_body(sample))["output"]["task_id"] for _ in range(count)]


def test_two_emulators_give_different_task_ids_unless_given_one_seed() -> None:
    unlimited = EmulatorConfig().without_limits()
    one, two = Emulator(unlimited, clock=ManualClock()), Emulator(unlimited, clock=ManualClock())
    assert one.seed != two.seed
    assert not set(first_ids(one)) & set(first_ids(two))
    seeded = attrs.evolve(unlimited, seed=9)
    assert first_ids(Emulator(seeded, clock=ManualClock())) == first_ids(
        Emulator(seeded, clock=ManualClock())
    )
    # A drawn seed can be given back to repeat a run.
    drawn = Emulator(unlimited, clock=ManualClock())
    replay = Emulator(attrs.evolve(unlimited, seed=drawn.seed), clock=ManualClock())
    assert first_ids(drawn) == first_ids(replay)


# --- workspaces ---------------------------------------------------------------------------------


def test_declared_workspaces_refuse_an_unknown_one_as_the_error_table_gives() -> None:
    config = EmulatorConfig(
        api_keys=(KEY, "sk-other"),
        seed=5,
        workspaces={"ws-main": None, "ws-lab": (KEY,)},
    )
    emulator = Emulator(config, clock=ManualClock())
    sample = emulator.sample_image_url("sketch")
    accepted = submit(emulator, sketch_body(sample), **{"x-dashscope-workspace": "ws-main"})
    assert accepted["output"]["task_status"] == "PENDING"
    assert emulator.task(accepted["output"]["task_id"]).workspace == "ws-main"
    unknown = submit(emulator, sketch_body(sample), **{"x-dashscope-workspace": "ws-gone"})
    assert unknown["code"] == "WorkSpaceNotFound"
    for path in ("/tasks", f"/tasks/{accepted['output']['task_id']}"):
        status, answer = api(emulator, "GET", path, workspace="ws-gone")
        assert (status, answer["code"]) == (404, "WorkSpaceNotFound")
    status, answer = api(emulator, "GET", "/tasks", key="sk-other", workspace="ws-lab")
    assert (status, answer["code"]) == (403, "Workspace.AccessDenied")
    assert api(emulator, "GET", "/tasks", workspace="ws-lab")[0] == 200
    assert api(emulator, "GET", "/tasks", key="sk-other")[0] == 200  # no workspace named
    assert len(emulator.tasks) == 1
    assert "sk-other" not in repr(config)


def test_undeclared_workspaces_accept_any_id_and_a_list_of_ids_is_enough() -> None:
    anything = Emulator(EmulatorConfig(seed=5), clock=ManualClock())
    assert api(anything, "GET", "/tasks", workspace="ws-anything")[0] == 200
    listed = Emulator(EmulatorConfig(seed=5, workspaces=["ws-a", "ws-b"]), clock=ManualClock())
    assert api(listed, "GET", "/tasks", workspace="ws-b")[0] == 200
    assert api(listed, "GET", "/tasks", workspace="ws-c")[0] == 404
    with pytest.raises(TypeError, match="workspaces"):
        EmulatorConfig(workspaces="ws-a")
    with pytest.raises(ValueError, match=r"workspaces\['ws-a'\]") as caught:
        EmulatorConfig(workspaces={"ws-a": ("sk-secret-typo",)})
    assert "sk-secret-typo" not in str(caught.value)


async def test_the_client_sees_a_wrong_workspace_as_not_found_or_denied() -> None:
    emulator = Emulator(
        time_scale=0.001,
        api_keys=(KEY, "sk-other"),
        workspaces={"ws-main": None, "ws-lab": (KEY,)},
    )
    request = ds.SketchToImage(emulator.sample_image_url("sketch"), prompt="a tree")
    async with emulator.client(workspace="ws-other") as client:
        with pytest.raises(ds.NotFoundError) as caught:
            await client.submit(request)
    assert caught.value.code == "WorkSpaceNotFound"
    async with emulator.client(workspace="ws-lab", api_key="sk-other") as client:
        with pytest.raises(ds.PermissionDeniedError) as denied:
            await client.submit(request)
    assert denied.value.code == "Workspace.AccessDenied"
    assert emulator.tasks == {}
    async with emulator.client(workspace="ws-main") as client:
        assert (await client.generate(request)).status is ds.TaskStatus.SUCCEEDED


# --- the task list ------------------------------------------------------------------------------

LIST_KEYS = {
    "api_key_id", "caller_parent_id", "caller_uid", "gmt_create", "start_time", "end_time",
    "region", "request_id", "status", "task_id", "model_name", "user_api_unique_key",
}  # fmt: skip


def test_the_task_list_honours_api_key_id_and_region_and_carries_every_key() -> None:
    clock = ManualClock()
    emulator = Emulator(EmulatorConfig(api_keys=(KEY, "sk-two"), seed=6), clock=clock)
    sample = emulator.sample_image_url("sketch")
    mine = submit(emulator, sketch_body(sample))["output"]["task_id"]
    clock.advance(1)
    theirs = submit(
        emulator, sketch_body(sample), authorization="Bearer sk-two"
    )["output"]["task_id"]  # fmt: skip
    status, everything = api(emulator, "GET", "/tasks")
    assert status == 200 and {item["task_id"] for item in everything["data"]} == {mine, theirs}
    by_id = {item["task_id"]: item for item in everything["data"]}
    assert all(set(item) == LIST_KEYS for item in everything["data"])
    assert by_id[theirs]["start_time"] is None and by_id[theirs]["end_time"] is None  # PENDING
    assert by_id[mine]["start_time"] is not None and by_id[mine]["end_time"] is None  # RUNNING

    key_id = by_id[theirs]["api_key_id"]
    assert key_id != by_id[mine]["api_key_id"] and "sk-two" not in json.dumps(everything)
    _, filtered = api(emulator, "GET", "/tasks", {"api_key_id": key_id})
    assert [item["task_id"] for item in filtered["data"]] == [theirs] and filtered["total"] == 1
    _, here = api(emulator, "GET", "/tasks", {"region": "cn-beijing"})
    assert here["total"] == 2 and all(item["region"] == "cn-beijing" for item in here["data"])
    _, elsewhere = api(emulator, "GET", "/tasks", {"region": "ap-southeast-1"})
    assert (elsewhere["total"], elsewhere["data"], elsewhere["total_page"]) == (0, [], 0)

    clock.advance(120)
    _, done = api(emulator, "GET", "/tasks")
    assert all(item["end_time"] is not None for item in done["data"])
    # Our client reads these items, nulls and all.
    items = [_wire.load(item, _wire.TaskListItemWire, what="item") for item in done["data"]]
    assert {item.status for item in items} == {"SUCCEEDED"}


# --- times --------------------------------------------------------------------------------------


def test_a_task_being_scheduled_reads_pending_and_can_no_longer_be_cancelled() -> None:
    clock = ManualClock()
    emulator = Emulator(EmulatorConfig(seed=7), clock=clock)
    task_id = submit(emulator, repaint_body(emulator.sample_image_url()))["output"]["task_id"]
    assert task_of(emulator, task_id)["output"]["task_status"] == "PENDING"
    status, answer = api(emulator, "POST", f"/tasks/{task_id}/cancel")
    assert (status, answer["code"]) == (400, "UnsupportedOperation")
    task = emulator.task(task_id)
    assert task.started_at == pytest.approx(task.submitted_at + task.scheduling_seconds)
    clock.advance(0.061)
    assert task_of(emulator, task_id)["output"]["task_status"] == "RUNNING"


def test_scheduling_delays_scale_with_time_and_are_tens_of_milliseconds() -> None:
    emulator = Emulator(EmulatorConfig(seed=8).without_limits(), clock=ManualClock())
    fast = Emulator(EmulatorConfig(seed=8, time_scale=0.1).without_limits(), clock=ManualClock())
    for _ in range(50):
        for each in (emulator, fast):
            submit(each, sketch_body(each.sample_image_url("sketch")))
    real = [task.scheduling_seconds for task in emulator.tasks.values()]
    lags = [task.start_lag_seconds for task in emulator.tasks.values()]
    assert all(0.02 <= delay <= 0.06 for delay in real) and statistics.stdev(real) > 0.005
    assert all(0.005 <= lag <= 0.04 for lag in lags)
    scaled = [task.scheduling_seconds for task in fast.tasks.values()]
    assert scaled == pytest.approx([delay * 0.1 for delay in real])


def test_a_sketchs_times_follow_the_same_order() -> None:
    clock = ManualClock()
    emulator = Emulator(EmulatorConfig(seed=8), clock=clock)
    task_id = submit(emulator, sketch_body(emulator.sample_image_url("sketch")))["output"][
        "task_id"
    ]
    clock.advance(60)
    output = task_of(emulator, task_id)["output"]
    submitted, scheduled, ended = (
        _wire.parse_service_time(output[name])
        for name in ("submit_time", "scheduled_time", "end_time")
    )
    assert submitted and scheduled and ended
    assert (
        0.02
        <= (scheduled - submitted).total_seconds()
        <= 0.06
        < (ended - scheduled).total_seconds()
    )
    assert "start_time" not in output  # a repaint field only


# --- the command line ---------------------------------------------------------------------------


def test_the_command_line_has_a_strict_url_flag_and_a_fresh_seed_by_default() -> None:
    from dashscope_async.testing.__main__ import build, parse_args

    default = build(parse_args([]))
    assert default.config.unknown_urls == "image" and default.config.seed is None
    strict = build(parse_args(["--strict-urls", "--seed", "4"]))
    assert strict.config.unknown_urls == "fail" and strict.seed == 4


def test_the_cli_emulator_command_offers_the_strict_url_flag() -> None:
    from click.testing import CliRunner

    from dashscope_async.cli import cli

    result = CliRunner().invoke(cli, ["emulator", "--help"])
    assert result.exit_code == 0, result.output
    assert "--strict-urls" in result.output

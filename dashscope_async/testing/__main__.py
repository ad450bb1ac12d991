"""``python -m dashscope_async.testing``: serve the emulator on 127.0.0.1 for local development.

Owns the command line only (options, the banner, waiting for Ctrl-C); the emulator does the rest.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence

import attrs

from ._config import DEFAULT_API_KEY, EmulatorConfig
from ._emulator import Emulator, RunningServer
from ._faults import Fault, TaskFault, parse_fault_spec


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dashscope_async.testing",
        description="Serve the DashScope emulator on 127.0.0.1 (API, upload and result hosts).",
    )
    parser.add_argument("--port", type=int, default=8089, help="API port (0: any free port)")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="multiply task run times (0.1: 10x faster)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="repeat ids, run times and faults (default: fresh)"
    )
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the key to accept")
    parser.add_argument("--no-limits", action="store_true", help="lift every rate limit")
    parser.add_argument(
        "--strict-urls",
        action="store_true",
        help="fail tasks whose input URLs cannot be fetched (InvalidURL) instead of standing "
        "in an image for a made-up URL",
    )
    parser.add_argument(
        "--faults",
        default="",
        help="route:fault:probability items, comma-separated, e.g. "
        "'submit:503:0.1,get_task:429:0.05,task:InternalError.Algo:0.1'",
    )
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> Emulator:
    """The emulator the options describe."""
    config = EmulatorConfig(
        api_keys=(args.api_key,),
        time_scale=args.time_scale,
        seed=args.seed,
        unknown_urls="fail" if args.strict_urls else "image",
    )
    if args.no_limits:
        config = config.without_limits()
    emulator = Emulator(config)
    for route, fault, probability in parse_fault_spec(args.faults):
        if isinstance(fault, TaskFault):
            emulator.faults.fail_tasks_randomly(probability, **attrs.asdict(fault))
        else:
            assert isinstance(fault, Fault)
            emulator.faults.chance(route, fault, probability)  # type: ignore[arg-type]
    return emulator


def banner(server: RunningServer) -> str:
    """What a user needs to point a client at the served emulator, with inputs it serves."""
    emulator = server.emulator
    return (
        f"DashScope emulator serving on 127.0.0.1\n"
        f"  base URL:    {server.base_url}\n"
        f"  upload host: {server.upload_url}\n"
        f"  result host: {server.result_url}\n"
        f"  API key:     {server.api_key}\n"
        f"  sample images (use them as inputs):\n"
        f"    portrait:  {emulator.sample_image_url('portrait')}\n"
        f"    sketch:    {emulator.sample_image_url('sketch')}\n\n"
        f"export DASHSCOPE_HTTP_BASE_URL={server.base_url} DASHSCOPE_API_KEY={server.api_key}\n"
        "Press Ctrl-C to stop.\n"
    )


def serve(args: argparse.Namespace) -> int:
    """Build the emulator the options describe and serve it until Ctrl-C (exit status)."""
    try:
        emulator = build(args)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    stop = threading.Event()
    with emulator.serve_sync(port=args.port) as server:
        sys.stdout.write(banner(server))
        sys.stdout.flush()
        try:
            while not stop.wait(3600):
                pass
        except KeyboardInterrupt:
            sys.stdout.write("stopped\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return serve(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

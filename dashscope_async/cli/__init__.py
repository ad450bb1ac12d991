"""The command line, ``dashscope-async`` (extra ``cli``): a demo on the built-in emulator, single
jobs, batches from a manifest with live progress and a journal, task lookups, the style list.

Owns the command tree and the global options. Commands live in their own modules; none of
them prints, logs or writes the API key.

Example:
    ```console
    $ dashscope-async demo
    $ dashscope-async repaint me.jpg --style anime -o out/
    $ dashscope-async batch jobs.csv -o out/ --budget 5.00CNY
    ```
"""

from __future__ import annotations

import sys

import click

from .._version import __version__
from ._app import CliError, ExitCode, Settings, configure_logging
from ._batch import batch
from ._demo import demo
from ._emulator import emulator
from ._journal import journal
from ._reconcile import reconcile
from ._single import repaint, sketch
from ._styles import styles
from ._tasks import tasks

__all__ = ["CliError", "ExitCode", "cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--api-key",
    metavar="KEY",
    help="Your DashScope API key [default: $DASHSCOPE_API_KEY]. Never printed or written.",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="The API root, including /api/v1 [default: $DASHSCOPE_HTTP_BASE_URL, else Beijing].",
)
@click.option(
    "--workspace",
    metavar="ID",
    help="Sent as X-DashScope-WorkSpace [default: $DASHSCOPE_WORKSPACE].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every request (without credentials).")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors (and --json output).")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable JSON on stdout.")
@click.version_option(__version__, prog_name="dashscope-async")
@click.pass_context
def cli(
    ctx: click.Context,
    api_key: str | None,
    base_url: str | None,
    workspace: str | None,
    verbose: bool,
    quiet: bool,
    json_output: bool,
) -> None:
    """DashScope image tasks from the command line: style repaint and sketch to image,
    at your account's limits (2 submissions/s, 1 task in progress per model).

    \b
    Start here (no API key needed):  dashscope-async demo
    """
    if verbose and quiet:
        raise CliError("give --verbose or --quiet, not both")
    settings = Settings(
        api_key=api_key,
        base_url=base_url,
        workspace=workspace,
        verbose=verbose,
        quiet=quiet,
        json_output=json_output,
    )
    ctx.obj = settings
    configure_logging(settings)


for command in (demo, repaint, sketch, batch, journal, tasks, styles, emulator):
    cli.add_command(command)
tasks.add_command(reconcile)


def main() -> None:
    """The ``dashscope-async`` entry point.

    Runs the command tree itself rather than in click's standalone mode, so that Ctrl-C
    anywhere (while a manifest is read and checked, say) exits with the documented status 130
    instead of click's "Aborted!" and 1.
    """
    try:
        status = cli.main(prog_name="dashscope-async", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except (click.Abort, KeyboardInterrupt):
        sys.stderr.write("\nInterrupted.\n")
        raise SystemExit(int(ExitCode.INTERRUPTED)) from None
    raise SystemExit(status if isinstance(status, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()

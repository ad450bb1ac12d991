"""``python -m dashscope_async``: the command line (extra ``cli``)."""

from __future__ import annotations

import sys


def _run() -> None:
    try:
        from dashscope_async.cli import main
    except ImportError as exc:  # click or rich missing: say which extra brings them
        sys.stderr.write(
            f"Error: the command line needs the 'cli' extra ({exc.name} is missing).\n"
            "Hint: pip install 'dashscope-async[cli]'\n"
        )
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C while the command line is still loading
        raise SystemExit(130) from None
    main()


if __name__ == "__main__":
    _run()

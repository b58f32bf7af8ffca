"""`headway serve`: the server, exactly as `python -m headway.server` runs it.

The server owns its settings (flags, `HEADWAY_*` variables, .env) and its
start-up; this command hands it the arguments after `serve` and gets out of the
way, so the two can never drift apart.
"""

from __future__ import annotations

import sys

from headway.cli.errors import CliError


def serve(server_args: list[str]) -> int:
    """Run the server until SIGINT or SIGTERM with `server_args` as its command line."""
    try:
        from headway.server import __main__ as server_main
    except ImportError as error:
        raise CliError(
            f"the server is not installed ({error.name} is missing): pip install 'headway[server]'"
        ) from error
    # The server's entry point reads its flags from sys.argv, like any console script.
    saved, sys.argv = sys.argv, ["headway serve", *server_args]
    try:
        server_main.main()
    finally:
        sys.argv = saved
    return 0


__all__ = ["serve"]

"""`python -m headway.server`: run the server until SIGINT or SIGTERM.

`python -m headway.server token create|revoke …` edits a token file instead
(see headway.server.auth.command).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from headway.server.app import create_server
from headway.server.auth.factory import AuthenticationSetupError
from headway.server.config import Settings
from headway.server.memory import freeze_start_up_objects
from headway.server.observe import configure_logging
from headway.server.protected import ExposureError
from headway.server.store.lock import DatabaseInUseError
from headway.server.tls import TlsConfigError

# How long a busy thread keeps the GIL from one that asks for it (Python's default: 5 ms).
# The commit of every mutation runs on the store's writer thread: while the event loop is
# busy fanning out, each time that thread needed the GIL it waited the full default, several
# times per call (measured: ack p99 beside 2,000 idle streams 55 ms, 22 ms with 0.5 ms).
GIL_SWITCH_SECONDS = 0.0005


async def serve(settings: Settings) -> None:
    # The handlers come first: a signal that arrives once the server answers
    # (as soon as create_server has returned) must stop it cleanly, not kill it.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = await create_server(settings)
    # SIGHUP: read the token file now, so a revoked token stops working at once.
    loop.add_signal_handler(signal.SIGHUP, running.reload_credentials)
    freeze_start_up_objects()
    await stop.wait()
    logging.getLogger("headway").info("shutting down")
    await running.stop()


def describe(error: ValidationError) -> str:
    """One line per refused setting, named as the operator set it (flag or variable)."""
    lines = []
    for problem in error.errors():
        path = [str(part) for part in problem["loc"]]
        message = problem["msg"].removeprefix("Value error, ")
        if not path:  # a rule across settings names them in its message
            lines.append(f"  {message}")
            continue
        flag = "--" + ".".join(part.replace("_", "-") for part in path)
        variable = "HEADWAY_" + "__".join(path).upper()
        lines.append(f"  {flag} ({variable}): {message}")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["token"]:
        # `headway-server token create|revoke …`: edit the token file; no server.
        from headway.server.auth.command import main as token_main

        raise SystemExit(token_main(sys.argv[2:]))
    try:
        settings = Settings(_cli_parse_args=True)
    except ValidationError as error:
        print(f"headway-server: invalid settings:\n{describe(error)}", file=sys.stderr)
        raise SystemExit(2) from error
    configure_logging(settings.log_level, settings.log_format)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(serve(settings))
    except DatabaseInUseError as error:
        # Another server owns the database: say who, and do not start a second writer.
        print(f"headway-server: {error}", file=sys.stderr)
        raise SystemExit(1) from error
    except (AuthenticationSetupError, ExposureError, TlsConfigError) as error:
        # A configuration the server must not or cannot serve: a usage error, like bad settings.
        print(f"headway-server: {error}", file=sys.stderr)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()

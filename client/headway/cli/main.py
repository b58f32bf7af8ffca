"""`headway`: the command line. Parses the arguments, runs one subcommand, reports failures.

Every failure a person can cause or meet (a server that is not there, a filter
the server rejects, a task that does not exist) ends as one line on stderr and a
non-zero exit: 1 for a failed command, 2 for a usage error, 77 when the server
refuses the caller (UNAUTHENTICATED or PERMISSION_DENIED), 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from headway.cli.errors import REFUSED_EXIT_CODE, CliError, describe
from headway.cli.filters import LEVEL_NAMES, add_filter_arguments
from headway.client import (
    SERVER_ENV,
    HeadwayClient,
    HeadwayError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from headway.client.security import read_token_file

CLI_DEFAULT_SERVER = "localhost:50051"

Handler = Callable[[argparse.Namespace, HeadwayClient], Awaitable[int]]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, not usage plus error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def positive_seconds(text: str) -> float:
    """A number of seconds above zero; argparse reports anything else as a usage error."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def count(text: str, *, least: int) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < least:
        kind = "a positive" if least > 0 else "zero or a positive"
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind} whole number")
    return number


def positive_int(text: str) -> int:
    """A whole number above zero; argparse reports anything else as a usage error."""
    return count(text, least=1)


def natural(text: str) -> int:
    """Zero or a positive whole number; argparse reports anything else as a usage error."""
    return count(text, least=0)


def add_connection_arguments(parser: argparse.ArgumentParser, *, after: bool) -> None:
    """--server and --timeout, accepted before the command and after it (see below)."""
    parser.add_argument(
        "--server",
        default=argparse.SUPPRESS if after else os.environ.get(SERVER_ENV) or CLI_DEFAULT_SERVER,
        metavar="HOST:PORT",
        help=f"the server to talk to (default: ${SERVER_ENV} or {CLI_DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=argparse.SUPPRESS if after else 10.0,
        metavar="SECONDS",
        help="for each call, above zero (default: 10)",
    )


def add_security_arguments(parser: argparse.ArgumentParser, *, after: bool) -> None:
    """--token, --tls and the rest, accepted before the command and after it.

    After the command their defaults are SUPPRESS, so a value given before the
    command is not overwritten by the subcommand's default; one given after wins.
    """
    default = argparse.SUPPRESS if after else None
    group = parser.add_argument_group("authentication and TLS")
    group.add_argument(
        "--token", default=default, help="bearer token sent with every call ($HEADWAY_TOKEN)"
    )
    group.add_argument(
        "--token-file",
        default=default,
        metavar="FILE",
        help="file whose first line is the token ($HEADWAY_TOKEN_FILE)",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=default,
        help="speak TLS ($HEADWAY_TLS=1; implied by --ca, --cert, --key)",
    )
    group.add_argument(
        "--ca",
        default=default,
        metavar="PEM",
        help="CA certificates to trust for the server's ($HEADWAY_CA; default: the system's)",
    )
    group.add_argument(
        "--cert",
        default=default,
        metavar="PEM",
        help="client certificate, for mutual TLS ($HEADWAY_CERT)",
    )
    group.add_argument(
        "--key", default=default, metavar="PEM", help="private key of --cert ($HEADWAY_KEY)"
    )


def connection_options(args: argparse.Namespace) -> dict[str, Any]:
    """HeadwayClient's token and TLS arguments from the flags; None leaves a setting to the
    environment (HEADWAY_TOKEN, HEADWAY_TOKEN_FILE, HEADWAY_TLS, HEADWAY_CA…)."""
    token = args.token
    if token is None and args.token_file is not None:
        try:
            token = read_token_file(args.token_file)
        except ValueError as error:
            raise CliError(str(error), exit_code=2) from error
    return {
        "token": token,
        "tls": True if args.tls else None,
        "ca": args.ca,
        "cert": args.cert,
        "key": args.key,
    }


def build_parser() -> Parser:
    parser = Parser(
        prog="headway",
        description="Real-time task progress over gRPC: run the server, watch tasks live, "
        "list, cancel and delete them.",
    )
    add_connection_arguments(parser, after=False)
    add_security_arguments(parser, after=False)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    common = Parser(add_help=False)
    add_connection_arguments(common, after=True)
    add_security_arguments(common, after=True)

    commands.add_parser(
        "serve",
        help="run the server (takes the flags of `python -m headway.server`; see "
        "`headway serve --help`)",
        add_help=False,
    )

    watch = commands.add_parser(
        "watch", parents=[common], help="follow tasks live: progress, steps, logs"
    )
    add_filter_arguments(watch)
    watch.add_argument(
        "--logs", type=natural, default=3, metavar="N", help="latest log lines per task (0: none)"
    )
    watch.add_argument(
        "--limit", type=natural, default=20, metavar="N", help="tasks shown at most (0: all)"
    )
    watch.add_argument(
        "--plain", action="store_true", help="one line per change, even on a terminal"
    )
    watch.add_argument(
        "--until-done",
        action="store_true",
        help="exit once every task shown is at rest; exit 1 at once when none of the "
        "TASK_IDs exists (without --until-done, the watch says so once and goes on, "
        "in case they are created later)",
    )
    watch.set_defaults(handler="cmd_watch")

    tasks = commands.add_parser("tasks", parents=[common], help="list tasks")
    add_filter_arguments(tasks)
    tasks.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tasks.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="only the newest N tasks (all are listed, oldest first, and the last N kept; "
        "default: all)",
    )
    tasks.set_defaults(handler="cmd_tasks")

    task = commands.add_parser("task", parents=[common], help="show one task in detail")
    task.add_argument("task_id", metavar="TASK_ID")
    task.add_argument("--json", action="store_true", help="print the task as JSON")
    task.set_defaults(handler="cmd_task")

    logs = commands.add_parser("logs", parents=[common], help="print a task's log lines")
    logs.add_argument("task_id", metavar="TASK_ID")
    logs.add_argument("--level", choices=LEVEL_NAMES, help="this level and above only")
    logs.add_argument("--step", default="", metavar="KEY", help="lines about this step only")
    logs.add_argument("--search", default="", metavar="TEXT", help="lines containing TEXT")
    logs.add_argument(
        "-n",
        "--tail",
        type=int,
        metavar="N",
        help="only the last N lines (with --follow, then the new ones)",
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until the task rests"
    )
    logs.add_argument("--json", action="store_true", help="one JSON object per line")
    logs.set_defaults(handler="cmd_logs")

    cancel = commands.add_parser("cancel", parents=[common], help="ask a task's agent to stop")
    cancel.add_argument("task_id", metavar="TASK_ID")
    cancel.add_argument("--reason", default="", help="why, for the people reading the task")
    cancel.add_argument("--by", default="", metavar="WHO", help="who asks (default: user@host)")
    cancel.add_argument(
        "--force", action="store_true", help="cancel at once, without waiting for the agent"
    )
    cancel.add_argument(
        "--deadline",
        type=positive_seconds,
        metavar="SECONDS",
        help="how long the agent has to confirm before the server cancels the task anyway "
        "(default: the server's, 60 s)",
    )
    cancel.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=60.0,
        metavar="SECONDS",
        help="wait until the task is at rest (default 60 s)",
    )
    cancel.set_defaults(handler="cmd_cancel")

    delete = commands.add_parser("delete", parents=[common], help="delete a task at rest")
    delete.add_argument("task_id", metavar="TASK_ID")
    delete.set_defaults(handler="cmd_delete")

    demo = commands.add_parser(
        "demo", parents=[common], help="simulated agents at work, to see everything move"
    )
    demo.add_argument(
        "--speed", type=float, default=1.0, metavar="FACTOR", help="run FACTOR times faster"
    )
    demo.add_argument(
        "--embedded",
        action="store_true",
        help="always run an embedded server on a temporary database",
    )
    demo.add_argument("--plain", action="store_true", help="one line per change")
    demo.set_defaults(handler="cmd_demo")
    return parser


def run(argv: Sequence[str]) -> int:
    """Run the command line; returns the exit code."""
    argv = list(argv)
    if argv[:1] == ["serve"]:
        # The server parses its own flags; everything after `serve` is theirs.
        from headway.cli.serve import serve

        return _guard(lambda: serve(argv[1:]), CLI_DEFAULT_SERVER)
    try:
        from headway.cli import commands, demo
    except ImportError as error:
        print(
            f"headway: the command line needs {error.name}: pip install 'headway[cli]'",
            file=sys.stderr,
        )
        return 1
    args = build_parser().parse_args(argv)
    handlers: dict[str, Handler] = {
        "cmd_watch": commands.cmd_watch,
        "cmd_tasks": commands.cmd_tasks,
        "cmd_task": commands.cmd_task,
        "cmd_logs": commands.cmd_logs,
        "cmd_cancel": commands.cmd_cancel,
        "cmd_delete": commands.cmd_delete,
        "cmd_demo": demo.cmd_demo,
    }
    handler = handlers[args.handler]

    async def call() -> int:
        args.connection = connection_options(args)
        try:
            client = HeadwayClient(args.server, timeout=args.timeout, **args.connection)
        except ValueError as error:  # a certificate, key or token file it cannot use
            raise CliError(str(error), exit_code=2) from error
        async with client:
            return await handler(args, client)

    return _guard(lambda: asyncio.run(call()), args.server)


def _guard(command: Callable[[], int], target: str) -> int:
    """Run a command; turn every failure a person may meet into one line and an exit code."""
    try:
        return command()
    except KeyboardInterrupt:
        return 130
    except CliError as error:
        print(f"headway: {error}", file=sys.stderr)
        return error.exit_code
    except HeadwayError as error:
        print(f"headway: {describe(error, target)}", file=sys.stderr)
        if isinstance(error, UnauthenticatedError | PermissionDeniedError):
            return REFUSED_EXIT_CODE
        return 1
    except BrokenPipeError:
        # `headway watch | head`: the reader left, which is not an error of ours. Point
        # stdout at /dev/null so the flush at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def main() -> None:
    """The `headway` console script."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()

"""`headway-server token create|revoke`: edit a token file without a running server.

`create` appends a new token's hash line (creating the file with mode 0600)
and prints the token once on stdout, with a hint on stderr, so that
`TOKEN=$(headway-server token create …)` captures just the token. `revoke`
removes every line of a name. A running server picks either change up within
a second, or at once on SIGHUP.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from headway.server.auth.principal import Role
from headway.server.auth.tokens import ANY_TENANT, append_token, remove_name


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headway-server token", description="Create or revoke bearer tokens in a token file."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="add a token for a principal and print it once")
    create.add_argument("--token-file", type=Path, required=True, help="the token file")
    create.add_argument("--name", required=True, help="the principal's name")
    create.add_argument(
        "--tenant", required=True, help="its tenant ('*' with role admin: every tenant)"
    )
    create.add_argument(
        "--role", required=True, choices=[role.value for role in Role], help="its role"
    )
    revoke = commands.add_parser("revoke", help="remove every token (and certificate) of a name")
    revoke.add_argument("--token-file", type=Path, required=True, help="the token file")
    revoke.add_argument("--name", required=True, help="the principal's name")
    return parser


def main(argv: Sequence[str]) -> int:
    arguments = parser().parse_args(argv)
    path: Path = arguments.token_file
    if arguments.command == "create":
        try:
            secret = append_token(path, arguments.name, arguments.tenant, arguments.role)
        except (ValueError, OSError) as error:
            print(f"headway-server token: {error}", file=sys.stderr)
            return 2
        print(secret)
        hint = "shown once, store it now; send it as 'authorization: Bearer <token>'"
        if arguments.tenant == ANY_TENANT:
            hint += " (the server needs --auth-allow-cross-tenant-admin for tenant '*')"
        print(f"headway-server token: {hint}", file=sys.stderr)
        return 0
    try:
        removed = remove_name(path, arguments.name)
    except OSError as error:
        print(f"headway-server token: {error}", file=sys.stderr)
        return 2
    if not removed:
        print(f"headway-server token: no entry for {arguments.name!r} in {path}", file=sys.stderr)
        return 1
    print(
        f"headway-server token: removed {removed} line(s) for {arguments.name!r}", file=sys.stderr
    )
    return 0

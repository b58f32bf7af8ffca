"""How the command line reports failures: one readable line, never a traceback."""

from __future__ import annotations

from headway.client.errors import HeadwayError, UnavailableError


class CliError(Exception):
    """A failure to report as it is, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe(error: HeadwayError, target: str) -> str:
    """One line saying what went wrong, in the server's words when it gave some."""
    if isinstance(error, UnavailableError) and not error.reason:
        # No ErrorInfo: the transport failed, the server never answered.
        return (
            f"cannot reach a Headway server at {target} (is it running? "
            "`headway serve` starts one; --server or HEADWAY_SERVER picks another)"
        )
    line = error.message or error.code.name
    if error.field_violations:
        line += " (" + "; ".join(f"{f}: {d}" for f, d in error.field_violations.items()) + ")"
    if error.reason and error.reason != "FIELD_VIOLATION":
        line += f" [{error.reason}]"
    return " ".join(line.split())  # a message that spans lines still prints as one


__all__ = ["CliError", "describe"]

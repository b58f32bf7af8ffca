"""How the command line reports failures: one readable line, never a traceback."""

from __future__ import annotations

from headway.client.errors import (
    HeadwayError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)

REFUSED_EXIT_CODE = 77
"""The exit code when the server refused the caller: not authenticated, or not allowed
(EX_NOPERM in sysexits.h)."""


class CliError(Exception):
    """A failure to report as it is, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe(error: HeadwayError, target: str) -> str:
    """One line saying what went wrong, in the server's words when it gave some."""
    if isinstance(error, UnauthenticatedError | PermissionDeniedError):
        return _refusal(error)
    if isinstance(error, UnavailableError) and not error.reason:
        # No ErrorInfo: the transport failed, the server never answered.
        if _tls_failure(error.message):
            return _one_line(
                f"TLS with {target} failed (--tls, --ca, --cert and --key must match the "
                f"server's TLS settings): {error.message}"
            )
        if "socket closed" in error.message.lower():
            # Connected, then dropped: TLS against plaintext or back, or a missing certificate.
            return _one_line(
                f"the server at {target} closed the connection (does it need TLS or a client "
                f"certificate? --tls, --ca, --cert, --key): {error.message}"
            )
        return (
            f"cannot reach a Headway server at {target} (is it running? "
            "`headway serve` starts one; --server or HEADWAY_SERVER picks another)"
        )
    line = error.message or error.code.name
    if error.field_violations:
        line += " (" + "; ".join(f"{f}: {d}" for f, d in error.field_violations.items()) + ")"
    if error.reason and error.reason != "FIELD_VIOLATION":
        line += f" [{error.reason}]"
    return _one_line(line)


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a message that spans lines still prints as one


def _refusal(error: HeadwayError) -> str:
    """`not authenticated (TOKEN_INVALID): …` or `permission denied (NOT_TASK_OWNER): …`."""
    what = "not authenticated" if isinstance(error, UnauthenticatedError) else "permission denied"
    reason = f" ({error.reason})" if error.reason else ""
    line = f"{what}{reason}: {error.message or error.code.name}"
    if error.reason == "TOKEN_MISSING":
        line += " (pass --token or --token-file, or set HEADWAY_TOKEN)"
    return _one_line(line)


def _tls_failure(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in ("ssl", "tls", "handshake", "certificate"))


__all__ = ["REFUSED_EXIT_CODE", "CliError", "describe"]

"""Exit codes and the one error type the commands raise, so a script can branch on the outcome.

Every failure a user can cause or meet ends as a :class:`CliError`: ``main`` prints its
message as one line on stderr and exits with its code. No traceback reaches the terminal.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What ``squarenet`` returns to the shell."""

    OK = 0
    JOB_NOT_SUCCEEDED = 1  # the followed job ended FAILED or CANCELLED
    USAGE = 2  # bad flags or arguments (argparse uses 2 as well)
    UNREACHABLE = 3  # no connection to the service, or it stopped answering
    REJECTED = 4  # the service refused the request: HTTP 4xx, gRPC INVALID_ARGUMENT, NOT_FOUND ...
    SERVICE_ERROR = 5  # the service is up but cannot answer: HTTP 5xx, gRPC UNAVAILABLE, INTERNAL
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class CliError(Exception):
    """A failure to report as one line on stderr, ending the command with ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

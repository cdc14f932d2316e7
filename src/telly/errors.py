"""User mistakes and the boundary where they become one line: the CLI and every sweep executor."""

import sys
import typing

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


class UserError(ValueError):
    """A mistake in what the user asked for (a path, a file, an option value).

    The CLI prints its message as one line and exits with code 2; library callers get a normal
    exception they can catch.
    """


def one_line(error: BaseException) -> str | None:
    """What a user mistake or a failing environment says to the user, as one line; None for
    anything else (a bug, whose traceback is worth more than a line)."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError):
        # Disk full, permissions, a vanished file: the environment, not a bug; say what and where.
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or error}{where}"
    return None


def at_the_boundary(action: typing.Callable[[], object], after_interrupt: typing.Callable[[], str] = lambda: "") -> int:
    """Run `action`; a user mistake or a failing environment is one line on stderr and exit code 2,
    Ctrl-C one line (with what the command says about it) and exit code 130."""
    try:
        action()
    except (UserError, OSError) as error:
        print(f"telly: error: {one_line(error)}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        hint = after_interrupt()
        print("telly: interrupted" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0

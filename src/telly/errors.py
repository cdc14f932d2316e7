"""User mistakes and the boundary where they become one line: the CLI and every sweep executor."""

import signal
import sys
import threading
import typing
from collections.abc import Iterator
from contextlib import contextmanager

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
    Ctrl-C one line (with what the command says about it) and exit code 130, also when Python
    dropped its KeyboardInterrupt (`interrupts_remembered`)."""
    try:
        with interrupts_remembered():
            action()
    except (UserError, OSError) as error:
        print(f"telly: error: {one_line(error)}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        hint = after_interrupt()
        print("telly: interrupted" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0


_interrupted = threading.Event()


@contextmanager
def interrupts_remembered() -> Iterator[None]:
    """Inside the block Ctrl-C raises KeyboardInterrupt as usual and is also remembered, for
    `raise_if_interrupted`: Python drops an exception raised while a finalizer (a `__del__`) runs,
    so a Ctrl-C landing there would be lost and the command would run on to its end. Loops check
    at each step (training) or batch (`Runtime.infer`); a remembered interrupt that no check met
    is raised when the block ends. Where the handler is not Python's default (set by the caller,
    or an enclosing block) or cannot be set (not the main thread), nothing changes."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def remember_and_raise(signal_number, frame):
        _interrupted.set()
        signal.default_int_handler(signal_number, frame)

    _interrupted.clear()
    signal.signal(signal.SIGINT, remember_and_raise)
    try:
        yield
        raise_if_interrupted()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _interrupted.clear()


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C that `interrupts_remembered` saw but that never arrived."""
    if _interrupted.is_set():
        raise KeyboardInterrupt

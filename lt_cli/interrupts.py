"""Ctrl-C and SIGTERM stop a command the same way, even where a library swallows the exception.

Every command runs under :func:`handling` (see ``commands/common.run_command``). Its handler raises
``KeyboardInterrupt`` for SIGINT and :class:`lt_cli.errors.Terminated` for SIGTERM in the main
thread, so the command's cleanup runs as for any error (temporary files removed, locks released,
a resumable ``.partial`` kept), and lt exits 130 or 143.

Why the handler also *records* the signal: Python raises the exception wherever the main thread is
when the signal lands, which may be inside a library (a heavy import, a ``__del__``) that catches
it with a bare ``except:`` and carries on. The command would then run to the end and commit its
output. :func:`raise_if_received` raises a recorded signal again; the output writer calls it for
every record and before it commits a file, and ``run_command`` calls it when the command returns.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: the signal received since :func:`handling` began (None: none)
_received: int | None = None


def _raise(signum: int) -> None:
    from .errors import Terminated

    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt()


def _handler(signum: int, frame) -> None:
    global _received
    _received = signum
    _raise(signum)


def raise_if_received() -> None:
    """Raise the interrupt of a signal received earlier (a no-op when none was)."""
    if _received is not None:
        _raise(_received)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Install lt's handler for SIGTERM, and for SIGINT unless SIGINT is ignored (``nohup``, a
    background job of a non-interactive shell); restore the previous handlers on exit, so in-process
    callers (tests, ``lt bootstrap`` running a stage) get theirs back. Outside the main thread
    Python cannot set handlers, and nothing changes."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _handler)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _handler)
    outer, _received = _received, None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received = outer


def settle() -> None:
    """Call once an interrupt has been handled (cleanup done, exit code chosen).

    CPython marks an interrupt as unhandled when it leaves code run by ``exec`` of a string (scipy,
    which nltk imports, builds functions that way at import), even when lt catches it later, and
    at exit the interpreter may then kill itself with SIGINT instead of exiting 130: exit -2 in 12
    of 80 runs of ``lt chunk`` where Ctrl-C landed during nltk's import, 0 of 40 with this call.
    Running an empty string clears the mark, as every ``exec`` of a string starts by doing.
    """
    exec("")  # noqa: S102  (clears CPython's unhandled-interrupt mark, see above)

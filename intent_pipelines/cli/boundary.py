"""The CLI's error boundary: whatever a command raises leaves as one line on stderr and its documented exit code.

The `intent` group enters :func:`error_boundary` twice: around parsing its own arguments (an unknown
top-level option or command) and around invoking the command (the command's own parsing, then its
work). Everything a user can cause maps to a code of the table in errors.py:

- an IntentError prints its ``one_line()`` and exits with its code;
- a click usage error (unknown option, missing argument, a value of the wrong type) is a UsageError (2)
  that says which ``--help`` to read, instead of click's three lines of usage;
- an OSError on a named file (a path given on the command line or through INTENT_HOME/INTENT_FLEET is
  missing, a file, too long or not writable) is a UsageError (2) naming the path;
- a SQLAlchemy error is a StoreError (8) naming the store, never with the SQL text;
- no space left (ENOSPC, SQLITE_FULL, a disk I/O error on a full disk: the state store, Dagster's
  storage, step logs) is StorageFull (8) saying to free space; the requests this process runs are
  ended first if the store still takes the write (best effort: the line printed is the fault's);
- Ctrl-C (or an aborted prompt) exits 130.

Anything else is a bug: exit 1, with the trace only under INTENT_DEBUG=1.
"""

import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import click

from intent_pipelines.cli.output import print_error
from intent_pipelines.errors import IntentError, StorageFull, UsageError
from intent_pipelines.settings import settings

# The longest argument the CLI accepts (docs/cli.md, "Limits"): every value a user types is far
# shorter, and a bounded argument keeps every message, query and audit record that carries it bounded.
MAX_ARGUMENT_CHARS = 10_000
INTERRUPTED = 130


def check_arguments(args: Sequence[str]) -> None:
    """Refuse an argument with a NUL byte (no real argv has one) or longer than MAX_ARGUMENT_CHARS."""
    for position, arg in enumerate(args, start=1):
        if "\0" in arg:
            raise UsageError(f"argument {position} contains a NUL byte", hint="Remove it.")
        if len(arg) > MAX_ARGUMENT_CHARS:
            raise UsageError(f"argument {position} is {len(arg)} characters long, more than the "
                             f"{MAX_ARGUMENT_CHARS} an argument may have", hint="Shorten it.")


@contextmanager
def error_boundary() -> Iterator[None]:
    """Turn any exception raised inside into one line on stderr and the exit code it maps to."""
    try:
        yield
    except IntentError as exc:
        if isinstance(exc, StorageFull):
            _end_own_requests(exc)
        _exit(exc.one_line(), exc.exit_code)
    except click.exceptions.NoArgsIsHelpError:
        raise  # `intent` or `intent audit` alone: click prints the help, which is what was asked for
    except click.ClickException as exc:
        _exit(click_line(exc), UsageError.exit_code)
    except click.exceptions.Abort:
        _exit("aborted", INTERRUPTED)
    except KeyboardInterrupt:
        _exit("interrupted", INTERRUPTED)
    except click.exceptions.Exit:
        raise
    except OSError as exc:
        _exit_if_full(exc)
        if exc.filename is None:
            _internal(exc)
        _exit(path_line(exc), UsageError.exit_code)
    except Exception as exc:
        _exit_if_full(exc)
        if type(exc).__module__.startswith("sqlalchemy."):
            from intent_pipelines.home import IntentHome
            from intent_pipelines.store.state import store_error

            error = store_error(exc, IntentHome.from_env().store_url())
            _exit(error.one_line(), error.exit_code)
        _internal(exc)


def _exit_if_full(exc: Exception) -> None:
    """Exit with StorageFull when ``exc`` (or what it was raised from) means no space is left for the state."""
    from intent_pipelines.home import IntentHome
    from intent_pipelines.store.integrity import sqlite_file, storage_full

    try:
        home = IntentHome.from_env()
        store = sqlite_file(home.store_url())
        paths, what = [home.root, *([store] if store is not None else [])], f"INTENT_HOME {home.root}"
    except Exception:  # a home that cannot even be named (too long, a bad URL): its own error is what counts
        paths, what = [], "the state"
    error = storage_full(exc, paths=paths, what=what)
    if error is not None:
        _end_own_requests(error)
        _exit(error.one_line(), error.exit_code)


def _end_own_requests(error: StorageFull) -> None:
    """End the RUNNING requests this process runs, as `intent run` does when its run ends first; never raises.

    On a full disk the write usually fails too: then the request stays RUNNING with a dead owner
    once this process exits, and the next `intent status` (or run, or the watchdog) ends it CRASHED.
    """
    from intent_pipelines.home import IntentHome
    from intent_pipelines.lifecycle.crash import end_crashed_run, owner_of
    from intent_pipelines.status import RequestStatus
    from intent_pipelines.store import StateStore

    me = (socket.gethostname(), os.getpid())
    try:
        home = IntentHome.from_env()
        store = StateStore(home.store_url())
        for row in store.requests_by_status(RequestStatus.RUNNING):
            owner = owner_of(row)
            if owner is not None and (owner.host, owner.pid) == me:
                end_crashed_run(store, home, str(row["request_id"]), run_id=str(row["run_id"]),
                                run_status="FAILURE", message=error.one_line())
    except Exception:  # still no space (or worse): the fault's own line is what the user must see
        return


def click_line(exc: click.ClickException) -> str:
    """Click's message as one line, pointing at the ``--help`` of the command it came from."""
    message = exc.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    # The program is `intent` however it was started (CliRunner names it after the function).
    command = " ".join(["intent", *(ctx.command_path.split()[1:] if ctx is not None else [])])
    # "Did you mean '--force'?" and "(Did you mean one of: ...?)" end a sentence already.
    end = " " if message.endswith(("?", ")")) else ". "
    return f"{message}{end}Run '{command} --help'."


def path_line(exc: OSError) -> str:
    """An OSError on a named file, as the one line UsageError prints."""
    reason = exc.strerror or type(exc).__name__
    return UsageError(f"cannot use {exc.filename}: {reason}", hint="Check the path and its permissions.").one_line()


def _internal(exc: Exception) -> NoReturn:
    """A bug: say so in one line, and show the trace only on request."""
    try:
        debug = settings().debug
    except IntentError:  # a malformed INTENT_* setting must not hide the bug's line
        debug = False
    if debug:
        raise exc
    _exit(f"internal error: {type(exc).__name__}: {exc}. This is a bug; rerun with INTENT_DEBUG=1 and "
          "report the trace.", 1)


def _exit(line: str, code: int) -> NoReturn:
    print_error(line)
    sys.exit(code)

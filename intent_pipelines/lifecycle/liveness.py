"""Whether the process running a request is alive: pid and start time on its own host, else its lease.

A pid alone is not proof (pids are reused), so the owner is recorded with its start time
(``/proc/<pid>/stat`` field 22, clock ticks since boot): the same pid with another start time is
another process. On another host nothing can be checked from here, so the lease decides there.
"""

import os
import socket
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Liveness(str, Enum):
    """What can be said about a request's owner from this host."""

    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"  # on another host, or never recorded: the lease decides


def process_token(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the parenthesised command name: state is field 3
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None  # a zombie has exited; only its exit status waits to be read
    return int(fields[19])


@dataclass(frozen=True)
class Owner:
    """The process that runs a request now."""

    host: str
    pid: int
    token: int | None

    @classmethod
    def this_process(cls) -> "Owner":
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_token(pid))

    def encode(self) -> str:
        """``host:pid:token``, the form carried by the ``intent/owner`` run tag."""
        return f"{self.host}:{self.pid}:{self.token if self.token is not None else ''}"

    @classmethod
    def decode(cls, text: str) -> "Owner | None":
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        host, pid, token = parts
        return cls(host, int(pid), int(token) if token.isdigit() else None)

    def liveness(self) -> Liveness:
        """ALIVE or DEAD when the owner is on this host; UNKNOWN elsewhere."""
        if self.host != socket.gethostname():
            return Liveness.UNKNOWN
        token = process_token(self.pid)
        if token is None:
            return Liveness.DEAD
        return Liveness.ALIVE if self.token is None or token == self.token else Liveness.DEAD

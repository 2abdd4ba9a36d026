"""Concurrent and crashing writers: appends from many processes form one chain; a kill leaves no partial record.

Writers are real processes with their own StateStore. The SIGKILL test forks writers from a small
"zygote" process (started once, with the store module imported) so 50 kills cost milliseconds each
instead of an interpreter start-up each.
"""

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from intent_pipelines.audit.verify import verify_records
from intent_pipelines.store import StateStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store URL (tables created) on SQLite or a new PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
        StateStore(url).engine.dispose()  # create the tables before writers race to
        yield url
        return
    base = request.getfixturevalue("postgres_url")
    name = f"concurrency_{time.time_ns()}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = base.rsplit("/", 1)[0] + f"/{name}"
    StateStore(url).engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(sa.text(f"DROP DATABASE {name}"))
    admin.dispose()


def _append_many(url: str, process: int, count: int, start: Any) -> None:
    """One writer process: its own store, ``count`` appends tagged (process, i), started together."""
    store = StateStore(url)
    start.wait(timeout=60)
    for i in range(count):
        store.append_audit("concurrency.test", request_id=f"p{process}", run_id="u", body={"p": process, "i": i})
    store.engine.dispose()


def _assert_one_linear_chain(store: StateStore, expected: int | None = None) -> list[dict[str, object]]:
    """Verify one snapshot of the chain; ``expected=None`` only requires seq 0..n-1 without gaps.

    (After a SIGKILL, PostgreSQL may still commit the killed client's last transaction a moment
    later, so a count taken in a separate query can be one short.)
    """
    records = list(store.audit_records())
    result = verify_records((r.seq, r.prev, r.hash, r.body) for r in records)
    assert result.ok, result.breaks[:3]
    assert [r.seq for r in records] == list(range(len(records) if expected is None else expected))
    return [r.data() for r in records]


def test_four_processes_append_one_linear_chain(store_url: str) -> None:
    """4 processes appending at once give one gap-free chain that verifies, with every append present once."""
    per_process = 500
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(5)
    writers = [context.Process(target=_append_many, args=(store_url, p, per_process, start)) for p in range(4)]
    for writer in writers:
        writer.start()
    start.wait(timeout=60)
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0, f"writer exited with {writer.exitcode}"
    store = StateStore(store_url)
    bodies = _assert_one_linear_chain(store, 4 * per_process)
    seen = Counter((b["p"], b["i"]) for b in bodies)
    assert seen == Counter({(p, i): 1 for p in range(4) for i in range(per_process)})
    writer_changes = sum(1 for a, b in zip(bodies, bodies[1:], strict=False) if a["p"] != b["p"])
    assert writer_changes > 3, "the writers really ran at the same time (their appends interleave)"
    store.engine.dispose()


# A process that forks one writer per line read on stdin. Each writer opens its own store, appends
# forever with a multi-page body, and prints its pid after its first append. SIGCHLD is ignored so
# the kernel reaps the killed writers.
ZYGOTE = """
import os, signal, sys
from intent_pipelines.store import StateStore
url = sys.argv[1]
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
while sys.stdin.readline():
    if os.fork() == 0:
        store = StateStore(url)
        n = 0
        while True:
            store.append_audit("kill.test", request_id=str(os.getpid()), run_id="u",
                               body={"n": n, "pad": "x" * 9000})
            if n == 0:
                sys.stdout.write(f"{os.getpid()}\\n")
                sys.stdout.flush()
            n += 1
"""


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.002)
    raise AssertionError(f"writer {pid} survived SIGKILL")


def test_sigkill_mid_append_leaves_no_partial_record(store_url: str) -> None:
    """50 writers killed at random moments while appending leave a chain that verifies, whole records only."""
    kills = 50
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE, store_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert zygote.stdin is not None and zygote.stdout is not None
    store = StateStore(store_url)
    rng = random.Random(20260101)
    live: int | None = None
    seen = 0
    try:
        for _ in range(kills):
            zygote.stdin.write("go\n")
            zygote.stdin.flush()
            live = int(zygote.stdout.readline())
            time.sleep(rng.uniform(0, 0.03))
            os.kill(live, signal.SIGKILL)
            _wait_gone(live)
            live = None
            bodies = _assert_one_linear_chain(store)
            assert len(bodies) > seen, "the writer appended at least once before it was killed"
            seen = len(bodies)
            assert all(body["pad"] == "x" * 9000 for body in bodies), "a record holds a partial body"
    finally:
        if live is not None:
            os.kill(live, signal.SIGKILL)
        zygote.stdin.close()
        zygote.wait(timeout=10)
        store.engine.dispose()
    # Whole records from every writer, and the store still takes appends after 50 crashes.
    writers = {json.loads(raw[3])["request_id"] for raw in store.audit_raw()}
    assert len(writers) == kills
    store.append_audit("after.kills", request_id="r", run_id="u", body={})
    assert verify_records(store.audit_raw()).ok

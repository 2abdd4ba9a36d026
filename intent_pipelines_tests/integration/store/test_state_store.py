import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from intent_pipelines.audit.record import GENESIS_PREV, record_hash
from intent_pipelines.errors import LockBusy, StoreError
from intent_pipelines.status import StepStatus
from intent_pipelines.store import StateStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        yield StateStore(f"sqlite:///{tmp_path / 'state.db'}")
        return
    base = request.getfixturevalue("postgres_url")
    name = f"store_{time.time_ns()}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = base.rsplit("/", 1)[0] + f"/{name}"
    store = StateStore(url)
    yield store
    store.engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {name}"))
    admin.dispose()


def test_audit_records_chain_from_genesis(store: StateStore) -> None:
    """Each record's prev is the previous hash and its hash recomputes from the stored bytes."""
    for i in range(5):
        store.append_audit("test.event", request_id="r1", run_id="u1", body={"i": i})
    records = list(store.audit_records())
    assert [r.seq for r in records] == [0, 1, 2, 3, 4]
    prev = GENESIS_PREV
    for record in records:
        assert record.prev == prev
        assert record.hash == record_hash(record.seq, record.prev, record.body)
        prev = record.hash
    assert records[2].data() == {"i": 2, "kind": "test.event", "request_id": "r1", "run_id": "u1",
                                 "ts": records[2].ts}


def test_audit_refuses_float_bodies(store: StateStore) -> None:
    """Floats never enter the chain (they serialize differently across JSON libraries)."""
    with pytest.raises(ValueError, match="integers only"):
        store.append_audit("x", request_id="r", run_id="u", body={"duration": 1.5})
    assert list(store.audit_records()) == []


def test_concurrent_appends_form_one_linear_chain(store: StateStore) -> None:
    """Appends from many threads end up as one gap-free chain with nothing lost."""
    def writer(n: int) -> None:
        for i in range(25):
            store.append_audit("t", request_id=f"r{n}", run_id="u", body={"n": n, "i": i})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = list(store.audit_records())
    assert [r.seq for r in records] == list(range(100))
    assert all(b.prev == a.hash for a, b in zip(records, records[1:], strict=False))


def test_lock_lease_busy_renew_release_and_expiry(store: StateStore) -> None:
    """A held lease refuses others naming the holder, is re-entrant, renewable, and expires."""
    store.acquire_lock("app:x", request_id="r1", run_id="u1", ttl_s=30)
    store.acquire_lock("app:x", request_id="r1", run_id="u2", ttl_s=30)
    with pytest.raises(LockBusy, match="held by request r1 \\(run u2"):
        store.acquire_lock("app:x", request_id="r2", run_id="v", ttl_s=30)
    assert store.renew_lock("app:x", request_id="r1", ttl_s=0.2)
    assert not store.renew_lock("app:x", request_id="r2", ttl_s=30)
    time.sleep(0.3)
    store.acquire_lock("app:x", request_id="r2", run_id="v", ttl_s=30)
    assert store.lock_holder("app:x").request_id == "r2"
    assert not store.release_lock("app:x", request_id="r1")
    assert store.release_lock("app:x", request_id="r2")
    assert store.locks() == []


def test_lock_wait_gets_the_lock_when_released(store: StateStore) -> None:
    """A request with lock_wait waits for the holder to release instead of failing."""
    store.acquire_lock("db:x", request_id="r1", run_id="u1", ttl_s=30)
    timer = threading.Timer(0.5, lambda: store.release_lock("db:x", request_id="r1"))
    timer.start()
    started = time.monotonic()
    store.acquire_lock("db:x", request_id="r2", run_id="u2", ttl_s=30, wait_s=10, poll_s=0.1)
    assert 0.4 < time.monotonic() - started < 5
    assert store.lock_holder("db:x").request_id == "r2"


def test_steps_sorted_by_completion_order(store: StateStore) -> None:
    """Completed steps come back in the order they completed, for reverse-order rollback."""
    store.create_request(request_id="r", intent="i", run_id="u", params={}, context={}, plan_hash="h",
                         intent_sha256="s", lock_key=None, dry_run=False, reason="", who="me")
    for step in ("b", "a", "c"):
        store.set_step("r", step, StepStatus.RUNNING, run_id="u")
        store.set_step("r", step, StepStatus.SUCCEEDED, run_id="u", outputs={"step": step})
    assert [s["step_id"] for s in store.steps("r")] == ["b", "a", "c"]
    assert store.outputs("r")["a"] == {"step": "a"}


def test_unreachable_store_is_one_clear_error(tmp_path: Path) -> None:
    """A store URL that cannot be opened gives a StoreError (exit 8) without the password."""
    with pytest.raises(StoreError) as info:
        StateStore("postgresql://app:hunter2@127.0.0.1:1/nope")
    assert info.value.exit_code == 8
    assert "hunter2" not in info.value.one_line()

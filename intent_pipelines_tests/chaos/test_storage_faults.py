"""Storage faults of a real SQLite state store: a full disk mid-run, a damaged page, a store emptied or deleted.

A full disk is a real tmpfs that a step fills; the damaged page is random bytes over an audit_events
leaf of a real state.db; the emptied store is a real state.db truncated to 0 bytes. Each case
checks the one line and exit 8 the CLI gives, that nothing recorded is lost or written over, and
what the operator does next works (`intent status`, `intent resume`, restoring a copy).
"""

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from intent_pipelines.cli.boundary import error_boundary
from intent_pipelines.home import IntentHome
from intent_pipelines.lifecycle.liveness import Owner
from intent_pipelines.status import RequestStatus
from intent_pipelines.store import StateStore
from intent_pipelines.testing import invoke_cli
from intent_pipelines_tests.conftest import ON_POSTGRES

INTENT_BIN = str(Path(sys.executable).parent / "intent")

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="faults of the SQLite file of the state store")

# The disk fills up while step `fill` runs (the first time only); `change` before it is done and recorded.
INTENT = """\
name: chaos-disk
summary: a change, then a step during which the disk fills up, then one more change
policy: {{lock: "disk-target"}}
steps:
  - id: change
    run: [sh, -c, 'echo change >> {journal}']
    rollback: {{run: [sh, -c, 'echo undo-change >> {journal}']}}
  - id: fill
    needs: [change]
    run: [sh, -c, 'echo fill >> {journal}; [ -e {once} ] && exit 0; touch {once}; dd if=/dev/zero of={ballast} bs=1M 2>/dev/null; exit 0']
  - id: after
    needs: [fill]
    run: [sh, -c, 'echo after >> {journal}']
"""
NOOP = "name: noop\nsummary: does nothing\nsteps:\n  - id: one\n    run: [sh, -c, 'true']\n"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs at tmp_path/home, where sample_home puts INTENT_HOME; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "home"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def intents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "intents"
    directory.mkdir()
    (directory / "noop.yaml").write_text(NOOP)
    monkeypatch.setenv("INTENTS_PATH", str(directory))
    return directory


def _intent(*args: str) -> subprocess.CompletedProcess[str]:
    """`intent ARGS` in a process of its own, which exits as a real one does (its WAL left behind)."""
    return subprocess.run([INTENT_BIN, *args], capture_output=True, text=True, timeout=120, env=os.environ.copy())


def _wal_size(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert "Traceback" not in err
    return lines[0]


def _status(request_id: str) -> dict[str, object]:
    code, out, err = invoke_cli("status", "--all", "--json")
    assert code == 0, err
    (row,) = [r for r in json.loads(out) if r["request_id"] == request_id]
    return dict(row)


def test_a_full_disk_mid_run_leaves_a_request_that_resumes(tmpfs: Path, sample_home: IntentHome, intents: Path,
                                                           tmp_path: Path) -> None:
    """Disk full mid-run: exit 8 saying to free space; once freed, CRASHED, no lock, chain intact, resume finishes."""
    journal, ballast = tmp_path / "journal", tmpfs / "ballast"
    (intents / "chaos-disk.yaml").write_text(INTENT.format(journal=journal, once=tmp_path / "filled", ballast=ballast))
    run = _intent("run", "chaos-disk")
    assert run.returncode == 8, run.stdout + run.stderr
    line = _error_line(run.stderr)
    assert "no space left for" in line and "Free space there" in line and "intent resume" in line
    assert shutil.disk_usage(tmpfs).free < 1024 * 1024

    store = StateStore(sample_home.store_url())
    (request,) = store.recent_requests()
    request_id = str(request["request_id"])
    # Still full: `intent status` cannot end it either, and says why in one line.
    code, _, err = invoke_cli("status")
    assert code == 8 and "no space left for" in _error_line(err)

    ballast.unlink()
    row = _status(request_id)
    assert row["status"] == RequestStatus.CRASHED.value, row
    assert store.locks() == []
    code, out, err = invoke_cli("audit", "verify")
    assert code == 0, out + err
    kinds = [(r.kind, json.loads(r.body).get("step")) for r in store.audit_records(request_id=request_id)]
    assert ("step.complete", "change") in kinds  # recorded before the disk filled, and still there

    code, out, err = invoke_cli("resume", request_id)
    assert code == 0, out + err
    assert _status(request_id)["status"] == RequestStatus.SUCCEEDED.value
    # `change` is not run again and nothing was rolled back; `fill`, never recorded as done, runs once more.
    assert journal.read_text().split() == ["change", "fill", "fill", "after"]
    code, out, err = invoke_cli("audit", "verify")
    assert code == 0, out + err


def test_a_process_out_of_space_ends_its_requests_while_the_store_takes_writes(
        tmpfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Out of space elsewhere (a full tmpfs), the CLI ends the request it runs at once: CRASHED, lock freed."""
    home = IntentHome(tmp_path / "other-home").ensure()  # the store on another, roomy filesystem
    monkeypatch.setenv("INTENT_HOME", str(home.root))
    monkeypatch.delenv("INTENT_STORE_URL", raising=False)
    store = StateStore(home.store_url())
    store.create_request(request_id="r-full", intent="noop", run_id="r-full", params={}, context={}, plan_hash="",
                         intent_sha256="", lock_key="disk-target", dry_run=False, reason="", who="test")
    me = Owner.this_process()
    store.set_owner("r-full", host=me.host, pid=me.pid, token=me.token)
    store.acquire_lock("disk-target", request_id="r-full", run_id="r-full", ttl_s=60)
    with pytest.raises(SystemExit) as exited, error_boundary(), (tmpfs / "ballast").open("wb") as fh:
        while True:
            fh.write(b"\0" * (1 << 20))
    assert exited.value.code == 8
    assert "no space left for" in _error_line(capsys.readouterr().err)
    row = store.request("r-full")
    assert row is not None and row["status"] == RequestStatus.CRASHED.value, row
    assert store.locks() == []
    code, out, err = invoke_cli("audit", "verify")
    assert code == 0, out + err


def _damage_an_old_audit_page(db: Path) -> None:
    """Overwrite the first audit_events leaf (not the one appends go to) with random bytes."""
    conn = sqlite3.connect(db)
    pages = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'audit_events' AND pagetype = 'leaf' "
                                        "ORDER BY pageno")]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    assert len(pages) >= 2, pages
    with db.open("r+b") as fh:
        fh.seek((pages[0] - 1) * page_size)
        fh.write(os.urandom(page_size))


def _digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def test_a_damaged_audit_page_is_refused_before_any_append(sample_home: IntentHome, intents: Path,
                                                           tmp_path: Path) -> None:
    """A state.db with a damaged audit page is never appended to: one line saying it is damaged, exit 8."""
    store = StateStore(sample_home.store_url())
    for i in range(60):
        store.append_audit("test.record", request_id="seed", run_id="seed", body={"n": str(i), "pad": "x" * 200})
    store.engine.dispose()  # the last connection folds the WAL into state.db
    db = sample_home.state_db
    good = tmp_path / "state.db.good"
    shutil.copy(db, good)
    _damage_an_old_audit_page(db)
    # Without the check, SQLite would take the append: the page appends go to is intact.
    probe = tmp_path / "probe.db"
    shutil.copy(db, probe)
    with sqlite3.connect(probe) as conn:
        conn.execute("INSERT INTO audit_events (seq, v, ts, request_id, run_id, kind, prev, hash, body) "
                     "VALUES (60, 1, '', 'x', 'x', 'x', x'00', x'00', x'00')")
    before = _digest(db)

    code, _, err = invoke_cli("run", "noop")
    assert code == 8
    line = _error_line(err)
    assert f"the state store {db} is damaged" in line and "restore the last good copy" in line
    assert "intent audit verify" in line
    assert _digest(db) == before and _wal_size(db) == 0  # nothing written

    # Recovery as the line says: the damaged file aside, the good copy back; the chain goes on from it.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(good, db)
    code, out, err = invoke_cli("run", "noop")
    assert code == 0, out + err
    code, out, err = invoke_cli("audit", "verify")
    assert code == 0, out + err


@pytest.mark.parametrize("fault", ["empty", "missing"])
def test_an_emptied_store_is_refused_not_restarted_at_seq_0(sample_home: IntentHome, intents: Path,
                                                            fault: str) -> None:
    """A state.db emptied or deleted under a home that kept a chain is refused; the chain is not restarted."""
    run = _intent("run", "noop")
    assert run.returncode == 0, run.stdout + run.stderr
    db = sample_home.state_db
    wal = _wal_size(db)
    if fault == "empty":
        db.write_bytes(b"")
    else:
        db.unlink()
    code, _, err = invoke_cli("run", "noop")
    assert code == 8
    line = _error_line(err)
    state = "empty (0 bytes)" if fault == "empty" else "missing"
    assert f"the state store {db} is {state}, but a chain was kept there" in line and "seq 0" in line
    assert (db.stat().st_size == 0) if fault == "empty" else not db.exists()  # not written over
    assert _wal_size(db) == wal  # SQLite would have deleted it, with the newest records it may hold
    code, _, err = invoke_cli("status")
    assert code == 8 and "a chain was kept there" in _error_line(err)


def test_checkpoint_files_show_a_chain_of_a_home_without_marker(sample_home: IntentHome, intents: Path) -> None:
    """A home from before the marker is refused on its checkpoint files; moving them aside starts a new chain."""
    for args in (("run", "noop"), ("audit", "checkpoint")):
        run = _intent(*args)
        assert run.returncode == 0, run.stdout + run.stderr
    db = sample_home.state_db
    Path(f"{db}.chain").unlink()
    db.write_bytes(b"")
    code, _, err = invoke_cli("status")
    line = _error_line(err)
    assert code == 8 and "checkpoint 1 in" in line and "move" in line

    # Starting over on purpose, as the line says: the old store and the traces of its chain moved aside.
    old = sample_home.root / "old"
    old.mkdir()
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), sample_home.root / "audit" / "checkpoints"):
        if path.exists():
            path.rename(old / path.name)
    code, out, err = invoke_cli("run", "noop")
    assert code == 0, out + err
    code, out, err = invoke_cli("audit", "verify")
    assert code == 0 and "seq 0.." in out, out + err


def test_a_brand_new_home_just_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, intents: Path) -> None:
    """`intent init` in an empty directory, then a run: no trace of an earlier chain, so nothing is refused."""
    monkeypatch.setenv("INTENT_HOME", str(tmp_path / "fresh"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "fresh" / "dagster"))
    monkeypatch.delenv("INTENT_STORE_URL", raising=False)
    monkeypatch.delenv("INTENT_FLEET", raising=False)
    code, out, err = invoke_cli("init", "--no-sample")
    assert code == 0, out + err
    code, out, err = invoke_cli("run", "noop")
    assert code == 0, out + err
    assert (tmp_path / "fresh" / "state.db.chain").exists()

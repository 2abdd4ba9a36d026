"""Service faults under real Dagster processes: the daemon killed, the webserver killed, PostgreSQL stopped, a stubborn step.

Each case injects one fault into real components and then checks the same invariants
(``_assert_invariants``): the audit chain verifies and every request's trail is whole (one
``request.complete`` per start or resume, the last one agreeing with the request row); no lock is
held but by a live running request; `intent status --all --json` says what the store and Dagster
say; each failure ending has exactly one alert line; and every audit record seen before the fault
is still there with the same hash.

The daemon and webserver cases run the two-process layout of deploy/systemd: `intent code-server`
(where run workers execute) and `intent up --code-server` (webserver and daemon). A dying daemon or
webserver stops its `intent up` (the supervisor stops its siblings, exit 1), and the test restarts
it as systemd's Restart=on-failure would; runs in the code server go on meanwhile. The PostgreSQL
cases run one `intent up` whose state store and Dagster storage are a database on a server the
test stops and starts; the stubborn step runs under `intent run` alone.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from intent_pipelines.alerts.log import read_alerts
from intent_pipelines.dagster_dev import CodeServer, DagsterDev, DagsterGraphQL
from intent_pipelines.home import IntentHome
from intent_pipelines.lifecycle.crash import group_alive, owner_of
from intent_pipelines.lifecycle.lease import HEARTBEAT_S
from intent_pipelines.lifecycle.liveness import Liveness
from intent_pipelines.operations import Operations
from intent_pipelines.status import RequestStatus, StepStatus
from intent_pipelines.store import StateStore
from intent_pipelines.testing import (
    PostgresServer,
    fresh_database,
    invoke_cli,
    prepare_sample_home,
    stop_fleet,
    wait_for,
)

INTENT_BIN = str(Path(sys.executable).parent / "intent")
LOCK = "chaos-target"
# Short knobs: leases renewed every second, failure sensors ticking every 2 s.
KNOBS = {"INTENT_LOCK_TTL_S": "4", "INTENT_ALERT_SENSOR_INTERVAL_S": "2"}

# The step sleeps `nap` seconds, then appends `tag` to the journal: one line per execution that ran to its end.
APPEND = 'import sys, time; time.sleep(float(sys.argv[2])); open(sys.argv[1], "a").write(sys.argv[3] + "\\n")'
NAP_INTENT = """\
name: chaos-nap
summary: sleep, then note the tag in the journal; then a second step
params:
  tag: {{type: string, pattern: "^[a-z0-9]+$"}}
  nap: {{type: number, default: 1}}
policy: {{lock: "{lock}"}}
steps:
  - id: nap
    run: [python3, -c, '{append}', "{journal}", "{{{{ params.nap }}}}", "{{{{ params.tag }}}}"]
  - id: after
    needs: [nap]
    run: [python3, -c, '{append}', "{journal}", "0", "{{{{ params.tag }}}}-after"]
"""

# A step that ignores SIGTERM, and so does the child it starts; both pids go to a file first.
STUBBORN_INTENT = """\
name: chaos-stubborn
summary: a step whose command and its child ignore SIGTERM
steps:
  - id: hold
    run: [python3, "{script}", "{pids}"]
"""
STUBBORN = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
print("holding", flush=True)
time.sleep(120)
"""

# Dagster run statuses that agree with each request status (a request's run is its latest run).
RUN_STATUSES = {
    RequestStatus.RUNNING: {"STARTING", "STARTED"},
    RequestStatus.SUCCEEDED: {"SUCCESS"},
    RequestStatus.STOPPED_BY_OPERATOR: {"FAILURE", "CANCELED"},
    RequestStatus.CRASHED: {"FAILURE", "CANCELED"},
    RequestStatus.FAILED: {"FAILURE"},
}


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# --- the processes -----------------------------------------------------------------------------

def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process, read from /proc."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields and fields[0] not in ("Z", "X"):
            table[int(entry.name)] = (int(fields[1]), cmdline)
    return table


def service_pid(root: int, marker: str) -> int:
    """The pid of the one descendant of ``root`` whose command line holds ``marker``."""
    table = _proc_table()
    descendants: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - descendants
        descendants |= frontier
    (pid,) = [pid for pid in descendants if marker in table[pid][1]]
    return pid


def _alive(pid: int) -> bool:
    return pid in _proc_table()


# --- the invariants ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Ledger:
    """The audit records seen before a fault, by sequence number."""

    hashes: dict[int, bytes]

    @classmethod
    def read(cls, store: StateStore) -> "Ledger":
        return cls({r.seq: r.hash for r in store.audit_records()})

    def assert_kept(self, store: StateStore) -> None:
        now = {r.seq: r.hash for r in store.audit_records()}
        lost = {seq for seq, digest in self.hashes.items() if now.get(seq) != digest}
        assert not lost, f"audit records lost or changed since before the fault: seq {sorted(lost)}"


def status_rows() -> dict[str, dict[str, Any]]:
    """`intent status --all --json`, by request id."""
    code, out, err = invoke_cli("status", "--all", "--json")
    assert code == 0, err
    return {row["request_id"]: row for row in json.loads(out)}


def _assert_invariants(home: IntentHome, store: StateStore, before: Ledger, request_ids: list[str], *,
                       client: DagsterGraphQL | None = None) -> dict[str, dict[str, Any]]:
    """The invariants of the module docstring for ``request_ids``; returns their status rows."""
    code, out, err = invoke_cli("audit", "verify")
    assert code == 0, out + err
    before.assert_kept(store)
    for holder in store.locks():
        row = store.request(holder.request_id)
        owner = owner_of(row) if row is not None else None
        assert row is not None and row["status"] == RequestStatus.RUNNING.value, f"{holder} held by an ended request"
        assert owner is not None and owner.liveness() is Liveness.ALIVE, f"{holder} held by a dead process"
    rows = status_rows()
    alerts = list(read_alerts(home))
    for request_id in request_ids:
        row = rows[request_id]
        stored = store.request(request_id)
        assert stored is not None and stored["status"] == row["status"], (row, stored)
        status = RequestStatus(row["status"])
        records = list(store.audit_records(request_id=request_id))
        kinds = [r.kind for r in records]
        endings = [json.loads(r.body) for r in records if r.kind == "request.complete"]
        assert kinds.count("request.start") == 1, kinds
        assert len(endings) == kinds.count("request.resume") + (1 if status.final else 0), kinds
        if status.final:
            assert endings[-1]["status"] == status.value, (endings, row)
        assert row["run_status"] in RUN_STATUSES[status], row
        if client is not None:
            assert client.run_status(row["run_id"]) == row["run_status"], row
        alerted = [a.status for a in alerts if a.request_id == request_id]
        assert alerted == [e["status"] for e in endings if RequestStatus(e["status"]).category.alerts], (alerted, endings)
    return rows


# --- the two-process layout on SQLite (daemon and webserver faults) ----------------------------

@dataclass
class Services:
    """`intent code-server` plus `intent up --code-server` for one INTENT_HOME (SQLite storage)."""

    home: IntentHome
    code_server: CodeServer
    up: DagsterDev
    journal: Path
    intents: Path

    def store(self) -> StateStore:
        return StateStore(self.home.store_url())

    def launch(self, tag: str, nap: float) -> str:
        return self.up.client.launch_run("chaos_nap", {"tag": tag, "nap": nap, "reason": "chaos"},
                                         {"intent/lock": LOCK})

    def step_running(self, run_id: str, step: str = "nap") -> dict[str, Any]:
        """The request row once ``step``'s command runs."""
        store = self.store()

        def running() -> dict[str, Any] | None:
            row = store.request(run_id)
            state = store.step_state(run_id, step) if row else None
            ok = row and row["step_pgid"] and state and state["status"] == StepStatus.RUNNING.value
            return row if ok else None

        row: dict[str, Any] = wait_for(running, timeout=90, what=f"step {step} of run {run_id} to run")
        return row

    def kill(self, marker: str) -> int:
        """SIGKILL the `intent up` service named by ``marker``; returns `intent up`'s exit code once it exited."""
        os.kill(service_pid(self.up.pid, marker), signal.SIGKILL)
        code = self.up.wait(timeout=60)
        self.up.stop()  # reaps it; its process group is empty by now
        return code

    def restart(self) -> None:
        """Start `intent up` again, as systemd's Restart=on-failure would, and wait until it answers."""
        self.up.start()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("chaos-services")
    home = prepare_sample_home(root / "home")
    intents, journal = root / "intents", root / "journal"
    intents.mkdir()
    (intents / "chaos-nap.yaml").write_text(NAP_INTENT.format(lock=LOCK, append=APPEND, journal=journal))
    env = {"INTENTS_PATH": str(intents), **KNOBS}
    try:
        with CodeServer(home, env=env) as code_server, \
                DagsterDev(home, env=env, code_server=code_server.address) as up:
            yield Services(home, code_server, up, journal, intents)
    finally:
        stop_fleet(home)


@pytest.fixture
def services_cli(services: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    """The in-process CLI sees the services' INTENT_HOME, DAGSTER_HOME and intents."""
    monkeypatch.setenv("INTENT_HOME", str(services.home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(services.home.dagster_home))
    monkeypatch.setenv("INTENTS_PATH", str(services.intents))
    monkeypatch.delenv("INTENT_FLEET", raising=False)
    monkeypatch.delenv("INTENT_STORE_URL", raising=False)
    for name, value in KNOBS.items():
        monkeypatch.setenv(name, value)
    return services


def test_a_killed_daemon_loses_no_queued_run_and_the_running_one_ends_truthfully(services_cli: Services) -> None:
    """SIGKILL of dagster-daemon with one run running and two queued: after the restart all three run, once each."""
    s, client = services_cli, services_cli.up.client
    running = s.launch("first", nap=8)
    row = s.step_running(running)
    queued = [s.launch("second", nap=0), s.launch("third", nap=0)]
    time.sleep(2)  # queue-daemon ticks: the lock tag keeps them waiting
    assert [client.run_status(r) for r in queued] == ["QUEUED", "QUEUED"]
    before = Ledger.read(s.store())
    fault = time.monotonic()

    assert s.kill("dagster._daemon") == 1
    assert "dagster-daemon exited with code -9, so everything was stopped" in s.up.log_tail(80)
    # With webserver and daemon gone, the run goes on in the code server; the queued ones wait.
    assert s.store().request(running)["status"] == RequestStatus.RUNNING.value  # type: ignore[index]
    assert group_alive(int(row["step_pgid"]))
    s.restart()
    restart_s = time.monotonic() - fault
    finals = [client.wait_for_run(r, timeout=120) for r in (running, *queued)]
    final_s = time.monotonic() - fault
    assert finals == ["SUCCESS"] * 3, [client.failure_messages(r) for r in (running, *queued)]
    assert not group_alive(int(row["step_pgid"]))

    # Each step ran to its end exactly once, in lock order.
    assert _lines(s.journal) == ["first", "first-after", "second", "second-after", "third", "third-after"]
    runs = [client.run(r) for r in (running, *queued)]
    assert runs[1]["startTime"] >= runs[0]["endTime"] and runs[2]["startTime"] >= runs[1]["endTime"], runs
    rows = _assert_invariants(s.home, s.store(), before, [running, *queued], client=client)
    assert {rows[r]["status"] for r in (running, *queued)} == {RequestStatus.SUCCEEDED.value}
    assert s.store().locks() == []
    print(f"daemon kill: intent up back after {restart_s:.1f}s, all three runs final after {final_s:.1f}s")


def test_a_killed_webserver_leaves_a_run_in_the_code_server_unaffected(services_cli: Services) -> None:
    """SIGKILL of dagster-webserver mid-step: `intent up` restarts; the run finishes once, unaffected, no alert."""
    s, client = services_cli, services_cli.up.client
    s.journal.unlink(missing_ok=True)
    run_id = s.launch("web", nap=6)
    row = s.step_running(run_id)
    before = Ledger.read(s.store())
    fault = time.monotonic()

    assert s.kill("dagster_webserver") == 1
    assert "dagster-webserver exited with code -9, so everything was stopped" in s.up.log_tail(80)
    assert group_alive(int(row["step_pgid"]))
    s.restart()
    restart_s = time.monotonic() - fault
    assert client.wait_for_run(run_id, timeout=120) == "SUCCESS", client.failure_messages(run_id)
    final_s = time.monotonic() - fault
    assert _lines(s.journal) == ["web", "web-after"]
    steps = {st["step_id"]: (st["status"], st["attempt"]) for st in s.store().steps(run_id)}
    assert steps == {"nap": ("SUCCEEDED", 1), "after": ("SUCCEEDED", 1)}
    kinds = [r.kind for r in s.store().audit_records(request_id=run_id)]
    assert "step.retry" not in kinds and "request.resume" not in kinds and "request.owner_dead" not in kinds
    assert not group_alive(int(row["step_pgid"]))
    rows = _assert_invariants(s.home, s.store(), before, [run_id], client=client)
    assert rows[run_id]["status"] == RequestStatus.SUCCEEDED.value
    print(f"webserver kill: intent up back after {restart_s:.1f}s, run final after {final_s:.1f}s")


# --- PostgreSQL stopped under `intent up` ------------------------------------------------------

@dataclass
class PostgresStack:
    """`intent up` whose state store and Dagster storage are one database of a server the test stops."""

    server: PostgresServer
    url: str
    home: IntentHome
    up: DagsterDev
    journal: Path
    intents: Path

    def store(self) -> StateStore:
        return StateStore(self.url)

    def launch(self, tag: str, nap: float) -> str:
        return self.up.client.launch_run("chaos_nap", {"tag": tag, "nap": nap, "reason": "chaos"},
                                         {"intent/lock": LOCK})

    def outage(self, seconds: float, *, during: Callable[[], None] | None = None) -> None:
        """Stop PostgreSQL (every session cut), keep it down ``seconds`` (calling ``during``), start it again."""
        self.server.stop()
        back = time.monotonic() + seconds
        if during is not None:
            during()
        time.sleep(max(0.0, back - time.monotonic()))
        self.server.start()

    def webserver_reads(self, run_id: str) -> None:
        """Wait until the webserver reads runs again.

        It keeps one open connection per storage (dagster-postgres' optimize_for_webserver, no
        pre-ping), so its first query after the restart fails with a 500 and drops that connection.
        """

        def reads() -> bool:
            try:
                self.up.client.run_status(run_id)
            except requests.HTTPError:
                return False
            return True

        wait_for(reads, timeout=30, what="the webserver to read runs again", poll=0.5)


@pytest.fixture(scope="module")
def postgres_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresStack]:
    try:
        server = PostgresServer()
        server.start()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    root = tmp_path_factory.mktemp("chaos-postgres")
    intents, journal = root / "intents", root / "journal"
    intents.mkdir()
    (intents / "chaos-nap.yaml").write_text(NAP_INTENT.format(lock=LOCK, append=APPEND, journal=journal))
    try:
        with fresh_database(server.url) as url:
            home = prepare_sample_home(root / "home")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("INTENT", "DAGSTER"))}
            env.update({"INTENT_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home),
                        "INTENT_STORE_URL": url})
            init = subprocess.run([INTENT_BIN, "init", "--postgres"], env=env, capture_output=True, text=True,
                                  timeout=120, check=False)
            assert init.returncode == 0, init.stderr
            try:
                with DagsterDev(home, env={"INTENT_STORE_URL": url, "INTENTS_PATH": str(intents), **KNOBS}) as up:
                    yield PostgresStack(server, url, home, up, journal, intents)
            finally:
                stop_fleet(home)
    finally:
        server.remove()


@pytest.fixture
def postgres_cli(postgres_stack: PostgresStack, monkeypatch: pytest.MonkeyPatch) -> PostgresStack:
    """The in-process CLI sees the PostgreSQL stack."""
    monkeypatch.setenv("INTENT_HOME", str(postgres_stack.home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(postgres_stack.home.dagster_home))
    monkeypatch.setenv("INTENTS_PATH", str(postgres_stack.intents))
    monkeypatch.setenv("INTENT_STORE_URL", postgres_stack.url)
    monkeypatch.delenv("INTENT_FLEET", raising=False)
    for name, value in KNOBS.items():
        monkeypatch.setenv(name, value)
    return postgres_stack


def _wait_final(request_id: str, timeout: float) -> dict[str, Any]:
    """The request's status row once `intent status` reports it ended (the CLI must work again first)."""

    def ended() -> dict[str, Any] | None:
        try:
            row = status_rows().get(request_id)
        except AssertionError:  # the status command itself failed: the database is not back yet
            return None
        return row if row and row["status"] != RequestStatus.RUNNING.value else None

    row: dict[str, Any] = wait_for(ended, timeout=timeout, what=f"request {request_id} to end", poll=1.0)
    return row


def test_postgres_down_across_a_step_end_leaves_a_resumable_request(postgres_cli: PostgresStack) -> None:
    """PostgreSQL down while a step ends: the request ends CRASHED (run FAILURE), alerted once; resume finishes it."""
    pg = postgres_cli
    pg.journal.unlink(missing_ok=True)
    run_id = pg.launch("pg", nap=2)
    wait_for(lambda: (lambda r: r is not None and r["step_pgid"])(pg.store().request(run_id)), timeout=90,
             what="step nap to run")
    before = Ledger.read(pg.store())
    fault = time.monotonic()

    def status_says_the_store_is_down() -> None:
        code, _, err = invoke_cli("status", "--all", "--json")
        assert code == 8 and err.count("\n") == 1 and "cannot open the state store" in err, err

    pg.outage(8, during=status_says_the_store_is_down)  # the step's command ends meanwhile, unrecorded

    row = _wait_final(run_id, timeout=90)
    final_s = time.monotonic() - fault
    assert row["status"] == RequestStatus.CRASHED.value and RequestStatus(row["status"]).resumable, row
    assert row["run_status"] == "FAILURE", row
    assert _lines(pg.journal) == ["pg"]  # the command did finish; only its recording was lost
    pg.webserver_reads(run_id)
    _assert_invariants(pg.home, pg.store(), before, [run_id], client=pg.up.client)
    time.sleep(5)  # two more failure-sensor ticks: still one alert
    _assert_invariants(pg.home, pg.store(), before, [run_id])

    code, out, err = invoke_cli("resume", run_id, "--json")
    assert code == 0, out + err
    assert json.loads(out)["status"] == RequestStatus.SUCCEEDED.value
    # The step whose end was never recorded runs again (at least once), then the next one.
    assert _lines(pg.journal) == ["pg", "pg", "pg-after"]
    rows = _assert_invariants(pg.home, pg.store(), before, [run_id], client=pg.up.client)
    assert rows[run_id]["status"] == RequestStatus.SUCCEEDED.value
    assert pg.store().locks() == []
    print(f"postgres outage across a step end: request final ({row['status']}) {final_s:.1f}s after the stop")


def test_a_running_step_beats_again_after_a_postgres_blip(postgres_cli: PostgresStack) -> None:
    """A 3 s PostgreSQL outage mid-step: once it is back, the same step's heartbeat (and stop polling) resumes."""
    pg = postgres_cli
    pg.journal.unlink(missing_ok=True)
    run_id = pg.launch("blip", nap=30)
    row = wait_for(lambda: (lambda r: r if r is not None and r["step_pgid"] else None)(pg.store().request(run_id)),
                   timeout=90, what="step nap to run")
    before = Ledger.read(pg.store())
    pg.outage(3)
    back = time.time()

    def beat_since_back() -> bool:
        now, nap = pg.store().request(run_id), pg.store().step_state(run_id, "nap")
        assert now is not None and nap is not None and nap["status"] == StepStatus.RUNNING.value, (now, nap)
        assert now["step_pgid"] == row["step_pgid"]  # the same command: a new step would beat anew
        return float(now["heartbeat_at"] or 0) > back

    wait_for(beat_since_back, timeout=HEARTBEAT_S * 2 + 1, what="the step's heartbeat after the outage")
    pg.webserver_reads(run_id)
    # A stop through the store alone (what the heartbeat polls; no Dagster termination) reaches the step again.
    assert Operations(pg.home, pg.store(), None).request_stop(run_id, grace_s=1, reason="chaos")
    wait_for(lambda: pg.store().request(run_id)["status"] != RequestStatus.RUNNING.value,  # type: ignore[index]
             timeout=HEARTBEAT_S, what="the store-driven stop to end the request")
    assert pg.up.client.wait_for_run(run_id, timeout=60) == "FAILURE"
    assert not group_alive(int(row["step_pgid"]))
    rows = _assert_invariants(pg.home, pg.store(), before, [run_id], client=pg.up.client)
    assert rows[run_id]["status"] == RequestStatus.STOPPED_BY_OPERATOR.value


# --- a step that ignores SIGTERM, stopped ------------------------------------------------------

def test_a_step_that_ignores_sigterm_is_killed_after_the_grace(sample_home: IntentHome, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`intent stop --grace 2` of a step that ignores SIGTERM: SIGKILL after 2 s, no process of its group left."""
    intents, pids, script = tmp_path / "intents", tmp_path / "pids", tmp_path / "stubborn.py"
    intents.mkdir()
    script.write_text(STUBBORN)
    (intents / "chaos-stubborn.yaml").write_text(STUBBORN_INTENT.format(script=script, pids=pids))
    monkeypatch.setenv("INTENTS_PATH", str(intents))
    store = StateStore(sample_home.store_url())
    runner = subprocess.Popen([INTENT_BIN, "run", "chaos-stubborn"], env=os.environ.copy(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(pids.exists, timeout=60,
                 what="the stubborn step to start its child")
        (row,) = store.requests_by_status(RequestStatus.RUNNING)
        request_id, pgid = str(row["request_id"]), int(row["step_pgid"])
        command_pid, child_pid = map(int, pids.read_text().split())
        before = Ledger.read(store)
        fault = time.monotonic()
        code, out, err = invoke_cli("stop", request_id, "--grace", "2", "--reason", "chaos")
        stop_s = time.monotonic() - fault
        assert code == 0, out + err
        assert "STOPPED_BY_OPERATOR" in out
        assert runner.wait(timeout=30) == 15
    finally:
        if runner.poll() is None:
            runner.kill()
    assert stop_s >= 2, f"ended after {stop_s:.1f}s: SIGTERM cannot have been ignored for the 2 s grace"
    assert not _alive(command_pid) and not _alive(child_pid)
    assert not group_alive(pgid)
    rows = _assert_invariants(sample_home, store, before, [request_id])
    assert rows[request_id]["status"] == RequestStatus.STOPPED_BY_OPERATOR.value
    assert rows[request_id]["run_status"] == "FAILURE"
    cancelled = [json.loads(r.body) for r in store.audit_records(request_id=request_id) if r.kind == "run.cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["latency_ms"] >= 2000, cancelled
    print(f"stubborn step: request STOPPED_BY_OPERATOR {stop_s:.1f}s after `intent stop --grace 2`")

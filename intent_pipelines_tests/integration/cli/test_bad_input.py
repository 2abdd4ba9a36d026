"""Bad input everywhere a user types: one line on stderr, the documented exit code, no trace, no side effect.

Each case is an argv (and, for some, environment variables) with the exit code docs/cli.md gives it.
Placeholders in braces are filled in from the `world` fixture: ``{request}`` is a real (dry-run)
request, ``{file}`` a regular file, ``{dir}`` a directory, ``{readonly}`` a directory nobody may write
to, ``{marker}`` a path an injected command would create, ``{big}`` 100 kB (over the argument limit),
``{near}`` 9,000 characters (under it), ``{nul}`` a string with a NUL byte.
"""

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from intent_pipelines.cli.main import main
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore
from intent_pipelines.testing import free_ports, invoke_cli, prepare_sample_home, stop_fleet

INTENT_BIN = str(Path(sys.executable).parent / "intent")
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|PRAGMA|FROM|WHERE)\s")
SECRET_PASSWORD = "s3cr3t-pw-4711"
# Commands whose bad input could start a Dagster run if it slipped through.
LAUNCHING = ("run", "replay", "resume")
# Generous on 2 shared cores; an unbounded case (a loop over every day since year 1) takes minutes.
CASE_SECONDS = 30.0


@dataclass(frozen=True)
class Case:
    """One malformed invocation and the exit code it must end with."""

    argv: tuple[str, ...]
    code: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def records_refusal(self) -> bool:
        """`run`/`replay` record a request refused by the intent's own rules (exit 4..7) as REFUSED."""
        return self.argv[0] in ("run", "replay") and 4 <= self.code <= 7 and not self.env

    def label(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{env} {' '.join(self.argv)}".strip()[:90]


def case(*argv: str, code: int, **env: str) -> Case:
    return Case(argv, code, env)


APP = ("-p", "app=hello-api")
CASES = [
    # the group itself
    case("--frob", code=2),
    case("frobnicate", code=2),
    case("{big}", code=2),
    case("{nul}", code=2),
    case("$(touch {marker})", code=2),
    case("; rm -rf /", code=2),
    case("list", "--json", "--json=1", code=2),
    # list
    case("list", "--frob", code=2),
    case("list", "extra", code=2),
    case("list", "--json=yes", code=2),
    # show
    case("show", code=2),
    case("show", "nosuch", code=3),
    case("show", "{near}", code=3),
    case("show", "{big}", code=2),
    case("show", "{nul}", code=2),
    case("show", "$(touch {marker})", code=3),
    case("show", "../../etc/passwd", code=3),
    case("show", "deploy-app", "extra", code=2),
    # validate and lint
    case("validate", "/nonexistent/x.yaml", code=3),
    case("validate", "{nul}", code=2),
    case("validate", "{big}", code=2),
    case("validate", "{near}", code=2),
    case("validate", "/etc/passwd", code=3),
    case("validate", "{file}", code=3),
    case("lint", "/nonexistent", code=3),
    case("lint", "{nul}", code=2),
    case("lint", "{near}", code=2),
    case("lint", "--frob", code=2),
    # plan
    case("plan", code=2),
    case("plan", "nosuch", code=3),
    case("plan", "deploy-app", code=4),
    case("plan", "deploy-app", "-p", "app", code=2),
    case("plan", "deploy-app", "-p", "=x", code=2),
    case("plan", "deploy-app", "-p", "{nul}", code=2),
    case("plan", "deploy-app", "-p", "app=nope", code=4),
    case("plan", "deploy-app", "-p", "app={near}", code=4),
    case("plan", "deploy-app", *APP, "-p", "ref=$(touch {marker})", code=4),
    case("plan", "deploy-app", *APP, "-p", "ref=v1; rm -rf /", code=4),
    case("plan", "deploy-app", *APP, "-p", "ref=`id`", code=4),
    case("plan", "deploy-app", *APP, "-p", "nosuch=1", code=4),
    case("plan", "deploy-app", *APP, "-p", "env=nope", code=4),
    case("plan", "deploy-app", *APP, "-p", "migrate=maybe", code=4),
    case("plan", "deploy-app", *APP, "--json=x", code=2),
    case("plan", "scale-app", *APP, "-p", "replicas=many", code=4),
    case("plan", "scale-app", *APP, "-p", "replicas=-1", code=4),
    case("plan", "scale-app", *APP, "-p", "replicas=1.5", code=4),
    case("plan", "scale-app", *APP, "-p", "replicas=1e309", code=4),
    case("plan", "scale-app", *APP, "-p", "replicas=" + "9" * 5000, code=4),
    # graph
    case("graph", code=2),
    case("graph", "nosuch", code=3),
    case("graph", "'; DROP TABLE requests; --", code=3),
    # run
    case("run", code=2),
    case("run", "--frob", code=2),
    case("run", "nosuch", code=3),
    case("run", "deploy-ap", *APP, code=3),
    case("run", "deploy-app", code=4),
    case("run", "deploy-app", "-p", "app", code=2),
    case("run", "deploy-app", "-p", "app=nope", code=4),
    case("run", "deploy-app", *APP, "-p", "ref=$(touch {marker})", code=4),
    case("run", "deploy-app", *APP, "-p", "ref=v1; rm -rf /", code=4),
    case("run", "scale-app", *APP, "-p", "replicas=99", code=4),
    case("run", "scale-app", *APP, "-p", "replicas=-5", code=4),
    case("run", "deploy-app", *APP, "-p", "env=prod", code=5),
    case("run", "deploy-app", *APP, "-p", "env=prod", "-p", "ref=v1", code=6),
    case("run", "deploy-app", *APP, "--no-wait", code=2),
    case("run", "deploy-app", *APP, "--dagster-url", "http://x", code=2),
    case("run", "deploy-app", *APP, "--submit", "--dagster-url", "file:///etc/passwd", code=2),
    case("run", "deploy-app", *APP, "--reason", "{big}", code=2),
    case("run", "deploy-app", *APP, "--confirm={near}", code=2),
    case("run", "deploy-app", *APP, "--confirm=zzzz", code=2),
    case("run", "deploy-app", *APP, "--dry-run=yes", code=2),
    # replay, resume
    case("replay", code=2),
    case("replay", "nope", code=2),
    case("replay", "{big}", code=2),
    case("replay", "{near}", code=2),
    case("replay", "{request}", "--override", "app", code=2),
    case("replay", "{request}", "--override", "ref=$(touch {marker})", code=4),
    case("replay", "{request}", "--override", "nosuch=1", code=4),
    case("replay", "{request}", "--frob", code=2),
    case("resume", code=2),
    case("resume", "nope", code=2),
    case("resume", "{near}", code=2),
    case("resume", "{request}", code=2),
    # approve, reject
    case("approve", "nope", "--step", "s", "--reason", "r", code=2),
    case("approve", "{request}", code=2),
    case("approve", "{request}", "--step", "nosuch", "--reason", "r", code=2),
    case("approve", "{request}", "--step", "x", "--reason", "{nul}", code=2),
    case("reject", "{request}", "--step", "build", "--reason", "r", code=2),
    case("reject", "{near}", "--step", "x", "--reason", "r", code=2),
    # audit verify
    case("audit", "verify", "--date", "2024-02-30", code=2),
    case("audit", "verify", "--date", "0001-01-01", code=2),
    case("audit", "verify", "--from", "2024-01-01", "--to", "9999-12-31", code=2),
    case("audit", "verify", "--from", "0001-01-01", "--to", "2024-01-01", code=2),
    case("audit", "verify", "--from", "2024-01-02", "--to", "2024-01-01", code=2),
    case("audit", "verify", "--from", "2024-01-01", code=2),
    case("audit", "verify", "--days", "0", code=2),
    case("audit", "verify", "--days", "-1", code=2),
    case("audit", "verify", "--days", "100000000", code=2),
    case("audit", "verify", "--days", "1e3", code=2),
    case("audit", "verify", "--date", "2024-01-01", "--days", "3", code=2),
    case("audit", "verify", "--request", "nope", code=2),
    case("audit", "verify", "--request", "{near}", code=2),
    case("audit", "verify", "--parquet", "/etc/passwd", code=2),
    case("audit", "verify", "--parquet", "{file}", code=2),
    case("audit", "verify", "--parquet", "/nonexistent", code=2),
    case("audit", "verify", "--parquet", "{dir}", "--date", "2024-01-01", code=2),
    case("audit", "verify", "--format", "xml", code=2),
    # audit show, export, checkpoint
    case("audit", "show", "nope", code=2),
    case("audit", "show", "{near}", code=2),
    case("audit", "show", "' OR 1=1 --", code=2),
    case("audit", "show", "%", code=2),
    case("audit", "show", "%%%%", code=2),
    case("audit", "export", code=2),
    case("audit", "export", "--date", "yesterday", code=2),
    case("audit", "export", "--date", "9999-12-31", code=2),
    case("audit", "export", "--date", "2024-01-01", "--out", "/etc/hostname", code=2),
    case("audit", "export", "--date", "2024-01-01", "--out", "{file}", code=2),
    case("audit", "export", "--date", "2024-01-01", "--out", "{file}/sub", code=2),
    case("audit", "export", "--date", "2024-01-01", "--out", "{readonly}", code=2),
    case("audit", "checkpoint", "extra", code=2),
    case("audit", "frob", code=2),
    # failures
    case("failures", "--days", "x", code=2),
    case("failures", "--days", "0", code=2),
    case("failures", "--days", "100000000", code=2),
    case("failures", "--days", "1" + "0" * 40, code=2),
    case("failures", "--date", "0001-01-01", code=2),
    case("failures", "--date", "2024-13-01", code=2),
    case("failures", "--date", "2024-01-01", "--days", "2", code=2),
    case("failures", "--format", "xml", code=2),
    # metrics
    case("metrics", "--from", "0001-01-01", code=2),
    case("metrics", "--to", "9999-12-31", code=2),
    case("metrics", "--from", "1900-01-01", "--to", "2100-01-01", code=2),
    case("metrics", "--from", "2024-01-02", "--to", "2024-01-01", code=2),
    case("metrics", "--from", "$(touch {marker})", code=2),
    case("metrics", "--format", "xml", code=2),
    case("metrics", "--format", "{near}", code=2),
    case("metrics", "--threshold", "x=y", code=2),
    case("metrics", "--threshold", "success_rate_drop", code=2),
    case("metrics", "--threshold", "success_rate_drop=lots", code=2),
    case("metrics", "--threshold", "success_rate_drop=nan", code=2),
    case("metrics", "--threshold", "min_executions=-1", code=2),
    case("metrics", "--drift", "/etc/passwd", code=2),
    case("metrics", "--drift", "/nonexistent.json", code=2),
    case("metrics", "--drift", "{dir}", code=2),
    case("metrics", "--drift", "{file}", "--format", "prometheus", code=2),
    case("metrics", "--save-baseline", "{dir}", code=2),
    case("metrics", "--save-baseline", "{file}/x.json", code=2),
    # status, watch, explain, stop, unlock
    case("status", "--frob", code=2),
    case("status", "extra", code=2),
    case("watch", "nope", code=2),
    case("watch", "x", "--interval", "-5", code=2),
    case("watch", "x", "--interval", "nan", code=2),
    case("watch", "x", "--interval", "0", code=2),
    case("explain", "nope", code=2),
    case("explain", "{near}", code=2),
    case("explain", "%", code=2),
    case("stop", "nope", code=2),
    case("stop", "{request}", code=2),
    case("stop", "x", "--grace", "-1", code=2),
    case("stop", "x", "--grace", "nan", code=2),
    case("stop", "x", "--grace", "1e400", code=2),
    case("stop", "x", "--wait", "inf", code=2),
    case("stop", "x", "--wait", "soon", code=2),
    case("unlock", "nope", code=2),
    case("unlock", "; rm -rf /", code=2),
    case("unlock", "x", "--force", code=2),
    case("unlock", "{near}", code=2),
    # init (parsing only: a valid init changes the home)
    case("init", "--frob", code=2),
    case("init", "extra", code=2),
    # the environment
    case("list", code=2, INTENT_HOME="{file}"),
    case("status", code=2, INTENT_HOME="{file}"),
    case("metrics", code=2, INTENT_HOME="{file}"),
    case("audit", "verify", code=2, INTENT_HOME="{file}"),
    case("run", "deploy-app", *APP, code=2, INTENT_HOME="{file}"),
    case("audit", "verify", code=2, INTENT_HOME="{file}/sub"),
    case("status", code=2, INTENT_HOME="{readonly}"),
    case("audit", "verify", code=2, INTENT_HOME="{readonly}"),
    case("run", "deploy-app", *APP, code=2, INTENT_HOME="{readonly}"),
    case("metrics", code=2, INTENT_HOME="{readonly}/sub"),
    case("status", code=2, INTENT_HOME="h" * 5000),
    case("audit", "verify", code=8, INTENT_STORE_URL="notaurl"),
    case("audit", "verify", code=8, INTENT_STORE_URL="mysql://user@host/db"),
    case("audit", "show", "x", code=8, INTENT_STORE_URL="sqlite:////nonexistent/dir/state.db"),
    case("audit", "verify", code=8, INTENT_STORE_URL="sqlite:///{file}"),
    case("audit", "verify", code=8, INTENT_STORE_URL=f"postgresql://u:{SECRET_PASSWORD}@127.0.0.1:{{port}}/db"),
    case("run", "deploy-app", "-p", "app=nope", code=8, INTENT_STORE_URL="sqlite:///{broken_db}"),
    case("plan", "deploy-app", *APP, code=2, INTENT_FLEET="{dir}"),
    case("plan", "deploy-app", *APP, code=4, INTENT_FLEET="/etc/passwd"),
    case("plan", "deploy-app", *APP, code=4, INTENT_FLEET="/nonexistent/fleet.yaml"),
    case("list", code=2, INTENT_WATCHDOG_STALE_S="abc"),
    case("list", code=2, INTENT_ALERT_SENSOR_INTERVAL_S="-1"),
]


@dataclass(frozen=True)
class World:
    """A sample home with one finished (dry-run) request, and the odd paths the cases point at."""

    home: IntentHome
    values: dict[str, str]

    def fill(self, text: str) -> str:
        for key, value in self.values.items():
            text = text.replace("{" + key + "}", value)
        return text

    @property
    def marker(self) -> Path:
        return Path(self.values["marker"])


@dataclass(frozen=True)
class Snapshot:
    """What bad input must not change: requests, the audit chain, Dagster runs, files in INTENT_HOME."""

    requests: dict[str, str]
    audit_records: int
    runs: int | None
    files: frozenset[str]


def snapshot(home: IntentHome, *, with_runs: bool) -> Snapshot:
    with contextlib.closing(sqlite3.connect(home.state_db)) as db:
        requests = dict(db.execute("SELECT request_id, status FROM requests").fetchall())
        (audit_records,) = db.execute("SELECT count(*) FROM audit_events").fetchone()
    runs = None
    if with_runs:
        with dg.DagsterInstance.get() as instance:
            runs = len(instance.get_runs())
    # Dagster's own storage under dagster/ is counted by its runs; SQLite's -wal/-shm come and go.
    files = frozenset(str(p.relative_to(home.root)) for p in home.root.rglob("*")
                      if p.relative_to(home.root).parts[0] != "dagster" and not p.name.endswith(("-wal", "-shm")))
    return Snapshot(requests, audit_records, runs, files)


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[bool]:
    """``path`` made unwritable even for root (chattr +i), or by its mode; yields whether that worked."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield True
        path.chmod(0o755)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    try:
        yield done
    finally:
        if done:
            subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One sample home for every case (each case checks it is left as it was found)."""
    root = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as patch, read_only_directory(root / "readonly") as read_only:
        home = prepare_sample_home(root / "home")
        patch.setenv("INTENT_HOME", str(home.root))
        patch.setenv("DAGSTER_HOME", str(home.dagster_home))
        for name in ("INTENT_FLEET", "INTENTS_PATH", "INTENT_STORE_URL", "INTENT_DEBUG"):
            patch.delenv(name, raising=False)
        code, out, err = invoke_cli("run", "deploy-app", *APP, "--dry-run", "--json")
        assert code == 0, err
        (root / "file").write_text("neither YAML, JSON, Parquet nor SQLite\n")
        (root / "dir").mkdir()
        broken = StateStore(f"sqlite:///{root / 'broken.db'}")
        broken.engine.dispose()
        with contextlib.closing(sqlite3.connect(root / "broken.db")) as db:
            for table in ("requests", "audit_events"):
                db.execute(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                           "BEGIN SELECT RAISE(ABORT, 'writes refused'); END")
            db.commit()
        values = {"request": json.loads(out)["request_id"], "file": str(root / "file"), "dir": str(root / "dir"),
                  "readonly": str(root / "readonly") if read_only else "", "marker": str(root / "injected"),
                  "broken_db": str(root / "broken.db"), "port": str(free_ports(1)),
                  "big": "x" * 100_000, "near": "y" * 9_000, "nul": "a\0b"}
        yield World(home, values)
        stop_fleet(home)


def check_one_error_line(err: str, *, typed: tuple[str, ...] = (), max_chars: int = 1100) -> str:
    """The one error line of ``err``; SQL in it may only be what the user typed (quoted back)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines[:5]
    line = lines[0]
    assert line.startswith("error: "), line
    unquoted = line
    for arg in typed:
        unquoted = unquoted.replace(arg, "")
    assert "Traceback" not in err and "[SQL" not in line and not SQL.search(unquoted), line
    assert len(line) <= max_chars, len(line)
    return line


@pytest.mark.parametrize("bad", CASES, ids=Case.label)
def test_bad_input_ends_in_one_line_with_its_code_and_changes_nothing(
        world: World, bad: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Malformed argv or environment: the documented exit code, one error line on stderr, nothing recorded."""
    if "{readonly}" in " ".join([*bad.argv, *bad.env.values()]) and not world.values["readonly"]:
        pytest.skip("no way to make a directory read-only here (chattr failed)")
    for name, value in bad.env.items():
        monkeypatch.setenv(name, world.fill(value))
    launching = bad.argv[0] in LAUNCHING
    before = snapshot(world.home, with_runs=launching)
    started = time.monotonic()
    argv = tuple(world.fill(arg) for arg in bad.argv)
    code, _, err = invoke_cli(*argv)
    elapsed = time.monotonic() - started
    assert code == bad.code, err[:500]
    line = check_one_error_line(err, typed=argv)
    assert SECRET_PASSWORD not in line
    assert elapsed < CASE_SECONDS
    assert not world.marker.exists()
    after = snapshot(world.home, with_runs=launching)
    assert after.runs == before.runs
    if not bad.records_refusal:
        assert after == before
        return
    # A refusal by the intent's own rules is recorded, as from the UI: one REFUSED request, its alert.
    new = {k: v for k, v in after.requests.items() if k not in before.requests}
    assert list(new.values()) == ["REFUSED"] and len(after.requests) == len(before.requests) + 1
    assert after.audit_records > before.audit_records
    assert all(Path(f).parts[0] in ("logs", "reports") for f in after.files - before.files)


def test_the_cases_cover_every_command() -> None:
    """Every command of docs/cli.md has its own bad-input cases, and there are at least 100."""
    documented = {"init", "list", "show", "validate", "lint", "plan", "graph", "run", "replay", "resume", "approve",
                  "reject", "audit", "failures", "metrics", "status", "watch", "explain", "stop", "unlock"}
    assert documented - {c.argv[0] for c in CASES} == set()
    assert len(CASES) >= 100


def every_command() -> list[str]:
    import click

    with click.Context(main) as ctx:
        return list(main.list_commands(ctx))


# Dynamic, so that a command added later (or by a change in progress) is held to the rule at once.
@pytest.mark.parametrize("name", every_command())
def test_every_command_refuses_an_unknown_option_in_one_line(world: World, name: str) -> None:
    """`intent <command> --frob` is a usage error: one line naming the command's --help, exit 2, nothing changed."""
    before = snapshot(world.home, with_runs=False)
    code, _, err = invoke_cli(name, "--frob")
    assert code == 2
    line = check_one_error_line(err)
    assert line.startswith("error: no such option '--frob'") and line.endswith(f" Run 'intent {name} --help'.")
    assert snapshot(world.home, with_runs=False) == before


def test_a_usage_error_says_which_help_to_read(world: World) -> None:
    """click's three lines (Usage, Try, Error) become one that names the command's --help."""
    code, _, err = invoke_cli("run", "--frob")
    assert code == 2
    assert check_one_error_line(err) == "error: no such option '--frob'. Run 'intent run --help'."
    code, _, err = invoke_cli("audit", "export", "--date", "2024-01-01", "--out", "/etc/hostname")
    assert code == 2 and "Run 'intent audit export --help'." in check_one_error_line(err)


def test_an_echoed_value_is_cut_to_a_readable_line(world: World) -> None:
    """A long value quoted back keeps its head and its length; the hint at the end survives."""
    code, _, err = invoke_cli("show", "z" * 9_000)
    line = check_one_error_line(err, max_chars=400)
    assert code == 3 and re.search(r"'z{99}…\(900\d characters\)", line)
    assert line.endswith("Run `intent list` to see them.")


def test_a_store_error_names_the_store_without_sql(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that refuses a write is StoreError (8) naming the store and the driver's reason, no SQL."""
    monkeypatch.setenv("INTENT_STORE_URL", f"sqlite:///{world.values['broken_db']}")
    code, _, err = invoke_cli("run", "deploy-app", "-p", "app=nope")
    line = check_one_error_line(err)
    assert code == 8
    assert world.values["broken_db"] in line and "IntegrityError: writes refused" in line
    assert "[SQL" not in line and "parameters" not in line


def test_the_widest_period_costs_what_the_chain_holds(world: World) -> None:
    """`intent metrics` over every accepted day reads the days with events, not three million empty ones."""
    started = time.monotonic()
    code, out, err = invoke_cli("metrics", "--from", "1970-01-01", "--to", "9999-12-30", "--format", "json")
    assert code == 0, err
    assert time.monotonic() - started < 15
    assert json.loads(out)["period"] == {"from": "1970-01-01", "to": "9999-12-30"}


PROCESS_CASES = [
    case("--frob", code=2),
    case("run", "--frob", code=2),
    case("show", "{big}", code=2),
    case("metrics", "--to", "9999-12-31", code=2),
    case("failures", "--days", "100000000", code=2),
    case("audit", "verify", "--parquet", "/etc/passwd", code=2),
    case("status", code=2, INTENT_HOME="{file}"),
]


@pytest.mark.parametrize("bad", PROCESS_CASES, ids=Case.label)
def test_the_real_process_exits_with_the_code_and_one_line(world: World, bad: Case) -> None:
    """The installed `intent` binary, not only CliRunner: its exit status and its stderr are the same."""
    env = {**os.environ, **{k: world.fill(v) for k, v in bad.env.items()}}
    before = snapshot(world.home, with_runs=False)
    done = subprocess.run([INTENT_BIN, *(world.fill(arg) for arg in bad.argv)], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == bad.code, done.stderr[:500]
    check_one_error_line(done.stderr)
    assert snapshot(world.home, with_runs=False) == before

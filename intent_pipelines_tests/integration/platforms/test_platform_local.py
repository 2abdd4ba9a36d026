"""The local platform against the real hello-api sample: releases, processes, health, logs."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from intent_pipelines.actions.base import Outputs
from intent_pipelines.errors import StepFailed
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.fleet import App, load_fleet, register_app
from intent_pipelines.home import IntentHome
from intent_pipelines.platforms.local import LocalPlatform, database_url

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]


def commit(repo: Path, message: str) -> None:
    subprocess.run([*GIT, "-C", str(repo), "add", "--all"], check=True, capture_output=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qm", message], check=True, capture_output=True)


def port_of(home: IntentHome) -> int:
    return load_fleet(home.fleet_file).app("hello-api").port


def platform(home: IntentHome, ctx: ActionContext) -> tuple[App, LocalPlatform]:
    return load_fleet(home.fleet_file).app("hello-api"), LocalPlatform(home, home.fleet_file, ctx)


def test_build_switch_start_health_observe(
    sample: Path, home: IntentHome, run_action: Callable[..., Outputs], step_lines: list[str]
) -> None:
    """A release built from git runs detached, passes health, and is reported by observe."""
    built = run_action("app.build", app="hello-api")
    assert built["previous"] == ""
    release_dir = home.fleet_dir / "hello-api" / "releases" / built["release"]
    assert (release_dir / "app.py").exists() and not (release_dir / ".git").exists()
    assert run_action("app.switch", app="hello-api", release=built["release"]) == {"previous": ""}
    assert os.readlink(home.fleet_dir / "hello-api" / "current") == f"releases/{built['release']}"

    assert run_action("app.start", app="hello-api") == {"replicas": 1}
    assert run_action("app.health", app="hello-api") == {"healthy": 1}
    body = requests.get(f"http://127.0.0.1:{port_of(home)}/", timeout=5).json()
    assert body["release"] == built["release"]

    report = run_action("app.observe", app="hello-api")
    assert report["healthy"] is True
    assert report["replicas"] == 1
    assert report["version"] == "1.0.0"
    assert report["release"] == built["release"]
    assert any("verdict:  HEALTHY" in line for line in step_lines)
    state = json.loads((home.fleet_dir / "hello-api" / "run" / "r1.json").read_text())
    assert state["port"] == port_of(home) and state["release"] == built["release"]


def test_scale_restart_stop(
    sample: Path, home: IntentHome, ctx: ActionContext, run_action: Callable[..., Outputs]
) -> None:
    """Scaling adds and removes replicas on consecutive ports; restart keeps the count; stop frees ports."""
    app, local = platform(home, ctx)
    run_action("app.start", app="hello-api")
    assert run_action("app.scale", app="hello-api", replicas=3) == {"replicas": 3}
    assert [r.port for r in local.status(app)] == [app.port, app.port + 1, app.port + 2]
    assert run_action("app.health", app="hello-api") == {"healthy": 3}

    assert run_action("app.scale", app="hello-api", replicas=2) == {"replicas": 2}
    before = {r.name: r.pid for r in local.status(app)}
    assert run_action("app.restart", app="hello-api") == {"replicas": 2}
    after = {r.name: r.pid for r in local.status(app)}
    assert after.keys() == {"r1", "r2"} and all(after[n] != before[n] for n in after)

    assert run_action("app.stop", app="hello-api") == {"stopped": 2}
    assert local.status(app) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{app.port}/health", timeout=2)


def test_broken_release_fails_health_and_rollback_restores(
    sample: Path, home: IntentHome, run_action: Callable[..., Outputs]
) -> None:
    """A release with a BROKEN file fails health (transient); app.rollback brings back the good one."""
    good = run_action("app.build", app="hello-api")["release"]
    run_action("app.switch", app="hello-api", release=good)
    run_action("app.start", app="hello-api")
    (sample / "BROKEN").write_text("on purpose\n")
    commit(sample, "break it")
    bad = run_action("app.build", app="hello-api")
    assert bad["previous"] == good and bad["release"] != good
    run_action("app.switch", app="hello-api", release=bad["release"])
    run_action("app.restart", app="hello-api")
    with pytest.raises(StepFailed, match="1/1 replicas unhealthy") as failed:
        run_action("app.health", app="hello-api", timeout_s=1)
    assert failed.value.transient

    assert run_action("app.rollback", app="hello-api") == {
        "release": good,
        "previous": bad["release"],
        "stopped": False,
    }
    assert run_action("app.health", app="hello-api") == {"healthy": 1}
    errors = run_action("app.logs", app="hello-api", pattern="ERROR", since="10m")
    assert errors["matches"] >= 1


def test_logs_filter_by_time_pattern_and_count(home: IntentHome, ctx: ActionContext) -> None:
    """Logs keep lines newer than `since` that match the pattern, newest last, at most `lines`."""
    app = App(name="quiet", source=".")
    logs = home.fleet_dir / "quiet" / "logs"
    logs.mkdir(parents=True)
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="seconds")
    new = datetime.now(UTC).isoformat(timespec="seconds")
    (logs / "r1.log").write_text(
        f"{old} ERROR old failure\n{new} INFO fine\n{new} ERROR new failure\ncontinuation\n"
    )
    local = LocalPlatform(home, home.fleet_file, ctx)
    assert local.logs(app, since="1h", pattern="ERROR") == [f"[r1] {new} ERROR new failure"]
    assert local.logs(app, lines=2) == [f"[r1] {new} ERROR new failure", "[r1] continuation"]
    assert len(local.logs(app)) == 4


def test_stale_pid_file_is_reported_dead_and_cleared(
    sample: Path, home: IntentHome, ctx: ActionContext
) -> None:
    """A pid file left by a crashed replica shows as dead and stop removes it without signalling."""
    app, local = platform(home, ctx)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = home.fleet_dir / "hello-api" / "run"
    run.mkdir(parents=True)
    (run / "r1.json").write_text(json.dumps({"pid": dead.pid, "port": app.port, "release": "x"}))
    (run / "r1.pid").write_text(f"{dead.pid}\n")
    assert [(r.name, r.alive) for r in local.status(app)] == [("r1", False)]
    local.stop(app)
    assert not (run / "r1.json").exists() and not (run / "r1.pid").exists()


def test_app_that_exits_at_once_fails_start_with_its_log(
    free_ports: Callable[[int], int], home: IntentHome, ctx: ActionContext, tmp_path: Path
) -> None:
    """A start command that dies immediately fails the step and quotes the replica's log."""
    app = App(
        name="crash",
        source=str(tmp_path),
        port=free_ports(1),
        start=[sys.executable, "-c", "print('bad config'); raise SystemExit(3)"],
    )
    with pytest.raises(StepFailed, match="exited with 3 right after start") as failed:
        LocalPlatform(home, home.fleet_file, ctx).start(app, 1)
    assert "bad config" in failed.value.detail.stderr_tail


def test_port_taken_by_another_process_is_refused(
    sample: Path, home: IntentHome, run_action: Callable[..., Outputs]
) -> None:
    """Starting on a port someone else listens on fails with a clear message instead of a crash loop."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port_of(home)))
        squatter.listen()
        with pytest.raises(StepFailed, match=f"port {port_of(home)} .* already in use"):
            run_action("app.start", app="hello-api")


def test_detached_replica_does_not_hold_the_callers_output(
    sample: Path, home: IntentHome, tmp_path: Path
) -> None:
    """A process that starts a replica and exits releases its stdout pipe at once."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        import intent_pipelines.actions.app as app
        from intent_pipelines.execution.context import ActionContext
        from intent_pipelines.home import IntentHome
        ctx = ActionContext("r", "s", IntentHome(Path({str(home.root)!r})), Path({str(tmp_path / "c.log")!r}))
        print(app.start(ctx, app.StartInput(app="hello-api")))
    """)
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "INTENT_HOME": str(home.root)},
    )
    assert child.returncode == 0, child.stderr
    assert "'replicas': 1" in child.stdout
    assert requests.get(f"http://127.0.0.1:{port_of(home)}/health", timeout=5).status_code == 200


def test_unknown_ref_and_unknown_release_say_what_to_do(
    sample: Path, run_action: Callable[..., Outputs]
) -> None:
    """Building a ref that does not exist or switching to an unknown release fails deterministically."""
    with pytest.raises(StepFailed, match="cannot resolve ref 'no-such-branch'") as failed:
        run_action("app.build", app="hello-api", ref="no-such-branch")
    assert not failed.value.transient
    with pytest.raises(StepFailed, match=r"has no release 'nope' \(known: none\)"):
        run_action("app.switch", app="hello-api", release="nope")
    with pytest.raises(StepFailed, match="no previous release to roll back to"):
        run_action("app.rollback", app="hello-api")


def test_relative_sqlite_database_lives_in_the_app_data_dir(home: IntentHome) -> None:
    """A relative sqlite URL resolves under fleet/<app>/data so it survives new releases."""
    app = App(name="hello-api", database="sqlite:///hello.db")
    assert database_url(home, app) == f"sqlite:///{home.fleet_dir}/hello-api/data/hello.db"
    absolute = App(name="x", database="sqlite:////var/x.db")
    assert database_url(home, absolute) == "sqlite:////var/x.db"
    assert database_url(home, App(name="y")) == ""


def test_app_database_env_reaches_the_app(
    sample: Path, home: IntentHome, run_action: Callable[..., Outputs], ctx: ActionContext
) -> None:
    """Replicas get APP_DATABASE, so hello-api serves the rows db.migrate created."""
    run_action("db.migrate", app="hello-api", action="apply")
    run_action("app.start", app="hello-api")
    run_action("app.health", app="hello-api")
    items = requests.get(f"http://127.0.0.1:{port_of(home)}/items", timeout=5).json()["items"]
    assert [(i["name"], i["price_cents"]) for i in items] == [("apple", 120), ("pear", 90)]


def test_previews_are_read_only(sample: Path, home: IntentHome, preview_action: Callable[..., str]) -> None:
    """Previews describe the change and the current state without building or starting anything."""
    text = preview_action("app.build", app="hello-api", ref="HEAD")
    assert "build a release of hello-api at HEAD" in text and "0/0 replicas alive" in text
    assert "scale hello-api to 3" in preview_action("app.scale", app="hello-api", replicas=3)
    assert "previous release" in preview_action("app.rollback", app="hello-api")
    assert not (home.fleet_dir / "hello-api" / "releases").exists()
    assert not (home.fleet_dir / "hello-api" / "run").exists()


def test_register_keeps_other_apps_and_start_requires_a_command(home: IntentHome, ctx: ActionContext) -> None:
    """An app without a start command cannot be started and says which key to add."""
    register_app(home.fleet_file, App(name="nostart", source="."))
    app = load_fleet(home.fleet_file).app("nostart")
    with pytest.raises(StepFailed, match="has no `start` command"):
        LocalPlatform(home, home.fleet_file, ctx).start(app, 1)


def test_rollback_of_a_first_release_stops_it_when_asked(
    sample: Path, run_action: Callable[..., Outputs]
) -> None:
    """With no earlier release, app.rollback fails, or with stop_if_none stops the broken app."""
    first = run_action("app.build", app="hello-api")["release"]
    run_action("app.switch", app="hello-api", release=first)
    run_action("app.start", app="hello-api")
    with pytest.raises(StepFailed, match="no previous release"):
        run_action("app.rollback", app="hello-api")
    result = run_action("app.rollback", app="hello-api", stop_if_none=True)
    assert result == {"release": "", "previous": first, "stopped": True}
    assert run_action("app.stop", app="hello-api") == {"stopped": 0}

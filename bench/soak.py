"""Soak: a mixed workload against a real `intent up` for many minutes, with faults injected at random (seeded).

Workers launch requests from the CLI (`intent run`, in process) and through Dagster's GraphQL API
(queued, run by the daemon): successes, failures that roll back, manual gates that are approved
and resumed, long steps that are stopped and resumed, replays and re-executions. Meanwhile a
fault injector picks, at random from the seed, one of: SIGKILL of a CLI runner mid-step, SIGSTOP
of a runner for a few seconds, a webhook that answers 500 for a while, SIGKILL of the daemon (and
restart of `intent up`). At the end, after the product settles, the invariants are checked:

- every request ended (none RUNNING) and no lock is held;
- the audit chain verifies;
- alert lines written == alert lines expected (one per alerting ``request.complete``), per request and status;
- every CLI exit code equals the exit code its request recorded.

It prints and writes the requests by outcome, the faults injected, the invariant violations
(target 0), p50/p95 request latency per time window, and the resident memory of the webserver,
daemon and code server after warm-up and at the end (target: growth <= 10%).

    .venv/bin/python -m bench.soak                 # 25 minutes, seed 1
    .venv/bin/python -m bench.soak --minutes 5 --seed 7
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench._common import INTENT, Workspace, machine, verdict, workspace, write_results

NAME = "soak"
TARGET_RSS_GROWTH = 0.10
INTENTS = {
    "soak-ok": """
name: soak-ok
summary: two quick steps on one of four targets
params: {slot: {type: integer, min: 0, max: 3, default: 0}}
policy: {lock: "soak-{{ params.slot }}", lock_wait: 30}
steps:
  - {id: a, run: [sleep, "0.2"]}
  - {id: b, needs: [a], run: [sleep, "0.2"]}
""",
    "soak-fail": """
name: soak-fail
summary: a change, then a failure; the change is rolled back
steps:
  - {id: change, run: [true], rollback: {run: [true]}}
  - {id: boom, needs: [change], run: [false]}
""",
    "soak-gate": """
name: soak-gate
summary: a step, a manual gate, a step
steps:
  - {id: a, run: [true]}
  - {id: gate, needs: [a], uses: gate.manual}
  - {id: b, needs: [gate], run: [true]}
""",
    "soak-long": """
name: soak-long
summary: a long step (stopped, killed or frozen by the soak)
steps:
  - {id: hold, run: [sleep, "8"]}
""",
}
PROCESSES = {"webserver": "dagster_webserver", "daemon": "dagster._daemon", "code server": "code-server"}


@dataclass
class Tally:
    """What the soak did and saw, shared by its threads."""

    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    actions: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (minute, seconds) of `intent run soak-ok`
    exit_mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cli_codes: list[tuple[str, int]] = field(default_factory=list)  # (request id, CLI exit code)
    alerts_expected: int = 0
    alerts_written: int = 0

    def note(self, counter: Counter[str], key: str) -> None:
        with self.lock:
            counter[key] += 1


class Webhook:
    """A loopback webhook that answers 200, or 500 while ``failing``."""

    def __init__(self) -> None:
        self.failing = False
        self.received = 0
        soak = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                soak.received += 1
                self.send_response(500 if soak.failing else 200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def _cli(ws: Workspace, *args: str, timeout: float = 300) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([INTENT, *args], cwd=ws.root, env=ws.env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    try:
        outcome = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    except ValueError:
        outcome = {}
    return done.returncode, outcome


def _record(tally: Tally, code: int, outcome: dict[str, Any]) -> None:
    if outcome.get("request_id"):
        with tally.lock:
            tally.cli_codes.append((str(outcome["request_id"]), code))


def _running_request(store: Any, intent: str, known: set[str], timeout: float = 60) -> str | None:
    """The id of a new RUNNING request of ``intent`` once its step's command runs."""
    from intent_pipelines.status import RequestStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in store.requests_by_status(RequestStatus.RUNNING):
            if row["intent"] == intent and row["request_id"] not in known and row["step_pgid"]:
                return str(row["request_id"])
        time.sleep(0.1)
    return None


def cli_worker(ws: Workspace, tally: Tally, rng: random.Random, until: float) -> None:
    """One operator at a terminal: runs, failures, gates, stops, replays and resumes."""
    from intent_pipelines.store import StateStore

    store = StateStore(_store_url(ws))
    succeeded: list[str] = []
    while time.monotonic() < until:
        action = rng.choices(["ok", "fail", "gate", "stop", "replay"], weights=[6, 2, 1, 1, 1])[0]
        tally.note(tally.actions, f"cli {action}")
        try:
            if action == "ok":
                start = time.monotonic()
                code, outcome = _cli(ws, "run", "soak-ok", "-p", f"slot={rng.randrange(4)}", "--json")
                with tally.lock:
                    tally.latencies.append(((start - tally.started) / 60, time.monotonic() - start))
                _record(tally, code, outcome)
                if code == 0:
                    succeeded.append(str(outcome["request_id"]))
            elif action == "fail":
                _record(tally, *_cli(ws, "run", "soak-fail", "--json"))
            elif action == "gate":
                code, outcome = _cli(ws, "run", "soak-gate", "--json")
                _record(tally, code, outcome)
                if outcome.get("request_id"):
                    _cli(ws, "approve", outcome["request_id"], "--step", "gate", "--reason", "soak")
                    _record(tally, *_cli(ws, "resume", outcome["request_id"], "--json"))
            elif action == "stop":
                known = {r["request_id"] for r in store.recent_requests(200)}
                proc = subprocess.Popen([INTENT, "run", "soak-long", "--json"], cwd=ws.root, env=ws.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                request_id = _running_request(store, "soak-long", known)
                if request_id:
                    _cli(ws, "stop", request_id, "--reason", "soak", "--grace", "1")
                out, _ = proc.communicate(timeout=120)
                if request_id and out.strip().startswith("{"):
                    _record(tally, proc.returncode, json.loads(out))
                    _record(tally, *_cli(ws, "resume", request_id, "--json"))
            elif action == "replay" and succeeded:
                _record(tally, *_cli(ws, "replay", rng.choice(succeeded), "--json"))
        except Exception as exc:  # a soak goes on; the error is reported
            with tally.lock:
                tally.errors.append(f"cli {action}: {type(exc).__name__}: {exc}")


def queue_worker(ws: Workspace, up: Any, tally: Tally, rng: random.Random, until: float) -> None:
    """Launches through the Dagster API, as the UI does, and re-executes failures from failure."""
    while time.monotonic() < until:
        action = rng.choices(["ok", "fail", "reexecute"], weights=[4, 1, 1])[0]
        tally.note(tally.actions, f"queued {action}")
        try:
            if action == "reexecute":
                run_id = up.client.launch_run("soak_long", {})
                time.sleep(2)
                _cli(ws, "stop", run_id, "--reason", "soak", "--grace", "1")
                up.client.wait_for_run(run_id, timeout=120)
                up.client.wait_for_run(up.client.reexecute(run_id), timeout=180)
            else:
                job, config = ("soak_ok", {"slot": rng.randrange(4)}) if action == "ok" else ("soak_fail", {})
                up.client.wait_for_run(up.client.launch_run(job, config), timeout=180)
        except Exception as exc:
            with tally.lock:
                tally.errors.append(f"queued {action}: {type(exc).__name__}: {exc}")
            time.sleep(2)


def injector(ws: Workspace, up: Any, hook: Webhook, tally: Tally, rng: random.Random, until: float) -> None:
    """Every 20-40 s, one fault from the chaos list."""
    from intent_pipelines.store import StateStore

    store = StateStore(_store_url(ws))
    while time.monotonic() < until:
        time.sleep(rng.uniform(20, 40))
        fault = rng.choices(["kill runner", "freeze runner", "webhook 500", "kill daemon"], weights=[3, 2, 2, 1])[0]
        tally.note(tally.faults, fault)
        try:
            if fault == "webhook 500":
                hook.failing = True
                time.sleep(15)
                hook.failing = False
            elif fault == "kill daemon":
                daemon = _pid_of(up, PROCESSES["daemon"])
                if daemon:
                    os.kill(daemon, signal.SIGKILL)
                up.stop()  # `intent up` stops the others when one dies; start it again
                up.start()
            else:
                known = {r["request_id"] for r in store.recent_requests(500)}
                proc = subprocess.Popen([INTENT, "run", "soak-long", "--json"], cwd=ws.root, env=ws.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                request_id = _running_request(store, "soak-long", known)
                if fault == "kill runner":
                    proc.kill()
                    proc.wait(timeout=30)
                else:
                    proc.send_signal(signal.SIGSTOP)
                    time.sleep(4)
                    proc.send_signal(signal.SIGCONT)
                    out, _ = proc.communicate(timeout=120)
                    if out.strip().startswith("{"):
                        _record(tally, proc.returncode, json.loads(out))
                if request_id and fault == "kill runner":
                    _record(tally, *_cli(ws, "resume", request_id, "--json"))
        except Exception as exc:
            with tally.lock:
                tally.errors.append(f"fault {fault}: {type(exc).__name__}: {exc}")


def _pid_of(up: Any, needle: str) -> int | None:
    """The pid of the process in `intent up`'s group whose command line contains ``needle``."""
    pgid = up._process.pid if up._process else None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pgid is not None and stat[2] == str(pgid) and needle in cmdline:
            return int(entry.name)
    return None


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def memory(up: Any) -> dict[str, float | None]:
    return {name: _rss_mb(_pid_of(up, needle)) for name, needle in PROCESSES.items()}


def invariants(ws: Workspace, tally: Tally) -> list[str]:
    """Every violation found once the product has settled."""
    from intent_pipelines.alerts.log import read_alerts
    from intent_pipelines.home import IntentHome
    from intent_pipelines.status import RequestStatus
    from intent_pipelines.store import StateStore

    store = StateStore(_store_url(ws))
    running = store.requests_by_status(RequestStatus.RUNNING)
    violations = [f"request {r['request_id']} is still RUNNING" for r in running]
    violations += [f"lock {h.key} still held by {h.request_id}" for h in store.locks()]
    code, _ = _cli(ws, "audit", "verify")
    if code != 0:
        violations.append(f"intent audit verify exited {code}")
    expected: Counter[tuple[str, str]] = Counter()
    for record in store.audit_records_of_kind("request.complete"):
        status = RequestStatus(record.data()["status"])
        if status.category.alerts:
            expected[(record.request_id, status.value)] += 1
    written = Counter((a.request_id, a.status) for a in read_alerts(IntentHome(ws.home)))
    for key in sorted(set(expected) | set(written)):
        if expected[key] != written[key]:
            violations.append(f"alerts for {key}: {written[key]} written, {expected[key]} expected")
    # A resumed request records its latest ending: compare the last CLI call of each request.
    last_code = dict(tally.cli_codes)
    for request_id, code in last_code.items():
        row = store.request(request_id)
        if row is not None and int(row["exit_code"]) != code:
            violations.append(f"request {request_id}: CLI exit {code}, recorded {row['exit_code']} ({row['status']})")
    tally.alerts_expected, tally.alerts_written = sum(expected.values()), sum(written.values())
    return violations


def _store_url(ws: Workspace) -> str:
    return f"sqlite:///{ws.home / 'state.db'}"


def outcomes(ws: Workspace) -> dict[str, int]:
    """Requests by final status."""
    from intent_pipelines.store import StateStore

    return dict(Counter(r["status"] for r in StateStore(_store_url(ws)).recent_requests(1_000_000)))


def _windows(latencies: list[tuple[float, float]], width_min: float) -> list[dict[str, Any]]:
    buckets: dict[int, list[float]] = {}
    for minute, seconds in latencies:
        buckets.setdefault(int(minute // width_min), []).append(seconds)
    rows = []
    for index in sorted(buckets):
        values = sorted(buckets[index])
        rows.append({"from_min": index * width_min, "n": len(values), "p50_s": round(statistics.median(values), 2),
                     "p95_s": round(values[max(0, int(len(values) * 0.95) - 1)], 2)})
    return rows


@contextmanager
def product(ws: Workspace, hook: Webhook) -> Iterator[Any]:
    from intent_pipelines.dagster_dev import DagsterDev
    from intent_pipelines.home import IntentHome

    env = {"INTENTS_PATH": str(ws.intents), "INTENT_ALERT_WEBHOOK_URL": hook.url,
           "INTENT_ALERT_SENSOR_INTERVAL_S": "2", "INTENT_WATCHDOG_STALE_S": "60", "INTENT_WATCHDOG_GRACE_S": "2",
           "INTENT_ALERT_WEBHOOK_ATTEMPTS": "2", "INTENT_ALERT_WEBHOOK_TIMEOUT": "2"}
    ws.env.update(env)
    with DagsterDev(IntentHome(ws.home), env=env, startup_timeout_s=180) as up:
        yield up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="how long the workload runs (default 25)")
    parser.add_argument("--seed", type=int, default=1, help="the random seed of the workload and faults")
    parser.add_argument("--cli-workers", type=int, default=2, help="concurrent CLI operators (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    args = parser.parse_args(argv)
    hook = Webhook()
    with workspace() as ws:
        for name, text in INTENTS.items():
            ws.write_intent(name, text)
        with product(ws, hook) as up:
            tally = Tally()
            warm_until = time.monotonic() + 60
            threads = [threading.Thread(target=cli_worker, args=(ws, tally, random.Random(args.seed * 100 + i),
                                                                 warm_until)) for i in range(args.cli_workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rss_start = memory(up)
            until = time.monotonic() + args.minutes * 60
            rng = random.Random(args.seed)
            threads = [threading.Thread(target=cli_worker, args=(ws, tally, random.Random(rng.random()), until))
                       for _ in range(args.cli_workers)]
            threads.append(threading.Thread(target=queue_worker, args=(ws, up, tally, random.Random(rng.random()),
                                                                       until)))
            threads.append(threading.Thread(target=injector, args=(ws, up, hook, tally, random.Random(rng.random()),
                                                                   until)))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rss_end = memory(up)
            time.sleep(15)  # the sensors alert and end what the last faults left
            violations = invariants(ws, tally)
        by_outcome = outcomes(ws)
    growth = {k: round(end / start - 1, 3) if (start := rss_start[k]) and (end := rss_end[k]) else None
              for k in PROCESSES}
    data = {"machine": machine(), "minutes": args.minutes, "seed": args.seed, "outcomes": by_outcome,
            "actions": dict(tally.actions), "faults": dict(tally.faults), "violations": violations,
            "alerts": {"expected": tally.alerts_expected, "written": tally.alerts_written,
                       "webhook_posts": hook.received},
            "latency_windows": _windows(tally.latencies, max(1.0, args.minutes / 5)), "rss_mb_start": rss_start,
            "rss_mb_end": rss_end, "rss_growth": growth, "errors": tally.errors[:50]}
    write_results(NAME, data, _markdown(data), write=not args.no_write)
    return 0 if not violations else 1


def _markdown(data: dict[str, Any]) -> str:
    worst = max((g for g in data["rss_growth"].values() if g is not None), default=0.0)
    lines = [f"## Soak ({data['minutes']:g} min, seed {data['seed']})", "",
             f"- requests by outcome: {json.dumps(data['outcomes'], sort_keys=True)}",
             f"- actions: {json.dumps(data['actions'], sort_keys=True)}",
             f"- faults injected: {json.dumps(data['faults'], sort_keys=True)}",
             f"- invariant violations: {len(data['violations'])} (target 0)"
             + "".join(f"\n  - {v}" for v in data["violations"][:20]),
             f"- alerts expected {data['alerts']['expected']}, written {data['alerts']['written']}; "
             f"webhook POSTs received {data['alerts']['webhook_posts']}",
             f"- resident memory MB after warm-up {json.dumps(data['rss_mb_start'])}, at the end "
             f"{json.dumps(data['rss_mb_end'])}: worst growth {worst:.1%} "
             f"(target <= {TARGET_RSS_GROWTH:.0%}: {verdict(worst, TARGET_RSS_GROWTH)})",
             f"- errors in the workload itself: {len(data['errors'])}", "",
             "| from minute | n | p50 s | p95 s |", "| ---: | ---: | ---: | ---: |"]
    lines += [f"| {w['from_min']:g} | {w['n']} | {w['p50_s']:.2f} | {w['p95_s']:.2f} |"
              for w in data["latency_windows"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Stop latency: from invoking `intent stop` to the request ended, the Dagster run final and the step's group gone.

Each trial starts `intent run sleepy` (one silent `sleep 600` step, in process, as an operator
would) as a subprocess, waits until its step's process group is recorded, then starts
`intent stop REQUEST --grace 2` and polls from this process until all three are true: the request
is no longer RUNNING, the Dagster run is in a final state, and `killpg(pgid, 0)` finds nothing.
The time includes the `intent stop` process's own start-up (importing dagster), as an operator
feels it.

Target: p95 <= 5 s over 20 trials.

    .venv/bin/python -m bench.stop_latency --trials 20
"""

import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench._common import INTENT, BenchError, Workspace, base_parser, machine, verdict, workspace, write_results
from intent_pipelines.testing import group_gone

NAME = "stop_latency"
TARGET_P95_S = 5.0
FINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

SLEEPY = """\
name: sleepy
summary: one silent step that sleeps until stopped (stop latency benchmark)
policy:
  lock: "target:sleepy"
steps:
  - id: nap
    run: [sleep, "600"]
"""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def one_trial(ws: Workspace, store: Any, instance: Any) -> dict[str, float]:
    from intent_pipelines.status import RequestStatus

    run = subprocess.Popen([INTENT, "run", "sleepy"], cwd=ws.root, env=ws.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        row = None
        while time.monotonic() < deadline:
            running = [r for r in store.requests_by_status(RequestStatus.RUNNING) if r["step_pgid"]]
            if running:
                row = running[0]
                break
            if run.poll() is not None:
                raise BenchError(f"intent run exited {run.returncode} before its step ran: {run.stderr.read()}")
            time.sleep(0.05)
        if row is None:
            raise BenchError("the step never started")
        request_id, pgid = row["request_id"], int(row["step_pgid"])
        started = time.perf_counter()
        stop = subprocess.Popen([INTENT, "stop", request_id, "--grace", "2"], cwd=ws.root, env=ws.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        marks: dict[str, float] = {}
        while len(marks) < 3:
            now = time.perf_counter() - started
            if now > 60:
                raise BenchError(f"stop of {request_id} not complete after 60 s: {sorted(marks)}")
            if "request_ended" not in marks:
                current = store.request(request_id)
                if current is not None and current["status"] != RequestStatus.RUNNING.value:
                    marks["request_ended"] = now
            if "run_final" not in marks:
                dagster_run = instance.get_run_by_id(request_id)
                if dagster_run is not None and dagster_run.status.value in FINAL_RUN_STATUSES:
                    marks["run_final"] = now
            if "group_gone" not in marks and group_gone(pgid):
                marks["group_gone"] = now
            time.sleep(0.02)
        marks["all"] = max(marks.values())
        if stop.wait(timeout=60) != 0:
            raise BenchError(f"intent stop exited {stop.returncode}: {stop.stderr.read() if stop.stderr else ''}")
        if run.wait(timeout=60) != 15:
            raise BenchError(f"intent run exited {run.returncode}, expected 15 (stopped)")
        return marks
    finally:
        if run.poll() is None:
            os.killpg(run.pid, 9)
            run.wait()


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], trials=20)
    args = parser.parse_args(argv)
    with workspace(keep=args.keep) as ws:
        ws.write_intent("sleepy", SLEEPY)
        os.environ.update({k: ws.env[k] for k in ("INTENT_HOME", "DAGSTER_HOME", "INTENTS_PATH")})
        import dagster as dg

        from intent_pipelines.home import IntentHome
        from intent_pipelines.store import StateStore

        store = StateStore(IntentHome.from_env().store_url())
        before = machine()
        with dg.DagsterInstance.get() as instance:
            for _ in range(args.warmup):
                one_trial(ws, store, instance)
            trials: list[dict[str, float]] = []
            for number in range(1, args.trials + 1):
                marks = one_trial(ws, store, instance)
                trials.append(marks)
                print(f"  trial {number}/{args.trials} all {marks['all']:.3f} s (request "
                      f"{marks['request_ended']:.3f}, run {marks['run_final']:.3f}, group {marks['group_gone']:.3f})",
                      file=sys.stderr, flush=True)
        after = machine()
    figures = {}
    for key in ("all", "request_ended", "run_final", "group_gone"):
        values = [t[key] for t in trials]
        figures[key] = {"p50_s": round(statistics.median(values), 3), "p95_s": round(percentile(values, 95), 3),
                        "min_s": round(min(values), 3), "max_s": round(max(values), 3),
                        "samples_s": [round(v, 3) for v in values]}
    p95 = figures["all"]["p95_s"]
    data = {"name": NAME, "trials": args.trials, "figures": figures, "target": {"p95_s": TARGET_P95_S},
            "met": p95 <= TARGET_P95_S, "machine": before, "loadavg_after": after["loadavg"]}
    rows = ["| until | p50 s | p95 s | min s | max s |", "| --- | ---: | ---: | ---: | ---: |"]
    labels = {"request_ended": "request ended (STOPPED_BY_OPERATOR)", "run_final": "Dagster run final",
              "group_gone": "step process group gone", "all": "**all three**"}
    for key, label in labels.items():
        f = figures[key]
        rows.append(f"| {label} | {f['p50_s']:.3f} | {f['p95_s']:.3f} | {f['min_s']:.3f} | {f['max_s']:.3f} |")
    markdown = "\n".join([
        f"## stop_latency — `intent stop` of a running `intent run` ({args.trials} trials)", "",
        *rows, "",
        f"Target p95 ≤ {TARGET_P95_S:g} s: **{verdict(p95, TARGET_P95_S)}** (p95 {p95:.3f} s). Times start when "
        "`intent stop` is invoked and include its process start-up. "
        f"Load {before['loadavg']} → {after['loadavg']}, {before['cpus']} CPUs, commit {before['commit']}.",
    ])
    write_results(NAME, data, markdown, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

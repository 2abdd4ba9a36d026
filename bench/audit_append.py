"""Durable audit appends on SQLite and PostgreSQL: group-commit throughput and single-append latency.

Against a real store (SQLite in WAL with synchronous=FULL, as `StateStore` configures it, and a
throwaway PostgreSQL 15 from `intent_pipelines.testing.postgres_server()` with fsync on), in one
process, variants interleaved per store:

- ``threads_N``  N threads (1, 8, 32) each calling `append_audit` (durable on return; concurrent
                 callers share a transaction and its fsync through group commit);
- ``many_B``     one thread calling `append_audit_many` with batches of B (10, 100, 1000) events;
- latency        one thread, sequential `append_audit`: p50 / p99 of single durable appends
                 (samples spread over the trials, interleaved with the rest).

Bodies look like the engine's step.complete records. After each store the whole chain is verified
and its length checked: a lost or forked record would make the figures meaningless.

Target: >= 20,000 events/s on SQLite with group commit.

    .venv/bin/python -m bench.audit_append                    # SQLite and PostgreSQL, 3 trials
    .venv/bin/python -m bench.audit_append --stores sqlite --trials 5
"""

import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from bench._common import BenchError, base_parser, interleave, machine, write_results
from intent_pipelines.audit.record import AuditRecord
from intent_pipelines.audit.verify import verify_records
from intent_pipelines.store.group_commit import AuditEvent
from intent_pipelines.store.state import StateStore
from intent_pipelines.testing import postgres_server

NAME = "audit_append"
TARGET_SQLITE_EVENTS_PER_S = 20_000
THREADS = (1, 8, 32)
BATCHES = (10, 100, 1000)


class CountingStore(StateStore):
    """The real store, counting transactions so the mean group-commit batch can be reported."""

    def __init__(self, url: str) -> None:
        self.commits = 0
        super().__init__(url)

    def append_audit_many(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        self.commits += 1
        return super().append_audit_many(events)


def body(i: int) -> dict[str, Any]:
    return {"step": "deploy", "attempt": 1, "outputs": ["image", "url"], "duration_ms": 1200 + i % 5000}


def threads_variant(store: CountingStore, threads: int, total: int) -> Callable[[], float]:
    per_thread = total // threads

    def run() -> float:
        errors: list[BaseException] = []
        start_gate = threading.Barrier(threads + 1)

        def worker(t: int) -> None:
            request_id = f"req-bench-{t:02d}"
            start_gate.wait()
            try:
                for i in range(per_thread):
                    store.append_audit("step.complete", request_id=request_id, run_id="run-bench", body=body(i))
            except BaseException as exc:  # surfaced below: a failed append voids the figures
                errors.append(exc)

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        start_gate.wait()
        start = time.perf_counter()
        for th in pool:
            th.join()
        seconds = time.perf_counter() - start
        if errors:
            raise BenchError(f"append_audit failed in {threads} threads: {errors[0]!r}")
        return seconds

    return run


def many_variant(store: CountingStore, batch: int, total: int) -> Callable[[], float]:
    events = [AuditEvent("step.complete", "req-bench-many", "run-bench", body(i)) for i in range(batch)]

    def run() -> float:
        start = time.perf_counter()
        for _ in range(total // batch):
            store.append_audit_many(events)
        return time.perf_counter() - start

    return run


def latency_variant(store: CountingStore, samples: list[float], per_trial: int) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        for i in range(per_trial):
            t0 = time.perf_counter()
            store.append_audit("step.complete", request_id="req-bench-latency", run_id="run-bench", body=body(i))
            samples.append(time.perf_counter() - t0)
        return time.perf_counter() - start

    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_store(label: str, url: str, args: Any) -> dict[str, Any]:
    """All variants against one store, interleaved; then the chain is verified end to end."""
    store = CountingStore(url)
    counts = {f"threads_{n}": n * max(1, args.thread_events[i] // n) for i, n in enumerate(THREADS)}
    variants: dict[str, Callable[[], float]] = {
        name: threads_variant(store, n, counts[name]) for name, n in zip(counts, THREADS, strict=True)}
    for b in BATCHES:
        counts[f"many_{b}"] = max(1, args.many_events // b) * b
        variants[f"many_{b}"] = many_variant(store, b, counts[f"many_{b}"])
    latencies: list[float] = []
    per_trial = -(-args.latency_samples // args.trials)
    variants["latency"] = latency_variant(store, latencies, per_trial)
    counts["latency"] = per_trial

    commits: dict[str, list[int]] = {name: [] for name in variants}

    def counted(name: str, fn: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            before = store.commits
            seconds = fn()
            commits[name].append(store.commits - before)
            return seconds
        return run

    print(f"== {label}", file=sys.stderr, flush=True)
    samples = interleave({name: counted(name, fn) for name, fn in variants.items()},
                         trials=args.trials, warmup=args.warmup)
    latencies = latencies[-per_trial * args.trials:]  # drop the warm-up's samples
    result = verify_records(store.audit_raw())
    appended = sum(counts[name] * (args.trials + args.warmup) for name in counts)
    if not result.ok or result.records != appended:
        raise BenchError(f"{label}: chain has {result.records} records (expected {appended}), "
                         f"first break {result.to_dict()['first_break']}")
    store.engine.dispose()
    variants_out: dict[str, Any] = {}
    for name, values in samples.items():
        if name == "latency":
            continue
        rates = [counts[name] / s for s in values]
        timed_commits = commits[name][-args.trials:]
        variants_out[name] = {
            "events_per_trial": counts[name],
            "events_per_s_median": round(statistics.median(rates)),
            "events_per_s_min": round(min(rates)), "events_per_s_max": round(max(rates)),
            "mean_events_per_commit": round(counts[name] * len(timed_commits) / max(1, sum(timed_commits)), 1),
            "samples_s": [round(v, 4) for v in values],
        }
    return {
        "url": url.split("@")[-1] if "@" in url else "sqlite (WAL, synchronous=FULL)",
        "variants": variants_out,
        "latency_ms": {"n": len(latencies), "p50": round(percentile(latencies, 0.50) * 1e3, 3),
                       "p90": round(percentile(latencies, 0.90) * 1e3, 3),
                       "p99": round(percentile(latencies, 0.99) * 1e3, 3),
                       "max": round(max(latencies) * 1e3, 3), "mean": round(statistics.fmean(latencies) * 1e3, 3)},
        "chain_verified_records": result.records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], trials=3)
    parser.add_argument("--stores", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    parser.add_argument("--thread-events", type=int, nargs=3, default=[2000, 4000, 8000], metavar="N",
                        help="events per trial with 1, 8 and 32 threads (default 2000 4000 8000)")
    parser.add_argument("--many-events", type=int, default=20_000,
                        help="events per trial for each append_audit_many batch size (default 20000)")
    parser.add_argument("--latency-samples", type=int, default=2000,
                        help="single-append latency samples in all, spread over the trials (default 2000)")
    args = parser.parse_args(argv)

    env = machine()
    stores: dict[str, Any] = {}
    for kind in args.stores:
        tmp = Path(tempfile.mkdtemp(prefix="intent-bench-append-"))
        server: AbstractContextManager[str] = postgres_server() if kind == "postgres" else nullcontext(
            f"sqlite:///{tmp / 'state.db'}")
        try:
            with server as url:
                stores[kind] = bench_store(kind, url, args)
        finally:
            if args.keep:
                print(f"kept {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    env["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    sqlite_best = None
    if "sqlite" in stores:
        v = stores["sqlite"]["variants"]
        sqlite_best = max(v[f"threads_{n}"]["events_per_s_median"] for n in THREADS)
    data = {
        "benchmark": NAME, "machine": env, "trials": args.trials, "warmup": args.warmup, "stores": stores,
        "target": {
            "sqlite_group_commit_events_per_s_min": TARGET_SQLITE_EVENTS_PER_S,
            "sqlite_best_threads_events_per_s": sqlite_best,
            "status_threads": None if sqlite_best is None else
            ("met" if sqlite_best >= TARGET_SQLITE_EVENTS_PER_S else "MISSED"),
            "sqlite_many_1000_events_per_s": stores["sqlite"]["variants"]["many_1000"]["events_per_s_median"]
            if "sqlite" in stores else None,
        },
    }
    md = [
        f"# {NAME}",
        "",
        f"Durable appends, variants interleaved per store, {args.trials} trials each after {args.warmup} "
        f"warm-up; {env['cpus']} CPUs, load {env['loadavg']} -> {env['loadavg_after']}, commit {env['commit']}. "
        "SQLite: WAL, synchronous=FULL; PostgreSQL 15: fsync=on, synchronous_commit=on, loopback TCP.",
        "",
        "| store | variant | events/trial | events/s median | min | max | events per commit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, res in stores.items():
        for name, v in res["variants"].items():
            what = (f"{name.split('_')[1]} threads x `append_audit`" if name.startswith("threads")
                    else f"`append_audit_many`, batches of {name.split('_')[1]}")
            md.append(f"| {kind} | {what} | {v['events_per_trial']:,} | {v['events_per_s_median']:,} | "
                      f"{v['events_per_s_min']:,} | {v['events_per_s_max']:,} | {v['mean_events_per_commit']} |")
    md += ["", "| store | single durable append: n | p50 ms | p90 ms | p99 ms | max ms |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind, res in stores.items():
        lat = res["latency_ms"]
        md.append(f"| {kind} | {lat['n']} | {lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} "
                  f"| {lat['max']:.2f} |")
    if sqlite_best is not None:
        md += ["", f"**SQLite with group commit (best of 1/8/32 threads): {sqlite_best:,} events/s** (target >= "
               f"{TARGET_SQLITE_EVENTS_PER_S:,}: {data['target']['status_threads']}); `append_audit_many` "
               f"in batches of 1000: {data['target']['sqlite_many_1000_events_per_s']:,} events/s."]
    write_results(NAME, data, "\n".join(md), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

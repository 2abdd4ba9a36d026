"""Verify 1,000,000 audit events from daily Parquet files vs a raw hashlib loop over the same bytes.

Generates a valid chain of realistic engine records (request.start, lock.acquire, step.start /
step.complete, lock.release, request.complete; ~8 per request) once, as daily Parquet files with
the project's SCHEMA; generation is not timed. Then, interleaved in one process:

- ``parquet``   `verify_parquet(dir, None)` end to end: reading the files and verifying;
- ``records``   `verify_records` over columns already loaded as Python lists (verification alone);
- ``raw``       `sha256(DOMAIN + u64be(seq) + prev + body).digest()` in a plain loop: the ceiling;
- ``naive``     json.loads -> json.dumps(sort_keys, compact) -> sha256, what hashing re-serialized
                JSON would cost (and why the chain hashes stored bytes instead);
- ``fixed``     not package code: a prototype of the fix suggested in the results, `verify_parquet`
                with binary(32) columns cast to binary before to_pylist and the first file read once;
- ``parallel``  not package code: the same, days split into contiguous groups verified by one
                worker process per CPU and stitched (first seq/prev of each group = head of the one
                before). The pool is started once before timing; its start-up is reported apart.

Targets: parquet >= 1,000,000 events/s on this 2-core machine, and parquet/raw >= 0.6.

    .venv/bin/python -m bench.audit_verify                 # 1,000,000 events, 5 trials
    .venv/bin/python -m bench.audit_verify --keep          # keep (and next time reuse) the files
    .venv/bin/python -m bench.audit_verify --events 200000 --trials 3
"""

import concurrent.futures
import cProfile
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import pstats
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench._common import (
    BenchError,
    base_parser,
    interleave,
    machine,
    markdown_table,
    paired_ratios,
    stats,
    write_results,
)
from intent_pipelines.audit.export import FILE_NAME, SCHEMA, TYPED_COLUMNS, parquet_files, read_records, typed_values
from intent_pipelines.audit.integrity import verify_parquet
from intent_pipelines.audit.record import DOMAIN, FORMAT_VERSION, GENESIS_PREV, canonical_body, record_hash
from intent_pipelines.audit.verify import VerifyResult, verify_records

NAME = "audit_verify"
TARGET_EVENTS_PER_S = 1_000_000
TARGET_RATIO_TO_RAW = 0.6
START_DAY = datetime(2026, 1, 1, tzinfo=UTC)
INTENTS = ["deploy-app", "restart-service", "rotate-cert", "scale-app", "backup-db", "rollback-app",
           "flush-cache"]
STEPS = ["preflight", "build", "push-image", "migrate", "deploy", "health-check", "smoke-test", "notify"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]


# --- generation (not timed) ----------------------------------------------------------------------

def _request_events(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """The events one request writes, with bodies shaped like the engine's (integers only)."""
    intent = rng.choice(INTENTS)
    steps = rng.sample(STEPS, rng.choice((1, 2, 3)))
    app = f"app-{rng.randrange(40):02d}"
    lock = f"app:{app}"
    events: list[tuple[str, dict[str, Any]]] = [
        ("request.start", {
            "intent": intent, "version": rng.randrange(1, 9), "intent_sha256": rng.randbytes(32).hex(),
            "params": {"app": app, "replicas": rng.randrange(1, 6), "version": f"1.{rng.randrange(40)}.0"},
            "context": {"host": f"ops-{rng.randrange(4)}", "env": rng.choice(["prod", "staging"])},
            "plan_hash": rng.randbytes(32).hex(), "who": rng.choice(PEOPLE),
            "reason": f"ticket OPS-{rng.randrange(10_000)}", "dry_run": False}),
        ("lock.acquire", {"lock": lock}),
    ]
    total = 0
    for step in steps:
        duration = rng.randrange(5, 60_000)
        total += duration
        events.append(("step.start", {"step": step, "attempt": 1,
                                      "action": f"run: ./scripts/{step}.sh --app {app}"}))
        events.append(("step.complete", {"step": step, "attempt": 1, "outputs": sorted(rng.sample(
            ["url", "image", "revision", "count"], rng.randrange(0, 3))), "duration_ms": duration}))
    events.append(("lock.release", {"lock": lock}))
    events.append(("request.complete", {"status": "succeeded", "error": None, "exit_code": 0,
                                        "duration_ms": total + rng.randrange(50, 2000)}))
    return events


def generate(root: Path, *, events: int, days: int, seed: int) -> None:
    """Write a valid chain of ``events`` records as ``days`` daily partitions under ``root``."""
    rng = random.Random(seed)
    per_day = -(-events // days)
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    seq, prev, day = 0, GENESIS_PREV, 0
    step_ms = 86_400_000 // per_day

    def flush() -> None:
        nonlocal columns, day
        if not columns["seq"]:
            return
        path = root / f"date={(START_DAY + timedelta(days=day)).date().isoformat()}" / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns, schema=SCHEMA), path)
        columns = {name: [] for name in SCHEMA.names}
        day += 1

    while seq < events:
        request_id = f"req-{rng.randbytes(6).hex()}"
        run_id = str(_uuid(rng))
        intent = None
        for kind, data in _request_events(rng):
            if seq >= events:
                break
            intent = data.get("intent", intent)
            body = canonical_body({"kind": kind, "request_id": request_id, "run_id": run_id, **data})
            digest = record_hash(seq, prev, body)
            in_day = seq - day * per_day
            ts = START_DAY + timedelta(days=day, milliseconds=in_day * step_ms)
            for name, value in (("seq", seq), ("v", FORMAT_VERSION),
                                ("ts", ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
                                ("request_id", request_id), ("run_id", run_id), ("kind", kind),
                                ("prev", prev), ("hash", digest), ("body", body)):
                columns[name].append(value)
            for name, value in zip(TYPED_COLUMNS, typed_values(data, intent, kind), strict=True):
                columns[name].append(value)
            seq, prev = seq + 1, digest
            if seq % per_day == 0:
                flush()
    flush()
    (root / "COMPLETE").write_text(json.dumps({"events": events, "days": days, "seed": seed}) + "\n")


def _uuid(rng: random.Random) -> str:
    h = rng.randbytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def dataset(*, events: int, days: int, seed: int, keep: bool) -> Path:
    """The cached files for these parameters, generated when missing (reused only with --keep)."""
    root = Path(tempfile.gettempdir()) / f"intent-bench-audit-verify-{events}-{days}-{seed}"
    marker = root / "COMPLETE"
    if keep and marker.exists():
        print(f"reusing {root}", file=sys.stderr)
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"generating {events:,} events over {days} days in {root} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    generate(root, events=events, days=days, seed=seed)
    print(f"  generated in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return root


# --- the variants --------------------------------------------------------------------------------

def raw_loop(seqs: list[int], prevs: list[bytes], bodies: list[bytes]) -> None:
    sha256, pack, domain = hashlib.sha256, struct.Struct(">Q").pack, DOMAIN
    for seq, prev, body in zip(seqs, prevs, bodies, strict=True):
        sha256(domain + pack(seq) + prev + body).digest()


def naive_loop(seqs: list[int], prevs: list[bytes], bodies: list[bytes]) -> None:
    sha256, pack, domain, loads, dumps = hashlib.sha256, struct.Struct(">Q").pack, DOMAIN, json.loads, json.dumps
    for seq, prev, body in zip(seqs, prevs, bodies, strict=True):
        canonical = dumps(loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        sha256(domain + pack(seq) + prev + canonical).digest()


def fixed_read_records(files: list[Path]) -> Iterator[tuple[int, bytes, bytes, bytes]]:
    """Prototype of the suggested `read_records`: cast the binary(32) columns to binary before
    to_pylist (pyarrow converts fixed_size_binary ~7x slower per value) and take seq through numpy.
    """
    for path in files:
        table = pq.read_table(path, columns=["seq", "prev", "hash", "body"])
        if not table.num_rows:
            continue
        table = table.sort_by("seq")
        yield from zip(table.column("seq").to_numpy().tolist(),
                       table.column("prev").cast(pa.binary()).to_pylist(),
                       table.column("hash").cast(pa.binary()).to_pylist(),
                       table.column("body").to_pylist(), strict=True)


def fixed_verify_parquet(files: list[Path]) -> VerifyResult:
    """Prototype of `verify_parquet` with the fixed reader and without reading the first file twice."""
    records = fixed_read_records(files)
    first = next(records, None)
    if first is None:
        return VerifyResult()
    start_prev = first[1] if first[0] > 0 else GENESIS_PREV
    return verify_records(itertools.chain([first], records), start_seq=first[0], start_prev=start_prev)


def verify_segment(paths: list[str]) -> tuple[bool, int, int, bytes, int, bytes]:
    """Worker of the parallel prototype: verify contiguous files on their own; the parent stitches.

    Returns (ok, records, first_seq, first_prev, last_seq, head).
    """
    records = fixed_read_records([Path(p) for p in paths])
    first = next(records, None)
    if first is None:
        return True, 0, -1, b"", -1, b""
    result = verify_records(itertools.chain([first], records), start_seq=first[0], start_prev=first[1])
    return result.ok, result.records, first[0], first[1], result.last_seq or 0, result.head


def parallel_verify(pool: Any, files: list[Path], workers: int) -> tuple[bool, int, bytes]:
    """Prototype: contiguous groups of days verified in ``workers`` processes, then linked in order."""
    size = -(-len(files) // workers)
    groups = [[str(p) for p in files[i:i + size]] for i in range(0, len(files), size)]
    ok, count, expected_seq, prev = True, 0, 0, GENESIS_PREV
    for seg_ok, records, first_seq, first_prev, last_seq, head in pool.map(verify_segment, groups):
        if not records:
            continue
        ok = ok and seg_ok and first_seq == expected_seq and first_prev == prev
        count, expected_seq, prev = count + records, last_seq + 1, head
    return ok, count, prev


# --- where the time goes -------------------------------------------------------------------------

def stage_breakdown(files: list[Path], events: int) -> dict[str, float]:
    """The stages of verify_parquet timed separately (seconds), in the order it runs them."""
    t0 = time.perf_counter()
    next(read_records(files[:1]), None)  # verify_parquet reads and converts the first file once more
    t1 = time.perf_counter()
    tables = [pq.read_table(p, columns=["seq", "prev", "hash", "body"]) for p in files]
    t2 = time.perf_counter()
    tables = [t.sort_by("seq") for t in tables]
    t3 = time.perf_counter()
    cols: list[list[Any]] = [[], [], [], []]
    for t in tables:
        for i, name in enumerate(("seq", "prev", "hash", "body")):
            cols[i].extend(t.column(name).to_pylist())
    t4 = time.perf_counter()
    result = verify_records(zip(*cols, strict=True))
    t5 = time.perf_counter()
    raw_loop(cols[0], cols[1], cols[3])
    t6 = time.perf_counter()
    if not result.ok or result.records != events:
        raise BenchError(f"breakdown verify failed: {result.to_dict()['first_break']}")
    return {"first_file_read_again": t1 - t0, "read_table": t2 - t1, "sort_by": t3 - t2,
            "to_pylist_4_columns": t4 - t3, "verify_records_loop": t5 - t4, "raw_hash_loop_same_lists": t6 - t5}


def profile(fn: Callable[[], Any], *, top: int = 14) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line.rstrip() for line in lines[start:] if line.strip())


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], trials=5)
    parser.add_argument("--events", type=int, default=1_000_000, help="records in the chain (default 1,000,000)")
    parser.add_argument("--days", type=int, default=10, help="daily Parquet files to spread them over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-naive", action="store_true", help="skip the (slow) naive variant")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run and stage breakdown")
    args = parser.parse_args(argv)
    n = args.events

    root = dataset(events=n, days=args.days, seed=args.seed, keep=args.keep)
    pool: concurrent.futures.ProcessPoolExecutor | None = None
    try:
        files = parquet_files(root)
        rows = list(read_records(files))
        seqs, prevs, hashes, bodies = (list(col) for col in zip(*rows, strict=True))
        del rows
        size = {"files": len(files), "parquet_bytes": sum(p.stat().st_size for p in files),
                "mean_body_bytes": round(statistics.fmean(map(len, bodies)), 1)}
        kinds = {json.loads(b)["kind"] for b in bodies[:1000]}
        sample = random.Random(1).sample(range(n), min(n, 1000))
        for i in sample:  # the naive path is only comparable if it reproduces the stored bytes
            redone = json.dumps(json.loads(bodies[i]), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if record_hash(seqs[i], prevs[i], redone.encode()) != hashes[i]:
                raise BenchError(f"naive re-serialization differs at seq {seqs[i]}")

        def run_parquet() -> float:
            start = time.perf_counter()
            result = verify_parquet(root, None)
            seconds = time.perf_counter() - start
            if not result.ok or result.records != n:
                raise BenchError(f"verify_parquet: ok={result.ok} records={result.records}")
            return seconds

        def run_records() -> float:
            start = time.perf_counter()
            result = verify_records(zip(seqs, prevs, hashes, bodies, strict=True))
            seconds = time.perf_counter() - start
            if not result.ok or result.records != n:
                raise BenchError(f"verify_records: ok={result.ok} records={result.records}")
            return seconds

        def run_raw() -> float:
            start = time.perf_counter()
            raw_loop(seqs, prevs, bodies)
            return time.perf_counter() - start

        def run_naive() -> float:
            start = time.perf_counter()
            naive_loop(seqs, prevs, bodies)
            return time.perf_counter() - start

        def run_fixed() -> float:
            start = time.perf_counter()
            result = fixed_verify_parquet(files)
            seconds = time.perf_counter() - start
            if not result.ok or result.records != n or result.head != hashes[-1]:
                raise BenchError(f"fixed: ok={result.ok} records={result.records}")
            return seconds

        workers = os.cpu_count() or 1
        pool_started = time.perf_counter()
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        list(pool.map(verify_segment, [[] for _ in range(workers)]))
        pool_start_s = round(time.perf_counter() - pool_started, 3)

        def run_parallel() -> float:
            start = time.perf_counter()
            ok, count, head = parallel_verify(pool, files, workers)
            seconds = time.perf_counter() - start
            if not ok or count != n or head != hashes[-1]:
                raise BenchError(f"parallel: ok={ok} records={count}")
            return seconds

        variants: dict[str, Callable[[], float]] = {"parquet": run_parquet, "records": run_records,
                                                    "raw": run_raw}
        if not args.no_naive:
            variants["naive"] = run_naive
        variants["fixed"] = run_fixed
        variants["parallel"] = run_parallel
        env = machine()
        samples = interleave(variants, trials=args.trials, warmup=args.warmup)
        env["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        breakdown = profile_text = None
        if not args.no_profile:
            breakdown = {k: round(v, 4) for k, v in stage_breakdown(files, n).items()}
            profile_text = profile(lambda: verify_parquet(root, None))
    finally:
        if pool is not None:
            pool.shutdown()
        if args.keep:
            print(f"kept {root} (reused by the next --keep run)", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    summary = {name: stats(values) for name, values in samples.items()}
    rate = {name: round(n / s["median_s"]) for name, s in summary.items()}
    ratios = {f"{name}_over_raw": round(rate[name] / rate["raw"], 3) for name in rate if name != "raw"}
    paired = {f"{name}_over_raw": paired_ratios(samples["raw"], samples[name]) for name in rate if name != "raw"}
    met_rate = rate["parquet"] >= TARGET_EVENTS_PER_S
    met_ratio = ratios["parquet_over_raw"] >= TARGET_RATIO_TO_RAW
    data = {
        "benchmark": NAME, "machine": env, "trials": args.trials, "warmup": args.warmup,
        "events": n, "dataset": {**size, "days": args.days, "seed": args.seed, "kinds_sample": sorted(kinds)},
        "variants": summary, "events_per_s": rate, "ratio_of_rates": ratios, "paired_ratio_of_rates": paired,
        "target": {
            "parquet_events_per_s_min": TARGET_EVENTS_PER_S, "parquet_over_raw_min": TARGET_RATIO_TO_RAW,
            "events_per_s_status": "met" if met_rate else "MISSED",
            "ratio_status": "met" if met_ratio else "MISSED",
            "records_over_raw_status": "met" if ratios["records_over_raw"] >= TARGET_RATIO_TO_RAW else "MISSED",
        },
        "parallel_workers": workers, "parallel_pool_start_s": pool_start_s,
        "stage_breakdown_s": breakdown, "profile_verify_parquet": profile_text,
    }
    labels = {"parquet": "(a) `verify_parquet(dir, None)`, end to end",
              "records": "(b) `verify_records` over pre-loaded lists",
              "raw": "(c) raw `sha256(DOMAIN+u64be(seq)+prev+body)` loop",
              "naive": "(d) naive: json.loads -> json.dumps(sorted) -> sha256",
              "fixed": "(e) prototype: (a) with the reader fixed",
              "parallel": f"(f) prototype: (e) in {workers} processes"}
    md = [
        f"# {NAME}",
        "",
        f"{n:,} events in {size['files']} daily Parquet files ({size['parquet_bytes'] / 1e6:.0f} MB, mean body "
        f"{size['mean_body_bytes']:.0f} B); interleaved in one process, {args.trials} trials each after "
        f"{args.warmup} warm-up; {env['cpus']} CPUs, load {env['loadavg']} -> {env['loadavg_after']}, "
        f"commit {env['commit']}.",
        "",
        markdown_table([(labels[name], summary[name]) for name in summary]),
        "",
        "| variant | events/s (median) | / raw |",
        "| --- | ---: | ---: |",
        *(f"| {labels[name]} | {rate[name]:,} | {rate[name] / rate['raw']:.3f} |" for name in rate),
        "",
        f"**(a) verify_parquet: {rate['parquet']:,} events/s** (target >= {TARGET_EVENTS_PER_S:,}: "
        f"{data['target']['events_per_s_status']}); **(a)/(c) = {ratios['parquet_over_raw']:.3f}**, "
        f"(b)/(c) = {ratios['records_over_raw']:.3f} (target >= {TARGET_RATIO_TO_RAW}: "
        f"{data['target']['ratio_status']} for (a), {data['target']['records_over_raw_status']} for (b)).",
    ]
    md += ["", f"(e) and (f) are prototypes in this script, not package code; (f)'s pool of {workers} spawned "
           f"workers started once before timing ({pool_start_s:.2f} s, not counted)."]
    if breakdown:
        md += ["", "Stages of `verify_parquet`, timed separately once (s):", "",
               "| stage | s |", "| --- | ---: |", *(f"| {k} | {v:.3f} |" for k, v in breakdown.items())]
    write_results(NAME, data, "\n".join(md), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

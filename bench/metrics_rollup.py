"""Metrics over 1,000,000 requests (~8M audit events) from daily Parquet files, side by side with DuckDB.

Generates (untimed) a chain shaped like the engine's — see bench/metrics_gen.py: successes, failures
with messages, retries, rollbacks, operator stops with cancel latency, dry runs, replays — as daily
audit_events Parquet files with the export SCHEMA, in a temp dir (`--keep` keeps it and reuses it).
Then, interleaved, each trial a fresh process that times itself after its imports:

- ``intent``  the package: `read_events` + `derive_requests` + `rollup` (signatures included);
- ``duckdb``  one SQL query computing the same per-request rows and the same rollup from the same files.

Both sides read only the typed columns (body fields included: dry_run, replay_of, latency_ms, ...),
never ``body``; files generated before those columns existed must be regenerated (drop ``--keep`` once).

Peak memory is the worker's peak RSS (ru_maxrss), also shown above its RSS after imports. The two
results must agree exactly on every number (counts, success rates, mean and nearest-rank p50/p95
durations, retries, cancel latency, by intent and by failing step); the script stops otherwise.
Failure signatures are Python (alerts.signatures, Python regexes DuckDB's RE2 cannot express), so
the top signature per step is not part of the comparison; its cost is in the ``intent`` figure.

Targets: intent <= 3 s, and intent/duckdb <= 2 (ratio of medians) on this 2-core machine.

    .venv/bin/python -m bench.metrics_rollup                  # 1,000,000 requests, 5 trials
    .venv/bin/python -m bench.metrics_rollup --keep           # keep (and next time reuse) the files
    .venv/bin/python -m bench.metrics_rollup --requests 100000 --trials 3
"""

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    PYTHON,
    REPO_ROOT,
    BenchError,
    base_parser,
    interleave,
    machine,
    markdown_table,
    paired_ratios,
    ratio,
    stats,
    verdict,
)
from bench._common import write_results as write_results_files

NAME = "metrics_rollup"
TARGET_SECONDS = 3.0
TARGET_RATIO = 2.0

# The DuckDB side: the same derivation as intent_pipelines.metrics.requests, in SQL.
DUCKDB_REQUESTS = """
CREATE OR REPLACE TEMP VIEW requests AS
WITH ev AS (
    SELECT seq, ts, request_id, kind, intent, step, status, duration_ms, dry_run, replay_of, latency_ms, signature
    FROM read_parquet($files)
),
complete AS (  -- the last ending is the outcome (a resumed request ends again)
    SELECT request_id, ts, intent, status, duration_ms, step, signature FROM ev WHERE kind = 'request.complete'
    QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY seq DESC) = 1
),
start AS (
    SELECT request_id, intent, dry_run, replay_of, kind = 'request.refused' AS refused
    FROM ev WHERE kind IN ('request.start', 'request.refused')
    QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY seq) = 1
),
fail AS (
    SELECT request_id, CASE WHEN kind = 'request.refused' THEN '(preflight)' ELSE step END AS failed_step
    FROM ev WHERE kind IN ('step.fail', 'verify.fail', 'request.refused')
    QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY seq) = 1
),
cancel AS (
    SELECT request_id, latency_ms
    FROM ev WHERE kind = 'run.cancelled'
    QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY seq) = 1
),
retry AS (SELECT request_id, count(*) AS retries FROM ev WHERE kind = 'step.retry' GROUP BY request_id),
rollback AS (SELECT DISTINCT request_id FROM ev WHERE kind = 'rollback.start'),
joined AS (
    SELECT c.request_id, coalesce(c.intent, s.intent, '(unknown)') AS intent, c.status, c.duration_ms,
           coalesce(s.dry_run, false) OR c.status = 'DRY_RUN' AS dry_run,
           coalesce(s.refused, false) AND c.status = 'FAILED' AS legacy_refused,
           (rb.request_id IS NOT NULL) OR coalesce(c.status IN ('ROLLED_BACK', 'ROLLBACK_FAILED'), false)
               AS rolled_back,
           coalesce(r.retries, 0) AS retries, s.replay_of, cn.request_id IS NOT NULL AS cancel_event, cn.latency_ms,
           CASE WHEN c.signature IS NULL THEN f.failed_step
                WHEN c.step = 'preflight' THEN '(preflight)' ELSE c.step END AS ending_step
    FROM complete c
    LEFT JOIN start s USING (request_id)
    LEFT JOIN fail f USING (request_id)
    LEFT JOIN cancel cn USING (request_id)
    LEFT JOIN retry r USING (request_id)
    LEFT JOIN rollback rb USING (request_id)
),
outcomes AS (
    SELECT *, CASE WHEN dry_run THEN 'dry_run' WHEN legacy_refused THEN 'refused'
                   WHEN status = 'SUCCEEDED' THEN 'success' WHEN status = 'DRY_RUN' THEN 'dry_run'
                   WHEN status = 'REFUSED' THEN 'refused' WHEN status = 'NEEDS_APPROVAL' THEN 'waiting'
                   WHEN status IN ('STOPPED_BY_OPERATOR', 'REJECTED') THEN 'cancelled'
                   ELSE 'failure' END AS outcome
    FROM joined
)
SELECT *, cancel_event OR outcome = 'cancelled' AS cancelled,
       outcome IN ('success', 'failure', 'cancelled') AS executed,
       CASE WHEN outcome IN ('success', 'dry_run') THEN NULL ELSE ending_step END AS failed_step
FROM outcomes
"""

# Nearest rank in integers, as percentiles.py: value at 1-based rank (P * n + 99) // 100 of the sorted sample.
DUCKDB_STATS = """
SELECT {key} AS grp,
    count(*) FILTER (executed) AS total_executions,
    count(*) FILTER (outcome = 'success') AS success_count,
    count(*) FILTER (outcome = 'failure') AS failure_count,
    count(*) FILTER (outcome = 'cancelled') AS cancelled_count,
    count(*) FILTER (rolled_back AND executed) AS rollback_count,
    count(*) FILTER (outcome = 'dry_run') AS dry_run_count,
    count(*) FILTER (outcome = 'refused') AS refused_count,
    count(*) FILTER (outcome = 'waiting') AS waiting_count,
    count(*) FILTER (outcome = 'success')::DOUBLE / nullif(count(*) FILTER (executed), 0)
        AS success_rate,
    sum(duration_ms) FILTER (executed)::DOUBLE
        / nullif(count(duration_ms) FILTER (executed), 0) AS avg_duration_ms,
    list_sort(list(duration_ms) FILTER (executed AND duration_ms IS NOT NULL))[
        (50 * count(duration_ms) FILTER (executed) + 99) // 100] AS p50_duration_ms,
    list_sort(list(duration_ms) FILTER (executed AND duration_ms IS NOT NULL))[
        (95 * count(duration_ms) FILTER (executed) + 99) // 100] AS p95_duration_ms,
    coalesce(sum(retries) FILTER (executed), 0)::BIGINT AS retries,
    count(*) FILTER (executed AND retries > 0) AS requests_with_retries,
    count(replay_of) FILTER (executed) AS replay_count,
    list_sort(list(latency_ms) FILTER (outcome = 'cancelled' AND latency_ms IS NOT NULL))[
        (50 * count(latency_ms) FILTER (outcome = 'cancelled') + 99) // 100] AS cancel_latency_p50_ms,
    list_sort(list(latency_ms) FILTER (outcome = 'cancelled' AND latency_ms IS NOT NULL))[
        (95 * count(latency_ms) FILTER (outcome = 'cancelled') + 99) // 100] AS cancel_latency_p95_ms
FROM requests GROUP BY ALL
"""
DUCKDB_STEPS = """
SELECT intent, coalesce(failed_step, '(unknown)') AS step, count(*) AS failure_count
FROM requests WHERE outcome = 'failure' GROUP BY ALL
"""

# --- workers (fresh processes) -------------------------------------------------------------------


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def worker_intent(files: list[str]) -> dict[str, Any]:
    from intent_pipelines.metrics.requests import derive_requests, read_events
    from intent_pipelines.metrics.rollup import rollup

    base = _rss_mb()
    start = time.perf_counter()
    events = read_events([Path(f) for f in files])
    read_s = time.perf_counter() - start
    requests = derive_requests(events)
    derive_s = time.perf_counter() - start - read_s
    del events
    doc = rollup(requests)
    total = time.perf_counter() - start
    return {"seconds": total, "stages": {"read": round(read_s, 4), "derive": round(derive_s, 4),
                                         "rollup": round(total - read_s - derive_s, 4)},
            "requests": requests.num_rows, "rss_after_imports_mb": base, "peak_rss_mb": _peak_mb(),
            "result": _comparable(doc)}


def worker_duckdb(files: list[str]) -> dict[str, Any]:
    import duckdb

    base = _rss_mb()
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute(DUCKDB_REQUESTS.replace("$files", "[" + ", ".join(f"'{f}'" for f in files) + "]"))
    # One materialization of the rows, then the three rollups over it (as the package does).
    con.execute("CREATE TEMP TABLE r AS SELECT * FROM requests")
    overall = con.execute(DUCKDB_STATS.replace("FROM requests", "FROM r").format(key="'overall'")).fetchall()
    columns = [d[0] for d in con.description]
    by_intent = con.execute(DUCKDB_STATS.replace("FROM requests", "FROM r").format(key="intent")).fetchall()
    steps = con.execute(DUCKDB_STEPS.replace("FROM requests", "FROM r")).fetchall()
    count = con.execute("SELECT count(*) FROM r").fetchone()
    total = time.perf_counter() - start
    stat = [dict(zip(columns, row, strict=True)) for row in overall]
    doc = {"overall": {k: v for k, v in stat[0].items() if k != "grp"},
           "by_intent": [{"intent": row["grp"], **{k: v for k, v in row.items() if k != "grp"}}
                         for row in (dict(zip(columns, r, strict=True)) for r in by_intent)],
           "by_step": [{"intent": i, "step": s, "failure_count": n} for i, s, n in steps]}
    return {"seconds": total, "requests": count[0] if count else 0, "rss_after_imports_mb": base,
            "peak_rss_mb": _peak_mb(), "result": _comparable(doc)}


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The numbers both sides compute, in one canonical shape (ints as ints, sorted lists)."""
    from intent_pipelines.metrics.rollup import STAT_FIELDS

    def block(stats: dict[str, Any]) -> dict[str, Any]:
        return {name: (None if stats.get(name) is None else
                       float(stats[name]) if name in ("success_rate", "avg_duration_ms") else int(stats[name]))
                for name in STAT_FIELDS}

    return {"overall": block(doc["overall"]),
            "by_intent": sorted(({"intent": s["intent"], **block(s)} for s in doc["by_intent"]),
                                key=lambda s: s["intent"]),
            "by_step": sorted([s["intent"], s["step"], int(s["failure_count"])] for s in doc["by_step"])}


def run_worker(kind: str, files: list[Path]) -> dict[str, Any]:
    """One trial in a fresh process; returns what the worker printed."""
    done = subprocess.run([PYTHON, "-m", "bench.metrics_rollup", "--worker", kind, *map(str, files)],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        raise BenchError(f"{kind} worker exited {done.returncode}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- data ----------------------------------------------------------------------------------------


def dataset(*, requests: int, days: int, seed: int, keep: bool) -> tuple[Path, int]:
    """The cached files for these parameters, generated when missing (reused only with --keep)."""
    from bench.metrics_gen import generate

    root = Path(tempfile.gettempdir()) / f"intent-bench-metrics-{requests}-{days}-{seed}"
    marker = root / "COMPLETE"
    if keep and marker.exists():
        print(f"reusing {root}", file=sys.stderr)
        return root, int(json.loads(marker.read_text())["events"])
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"generating {requests:,} requests over {days} days in {root} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    events = generate(root, requests=requests, days=days, seed=seed)
    marker.write_text(json.dumps({"requests": requests, "days": days, "seed": seed, "events": events}) + "\n")
    print(f"  {events:,} events generated in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return root, events


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["--worker"]:
        kind, files = args_list[1], args_list[2:]
        print(json.dumps(worker_intent(files) if kind == "intent" else worker_duckdb(files)))
        return 0
    parser = base_parser(__doc__.splitlines()[0], trials=5)
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests in the chain (default 1,000,000)")
    parser.add_argument("--days", type=int, default=10, help="daily Parquet files to spread them over")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(args_list)

    try:
        import duckdb  # noqa: F401
        have_duckdb = True
    except ImportError:
        have_duckdb = False
        print("duckdb is not installed: timing the package alone (`.venv/bin/pip install duckdb` for the "
              "side-by-side comparison; it is not a package dependency)", file=sys.stderr)

    root, events = dataset(requests=args.requests, days=args.days, seed=args.seed, keep=args.keep)
    from intent_pipelines.audit.export import parquet_files

    files = parquet_files(root)
    size_mb = round(sum(f.stat().st_size for f in files) / 1e6, 1)
    before = machine()
    last: dict[str, dict[str, Any]] = {}
    peaks: dict[str, list[float]] = {}

    def variant(kind: str) -> Any:
        def run() -> float:
            out = run_worker(kind, files)
            last[kind] = out
            peaks.setdefault(kind, []).append(out["peak_rss_mb"])
            return float(out["seconds"])
        return run

    variants = {"intent": variant("intent")}
    if have_duckdb:
        variants["duckdb"] = variant("duckdb")
    samples = interleave(variants, trials=args.trials, warmup=args.warmup)

    agree = None
    if have_duckdb:
        agree = last["intent"]["result"] == last["duckdb"]["result"]
        if not agree:
            diff = {k: (last["intent"]["result"][k], last["duckdb"]["result"][k]) for k in ("overall",)}
            raise BenchError(f"intent and duckdb disagree: {json.dumps(diff, default=str)[:3000]}")
    after = machine()
    intent_s = stats(samples["intent"])
    data: dict[str, Any] = {
        "benchmark": NAME, "requests": last["intent"]["requests"], "events": events, "files": len(files),
        "parquet_mb": size_mb, "intent": intent_s, "intent_stages_last": last["intent"]["stages"],
        "intent_peak_rss_mb": max(peaks["intent"]),
        "intent_rss_after_imports_mb": last["intent"]["rss_after_imports_mb"],
        "target_seconds": TARGET_SECONDS, "seconds_verdict": verdict(intent_s["median_s"], TARGET_SECONDS),
        "overall": last["intent"]["result"]["overall"], "machine_before": before, "machine_after": after,
    }
    rows = [("intent (read + derive + rollup)", intent_s)]
    if have_duckdb:
        duck_s = stats(samples["duckdb"])
        data.update({"duckdb": duck_s, "duckdb_peak_rss_mb": max(peaks["duckdb"]),
                     "duckdb_rss_after_imports_mb": last["duckdb"]["rss_after_imports_mb"],
                     "ratio_intent_to_duckdb": ratio(samples["intent"], samples["duckdb"]),
                     "paired_ratios": paired_ratios(samples["intent"], samples["duckdb"]),
                     "target_ratio": TARGET_RATIO, "agree": agree})
        data["ratio_verdict"] = verdict(data["ratio_intent_to_duckdb"], TARGET_RATIO)
        rows.append(("duckdb (same numbers, one SQL)", duck_s))
    o = data["overall"]
    lines = [f"## {NAME} — metrics over {data['requests']:,} requests ({events:,} audit events, "
             f"{len(files)} Parquet files, {size_mb} MB)", "", markdown_table(rows), "",
             f"- intent: median {intent_s['median_s']:.3f} s (target ≤ {TARGET_SECONDS:g} s: "
             f"{data['seconds_verdict']}); stages of the last trial: "
             + ", ".join(f"{k} {v:.3f} s" for k, v in data["intent_stages_last"].items()),
             f"- peak RSS: intent {data['intent_peak_rss_mb']:.0f} MB (after imports "
             f"{data['intent_rss_after_imports_mb']:.0f} MB)"
             + (f", duckdb {data['duckdb_peak_rss_mb']:.0f} MB (after imports "
                f"{data['duckdb_rss_after_imports_mb']:.0f} MB)" if have_duckdb else "")]
    if have_duckdb:
        lines += [f"- intent / duckdb: {data['ratio_intent_to_duckdb']:.2f} (ratio of medians; paired "
                  f"{data['paired_ratios']['min']:.2f}–{data['paired_ratios']['max']:.2f}; target ≤ "
                  f"{TARGET_RATIO:g}: {data['ratio_verdict']})",
                  f"- results agree exactly: {'yes' if agree else 'NO'} (overall, "
                  f"{len(last['intent']['result']['by_intent'])} intents, "
                  f"{len(last['intent']['result']['by_step'])} failing steps)"]
    else:
        lines.append("- duckdb: skipped (not installed)")
    lines.append(f"- overall: {o['total_executions']:,} executions, success rate {o['success_rate']:.4f}, "
                 f"p50 {o['p50_duration_ms']} ms, p95 {o['p95_duration_ms']} ms; load {before['loadavg']} → "
                 f"{after['loadavg']}")
    write_results_files(NAME, data, "\n".join(lines), write=not args.no_write)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

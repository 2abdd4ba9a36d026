"""Time to build the code location's Definitions with the 7 bundled intents vs 200 intents.

Each trial is a fresh process that measures itself from before `import dagster` /
`import intent_pipelines.definitions` to after `defs` is built and
`Definitions.validate_loadable(defs)` passes (what `dagster dev` and every run worker pay).
INTENTS_PATH points at an empty dir (bundled 7) or at 193 generated intents (+ 7 bundled).

Target: median total < 3 s with 200 intents.

    .venv/bin/python -m bench.definitions_load --trials 5 --count 200
"""

import json
import os
import sys

from bench._common import (
    PYTHON,
    BenchError,
    base_parser,
    interleave,
    machine,
    markdown_table,
    ratio,
    stats,
    verdict,
    workspace,
    write_results,
)
from bench.intent_gen import write_intents

NAME = "definitions_load"
TARGET_S = 3.0
BUNDLED = 7

PROBE = '''\
"""Time building the Definitions in this fresh process; print the split as JSON."""
import json
import time

t0 = time.perf_counter()
import dagster as dg

t1 = time.perf_counter()
from intent_pipelines.definitions import defs

t2 = time.perf_counter()
dg.Definitions.validate_loadable(defs)
t3 = time.perf_counter()
# Intent jobs only: the location also holds the audit and metrics jobs.
jobs = sum(1 for job in defs.jobs or [] if "intent/name" in (getattr(job, "tags", None) or {}))
print(json.dumps({"import_dagster_s": t1 - t0, "build_defs_s": t2 - t1, "validate_s": t3 - t2,
                  "total_s": t3 - t0, "jobs": jobs}))
'''

PARTS = ("import_dagster_s", "build_defs_s", "validate_s")


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], trials=5)
    parser.add_argument("--count", type=int, default=200, help="intents in the large case, bundled included")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    args = parser.parse_args(argv)
    generated = args.count - BUNDLED

    with workspace(keep=args.keep) as ws:
        probe = ws.write_script("probe_defs.py", PROBE)
        empty = ws.root / "intents_bundled_only"
        empty.mkdir()
        many = ws.root / f"intents_{args.count}"
        write_intents(many, generated, seed=args.seed)
        parts: dict[str, dict[str, list[float]]] = {}
        walls: dict[str, list[float]] = {}

        def probe_with(label: str, intents_dir: str, expected_jobs: int):
            parts[label] = {p: [] for p in PARTS}
            walls[label] = []

            def trial() -> float:
                wall, done = ws.timed([PYTHON, str(probe)], env={"INTENTS_PATH": intents_dir})
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                if figures["jobs"] != expected_jobs:
                    raise BenchError(f"{label}: {figures['jobs']} jobs, expected {expected_jobs} "
                                     f"(invalid generated intents?):\n{done.stderr[-2000:]}")
                for p in PARTS:
                    parts[label][p].append(figures[p])
                walls[label].append(wall)
                return float(figures["total_s"])

            return trial

        variants = {
            f"bundled_{BUNDLED}": probe_with(f"bundled_{BUNDLED}", str(empty), BUNDLED),
            f"intents_{args.count}": probe_with(f"intents_{args.count}", str(many), args.count),
        }
        env = machine()
        samples = interleave(variants, trials=args.trials, warmup=args.warmup)
        env["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    # The warm-up trial appended too: keep only the timed ones (the last `trials`).
    for label in variants:
        walls[label] = walls[label][-args.trials:]
        for p in PARTS:
            parts[label][p] = parts[label][p][-args.trials:]

    small, large = f"bundled_{BUNDLED}", f"intents_{args.count}"
    summary = {}
    for label in variants:
        summary[label] = {
            "total": stats(samples[label]),
            "process_wall": stats(walls[label]),
            **{p.removesuffix("_s"): stats(parts[label][p]) for p in PARTS},
        }
    large_median = summary[large]["total"]["median_s"]
    per_intent_ms = (large_median - summary[small]["total"]["median_s"]) / (args.count - BUNDLED) * 1000
    data = {
        "benchmark": NAME,
        "machine": env,
        "trials": args.trials,
        "warmup": args.warmup,
        "count": args.count,
        "generated": generated,
        "seed": args.seed,
        "variants": summary,
        "ratio_large_over_bundled": ratio(samples[large], samples[small]),
        "marginal_ms_per_intent": round(per_intent_ms, 2),
        "target": {"total_s_max_for_count": TARGET_S, "status": verdict(large_median, TARGET_S, strict=True)},
    }
    rows = []
    for label in variants:
        s = summary[label]
        rows.append((f"{label}: total (in-process)", s["total"]))
        rows.append((f"{label}: import dagster", s["import_dagster"]))
        rows.append((f"{label}: build defs", s["build_defs"]))
        rows.append((f"{label}: validate_loadable", s["validate"]))
        rows.append((f"{label}: whole process wall", s["process_wall"]))
    md = [
        "# definitions_load",
        "",
        f"Fresh processes, interleaved, {args.trials} trials each after {args.warmup} warm-up; "
        f"{env['cpus']} CPUs, load {env['loadavg']} -> {env['loadavg_after']}, commit {env['commit']}. "
        f"{generated} generated intents (seed {args.seed}) + {BUNDLED} bundled.",
        "",
        markdown_table(rows),
        "",
        f"**{args.count} intents: median {large_median:.3f} s** (target < {TARGET_S} s: "
        f"{data['target']['status']}); bundled only {summary[small]['total']['median_s']:.3f} s; "
        f"ratio {data['ratio_large_over_bundled']:.2f}; about {per_intent_ms:.1f} ms per extra intent.",
    ]
    write_results(NAME, data, "\n".join(md), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

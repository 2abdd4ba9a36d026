"""`intent run noop5` vs a plain Dagster job of five trivial ops, each as a whole fresh process.

Both land on the same persistent SQLite instance (so both show in the UI); the plain job is
`job.execute_in_process(instance=DagsterInstance.get())` in a small script. A third, reference
variant times `python -c "import dagster"`: the floor every Dagster process pays.

Target: median(intent) / median(plain) <= 1.3.

    .venv/bin/python -m bench.cli_overhead --trials 7
"""

import os
import sys

from bench._common import (
    INTENT,
    PYTHON,
    BenchError,
    base_parser,
    interleave,
    machine,
    markdown_table,
    paired_ratios,
    ratio,
    stats,
    verdict,
    workspace,
    write_results,
)

NAME = "cli_overhead"
TARGET_RATIO = 1.3

NOOP5 = """\
name: noop5
summary: Five no-op steps in a chain (CLI overhead benchmark)
steps:
  - {id: s1, run: ["true"]}
  - {id: s2, run: ["true"], needs: [s1]}
  - {id: s3, run: ["true"], needs: [s2]}
  - {id: s4, run: ["true"], needs: [s3]}
  - {id: s5, run: ["true"], needs: [s4]}
"""

PLAIN5 = '''\
"""A plain Dagster job of five trivial ops in a chain, on the persistent instance."""
import dagster as dg


@dg.op(out=dg.Out(dg.Nothing))
def op1() -> None:
    pass


@dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
def op2() -> None:
    pass


@dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
def op3() -> None:
    pass


@dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
def op4() -> None:
    pass


@dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
def op5() -> None:
    pass


@dg.job
def plain5():
    op5(op4(op3(op2(op1()))))


if __name__ == "__main__":
    result = plain5.execute_in_process(instance=dg.DagsterInstance.get())
    assert result.success, "plain5 failed"
    print("plain5", result.run_id, "SUCCESS")
'''


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], trials=7)
    parser.add_argument("--no-reference", action="store_true", help='skip the `import dagster` floor')
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="compile the package from source in every process when PYTHONDONTWRITEBYTECODE "
                             "is set (how figures before the bytecode cache were taken)")
    args = parser.parse_args(argv)
    bytecode_cache = not args.no_bytecode_cache

    with workspace(keep=args.keep, bytecode_cache=bytecode_cache) as ws:
        ws.write_intent("noop5", NOOP5)
        plain = ws.write_script("plain5.py", PLAIN5)

        def intent_run() -> float:
            seconds, done = ws.timed([INTENT, "run", "noop5"])
            if "SUCCEEDED" not in done.stdout:
                raise BenchError(f"intent run noop5 did not succeed:\n{done.stdout[-2000:]}")
            return seconds

        def plain_run() -> float:
            seconds, done = ws.timed([PYTHON, str(plain)])
            if "SUCCESS" not in done.stdout:
                raise BenchError(f"plain5 did not succeed:\n{done.stdout[-2000:]}")
            return seconds

        def import_dagster() -> float:
            return ws.timed([PYTHON, "-c", "import dagster"])[0]

        variants = {"intent": intent_run, "plain": plain_run}
        if not args.no_reference:
            variants["import_dagster"] = import_dagster
        env = machine()
        samples = interleave(variants, trials=args.trials, warmup=args.warmup)
        env["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    summary = {name: stats(values) for name, values in samples.items()}
    value = ratio(samples["intent"], samples["plain"])
    data = {
        "benchmark": NAME,
        "machine": env,
        "trials": args.trials,
        "warmup": args.warmup,
        # Whether the processes could reuse compiled bytecode (see bench/_common.workspace).
        "bytecode_cache": bytecode_cache,
        "pythondontwritebytecode_in_env": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "variants": summary,
        "ratio_intent_over_plain": value,
        "paired_ratio_intent_over_plain": paired_ratios(samples["intent"], samples["plain"]),
        "target": {"ratio_intent_over_plain_max": TARGET_RATIO, "status": verdict(value, TARGET_RATIO)},
    }
    if "import_dagster" in samples:
        floor = summary["import_dagster"]["median_s"]
        data["above_import_floor_s"] = {
            "intent": round(summary["intent"]["median_s"] - floor, 4),
            "plain": round(summary["plain"]["median_s"] - floor, 4),
        }
    bytecode_note = "on" if bytecode_cache else "off"
    if not bytecode_cache and data["pythondontwritebytecode_in_env"]:
        bytecode_note += " (PYTHONDONTWRITEBYTECODE is set: every process compiles the package from source)"
    rows = [("`intent run noop5`", summary["intent"]), ("plain Dagster job (5 ops)", summary["plain"])]
    if "import_dagster" in summary:
        rows.append(('`python -c "import dagster"` (floor)', summary["import_dagster"]))
    md = [
        "# cli_overhead",
        "",
        f"Whole fresh processes, interleaved, {args.trials} trials each after {args.warmup} warm-up; "
        f"{env['cpus']} CPUs, load {env['loadavg']} -> {env['loadavg_after']}, commit {env['commit']}; "
        f"bytecode cache {bytecode_note}.",
        "",
        markdown_table(rows),
        "",
        f"**ratio intent/plain = {value:.3f}** (target <= {TARGET_RATIO}: {data['target']['status']}); "
        f"per-round paired ratios: median {data['paired_ratio_intent_over_plain']['median']:.3f}, "
        f"range {data['paired_ratio_intent_over_plain']['min']:.3f}-"
        f"{data['paired_ratio_intent_over_plain']['max']:.3f}.",
    ]
    if "above_import_floor_s" in data:
        above = data["above_import_floor_s"]
        md.append("")
        md.append(f"Above the `import dagster` floor: intent +{above['intent']:.3f} s, "
                  f"plain +{above['plain']:.3f} s.")
    write_results(NAME, data, "\n".join(md), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

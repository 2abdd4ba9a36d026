"""Three independent 5-second steps vs the same three chained with `needs`, both via `intent run`.

The independent intent gets Dagster's multiprocess executor (forkserver); the chain gets the
in-process executor. Ideal: 5 s vs 15 s of sleeping plus the same fixed CLI cost for both.

Target: median(parallel) / median(serial) <= 0.6.

    .venv/bin/python -m bench.parallel_steps --trials 3
"""

import os
import sys

from bench._common import (
    INTENT,
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

NAME = "parallel_steps"
TARGET_RATIO = 0.6


def _intent(name: str, seconds: int, *, chained: bool) -> str:
    shape = "chained" if chained else "independent"
    lines = [f"name: {name}", f"summary: Three {seconds}-second sleeps, {shape}", "steps:"]
    for i in (1, 2, 3):
        needs = f", needs: [s{i - 1}]" if chained and i > 1 else ""
        lines.append(f'  - {{id: s{i}, run: [sleep, "{seconds}"]{needs}}}')
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], trials=3)
    parser.add_argument("--sleep", type=int, default=5, help="seconds each step sleeps (default 5)")
    args = parser.parse_args(argv)
    # A warm-up here costs 20+ s of sleeping; one is enough to fill the page cache and pyc files.

    with workspace(keep=args.keep) as ws:
        ws.write_intent("sleep3-parallel", _intent("sleep3-parallel", args.sleep, chained=False))
        ws.write_intent("sleep3-serial", _intent("sleep3-serial", args.sleep, chained=True))

        def run(name: str):
            def trial() -> float:
                seconds, done = ws.timed([INTENT, "run", name])
                if "SUCCEEDED" not in done.stdout:
                    raise BenchError(f"intent run {name} did not succeed:\n{done.stdout[-2000:]}")
                return seconds

            return trial

        variants = {"parallel": run("sleep3-parallel"), "serial": run("sleep3-serial")}
        env = machine()
        samples = interleave(variants, trials=args.trials, warmup=args.warmup)
        env["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    summary = {name: stats(values) for name, values in samples.items()}
    value = ratio(samples["parallel"], samples["serial"])
    ideal = {"parallel": args.sleep, "serial": 3 * args.sleep}
    overhead = {k: round(summary[k]["median_s"] - ideal[k], 3) for k in ideal}
    data = {
        "benchmark": NAME,
        "machine": env,
        "trials": args.trials,
        "warmup": args.warmup,
        "sleep_s": args.sleep,
        "variants": summary,
        "sleeping_s": ideal,
        "overhead_above_sleeping_s": overhead,
        "ratio_parallel_over_serial": value,
        "paired_ratio_parallel_over_serial": paired_ratios(samples["parallel"], samples["serial"]),
        "target": {"ratio_parallel_over_serial_max": TARGET_RATIO, "status": verdict(value, TARGET_RATIO)},
    }
    md = "\n".join([
        "# parallel_steps",
        "",
        f"`intent run` as whole fresh processes, interleaved, {args.trials} trials each after "
        f"{args.warmup} warm-up; {env['cpus']} CPUs, load {env['loadavg']} -> {env['loadavg_after']}, "
        f"commit {env['commit']}.",
        "",
        markdown_table([(f"parallel: 3 x sleep {args.sleep} (multiprocess, forkserver)", summary["parallel"]),
                        (f"serial: 3 x sleep {args.sleep} chained (in-process)", summary["serial"])]),
        "",
        f"**ratio parallel/serial = {value:.3f}** (target <= {TARGET_RATIO}: {data['target']['status']}); "
        f"overhead above the sleeping itself: parallel +{overhead['parallel']:.2f} s, "
        f"serial +{overhead['serial']:.2f} s. Per-round paired ratios: median "
        f"{data['paired_ratio_parallel_over_serial']['median']:.3f}, range "
        f"{data['paired_ratio_parallel_over_serial']['min']:.3f}-"
        f"{data['paired_ratio_parallel_over_serial']['max']:.3f}.",
    ])
    write_results(NAME, data, md, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

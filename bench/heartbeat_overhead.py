"""Heartbeat overhead: a 60-step chain with heartbeats as built vs with INTENT_HEARTBEAT=off.

`intent run chain60` (60 `run: [sleep, "0.2"]` steps in a chain, in process) as a whole fresh
process, interleaved: heartbeats on (the default) vs off (INTENT_HEARTBEAT=off, a switch that
exists for this comparison only: no heartbeat thread, so no heartbeats, lease renewal or stop
polling). Sleeping alone takes 12 s.

Target: median(on) / median(off) <= 1.05.

    .venv/bin/python -m bench.heartbeat_overhead --trials 5
"""

import sys

from bench._common import (
    INTENT,
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

NAME = "heartbeat_overhead"
TARGET_RATIO = 1.05
STEPS = 60
STEP_S = 0.2


def chain_intent() -> str:
    lines = ["name: chain60", f"summary: {STEPS} short steps in a chain (heartbeat overhead benchmark)", "steps:"]
    for i in range(1, STEPS + 1):
        needs = f", needs: [s{i - 1}]" if i > 1 else ""
        lines.append(f'  - {{id: s{i}, run: [sleep, "{STEP_S}"]{needs}}}')
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], trials=5)
    args = parser.parse_args(argv)
    with workspace(keep=args.keep) as ws:
        ws.write_intent("chain60", chain_intent())
        before = machine()
        variants = {
            "heartbeat on": lambda: ws.timed([INTENT, "run", "chain60"], env={"INTENT_HEARTBEAT": "on"})[0],
            "heartbeat off": lambda: ws.timed([INTENT, "run", "chain60"], env={"INTENT_HEARTBEAT": "off"})[0],
        }
        samples = interleave(variants, trials=args.trials, warmup=args.warmup)
        after = machine()
    on, off = samples["heartbeat on"], samples["heartbeat off"]
    value = ratio(on, off)
    data = {"name": NAME, "steps": STEPS, "step_s": STEP_S, "variants": {k: stats(v) for k, v in samples.items()},
            "ratio_on_off": value, "paired_ratios": paired_ratios(on, off), "target": {"ratio": TARGET_RATIO},
            "met": value <= TARGET_RATIO, "machine": before, "loadavg_after": after["loadavg"]}
    markdown = "\n".join([
        f"## heartbeat_overhead — {STEPS}-step chain of `sleep {STEP_S}`, heartbeats on vs off", "",
        markdown_table([(k, stats(v)) for k, v in samples.items()]), "",
        f"Ratio of medians on/off: **{value:.3f}** (paired per round: median {data['paired_ratios']['median']:.3f}, "
        f"{data['paired_ratios']['min']:.3f}–{data['paired_ratios']['max']:.3f}). "
        f"Target ≤ {TARGET_RATIO:g}: **{verdict(value, TARGET_RATIO)}**. Sleeping alone: {STEPS * STEP_S:g} s. "
        f"Load {before['loadavg']} → {after['loadavg']}, {before['cpus']} CPUs, commit {before['commit']}.",
    ])
    write_results(NAME, data, markdown, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

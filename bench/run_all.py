"""Run every benchmark one after another and collect their summaries in bench/results/summary.md.

    .venv/bin/python -m bench.run_all            # default (small) trial counts
    .venv/bin/python -m bench.run_all --trials 9 # the same trial count for every benchmark
"""

import argparse
import subprocess
import sys
import time

from bench._common import PYTHON, REPO_ROOT, RESULTS_DIR

BENCHMARKS = ["cli_overhead", "definitions_load", "parallel_steps", "audit_verify", "audit_append",
              "stop_latency", "heartbeat_overhead", "metrics_rollup"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, help="timed trials per variant for every benchmark")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args(argv)
    failed = []
    started = time.perf_counter()
    for name in args.only or BENCHMARKS:
        cmd = [PYTHON, "-m", f"bench.{name}"] + (["--trials", str(args.trials)] if args.trials else [])
        print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        if subprocess.run(cmd, cwd=REPO_ROOT, check=False).returncode != 0:
            failed.append(name)
    summaries = [(RESULTS_DIR / f"{name}.md").read_text(encoding="utf-8").strip()
                 for name in BENCHMARKS if (RESULTS_DIR / f"{name}.md").exists()]
    (RESULTS_DIR / "summary.md").write_text("\n\n".join(summaries) + "\n", encoding="utf-8")
    print(f"== done in {time.perf_counter() - started:.0f} s; bench/results/summary.md"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

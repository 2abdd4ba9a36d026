"""Shared benchmark plumbing: throwaway homes, interleaved timing of fresh processes, result files.

Machines are shared and noisy, so every benchmark runs its variants side by side in one run
(A, B, A, B, ...) after an untimed warm-up of each, and reports medians and ratios of medians.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
PYTHON = str(VENV_BIN / "python")
INTENT = str(VENV_BIN / "intent")


class BenchError(RuntimeError):
    """A benchmarked command failed: its figures would be meaningless."""


@dataclass
class Workspace:
    """A throwaway INTENT_HOME / DAGSTER_HOME and INTENTS_PATH under one temp dir."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def intents(self) -> Path:
        return self.root / "intents"

    def write_intent(self, name: str, text: str) -> Path:
        path = self.intents / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def write_script(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path

    def run(self, argv: list[str], *, timeout: float = 600,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the workspace (``env`` overrides some variables); raise unless it exits 0."""
        done = subprocess.run(argv, cwd=self.root, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout)[-2000:]
            raise BenchError(f"{' '.join(argv)} exited {done.returncode}:\n{tail}")
        return done

    def timed(self, argv: list[str], *, timeout: float = 600,
              env: Mapping[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
        """Wall time of one whole fresh process, in seconds."""
        start = time.perf_counter()
        done = self.run(argv, timeout=timeout, env=env)
        return time.perf_counter() - start, done


@contextmanager
def workspace(*, init: bool = True, keep: bool = False, bytecode_cache: bool = False) -> Iterator[Workspace]:
    """A fresh temp dir with INTENT_HOME, DAGSTER_HOME and INTENTS_PATH set for subprocesses.

    ``bytecode_cache``: the subprocesses may write and reuse compiled bytecode, kept under the
    temp dir (PYTHONPYCACHEPREFIX). With PYTHONDONTWRITEBYTECODE set (as on the shared machines)
    the package under test, an editable install, is otherwise compiled from source by every
    process, while Dagster runs from the bytecode compiled when it was installed: a cost only the
    intent side pays, and that no installed copy pays. ``intent init`` and the warm-up fill the cache.
    """
    root = Path(tempfile.mkdtemp(prefix="intent-bench-"))
    ws = Workspace(root)
    ws.intents.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("INTENT_STORE_URL", "INTENT_FLEET")}
    env.update({"INTENT_HOME": str(ws.home), "DAGSTER_HOME": str(ws.home / "dagster"),
                "INTENTS_PATH": str(ws.intents), "PYTHONUNBUFFERED": "1"})
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    ws.env = env
    try:
        if init:
            ws.run([INTENT, "init", "--no-sample"])
        yield ws
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def interleave(variants: Mapping[str, Callable[[], float]], *, trials: int, warmup: int = 1,
               progress: bool = True) -> dict[str, list[float]]:
    """Run each variant ``warmup`` times untimed, then ``trials`` rounds of A, B, A, B, ..."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_no in range(1, trials + 1):
        for name, fn in variants.items():
            seconds = fn()
            samples[name].append(seconds)
            if progress:
                print(f"  trial {round_no}/{trials} {name:<14} {seconds:8.3f} s", file=sys.stderr, flush=True)
    return samples


def stats(values: list[float]) -> dict[str, Any]:
    """Median and spread of one variant's samples (seconds)."""
    return {
        "n": len(values),
        "median_s": round(statistics.median(values), 4),
        "min_s": round(min(values), 4),
        "max_s": round(max(values), 4),
        "mean_s": round(statistics.fmean(values), 4),
        "stdev_s": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "samples_s": [round(v, 4) for v in values],
    }


def ratio(numerator: list[float], denominator: list[float]) -> float:
    """Ratio of medians."""
    return round(statistics.median(numerator) / statistics.median(denominator), 3)


def paired_ratios(numerator: list[float], denominator: list[float]) -> dict[str, Any]:
    """Per-round ratios of interleaved trials (each pair ran back to back, under similar load)."""
    values = sorted(a / b for a, b in zip(numerator, denominator, strict=True))
    return {"median": round(statistics.median(values), 3), "min": round(values[0], 3),
            "max": round(values[-1], 3)}


def machine() -> dict[str, Any]:
    """What the figures were measured on (load averages say how noisy the machine was)."""
    import dagster

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "dagster": dagster.__version__,
        "commit": commit,
    }


def base_parser(description: str, *, trials: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--trials", type=int, default=trials,
                        help=f"timed trials per variant (default {trials})")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per variant first (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir for inspection")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    return parser


def write_results(name: str, data: dict[str, Any], markdown: str, *, write: bool = True) -> None:
    """Print the Markdown summary; write bench/results/<name>.json and .md."""
    print(markdown)
    if not write:
        return
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    (RESULTS_DIR / f"{name}.json").write_text(text, encoding="utf-8")
    (RESULTS_DIR / f"{name}.md").write_text(markdown + "\n", encoding="utf-8")
    print(f"wrote bench/results/{name}.json and .md", file=sys.stderr)


def markdown_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    lines = ["| variant | n | median s | min s | max s |", "| --- | ---: | ---: | ---: | ---: |"]
    for label, s in rows:
        lines.append(f"| {label} | {s['n']} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} |")
    return "\n".join(lines)


def verdict(value: float, target: float, *, strict: bool = False) -> str:
    """Whether an upper-bound target is met (``strict``: value must stay below it)."""
    met = value < target if strict else value <= target
    return "met" if met else "MISSED"

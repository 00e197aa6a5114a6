"""Run the benchmarks one after the other and print their tables, then one summary table
next to the issue 7 targets (`make bench`, about 10 minutes).

Each benchmark runs in its own process (its own databases, servers and clean-up), so they do
not compete for the machine. Progress goes to stderr, the tables to stdout. The 10-minute
mixed load test is not part of it: run `bench/load.py` on its own. `--quick` runs small
versions (a smoke test of the scripts, not figures to quote).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine_description, table

HERE = Path(__file__).resolve().parent

FULL: dict[str, list[str]] = {
    "aggregate_load.py": [],
    "ceiling.py": [],
    "history.py": ["--duration", "50"],
    "rebuild.py": ["--no-relay"],
    "lag.py": ["--duration", "15"],
}
QUICK: dict[str, list[str]] = {
    "aggregate_load.py": ["--events", "1000", "--runs", "30", "--command-runs", "10"],
    "ceiling.py": [
        "--pg-seconds",
        "2",
        "--users",
        "800",
        "--levels",
        "1,8,32",
        "--duration",
        "2",
        "--warmup",
        "1",
    ],
    "history.py": ["--users", "1", "--events", "2000", "--duration", "5"],
    "rebuild.py": ["--events", "5000", "--users", "50", "--no-relay"],
    "lag.py": ["--duration", "4", "--users", "100", "--rate", "50"],
}
RSS_TARGET_MB = 250
LAG_TARGET_MS = 100
REBUILD_TARGET = 10_000
HISTORY_TARGET = 1.2
FRACTION_TARGET = 0.40
P99_TARGET_MS = 50


def mark(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "NOT met")


def summary(figures: dict[str, Any]) -> str:
    """One table: each figure next to its issue 7 target."""
    rows: list[list[str]] = []
    validate = {v["concurrency"]: v for v in figures.get("validate", [])}
    ceiling = {int(k): v for k, v in figures.get("ceiling", {}).items()}
    best = max(ceiling.values(), default=0.0)
    for c, v in sorted(validate.items()):
        target, ok = "", None
        if c == 32:
            target, ok = f"p99 < {P99_TARGET_MS} ms", v["p99_ms"] < P99_TARGET_MS
        rows.append(
            [
                f"TOTP validate, concurrency {c}",
                f"{v['rate']:.0f} req/s, p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms",
                target,
                mark(ok),
            ]
        )
    if ceiling:
        rows.append(
            [
                "pgbench append ceiling (conc " + "/".join(map(str, sorted(ceiling))) + ")",
                " / ".join(f"{ceiling[c]:.0f}" for c in sorted(ceiling)) + " appends/s",
                "",
                "-",
            ]
        )
    if 32 in validate and best:
        rate = validate[32]["rate"]
        same = ceiling.get(32)
        rows.append(
            [
                "validate at conc 32 / best append ceiling",
                f"{100 * rate / best:.1f} %"
                + (f" ({100 * rate / same:.1f} % of the conc-32 ceiling)" if same else ""),
                f">= {FRACTION_TARGET:.0%}",
                mark(rate / best >= FRACTION_TARGET),
            ]
        )
    history = figures.get("history")
    if history:
        rows.append(
            [
                "validate latency, 10,000-event user / fresh user",
                f"median {history['ratio_p50']:.2f}, p99 {history['ratio_p99']:.2f}",
                f"<= {HISTORY_TARGET} (median)",
                mark(history["ratio_p50"] <= HISTORY_TARGET),
            ]
        )
    rebuild = figures.get("rebuild")
    if rebuild:
        for r in rebuild["rows"]:
            is_target = r["what"].startswith(("runner", "rebuild"))
            rows.append(
                [
                    r["what"],
                    f"{r['rate']:.0f} events/s ({r['events']} events)",
                    f">= {REBUILD_TARGET} events/s" if is_target else "",
                    mark(r["rate"] >= REBUILD_TARGET) if is_target else "-",
                ]
            )
    for lag in figures.get("lag", []):
        for what in ("nats", "projections"):
            d = lag[what]
            rows.append(
                [
                    f"{'NATS' if what == 'nats' else 'projection'} lag, {lag['mode']}, "
                    f"{lag['rate']:.0f} req/s",
                    f"p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms"
                    + (f", {d['missing']} missing" if d["missing"] else ""),
                    f"p99 < {LAG_TARGET_MS} ms",
                    mark(d["p99_ms"] < LAG_TARGET_MS and not d["missing"]),
                ]
            )
    if 32 in validate:
        v = validate[32]
        peak_mb = max(v["rss_mib"], v["hwm_mib"]) * 1024 * 1024 / 1e6
        rows.append(
            [
                "API RSS under validate at conc 32 (max sampled / VmHWM)",
                f"{v['rss_mib']:.0f} / {v['hwm_mib']:.0f} MiB ({peak_mb:.0f} MB)",
                f"< {RSS_TARGET_MB} MB",
                mark(peak_mb < RSS_TARGET_MB),
            ]
        )
    return "\n".join(
        [
            "## Summary against the issue 7 targets",
            "",
            f"Machine: {machine_description()}",
            f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
            "",
            table(["figure", "measured", "target", "status"], rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs (smoke test)")
    parser.add_argument(
        "--only", help="comma-separated scripts to run (e.g. ceiling.py,lag.py)", default=""
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.only:
        plan = {k: v for k, v in plan.items() if k in args.only.split(",")}
    outputs: list[str] = []
    failed: list[str] = []
    figures: dict[str, Any] = {}
    started = time.monotonic()
    current: subprocess.Popen[str] | None = None

    def forward(signum: int, _: Any) -> None:
        if current is not None and current.poll() is None:
            current.send_signal(signal.SIGTERM)  # the child cleans up; wait for it
            try:
                current.wait(timeout=60)
            except subprocess.TimeoutExpired:
                current.kill()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, forward)
    with tempfile.TemporaryDirectory(prefix="mfa-bench-run-") as tmp:
        try:
            for script, script_args in plan.items():
                print(f"=== {script} {' '.join(script_args)}".rstrip(), file=sys.stderr, flush=True)
                json_path = Path(tmp) / (script + ".json")
                extra = [] if script == "aggregate_load.py" else ["--json", str(json_path)]
                began = time.monotonic()
                current = subprocess.Popen(
                    [sys.executable, str(HERE / script), *script_args, *extra],
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
                out, _ = current.communicate()
                outputs.append(out.strip())
                print(f"    ({time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
                if current.returncode != 0:
                    failed.append(f"{script} (exit {current.returncode})")
                if json_path.exists():
                    figures.update(json.loads(json_path.read_text()))
        except KeyboardInterrupt:
            if current is not None:
                try:
                    current.wait(timeout=30)  # it got the SIGINT too and is cleaning up
                except subprocess.TimeoutExpired:
                    current.kill()
            raise
    print("\n\n".join(o for o in outputs if o))
    print()
    print(summary(figures))
    print(f"\n(all benchmarks: {time.monotonic() - started:.0f} s)", file=sys.stderr)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

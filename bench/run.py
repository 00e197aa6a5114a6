"""Run every benchmark and print their tables (`make bench`).

Each benchmark runs in its own process (its own database, server and clean-up), one after
the other, so they do not compete for the machine. Progress goes to stderr, the tables to
stdout. `--quick` runs small versions (a smoke test of the scripts, not figures to quote).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = {
    "aggregate_load.py": [],
    "totp_validate.py": [],
}
QUICK = {
    "aggregate_load.py": ["--events", "1000", "--runs", "30", "--command-runs", "10"],
    "totp_validate.py": ["--users", "800", "--levels", "1,8", "--duration", "2", "--warmup", "1"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs (smoke test)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    outputs: list[str] = []
    failed: list[str] = []
    started = time.monotonic()
    for script, script_args in plan.items():
        print(f"=== {script} {' '.join(script_args)}".rstrip(), file=sys.stderr, flush=True)
        result = subprocess.run(
            [sys.executable, str(HERE / script), *script_args],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        outputs.append(result.stdout.strip())
        if result.returncode != 0:
            failed.append(f"{script} (exit {result.returncode})")
    print("\n\n".join(o for o in outputs if o))
    print(f"\n(all benchmarks: {time.monotonic() - started:.0f} s)", file=sys.stderr)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers shared by the benchmarks: a throw-away PostgreSQL database and CPU accounting."""

from __future__ import annotations

import math
import os
import platform
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "MFA_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def create_database(admin_url: str = PG_ADMIN_URL) -> str:
    """A fresh, empty database `mfa_bench_<random>`; returns its URL."""
    name = f"mfa_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(url: str, admin_url: str = PG_ADMIN_URL) -> None:
    """Drop a database made by `create_database` (connections to it are terminated)."""
    name = url.rsplit("/", 1)[1]
    if not name.startswith("mfa_bench_"):
        raise ValueError(f"refusing to drop {name!r}: not a benchmark database")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def process_cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of one process (0.0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" that ends the command name, utime and stime are fields 12 and 13.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (`mfa serve --workers N` forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children that are still alive."""
    return sum(process_cpu_seconds(p) for p in process_tree(pid))


def postgres_cpu_seconds() -> float:
    """CPU time of every process called `postgres` (all databases, every user of the server)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        total += process_cpu_seconds(entry.name)
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLOCK_TICKS


@dataclass
class CpuSample:
    """CPU counters at one instant; subtract two to get the cores used in between."""

    client: float
    server: float
    worker: float
    postgres: float
    machine: float

    @classmethod
    def take(cls, server_pid: int | None = None, worker_pid: int | None = None) -> CpuSample:
        return cls(
            client=process_cpu_seconds(),
            server=tree_cpu_seconds(server_pid) if server_pid else 0.0,
            worker=process_cpu_seconds(worker_pid) if worker_pid else 0.0,
            postgres=postgres_cpu_seconds(),
            machine=machine_busy_seconds(),
        )

    @property
    def others(self) -> float:
        """Machine-wide use not accounted for by the parties above (other people's work)."""
        return max(0.0, self.machine - self.client - self.server - self.worker - self.postgres)

    def cores_since(self, earlier: CpuSample, seconds: float) -> CpuSample:
        """Average cores used by each party between `earlier` and this sample."""
        return CpuSample(
            client=(self.client - earlier.client) / seconds,
            server=(self.server - earlier.server) / seconds,
            worker=(self.worker - earlier.worker) / seconds,
            postgres=(self.postgres - earlier.postgres) / seconds,
            machine=(self.machine - earlier.machine) / seconds,
        )


def rss_kib(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM (peak) of a process in KiB; (0, 0) once it is gone."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def largest_rss_kib(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of the largest process in `pid`'s tree (one server worker)."""
    sizes = [rss_kib(p) for p in process_tree(pid)]
    return max((s[0] for s in sizes), default=0), max((s[1] for s in sizes), default=0)


def machine_description() -> str:
    """One line about the machine, Python and PostgreSQL the figures came from."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            pg = str(row[0]) if row else "?"
    except psycopg.Error:
        pg = "unreachable"
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        rev = ""
    return (
        f"{os.cpu_count()} cores ({model}), {mem_kb / 1024 / 1024:.1f} GiB RAM, "
        f"Python {platform.python_version()}, PostgreSQL {pg}, load avg "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}" + (f", commit {rev}" if rev else "")
    )


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain fixed-width table (also valid Markdown)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| "
        + " | ".join(
            c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)
        )
        + " |"
        for row in rows
    ]
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    return cell.replace(".", "", 1).replace(" / ", "", 1).replace(".", "", 1).isdigit()

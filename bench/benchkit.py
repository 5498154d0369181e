"""What every benchmark here shares: a description of the machine it ran on, and a free loopback port.

Scripts run as `python bench/<name>.py` have this directory first on sys.path and import `benchkit`;
those run as `python -m bench.<name>` import `bench.benchkit`.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path


def machine() -> str:
    """CPUs and model, RAM, Python and the load average: the figures are only as good as these."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    load1, load5, _ = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem_kb / 1024 / 1024:.1f} GiB RAM, "
        f"Python {platform.python_version()}, load average {load1:.1f}/{load5:.1f}"
    )


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine_busy_seconds() -> float:
    """CPU seconds every CPU of the machine has spent busy since boot (Linux /proc/stat): over a span,
    minus a process's own, what the rest of the machine (the database, above all) spent."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")

"""Small helpers shared by the bench processes: /proc readings, child processes, percentiles.

Nothing here imports the bot or botbuilder, so every process pays only for what it uses.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def ensure_root_on_path() -> None:
    """Make `bench`, `tests`, `bot` and `storage` importable when a file here is run as a script."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# -- /proc ---------------------------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), from /proc/<pid>/stat (10 ms resolution)."""
    return cpu_seconds_of(f"/proc/{pid}/stat")


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of the main thread of `pid` alone (the event loop's, for an asyncio server)."""
    return cpu_seconds_of(f"/proc/{pid}/task/{pid}/stat")


def cpu_seconds_of(stat_path: str) -> float:
    """utime + stime (fields 14 and 15) of a /proc stat file, in seconds."""
    with open(stat_path, "rb") as f:
        raw = f.read()
    rest = raw[raw.rindex(b")") + 2:].split()   # fields from 3 (state) on; the name may hold spaces
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MiB (VmRSS)."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"Threads:"):
                return int(line.split()[1])
    return 0


# -- numbers -------------------------------------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by the nearest-rank method; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rounded(value: Any, digits: int = 3) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


# -- processes -----------------------------------------------------------------------------------------------------

def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (for servers that must be told their port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    """A child process we started (and only those are ever stopped, by their own pid).

    Its stderr goes to `log`; its stdout is kept for `ready()`, which reads the one JSON line a bench server
    prints when it listens."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 log: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        self._log_file: IO[bytes] = open(log, "ab")  # noqa: SIM115 - open for the child's lifetime
        self.started = time.monotonic()
        self.proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=self._log_file, stdin=subprocess.DEVNULL,
                                     env=dict(env) if env is not None else None, cwd=str(cwd or ROOT))
        self.pid = self.proc.pid

    def ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """The JSON line the child prints on stdout once it serves (or RuntimeError with its log's tail)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        buffer = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read()
            if chunk:
                buffer += chunk
                if b"\n" in buffer:
                    line = buffer.split(b"\n", 1)[0]
                    return json.loads(line)
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} did not start: {self.tail()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def announce(**fields: Any) -> None:
    """Print the one JSON line a bench server writes on stdout when it listens, and flush it."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()

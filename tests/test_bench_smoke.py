"""The benchmarks still run (a smoke run with small sizes). Their figures are printed, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_storage_benchmark_runs_and_prints_a_json_summary() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "storage.py"), "--quick"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"add_funds_p50_ms_at_1000", "add_funds_p50_ms_at_10000", "usage_batch_10000_rows_s"} <= set(summary)


def test_usage_import_benchmark_runs_and_imports_every_row() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "usage_import.py"), "--quick", "--repeat", "1"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rows"] == summary["file_rows"] >= 10_000 and summary["verify_ok"] is True
    assert 0 < summary["debited"] < summary["rows"]      # the demo has free and non-credit calls too


def test_turn_benchmark_runs_every_target_without_errors() -> None:
    """bench/turns/run.py --quick: the echo bot, the bare handler and our bot on both backends, against the fake
    connector and token endpoint; every reply arrives and the stores verify. The figures are only printed."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "turns" / "run.py"), "--quick"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode in (0, 1), done.stderr[-2000:]     # 1: a target missed, which is a figure, not a failure
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    targets = summary["targets"]
    assert {"echo", "bare", "ours-tinydb", "ours-postgres"} <= set(targets)
    for name, figures in targets.items():
        assert figures["turns"] > 0 and figures["errors"]["total"] == 0, (name, figures["errors"])
    for name in ("ours-tinydb", "ours-postgres"):
        assert targets[name]["verify"]["problems"] == 0 and targets[name]["token_requests_run"] == 1

"""Print the reliability figures the suites wrote to artifacts/reliability/*.json as Markdown tables, one per
suite (figures as rows, one column per test and backend), so that docs/reliability.md can be regenerated:

    .venv/bin/python tests/reliability_report.py [DIR]

A file is either `{"suite": ..., "results": [{"test": ..., "backend": ..., <figures>}, ...]}` (the crash and
fault suites, tests/crash_load.py `write_figures`) or one flat object of figures (the hostile-input suite).
Nested objects are shown as `key: value` lists. Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "reliability"
#: Shown first when present, in this order; everything else follows in the order the suite wrote it.
FIRST = ("backend", "seed", "written_at", "duration_s", "kills", "restarts", "operations", "operations_acknowledged",
         "inputs_tried", "faults_injected", "lost", "duplicated_entries")


def cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "-"
    if value is None:
        return "-"
    return str(value).replace("|", "\\|")


def columns(data: Any) -> list[tuple[str, dict[str, Any]]]:
    """(column title, figures) for each result in one file."""
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        out = []
        for result in data["results"]:
            if isinstance(result, dict):
                title = " / ".join(str(result[k]) for k in ("test", "backend") if result.get(k))
                out.append((title or "result", {k: v for k, v in result.items() if k != "test"}))
        return out
    if isinstance(data, dict):
        return [("all", data)]
    return []


def table(name: str, cols: list[tuple[str, dict[str, Any]]]) -> str:
    figures: list[str] = [k for k in FIRST if any(k in c for _, c in cols)]
    for _, c in cols:
        figures.extend(k for k in c if k not in figures)
    lines = [f"### {name}", "", "| figure | " + " | ".join(cell(t) for t, _ in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for figure in figures:
        lines.append(f"| {figure} | " + " | ".join(cell(c.get(figure)) for _, c in cols) + " |")
    return "\n".join(lines)


def report(directory: Path) -> str:
    files = sorted(directory.glob("*.json"))
    if not files:
        return f"no figures in {directory} (run the suites first)"
    parts = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            parts.append(f"### {path.stem}\n\n(unreadable: {exc})")
            continue
        name = data.get("suite", path.stem) if isinstance(data, dict) else path.stem
        parts.append(table(f"{name} ({path.name})", columns(data)))
    return "\n\n".join(parts)


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else DEFAULT_DIR
    print(report(directory))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

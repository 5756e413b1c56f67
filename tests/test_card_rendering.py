"""Rendering: the official `adaptivecards` JS renderer, in headless Debian Chromium, renders every card of
tests/test_cards.py's representative data, in both languages, without errors to PNG (artifacts/cards/png/, git-
ignored: look at them). tests/render/render.mjs does the rendering with a Teams-like HostConfig; Teams' `Chart.*`
elements must fall back to their `fallback` there, as in any renderer but Teams.

`make test` installs what this needs (Debian's chromium, `npm ci` in tests/render). Without it this test FAILS
and says so: it never skips, because CI must really render."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from tests.test_cards import built, walk

ROOT = Path(__file__).resolve().parents[1]
RENDER = ROOT / "tests" / "render"
SCRIPT = RENDER / "render.mjs"
NODE_MODULES = RENDER / "node_modules"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))  # render.mjs reads the same variable
OUT = ROOT / "artifacts" / "cards"
JSON_DIR = OUT / "json"
PNG_DIR = OUT / "png"
REPORT = OUT / "render.jsonl"
LANGUAGES = ("en", "da")
TIMEOUT = 300
MIN_PNG_BYTES = 2 * 1024
MIN_WIDTH, MIN_HEIGHT = 100, 50
INSTALL_HINT = "run `make test`, which installs it (Debian's chromium; `npm ci --prefix tests/render`)"

pytestmark = pytest.mark.slow


def all_cards() -> dict[str, dict[str, Any]]:
    """Every card of tests/test_cards.py, both languages, by file name ("da-balance-ok-full")."""
    return {f"{language}-{name}": card for language in LANGUAGES for name, card in built(language)}


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def charts_in(card: dict[str, Any]) -> list[str]:
    return [n["type"] for _, n in walk(card) if isinstance(n, dict) and str(n.get("type", "")).startswith("Chart.")]


def check_installed() -> None:
    """What rendering needs is there, or the test fails with what to do."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: {INSTALL_HINT}", pytrace=False)
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: install Node.js 20 or later", pytrace=False)
    lock = json.loads((RENDER / "package-lock.json").read_text(encoding="utf-8"))
    for package in ("adaptivecards", "playwright-core"):
        wanted = lock["packages"][f"node_modules/{package}"]["version"]
        manifest = NODE_MODULES / package / "package.json"
        if not manifest.is_file():
            pytest.fail(f"{manifest.relative_to(ROOT)} is missing: {INSTALL_HINT}", pytrace=False)
        installed = json.loads(manifest.read_text(encoding="utf-8"))["version"]
        if installed != wanted:
            pytest.fail(f"tests/render/node_modules has {package} {installed}, package-lock.json pins {wanted}: "
                        f"{INSTALL_HINT}", pytrace=False)


@lru_cache(maxsize=1)
def rendered() -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, Any]], dict[str, Any]]:
    """Writes every card to artifacts/cards/json/, renders them all to artifacts/cards/png/ once: the process, its
    per-card results by name, and its summary line. (A plain cached function, not a fixture: a missing install
    fails each test, never errors or skips it.)"""
    check_installed()
    for folder in (JSON_DIR, PNG_DIR):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for name, card in all_cards().items():
        (JSON_DIR / f"{name}.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    try:
        proc = subprocess.run(["node", str(SCRIPT), str(JSON_DIR), str(PNG_DIR)], cwd=ROOT, capture_output=True,
                              text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"render.mjs did not finish in {TIMEOUT} s; stderr: {e.stderr!r}", pytrace=False)
    REPORT.write_text(proc.stdout, encoding="utf-8")
    results: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if "summary" in record:
            summary = record["summary"]
        else:
            results[record["name"]] = record
    return proc, results, summary


def test_every_card_parses_and_renders_without_errors() -> None:
    proc, results, summary = rendered()
    failures = {name: r["errors"] for name, r in results.items() if r["errors"]}
    assert not failures, "render errors:\n" + "\n".join(f"  {n}: {e}" for n, e in sorted(failures.items()))
    assert proc.returncode == 0, f"render.mjs exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    assert set(results) == set(all_cards()), "render.mjs did not report on every card"
    assert summary.get("cards") == len(results) and summary.get("failed") == 0, summary
    layout = sorted({w for r in results.values() for w in r["warnings"]})
    if layout:  # shown in pytest's warnings summary; see artifacts/cards/render.jsonl for which card
        warnings.warn(f"{len(layout)} distinct rendering warnings (e.g. {layout[0]}); see {REPORT.relative_to(ROOT)}",
                      stacklevel=1)


def test_one_non_trivial_png_per_card() -> None:
    rendered()
    pngs = {p.stem: p for p in PNG_DIR.glob("*.png")}
    assert set(pngs) == set(all_cards())
    for name, path in sorted(pngs.items()):
        assert path.stat().st_size > MIN_PNG_BYTES, f"{path.name} is only {path.stat().st_size} bytes"
        width, height = png_size(path)
        assert width > MIN_WIDTH and height > MIN_HEIGHT, f"{path.name} is {width}x{height}"


def test_teams_charts_fall_back_to_their_table() -> None:
    """The renderer does not know `Chart.*`: it must parse each chart's own fallback in its place (checked in the
    page against the element it parsed), and nothing else falls back."""
    _, results, _ = rendered()
    cards = all_cards()
    with_charts = 0
    for name, card in cards.items():
        fallbacks = results[name]["fallbacks"]
        assert [f["type"] for f in fallbacks] == charts_in(card), name
        for fallback in fallbacks:
            assert fallback["renderedAs"] == "Container", (name, fallback)
        with_charts += bool(fallbacks)
    assert with_charts >= 2 * 4  # usage: 7d, 30d, month, small; in both languages

"""`python -m bot serve` freezes its start-up heap once everything has started (ADR 0009); apps built in-process
(tests, embedding) do not."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bot.app import create_app
from bot.heap import freeze_startup_heap
from bot.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def test_serve_freezes_the_startup_heap_after_the_store_opened(tmp_path: Path) -> None:
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "CREDITS_STORE": str(tmp_path / "store"),
           "PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "INFO"}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        bot = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while not _ready(port):
                assert bot.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the bot did not become ready in 30 s"
                time.sleep(0.1)
        finally:
            bot.send_signal(signal.SIGTERM)
            bot.wait(15)
    lines = log_path.read_text().splitlines()
    frozen = [i for i, line in enumerate(lines) if 'msg="start-up heap frozen"' in line]
    assert len(frozen) == 1, "\n".join(lines)
    count = int(re.search(r"frozen_objects=(\d+)", lines[frozen[0]]).group(1))
    assert count > 50_000, lines[frozen[0]]          # the imports alone (botbuilder, msrest, babel, aiohttp)
    opened = [i for i, line in enumerate(lines) if 'msg="ledger opened"' in line]
    assert opened and opened[0] < frozen[0], "\n".join(lines)


def test_an_app_built_in_process_does_not_freeze_its_heap() -> None:
    app = create_app(load_settings({"CREDITS_STORE": "memory://"}))
    assert freeze_startup_heap not in app.on_startup

"""Start the bot and Microsoft 365 Agents Playground side by side, both on 127.0.0.1, and stop them again.

Used by tests/e2e/test_playground.py (free ports, a store in a temporary directory) and by `make playground`
(`python tests/e2e/launch.py`: the bot on 3978 with the usual store, the Playground on 56150, until Ctrl-C).

The Playground (`@microsoft/m365agentsplayground`, pinned in package.json) has no option for its listening
address and binds every interface; `loopback.cjs`, preloaded with `node --require`, makes it bind 127.0.0.1.
When its port is taken it silently takes a random one instead: `start_playground` reads the port it reports
("Listening on N") and fails unless it is the one asked for, and checks the kernel's socket table that nothing
listens on that port on another address. Telemetry is off (`--disable-telemetry`,
`APPLICATION_INSIGHTS_NO_STATSBEAT=true`), and it opens no browser (`TEAMSAPPTESTER_BROWSER=none`).

The bot runs in local mode (no `MicrosoftAppId`: authentication off, loopback only) with Alex Wilber, the
Playground's user, as bootstrap admin. Both processes get their own session (process group), so `stop` ends
them and anything they started, and only that.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Mapping

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE_MODULES = HERE / "node_modules"
PLAYGROUND_CLI = NODE_MODULES / "@microsoft" / "m365agentsplayground" / "cli.js"
LOOPBACK_PRELOAD = HERE / "loopback.cjs"
CONFIG = HERE / "m365agentsplayground.yml"

HOST = "127.0.0.1"
#: The Playground's default user (m365agentsplayground.yml `currentUser`); not GUID-shaped, an opaque string.
ALEX_WILBER = "00000000-0000-0000-0000-0000000000020"
#: The tenant every Playground activity carries (m365agentsplayground.yml `tenantId`).
TENANT = "00000000-0000-0000-0000-0000000000001"

BOT_START_TIMEOUT = 30.0
PLAYGROUND_START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

#: Variables of the bot's configuration (README "Configuration"): the test's bot gets none of the caller's.
_BOT_VARIABLES = re.compile(r"^(Microsoft|ToBot|ToChannel|CREDITS_|GRAPH_|HOST$|PORT$|LOG_LEVEL$)")


class LaunchError(Exception):
    """A process could not be started as asked (message says what, with the tail of its log)."""


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    _handle: IO[bytes] | None = field(default=None, repr=False)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None


def free_port() -> int:
    """A TCP port nothing listens on at the moment, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _spawn(name: str, argv: list[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "wb")
    try:
        popen = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=handle,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    except OSError:
        handle.close()
        raise
    return Process(name, popen, log, handle)


def stop(process: Process | None, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM to the process's own group (it and what it started), SIGKILL after `timeout`; its exit code.
    The group is signalled only while its leader has not been reaped, so the group id is still ours."""
    if process is None:
        return None
    try:
        if process.alive():
            _signal_group(process.popen, signal.SIGTERM)
            try:
                process.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process.popen, signal.SIGKILL)
                process.popen.wait(5)
        return process.popen.returncode
    finally:
        if process._handle is not None:
            process._handle.close()
            process._handle = None


def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)  # start_new_session: the group id is the leader's pid
    except (ProcessLookupError, PermissionError):
        pass


# --- the bot -----------------------------------------------------------------------------------------------------

def bot_env(*, store: str, port: int, admins: str = ALEX_WILBER, keep_config: bool = False,
            base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a local-mode bot. `keep_config`: keep the caller's own bot settings (and `.env` stays
    in force, for `make playground`) except the ones that would turn authentication on or move the bot off
    loopback; otherwise none of them (the test)."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if keep_config or not _BOT_VARIABLES.match(k)}
    env.update({
        # an empty value counts as unset and wins over .env: local mode whatever .env says
        "MicrosoftAppId": "", "MicrosoftAppPassword": "", "MicrosoftAppTenantId": "", "MicrosoftAppType": "",
        "HOST": HOST, "PORT": str(port), "CREDITS_STORE": store, "CREDITS_ADMINS": admins,
        "PYTHONUNBUFFERED": "1",
    })
    return env


def start_bot(*, store: str, port: int, log: Path, cwd: Path, python: str = sys.executable,
              env: Mapping[str, str] | None = None) -> Process:
    """`python -m bot serve` on 127.0.0.1:`port`; returns once /healthz answers (LaunchError if it does not)."""
    process = _spawn("bot", [python, "-m", "bot", "serve"], env=env or bot_env(store=store, port=port), cwd=cwd,
                     log=log)
    deadline = time.monotonic() + BOT_START_TIMEOUT
    url = f"http://{HOST}:{port}/healthz"
    while True:
        if not process.alive():
            stop(process)
            raise LaunchError(f"the bot exited with {process.popen.returncode} before answering {url}:\n"
                              f"{process.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return process
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            stop(process)
            raise LaunchError(f"the bot did not answer {url} within {BOT_START_TIMEOUT:.0f} s:\n{process.tail()}")
        time.sleep(0.1)


# --- the Playground ----------------------------------------------------------------------------------------------

def playground_env(*, log_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update({
        "APPLICATION_INSIGHTS_NO_STATSBEAT": "true",
        "TEAMSAPPTESTER_BROWSER": "none",                        # no browser of its own
        "M365_AGENTS_PLAYGROUND_CONFIG_PATH": str(CONFIG),       # else ./.m365agentsplayground.yml or built-in
        "M365_AGENTS_PLAYGROUND_LOGFILE": str(log_dir / "m365agentsplayground.log"),  # else ./devTools/...
        "PLAYGROUND_HOST": HOST,                                 # loopback.cjs
        "LC_ALL": "en_US.UTF-8",                                 # the locale its activities carry: en-US
    })
    return env


def start_playground(*, port: int, bot_port: int, log: Path, cwd: Path, node: str = "node",
                     env: Mapping[str, str] | None = None) -> Process:
    """The Playground on 127.0.0.1:`port`, talking to the bot on `bot_port`. Returns once it listens on exactly
    that port and address and serves its page; LaunchError otherwise (it is stopped first)."""
    if not PLAYGROUND_CLI.is_file():
        raise LaunchError(f"{PLAYGROUND_CLI} is missing: run `make test` (npm ci --prefix tests/e2e)")
    argv = [node, "--require", str(LOOPBACK_PRELOAD), str(PLAYGROUND_CLI),
            "--port", str(port),
            "--app-endpoint", f"http://{HOST}:{bot_port}/api/messages",
            "--service-url", f"http://{HOST}:{port}/_connector",   # where the bot sends replies and alerts
            "--channel-id", "msteams",
            "--disable-telemetry"]
    process = _spawn("playground", argv, env=env or playground_env(log_dir=log.parent), cwd=cwd, log=log)
    try:
        _wait_listening(process, port)
        check_loopback_only(port)
        url = f"http://{HOST}:{port}/"
        with urllib.request.urlopen(url, timeout=5) as answer:
            page = answer.read().decode("utf-8", "replace")
        if "Agents Playground" not in page:
            raise LaunchError(f"{url} does not serve the Playground's page:\n{page[:500]}")
    except BaseException:
        stop(process)
        raise
    return process


def _wait_listening(process: Process, port: int) -> None:
    deadline = time.monotonic() + PLAYGROUND_START_TIMEOUT
    while True:
        found = re.search(r"^Listening on (\d+)\s*$", process.tail(20_000), re.MULTILINE)
        if found:
            actual = int(found.group(1))
            if actual != port:
                raise LaunchError(f"the Playground was asked for port {port} but listens on {actual} (port {port} "
                                  f"was taken, and it silently moves to a random one)")
            return
        if not process.alive():
            raise LaunchError(f"the Playground exited with {process.popen.returncode}:\n{process.tail()}")
        if time.monotonic() > deadline:
            raise LaunchError(f"the Playground did not report its port within {PLAYGROUND_START_TIMEOUT:.0f} s:\n"
                              f"{process.tail()}")
        time.sleep(0.1)


def listening_addresses(port: int) -> set[str] | None:
    """Addresses with a TCP socket listening on `port`, from /proc/net/tcp{,6} (None where there is no /proc)."""
    found: set[str] = set()
    seen = False
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        seen = True
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, raw))
    return found if seen else None


def check_loopback_only(port: int) -> None:
    addresses = listening_addresses(port)
    if addresses is None:
        return  # no /proc: the "Listening on" check above is all we can do
    if addresses != {HOST}:
        raise LaunchError(f"port {port} listens on {sorted(addresses) or 'nothing'}, expected only {HOST}")


# --- `make playground` -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make playground",
        description="The bot (local mode, loopback) and Microsoft 365 Agents Playground, until Ctrl-C.")
    parser.add_argument("--bot-port", type=int, default=int(os.environ.get("BOT_PORT") or 3978))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PLAYGROUND_PORT") or 56150),
                        help="the Playground's port (default 56150)")
    parser.add_argument("--admins", default=os.environ.get("PLAYGROUND_ADMINS") or ALEX_WILBER,
                        help="CREDITS_ADMINS for this run (default: Alex Wilber, the Playground's user)")
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # stopped from outside: still stop both (the `finally` below)
        signal.signal(sig, lambda number, frame: sys.exit(128 + number))

    logs = ROOT / "artifacts" / "playground"
    store = os.environ.get("CREDITS_STORE") or ""   # empty: the bot reads .env, else ./data
    env = bot_env(store=store, port=args.bot_port, admins=args.admins, keep_config=True)
    if not store:
        del env["CREDITS_STORE"]
    bot = playground = None
    try:
        bot = start_bot(store=store, port=args.bot_port, log=logs / "bot.log", cwd=ROOT, env=env)
        playground = start_playground(port=args.port, bot_port=args.bot_port, log=logs / "playground.log",
                                      cwd=logs)
        print(f"The bot:        http://{HOST}:{args.bot_port}/api/messages (local mode; log {_shown(logs / 'bot.log')})")
        print(f"The Playground: http://{HOST}:{args.port}/  <- open this in a browser on this machine")
        print(f"You are Alex Wilber ({args.admins}), a bootstrap admin. Try `balance`, then the card's buttons;")
        print("@mention the bot in the Finance channel and type `subscribe` for alerts. Ctrl-C stops both.")
        while bot.alive() and playground.alive():
            time.sleep(0.5)
        gone = bot if not bot.alive() else playground
        print(f"{gone.name} exited with {gone.popen.returncode}:\n{gone.tail()}", file=sys.stderr)
        return 1
    except LaunchError as exc:
        print(f"make playground: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(playground)
        stop(bot)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())

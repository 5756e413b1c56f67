"""`python -m bot`: help text, and clear one-message failures (exit 2) instead of tracebacks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from bot import __main__ as cli
from storage.errors import StoreLocked


@pytest.fixture(autouse=True)
def _restore_logging():
    """`main` configures the root logger for the process; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")}
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})}, cwd=cwd)


def test_help_lists_the_commands_with_descriptions() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for command in ("serve", "verify"):
        [line] = [ln for ln in lines if ln.strip().startswith(command + " ")]
        assert len(line.split(None, 1)[1]) > 10  # a one-line description follows the name


def test_no_command_is_a_usage_error() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_serve_with_bad_configuration_prints_every_problem_and_exits_2(tmp_path) -> None:
    result = run_cli("serve", env={"HOST": "0.0.0.0", "PORT": "http", "MicrosoftAppPassword": "s3cret-value"},
                     cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("python -m bot: error: invalid configuration (3 problems):")
    for name in ("HOST", "PORT", "MicrosoftAppPassword"):
        assert f"  {name}: " in result.stderr
    assert "s3cret-value" not in result.stderr + result.stdout


def test_serve_exits_2_with_one_line_when_the_store_is_locked(monkeypatch, capsys) -> None:
    async def locked(location: str, **kwargs: object):
        raise StoreLocked(location, "pid 4242 on this host")

    monkeypatch.setattr("bot.app.open_ledger", locked)
    # The store is opened during start-up, before the server binds its port: nothing listens here.
    code = cli.main(["serve"], environ={"CREDITS_STORE": "memory://"})
    assert code == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("python -m bot: error:")]
    assert len(errors) == 1
    assert errors[0].startswith("python -m bot: error: the store at memory:// is in use by another process")


@pytest.mark.parametrize("store", ["ftp://x"])
def test_verify_refuses_an_unknown_store(store: str, capsys) -> None:
    assert cli.main(["verify", "--store", store], environ={}) == 2
    assert "--store: unknown scheme 'ftp'" in capsys.readouterr().err


def test_verify_does_not_create_a_missing_store(tmp_path, capsys) -> None:
    missing = tmp_path / "nowhere"
    assert cli.main(["verify", "--store", str(missing)], environ={}) == 2
    assert not missing.exists()
    assert "no store at" in capsys.readouterr().err


def test_verify_prints_the_report_and_exits_1_on_problems(monkeypatch, capsys) -> None:
    from storage.model import VerifyReport

    class Broken:
        async def verify(self, tenant_id=None):
            return VerifyReport(accounts=2, entries=5, problems=("t1: snapshot 100 != sum of entries 90",))

        async def close(self) -> None:
            pass

    async def opener(location: str, **kwargs: object) -> Broken:
        return Broken()

    monkeypatch.setattr(cli, "open_ledger", opener)
    assert cli.main(["verify", "--store", "memory://"], environ={}) == 1
    out = capsys.readouterr().out
    assert "accounts: 2\nentries: 5\nproblems: 1\n  - t1: snapshot 100 != sum of entries 90" in out


def test_verify_an_empty_memory_store(capsys) -> None:
    assert cli.main(["verify", "--store", "memory://"], environ={}) == 0
    assert capsys.readouterr().out == "store: memory://\naccounts: 0\nentries: 0\nproblems: 0\n"


def test_verify_names_a_store_in_use(tmp_path, monkeypatch, capsys) -> None:
    async def locked(location: str, **kwargs: object):
        raise StoreLocked(location, "pid 4242")

    monkeypatch.setattr(cli, "open_ledger", locked)
    assert cli.main(["verify", "--store", str(tmp_path)], environ={}) == 2
    assert "is in use by another process (pid 4242)" in capsys.readouterr().err


def test_verify_reports_an_unknown_tenant_as_one_line(monkeypatch, capsys) -> None:
    from storage.errors import AccountNotFound

    class Empty:
        async def verify(self, tenant_id=None):
            raise AccountNotFound(tenant_id)

        async def close(self) -> None:
            pass

    async def opener(location: str, **kwargs: object) -> Empty:
        return Empty()

    monkeypatch.setattr(cli, "open_ledger", opener)
    assert cli.main(["verify", "--store", "memory://", "--tenant", "t-404"], environ={}) == 2
    assert capsys.readouterr().err == "python -m bot: error: no account for tenant 't-404'\n"


def test_verify_counts_a_store_too_corrupt_to_open_as_a_problem(monkeypatch, capsys) -> None:
    from storage.errors import StoreCorrupt

    async def opener(location: str, **kwargs: object):
        raise StoreCorrupt("entries.json: not JSON")

    monkeypatch.setattr(cli, "open_ledger", opener)
    assert cli.main(["verify", "--store", "memory://"], environ={}) == 1
    assert "problems: 1\n  - entries.json: not JSON" in capsys.readouterr().out


@pytest.mark.postgres
def test_migrate_applies_the_schema_once_and_hides_the_password(capsys) -> None:
    import asyncio

    import asyncpg

    from tests.backends import PG_SERVER

    database = f"credits_cli_migrate_{os.getpid()}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(f"{PG_SERVER.rstrip('/')}/postgres")
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}"'))
    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    try:
        dsn = f"{PG_SERVER.rstrip('/')}/{database}"
        assert cli.main(["migrate", "--store", dsn], environ={}) == 0
        assert "applied: 0001_initial.sql" in capsys.readouterr().out
        assert cli.main(["migrate", "--store", dsn], environ={}) == 0
        assert "nothing (up to date)" in capsys.readouterr().out
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    assert cli.main(["migrate", "--store", "postgresql://bot:hunter2@127.0.0.1:1/nope"], environ={}) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "***" in err
    assert cli.main(["migrate", "--store", "./data-dir"], environ={}) == 0
    assert "nothing to migrate" in capsys.readouterr().out

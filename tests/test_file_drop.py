"""An admin drops the admin center's export into the personal chat: the bot downloads it (the URL Teams gives)
and imports it, once; a reader's drop, a file that is not an export, and a broken download change nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from tests import teams
from tests.http_chat import ALEX, MEGAN, Chat
from tests.test_usage_cli import row, write_csv

TENANT = teams.TENANT


async def file_server(aiohttp_server: Any, files: dict[str, bytes]) -> Any:
    async def serve(request: web.Request) -> web.Response:
        body = files.get(request.match_info["name"])
        return web.Response(body=body) if body is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    return await aiohttp_server(app)


async def drop(chat: Chat, server: Any, name: str, *, sender: dict[str, Any] = ALEX, file_type: str = "csv") -> str:
    activity = teams.message("", service_url=chat.connector.service_url, sender=sender)
    activity["attachments"] = [{
        "contentType": "application/vnd.microsoft.teams.file.download.info", "name": name,
        "content": {"downloadUrl": str(server.make_url(f"/files/{name}")), "uniqueId": "1", "fileType": file_type}}]
    before = len(chat.connector.activities())
    response = await chat.post(activity)
    assert response.status == 200
    [reply] = chat.connector.activities()[before:]
    return reply["text"]


async def test_an_admin_drops_the_export_and_it_is_imported_once(chat: Chat, tmp_path: Path,
                                                                  aiohttp_server: Any) -> None:
    await chat.say("add 50")
    csv = write_csv(tmp_path / "PSTN.calls.2026-11-20.csv", row("u1", "1.2500"), row("u2", "2.00"),
                    row("u3", "1.00", capability="MCOPSTN1"))
    server = await file_server(aiohttp_server, {"PSTN.calls.2026-11-20.csv": csv.read_bytes()})
    reply = await drop(chat, server, "PSTN.calls.2026-11-20.csv")
    assert "Imported PSTN.calls.2026-11-20.csv: 3 calls read, 2 debited ($3.25), 1 skipped, 0 rejected" in reply
    assert "Balance now: $46.75" in reply
    again = await drop(chat, server, "PSTN.calls.2026-11-20.csv")
    assert "0 debited ($0.00), 3 skipped" in again
    assert (await chat.ledger.get_account(TENANT)).balance == 4_675


async def test_readers_other_files_and_broken_downloads_change_nothing(chat: Chat, tmp_path: Path,
                                                                       aiohttp_server: Any) -> None:
    await chat.say("add 50")
    csv = write_csv(tmp_path / "x.csv", row("u1", "1.00"))
    server = await file_server(aiohttp_server, {"x.csv": csv.read_bytes(), "notes.docx": b"PK..."})
    assert "admin" in (await drop(chat, server, "x.csv", sender=MEGAN)).lower()
    assert "not a PSTN usage export" in await drop(chat, server, "notes.docx", file_type="docx")
    gone = await drop(chat, server, "missing.csv")
    assert "could not import missing.csv" in gone and "404" in gone
    bad = await file_server(aiohttp_server, {"bad.csv": b"Name,Value\nx,1\n"})
    assert "could not import bad.csv" in await drop(chat, bad, "bad.csv")
    assert (await chat.ledger.get_account(TENANT)).balance == 5_000

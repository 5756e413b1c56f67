"""Pytest plugin: the bot's real aiohttp app in a test client, replying to a fake Bot Connector.

Fixtures: `chat` (local mode, authentication off, as with the Playground) and `secure_chat` (authentication
on: tokens minted by the fake identity server and validated for real; outbound tokens from the real msal flow).
`Chat.say` sends a Teams-shaped message and returns the bot's reply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.app import LEDGER, create_app
from bot.settings import Settings
from tests import teams
from tests.fakes.connector import FakeConnector
from tests.fakes.identity import FakeIdentity

ADMIN = "00000000-0000-0000-0000-0000000000020"     # Alex Wilber, the Playground's default user (not a GUID)
READER = "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
STRANGER = "9e8d7c6b-5a49-4838-a7b6-c5d4e3f2a1b0"
ALEX = teams.user(ADMIN, "Alex Wilber")
MEGAN = teams.user(READER, "Megan Bowen")
NOBODY = teams.user(STRANGER, "Nestor Wilke")


class Chat:
    """One bot app and the fake connector it replies to."""

    def __init__(self, client: Any, connector: FakeConnector, token: Any = None) -> None:
        self.client = client
        self.connector = connector
        self._token = token

    @property
    def ledger(self):  # type: ignore[no-untyped-def]
        return self.client.app[LEDGER]

    async def post(self, activity: dict[str, Any], *, headers: dict[str, str] | None = None) -> Any:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if self._token is not None and "Authorization" not in hdrs:
            hdrs["Authorization"] = f"Bearer {self._token(activity)}"
        return await self.client.post("/api/messages", data=json.dumps(activity), headers=hdrs)

    async def say(self, text: str, *, sender: dict[str, Any] = ALEX, **kwargs: Any) -> str:
        """Send a message; return the text of the bot's reply to it (exactly one reply expected)."""
        activity = teams.message(text, service_url=self.connector.service_url, sender=sender, **kwargs)
        before = len(self.connector.activities())
        response = await self.post(activity)
        assert response.status == 200, await response.text()
        replies = self.connector.activities()[before:]
        assert len(replies) == 1, replies
        assert replies[0]["replyToId"] == activity["id"]
        return replies[0]["text"]


def settings_for(tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env({"CREDITS_STORE": str(tmp_path / "store"), "CREDITS_ADMINS": ADMIN, **extra})


async def store_for(backend: str, tmp_path: Path) -> str:
    """A `CREDITS_STORE` of `backend` for one test: a directory in `tmp_path`, or a fresh PostgreSQL database."""
    if backend == "tinydb":
        return str(tmp_path / "store")
    from storage.clock import utc_now
    from tests.backends import open_backend, postgres_dsn

    await (await open_backend("postgres", tmp_path, utc_now)).close()  # type: ignore[arg-type]
    return postgres_dsn(tmp_path)


@pytest.fixture(params=["tinydb", "postgres"])
async def chat(request: Any, tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any) -> Chat:
    """Local mode: no app id, authentication off (as with the Playground), on each persistent backend."""
    store = await store_for(request.param, tmp_path)
    client = await aiohttp_client(create_app(settings_for(tmp_path, CREDITS_STORE=store)))
    return Chat(client, fake_connector)


@pytest.fixture
async def secure_chat(tmp_path: Path, fake_connector: FakeConnector, identity: FakeIdentity,
                      aiohttp_client: Any) -> Chat:
    """Authentication on: tokens minted by the fake identity server, validated for real."""
    settings = settings_for(tmp_path, **identity.settings_env(app_id=teams.BOT_APP_ID))
    identity.add_client(teams.BOT_APP_ID, settings.app_password or "")
    client = await aiohttp_client(create_app(settings, msal_http_client=identity.requests_session()))
    return Chat(client, fake_connector,
                token=lambda a: identity.issue_token(app_id=teams.BOT_APP_ID, service_url=a["serviceUrl"]))

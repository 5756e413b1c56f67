"""The baseline: the canonical botbuilder 4.17 echo bot, as the official sample 02.echo-bot writes it.

    MicrosoftAppId=... MicrosoftAppPassword=... PORT=... ToChannelFromBotLoginUrl=... \\
    ToBotFromChannelOpenIdMetadataUrl=... ToBotFromChannelTokenIssuer=... python -m bench.turns.echo_bot

`CloudAdapter(ConfigurationBotFrameworkAuthentication(CONFIG))`, an `ActivityHandler` answering every message
with one text reply, `ADAPTER.process(req, BOT)` behind aiohttp with botbuilder's `aiohttp_error_middleware`, and
the sample's `on_turn_error`. Only public API, nothing tuned. Authentication is on, as in production: `APP_ID` and
`APP_PASSWORD` are set, inbound tokens are validated against the OpenID metadata at
`TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL` (botbuilder's default is login.botframework.com), and outbound tokens
come from `TO_CHANNEL_FROM_BOT_LOGIN_URL` (the bench points it at the fake identity's ADFS-shaped authority; see
bench/turns/identity.py for why). Those are the settings `ConfigurationBotFrameworkAuthentication` reads (they
make `BotFrameworkAuthenticationFactory` build its parameterized authentication); the sample's `config.py` reads
its values from the environment the same way. msal's own `requests` session trusts the fake's CA through
`REQUESTS_CA_BUNDLE`, which the harness sets.

Prints one JSON line `{"port": ..., "pid": ...}` on stdout when it listens (instead of aiohttp's banner).
"""

from __future__ import annotations

import os
import sys
import traceback
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.web import Request, Response
from botbuilder.core import ActivityHandler, MessageFactory, TurnContext
from botbuilder.core.integration import aiohttp_error_middleware
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
)
from botbuilder.schema import Activity, ActivityTypes, ChannelAccount


class DefaultConfig:
    """Bot configuration (the sample's config.py, plus the endpoint settings that point it at the fakes)."""

    PORT = int(os.environ.get("PORT", "3978"))
    APP_ID = os.environ.get("MicrosoftAppId", "")
    APP_PASSWORD = os.environ.get("MicrosoftAppPassword", "")
    APP_TYPE = os.environ.get("MicrosoftAppType", "MultiTenant")
    APP_TENANTID = os.environ.get("MicrosoftAppTenantId", "")
    TO_CHANNEL_FROM_BOT_LOGIN_URL = os.environ.get("ToChannelFromBotLoginUrl")
    TO_CHANNEL_FROM_BOT_OAUTH_SCOPE = os.environ.get("ToChannelFromBotOAuthScope",
                                                     "https://api.botframework.com")
    TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = os.environ.get("ToBotFromChannelTokenIssuer", "https://api.botframework.com")
    TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = os.environ.get("ToBotFromChannelOpenIdMetadataUrl")


class EchoBot(ActivityHandler):
    async def on_members_added_activity(self, members_added: list[ChannelAccount], turn_context: TurnContext):
        for member in members_added:
            if member.id != turn_context.activity.recipient.id:
                await turn_context.send_activity("Hello and welcome!")

    async def on_message_activity(self, turn_context: TurnContext):
        return await turn_context.send_activity(MessageFactory.text(f"Echo: {turn_context.activity.text}"))


CONFIG = DefaultConfig()

# Create adapter. See https://aka.ms/about-bot-adapter to learn more about how bots work.
ADAPTER = CloudAdapter(ConfigurationBotFrameworkAuthentication(CONFIG))


# Catch-all for errors.
async def on_error(context: TurnContext, error: Exception):
    print(f"\n [on_turn_error] unhandled error: {error}", file=sys.stderr)
    traceback.print_exc()
    await context.send_activity("The bot encountered an error or bug.")
    await context.send_activity("To continue to run this bot, please fix the bot source code.")
    if context.activity.channel_id == "emulator":
        trace_activity = Activity(label="TurnError", name="on_turn_error Trace", timestamp=datetime.now(UTC),
                                  type=ActivityTypes.trace, value=f"{error}",
                                  value_type="https://www.botframework.com/schemas/error")
        await context.send_activity(trace_activity)


ADAPTER.on_turn_error = on_error

# Create the Bot
BOT = EchoBot()


# Listen for incoming requests on /api/messages
async def messages(req: Request) -> Response:
    return await ADAPTER.process(req, BOT)


APP = web.Application(middlewares=[aiohttp_error_middleware])
APP.router.add_post("/api/messages", messages)


async def _announce(app: web.Application) -> None:
    print(f'{{"port": {CONFIG.PORT}, "pid": {os.getpid()}}}', flush=True)


APP.on_startup.append(_announce)

if __name__ == "__main__":
    web.run_app(APP, host="127.0.0.1", port=CONFIG.PORT, print=None)

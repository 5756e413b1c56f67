"""The ceiling: a bare aiohttp handler that parses the activity and posts one reply.

    PORT=... TOKEN_URL=https://.../token CA_PATH=... MicrosoftAppId=... MicrosoftAppPassword=... \\
    python -m bench.turns.bare

One pooled `aiohttp.ClientSession` (keep-alive) for every reply and one client-credentials token, fetched at
start-up and kept until 5 minutes before it expires. No botbuilder, no msal, no validation of the inbound token:
this is the least any bot must do per message (parse JSON, build the reply, one POST over a warm connection),
so its CPU per turn is the yardstick of "bot CPU per turn <= 5x bare".

Prints one JSON line `{"port": ..., "pid": ...}` on stdout once it listens.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from urllib.parse import quote

import aiohttp
from aiohttp import web

TOKEN = web.AppKey("token", dict)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def _token(app: web.Application) -> str:
    cached = app[TOKEN]
    if cached.get("value") and time.time() < cached["until"]:
        return cached["value"]
    form = {"grant_type": "client_credentials", "client_id": os.environ["MicrosoftAppId"],
            "client_secret": os.environ["MicrosoftAppPassword"],
            "scope": os.environ.get("ToChannelFromBotOAuthScope", "https://api.botframework.com/.default")}
    async with app[SESSION].post(os.environ["TOKEN_URL"], data=form) as response:
        body = await response.json()
    cached["value"] = body["access_token"]
    cached["until"] = time.time() + int(body.get("expires_in", 3600)) - 300
    return cached["value"]


async def messages(request: web.Request) -> web.Response:
    activity = await request.json()
    reply = {"type": "message", "text": f"Echo: {activity.get('text')}", "from": activity.get("recipient"),
             "recipient": activity.get("from"), "conversation": activity["conversation"],
             "replyToId": activity["id"]}
    url = (activity["serviceUrl"].rstrip("/") + "/v3/conversations/" + quote(activity["conversation"]["id"], safe="")
           + "/activities/" + quote(activity["id"], safe=""))
    headers = {"Authorization": "Bearer " + await _token(request.app)}
    async with request.app[SESSION].post(url, json=reply, headers=headers) as response:
        await response.read()
    return web.Response(status=200)


async def lifetime(app: web.Application):
    context = ssl.create_default_context(cafile=os.environ["CA_PATH"])
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=60, ssl=context))
    app[TOKEN] = {}
    await _token(app)
    print(json.dumps({"port": int(os.environ["PORT"]), "pid": os.getpid()}), flush=True)
    yield
    await app[SESSION].close()


def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(lifetime)
    app.router.add_post("/api/messages", messages)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, access_log=None)


if __name__ == "__main__":
    main()

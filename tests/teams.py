"""Teams-shaped activities for tests, as Teams sends them (personal chat, group chat, channel with @mention).

Ids follow Teams' shapes: users `29:...` with an Entra object id beside them, the bot `28:<app id>`, tenants in
`channelData.tenant.id` (and `conversation.tenantId`), channel conversations `19:...@thread.tacv2`.
"""

from __future__ import annotations

import itertools
from typing import Any

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "0a3c9f27-5d1e-4c6b-8f3a-1b2c3d4e5f60"
BOT_APP_ID = "00000000-0000-0000-0000-00000000b07"
BOT = {"id": f"28:{BOT_APP_ID}", "name": "Credits"}

_ids = itertools.count(1)


def user(aad_object_id: str, name: str) -> dict[str, Any]:
    return {"id": f"29:1{aad_object_id[-8:]}", "name": name, "aadObjectId": aad_object_id}


def channel_id(suffix: str = "1") -> str:
    """The channel's own id: what the bot keys a channel's reference and subscription by (no `;messageid=`)."""
    return f"19:channel-{suffix}@thread.tacv2"


def conversation(scope: str, tenant: str = TENANT, suffix: str = "1") -> dict[str, Any]:
    if scope == "personal":
        return {"id": f"a:1personal-{suffix}", "conversationType": "personal", "tenantId": tenant}
    if scope == "groupChat":
        return {"id": f"19:group-{suffix}@thread.v2", "conversationType": "groupChat", "tenantId": tenant,
                "isGroup": True}
    return {"id": f"19:channel-{suffix}@thread.tacv2;messageid=1700000000000", "conversationType": "channel",
            "tenantId": tenant, "isGroup": True}


def message(text: str, *, service_url: str, sender: dict[str, Any], scope: str = "personal", tenant: str = TENANT,
            locale: str = "en-US", activity_id: str | None = None, mentions: list[dict[str, Any]] = (),  # type: ignore[assignment]
            conversation_suffix: str = "1") -> dict[str, Any]:
    """A message activity. In group chats and channels the bot is @mentioned, as Teams requires."""
    entities: list[dict[str, Any]] = [{"type": "clientInfo", "locale": locale, "platform": "Web"}]
    if scope != "personal":
        text = f"<at>{BOT['name']}</at> {text}"
        entities.append({"type": "mention", "mentioned": BOT, "text": f"<at>{BOT['name']}</at>"})
    for m in mentions:
        entities.append({"type": "mention", "mentioned": {"id": m["id"], "name": m["name"]},
                         "text": f"<at>{m['name']}</at>"})
    channel_data: dict[str, Any] = {"tenant": {"id": tenant}}
    if scope == "channel":
        channel_data.update({"team": {"id": "19:team@thread.tacv2"}, "channel": {"id": "19:channel-1@thread.tacv2"}})
    return {
        "type": "message",
        "id": activity_id or f"1700000{next(_ids):06d}",
        "timestamp": "2026-11-23T10:00:00.000Z",
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": sender,
        "conversation": conversation(scope, tenant, conversation_suffix),
        "recipient": BOT,
        "text": text,
        "textFormat": "plain",
        "locale": locale,
        "entities": entities,
        "channelData": channel_data,
    }


def installation_update(*, service_url: str, sender: dict[str, Any], scope: str = "personal",
                        tenant: str = TENANT) -> dict[str, Any]:
    return {"type": "installationUpdate", "action": "add", "id": f"f:{next(_ids)}", "serviceUrl": service_url,
            "channelId": "msteams", "from": sender, "recipient": BOT, "conversation": conversation(scope, tenant),
            "channelData": {"tenant": {"id": tenant}, "source": {"name": "message"}}, "locale": "en-US"}


def bot_added(*, service_url: str, sender: dict[str, Any], scope: str = "personal",
              tenant: str = TENANT) -> dict[str, Any]:
    return {"type": "conversationUpdate", "id": f"f:{next(_ids)}", "serviceUrl": service_url,
            "channelId": "msteams", "from": sender, "recipient": BOT, "conversation": conversation(scope, tenant),
            "membersAdded": [BOT], "channelData": {"tenant": {"id": tenant}, "eventType": "teamMemberAdded"}}

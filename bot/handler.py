"""The Teams activity handler: turns a botbuilder `TurnContext` into our `Turn` and sends what the actions answer.

Everything Teams-specific about reading an activity lives here: the tenant comes from
`channelData.tenant.id` (botbuilder's `conversation.tenant_id` is None for Teams), the user is
`from.aadObjectId`, the bot's own @mention is stripped, and the conversation reference is saved with the tenant
beside it (botbuilder's `ConversationReference.serialize()` drops it). What to *do* is decided by
`bot.actions`, which knows nothing of botbuilder.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from botbuilder.core import InvokeResponse, MessageFactory, TurnContext
from botbuilder.core.teams import TeamsActivityHandler
from botbuilder.schema import Activity, ChannelAccount
from botbuilder.schema.teams import TeamInfo

from .actions import Actions, Reply, Turn
from .context import SharedFile
from .commands import Mention

log = logging.getLogger(__name__)


class CreditsBot(TeamsActivityHandler):
    def __init__(self, actions: Actions) -> None:
        self._actions = actions

    # --- messages -------------------------------------------------------------------------------------------------
    async def on_message_activity(self, turn_context: TurnContext) -> None:
        turn = _turn(turn_context)
        if turn is None:
            await turn_context.send_activity(MessageFactory.text(self._actions.no_tenant_text(
                turn_context.activity.locale)))
            return
        await self._remember(turn_context, turn)
        submitted = card_submit(turn.value)
        if submitted is None:
            reply = await self._actions.safely(self._actions.handle_text, turn)
            await _send(turn_context, reply)
            return
        # Action.Submit: the same handlers as Action.Execute; the answer replaces the card that was pressed
        # (its message is the one this activity replies to) and is also posted, for clients that can't update.
        verb, data = submitted
        reply = await self._actions.safely(lambda t: self._actions.handle_card(t, verb, data), turn)
        await _send(turn_context, reply)
        original = turn_context.activity.reply_to_id
        if reply.card is not None and original:
            update = MessageFactory.attachment(_card_attachment(reply.card))
            update.id = original
            try:
                await turn_context.update_activity(update)
            except Exception:  # the new card was posted; a card we cannot replace is not worth failing for
                log.warning("could not replace card %s after a submit", original, exc_info=True)

    # --- invokes --------------------------------------------------------------------------------------------------
    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        """Only `adaptiveCard/action` (Action.Execute). Answered in the Universal Actions shape, with the card
        that replaces the pressed one; a malformed value is a 400 in that shape, never an exception (botbuilder's
        own version returns unserialisable error objects)."""
        activity = turn_context.activity
        if activity.name != "adaptiveCard/action":
            return InvokeResponse(status=400, body={"error": "unsupported invoke"})
        turn = _turn(turn_context)
        if turn is None:
            return _invoke_error(400, "BadRequest", self._actions.no_tenant_text(activity.locale))
        action = activity.value.get("action") if isinstance(activity.value, dict) else None
        if not isinstance(action, dict) or action.get("type") != "Action.Execute" \
                or not isinstance(action.get("verb"), str):
            return _invoke_error(400, "BadRequest", "the value is not an Action.Execute")
        data = action.get("data") if isinstance(action.get("data"), dict) else {}
        await self._remember(turn_context, turn)
        reply = await self._actions.safely(lambda t: self._actions.handle_card(t, action["verb"], data), turn)
        if reply.card is not None:
            body = {"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive", "value": reply.card}
        else:
            body = {"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": reply.text}
        return InvokeResponse(status=200, body=body)

    # --- installation ---------------------------------------------------------------------------------------------
    async def on_installation_update_add(self, turn_context: TurnContext) -> None:
        await self._welcome_once(turn_context)

    async def on_teams_members_added_dispatch(self, members_added: list[ChannelAccount], team_info: TeamInfo,
                                              turn_context: TurnContext) -> None:
        # botbuilder's version looks every member up through its own connector; we only need to know whether
        # the bot itself was added.
        recipient = turn_context.activity.recipient
        if recipient is not None and any(m.id == recipient.id for m in members_added or []):
            await self._welcome_once(turn_context)

    async def _welcome_once(self, turn_context: TurnContext) -> None:
        """Install events come twice (installationUpdate and conversationUpdate); welcome the first time the
        conversation is seen. Installing subscribes nothing: the welcome says how."""
        turn = _turn(turn_context)
        if turn is None:
            return
        first = await self._remember(turn_context, turn)
        if first:
            reply = await self._actions.safely(self._actions.welcome, turn)
            await _send(turn_context, reply)

    async def _remember(self, turn_context: TurnContext, turn: Turn) -> bool:
        """Open the tenant's account (first contact) and save the conversation reference. True if this
        conversation was not known before."""
        reference = TurnContext.get_conversation_reference(turn_context.activity).serialize()
        return await self._actions.remember_conversation(turn, reference)


def _turn(turn_context: TurnContext) -> Turn | None:
    """Our view of an inbound activity; None when it carries no tenant (not from a Microsoft 365 org)."""
    activity: Activity = turn_context.activity
    tenant_id = _tenant(activity)
    if not tenant_id:
        return None
    sender = activity.from_property or ChannelAccount()
    recipient_id = activity.recipient.id if activity.recipient else ""
    text = TurnContext.remove_recipient_mention(activity) if activity.text and recipient_id else activity.text
    conversation = activity.conversation
    return Turn(
        tenant_id=tenant_id,
        user_id=sender.aad_object_id or "",
        user_name=sender.name or "",
        conversation_id=destination_id(conversation.id or "", conversation.conversation_type) if conversation else "",
        conversation_type=(conversation.conversation_type if conversation else None) or "personal",
        locale=activity.locale or "",
        activity_id=activity.id or "",
        service_url=activity.service_url or "",
        text=text or "",
        mentions=_mentions(activity, recipient_id),
        value=activity.value if isinstance(activity.value, dict) else None,
        received_at=datetime.now(timezone.utc),
        files=_shared_files(activity),
    )


FILE_DOWNLOAD_INFO = "application/vnd.microsoft.teams.file.download.info"


def _shared_files(activity: Activity) -> tuple[SharedFile, ...]:
    """Files dropped into a personal chat (Teams sends one `file.download.info` attachment per file)."""
    found = []
    for attachment in activity.attachments or []:
        content = attachment.content if isinstance(attachment.content, dict) else {}
        url = content.get("downloadUrl")
        if attachment.content_type == FILE_DOWNLOAD_INFO and isinstance(url, str) and url:
            found.append(SharedFile(str(attachment.name or "file")[:200], url,
                                    str(content.get("fileType") or "").lower()[:10]))
    return tuple(found)


def destination_id(conversation_id: str, conversation_type: str | None) -> str:
    """The id a conversation is known by (references, subscriptions): in a channel, the channel itself, not the
    thread a message was typed in (Teams sends `19:...@thread.tacv2;messageid=...` for a thread), so that
    `subscribe` in one thread and `unsubscribe` in another mean the same channel, and alerts start new posts."""
    if conversation_type == "channel":
        return conversation_id.split(";messageid=", 1)[0]
    return conversation_id


def card_submit(value: Any) -> tuple[str, dict[str, Any]] | None:
    """(verb, data) of an Action.Submit: a message whose `value` holds the card's data and inputs."""
    if isinstance(value, dict) and isinstance(value.get("verb"), str):
        return value["verb"], value
    return None


def _invoke_error(status: int, code: str, message: str) -> InvokeResponse:
    return InvokeResponse(status=200, body={"statusCode": status, "type": "application/vnd.microsoft.error",
                                            "value": {"code": code, "message": message}})


def _tenant(activity: Activity) -> str:
    data: Any = activity.channel_data
    if isinstance(data, dict):
        tenant = data.get("tenant")
        if isinstance(tenant, dict) and isinstance(tenant.get("id"), str):
            return tenant["id"]
    conversation_tenant = getattr(activity.conversation, "tenant_id", None)
    return conversation_tenant if isinstance(conversation_tenant, str) else ""


def _mentions(activity: Activity, recipient_id: str) -> tuple[Mention, ...]:
    found = []
    for entity in TurnContext.get_mentions(activity):
        mentioned = (entity.additional_properties or {}).get("mentioned") or {}
        if not isinstance(mentioned, dict) or mentioned.get("id") in (None, recipient_id):
            continue
        found.append(Mention(user_id=str(mentioned.get("id")), name=str(mentioned.get("name") or ""),
                             aad_object_id=mentioned.get("aadObjectId") or None))
    return tuple(found)


async def _send(turn_context: TurnContext, reply: Reply) -> None:
    if reply.card is not None:
        activity = MessageFactory.attachment(_card_attachment(reply.card), text=reply.text or None)
    else:
        activity = MessageFactory.text(reply.text)
        activity.text_format = "markdown"
    await turn_context.send_activity(activity)


def _card_attachment(card: dict[str, Any]):  # type: ignore[no-untyped-def]
    from botbuilder.schema import Attachment
    return Attachment(content_type="application/vnd.microsoft.card.adaptive", content=card)

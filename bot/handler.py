"""The Teams activity handler: turns a botbuilder `TurnContext` into our `Turn` and sends what the actions answer.

Everything Teams-specific about reading an activity lives here: the tenant comes from
`channelData.tenant.id` (botbuilder's `conversation.tenant_id` is None for Teams), the user is
`from.aadObjectId`, the bot's own @mention is stripped, and the conversation reference is saved with the tenant
beside it (botbuilder's `ConversationReference.serialize()` drops it). What to *do* is decided by
`bot.actions`, which knows nothing of botbuilder.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from botbuilder.core import BotAdapter, InvokeResponse, MessageFactory, TurnContext
from botbuilder.core.teams import TeamsActivityHandler
from botbuilder.schema import Activity, ActivityTypes, Attachment, ChannelAccount

from .actions import Actions, Reply, Turn
from .activity_json import model_to_json
from .commands import Mention
from .connector import ConnectorError
from .context import SharedFile
from .rate_limit import Decision, RateLimiter

log = logging.getLogger(__name__)

#: Longest display name (and mentioned id) taken from an activity: Teams' own limit for names is 256.
MAX_NAME = 256
#: Other people @mentioned in one message that are looked at (`grant @user` needs one).
MAX_MENTIONS = 100


class CreditsBot(TeamsActivityHandler):
    def __init__(self, actions: Actions, *, limiter: RateLimiter | None = None) -> None:
        self._actions = actions
        self._limiter = limiter if limiter is not None else RateLimiter(None)

    def _admit(self, activity: Activity) -> Decision:
        """The rate limit (`bot.rate_limit`), per tenant and user, for a message or a card action."""
        sender = activity.from_property
        user = (sender.aad_object_id or sender.id or "") if sender is not None else ""
        return self._limiter.check((_tenant(activity), user))

    # --- messages -------------------------------------------------------------------------------------------------
    async def on_message_activity(self, turn_context: TurnContext) -> None:
        decision = self._admit(turn_context.activity)
        if not decision.allowed:
            # one polite answer per run of refusals; the rest are dropped (Teams still gets 200)
            if decision.notify:
                await turn_context.send_activity(MessageFactory.text(self._actions.slow_down_text(
                    turn_context.activity.locale, decision.retry_after)))
            return
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
        decision = self._admit(activity)
        if not decision.allowed:   # an invoke must be answered: every refusal says when to try again
            return _invoke_error(429, "TooManyRequests",
                                 self._actions.slow_down_text(activity.locale, decision.retry_after))
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

    # --- a turn that failed outside the actions ---------------------------------------------------------------------
    async def on_turn_error(self, turn_context: TurnContext, error: Exception) -> None:
        """Last resort for a turn that failed outside the actions (which answer their own crashes): logged with an
        incident id, and the user is told that id. An invoke gets it in the Universal Actions error shape (without
        an invoke response the request would end in a bare 501); a message gets the crash reply, unless what failed
        was sending a reply (after the connector's retries: nothing more would arrive). Teams gets 200 for a
        message either way: whatever the turn did is keyed by the activity id, a retry would only replay it.
        Never raises."""
        incident = uuid.uuid4().hex[:12]
        activity = turn_context.activity
        log.error("incident %s: turn failed for activity %s: %s", incident, getattr(activity, "id", "?"),
                  type(error).__name__, exc_info=error)
        try:
            text = self._actions.crash_text(activity.locale, incident)
            if activity.type == ActivityTypes.invoke:
                if turn_context.turn_state.get(BotAdapter._INVOKE_RESPONSE_KEY) is None:
                    await turn_context.send_activity(Activity(type=ActivityTypes.invoke_response,
                                                              value=_invoke_error(500, "InternalError", text)))
            elif activity.type == ActivityTypes.message and not isinstance(error, ConnectorError):
                await turn_context.send_activity(MessageFactory.text(text))
        except Exception:
            log.warning("incident %s: the user could not be told", incident, exc_info=True)

    # --- installation ---------------------------------------------------------------------------------------------
    async def on_installation_update_add(self, turn_context: TurnContext) -> None:
        await self._welcome_once(turn_context)

    async def on_conversation_update_activity(self, turn_context: TurnContext) -> None:
        """Only one conversation update matters: the bot itself was added (a welcome). botbuilder's Teams version
        first deserializes `channelData` strictly and fails the turn on any shape it dislikes (a `team` that is
        not an object), then looks every added member up through its own connector; we need neither."""
        activity = turn_context.activity
        recipient = activity.recipient
        if recipient is not None and any(getattr(m, "id", None) == recipient.id for m in activity.members_added or []):
            await self._welcome_once(turn_context)

    async def on_message_update_activity(self, turn_context: TurnContext) -> None:
        """Edited messages are not commands (botbuilder's Teams version fails the turn on a malformed
        `channelData` before dispatching to handlers that do nothing)."""

    async def on_message_delete_activity(self, turn_context: TurnContext) -> None:
        """Deleted messages change nothing here (see `on_message_update_activity`)."""

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
        conversation was not known before. The reference is saved without the activity id, which changes with
        every message and which a proactive send drops anyway: an unchanged reference costs no write."""
        reference = model_to_json(TurnContext.get_conversation_reference(turn_context.activity))
        reference.pop("activityId", None)
        return await self._actions.remember_conversation(turn, reference)


def _turn(turn_context: TurnContext) -> Turn | None:
    """Our view of an inbound activity; None when it carries no tenant (not from a Microsoft 365 org)."""
    activity: Activity = turn_context.activity
    tenant_id = _tenant(activity)
    if not tenant_id:
        return None
    sender = activity.from_property or ChannelAccount()
    recipient_id = activity.recipient.id if activity.recipient else ""
    text = _without_own_mention(activity.text, activity, recipient_id) if activity.text and recipient_id \
        else activity.text
    conversation = activity.conversation
    return Turn(
        tenant_id=tenant_id,
        user_id=sender.aad_object_id or "",
        user_name=(sender.name or "")[:MAX_NAME],
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
        content = getattr(attachment, "content", None)   # an attachment may be anything, null included
        content = content if isinstance(content, dict) else {}
        url = content.get("downloadUrl")
        if getattr(attachment, "content_type", None) == FILE_DOWNLOAD_INFO and isinstance(url, str) and url:
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


def _mention_entities(activity: Activity) -> list[tuple[dict[str, Any], Any]]:
    """(mentioned, text) of each well-formed `mention` entity. botbuilder's `get_mentions` and
    `remove_mention_text` index these without looking (an entity without a type, or a mention whose `mentioned`
    is missing or not an object, crashed the turn before it reached the actions: no reply at all)."""
    found = []
    for entity in activity.entities or []:
        kind = getattr(entity, "type", None)
        props = getattr(entity, "additional_properties", None) or {}
        if isinstance(kind, str) and kind.lower() == "mention" and isinstance(props.get("mentioned"), dict):
            found.append((props["mentioned"], props.get("text")))
    return found


def _without_own_mention(text: str, activity: Activity, recipient_id: str) -> str:
    """`text` without the bot's own @mention, as botbuilder's `remove_recipient_mention` does it (the name
    inside the mention's `<at>...</at>` removed wherever it appears, then empty `<at></at>` tags), but
    tolerant of malformed entities and without mutating the activity."""
    for mentioned, shown in _mention_entities(activity):
        if mentioned.get("id") != recipient_id:
            continue
        if not isinstance(shown, str) or not shown:
            shown = mentioned.get("name")
        if not isinstance(shown, str) or len(shown) > 4 * MAX_NAME:   # the pattern backtracks on long text
            continue
        match = re.match(r"<at(.*)>(.*?)</at>", shown, re.IGNORECASE)
        if match and match[2]:
            text = text.replace(match[2], "").replace("<at></at>", "")
    return text


def _mentions(activity: Activity, recipient_id: str) -> tuple[Mention, ...]:
    found: list[Mention] = []
    for mentioned, _ in _mention_entities(activity):
        if mentioned.get("id") in (None, recipient_id):
            continue
        if len(found) == MAX_MENTIONS:
            break
        aad = mentioned.get("aadObjectId")
        found.append(Mention(user_id=str(mentioned.get("id"))[:MAX_NAME],
                             name=str(mentioned.get("name") or "")[:MAX_NAME],
                             aad_object_id=aad if isinstance(aad, str) and aad else None))
    return tuple(found)


async def _send(turn_context: TurnContext, reply: Reply) -> None:
    if reply.card is not None:
        activity = MessageFactory.attachment(_card_attachment(reply.card), text=reply.text or None)
    else:
        activity = MessageFactory.text(reply.text)
        activity.text_format = "markdown"
    await turn_context.send_activity(_not_deep_copied(activity))


class _OwnReply(Activity):
    """A reply activity built for one send: botbuilder's `TurnContext.send_activities` deep-copies every
    outgoing activity (about 0.1 ms for a reply: every model and attribute) so that filling in the conversation
    reference does not change the caller's object. That only assigns attributes, so a shallow copy keeps the
    same promise."""

    def __deepcopy__(self, memo: dict[int, Any]) -> "_OwnReply":
        return copy.copy(self)


def _not_deep_copied(activity: Activity) -> Activity:
    own = _OwnReply.__new__(_OwnReply)
    own.__dict__.update(activity.__dict__)
    return own


class CardAttachment(Attachment):
    """An Adaptive Card attachment that botbuilder's `TurnContext.send_activities` does not deep-copy: it copies
    every outgoing activity, card included (about 15% of a balance turn's logic). Our cards are built for one
    reply and never changed afterwards, so the copy shares the card's content."""

    def __deepcopy__(self, memo: dict[int, Any]) -> "CardAttachment":
        return copy.copy(self)


def _card_attachment(card: dict[str, Any]) -> CardAttachment:
    return CardAttachment(content_type="application/vnd.microsoft.card.adaptive", content=card)

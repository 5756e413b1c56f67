"""The botbuilder adapter: botbuilder's activity model, `TurnContext` and middleware, our own transport.

botbuilder 4.17's `CloudAdapter` validates tokens with a blocking key fetch and answers 500 for every failure,
answers 500 for every invoke response with a body, and builds connector and token clients on every turn. So we
subclass the plain `BotAdapter`: authentication happens before a turn starts (`bot.auth`), and everything a turn
sends goes through one `Connector` (pooled connections, cached tokens, retries honouring `Retry-After`).
Command and card logic never sees this module.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Mapping

from botbuilder.core import BotAdapter, InvokeResponse, TurnContext
from botbuilder.schema import (Activity, ActivityEventNames, ActivityTypes, ConversationReference,
                              ResourceResponse)
from botbuilder.core import conversation_reference_extension

from .activity_json import activity_from_json, activity_to_json
from .connector import Connector

log = logging.getLogger(__name__)

Logic = Callable[[TurnContext], Awaitable[Any]]


class CreditsAdapter(BotAdapter):
    """Runs turns for activities that were already authenticated, and sends over our `Connector`."""

    def __init__(self, connector: Connector, *, app_id: str | None,
                 on_turn_error: Callable[[TurnContext, Exception], Awaitable[None]] | None = None) -> None:
        super().__init__(on_turn_error)
        self._connector = connector
        self._app_id = app_id

    async def process(self, activity: Activity, logic: Logic) -> InvokeResponse | None:
        """Run one inbound turn. For an invoke, returns what the bot put in its invoke response (501 if it put
        nothing: Teams then shows an error rather than waiting)."""
        context = TurnContext(self, activity)
        await self.run_pipeline(context, logic)
        if activity.type == ActivityTypes.invoke:
            answer = context.turn_state.get(self._INVOKE_RESPONSE_KEY)
            if answer is None:
                return InvokeResponse(status=int(HTTPStatus.NOT_IMPLEMENTED))
            return answer.value
        return None

    async def send_activities(self, context: TurnContext, activities: list[Activity]) -> list[ResourceResponse]:
        responses: list[ResourceResponse] = []
        for activity in activities:
            if activity.type == "delay":
                await asyncio.sleep(min(float(activity.value or 1000), 10_000) / 1000)
                responses.append(ResourceResponse(id=""))
            elif activity.type == ActivityTypes.invoke_response:
                context.turn_state[self._INVOKE_RESPONSE_KEY] = activity
                responses.append(ResourceResponse(id=""))
            elif activity.type == ActivityTypes.trace:
                responses.append(ResourceResponse(id=""))
            else:
                # a proactive turn's activity id is a fresh uuid botbuilder made up: nothing to reply to
                reply_to = None if _is_continuation(context.activity) else activity.reply_to_id
                new_id = await self._connector.send(activity.service_url, activity.conversation.id,
                                                    _payload(activity), reply_to_id=reply_to)
                responses.append(ResourceResponse(id=new_id))
        return responses

    async def update_activity(self, context: TurnContext, activity: Activity) -> ResourceResponse:
        await self._connector.update(activity.service_url, activity.conversation.id, activity.id,
                                     _payload(activity))
        return ResourceResponse(id=activity.id)

    async def delete_activity(self, context: TurnContext, reference: ConversationReference) -> None:
        raise NotImplementedError("the bot never deletes messages")

    async def continue_conversation(self, reference: ConversationReference, callback: Logic,
                                    bot_id: str | None = None, claims_identity: Any = None,
                                    audience: str | None = None) -> None:
        """Proactive turn in a saved conversation (alerts). The bot's own id is used as the sender; unlike
        botbuilder's adapters there is nothing to pass per call."""
        activity = conversation_reference_extension.get_continuation_activity(reference)
        context = TurnContext(self, activity)
        await self.run_pipeline(context, callback)


class ProactiveSender:
    """Posts a new activity into a saved conversation (the notifier's alerts), through
    `continue_conversation(reference, callback, bot_id=app_id)` as botbuilder documents it.

    The saved reference is the one of the last activity seen there; its `activity_id` is dropped so that the alert
    is a new message (in a channel: a new post, not a reply in the thread of whoever typed `subscribe`), and its
    conversation id is replaced by `conversation_id` (a channel's root id). A send that fails raises the
    `ConnectorError` (botbuilder's pipeline would hand it to the turn error handler and swallow it)."""

    def __init__(self, adapter: CreditsAdapter, *, app_id: str | None) -> None:
        self._adapter = adapter
        self._app_id = app_id

    async def send(self, reference: Mapping[str, Any], conversation_id: str, activity: Mapping[str, Any]) -> str:
        ref = ConversationReference().deserialize({**reference, "activityId": None})
        if ref.conversation is None or not ref.service_url:
            raise ValueError("the saved conversation reference has no conversation or service URL")
        ref.conversation.id = conversation_id
        outcome: dict[str, Any] = {}

        async def post(context: TurnContext) -> None:
            try:
                response = await context.send_activity(activity_from_json(dict(activity)))
                outcome["id"] = response.id if response is not None else ""
            except Exception as error:  # re-raised below, outside botbuilder's pipeline
                outcome["error"] = error

        await self._adapter.continue_conversation(ref, post, bot_id=self._app_id)
        if "error" in outcome:
            raise outcome["error"]
        return str(outcome.get("id") or "")


def _is_continuation(activity: Activity) -> bool:
    return activity.type == ActivityTypes.event and activity.name == ActivityEventNames.continue_conversation


def _payload(activity: Activity) -> Mapping[str, Any]:
    body = activity_to_json(activity)
    body.pop("id", None)
    return body

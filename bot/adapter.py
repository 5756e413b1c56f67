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
from botbuilder.schema import Activity, ActivityTypes, ConversationReference, ResourceResponse
from botbuilder.core import conversation_reference_extension

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
                new_id = await self._connector.send(activity.service_url, activity.conversation.id,
                                                    _payload(activity), reply_to_id=activity.reply_to_id)
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


def _payload(activity: Activity) -> Mapping[str, Any]:
    body = activity.serialize()
    body.pop("id", None)
    return body

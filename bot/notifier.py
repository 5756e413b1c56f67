"""The notifier: drains the ledger's outbox into Teams, so that every alert reaches every destination (ADR 0006).

A round (`deliver_once`):

1. claims up to `batch` due alerts under a lease (the ledger counts an attempt per claim);
2. sends each alert's card to every destination still pending, through `continue_conversation`, and marks each
   (alert, destination) delivered the moment its send succeeded. Alerts of one tenant go one after another in
   the order they were raised (a channel reads "recharged" before "low balance"); tenants go in parallel;
3. a destination answering 403 or 404 (the bot was removed, the conversation is gone) is disabled with a reason
   an admin can read in `alerts`: the ledger skips it for this alert and for every pending one;
4. any other failure (429, 5xx, timeouts, connection resets, a missing conversation reference, a card that
   failed to build) gives the alert back to the outbox with a retry time: exponential backoff with jitter, and
   never sooner than the `Retry-After` Teams asked for (a 429 also holds every other send to that service URL
   until then). After the ledger's `max_attempts` the alert is dead: logged with an incident id and listed to
   admins by `alerts failed`.

Delivery is at least once per (alert, destination) and normally exactly once: only a crash (or a lost lease)
between a send and its mark sends the same card again, and that card carries the same alert reference.

The loop (`start`) runs one round, then sleeps until the ledger says an operation queued an alert
(`Ledger.add_alert_listener`) or `poll` seconds pass (retries come due with time; other processes may queue
alerts too). Nothing here imports botbuilder: sending is the `Sender`'s job (`bot.adapter.ProactiveSender`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping, Protocol

import cards
from storage import Alert, AlertStatus, Ledger, LeaseLost, NotFound
from storage.clock import Clock, utc_now

from .connector import ConnectorError
from .context import Voice
from .i18n import language_for, resolve_locale

log = logging.getLogger(__name__)

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


class Sender(Protocol):
    async def send(self, reference: Mapping[str, Any], conversation_id: str,
                   activity: Mapping[str, Any]) -> str:
        """Post `activity` as a new message in `conversation_id`, using the saved `reference` (service URL, bot,
        tenant). Raises `ConnectorError` when Teams refuses or cannot be reached."""
        ...


#: The reason stored with a subscription the notifier disabled (`Subscription.disabled_reason`, in English like
#: the rest of the store's records); `alerts` shows it in the reader's language (`removed_status`).
_REMOVED = "Teams answered {status}: the bot is no longer in this conversation"
_REMOVED_PATTERN = re.compile(r"Teams answered (\d{3}): the bot is no longer in this conversation")


def removed_reason(status: int) -> str:
    """The stored reason for a destination that answered `status` (403, 404): the bot was removed."""
    return _REMOVED.format(status=status)


def removed_status(reason: str) -> int | None:
    """The status of a reason `removed_reason` wrote, None for any other reason."""
    match = _REMOVED_PATTERN.fullmatch(reason.strip())
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Backoff:
    """When to try an alert again after its `attempt`-th attempt failed: "equal jitter" exponential backoff
    (half of `min(cap, base * 2**(attempt-1))` fixed, the other half random, so retries spread out but still
    grow), and never sooner than a `Retry-After` (itself believed up to `longest_retry_after`)."""

    base: timedelta = timedelta(seconds=15)
    cap: timedelta = timedelta(hours=1)
    longest_retry_after: timedelta = timedelta(hours=6)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> timedelta:
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * 2 ** max(0, attempt - 1))
        seconds = ceiling / 2 + rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            seconds = max(seconds, min(retry_after, self.longest_retry_after.total_seconds()))
        return timedelta(seconds=seconds)


@dataclass
class Round:
    """What one `deliver_once` did."""

    claimed: int = 0
    sent: int = 0                                          # (alert, destination) pairs delivered
    failed: int = 0                                        # sends that failed and wait for a retry
    dead: list[str] = field(default_factory=list)          # alert ids given up in this round
    disabled: list[str] = field(default_factory=list)      # destinations disabled (403/404)


class _RetryLater(Exception):
    """A destination that could not be served now; `retry_after` seconds if Teams said how long to wait."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Notifier:
    """See the module docstring. One per app instance; `worker` names it in the outbox's leases."""

    def __init__(self, ledger: Ledger, sender: Sender, *, fallback_locale: str, clock: Clock = utc_now,
                 worker: str | None = None, lease: timedelta = timedelta(minutes=5), batch: int = 20,
                 poll: float = 5.0, backoff: Backoff = Backoff(), rng: random.Random | None = None) -> None:
        self._ledger = ledger
        self._sender = sender
        self._fallback = fallback_locale
        self._clock = clock
        self.worker = worker or f"notifier-{uuid.uuid4().hex[:12]}"
        self._lease = lease
        self._batch = batch
        self._poll = poll
        self._backoff = backoff
        self._rng = rng or random.Random()
        self._held: dict[str, datetime] = {}          # service URL -> no sends before (after a 429)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # --- the loop ---------------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Run a round now (an operation queued an alert). Safe to call often and before `start`."""
        self._wake.set()

    def start(self) -> None:
        """Run rounds in a background task until `stop`, waking on the ledger's alert hint."""
        if self._task is None:
            self._ledger.add_alert_listener(self.wake)
            self._task = asyncio.create_task(self._run(), name=f"notifier {self.worker}")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Let a round in flight finish (up to `grace` seconds, then cancel it) and end the loop. What was sent
        but not marked stays in the outbox under its lease, and is claimed again when the lease runs out (by
        this store's next app)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(task, grace)  # on timeout wait_for cancels the loop and the round it awaits
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            done = await self._round_safely()
            if self._stopping:
                break
            if done is not None and done.claimed >= self._batch:
                continue  # there may be more due right now
            try:
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _round_safely(self) -> Round | None:
        try:
            return await self.deliver_once()
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("incident %s: notifier round failed; retrying at the next poll", incident)
            return None

    # --- one round --------------------------------------------------------------------------------------------
    async def deliver_once(self) -> Round:
        """Claim what is due and try to deliver it: see the module docstring. Returns what happened."""
        report = Round()
        claimed = await self._ledger.claim_alerts(self.worker, lease=self._lease, limit=self._batch)
        report.claimed = len(claimed)
        by_tenant: dict[str, list[Alert]] = defaultdict(list)
        for alert in claimed:
            by_tenant[alert.tenant_id].append(alert)
        await asyncio.gather(*(self._deliver_tenant(alerts, report) for alerts in by_tenant.values()))
        return report

    async def _deliver_tenant(self, alerts: list[Alert], report: Round) -> None:
        currency = (await self._ledger.get_account(alerts[0].tenant_id)).currency
        for alert in alerts:
            try:
                await self._deliver(alert, currency, report)
            except LeaseLost:
                log.warning("alert %s: lease lost to another worker; leaving it to them", alert.alert_id)

    async def _deliver(self, alert: Alert, currency: str, report: Round) -> None:
        problems: list[_RetryLater] = []
        for destination in alert.pending_destinations:
            try:
                await self._send(alert, destination, currency)
            except _RetryLater as problem:
                problems.append(problem)
                report.failed += 1
                continue
            except ConnectorError as error:
                if error.gone and await self._disable(alert, destination, error):
                    report.disabled.append(destination)
                    continue
                problems.append(_RetryLater(str(error), error.retry_after))
                report.failed += 1
                continue
            await self._ledger.mark_delivered(alert.alert_id, destination, worker=self.worker)
            report.sent += 1
        if problems:
            await self._retry_later(alert, problems, report)

    async def _send(self, alert: Alert, destination: str, currency: str) -> None:
        ref = await self._ledger.conversation(alert.tenant_id, destination)
        if ref is None:
            raise _RetryLater("no saved conversation reference for this destination yet")
        reference = ref.reference
        service_url = str(reference.get("serviceUrl") or "")
        held = self._held.get(service_url)
        now = self._clock()
        if held is not None and held > now:
            raise _RetryLater("Teams asked to wait (429) for this service", (held - now).total_seconds())
        try:
            activity = self._activity(alert, reference, currency)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("incident %s: could not build the card of alert %s (%s)", incident, alert.alert_id,
                          alert.kind)
            raise _RetryLater(f"the card could not be built (incident {incident})") from None
        try:
            await self._sender.send(reference, destination, activity)
        except ConnectorError as error:
            if error.status == 429 and error.retry_after:
                self._held[service_url] = self._clock() + timedelta(seconds=error.retry_after)
            raise

    def _activity(self, alert: Alert, reference: Mapping[str, Any], currency: str) -> dict[str, Any]:
        """The message: the alert's card in the destination's language (the locale Teams last reported there,
        else the configured one), with its title as the text that notifications and card-less clients show."""
        locale = reference.get("locale") if isinstance(reference.get("locale"), str) else None
        voice = Voice(language=language_for(locale, self._fallback), locale=resolve_locale(locale, self._fallback),
                      currency=currency)
        card = cards.alert_card(voice, alert=alert)
        return {"type": "message", "text": card["fallbackText"],
                "attachments": [{"contentType": ADAPTIVE_CARD, "content": card}]}

    async def _disable(self, alert: Alert, destination: str, error: ConnectorError) -> bool:
        reason = removed_reason(error.status or 0)
        try:
            await self._ledger.disable_subscription(alert.tenant_id, destination, reason=reason)
        except NotFound:
            return False  # not a subscription (any more): an ordinary failure
        log.warning("alert destination disabled", extra={"tenant": alert.tenant_id, "destination": destination,
                                                         "status": error.status})
        return True

    async def _retry_later(self, alert: Alert, problems: list[_RetryLater], report: Round) -> None:
        asked = [p.retry_after for p in problems if p.retry_after is not None]
        delay = self._backoff.delay(alert.attempts, max(asked) if asked else None, self._rng)
        error = "; ".join(dict.fromkeys(str(p) for p in problems))[:1000]
        released = await self._ledger.release_alert(alert.alert_id, worker=self.worker,
                                                     retry_at=self._clock() + delay, error=error)
        if released.status is AlertStatus.DEAD:
            incident = uuid.uuid4().hex[:12]
            log.error("incident %s: alert %s (%s, tenant %s) given up after %d attempts; %d destination(s) not "
                      "served: %s", incident, alert.alert_id, alert.kind.value, alert.tenant_id, released.attempts,
                      len(released.pending_destinations), error)
            report.dead.append(alert.alert_id)

"""Keep the start-up heap out of the garbage collector's full passes (issue #9, ADR 0009).

CPython's cyclic collector walks every tracked object of the oldest generation on a full collection. After
start-up that generation holds everything the imports made (botbuilder, msrest, babel, aiohttp, the card
templates...): measured under the turn benchmark, each full pass took about 25 ms, a dozen times in 20 seconds,
and stopped every turn in flight meanwhile; they were most of the p99. `gc.freeze()` moves the objects alive at
that moment to a permanent generation that collections skip; what the bot allocates later is collected as before.

The one cost: a reference cycle among frozen objects that becomes garbage later is never reclaimed. Objects made
at start-up live as long as the process (modules, settings, the opened store, the sessions), so the collection
just before the freeze clears what start-up threw away, and the rest is meant to stay.

Only `python -m bot serve` freezes (tests build many apps in one process and must not pin them).
"""

from __future__ import annotations

import gc
import logging

from aiohttp import web

log = logging.getLogger("bot.heap")


async def freeze_startup_heap(app: web.Application) -> None:
    """An `on_startup` handler, appended after the resources (`create_app`'s `cleanup_ctx`) have started: collect
    what start-up left behind, then freeze the rest (`gc.freeze`)."""
    collected = gc.collect()
    gc.freeze()
    log.info("start-up heap frozen", extra={"frozen_objects": gc.get_freeze_count(), "collected": collected})

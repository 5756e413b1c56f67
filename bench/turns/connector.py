"""A fake Bot Connector for load: answers fast, records when each reply arrived, counts TCP connections.

    python -m bench.turns.connector            # prints {"port": P, "control_port": C, "pid": ...} once it listens

Two listeners on 127.0.0.1, so that the harness's own polling never counts as the bot's connections:

* `port`: the Bot Connector REST API under the service URL `http://127.0.0.1:<port>/amer/`:
  `POST .../v3/conversations/{id}/activities[/{replyToId}]` answers 200 `{"id": "activity-<n>"}`;
  `PUT .../activities/{id}` 200 `{"id": id}`; `GET .../members/{id}` 200 a member; anything else 404.
  Every TCP connection accepted on it is counted (a protocol-factory hook: one count per `accept`), and the
  distinct client ports are counted too as a cross-check.
* `control_port`: `GET /stats` (counters), `POST /drain` (the replies recorded since the last drain, then
  forgotten: `[[conversation_id, reply_to_id, arrival_ns], ...]`, `arrival_ns` on the machine-wide monotonic clock,
  `time.monotonic_ns()`, which the load generator's clock shares), `POST /reset` (zero the counters).

A reply whose body holds `Incident id` (our bot's crash answer) is counted in `incidents`. Bodies are otherwise
not parsed: the fake must cost far less than what it measures. It runs in its own process so that it never
takes the measured process's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from urllib.parse import unquote

from aiohttp import web

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.turns.common import announce

PREFIX = "/amer/"
CRASH_MARKER = b"Incident id"


class Recorder:
    def __init__(self) -> None:
        self.replies: list[tuple[str, str, int]] = []
        self.reset()

    def reset(self) -> None:
        self.connections = 0
        self.peers: set[tuple[str, int]] = set()
        self.requests = 0
        self.posts = 0
        self.replies_total = 0
        self.puts = 0
        self.gets = 0
        self.not_found = 0
        self.incidents = 0
        self.authorized = 0
        self.sent = 0

    def stats(self) -> dict[str, int]:
        return {"connections": self.connections, "peers": len(self.peers), "requests": self.requests,
                "posts": self.posts, "replies": self.replies_total, "puts": self.puts, "gets": self.gets,
                "not_found": self.not_found, "incidents": self.incidents, "authorized": self.authorized,
                "pending": len(self.replies)}


def api_app(rec: Recorder) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        arrived = time.monotonic_ns()
        body = await request.read()
        rec.requests += 1
        transport = request.transport
        if transport is not None:
            peer = transport.get_extra_info("peername")
            if peer:
                rec.peers.add((peer[0], peer[1]))
        if "Authorization" in request.headers:
            rec.authorized += 1
        raw = request.raw_path.split("?", 1)[0]
        if not raw.startswith(PREFIX):
            rec.not_found += 1
            return web.Response(status=404, body=b'{"error":{"code":"NotFound"}}', content_type="application/json")
        seg = raw[len(PREFIX):].split("/")
        # v3 / conversations / {id} / activities [/ {activityId}]
        if len(seg) >= 4 and seg[0] == "v3" and seg[1] == "conversations":
            conversation = unquote(seg[2])
            if seg[3] == "activities":
                if request.method == "POST":
                    rec.posts += 1
                    rec.sent += 1
                    if CRASH_MARKER in body:
                        rec.incidents += 1
                    if len(seg) == 5:
                        rec.replies_total += 1
                        rec.replies.append((conversation, unquote(seg[4]), arrived))
                    return web.Response(body=b'{"id":"activity-%d"}' % rec.sent, content_type="application/json")
                if request.method == "PUT" and len(seg) == 5:
                    rec.puts += 1
                    return web.Response(body=b'{"id":"%s"}' % seg[4].encode(), content_type="application/json")
            if seg[3] == "members" and request.method == "GET" and len(seg) == 5:
                rec.gets += 1
                member = unquote(seg[4])
                return web.json_response({"id": member, "name": "Member", "aadObjectId": member[-36:]})
        rec.not_found += 1
        return web.Response(status=404, body=b'{"error":{"code":"NotFound"}}', content_type="application/json")

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def control_app(rec: Recorder) -> web.Application:
    async def stats(request: web.Request) -> web.Response:
        return web.json_response(rec.stats())

    async def drain(request: web.Request) -> web.Response:
        replies, rec.replies = rec.replies, []
        return web.json_response(replies)

    async def reset(request: web.Request) -> web.Response:
        rec.reset()
        return web.json_response(rec.stats())

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/drain", drain)
    app.router.add_post("/reset", reset)
    return app


async def serve(port: int = 0, control_port: int = 0) -> None:
    rec = Recorder()
    loop = asyncio.get_running_loop()
    api_runner = web.AppRunner(api_app(rec), access_log=None, handle_signals=False)
    await api_runner.setup()
    handler_factory = api_runner.server
    assert handler_factory is not None

    def counting_factory():  # one call per accepted TCP connection
        rec.connections += 1
        return handler_factory()

    api_server = await loop.create_server(counting_factory, "127.0.0.1", port, backlog=1024, reuse_address=True)
    control_runner = web.AppRunner(control_app(rec), access_log=None, handle_signals=False)
    await control_runner.setup()
    control_site = web.TCPSite(control_runner, "127.0.0.1", control_port)
    await control_site.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    announce(port=api_server.sockets[0].getsockname()[1], control_port=control_runner.addresses[0][1],
             pid=os.getpid())
    await stop.wait()
    api_server.close()
    await api_runner.cleanup()
    await control_runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.control_port))


if __name__ == "__main__":
    main()

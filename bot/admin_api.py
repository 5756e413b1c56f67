"""A loopback-only admin endpoint, so that `python -m bot import-usage` and `python -m bot sync` work while the
bot is running on a TinyDB store (one process owns it: the CLI hands its rows to that process instead).

* `POST /api/admin/usage` `{"tenant": str | null, "source": "csv", "rows": [row_to_wire(...), ...]}` imports one
  chunk and answers its `UsageReport.to_dict()`;
* `POST /api/admin/sync` `{"tenant": str | null}` runs a Graph sync now and answers `{"reports": [...]}`.

Both need `Authorization: Bearer <token>`, a random token the app writes at start-up into `admin.json` in the
store's directory (mode 0600, with the port), and removes at shutdown: whoever may read the store may import into
it, nobody else. Requests from anything but a loopback address are answered 404, as if the route did not exist.
Errors are JSON `{"error": message}`: 400 for a bad request or an unknown account, 503 when Graph is not set up,
502 with the admin message when Graph refuses.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from storage import LedgerError

from .settings import is_loopback
from .usage.rows import row_from_wire
from .usage.service import UsageService, UsageTargetError, resolve_tenant

log = logging.getLogger(__name__)

TOKEN_FILE = "admin.json"
MAX_CHUNK_BYTES = 32 * 1024 * 1024


def token_path(store: str) -> Path | None:
    """Where the running app's admin token lives for `store` (None for stores that are not a directory)."""
    return None if "://" in store else Path(store) / TOKEN_FILE


def write_token(path: Path, port: int) -> str:
    """Create a fresh token and write it (0600, atomically) with the port; returns the token."""
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"token": token, "port": port, "pid": os.getpid()}, f)
    os.replace(tmp, path)
    return token


def read_token(path: Path) -> tuple[str, int]:
    """(token, port) of the running app; `FileNotFoundError` when no app runs on the store."""
    data = json.loads(path.read_text())
    return str(data["token"]), int(data["port"])


class AdminApi:
    def __init__(self, service: UsageService, token: str) -> None:
        self._service = service
        self._token = token

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/admin/usage", self.usage)
        app.router.add_post("/api/admin/sync", self.sync)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not is_loopback(request.remote or ""):
            raise web.HTTPNotFound()
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(given.encode(), self._token.encode()):
            raise _error(401, "missing or wrong admin token")
        try:   # a chunk of rows is far larger than a Teams activity (the app's own limit is for those)
            body = await request.clone(client_max_size=MAX_CHUNK_BYTES).json(loads=json.loads)
        except web.HTTPRequestEntityTooLarge:
            raise _error(413, f"the body is larger than {MAX_CHUNK_BYTES // 2**20} MiB: send fewer rows at a "
                              "time") from None
        except ValueError:
            raise _error(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise _error(400, "the body must be a JSON object")
        return body

    async def usage(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        rows_in = body.get("rows")
        source = body.get("source") or "csv"
        if not isinstance(rows_in, list) or not isinstance(source, str):
            raise _error(400, "expected {\"tenant\", \"source\", \"rows\": [...]}")
        try:
            rows = [row_from_wire(r) for r in rows_in]
        except (KeyError, TypeError, ValueError, ArithmeticError):
            raise _error(400, "a row is malformed") from None
        try:
            tenant = await resolve_tenant(self._service.ledger, _tenant(body))
            report = await self._service.import_rows(tenant, rows, source=source[:20])
        except UsageTargetError as exc:
            raise _error(400, str(exc)) from None
        except LedgerError as exc:
            raise _error(400, f"the ledger refused: {type(exc).__name__}") from None
        return web.json_response(report.to_dict())

    async def sync(self, request: web.Request) -> web.Response:
        from .usage.graph import GraphError  # Graph is optional; import where it is needed

        body = await self._body(request)
        if self._service.graph is None:
            raise _error(503, "usage sync from Microsoft Graph is not configured (GRAPH_TENANT_ID, GRAPH_CLIENT_ID, "
                              "GRAPH_CLIENT_SECRET)")
        try:
            tenant = await resolve_tenant(self._service.ledger, _tenant(body)) if _tenant(body) else None
            reports = await self._service.sync(tenant)
        except UsageTargetError as exc:
            raise _error(400, str(exc)) from None
        except GraphError as exc:
            raise _error(502, getattr(exc, "admin_message", None) or str(exc)) from None
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("incident %s: sync through the admin endpoint failed", incident)
            raise _error(500, f"the sync failed (incident {incident})") from None
        return web.json_response({"reports": [r.to_dict() for r in reports]})


def _tenant(body: dict[str, Any]) -> str | None:
    value = body.get("tenant")
    return value if isinstance(value, str) and value else None


def _error(status: int, message: str) -> web.HTTPException:
    if status == 413:
        return web.HTTPRequestEntityTooLarge(MAX_CHUNK_BYTES, text=json.dumps({"error": message}),
                                             content_type="application/json")
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 500: web.HTTPInternalServerError,
           502: web.HTTPBadGateway, 503: web.HTTPServiceUnavailable}[status]
    return cls(text=json.dumps({"error": message}), content_type="application/json")

"""The fake identity services for the bench, in their own process: `tests.fakes.identity.FakeIdentity` plus three
routes.

    python -m bench.turns.identity   # prints {"http_url", "https_url", "ca_path", "app_id", "app_password", "pid"}

`FakeIdentity` (the one the tests use) serves, on plain HTTP and on HTTPS with a CA made at start-up:
Bot Framework's OpenID metadata and JWKS (inbound JWT validation), Entra tenant discovery and a client-credentials
token endpoint at `/{tenant}/oauth2/v2.0/token` (msal, outbound tokens). It runs in threads (`ThreadingHTTPServer`),
which is why it gets a process of its own here: its TLS handshakes must not take the GIL of anything measured.

Added here:

* `GET /adfs/.well-known/openid-configuration` and `POST /adfs/oauth2/token`: the same token endpoint behind an
  ADFS-shaped authority. The canonical echo bot needs it: botbuilder 4.17 builds its
  `msal.ConfidentialClientApplication(client_id, client_credential, authority=ToChannelFromBotLoginUrl)` without
  `instance_discovery=False`, so for any authority host that is not one of Microsoft's msal would first ask
  `login.microsoftonline.com` whether the host is known (no network here). msal skips that question for an
  authority whose first path segment is `adfs` (`msal.authority`, `_is_known_to_developer`) exactly as it skips it
  for `login.microsoftonline.com` in production, and then does what it does in production: tenant discovery
  (`GET .../.well-known/openid-configuration`) and the token request. So `TO_CHANNEL_FROM_BOT_LOGIN_URL =
  https://127.0.0.1:<port>/adfs` is a configuration-only way to give the echo bot its production network pattern.
* `POST /_bench/mint` (form `service_url`, optional `expires_in`): a channel-to-bot JWT signed by the published
  key, as Bot Framework mints them. The load generator asks once per run and reuses it (as the real channel does
  for about an hour), so RSA signing never runs per request.
* `GET /_bench/stats`: `token_requests` (POSTs to any token endpoint), `tenant_discovery`, `metadata`, `jwks`.

"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from typing import Any
from urllib.parse import parse_qs

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.turns.common import announce
from tests.fakes.identity import (
    APP_ID,
    APP_PASSWORD,
    JWKS_PATH,
    METADATA_PATH,
    FakeIdentity,
)

ADFS_DISCOVERY = "/adfs/.well-known/openid-configuration"
ADFS_TOKEN = "/adfs/oauth2/token"


class BenchIdentity(FakeIdentity):
    """`FakeIdentity` with an ADFS-shaped authority, a token-minting route and a stats route (module docstring)."""

    def _answer(self, method: str, path: str, scheme: str, base: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if path == ADFS_DISCOVERY and method == "GET":
            self._count(path)
            return 200, {"issuer": f"{base}/adfs", "authorization_endpoint": f"{base}/adfs/oauth2/authorize",
                         "token_endpoint": f"{base}{ADFS_TOKEN}",
                         "token_endpoint_auth_methods_supported": ["client_secret_post"]}
        if path == ADFS_TOKEN and method == "POST":
            self._count(path)
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            return self._token_answer(form, tenant=None)
        if path == "/_bench/mint" and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            token = self.issue_token(app_id=form.get("app_id", APP_ID), service_url=form["service_url"],
                                     expires_in=float(form.get("expires_in", 3600)))
            return 200, {"token": token}
        if path == "/_bench/stats" and method == "GET":
            return 200, self.stats()
        return super()._answer(method, path, scheme, base, body)

    def _count(self, path: str) -> None:
        with self._lock:
            self._counts[path] += 1

    def stats(self) -> dict[str, int]:
        counts = self.counts()
        return {
            "token_requests": sum(n for p, n in counts.items() if p.endswith("/token")),
            "tenant_discovery": sum(n for p, n in counts.items() if p.endswith("openid-configuration")),
            "metadata": counts.get(METADATA_PATH, 0),
            "jwks": counts.get(JWKS_PATH, 0),
        }


_OPENER = None


def _open(url: str, data: bytes | None = None) -> dict[str, Any]:
    """GET/POST to the bench identity, never through a proxy from the environment."""
    import urllib.request
    global _OPENER
    if _OPENER is None:
        _OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with _OPENER.open(url, data=data, timeout=10) as response:
        return json.loads(response.read())


def mint(identity_http_url: str, service_url: str, app_id: str = APP_ID, expires_in: int = 3600) -> str:
    """Ask a running bench identity for a channel token (used by the load generator)."""
    import urllib.parse
    data = urllib.parse.urlencode({"service_url": service_url, "app_id": app_id, "expires_in": expires_in}).encode()
    return _open(identity_http_url + "/_bench/mint", data)["token"]


def stats(identity_http_url: str) -> dict[str, int]:
    return _open(identity_http_url + "/_bench/stats")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token-expires-in", type=int, default=3600,
                        help="lifetime (s) of the access tokens the token endpoint hands out")
    args = parser.parse_args()
    identity = BenchIdentity(token_expires_in=args.token_expires_in).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    announce(http_url=identity.http_url, https_url=identity.https_url, ca_path=identity.ca_path, app_id=APP_ID,
             app_password=APP_PASSWORD, issuer=identity.issuer, pid=os.getpid(),
             token_expires_in=args.token_expires_in)
    try:
        stop.wait()
    finally:
        identity.stop()


if __name__ == "__main__":
    main()

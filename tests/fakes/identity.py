"""`FakeIdentity`: Bot Framework's and Entra ID's token services on loopback, for real JWT and msal flows.

It runs `ThreadingHTTPServer`s in daemon threads, NOT on the test's event loop (DESIGN.md section 8): code that
fetches keys with a blocking client must not deadlock the test, and code that must not block (ours) is shown
not to. Two listeners share one state:

* `http_url`  (plain HTTP): what an `aiohttp` session reads for inbound validation without any TLS set-up;
* `https_url` (TLS, a certificate for 127.0.0.1/localhost from a CA generated at start with `cryptography`):
  what msal needs, because msal only accepts https authorities (`msal.authority.canonicalize`). Trust the CA
  with `requests_session()` (msal's `http_client`), `ssl_context()` (aiohttp), or `ca_path`
  (e.g. `REQUESTS_CA_BUNDLE`, which msal's default `requests` session honours).

Routes (on both listeners; every URL in an answer points back to the listener that was asked):

| Route | What |
|---|---|
| `GET /v1/.well-known/openidconfiguration` | Bot Framework OpenID metadata: `issuer`, `jwks_uri`, ... |
| `GET /v1/.well-known/keys` | the JWKS: every published RSA key, with `endorsements` unless a key has none |
| `GET /{tenant}/v2.0/.well-known/openid-configuration` | Entra tenant discovery, as msal asks for it |
| `POST /{tenant}/oauth2/v2.0/token` | client-credentials grant: checks client id + secret, answers an opaque token |

Inbound (channel-to-bot) tokens are minted with `issue_token(...)`, signed by the current key (`kid`), or by
any key you pass (`signing_key=`, to forge one). Keys rotate with `rotate_key()`; `add_key(publish=False)` makes
a key that signs but is not (yet) in the JWKS; `publish(kid)` / `unpublish(kid)` move it in or out.

Outbound tokens: the token endpoint accepts the clients registered with `add_client` (`APP_ID`/`APP_PASSWORD`
from the start) and answers `{"access_token", "token_type": "Bearer", "expires_in": token_expires_in}`.
`token_expires_in` is settable; `issued_access_tokens` lists what it handed out; `token_requests` counts;
`token_tenant(token)` says for which tenant (the authority's path segment) a token was issued, so a fake
resource server can check it. `set_tenant_error(tenant, aadsts)` makes Entra answer for that tenant as it does
when the app is not consented in it (700016, 65001, ...) or the tenant does not exist (90002: tenant discovery
fails too, as msal sees it from Entra).

Every request is counted per path (thread-safe): `count(path)`, `counts()`, `requests()`. Faults:
`fail_next(n, status=, path=)` answers the next n matching requests with an error, `set_delay(seconds, path=)`
delays answers. `reset()` restores the state after construction (same keys, same certificate), which is what the
function-scoped `identity` fixture does around one server shared by the whole session.

Use as a context manager or with `start()` / `stop()`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import ssl
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import RSAAlgorithm

#: Bot Framework's channel-token issuer (the `iss` of every token `issue_token` mints unless told otherwise).
BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"
METADATA_PATH = "/v1/.well-known/openidconfiguration"
JWKS_PATH = "/v1/.well-known/keys"
#: A registered client of the fake token endpoint (use them as MicrosoftAppId / MicrosoftAppPassword).
APP_ID = "00000000-0000-0000-0000-00000000b07a"
APP_PASSWORD = "fake-client-secret-do-not-log"
DEFAULT_TENANT = "botframework.com"
DEFAULT_ENDORSEMENTS = ("msteams",)

_DEFAULT = object()  # "use the default endorsements"


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh 2048-bit RSA private key (e.g. to forge a token nobody published)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class _Key:
    kid: str
    private: rsa.RSAPrivateKey
    endorsements: tuple[str, ...] | None
    published: bool = True

    def jwk(self) -> dict[str, Any]:
        jwk = dict(RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        if self.endorsements is not None:
            jwk["endorsements"] = list(self.endorsements)
        return jwk


@dataclass
class _Fault:
    remaining: int
    status: int
    path: str | None
    body: bytes = b'{"error": "injected_fault"}'

    def matches(self, path: str) -> bool:
        return self.remaining > 0 and (self.path is None or self.path == path)


@dataclass(frozen=True)
class SeenRequest:
    """One request the fake answered (the token endpoint's form without `client_secret`)."""

    method: str
    path: str
    scheme: str
    form: Mapping[str, str] = field(default_factory=dict)


class FakeIdentity:
    """See the module docstring. All public methods are thread-safe and may be called from any thread."""

    def __init__(self, *, issuer: str = BOT_FRAMEWORK_ISSUER, endorsements: Iterable[str] | None = DEFAULT_ENDORSEMENTS,
                 token_expires_in: int = 3600) -> None:
        self.issuer = issuer
        self.default_endorsements = tuple(endorsements) if endorsements is not None else None
        self._initial_expires_in = token_expires_in
        self._lock = threading.Lock()
        first = _Key(kid=_new_kid(), private=new_rsa_key(), endorsements=self.default_endorsements)
        self._initial_key = first
        self._keys: dict[str, _Key] = {first.kid: first}
        self._current = first.kid
        self._clients: dict[str, str] = {APP_ID: APP_PASSWORD}
        self.token_expires_in = token_expires_in
        self._issued: list[str] = []
        self._issued_tenant: dict[str, str] = {}
        self._tenant_errors: dict[str, int] = {}
        self._counts: Counter[str] = Counter()
        self._seen: list[SeenRequest] = []
        self._faults: list[_Fault] = []
        self._delays: dict[str | None, float] = {}
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.http_url = ""
        self.https_url = ""
        self.ca_path = ""

    # -- lifetime ----------------------------------------------------------------------------------------------

    def start(self) -> "FakeIdentity":
        if self._servers:
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-identity-")
        folder = Path(self._tmp.name)
        ca_path, cert_path, key_path = _write_tls_files(folder)
        self.ca_path = str(ca_path)
        plain = _Server(("127.0.0.1", 0), _Handler, identity=self, scheme="http")
        tls = _Server(("127.0.0.1", 0), _Handler, identity=self, scheme="https")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        tls.socket = context.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
        self.http_url = f"http://127.0.0.1:{plain.server_address[1]}"
        self.https_url = f"https://127.0.0.1:{tls.server_address[1]}"
        for server in (plain, tls):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"fake-identity-{server.scheme}", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "FakeIdentity":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to the state right after construction: the first key only (current, published, default
        endorsements), the default client, `token_expires_in`, no faults, no delays, nothing counted."""
        with self._lock:
            self._initial_key.published = True
            self._initial_key.endorsements = self.default_endorsements
            self._keys = {self._initial_key.kid: self._initial_key}
            self._current = self._initial_key.kid
            self._clients = {APP_ID: APP_PASSWORD}
            self.token_expires_in = self._initial_expires_in
            self._issued.clear()
            self._issued_tenant.clear()
            self._tenant_errors.clear()
            self._counts.clear()
            self._seen.clear()
            self._faults.clear()
            self._delays.clear()

    # -- addresses and trust -----------------------------------------------------------------------------------

    @property
    def metadata_url(self) -> str:
        """Bot Framework OpenID metadata over plain HTTP (`ToBotFromChannelOpenIdMetadataUrl`)."""
        return self.http_url + METADATA_PATH

    @property
    def https_metadata_url(self) -> str:
        return self.https_url + METADATA_PATH

    def authority(self, tenant: str = DEFAULT_TENANT) -> str:
        """An msal authority on the TLS listener (`ToChannelFromBotLoginUrl`)."""
        return f"{self.https_url}/{tenant}"

    def requests_session(self) -> requests.Session:
        """A `requests.Session` that trusts the fake's CA: pass it to msal as `http_client`.

        `trust_env` is off: with it on, `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` from the environment silently
        replace `session.verify` (requests does that for every request that does not pass `verify=` itself, as
        msal's calls do not), and proxy variables could route 127.0.0.1 through a proxy."""
        session = requests.Session()
        session.trust_env = False
        session.verify = self.ca_path
        return session

    def ssl_context(self) -> ssl.SSLContext:
        """A client `SSLContext` trusting the fake's CA, e.g. `aiohttp.TCPConnector(ssl=identity.ssl_context())`."""
        return ssl.create_default_context(cafile=self.ca_path)

    def settings_env(self, *, app_id: str = APP_ID, password: str = APP_PASSWORD,
                     tenant: str = DEFAULT_TENANT) -> dict[str, str]:
        """The settings (`Settings.from_env` names) that point a bot at this fake. msal's own `requests` session
        must also trust `ca_path` (set `REQUESTS_CA_BUNDLE`, or give `OutboundTokens` an `http_client`)."""
        return {
            "MicrosoftAppId": app_id,
            "MicrosoftAppPassword": password,
            "ToBotFromChannelOpenIdMetadataUrl": self.metadata_url,
            "ToBotFromChannelTokenIssuer": self.issuer,
            "ToChannelFromBotLoginUrl": self.authority(tenant),
        }

    # -- signing keys ------------------------------------------------------------------------------------------

    @property
    def kid(self) -> str:
        """The key id `issue_token` signs with by default."""
        with self._lock:
            return self._current

    def add_key(self, *, kid: str | None = None, endorsements: Any = _DEFAULT, publish: bool = True,
                make_current: bool = False, private_key: rsa.RSAPrivateKey | None = None) -> str:
        """Add a signing key (published in the JWKS unless `publish=False`); returns its kid.
        `endorsements=None` publishes the key without an `endorsements` field."""
        key = _Key(kid=kid or _new_kid(), private=private_key or new_rsa_key(),
                   endorsements=self.default_endorsements if endorsements is _DEFAULT
                   else (tuple(endorsements) if endorsements is not None else None),
                   published=publish)
        with self._lock:
            self._keys[key.kid] = key
            if make_current:
                self._current = key.kid
        return key.kid

    def rotate_key(self, *, endorsements: Any = _DEFAULT, retire_old: bool = False) -> str:
        """Publish a new key and sign with it from now on; `retire_old` also unpublishes the previous one."""
        old = self.kid
        kid = self.add_key(endorsements=endorsements, make_current=True)
        if retire_old:
            self.unpublish(old)
        return kid

    def publish(self, kid: str) -> None:
        with self._lock:
            self._keys[kid].published = True

    def unpublish(self, kid: str) -> None:
        with self._lock:
            self._keys[kid].published = False

    def set_endorsements(self, kid: str, endorsements: Iterable[str] | None) -> None:
        with self._lock:
            self._keys[kid].endorsements = tuple(endorsements) if endorsements is not None else None

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [key.jwk() for key in self._keys.values() if key.published]}

    def issue_token(self, *, app_id: str, service_url: str, kid: str | None = None, expires_in: float = 3600,
                    issuer: str | None = None, audience: Any = None, signing_key: rsa.RSAPrivateKey | None = None,
                    extra_claims: Mapping[str, Any] | None = None, now: dt.datetime | None = None,
                    not_before: dt.datetime | None = None, algorithm: str = "RS256",
                    headers: Mapping[str, Any] | None = None) -> str:
        """A channel-to-bot JWT as Bot Framework mints them: `serviceurl`, `nbf`, `exp`, `iss`, `aud`.

        `kid` defaults to the current key; `signing_key` signs with another private key under that kid (a
        forgery). `now` (aware datetime) dates the token (use the test's fake clock); `expires_in` may be
        negative. `extra_claims` are merged last; a claim mapped to None is removed. The `kid` header is
        left out when `kid=""`.
        """
        moment = (now or dt.datetime.now(dt.timezone.utc)).timestamp()
        with self._lock:
            kid = self._current if kid is None else kid
            key = self._keys.get(kid)
        private = signing_key or (key.private if key is not None else None)
        if private is None:
            raise KeyError(f"no private key for kid {kid!r}: pass signing_key=")
        claims: dict[str, Any] = {
            "serviceurl": service_url,
            "nbf": int(not_before.timestamp()) if not_before is not None else int(moment),
            "exp": int(moment + expires_in),
            "iss": issuer if issuer is not None else self.issuer,
            "aud": audience if audience is not None else app_id,
        }
        for name, value in (extra_claims or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        jose: dict[str, Any] = {"typ": "JWT", **({"kid": kid} if kid else {}), **(headers or {})}
        return jwt.encode(claims, private, algorithm=algorithm, headers=jose)

    # -- outbound clients --------------------------------------------------------------------------------------

    def add_client(self, client_id: str, secret: str) -> None:
        with self._lock:
            self._clients[client_id] = secret

    @property
    def issued_access_tokens(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    def token_tenant(self, token: str) -> str | None:
        """The tenant (authority path segment) `token` was issued for; None if this fake did not issue it."""
        with self._lock:
            return self._issued_tenant.get(token)

    def set_tenant_error(self, tenant: str, aadsts: int | None) -> None:
        """From now on, answer token requests for `tenant` with Entra's error `AADSTS{aadsts}` (None: stop).
        90002 (no such tenant) also fails the tenant's OpenID discovery with 400, as Entra does."""
        with self._lock:
            if aadsts is None:
                self._tenant_errors.pop(tenant, None)
            else:
                self._tenant_errors[tenant] = aadsts

    def token_requests(self, tenant: str | None = None) -> int:
        """Token endpoint POSTs so far (all tenants, or one)."""
        with self._lock:
            return sum(n for path, n in self._counts.items() if path.endswith("/oauth2/v2.0/token")
                       and (tenant is None or path == f"/{tenant}/oauth2/v2.0/token"))

    # -- faults and statistics ---------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 503, path: str | None = None) -> None:
        """Answer the next `n` requests (to `path` only, if given) with `status`."""
        with self._lock:
            self._faults.append(_Fault(remaining=n, status=status, path=path))

    def set_delay(self, seconds: float, *, path: str | None = None) -> None:
        """Delay every answer (to `path` only, if given) by `seconds`, in the server's thread. 0 removes it."""
        with self._lock:
            if seconds:
                self._delays[path] = seconds
            else:
                self._delays.pop(path, None)

    def count(self, path: str) -> int:
        with self._lock:
            return self._counts[path]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._seen)

    @property
    def metadata_fetches(self) -> int:
        return self.count(METADATA_PATH)

    @property
    def jwks_fetches(self) -> int:
        return self.count(JWKS_PATH)

    # -- serving (called from the server threads) --------------------------------------------------------------

    def _answer(self, method: str, path: str, scheme: str, base: str, body: bytes) -> tuple[int, dict[str, Any]]:
        form: dict[str, str] = {}
        if method == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        with self._lock:
            self._counts[path] += 1
            self._seen.append(SeenRequest(method, path, scheme,
                                          {k: v for k, v in form.items() if k != "client_secret"}))
            delay = self._delays.get(path, self._delays.get(None, 0.0))
            fault = next((f for f in self._faults if f.matches(path)), None)
            if fault is not None:
                fault.remaining -= 1
        if delay:
            time.sleep(delay)
        if fault is not None:
            return fault.status, {"error": "injected_fault", "error_description": f"injected HTTP {fault.status}"}

        parts = [p for p in path.split("/") if p]
        if method == "GET" and path == METADATA_PATH:
            return 200, {
                "issuer": self.issuer,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": base + JWKS_PATH,
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        if method == "GET" and path == JWKS_PATH:
            return 200, self.jwks()
        if method == "GET" and len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            tenant = parts[0]
            if self._tenant_error(tenant) == 90002:
                return _TENANT_ERRORS[90002][0], _tenant_error_body(90002, tenant)
            return 200, {
                "issuer": f"{base}/{tenant}/v2.0",
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                          "client_secret_basic"],
                "tenant_region_scope": "WW",
            }
        if method == "POST" and len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            return self._token_answer(form, tenant=parts[0])
        return 404, {"error": "not_found", "error_description": f"no route {method} {path}"}

    def _tenant_error(self, tenant: str) -> int | None:
        with self._lock:
            return self._tenant_errors.get(tenant)

    def _token_answer(self, form: Mapping[str, str], tenant: str | None = None) -> tuple[int, dict[str, Any]]:
        aadsts = self._tenant_error(tenant) if tenant is not None else None
        if aadsts is not None:
            return _TENANT_ERRORS.get(aadsts, (400, ""))[0], _tenant_error_body(aadsts, tenant or "")
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "AADSTS70003: unsupported grant"}
        with self._lock:
            known = self._clients.get(form.get("client_id", ""))
            expires_in = self.token_expires_in
        if known is None or not secrets.compare_digest(known, form.get("client_secret", "")):
            return 401, {"error": "invalid_client", "error_codes": [7000215],
                         "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret "
                                              "being sent in the request is the client secret value."}
        scope = form.get("scope", "")
        if not any(s.endswith("/.default") for s in scope.split()):
            return 400, {"error": "invalid_scope", "error_description": "AADSTS1002012: scope must be /.default"}
        token = f"fake-at-{secrets.token_urlsafe(16)}"
        with self._lock:
            self._issued.append(token)
            if tenant is not None:
                self._issued_tenant[token] = tenant
        return 200, {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
                     "access_token": token}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, *, identity: FakeIdentity, scheme: str) -> None:
        self.identity = identity
        self.scheme = scheme
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):  # the TLS handshake runs in the request's thread, not the acceptor
            request.settimeout(10)
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-request is normal in tests; do not print tracebacks


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real services
    # headers and body go out in two sends: without TCP_NODELAY every answer waits ~40 ms for a delayed ACK
    disable_nagle_algorithm = True
    server: _Server
    timeout = 30  # an idle keep-alive connection's thread ends after this

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet)
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        port = self.server.server_address[1]
        base = f"{self.server.scheme}://127.0.0.1:{port}"
        status, payload = self.server.identity._answer(method, path, self.server.scheme, base, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")


#: AADSTS code -> (HTTP status, OAuth error, description), as Entra answers them (`set_tenant_error`).
_TENANT_ERRORS: dict[int, tuple[int, str, str]] = {
    90002: (400, "invalid_tenant", "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                                   "and are signing into the correct cloud."),
    700016: (400, "unauthorized_client", "Application with identifier '{app}' was not found in the directory "
                                         "'{tenant}'. This can happen if the application has not been installed by "
                                         "the administrator of the tenant or consented to by any user in the tenant."),
    65001: (400, "invalid_grant", "The user or administrator has not consented to use the application."),
    7000222: (401, "invalid_client", "The provided client secret keys for app '{app}' are expired."),
}


def _tenant_error_body(aadsts: int, tenant: str) -> dict[str, Any]:
    _, error, text = _TENANT_ERRORS.get(aadsts, (400, "invalid_request", "Injected error."))
    return {"error": error, "error_codes": [aadsts],
            "error_description": f"AADSTS{aadsts}: " + text.format(tenant=tenant, app="(the app)")}


def _new_kid() -> str:
    return "kid-" + secrets.token_hex(6)


def _write_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for 127.0.0.1, ::1 and localhost (EC P-256, 1 day)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FakeIdentity test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1")),
            x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path

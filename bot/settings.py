"""Configuration, read once at start-up into a frozen `Settings`.

Names follow Bot Framework where it has one (`MicrosoftAppId`, `MicrosoftAppPassword`, `MicrosoftAppType`,
`MicrosoftAppTenantId`, and the endpoint settings `ToBotFromChannelOpenIdMetadataUrl`,
`ToBotFromChannelTokenIssuer`, `ToChannelFromBotLoginUrl`, `ToChannelFromBotOAuthScope`, which default to the
public cloud); the rest are ours (DESIGN.md section 7). An empty value counts as unset, so a copied
`.env.example` changes nothing.

`Settings.from_env` is pure: it reads only the mapping it is given and reports *every* missing or malformed
variable in one `SettingsError`, one per line. `load_settings` adds `.env` support on top. Secret values
(`MicrosoftAppPassword`, `GRAPH_CLIENT_SECRET`, the password inside a `postgresql://` URL) never appear in a
repr, a log line or an error message.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from dataclasses import dataclass, fields
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from babel import Locale, UnknownLocaleError
from dotenv import load_dotenv

from storage.errors import InvalidCurrency
from storage.money import MAX_MAJOR_UNITS, normalize_currency

from .rate_limit import DEFAULT_RATE_LIMIT, RateLimit, parse_rate_limit

#: Accepted `MicrosoftAppType` values, in Bot Framework's spelling (matched case-insensitively).
APP_TYPES = ("MultiTenant", "SingleTenant", "UserAssignedMSI")
#: App types that are bound to one tenant and so need `MicrosoftAppTenantId` (Bot Framework's rule).
TENANT_BOUND_APP_TYPES = frozenset({"SingleTenant", "UserAssignedMSI"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOOPBACK_NAMES = frozenset({"localhost"})
STORE_SCHEMES = ("memory", "postgresql", "postgres")

DEFAULT_APP_TYPE = "MultiTenant"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3978
DEFAULT_STORE = "./data"
DEFAULT_CURRENCY = "USD"
DEFAULT_LOCALE = "en-US"
DEFAULT_GRAPH_SYNC_INTERVAL = 60  # minutes
DEFAULT_LOG_LEVEL = "INFO"
_TRUE = ("on", "true", "yes", "1")
_FALSE = ("off", "false", "no", "0")
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
DEFAULT_BILLED = ("MCOPSTNPP",)
DEFAULT_ALERT_ATTEMPTS = 12   # with the notifier's backoff (15 s doubling to 1 h): about 4 to 8 hours of trying
DEFAULT_DAILY_AT = time(2, 0)  # UTC
#: Bot Framework's public-cloud endpoints (the defaults of the settings of the same names).
DEFAULT_OPENID_METADATA_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
DEFAULT_TOKEN_ISSUER = "https://api.botframework.com"
DEFAULT_OAUTH_SCOPE = "https://api.botframework.com/.default"
PUBLIC_CLOUD_LOGIN = "https://login.microsoftonline.com"
MULTI_TENANT_LOGIN_URL = f"{PUBLIC_CLOUD_LOGIN}/botframework.com"

LOCAL_MODE_HOST_PROBLEM = ("without MicrosoftAppId the bot runs with authentication off and only listens on "
                           "loopback (127.0.0.1, ::1, localhost)")

_SECRET_FIELDS = frozenset({"app_password", "graph_client_secret", "admin_token"})
_GRAPH_VARS = ("GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET")


_PLAIN_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


class SettingsError(Exception):
    """One or more environment variables are missing or malformed.

    `problems` holds one line per variable, `"NAME: why"`; `str()` lists them all, one per line. No line ever
    contains a secret value.
    """

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        header = f"invalid configuration ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n".join([header, *(f"  {p}" for p in self.problems)]))


def is_loopback(host: str) -> bool:
    """True for `localhost` and any loopback address (127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(location: str) -> str:
    """`location` with any password in its URL userinfo replaced by `***` (paths are returned unchanged)."""
    if "://" not in location:
        return location
    try:
        parts = urlsplit(location)
        if parts.password is None:
            return location
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable URL>"


def _shown(value: str, limit: int = 40) -> str:
    """A non-secret value quoted for an error message, cut short so a pasted blob cannot flood it."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


@dataclass(frozen=True, repr=False)
class Settings:
    """The bot's configuration. Build it with `from_env` (pure) or `load_settings` (with `.env`)."""

    app_id: str | None = None
    app_password: str | None = None
    app_type: str = DEFAULT_APP_TYPE
    app_tenant_id: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    store: str = DEFAULT_STORE
    admins: tuple[str, ...] = ()
    currency: str = DEFAULT_CURRENCY
    locale: str = DEFAULT_LOCALE
    graph_tenant_id: str | None = None
    graph_client_id: str | None = None
    graph_client_secret: str | None = None
    graph_sync_interval: int = DEFAULT_GRAPH_SYNC_INTERVAL
    #: Microsoft Graph and its sign-in authority (other clouds; tests point them at fakes on loopback).
    graph_url: str = DEFAULT_GRAPH_URL
    graph_login_url: str = PUBLIC_CLOUD_LOGIN
    #: License capabilities whose calls are paid from Communications Credits (DESIGN.md section 4).
    billed_capabilities: tuple[str, ...] = DEFAULT_BILLED
    #: Token of the loopback admin endpoint (None: a random one, written beside a TinyDB store).
    admin_token: str | None = None
    #: Adding more than this (major units of the account's currency) needs a second admin's approval.
    approval_threshold: Decimal | None = None
    log_level: str = DEFAULT_LOG_LEVEL
    #: Delivery attempts per alert before it is given up (dead-lettered, listed by `alerts failed`).
    alert_attempts: int = DEFAULT_ALERT_ATTEMPTS
    #: When the daily jobs (lot expiry, forecast) run, UTC. They also run at start-up if a day's run was missed.
    daily_at: time = DEFAULT_DAILY_AT
    #: Commands per user (tenant, Entra object id) and time unit; None: no limit (`CREDITS_RATE_LIMIT=0`).
    rate_limit: RateLimit | None = parse_rate_limit(DEFAULT_RATE_LIMIT)
    #: One log line per HTTP request (aiohttp's access log). Off by default: it cost 5% of the event loop per
    #: turn, refusals and failures are logged anyway, and the hosting's front end keeps request logs.
    access_log: bool = False
    to_bot_from_channel_openid_metadata_url: str = DEFAULT_OPENID_METADATA_URL
    to_bot_from_channel_token_issuer: str = DEFAULT_TOKEN_ISSUER
    #: `ToChannelFromBotLoginUrl` as configured; None derives it from the app type (see `outbound_authority`).
    to_channel_from_bot_login_url: str | None = None
    to_channel_from_bot_oauth_scope: str = DEFAULT_OAUTH_SCOPE

    @property
    def local_mode(self) -> bool:
        """No app id: authentication is off, so the bot may listen on loopback only."""
        return not self.app_id

    @property
    def graph_enabled(self) -> bool:
        """Usage sync from Microsoft Graph is configured (all three `GRAPH_*` credentials are set)."""
        return bool(self.graph_tenant_id and self.graph_client_id and self.graph_client_secret)

    @property
    def outbound_authority(self) -> str:
        """The msal authority for bot-to-channel tokens: `ToChannelFromBotLoginUrl` if set, else Bot Framework's
        default for the app type (`.../botframework.com` for MultiTenant, `.../{MicrosoftAppTenantId}` for a
        tenant-bound app)."""
        if self.to_channel_from_bot_login_url:
            return self.to_channel_from_bot_login_url
        if self.app_type in TENANT_BOUND_APP_TYPES and self.app_tenant_id:
            return f"{PUBLIC_CLOUD_LOGIN}/{self.app_tenant_id}"
        return MULTI_TENANT_LOGIN_URL

    @property
    def store_display(self) -> str:
        """`store` safe to log: a password in a `postgresql://` URL is masked."""
        return redact_url(self.store)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS:
                shown.append(f"{f.name}={'<hidden>' if value else None}")
            elif f.name == "store":
                shown.append(f"store={self.store_display!r}")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Settings":
        """Parse `environ` (only; no `.env`, no `os.environ`). Raises one `SettingsError` listing every problem."""
        problems: list[str] = []

        def get(name: str) -> str | None:
            value = environ.get(name)
            if value is None:
                return None
            value = value.strip()
            return value or None

        app_id = get("MicrosoftAppId")
        app_password = get("MicrosoftAppPassword")
        app_tenant_id = get("MicrosoftAppTenantId")

        app_type = DEFAULT_APP_TYPE
        raw_type = get("MicrosoftAppType")
        if raw_type is not None:
            match = [t for t in APP_TYPES if t.lower() == raw_type.lower()]
            if match:
                app_type = match[0]
            else:
                problems.append(f"MicrosoftAppType: must be one of {', '.join(APP_TYPES)}, got {_shown(raw_type)}")

        if app_id:
            if app_type != "UserAssignedMSI" and not app_password:
                problems.append(f"MicrosoftAppPassword: required with MicrosoftAppId when MicrosoftAppType is "
                                f"{app_type}")
            if app_type in TENANT_BOUND_APP_TYPES and not app_tenant_id:
                problems.append(f"MicrosoftAppTenantId: required when MicrosoftAppType is {app_type}")
        else:
            # A password without an id is almost always a misspelt id: it would silently turn authentication off.
            if app_password:
                problems.append("MicrosoftAppPassword: set, but MicrosoftAppId is empty (authentication would be "
                                "off); set MicrosoftAppId or remove the password")
            if app_tenant_id:
                problems.append("MicrosoftAppTenantId: set, but MicrosoftAppId is empty; set MicrosoftAppId or "
                                "remove the tenant id")

        host = get("HOST") or DEFAULT_HOST
        if not app_id and not is_loopback(host):
            problems.append(f"HOST: {LOCAL_MODE_HOST_PROBLEM}; got {_shown(host)}")

        port = _parse_int(get("PORT"), "PORT", DEFAULT_PORT, 1, 65535, problems)

        store = get("CREDITS_STORE") or DEFAULT_STORE
        store_problem = check_store(store)
        if store_problem:
            problems.append(f"CREDITS_STORE: {store_problem}")

        admins: list[str] = []
        for item in (get("CREDITS_ADMINS") or "").split(","):
            item = item.strip()
            if not item:
                continue
            if any(ch.isspace() for ch in item):
                problems.append(f"CREDITS_ADMINS: {_shown(item)} contains whitespace; separate object ids with "
                                "commas")
            elif item not in admins:
                admins.append(item)

        currency = DEFAULT_CURRENCY
        raw_currency = get("CREDITS_CURRENCY")
        if raw_currency is not None:
            try:
                currency = normalize_currency(raw_currency)
            except InvalidCurrency:
                problems.append(f"CREDITS_CURRENCY: not an ISO 4217 currency code, got {_shown(raw_currency)}")

        locale = DEFAULT_LOCALE
        raw_locale = get("CREDITS_LOCALE")
        if raw_locale is not None:
            try:
                locale = str(Locale.parse(raw_locale.replace("-", "_"))).replace("_", "-")
            except (UnknownLocaleError, ValueError, TypeError):
                problems.append(f"CREDITS_LOCALE: not a known locale (for example en-US, da-DK), got "
                                f"{_shown(raw_locale)}")

        graph = {name: get(name) for name in _GRAPH_VARS}
        if any(graph.values()) and not all(graph.values()):
            missing = [name for name, value in graph.items() if not value]
            for name in missing:
                problems.append(f"{name}: required for usage sync when any of {', '.join(_GRAPH_VARS)} is set")
        interval = _parse_int(get("GRAPH_SYNC_INTERVAL"), "GRAPH_SYNC_INTERVAL", DEFAULT_GRAPH_SYNC_INTERVAL,
                              1, 7 * 24 * 60, problems, unit=" minutes")

        graph_url = _url_setting(get, "GRAPH_URL", DEFAULT_GRAPH_URL, problems, https_only=True)
        graph_login_url = _url_setting(get, "GRAPH_LOGIN_URL", PUBLIC_CLOUD_LOGIN, problems, https_only=True,
                                       loopback_http=False)
        billed = DEFAULT_BILLED
        raw_billed = get("CREDITS_BILLED_CAPABILITIES")
        if raw_billed is not None:
            items = tuple(dict.fromkeys(x.strip() for x in raw_billed.split(",") if x.strip()))
            if items and all(re.fullmatch(r"[A-Za-z0-9_]{2,40}", x, re.ASCII) for x in items):
                billed = items
            else:
                problems.append(f"CREDITS_BILLED_CAPABILITIES: comma-separated license capabilities such as "
                                f"MCOPSTNPP, got {_shown(raw_billed)}")

        admin_token = get("CREDITS_ADMIN_TOKEN")
        if admin_token is not None and (len(admin_token) < 24 or any(ch.isspace() for ch in admin_token)):
            problems.append("CREDITS_ADMIN_TOKEN: must be at least 24 characters without spaces")

        approval_threshold: Decimal | None = None
        raw_threshold = get("CREDITS_APPROVAL_THRESHOLD")
        if raw_threshold is not None:
            text = raw_threshold.strip()
            if _PLAIN_AMOUNT.fullmatch(text) and 0 < Decimal(text) <= MAX_MAJOR_UNITS:
                approval_threshold = Decimal(text)
            else:
                problems.append(f"CREDITS_APPROVAL_THRESHOLD: must be a positive plain amount such as 5000 or "
                                f"2500.50, got {_shown(raw_threshold)}")

        alert_attempts = _parse_int(get("CREDITS_ALERT_ATTEMPTS"), "CREDITS_ALERT_ATTEMPTS", DEFAULT_ALERT_ATTEMPTS,
                                    1, 100, problems)
        daily_at = DEFAULT_DAILY_AT
        raw_daily = get("CREDITS_DAILY_AT")
        if raw_daily is not None:
            match = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])", raw_daily, re.ASCII)
            if match:
                daily_at = time(int(match[1]), int(match[2]))
            else:
                problems.append(f"CREDITS_DAILY_AT: must be a UTC time of day as HH:MM (for example 02:00), got "
                                f"{_shown(raw_daily)}")

        rate_limit = parse_rate_limit(DEFAULT_RATE_LIMIT)
        raw_rate = get("CREDITS_RATE_LIMIT")
        if raw_rate is not None:
            try:
                rate_limit = parse_rate_limit(raw_rate)
            except ValueError:
                problems.append(f"CREDITS_RATE_LIMIT: commands per user as N/s, N/min or N/h (for example "
                                f"{DEFAULT_RATE_LIMIT}), or 0 for no limit, got {_shown(raw_rate)}")

        access_log = False
        raw_access = get("CREDITS_ACCESS_LOG")
        if raw_access is not None:
            if raw_access.strip().lower() in _TRUE + _FALSE:
                access_log = raw_access.strip().lower() in _TRUE
            else:
                problems.append(f"CREDITS_ACCESS_LOG: on or off (also true/false, yes/no, 1/0), got "
                                f"{_shown(raw_access)}")

        log_level = DEFAULT_LOG_LEVEL
        raw_level = get("LOG_LEVEL")
        if raw_level is not None:
            if raw_level.upper() in LOG_LEVELS:
                log_level = raw_level.upper()
            else:
                problems.append(f"LOG_LEVEL: must be one of {', '.join(LOG_LEVELS)}, got {_shown(raw_level)}")

        metadata_url = _url_setting(get, "ToBotFromChannelOpenIdMetadataUrl", DEFAULT_OPENID_METADATA_URL, problems,
                                    https_only=True)
        issuer = _url_setting(get, "ToBotFromChannelTokenIssuer", DEFAULT_TOKEN_ISSUER, problems)
        login_url = _url_setting(get, "ToChannelFromBotLoginUrl", None, problems, https_only=True,
                                 loopback_http=False, tenant_path=True)
        scope = _url_setting(get, "ToChannelFromBotOAuthScope", DEFAULT_OAUTH_SCOPE, problems, any_scheme=True)

        if problems:
            raise SettingsError(problems)
        return cls(
            app_id=app_id, app_password=app_password, app_type=app_type, app_tenant_id=app_tenant_id,
            host=host, port=port, store=store, admins=tuple(admins), currency=currency, locale=locale,
            graph_tenant_id=graph["GRAPH_TENANT_ID"], graph_client_id=graph["GRAPH_CLIENT_ID"],
            graph_client_secret=graph["GRAPH_CLIENT_SECRET"], graph_sync_interval=interval,
            graph_url=graph_url or DEFAULT_GRAPH_URL, graph_login_url=graph_login_url or PUBLIC_CLOUD_LOGIN,
            billed_capabilities=billed, admin_token=admin_token,
            approval_threshold=approval_threshold, log_level=log_level, alert_attempts=alert_attempts,
            daily_at=daily_at, rate_limit=rate_limit, access_log=access_log,
            to_bot_from_channel_openid_metadata_url=metadata_url, to_bot_from_channel_token_issuer=issuer,
            to_channel_from_bot_login_url=login_url, to_channel_from_bot_oauth_scope=scope,
        )


def _parse_int(raw: str | None, name: str, default: int, low: int, high: int, problems: list[str], *,
               unit: str = "") -> int:
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        problems.append(f"{name}: must be a whole number from {low} to {high}{unit}, got {_shown(raw)}")
        return default
    return value


def _url_setting(get: Callable[[str], str | None], name: str, default: str | None, problems: list[str], *,
                 https_only: bool = False, loopback_http: bool = True, tenant_path: bool = False,
                 any_scheme: bool = False) -> str | None:
    """The URL in `name` (or `default`), with a problem recorded if it is not an acceptable absolute URL.

    `https_only`: https, or http to a loopback host if `loopback_http` (test fakes); otherwise http or https.
    `tenant_path`: the path must name a tenant (msal's rule for an authority). `any_scheme`: any `scheme://host`
    (an OAuth scope such as `api://...`). The value is kept as given (an issuer is compared exactly), except
    that a tenant path loses its trailing slash.
    """
    raw = get(name)
    if raw is None:
        return default
    why = check_url(raw, https_only=https_only, loopback_http=loopback_http, tenant_path=tenant_path,
                    any_scheme=any_scheme)
    if why:
        problems.append(f"{name}: {why}, got {_shown(redact_url(raw), 80)}")
        return default
    return raw.rstrip("/") if tenant_path else raw


def check_url(value: str, *, https_only: bool = False, loopback_http: bool = True, tenant_path: bool = False,
              any_scheme: bool = False) -> str | None:
    """Why `value` is not an acceptable URL for a Bot Framework endpoint setting, or None."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (parsing the port validates it)
    except ValueError:
        return "not a valid URL"
    if any(ch.isspace() for ch in value) or not parts.scheme or not parts.netloc or not parts.hostname:
        return "must be an absolute URL (scheme://host/...)"
    if parts.username is not None or parts.password is not None:
        return "must not contain user information"
    scheme = parts.scheme.lower()
    if not any_scheme:
        if scheme not in ("http", "https"):
            return "must be an http(s) URL"
        if https_only and scheme != "https" and not (loopback_http and is_loopback(parts.hostname)):
            return ("must be an https URL (http is accepted for loopback hosts only)" if loopback_http
                    else "must be an https URL")
    if tenant_path and not parts.path.strip("/"):
        return "must name a tenant in its path (e.g. https://login.microsoftonline.com/botframework.com)"
    return None


def check_store(store: str) -> str | None:
    """Why `store` cannot name a ledger store, or None. Never echoes a URL (it may hold a password)."""
    if "://" in store:
        scheme = store.split("://", 1)[0].lower()
        if scheme not in STORE_SCHEMES:
            return (f"unknown scheme {_shown(scheme)}; use a directory path, memory:// or a postgresql:// URL")
        if scheme in ("postgresql", "postgres"):
            try:
                parts = urlsplit(store)
                parts.port  # noqa: B018  (parsing the port validates it)
            except ValueError:
                return "not a valid postgresql:// URL"
            if not parts.hostname and not parts.path.strip("/"):
                return "a postgresql:// URL needs a host or a database name"
        return None
    path = Path(store)
    if path.exists() and not path.is_dir():
        return f"{_shown(store)} exists and is not a directory"
    return None


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv: Path | None = None) -> Settings:
    """Settings for this process.

    With `environ` given, parse exactly that mapping (tests). Otherwise load `.env` from the current directory
    (only if the file exists; variables already in the environment win) and parse `os.environ`.
    """
    if environ is None:
        path = dotenv if dotenv is not None else Path.cwd() / ".env"
        if path.is_file():
            load_dotenv(path, override=False)
            logging.getLogger(__name__).debug("loaded %s", path.name)
        environ = os.environ
    return Settings.from_env(environ)

"""Settings: defaults, every problem reported at once, secrets never shown, local mode stays on loopback."""

from __future__ import annotations

import dataclasses
import os

import pytest

from bot.settings import LOCAL_MODE_HOST_PROBLEM, Settings, SettingsError, load_settings

PASSWORD = "pa55-w0rd-never-shown"
GRAPH_SECRET = "graph-s3cret-never-shown"
PG_PASSWORD = "pg-hunter2-never-shown"

PRODUCTION = {
    "MicrosoftAppId": "11111111-2222-3333-4444-555555555555",
    "MicrosoftAppPassword": PASSWORD,
    "MicrosoftAppType": "SingleTenant",
    "MicrosoftAppTenantId": "66666666-7777-8888-9999-000000000000",
    "HOST": "0.0.0.0",
    "PORT": "8080",
    "CREDITS_STORE": f"postgresql://credits:{PG_PASSWORD}@db.internal:5432/credits",
    "CREDITS_ADMINS": " a1 , b2,,a1 ",
    "CREDITS_CURRENCY": "dkk",
    "CREDITS_LOCALE": "da-DK",
    "GRAPH_TENANT_ID": "t",
    "GRAPH_CLIENT_ID": "c",
    "GRAPH_CLIENT_SECRET": GRAPH_SECRET,
    "GRAPH_SYNC_INTERVAL": "15",
    "LOG_LEVEL": "debug",
}


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.host, s.port, s.store) == ("127.0.0.1", 3978, "./data")
    assert (s.app_id, s.app_password, s.app_type, s.app_tenant_id) == (None, None, "MultiTenant", None)
    assert (s.currency, s.locale, s.admins, s.log_level) == ("USD", "en-US", (), "INFO")
    assert s.graph_sync_interval == 60 and not s.graph_enabled
    assert s.local_mode


def test_empty_values_count_as_unset() -> None:
    env = {name: "" for name in PRODUCTION}
    assert Settings.from_env(env) == Settings()


def test_a_full_production_configuration() -> None:
    s = Settings.from_env(PRODUCTION)
    assert not s.local_mode
    assert s.app_type == "SingleTenant" and s.host == "0.0.0.0" and s.port == 8080
    assert s.admins == ("a1", "b2")
    assert s.currency == "DKK" and s.locale == "da-DK" and s.log_level == "DEBUG"
    assert s.graph_enabled and s.graph_sync_interval == 15


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_secrets_are_not_in_repr_or_str() -> None:
    s = Settings.from_env(PRODUCTION)
    for text in (repr(s), str(s), f"{s}"):
        assert PASSWORD not in text
        assert GRAPH_SECRET not in text
        assert PG_PASSWORD not in text
        assert "app_password=<hidden>" in text
    assert PG_PASSWORD not in s.store_display and "db.internal" in s.store_display
    assert "app_password=None" in repr(Settings())


def test_every_problem_is_reported_at_once() -> None:
    env = {
        "MicrosoftAppId": "app",
        "MicrosoftAppType": "Tenantless",
        "PORT": "70000",
        "CREDITS_STORE": "ftp://example",
        "CREDITS_CURRENCY": "EURO",
        "CREDITS_LOCALE": "xx-QQ-nope",
        "GRAPH_CLIENT_ID": "c",
        "GRAPH_SYNC_INTERVAL": "soon",
        "LOG_LEVEL": "LOUD",
    }
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    problems = caught.value.problems
    named = [p.split(":", 1)[0] for p in problems]
    assert set(named) == {
        "MicrosoftAppType", "MicrosoftAppPassword", "PORT", "CREDITS_STORE", "CREDITS_CURRENCY", "CREDITS_LOCALE",
        "GRAPH_TENANT_ID", "GRAPH_CLIENT_SECRET", "GRAPH_SYNC_INTERVAL", "LOG_LEVEL",
    }
    text = str(caught.value)
    assert text.splitlines()[0] == f"invalid configuration ({len(problems)} problems):"
    assert len(text.splitlines()) == len(problems) + 1  # one line per problem
    assert all(":" in p and len(p.split(":", 1)[1].strip()) > 5 for p in problems)  # each says why


def test_tenant_id_required_for_single_tenant() -> None:
    env = {**PRODUCTION, "MicrosoftAppTenantId": ""}
    with pytest.raises(SettingsError, match="MicrosoftAppTenantId: required when MicrosoftAppType is SingleTenant"):
        Settings.from_env(env)


def test_app_type_is_matched_case_insensitively() -> None:
    s = Settings.from_env({**PRODUCTION, "MicrosoftAppType": "multitenant"})
    assert s.app_type == "MultiTenant"


def test_managed_identity_needs_no_password() -> None:
    env = {**PRODUCTION, "MicrosoftAppType": "UserAssignedMSI", "MicrosoftAppPassword": ""}
    assert Settings.from_env(env).app_password is None


def test_secrets_are_never_in_error_text() -> None:
    env = {
        "MicrosoftAppPassword": PASSWORD,  # without an app id: a problem, but the value is not shown
        "GRAPH_CLIENT_SECRET": GRAPH_SECRET,  # without the other GRAPH_* variables
        "CREDITS_STORE": f"postgresql://u:{PG_PASSWORD}@db:notaport/x",
        "PORT": "0",
    }
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    text = str(caught.value)
    assert "MicrosoftAppPassword" in text and "GRAPH_TENANT_ID" in text and "CREDITS_STORE" in text
    for secret in (PASSWORD, GRAPH_SECRET, PG_PASSWORD):
        assert secret not in text
        assert secret not in repr(caught.value)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "bot.example.com"])
def test_local_mode_refuses_a_non_loopback_host(host: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"HOST": host})
    assert caught.value.problems == (f"HOST: {LOCAL_MODE_HOST_PROBLEM}; got {host!r}",)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "LOCALHOST", "127.0.0.2"])
def test_local_mode_accepts_loopback(host: str) -> None:
    assert Settings.from_env({"HOST": host}).host == host


@pytest.mark.parametrize("port", ["0", "65536", "-1", "80.5", "http", "0x50"])
def test_malformed_ports(port: str) -> None:
    with pytest.raises(SettingsError, match=r"^invalid configuration \(1 problem\):\n  PORT: must be a whole"):
        Settings.from_env({"PORT": port})


def test_admin_object_ids_are_opaque() -> None:
    # The Agents Playground's default user: not GUID-shaped, and valid.
    playground = "00000000-0000-0000-0000-0000000000020"
    s = Settings.from_env({"CREDITS_ADMINS": f"{playground},any-opaque_id.42"})
    assert s.admins == (playground, "any-opaque_id.42")


def test_admins_separated_by_spaces_are_reported() -> None:
    with pytest.raises(SettingsError, match="CREDITS_ADMINS: 'a1 b2' contains whitespace"):
        Settings.from_env({"CREDITS_ADMINS": "a1 b2"})


@pytest.mark.parametrize("store", ["./data", "memory://", "postgresql://localhost/credits",
                                   "postgres://u@127.0.0.1:5432/credits"])
def test_accepted_stores(store: str) -> None:
    assert Settings.from_env({"CREDITS_STORE": store}).store == store


def test_a_file_is_not_a_store(tmp_path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text("{}")
    with pytest.raises(SettingsError, match="CREDITS_STORE: .* exists and is not a directory"):
        Settings.from_env({"CREDITS_STORE": str(path)})


def test_dotenv_is_read_from_the_current_directory_without_overriding(tmp_path, monkeypatch) -> None:
    (tmp_path / ".env").write_text("PORT=4000\nCREDITS_CURRENCY=EUR\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CREDITS_CURRENCY", "GBP")
    monkeypatch.delenv("PORT", raising=False)
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MicrosoftAppTenantId", "HOST", "CREDITS_STORE",
                 "GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    try:
        s = load_settings()
    finally:
        os.environ.pop("PORT", None)  # load_dotenv wrote it into os.environ
    assert s.port == 4000
    assert s.currency == "GBP"  # the real environment wins over .env


def test_an_explicit_environ_ignores_dotenv(tmp_path, monkeypatch) -> None:
    (tmp_path / ".env").write_text("PORT=4000\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings({}).port == 3978


# -- Bot Framework endpoints (ToBotFromChannel*, ToChannelFromBot*) ---------------------------------------------


def test_bot_framework_endpoints_default_to_the_public_cloud() -> None:
    s = Settings.from_env({})
    assert s.to_bot_from_channel_openid_metadata_url == \
        "https://login.botframework.com/v1/.well-known/openidconfiguration"
    assert s.to_bot_from_channel_token_issuer == "https://api.botframework.com"
    assert s.to_channel_from_bot_login_url is None
    assert s.to_channel_from_bot_oauth_scope == "https://api.botframework.com/.default"
    assert s.outbound_authority == "https://login.microsoftonline.com/botframework.com"


def test_a_single_tenant_bot_logs_in_to_its_tenant() -> None:
    s = Settings.from_env(PRODUCTION)
    assert s.outbound_authority == f"https://login.microsoftonline.com/{PRODUCTION['MicrosoftAppTenantId']}"
    multi = Settings.from_env({**PRODUCTION, "MicrosoftAppType": "MultiTenant"})
    assert multi.outbound_authority == "https://login.microsoftonline.com/botframework.com"


def test_bot_framework_endpoints_can_be_overridden() -> None:
    env = {
        **PRODUCTION,
        "ToBotFromChannelOpenIdMetadataUrl": "https://login.botframework.azure.us/v1/.well-known/openidconfiguration",
        "ToBotFromChannelTokenIssuer": "https://api.botframework.us",
        "ToChannelFromBotLoginUrl": "https://login.microsoftonline.us/MicrosoftServices.onmicrosoft.com/",
        "ToChannelFromBotOAuthScope": "https://api.botframework.us/.default",
    }
    s = Settings.from_env(env)
    assert s.to_bot_from_channel_openid_metadata_url == env["ToBotFromChannelOpenIdMetadataUrl"]
    assert s.to_bot_from_channel_token_issuer == "https://api.botframework.us"
    assert s.outbound_authority == "https://login.microsoftonline.us/MicrosoftServices.onmicrosoft.com"
    assert s.to_channel_from_bot_oauth_scope == "https://api.botframework.us/.default"


def test_an_issuer_is_kept_exactly() -> None:
    s = Settings.from_env({"ToBotFromChannelTokenIssuer": "https://sts.windows.net/tenant-id/"})
    assert s.to_bot_from_channel_token_issuer == "https://sts.windows.net/tenant-id/"


def test_loopback_endpoints_for_test_fakes() -> None:
    s = Settings.from_env({
        "ToBotFromChannelOpenIdMetadataUrl": "http://127.0.0.1:8080/v1/.well-known/openidconfiguration",
        "ToChannelFromBotLoginUrl": "https://127.0.0.1:8443/botframework.com",
    })
    assert s.to_bot_from_channel_openid_metadata_url.startswith("http://127.0.0.1:8080/")
    assert s.outbound_authority == "https://127.0.0.1:8443/botframework.com"


@pytest.mark.parametrize("name, value, why", [
    ("ToBotFromChannelOpenIdMetadataUrl", "http://login.botframework.com/v1/.well-known/openidconfiguration",
     "must be an https URL (http is accepted for loopback hosts only)"),
    ("ToBotFromChannelOpenIdMetadataUrl", "login.botframework.com/v1", "must be an absolute URL"),
    ("ToBotFromChannelOpenIdMetadataUrl", "https://user:pw@login.botframework.com/x", "must not contain user"),
    ("ToBotFromChannelTokenIssuer", "api.botframework.com", "must be an absolute URL"),
    ("ToBotFromChannelTokenIssuer", "ftp://api.botframework.com", "must be an http(s) URL"),
    ("ToChannelFromBotLoginUrl", "https://login.microsoftonline.com", "must name a tenant in its path"),
    ("ToChannelFromBotLoginUrl", "http://127.0.0.1:8443/botframework.com", "must be an https URL"),
    ("ToChannelFromBotLoginUrl", "https://login.microsoftonline.com:99999/x", "not a valid URL"),
    ("ToChannelFromBotOAuthScope", "api.botframework.com/.default", "must be an absolute URL"),
])
def test_malformed_bot_framework_endpoints(name, value, why) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    [problem] = caught.value.problems
    assert problem.startswith(f"{name}: {why}")


def test_a_password_in_an_endpoint_url_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ToBotFromChannelOpenIdMetadataUrl": f"https://u:{PASSWORD}@login.example/x"})
    assert PASSWORD not in str(caught.value) and "u:***@login.example" in str(caught.value)


def test_every_bot_framework_endpoint_problem_is_reported_at_once() -> None:
    env = {"ToBotFromChannelOpenIdMetadataUrl": "x", "ToBotFromChannelTokenIssuer": "y",
           "ToChannelFromBotLoginUrl": "z", "ToChannelFromBotOAuthScope": "w"}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert [p.split(":", 1)[0] for p in caught.value.problems] == list(env)


def test_a_scope_may_use_another_scheme() -> None:
    assert Settings.from_env({"ToChannelFromBotOAuthScope": "api://my-bot/.default"}).to_channel_from_bot_oauth_scope \
        == "api://my-bot/.default"


def test_the_admin_token_is_checked_and_never_shown() -> None:
    token = "a" * 20 + "-secret-token-value"
    settings = Settings.from_env({"CREDITS_ADMIN_TOKEN": token})
    assert settings.admin_token == token and token not in repr(settings)
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"CREDITS_ADMIN_TOKEN": "short"})
    assert "CREDITS_ADMIN_TOKEN" in str(error.value) and "short" not in str(error.value)


def test_usage_settings_have_defaults_and_are_validated() -> None:
    settings = Settings.from_env({})
    assert settings.billed_capabilities == ("MCOPSTNPP",) and settings.alert_attempts == 12
    assert settings.daily_at.isoformat() == "02:00:00"
    assert Settings.from_env({"CREDITS_DAILY_AT": "23:30"}).daily_at.isoformat() == "23:30:00"
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"CREDITS_DAILY_AT": "25:00", "CREDITS_ALERT_ATTEMPTS": "0",
                           "CREDITS_BILLED_CAPABILITIES": "MCO PSTN", "GRAPH_URL": "http://graph.example"})
    for name in ("CREDITS_DAILY_AT", "CREDITS_ALERT_ATTEMPTS", "CREDITS_BILLED_CAPABILITIES", "GRAPH_URL"):
        assert name in str(error.value)


@pytest.mark.parametrize("raw, on", [("on", True), ("TRUE", True), (" yes ", True), ("1", True), ("off", False),
                                     ("false", False), ("No", False), ("0", False)])
def test_the_access_log_is_off_unless_asked_for(raw: str, on: bool) -> None:
    assert Settings.from_env({}).access_log is False
    assert Settings.from_env({"CREDITS_ACCESS_LOG": raw}).access_log is on


def test_a_bad_access_log_value_is_explained() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CREDITS_ACCESS_LOG": "sometimes"})
    assert any(p.startswith("CREDITS_ACCESS_LOG: on or off") for p in caught.value.problems)

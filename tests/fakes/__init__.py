"""Fakes of the services the bot talks to, on loopback, for tests that go over real HTTP.

* `identity.FakeIdentity`: Bot Framework's OpenID metadata + JWKS (inbound JWT validation) and an Entra-like
  token endpoint for msal (outbound tokens), in threads, over HTTP and HTTPS.
* `connector.FakeConnector`: the Bot Connector REST API (replies, updates, members) on the test's event loop,
  recording every request, with a programmable fault plan.
* `fixtures`: the pytest fixtures `identity`, `identity_server`, `fake_connector` and `http_session`
  (registered in tests/conftest.py with `pytest_plugins`).
"""

"""A real OpenID Provider for the login tests: tests/js/oidc_op.mjs (panva's
oidc-provider, installed by `npm ci --prefix tests/js --ignore-scripts`) run by Node.js
on a free port of 127.0.0.1, and the steps a person takes at its login page, done with
plain HTTP (requests) for the tests that need no browser."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import requests

from tests.tools import free_port, missing, require_tool, stop

JS = Path(__file__).resolve().parent / "js"
SCRIPT = JS / "oidc_op.mjs"
CLIENT_ID = "signflow"
CLIENT_SECRET = "signflow-test-client-secret-0123456789"  # noqa: S105 - a test client's
OTHER_CLIENT = "other-app"
# A client that authenticates with a signed JWT (private_key_jwt), as PSC asks of some.
JWT_CLIENT = "signflow-jwt"


@dataclass(frozen=True)
class OP:
    issuer: str
    app_base_url: str
    jwks: dict[str, Any]
    # JWT_CLIENT's private key (PEM); the OP knows its public half.
    client_key_pem: str


@contextmanager
def running_op(tmp: Path, app_port: int, accounts: dict[str, dict[str, str]]) -> Iterator[OP]:
    """oidc-provider serving the signflow client (redirects to 127.0.0.1:`app_port`) and
    another client, with `accounts` (login -> claims)."""
    node = require_tool("node")
    if not (JS / "node_modules" / "oidc-provider").is_dir():
        missing("oidc-provider is not installed (npm ci --prefix tests/js --ignore-scripts)")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    app = f"http://127.0.0.1:{app_port}"
    jwks = _signing_keys()
    from joserfc.jwk import RSAKey

    client_key = RSAKey.generate_key(2048, parameters={"kid": "client-1"})
    config = {
        "port": port, "issuer": issuer, "accounts": accounts, "jwks": jwks,
        "clients": [
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
             "redirect_uris": [f"{app}/login/oidc/psc/callback"],
             "post_logout_redirect_uris": [f"{app}/login"],
             "grant_types": ["authorization_code"], "response_types": ["code"],
             "token_endpoint_auth_method": "client_secret_basic"},
            # Another relying party at the same provider: its tokens are not for signflow.
            {"client_id": OTHER_CLIENT, "client_secret": "other-app-secret-0123456789abcdef",
             "redirect_uris": [f"{app}/login/oidc/psc/callback"],
             "grant_types": ["authorization_code"], "response_types": ["code"]},
            {"client_id": JWT_CLIENT, "token_endpoint_auth_method": "private_key_jwt",
             "token_endpoint_auth_signing_alg": "RS256",
             "jwks": {"keys": [client_key.as_dict(private=False)]},
             "redirect_uris": [f"{app}/login/oidc/psc-jwt/callback"],
             "grant_types": ["authorization_code"], "response_types": ["code"]},
        ],
    }
    path = tmp / "op.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([node, str(SCRIPT), str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=JS)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            problem = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"the test OP did not start: {line}{problem}")
        pem = client_key.as_pem(private=True).decode()
        yield OP(issuer=issuer, app_base_url=app, jwks={"keys": [_public(k) for k in jwks["keys"]]},
                 client_key_pem=pem)
    finally:
        stop(proc)


def _signing_keys() -> dict[str, Any]:
    """The OP's signing key, made here, so a test can also check what it publishes."""
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, parameters={"kid": "op-key-1", "use": "sig", "alg": "RS256"})
    return {"keys": [key.as_dict(private=True)]}


def _public(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k in ("kty", "kid", "use", "alg", "n", "e")}


def with_param(url: str, **changes: str) -> str:
    """`url` with some query parameters replaced (a tampered authorization request)."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def log_in_at_op(authorize_url: str, login: str, acr: str = "eidas1",
                 browser: requests.Session | None = None) -> str:
    """What the person does at the provider's page, over HTTP: returns where the provider
    sends the browser back (the callback URL with code, state and iss)."""
    op = browser or requests.Session()
    resp = op.get(authorize_url, allow_redirects=False, timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        location = resp.headers.get("Location", "")
        if resp.status_code in (302, 303) and "/interaction/" in location:
            target = requests.compat.urljoin(resp.url, location)
            op.get(target, timeout=10)
            resp = op.post(target + "/login", data={"login": login, "acr": acr},
                           allow_redirects=False, timeout=10)
            continue
        if resp.status_code in (302, 303) and location.startswith(authorize_url.split("/auth")[0]):
            resp = op.get(location, allow_redirects=False, timeout=10)
            continue
        if resp.status_code in (302, 303):
            return location
        raise AssertionError(f"the OP answered {resp.status_code}: {resp.text[:300]}")
    raise AssertionError("the OP never sent the browser back")

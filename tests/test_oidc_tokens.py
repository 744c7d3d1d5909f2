"""The id_token checks, case by case, where a real provider cannot be made to misbehave
(an id_token for another audience, expired, unsigned with `alg: none`, signed by another
key or with the client secret): tokens signed here by a test key, whose public half is
the provider's JWKS (given to the client as a discovery document would, no HTTP).
The round trips with a real provider are in test_oidc.py. Also the providers' settings."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from signflow.config import OidcProvider, load_settings, parse_oidc_providers
from signflow.core.errors import AuthenticationFailed, ConfigurationError
from signflow.web.oidc_client import AuthlibProvider

ISSUER = "https://auth.example.test/realms/psc"
CLIENT = "signflow"
NONCE = "n-0123456789abcdef"
OP_KEY = RSAKey.generate_key(2048, parameters={"kid": "op-1"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "op-1"})


def client(*, algs: list[str] | None = None) -> AuthlibProvider:
    provider = AuthlibProvider(OidcProvider(name="psc", label="Pro Santé Connect", issuer=ISSUER,
                                            client_id=CLIENT, client_secret="s" * 32))
    # What discovery would have loaded: the metadata and the JWKS (public half only).
    provider._app.server_metadata.update({
        "_loaded_at": time.time(), "issuer": ISSUER, "jwks": {"keys": [OP_KEY.as_dict(private=False)]},
        "id_token_signing_alg_values_supported": algs or ["RS256"],
    })
    return provider


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {"iss": ISSUER, "sub": "810001234565", "aud": CLIENT, "exp": now + 300, "iat": now,
              "nonce": NONCE, "acr": "eidas1"}
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def signed(payload: dict[str, Any], key: Any = OP_KEY, alg: str = "RS256") -> dict[str, str]:
    return {"id_token": jwt.encode({"alg": alg, "kid": "op-1"}, payload, key)}


def unsigned(payload: dict[str, Any]) -> dict[str, str]:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return {"id_token": f"{part({'alg': 'none'})}.{part(payload)}."}


def test_a_good_token_passes():
    assert client().verify_id_token(signed(claims()), NONCE)["sub"] == "810001234565"


@pytest.mark.parametrize("token", [
    pytest.param(lambda: signed(claims(aud="other-app")), id="another audience"),
    pytest.param(lambda: signed(claims(aud=["other-app", "third"])), id="audiences without us"),
    pytest.param(lambda: signed(claims(aud="other-app", azp=CLIENT)), id="azp ours, aud not"),
    pytest.param(lambda: signed(claims(exp=int(time.time()) - 600)), id="expired"),
    pytest.param(lambda: signed(claims(exp=None)), id="no exp"),
    pytest.param(lambda: signed(claims(iss="https://evil.example.test")), id="another issuer"),
    pytest.param(lambda: signed(claims(nonce="replayed")), id="wrong nonce"),
    pytest.param(lambda: signed(claims(nonce=None)), id="no nonce"),
    pytest.param(lambda: signed(claims(), key=OTHER_KEY), id="another key, same kid"),
    pytest.param(lambda: unsigned(claims()), id="alg none"),
    pytest.param(lambda: signed(claims(), key=OctKey.import_key("s" * 32), alg="HS256"),
                 id="HS256 with the client secret"),
    pytest.param(lambda: {"id_token": "not.a.token"}, id="garbage"),
])
def test_a_bad_token_is_refused(token):
    with pytest.raises(AuthenticationFailed):
        client().verify_id_token(token(), NONCE)


def test_none_and_hmac_are_refused_even_when_the_provider_offers_them():
    provider = client(algs=["none", "HS256", "RS256"])
    for token in (unsigned(claims()), signed(claims(), key=OctKey.import_key("s" * 32), alg="HS256")):
        with pytest.raises(AuthenticationFailed):
            provider.verify_id_token(token, NONCE)
    assert provider.verify_id_token(signed(claims()), NONCE)["acr"] == "eidas1"
    with pytest.raises(AuthenticationFailed):
        client(algs=["none"]).verify_id_token(signed(claims()), NONCE)


PSC = {"name": "psc", "label": "Pro Santé Connect", "issuer": ISSUER, "client_id": CLIENT,
       "subject_claim": "SubjectNameID", "professional_id_prefix": "8", "acr_values": "eidas1"}


def test_providers_come_from_the_env_with_the_secret_apart(tmp_path):
    env = {"SIGNFLOW_OIDC_PROVIDERS": json.dumps([PSC]), "SIGNFLOW_OIDC_PSC_CLIENT_SECRET": "from-env",
           "SIGNFLOW_INSTANCE": str(tmp_path)}
    settings = load_settings(env)
    assert [(p.name, p.client_secret, p.subject_claim) for p in settings.oidc_providers] == [
        ("psc", "from-env", "SubjectNameID")]
    assert settings.local_login is True
    assert load_settings({**env, "SIGNFLOW_LOCAL_LOGIN": "false"}).local_login is False


def test_providers_and_secret_from_the_instance_folder(tmp_path):
    (tmp_path / "oidc_providers.json").write_text(json.dumps([PSC]))
    (tmp_path / "oidc_psc_client_secret").write_text("from-file\n")
    [provider] = load_settings({"SIGNFLOW_INSTANCE": str(tmp_path)}).oidc_providers
    assert provider.client_secret == "from-file" and provider.two_factor_acr == ("eidas1",)
    assert load_settings({"SIGNFLOW_INSTANCE": str(tmp_path / "none")}).oidc_providers == ()


@pytest.mark.parametrize(("entry", "problem"), [
    ({**PSC, "client_secret": "x"}, "never in the providers list"),
    (PSC, "has no client secret"),
    ({**PSC, "surprise": 1}, "unknown settings"),
    ({**PSC, "issuer": "ftp://x"}, "http(s) URL"),
    ({**PSC, "scopes": "profile"}, "must include openid"),
    ({**PSC, "name": "Bad Name"}, "OpenID Provider name"),
    ({**PSC, "client_auth": "private_key_jwt"}, "needs instance/oidc_psc_key.pem"),
    ({k: v for k, v in PSC.items() if k != "client_id"}, "needs 'client_id'"),
])
def test_a_wrong_provider_entry_fails_closed(tmp_path, entry, problem):
    with pytest.raises(ConfigurationError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_oidc_providers(json.dumps([entry]), {}, tmp_path)
    with pytest.raises(ConfigurationError, match="JSON"):
        parse_oidc_providers("{not json", {}, tmp_path)

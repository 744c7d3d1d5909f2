"""The OpenID Connect relying party, on Authlib's client: discovery, the authorization
request (code flow, PKCE S256, state, nonce, acr_values), the token request
(client_secret_basic/post or private_key_jwt), the id_token checked by Authlib against
the provider's JWKS (signature, iss, aud, exp, nonce, at_hash), userinfo, and the
logout URL. No Flask here: the blueprint (web/oidc.py) keeps the pending login in the
session and hands the verified claims to core (core/accounts/federation.py).

Written here only what Authlib leaves to the application: the issuer of the discovery
document equals the configured one (OpenID Discovery 4.3), the RFC 9207 `iss` of the
callback, the list of signature algorithms (never `none`, never HMAC with the client
secret), the audience pinned to our client id, and userinfo's `sub` equal to the
id_token's (OpenID Core 5.3.2).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests
from authlib.integrations.base_client import BaseApp, OAuth2Mixin, OAuthError, OpenIDMixin
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.errors import JoseError

from signflow.config import OidcProvider
from signflow.core.errors import AuthenticationFailed, ServiceUnavailable
from signflow.core.i18n import N_

# Asymmetric signatures only: `none` is refused, and HS* would make the client secret a
# signing key that the provider's other clients cannot check.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# Seconds of clock difference tolerated on exp/iat.
LEEWAY = 60
log = logging.getLogger("signflow.oidc")


@dataclass(frozen=True)
class Started:
    """An authorization request on its way: the URL to send the browser to, and what
    the callback needs (kept by the blueprint in the signed session)."""

    url: str
    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str


@dataclass(frozen=True)
class Verified:
    """The id_token's claims (merged with userinfo's) and the raw id_token (the logout hint)."""

    claims: dict[str, Any]
    id_token: str


class IdentityProvider(Protocol):
    """What the blueprint needs from a provider; tests or another library may stand in."""

    config: OidcProvider

    def begin(self, redirect_uri: str, *, fresh: bool = False) -> Started: ...

    def finish(self, started: Started, params: Mapping[str, str]) -> Verified: ...

    def logout_url(self, id_token: str, post_logout_redirect_uri: str) -> str | None: ...


class _Framework:
    """Authlib's apps tell their framework about refreshed tokens; a login keeps none."""

    def update_token(self, *args: Any, **kwargs: Any) -> None:
        return None


class _App(OAuth2Mixin, OpenIDMixin, BaseApp):  # type: ignore[misc]
    client_cls = OAuth2Session


def _unavailable(provider: OidcProvider, why: object = None) -> ServiceUnavailable:
    # For the operators: which provider, and the kind of failure (no token, no secret).
    log.warning("OpenID Provider %s unavailable: %s", provider.name,
                why if isinstance(why, str) else type(why).__name__ if why else "")
    return ServiceUnavailable(N_("%(label)s does not answer right now. Try again in a moment, or log "
                                 "in with your signflow user name and password if you have one."),
                              params={"label": provider.label})


def _refused(provider: OidcProvider, why: object = None) -> AuthenticationFailed:
    log.warning("OpenID Provider %s: login refused (%s)", provider.name,
                why if isinstance(why, str) else type(why).__name__ if why else "")
    return AuthenticationFailed(N_("The login through %(label)s could not be checked, so it was "
                                   "refused. Start again from the login page."),
                                params={"label": provider.label})


class AuthlibProvider:
    def __init__(self, config: OidcProvider) -> None:
        self.config = config
        auth_methods = []
        secret: str | None = config.client_secret
        if config.client_auth == "private_key_jwt":
            auth_methods.append(PrivateKeyJWT(alg="RS256"))
            secret = config.private_key
        self._app = _App(
            _Framework(), name=config.name, client_id=config.client_id, client_secret=secret,
            server_metadata_url=config.issuer.rstrip("/") + "/.well-known/openid-configuration",
            client_auth_methods=auth_methods,
            client_kwargs={"scope": config.scopes, "code_challenge_method": "S256",
                           "token_endpoint_auth_method": config.client_auth,
                           "default_timeout": config.timeout_seconds},
        )

    def _metadata(self) -> dict[str, Any]:
        try:
            metadata: dict[str, Any] = self._app.load_server_metadata()
        except (requests.RequestException, ValueError) as exc:
            raise _unavailable(self.config, exc) from exc
        if metadata.get("issuer") != self.config.issuer:
            # Another issuer's document (or a mix-up): nothing it says is trusted.
            self._app.server_metadata.pop("_loaded_at", None)
            raise _unavailable(self.config, "issuer")
        return metadata

    def begin(self, redirect_uri: str, *, fresh: bool = False) -> Started:
        """The authorization request; `fresh`: the person authenticates again at the
        provider (OpenID Connect Core 3.1.2.1, prompt=login), for a step-up."""
        self._metadata()
        extra = {"acr_values": self.config.acr_values} if self.config.acr_values else {}
        if fresh:
            extra["prompt"] = "login"
        try:
            rv = self._app.create_authorization_url(redirect_uri, **extra)
        except RuntimeError as exc:  # the discovery document names no authorization endpoint
            raise _unavailable(self.config, exc) from exc
        return Started(url=rv["url"], state=rv["state"], nonce=rv["nonce"],
                       code_verifier=rv["code_verifier"], redirect_uri=redirect_uri)

    def finish(self, started: Started, params: Mapping[str, str]) -> Verified:
        metadata = self._metadata()
        state = params.get("state") or ""
        if not state or not hmac.compare_digest(state, started.state):
            raise _refused(self.config, "state")
        # RFC 9207: a provider that says it sends `iss` must send ours; any `iss` must match.
        iss = params.get("iss")
        if (iss is None and metadata.get("authorization_response_iss_parameter_supported")) or (
                iss is not None and iss != self.config.issuer):
            raise _refused(self.config, "iss")
        if params.get("error"):
            # Cancelled or refused at the provider: said as such, not as an attack.
            log.info("OpenID Provider %s answered %s", self.config.name, str(params.get("error"))[:64])
            raise AuthenticationFailed(N_("The login at %(label)s did not finish (cancelled or refused "
                                          "there): start again from the login page."),
                                       params={"label": self.config.label})
        if not params.get("code"):
            raise _refused(self.config, "no code")
        try:
            token = self._app.fetch_access_token(started.redirect_uri, code=params["code"],
                                                 code_verifier=started.code_verifier)
        except requests.RequestException as exc:
            raise _unavailable(self.config, exc) from exc
        except OAuthError as exc:
            raise _refused(self.config, exc) from exc
        if "id_token" not in token:
            raise _refused(self.config)
        claims = self.verify_id_token(token, started.nonce)
        userinfo_endpoint = metadata.get("userinfo_endpoint")
        if userinfo_endpoint and "access_token" in token:
            info = self._userinfo(userinfo_endpoint, token)
            if info.get("sub") != claims.get("sub"):
                raise _refused(self.config, "userinfo sub")
            claims = {**info, **claims}
        return Verified(claims=claims, id_token=str(token["id_token"]))

    def verify_id_token(self, token: Mapping[str, Any], nonce: str) -> dict[str, Any]:
        """Authlib checks the id_token in `token` (a token response): signature against the
        provider's JWKS (refetched once for an unknown key id), iss, aud, exp, nonce, at_hash."""
        metadata = self._metadata()
        offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        # Overrides what the discovery document offers: the intersection with ours.
        usable = [a for a in offered if a in ALGORITHMS]
        if not usable:
            # An empty list would let the JOSE library fall back to its own defaults.
            raise _refused(self.config, "no usable signature algorithm")
        self._app.server_metadata["id_token_signing_alg_values_supported"] = usable
        options = {"iss": {"essential": True, "value": self.config.issuer},
                   "aud": {"essential": True, "value": self.config.client_id},
                   "exp": {"essential": True}}
        try:
            claims = self._app.parse_id_token(dict(token), nonce, claims_options=options, leeway=LEEWAY)
        except requests.RequestException as exc:
            raise _unavailable(self.config, exc) from exc
        except (JoseError, ValueError, RuntimeError) as exc:
            raise _refused(self.config, exc) from exc
        if claims is None or claims.get("nonce") != nonce:
            raise _refused(self.config, "nonce")
        return dict(claims)

    def _userinfo(self, endpoint: str, token: Mapping[str, Any]) -> dict[str, Any]:
        try:
            resp = self._app.get(endpoint, token=dict(token))
            resp.raise_for_status()
            data = resp.json()
        except requests.RequestException as exc:
            raise _unavailable(self.config, exc) from exc
        except ValueError as exc:
            raise _refused(self.config, exc) from exc
        if not isinstance(data, dict):
            raise _refused(self.config)
        return data

    def logout_url(self, id_token: str, post_logout_redirect_uri: str) -> str | None:
        try:
            metadata = self._metadata()
        except ServiceUnavailable:
            return None
        if not metadata.get("end_session_endpoint"):
            return None
        rv = self._app.create_logout_url(post_logout_redirect_uri=post_logout_redirect_uri,
                                         id_token_hint=id_token)
        return str(rv["url"])


EXTENSION = "signflow_oidc"


def registered(extensions: Mapping[str, Any]) -> dict[str, IdentityProvider]:
    """The providers the app factory wired (app.extensions), by name."""
    found: dict[str, IdentityProvider] = extensions.get(EXTENSION, {})
    return found


def build(providers: tuple[OidcProvider, ...]) -> dict[str, IdentityProvider]:
    """One client per configured provider (the app factory calls this once)."""
    return {p.name: AuthlibProvider(p) for p in providers}

"""Settings from SIGNFLOW_* environment variables and the instance folder.

Fails closed: a secret is never invented here. `signflow init` writes the
instance secrets (0600 files); production refuses to start without them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from signflow.core.errors import ConfigurationError
from signflow.core.i18n import LANGUAGES as I18N_LANGUAGES

DEFAULT_BASE_URL = "http://127.0.0.1:5000"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name
# The VAPID (RFC 8292) private key that signs every Web Push, PEM, written by `signflow init`.
VAPID_KEY_FILE = "vapid_private_key"
CONFIG_FILE = "signflow.toml"
# OpenID Providers (JSON list) when SIGNFLOW_OIDC_PROVIDERS is not set.
OIDC_PROVIDERS_FILE = "oidc_providers.json"
ENVIRONMENTS = ("production", "development", "testing")
LANGUAGES = I18N_LANGUAGES


@dataclass(frozen=True)
class OidcProvider:
    """One OpenID Provider (Pro Santé Connect, the hospital's own...). The client secret
    or private key never sits in the providers list: SIGNFLOW_OIDC_<NAME>_CLIENT_SECRET
    or instance/oidc_<name>_client_secret (private_key_jwt: instance/oidc_<name>_key.pem)."""

    name: str
    label: str
    issuer: str
    client_id: str
    client_secret: str | None = None
    # client_secret_basic, client_secret_post or private_key_jwt.
    client_auth: str = "client_secret_basic"
    private_key: str | None = None
    scopes: str = "openid profile email"
    acr_values: str | None = None
    # `acr` values that stand for both factors (eIDAS substantial: PSC's card or e-CPS).
    two_factor_acr: tuple[str, ...] = ("eidas1",)
    # The claim that carries the national professional id; PSC: SubjectNameID, which is
    # "8" followed by the RPPS number (professional_id_prefix strips it to match users).
    subject_claim: str = "sub"
    professional_id_prefix: str = ""
    given_name_claim: str = "given_name"
    family_name_claim: str = "family_name"
    email_claim: str = "email"
    timeout_seconds: int = 10
    # None: an unknown professional id is refused. "physician" or "technician": such a
    # person gets an account in that role, disabled until an administrator approves it.
    self_enrol_role: str | None = None


_PROVIDER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_CLIENT_AUTH = ("client_secret_basic", "client_secret_post", "private_key_jwt")


def _secret_for(name: str, env: dict[str, str], instance: Path, kind: str) -> str | None:
    key = f"SIGNFLOW_OIDC_{name.upper().replace('-', '_')}_{kind.upper()}"
    if env.get(key):
        return env[key].strip()
    path = instance / f"oidc_{name}_{kind}"
    return path.read_text().strip() or None if path.is_file() else None


def parse_oidc_providers(raw: Any, env: dict[str, str], instance: Path) -> tuple[OidcProvider, ...]:
    """The providers list (JSON text or already parsed), checked; fails closed on anything
    unknown or missing, and on a secret written into the list itself."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else []
        except ValueError as exc:
            raise ConfigurationError("SIGNFLOW_OIDC_PROVIDERS is not valid JSON") from exc
    if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
        raise ConfigurationError("SIGNFLOW_OIDC_PROVIDERS must be a JSON list of objects")
    known = {f.name for f in fields(OidcProvider)} - {"client_secret", "private_key"}
    found: list[OidcProvider] = []
    for item in raw:
        if "client_secret" in item or "private_key" in item:
            raise ConfigurationError("an OpenID Provider's secret goes in SIGNFLOW_OIDC_<NAME>_CLIENT_SECRET "
                                     "or the instance folder, never in the providers list")
        unknown = set(item) - known
        name = str(item.get("name", ""))
        if unknown:
            raise ConfigurationError(f"OpenID Provider {name!r}: unknown settings {sorted(unknown)}")
        if not _PROVIDER_NAME.fullmatch(name) or any(p.name == name for p in found):
            raise ConfigurationError(f"OpenID Provider name {name!r}: lowercase letters, digits, - or _, "
                                     "unique")
        for required in ("label", "issuer", "client_id"):
            if not item.get(required):
                raise ConfigurationError(f"OpenID Provider {name!r} needs {required!r}")
        if not str(item["issuer"]).startswith(("https://", "http://")):
            raise ConfigurationError(f"OpenID Provider {name!r}: the issuer is an http(s) URL")
        values = dict(item)
        if "two_factor_acr" in values:
            values["two_factor_acr"] = tuple(str(v) for v in values["two_factor_acr"])
        provider = OidcProvider(**values)
        if provider.client_auth not in _CLIENT_AUTH:
            raise ConfigurationError(f"OpenID Provider {name!r}: client_auth is one of "
                                     f"{', '.join(_CLIENT_AUTH)}")
        if provider.self_enrol_role not in (None, "physician", "technician"):
            raise ConfigurationError(f"OpenID Provider {name!r}: self_enrol_role is physician, "
                                     "technician or absent")
        if "openid" not in provider.scopes.split():
            raise ConfigurationError(f"OpenID Provider {name!r}: the scopes must include openid")
        if provider.client_auth == "private_key_jwt":
            path = instance / f"oidc_{name}_key.pem"
            key = path.read_text() if path.is_file() else env.get(
                f"SIGNFLOW_OIDC_{name.upper().replace('-', '_')}_PRIVATE_KEY")
            if not key:
                raise ConfigurationError(f"OpenID Provider {name!r}: private_key_jwt needs "
                                         f"instance/oidc_{name}_key.pem")
            provider = replace(provider, private_key=key)
        else:
            secret = _secret_for(name, env, instance, "client_secret")
            if not secret:
                raise ConfigurationError(f"OpenID Provider {name!r} has no client secret: set "
                                         f"SIGNFLOW_OIDC_{name.upper().replace('-', '_')}_CLIENT_SECRET "
                                         f"or write instance/oidc_{name}_client_secret")
            provider = replace(provider, client_secret=secret)
        found.append(provider)
    return tuple(found)


@dataclass(frozen=True)
class Settings:
    env: str = "production"
    instance_path: Path = Path("instance")
    keys_path: Path = Path("keys")
    database_url: str = ""
    secret_key: str | None = None
    base_url: str = DEFAULT_BASE_URL
    timezone: str = "Europe/Paris"
    # When "tonight" begins on the on-call board (hospital's local time, HH:MM).
    night_starts_at: str = "20:00"
    # Site language ("fr" or "en"); each user may choose, the login page follows the browser.
    language: str = "fr"
    max_upload_mb: int = 25
    max_pages: int = 500
    active_content: str = "strip"  # "strip" or "refuse"
    blob_backend: str = "database"  # "database" or "file"
    allow_countersign: bool = False
    # Minutes a request waits at each escalation level, by urgency.
    deadline_minutes: dict[str, int] = field(
        default_factory=lambda: {"emergency": 5, "urgent": 10, "routine": 60}
    )
    escalation_levels: int = 3
    # A delivered request not acknowledged this long after delivery reminds the
    # destination, then (the second delay) alerts the technician.
    ack_reminder_minutes: int = 30
    ack_alert_minutes: int = 60
    pades_level: str = "B-LTA"
    key_algorithm: str = "ec"
    tsa_url: str | None = None
    # Bearer token sent to SIGNFLOW_TSA_URL (another signflow's /tsa requires one).
    tsa_token: str | None = None
    # Time-stamp requests a minute per API token on /tsa.
    tsa_rate_per_minute: int = 120
    # API calls a minute per token on /api/v1 (counted in Redis when SIGNFLOW_REDIS_URL
    # is set, else in the database: every instance shares the count either way).
    api_rate_per_minute: int = 300
    redis_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "signflow@localhost"
    smtp_starttls: bool = False
    webhook_url: str | None = None
    # Standard Webhooks secret (`whsec_...`) of the SMS/pager gateway.
    webhook_secret: str | None = None
    # VAPID private key (PEM, or the raw key in base64url) that signs Web Push messages.
    vapid_private_key: str | None = None
    # Contact the push services may write to (VAPID `sub`): mailto: or https:.
    vapid_subject: str | None = None
    # Push endpoints come from browsers: private, loopback and link-local addresses are
    # refused unless this is set (tests, a push service inside the hospital).
    allow_private_endpoints: bool = False
    # Seconds a gateway or mail server may take before a message counts as failed.
    notify_timeout_seconds: int = 10
    retention_days: int = 3650
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    audit_origin: str = "signflow.local/audit"
    checkpoint_interval_seconds: int = 300
    # Number of reverse proxies in front of the app whose X-Forwarded-* to trust.
    trusted_proxies: int = 0
    # Sandbox limits for parsing and rendering uploads.
    parse_timeout_seconds: int = 20
    parse_memory_mb: int = 1024
    # PKCS#11 token holding the service keys instead of files (see keys/README.md).
    pkcs11_module: str | None = None
    pkcs11_token: str | None = None
    pkcs11_pin: str | None = None
    pkcs11_pin_file: str | None = None
    # Add a fresh archive timestamp when the newest one expires within this many days.
    lta_renew_days: int = 180
    # Roles that must log in with a second factor (TOTP or a passkey).
    mfa_roles: str = "physician,admin,auditor"
    # A signature needs a second factor used within this many minutes (step-up).
    step_up_minutes: int = 15
    # Password login with a signflow password (off: only the hospital account, passkeys).
    local_login: bool = True
    # The hospital directory (OpenLDAP, Active Directory): off unless the URL is set.
    # ldaps://host, or ldap://host with ldap_starttls; never in clear.
    ldap_url: str | None = None
    ldap_starttls: bool = False
    # The CA (PEM) that issued the directory's certificate; the system's CAs without it.
    ldap_ca_file: str | None = None
    # Who to bind as: a DN ("uid={username},ou=people,dc=hospital,dc=example") or, for
    # Active Directory, a user principal name ("{username}@hospital.example").
    ldap_bind_template: str = ""
    ldap_user_base: str = ""
    ldap_user_filter: str = "(objectClass=person)"
    ldap_username_attribute: str = "uid"
    # The immutable id accounts are linked by: entryUUID (OpenLDAP), objectGUID (AD).
    ldap_id_attribute: str = "entryUUID"
    # An entry matching it cannot log in (AD: userAccountControl's bit 0x2 is checked too).
    ldap_disabled_filter: str = "(pwdAccountLockedTime=*)"
    # "GROUP_DN=role;GROUP_DN=role" (or a TOML table): the first group the user is in wins.
    ldap_group_roles: str | dict[str, str] = ""
    ldap_timeout_seconds: int = 5
    # OpenID Providers users may log in with (SIGNFLOW_OIDC_PROVIDERS: a JSON list, or
    # instance/oidc_providers.json); none by default.
    oidc_providers: tuple[OidcProvider, ...] = ()

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _coerce(name: str, raw: Any, default: Any) -> Any:
    if isinstance(raw, str):
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            try:
                return int(raw)
            except ValueError as exc:
                raise ConfigurationError(f"SIGNFLOW_{name.upper()} must be an integer") from exc
        if isinstance(default, Path):
            return Path(raw)
    return raw


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Defaults < instance/signflow.toml < SIGNFLOW_* env < explicit overrides."""
    env = dict(os.environ if environ is None else environ)
    instance = Path(overrides.get("instance_path") or env.get("SIGNFLOW_INSTANCE", "instance"))
    instance = instance.resolve()
    values: dict[str, Any] = {}
    config_file = instance / CONFIG_FILE
    if config_file.is_file():
        with config_file.open("rb") as fh:
            values.update(tomllib.load(fh))
    defaults = Settings()
    for f in fields(Settings):
        key = "SIGNFLOW_" + f.name.upper()
        if f.name == "instance_path":
            key = "SIGNFLOW_INSTANCE"
        elif f.name == "keys_path":
            key = "SIGNFLOW_KEYS"
        if key in env and f.name != "deadline_minutes":
            values[f.name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    providers_file = instance / OIDC_PROVIDERS_FILE
    if "oidc_providers" not in values and providers_file.is_file():
        values["oidc_providers"] = providers_file.read_text()
    if "oidc_providers" in values and not isinstance(values["oidc_providers"], tuple):
        values["oidc_providers"] = parse_oidc_providers(values["oidc_providers"], env, instance)
    coerced = {
        f.name: _coerce(f.name, values[f.name], getattr(defaults, f.name))
        for f in fields(Settings)
        if f.name in values
    }
    coerced["instance_path"] = instance
    coerced["keys_path"] = Path(coerced.get("keys_path", defaults.keys_path)).resolve()
    if not coerced.get("database_url"):
        coerced["database_url"] = f"sqlite:///{instance / 'signflow.db'}"
    if not coerced.get("secret_key"):
        secret_file = instance / SECRET_KEY_FILE
        if secret_file.is_file():
            coerced["secret_key"] = secret_file.read_text().strip() or None
    if not coerced.get("vapid_private_key"):
        vapid_file = instance / VAPID_KEY_FILE
        if vapid_file.is_file():
            coerced["vapid_private_key"] = vapid_file.read_text().strip() or None
    settings = Settings(**coerced)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    if settings.env not in ENVIRONMENTS:
        raise ConfigurationError(f"SIGNFLOW_ENV must be one of {', '.join(ENVIRONMENTS)}")
    if settings.active_content not in ("strip", "refuse"):
        raise ConfigurationError("SIGNFLOW_ACTIVE_CONTENT must be 'strip' or 'refuse'")
    if settings.blob_backend not in ("database", "file"):
        raise ConfigurationError("SIGNFLOW_BLOB_BACKEND must be 'database' or 'file'")
    if settings.pades_level not in ("B-T", "B-LT", "B-LTA"):
        raise ConfigurationError("SIGNFLOW_PADES_LEVEL must be B-T, B-LT or B-LTA")
    if settings.language not in LANGUAGES:
        raise ConfigurationError(f"SIGNFLOW_LANGUAGE must be one of {', '.join(LANGUAGES)}")
    if settings.key_algorithm not in ("ec", "rsa"):
        raise ConfigurationError("SIGNFLOW_KEY_ALGORITHM must be 'ec' or 'rsa'")
    if not 1 <= settings.ack_reminder_minutes <= settings.ack_alert_minutes:
        raise ConfigurationError("SIGNFLOW_ACK_REMINDER_MINUTES must be at least 1 and at most "
                                 "SIGNFLOW_ACK_ALERT_MINUTES")
    # An evening (12:00 to 23:59): "tonight" is the coming one, never a skipped hour.
    if not re.fullmatch(r"(1\d|2[0-3]):[0-5]\d", str(settings.night_starts_at)):
        raise ConfigurationError("SIGNFLOW_NIGHT_STARTS_AT must be an evening time as HH:MM, "
                                 "from 12:00 to 23:59 (e.g. 20:00)")
    if settings.webhook_url:
        _check_webhook(settings.webhook_url, settings.webhook_secret)
    _check_directory(settings)


def _check_directory(settings: Settings) -> None:
    """Fail closed on what can be told from the settings alone; the rest (bind template,
    group mapping) is checked when the directory is built (services.make_directory)."""
    url = (settings.ldap_url or "").lower()
    if url and not url.startswith(("ldaps://", "ldap://")):
        raise ConfigurationError("SIGNFLOW_LDAP_URL must be ldaps://host[:port] or ldap://host[:port]")
    if url.startswith("ldap://") and not settings.ldap_starttls:
        raise ConfigurationError("SIGNFLOW_LDAP_URL is ldap://: set SIGNFLOW_LDAP_STARTTLS=1 "
                                 "(passwords never travel in clear), or use ldaps://")
    if url and settings.ldap_ca_file and not Path(settings.ldap_ca_file).is_file():
        raise ConfigurationError(f"SIGNFLOW_LDAP_CA_FILE: no such file {settings.ldap_ca_file}")
    if not settings.local_login and not settings.ldap_url and not settings.oidc_providers:
        # Nobody could log in at all (passkeys are enrolled by people already logged in).
        raise ConfigurationError("SIGNFLOW_LOCAL_LOGIN=0 needs another way to log in: set SIGNFLOW_LDAP_URL "
                                 "or an OpenID Provider (SIGNFLOW_OIDC_PROVIDERS)")


def _check_webhook(url: str, secret: str | None) -> None:
    if not url.startswith(("https://", "http://")):
        raise ConfigurationError("SIGNFLOW_WEBHOOK_URL must be an http(s) URL")
    # An unsigned page could be forged by anyone who can reach the gateway.
    key = (secret or "").removeprefix("whsec_")
    try:
        valid = bool(secret and secret.startswith("whsec_")
                     and len(base64.b64decode(key + "=" * (-len(key) % 4), validate=True)) >= 16)
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise ConfigurationError("SIGNFLOW_WEBHOOK_URL needs SIGNFLOW_WEBHOOK_SECRET: whsec_ followed "
                                 "by the base64 of at least 16 random bytes, shared with the gateway")


def require_public_base_url(settings: Settings) -> None:
    """In production the base URL goes into certificates (CRL, TSA) and every link a
    physician is sent: the development default (or any loopback address) is refused."""
    if not settings.production:
        return
    from urllib.parse import urlsplit

    host = urlsplit(settings.base_url).hostname or ""
    if settings.base_url.rstrip("/") == DEFAULT_BASE_URL or host in ("localhost", "::1") \
            or host.startswith("127."):
        raise ConfigurationError(
            "SIGNFLOW_BASE_URL is the development default: set the address users reach this site at"
        )


def require_secret_key(settings: Settings) -> str:
    """The app never runs on an invented key: run `signflow init` or set the env var."""
    key = settings.secret_key
    if not key or len(key) < 32:
        raise ConfigurationError(
            "no secret key: run `signflow init` (writes instance/secret_key) "
            "or set SIGNFLOW_SECRET_KEY (32+ characters)"
        )
    return key


def require_vapid_key(settings: Settings) -> None:
    """Production never runs Web Push unsigned: push services refuse it, and an invented
    key would break every subscription at the next restart."""
    if settings.production and not settings.vapid_private_key:
        raise ConfigurationError(
            "no VAPID key for Web Push: run `signflow init` (writes instance/vapid_private_key) "
            "or set SIGNFLOW_VAPID_PRIVATE_KEY"
        )

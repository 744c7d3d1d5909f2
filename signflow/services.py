"""Composition of adapters, shared by the web app, the worker and the CLI."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from signflow.config import Settings
from signflow.core.accounts import directory as directory_module
from signflow.core.clock import utcnow
from signflow.core.errors import ConfigurationError
from signflow.core.i18n import N_
from signflow.core.integration import limiter
from signflow.core.notify.channels import LogNotifier, Notifier, SignedGateway, SmtpNotifier
from signflow.core.notify.dispatch import ChannelSender, GatewaySender, NotifierSender
from signflow.core.notify.webpush import VapidSigner, WebPushSender
from signflow.core.pades import timestamps
from signflow.core.pdf.preview import PreviewCache
from signflow.core.pdf.sandbox import SandboxLimits
from signflow.core.pki import hsm as hsm
from signflow.core.pki import keystore as pki
from signflow.core.pki import seal as seal_module
from signflow.core.requests.deps import Deps
from signflow.core.storage import BlobStore, make_blob_store
from signflow.db import make_engine, make_session_factory
from signflow.models import Role

PASSPHRASE_FILE = "keys_passphrase"  # noqa: S105 - a file name


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keys: pki.KeyMaterial
    blobs: BlobStore
    previews: PreviewCache
    notifier: Notifier
    # The sender of each channel kind (email, sms, pager; push plugs in here).
    senders: dict[str, ChannelSender]
    deps: Deps
    clock: Callable[[], datetime]
    sandbox: SandboxLimits
    seal: seal_module.Seal
    # Web Push sender; None without a VAPID key (development: push is then off).
    push: WebPushSender | None = None
    # Calls per API token and minute (database, or Redis when SIGNFLOW_REDIS_URL is set).
    api_limiter: limiter.ApiLimiter | None = None
    # The hospital directory (SIGNFLOW_LDAP_URL) and its group -> role mapping; None: not set.
    directory: directory_module.Directory | None = None
    directory_roles: dict[str, str] = field(default_factory=dict)


def keys_passphrase(settings: Settings, environ: dict[str, str] | None = None) -> bytes:
    """The passphrase that encrypts the private keys in the keys folder: from
    SIGNFLOW_KEYS_PASSPHRASE, else the instance file `signflow init` wrote."""
    import os

    env = os.environ if environ is None else environ
    value = env.get("SIGNFLOW_KEYS_PASSPHRASE")
    if not value:
        path = settings.instance_path / PASSPHRASE_FILE
        if path.is_file():
            value = path.read_text().strip()
    if not value:
        raise ConfigurationError(
            N_("no keys passphrase: run `signflow init` or set SIGNFLOW_KEYS_PASSPHRASE")
        )
    return value.encode()


def require_notification_channel(settings: Settings) -> None:
    """In production the processes that serve or send (app, worker) refuse to start
    when requests would reach nobody; one-off commands (verify, check, backup) need not."""
    if settings.production and not (settings.smtp_host or settings.webhook_url):
        raise ConfigurationError(
            N_("no notification channel: set SIGNFLOW_SMTP_HOST or SIGNFLOW_WEBHOOK_URL")
        )


def make_notifier(settings: Settings) -> Notifier:
    """The e-mail transport (SMTP), or the log when none is configured."""
    if settings.smtp_host:
        return SmtpNotifier(settings.smtp_host, settings.smtp_port, settings.smtp_from,
                            starttls=settings.smtp_starttls,
                            timeout=float(settings.notify_timeout_seconds))
    return LogNotifier()


def make_senders(settings: Settings, notifier: Notifier) -> dict[str, ChannelSender]:
    """One sender per channel kind. SMS and pagers go to the signed gateway when one
    is configured; a kind without a transport goes to `notifier` (the log in
    development, a recorder in tests), except in production, where it is left out
    and a message for it fails saying so."""
    senders: dict[str, ChannelSender] = {}
    if settings.smtp_host or not settings.production:
        senders["email"] = NotifierSender(notifier)
    if settings.webhook_url and settings.webhook_secret:
        gateway = GatewaySender(SignedGateway(settings.webhook_url, settings.webhook_secret,
                                              timeout=float(settings.notify_timeout_seconds)))
        senders["sms"] = senders["pager"] = gateway
    elif not settings.production:
        senders["sms"] = senders["pager"] = NotifierSender(notifier)
    return senders


def vapid_subject(settings: Settings) -> str:
    """The contact push services see (VAPID `sub`): the setting, else the site itself."""
    from urllib.parse import urlsplit

    if settings.vapid_subject:
        return settings.vapid_subject
    if settings.base_url.startswith("https://"):
        return settings.base_url.rstrip("/")
    return f"mailto:signflow@{urlsplit(settings.base_url).hostname or 'localhost'}"


def directory_config(settings: Settings) -> directory_module.LdapConfig | None:
    """The directory's settings, checked (fail closed); None when no directory is set."""
    if not settings.ldap_url:
        return None
    config = directory_module.LdapConfig(
        url=settings.ldap_url, bind_template=settings.ldap_bind_template,
        user_base=settings.ldap_user_base, starttls=settings.ldap_starttls,
        ca_file=settings.ldap_ca_file or None, user_filter=settings.ldap_user_filter,
        username_attribute=settings.ldap_username_attribute,
        id_attribute=settings.ldap_id_attribute, disabled_filter=settings.ldap_disabled_filter,
        group_roles=directory_module.parse_group_roles(settings.ldap_group_roles),
        timeout_seconds=settings.ldap_timeout_seconds,
    )
    directory_module.check_config(config)
    # People only: an integration account never logs in; a recipient belongs to a
    # destination service, which the directory does not know (an administrator creates it).
    people = {r.value for r in Role} - {Role.INTEGRATION.value, Role.RECIPIENT.value}
    unknown = sorted(set(config.group_roles.values()) - people)
    if unknown:
        raise ConfigurationError(f"SIGNFLOW_LDAP_GROUP_ROLES: not a role a person logs in with: "
                                 f"{', '.join(unknown)}")
    return config


def make_push_sender(settings: Settings, clock: Callable[[], datetime]) -> WebPushSender | None:
    if not settings.vapid_private_key:
        return None
    return WebPushSender(VapidSigner(settings.vapid_private_key, vapid_subject(settings)), clock=clock,
                         allow_private=settings.allow_private_endpoints)


def build_services(
    settings: Settings, *, clock: Callable[[], datetime] = utcnow, notifier: Notifier | None = None,
    keys: pki.KeyMaterial | None = None,
) -> Services:
    """`keys`: already loaded key material (tests share one; the scrypt that unseals
    the keys folder is deliberately slow)."""
    # First: a wrong directory setting stops the start before anything is opened.
    ldap = directory_config(settings)
    engine = make_engine(settings.database_url)
    notifier = notifier or make_notifier(settings)
    passphrase = keys_passphrase(settings)
    if keys is None:
        keys = pki.load_keys(settings.keys_path, passphrase=passphrase,
                             token=hsm.from_settings(settings))
    blob_root: Path | None = settings.instance_path / "blobs" if settings.blob_backend == "file" else None
    blobs = make_blob_store(settings.blob_backend, keys.master_key, blob_root)
    secret = (settings.secret_key or "").encode()
    deps = Deps(
        keys=keys,
        blobs=blobs,
        timestamper=timestamps.make_timestamper(keys, settings.tsa_url, token=settings.tsa_token),
        timezone=settings.timezone,
        pades_level=settings.pades_level,
        # Derived, so that the session key and the activation key never coincide.
        activation_key=hmac.new(secret, b"signflow/activation", hashlib.sha256).digest(),
        login_key=hmac.new(secret, b"signflow/login", hashlib.sha256).digest(),
        deadline_minutes=settings.deadline_minutes,
        escalation_levels=settings.escalation_levels,
        ack_reminder_minutes=settings.ack_reminder_minutes,
        ack_alert_minutes=settings.ack_alert_minutes,
        night_starts=time.fromisoformat(settings.night_starts_at),
        language=settings.language,
    )
    sandbox = SandboxLimits(timeout_s=float(settings.parse_timeout_seconds),
                            memory_bytes=settings.parse_memory_mb * 1024 * 1024)
    return Services(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        keys=keys,
        blobs=blobs,
        previews=PreviewCache(settings.instance_path / "cache" / "previews", keys.master_key,
                              limits=sandbox),
        notifier=notifier,
        senders=make_senders(settings, notifier),
        deps=deps,
        clock=clock,
        sandbox=sandbox,
        seal=seal_module.load_seal(settings.keys_path, passphrase=passphrase),
        push=make_push_sender(settings, clock),
        api_limiter=limiter.make_limiter(settings.redis_url, settings.api_rate_per_minute),
        directory=directory_module.LdapDirectory(ldap) if ldap is not None else None,
        directory_roles=dict(ldap.group_roles) if ldap is not None else {},
    )

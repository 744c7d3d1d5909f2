"""`signflow init`, `demo`, `serve` and `worker`: bring an instance up and run it."""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, inspect, select
from sqlalchemy import func as sql
from sqlalchemy.orm import Session

from signflow.cli.context import OPERATOR, CliError, record_key_event, settings, write_secret
from signflow.config import (
    SECRET_KEY_FILE,
    VAPID_KEY_FILE,
    Settings,
    load_settings,
    require_public_base_url,
    require_secret_key,
    require_vapid_key,
)
from signflow.core.accounts import contacts, enrolment, mfa
from signflow.core.accounts import signing_pin as credentials
from signflow.core.accounts import users as accounts
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.clock import utcnow
from signflow.core.errors import SignflowError
from signflow.core.notify.webpush import VapidSigner
from signflow.core.ops.demo_outbox import DEMO_MARKER, DEMO_SETTING, OUTBOX_FILE, outbox_of
from signflow.core.pki import credentials as creds
from signflow.core.pki import hsm, seal
from signflow.core.pki import keystore as pki
from signflow.core.requests import oncall
from signflow.db import create_private_file, sqlite_file
from signflow.models import (
    AuditAction,
    ChannelKind,
    Destination,
    OnCallGroup,
    Role,
    RotaShift,
    Setting,
    User,
)
from signflow.services import PASSPHRASE_FILE, Services, build_services, require_notification_channel

Row = TypeVar("Row", Destination, OnCallGroup)


# `signflow demo` resets the demo accounts' passwords: it runs only on an instance it
# made, which it marks with DEMO_MARKER (instance folder) and DEMO_SETTING (database).
PRIVATE_FILES = (SECRET_KEY_FILE, PASSPHRASE_FILE, VAPID_KEY_FILE, DEMO_MARKER, OUTBOX_FILE)


def _tighten(config: Settings) -> None:
    """Owner-only modes on what the instance folder holds (older releases left the
    database 0644): secrets and the SQLite database with its -wal and -shm files."""
    database = sqlite_file(config.database_url)
    names = [*PRIVATE_FILES]
    if database is not None:
        names += [database, f"{database}-wal", f"{database}-shm", f"{database}-journal"]
    for name in names:
        path = config.instance_path / name
        if path.is_file():
            path.chmod(0o600)


def init_instance(config: Settings) -> Settings:
    """Instance folder, secrets, keys, migrations. Safe to run again."""
    from signflow.migrate import upgrade
    from signflow.services import keys_passphrase

    config.instance_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.keys_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _tighten(config)
    if not config.secret_key and not (config.instance_path / SECRET_KEY_FILE).exists():
        write_secret(config.instance_path / SECRET_KEY_FILE, secrets.token_urlsafe(48))
    if not os.environ.get("SIGNFLOW_KEYS_PASSPHRASE") and not (
        config.instance_path / PASSPHRASE_FILE
    ).exists():
        write_secret(config.instance_path / PASSPHRASE_FILE, secrets.token_urlsafe(32))
    if not config.vapid_private_key and not (config.instance_path / VAPID_KEY_FILE).exists():
        # The key browsers subscribe to: made once, kept, or every subscription breaks.
        write_secret(config.instance_path / VAPID_KEY_FILE, VapidSigner.generate_pem())
    config = load_settings(instance_path=config.instance_path, keys_path=config.keys_path,
                           env=config.env, database_url=config.database_url)
    passphrase = keys_passphrase(config)
    token = hsm.from_settings(config)
    created = pki.init_keys(config.keys_path, passphrase=passphrase, now=utcnow(),
                            base_url=config.base_url, token=token)
    keys = pki.load_keys(config.keys_path, passphrase=passphrase, token=token)
    sealed = seal.ensure_seal(config.keys_path, keys, passphrase=passphrase, now=utcnow())
    database = sqlite_file(config.database_url)
    if database is not None:
        create_private_file(database)  # before the migration makes it, with the umask's mode
    upgrade(config.database_url)
    _tighten(config)
    if created or sealed:
        record_key_event(config, AuditAction.KEYS_CREATED, root=f"{keys.root_cert.serial_number:x}",
                         issuing=f"{keys.issuing_cert.serial_number:x}",
                         tsa=f"{keys.tsa_cert.serial_number:x}", on_token=token is not None)
    return config


def cmd_init(args: argparse.Namespace) -> int:
    config = init_instance(settings())
    print(f"instance ready: {config.instance_path} (keys in {config.keys_path})")
    return 0


def ensure_named(session: Session, model: type[Row], name: str) -> Row:
    row = session.scalar(select(model).filter_by(name=name))
    if row is None:
        row = model(name=name)
        session.add(row)
        session.flush()
    return row


DEMO_USERS = [
    ("tech", "Théo Technicien", Role.TECHNICIAN, None),
    ("dr.lefevre", "Dr Hélène Lefèvre", Role.PHYSICIAN, "10001234565"),
    ("dr.nowak", "Dr Łukasz Nowak", Role.PHYSICIAN, "10007654329"),
    ("dr.head", "Pr Øyvind Berg", Role.PHYSICIAN, "10009999995"),
    ("transplant", "Transplant service desk", Role.RECIPIENT, None),
    ("auditor", "Ada Auditor", Role.AUDITOR, None),
    ("admin", "Alex Admin", Role.ADMIN, None),
    ("manager", "Maud Manager", Role.MANAGER, None),
]


# Valid French mobile numbers for the demo physicians: the demo's own SMS page shows what
# is sent to them (or SIGNFLOW_WEBHOOK_URL, when the operator sets one).
DEMO_PHONES = {"dr.lefevre": "+33600000001", "dr.nowak": "+33600000002", "dr.head": "+33600000003"}


DemoLogin = tuple[str, str, str, str | None, str | None]


def _demo_pin() -> str:
    while True:
        pin = f"{secrets.randbelow(10**6):06d}"
        try:
            creds.validate_pin_policy(pin)
            return pin
        except SignflowError:
            continue


def seed_demo(svc: Services) -> list[DemoLogin]:
    """Demo users, group, rota and destination; new passwords, PINs and TOTP seeds each run."""
    now = svc.clock()
    printed: list[DemoLogin] = []
    with svc.sessions() as session, session.begin():
        destination = ensure_named(session, Destination, "Transplant service")
        group = ensure_named(session, OnCallGroup, "Anaesthesia on call")
        for username, name, role, rpps in DEMO_USERS:
            password = "demo-" + secrets.token_urlsafe(9)
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                user = accounts.create_user(
                    session, actor=OPERATOR, now=now, username=username, display_name=name,
                    role=role, password=password, professional_id=rpps,
                    email=f"{username}@hospital.example",
                    destination_id=destination.id if role == Role.RECIPIENT else None,
                )
            else:
                user.password_hash = accounts.hash_password(password)
                user.active, user.failed_logins = True, 0
            pin = None
            if role == Role.PHYSICIAN:
                pin = _demo_pin()
                if creds.active_credential(session, user.id) is not None:
                    credentials.revoke_credential(session, actor=OPERATOR, user_id=user.id,
                                                  reason="superseded", now=now)
                # Verified demo channels, the phone first (a page rings it; the e-mail is next
                # should the SMS fail): pages show up on the demo's SMS page and mail catcher.
                contacts.add_verified(session, actor=OPERATOR, user=user, kind=ChannelKind.SMS,
                                      address=DEMO_PHONES[username], now=now)
                # The operator's break-glass path: the code the physician would receive (at
                # the account's e-mail, which using it verifies).
                code = enrolment.send_code(session, svc.keys.master_key, actor=Actor.of(user), now=now)
                credentials.set_signing_pin(session, svc.keys, actor=Actor.of(user), current_pin=None,
                                            new_pin=pin, now=now, enrolment_code=code)
            totp = None
            if mfa.required_for(user, svc.settings.mfa_roles):
                totp = mfa.new_secret()
                user.totp_secret_enc = mfa.seal_secret(svc.keys.master_key, user, totp)
                user.totp_last_step = None
            printed.append((username, password, role, pin, totp))
        users = {u.username: u for u in session.scalars(select(User))}
        group.head_user_id = users["dr.head"].id
        for username, level in (("dr.lefevre", oncall.PRIMARY), ("dr.nowak", oncall.BACKUP)):
            covered = session.scalar(select(RotaShift).where(
                RotaShift.user_id == users[username].id, RotaShift.group_id == group.id,
                RotaShift.starts_at <= now, RotaShift.ends_at > now + timedelta(hours=12)))
            if covered is None:
                session.add(RotaShift(group_id=group.id, user_id=users[username].id, level=level,
                                      starts_at=now - timedelta(hours=1),
                                      ends_at=now + timedelta(days=7)))
        if session.scalar(select(Setting).where(Setting.name == DEMO_SETTING)) is None:
            session.add(Setting(name=DEMO_SETTING, value="created by `signflow demo`"))
        audit.append(session, now=now, actor=OPERATOR, action=AuditAction.DEMO_SEEDED)
    return printed


def _serve(app_factory: Callable[[], Any], host: str, port: int, *, workers: int = 2) -> None:
    from gunicorn.app.base import BaseApplication

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", 4)
            self.cfg.set("timeout", 120)
            self.cfg.set("accesslog", "-")

        def load(self) -> Any:
            return app_factory()

    _App().run()


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _database_state(url: str) -> tuple[bool, bool]:
    """(holds accounts, marked as the demo's), looked at without creating anything."""
    database = sqlite_file(url)
    if database is not None and not Path(database).exists():
        return False, False
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if "users" not in tables:
                return False, False
            has_users = conn.scalar(select(sql.count()).select_from(User)) or 0
            marked = "settings" in tables and conn.scalar(
                select(sql.count()).select_from(Setting).where(Setting.name == DEMO_SETTING))
            return bool(has_users), bool(marked)
    finally:
        engine.dispose()


def claim_demo_instance(config: Settings) -> None:
    """Refuse (CliError, nothing changed) an instance `signflow demo` did not create;
    mark a new, empty one as the demo's."""
    marker = config.instance_path / DEMO_MARKER
    refusal = (
        f"{config.instance_path} was not created by `signflow demo` (it has no {DEMO_MARKER} "
        "file), and the demo resets the passwords of its accounts: nothing was changed. "
        "Run the demo with SIGNFLOW_INSTANCE and SIGNFLOW_KEYS pointing at new folders "
        "(and SIGNFLOW_DATABASE_URL unset)."
    )
    has_users, marked = _database_state(config.database_url)
    if marker.is_file():
        if has_users and not marked:
            raise CliError(refusal.replace("(it has no", "(its database has no").replace(
                f"{DEMO_MARKER} file", f"{DEMO_SETTING} setting"))
        return
    if _has_files(config.instance_path) or _has_files(config.keys_path) or has_users:
        raise CliError(refusal)
    config.instance_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_secret(marker, "created by `signflow demo`: its demo accounts are reset on every run")


def cmd_demo(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from signflow.app import create_app
    from signflow.cli.demo_gateways import mail_catcher, new_webhook_secret, sms_gateway
    from signflow.jobs import start_in_thread

    base_url = f"http://{args.host}:{args.port}"
    config = settings(env=os.environ.get("SIGNFLOW_ENV", "development"),
                      base_url=os.environ.get("SIGNFLOW_BASE_URL", base_url))
    claim_demo_instance(config)
    config = init_instance(config)
    outbox = outbox_of(config.instance_path)
    with ExitStack() as sinks:
        # The demo's own mail catcher and SMS gateway, unless the operator points it at real ones.
        if not config.smtp_host:
            port = sinks.enter_context(mail_catcher(outbox, utcnow))
            config = config.with_overrides(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
        if not config.webhook_url:
            secret = new_webhook_secret()
            url = sinks.enter_context(sms_gateway(outbox, secret, utcnow))
            config = config.with_overrides(webhook_url=url, webhook_secret=secret)
        _run_demo(config, args, base_url, create_app, start_in_thread)
    return 0


def _run_demo(config: Settings, args: argparse.Namespace, base_url: str,
              create_app: Callable[..., Any], start_in_thread: Callable[..., Any]) -> None:
    svc = build_services(config)
    printed = seed_demo(svc)
    print(f"\nsignflow demo running at {base_url}\n")
    print(f"{'login':<12} {'password':<20} {'role':<11} {'PIN':<7} TOTP secret")
    for username, password, role, pin, totp in printed:
        print(f"{username:<12} {password:<20} {role:<11} {pin or '-':<7} {totp or '-'}")
    print("\nPhysicians, admin and auditor log in with a second factor: add the TOTP secret to an"
          "\nauthenticator app (or: python -c \"import pyotp; print(pyotp.TOTP('SECRET').now())\")."
          "\nThe PIN unlocks the physician's own signing key. Dr Lefèvre is on call now"
          "\n(Dr Nowak backup, Pr Berg head of department)."
          f"\nEvery e-mail and SMS/pager message sent: {base_url}/demo/messages (log in as admin)"
          f"\n(mail to {config.smtp_host}:{config.smtp_port}, SMS/pager webhook to {config.webhook_url})."
          "\nCtrl-C stops.\n", flush=True)
    # SQLite (like a PKCS#11 session) must not be open across gunicorn's fork: the
    # worker inherits the parent's lock bookkeeping and its own writes wait forever.
    # So the parent lets go of the database, and the job thread runs in the worker.
    svc.engine.dispose()

    def demo_app() -> Any:
        app = create_app(config)
        start_in_thread(app.extensions["signflow"], interval=5)
        return app

    _serve(demo_app, args.host, args.port, workers=1)


def cmd_serve(args: argparse.Namespace) -> int:
    from signflow.app import create_app

    config = settings()
    require_secret_key(config)
    require_notification_channel(config)
    require_public_base_url(config)
    require_vapid_key(config)
    if hsm.config_from(config.pkcs11_module, config.pkcs11_token, config.pkcs11_pin,
                       config.pkcs11_pin_file) is None:
        # Fail now, in the foreground, on a bad configuration. Not with a token: a PKCS#11
        # session must not be opened before gunicorn forks its workers.
        create_app(config)
    _serve(lambda: create_app(config), args.host, args.port, workers=args.workers)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from signflow.jobs import run_forever, run_once

    config = settings()
    require_notification_channel(config)
    require_vapid_key(config)
    svc = build_services(config)
    if args.once:
        print(run_once(svc))
        return 0
    run_forever(svc, interval=args.interval)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the `signflow` parser."""
    sub.add_parser("init", help="create keys and instance, run migrations (idempotent)").set_defaults(
        func=cmd_init)
    for name, func, help_text in (("demo", cmd_demo, "init + demo data + server + worker"),
                                  ("serve", cmd_serve, "run the web server (gunicorn)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=5000)
        if name == "serve":
            p.add_argument("--workers", type=int, default=2)
        p.set_defaults(func=func)

    p = sub.add_parser("worker", help="escalations, notifications, checkpoints")
    p.add_argument("--once", action="store_true")
    p.add_argument("--interval", type=float, default=5.0)
    p.set_defaults(func=cmd_worker)

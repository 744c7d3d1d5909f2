"""The `signflow` command. Exit 0 on success; errors are one line on stderr."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy import select

from signflow import logs
from signflow.config import SECRET_KEY_FILE, Settings, load_settings, require_secret_key
from signflow.core import accounts, audit, credentials, hsm, mfa, oncall, pki, seal, signing
from signflow.core.audit import Actor
from signflow.core.clock import utcnow
from signflow.core.errors import SignflowError
from signflow.models import Destination, OnCallGroup, Role, RotaShift, User
from signflow.services import (
    PASSPHRASE_FILE,
    Services,
    build_services,
    require_notification_channel,
)

CLI_ACTOR = Actor(id=None, name="cli", role="operator")


class CliError(Exception):
    pass


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def init_instance(settings: Settings) -> Settings:
    """Instance folder, secrets, keys, migrations. Safe to run again."""
    from signflow.migrate import upgrade

    settings.instance_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.keys_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not settings.secret_key and not (settings.instance_path / SECRET_KEY_FILE).exists():
        _write_secret(settings.instance_path / SECRET_KEY_FILE, secrets.token_urlsafe(48))
    if not os.environ.get("SIGNFLOW_KEYS_PASSPHRASE") and not (
        settings.instance_path / PASSPHRASE_FILE
    ).exists():
        _write_secret(settings.instance_path / PASSPHRASE_FILE, secrets.token_urlsafe(32))
    settings = load_settings(instance_path=settings.instance_path, keys_path=settings.keys_path,
                             env=settings.env, database_url=settings.database_url)
    from signflow.services import keys_passphrase

    passphrase = keys_passphrase(settings)
    token = hsm.from_settings(settings)
    created = pki.init_keys(settings.keys_path, passphrase=passphrase, now=utcnow(),
                            base_url=settings.base_url, token=token)
    keys = pki.load_keys(settings.keys_path, passphrase=passphrase, token=token)
    sealed = seal.ensure_seal(settings.keys_path, keys, passphrase=passphrase, now=utcnow())
    upgrade(settings.database_url)
    if created or sealed:
        record_key_event(settings, "keys.created", root=f"{keys.root_cert.serial_number:x}",
                         issuing=f"{keys.issuing_cert.serial_number:x}",
                         tsa=f"{keys.tsa_cert.serial_number:x}", on_token=token is not None)
    return settings


def record_key_event(settings: Settings, action: str, **details: Any) -> None:
    """Key material changed outside any request: audited in a transaction of its own."""
    from signflow.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            audit.append(session, now=utcnow(), actor=CLI_ACTOR, action=action, **details)
    finally:
        engine.dispose()


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(**overrides)


def cmd_init(args: argparse.Namespace) -> int:
    settings = init_instance(_settings(args))
    print(f"instance ready: {settings.instance_path} (keys in {settings.keys_path})")
    return 0


def _ensure(session: Any, model: Any, **where: Any) -> Any:
    row = session.scalar(select(model).filter_by(**where))
    if row is None:
        row = model(**where)
        session.add(row)
        session.flush()
    return row


DEMO_USERS = [
    ("tech", "Théo Technicien", Role.TECHNICIAN, None),
    ("dr.lefevre", "Dr Hélène Lefèvre", Role.PHYSICIAN, "10001234567"),
    ("dr.nowak", "Dr Łukasz Nowak", Role.PHYSICIAN, "10007654321"),
    ("dr.head", "Pr Øyvind Berg", Role.PHYSICIAN, "10009999999"),
    ("transplant", "Transplant service desk", Role.RECIPIENT, None),
    ("auditor", "Ada Auditor", Role.AUDITOR, None),
    ("admin", "Alex Admin", Role.ADMIN, None),
]


DemoLogin = tuple[str, str, str, str | None, str | None]


def seed_demo(svc: Services) -> list[DemoLogin]:
    """Demo users, group, rota and destination; new passwords, PINs and TOTP seeds each run."""
    now = svc.clock()
    printed: list[DemoLogin] = []
    with svc.sessions() as session, session.begin():
        destination = _ensure(session, Destination, name="Transplant service")
        group = _ensure(session, OnCallGroup, name="Anaesthesia on call")
        for username, name, role, rpps in DEMO_USERS:
            password = "demo-" + secrets.token_urlsafe(9)
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                user = accounts.create_user(
                    session, actor=CLI_ACTOR, now=now, username=username, display_name=name,
                    role=role, password=password, professional_id=rpps,
                    email=f"{username}@hospital.example",
                    destination_id=destination.id if role == Role.RECIPIENT else None,
                )
            else:
                user.password_hash = accounts.hash_password(password)
                user.active, user.failed_logins = True, 0
            pin = None
            if role == Role.PHYSICIAN:
                pin = f"{secrets.randbelow(10**6):06d}"
                while True:
                    try:
                        pki.validate_pin_policy(pin)
                        break
                    except SignflowError:
                        pin = f"{secrets.randbelow(10**6):06d}"
                if pki.active_credential(session, user.id) is not None:
                    credentials.revoke_credential(session, actor=CLI_ACTOR, user_id=user.id,
                                                  reason="superseded", now=now)
                credentials.set_signing_pin(session, svc.keys, user, current_pin=None,
                                            new_pin=pin, now=now, ip=None)
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
        audit.append(session, now=now, actor=CLI_ACTOR, action="demo.seeded")
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


def cmd_demo(args: argparse.Namespace) -> int:
    base_url = f"http://{args.host}:{args.port}"
    settings = init_instance(_settings(args, env=os.environ.get("SIGNFLOW_ENV", "development"),
                                       base_url=os.environ.get("SIGNFLOW_BASE_URL", base_url)))
    svc = build_services(settings)
    printed = seed_demo(svc)
    print(f"\nsignflow demo running at {base_url}\n")
    print(f"{'login':<12} {'password':<20} {'role':<11} {'PIN':<7} TOTP secret")
    for username, password, role, pin, totp in printed:
        print(f"{username:<12} {password:<20} {role:<11} {pin or '-':<7} {totp or '-'}")
    print("\nPhysicians, admin and auditor log in with a second factor: add the TOTP secret to an"
          "\nauthenticator app (or: python -c \"import pyotp; print(pyotp.TOTP('SECRET').now())\")."
          "\nThe PIN unlocks the physician's own signing key. Dr Lefèvre is on call now"
          "\n(Dr Nowak backup, Pr Berg head of department). Ctrl-C stops.\n", flush=True)
    from signflow.jobs import start_in_thread

    start_in_thread(svc, interval=5)
    from signflow.app import create_app

    _serve(lambda: create_app(settings), args.host, args.port, workers=1)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from signflow.app import create_app

    require_secret_key(settings)
    require_notification_channel(settings)
    if hsm.config_from(settings.pkcs11_module, settings.pkcs11_token, settings.pkcs11_pin,
                       settings.pkcs11_pin_file) is None:
        # Fail now, in the foreground, on a bad configuration. Not with a token: a PKCS#11
        # session must not be opened before gunicorn forks its workers.
        create_app(settings)
    _serve(lambda: create_app(settings), args.host, args.port, workers=args.workers)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from signflow.jobs import run_forever, run_once

    settings = _settings(args)
    require_notification_channel(settings)
    svc = build_services(settings)
    if args.once:
        print(run_once(svc))
        return 0
    run_forever(svc, interval=args.interval)
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    svc = build_services(_settings(args))
    password = os.environ.get("SIGNFLOW_NEW_PASSWORD") or getpass.getpass("Password: ")
    with svc.sessions() as session, session.begin():
        destination_id = None
        if args.destination:
            destination_id = _ensure(session, Destination, name=args.destination).id
        user = accounts.create_user(
            session, actor=CLI_ACTOR, now=svc.clock(), username=args.username,
            display_name=args.name or args.username, role=args.role, password=password,
            email=args.email, professional_id=args.professional_id, destination_id=destination_id,
        )
        print(f"created {user.role} {user.username} (id {user.id})")
    return 0


def _user_by_name(session: Any, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username.lower()))
    if user is None:
        raise CliError(f"no user named {username!r}")
    return user


def cmd_api_token(args: argparse.Namespace) -> int:
    svc = build_services(_settings(args))
    with svc.sessions() as session, session.begin():
        if args.token_command == "create":  # noqa: S105 - a subcommand name
            user = _user_by_name(session, args.username)
            issued = accounts.create_api_token(session, actor=CLI_ACTOR, user=user,
                                               name=args.name, now=svc.clock())
            print(f"token id {issued.token_id} for {user.username} (shown once):")
            print(issued.token)
        else:
            accounts.revoke_api_token(session, actor=CLI_ACTOR, token_id=args.token_id,
                                      now=svc.clock())
            print(f"token {args.token_id} revoked")
    return 0


def cmd_cert_revoke(args: argparse.Namespace) -> int:
    svc = build_services(_settings(args))
    with svc.sessions() as session, session.begin():
        user = _user_by_name(session, args.username)
        cred = credentials.revoke_credential(session, actor=CLI_ACTOR, user_id=user.id,
                                             reason=args.reason, now=svc.clock())
        print(f"certificate {cred.serial} of {user.username} revoked ({args.reason})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    settings = _settings(args)
    root_file = settings.keys_path / pki.ROOT_CERT
    if not root_file.is_file():
        raise CliError(f"no hospital root certificate in {settings.keys_path} (set SIGNFLOW_KEYS)")
    root = x509.load_pem_x509_certificate(root_file.read_bytes())
    report = signing.validate_pdf(path.read_bytes(), trust_roots=[root],
                                  crls=_published_crls(settings), now=utcnow())
    if args.json:
        print(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        if not report.signatures:
            raise CliError(f"{path}: no signature in this PDF")
        for sig in report.signatures:
            kind = "document timestamp" if sig.is_timestamp else f"signed by {sig.signer}"
            when = sig.timestamp_time or sig.signing_time
            flags = ", ".join([
                "intact" if sig.intact else "MODIFIED",
                "trusted" if sig.trusted else "NOT TRUSTED",
                *(["REVOKED"] if sig.revoked else []),
                f"coverage {sig.coverage}",
                *([f"PAdES {sig.pades_level}"] if sig.pades_level else []),
            ])
            print(f"{'OK ' if sig.ok else 'BAD'} {kind}, {when.isoformat() if when else 'no time'}: {flags}")
            for problem in sig.problems:
                print(f"    {problem}")
        print("valid" if report.ok else "NOT VALID")
    return 0 if report.ok else 1


def _published_crls(settings: Settings) -> list[bytes]:
    """CRLs from the live service when there is one (revocations known to us); the
    file's own embedded validation data otherwise."""
    try:
        svc = build_services(settings)
        with svc.sessions() as session, session.begin():
            return [pki.crl(session, svc.keys, issuer=i, now=utcnow()) for i in ("root", "issuing")]
    except Exception:  # verify must work from a bare keys folder too
        return []


def _service_verifier_key(settings: Settings) -> str | None:
    """The audit key this service signs with, from the public half in the keys folder
    (no passphrase needed), so that a bundle re-signed with another key fails."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from signflow import auditverify

    path = settings.keys_path / pki.AUDIT_PUB
    if not path.is_file():
        return None
    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise CliError(f"{path} is not an Ed25519 public key")
    return auditverify.verifier_key(settings.audit_origin, key)


def cmd_audit(args: argparse.Namespace) -> int:
    from signflow import auditverify

    if args.audit_command == "verify" and args.bundle:
        trusted = args.trusted_key or _service_verifier_key(_settings(args))
        argv = [args.bundle, *sum((["--checkpoint", c] for c in args.checkpoint or []), [])]
        if trusted:
            argv += ["--trusted-key", trusted]
        return auditverify.main(argv)
    svc = build_services(_settings(args))
    if args.audit_command == "verify":
        with svc.sessions() as session:
            result = audit.verify_log(session, public_key=svc.keys.audit_key.public_key(),
                                      origin=svc.settings.audit_origin)
        if result.ok:
            print(result.line())
            return 0
        print(result.line(), file=sys.stderr)
        return 1
    with svc.sessions() as session, session.begin():
        exported = audit.export_bundle(session, Path(args.out), signing_key=svc.keys.audit_key,
                                       origin=svc.settings.audit_origin, now=svc.clock(),
                                       actor=CLI_ACTOR)
    print(f"exported {exported.size} entries and {exported.checkpoint_count} checkpoint(s) "
          f"to {exported.path}; verifier key {exported.verifier_key}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("create-user", help="create a user (password from the prompt or "
                                           "SIGNFLOW_NEW_PASSWORD)")
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--name")
    p.add_argument("--email")
    p.add_argument("--professional-id")
    p.add_argument("--destination", help="destination service name (recipients)")
    p.set_defaults(func=cmd_create_user)

    p = sub.add_parser("api-token", help="API bearer tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    c = tsub.add_parser("create")
    c.add_argument("username")
    c.add_argument("--name", default="api")
    r = tsub.add_parser("revoke")
    r.add_argument("token_id", type=int)
    p.set_defaults(func=cmd_api_token)

    p = sub.add_parser("cert", help="physician certificates")
    csub = p.add_subparsers(dest="cert_command", required=True)
    c = csub.add_parser("revoke")
    c.add_argument("username")
    c.add_argument("--reason", default="superseded",
                   choices=["key_compromise", "affiliation_changed", "superseded",
                            "cessation_of_operation"])
    p.set_defaults(func=cmd_cert_revoke)

    p = sub.add_parser("verify", help="validate the signatures of a PDF")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("audit", help="verify or export the audit log")
    asub = p.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify")
    v.add_argument("bundle", nargs="?")
    v.add_argument("--checkpoint", action="append", help="a checkpoint you kept earlier")
    v.add_argument("--trusted-key", help="verifier key string or audit-key.pub the bundle must "
                                         "be signed with (default: this service's key, if known)")
    e = asub.add_parser("export")
    e.add_argument("out")
    p.set_defaults(func=cmd_audit)

    from signflow import cli_ops, cli_pki

    cli_ops.register(sub)
    cli_pki.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(logging.INFO if args.verbose else logging.WARNING)
    for name in ("pyhanko", "pyhanko_certvalidator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return int(args.func(args))
    except (SignflowError, CliError) as exc:
        print(f"signflow: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2 if isinstance(exc, CliError) else 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, never a traceback
        print(f"signflow: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""`signflow pki ...`: service keys on a PKCS#11 token, TSA certificate, archive timestamps."""

from __future__ import annotations

import argparse

from signflow.cli.context import OPERATOR, operator_services, record_key_event, settings
from signflow.core.clock import utcnow
from signflow.core.errors import ConfigurationError
from signflow.core.ops import archive_renewal as archive
from signflow.core.pki import hsm, tsa
from signflow.core.pki import keystore as pki
from signflow.models import AuditAction


def cmd_hsm_init(args: argparse.Namespace) -> int:
    from signflow.services import keys_passphrase

    config = settings()
    token = hsm.from_settings(config)
    if token is None:
        raise ConfigurationError(
            "no PKCS#11 token configured: set SIGNFLOW_PKCS11_MODULE, SIGNFLOW_PKCS11_TOKEN "
            "and SIGNFLOW_PKCS11_PIN (or SIGNFLOW_PKCS11_PIN_FILE)"
        )
    passphrase = keys_passphrase(config)
    moved = pki.migrate_to_token(config.keys_path, passphrase=passphrase, token=token)
    # A fresh keys folder: the CA and TSA keys are created directly for the token.
    pki.init_keys(config.keys_path, passphrase=passphrase, now=utcnow(),
                  base_url=config.base_url, token=token)
    pki.load_keys(config.keys_path, passphrase=passphrase, token=token)
    record_key_event(config, AuditAction.KEYS_MOVED_TO_TOKEN, token=token.label, moved=list(moved))
    for line in moved:
        print(line)
    print(f"service keys are on PKCS#11 token {token.label!r}; certificates stay in "
          f"{config.keys_path}")
    return 0


def cmd_renew_tsa(args: argparse.Namespace) -> int:
    with operator_services() as svc:
        cert = tsa.renew_tsa_certificate(svc.settings.keys_path, svc.keys, now=svc.clock())
    record_key_event(svc.settings, AuditAction.KEYS_TSA_RENEWED, serial=f"{cert.serial_number:x}",
                     not_after=cert.not_valid_after_utc.isoformat())
    print(f"new TSA certificate {cert.serial_number:x}, valid until "
          f"{cert.not_valid_after_utc:%Y-%m-%d}; restart the service to use it")
    return 0


def cmd_renew_lta(args: argparse.Namespace) -> int:
    with operator_services() as svc, svc.sessions() as session, session.begin():
        days = svc.settings.lta_renew_days if args.days is None else args.days
        now = svc.clock()
        if args.dry_run:
            due = archive.due_documents(session, svc.deps, now=now, within_days=days)
            for doc in due:
                print(f"request {doc.request_id}: newest timestamp verifiable until "
                      f"{doc.horizon:%Y-%m-%d}")
            print(f"{len(due)} document(s) due within {days} days (dry run, nothing changed)")
            return 0
        renewed = archive.renew_due(session, svc.deps, now=now, within_days=days,
                                    actor=OPERATOR)
    for request_id in renewed:
        print(f"request {request_id}: archive timestamp added")
    print(f"{len(renewed)} document(s) renewed")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the `signflow` parser."""
    p = sub.add_parser("pki", help="service keys, TSA certificate, archive timestamps")
    psub = p.add_subparsers(dest="pki_command", required=True)
    h = psub.add_parser("hsm-init", help="move (or create) the issuing CA key, TSA key and "
                                         "PIN pepper into the PKCS#11 token")
    h.set_defaults(func=cmd_hsm_init)
    t = psub.add_parser("renew-tsa", help="new certificate for the TSA key")
    t.set_defaults(func=cmd_renew_tsa)
    r = psub.add_parser("renew-lta", help="add archive timestamps to documents whose newest "
                                          "timestamp expires soon")
    r.add_argument("--days", type=int, default=None,
                   help="renew when the timestamp expires within this many days "
                        "(default SIGNFLOW_LTA_RENEW_DAYS)")
    r.add_argument("--dry-run", action="store_true", help="list, change nothing")
    r.set_defaults(func=cmd_renew_lta)

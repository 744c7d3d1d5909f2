"""`signflow create-user`, `api-token` and `cert revoke`."""

from __future__ import annotations

import argparse
import getpass
import os

from signflow.cli.context import OPERATOR, operator_services, user_by_name
from signflow.cli.setup import ensure_named
from signflow.core.accounts import signing_pin as credentials
from signflow.core.accounts import users as accounts
from signflow.models import Destination, Role

REVOCATION_REASONS = ["key_compromise", "affiliation_changed", "superseded", "cessation_of_operation"]


def cmd_create_user(args: argparse.Namespace) -> int:
    password = os.environ.get("SIGNFLOW_NEW_PASSWORD") or getpass.getpass("Password: ")
    with operator_services() as svc, svc.sessions() as session, session.begin():
        destination_id = None
        if args.destination:
            destination_id = ensure_named(session, Destination, args.destination).id
        user = accounts.create_user(
            session, actor=OPERATOR, now=svc.clock(), username=args.username,
            display_name=args.name or args.username, role=args.role, password=password,
            email=args.email, professional_id=args.professional_id, destination_id=destination_id,
            phone=args.phone,
        )
        print(f"created {user.role} {user.username} (id {user.id})")
    return 0


def cmd_api_token(args: argparse.Namespace) -> int:
    with operator_services() as svc, svc.sessions() as session, session.begin():
        if args.token_command == "create":  # noqa: S105 - a subcommand name
            user = user_by_name(session, args.username)
            issued = accounts.create_api_token(session, actor=OPERATOR, user=user,
                                               name=args.name, now=svc.clock())
            print(f"token id {issued.token_id} for {user.username} (shown once):")
            print(issued.token)
        else:
            accounts.revoke_api_token(session, actor=OPERATOR, token_id=args.token_id,
                                      now=svc.clock())
            print(f"token {args.token_id} revoked")
    return 0


def cmd_cert_revoke(args: argparse.Namespace) -> int:
    with operator_services() as svc, svc.sessions() as session, session.begin():
        user = user_by_name(session, args.username)
        cred = credentials.revoke_credential(session, actor=OPERATOR, user_id=user.id,
                                             reason=args.reason, now=svc.clock())
        print(f"certificate {cred.serial} of {user.username} revoked ({args.reason})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the `signflow` parser."""
    p = sub.add_parser("create-user", help="create a user (password from the prompt or "
                                           "SIGNFLOW_NEW_PASSWORD)")
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--name")
    p.add_argument("--email")
    p.add_argument("--phone")
    p.add_argument("--professional-id", help="RPPS (11 digits) or ADELI (9 digits)")
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
    c.add_argument("--reason", default="superseded", choices=REVOCATION_REASONS)
    p.set_defaults(func=cmd_cert_revoke)

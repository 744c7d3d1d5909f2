"""`signflow create-user`, `api-token` and `cert revoke`.

The command line is the operator's break-glass path: it runs as the server's own
system user (it reads the instance secrets and the keys passphrase), is audited
as the operator (ServiceRole.OPERATOR) and needs no second administrator."""

from __future__ import annotations

import argparse
import getpass
import os

from sqlalchemy import select

from signflow.cli.context import OPERATOR, CliError, operator_services, user_by_name
from signflow.cli.setup import ensure_named
from signflow.core.accounts import signing_pin as credentials
from signflow.core.accounts import tokens
from signflow.core.accounts import users as accounts
from signflow.models import ApiScope, Destination, OnCallGroup, Role

REVOCATION_REASONS = ["key_compromise", "affiliation_changed", "superseded", "cessation_of_operation"]


def cmd_create_user(args: argparse.Namespace) -> int:
    # An integration account never logs in: no password to ask for.
    password = "" if args.role == Role.INTEGRATION else (
        os.environ.get("SIGNFLOW_NEW_PASSWORD") or getpass.getpass("Password: "))
    with operator_services() as svc, svc.sessions() as session, session.begin():
        destination_id = group_id = None
        if args.destination:
            destination_id = ensure_named(session, Destination, args.destination).id
        if args.group:
            group = session.scalar(select(OnCallGroup).where(OnCallGroup.name == args.group))
            if group is None:
                raise CliError(f"no on-call group named {args.group!r}")
            group_id = group.id
        user = accounts.create_user(
            session, actor=OPERATOR, now=svc.clock(), username=args.username,
            display_name=args.name or args.username, role=args.role, password=password,
            email=args.email, professional_id=args.professional_id, destination_id=destination_id,
            submit_group_id=group_id,
            phone=args.phone,
        )
        print(f"created {user.role} {user.username} (id {user.id})")
    return 0


def cmd_api_token(args: argparse.Namespace) -> int:
    with operator_services() as svc, svc.sessions() as session, session.begin():
        if args.token_command == "create":  # noqa: S105 - a subcommand name
            user = user_by_name(session, args.username)
            issued = tokens.create_api_token(session, actor=OPERATOR, user=user, name=args.name,
                                             scopes=args.scope or [], days=args.days,
                                             now=svc.clock())
            print(f"token id {issued.token_id} for {user.username}, scopes "
                  f"{' '.join(issued.scopes)}, expires {issued.expires_at:%Y-%m-%d %H:%M} UTC "
                  "(shown once):")
            print(issued.token)
        elif args.token_command == "list":  # noqa: S105 - a subcommand name
            owner = user_by_name(session, args.username) if args.username else None
            now = svc.clock()
            for row in tokens.list_api_tokens(session, user=owner):
                state = tokens.refusal(row, now) or "active"
                used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
                print(f"{row.id}\t{row.user.username}\t{row.name}\t{row.scopes or '-'}\t"
                      f"expires {row.expires_at:%Y-%m-%d}\tlast used {used}\t{state}")
        else:
            tokens.revoke_api_token(session, actor=OPERATOR, token_id=args.token_id, now=svc.clock())
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
    p.add_argument("--destination", help="destination service name (recipients; an integration "
                                         "account that receives)")
    p.add_argument("--group", help="on-call group name (an integration account that submits)")
    p.set_defaults(func=cmd_create_user)

    p = sub.add_parser("api-token", help="API bearer tokens of integration accounts")
    tsub = p.add_subparsers(dest="token_command", required=True)
    c = tsub.add_parser("create")
    c.add_argument("username")
    c.add_argument("--name", default="api")
    c.add_argument("--scope", action="append", choices=[s.value for s in ApiScope],
                   help="repeat for each scope")
    c.add_argument("--days", type=int, default=tokens.DEFAULT_DAYS)
    ls = tsub.add_parser("list")
    ls.add_argument("username", nargs="?")
    r = tsub.add_parser("revoke")
    r.add_argument("token_id", type=int)
    p.set_defaults(func=cmd_api_token)

    p = sub.add_parser("cert", help="physician certificates")
    csub = p.add_subparsers(dest="cert_command", required=True)
    c = csub.add_parser("revoke")
    c.add_argument("username")
    c.add_argument("--reason", default="superseded", choices=REVOCATION_REASONS)
    p.set_defaults(func=cmd_cert_revoke)

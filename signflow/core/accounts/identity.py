"""Who a person is on paper: display names and professional ids (RPPS, ADELI).

A professional id goes into the signing certificate and onto every stamp, so it is
validated when an account is created or changed and is unique among active accounts.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.errors import Conflict, InvalidInput
from signflow.core.i18n import N_
from signflow.models import ChangeKind, ChangeStatus, PendingChange, User

MAX_DISPLAY_NAME = 128
RPPS_LENGTH = 11
ADELI_LENGTH = 9


def display_name(raw: str) -> str:
    """Any characters (accents, apostrophes, scripts), one line, at most 128."""
    name = " ".join(raw.split())
    if not name:
        raise InvalidInput(N_("A display name is required."))
    if len(name) > MAX_DISPLAY_NAME:
        raise InvalidInput(N_("The display name is too long (%(max_display_name)s characters at "
                              "most)."), params={'max_display_name': MAX_DISPLAY_NAME})
    if any(not c.isprintable() for c in name):
        raise InvalidInput(N_("The display name contains control characters."))
    return name


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check: the RPPS number's last digit is its Luhn key."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def professional_id(raw: str | None) -> str | None:
    """The normalised id (digits only, spaces dropped), or None when none was given.

    RPPS: 11 digits whose last one is the Luhn key of the others; ADELI: 9 digits."""
    if raw is None or not raw.strip():
        return None
    value = "".join(raw.split())
    if not (value.isascii() and value.isdigit()):
        raise InvalidInput(
            N_("A professional id is an RPPS number (11 digits) or an ADELI number (9 "
               "digits): "
            "digits only, no letters or signs such as \" < >."))
    if len(value) == RPPS_LENGTH:
        if not luhn_valid(value):
            raise InvalidInput(N_("This RPPS number is not valid: its last digit (check key) "
                                  "does not "
                               "match. Check it on the physician's professional card."))
        return value
    if len(value) == ADELI_LENGTH:
        return value
    raise InvalidInput(N_("A professional id has 11 digits (RPPS) or 9 digits (ADELI), not "
                          "%(count)s."), params={'count': len(value)})


def id_scheme(value: str) -> str:
    """"RPPS" or "ADELI": the prefix of the id in a certificate's serialNumber."""
    return "ADELI" if len(value) == ADELI_LENGTH else "RPPS"


def require_unique_professional_id(
    session: Session, value: str | None, *, user_id: int | None = None, including_pending: bool = True,
) -> None:
    """No two active accounts share a professional id (nor, at proposal time, an active
    account and one awaiting approval). `user_id`: the account being changed."""
    if value is None:
        return
    holders = select(User.id).where(User.professional_id == value, User.active.is_(True))
    if user_id is not None:
        holders = holders.where(User.id != user_id)
    taken = session.scalar(holders.limit(1)) is not None
    if not taken and including_pending:
        awaiting = (
            select(User.id).join(PendingChange, PendingChange.user_id == User.id)
            .where(User.professional_id == value, PendingChange.status == ChangeStatus.PENDING,
                   PendingChange.kind.in_([ChangeKind.CREATE_USER, ChangeKind.ENABLE_USER]))
        )
        if user_id is not None:
            awaiting = awaiting.where(User.id != user_id)
        taken = session.scalar(awaiting.limit(1)) is not None
    if taken:
        raise Conflict(N_("Another active account already has this professional id."))

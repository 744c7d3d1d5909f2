"""A person's contact channels: e-mail addresses, mobile and pager numbers, in the
order they want to be tried. A channel is used for pages only once verified by a
code sent through it (keyed hash, 15 minutes, 5 tries, one a minute: as the
enrolment code). Phone numbers are parsed with `phonenumbers` (France by default)
and stored as E.164."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers
from phonenumbers import PhoneNumberType
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from signflow.core.accounts import notices
from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import Conflict, Forbidden, InvalidInput, NotFound, WrongCode
from signflow.core.i18n import N_
from signflow.core.storage import derive_key
from signflow.models import AuditAction, ChannelKind, ContactChannel, PushSubscription, User

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(minutes=15)
RESEND_AFTER = timedelta(seconds=60)
MAX_CODE_TRIES = 5
MAX_CHANNELS = 8
DEFAULT_REGION = "FR"
# Kinds a person adds by typing an address (Web Push is turned on from the device).
TYPED_KINDS = (ChannelKind.EMAIL, ChannelKind.SMS, ChannelKind.PAGER)
_MOBILE = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


@dataclass(frozen=True)
class Reachable:
    """Where a page for one person goes, in their order."""

    kind: ChannelKind
    address: str
    channel_id: int | None
    position: int


def normalise(kind: ChannelKind | str, raw: str, *, region: str = DEFAULT_REGION) -> str:
    """The address as stored (E.164 for numbers), or InvalidInput saying what is wrong."""
    try:
        kind = ChannelKind(kind)
    except ValueError:
        raise InvalidInput(N_("Choose e-mail, mobile phone (SMS) or pager.")) from None
    text = raw.strip()
    if kind == ChannelKind.PUSH:
        raise InvalidInput(N_("Notifications on a phone are turned on from the phone itself."))
    if kind == ChannelKind.EMAIL:
        local, at, domain = text.rpartition("@")
        if (not at or not local or "." not in domain or len(text) > 254
                or any(c.isspace() or c in "<>,;\"" for c in text)):
            raise InvalidInput(N_("That is not an e-mail address."))
        return f"{local}@{domain.lower()}"
    if len(text) > 40:
        raise InvalidInput(N_("That is not a phone number."))
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidInput(N_("That is not a phone number.")) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput(N_("That phone number does not exist: check the digits "
                           "(a number abroad starts with + and its country code)."))
    if kind == ChannelKind.SMS and phonenumbers.number_type(number) not in _MOBILE:
        raise InvalidInput(N_("Text messages need a mobile number."))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def channels_of(session: Session, user_id: int) -> list[ContactChannel]:
    return list(session.scalars(select(ContactChannel).where(ContactChannel.user_id == user_id)
                                .order_by(ContactChannel.position, ContactChannel.id)))


def reachable(session: Session, user: User, *, page: bool) -> list[Reachable]:
    """The verified channels of `user` (Web Push devices included), in their order.

    A page (someone asked to act now) goes nowhere else: the address an administrator
    typed on the account is not a channel until a code sent to it came back (the
    enrolment code, or the contacts page), and a physician with no verified channel
    is unreachable (the ladder climbs at once). Any other notice to someone who
    verified nothing goes to the account's own address, as before channels existed."""
    verified = [Reachable(c.kind, c.address, c.id, c.position)
                for c in channels_of(session, user.id) if c.verified_at is not None]
    if verified or page:
        return verified
    return account_addresses(user)


def account_addresses(user: User) -> list[Reachable]:
    """The account's own e-mail, then phone (recorded by the administrators, four eyes)."""
    found: list[Reachable] = []
    if user.email:
        found.append(Reachable(ChannelKind.EMAIL, user.email, None, 0))
    if user.phone:
        found.append(Reachable(ChannelKind.SMS, user.phone, None, 1))
    return found


def account_channel(session: Session, user: User, *, now: datetime) -> ContactChannel | None:
    """The channel of the account's own address (its e-mail, else its mobile phone),
    added unverified when missing: the enrolment code goes through it, and using
    that code verifies it. None when the account has no usable address."""
    candidates = [(ChannelKind.EMAIL, user.email), (ChannelKind.SMS, user.phone)]
    for kind, raw in candidates:
        if not raw:
            continue
        try:
            value = normalise(kind, raw)
        except InvalidInput:
            continue  # a landline on the account: not a channel a page can use
        existing = channels_of(session, user.id)
        found = next((c for c in existing if c.kind == kind and c.address == value), None)
        if found is not None:
            return found
        channel = ContactChannel(user_id=user.id, kind=kind, address=value,
                                 position=_next_position(session, user.id), code_tries=0,
                                 created_at=now)
        session.add(channel)
        session.flush()
        return channel
    return None


def _next_position(session: Session, user_id: int) -> int:
    last = session.scalar(select(func.max(ContactChannel.position))
                          .where(ContactChannel.user_id == user_id))
    return (last if last is not None else -1) + 1


def mark_verified(session: Session, channel: ContactChannel, *, actor: Actor, now: datetime,
                  proof: str) -> ContactChannel:
    """`channel` proved it reaches its owner (`proof`: which code came back)."""
    if channel.verified_at is not None:
        return channel
    channel.verified_at, channel.code_hash, channel.code_expires_at = now, None, None
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.CONTACT_VERIFIED,
                 channel=channel.id, kind=channel.kind, user=channel.user_id, proof=proof)
    return channel


def _owned(session: Session, user: User, channel_id: int, *, lock: bool = False) -> ContactChannel:
    query = select(ContactChannel).where(ContactChannel.id == channel_id)
    channel = session.scalar(query.with_for_update() if lock else query)
    if channel is None or channel.user_id != user.id:
        raise NotFound(N_("No such contact channel."))
    return channel


def add_channel(session: Session, master_key: bytes, *, actor: Actor, kind: str, address: str,
                now: datetime) -> ContactChannel:
    """A new, unverified channel of the acting user; its code is sent through it."""
    user = acting_user(session, actor)
    value = normalise(kind, address)
    existing = channels_of(session, user.id)
    if len(existing) >= MAX_CHANNELS:
        raise Conflict(N_("%(max_channels)s contact channels at most: remove one first."),
                       params={'max_channels': MAX_CHANNELS})
    if any(c.kind == kind and c.address == value for c in existing):
        raise Conflict(N_("You already have this contact channel."))
    channel = ContactChannel(user_id=user.id, kind=ChannelKind(kind), address=value,
                             position=_next_position(session, user.id), code_tries=0,
                             created_at=now)
    session.add(channel)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.CONTACT_ADDED,
                 channel=channel.id, kind=channel.kind)
    send_code(session, master_key, actor=actor, channel_id=channel.id, now=now)
    return channel


def _digest(master_key: bytes, channel_id: int, code: str) -> str:
    key = derive_key(master_key, "contact-code")
    return hmac.new(key, f"{channel_id}:{code}".encode(), hashlib.sha256).hexdigest()


def send_code(session: Session, master_key: bytes, *, actor: Actor, channel_id: int,
              now: datetime) -> str:
    """A new verification code, queued through the channel itself. Returns it for the
    operator's path (`signflow demo`); a web view never shows it."""
    user = acting_user(session, actor)
    channel = _owned(session, user, channel_id, lock=True)
    if channel.verified_at is not None:
        raise Conflict(N_("This contact channel is already verified."))
    if channel.code_sent_at is not None and now - channel.code_sent_at < RESEND_AFTER:
        raise Conflict(N_("A code was sent less than a minute ago."))
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    channel.code_hash, channel.code_tries = _digest(master_key, channel.id, code), 0
    channel.code_sent_at, channel.code_expires_at = now, now + CODE_LIFETIME
    notices.tell(session, user, now=now, path="/account/contacts", channel_id=channel.id,
                 subject=N_("Your signflow verification code"),
                 body=N_("signflow: your verification code is {code} "
                         "(15 minutes). Nobody at the hospital will ever ask you for it."),
                 secret=code, master_key=master_key)
    return code


def verify(session: Session, master_key: bytes, *, actor: Actor, channel_id: int, code: str,
           now: datetime) -> ContactChannel:
    user = acting_user(session, actor)
    channel = _owned(session, user, channel_id, lock=True)
    if channel.verified_at is not None:
        return channel
    if channel.code_hash is None or channel.code_expires_at is None or channel.code_expires_at <= now:
        raise InvalidInput(N_("The code expired: ask for a new one."))
    if channel.code_tries >= MAX_CODE_TRIES:
        raise Forbidden(N_("Too many wrong codes: ask for a new one."))
    typed = "".join(c for c in code if c.isdigit())
    if not hmac.compare_digest(channel.code_hash, _digest(master_key, channel.id, typed)):
        channel.code_tries += 1
        session.flush()
        audit.append(session, now=now, actor=actor, action=AuditAction.CONTACT_VERIFICATION_FAILED,
                     channel=channel.id, failures=channel.code_tries)
        raise WrongCode("Wrong code." + (
            " Ask for a new one." if channel.code_tries >= MAX_CODE_TRIES else ""))
    return mark_verified(session, channel, actor=actor, now=now, proof="contact code")


def move(session: Session, *, actor: Actor, channel_id: int, earlier: bool,
         now: datetime) -> None:
    """Swap a channel with its neighbour: pages try it one place earlier (or later)."""
    user = acting_user(session, actor)
    _owned(session, user, channel_id, lock=True)
    ordered = channels_of(session, user.id)
    index = next(i for i, c in enumerate(ordered) if c.id == channel_id)
    other = index - 1 if earlier else index + 1
    if not 0 <= other < len(ordered):
        return
    ordered[index], ordered[other] = ordered[other], ordered[index]
    for position, channel in enumerate(ordered):
        channel.position = position
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.CONTACT_REORDERED,
                 order=[c.id for c in ordered])


def remove(session: Session, *, actor: Actor, channel_id: int, now: datetime) -> None:
    user = acting_user(session, actor)
    channel = _owned(session, user, channel_id, lock=True)
    kind = channel.kind
    if kind == ChannelKind.PUSH:
        # Removing a device from the order removes the device: it would never be paged again.
        device = session.get(PushSubscription, int(channel.address))
        if device is not None and device.user_id == user.id:
            session.delete(device)
    session.delete(channel)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.CONTACT_REMOVED,
                 channel=channel_id, kind=kind)


def add_verified(session: Session, *, actor: Actor, user: User, kind: ChannelKind, address: str,
                 now: datetime) -> ContactChannel:
    """The operator's path (`signflow demo`): a channel recorded as verified, audited
    as the operator. Idempotent: an existing channel with that address is returned."""
    value = normalise(kind, address)
    channel = next((c for c in channels_of(session, user.id) if c.kind == kind and c.address == value),
                   None)
    if channel is None:
        channel = ContactChannel(user_id=user.id, kind=kind, address=value,
                                 position=_next_position(session, user.id), code_tries=0,
                                 created_at=now)
        session.add(channel)
        session.flush()
    return mark_verified(session, channel, actor=actor, now=now, proof="operator")


def link_device(session: Session, *, user_id: int, subscription_id: int, now: datetime) -> ContactChannel:
    """A verified Web Push device takes its place in its owner's order (last, until
    they move it): its address is the device's id, never the endpoint (a secret)."""
    address = str(subscription_id)
    channel = session.scalar(select(ContactChannel).where(
        ContactChannel.kind == ChannelKind.PUSH, ContactChannel.address == address))
    if channel is not None and channel.user_id != user_id:
        session.delete(channel)  # the browser now belongs to someone else
        session.flush()
        channel = None
    if channel is None:
        channel = ContactChannel(user_id=user_id, kind=ChannelKind.PUSH, address=address,
                                 position=_next_position(session, user_id), code_tries=0,
                                 created_at=now)
        session.add(channel)
    channel.verified_at = now  # the push's own code came back (push_devices.verify)
    session.flush()
    return channel


def unlink_device(session: Session, subscription_id: int) -> None:
    """The device was removed, subscribed again (unverified) or dropped by its push service."""
    session.execute(delete(ContactChannel).where(ContactChannel.kind == ChannelKind.PUSH,
                                                 ContactChannel.address == str(subscription_id)))


@dataclass(frozen=True)
class ChannelView:
    """One line of a person's ordered list (`/account/contacts`, the admin's user page)."""

    id: int
    kind: ChannelKind
    label: str  # the address, or the device's name for Web Push
    verified_at: datetime | None
    device: int | None  # the Web Push device (push_subscriptions.id)


def ordered(session: Session, user_id: int) -> list[ChannelView]:
    devices = {str(d.id): d.user_agent_label for d in session.scalars(
        select(PushSubscription).where(PushSubscription.user_id == user_id))}
    views = []
    for c in channels_of(session, user_id):
        push = c.kind == ChannelKind.PUSH
        views.append(ChannelView(c.id, c.kind, devices.get(c.address, c.address) if push else c.address,
                                 c.verified_at, int(c.address) if push else None))
    return views

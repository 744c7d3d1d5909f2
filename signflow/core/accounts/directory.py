"""The hospital directory (OpenLDAP, Active Directory): who a user is, checked by binding
as that user over TLS.

Only this module speaks LDAP; the login (`directory_login`) sees the `Directory`
protocol, so tests and other directories plug in without a server. Nothing the user
types reaches a filter or a DN unescaped (RFC 4515 / RFC 4514), an empty password is
refused before any bind (an LDAP "unauthenticated bind" would succeed), and the
connection is never in clear: LDAPS, or StartTLS before the bind, verified against the
configured CA and host name.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from ldap3 import BASE, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from signflow.core.errors import ConfigurationError

# LDAP result codes that mean "these credentials are not accepted" (RFC 4511):
# invalidDNSyntax, inappropriateAuthentication, invalidCredentials, insufficientAccessRights,
# unwillingToPerform. Anything else (busy, unavailable, a TLS failure) is the directory's problem.
_REFUSED_CODES = frozenset({34, 48, 49, 50, 53})
# Active Directory: userAccountControl's ACCOUNTDISABLE bit.
AD_ACCOUNT_DISABLED = 0x2
MAX_USERNAME = 80


class BindRefused(Exception):
    """The directory does not accept these credentials (or knows no such user)."""


class Unreachable(Exception):
    """The directory could not be asked: down, timed out, TLS refused."""


@dataclass(frozen=True)
class DirectoryAccount:
    """What the directory says about the user who just bound."""

    subject: str  # the immutable id (entryUUID, objectGUID), the link to the account
    username: str
    display_name: str
    email: str | None
    groups: frozenset[str]  # the configured group DNs the user is a member of (lower case)
    disabled: bool


class Directory(Protocol):
    def authenticate(self, username: str, password: str) -> DirectoryAccount:
        """Bind as `username`; raises BindRefused or Unreachable."""
        ...


@dataclass(frozen=True)
class LdapConfig:
    url: str
    bind_template: str  # "uid={username},ou=people,dc=..." or "{username}@hospital.example"
    user_base: str
    starttls: bool = False
    ca_file: str | None = None
    user_filter: str = "(objectClass=person)"
    username_attribute: str = "uid"
    id_attribute: str = "entryUUID"
    disabled_filter: str = "(pwdAccountLockedTime=*)"
    # group DN (lower case) -> role, in the configured order (the first match wins).
    group_roles: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: int = 5


def parse_group_roles(raw: str | Mapping[str, str]) -> dict[str, str]:
    """`cn=a,ou=groups,dc=h=physician;cn=b,...=technician` (the role after the last "="),
    or a TOML table. Group DNs are compared in lower case."""
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    else:
        pairs = []
        for item in filter(None, (part.strip() for part in raw.split(";"))):
            dn, sep, role = item.rpartition("=")
            if not sep or not dn:
                raise ConfigurationError("SIGNFLOW_LDAP_GROUP_ROLES: each item is GROUP_DN=role")
            pairs.append((dn, role))
    return {" ".join(str(dn).split()).lower(): str(role).strip() for dn, role in pairs}


def check_config(config: LdapConfig) -> None:
    """Fail closed: never in clear, always somewhere to look users up and a way to bind."""
    scheme = urlsplit(config.url).scheme.lower()
    if scheme not in ("ldaps", "ldap"):
        raise ConfigurationError("SIGNFLOW_LDAP_URL must be ldaps://host[:port] or ldap://host[:port]")
    if scheme == "ldap" and not config.starttls:
        raise ConfigurationError("SIGNFLOW_LDAP_URL is ldap://: set SIGNFLOW_LDAP_STARTTLS=1 "
                                 "(passwords never travel in clear), or use ldaps://")
    if "{username}" not in config.bind_template:
        raise ConfigurationError("SIGNFLOW_LDAP_BIND_TEMPLATE must contain {username}")
    if not config.user_base:
        raise ConfigurationError("SIGNFLOW_LDAP_USER_BASE is required with SIGNFLOW_LDAP_URL")
    for name, value in (("USER_FILTER", config.user_filter), ("DISABLED_FILTER", config.disabled_filter)):
        if value and not (value.startswith("(") and value.endswith(")")):
            raise ConfigurationError(f"SIGNFLOW_LDAP_{name} must be an LDAP filter in parentheses")
    if not config.group_roles:
        raise ConfigurationError("SIGNFLOW_LDAP_GROUP_ROLES must map at least one group to a role")


def _first(values: Sequence[bytes] | None) -> bytes | None:
    return values[0] if values else None


def _text(values: Sequence[bytes] | None) -> str | None:
    raw = _first(values)
    return raw.decode("utf-8", "replace").strip() or None if raw is not None else None


def subject_of(attribute: str, raw: bytes) -> str:
    """The id as text: AD's objectGUID is 16 bytes (little-endian GUID); entryUUID is text."""
    if attribute.lower() == "objectguid" and len(raw) == 16:
        return str(uuid.UUID(bytes_le=raw))
    return raw.decode("ascii", "strict").strip().lower()


class LdapDirectory:
    """`Directory` over ldap3: one short connection per login, bound as the user."""

    def __init__(self, config: LdapConfig) -> None:
        check_config(config)
        self.config = config
        parts = urlsplit(config.url)
        self._ldaps = parts.scheme.lower() == "ldaps"
        self._host = parts.hostname or ""
        self._port = parts.port or (636 if self._ldaps else 389)
        self._tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.ca_file,
                        version=ssl.PROTOCOL_TLS_CLIENT)
        self._dn_template = "=" in config.bind_template.split("{username}")[0]

    def bind_name(self, username: str) -> str:
        """The name to bind with: a DN with the user name escaped as an RDN value, or a
        user principal name (AD) in which no DN syntax can hide."""
        value = escape_rdn(username) if self._dn_template else username
        return self.config.bind_template.replace("{username}", value)

    def authenticate(self, username: str, password: str) -> DirectoryAccount:
        if not password or not username or len(username) > MAX_USERNAME \
                or any(not c.isprintable() for c in username):
            raise BindRefused("empty password or unusable user name")
        server = Server(self._host, port=self._port, use_ssl=self._ldaps, tls=self._tls,
                        get_info=NONE, connect_timeout=self.config.timeout_seconds)
        conn = Connection(server, user=self.bind_name(username), password=password,
                          authentication=SIMPLE, read_only=True, raise_exceptions=False,
                          receive_timeout=self.config.timeout_seconds)
        try:
            conn.open()
            if not self._ldaps and not conn.start_tls():
                raise Unreachable("StartTLS refused")
            if not conn.bind():
                code = int(conn.result.get("result", -1)) if conn.result else -1
                if code in _REFUSED_CODES:
                    raise BindRefused(str(conn.result.get("description")))
                raise Unreachable(f"bind failed: {conn.result}")
            return self._read_account(conn, username)
        except LDAPException as exc:
            raise Unreachable(type(exc).__name__) from exc
        except OSError as exc:  # a TLS or socket error ldap3 let through
            raise Unreachable(type(exc).__name__) from exc
        finally:
            # A connection that never opened (TLS refused) fails to unbind: nothing to close.
            with suppress(LDAPException, OSError):
                conn.unbind()

    def _search(self, conn: Connection, base: str, search_filter: str, scope: Any,
                attributes: list[str]) -> list[dict[str, Any]]:
        if not conn.search(base, search_filter, search_scope=scope, attributes=attributes,
                           size_limit=2, time_limit=self.config.timeout_seconds):
            code = int(conn.result.get("result", -1)) if conn.result else -1
            if code in (0, 32):  # success with no entry, noSuchObject
                return []
            raise Unreachable(f"search failed: {conn.result}")
        return [e for e in conn.response or [] if e.get("type") == "searchResEntry"]

    def _read_account(self, conn: Connection, username: str) -> DirectoryAccount:
        cfg = self.config
        name_filter = f"({cfg.username_attribute}={escape_filter_chars(username)})"
        attributes = [cfg.id_attribute, cfg.username_attribute, "displayName", "cn", "mail",
                      "memberOf", "userAccountControl"]
        entries = self._search(conn, cfg.user_base, f"(&{cfg.user_filter}{name_filter})", SUBTREE,
                               attributes)
        # Exactly one entry, and (with a DN template) the very one we bound as.
        if len(entries) != 1:
            raise BindRefused("no single directory entry for this user name")
        entry = entries[0]
        dn = str(entry["dn"])
        if self._dn_template and _norm(dn) != _norm(self.bind_name(username)):
            raise BindRefused("the entry found is not the one bound as")
        raw = {k.lower(): v for k, v in entry.get("raw_attributes", {}).items()}
        subject = _first(raw.get(cfg.id_attribute.lower()))
        if not subject:
            raise Unreachable(f"the directory gave no {cfg.id_attribute}")
        disabled = False
        control = _text(raw.get("useraccountcontrol"))
        if control and control.lstrip("-").isdigit() and int(control) & AD_ACCOUNT_DISABLED:
            disabled = True
        if not disabled and cfg.disabled_filter:
            disabled = bool(self._search(conn, dn, cfg.disabled_filter, BASE, []))
        return DirectoryAccount(
            subject=subject_of(cfg.id_attribute, subject),
            username=(_text(raw.get(cfg.username_attribute.lower())) or username).lower(),
            display_name=_text(raw.get("displayname")) or _text(raw.get("cn")) or username,
            email=_text(raw.get("mail")),
            groups=frozenset(self._groups(conn, dn, raw.get("memberof") or [])),
            disabled=disabled,
        )

    def _groups(self, conn: Connection, dn: str, member_of: Sequence[bytes]) -> set[str]:
        """The configured groups the user is in: from memberOf (AD, the memberof overlay),
        else by asking each configured group whether it lists the user as a member."""
        found = {_norm(v.decode("utf-8", "replace")) for v in member_of} & set(self.config.group_roles)
        member = f"(member={escape_filter_chars(dn)})"
        for group in self.config.group_roles:
            if group not in found and self._search(conn, group, member, BASE, []):
                found.add(group)
        return found


def _norm(dn: str) -> str:
    return " ".join(dn.split()).lower()


def role_for(groups: frozenset[str], group_roles: Mapping[str, str]) -> str | None:
    """The role of the first configured group the user belongs to."""
    return next((role for group, role in group_roles.items() if group in groups), None)

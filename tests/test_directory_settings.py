"""The directory's settings fail closed, and the client reads Active Directory's shapes
(objectGUID, memberOf, userAccountControl) without needing an AD."""

from __future__ import annotations

import uuid

import pytest

from signflow.config import load_settings
from signflow.core.errors import ConfigurationError
from signflow.services import directory_config
from tests.conftest import make_settings


@pytest.mark.parametrize("env, problem", [
    ({"SIGNFLOW_LDAP_URL": "ldap://dir.hospital.example"}, "STARTTLS"),
    ({"SIGNFLOW_LDAP_URL": "http://dir.hospital.example"}, "ldaps://"),
    ({"SIGNFLOW_LOCAL_LOGIN": "0"}, "LOCAL_LOGIN"),
    ({"SIGNFLOW_LDAP_URL": "ldaps://dir", "SIGNFLOW_LDAP_CA_FILE": "/nonexistent/ca.pem"}, "CA_FILE"),
])
def test_settings_fail_closed(tmp_path, env, problem):
    with pytest.raises(ConfigurationError, match=problem):
        load_settings({"SIGNFLOW_INSTANCE": str(tmp_path), "SIGNFLOW_ENV": "development", **env})


@pytest.mark.parametrize("changes, problem", [
    ({"ldap_group_roles": "cn=x,dc=h=integration"}, "not a role"),
    ({"ldap_group_roles": "cn=x,dc=h=wizard"}, "not a role"),
    ({"ldap_group_roles": "cn=x,dc=h=recipient"}, "not a role"),
    ({"ldap_group_roles": ""}, "GROUP_ROLES"),
    ({"ldap_bind_template": "uid=alice,dc=h"}, "username"),
    ({"ldap_user_base": ""}, "USER_BASE"),
])
def test_directory_settings_fail_closed(tmp_path, keys_dir, changes, problem):
    values: dict[str, object] = dict(
        ldap_url="ldaps://dir.hospital.example", ldap_bind_template="uid={username},ou=people,dc=h",
        ldap_user_base="ou=people,dc=h", ldap_group_roles="cn=docs,dc=h=physician")
    values.update(changes)
    bad = make_settings(tmp_path / "bad", keys_dir, f"sqlite:///{tmp_path / 'x.db'}", **values)
    with pytest.raises(ConfigurationError, match=problem):
        directory_config(bad)


def test_active_directory_entries_objectguid_and_the_disabled_bit():
    """AD's shapes without an AD: objectGUID is 16 bytes (little-endian GUID), memberOf
    lists the groups, userAccountControl's bit 0x2 disables whatever the filter says."""
    from ldap3 import SUBTREE

    from signflow.core.accounts.directory import LdapConfig, LdapDirectory

    guid = uuid.uuid4()

    class FakeConnection:
        result: dict[str, object] = {"result": 0}
        response: list[dict[str, object]] = []

        def __init__(self, control: bytes) -> None:
            self.entry = {"type": "searchResEntry", "dn": "CN=Jean Dupont,OU=Staff,DC=h,DC=example",
                          "raw_attributes": {"objectGUID": [guid.bytes_le], "sAMAccountName": [b"JDupont"],
                                             "displayName": ["Jean Dupont-Lefèvre".encode()],
                                             "userAccountControl": [control],
                                             "memberOf": [b"CN=Docs,OU=Groups,DC=h,DC=example"]}}

        def search(self, base: str, search_filter: str, search_scope: object, **_: object) -> bool:
            self.response = [self.entry] if search_scope == SUBTREE else []
            return True

    directory = LdapDirectory(LdapConfig(
        url="ldaps://ad.h.example", bind_template="{username}@h.example", user_base="DC=h,DC=example",
        username_attribute="sAMAccountName", id_attribute="objectGUID", disabled_filter="",
        group_roles={"cn=docs,ou=groups,dc=h,dc=example": "physician"}))
    enabled = directory._read_account(FakeConnection(b"512"), "jdupont")  # type: ignore[arg-type]
    assert enabled.subject == str(guid) and enabled.username == "jdupont" and not enabled.disabled
    assert enabled.groups == {"cn=docs,ou=groups,dc=h,dc=example"}
    assert enabled.display_name == "Jean Dupont-Lefèvre"
    assert directory._read_account(FakeConnection(b"514"), "jdupont").disabled  # type: ignore[arg-type]

"""Login with the hospital account against a real OpenLDAP (tests/ldap_server.py), through
the login page: TLS only, group -> role, disabled entries, injection, a directory that is
down, four eyes for a physician's first login, the link by entryUUID, the throttle."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from signflow.app import create_app
from signflow.config import Settings
from signflow.core.accounts import mfa
from signflow.core.accounts import users as accounts
from signflow.core.clock import utcnow
from signflow.models import AuditEntry, ChangeStatus, ExternalIdentity, LoginThrottle, PendingChange, User
from signflow.services import build_services, directory_config
from tests.conftest import PASSWORD, TEST_ACTOR, csrf_token, fresh_sqlite, make_settings
from tests.ldap_server import (
    AUDITORS,
    PEOPLE,
    PHYSICIANS,
    ROOT_DN,
    ROOT_PW,
    TECHNICIANS,
    Slapd,
    group,
    other_ca,
    person,
    running_slapd,
)
from tests.tools import free_port

ALICE_PW = "alice-directory-pw"  # noqa: S105 - test directory passwords
TOM_PW = "tom-directory-pw"  # noqa: S105
DISABLED_FILTER = "(|(pwdAccountLockedTime=*)(employeeType=disabled))"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """One slapd for the module; a test that changes the directory adds entries of its own."""
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        server.add(
            person("dr.alice", ALICE_PW, cn="Alice Martin", mail="alice@hospital.example")
            + person("tom", TOM_PW, cn="Tom Petit", mail="tom@hospital.example")
            + person("audrey", "audrey-directory-pw", cn="Audrey Roux", mail="audrey@hospital.example")
            + person("bob", "bob-directory-pw", cn="Bob Durand", mail="bob@hospital.example",
                     extra="employeeType: disabled\n")
            + person("nina", "nina-directory-pw", cn="Nina Blanc", mail="nina@hospital.example")
            # The world's local `tech` has this user name, its `doc` this e-mail address.
            + person("tech", "tech-directory-pw", cn="Someone Else", mail="else@hospital.example")
            + person("hdupont", "hdupont-directory-pw", cn="Hugo Dupont", mail="doc@hospital.example")
            + group(PHYSICIANS, f"uid=dr.alice,{PEOPLE}", f"uid=bob,{PEOPLE}")
            + group(TECHNICIANS, f"uid=tom,{PEOPLE}", f"uid=tech,{PEOPLE}", f"uid=hdupont,{PEOPLE}")
            + group(AUDITORS, f"uid=audrey,{PEOPLE}"))
        yield server


def directory_settings(slapd: Slapd, **changes: object) -> dict[str, object]:
    values: dict[str, object] = dict(
        ldap_url=slapd.ldaps_url, ldap_ca_file=str(slapd.ca_file),
        ldap_bind_template="uid={username}," + PEOPLE, ldap_user_base=PEOPLE,
        ldap_disabled_filter=DISABLED_FILTER,
        ldap_group_roles=f"{PHYSICIANS}=physician;{TECHNICIANS}=technician;{AUDITORS}=auditor",
    )
    values.update(changes)
    return values


@pytest.fixture
def settings(tmp_path: Path, keys_dir: Path, database_url: str, slapd: Slapd) -> Settings:
    return make_settings(tmp_path / "instance", keys_dir, database_url, **directory_settings(slapd))


def directory_login(client: FlaskClient, username: str, password: str, source: str = "directory") -> Any:
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": password, "source": source,
                                       "csrf_token": token})


def users(svc: Any) -> dict[str, User]:
    with svc.sessions() as s:
        return {u.username: u for u in s.scalars(select(User))}


def audit_lines(svc: Any, action: str) -> list[dict[str, Any]]:
    with svc.sessions() as s:
        lines = s.scalars(select(AuditEntry.line).where(AuditEntry.action == action)
                          .order_by(AuditEntry.seq)).all()
    return [json.loads(line) for line in lines]


def details(entry: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = entry.get("details", entry)
    return found


@contextmanager
def standalone(settings: Settings, keys: Any, *,
               local_tech: bool = False) -> Iterator[tuple[Any, FlaskClient]]:
    """An app of its own on `settings` (another directory setup), optionally with one local
    technician `tech` (password PASSWORD)."""
    services = build_services(settings, keys=keys)
    try:
        if local_tech:
            with services.sessions() as s, s.begin():
                accounts.create_user(s, actor=TEST_ACTOR, now=utcnow(), username="tech",
                                     display_name="Local Tech", role="technician", password=PASSWORD)
        yield services, create_app(settings, services=services).test_client()
    finally:
        services.engine.dispose()


def entry_uuid(slapd: Slapd, uid: str) -> str:
    out = slapd.ldap_tool("ldapsearch", "-LLL", "-b", PEOPLE, f"(uid={uid})", "entryUUID")
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("entryUUID:"))


def test_the_login_page_offers_the_hospital_account_only_when_configured(client, tmp_path, keys_dir,
                                                                          migrated_sqlite, key_material):
    page = client.get("/login").get_data(as_text=True)
    assert "Hospital account" in page and 'value="local"' in page
    (tmp_path / "plain").mkdir()
    plain = make_settings(tmp_path / "plain", keys_dir, fresh_sqlite(migrated_sqlite, tmp_path / "plain"))
    with standalone(plain, key_material) as (_services, other):
        assert "Hospital account" not in other.get("/login").get_data(as_text=True)


def test_good_password_logs_in_with_the_mapped_role_and_no_local_password(client, svc, world, slapd):
    resp = directory_login(client, "tom", TOM_PW)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:400]
    assert client.get("/").headers["Location"].endswith("/requests/")
    tom = users(svc)["tom"]
    assert tom.role == "technician" and tom.active and tom.password_hash is None
    assert tom.display_name == "Tom Petit" and tom.email == "tom@hospital.example"
    with svc.sessions() as s:
        link = s.scalar(select(ExternalIdentity).where(ExternalIdentity.user_id == tom.id))
    assert link is not None and link.provider == "directory"
    assert link.subject == entry_uuid(slapd, "tom") and link.last_login_at is not None
    succeeded = [details(e) for e in audit_lines(svc, "login.succeeded")]
    assert succeeded[-1]["source"] == "directory" and succeeded[-1]["factors"] == ["directory"]
    # The password was never written anywhere.
    with svc.sessions() as s:
        assert not any(TOM_PW in line for line in s.scalars(select(AuditEntry.line)))
    # The same account next time (found by its link), not a second one.
    client.post("/logout", data={"csrf_token": csrf_token(client, "/requests/")})
    assert directory_login(client, "tom", TOM_PW).status_code == 302
    assert sum(1 for u in users(svc).values() if u.username == "tom") == 1


def test_groups_map_to_roles(client, svc, world):
    assert directory_login(client, "audrey", "audrey-directory-pw").status_code == 302
    assert users(svc)["audrey"].role == "auditor"
    # In no configured group: refused, nothing created.
    other = client.application.test_client()
    resp = directory_login(other, "nina", "nina-directory-pw")
    assert resp.status_code == 401 and "no access to signflow" in resp.get_data(as_text=True)
    assert "nina" not in users(svc)


def test_wrong_password_is_refused_and_counted(client, svc, world):
    before = set(users(svc))
    resp = directory_login(client, "tom", "not-his-password")
    assert resp.status_code == 401 and "Wrong user name or password" in resp.get_data(as_text=True)
    assert set(users(svc)) == before
    failed = details(audit_lines(svc, "login.failed")[-1])
    assert failed["source"] == "directory" and failed["reason"] == "refused"


def test_an_entry_disabled_in_the_directory_cannot_log_in(client, svc, world):
    resp = directory_login(client, "bob", "bob-directory-pw")
    assert resp.status_code == 401 and "hospital account is disabled" in resp.get_data(as_text=True)
    assert "bob" not in users(svc)
    assert details(audit_lines(svc, "login.failed")[-1])["reason"] == "disabled"


@pytest.mark.parametrize("typed", ["*)(uid=*", "admin)(|(uid=*", "dr.alice)(|(uid=*", "*",
                                   "dr.alice,ou=people", "tom\\2a"])
def test_injection_in_the_user_name_is_refused_and_leaks_nothing(client, svc, world, typed):
    before = set(users(svc))
    # Alice's and Tom's real passwords: a filter that matched them would let these in.
    for password in (ALICE_PW, TOM_PW):
        resp = directory_login(client, typed, password)
        page = resp.get_data(as_text=True)
        assert resp.status_code == 401 and "Wrong user name or password" in page
        assert not any(name in page for name in ("Alice", "Tom Petit", "dr.alice", "ou=people"))
    assert set(users(svc)) == before


def test_an_empty_password_never_binds(client, svc, world):
    # An LDAP bind with a name and no password is an "unauthenticated bind" that succeeds.
    token = csrf_token(client, "/login")
    resp = client.post("/login", data={"username": "tom", "password": "", "source": "directory",
                                       "csrf_token": token})
    assert resp.status_code == 200  # the form asks for the password again
    from signflow.core.accounts.directory import BindRefused, LdapDirectory

    config = directory_config(svc.settings)
    assert config is not None
    with pytest.raises(BindRefused):
        LdapDirectory(config).authenticate("tom", "")
    assert "tom" not in users(svc)


def test_first_login_of_a_physician_awaits_approval_then_works(app, client, svc, world, slapd):
    resp = directory_login(client, "dr.alice", ALICE_PW)
    assert resp.status_code == 401
    assert "awaits an administrator&#39;s approval" in resp.get_data(as_text=True)
    alice = users(svc)["dr.alice"]
    assert not alice.active and alice.role == "physician" and alice.password_hash is None
    with svc.sessions() as s:
        change = s.scalar(select(PendingChange).where(PendingChange.user_id == alice.id))
        assert change is not None and change.status == ChangeStatus.PENDING
        assert change.proposed_by_id is None  # the directory proposed it
        assert json.loads(change.changes) == {"source": "directory"}
        change_id = change.id
        link = s.scalar(select(ExternalIdentity).where(ExternalIdentity.user_id == alice.id))
        assert link is not None and link.subject == entry_uuid(slapd, "dr.alice")
    # Again before approval: still refused, no second account nor change.
    assert directory_login(client, "dr.alice", ALICE_PW).status_code == 401
    with svc.sessions() as s:
        assert s.scalar(select(func.count()).select_from(PendingChange)) == 1
    assert details(audit_lines(svc, "login.failed")[-1])["reason"] == "awaiting_approval"

    admin = app.test_client()
    assert directory_login(admin, "admin", PASSWORD, source="local").status_code == 302
    listed = admin.get("/admin/changes").get_data(as_text=True)
    assert "dr.alice" in listed and "directory" in listed
    token = csrf_token(admin, "/admin/changes")
    assert admin.post(f"/admin/changes/{change_id}/approve", data={"csrf_token": token}).status_code == 302
    assert users(svc)["dr.alice"].active

    resp = directory_login(client, "dr.alice", ALICE_PW)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:400]
    assert client.get("/").headers["Location"].endswith("/inbox/")


def test_accounts_are_never_linked_by_user_name_or_email(client, svc, world):
    local = users(svc)
    resp = directory_login(client, "tech", "tech-directory-pw")
    assert resp.status_code == 401 and "already has the user name tech" in resp.get_data(as_text=True)
    assert details(audit_lines(svc, "login.failed")[-1])["reason"] == "name_taken"
    # Same e-mail as the local `doc`: an account of its own.
    assert directory_login(client, "hdupont", "hdupont-directory-pw").status_code == 302
    now = users(svc)
    assert now["hdupont"].id not in {u.id for u in local.values()}
    assert now["tech"].password_hash == local["tech"].password_hash is not None
    with svc.sessions() as s:
        linked = set(s.scalars(select(ExternalIdentity.user_id)))
    assert linked == {now["hdupont"].id}


def test_the_link_by_entry_uuid_survives_a_renamed_uid_and_new_email(client, svc, world, slapd):
    uid = f"tina-{uuid.uuid4().hex[:8]}"
    slapd.add(person(uid, "tina-directory-pw", cn="Tina Morel", mail=f"{uid}@hospital.example"))
    slapd.modify(f"dn: {TECHNICIANS}\nchangetype: modify\nadd: member\nmember: uid={uid},{PEOPLE}\n")
    assert directory_login(client, uid, "tina-directory-pw").status_code == 302
    first = users(svc)[uid]
    client.post("/logout", data={"csrf_token": csrf_token(client, "/requests/")})

    renamed = uid.replace("tina", "tmorel")
    slapd.ldap_tool("ldapmodrdn", "-r", f"uid={uid},{PEOPLE}", f"uid={renamed}")
    slapd.modify(f"dn: uid={renamed},{PEOPLE}\nchangetype: modify\nreplace: mail\n"
                 f"mail: t.morel@hospital.example\n-\nreplace: cn\ncn: Tina Morel-Blanc\n")
    slapd.modify(f"dn: {TECHNICIANS}\nchangetype: modify\ndelete: member\nmember: uid={uid},{PEOPLE}\n"
                 f"-\nadd: member\nmember: uid={renamed},{PEOPLE}\n")
    assert directory_login(client, renamed, "tina-directory-pw").status_code == 302
    after = users(svc)
    assert renamed not in after  # no second account: the same one, found by entryUUID
    with svc.sessions() as s:
        links = s.scalars(select(ExternalIdentity).where(ExternalIdentity.provider == "directory")).all()
    assert [link.user_id for link in links] == [first.id]
    assert client.get("/").headers["Location"].endswith("/requests/")


def test_a_directory_that_is_down_leaves_local_login_working(tmp_path, keys_dir, sqlite_url, slapd,
                                                             key_material):
    # Nothing listens on that port.
    down = make_settings(tmp_path / "down", keys_dir, sqlite_url,
                         **directory_settings(slapd, ldap_url=f"ldaps://127.0.0.1:{free_port()}"))
    _check_unavailable_then_local(down, key_material)


def test_a_directory_whose_certificate_we_do_not_trust_is_not_used(tmp_path, keys_dir, sqlite_url,
                                                                   slapd, key_material):
    # StartTLS against a CA that did not issue the server's certificate: no password is sent.
    untrusted = make_settings(tmp_path / "mitm", keys_dir, sqlite_url, **directory_settings(
        slapd, ldap_url=slapd.ldap_url, ldap_starttls=True, ldap_ca_file=str(other_ca(tmp_path / "ca"))))
    _check_unavailable_then_local(untrusted, key_material)


def _check_unavailable_then_local(settings: Settings, keys: Any) -> None:
    with standalone(settings, keys, local_tech=True) as (services, client):
        resp = directory_login(client, "tom", TOM_PW)
        assert resp.status_code == 503
        assert "hospital directory cannot be reached" in resp.get_data(as_text=True)
        assert "tom" not in users(services)
        assert details(audit_lines(services, "login.failed")[-1])["reason"] == "unavailable"
        with services.sessions() as s:
            assert s.scalar(select(func.count()).select_from(LoginThrottle)) == 0  # not counted
        # The local login still works.
        assert directory_login(client, "tech", PASSWORD, source="local").status_code == 302


def test_starttls_works_too(tmp_path, keys_dir, sqlite_url, slapd, key_material):
    starttls = make_settings(tmp_path / "tls", keys_dir, sqlite_url,
                             **directory_settings(slapd, ldap_url=slapd.ldap_url, ldap_starttls=True))
    with standalone(starttls, key_material) as (services, client):
        assert directory_login(client, "tom", TOM_PW).status_code == 302
        assert users(services)["tom"].role == "technician"


def test_directory_logins_are_throttled_per_name_and_address(app, svc, world):
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    answers = [directory_login(attacker, "tom", f"guess-{i}").status_code for i in range(7)]
    assert answers == [401] * 5 + [429] * 2
    # Even the right password waits now, from that address...
    assert directory_login(attacker, "tom", TOM_PW).status_code == 429
    assert details(audit_lines(svc, "login.throttled")[-1])["source"] == "directory"
    # ...while the owner, elsewhere, is not locked out.
    owner = app.test_client()
    owner.environ_base["REMOTE_ADDR"] = "198.51.100.7"
    assert directory_login(owner, "tom", TOM_PW).status_code == 302


def test_a_known_device_logs_in_whatever_an_attacker_does_from_the_same_address(app, svc, world):
    address = "203.0.113.20"
    owner = app.test_client()
    owner.environ_base["REMOTE_ADDR"] = address
    assert directory_login(owner, "tom", TOM_PW).status_code == 302  # the device cookie
    owner.post("/logout", data={"csrf_token": csrf_token(owner, "/requests/")})
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = address
    assert [directory_login(attacker, "tom", f"guess-{i}").status_code for i in range(25)][-1] == 429
    assert directory_login(owner, "tom", TOM_PW).status_code == 302


def test_groups_that_now_map_to_another_role_are_refused(client, svc, world, slapd):
    uid = f"theo-{uuid.uuid4().hex[:8]}"
    slapd.add(person(uid, "theo-directory-pw", cn="Théo Garnier", mail=f"{uid}@hospital.example"))
    member = f"member: uid={uid},{PEOPLE}\n"
    slapd.modify(f"dn: {TECHNICIANS}\nchangetype: modify\nadd: member\n{member}")
    assert directory_login(client, uid, "theo-directory-pw").status_code == 302
    assert users(svc)[uid].display_name == "Théo Garnier"
    client.post("/logout", data={"csrf_token": csrf_token(client, "/requests/")})
    # Moved to the physicians: becoming one takes an administrator, not a directory edit.
    slapd.modify(f"dn: {TECHNICIANS}\nchangetype: modify\ndelete: member\n{member}")
    slapd.modify(f"dn: {PHYSICIANS}\nchangetype: modify\nadd: member\n{member}")
    resp = directory_login(client, uid, "theo-directory-pw")
    assert resp.status_code == 401 and "no longer match your signflow role" in resp.get_data(as_text=True)
    assert users(svc)[uid].role == "technician"
    # Out of every group: refused at once.
    slapd.modify(f"dn: {PHYSICIANS}\nchangetype: modify\ndelete: member\n{member}")
    assert directory_login(client, uid, "theo-directory-pw").status_code == 401


def test_the_second_factor_is_asked_as_for_a_local_account(client, svc, world):
    assert directory_login(client, "tom", TOM_PW).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(client, "/requests/")})
    with svc.sessions() as s, s.begin():
        tom = s.scalar(select(User).where(User.username == "tom"))
        assert tom is not None
        tom.totp_secret_enc = mfa.seal_secret(svc.keys.master_key, tom, mfa.new_secret())
    resp = directory_login(client, "tom", TOM_PW)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login/code")
    accepted = details(audit_lines(svc, "login.password_accepted")[-1])
    assert accepted["source"] == "directory"


def test_local_login_can_be_turned_off(tmp_path, keys_dir, sqlite_url, slapd, key_material):
    settings = make_settings(tmp_path / "nolocal", keys_dir, sqlite_url,
                             **directory_settings(slapd, local_login=False))
    with standalone(settings, key_material, local_tech=True) as (_services, client):
        page = client.get("/login").get_data(as_text=True)
        assert 'value="local"' not in page and "Log in with your hospital account" in page
        # A local password, even the right one, is not taken: the form goes to the directory.
        assert directory_login(client, "tech", PASSWORD, source="local").status_code == 401
        assert directory_login(client, "tom", TOM_PW, source="local").status_code == 302


def test_user_names_are_escaped_in_filters_and_dns(slapd):
    """Defence in depth under the bind: even bound (here as the administrator) with a
    principal-name template that has no DN to compare, a typed name is matched literally."""
    import ldap3

    from signflow.core.accounts.directory import BindRefused, LdapConfig, LdapDirectory

    config = LdapConfig(url=slapd.ldaps_url, ca_file=str(slapd.ca_file), user_base=PEOPLE,
                        bind_template="{username}@hospital.example",
                        group_roles={PHYSICIANS.lower(): "physician"})
    directory = LdapDirectory(config)
    tls = ldap3.Tls(ca_certs_file=str(slapd.ca_file))
    server = ldap3.Server("127.0.0.1", port=slapd.ldaps_port, use_ssl=True, tls=tls, get_info=ldap3.NONE)
    with ldap3.Connection(server, ROOT_DN, ROOT_PW,
                          auto_bind=True) as conn:
        assert directory._read_account(conn, "dr.alice").display_name == "Alice Martin"
        for typed in ("dr.ali*", "*", "x)(uid=dr.alice", "dr.alice)(|(uid=*"):
            with pytest.raises(BindRefused):
                directory._read_account(conn, typed)
    dn_directory = LdapDirectory(LdapConfig(url=slapd.ldaps_url, user_base=PEOPLE,
                                            bind_template="uid={username}," + PEOPLE,
                                            group_roles={PHYSICIANS.lower(): "physician"}))
    assert dn_directory.bind_name("tom,ou=admins") == r"uid=tom\,ou\=admins," + PEOPLE
    assert dn_directory.bind_name("a+cn=b") == r"uid=a\+cn\=b," + PEOPLE


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_hospital_account_in_a_phone_browser(browser, live_url, world):
    """The choice passes axe at phone size and logs in by its label, as a person does."""
    from tests.a11y import axe_source, axe_violations, describe

    context = browser.new_context(base_url=live_url, viewport={"width": 390, "height": 844},
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto("/login")
    violations = axe_violations(page, axe_source())
    assert violations == [], describe("/login with the directory", violations)
    assert page.get_by_label("Hospital account").is_checked()
    page.get_by_label("User name").fill("tom")
    page.get_by_label("Password").fill(TOM_PW)
    page.get_by_role("button", name="Log in").tap()
    page.wait_for_url(lambda url: "/login" not in url)
    assert page.url.endswith("/requests/")
    context.close()

"""A real OpenLDAP for the directory login tests: Debian's slapd as an ordinary process on
free ports, with a throwaway slapd.conf and mdb database, TLS on a certificate this
module makes (so LDAPS and StartTLS are real), the test users and groups loaded with
ldapadd. Missing slapd or ldapadd: `tools.missing` (a failure under CI=true)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.tools import free_port, require_file, require_tool, stop

SUFFIX = "dc=hospital,dc=example"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret-for-tests"  # noqa: S105 - a throwaway test directory
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
PHYSICIANS = f"cn=physicians,{GROUPS}"
TECHNICIANS = f"cn=technicians,{GROUPS}"
AUDITORS = f"cn=auditors,{GROUPS}"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


@dataclass(frozen=True)
class Slapd:
    folder: Path
    ldap_port: int
    ldaps_port: int
    ca_file: Path

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    def ldap_tool(self, tool: str, *args: str, stdin: str | None = None) -> str:
        """Run ldapadd / ldapmodify / ldapsearch as the directory's administrator, over
        StartTLS verified against the test CA."""
        env = {"LDAPTLS_CACERT": str(self.ca_file), "LDAPTLS_REQCERT": "demand", "PATH": "/usr/bin:/bin"}
        done = subprocess.run([require_tool(tool), "-x", "-ZZ", "-H", self.ldap_url, "-D", ROOT_DN,
                               "-w", ROOT_PW, *args], input=stdin, env=env, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def add(self, ldif: str) -> None:
        self.ldap_tool("ldapadd", stdin=ldif)

    def modify(self, ldif: str) -> None:
        self.ldap_tool("ldapmodify", stdin=ldif)


def _certificates(folder: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 and localhost, PEM files in `folder`."""
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test hospital directory CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(cert.public_bytes(pem))
    (folder / "server.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    (folder / "server.key").chmod(0o600)
    return folder / "ca.pem"


def other_ca(folder: Path) -> Path:
    """A CA that did not issue the server's certificate (for the TLS-refused test)."""
    folder.mkdir(parents=True, exist_ok=True)
    return _certificates(folder)


def _config(folder: Path) -> Path:
    schemas = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS)
    (folder / "db").mkdir()
    conf = folder / "slapd.conf"
    conf.write_text(f"""{schemas}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {folder}/slapd.pid
TLSCACertificateFile {folder}/ca.pem
TLSCertificateFile {folder}/server.pem
TLSCertificateKeyFile {folder}/server.key
# A simple bind (a password) only over TLS: a client that forgot TLS is refused.
security simple_bind=128
# As lenient as some directories are: a name with an empty password binds anonymously
# ("unauthenticated bind", RFC 4513 5.1.2), so only signflow's own check refuses it.
allow bind_anon_dn

database mdb
maxsize 33554432
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {folder}/db
access to attrs=userPassword by self =xw by anonymous auth by * none
access to * by users read by * none
""")
    return conf


def person(uid: str, password: str, *, cn: str, mail: str, extra: str = "") -> str:
    return (f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\n"
            f"sn: {cn.split()[-1]}\ndisplayName: {cn}\nmail: {mail}\nuserPassword: {password}\n{extra}\n")


def group(dn: str, *members: str) -> str:
    cn = dn.split(",")[0].split("=")[1]
    lines = "".join(f"member: {m}\n" for m in members)
    return f"dn: {dn}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}\n"


@contextmanager
def running_slapd(folder: Path) -> Iterator[Slapd]:
    slapd = require_file("/usr/sbin/slapd", "Debian package slapd")
    require_tool("ldapadd")  # ldap-utils
    folder.mkdir(parents=True, exist_ok=True)
    ca_file = _certificates(folder)
    conf = _config(folder)
    server = Slapd(folder, free_port(), free_port(), ca_file)
    urls = f"{server.ldap_url}/ {server.ldaps_url}/"
    # -d 0: in the foreground (a child of this test, stopped by it), logging nothing.
    proc = subprocess.Popen([slapd, "-f", str(conf), "-h", urls, "-d", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_until_up(server, proc)
        server.add(f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: hospital\n"
                   f"o: Test hospital\n\ndn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n"
                   f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n")
        yield server
    finally:
        stop(proc)


def _wait_until_up(server: Slapd, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"slapd exited ({proc.returncode}): "
                                 f"{proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", server.ldaps_port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("slapd did not start listening")

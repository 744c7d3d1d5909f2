"""The offline verifier: known-answer vectors, proofs, signed notes, and tampered bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from signflow import auditverify as av
from signflow.core.audit import checkpoints
from signflow.core.audit import export as audit_export
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.db import Base, make_engine, make_session_factory
from signflow.models import AuditHead

VECTORS = Path(__file__).parent / "vectors"
MERKLE = json.loads((VECTORS / "rfc6962_merkle.json").read_text())
NOTE = json.loads((VECTORS / "signed_note.json").read_text())
LEAVES = [av.hash_leaf(bytes.fromhex(d)) for d in MERKLE["leaves"]]
ROOTS = [bytes.fromhex(r) for r in MERKLE["roots"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def h(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


# --------------------------------------------------------------------------- RFC 6962/9162 vectors


def test_hasher_known_answers() -> None:
    assert av.EMPTY_ROOT.hex() == MERKLE["empty_root"]
    assert av.tree_root([]).hex() == MERKLE["empty_root"]
    assert av.hash_leaf(b"").hex() == MERKLE["hasher"]["empty_leaf"]
    assert av.hash_leaf(b"L123456").hex() == MERKLE["hasher"]["leaf_L123456"]
    assert av.hash_children(b"N123", b"N456").hex() == MERKLE["hasher"]["node_N123_N456"]


def test_leaf_and_node_hashes_cannot_be_confused() -> None:
    left, right = av.hash_leaf(b"Hello"), av.hash_leaf(b"World")
    node = av.hash_children(left, right)
    # A "leaf" whose bytes are two child hashes does not hash to the node...
    assert av.hash_leaf(left + right) != node
    # ...so the bytes of an interior node, presented as an entry, do not prove
    # inclusion, although the node itself sits on a valid path to the root.
    root4 = av.tree_root([left, right, left, right])
    assert av.verify_inclusion(node, 0, 2, [node], root4)
    assert not av.verify_inclusion(av.hash_leaf(left + right), 0, 2, [node], root4)
    assert av.hash_children(right, left) != node


Probe = tuple[int, int, bytes, bytes, list[bytes]]


def corruption_probes(first: int, second: int, x: bytes, y: bytes, proof: list[bytes], *,
                      wrong: list[tuple[bytes, bytes]], inserted: list[bytes], flip: int) -> list[Probe]:
    """The corruptions the reference (proof/verify_test.go) tries on an inclusion proof
    (index, size, root, leaf) and on a consistency proof (size1, size2, root1, root2)
    alike: either number off by one or a bit, doubled or halved; the two hashes replaced
    by each `wrong` pair; each `inserted` hash added at either end of the proof; one bit
    (`flip`) flipped in each proof hash. Each must fail to verify."""
    probes: list[Probe] = [(first - 1, second, x, y, proof), (first + 1, second, x, y, proof),
                           (first ^ 2, second, x, y, proof), (first, second * 2, x, y, proof),
                           (first, second // 2, x, y, proof)]
    probes += [(first, second, wx, wy, proof) for wx, wy in wrong]
    probes += [(first, second, x, y, [*proof, extra]) for extra in inserted]
    probes += [(first, second, x, y, [extra, *proof]) for extra in inserted]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ flip]) + flipped[i][1:]
        probes.append((first, second, x, y, flipped))
    return probes


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_the_reference_tree(size: int) -> None:
    assert av.tree_root(LEAVES[:size]) == ROOTS[size - 1]


@pytest.mark.parametrize("vector", MERKLE["inclusion"], ids=lambda v: f"{v['leaf']}-of-{v['size']}")
def test_inclusion_proofs_match_the_reference(vector: dict) -> None:
    index, size = vector["leaf"] - 1, vector["size"]
    proof = h(vector["proof"])
    assert av.inclusion_proof(LEAVES, index, size) == proof
    assert av.verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size - 1])
    # The reference's corruption probes (proof/verify_test.go corruptInclusionProof).
    root, leaf = ROOTS[size - 1], LEAVES[index]
    probes = corruption_probes(index, size, root, leaf, proof, flip=8, inserted=[b"", root],
                               wrong=[(root, b"WrongLeaf"), (av.EMPTY_ROOT, leaf), (SOME_HASH, leaf)])
    if proof:
        probes.append((index, size, root, leaf, proof[:-1]))
    if len(proof) > 1:
        probes.append((index, size, root, leaf, [proof[0], SOME_HASH, *proof[1:]]))
    for p_index, p_size, p_root, p_leaf, p_proof in probes:
        if (p_index, p_size, p_root, p_leaf, p_proof) == (index, size, root, leaf, proof):
            continue
        assert not av.verify_inclusion(p_leaf, p_index, p_size, p_proof, p_root)


@pytest.mark.parametrize(
    "vector", MERKLE["consistency"], ids=lambda v: f"{v['size1']}-to-{v['size2']}"
)
def test_consistency_proofs_match_the_reference(vector: dict) -> None:
    size1, size2, proof = vector["size1"], vector["size2"], h(vector["proof"])
    root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
    assert av.consistency_proof(LEAVES, size1, size2) == proof
    assert av.verify_consistency(size1, size2, root1, root2, proof)
    if not proof:
        return
    probes = corruption_probes(size1, size2, root1, root2, proof, flip=16, inserted=[b"", root1, root2],
                               wrong=[(b"WrongRoot", root2), (root1, b"WrongRoot"), (root2, root1)])
    probes += [(size1, size2, root1, root2, []), (size1, size2, root1, root2, [proof[0], *proof]),
               (size1, size2, root1, root2, proof[:-1])]
    for s1, s2, r1, r2, p in probes:
        assert not av.verify_consistency(s1, s2, r1, r2, p), (s1, s2)


def test_consistency_edge_cases_from_the_reference() -> None:
    # proof/verify_test.go TestVerifyConsistency table.
    r1, r2, empty = b"don't care 1", b"don't care 2", av.EMPTY_ROOT
    cases = [
        (0, 0, r1, r2, [], False),
        (1, 1, r1, r2, [], False),
        (0, 0, r1, r1, [], True),
        (0, 1, r1, r2, [], True),
        (1, 1, r2, r2, [], True),
        (1, 0, r1, r2, [], False),
        (2, 1, r1, r2, [], False),
        (1, 2, r1, r2, [], False),
        (0, 0, empty, r2, [], False),
        (1, 1, empty, r2, [], False),
        (0, 0, empty, empty, [empty], False),
        (0, 1, empty, empty, [empty], False),
        (1, 1, empty, empty, [empty], False),
    ]
    for s1, s2, a, b, proof, want in cases:
        assert av.verify_consistency(s1, s2, a, b, proof) is want, (s1, s2)


def test_consistency_happy_path_json_vector() -> None:
    v = MERKLE["consistency_happy_path_json"]
    proof = [base64.b64decode(p) for p in v["proof"]]
    root1, root2 = base64.b64decode(v["root1"]), base64.b64decode(v["root2"])
    assert av.verify_consistency(v["size1"], v["size2"], root1, root2, proof)
    assert av.consistency_proof(LEAVES, v["size1"], v["size2"]) == proof


def test_inclusion_edge_cases_from_the_reference() -> None:
    leaf = av.hash_leaf(b"data")
    assert av.verify_inclusion(leaf, 0, 1, [], leaf)
    assert not av.verify_inclusion(b"", 0, 1, [], leaf)
    assert not av.verify_inclusion(leaf, 0, 1, [], b"")
    for index, size in [(0, 0), (0, 1), (1, 0), (2, 1)]:
        assert not av.verify_inclusion(SOME_HASH, index, size, [], b"")
        assert not av.verify_inclusion(b"", index, size, [], av.EMPTY_ROOT)
        assert not av.verify_inclusion(SOME_HASH, index, size, [], av.EMPTY_ROOT)


# Straight from the RFC 9162 §2.1 definitions, recursion and all: a second,
# independent statement of the algorithms for sizes beyond the vectors.
def _mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return av.hash_children(_mth(d[:k]), _mth(d[k:]))


def _path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return [*_path(m, d[:k]), _mth(d[k:])]
    return [*_path(m - k, d[k:]), _mth(d[:k])]


def _subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return [*_subproof(m, d[:k], b), _mth(d[k:])]
    return [*_subproof(m - k, d[k:], False), _mth(d[:k])]


SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33]


@pytest.mark.parametrize("size", SIZES)
def test_proofs_agree_with_the_rfc_definitions(size: int) -> None:
    leaves = [av.hash_leaf(i.to_bytes(4, "big")) for i in range(size)]
    root = av.tree_root(leaves)
    assert root == _mth(leaves)
    for index in range(size):
        proof = av.inclusion_proof(leaves, index, size)
        assert proof == _path(index, leaves)
        assert av.verify_inclusion(leaves[index], index, size, proof, root)
        if size > 1:
            other = leaves[(index + 1) % size]
            assert not av.verify_inclusion(other, index, size, proof, root)
    for old in range(size + 1):
        proof = av.consistency_proof(leaves, old, size)
        assert proof == ([] if old in (0, size) else _subproof(old, leaves, True))
        assert av.verify_consistency(old, size, _mth(leaves[:old]), root, proof)
        if 0 < old < size:
            assert not av.verify_consistency(old, size, _mth(leaves[: old - 1]), root, proof)


# --------------------------------------------------------------------------- signed notes


def _peter() -> Ed25519PrivateKey:
    seed = base64.b64decode(NOTE["skey"].split("+", 4)[4])
    assert seed[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(seed[1:])


def test_signed_note_known_answer_from_go_sumdb_note() -> None:
    key = _peter()
    assert av.verifier_key("PeterNeumann", key.public_key()) == NOTE["vkey"]
    signed = av.sign_note(NOTE["text"], "PeterNeumann", key)
    assert signed == NOTE["signed"]
    assert signed.encode().count(b"\n\n\xe2\x80\x94 PeterNeumann ") == 1
    name, public = av.parse_verifier_key(NOTE["vkey"])
    assert av.open_note(NOTE["signed"], name, public) == NOTE["text"]
    # A signature line by a key we do not know is ignored (TestOpen).
    both = NOTE["signed"] + NOTE["enoch_sig_line"]
    assert av.open_note(both, name, public) == NOTE["text"]
    enoch_name, enoch_key = av.parse_verifier_key(NOTE["enoch_vkey"])
    assert av.open_note(both, enoch_name, enoch_key) == NOTE["text"]
    with pytest.raises(av.NoteError):
        av.open_note(NOTE["signed"], enoch_name, enoch_key)


def test_malformed_notes_and_keys_are_refused() -> None:
    name, public = av.parse_verifier_key(NOTE["vkey"])
    text, sig = NOTE["text"], NOTE["signed"][len(NOTE["text"]) + 1 :]
    bad = [
        text,
        text + "\n",
        text + "\n" + sig[:-1],
        "\x01" + text + "\n" + sig,
        text + "\n" + sig.replace("PeterNeumann", "Bad Name"),
        text + "\n" + sig + "Unexpected line.\n",
        text + "\n" + sig[:60] + "ABCD" + sig[60:],
        text + "\n" + sig.replace("\u2014", "-"),
        text.replace("cryptography", "cryptographY") + "\n" + sig,
    ]
    for note in bad:
        with pytest.raises(av.NoteError):
            av.open_note(note, name, public)
    for vkey in NOTE["bad_vkeys"]:
        with pytest.raises(av.NoteError):
            av.parse_verifier_key(vkey)
    with pytest.raises(av.NoteError):
        av.parse_verifier_key(NOTE["vkey"].replace("+c74f20a3+", "+c74f20a4+"))


def test_checkpoint_body_structure() -> None:
    key = Ed25519PrivateKey.generate()
    root = ROOTS[7]
    body = av.checkpoint_body("example.com/log", 8, root)
    assert body == "example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    note = av.sign_note(body, "example.com/log", key)
    blob = note.encode()
    assert blob.startswith(body.encode() + b"\n\xe2\x80\x94 example.com/log ")
    assert blob.endswith(b"\n") and blob.count(b"\n") == 5
    sig = base64.b64decode(note.rsplit(" ", 1)[1])
    assert sig[:4] == av.key_hash("example.com/log", key.public_key()) and len(sig) == 68
    opened = av.open_checkpoint(note, "example.com/log", key.public_key())
    assert (opened.size, opened.root) == (8, root)
    with pytest.raises(av.NoteError):
        av.parse_checkpoint("example.com/log\n08\n" + body.split("\n")[2] + "\n")
    other = av.sign_note(av.checkpoint_body("other.example/log", 8, root), "example.com/log", key)
    with pytest.raises(av.NoteError, match="origin"):
        av.open_checkpoint(other, "example.com/log", key.public_key())


def test_canonical_json_is_rfc8785_for_our_values() -> None:
    # RFC 8785 §3.2.3 orders keys by UTF-16 code units: U+1F600 (surrogates
    # D83D DE00) sorts before U+FB33 although its code point is larger.
    value = {"\ufb33": 1, "\U0001f600": 2, "a": [True, None, "é\n\u001f"], "B": {"z": 0, "y": -5}}
    text = av.canonical_json(value)
    assert text == '{"B":{"y":-5,"z":0},"a":[true,null,"é\\n\\u001f"],"\U0001f600":2,"\ufb33":1}'
    assert av.parse_canonical_line(text.encode()) == value
    for bad in [{"x": 1.0}, {"x": 2**53}, {1: "x"}, {"x": b"bytes"}]:
        with pytest.raises((TypeError, ValueError)):
            av.canonical_json(bad)  # type: ignore[arg-type]
    for line in [
        b'{"a":1, "b":2}',
        b'{"b":1,"a":2}',
        b'{"a":1.0}',
        b'{"a":"\\u0041"}',
        b"[1]",
        b'{"a":9007199254740993}',
        b'{"a":-0}',
        b'{"a":1,"a":1}',
        b'{"a":NaN}',
    ]:
        with pytest.raises(ValueError):
            av.parse_canonical_line(line)


# --------------------------------------------------------------------------- bundles

ORIGIN = "hospital.example/signflow-audit"
T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
AUDITOR = Actor(id=3, name="Ada Auditor", role="auditor")


class Log:
    """A real log in a SQLite file, exported with the core functions."""

    def __init__(self, root: Path, key: Ed25519PrivateKey) -> None:
        self.root, self.key, self.count = root, key, 0
        self.engine = make_engine(f"sqlite:///{root / 'log.db'}")
        Base.metadata.create_all(self.engine)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        with self.sessions() as session, session.begin():
            session.add(AuditHead(id=1, size=0))

    def add(self, n: int, tag: str = "") -> None:
        with self.sessions() as session, session.begin():
            for _ in range(n):
                audit.append(
                    session,
                    now=T0 + timedelta(seconds=self.count),
                    actor=Actor(id=self.count % 4, name="Dr Quinn", role="physician"),
                    action="request.signed",
                    request_id=self.count % 6,
                    document_sha256=hashlib.sha256(f"{tag}{self.count}".encode()).hexdigest(),
                )
                self.count += 1

    def checkpoint(self) -> str:
        with self.sessions() as session, session.begin():
            cp = checkpoints.write_checkpoint(session, signing_key=self.key, origin=ORIGIN, now=T0)
            return cp.note

    def export(self, name: str) -> Path:
        out = self.root / name
        with self.sessions() as session, session.begin():
            audit_export.export_bundle(
                session, out, signing_key=self.key, origin=ORIGIN, now=T0, actor=AUDITOR
            )
        self.count += 1  # the audit.exported entry
        return out


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey) -> Path:
    """40 entries and checkpoints at 10, 23 and 40 (the export's)."""
    log = Log(tmp_path_factory.mktemp("log"), key)
    log.add(10)
    log.checkpoint()
    log.add(13)
    log.checkpoint()
    log.add(16)
    bundle = log.export("bundle")
    log.engine.dispose()
    return bundle


@pytest.fixture
def bundle(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(pristine, copy)
    return copy


def lines_of(bundle: Path) -> list[bytes]:
    return (bundle / "entries.jsonl").read_bytes().split(b"\n")[:-1]


def write_lines(bundle: Path, lines: list[bytes]) -> None:
    (bundle / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def vkey(key: Ed25519PrivateKey) -> str:
    return av.verifier_key(ORIGIN, key.public_key())


def result_of(bundle: Path, **kwargs) -> tuple[bool, str | None, int | None]:  # type: ignore[no-untyped-def]
    r = av.verify_bundle(bundle, **kwargs)
    return r.ok, r.problem, r.first_bad_seq


def test_pristine_bundle_verifies(bundle: Path, key: Ed25519PrivateKey) -> None:
    assert av.verify_bundle(bundle, trusted_key=vkey(key)) == av.VerifyResult(ok=True, size=40)
    assert av.verify_bundle(bundle, trusted_key=str(bundle / "audit-key.pub")).ok
    assert sorted(p.name for p in (bundle / "checkpoints").iterdir()) == [
        "000000000010",
        "000000000023",
        "000000000040",
    ]


def test_edited_field_is_detected(bundle: Path) -> None:
    lines = lines_of(bundle)
    lines[15] = lines[15].replace(b'"Dr Quinn"', b'"Dr Quinm"')
    write_lines(bundle, lines)
    # Checkpoints 10 still holds; the change is located in seq 10..22.
    assert result_of(bundle) == (False, "entry-modified", 10)


def test_deleted_middle_entry_is_detected(bundle: Path) -> None:
    lines = lines_of(bundle)
    del lines[17]
    write_lines(bundle, lines)
    assert result_of(bundle) == (False, "gap", 17)


def test_inserted_entry_is_detected(bundle: Path) -> None:
    lines = lines_of(bundle)
    forged = json.loads(lines[30])
    forged["action"] = "request.declined"
    lines.insert(31, av.canonical_json(forged).encode())
    write_lines(bundle, lines)
    assert result_of(bundle) == (False, "inserted", 30)


def test_swapped_entries_are_detected(bundle: Path) -> None:
    lines = lines_of(bundle)
    lines[4], lines[7] = lines[7], lines[4]
    write_lines(bundle, lines)
    assert result_of(bundle) == (False, "reordered", 4)


def test_renumbered_deletion_is_caught_by_the_checkpoints(bundle: Path) -> None:
    lines = lines_of(bundle)
    del lines[25]
    renumbered = []
    for i, line in enumerate(lines):
        entry = json.loads(line)
        entry["seq"] = i
        renumbered.append(av.canonical_json(entry).encode())
    write_lines(bundle, renumbered)
    assert result_of(bundle) == (False, "truncated", 39)


def test_truncated_tail_is_detected(bundle: Path) -> None:
    write_lines(bundle, lines_of(bundle)[:35])
    assert result_of(bundle) == (False, "truncated", 35)


def test_truncated_tail_with_checkpoints_removed_needs_a_retained_checkpoint(
    bundle: Path, key: Ed25519PrivateKey
) -> None:
    retained = (bundle / "checkpoints" / "000000000040").read_text()
    write_lines(bundle, lines_of(bundle)[:23])
    (bundle / "checkpoints" / "000000000040").unlink()
    # On its own the shortened bundle is a valid older log...
    assert result_of(bundle) == (True, None, None)
    # ...but not to an auditor who kept the checkpoint of size 40.
    assert result_of(bundle, retained=[retained]) == (False, "truncated", 23)


def test_appended_uncheckpointed_entry_is_detected(bundle: Path) -> None:
    lines = lines_of(bundle)
    extra = json.loads(lines[-1])
    extra["seq"] = 40
    write_lines(bundle, [*lines, av.canonical_json(extra).encode()])
    assert result_of(bundle) == (False, "uncovered", 40)


def test_rebuilt_log_with_recomputed_roots_fails_the_signatures(bundle: Path) -> None:
    lines = [line.replace(b"request.signed", b"request.declined") for line in lines_of(bundle)]
    write_lines(bundle, lines)
    leaves = [av.hash_leaf(line) for line in lines]
    for cp_file in (bundle / "checkpoints").iterdir():
        note = cp_file.read_text()
        body, _, sigs = note.partition("\n\n")
        origin, size, _ = body.split("\n")
        root = av.tree_root(leaves[: int(size)])
        cp_file.write_text(av.checkpoint_body(origin, int(size), root) + "\n" + sigs)
    assert result_of(bundle)[:2] == (False, "checkpoint-signature")


def test_checkpoint_signed_by_another_key(bundle: Path, key: Ed25519PrivateKey) -> None:
    intruder = Ed25519PrivateKey.generate()
    cp_file = bundle / "checkpoints" / "000000000023"
    opened = av.open_checkpoint(cp_file.read_text(), ORIGIN, key.public_key())
    cp_file.write_text(av.sign_note(av.checkpoint_body(ORIGIN, 23, opened.root), ORIGIN, intruder))
    assert result_of(bundle)[:2] == (False, "checkpoint-signature")


def test_bundle_resigned_with_another_key_fails_against_the_trusted_key(
    bundle: Path, key: Ed25519PrivateKey
) -> None:
    intruder = Ed25519PrivateKey.generate()
    lines = [line.replace(b"request.signed", b"request.declined") for line in lines_of(bundle)]
    write_lines(bundle, lines)
    leaves = [av.hash_leaf(line) for line in lines]
    for cp_file in (bundle / "checkpoints").iterdir():
        size = int(cp_file.read_text().split("\n")[1])
        body = av.checkpoint_body(ORIGIN, size, av.tree_root(leaves[:size]))
        cp_file.write_text(av.sign_note(body, ORIGIN, intruder))
    pem = (bundle / "audit-key.pub").read_text().split("\n", 1)[1]
    (bundle / "audit-key.pub").write_text(vkey(intruder) + "\n")
    assert result_of(bundle) == (True, None, None)  # self-consistent forgery...
    assert result_of(bundle, trusted_key=vkey(key))[:2] == (False, "untrusted-key")
    # A key file whose PEM half disagrees with its verifier key is refused.
    (bundle / "audit-key.pub").write_text(vkey(intruder) + "\n" + pem)
    assert result_of(bundle)[:2] == (False, "malformed-bundle")


def test_fork_is_detected(bundle: Path, key: Ed25519PrivateKey) -> None:
    # The key holder signs a second, different tree of size 23: a split view.
    other_root = av.hash_leaf(b"the other history")
    fork = av.sign_note(av.checkpoint_body(ORIGIN, 23, other_root), ORIGIN, key)
    (bundle / "checkpoints" / "000000000023-fork").write_text(fork)
    assert result_of(bundle)[:2] == (False, "fork")
    (bundle / "checkpoints" / "000000000023-fork").unlink()
    assert result_of(bundle, retained=[fork])[:2] == (False, "fork")


def _sqlite_copy(source: Path, target: Path) -> None:
    """An online SQLite backup (the WAL content included), as a backup job would take."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def test_rollback_to_an_older_backup_is_detected(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    log = Log(tmp_path, key)
    log.add(12)
    log.checkpoint()
    _sqlite_copy(tmp_path / "log.db", tmp_path / "backup.db")
    log.add(9, tag="original")
    retained = log.checkpoint()  # an auditor saw the log at size 21
    log.engine.dispose()
    _sqlite_copy(tmp_path / "backup.db", tmp_path / "log.db")  # restore
    log.engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    log.sessions = make_session_factory(log.engine)
    log.count = 12
    log.add(14, tag="rewritten")
    bundle = log.export("after-restore")
    log.engine.dispose()
    assert result_of(bundle) == (True, None, None)
    assert result_of(bundle, retained=[retained])[:2] == (False, "rollback")


def test_retained_checkpoint_that_still_holds(bundle: Path) -> None:
    retained = [
        (bundle / "checkpoints" / name).read_text() for name in ("000000000010", "000000000023")
    ]
    assert result_of(bundle, retained=retained) == (True, None, None)


# Any single byte changed anywhere in entries.jsonl must be caught.
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_byte_change_in_entries_is_detected(pristine: Path, data: st.DataObject) -> None:
    original = (pristine / "entries.jsonl").read_bytes()
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != original[position]), label="byte")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(pristine, copy)
        changed = bytearray(original)
        changed[position] = value
        (copy / "entries.jsonl").write_bytes(bytes(changed))
        assert not av.verify_bundle(copy).ok


# --------------------------------------------------------------------------- command line


def test_cli_exit_codes(
    bundle: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    assert av.main([str(bundle), "--trusted-key", vkey(key)]) == 0
    assert capsys.readouterr().out == "OK: 40 entries verified\n"
    retained = bundle.parent / "kept-checkpoint"
    shutil.copy(bundle / "checkpoints" / "000000000040", retained)
    lines = lines_of(bundle)
    write_lines(bundle, lines[:5] + lines[6:])
    assert av.main([str(bundle), "--checkpoint", str(retained)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED at seq 5: gap") and out.count("\n") == 1
    assert av.main([str(bundle.parent / "nowhere")]) == 2
    assert av.main(["--no-such-option"]) == 2
    assert av.main([str(bundle), "--checkpoint", str(bundle / "missing")]) == 2


def test_verifier_runs_as_a_lone_file_without_signflow(bundle: Path, tmp_path: Path, key) -> None:
    lone = tmp_path / "elsewhere"
    lone.mkdir()
    shutil.copy(Path(av.__file__), lone / "auditverify.py")
    probe = (
        f"import sys; sys.path.insert(0, {str(lone)!r}); import auditverify; "
        "code = auditverify.main(sys.argv[1:]); "
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'signflow', 'sqlalchemy', 'flask', 'pyhanko'}); "
        "print('leaked', leaked); sys.exit(code)"
    )
    # -I: no PYTHONPATH, no user site, no current folder on sys.path.
    run = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(bundle), "--trusted-key", vkey(key)],
        cwd=lone,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["OK: 40 entries verified", "leaked []"]

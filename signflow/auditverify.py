"""Offline verifier for signflow audit export bundles.

Runs with the standard library and `cryptography` only (no signflow import, no
database), so an auditor can copy this one file next to a bundle and run:

    python -m signflow.auditverify BUNDLE [--trusted-key VKEY] [--checkpoint FILE]...

Exit status: 0 the bundle verifies, 1 it does not (tampered or malformed),
2 usage error. The one output line names the first bad seq and the kind of
problem.

Formats (see DESIGN.md "The audit export bundle"):
- Merkle tree: RFC 9162 §2.1, leaf = SHA-256(0x00 || line), node =
  SHA-256(0x01 || left || right), empty tree = SHA-256("").
- Checkpoints: c2sp.org/tlog-checkpoint bodies signed as c2sp.org/signed-note
  with Ed25519 (signature type 0x01).

The Merkle and note functions here are also the implementation used by
signflow.core.audit.log, so the service and the auditor cannot disagree.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
ED25519_ALG = 0x01
EM_DASH_PREFIX = "\u2014 "
# I-JSON / RFC 8785: integers beyond 2^53 do not survive a round trip through
# an IEEE double, so two verifiers could disagree on their serialisation.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NOTE_SIGNATURES = 100
REQUIRED_ENTRY_FIELDS = ("seq", "time", "actor", "action")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


# --------------------------------------------------------------------------
# Canonical JSON (RFC 8785 for the values the log allows: no floats)


def canonical_json(value: dict[str, Any]) -> str:
    """RFC 8785 text of `value`: keys sorted by UTF-16 code units, no white space.

    Raises TypeError for floats, non-string keys or unsupported types and
    ValueError for integers outside the I-JSON range or invalid Unicode.
    """
    if not isinstance(value, dict):
        raise TypeError("an audit entry is a JSON object")
    text = json.dumps(_canonical_order(value), separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("audit entries must be valid Unicode") from exc
    return text


def _canonical_order(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError("integer outside the I-JSON safe range")
        return value
    if isinstance(value, float):
        raise TypeError("audit entries never contain floats")
    if isinstance(value, list | tuple):
        return [_canonical_order(v) for v in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError("JSON object keys must be strings")
        ordered = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return {k: _canonical_order(value[k]) for k in ordered}
    raise TypeError(f"{type(value).__name__} is not allowed in an audit entry")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _reject_float(text: str) -> Any:
    raise ValueError("floats are not allowed")


def _parse_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise ValueError("integer outside the I-JSON safe range")
    return value


# Built once: json.loads/dumps with options build a new codec on every call,
# which dominated the cost of verifying a million entries.
_DECODER = json.JSONDecoder(
    parse_float=_reject_float, parse_int=_parse_int, parse_constant=_reject_constant
)
_SORTED_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_canonical_line(line: bytes) -> dict[str, Any]:
    """Parse one entries.jsonl line, requiring it to be exactly canonical."""
    text = line.decode("utf-8")
    value = _DECODER.decode(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if _ASTRAL.search(text) is None:
        # Without astral characters, code point order is UTF-16 order and the
        # C encoder gives the RFC 8785 text (parsing already refused floats,
        # big integers and non-JSON constants): much faster on a large log.
        expected = _SORTED_ENCODER.encode(value)
    else:
        expected = canonical_json(value)
    if expected != text:
        raise ValueError("not in canonical form")
    return value


# --------------------------------------------------------------------------
# Merkle tree, RFC 9162 §2.1


def hash_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


Node = tuple[int, int]  # (first leaf index, height): a perfect subtree of 2**height leaves


def _pieces(start: int, end: int) -> list[Node]:
    """Perfect subtrees whose right fold is MTH(D[start:end]).

    Only ranges that occur in RFC 9162 trees and proofs are accepted: each
    piece must be aligned, which is what lets one left-to-right pass over the
    leaves produce every piece (see TreeWalker).
    """
    out: list[Node] = []
    while end > start:
        n = end - start
        size = n if n & (n - 1) == 0 else _split(n)
        if start % size:
            raise ValueError("range is not a subtree of an RFC 9162 tree")
        out.append((start, size.bit_length() - 1))
        start += size
    return out


class TreeWalker:
    """Consumes leaf hashes in order, keeping O(log n) state (a compact range).

    Every perfect subtree of the final tree is completed exactly once while
    the leaves stream by; the ones named in `wanted` are kept, so roots at
    several sizes and proof nodes come out of a single O(n) pass.
    """

    __slots__ = ("_stack", "_wanted", "nodes", "size")

    def __init__(self, wanted: Iterable[Node] = ()) -> None:
        self._stack: list[tuple[int, bytes]] = []
        self._wanted = set(wanted)
        self.nodes: dict[Node, bytes] = {}
        self.size = 0

    def add(self, leaf: bytes) -> None:
        index = self.size
        node = leaf
        height = 0
        wanted = self._wanted
        if wanted and (index, 0) in wanted:
            self.nodes[(index, 0)] = leaf
        stack = self._stack
        while stack and stack[-1][0] == height:
            node = hashlib.sha256(b"\x01" + stack.pop()[1] + node).digest()
            height += 1
            if wanted:
                key = (index + 1 - (1 << height), height)
                if key in wanted:
                    self.nodes[key] = node
        stack.append((height, node))
        self.size = index + 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1][1]
        for _, node in reversed(self._stack[:-1]):
            acc = hash_children(node, acc)
        return acc

    def range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) from collected nodes (all pieces must be wanted)."""
        if end == start:
            return EMPTY_ROOT
        pieces = _pieces(start, end)
        acc = self.nodes[pieces[-1]]
        for piece in reversed(pieces[:-1]):
            acc = hash_children(self.nodes[piece], acc)
        return acc


def tree_root(leaves: Iterable[bytes]) -> bytes:
    """RFC 9162 MTH over leaf hashes, streamed in O(n) time and O(log n) memory."""
    walker = TreeWalker()
    for leaf in leaves:
        walker.add(leaf)
    return walker.root()


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PATH(index, D[size]), RFC 9162 §2.1.3.1."""
    if not 0 <= index < size:
        raise ValueError("leaf index outside the tree")
    out: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start = start + k
    out.reverse()
    return out


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PROOF(old_size, D[new_size]), RFC 9162 §2.1.4.1."""
    if not 0 <= old_size <= new_size:
        raise ValueError("old size must be between 0 and the new size")
    if old_size in (0, new_size):
        return []
    out: list[tuple[int, int]] = []
    m, start, end, complete = old_size, 0, new_size, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            m -= k
            start += k
            complete = False
    if not complete:
        out.append((start, end))
    out.reverse()
    return out


def wanted_nodes(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    out: set[Node] = set()
    for start, end in ranges:
        out.update(_pieces(start, end))
    return out


def _hashes_for(leaves: Sequence[bytes], size: int, ranges: list[tuple[int, int]]) -> list[bytes]:
    if size > len(leaves):
        raise ValueError("tree size larger than the number of leaves")
    walker = TreeWalker(wanted_nodes(ranges))
    for i in range(size):
        walker.add(leaves[i])
    return [walker.range_hash(a, b) for a, b in ranges]


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """Audit path for leaf `index` in the tree of the first `size` leaf hashes."""
    return _hashes_for(leaves, size, inclusion_ranges(index, size))


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Proof that the tree of `old_size` leaves is a prefix of the `new_size` one."""
    return _hashes_for(leaves, new_size, consistency_ranges(old_size, new_size))


def _skip_right_edge(fn: int, sn: int) -> tuple[int, int]:
    """RFC 9162's "if LSB(fn) is not set, right-shift both fn and sn equally until
    either LSB(fn) is set or fn is 0": the levels where the node is the last one."""
    while fn and not fn & 1:
        fn >>= 1
        sn >>= 1
    return fn, sn


def _climb(
    fn: int, sn: int, start: bytes, path: Sequence[bytes]
) -> tuple[bytes, bytes, int] | None:
    """The walk both RFC 9162 verifications make up an audit path, from node `fn` of a
    tree whose last node is `sn`: the hash `fr` only takes the nodes met on the left
    (the smaller tree's root, for consistency), `sr` every node (the larger tree's root,
    or the inclusion root). None when the path runs past the root; else (fr, sr, sn),
    and a sound path ends with sn 0."""
    fr = sr = start
    for c in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            fn, sn = _skip_right_edge(fn, sn)
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    return fr, sr, sn


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < size or len(leaf) != HASH_SIZE or len(root) != HASH_SIZE:
        return False
    if any(len(p) != HASH_SIZE for p in proof):
        return False
    climbed = _climb(index, size - 1, leaf, proof)
    return climbed is not None and climbed[2] == 0 and climbed[1] == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, with the trivial cases of sizes 0 and equal sizes."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        # Every tree extends the empty tree; there is nothing to prove.
        return not proof
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        return False
    if len(old_root) != HASH_SIZE or len(new_root) != HASH_SIZE:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    climbed = _climb(fn, sn, path[0], path[1:])
    if climbed is None:
        return False
    first_root, second_root, sn = climbed
    return first_root == old_root and second_root == new_root and sn == 0


# --------------------------------------------------------------------------
# Signed notes (c2sp.org/signed-note) and checkpoints (c2sp.org/tlog-checkpoint)


class NoteError(ValueError):
    """A note or key that is malformed or whose signature does not verify."""


def _check_key_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise NoteError("key names are non-empty and contain no '+' or white space")


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    """First 4 bytes of SHA-256(name || "\\n" || 0x01 || key): the signature's key hint."""
    data = name.encode() + b"\n" + bytes([ED25519_ALG]) + _raw_public(public_key)
    return hashlib.sha256(data).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The C2SP verifier key string `<name>+<hex key hash>+<base64(0x01 || key)>`."""
    _check_key_name(name)
    encoded = base64.b64encode(bytes([ED25519_ALG]) + _raw_public(public_key)).decode()
    return f"{name}+{key_hash(name, public_key).hex()}+{encoded}"


def parse_verifier_key(vkey: str) -> tuple[str, Ed25519PublicKey]:
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("a verifier key is <name>+<hash>+<key>")
    name, hash_hex, encoded = parts
    _check_key_name(name)
    try:
        raw = base64.b64decode(encoded, validate=True)
        expected_hash = bytes.fromhex(hash_hex)
    except (binascii.Error, ValueError) as exc:
        raise NoteError("verifier key is not valid base64/hex") from exc
    if len(hash_hex) != 8 or len(raw) != 33 or raw[0] != ED25519_ALG:
        raise NoteError("only Ed25519 verifier keys are supported")
    public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_hash(name, public_key) != expected_hash:
        raise NoteError("verifier key hash does not match the key")
    return name, public_key


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """`text` followed by a blank line and one Ed25519 signature line."""
    _check_key_name(name)
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("note text ends with a newline and has no blank line")
    signature = private_key.sign(text.encode())
    hint = key_hash(name, private_key.public_key())
    return f"{text}\n{EM_DASH_PREFIX}{name} {base64.b64encode(hint + signature).decode()}\n"


def open_note(note: str, name: str, public_key: Ed25519PublicKey) -> str:
    """Return the text of `note` if it carries a valid signature by (name, key).

    Signature lines from other keys are ignored, as the spec requires; a line
    with our name and key hash that fails to verify rejects the note.
    """
    if not note.endswith("\n"):
        raise NoteError("malformed note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note")
    text, sig_block = note[: split + 1], note[split + 2 :]
    if not text.strip() or any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise NoteError("malformed note")
    lines = sig_block.split("\n")[:-1]
    if not lines or len(lines) > MAX_NOTE_SIGNATURES:
        raise NoteError("malformed note")
    hint = key_hash(name, public_key)
    verified = False
    for line in lines:
        if not line.startswith(EM_DASH_PREFIX):
            raise NoteError("malformed note")
        fields = line[len(EM_DASH_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise NoteError("malformed note")
        sig_name, encoded = fields
        _check_key_name(sig_name)
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise NoteError("malformed note") from exc
        if len(blob) < 5:
            raise NoteError("malformed note")
        if sig_name != name or blob[:4] != hint:
            continue
        try:
            public_key.verify(blob[4:], text.encode())
        except InvalidSignature as exc:
            raise NoteError(f"invalid signature for key {name}") from exc
        verified = True
    if not verified:
        raise NoteError("note has no signature by the expected key")
    return text


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    if not origin or "\n" in origin:
        raise NoteError("origin is one non-empty line")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


@dataclass(frozen=True)
class SignedCheckpoint:
    origin: str
    size: int
    root: bytes
    note: str


def parse_checkpoint(text: str) -> tuple[str, int, bytes]:
    """(origin, size, root) from a tlog-checkpoint body; extension lines are ignored."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint body has origin, size and root lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin or not size_text.isascii() or not size_text.isdigit():
        raise NoteError("malformed checkpoint")
    if size_text != str(int(size_text)):
        raise NoteError("checkpoint size has leading zeros")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise NoteError("checkpoint root is not base64") from exc
    if len(root) != HASH_SIZE:
        raise NoteError("checkpoint root is not a SHA-256 hash")
    return origin, int(size_text), root


def open_checkpoint(note: str, name: str, public_key: Ed25519PublicKey) -> SignedCheckpoint:
    """Verify a signed checkpoint; its origin must be the key name (one log, one key)."""
    origin, size, root = parse_checkpoint(open_note(note, name, public_key))
    if origin != name:
        raise NoteError("checkpoint origin differs from the log key name")
    return SignedCheckpoint(origin=origin, size=size, root=root, note=note)


# --------------------------------------------------------------------------
# Bundle verification


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a verification. `problem` is a kind: 'entry-modified',
    'entry-malformed', 'gap', 'inserted', 'reordered', 'truncated', 'uncovered'
    (entries past the last checkpoint), 'rollback', 'fork',
    'checkpoint-signature', 'checkpoint-modified', 'untrusted-key',
    'head-mismatch', 'malformed-bundle', and for the live log's stored tree
    'tree-node-modified', 'tree-node-missing'. `first_bad_seq` is the first seq not
    vouched for (for a root mismatch: the size of the last checkpoint that
    still matches); `detail` is one human-readable sentence."""

    ok: bool
    size: int
    first_bad_seq: int | None = None
    problem: str | None = None
    detail: str | None = None

    def line(self) -> str:
        if self.ok:
            return f"OK: {self.size} entries verified"
        where = "" if self.first_bad_seq is None else f" at seq {self.first_bad_seq}"
        return f"FAILED{where}: {self.problem}: {self.detail or ''}".rstrip(": ")


def failure(size: int, problem: str, detail: str, seq: int | None = None) -> VerifyResult:
    return VerifyResult(ok=False, size=size, first_bad_seq=seq, problem=problem, detail=detail)


def modified_prefix(walker: TreeWalker, signed_roots: dict[int, bytes], count: int) -> VerifyResult | None:
    """The first checkpoint whose signed root the entries no longer hash to, as a failure
    naming the range that changed; None when every signed prefix still matches."""
    verified_below = 0
    for size in sorted(signed_roots):
        if walker.range_hash(0, size) != signed_roots[size]:
            return failure(
                count,
                "entry-modified",
                f"seq {verified_below}..{size - 1} differ from what checkpoint {size} signed",
                verified_below,
            )
        verified_below = size
    return None


ENTRIES_FILE = "entries.jsonl"
CHECKPOINTS_DIR = "checkpoints"
KEY_FILE = "audit-key.pub"


def read_key_file(path: Path) -> tuple[str, Ed25519PublicKey]:
    """audit-key.pub: the verifier key string on line 1, then the same key as PEM."""
    text = path.read_text(encoding="utf-8")
    first, _, pem = text.partition("\n")
    vkey = first.strip()
    name, public_key = parse_verifier_key(vkey)
    if pem.strip():
        try:
            pem_key = serialization.load_pem_public_key(pem.encode())
        except ValueError as exc:
            raise NoteError("audit-key.pub PEM block is not a public key") from exc
        if not isinstance(pem_key, Ed25519PublicKey) or _raw_public(pem_key) != _raw_public(
            public_key
        ):
            raise NoteError("audit-key.pub PEM key differs from the verifier key")
    return vkey, public_key


def _trusted_vkey(trusted_key: str) -> str:
    candidate = Path(trusted_key)
    if "+" not in trusted_key and candidate.is_file():
        return read_key_file(candidate)[0]
    return trusted_key.strip()


def _entry_lines(path: Path) -> Iterator[bytes]:
    """Lines split on b"\\n" only (never on other Unicode line breaks)."""
    with path.open("rb") as f:
        pending = b""
        while chunk := f.read(1 << 20):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from lines
        if pending:
            # A final line without its newline: yield it so it is reported.
            yield pending + b"\x00"


def verify_bundle(
    path: Path, *, trusted_key: str | None = None, retained: Sequence[str] = ()
) -> VerifyResult:
    """Verify an export bundle; `retained` are checkpoint notes an auditor kept earlier."""
    entries_path = path / ENTRIES_FILE
    cp_dir = path / CHECKPOINTS_DIR
    key_path = path / KEY_FILE
    if not entries_path.is_file() or not cp_dir.is_dir() or not key_path.is_file():
        return failure(
            0, "malformed-bundle", f"missing {ENTRIES_FILE}, {CHECKPOINTS_DIR}/ or {KEY_FILE}"
        )

    try:
        vkey, public_key = read_key_file(key_path)
    except (NoteError, ValueError) as exc:
        return failure(0, "malformed-bundle", f"{KEY_FILE}: {exc}")
    name = vkey.split("+", 1)[0]
    if trusted_key is not None:
        try:
            trusted_name, trusted_public = parse_verifier_key(_trusted_vkey(trusted_key))
        except (NoteError, ValueError) as exc:
            return failure(0, "untrusted-key", f"trusted key is not a verifier key: {exc}")
        if trusted_name != name or _raw_public(trusted_public) != _raw_public(public_key):
            return failure(
                0, "untrusted-key", "the bundle is signed by a key other than the trusted one"
            )

    checkpoints: list[SignedCheckpoint] = []
    for cp_file in sorted(p for p in cp_dir.iterdir() if p.is_file()):
        try:
            checkpoints.append(open_checkpoint(cp_file.read_text("utf-8"), name, public_key))
        except (NoteError, ValueError) as exc:
            return failure(0, "checkpoint-signature", f"{CHECKPOINTS_DIR}/{cp_file.name}: {exc}")
    if not checkpoints:
        return failure(0, "malformed-bundle", "the bundle has no checkpoint")
    kept: list[SignedCheckpoint] = []
    for number, note in enumerate(retained, start=1):
        try:
            kept.append(open_checkpoint(note, name, public_key))
        except (NoteError, ValueError) as exc:
            return failure(0, "checkpoint-signature", f"retained checkpoint {number}: {exc}")

    by_size: dict[int, bytes] = {}
    for cp in [*checkpoints, *kept]:
        seen = by_size.setdefault(cp.size, cp.root)
        if seen != cp.root:
            return failure(0, "fork", f"two checkpoints of size {cp.size} sign different roots")

    sizes = sorted(by_size)
    latest = max(cp.size for cp in checkpoints)
    ranges = [(0, s) for s in sizes]
    for cp in kept:
        ranges += consistency_ranges(cp.size, latest) if cp.size <= latest else []
    walker = TreeWalker(wanted_nodes(r for r in ranges if r[1] <= latest))

    count = 0
    misplaced: dict[int, int] = {}  # line index -> the seq written on that line
    for raw in _entry_lines(entries_path):
        index = count
        seq_or_problem = _check_line(raw, index)
        if isinstance(seq_or_problem, str):
            return failure(index, "entry-malformed", seq_or_problem, index)
        if seq_or_problem != index:
            misplaced[index] = seq_or_problem
        if index < latest:
            walker.add(hash_leaf(raw))
        count += 1
    if misplaced:
        return _sequence_problem(count, misplaced)

    if latest > count:
        return failure(
            count, "truncated", f"checkpoint covers {latest} entries, bundle has {count}", count
        )
    if latest < count:
        return failure(
            count,
            "uncovered",
            f"entries from seq {latest} on are not covered by a checkpoint",
            latest,
        )

    changed = modified_prefix(walker, {cp.size: by_size[cp.size] for cp in checkpoints}, count)
    if changed is not None:
        return changed

    latest_root = by_size[latest]
    for cp in kept:
        if cp.size > count:
            return failure(
                count,
                "truncated",
                f"a retained checkpoint covers {cp.size} entries, bundle has {count}",
                count,
            )
        proof = [walker.range_hash(a, b) for a, b in consistency_ranges(cp.size, latest)]
        if not verify_consistency(cp.size, latest, cp.root, latest_root, proof):
            return failure(
                count,
                "rollback",
                f"the log no longer extends the retained checkpoint of size {cp.size}",
            )
    return VerifyResult(ok=True, size=count)


def _check_line(raw: bytes, index: int) -> int | str:
    """The seq written on the line, or why the line is malformed."""
    try:
        entry = parse_canonical_line(raw)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        return f"line {index + 1}: {exc}"
    for field in REQUIRED_ENTRY_FIELDS:
        if field not in entry:
            return f"line {index + 1}: no {field!r}"
    seq = entry["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return f"line {index + 1}: seq is not a natural number"
    return seq


def _sequence_problem(count: int, misplaced: dict[int, int]) -> VerifyResult:
    """Name what happened to the seq numbering: a repeat, a hole or a permutation."""
    seen: set[int] = set()
    for seq in misplaced.values():
        # A seq written twice, or also sitting correctly on its own line.
        if seq in seen or (seq < count and seq not in misplaced):
            return failure(count, "inserted", f"seq {seq} appears twice", seq)
        seen.add(seq)
    holes = set(misplaced) - seen
    if holes:
        missing = min(holes)
        return failure(count, "gap", f"the entry with seq {missing} is missing", missing)
    first = min(misplaced)
    return failure(count, "reordered", f"line {first + 1} holds seq {misplaced[first]}", first)


# --------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m signflow.auditverify",
        description="Verify a signflow audit export bundle offline.",
    )
    parser.add_argument("bundle", type=Path, help="the folder written by `signflow audit export`")
    parser.add_argument(
        "--trusted-key",
        help="verifier key string (or an audit-key.pub file) the bundle must be signed with",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        type=Path,
        help="a checkpoint file kept from an earlier export (may be repeated)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if not args.bundle.is_dir():
        print(f"error: {args.bundle} is not a folder", file=sys.stderr)
        return 2
    retained: list[str] = []
    for cp_path in args.checkpoint:
        try:
            retained.append(cp_path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            print(
                f"error: cannot read checkpoint {cp_path}: {exc.__class__.__name__}",
                file=sys.stderr,
            )
            return 2
    try:
        result = verify_bundle(args.bundle, trusted_key=args.trusted_key, retained=retained)
    except OSError as exc:
        print(f"error: cannot read the bundle: {exc.__class__.__name__}", file=sys.stderr)
        return 2
    print(result.line())
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

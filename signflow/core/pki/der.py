"""asn1crypto's re-encoding of "indefinite length" values, made to recognise them.

asn1crypto 1.5.1 decides that an encoded value has a BER indefinite length when the
last byte of its header is 0x80 (`self._header[-1:] == b'\\x80'`). A definite long
form length ending in that byte (128 = 81 80, 384 = 82 01 80, ...) matches too
(upstream wbond/asn1crypto#249, still open). Such a value is then re-encoded from
scratch, children included, every time it is dumped; inside the freshly built, never
cached structures pyHanko assembles for a CMS signature, whose ancestors re-dump their
children at every level, one signature in roughly fifty had a container whose length
ended in 0x80 and took 6.5 million dump() calls instead of a few thousand (seconds to
minutes: the "signing stall"). Which one stalled depended on random lengths (TSA serial
numbers, ECDSA signature sizes), never on the document.

`install()` replaces the four dump() methods whose test misfires with the same code
and an exact test: the length octets of the innermost header are the single byte
0x80. Real indefinite lengths (BER input) are still re-encoded as DER. Only 1.5.1 is
patched: another release has other code, which tests/test_der.py checks again."""

from __future__ import annotations

from typing import Any

import asn1crypto
from asn1crypto import core

PATCHED_VERSION = "1.5.1"
_INSTALLED = "_signflow_indefinite_fix"


def length_is_indefinite(header: bytes | None) -> bool:
    """Whether the innermost length in `header` (one or more identifier and length
    octet groups, explicit tags first) is the BER indefinite form, 0x80 alone."""
    if header is None or header[-1:] != b"\x80":
        return False  # the common case, as cheap as asn1crypto's own test
    position, indefinite = 0, False
    while position < len(header):
        if header[position] & 0x1F == 0x1F:  # high tag number: base-128 continuation
            position += 1
            while position < len(header) and header[position] & 0x80:
                position += 1
        position += 1
        if position >= len(header):
            return False  # not a header asn1crypto wrote or parsed: leave it alone
        length = header[position]
        position += 1
        indefinite = length == 0x80
        if length > 0x80:
            position += length & 0x7F
    return indefinite


def _primitive_dump(self: Any, force: bool = False) -> bytes:
    if length_is_indefinite(self._header):
        force = True
    if force:
        native = self.native
        self.contents = None
        self.set(native)
    dumped: bytes = core.Asn1Value.dump(self)
    return dumped


def _choice_dump(self: Any, force: bool = False) -> bytes:
    if length_is_indefinite(self._header):
        force = True
    self._contents = self.chosen.dump(force=force)
    if self._header is None or force:
        self._header = b""
        if self.explicit is not None:
            for class_, tag in self.explicit:
                self._header = (
                    core._dump_header(class_, 1, tag, self._header + self._contents)
                    + self._header
                )
    dumped: bytes = self._header + self._contents
    return dumped


def _sequence_dump(self: Any, force: bool = False) -> bytes:
    if length_is_indefinite(self._header):
        force = True
    # asn1crypto cannot force the encoding of a Sequence without a spec.
    if force and self._fields == [] and self.__class__ is core.Sequence:
        force = False
    if force:
        self._set_contents(force=force)
    if self._fields and self.children is not None:
        for index, (field_name, _, params) in enumerate(self._fields):
            if self.children[index] is not core.VOID:
                continue
            if "default" in params or "optional" in params:
                continue
            raise ValueError(f'Field "{field_name}" is missing from structure')
    dumped: bytes = core.Asn1Value.dump(self)
    return dumped


def _sequence_of_dump(self: Any, force: bool = False) -> bytes:
    if length_is_indefinite(self._header):
        force = True
    if force:
        self._set_contents(force=force)
    dumped: bytes = core.Asn1Value.dump(self)
    return dumped


def install() -> bool:
    """Patch asn1crypto once per process; False when its version is not the one this
    fix was written against (nothing is changed then)."""
    if getattr(core, _INSTALLED, False):
        return True
    if asn1crypto.__version__ != PATCHED_VERSION:
        return False
    # Asn1Value.dump has the same test but only re-computes its own header: harmless.
    core.Primitive.dump = _primitive_dump
    core.Choice.dump = _choice_dump
    core.Sequence.dump = _sequence_dump
    core.SequenceOf.dump = _sequence_of_dump
    setattr(core, _INSTALLED, True)
    return True

"""The document's XMP metadata and the PDF/A claim it carries.

pyHanko re-reads the catalogue's /Metadata stream and rewrites it in every
signature (modification date, producer): XMP it cannot parse (malformed XML, a
packet in an unexpected encoding, an XML declaration inside the packet) would
make signing fail. So the normaliser runs pyHanko's own reader and writer over
it here: XMP they accept is kept byte for byte; otherwise the packet is
repaired (text outside x:xmpmeta dropped, a standard packet wrapper, then
lxml's recovering parser) and, when even that fails, removed. Either is reported.

PDF/A: a file whose XMP says pdfaid:part keeps that claim only when the
normaliser changed nothing (no content removed, nothing repaired); otherwise
the pdfaid properties are removed from the XMP, and the technician is told
which. A PDF/A-1 file is rewritten without object streams (PDF/A-1 forbids
them; pyHanko's signature then appends a classic cross-reference table too).
"""

from __future__ import annotations

import io
import re
from typing import Any

from signflow.core.pdf.sandbox_child.wire import N_, notice

XMP_REPAIRED = N_("a damaged document description (XMP metadata), repaired")
XMP_REMOVED = N_("an unreadable document description (XMP metadata)")
PDFAID = "http://www.aiim.org/pdfa/ns/id/"
MAX_XMP = 8 * 1024 * 1024
PACKET_BEGIN = b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
PACKET_END = b'\n<?xpacket end="w"?>'
_XMPMETA = re.compile(r"<([A-Za-z_][\w.-]*:)?(xmpmeta|RDF)\b")


def pyhanko_accepts(packet: bytes) -> bool:
    """What pyHanko does with the packet when it signs: read, view, update, write."""
    from pyhanko.pdf_utils.metadata import model, xmp_xml

    try:
        roots = xmp_xml.parse_xmp(io.BytesIO(packet))
        xmp_xml.meta_from_xmp(roots)
        updated = xmp_xml.update_xmp_with_meta(model.DocumentMetadata(), roots=roots)
        xmp_xml.serialise_xmp(updated, io.BytesIO())
    except Exception:  # whatever it raises here, it would raise while signing
        return False
    return True


def _text(packet: bytes) -> str:
    for bom, encoding in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32-le"),
                          (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe", "utf-16-le"),
                          (b"\xfe\xff", "utf-16-be")):
        if packet.startswith(bom):
            return packet[len(bom):].decode(encoding, errors="replace")
    for encoding in ("utf-8", "utf-16"):
        try:
            text = packet.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "<" in text:
            return text
    return packet.decode("latin-1")


def _wrapped(xml: str) -> bytes:
    return PACKET_BEGIN + xml.strip().encode("utf-8") + PACKET_END


def repaired(packet: bytes) -> bytes | None:
    """A packet pyHanko accepts, made from a damaged one; None when nothing usable is left."""
    from lxml import etree

    text = _text(packet).replace("\x00", "")
    match = _XMPMETA.search(text)
    if match is None:
        return None
    closing = f"</{match.group(1) or ''}{match.group(2)}>"
    end = text.rfind(closing)
    body = text[match.start(): end + len(closing)] if end > match.start() else text[match.start():]
    candidate = _wrapped(body)
    if pyhanko_accepts(candidate):
        return candidate
    parser = etree.XMLParser(recover=True, resolve_entities=False, no_network=True,
                             remove_comments=True, huge_tree=False)
    try:
        root = etree.fromstring(body.encode("utf-8"), parser=parser)
    except (etree.XMLSyntaxError, ValueError):
        return None
    if root is None:
        return None
    candidate = _wrapped(etree.tostring(root, encoding="unicode"))
    return candidate if pyhanko_accepts(candidate) else None


def settle_xmp(pdf: Any) -> tuple[list[str], bytes | None]:
    """Make the catalogue's XMP safe to sign. Returns what to report and the packet kept."""
    import pikepdf

    if "/Metadata" not in pdf.Root:
        return [], None
    stream = pdf.Root["/Metadata"]
    packet: bytes | None = None
    if isinstance(stream, pikepdf.Stream):
        try:
            packet = stream.read_bytes()
        except pikepdf.PdfError:
            packet = None
    if packet is not None and len(packet) <= MAX_XMP:
        if pyhanko_accepts(packet):
            return [], packet
        fixed = repaired(packet)
        if fixed is not None:
            stream.write(fixed)
            return [XMP_REPAIRED], fixed
    del pdf.Root["/Metadata"]
    return [XMP_REMOVED], None


def pdfa_claim(packet: bytes | None) -> str | None:
    """'PDF/A-2b' and the like when the XMP claims conformance, else None."""
    if packet is None:
        return None
    from pyhanko.pdf_utils.metadata import model, xmp_xml

    fields: dict[str, str] = {}
    for root in xmp_xml.parse_xmp(io.BytesIO(packet)):
        for name, value in root:
            if isinstance(name, model.ExpandedName) and name.ns == PDFAID:
                fields[name.local_name] = str(value.value) if isinstance(value.value, str) else ""
    part = fields.get("part", "").strip()
    if not part:
        return None
    return f"PDF/A-{part}{fields.get('conformance', '').strip().lower()}"


def drop_pdfa_claim(pdf: Any, packet: bytes) -> None:
    """Remove every pdfaid property (attribute or element) from the catalogue's XMP."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    # The packet passed pyhanko_accepts: XML text with its xpacket instructions around.
    try:
        root = etree.fromstring(_text(packet).strip(), parser=parser)
    except (etree.XMLSyntaxError, ValueError):
        del pdf.Root["/Metadata"]  # the claim goes with the rest of the description
        return
    for element in list(root.iter()):
        if not isinstance(element.tag, str):
            continue
        for attribute in list(element.attrib):
            if attribute.startswith("{" + PDFAID + "}"):
                del element.attrib[attribute]
        if element.tag.startswith("{" + PDFAID + "}"):
            parent = element.getparent()
            if parent is not None:
                parent.remove(element)
    pdf.Root["/Metadata"].write(_wrapped(etree.tostring(root, encoding="unicode")))


def pdfa_notice(claim: str, kept: bool) -> dict[str, object]:
    if kept:
        return notice(N_("The file is %(claim)s (the archival format) and stays so: nothing PDF/A "
                         "covers was changed, and the signature is added without rewriting the file."),
                      claim=claim)
    return notice(N_("The file declared itself %(claim)s (the archival format), but parts of it had "
                     "to be removed or repaired, so that claim was taken out: the signed file is an "
                     "ordinary PDF. If the recipient needs PDF/A, ask the sender for a copy without "
                     "those parts."), claim=claim)

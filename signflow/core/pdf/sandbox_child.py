"""The sandbox's child program: run as `python -I sandbox_child.py MEMORY CPU` by
signflow.core.pdf.sandbox, it caps its own resources, then parses one PDF.

It caps its address space, CPU time, file writes and process creation *before*
importing any parser or reading a byte of input. It imports nothing from the
signflow package (that would load the app and its configuration into the
sandbox), only the standard library and the parsers; the parent imports the
wire format and the limits from here, never the other way round.

Wire format, both directions: 4-byte big-endian header length, a JSON header,
then the raw payload (PDF bytes in, normalised PDF or PNG out).
"""

from __future__ import annotations

import io
import json
import math
import struct
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

MiB = 1024 * 1024
# A decoded stream pyHanko would refuse anyway (its 0.38 per-stream default).
MAX_STREAM_DECODED = 256 * MiB
MAX_TOTAL_DECODED = 1024 * MiB
# An A3 page scanned at 600 dpi is ~70 Mpx; a declared 60000x60000 image is 3.6 Gpx.
MAX_IMAGE_PIXELS = 100_000_000
# Rendered previews: a 1000 px wide A4 page is 1.4 Mpx; this bounds odd shapes.
MAX_RENDER_PIXELS = 8_000_000
MAX_RENDER_SIDE = 16_384


def frame(header: dict[str, Any], payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">I", len(raw)) + raw + payload


def unframe(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < 4:
        raise ValueError("short frame")
    (size,) = struct.unpack(">I", data[:4])
    if size > len(data) - 4:
        raise ValueError("bad frame length")
    header = json.loads(data[4 : 4 + size])
    if not isinstance(header, dict):
        raise ValueError("bad frame header")
    return header, data[4 + size :]


class _Refuse(Exception):
    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


UNREADABLE = "the PDF could not be read"

# Actions a reader runs on its own or that leave the document. Only internal
# GoTo survives: the physician reviews page images and cannot inspect a link
# target, so a signed file should not carry destinations nobody saw.
ACTION_LABELS = {
    "/JavaScript": "JavaScript",
    "/Launch": "launch actions",
    "/GoToR": "links to other files",
    "/GoToE": "links to other files",
    "/GoToDp": "links to other files",
    "/ImportData": "data import actions",
    "/SubmitForm": "form submission actions",
    "/ResetForm": "form reset actions",
    "/URI": "web links",
    "/Sound": "sounds",
    "/Movie": "movies",
    "/Rendition": "media renditions",
    "/RichMediaExecute": "rich media",
    "/GoTo3DView": "3D content",
    "/SetOCGState": "layer visibility actions",
    "/Hide": "hide actions",
    "/Named": "menu actions",
    "/Thread": "article actions",
    "/Trans": "transition actions",
}
SAFE_ACTIONS = {"/GoTo"}
BAD_ANNOTATIONS = {
    "/FileAttachment": "file attachment annotations",
    "/RichMedia": "rich media",
    "/3D": "3D content",
    "/Movie": "movies",
    "/Sound": "sounds",
    "/Screen": "screen annotations",
}
FLATE = {"/FlateDecode", "/Fl"}
GENERIC_FILTERS = FLATE | {
    "/ASCIIHexDecode",
    "/AHx",
    "/ASCII85Decode",
    "/A85",
    "/LZWDecode",
    "/LZW",
    "/RunLengthDecode",
    "/RL",
}


def _set_limits(memory_bytes: int, cpu_seconds: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # stdout is a pipe, which FSIZE does not cover: the child cannot create files.
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def _name(value: Any) -> str | None:
    import pikepdf

    return str(value) if isinstance(value, pikepdf.Name) else None


def _is_dictlike(value: Any) -> bool:
    import pikepdf

    return isinstance(value, pikepdf.Dictionary | pikepdf.Stream)


class _Inspector:
    """One pass over every object reachable from the trailer: records (and in
    strip mode removes) active content, collects streams for the size checks."""

    def __init__(self, pdf: Any, strip: bool) -> None:
        self.pdf = pdf
        self.strip = strip
        self.found: Counter[str] = Counter()
        self.streams: list[Any] = []

    def _remove(self, owner: Any, key: str) -> None:
        if self.strip:
            del owner[key]

    def _action_chain(self, action: Any) -> Iterator[Any]:
        """An action and its /Next successors (a dict or an array of them, possibly cyclic)."""
        return _unique_dicts([action], lambda item: [item["/Next"]] if "/Next" in item else [])

    def _unsafe_kinds(self, action: Any) -> list[str]:
        kinds = []
        for step in self._action_chain(action):
            action_type = _name(step.get("/S"))
            if action_type in ACTION_LABELS and action_type not in SAFE_ACTIONS:
                kinds.append(ACTION_LABELS[action_type])
            elif "/JS" in step:
                kinds.append("JavaScript")
        return kinds

    def _is_action(self, value: Any) -> bool:
        return _is_dictlike(value) and (_name(value.get("/S")) in ACTION_LABELS or "/JS" in value)

    def _count_name_tree(self, tree: Any) -> int:
        import pikepdf

        count = 0
        for node in _unique_dicts([tree], _kids, limit=100_000):
            names = node.get("/Names")
            if isinstance(names, pikepdf.Array):
                count += len(names) // 2
        return count

    def _catalog(self, root: Any) -> None:
        names = root.get("/Names")
        if _is_dictlike(names):
            if "/JavaScript" in names:
                self.found["JavaScript"] += max(1, self._count_name_tree(names["/JavaScript"]))
                self._remove(names, "/JavaScript")
            if "/EmbeddedFiles" in names:
                self.found["embedded files"] += max(
                    1, self._count_name_tree(names["/EmbeddedFiles"])
                )
                self._remove(names, "/EmbeddedFiles")
            if "/AlternatePresentations" in names:
                self.found["alternate presentations"] += 1
                self._remove(names, "/AlternatePresentations")
        if "/OpenAction" in root:
            self.found["open action"] += 1
            for kind in self._unsafe_kinds(root["/OpenAction"]):
                self.found[kind] += 1
            self._remove(root, "/OpenAction")
        acroform = root.get("/AcroForm")
        if _is_dictlike(acroform) and "/XFA" in acroform:
            self.found["XFA form"] += 1
            self._remove(acroform, "/XFA")
        for key, label in (("/NeedsRendering", "XFA form"), ("/Collection", "portfolio")):
            if key in root:
                self.found[label] += 0 if label in self.found else 1
                self._remove(root, key)
        perms = root.get("/Perms")
        # Reader-extension rights are a signature by the producing tool, not by
        # a person; a rewrite voids them anyway, so they go instead of blocking.
        if _is_dictlike(perms) and "/UR3" in perms and "/DocMDP" not in perms:
            self.found["usage rights signature"] += 1
            self._remove(root, "/Perms")

    def _dictionary(self, obj: Any) -> None:
        import pikepdf

        if "/AA" in obj:
            self.found["automatic actions"] += 1
            for kind in self._unsafe_kinds(
                list(obj["/AA"].values()) if _is_dictlike(obj["/AA"]) else []
            ):
                self.found[kind] += 1
            self._remove(obj, "/AA")
        for key in list(obj.keys()):
            if key in ("/Parent", "/P"):
                continue
            value = obj[key]
            if key == "/JS" and _name(obj.get("/S")) not in ACTION_LABELS:
                self.found["JavaScript"] += 1
                self._remove(obj, key)
            elif key in ("/EF", "/AF"):
                self.found["embedded files"] += (
                    len(value) if isinstance(value, pikepdf.Array | pikepdf.Dictionary) else 1
                )
                self._remove(obj, key)
            elif key == "/XFA":
                self.found["XFA form"] += 0 if "XFA form" in self.found else 1
                self._remove(obj, key)
            elif self._is_action(value):
                kinds = self._unsafe_kinds(value)
                for kind in kinds:
                    self.found[kind] += 1
                if kinds:
                    self._remove(obj, key)
            elif isinstance(value, pikepdf.Array) and key in ("/Annots", "/Next"):
                self._filter_array(obj, key, value)

    def _filter_array(self, owner: Any, key: str, items: Any) -> None:
        import pikepdf

        kept = []
        for item in items:
            if _is_dictlike(item):
                subtype = _name(item.get("/Subtype"))
                if subtype in BAD_ANNOTATIONS:
                    self.found[BAD_ANNOTATIONS[subtype]] += 1
                    continue
                if self._is_action(item):
                    kinds = self._unsafe_kinds(item)
                    if kinds:
                        for kind in kinds:
                            self.found[kind] += 1
                        continue
            kept.append(item)
        if self.strip and len(kept) != len(items):
            owner[key] = pikepdf.Array(kept)

    def walk(self) -> None:
        import pikepdf

        root = self.pdf.Root
        self._catalog(root)

        def values(obj: Any) -> list[Any]:
            # Read after the caller handled `obj`: what it stripped is not visited.
            return [obj[key] for key in list(obj.keys()) if key != "/Encrypt"]

        for obj in _unique_dicts([self.pdf.trailer], values):
            if isinstance(obj, pikepdf.Stream):
                self.streams.append(obj)
            self._dictionary(obj)

    def removed(self) -> list[str]:
        return [label if n == 1 else f"{label} ({n})" for label, n in self.found.items() if n]


def _has_signature(pdf: Any) -> bool:
    import pikepdf

    perms = pdf.Root.get("/Perms")
    if _is_dictlike(perms) and "/DocMDP" in perms:
        return True
    candidates: list[Any] = []
    acroform = pdf.Root.get("/AcroForm")
    if _is_dictlike(acroform) and isinstance(acroform.get("/Fields"), pikepdf.Array):
        candidates.extend(acroform["/Fields"])
    for page in pdf.pages:
        annots = page.obj.get("/Annots")
        if isinstance(annots, pikepdf.Array):
            candidates.extend(annots)
    for node in _unique_dicts(candidates, _kids, limit=200_000):
        value = node.get("/V")
        if _name(node.get("/FT")) == "/Sig" and _is_dictlike(value):
            return True
        if _is_dictlike(value) and "/ByteRange" in value:
            return True
    return False


def _kids(node: Any) -> list[Any]:
    import pikepdf

    kids = node.get("/Kids")
    return list(kids) if isinstance(kids, pikepdf.Array) else []


def _unique_dicts(start: list[Any], children: Callable[[Any], list[Any]], *,
                  limit: int | None = None) -> Iterator[Any]:
    """Every dictionary reachable from `start` once, arrays flattened: hostile files
    share objects and build cycles. `children` is asked after the caller has seen
    the node. Stops after `limit` distinct indirect objects."""
    import pikepdf

    seen: set[tuple[int, int]] = set()
    todo = list(start)
    while todo and (limit is None or len(seen) < limit):
        item = todo.pop()
        if isinstance(item, pikepdf.Array | list):
            todo.extend(item)
            continue
        if not _is_dictlike(item):
            continue
        if item.is_indirect:
            if item.objgen in seen:
                continue
            seen.add(item.objgen)
        yield item
        todo.extend(children(item))


def _filters(stream: Any) -> list[str]:
    import pikepdf

    raw = stream.get("/Filter")
    if isinstance(raw, pikepdf.Name):
        return [str(raw)]
    if isinstance(raw, pikepdf.Array):
        return [str(item) for item in raw if isinstance(item, pikepdf.Name)]
    return []


def _inflated_size(raw: bytes, cap: int) -> int:
    """Decoded size of a zlib stream, counted without keeping the output."""
    inflater = zlib.decompressobj()
    total = 0
    view = memoryview(raw)
    chunk = 1 << 16
    try:
        for start in range(0, len(view), chunk):
            data: bytes | memoryview = view[start : start + chunk]
            while data:
                out = inflater.decompress(data, 1 << 20)
                total += len(out)
                if total > cap:
                    return total
                data = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error:
        # Damaged data: the renderer decodes what it can, no more than this.
        pass
    return total


def _out_of_memory(exc: BaseException) -> bool:
    # qpdf reports a failed allocation as a decoding error carrying std::bad_alloc.
    return isinstance(exc, MemoryError) or "bad_alloc" in str(exc)


def _check_sizes(streams: list[Any]) -> None:
    import pikepdf

    total = 0
    for stream in streams:
        if _name(stream.get("/Subtype")) == "/Image":
            width, height = stream.get("/Width", 0), stream.get("/Height", 0)
            if (
                isinstance(width, int)
                and isinstance(height, int)
                and width * height > MAX_IMAGE_PIXELS
            ):
                raise _Refuse("the PDF contains an image too large to display")
        filters = _filters(stream)
        if not filters:
            continue
        if filters[0] in FLATE:
            size = _inflated_size(stream.read_raw_bytes(), MAX_STREAM_DECODED)
        elif all(item in GENERIC_FILTERS for item in filters):
            try:
                size = len(stream.read_bytes(pikepdf.StreamDecodeLevel.specialized))
            except pikepdf.PdfError as exc:
                if _out_of_memory(exc):
                    raise MemoryError from None
                # Undecodable: PDFium will fail on it too, inside its own limits.
                continue
        else:
            continue
        if size > MAX_STREAM_DECODED:
            raise _Refuse(
                f"the PDF contains a stream that expands beyond {MAX_STREAM_DECODED // MiB} MiB"
            )
        total += size
        if total > MAX_TOTAL_DECODED:
            raise _Refuse(
                f"the PDF expands beyond {MAX_TOTAL_DECODED // MiB} MiB when decompressed"
            )


def _check_readers(data: bytes, page_count: int) -> None:
    """The bytes we hand on must read the same in the three engines that will see them."""
    import pikepdf
    import pypdfium2
    from pyhanko.pdf_utils.reader import PdfFileReader

    with pikepdf.open(io.BytesIO(data), attempt_recovery=False) as again:
        if len(again.pages) != page_count:
            raise _Refuse(UNREADABLE)
    reader = PdfFileReader(io.BytesIO(data), strict=True)
    if int(reader.root["/Pages"]["/Count"]) != page_count or "/ID" not in reader.trailer:
        raise _Refuse(UNREADABLE)
    reader.find_page_for_modification(page_count - 1)  # type: ignore[no-untyped-call]
    document = pypdfium2.PdfDocument(data)
    try:
        if len(document) != page_count:
            raise _Refuse(UNREADABLE)
    finally:
        document.close()


def _normalise(params: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    import pikepdf

    max_pages = int(params["max_pages"])
    refuse_active = params["active_content"] == "refuse"
    allow_signed = bool(params["allow_signed"])
    try:
        pdf = pikepdf.open(io.BytesIO(data))
    except pikepdf.PasswordError:
        raise _Refuse("the PDF is encrypted") from None
    except (pikepdf.PdfError, ValueError, RuntimeError):
        raise _Refuse(UNREADABLE) from None
    with pdf:
        if pdf.is_encrypted or "/Encrypt" in pdf.trailer:
            raise _Refuse("the PDF is encrypted")
        try:
            root = pdf.Root
            page_count = len(pdf.pages)
        except (pikepdf.PdfError, AttributeError, ValueError, RuntimeError):
            raise _Refuse(UNREADABLE) from None
        if not _is_dictlike(root):
            raise _Refuse(UNREADABLE)
        if page_count == 0:
            # Pages lost to damage are not the same as a document without any.
            raise _Refuse(UNREADABLE if pdf.get_warnings() else "the PDF has no pages")
        if page_count > max_pages:
            raise _Refuse(f"the PDF has more than {max_pages} pages")
        signed = _has_signature(pdf)
        if signed and not allow_signed:
            raise _Refuse("the PDF already carries a signature")
        # A signed file cannot be cleaned without voiding its signatures.
        inspector = _Inspector(pdf, strip=not (refuse_active or signed))
        inspector.walk()
        if inspector.found and not inspector.strip:
            what = (
                "JavaScript"
                if "JavaScript" in inspector.found
                else "active content (" + ", ".join(inspector.removed()) + ")"
            )
            suffix = " and already carries a signature" if signed else ""
            raise _Refuse(f"the PDF contains {what}{suffix}")
        _check_sizes(inspector.streams)
        removed = inspector.removed()
        if pdf.get_warnings():
            removed.append("damaged file structure (repaired)")
        if signed:
            # Counter-signing appends to the exact bytes received.
            if not data.startswith(b"%PDF-") or removed:
                raise _Refuse("the PDF already carries a signature and needs repairs")
            out = data
        else:
            buffer = io.BytesIO()
            pdf.save(
                buffer,
                linearize=False,
                object_stream_mode=pikepdf.ObjectStreamMode.generate,
                compress_streams=True,
                deterministic_id=True,
                fix_metadata_version=False,
            )
            out = buffer.getvalue()
    _check_readers(out, page_count)
    return {"page_count": page_count, "removed": removed, "passthrough": signed}, out


def _render(params: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    import pypdfium2

    page_index = int(params["page_index"])
    width_px = int(params["width_px"])
    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError:
        raise _Refuse(UNREADABLE) from None
    try:
        page_count = len(document)
        if not 0 <= page_index < page_count:
            raise _Refuse("no such page", kind="not-found")
        document.init_forms()
        page = document[page_index]
        # PDFium reports the size as displayed, /Rotate already applied.
        width_pt, height_pt = page.get_size()
        if width_pt <= 0 or height_pt <= 0:
            raise _Refuse(UNREADABLE)
        scale = width_px / width_pt
        # Clamp the bitmap, not the request: a 60000 pt square or a 1 x 50000
        # strip still renders into a few megabytes.
        area = width_pt * scale * height_pt * scale
        if area > MAX_RENDER_PIXELS:
            scale *= math.sqrt(MAX_RENDER_PIXELS / area)
        longest = max(width_pt, height_pt) * scale
        if longest > MAX_RENDER_SIDE:
            scale *= MAX_RENDER_SIDE / longest
        scale = max(scale, 1e-3)
        bitmap = page.render(scale=scale, may_draw_forms=True, draw_annots=True)
        image = bitmap.to_pil()
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=6)
        meta = {"page_count": page_count, "width": image.width, "height": image.height}
        return meta, out.getvalue()
    finally:
        document.close()


def _count(params: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    import pypdfium2

    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError:
        raise _Refuse(UNREADABLE) from None
    try:
        return {"page_count": len(document)}, b""
    finally:
        document.close()


TASKS = {"normalise": _normalise, "render": _render, "count": _count}


def _child_main(argv: list[str]) -> int:
    _set_limits(int(argv[1]), int(argv[2]))
    out = sys.stdout.buffer
    try:
        header, payload = unframe(sys.stdin.buffer.read())
        meta, body = TASKS[str(header["task"])](dict(header["params"]), payload)
        answer = frame({"ok": True, "meta": meta}, body)
        code = 0
    except _Refuse as refusal:
        answer = frame({"ok": False, "kind": refusal.kind, "message": refusal.message}, b"")
        code = 0
    except MemoryError:
        answer = frame({"ok": False, "kind": "resources", "detail": "memory"}, b"")
        code = 3
    except RecursionError:
        answer = frame({"ok": False, "kind": "resources", "detail": "recursion"}, b"")
        code = 3
    except Exception as exc:  # hostile input reaches every corner of three parsers
        if _out_of_memory(exc):
            answer = frame({"ok": False, "kind": "resources", "detail": "memory"}, b"")
            code = 3
        else:
            answer = frame(
                {
                    "ok": False,
                    "kind": "invalid",
                    "message": UNREADABLE,
                    "detail": type(exc).__name__,
                },
                b"",
            )
            code = 0
    out.write(answer)
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv))

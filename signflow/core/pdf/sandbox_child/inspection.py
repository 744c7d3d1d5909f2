"""Hostile-structure checks on an opened document: active content (recorded, and
in strip mode removed), existing signatures. Decompression and image bombs:
sandbox_child.budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from signflow.core.pdf.sandbox_child.objects import (
    is_dictlike,
    kids,
    name_of,
    unique_dicts,
)

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

class Inspector:
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
        return unique_dicts([action], lambda item: [item["/Next"]] if "/Next" in item else [])

    def _unsafe_kinds(self, action: Any) -> list[str]:
        kinds = []
        for step in self._action_chain(action):
            action_type = name_of(step.get("/S"))
            if action_type in ACTION_LABELS and action_type not in SAFE_ACTIONS:
                kinds.append(ACTION_LABELS[action_type])
            elif "/JS" in step:
                kinds.append("JavaScript")
        return kinds

    def _is_action(self, value: Any) -> bool:
        return is_dictlike(value) and (name_of(value.get("/S")) in ACTION_LABELS or "/JS" in value)

    def _count_name_tree(self, tree: Any) -> int:
        import pikepdf

        count = 0
        for node in unique_dicts([tree], kids, limit=100_000):
            names = node.get("/Names")
            if isinstance(names, pikepdf.Array):
                count += len(names) // 2
        return count

    def _catalog(self, root: Any) -> None:
        names = root.get("/Names")
        if is_dictlike(names):
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
        if is_dictlike(acroform) and "/XFA" in acroform:
            self.found["XFA form"] += 1
            self._remove(acroform, "/XFA")
        for key, label in (("/NeedsRendering", "XFA form"), ("/Collection", "portfolio")):
            if key in root:
                self.found[label] += 0 if label in self.found else 1
                self._remove(root, key)
        perms = root.get("/Perms")
        # Reader-extension rights are a signature by the producing tool, not by
        # a person; a rewrite voids them anyway, so they go instead of blocking.
        if is_dictlike(perms) and "/UR3" in perms and "/DocMDP" not in perms:
            self.found["usage rights signature"] += 1
            self._remove(root, "/Perms")

    def _dictionary(self, obj: Any) -> None:
        import pikepdf

        if "/AA" in obj:
            self.found["automatic actions"] += 1
            for kind in self._unsafe_kinds(
                list(obj["/AA"].values()) if is_dictlike(obj["/AA"]) else []
            ):
                self.found[kind] += 1
            self._remove(obj, "/AA")
        for key in list(obj.keys()):
            if key in ("/Parent", "/P"):
                continue
            value = obj[key]
            if key == "/JS" and name_of(obj.get("/S")) not in ACTION_LABELS:
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
            if is_dictlike(item):
                subtype = name_of(item.get("/Subtype"))
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

        for obj in unique_dicts([self.pdf.trailer], values):
            if isinstance(obj, pikepdf.Stream):
                self.streams.append(obj)
            self._dictionary(obj)

    def removed(self) -> list[str]:
        return [label if n == 1 else f"{label} ({n})" for label, n in self.found.items() if n]


def has_signature(pdf: Any) -> bool:
    import pikepdf

    perms = pdf.Root.get("/Perms")
    if is_dictlike(perms) and "/DocMDP" in perms:
        return True
    candidates: list[Any] = []
    acroform = pdf.Root.get("/AcroForm")
    if is_dictlike(acroform) and isinstance(acroform.get("/Fields"), pikepdf.Array):
        candidates.extend(acroform["/Fields"])
    for page in pdf.pages:
        annots = page.obj.get("/Annots")
        if isinstance(annots, pikepdf.Array):
            candidates.extend(annots)
    for node in unique_dicts(candidates, kids, limit=200_000):
        value = node.get("/V")
        if name_of(node.get("/FT")) == "/Sig" and is_dictlike(value):
            return True
        if is_dictlike(value) and "/ByteRange" in value:
            return True
    return False

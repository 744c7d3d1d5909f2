"""Hostile-structure checks on an opened document: existing signatures (active
content: sandbox_child.active_content; decompression and image bombs:
sandbox_child.budget)."""

from __future__ import annotations

from typing import Any

from signflow.core.pdf.sandbox_child.objects import (
    is_dictlike,
    kids,
    name_of,
    unique_dicts,
)


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

"""Active content: what a reader would run, open or send by itself or on a click
(dangerous), told from the navigation every office suite writes (harmless).

Dangerous: JavaScript anywhere, Launch, SubmitForm, ImportData, links to other
files (GoToR, GoToE, Thread with a file), URIs that are not http(s) or mailto,
embedded and associated files, file attachment annotations, portfolios, XFA,
rich media, 3D, movies, sounds, renditions, actions that hide, show or clear
parts of the page, reader menu commands other than page navigation, and any
action type this module does not know. Harmless, and kept: an /OpenAction that
is a destination or a /GoTo (LibreOffice and FPDF write one into every file),
/GoTo links and outlines, the four standard /Named page moves, /Trans, local
/Thread, and http(s)/mailto links. An action chain (/Next) is dangerous as a
whole when one of its steps is.

Labels are what a technician reads ("Removed from the upload for safety: ..."):
plain words, no PDF vocabulary.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from signflow.core.pdf.sandbox_child.objects import is_dictlike, kids, name_of, unique_dicts
from signflow.core.pdf.sandbox_child.wire import N_

SCRIPT_ON_OPEN = N_("a script that runs when the file opens")
SCRIPT_AUTOMATIC = N_("a script that runs by itself when a page or a form field is used")
SCRIPT_ON_CLICK = N_("a script behind a link, button or bookmark")
LAUNCH = N_("a link that starts a program")
OTHER_FILE = N_("a link that opens another file")
IMPORT = N_("a button that loads data from another file")
SUBMIT = N_("a button that sends what was typed in the form over the network")
NON_WEB_LINK = N_("a link to an address that is not a web page")
ATTACHMENT = N_("an attached file")
XFA = N_("a dynamic (XFA) form that needs its own program to display")
MEDIA = N_("embedded video, sound or 3D content")
CHANGES_VIEW = N_("a button that hides, shows or clears parts of the document")
MENU = N_("a button that runs a command of the reader (print, save...)")
UNKNOWN = N_("an unknown kind of action")
# Not dangerous, but a rewrite voids it: removed and reported, never refused.
USAGE_RIGHTS = N_("Adobe Reader usage rights (a changed file loses them anyway)")

SAFE_SCHEMES = ("http", "https", "mailto")
NAVIGATION = {"/NextPage", "/PrevPage", "/FirstPage", "/LastPage"}
ACTION_TYPES = {
    "/GoTo", "/GoToR", "/GoToE", "/GoToDp", "/Launch", "/Thread", "/URI", "/Sound",
    "/Movie", "/Hide", "/Named", "/SubmitForm", "/ResetForm", "/ImportData",
    "/JavaScript", "/SetOCGState", "/Rendition", "/Trans", "/GoTo3DView",
    "/RichMediaExecute",
}
DANGEROUS_TYPES = {
    "/Launch": LAUNCH,
    "/GoToR": OTHER_FILE,
    "/GoToE": OTHER_FILE,
    "/GoToDp": OTHER_FILE,
    "/ImportData": IMPORT,
    "/SubmitForm": SUBMIT,
    "/Sound": MEDIA,
    "/Movie": MEDIA,
    "/Rendition": MEDIA,
    "/RichMediaExecute": MEDIA,
    "/GoTo3DView": MEDIA,
    "/Hide": CHANGES_VIEW,
    "/ResetForm": CHANGES_VIEW,
    "/SetOCGState": CHANGES_VIEW,
}
DANGEROUS_ANNOTATIONS = {
    "/FileAttachment": ATTACHMENT,
    "/RichMedia": MEDIA,
    "/3D": MEDIA,
    "/Movie": MEDIA,
    "/Sound": MEDIA,
    "/Screen": MEDIA,
}


SKIPPED = ("/Encrypt", "/AA", "/OpenAction")


def uri_scheme(uri: str) -> str | None:
    """The scheme of an absolute URI, lower case; None when there is none."""
    head, sep, _ = uri.strip().partition(":")
    if not sep or not head or not head[0].isalpha():
        return None
    if not all(c.isalnum() or c in "+-." for c in head):
        return None
    return head.lower()


def _is_action(value: Any) -> bool:
    return is_dictlike(value) and (name_of(value.get("/S")) in ACTION_TYPES or "/JS" in value)


class ActiveContent:
    """One pass over every object reachable from the trailer. `found` counts the
    dangerous labels, `dropped` the harmless ones removed anyway. With `strip`, both
    are removed from the document; without (a signed file), nothing is touched."""

    def __init__(self, pdf: Any, strip: bool) -> None:
        self.pdf = pdf
        self.strip = strip
        self.found: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.streams: list[Any] = []

    def _remove(self, owner: Any, key: str) -> None:
        if self.strip:
            del owner[key]

    def dangers(self, action: Any, script: str) -> list[str]:
        """Labels of the dangerous steps of an action chain; `script` names where a
        JavaScript step would run."""
        labels = []
        chain = unique_dicts([action], lambda step: [step["/Next"]] if "/Next" in step else [])
        for step in chain:
            kind = name_of(step.get("/S"))
            if kind == "/JavaScript" or "/JS" in step:
                labels.append(script)
            elif kind in DANGEROUS_TYPES:
                labels.append(DANGEROUS_TYPES[kind])
            elif kind == "/URI":
                target = step.get("/URI")
                if uri_scheme(str(target) if target is not None else "") not in SAFE_SCHEMES:
                    labels.append(NON_WEB_LINK)
            elif kind == "/Named":
                if name_of(step.get("/N")) not in NAVIGATION:
                    labels.append(MENU)
            elif kind == "/Thread":
                if "/F" in step:
                    labels.append(OTHER_FILE)
            elif kind not in ("/GoTo", "/Trans") and kind is not None:
                labels.append(UNKNOWN)
        return labels

    def _judge(self, owner: Any, key: str, script: str) -> None:
        """Remove `owner[key]`, an action, when it is dangerous."""
        labels = self.dangers(owner[key], script)
        self.found.update(labels)
        if labels:
            self._remove(owner, key)

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
            for key, label in (
                ("/JavaScript", SCRIPT_ON_OPEN),
                ("/EmbeddedFiles", ATTACHMENT),
                ("/AlternatePresentations", MEDIA),
            ):
                if key in names:
                    self.found[label] += max(1, self._count_name_tree(names[key]))
                    self._remove(names, key)
        if "/OpenAction" in root and _is_action(root["/OpenAction"]):
            # A destination array, or a /GoTo, is the initial view: kept.
            self._judge(root, "/OpenAction", SCRIPT_ON_OPEN)
        acroform = root.get("/AcroForm")
        if is_dictlike(acroform) and "/XFA" in acroform:
            self.found[XFA] += 1
            self._remove(acroform, "/XFA")
        if "/NeedsRendering" in root:
            self.found[XFA] += 0 if XFA in self.found else 1
            self._remove(root, "/NeedsRendering")
        if "/Collection" in root:
            self.found[ATTACHMENT] += 0 if ATTACHMENT in self.found else 1
            self._remove(root, "/Collection")
        perms = root.get("/Perms")
        # Reader-extension rights are a signature by the producing tool, not by
        # a person; a rewrite voids them anyway, so they go instead of blocking.
        if is_dictlike(perms) and "/UR3" in perms and "/DocMDP" not in perms:
            self.dropped[USAGE_RIGHTS] += 1
            self._remove(root, "/Perms")

    def _additional_actions(self, obj: Any) -> None:
        """/AA: actions a reader runs on its own (page opened, field entered...).
        Dangerous entries go; an /AA left empty goes too."""
        aa = obj["/AA"]
        if not is_dictlike(aa):
            return
        for trigger in list(aa.keys()):
            if is_dictlike(aa[trigger]):
                self._judge(aa, trigger, SCRIPT_AUTOMATIC)
            else:  # null or junk: nothing a reader could run
                self._remove(aa, trigger)
        if self.strip and len(aa.keys()) == 0:
            del obj["/AA"]

    def _dictionary(self, obj: Any) -> None:
        import pikepdf

        if "/AA" in obj:
            self._additional_actions(obj)
        for key in list(obj.keys()):
            if key in ("/Parent", "/P", "/AA", "/OpenAction"):
                continue
            value = obj[key]
            if key == "/JS" and name_of(obj.get("/S")) not in ACTION_TYPES:
                self.found[SCRIPT_ON_CLICK] += 1
                self._remove(obj, key)
            elif key in ("/EF", "/AF"):
                self.found[ATTACHMENT] += (
                    len(value) if isinstance(value, pikepdf.Array | pikepdf.Dictionary) else 1
                )
                self._remove(obj, key)
            elif key in ("/XFA", "/RichMediaContent"):
                label = XFA if key == "/XFA" else MEDIA
                self.found[label] += 0 if label in self.found else 1
                self._remove(obj, key)
            elif _is_action(value) and key != "/Next":
                self._judge(obj, key, SCRIPT_ON_CLICK)
            elif key == "/Annots" and isinstance(value, pikepdf.Array):
                self._annotations(obj, value)

    def _annotations(self, page: Any, annots: Any) -> None:
        import pikepdf

        kept = []
        for annot in annots:
            subtype = name_of(annot.get("/Subtype")) if is_dictlike(annot) else None
            if subtype in DANGEROUS_ANNOTATIONS:
                self.found[DANGEROUS_ANNOTATIONS[subtype]] += 1
                continue
            kept.append(annot)
        if self.strip and len(kept) != len(annots):
            page["/Annots"] = pikepdf.Array(kept)

    def walk(self) -> None:
        import pikepdf

        self._catalog(self.pdf.Root)

        def values(obj: Any) -> list[Any]:
            # Read after the caller handled `obj`: what it stripped is not visited.
            # What is left of /AA and /OpenAction was judged harmless as a whole.
            return [obj[key] for key in list(obj.keys()) if key not in SKIPPED]

        for obj in unique_dicts([self.pdf.trailer], values):
            if isinstance(obj, pikepdf.Stream):
                self.streams.append(obj)
            self._dictionary(obj)

    @staticmethod
    def describe(counts: Counter[str]) -> list[str]:
        return [label if n == 1 else f"{label} ({n})" for label, n in counts.items() if n]

    def removed(self) -> list[str]:
        return self.describe(self.found + self.dropped)

    def refusal(self, signed: bool) -> str:
        """The refusal for a document whose dangerous content may not be removed."""
        what = ", ".join(self.describe(self.found))
        if signed:
            return (f"the PDF contains {what} and already carries a signature: removing it "
                    "would void that signature. Ask the sender for a copy without it")
        return (f"the PDF contains {what}, which this service does not accept. Ask the sender "
                "for a copy without it, or print the document to a new PDF and upload that")

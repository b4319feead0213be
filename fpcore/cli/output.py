"""What the command line prints: text renderings of reports, and progress bars.

Reports go to stdout; progress bars, warnings and errors to stderr (one line per bad file).
"""
from __future__ import annotations

import os
import sys


def out(line: str = "") -> None:
    print(line, file=sys.stdout)


def err(line: str) -> None:
    print(line, file=sys.stderr)


# ------------------------------------------------------------------ reports

def identify_text(rep: dict) -> None:
    a, v = rep["architecture"], rep["verdict"]
    fam = a.get("layout_name") or a["family"] + (f" ({a['variant']})" if a.get("variant") else "")
    out(f"{rep['path']}")
    kind = f", {a['kind']}" if a.get("kind") not in (None, "checkpoint") else ""
    out(f"  architecture: {fam}{kind}, {a.get('dtype')}, components: {', '.join(a['components']) or '-'}"
        + (f", prediction: {a['prediction']}" if a.get("prediction") else ""))
    lay = a.get("layout") or {}
    if lay.get("containers"):         # a file no rule recognises: where each component was read, its size
        from ..layout import format_params
        sizes = lay.get("component_params") or {}
        out("  containers: " + ", ".join(f"{c} ({p}., {format_params(sizes.get(c, 0))})"
                                         for c, p in lay["containers"].items()))
    if rep.get("sha256"):
        out(f"  sha256: {rep['sha256']}  (AutoV2 {rep['autov2'].upper()}"
            + (f", AutoV3 {rep['autov3'].upper()})" if rep.get("autov3") else ")"))
    from ..identify import confidence_text, evidence_notes, merge_recipe, needs_reason
    what = (f" — {merge_recipe(rep['merge'])}" if v["relation"] == "merge" and rep.get("merge")
            else f" — base {v['base']}" if v.get("base") else "")
    out(f"  verdict: {v['relation']}{what}  (confidence {confidence_text(v.get('confidence'))})")
    out(f"  {v['summary']}")
    shown = ""
    if needs_reason(v):
        out(f"  why: {v['reason']}")
        shown = v["reason"]
    for m in rep.get("merge") or []:
        chain = f"  (lineage {' → '.join(m['lineage'])})" if m.get("lineage") else ""
        out(f"    merge: {m['ref']} {m['weight']:.2f}{chain}")
    for g, ws in (rep.get("merge_blocks") or {}).items():
        out(f"    {g} blocks: " + ", ".join(f"{m['ref']} {m['weight']:.2f}" for m in ws))
    for c, e in rep["components"].items():
        also = f" (also in: {', '.join(e['also_in'])})" if e.get("also_in") else ""
        out(f"  {c:7s} {e['relation']}" + (f" {e['ref']}" if e.get("ref") else "") + also)
    if v["relation"] == "unknown" and rep.get("candidates"):
        c = rep["candidates"][0]
        shown += " cos z"
        out(f"  closest reference: {c['ref']} (cos {c['cos']:.3f}, z {c['z']:.0f}; related models score far higher)")
    for note in evidence_notes(shown):
        out(f"    {note}")
    if rep.get("metadata"):
        from ..identify.provenance import summary
        s = summary(rep["metadata"])
        if s:
            out(f"  provenance: {s}")
    _claims_text(rep)


def _claims_text(rep: dict, root: str | None = None) -> None:
    """What the file claims and how it checks, what changed, health, trained on, fits."""
    from ..claims import wording
    for line in filter(None, [wording.trained_on_line(rep), wording.delta_line(rep), wording.health_line(rep)]):
        out(f"  {line}")
    for line in wording.claims_lines(rep):
        out(f"  claim {line}")
    for line in wording.fits_lines(rep, root):
        out(f"  {line}")


def inspect_text(rep: dict) -> None:
    a = rep["architecture"]
    out(f"{rep['path']}: {a.get('layout_name') or a['family']}" + (f" ({a['variant']})" if a.get("variant") else "")
        + f", {a['kind']}, {a.get('dtype')}, {rep['tensors']} tensors, components: {', '.join(a['components'])}")
    for n in a.get("notes") or []:
        out(f"  note: {n}")
    if "rules" in rep:
        out(f"  matched rule: {rep['rules']['matched']}")
        for r in rep["rules"]["rejected"]:
            out(f"  rejected {r['rule']}: {r['why']}")


def hash_text(rep: dict) -> None:
    out(f"{rep['sha256']}  AutoV2 {rep['autov2'].upper()}"
        + (f"  AutoV3 {rep['autov3'].upper()}" if rep.get("autov3") else "") + f"  {rep['path']}")


def scan_text(res: dict, root: str, dry_run: bool = False) -> None:
    from .. import scan
    from ..facts import format_bytes
    from ..identify import architecture_name, relation_phrase
    for r in res["reports"]:
        if r.get("error"):
            continue   # already said on stderr, once
        a, f = r["architecture"], r.get("folder") or {}
        folder = scan.folder_text(f, root)
        claims = f" | claims: {r['claim_check']}" if r.get("claim_check") in ("contradicts", "consistent") else ""
        out(f"{os.path.relpath(r['path'], root)}: {architecture_name(a)} | {relation_phrase(r)}"
            + (f" | folder: {folder}" if folder else "") + claims)
        from ..claims import wording
        for line in [wording.trained_on_line(r)] if r.get("fits") is not None else []:
            out(f"  {line}")
        for line in wording.fits_lines(r, root):
            out(f"  {line}")
        for c in wording.ordered(r):
            if c["check"] == "contradicts":
                out(f"  claim {wording.claim_line(c)}")
    for g in res["groups"]:
        what = f" — {g['label']}" if g.get("label") else ""
        out(f"{g['relation']} group{what} ({format_bytes(g['reclaimable_bytes'])} reclaimable): "
            + ", ".join(os.path.relpath(p, root) for p in g["paths"]))
    for t in res["tags"]:
        if not t.get("error") and t["changes"]:
            verb = "would set" if dry_run else "set"
            out(f"{t['path']}: {verb} " + ", ".join(f"{k}={v[1]!r}" for k, v in t["changes"].items()))


def scan_errors(res: dict) -> bool:
    """One line on stderr per unreadable model, unlisted directory and unwritten sidecar; any?"""
    lines = [e["error"] for e in res.get("errors") or []]
    lines += [r["error"] for r in res["reports"] if r.get("error")]
    lines += [t["error"] for t in res.get("tags") or [] if t.get("error")]
    for line in lines:
        err(f"fpcore: {line}")
    return bool(lines)


# ------------------------------------------------------------------ progress

def _tqdm():
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def byte_bar(label: str):
    """(callback(done, total), bar) for one file's hashing on a terminal, else (None, None)."""
    tqdm = _tqdm()
    if tqdm is None:
        return None, None
    bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1000, desc=label, leave=False)

    def cb(done, total):
        bar.total = total
        bar.n = max(bar.n, done)
        bar.refresh()
    return cb, bar


class Phases:
    """One bar per phase of a scan, on a terminal only (stderr). The phase label only moves
    forward (a late callback of an earlier phase is ignored) and a bar never moves back."""

    ORDER = ("hashing & fingerprinting", "hashing", "comparing", "grouping", "tags", "report")
    #: what each phase counts: bytes read, or files / steps
    UNITS = {"hashing & fingerprinting": "B", "hashing": "B", "comparing": "files"}

    def __init__(self):
        self.tqdm = _tqdm()
        self.bar = None
        self.index = -1
        self.files = ""

    def _start(self, name: str, total: int, unit: str) -> bool:
        i = self.ORDER.index(name)
        if i < self.index:
            return False
        if i > self.index:
            self.close()
            self.index = i
            if self.tqdm is not None:
                kw = dict(unit="B", unit_scale=True, unit_divisor=1000) if unit == "B" else dict(unit=unit)
                self.bar = self.tqdm(total=total, desc=name, smoothing=0.1, leave=False, **kw)
        return True

    def _set(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = max(total, 1) if total else self.bar.total
            self.bar.n = max(self.bar.n, done)
            if self.files:
                self.bar.set_postfix_str(self.files, refresh=False)
            self.bar.refresh()

    # callbacks for api.scan_folder
    def bytes(self, done: int, total: int) -> None:
        if self._start(self.ORDER[0], total, "B"):
            self._set(done, total)

    def file(self, done: int, total: int, path: str) -> None:
        if self.index <= 0:
            self.files = f"{done}/{total} files"
            self.bytes(0, self.bar.total if self.bar is not None else 0)

    def phase(self, name: str, done: int, total: int) -> None:
        if name in self.ORDER and self._start(name, total, self.UNITS.get(name, "step")):
            self.files = ""
            self._set(done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

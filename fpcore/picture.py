"""One picture per report: where a model sits among the registered references.

``svg(report, tree)`` draws, as one self-contained SVG string (no script, no external
reference, no font file):

- the registered reference tree of the file's family, compact: the lineage of the
  references that matter for this file (its base, the members of a merge, its nearest
  candidates) with the nearest siblings of that lineage; everything else is folded into
  "+N more" rows, so hundreds of references still give a picture of a few dozen rows;
- the file placed in it: a derivative hangs under its base (the edge is labelled with
  distance and confidence), same weights / identical sit on the reference itself, a merge
  has one edge per member whose width is the member's weight, an unknown stands apart
  with a dashed edge to its nearest candidate and the reason it is not related;
- for a merge, a composition bar (and one per UNet block group when the groups differ);
- a component strip (UNet/DiT, each text encoder, VAE) coloured by relation, naming the
  reference of each;
- one legend.

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies); every colour also carries a fill pattern and every mark a text label, so
the picture reads in greyscale.

The picture is first laid out as a *scene* (a list of plain shapes); :func:`to_svg` writes
it as SVG and :func:`to_image` draws the same scene with Pillow (imported only there:
ComfyUI ships it; fpcore does not depend on it) for hosts that want pixels.

The reference tree comes in as plain data, ``{name: {"parent": name|None, "family": id}}``
(:func:`reference_tree` makes it from a RefDB or anything with ``.refs``), so this module
imports nothing else from fpcore and nothing from any host.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import os

# -- decision constants ------------------------------------------------------------------
WIDTH = 760                  # px; the A1111 tab, the HTML report and a ComfyUI node scale it down
PAD = 12
FONT = 12                    # px, body text
CHAR_W = 0.60                # average advance of a sans-serif glyph in em (DejaVu Sans ~0.58):
                             # labels are cut to fit by this estimate, never measured
ROW_H = 20                   # one tree row
INDENT = 18                  # one tree level
TREE_COL = 330               # tree labels end before this x; placements and edges use the right side
CARD_X = 470                 # x of the file card for a merge or an unknown
SMALL_TREE = 12              # a family with at most this many references is drawn whole
SIBLINGS_SHOWN = 3           # nearest siblings shown per lineage node; the others are folded
CANDIDATES_SHOWN = 3         # nearest candidates placed in the tree beside the lineage
BLOCKS_DIFFER = 0.05         # per-block weights differing by more than this get one bar per group
BAR_MIN_LABEL = 28           # px: narrower segments carry no text (their share is in the key)

# Okabe & Ito (2008), "Color universal design": distinguishable with protan/deutan/tritan
# vision; patterns carry the distinction in greyscale.
RELATIONS = {  # relation -> (label, colour, pattern)
    "identical": ("identical", "#009E73", "solid"),
    "same_weights": ("same weights", "#56B4E9", "dots"),
    "derivative": ("derivative", "#0072B2", "hatch"),
    "merge": ("merge", "#E69F00", "cross"),
    "unknown": ("unknown / unrelated", "#D55E00", "backhatch"),
}
NOT_COMPARED = ("not compared", "#FFFFFF", "none")
MEMBER_STYLES = [("#E69F00", "solid"), ("#56B4E9", "hatch"), ("#009E73", "dots"), ("#CC79A7", "cross"),
                 ("#F0E442", "backhatch"), ("#0072B2", "hstripe"), ("#D55E00", "solid"), ("#999999", "dots")]
INK, MUTED, EDGE = "#222222", "#6b6b6b", "#8a8a8a"
COMPONENT_NAMES = {"unet": "UNet", "dit": "DiT", "clip_l": "CLIP-L", "clip_g": "CLIP-G", "clip_h": "CLIP-H",
                   "t5": "T5", "t5xxl": "T5-XXL", "llama": "LLaMA", "umt5": "UMT5", "gemma": "Gemma",
                   "qwen": "Qwen", "vae": "VAE"}
DENOISERS = ("unet", "dit")
BLOCK_ORDER = ("input", "middle", "output")


# -- the reference tree as plain data ----------------------------------------------------------
def reference_tree(db) -> dict[str, dict]:
    """``{name: {"parent": name or None, "family": id or None}}`` from a RefDB (or any object
    with ``.refs``: name -> object with ``.parent`` / ``.family``)."""
    refs = getattr(db, "refs", db) or {}
    return {n: {"parent": getattr(r, "parent", None), "family": getattr(r, "family", None)} for n, r in refs.items()}


# -- small helpers -------------------------------------------------------------------------------
def _tw(s: str, size: float = FONT) -> float:
    return len(s) * size * CHAR_W


def _fit(s: str, width: float, size: float = FONT) -> str:
    """``s`` cut (with an ellipsis) so that it fits ``width`` px by the CHAR_W estimate."""
    n = int(width / (size * CHAR_W))
    return s if len(s) <= n else (s[:max(1, n - 1)] + "…" if n > 1 else "")


def _wrap(s: str, width: float, size: float = FONT, lines: int = 2) -> list[str]:
    n = max(8, int(width / (size * CHAR_W)))
    out, cur = [], ""
    for word in s.split():
        if cur and len(cur) + 1 + len(word) > n:
            out.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        out.append(cur)
    if len(out) > lines:
        out = out[:lines]
        out[-1] = _fit(out[-1] + " …", width, size) if len(out[-1]) + 2 <= n else out[-1][:n - 1] + "…"
    return [_fit(x, width, size) for x in out]


def _num(x, default=None):
    try:
        v = float(x)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def _pct(w: float) -> str:
    return f"{w * 100:.0f}%"


def _members(entries) -> list[tuple[str, float]]:
    """[(ref, weight)] from a report's ``merge`` (list of {ref, weight}; tolerant of
    {name: weight} dicts, [name, weight] pairs and missing weights)."""
    out = []
    if isinstance(entries, dict):
        entries = [{"ref": k, "weight": v} for k, v in entries.items()]
    for m in entries or []:
        if isinstance(m, dict):
            name = m.get("ref") or m.get("name") or m.get("model")
            w = _num(m.get("weight"), _num(m.get("share"), 0.0))
        elif isinstance(m, (list, tuple)) and len(m) >= 2:
            name, w = m[0], _num(m[1], 0.0)
        else:
            continue
        if name and w is not None and w > 0:
            out.append((str(name), w))
    return out


def _normalised(ms: list[tuple[str, float]]) -> list[tuple[str, float]]:
    tot = sum(w for _, w in ms)
    return [(n, w / tot) for n, w in ms] if tot > 0 else []


def _block_rows(report: dict) -> list[tuple[str, list[tuple[str, float]]]]:
    """Per UNet block group recipes, when the groups differ; else []."""
    mb = report.get("merge_blocks") or report.get("blocks") or {}
    if not isinstance(mb, dict):
        return []
    rows = [(str(g), _normalised(_members(v))) for g, v in mb.items()]
    rows = [(g, ms) for g, ms in rows if ms]
    if len(rows) < 2:
        return []
    rows.sort(key=lambda t: (BLOCK_ORDER.index(t[0]) if t[0] in BLOCK_ORDER else len(BLOCK_ORDER), t[0]))
    names = {n for _, ms in rows for n, _ in ms}
    vec = [{n: dict(ms).get(n, 0.0) for n in names} for _, ms in rows]
    differ = any(abs(a[n] - b[n]) > BLOCKS_DIFFER for a in vec for b in vec for n in names)
    return rows if differ else []


# -- the scene -----------------------------------------------------------------------------------
class Scene:
    """Plain shapes, in drawing order. Each item is a dict with ``t`` in
    rect / line / circle / text / g (a group with ``items``); ``cls`` and ``data`` become the
    SVG class and data-* attributes (what the tests and the hosts' DOM read)."""

    def __init__(self, width: int, title: str):
        self.width, self.height, self.title = width, 0, title
        self.items: list[dict] = []
        self._stack = [self.items]

    def add(self, t: str, **kw) -> dict:
        item = {"t": t, **kw}
        self._stack[-1].append(item)
        return item

    def group(self, cls: str, data: dict | None = None, title: str | None = None):
        scene = self

        class _G:
            def __enter__(self_):
                g = scene.add("g", cls=cls, data=data or {}, title=title, items=[])
                scene._stack.append(g["items"])
                return g

            def __exit__(self_, *exc):
                scene._stack.pop()
        return _G()

    def text(self, x, y, s, size=FONT, fill=INK, bold=False, italic=False, anchor="start", halo=False, **kw):
        return self.add("text", x=x, y=y, s=s, size=size, fill=fill, bold=bold, italic=italic, anchor=anchor,
                        halo=halo, **kw)

    def swatch(self, x, y, w, h, colour, pattern, stroke=INK, **kw):
        return self.add("rect", x=x, y=y, w=w, h=h, fill=colour, pattern=pattern, stroke=stroke, **kw)


# -- the reference tree, folded --------------------------------------------------------------------
def _chain(name: str, parent_of: dict) -> list[str]:
    out, seen, cur = [], set(), name
    while cur and cur not in seen:
        seen.add(cur)
        out.append(cur)
        cur = parent_of.get(cur)
    return out[::-1]


def _tree_rows(report: dict, tree: dict) -> tuple[list[dict], dict]:
    """Rows of the folded tree, in drawing order: {"kind": ref|unregistered|fold, "name",
    "depth", "role", "count"}; and facts about the file's placement."""
    a = report.get("architecture") or {}
    v = report.get("verdict") or {}
    fam = a.get("family")
    rel = v.get("relation") or "unknown"
    base = v.get("base")
    cands = [c for c in report.get("candidates") or [] if isinstance(c, dict) and c.get("ref")]
    dist = {c["ref"]: _num(c.get("distance"), math.inf) for c in cands}
    members = [n for n, _ in _members(report.get("merge"))] if rel == "merge" else []
    if rel == "merge" and not members and base:
        members = [base]

    parent_of = {n: (info or {}).get("parent") for n, info in tree.items()}
    named = set(cands and [c["ref"] for c in cands]) | set(members) | ({base} if base else set())
    named |= set(v.get("lineage") or [])
    pool = {n for n, info in tree.items()
            if (fam not in (None, "unknown") and (info or {}).get("family") == fam)} | (named & set(tree))
    # the lineage a report names may hold declared but unregistered ancestors
    lin = [x for x in v.get("lineage") or [] if isinstance(x, str)]
    for p, c in zip(lin, lin[1:]):
        parent_of.setdefault(c, p)
    for n in named:
        parent_of.setdefault(n, None)
    # only declared ancestors from the lineage can be unregistered; every other name in the
    # report was matched against, so it is registered (even if ``tree`` came from elsewhere)
    registered = set(tree) | (named - (set(lin) - {base}))

    nearest = sorted((c for c in cands if c["ref"] not in members and c["ref"] != base),
                     key=lambda c: (not c.get("related"), dist[c["ref"]]))[:CANDIDATES_SHOWN]
    primary: list[str] = []
    for n in ([base] if base else []) + members:
        primary += _chain(n, parent_of)
    if not primary and nearest:
        primary = _chain(nearest[0]["ref"], parent_of)
    visible = set(primary)
    for c in nearest:
        visible |= set(_chain(c["ref"], parent_of))
    everything = pool | visible
    small = len(pool) <= SMALL_TREE
    if small:
        for n in pool:
            visible |= set(_chain(n, parent_of))

    children: dict[str | None, list[str]] = {}
    for n in everything | visible:
        p = parent_of.get(n)
        children.setdefault(p if p in (everything | visible) else None, []).append(n)
    for p in list(children):
        children[p].sort(key=lambda n: (dist.get(n, math.inf), n.lower()))
    # siblings worth showing: the nearest unshown children of every primary node (and of the base)
    shown = set(visible)
    folded: dict[str | None, int] = {}
    for p, kids in children.items():
        hidden = [k for k in kids if k not in visible]
        if not hidden:
            continue
        take = hidden[:SIBLINGS_SHOWN] if (p in primary) else []
        shown |= set(take)
        for k in take:   # a shown sibling's own subtree is folded under it
            n_sub = _subtree_size(k, children) - 1
            if n_sub:
                folded[k] = n_sub
        rest = [k for k in hidden if k not in take]
        if rest:
            folded[p] = folded.get(p, 0) + sum(_subtree_size(k, children) for k in rest)

    rows: list[dict] = []

    def walk(n, depth, seen):
        if n in seen:
            return
        seen.add(n)
        role = ("base" if n == base else "member" if n in members else "lineage" if n in primary
                else "candidate" if any(c["ref"] == n for c in nearest) else "sibling")
        rows.append({"kind": "ref" if n in registered else "unregistered", "name": n, "depth": depth, "role": role})
        for k in children.get(n, []):
            if k in shown:
                walk(k, depth + 1, seen)
        if folded.get(n):
            rows.append({"kind": "fold", "name": n, "depth": depth + 1, "role": "fold", "count": folded[n]})

    seen: set = set()
    roots = [n for n in children.get(None, []) if n in shown]
    roots.sort(key=lambda n: (n not in primary, dist.get(n, math.inf), n.lower()))
    for r in roots:
        walk(r, 0, seen)
    if folded.get(None):
        rows.append({"kind": "fold", "name": None, "depth": 0, "role": "fold", "count": folded[None]})
    facts = {"relation": rel, "base": base, "members": members, "nearest": nearest, "dist": dist,
             "pool": len(pool), "family": fam}
    return rows, facts


def _subtree_size(n, children) -> int:
    size, todo, seen = 0, [n], set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        size += 1
        todo.extend(children.get(m, []))
    return size


def _curve(p0, p3, bend=60.0, steps=16) -> list[tuple[float, float]]:
    """A horizontal-tangent cubic from p0 to p3, as a polyline (both renderers draw polylines)."""
    (x0, y0), (x3, y3) = p0, p3
    b = max(20.0, min(bend, abs(x3 - x0) / 2))
    p1, p2 = (x0 + b, y0), (x3 - b, y3)
    pts = []
    for i in range(steps + 1):
        t = i / steps
        u = 1 - t
        pts.append((u ** 3 * x0 + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t ** 3 * x3,
                    u ** 3 * y0 + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t ** 3 * y3))
    return pts


def _lead(p0, p3) -> list[tuple[float, float]]:
    """From a tree label's end straight right to the tree column's edge (crossing no other
    label), then a curve to p3 in the free right-hand side."""
    x = max(p0[0], TREE_COL + 6)
    return [p0] + _curve((x, p0[1]), p3) if x > p0[0] else _curve(p0, p3)


def _member_style(i: int) -> tuple[str, str]:
    return MEMBER_STYLES[i % len(MEMBER_STYLES)]


def scene(report: dict, tree: dict | None = None) -> Scene | None:
    """Lay out the picture of one report (None for an error report: there is nothing to place)."""
    if not isinstance(report, dict) or report.get("error") or not isinstance(report.get("verdict"), dict):
        return None
    tree = tree or {}
    v = report["verdict"]
    rel = v.get("relation") if v.get("relation") in RELATIONS else "unknown"
    fname = os.path.basename(str(report.get("path") or "this model")) or "this model"
    sc = Scene(WIDTH, f"{fname}: {v.get('summary') or RELATIONS[rel][0]}")
    W = WIDTH
    sc.add("rect", x=0.5, y=0.5, w=W - 1, h=0, fill="#ffffff", pattern="solid", stroke="#d0d0d0", rx=6,
           cls="mfp-bg")
    bg = sc.items[-1]

    # header
    y = PAD + 14
    with sc.group("mfp-header", {"relation": rel}):
        sc.text(PAD, y, _fit(fname, W - 2 * PAD, 14), size=14, bold=True)
        for line in _wrap(str(v.get("summary") or ""), W - 2 * PAD, FONT, lines=2):
            y += 16
            sc.text(PAD, y, line, fill=INK)
    y += 10

    # -- tree
    rows, facts = _tree_rows(report, tree)
    fam_label = facts["family"] or "this architecture"
    y += 6
    sc.text(PAD, y, "Where it sits among the registered references" +
            (f" ({facts['pool']} of this family)" if facts["pool"] else ""), size=11, fill=MUTED, bold=True)
    y += 10
    top = y
    pos: dict[str, tuple[float, float, float]] = {}   # name -> (dot x, y, label end x)
    file_row_after = None
    if rel == "derivative" and facts["base"]:
        file_row_after = facts["base"]
    laid: list[dict] = []
    for r in rows:
        laid.append(r)
        if file_row_after and r["kind"] != "fold" and r["name"] == file_row_after:
            laid.append({"kind": "file", "name": fname, "depth": r["depth"] + 1, "role": "file"})
    if rel == "derivative" and not any(r["kind"] == "file" for r in laid):
        laid.append({"kind": "file", "name": fname, "depth": 0, "role": "file"})
    cur = top
    with sc.group("mfp-tree", {"rows": str(len(laid))}):
        if not rows:
            cur += ROW_H
            sc.text(PAD, cur - 6, f"No {fam_label} reference is registered "
                    "(add one with: fpcore refs add FILE --name NAME).", fill=MUTED, italic=True)
        parents_y: dict[int, tuple[float, float, str]] = {}
        for r in laid:
            cur += ROW_H
            cy = cur - ROW_H / 2
            x = PAD + 6 + r["depth"] * INDENT
            if r["depth"] > 0 and (r["depth"] - 1) in parents_y:     # elbow from the row's parent
                px, py, pname = parents_y[r["depth"] - 1]
                kind = "derivative" if r["kind"] == "file" else "parent"
                colour, width = (RELATIONS["derivative"][1], 2.5) if kind == "derivative" else (EDGE, 1.0)
                sc.add("line", pts=[(px, py + 4), (px, cy), (x - 5, cy)], stroke=colour, width=width,
                       dash="4 3" if r["kind"] == "unregistered" else None, cls="mfp-edge",
                       data={"kind": kind, "to": fname if r["kind"] == "file" else (r["name"] or ""),
                             "from": pname})
            if r["kind"] == "fold":
                what = "other references" if r["name"] is None else "more"
                label = f"+{r['count']} {what} (folded)"
                with sc.group("mfp-fold", {"count": str(r["count"]), "under": r["name"] or ""}):
                    sc.text(x - 2, cy + 4, label, size=11, fill=MUTED, italic=True)
                continue
            if r["kind"] == "file":
                colour, pattern = RELATIONS["derivative"][1:]
                cand = next((c for c in facts["nearest"] + [c for c in report.get("candidates") or []
                                                           if isinstance(c, dict)] if c.get("ref") == facts["base"]),
                            None)
                d = _num((cand or {}).get("distance"))
                conf = _num(v.get("confidence"))
                note = " · ".join(x for x in (f"distance {d:.3f}" if d is not None else "",
                                              f"confidence {conf:.2f}" if conf is not None else "") if x)
                with sc.group("mfp-node mfp-file", {"name": fname, "kind": "file", "relation": rel,
                                                   "distance": f"{d:.4f}" if d is not None else "",
                                                   "confidence": f"{conf:.3f}" if conf is not None else ""}):
                    sc.swatch(x - 5, cy - 6, 12, 12, colour, pattern, stroke=colour, width=1.5)
                    label = _fit(f"▶ {fname}", TREE_COL - x - 14, FONT)
                    sc.text(x + 12, cy + 4, label, bold=True)
                    sc.text(max(x + 18 + _tw(label), TREE_COL + 8), cy + 4,
                            _fit("fine-tune" + (f" · {note}" if note else ""),
                                 W - PAD - max(x + 18 + _tw(label), TREE_COL + 8), 11),
                            size=11, fill=colour, cls="mfp-edge-label")
                continue
            name = r["name"]
            on_it = name == facts["base"] and rel in ("same_weights", "identical")
            role = r["role"]
            strong = role in ("base", "member", "lineage")
            data = {"name": name, "kind": r["kind"], "role": role}
            with sc.group("mfp-node", data, title=name):
                if r["kind"] == "unregistered":
                    sc.add("circle", cx=x, cy=cy, r=4, fill="#ffffff", stroke=EDGE, width=1.2, dash="2 2")
                else:
                    sc.add("circle", cx=x, cy=cy, r=4.5 if strong else 3.5, fill=INK if strong else "#ffffff",
                           stroke=INK, width=1.2)
                label = _fit(name + (" (not registered)" if r["kind"] == "unregistered" else ""),
                             TREE_COL - x - 8, FONT)
                sc.text(x + 8, cy + 4, label, bold=role in ("base", "member"),
                        fill=INK if r["kind"] == "ref" else MUTED)
            pos[name] = (x, cy, x + 8 + _tw(label))
            parents_y[r["depth"]] = (x, cy, name)
            for dd in [k for k in parents_y if k > r["depth"]]:
                del parents_y[dd]
            if on_it:
                colour, pattern = RELATIONS[rel][1:]
                conf = _num(v.get("confidence"))
                lx = max(pos[name][2] + 10, TREE_COL + 8)
                with sc.group("mfp-node mfp-file", {"name": fname, "kind": "file", "relation": rel, "on": name,
                                                   "confidence": f"{conf:.3f}" if conf is not None else ""}):
                    sc.add("line", pts=[(pos[name][2] + 3, cy), (lx - 4, cy)], stroke=colour, width=2.5,
                           cls="mfp-edge", data={"kind": rel, "from": name, "to": fname})
                    sc.swatch(lx, cy - 6, 12, 12, colour, pattern, stroke=colour, width=1.5)
                    sc.text(lx + 17, cy + 4, _fit(f"{fname}: {RELATIONS[rel][0]}" +
                                                 (f" (confidence {conf:.2f})" if conf is not None else ""),
                                                 W - PAD - lx - 17, FONT), bold=True)
        # merge: a card on the right, one weighted edge per member
        if rel in ("merge", "unknown"):
            if rel == "merge":
                lines = [f"merge of {len(facts['members'])} references"]
            else:
                near = facts["nearest"][0] if facts["nearest"] else None
                lines = ([f"stands apart; nearest: {near['ref']}"] if near else
                         ["stands apart: nothing comparable registered"])
                lines += _wrap(_why_unrelated(report, near), W - PAD - CARD_X - 14, 11, 3)
            card_rows = 1 + len(lines)
            if rel == "merge":
                ys = [pos[m][1] for m in facts["members"] if m in pos]
                cy = (sum(ys) / len(ys)) if ys else cur + ROW_H
                cy = max(top + ROW_H, cy)
            else:
                cur += ROW_H * 0.8
                cy = cur + ROW_H
            card_w, card_h = W - PAD - CARD_X, card_rows * 16 + 8
            cy0 = cy - card_h / 2
            colour, pattern = RELATIONS[rel][1:]
            if rel == "merge":
                ms = _normalised(_members(report.get("merge")))
                for i, (m, w) in enumerate(ms):
                    if m not in pos:
                        continue
                    mcol, _ = _member_style(i)
                    _, my, mend = pos[m]
                    pts = _lead((mend + 4, my), (CARD_X - 2, cy))
                    sc.add("line", pts=pts, stroke=mcol, width=1.5 + 8 * w, cls="mfp-edge",
                           data={"kind": "merge", "from": m, "to": fname, "weight": f"{w:.4f}"}, opacity=0.9)
                    # the label where the edges are still one row apart: at the start of the curve
                    sc.text(max(mend + 24, TREE_COL + 24), my - 4, _pct(w), size=11, bold=True, anchor="middle",
                            halo=True, cls="mfp-edge-label")
            else:
                near = facts["nearest"][0] if facts["nearest"] else None
                if near and near["ref"] in pos:
                    _, ny, nend = pos[near["ref"]]
                    sc.add("line", pts=_lead((nend + 4, ny), (CARD_X - 2, cy)), stroke=colour, width=1.5,
                           dash="5 4", cls="mfp-edge", data={"kind": "unrelated", "from": near["ref"], "to": fname})
            with sc.group("mfp-node mfp-file", {"name": fname, "kind": "file", "relation": rel}):
                sc.add("rect", x=CARD_X, y=cy0, w=card_w, h=card_h, fill="#ffffff", pattern="solid",
                       stroke=colour, width=2.5, rx=5)
                sc.swatch(CARD_X + 6, cy0 + 7, 12, 12, colour, pattern, stroke=colour, width=1)
                sc.text(CARD_X + 23, cy0 + 17, _fit(fname, card_w - 30, FONT), bold=True)
                for i, line in enumerate(lines):
                    sc.text(CARD_X + 8, cy0 + 33 + 15 * i, _fit(line, card_w - 14, 11), size=11,
                            fill=INK if i == 0 else MUTED, cls="mfp-why" if i else None)
            cur = max(cur, cy0 + card_h)
    y = cur + 14

    # -- composition bar
    ms = _normalised(_members(report.get("merge"))) if rel == "merge" else []
    if ms:
        style = {n: _member_style(i) for i, (n, _) in enumerate(ms)}
        brows = [("whole model", ms)] + _block_rows(report)
        y += 6
        sc.text(PAD, y, "Composition" + (" (per UNet block group)" if len(brows) > 1 else ""), size=11,
                fill=MUTED, bold=True)
        y += 8
        x0, x1 = PAD + 88, W - PAD
        with sc.group("mfp-merge", {"groups": str(len(brows))}):
            for g, gms in brows:
                with sc.group("mfp-bar", {"group": g}):
                    sc.text(PAD, y + 15, g, size=11, fill=INK)
                    x = x0
                    for n, w in gms:
                        seg = (x1 - x0) * w
                        colour, pattern = style.get(n) or _member_style(len(style))
                        sc.swatch(x, y, seg, 20, colour, pattern, stroke="#ffffff", width=1,
                                  cls="mfp-seg", data={"ref": n, "weight": f"{w:.4f}", "group": g}, title=f"{n} {_pct(w)}")
                        label = _fit(f"{n} {_pct(w)}", seg - 6, 11)
                        if seg >= BAR_MIN_LABEL:
                            if label.endswith("…"):
                                label = _pct(w)
                            sc.text(x + seg / 2, y + 14, label, size=11, bold=True, anchor="middle", halo=True)
                        x += seg
                    y += 26
            # key: swatch + name + share
            kx = x0
            for n, w in ms:
                colour, pattern = style[n]
                item = f"{n} {_pct(w)}"
                iw = 18 + _tw(item, 11) + 14
                if kx + iw > x1 and kx > x0:
                    kx, y = x0, y + 16
                with sc.group("mfp-key", {"ref": n}):
                    sc.swatch(kx, y, 12, 12, colour, pattern, stroke=INK, width=0.6)
                    sc.text(kx + 17, y + 10, _fit(item, x1 - kx - 17, 11), size=11)
                kx += iw
            y += 24

    # -- component strip
    comps = report.get("components") if isinstance(report.get("components"), dict) else {}
    order = [c for c in (report.get("architecture") or {}).get("components") or [] if isinstance(c, str)]
    order += [c for c in comps if c not in order]
    if order:
        y += 6
        sc.text(PAD, y, "Components", size=11, fill=MUTED, bold=True)
        y += 8
        n = len(order)
        cw = min(190.0, (W - 2 * PAD - 6 * (n - 1)) / n)
        with sc.group("mfp-strip", {"count": str(n)}):
            for i, c in enumerate(order):
                e = comps.get(c) if isinstance(comps.get(c), dict) else {}
                crel = e.get("relation")
                label, colour, pattern = RELATIONS[crel] if crel in RELATIONS else NOT_COMPARED
                ref = e.get("ref")
                shown = ref
                if crel == "merge" and ms:      # a merged component is named by its members, not its largest
                    shown = " + ".join(n for n, _ in ms)
                x = PAD + i * (cw + 6)
                with sc.group("mfp-comp", {"component": c, "relation": crel or "not_compared", "ref": ref or ""},
                              title=f"{c}: {label}" + (f" — {shown}" if shown else "")):
                    sc.swatch(x, y, cw, 12, colour, pattern, stroke=INK if pattern == "none" else colour, width=1)
                    sc.text(x + 2, y + 27, _fit(COMPONENT_NAMES.get(c, c.upper()), cw - 4, 12), bold=True)
                    sc.text(x + 2, y + 41, _fit(label, cw - 4, 11), size=11, fill=INK)
                    sc.text(x + 2, y + 55, _fit(shown or "—", cw - 4, 11), size=11, fill=MUTED)
        y += 66

    # -- legend
    y += 4
    with sc.group("mfp-legend"):
        sc.add("line", pts=[(PAD, y), (W - PAD, y)], stroke="#e0e0e0", width=1)
        y += 8
        x = PAD
        for key, (label, colour, pattern) in list(RELATIONS.items()) + [("not_compared", NOT_COMPARED)]:
            iw = 18 + _tw(label, 11) + 16
            if x + iw > W - PAD:
                x, y = PAD, y + 18
            with sc.group("mfp-legend-item", {"relation": key}):
                sc.swatch(x, y, 12, 12, colour, pattern, stroke=INK if pattern == "none" else colour, width=1)
                sc.text(x + 17, y + 10, label, size=11)
            x += iw
        y += 20
        x = PAD
        lines = [("parent", "registered parent → child", EDGE, 1.0, None),
                 ("derivative", "file → its base (distance · confidence)", RELATIONS["derivative"][1], 2.5, None),
                 ("merge", "merge member (width = weight)", RELATIONS["merge"][1], 5.0, None),
                 ("unrelated", "nearest, not related", RELATIONS["unknown"][1], 1.5, "5 4")]
        for key, label, colour, width, dash in lines:
            iw = 30 + _tw(label, 11) + 16
            if x + iw > W - PAD:
                x, y = PAD, y + 18
            with sc.group("mfp-legend-item", {"edge": key}):
                sc.add("line", pts=[(x, y + 6), (x + 24, y + 6)], stroke=colour, width=width, dash=dash)
                sc.text(x + 30, y + 10, label, size=11)
            x += iw
        y += 20
        sc.text(PAD, y + 2, "● reference on the lineage   ○ other reference   +N folded: references left out "
                "of this picture", size=11, fill=MUTED)
        y += 8
    sc.height = int(math.ceil(y + PAD))
    bg["h"] = sc.height - 1
    return sc


def _why_unrelated(report: dict, near: dict | None) -> str:
    comps = report.get("components") or {}
    arch = (report.get("architecture") or {}).get("components") or []
    main = next((c for c in arch if c in DENOISERS), arch[0] if arch else None)
    reason = str(((comps.get(main) or {}) if isinstance(comps, dict) else {}).get("reason") or "")
    if near:
        cos, z = _num(near.get("cos")), _num(near.get("z"))
        bits = [f"cos {cos:.3f}" if cos is not None else "", f"z {z:.1f}" if z is not None else ""]
        stats = ", ".join(b for b in bits if b)
        if reason:
            return f"why: {reason}"
        return (f"why: {stats}: no more alike than independent weights" if stats else
                "why: no shared direction with it")
    return f"why: {reason}" if reason else ""


# -- SVG -----------------------------------------------------------------------------------------
def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _attrs(item: dict) -> str:
    out = ""
    if item.get("cls"):
        out += f' class="{_esc(item["cls"])}"'
    for k, val in (item.get("data") or {}).items():
        out += f' data-{_esc(k)}="{_esc(val)}"'
    return out


def _pattern_def(pid: str, colour: str, pattern: str) -> str:
    if pattern in ("solid", "none"):
        return ""
    body = f'<rect width="6" height="6" fill="{colour}"/>'
    mark = {"hatch": '<path d="M-1,7 L7,-1" stroke="#fff" stroke-width="1.6" stroke-opacity="0.75"/>'
                     '<path d="M-1,1 L1,-1 M5,7 L7,5" stroke="#fff" stroke-width="1.6" stroke-opacity="0.75"/>',
            "backhatch": '<path d="M-1,-1 L7,7 M5,-1 L7,1 M-1,5 L1,7" stroke="#fff" stroke-width="1.6" '
                         'stroke-opacity="0.75"/>',
            "cross": '<path d="M3,0 V6 M0,3 H6" stroke="#000" stroke-width="1.2" stroke-opacity="0.45"/>',
            "dots": '<circle cx="3" cy="3" r="1.3" fill="#fff" fill-opacity="0.8"/>',
            "hstripe": '<path d="M0,3 H6" stroke="#fff" stroke-width="1.6" stroke-opacity="0.75"/>'}.get(pattern, "")
    return (f'<pattern id="{pid}" width="6" height="6" patternUnits="userSpaceOnUse">{body}{mark}</pattern>')


def to_svg(sc: Scene, uid: str = "0") -> str:
    """The scene as an SVG document string (no XML declaration: it inlines in HTML as is)."""
    defs: dict[str, str] = {}

    def fill_of(item) -> str:
        colour, pattern = item.get("fill", "none"), item.get("pattern", "solid")
        if pattern in ("solid", "none") or colour == "none":
            return colour
        pid = f"mfp{uid}-{pattern}-{colour.lstrip('#')}"
        defs.setdefault(pid, _pattern_def(pid, colour, pattern))
        return f"url(#{pid})"

    def f(v: float) -> str:
        return f"{v:.1f}".rstrip("0").rstrip(".")

    def emit(items, out):
        for it in items:
            t = it["t"]
            common = _attrs(it)
            if it.get("opacity") is not None:
                common += f' opacity="{it["opacity"]}"'
            if t == "g":
                out.append(f"<g{common}>")
                if it.get("title"):
                    out.append(f"<title>{_esc(it['title'])}</title>")
                emit(it["items"], out)
                out.append("</g>")
            elif t == "rect":
                extra = f' rx="{it["rx"]}"' if it.get("rx") else ""
                if it.get("stroke"):
                    extra += f' stroke="{it["stroke"]}" stroke-width="{it.get("width", 1)}"'
                inner = f"<title>{_esc(it['title'])}</title>" if it.get("title") else ""
                out.append(f'<rect x="{f(it["x"])}" y="{f(it["y"])}" width="{f(max(0, it["w"]))}" '
                           f'height="{f(max(0, it["h"]))}" fill="{fill_of(it)}"{extra}{common}>{inner}</rect>')
            elif t == "line":
                pts = " ".join(f"{f(x)},{f(y)}" for x, y in it["pts"])
                dash = f' stroke-dasharray="{it["dash"]}"' if it.get("dash") else ""
                out.append(f'<polyline points="{pts}" fill="none" stroke="{it["stroke"]}" '
                           f'stroke-width="{it.get("width", 1)}" stroke-linecap="round" stroke-linejoin="round"'
                           f'{dash}{common}/>')
            elif t == "circle":
                dash = f' stroke-dasharray="{it["dash"]}"' if it.get("dash") else ""
                out.append(f'<circle cx="{f(it["cx"])}" cy="{f(it["cy"])}" r="{it["r"]}" fill="{it["fill"]}" '
                           f'stroke="{it["stroke"]}" stroke-width="{it.get("width", 1)}"{dash}{common}/>')
            elif t == "text":
                style = ""
                if it.get("bold"):
                    style += ' font-weight="bold"'
                if it.get("italic"):
                    style += ' font-style="italic"'
                if it.get("anchor", "start") != "start":
                    style += f' text-anchor="{it["anchor"]}"'
                if it.get("halo"):
                    style += ' stroke="#ffffff" stroke-width="3" paint-order="stroke" stroke-linejoin="round"'
                out.append(f'<text x="{f(it["x"])}" y="{f(it["y"])}" font-size="{it["size"]}" fill="{it["fill"]}"'
                           f'{style}{common}>{_esc(it["s"])}</text>')

    body: list[str] = []
    emit(sc.items, body)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="mfp-picture" width="{sc.width}" height="{sc.height}" '
            f'viewBox="0 0 {sc.width} {sc.height}" role="img" aria-label="{_esc(sc.title)}" '
            f'font-family="DejaVu Sans, Verdana, Arial, sans-serif" style="max-width:100%;height:auto">')
    return "".join([head, f"<title>{_esc(sc.title)}</title>", "<defs>", *[d for d in defs.values() if d], "</defs>",
                    *body, "</svg>"])


def svg(report: dict, tree: dict | None = None, uid: str | None = None) -> str:
    """The picture of ``report`` as SVG ("" for an error report). ``tree`` as from
    :func:`reference_tree`; ``uid`` keeps the pattern ids of several pictures in one page
    apart (default: derived from the report)."""
    sc = scene(report, tree)
    if sc is None:
        return ""
    if uid is None:
        uid = hashlib.sha1(json.dumps([report.get("path"), report.get("sha256"), report.get("verdict")],
                                      sort_keys=True, default=str).encode()).hexdigest()[:8]
    return to_svg(sc, uid)


# -- pixels (Pillow, imported here only) ---------------------------------------------------------
FONT_FILES = {(False, False): ("DejaVuSans.ttf", "Verdana.ttf", "Arial.ttf"),
              (True, False): ("DejaVuSans-Bold.ttf", "Verdana Bold.ttf", "Arial Bold.ttf"),
              (False, True): ("DejaVuSans-Oblique.ttf", "DejaVuSans.ttf"),
              (True, True): ("DejaVuSans-BoldOblique.ttf", "DejaVuSans-Bold.ttf")}
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu",
             "/Library/Fonts", "C:/Windows/Fonts")
_fonts: dict = {}


def _font(size: float, bold: bool, italic: bool):
    from PIL import ImageFont
    key = (round(size), bold, italic)
    if key not in _fonts:
        font = None
        for name in FONT_FILES[(bold, italic)]:
            for cand in [name] + [os.path.join(d, name) for d in FONT_DIRS]:
                try:
                    font = ImageFont.truetype(cand, key[0])
                    break
                except OSError:
                    continue
            if font is not None:
                break
        if font is None:
            try:
                font = ImageFont.load_default(size=key[0])     # Pillow >= 10.1
            except TypeError:
                font = ImageFont.load_default()
        _fonts[key] = font
    return _fonts[key]


def _rgb(c: str) -> tuple[int, int, int]:
    c = c.lstrip("#")
    return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4)) if len(c) == 6 else (0, 0, 0)


def _dashed(pts, dash: str):
    on, off = (float(x) for x in dash.split()[:2])
    out, draw_on, left = [], True, on
    seg = [pts[0]]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        d = math.hypot(x1 - x0, y1 - y0)
        pos = 0.0
        while d - pos > left:
            pos += left
            p = (x0 + (x1 - x0) * pos / d, y0 + (y1 - y0) * pos / d)
            if draw_on:
                seg.append(p)
                out.append(seg)
            seg = [p]
            draw_on = not draw_on
            left = on if draw_on else off
        left -= d - pos
        if draw_on:
            seg.append((x1, y1))
        else:
            seg = [(x1, y1)]
    if draw_on and len(seg) > 1:
        out.append(seg)
    return out


def to_image(sc: Scene, scale: float = 2.0):
    """The same scene drawn with Pillow: an RGB ``PIL.Image`` (``scale`` px per SVG px)."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (int(sc.width * scale), int(sc.height * scale)), "white")
    draw = ImageDraw.Draw(img)
    s = scale

    def patterned(x, y, w, h, colour, pattern):
        w, h = max(1, int(round(w * s))), max(1, int(round(h * s)))
        tile = Image.new("RGB", (w, h), _rgb(colour) if pattern != "none" else (255, 255, 255))
        if pattern not in ("solid", "none"):
            d = ImageDraw.Draw(tile)
            step, lw = 6 * s, max(1, int(1.4 * s))
            light = tuple(int(v + (255 - v) * 0.75) for v in _rgb(colour))
            if pattern == "cross":       # a dark grid: tells it from the light dots in greyscale
                light = tuple(int(v * 0.55) for v in _rgb(colour))
            if pattern in ("hatch", "backhatch"):
                k = -w - h
                while k < w + h:
                    if pattern == "hatch":
                        d.line([(k, h), (k + h, 0)], fill=light, width=lw)
                    else:
                        d.line([(k, 0), (k + h, h)], fill=light, width=lw)
                    k += step
            elif pattern in ("cross", "hstripe"):
                k = step / 2
                while k < max(w, h):
                    d.line([(0, k), (w, k)], fill=light, width=lw)
                    if pattern == "cross":
                        d.line([(k, 0), (k, h)], fill=light, width=lw)
                    k += step
            elif pattern == "dots":
                r = 1.3 * s
                for yy in range(0, h + 1, int(step) or 1):
                    for xx in range(0, w + 1, int(step) or 1):
                        cx, cy = xx + step / 2, yy + step / 2
                        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=light)
        img.paste(tile, (int(round(x * s)), int(round(y * s))))

    def emit(items):
        for it in items:
            t = it["t"]
            if t == "g":
                emit(it["items"])
            elif t == "rect":
                x, y, w, h = it["x"], it["y"], it["w"], it["h"]
                if w <= 0 or h <= 0:
                    continue
                if it.get("fill") not in (None, "none"):
                    if it.get("rx"):
                        draw.rounded_rectangle([x * s, y * s, (x + w) * s, (y + h) * s], radius=it["rx"] * s,
                                               fill=_rgb(it["fill"]))
                    else:
                        patterned(x, y, w, h, it["fill"], it.get("pattern", "solid"))
                if it.get("stroke"):
                    lw = max(1, int(round(it.get("width", 1) * s)))
                    box = [x * s, y * s, (x + w) * s, (y + h) * s]
                    if it.get("rx"):
                        draw.rounded_rectangle(box, radius=it["rx"] * s, outline=_rgb(it["stroke"]), width=lw)
                    else:
                        draw.rectangle(box, outline=_rgb(it["stroke"]), width=lw)
            elif t == "line":
                pts = [(x * s, y * s) for x, y in it["pts"]]
                lw = max(1, int(round(it.get("width", 1) * s)))
                for part in (_dashed(pts, " ".join(str(float(v) * s) for v in it["dash"].split()))
                             if it.get("dash") else [pts]):
                    draw.line(part, fill=_rgb(it["stroke"]), width=lw, joint="curve")
            elif t == "circle":
                cx, cy, r = it["cx"] * s, it["cy"] * s, it["r"] * s
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_rgb(it["fill"]), outline=_rgb(it["stroke"]),
                             width=max(1, int(round(it.get("width", 1) * s))))
            elif t == "text":
                font = _font(it["size"] * s, bool(it.get("bold")), bool(it.get("italic")))
                anchor = {"start": "ls", "middle": "ms", "end": "rs"}[it.get("anchor", "start")]
                kw = {"stroke_width": int(1.5 * s), "stroke_fill": (255, 255, 255)} if it.get("halo") else {}
                try:
                    draw.text((it["x"] * s, it["y"] * s), it["s"], fill=_rgb(it["fill"]), font=font, anchor=anchor,
                              **kw)
                except (ValueError, TypeError):    # a bitmap fallback font takes no anchor
                    draw.text((it["x"] * s, (it["y"] - it["size"]) * s), it["s"], fill=_rgb(it["fill"]), font=font)
    emit(sc.items)
    return img


def image(report: dict, tree: dict | None = None, scale: float = 2.0):
    """The picture of ``report`` as a Pillow RGB image (None for an error report)."""
    sc = scene(report, tree)
    return to_image(sc, scale) if sc is not None else None

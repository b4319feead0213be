"""The report and the reference tree as plain data: a merge's members and per-block recipes,
and the rows of the folded tree (the lineage that matters for this file, its nearest
candidates and siblings; everything else counted in "+N more" rows)."""
from __future__ import annotations

import math

# -- decision constants ------------------------------------------------------------------
SMALL_TREE = 12              # a family with at most this many references is drawn whole
SIBLINGS_SHOWN = 3           # nearest siblings shown per lineage node; the others are folded
CANDIDATES_SHOWN = 3         # nearest candidates placed in the tree beside the lineage
BLOCKS_DIFFER = 0.05         # per-block weights differing by more than this get one bar per group
BLOCK_ORDER = ("input", "middle", "output")


# -- the reference tree as plain data ----------------------------------------------------------
def reference_tree(db) -> dict[str, dict]:
    """``{name: {"parent": name or None, "family": id or None}}`` from a RefDB (or any object
    with ``.refs``: name -> object with ``.parent`` / ``.family``); references of unknown family
    also carry ``"layouts"`` (component -> layout digest), which places them in a layout's family."""
    refs = getattr(db, "refs", db) or {}
    out = {}
    for n, r in refs.items():
        out[n] = {"parent": getattr(r, "parent", None), "family": getattr(r, "family", None)}
        lays = getattr(r, "layouts", None)
        if out[n]["family"] in (None, "unknown") and isinstance(lays, dict):
            out[n]["layouts"] = {c: v[0] for c, v in lays.items() if isinstance(v, (list, tuple)) and v}
    return out


def _same_family(info: dict, fam, lay: dict) -> bool:
    """Whether a reference of the tree is of the report's family: its family, or for a file no rule
    recognises, the same layout digest of the same component (its ``architecture.layout``)."""
    if fam not in (None, "unknown"):
        return info.get("family") == fam
    return (bool(lay.get("digest")) and info.get("family") in (None, "unknown")
            and (info.get("layouts") or {}).get(lay.get("of")) == lay["digest"])


# -- report fields, tolerant of damaged reports -----------------------------------------------
def _num(x, default=None):
    try:
        v = float(x)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


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
    lay = a.get("layout") if isinstance(a.get("layout"), dict) else {}
    pool = {n for n, info in tree.items() if _same_family(info or {}, fam, lay)} | (named & set(tree))
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
             "pool": len(pool), "family": fam,
             "layout_name": a.get("layout_name") if fam in (None, "unknown") else None}
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

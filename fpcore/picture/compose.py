"""The picture laid out as a *scene*: a list of plain shapes (rect / line / circle / text /
group) that :mod:`.svgdoc` writes as SVG and :mod:`.raster` draws with Pillow."""
from __future__ import annotations

import math
import os

from .style import (BAR_MIN_LABEL, CARD_X, COMPONENT_NAMES, DENOISERS, EDGE, FONT, INDENT, INK, MUTED,
                    NOT_COMPARED, PAD, RELATIONS, ROW_H, TREE_COL, WIDTH, _fit, _member_style, _pct, _tw, _wrap,
                    legend)
from .tree import _block_rows, _members, _normalised, _num, _tree_rows


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


# -- geometry -----------------------------------------------------------------------------------
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
    kin = "layout" if facts["layout_name"] else "family"     # a file no rule recognises: its layout's references
    y += 6
    sc.text(PAD, y, "Where it sits among the registered references" +
            (f" ({facts['pool']} of this {kin})" if facts["pool"] else ""), size=11, fill=MUTED, bold=True)
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
            what = "reference of this layout" if facts["layout_name"] else f"{fam_label} reference"
            sc.text(PAD, cur - 6, f"No {what} is registered "
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
                    cname = COMPONENT_NAMES.get(c, c if "." in c else c.upper())   # a container's name as it is
                    sc.text(x + 2, y + 27, _fit(cname, cw - 4, 12), bold=True)
                    sc.text(x + 2, y + 41, _fit(label, cw - 4, 11), size=11, fill=INK)
                    sc.text(x + 2, y + 55, _fit(shown or "—", cw - 4, 11), size=11, fill=MUTED)
        y += 66

    y = legend(sc, y)
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

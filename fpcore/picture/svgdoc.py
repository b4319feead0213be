"""The scene as one self-contained SVG string: no script, no external reference, no font file;
patterns are defined once per picture, under ids kept apart by ``uid``."""
from __future__ import annotations

import hashlib
import html
import json

from .compose import Scene, scene


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

"""Self-contained HTML report of a scan: models, duplicate groups, family tree (SVG).

The family tree is a hierarchical clustering (scipy, average linkage) of the files'
denoiser fingerprints together with the registered references of the same
architecture; references are marked. Nothing is loaded from the network.

With more than TREE_EXACT_MAX_REFS references of a family, the references' fingerprints are
not read: every leaf is placed by its sketch (the catalog's, fpcore.refs.library; a file's is made
from its fingerprint in hand), whose distances are the fingerprint distances to a few per cent.
"""
from __future__ import annotations

import html
import os

import numpy as np

from .. import scan as _scan
from ..facts import format_bytes
from ..refs.library import RefDB

#: up to this many references of a family, the tree reads their fingerprints (20-40 ms each) and
#: clusters the sampled values themselves, as always; above it, the catalog's sketches (folded
#: to sketchindex.INDEX_DIM floats) place every leaf without a read. Measured by bench/report_tree.py
#: (55 SDXL leaves, 52 of them references): 2.2 s read vs 0.03 s sketched, cophenetic correlation
#: 0.992, every file placed beside the same references; only the grouping of near-equidistant
#: siblings (a tie either way) can differ.
TREE_EXACT_MAX_REFS = 16


def _tree_svg(labels: list[str], is_ref: list[bool], X: np.ndarray) -> str:
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import pdist
    n = len(labels)
    if n < 2:
        return ""
    Z = linkage(pdist(X, "euclidean") / np.sqrt(X.shape[1]), "average")
    d = dendrogram(Z, no_plot=True, labels=list(range(n)), orientation="left")
    row_h, left, width = 22, 10, 360
    height = n * row_h + 20
    maxd = max(max(dc) for dc in d["dcoord"]) or 1.0
    sx = lambda v: left + width - (v / maxd) * width  # noqa: E731  distance 0 at the right edge
    sy = lambda v: 10 + (v / 10.0) * row_h - row_h / 2  # noqa: E731  dendrogram leaves at 5, 15, 25 ...
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 420}" height="{height}" '
             f'font-family="sans-serif" font-size="12">']
    for ic, dc in zip(d["icoord"], d["dcoord"]):
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for y, x in zip(ic, dc))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#555"/>')
    for pos, leaf in enumerate(d["leaves"]):
        y = sy(5 + 10 * pos)
        color = "#b5179e" if is_ref[leaf] else "#222"
        mark = "★ " if is_ref[leaf] else ""
        parts.append(f'<text x="{left + width + 6}" y="{y + 4:.1f}" fill="{color}">{html.escape(mark + labels[leaf])}</text>')
    parts.append(f'<text x="{left}" y="{height - 2}" fill="#888">0 (right) … {maxd:.2f} relative distance (left)</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _sketch_vectors(leaves: list[str], fps: dict, refs: list, db: RefDB, comp: str) -> np.ndarray | None:
    """One row per leaf (files, then references): its folded sketch, scaled so that the tree's
    distance (euclidean / sqrt(columns)) is the distance of the unit sketches. None when a leaf
    has no sketch of ``comp`` (then the fingerprints are read)."""
    from ..refs import sketchindex
    from ..refs.sketch import sketch
    rows = [sketchindex.index_vectors({comp: sketch(fps[p], comp)}).get(comp) for p in leaves]
    rows += [db.sketch_of(r, comp) for r in refs]
    if any(v is None for v in rows):
        return None
    X = np.stack(rows).astype(np.float64)
    return X * np.sqrt(X.shape[1])


def family_trees(result: dict, db: RefDB | None) -> list[tuple[str, str]]:
    """(family, svg) per architecture with at least two models (files + references)."""
    reports = {r["path"]: r for r in result["reports"]}
    fps = dict(result.get("_fingerprints") or {})
    out = []
    for (family, comp), paths in _scan.family_groups(reports, fps).items():
        # one leaf per distinct file content
        seen, leaves = set(), []
        for p in paths:
            key = reports[p].get("sha256") or p
            if key not in seen:
                seen.add(key)
                leaves.append(p)
        labels = [os.path.relpath(p, result["root"]) for p in leaves]
        is_ref = [False] * len(leaves)
        # a file that is itself a registered reference (same SHA-256) is starred and named
        by_sha = {r.sha256: r.name for r in db.refs.values() if r.sha256} if db is not None else {}
        for i, p in enumerate(leaves):
            name = by_sha.get(reports[p].get("sha256"))
            if name:
                is_ref[i] = True
                labels[i] += f" (= {name})"
        refs = [r for r in db.refs.values() if _scan.in_family(r, family, comp) and r.sha256 not in seen] \
            if db is not None else []
        ref_names = [r.name for r in refs]
        X = _sketch_vectors(leaves, fps, refs, db, comp) if len(refs) > TREE_EXACT_MAX_REFS else None
        if X is None:
            fps.update((f"ref:{r.name}", r.fp) for r in refs)
            X = _scan._quick_vectors(leaves + [f"ref:{n}" for n in ref_names], fps, comp)
        all_keys = leaves + ref_names
        if X is None or len(all_keys) < 2:
            continue
        out.append((_scan.family_title(family, [reports[p] for p in paths]),
                    _tree_svg(labels + ref_names, is_ref + [True] * len(ref_names), X)))
    return out


CSS = """body{font-family:sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left} th{background:#f3f3f3}
.err{color:#b00} .muted{color:#777} h2{margin-top:1.6em}
tr.pic td{border-top:none;padding:0 8px 4px;font-size:12px;color:#555} tr.pic summary{cursor:pointer} .legend{font-size:13px;max-width:60em}
.legend dt{font-weight:bold} .legend dd{margin:0 0 .3em 1.5em}
td.contra{background:#fde2e2;border:2px solid #b00} .claim-contradicts{color:#b00;font-weight:bold}
.claim-consistent{color:#2a7a2a} .claim-unverifiable{color:#777} .warn{color:#b00}"""


def legend_html() -> str:
    """The relations, the groups, confidence and the evidence words, in a few lines."""
    from ..identify import CONFIDENCE_MEANING, EVIDENCE_LEGEND, GROUP_LEGEND, RELATION_LEGEND, confidence_levels
    rel = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in RELATION_LEGEND.items())
    lev = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in confidence_levels())
    grp = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in GROUP_LEGEND.items())
    ev = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in EVIDENCE_LEGEND.items())
    from ..claims.wording import CHECK_LEGEND
    cl = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in CHECK_LEGEND.items())
    return (f"<details class=legend open><summary>Legend</summary><dl><dt>relations</dt><dd><dl>{rel}</dl></dd>"
            f"<dt>confidence</dt><dd>{html.escape(CONFIDENCE_MEANING)}<dl>{lev}</dl></dd>"
            f"<dt>groups</dt><dd><dl>{grp}</dl></dd><dt>evidence in the reasons</dt><dd><dl>{ev}</dl></dd>"
            f"<dt>claims (what the file, its sidecars and its name say, checked against the weights)</dt>"
            f"<dd><dl>{cl}</dl></dd></dl>"
            f"</details>")


def _picture_row(report: dict, rel: str, tree: dict) -> str:
    """A full-width row under a file's row: its picture (fpcore.picture), folded until expanded."""
    from .. import picture
    svg = picture.svg(report, tree)
    if not svg:
        return ""
    return (f'<tr class=pic><td colspan=7><details class=mfp-pic data-path="{html.escape(rel)}"><summary>picture: '
            f'where {html.escape(os.path.basename(rel))} sits among the references</summary>{svg}</details></td></tr>')


def _claims_html(report: dict) -> str:
    """The claims cell: each claim's check, source and words, its detail below; contradictions first."""
    from ..claims import wording
    out = []
    for c in wording.ordered(report):
        out.append(f"<div class=claim-{html.escape(c['check'])}>{html.escape(c['check'])}: "
                   f"{html.escape(c['source'])} says {html.escape(c['says'])}</div>"
                   f"<div class=muted>{html.escape(c['detail'])}</div>")
    return "".join(out) or "<span class=muted>none</span>"


def render(result: dict, db: RefDB | None = None) -> str:
    from ..identify import base_label, confidence_text, needs_reason
    from .. import picture
    from ..claims import wording
    tree = picture.reference_tree(db) if db is not None else {}
    rows = []
    for r in result["reports"]:
        rel = os.path.relpath(r["path"], result["root"])
        if r.get("error"):
            rows.append(f"<tr><td>{html.escape(rel)}</td><td colspan=6 class=err>{html.escape(r['error'])}</td></tr>")
            continue
        a, v = r["architecture"], r["verdict"]
        peer_txt = _scan.folder_text(r.get("folder") or {}, result["root"])
        relation = html.escape(str(v.get("relation")))
        if v.get("differs"):
            relation += f"<div class=muted>differs: {html.escape(', '.join(v['differs']))}</div>"
        if needs_reason(v):
            relation += f"<div class=muted>why: {html.escape(v['reason'])}</div>"
        cells = [html.escape(str(x)) for x in (rel, a.get("layout_name") or a.get("family"),
                                               base_label(r) if v.get("relation") != "unknown"
                                               else "—")]
        for line in filter(None, [wording.delta_line(r), wording.trained_on_line(r)]):
            relation += f"<div class=muted>{html.escape(line)}</div>"
        if wording.health_line(r):
            relation += f"<div class=warn>{html.escape(wording.health_line(r))}</div>"
        folder = html.escape(peer_txt) + "".join(f"<div class=muted>{html.escape(x)}</div>"
                                                 for x in wording.fits_lines(r, result["root"]))
        cells += [relation, html.escape(confidence_text(v.get("confidence"))), folder]
        contra = " class=contra" if wording.has_contradiction(r) else ""
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + f"<td{contra}>{_claims_html(r)}</td></tr>")
    rows = [row + _picture_row(r, os.path.relpath(r["path"], result["root"]), tree)  # one row per report above
            for row, r in zip(rows, result["reports"])]
    groups = []
    for g in result["groups"]:
        paths = "<br>".join(html.escape(os.path.relpath(p, result["root"])) for p in g["paths"])
        label = f"<div class=muted>{html.escape(g['label'])}</div>" if g.get("label") else ""
        groups.append(f"<tr><td>{g['relation']}{label}</td><td>{paths}</td><td>{format_bytes(g['reclaimable_bytes'])}</td></tr>")
    total = _scan.reclaimable_total(result["groups"])
    trees = "".join(f"<h3>{html.escape(f)}</h3>{svg}" for f, svg in family_trees(result, db)) or \
        "<p class=muted>Not enough models of one architecture for a tree.</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Model Fingerprint scan</title>
<style>{CSS}</style></head><body>
<h1>Model Fingerprint — {html.escape(result['root'])}</h1>
<p>{len(result['reports'])} model files; {sum(1 for r in result['reports'] if r.get('error'))} could not be read.</p>
<h2>Models</h2><table><tr><th>file</th><th>architecture</th><th>base</th><th>relation</th><th>confidence</th>
<th>in this folder</th><th>claims</th></tr>{''.join(rows)}</table>
{legend_html()}
<h2>Duplicates and same weights</h2>
<p>{format_bytes(total)} could be reclaimed by keeping one file per group. Only groups whose files hold the same
weights in every component count; a same_denoiser group shares the UNet/DiT only and reclaims nothing.</p>
<table><tr><th>relation</th><th>files</th><th>reclaimable</th></tr>{''.join(groups) or '<tr><td colspan=3 class=muted>none</td></tr>'}</table>
<h2>Family tree</h2><p class=muted>★ registered reference. Clustering of weight fingerprints (average linkage).</p>
{trees}
</body></html>"""

"""Text of the "Identify base model" UI: a report as Markdown, the legend, the scan table and
its summary. Plain functions of plain data (no gradio); fpcore.ui shows them.
"""
from __future__ import annotations

import os

from .. import api
from ..facts import family_name, format_bytes
from ..identify import (CONFIDENCE_MEANING, RELATION_LEGEND, architecture_name, base_label, confidence_levels,
                        confidence_text, evidence_notes, needs_reason)

TABLE_HEADERS = ["path", "architecture", "base", "relation", "confidence", "claims"]
#: the table of LoRAs that fit the loaded checkpoint
LORA_HEADERS = ["LoRA", "fits", "why"]


def format_report(rep: dict) -> str:
    """Markdown summary of one identify report."""
    if rep.get("error"):
        return f"**Error** — `{rep['path']}`: {rep['error']}" if rep.get("path") else f"**Error**: {rep['error']}"
    a, v = rep.get("architecture") or {}, rep.get("verdict") or {}
    fam = architecture_name(a)
    lines = [f"**{os.path.basename(rep.get('path') or '')}** — {api.summary_line(rep)}", "",
             f"- architecture: {fam}, {a.get('dtype') or '?'}; components: {', '.join(a.get('components') or [])}",
             f"- relation: **{v.get('relation')}**"
             + (f", **{base_label(rep)}**" if v.get("relation") == "merge" and rep.get("merge")
                else f", base **{v['base']}**" if v.get("base") else "")
             + f" (confidence {confidence_text(v.get('confidence'))})"]
    if needs_reason(v):
        lines.append(f"- why: {v['reason']}")
    if v.get("differs"):
        lines.append("- not the same weights: " + ", ".join(v["differs"]))
    if v.get("lineage"):
        lines.append(("- common ancestry: " if v.get("relation") == "merge" else "- lineage: ") + " → ".join(v["lineage"]))
    for m in rep.get("merge") or []:
        chain = f" (lineage {' → '.join(m['lineage'])})" if m.get("lineage") else ""
        lines.append(f"- merge: {m['ref']} {float(m['weight']):.2f}{chain}")
    lines += _claims_markdown(rep)
    if rep.get("sha256"):
        origin = {"host": ", from the host's cache", "published": ", as published"}.get(rep.get("hash"), "")
        lines.append(f"- sha256: `{rep['sha256']}` (AutoV2 `{(rep.get('autov2') or '').upper()}`{origin})")
    elif rep.get("path") and "://" not in rep["path"]:
        lines.append("- sha256: not computed (identified from the fingerprint; *Compute SHA-256* hashes the whole "
                     "file, for an `identical` check and the Civitai/A1111 hash)")
    lines += ["", legend_markdown(evidence_notes(v.get("reason") if needs_reason(v) else ""))]
    return "\n".join(lines)


def _claims_markdown(rep: dict) -> list[str]:
    """What changed, health, trained on, and the claims (contradictions first and in bold)."""
    from ..claims import wording
    lines = [f"- {x}" for x in (wording.delta_line(rep), wording.trained_on_line(rep)) if x]
    if wording.health_line(rep):
        lines.append(f"- **{wording.health_line(rep)}**")
    cs = wording.ordered(rep)
    if cs:
        lines.append(f"- claims: **{rep.get('claim_check')}**")
        for c in cs:
            check = f"**{c['check'].upper()}**" if c["check"] == "contradicts" else c["check"]
            lines.append(f"  - {check}: {c['source']} says *{c['says']}*: {c['detail']}")
    return lines


def lora_rows(rows: list[dict], root: str | None = None) -> list[list]:
    """The LoRA fit table: LoRA (relative to root), fits (yes / no / unknown), why."""
    out = []
    for r in rows:
        p = r["lora"]
        rel = os.path.relpath(p, root) if root and p.startswith(os.fspath(root)) else os.path.basename(p)
        out.append([rel, r["fit"], r["reason"]])
    return out


def legend_markdown(evidence: list[str] | None = None) -> str:
    """A short legend of the relations and of confidence (and of the evidence words shown)."""
    rel = "; ".join(f"*{k}*: {m}" for k, m in RELATION_LEGEND.items())
    levels = "; ".join(f"{k}: {m}" for k, m in confidence_levels())
    text = f"<details><summary>Legend</summary>\n\n{rel}.\n\n*confidence*: {CONFIDENCE_MEANING} ({levels})"
    if evidence:
        text += "\n\n" + "; ".join(evidence) + "."
    return text + "\n\n</details>"


def table_rows(result: dict, root: str | None = None) -> list[list]:
    """The results table of a scan: path (relative to root), architecture, base, relation, confidence."""
    rows = []
    for r in result.get("reports") or []:
        p = r.get("path") or ""
        rel = os.path.relpath(p, root) if root and p.startswith(os.fspath(root)) else p
        if r.get("error"):
            rows.append([rel, "error", "", r["error"], "", ""])
            continue
        a, v = r.get("architecture") or {}, r.get("verdict") or {}
        from ..claims import wording
        rows.append([rel, a.get("layout_name") or family_name(a.get("family") or "unknown"),
                     base_label(r) if v.get("relation") not in (None, "unknown") else "",
                     v.get("relation") or "", confidence_text(v.get("confidence")) if v else "",
                     wording.claims_cell(r)])
    return rows


def scan_summary(result: dict, write_tags: bool) -> str:
    reps = result.get("reports") or []
    bad = sum(1 for r in reps if r.get("error")) + len(result.get("errors") or [])
    lines = [f"Scanned **{len(reps)}** model files" + (f", {bad} with errors" if bad else "") + "."]
    for g in result.get("groups") or []:
        lines.append(f"- {g['relation']}" + (f" ({g['label']})" if g.get("label") else "") + ": "
                     + ", ".join(os.path.basename(p) for p in g["paths"])
                     + f" ({format_bytes(g.get('reclaimable_bytes', 0))} reclaimable)")
    root = result.get("root") or ""
    contra = [r for r in reps if r.get("claim_check") == "contradicts"]
    if contra:
        lines.append(f"- **{len(contra)} file(s) contradict what they claim**: "
                     + ", ".join(os.path.basename(r["path"]) for r in contra))
    for r in reps:
        from ..claims import wording
        for line in wording.fits_lines(r, root or None):
            lines.append(f"- {os.path.basename(r['path'])} {line}")
    for s in result.get("skipped") or []:
        lines.append(f"- skipped `{os.path.relpath(s['path'], root) if root else s['path']}`: {s['reason']}")
    if write_tags:
        tags = result.get("tags") or []
        written = sum(1 for t in tags if t.get("written") or (t.get("changes") and not t.get("error")))
        errs = [t for t in tags if t.get("error")]
        lines.append(f"- tags: {written} sidecar(s) written" + (f", {len(errs)} failed" if errs else ""))
        for t in errs:
            lines.append(f"  - {t.get('path')}: {t['error']}")
    return "\n".join(lines)

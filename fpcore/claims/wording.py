"""The lines hosts show for claims, what a derivative changed, health, and LoRA fits: one
wording for the command line, the UI, the HTML report and the ComfyUI node."""
from __future__ import annotations

import os

from .check import CONTRADICTS, RANK

#: what each check means, shown as a legend next to claims
CHECK_LEGEND = {
    "contradicts": "what the weights say disagrees with the claim",
    "consistent": "what the weights say agrees with the claim",
    "unverifiable": "nothing registered lets the weights confirm or refute it (the detail says what is missing)",
}
_COMP = {"unet": "UNet", "dit": "DiT", "clip_l": "CLIP-L", "clip_g": "CLIP-G", "clip_h": "CLIP-H", "t5": "T5",
         "vae": "VAE", "model": "model"}


def ordered(report: dict) -> list[dict]:
    """The claims, contradictions first."""
    return sorted(report.get("claims") or [], key=lambda c: -RANK.get(c.get("check"), 0))


def claim_line(c: dict) -> str:
    """'contradicts: civitai_info says base model Illustrious (Illustrious XL v0.1): Claims …'."""
    ref = f" ({c['refers_to']})" if c.get("refers_to") and c["refers_to"] not in c.get("says", "") else ""
    return f"{c['check']}: {c['source']} says {c['says']}{ref}. {c['detail']}"


def claims_lines(report: dict) -> list[str]:
    return [claim_line(c) for c in ordered(report)]


def claims_cell(report: dict) -> str:
    """One short cell for tables: the strongest check and what it is about."""
    cs = ordered(report)
    if not cs:
        return ""
    top = cs[0]
    more = f" (+{len(cs) - 1} more)" if len(cs) > 1 else ""
    return f"{top['check']}: {top['source']} says {top['says']}{more}"


def has_contradiction(report: dict) -> bool:
    return report.get("claim_check") == CONTRADICTS


def delta_line(report: dict) -> str | None:
    """'changed from Pony…: UNet attention only, like a baked LoRA (UNet 100%; blocks: output 56%, …)'."""
    d = report.get("delta")
    if not d:
        return None
    comps = sorted((d.get("components") or {}).items(), key=lambda t: -t[1].get("share", 0))
    parts = ", ".join(f"{_COMP.get(c, c)} {e['share'] * 100:.0f}%" for c, e in comps if e.get("share", 0) >= 0.005)
    blocks = ", ".join(f"{g} {v * 100:.0f}%" for g, v in (d.get("blocks") or {}).items() if v >= 0.005)
    return (f"changed from {d.get('base')}: {d['summary']} ({parts}" + (f"; blocks: {blocks}" if blocks else "")
            + f"; attention projections {d.get('attention_share', 0) * 100:.0f}%)")


def health_line(report: dict) -> str | None:
    """'health: 2 tensors with NaN among the sampled values (unet:…, …)', or None when healthy."""
    h = report.get("health") or {}
    n = h.get("counts") or {}
    words = {"nan": "NaN", "inf": "Inf", "zero": "all zeros"}
    parts = []
    for flag, word in words.items():
        k = n.get(flag, 0)
        if k:
            names = h.get(flag) or []
            shown = ", ".join(names[:3]) + (", …" if k > 3 else "")
            parts.append(f"{k} tensor{'s' if k != 1 else ''} with {word} ({shown})")
    return ("health: " + "; ".join(parts) + " among the sampled values") if parts else None


def trained_on_line(report: dict) -> str | None:
    t = report.get("trained_on")
    if not t:
        kind = (report.get("architecture") or {}).get("kind")
        return "trained on: not said (no checkpoint hash or name in its metadata)" if kind in ("lora", "lycoris") \
            else None
    lin = f" ({' → '.join(t['lineage'])})" if t.get("lineage") else ""
    how = f"by {t.get('how')}" + (" (SHA-256)" if t.get("by") == "hash" and "hash" not in str(t.get("how")) else "")
    return f"trained on: {t['name']}{lin}, {how}"


def fits_lines(report: dict, root: str | None = None) -> list[str]:
    """'fits: a.safetensors, b.safetensors' / 'does not fit: …' / 'cannot tell: … (why)'."""
    rows = report.get("fits")
    if rows is None:
        return []
    if not rows:
        return ["fits: no checkpoint in this folder to check"]
    name = (lambda p: os.path.relpath(p, root)) if root else os.path.basename
    out = []
    for fit, label in (("yes", "fits"), ("no", "does not fit"), ("unknown", "cannot tell")):
        sel = [r for r in rows if r["fit"] == fit]
        if sel:
            why = sorted({r["reason"] for r in sel})
            out.append(f"{label}: " + ", ".join(name(r["path"]) for r in sel)
                       + (f" ({why[0]})" if len(why) == 1 else ""))
    return out


def extra_lines(report: dict) -> list[str]:
    """Everything above for one report, as the lines a host shows under its summary."""
    lines = [x for x in (trained_on_line(report), delta_line(report), health_line(report)) if x]
    return lines + [f"claim {x}" for x in claims_lines(report)] + fits_lines(report)

"""The words reports are written in: the legends of relations, groups, confidence and evidence,
the names of components, and the labels and phrases front ends and summaries share."""
from __future__ import annotations

from .. import layout
from ..facts import family_name


#: what each relation means, shown as a legend next to results (HTML report, UI, README)
RELATION_LEGEND = {
    "identical": "the same file bytes as a reference or a published release (SHA-256 compared)",
    "same_weights": "every weight equals the reference's up to the rounding of another precision "
                    "(fp32/fp16/bf16/fp8), pruning, another key layout or edited metadata",
    "derivative": "fine-tuned from the base (training, a baked LoRA, add-difference); the lineage is the chain "
                  "of registered ancestors",
    "merge": "a weighted mix of several references, named by its recipe; the lineage is the members' common "
             "ancestry",
    "unknown": "nothing registered of this architecture is related, or nothing could be compared",
}
#: what a scan's groups mean (only the first two free bytes)
GROUP_LEGEND = {
    "identical": "the same bytes (SHA-256 compared): keeping one file loses nothing",
    "same_weights": "every component with weights is the same up to precision: keeping the largest loses nothing",
    "same_denoiser": "the same UNet/DiT, but another component differs: nothing to reclaim",
}
#: the one definition of confidence (README "What the output means" says the same)
CONFIDENCE_MEANING = (
    "how sure the relation is, from 0 to 1. 1: the evidence cannot be mistaken (the same bytes, every sampled "
    "value equal). Below 1 the verdict rests on a measured fit or a threshold, and the reason says which. "
    "Empty (null): nothing could be compared, so no claim is made either way.")
#: evidence words used in reasons, explained wherever they are shown
EVIDENCE_LEGEND = {
    "cos": "cosine similarity of the sampled weights (each tensor's mean removed): 1 = same direction, "
           "about 0 = unrelated",
    "z": "cos × √(number of sampled values): how far above chance the similarity is; independent models "
         "stay below 8",
    "distance": "relative RMS difference from the reference after removing rounding noise: 0 = the same weights",
    "share": "fraction of a registered child's own training the file carries: about 1 = descends from it, "
             "about 0 = a sibling",
}


def confidence_levels() -> list[tuple[str, str]]:
    """('1.00 certain', meaning) … ('n/a none', meaning): the levels match.decisions.Confidence defines."""
    from ..match.decisions import Confidence
    return [(f"{confidence_text(lv.value)} {lv.name}", lv.meaning) for lv in Confidence.LEVELS]


def confidence_text(conf) -> str:
    return "n/a" if conf is None else f"{float(conf):.2f}"


def evidence_notes(text: str) -> list[str]:
    """'z: …' explanations of the evidence words that ``text`` (a reason) uses."""
    import re
    return [f"{w}: {m}" for w, m in EVIDENCE_LEGEND.items() if re.search(rf"\b{w}\b", text or "")]


def needs_reason(verdict: dict) -> bool:
    """Whether the reason must be shown: whenever the confidence is below 1 (or there is none)."""
    c = (verdict or {}).get("confidence")
    return bool((verdict or {}).get("reason")) and (c is None or c < 1)


#: components that make the model (the denoiser and what conditions it); a baked-in VAE
#: decodes the result but a swapped one does not make a new model: it is only reported
TEXT_ENCODERS = layout.TEXT_ENCODERS
COMPONENT_NAMES = {"unet": "UNet", "dit": "DiT", "clip_l": "CLIP-L", "clip_g": "CLIP-G", "clip_h": "CLIP-H",
                   "t5": "T5", "vae": "VAE"}


def component_name(comp: str) -> str:
    return COMPONENT_NAMES.get(comp, comp)


def components_phrase(comps: list[str]) -> str:
    """'UNet and text encoders', 'CLIP-G text encoder', 'VAE' ... for a list of components."""
    tes = [c for c in comps if c in TEXT_ENCODERS]
    parts = [component_name(c) for c in comps if c not in TEXT_ENCODERS]
    if tes:
        parts.insert(1 if parts and comps[0] in layout.DENOISERS else 0,
                     "text encoders" if len(tes) > 1 else "text encoder")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1] if parts else ""


def architecture_name(a: dict | None) -> str:
    """What users read as a file's architecture: the family's name (and variant), or for a file no
    rule recognises what is known of it (``layout_name``: its containers, sizes, parameters)."""
    a = a or {}
    if a.get("family") in (None, "unknown") and a.get("layout_name"):
        return a["layout_name"]
    return family_name(a.get("family") or "unknown") + (f" ({a['variant']})" if a.get("variant") else "")


def merge_recipe(merge: list[dict]) -> str:
    """'Pony Diffusion V6 XL 50% + Illustrious XL v0.1 50%'."""
    return " + ".join(f"{m['ref']} {float(m['weight']) * 100:.0f}%" for m in merge)


def base_label(report: dict) -> str:
    """What a user is shown as the model's base: the recipe of a merge, else the base (or 'unknown')."""
    v = (report or {}).get("verdict") or {}
    if v.get("relation") == "merge" and report.get("merge"):
        return "merge: " + merge_recipe(report["merge"])
    return v.get("base") or "unknown"


#: the relation and its base in one phrase, for one-line listings (the scan's per-file lines)
RELATION_PHRASES = {"identical": "identical to {}", "same_weights": "same weights as {}",
                    "derivative": "derivative of {}"}


def relation_phrase(report: dict) -> str:
    """'derivative of Pony Diffusion V6 XL', 'merge: A 60% + B 40%', 'unknown base': the relation
    and the base said once (not 'merge merge: ...' or 'unknown unknown')."""
    v = (report or {}).get("verdict") or {}
    rel, base = v.get("relation"), v.get("base")
    if rel == "merge" and report.get("merge"):
        return "merge: " + merge_recipe(report["merge"])
    if rel in RELATION_PHRASES and base:
        return RELATION_PHRASES[rel].format(base)
    return "unknown base" if rel in (None, "unknown") else str(rel).replace("_", " ")

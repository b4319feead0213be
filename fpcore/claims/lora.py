"""Which checkpoint a LoRA was trained on, and which checkpoints it fits.

``trained_on``: kohya's training metadata names the checkpoint it trained on by SHA-256
(``ss_new_sd_model_hash``: the whole file's; ``ss_sd_model_hash``: A1111's legacy hash of
64 kB at 1 MB) and by file name (``ss_sd_model_name``). A hash is resolved against the
references, the known releases, the store's hashed files and the folder being scanned; a
name against the references and known releases; failing both, a sidecar's base model
("Pony") names the registered reference of that model line. (``sshs_model_hash`` is not a
base: sd-scripts writes there the hash of the LoRA's own tensors.)

A LoRA fits a checkpoint of its family that shares the lineage of the checkpoint it was
trained on: the checkpoint is that model, or descends from it (for a merge: one of its members
does). Where the training checkpoint or the checkpoint's lineage is not known, the answer is
``unknown`` and says why.
"""
from __future__ import annotations

import hashlib
import os

from ..facts import LORA_KINDS, family_name
from .resolve import Named, Resolver, known_lineage, same_family


#: kinds that carry training metadata naming the checkpoint they were trained on
ADDON_KINDS = LORA_KINDS + ("textual_inversion",)
#: kinds a LoRA is applied to (a checkpoint, or a UNet/DiT-only file)
CHECKPOINT_KINDS = ("checkpoint", "unet_only", "dit_only")
#: A1111's legacy model hash (kohya ``ss_sd_model_hash``): sha256 of 64 kB at 1 MB, first 8 hex.
#: Files shorter than its end hash fewer bytes (two of them can agree), so they are not matched by it
LEGACY_OFFSET, LEGACY_BYTES = 0x100000, 0x10000
YES, NO, UNKNOWN = "yes", "no", "unknown"


def legacy_hash(path: str) -> str | None:
    """A1111's old 8-hex model hash of a file (None when unreadable or too short to tell)."""
    try:
        if os.path.getsize(path) < LEGACY_OFFSET + LEGACY_BYTES:
            return None
        with open(path, "rb") as f:
            f.seek(LEGACY_OFFSET)
            return hashlib.sha256(f.read(LEGACY_BYTES)).hexdigest()[:8]
    except OSError:
        return None


def _json(n: Named, how: str, by: str) -> dict:
    lineage = list(n.lineage)
    if not lineage and n.known:
        from ..refs import known
        entry = next((e for e in known.table().values() if e.get("variant") == n.known), None)
        lineage = known_lineage(entry) if entry else [n.known]
    return {"name": n.label, "sha256": n.sha256, "lineage": lineage, "how": how, "by": by,
            "path": n.file, "family": n.family}


def trained_on(report: dict, saids: list, r: Resolver) -> tuple[dict | None, Named | None]:
    """(``trained_on`` of the report, the Named model when it was found by hash) for add-on
    networks; (None, None) for anything else."""
    kind = (report.get("architecture") or {}).get("kind")
    if kind not in ADDON_KINDS:
        return None, None
    for s in saids:
        if s.source == "kohya" and s.kind == "base" and s.by_hash and s.named is not None:
            return _json(s.named, s.key, "hash"), s.named
    for s in saids:
        n = s.named
        if s.source == "kohya" and s.kind == "base" and n is not None and (n.ref or n.known):
            return _json(n, s.key, "name"), None
    fam = report.get("weights_family") or (report.get("architecture") or {}).get("family")
    for s in saids:
        n = s.named
        if s.source not in ("civitai_info", "sidecar") or s.kind != "base" or n is None:
            continue
        if n.ref or n.known:
            return _json(n, s.key, "name"), None
        if n.brand:
            regs = r.refs_of_brand(n.brand, fam)
            if regs:
                return _json(r._ref(regs[0], s.key), s.key, "name"), None
    return None, None


def _lineage_of(rep: dict) -> tuple[list[str], dict[str, list[str]]]:
    """(lineage, {merge member: its lineage}) of a checkpoint's report."""
    v = rep.get("verdict") or {}
    lin = list(v.get("lineage") or [])
    if v.get("relation") in ("identical", "same_weights", "derivative") and v.get("base") and v["base"] not in lin:
        lin.append(v["base"])
    members = {m["ref"]: list(m.get("lineage") or [m["ref"]]) for m in rep.get("merge") or []} \
        if v.get("relation") == "merge" else {}
    return lin, members


def fit(lora: dict, ckpt: dict) -> dict:
    """Whether a LoRA (its report) fits a checkpoint (its report): {"fit": yes|no|unknown, "reason"}."""
    if ckpt.get("error") or lora.get("error"):
        return {"fit": UNKNOWN, "reason": "one of the files could not be read"}
    lf = lora.get("weights_family") or (lora.get("architecture") or {}).get("family")
    cf = (ckpt.get("architecture") or {}).get("family")
    if lf in (None, "unknown") or cf in (None, "unknown"):
        return {"fit": UNKNOWN, "reason": "the architecture of " + ("the LoRA" if lf in (None, "unknown")
                                                                   else "the checkpoint") + " is not known"}
    if not same_family(lf, cf):
        return {"fit": NO, "reason": f"a {family_name(lf)} LoRA; this is a {family_name(cf)} checkpoint"}
    t = lora.get("trained_on")
    if not t:
        return {"fit": UNKNOWN, "reason": f"same architecture ({family_name(cf)}), but the LoRA does not say "
                                          f"which checkpoint it was trained on"}
    if t.get("sha256") and ckpt.get("sha256") and t["sha256"].lower() == ckpt["sha256"].lower():
        return {"fit": YES, "reason": f"the checkpoint it was trained on ({t['name']})"}
    anchor = (t.get("lineage") or [None])[-1]
    if not anchor:
        return {"fit": UNKNOWN, "reason": f"trained on {t['name']}, whose lineage is not known"}
    lin, members = _lineage_of(ckpt)
    said = "" if t.get("by") == "hash" else f" (by its {t.get('how')}, not verified)"
    if anchor in lin:
        rel = "is" if lin and lin[-1] == anchor and (ckpt.get("verdict") or {}).get("relation") != "derivative" \
            else "descends from"
        return {"fit": YES, "reason": f"trained on {t['name']}{said}; this checkpoint {rel} {anchor}"}
    for m, mlin in members.items():
        if anchor in mlin:
            w = float(next((x["weight"] for x in ckpt.get("merge") or [] if x["ref"] == m), 0)) * 100
            part = f"{m} is {w:.0f}% of this merge" if m == anchor else \
                f"{m} ({w:.0f}% of this merge) descends from {anchor}"
            return {"fit": YES, "reason": f"trained on {t['name']}{said}; {part}"}
    if not lin and not members:
        return {"fit": UNKNOWN, "reason": f"trained on {t['name']}{said}; this checkpoint's base is not known"}
    from ..identify.wording import merge_recipe
    what = ("is a merge of " + merge_recipe(ckpt.get("merge") or [])) if members else \
        f"descends from {lin[-1]} ({' → '.join(lin)})"
    return {"fit": NO, "reason": f"trained on {t['name']}{said} ({' → '.join(t.get('lineage') or [])}); this "
                                 f"checkpoint {what}, another line"}


#: order of the fit list: what fits first
FIT_ORDER = {YES: 0, UNKNOWN: 1, NO: 2}


def is_lora(rep: dict) -> bool:
    return not rep.get("error") and (rep.get("architecture") or {}).get("kind") in LORA_KINDS


def is_checkpoint(rep: dict) -> bool:
    return not rep.get("error") and (rep.get("architecture") or {}).get("kind") in CHECKPOINT_KINDS \
        and bool((rep.get("architecture") or {}).get("components"))


def fit_list(lora: dict, checkpoints: dict[str, dict]) -> list[dict]:
    """[{"path", "fit", "reason"}] of a LoRA against checkpoints (path -> report), what fits first."""
    rows = [{"path": p, **fit(lora, c)} for p, c in checkpoints.items() if is_checkpoint(c)]
    return sorted(rows, key=lambda x: (FIT_ORDER[x["fit"]], x["path"]))


def match_in_folder(lora: dict, checkpoints: dict[str, dict], hasher=None) -> str | None:
    """The folder's checkpoint a LoRA's kohya hashes name, when the references and the store did
    not know it: by a SHA-256 already known, else by A1111's legacy hash (64 kB read per file of the
    family), confirmed by the whole file's SHA-256 where the metadata has it: ``hasher(path)``
    returns it (None: not hashed, as under ``--no-hash``; the match is then not claimed)."""
    k = (lora.get("metadata") or {}).get("kohya") or {}
    new = str(k.get("ss_new_sd_model_hash") or "").strip().lower()
    old = str(k.get("ss_sd_model_hash") or "").strip().lower()
    if not new and not old:
        return None
    lf = lora.get("weights_family") or (lora.get("architecture") or {}).get("family")
    same = {p: c for p, c in checkpoints.items() if is_checkpoint(c)
            and same_family(lf, (c.get("architecture") or {}).get("family"))}
    for p, c in same.items():
        if new and (c.get("sha256") or "").lower() == new:
            return p
    if len(old) != 8:
        return None
    for p, c in same.items():
        if c.get("sha256") or legacy_hash(p) != old:
            continue
        if not new:
            return p
        sha = hasher(p) if hasher is not None else None
        if sha:
            c["sha256"], c["autov2"], c["hash"] = sha, sha[:10], "computed"
        if sha == new:
            return p
    return None

"""What a model file claims about itself, checked against what its weights say; which
checkpoint a LoRA was trained on and which checkpoints it fits.

``annotate(report, path, db, store)`` adds to an identify report (docs/json-format.md):

- ``claims``: ``[{"source", "says", "refers_to", "check", "detail", "key"}]``, contradictions first;
- ``claim_check``: the strongest check (``contradicts`` > ``consistent`` > ``unverifiable``), or
  null without claims;
- ``trained_on``: for LoRAs and other add-on networks, ``{"name", "sha256", "lineage", "how",
  "by"}`` of the checkpoint their metadata names, or null.

``annotate_folder(reports, db, store)`` does it again for a scanned folder (a LoRA's hash may
name a checkpoint of the folder) and gives each LoRA its ``fits`` list.

The modules: ``sidecars`` (reading them), ``resolve`` (names and hashes to models), ``said``
(the statements), ``check`` (the checks), ``lora`` (trained on, fits), ``wording`` (the lines
hosts show). Claims are computed on every identify, outside the cached report: a sidecar
changes without the model file changing.
"""
from __future__ import annotations

import logging
import os

from .check import CONSISTENT, CONTRADICTS, RANK, UNVERIFIABLE, check, facts_of
from .lora import fit, fit_list, is_checkpoint, is_lora, match_in_folder, trained_on
from .resolve import Resolver

log = logging.getLogger("fpcore.claims")

__all__ = ["CONSISTENT", "CONTRADICTS", "UNVERIFIABLE", "RANK", "annotate", "annotate_folder", "claim_check",
           "fit", "fit_list", "lora_fit"]


def claim_check(claims: list[dict]) -> str | None:
    """The strongest check among ``claims``; None without claims."""
    return max((c["check"] for c in claims), key=RANK.get) if claims else None


def annotate(report: dict, path: str | None, db, store=None, files: dict | None = None) -> dict:
    """Add ``claims``, ``claim_check`` and ``trained_on`` to ``report`` (in place; returned).
    Never raises: a failure is logged and leaves empty claims."""
    if report.get("error"):
        return report
    report.setdefault("delta", None)
    report.setdefault("health", None)
    try:
        from . import said, sidecars
        r = Resolver(db, store, files)
        scs = sidecars.read(path) if path else []
        saids = said.gather(report, path, scs, r)
        t_json, t_named = trained_on(report, saids, r)
        if t_json is None and report.get("trained_on") and files is not None:
            t_json = report["trained_on"]            # found in the folder (annotate_folder)
            if t_json.get("by") == "hash":
                from .resolve import Named
                t_named = Named(t_json["name"], file=t_json.get("path"), sha256=t_json.get("sha256"),
                                family=t_json.get("family"), lineage=list(t_json.get("lineage") or []))
        f = facts_of(report, t_named)
        claims = [c for c in (check(s, f, r) for s in saids) if c is not None]
    except Exception as e:   # claims must never cost the user the report: one line, the trace at debug
        log.warning("%s: claims not checked: %s: %s", path, type(e).__name__, e)
        log.debug("claims of %s", path, exc_info=True)
        claims, t_json = [], report.get("trained_on")
    claims.sort(key=lambda c: -RANK[c["check"]])     # stable: a contradiction is listed first
    report["claims"] = claims
    report["claim_check"] = claim_check(claims)
    report["trained_on"] = t_json
    return report


def annotate_folder(reports: dict[str, dict], db, store=None, hasher=None) -> None:
    """Claims again with the folder's files known (a LoRA's hash may name one of them), and each
    LoRA's ``fits``: the folder's checkpoints, what fits first. ``hasher(path) -> sha256 or None``
    confirms a checkpoint a LoRA names by A1111's legacy hash (None: not confirmed)."""
    ckpts = {p: r for p, r in reports.items() if is_checkpoint(r)}
    for p, rep in reports.items():
        if not is_lora(rep):
            continue
        try:
            if not rep.get("trained_on") or rep["trained_on"].get("by") != "hash":
                hit = match_in_folder(rep, ckpts, hasher)
                if hit is not None:
                    from .lora import _json
                    named = Resolver(db, store, {hit: ckpts[hit]})._file(hit, ckpts[hit], ckpts[hit].get("sha256"),
                                                                        "")
                    k = (rep.get("metadata") or {}).get("kohya") or {}
                    how = "ss_new_sd_model_hash" if k.get("ss_new_sd_model_hash") else "ss_sd_model_hash"
                    rep["trained_on"] = _json(named, how, "hash")
                    rep["trained_on"]["path"] = hit
                    annotate(rep, p, db, store, files=reports)
        except Exception as e:   # the fit list is extra: never the scan's failure
            log.warning("%s: training checkpoint not looked for in the folder: %s: %s", p, type(e).__name__, e)
            log.debug("fits of %s", p, exc_info=True)
        rep["fits"] = fit_list(rep, ckpts)


def lora_fit(lora: dict, checkpoint: dict) -> dict:
    """Whether a LoRA fits a checkpoint, from their reports: ``{"status": "ok"|"warn", "fit",
    "reason", "lora", "checkpoint", "trained_on"}`` (a ComfyUI node's and the UI's answer)."""
    if lora.get("error") or checkpoint.get("error"):
        bad = lora if lora.get("error") else checkpoint
        return {"status": "warn", "fit": "unknown", "reason": bad.get("error") or "cannot be read",
                "lora": lora.get("path"), "checkpoint": checkpoint.get("path"), "trained_on": lora.get("trained_on")}
    if not is_lora(lora):
        kind = (lora.get("architecture") or {}).get("kind") or "file"
        return {"status": "warn", "fit": "unknown", "reason": f"{os.path.basename(lora.get('path') or '')} is not "
                f"a LoRA (a {kind})", "lora": lora.get("path"), "checkpoint": checkpoint.get("path"),
                "trained_on": None}
    f = fit(lora, checkpoint)
    return {"status": "ok" if f["fit"] == "yes" else "warn", **f, "lora": lora.get("path"),
            "checkpoint": checkpoint.get("path"), "trained_on": lora.get("trained_on")}

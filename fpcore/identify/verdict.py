"""From a fingerprint to its verdicts: one per component (UNet/DiT, text encoders, VAE) against
the references, then the whole file's (the weakest of its denoiser and text encoders) with its
one-sentence summary."""
from __future__ import annotations

import math

from .. import arch, layout
from ..facts import KIND_NAMES, LORA_KINDS, family_name
from ..fingerprint import Fingerprint
from .wording import component_name, components_phrase, merge_recipe


def _same_layout(fp: Fingerprint, ref: Fingerprint, comp: str) -> bool:
    from ..match.decisions import SAME_LAYOUT_MIN_KEYS
    mine = {k: s for k, s in zip(fp.keys, fp.shapes) if layout.in_component(k, comp)}
    theirs = {k: s for k, s in zip(ref.keys, ref.shapes) if layout.in_component(k, comp)}
    if not mine:
        return False
    same = sum(1 for k, s in mine.items() if theirs.get(k) == s)
    return same >= SAME_LAYOUT_MIN_KEYS * len(mine)   # same_weights still needs match.SAME_MIN_COVERAGE


def _json_safe(obj):
    """Non-finite floats (a distance of inf when nothing is comparable: NaN weights) as null,
    so reports are strict JSON (json.dumps(..., allow_nan=False))."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


#: fields a report computes from the fingerprint since they were added: a report cached by an
#: earlier version (without them) is computed again (``delta``, ``health``: issue 25)
REPORT_FIELDS = ("delta", "health")


def report_outdated(report: dict | None) -> bool:
    """Whether a cached report predates a field of REPORT_FIELDS (then it is computed again)."""
    return report is not None and any(k not in report for k in REPORT_FIELDS)


def identify_fingerprint(fp: Fingerprint, a: arch.ArchResult, db, sha256: str | None = None) -> dict:
    """Verdict, components and candidates for a fingerprint against ``db`` (a RefDB); what a
    derivative changed (``delta``) and the health of the sampled values (``health``)."""
    from ..match.delta import health
    result = _identify_fingerprint(fp, a, db, sha256)
    result["delta"] = _delta(result, fp, db)
    result["health"] = health(fp)
    if a.kind in LORA_KINDS:   # the family its shapes say, whatever its metadata claims (fpcore.claims)
        result["weights_family"] = arch.detect(fp.shape_map(), fp.dtype_map(), {}).family
    return _json_safe(result)


def _delta(result: dict, fp: Fingerprint, db) -> dict | None:
    """Where a derivative differs from its base (match.delta), for derivatives only."""
    v = result.get("verdict") or {}
    base = v.get("base")
    if v.get("relation") != "derivative" or not base or base not in db.refs:
        return None
    from ..match.delta import difference
    try:
        ref_fp = db.refs[base].fp
    except Exception:   # an unreadable reference: the verdict stands, without what changed
        return None
    d = difference(fp, ref_fp, list(result.get("components") or {}))
    if d is not None:
        d["base"] = base
    return d


def _identify_fingerprint(fp: Fingerprint, a: arch.ArchResult, db, sha256: str | None = None) -> dict:
    from .. import match  # numerical part, loaded only when there is something to match

    comps = arch.components_for(a.rule, fp.keys, a.containers)   # what the rule declares or the containers hold
    main = match.main_component(fp, comps)         # the denoiser, else the bulk of a partial file
    refs = list(db.refs.values())
    result: dict = {"verdict": None, "merge": [], "components": {}, "candidates": []}
    # identical: same bytes as a reference
    same_file = [r for r in refs if sha256 and r.sha256 == sha256]
    for comp in comps:
        if comp in layout.DENOISERS and a.family != "unknown":
            pool = [r for r in refs if r.family == a.family]
        else:  # unknown family, or a component shared across families: same keys and shapes
            pool = (db.layout_pool(fp, comp, _same_layout) if hasattr(db, "layout_pool")
                    else [r for r in refs if _same_layout(fp, r.fp, comp)])
        # a library of thousands: the index's few candidates and their ancestors (fpcore.refs.sketchindex)
        cands = db.candidates(fp, comp, pool) if hasattr(db, "candidates") else pool
        v = match.analyse(fp, comp, cands, tree=db, allow_merge=comp in layout.DENOISERS or comp == main)
        entry = {"relation": v.relation, "ref": v.ref, "confidence": v.confidence, "reason": v.reason,
                 "code": v.code, "evidence": v.evidence.to_json()}
        if v.relation == "unknown" and not _comparable(v):
            entry["confidence"] = None      # nothing to compare with: no claim either way
        if v.relation == "same_weights":
            _name_oldest_carrier(entry, v, db, match)
        if same_file:
            entry.update(relation="identical", ref=same_file[0].name, confidence=1.0, reason="same SHA-256",
                         code=match.Code.IDENTICAL)
            entry.pop("also_in", None)
        result["components"][comp] = entry
        if comp == main:
            result["candidates"] = [c.to_json() for c in v.candidates[:8]]
            result["merge"] = [{"ref": n, "weight": w, "lineage": db.lineage(n)} for n, w in v.merge]
            if v.merge_blocks:
                result["merge_blocks"] = {g: [{"ref": n, "weight": w} for n, w in ws] for g, ws in v.merge_blocks.items()}
            n_family = len(pool)
    if main is None:
        kind = a.kind or "file"
        what = KIND_NAMES.get(kind, kind)
        fam = f" for {family_name(a.family)}" if a.family not in (None, "unknown") else ""
        result["verdict"] = {"relation": "unknown", "base": None, "lineage": [], "confidence": None,
                             "summary": f"A {what}{fam}; it has no denoiser weights to compare with references.",
                             "reason": "no weights to compare", "differs": [],
                             "evidence": match.Evidence().to_json()}
        return result
    result["verdict"] = _whole_file(result, main, a, db, n_family)
    if match.floor_file_verdict(result, fp):    # it rests on too little of the file: unknown
        v = result["verdict"]
        v["summary"] = _summary("unknown", None, [], result, a, n_family, v["reason"], v["code"])
    return result


#: how strongly a relation ties a component to its reference; the whole file is as weak as
#: the weakest of its denoiser and text encoders (a merge of the denoiser ranks as a derivative)
RELATION_RANK = {"identical": 4, "same_weights": 3, "merge": 2, "derivative": 2, "unknown": 0}
SAME = ("identical", "same_weights")


def _comparable(v) -> bool:
    """Whether a component verdict rests on a comparison (some reference shares finite weights)."""
    return any(math.isfinite(c.distance) for c in v.candidates)


def _name_oldest_carrier(entry: dict, v, db, match) -> None:
    """A component several references carry unchanged (SDXL's VAE in Pony and Illustrious) is
    named after the oldest registered ancestor carrying it, the others listed in ``also_in``."""
    same = [c for c in v.candidates if c.related and c.mismatch is not None
            and c.mismatch <= match.SAME_MAX_MISMATCH and c.coverage >= match.SAME_MIN_COVERAGE]
    if len(same) < 2:
        return
    same.sort(key=lambda c: (len(db.lineage(c.ref)), c.mismatch, c.ref))
    entry["ref"] = same[0].ref
    entry["also_in"] = sorted(c.ref for c in same[1:])


def _common_lineage(chains: list[list[str]]) -> list[str]:
    out = []
    for names in zip(*chains):
        if len(set(names)) != 1:
            break
        out.append(names[0])
    return out


def _whole_file(result: dict, main: str, a, db, n_family: int) -> dict:
    """The verdict of the file: the weakest of its denoiser and text encoders; what is not the
    same weights (VAE included) named in ``differs`` and in the summary."""
    comps = result["components"]
    main_v = comps[main]
    rel, base, conf, reason = main_v["relation"], main_v["ref"], main_v["confidence"], main_v["reason"]
    weaker = [c for c in comps if layout.is_text_encoder(c) and c != main and comps[c]["confidence"] is not None
              and RELATION_RANK.get(comps[c]["relation"], 0) < RELATION_RANK.get(rel, 0)]
    if weaker and rel in SAME:
        # the denoiser is the reference's, a text encoder is not: the file is built on it, not a copy
        rel = "derivative"
        confs = [comps[c]["confidence"] for c in weaker if comps[c]["confidence"] is not None]
        conf = min([main_v["confidence"], *confs])
        reason = "; ".join(f"{component_name(c)}: {comps[c]['reason']}" for c in [main, *weaker])
    differs = [c for c in comps if c not in layout.IGNORED and comps[c]["relation"] not in SAME
               and comps[c]["confidence"] is not None]
    if rel == "merge":
        lineage = _common_lineage([m["lineage"] for m in result["merge"]])
        base = lineage[-1] if lineage else None
    else:
        lineage = db.lineage(base) if base else []
    verdict = {"relation": rel, "base": base, "lineage": lineage, "confidence": conf, "reason": reason,
               "differs": differs}
    summary = _summary(rel, base, lineage, result, a, n_family, reason, main_v.get("code"))
    if weaker and main_v["relation"] in SAME:
        summary = _te_sentence(main, main_v, weaker, comps)
    verdict["summary"] = summary + _vae_sentence(comps, differs, base)
    return verdict


def _te_sentence(main: str, main_v: dict, weaker: list[str], comps: dict) -> str:
    ref = main_v["ref"]
    what = "the same weights as" if main_v["relation"] == "same_weights" else "identical to"
    tes = components_phrase(weaker)
    rels = {(comps[c]["relation"], comps[c]["ref"]) for c in weaker}
    if rels == {("derivative", ref)}:
        how = "fine-tuned from it"
    elif all(r == "derivative" for r, _ in rels):
        how = "fine-tuned from " + " and ".join(sorted({n for _, n in rels if n}))
    else:
        how = "not related to any registered reference's" if all(r == "unknown" for r, _ in rels) else "different"
    return f"{component_name(main)} {what} {ref}; {tes} {how}."


def _vae_sentence(comps: dict, differs: list[str], base: str | None) -> str:
    if "vae" not in differs or not base:
        return ""
    v = comps["vae"]
    if v["relation"] == "derivative" and v["ref"]:
        what = f"a fine-tune of {v['ref']}'s"
    elif v["relation"] == "unknown":
        what = "not one a registered reference carries"
    else:
        what = v["relation"]
    return f" Its baked-in VAE differs from {base + chr(39) + 's' if base else 'the reference'} ({what})."


def _summary(rel, base, lineage, result, a, n_family, reason, code=None) -> str:
    from ..match.decisions import Code
    fam = family_name(a.family)
    this, weights, refs = f"this {fam} model", f"this {fam} model's weights", f"{fam} reference"
    lay = getattr(a, "layout", None)
    if a.family == "unknown" and lay:      # what is known of it, never a guessed family
        this = f"this model ({lay['name']})"
        weights, refs = f"the weights of {this}", "reference of this layout"
    This = "T" + this[1:]
    if rel == "identical":
        return f"Identical to {base} (same SHA-256)."
    if rel == "same_weights":
        if a.dtype and a.dtype.lstrip("I")[:1] == "Q" and a.dtype.lstrip("I")[1:2].isdigit():   # GGML: Q8_0, IQ4_XS
            return f"Same weights as {base}, quantised {a.dtype}."
        return f"Same weights as {base}, stored as {a.dtype or 'another format'}."
    if rel == "derivative":
        chain = " → ".join(lineage)
        tail = f" (lineage: {chain})" if len(lineage) > 1 else ""
        return f"A fine-tune or other derivative of {base}{tail}."
    if rel == "merge":
        block = " with different weights per UNet block" if result.get("merge_blocks") else ""
        common = f" (common ancestry: {' → '.join(lineage)})" if lineage else ""
        return f"A merge: {merge_recipe(result['merge'])}{block}{common}."
    if n_family == 0:
        return f"{This}: no {refs} is registered to compare it with (add one with `fpcore refs add`)."
    if code == Code.TOO_LITTLE_COMPARABLE:
        return f"Too little of {this} can be compared with a registered reference to tell ({reason})."
    if code == Code.PARENT_NOT_REGISTERED:
        return f"{This} is related to a registered reference but not placeable: {reason}."
    if code in (Code.NOTHING_COMPARABLE, Code.NO_REFERENCE):
        return f"None of {weights} can be compared with a registered reference ({reason})."
    return f"{This} is not related to any registered {refs} (unknown base)."


def file_report(path: str, sha: str | None, autov3: str | None, origin: str, fp, a, meta: dict, stats: dict,
                db, t0: float) -> tuple[dict, bool]:
    """The report of one file (local or at a URL) from its fingerprint: known release (by hash),
    verdicts, metadata, stats. Returns (report, whether a known release was registered just now,
    which changes the references' token)."""
    import time

    from ..refs import known
    from . import provenance
    entry = known.lookup(sha)
    if entry is not None:
        known.register(db, entry, fp, a.family, sha)
    rep = {"path": path, "sha256": sha, "autov2": sha[:10] if sha else None, "autov3": autov3,
           "hash": origin if sha else "not computed", "format": stats["format"], "architecture": a.to_json()}
    rep.update(identify_fingerprint(fp, a, db, sha))
    if entry is not None:
        rep["known_release"] = {k: entry.get(k) for k in ("family", "variant", "filename", "hf", "confidence")}
        rep["verdict"]["summary"] = f"Identical to {known.describe(entry)} (published SHA-256)."
        rep["verdict"].update(relation="identical", confidence=1.0)
        rep["delta"] = None
    rep["metadata"] = provenance.extract(meta)
    rep["stats"] = {**stats, "seconds": round(time.perf_counter() - t0, 4), "fingerprint_bytes": len(fp.raw)}
    rep["error"] = None
    return rep, entry is not None

"""From a path to a report: inspect (header only), fingerprint, identify."""
from __future__ import annotations

import logging
import math
import os
import time

import numpy as np

from . import arch, known, layout, provenance
from .facts import FAMILIES, KIND_NAMES, family_name  # noqa: F401
from .errors import FpError
from .fingerprint import Fingerprint, canonical_tensors, fingerprint_source
from .hashing import hash_file
from .errors import BadFileError
from .sources import FileIdentity, check_regular_file, is_url, open_source

log = logging.getLogger(__name__)

# display names, kind names: one table in fpcore.facts (kept importable from here)
FAMILY_NAMES = {f.id: f.name for f in FAMILIES.values()}


def _header_facts(src, ct: dict | None = None) -> tuple[dict, dict, arch.ArchResult]:
    ct = ct if ct is not None else canonical_tensors(src.tensors, src.path)
    shapes = {k: tuple(t.shape) for k, t in ct.items()}
    quant = getattr(src, "quant", None) or {}     # GGUF block types: precision by the stored bytes
    dts = {k: quant.get(t.key, t.dtype) for k, t in ct.items()}
    return shapes, dts, arch.detect(shapes, dts, src.metadata)


def inspect(path: str | os.PathLike, why: bool = False, remote=None) -> dict:
    """Header-only report: architecture, components, dtypes, metadata. ``remote``: options for a
    URL (``sources.remote.RemoteOptions``)."""
    p = os.fspath(path)
    with open_source(p, remote) as src:
        shapes, dts, a = _header_facts(src)
        comps: dict[str, dict] = {}
        for k, d in dts.items():
            c = layout.split(k)[0]
            e = comps.setdefault(c, {"tensors": 0, "dtypes": {}})
            e["tensors"] += 1
            e["dtypes"][d] = e["dtypes"].get(d, 0) + 1
        rep = {"path": p, "format": src.format, "size": src.size, "architecture": a.to_json(),
               "tensors": len(src.tensors), "components_detail": comps,
               "metadata": provenance.extract(src.metadata), "error": None}
        if why:
            rep["rules"] = {"matched": a.rule, "rejected": [{"rule": r, "why": w} for r, w in a.rejected]}
        rid, rsrc = remote_identity(src)
        if rid is not None:
            rep.update(path=src.path, sha256=rid.sha256, hash="published" if rid.sha256 else "not computed",
                       remote=_remote_json(rid, rsrc))
        return rep


def fingerprint_open(src) -> tuple[Fingerprint, arch.ArchResult, dict, dict]:
    """(fingerprint, architecture, raw metadata, read stats) of an open source (file, folder, memory)."""
    ct = canonical_tensors(src.tensors, src.path)
    _, _, a = _header_facts(src, ct)
    t0 = time.perf_counter()
    fp = fingerprint_source(src, ct)
    stats = {"fingerprint_seconds": round(time.perf_counter() - t0, 4),
             "bytes_read": getattr(src, "bytes_read", None), "file_size": src.size, "format": src.format}
    fp.info["family"] = a.family
    return fp, a, dict(src.metadata), stats


def fingerprint_path(path: str | os.PathLike, remote=None) -> tuple[Fingerprint, arch.ArchResult, dict, dict]:
    """(fingerprint, architecture, raw metadata, read stats) of a model file, folder or URL."""
    with open_source(os.fspath(path), remote) as src:
        return fingerprint_open(src)


def identify_source(src, db) -> dict:
    """Report for a source with no file hash (a diffusers folder, weights in memory):
    everything but ``identical``, which needs the bytes of one file."""
    t0 = time.perf_counter()
    fp, a, meta, stats = fingerprint_open(src)
    rep = {"path": src.path, "sha256": None, "autov2": None, "autov3": None, "hash": "not computed",
           "format": stats["format"], "architecture": a.to_json()}
    rep.update(identify_fingerprint(fp, a, db, None))
    rep["metadata"] = provenance.extract(meta)
    rep["stats"] = {**stats, "seconds": round(time.perf_counter() - t0, 4), "fingerprint_bytes": len(fp.raw)}
    rep["error"] = None
    return rep


def _denoiser(components: list[str]) -> str | None:
    for c in components:
        if c in layout.DENOISERS:
            return c
    return components[0] if components else None


def _same_layout(fp: Fingerprint, ref: Fingerprint, comp: str) -> bool:
    from .match.decisions import SAME_LAYOUT_MIN_KEYS
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


def identify_fingerprint(fp: Fingerprint, a: arch.ArchResult, db, sha256: str | None = None) -> dict:
    """Verdict, components and candidates for a fingerprint against ``db`` (a RefDB)."""
    return _json_safe(_identify_fingerprint(fp, a, db, sha256))


def _identify_fingerprint(fp: Fingerprint, a: arch.ArchResult, db, sha256: str | None = None) -> dict:
    from . import match  # numerical part, loaded only when there is something to match

    comps = arch.components_for(a.rule, fp.keys)   # what the matched rule declares (cached results too)
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
        # a library of thousands: the index's few candidates and their ancestors (fpcore.refindex)
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
    from .match.decisions import Confidence
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


#: how strongly a relation ties a component to its reference; the whole file is as weak as
#: the weakest of its denoiser and text encoders (a merge of the denoiser ranks as a derivative)
RELATION_RANK = {"identical": 4, "same_weights": 3, "merge": 2, "derivative": 2, "unknown": 0}
#: components that make the model (the denoiser and what conditions it); a baked-in VAE
#: decodes the result but a swapped one does not make a new model: it is only reported
TEXT_ENCODERS = ("clip_l", "clip_g", "clip_h", "t5")
COMPONENT_NAMES = {"unet": "UNet", "dit": "DiT", "clip_l": "CLIP-L", "clip_g": "CLIP-G", "clip_h": "CLIP-H",
                   "t5": "T5", "vae": "VAE"}
SAME = ("identical", "same_weights")


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


def merge_recipe(merge: list[dict]) -> str:
    """'Pony Diffusion V6 XL 50% + Illustrious XL v0.1 50%'."""
    return " + ".join(f"{m['ref']} {float(m['weight']) * 100:.0f}%" for m in merge)


def base_label(report: dict) -> str:
    """What a user is shown as the model's base: the recipe of a merge, else the base (or 'unknown')."""
    v = (report or {}).get("verdict") or {}
    if v.get("relation") == "merge" and report.get("merge"):
        return "merge: " + merge_recipe(report["merge"])
    return v.get("base") or "unknown"


def _whole_file(result: dict, main: str, a, db, n_family: int) -> dict:
    """The verdict of the file: the weakest of its denoiser and text encoders; what is not the
    same weights (VAE included) named in ``differs`` and in the summary."""
    comps = result["components"]
    main_v = comps[main]
    rel, base, conf, reason = main_v["relation"], main_v["ref"], main_v["confidence"], main_v["reason"]
    weaker = [c for c in comps if c in TEXT_ENCODERS and c != main and comps[c]["confidence"] is not None
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
    from .match.decisions import Code
    fam = family_name(a.family)
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
        return (f"A {fam} model; no {fam} reference is registered to compare it with "
                f"(add one with `fpcore refs add`).")
    if code == Code.TOO_LITTLE_COMPARABLE:
        return f"A {fam} model; too little of it can be compared with a registered reference to tell ({reason})."
    if code == Code.PARENT_NOT_REGISTERED:
        return f"A {fam} model related to a registered reference but not placeable: {reason}."
    if code in (Code.NOTHING_COMPARABLE, Code.NO_REFERENCE):
        return f"A {fam} model; none of its weights can be compared with a registered reference ({reason})."
    return f"A {fam} model not related to any registered {fam} reference (unknown base)."


#: when identify/scan compute a whole-file SHA-256 (docs/json-format.md): "auto" only where it
#: decides something (a size a known release has, a copy of a reference to confirm) or the host
#: already knows it; "always" (``--hash``); "never" (``--no-hash``)
HASH_AUTO, HASH_ALWAYS, HASH_NEVER = "auto", "always", "never"
HASH_POLICIES = (HASH_AUTO, HASH_ALWAYS, HASH_NEVER)
#: the report's ``hash`` field -> the store's record of where a hash came from
_SOURCE_OF = {"computed": "hash", "host": "host", "published": "published"}


def file_identity(path: str) -> FileIdentity:
    """Identity of a regular file (resolved path, size, mtime, inode, change time, device)."""
    from .store import stat_identity
    return stat_identity(path, check_regular_file(path))


def _same_identity(a: FileIdentity, h) -> bool:
    from .store import same_file
    return same_file(a, h)


def _hash_unchanged(p: str, ident, progress=None):
    """hash_file, refusing a file that is no longer the one ``ident`` describes."""
    h = hash_file(p, progress=progress)
    if not _same_identity(ident, h):
        raise BadFileError("file changed since it was first read; try again when it is complete", p)
    return h


def hashes_for(path: str | os.PathLike, store=None, progress=None) -> dict:
    """SHA-256 / AutoV2 / AutoV3 of a file, from the store when the file is unchanged."""
    p = os.fspath(path)
    ident = file_identity(p)
    rec = store.file_record(ident) if store is not None else None
    if rec and rec.sha256 and (rec.autov3 or not p.lower().endswith((".safetensors", ".sft"))):
        return {"sha256": rec.sha256, "autov2": rec.sha256[:10], "autov3": rec.autov3, "size": ident.size,
                "cached": True, "hash": rec.hash_origin}
    h = _hash_unchanged(p, ident, progress)
    if store is not None:
        store.put_file(ident, h.sha256, h.autov3, "hash")
    return {**h.to_json(), "cached": False, "hash": "computed"}


def _may_be_copy_of_reference(fp: Fingerprint, db) -> bool:
    """Whether a reference with a known SHA-256 stores exactly the sampled bytes and tensor sizes
    of ``fp``: only a whole-file hash can then tell whether the files are identical."""
    n = fp.info.get("tensor_bytes")
    for r in db.refs.values():
        rf = getattr(r, "fp", None)
        if (r.sha256 and rf is not None and rf.info.get("tensor_bytes") == n and rf.keys == fp.keys
                and rf.dtypes == fp.dtypes and np.array_equal(rf.h_raw, fp.h_raw)):
            return True
    return False


def identify(path: str | os.PathLike, db, hashes: bool = True, progress=None, sha256: str | None = None,
             store=None, hash_policy: str = HASH_AUTO, sha256_origin: str = "host", remote=None,
             fingerprints: dict | None = None) -> dict:
    """Full report for one file (`identify --json`, docs/json-format.md). Raises FpError on bad input.

    Answers from the fingerprint. The whole file is hashed (``hash_policy="auto"``) only when
    its size is a known release's size, or when its fingerprint holds exactly the sampled bytes
    of a reference whose hash is known; ``"always"`` hashes it, ``"never"`` (or ``hashes=False``)
    does not. The report's ``hash`` says where ``sha256`` came from, or ``"not computed"``.
    ``sha256``: a hash the caller already knows (``sha256_origin``: "host" or "published").
    ``store``: a fpcore.store.Store; a file seen before (same path, size, mtime, inode, change
    time) is answered from it without hashing or reading weights. ``progress(done, total)``:
    bytes, called when reading starts and as a hash proceeds. ``fingerprints``: a dict that
    receives path -> Fingerprint when the fingerprint was read or loaded (a folder scan compares
    the files with it without loading them again)."""
    from . import hostcache
    p = os.fspath(path)
    if is_url(p):   # read by range requests; the hash only where the hub publishes it
        return identify_url(p, db, store=store, remote=remote)
    t0 = time.perf_counter()
    if hash_policy not in HASH_POLICIES:
        raise ValueError(f"hash_policy must be one of {HASH_POLICIES}, not {hash_policy!r}")
    policy = hash_policy if hashes else HASH_NEVER
    if os.path.isdir(p):  # a diffusers folder: several files, no single hash to key a cache by
        with open_source(p) as src:
            return identify_source(src, db)
    ident = file_identity(p)
    rec = store.file_record(ident) if store is not None else None
    sha, autov3, origin = None, None, "not computed"
    if sha256:
        sha, origin = sha256.lower(), sha256_origin if sha256_origin in _SOURCE_OF else "host"
    elif rec is not None and rec.sha256:
        sha, autov3, origin = rec.sha256, rec.autov3, rec.hash_origin
    elif policy != HASH_NEVER:
        sha = hostcache.sha256_for(p)
        origin = "host" if sha else origin
    if not sha and (policy == HASH_ALWAYS or (policy == HASH_AUTO and known.size_matches(ident.size))):
        h = _hash_unchanged(p, ident, progress)
        sha, autov3, origin = h.sha256, h.autov3, "computed"
    if store is not None and (rec is None or (sha and rec.sha256 != sha)):
        rec = store.put_file(ident, sha, autov3, _SOURCE_OF.get(origin, "hash"))
    key = rec.key if rec is not None else None
    token = db.token() if store is not None else None
    if store is not None and key:
        rep = store.get_report(key, token)
        if rep is not None and (sha or policy != HASH_ALWAYS):
            rep.update(path=p, hash=origin if sha else "not computed")
            rep.setdefault("stats", {})["cached"] = "report"
            rep["stats"]["seconds"] = round(time.perf_counter() - t0, 4)
            return rep
    cached = store.get_fingerprint(key) if store is not None and key else None
    if cached:
        fp, arch_json, meta, stats = cached
        a = arch.ArchResult(**{k: arch_json.get(k) for k in ("family", "variant", "rule", "components", "dtype",
                                                             "prediction", "kind")}, notes=arch_json.get("notes") or [])
        stats = dict(stats, cached="fingerprint")
    else:
        if progress:
            progress(0, ident.size)
        fp, a, meta, stats = fingerprint_path(p)
        if not _same_identity(ident, file_identity(p)):
            if store is not None:
                store.forget_file(ident)
            raise BadFileError("file changed while it was being fingerprinted; try again when it is complete", p)
        if store is not None and key:
            store.put_fingerprint(key, fp, a.to_json(), meta, stats)
    if fingerprints is not None:
        fingerprints[p] = fp
    if not sha and policy == HASH_AUTO and _may_be_copy_of_reference(fp, db):
        h = _hash_unchanged(p, ident, progress)   # a copy of a reference? only the bytes can say
        sha, autov3, origin = h.sha256, h.autov3, "computed"
        if store is not None:
            rec = store.put_file(ident, sha, autov3, "hash")
            key = rec.key
    entry = known.lookup(sha)
    if entry is not None:
        known.register(db, entry, fp, a.family, sha)
        token = db.token() if store is not None else None
    rep = {"path": p, "sha256": sha, "autov2": sha[:10] if sha else None, "autov3": autov3,
           "hash": origin if sha else "not computed", "format": stats["format"], "architecture": a.to_json()}
    rep.update(identify_fingerprint(fp, a, db, sha))
    if entry is not None:
        rep["known_release"] = {k: entry.get(k) for k in ("family", "variant", "filename", "hf", "confidence")}
        rep["verdict"]["summary"] = f"Identical to {known.describe(entry)} (published SHA-256)."
        rep["verdict"].update(relation="identical", confidence=1.0)
    rep["metadata"] = provenance.extract(meta)
    rep["stats"] = {**stats, "seconds": round(time.perf_counter() - t0, 4), "fingerprint_bytes": len(fp.raw)}
    rep["error"] = None
    if store is not None and key:
        store.put_report(key, token, rep)
    return rep


def remote_identity(src):
    """(RemoteIdentity, the remote source) of a source opened from a URL (a view's too), else (None, None)."""
    for s in (src, *(getattr(src, "_files", None) or [])):
        if getattr(s, "remote", None) is not None:
            return s.remote, s
    return None, None


def _remote_json(rid, rsrc) -> dict:
    return {"url": rid.url, "etag": rid.etag, "size": rid.size, "sha256_from": rid.sha256_source,
            **(rsrc.stats if rsrc is not None else {})}


def identify_url(url: str, db, store=None, remote=None) -> dict:
    """Report for a model at a URL, read by range requests: the header and the sampled ranges.

    ``sha256`` (``hash: "published"``) only where the hub publishes it (Hugging Face's LFS hash,
    Civitai's model-version API); the whole file is never downloaded here. The fingerprint is
    cached by URL + ETag + size (and by the published SHA-256): a changed file is read again."""
    t0 = time.perf_counter()
    with open_source(url, remote) as src:
        rid, rsrc = remote_identity(src)
        shown, sha = src.path, rid.sha256
        token = db.token() if store is not None else None
        if store is not None and sha:
            rep = store.get_report(sha, token)
            if rep is not None:
                rep.update(path=shown, hash="published", remote=_remote_json(rid, rsrc))
                rep.setdefault("stats", {}).update(cached="report", seconds=round(time.perf_counter() - t0, 4))
                return rep
        cached = store.get_remote(rid.url, rid.etag, rid.size) if store is not None else None
        if cached is None and store is not None and sha:
            hit = store.get_fingerprint(sha)
            cached = (*hit, sha) if hit else None
        if cached:
            fp, arch_json, meta, stats, _ = cached
            a = arch.ArchResult(**{k: arch_json.get(k) for k in ("family", "variant", "rule", "components", "dtype",
                                                                 "prediction", "kind")},
                                notes=arch_json.get("notes") or [])
            stats = dict(stats, cached="fingerprint")
        else:
            fp, a, meta, stats = fingerprint_open(src)   # raises (nothing cached) if the file changes
            stats.update(rsrc.stats)
            if store is not None:
                store.put_remote(rid.url, rid.etag, rid.size, sha, fp, a.to_json(), meta, stats)
                if sha:
                    store.put_fingerprint(sha, fp, a.to_json(), meta, stats)
        remote_info = _remote_json(rid, rsrc)
    entry = known.lookup(sha)
    if entry is not None:
        known.register(db, entry, fp, a.family, sha)
        token = db.token() if store is not None else None
    rep = {"path": shown, "sha256": sha, "autov2": sha[:10] if sha else None, "autov3": None,
           "hash": "published" if sha else "not computed", "format": stats["format"], "architecture": a.to_json()}
    rep.update(identify_fingerprint(fp, a, db, sha))
    if entry is not None:
        rep["known_release"] = {k: entry.get(k) for k in ("family", "variant", "filename", "hf", "confidence")}
        rep["verdict"]["summary"] = f"Identical to {known.describe(entry)} (published SHA-256)."
        rep["verdict"].update(relation="identical", confidence=1.0)
    rep["metadata"] = provenance.extract(meta)
    rep["remote"] = remote_info
    rep["stats"] = {**stats, "seconds": round(time.perf_counter() - t0, 4), "fingerprint_bytes": len(fp.raw)}
    rep["error"] = None
    if store is not None and sha:
        store.put_report(sha, token, rep)
    return rep


def error_report(path: str, err: FpError | Exception) -> dict:
    return {"path": path, "sha256": None, "autov2": None, "hash": "not computed", "format": None,
            "architecture": None,
            "verdict": None, "merge": [], "components": {}, "candidates": [], "metadata": {},
            "error": str(err)}


def add_reference(db, path: str | os.PathLike, name: str, parent: str | None = None, note: str | None = None,
                  hashes: bool = True, progress=None, origin: str = "user", remote=None):
    """Fingerprint (and hash) ``path`` and register it in ``db`` as ``name``. A URL is read by
    range requests; its SHA-256 is the published one, if any (never downloaded)."""
    if is_url(os.fspath(path)):
        with open_source(os.fspath(path), remote) as src:
            fp, a, _, _ = fingerprint_open(src)
            rid, _ = remote_identity(src)
            shown = src.path
        return db.add(fp, name, parent=parent, note=note, family=a.family, sha256=rid.sha256, source=shown,
                      origin=origin)
    fp, a, _, _ = fingerprint_path(path)
    sha = hash_file(path, progress=progress).sha256 if hashes else None
    return db.add(fp, name, parent=parent, note=note, family=a.family, sha256=sha, source=os.fspath(path),
                  origin=origin)


def identify_tensors(tensors, db, name: str = "<memory>", metadata=None) -> dict:
    """Report for tensors already in memory (a host's loaded model, keys in the checkpoint
    layout: see ``keymaps.remap``), against ``db`` (a RefDB). No SHA-256 exists for weights in
    memory, so ``identical`` is never claimed."""
    from .sources.memory import MemorySource

    with MemorySource(tensors, name, metadata) as src:
        rep = identify_source(src, db)
        rep["stats"].update(tensors=len(src.tensors), skipped_tensors=len(src.skipped), tensor_bytes=src.size)
    return rep

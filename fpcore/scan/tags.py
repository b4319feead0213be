"""The tag sidecar ``<model>.json`` that A1111 and Forge read for extra networks.

The only file fpcore ever writes next to a user's models. The write merges into the
existing JSON (other keys, such as the user's notes, are kept), is atomic (temp file in
the same directory, then os.replace), and keeps a one-time backup of the original as
``<model>.json.bak``. A sidecar that is not valid JSON is never overwritten.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..errors import BadFileError
from ..facts import A1111_UNKNOWN, FORGE_UNKNOWN, LORA_KINDS, a1111_sd_version, forge_sd_version
from ..fingerprint import ALGO_VERSION
from ..paths import atomic_write

log = logging.getLogger(__name__)

# the A1111 / Forge values per family are in fpcore.facts (one table for every module)


def sidecar_path(model_path: str | os.PathLike) -> Path:
    p = Path(model_path)
    return p.with_suffix(".json")


#: sd-version values that say nothing: never written over a value the user (or a surer run) set
UNKNOWN_SD_VERSIONS = (A1111_UNKNOWN, FORGE_UNKNOWN)
SD_VERSION_KEYS = ("sd version", "sd_version_str")
#: keys describing the verdict: an unknown result never replaces a known one
VERDICT_KEYS = ("base_model", "relation", "lineage", "merge")


def tags_for(report: dict) -> dict:
    """The keys fpcore sets in a model's sidecar, from its identify report. A merge is named
    by its recipe ("merge: A 50% + B 50%") and ``merge`` lists its members with their lineage."""
    from ..identify import base_label
    a = report.get("architecture") or {}
    v = report.get("verdict") or {}
    fam = a.get("family") or "unknown"
    is_merge = v.get("relation") == "merge" and report.get("merge")
    out = {"base_model": base_label(report) if is_merge else v.get("base"), "relation": v.get("relation"),
           "lineage": v.get("lineage") or [], "fingerprint_version": ALGO_VERSION}
    if a.get("kind") in LORA_KINDS:
        out["sd version"] = a1111_sd_version(fam)
    else:
        out["sd_version_str"] = forge_sd_version(fam)
    if report.get("merge"):
        out["merge"] = report["merge"]
    t = report.get("trained_on")
    if a.get("kind") in LORA_KINDS and t:   # the checkpoint a LoRA was trained on (fpcore.claims); an
        # unknown one is left out, so a name an earlier run found is kept
        out["trained_on"] = {k: t.get(k) for k in ("name", "sha256", "lineage", "how")}
    return out


def _said(value) -> bool:
    return value not in (None, "", [], {}, "unknown", *UNKNOWN_SD_VERSIONS)


def _apply(old: dict, new: dict) -> tuple[dict, dict]:
    """(sidecar after writing ``new`` over ``old``, {key: [old, new]} changed).

    An Unknown sd version never replaces one that is set, and an unknown verdict never replaces
    the verdict keys of an earlier run that knew (or values the user set); a result that is not a
    merge removes a stale ``merge`` list."""
    merged, changes = dict(old), {}
    unknown = not _said(new.get("relation"))
    for k, v in new.items():
        if _said(old.get(k)) and (k in SD_VERSION_KEYS and not _said(v) or unknown and k in VERDICT_KEYS):
            continue
        if old.get(k) != v:
            changes[k] = [old.get(k), v]
        merged[k] = v
    if "merge" in old and "merge" not in new and not unknown:
        changes["merge"] = [old["merge"], None]
        del merged["merge"]
    return merged, changes


def plan(model_path: str | os.PathLike, new: dict) -> dict:
    """What writing ``new`` into the sidecar would change: {"path", "changes": {key: [old, new]}}."""
    sc = sidecar_path(model_path)
    _, changes = _apply(_read(sc), new)
    return {"path": str(sc), "exists": sc.exists(), "changes": changes}


def _read(sc: Path) -> dict:
    if not sc.exists():
        return {}
    try:
        data = json.loads(sc.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadFileError(f"existing sidecar is not valid JSON ({type(e).__name__}); left untouched", sc) from None
    if not isinstance(data, dict):
        raise BadFileError("existing sidecar is not a JSON object; left untouched", sc)
    return data


def write(model_path: str | os.PathLike, new: dict) -> dict:
    """Merge ``new`` into the sidecar atomically; back up the original once."""
    sc = sidecar_path(model_path)
    merged, changes = _apply(_read(sc), new)
    result = {"path": str(sc), "changes": changes}
    if not result["changes"]:
        return result
    try:
        if sc.exists():
            bak = sc.with_name(sc.name + ".bak")
            if not bak.exists():   # atomic too: a kill mid-copy must not leave a short backup behind
                atomic_write(bak, sc.read_bytes())
        atomic_write(sc, (json.dumps(merged, indent=4, ensure_ascii=False) + "\n").encode("utf-8"))
    except OSError as e:
        raise BadFileError(f"cannot write sidecar: {e.strerror or e}", sc) from None
    return result

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

from .errors import BadFileError
from .facts import LORA_KINDS, a1111_sd_version, forge_sd_version
from .fingerprint import ALGO_VERSION
from .paths import atomic_write

log = logging.getLogger(__name__)

# the A1111 / Forge values per family are in fpcore.facts (one table for every module)


def sidecar_path(model_path: str | os.PathLike) -> Path:
    p = Path(model_path)
    return p.with_suffix(".json")


def tags_for(report: dict) -> dict:
    """The keys fpcore sets in a model's sidecar, from its identify report."""
    a = report.get("architecture") or {}
    v = report.get("verdict") or {}
    fam = a.get("family") or "unknown"
    out = {"base_model": v.get("base"), "relation": v.get("relation"), "lineage": v.get("lineage") or [],
           "fingerprint_version": ALGO_VERSION}
    if a.get("kind") in LORA_KINDS:
        out["sd version"] = a1111_sd_version(fam)
    else:
        out["sd_version_str"] = forge_sd_version(fam)
    if report.get("merge"):
        out["merge"] = report["merge"]
    return out


def plan(model_path: str | os.PathLike, new: dict) -> dict:
    """What writing ``new`` into the sidecar would change: {"path", "changes": {key: [old, new]}}."""
    sc = sidecar_path(model_path)
    old = _read(sc)
    changes = {k: [old.get(k), v] for k, v in new.items() if old.get(k) != v}
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
    old = _read(sc)
    merged = dict(old)
    merged.update(new)
    result = {"path": str(sc), "changes": {k: [old.get(k), v] for k, v in new.items() if old.get(k) != v}}
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

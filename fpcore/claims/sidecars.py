"""The sidecar files model managers keep next to a model, read for what they claim.

Each is JSON; what each one holds comes from the tools' own source:

- ``<model>.civitai.info``: Civitai Helper (A1111/Forge) saves Civitai's model-version API answer:
  ``baseModel`` ("SDXL 1.0", "Pony", "Illustrious"...), ``model.name``, ``model.type``, and
  ``files[].hashes.SHA256`` of the file it describes (``{}`` for a model Civitai does not know);
- ``<model>.cm-info.json``: Stability Matrix's ConnectedModelInfo: ``BaseModel``, ``ModelName``,
  ``VersionName``, ``ModelType``, ``Hashes.SHA256``;
- ``<model>.metadata.json``: ComfyUI LoRA Manager: ``base_model`` (its label of Civitai's
  ``baseModel``), ``model_name``, ``sha256``, ``civitai`` (the API answer);
- ``<model>.json``: A1111/Forge's user metadata: ``sd version`` ("SD1", "SD2", "SDXL"), which
  a user or an extension sets. fpcore writes its own tags there too: those are not claims.

Reading a sidecar never fails a report: an unreadable or malformed one is skipped with one
logged warning naming the file.
"""
from __future__ import annotations

import json
import logging
import os

log = logging.getLogger("fpcore.claims")

#: a sidecar larger than this is not read (Civitai answers with long descriptions are ~100 kB)
MAX_SIDECAR_BYTES = 16 << 20
#: keys fpcore writes into ``<model>.json`` (fpcore.tags): its own output, never a claim
OWN_KEYS = ("base_model", "relation", "lineage", "merge", "fingerprint_version", "sd version", "sd_version_str",
            "trained_on")


def _stem(model_path: str) -> str:
    return os.path.splitext(model_path)[0]


def _read_json(path: str):
    """The JSON object in ``path``; None when absent; raises ValueError (one line) when bad."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    if st.st_size > MAX_SIDECAR_BYTES:
        raise ValueError(f"larger than {MAX_SIDECAR_BYTES >> 20} MB")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"not valid JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _s(v) -> str | None:
    return v.strip() if isinstance(v, str) and v.strip() else None


def _sha_list(*values) -> list[str]:
    out = []
    for v in values:
        if isinstance(v, str) and len(v.strip()) == 64:
            out.append(v.strip().lower())
    return out


def _civitai(d: dict) -> dict:
    model = d.get("model") if isinstance(d.get("model"), dict) else {}
    files = [f for f in d.get("files") or [] if isinstance(f, dict)] if isinstance(d.get("files"), list) else []
    shas = _sha_list(*((f.get("hashes") or {}).get("SHA256") for f in files if isinstance(f.get("hashes"), dict)))
    return {"base": _s(d.get("baseModel")), "name": _s(model.get("name")), "version": _s(d.get("name")),
            "type": _s(model.get("type")), "sha256": shas, "base_key": "baseModel"}


def _cm_info(d: dict) -> dict:
    hashes = d.get("Hashes") if isinstance(d.get("Hashes"), dict) else {}
    return {"base": _s(d.get("BaseModel")), "name": _s(d.get("ModelName")), "version": _s(d.get("VersionName")),
            "type": _s(d.get("ModelType")), "sha256": _sha_list(hashes.get("SHA256")), "base_key": "BaseModel"}


def _lora_manager(d: dict) -> dict:
    civ = d.get("civitai") if isinstance(d.get("civitai"), dict) else {}
    base = _s(d.get("base_model"))
    if base and base.lower() == "unknown":
        base = None
    key = "base_model"
    if not base and _s(civ.get("baseModel")):
        base, key = _s(civ.get("baseModel")), "civitai.baseModel"
    return {"base": base, "name": _s(d.get("model_name")), "version": _s(civ.get("name")), "type": None,
            "sha256": _sha_list(d.get("sha256")), "base_key": key}


def _a1111(d: dict) -> dict:
    if "fingerprint_version" in d:        # fpcore wrote "sd version" here itself
        return {}
    sdv = _s(d.get("sd version"))
    if not sdv or sdv.lower() == "unknown":
        return {}
    return {"family_label": sdv, "family_key": "sd version"}


#: (file suffix after the model's stem, claims source, reader)
SIDECARS = [
    (".civitai.info", "civitai_info", _civitai),
    (".cm-info.json", "sidecar", _cm_info),
    (".metadata.json", "sidecar", _lora_manager),
    (".json", "sidecar", _a1111),
]


def read(model_path: str | os.PathLike) -> list[dict]:
    """What the sidecars next to ``model_path`` claim: one dict per sidecar found with something
    to say: ``source``, ``file`` (its name), and ``base``/``base_key``, ``name``, ``version``,
    ``type``, ``sha256`` (hashes of the file it describes), ``family_label``/``family_key``."""
    p = os.fspath(model_path)
    if not p or os.path.isdir(p) or "://" in p:
        return []
    out = []
    for suffix, source, reader in SIDECARS:
        path = _stem(p) + suffix
        try:
            data = _read_json(path)
        except ValueError as e:
            log.warning("%s: sidecar skipped: %s", path, e)
            continue
        if not data:
            continue
        try:
            said = reader(data)
        except Exception as e:   # an odd shape inside valid JSON: skipped, never a failed report
            log.warning("%s: sidecar skipped: unexpected content (%s)", path, type(e).__name__)
            continue
        if said and any(said.get(k) for k in ("base", "name", "family_label", "sha256")):
            out.append({"source": source, "file": os.path.basename(path), **said})
    return out

"""What a file and its sidecars claim, before any check: one ``Said`` per statement.

Sources, strongest first: the file's own metadata (``modelspec``, ``kohya``, ``a1111_merge``,
``comfyui``, as fpcore.provenance extracted it into the report), the sidecars next to it
(fpcore.claims.sidecars: ``civitai_info``, ``sidecar``), and its file name (``filename``, only
when it names a registered model or a model line). Kinds of statement:

- ``base``: the file is, or descends from, the model ``named``;
- ``family``: its architecture is ``family``;
- ``recipe``: a merge of ``members`` with ``weights`` (A1111's checkpoint merger), or without
  weights (a ComfyUI workflow that loaded several checkpoints);
- ``file``: the sidecar describes the file with one of the SHA-256 ``hashes``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .resolve import Named, Resolver, family_of_label


@dataclass
class Said:
    source: str                   # modelspec | kohya | a1111_merge | comfyui | civitai_info | sidecar | filename
    key: str                      # where exactly: the metadata key, or "baseModel in x.civitai.info"
    kind: str                     # base | family | recipe | file
    says: str                     # the claim in a few words
    named: Named | None = None
    family: str | None = None
    members: list[Named] = field(default_factory=list)
    weights: list[float] | None = None
    method: str | None = None     # recipe: A1111's interp_method
    hashes: list[str] = field(default_factory=list)
    by_hash: bool = False         # ``named`` was found by a hash, not a name


def _parsed(v):
    if isinstance(v, str):
        try:
            return json.loads(v)
        except (ValueError, RecursionError):
            return v
    return v


def _hash_text(h: str) -> str:
    return h[:10] + "…" if len(h) > 12 else h


def _modelspec(ms: dict, r: Resolver) -> list[Said]:
    out = []
    arch = ms.get("modelspec.architecture")
    fam = family_of_label("modelspec", arch) if arch else None
    if arch:
        out.append(Said("modelspec", "modelspec.architecture", "family", f"architecture {arch}", family=fam))
    title = ms.get("modelspec.title")
    if title:
        n = r.name(title, "modelspec.title")
        if n.ref or n.known or n.brand:
            out.append(Said("modelspec", "modelspec.title", "base", f"titled {title!r}", named=n))
    return out


def _kohya(k: dict, r: Resolver) -> list[Said]:
    out = []
    ver = k.get("ss_base_model_version")
    if ver:
        out.append(Said("kohya", "ss_base_model_version", "family", f"trained for {ver}",
                        family=family_of_label("kohya", ver)))
    name = k.get("ss_sd_model_name")
    hashes = {key: k[key].strip() for key in ("ss_new_sd_model_hash", "ss_sd_model_hash")
              if isinstance(k.get(key), str) and k[key].strip()}
    for key, h in hashes.items():        # the whole file's SHA-256 first, then A1111's legacy hash
        n = r.hash(h, key)
        what = os.path.basename(str(name)) if name else f"SHA-256 {_hash_text(h)}"
        if n is not None:
            return out + [Said("kohya", key, "base", f"trained from {what}", named=n, by_hash=True)]
    h = hashes.get("ss_new_sd_model_hash")
    if h:     # a full hash nothing knows: still a claim, by its name if it has one
        what = os.path.basename(str(name)) if name else f"SHA-256 {_hash_text(h)}"
        nn = r.name(os.path.basename(str(name)), "ss_sd_model_name") if name else Named(h)
        nn.sha256 = h.lower() if len(h) == 64 else None
        return out + [Said("kohya", "ss_new_sd_model_hash", "base", f"trained from {what}", named=nn,
                           hashes=[h.lower()])]
    if name:
        out.append(Said("kohya", "ss_sd_model_name", "base", f"trained from {os.path.basename(str(name))}",
                        named=r.name(os.path.basename(str(name)), "ss_sd_model_name")))
    return out


#: A1111's merge methods (modules/extras.py run_modelmerger) and the weights they give the models
WEIGHTED_SUM, ADD_DIFFERENCE, NO_INTERPOLATION = "Weighted sum", "Add difference", "No interpolation"


def _a1111(m: dict, r: Resolver) -> list[Said]:
    recipe = _parsed(m.get("sd_merge_recipe"))
    models = _parsed(m.get("sd_merge_models"))
    models = models if isinstance(models, dict) else {}

    def member(h) -> Named | None:
        if not isinstance(h, str) or not h:
            return None
        n = r.hash(h, "sd_merge_recipe")
        if n is not None:
            return n
        info = models.get(h) if isinstance(models.get(h), dict) else {}
        name = info.get("name")
        nn = r.name(str(name).split(" [")[0], "sd_merge_models") if name else Named(_hash_text(h))
        nn.sha256 = nn.sha256 or (h.lower() if len(h) == 64 else None)
        return nn
    if isinstance(recipe, dict) and recipe.get("primary_model_hash"):
        a, b, c = (member(recipe.get(k)) for k in ("primary_model_hash", "secondary_model_hash",
                                                   "tertiary_model_hash"))
        method = str(recipe.get("interp_method") or WEIGHTED_SUM)
        try:
            mult = float(recipe.get("multiplier"))
        except (TypeError, ValueError):
            mult = None
        if method == WEIGHTED_SUM and a is not None and b is not None and mult is not None and 0 <= mult <= 1:
            says = f"merge: {a.label or a.text} {(1 - mult) * 100:.0f}% + {b.label or b.text} {mult * 100:.0f}%"
            return [Said("a1111_merge", "sd_merge_recipe", "recipe", says, members=[a, b],
                         weights=[1 - mult, mult], method=method)]
        if a is not None:   # add difference, no interpolation: built on the primary model
            extra = f" + {mult:g} × ({b.label or b.text} − {c.label or c.text})" if (
                method == ADD_DIFFERENCE and b is not None and c is not None and mult is not None) else ""
            return [Said("a1111_merge", "sd_merge_recipe", "base", f"{method.lower()}: {a.label or a.text}{extra}",
                         named=a, method=method)]
        return []
    names = [v.get("name") for v in models.values() if isinstance(v, dict) and v.get("name")]
    members = [r.name(str(n).split(" [")[0], "sd_merge_models") for n in names]
    if members:
        return [Said("a1111_merge", "sd_merge_models", "recipe",
                     "merge of " + " + ".join(n.label or n.text for n in members), members=members)]
    return []


def _comfy(c: dict, r: Resolver) -> list[Said]:
    names = []
    for k in ("prompt", "workflow"):
        v = c.get(k)
        for n in (v.get("checkpoints") or []) if isinstance(v, dict) else []:
            if n not in names:
                names.append(n)
    members = [r.name(os.path.basename(n), "comfyui") for n in names]
    if len(members) == 1:
        return [Said("comfyui", "prompt", "base", f"saved from {os.path.basename(names[0])}", named=members[0])]
    if members:
        return [Said("comfyui", "prompt", "recipe", "made from " + " + ".join(os.path.basename(n) for n in names),
                     members=members)]
    return []


def _sidecar(sc: dict, r: Resolver) -> list[Said]:
    out = []
    where = sc["file"]
    if sc.get("sha256"):
        shown = sc.get("name") or "a model"
        out.append(Said(sc["source"], f"SHA-256 in {where}", "file", f"describes {shown}", hashes=sc["sha256"]))
    if sc.get("base"):
        n = r.name(sc["base"], f"{sc.get('base_key')} in {where}")
        fam = n.family or family_of_label("label", sc["base"])
        out.append(Said(sc["source"], f"{sc.get('base_key')} in {where}", "base", f"base model {sc['base']}",
                        named=n, family=fam))
    if sc.get("family_label"):
        out.append(Said(sc["source"], f"{sc.get('family_key')} in {where}", "family",
                        f"architecture {sc['family_label']}", family=family_of_label("label", sc["family_label"])))
    return out


def gather(report: dict, path: str | None, sidecars: list[dict], r: Resolver) -> list[Said]:
    """Every statement the file's metadata, its sidecars and its name make."""
    meta = report.get("metadata") or {}
    out: list[Said] = []
    for section, fn in (("modelspec", _modelspec), ("kohya", _kohya), ("a1111_merge", _a1111), ("comfyui", _comfy)):
        if isinstance(meta.get(section), dict):
            out += fn(meta[section], r)
    for sc in sidecars:
        out += _sidecar(sc, r)
    if path and "://" not in str(path):
        base = os.path.basename(os.path.normpath(str(path)))
        n = r.name(os.path.splitext(base)[0], "file name")
        if n.ref or n.known or n.brand:
            out.append(Said("filename", "file name", "base", f"named {base!r}", named=n))
    return out

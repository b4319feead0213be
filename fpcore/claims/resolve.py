"""What a claim names: a registered reference, a known release, one of the user's scanned files,
a model line ("Pony", "Illustrious") or an architecture.

Names are matched after normalising (lower case, separators as spaces): a registered
reference's name or a known release's file name contained in the claim, then the model lines
of ``BRANDS``. Hashes (64 hex: SHA-256; 8 hex: A1111's legacy hash; 10 hex: AutoV2) are looked
up in the references, the known releases and the store's hashed files.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from ..refs import known

#: model lines people name in claims: (id, name shown, family, pattern on the normalised text,
#: root). A root line is the architecture's own base: claiming it says no more than the family
#: (every SDXL fine-tune descends from SDXL base). Specific lines first: "ponyXL" is Pony, not SDXL.
BRANDS: list[tuple[str, str, str, str, bool]] = [
    ("noobai", "NoobAI-XL", "sdxl", r"noob ?ai|\bnoob", False),
    ("pony", "Pony Diffusion", "sdxl", r"pony(?!tail)", False),
    ("illustrious", "Illustrious XL", "sdxl", r"illustrious", False),
    ("animagine", "Animagine XL", "sdxl", r"animagine", False),
    ("juggernaut", "Juggernaut XL", "sdxl", r"juggernaut", False),
    ("playground", "Playground", "sdxl", r"playground", False),
    ("sdxl", "SDXL", "sdxl", r"\bsd ?xl|stable diffusion xl|\bxl base\b", True),
    ("sd3", "SD3", "sd3", r"\bsd ?3\b|\bsd3 5\b|stable diffusion 3", True),
    ("flux2", "FLUX.2", "flux2", r"\bflux ?2\b", True),
    ("flux", "FLUX.1", "flux", r"\bflux", True),
    ("sd2", "SD2.x", "sd2", r"\bsd ?2 ?[01]?\b|\bv2 [01]\b|stable diffusion (v)?2", True),
    ("sd1", "SD1.x", "sd1", r"\bsd ?1 ?[45]\b|\bsd1[45]\b|\bv1 [45]\b|stable diffusion (v)?1", True),
]
_BRAND_RX = [(b, re.compile(rx)) for b, _n, _f, rx, _r in BRANDS]
BRAND_INFO = {b: {"name": n, "family": f, "root": r} for b, n, f, _rx, r in BRANDS}

#: known_hashes.json "family" -> architecture family id (the refiner is told by its variant)
KNOWN_FAMILIES = {"SD1.x": "sd1", "SD2.x": "sd2", "SDXL": "sdxl", "Pony": "sdxl", "Illustrious": "sdxl",
                  "NoobAI": "sdxl", "Animagine": "sdxl", "Juggernaut XL (derived fine-tune)": "sdxl",
                  "SDXL-Turbo": "sdxl", "SDXL-Lightning": "sdxl", "Playground": "sdxl", "SSD-1B": "ssd1b",
                  "Segmind-Vega": "segmind_vega", "SD-Turbo": "sd2", "SD3": "sd3", "SD3.5": "sd3", "FLUX.1": "flux",
                  "HunyuanDiT": "hunyuan_dit", "Kolors": "kolors", "PixArt-Sigma": "pixart_sigma",
                  "AuraFlow": "auraflow"}
#: a registered name or known file name shorter than this (normalised, spaces dropped) is only
#: matched whole: "v6" or "base" inside a claim names nothing
MIN_NAME = 6


#: architecture labels -> family id, per kind of label (first matching prefix / pattern wins)
FAMILY_LABELS: dict[str, list[tuple[str, str]]] = {
    # modelspec.architecture (Stability's ModelSpec; sd-scripts writes "stable-diffusion-xl-v1-base/lora")
    "modelspec": [(r"^stable-diffusion-xl-v1-refiner", "sdxl_refiner"), (r"^stable-diffusion-xl", "sdxl"),
                  (r"^stable-diffusion-v1", "sd1"), (r"^stable-diffusion-v2", "sd2"),
                  (r"^stable-diffusion-(v)?3", "sd3"), (r"^flux-1|^flux\.1", "flux"), (r"^flux-2", "flux2"),
                  (r"^stable-cascade", "stable_cascade_c"), (r"^chroma", "chroma"), (r"^lumina", "lumina2"),
                  (r"^hidream", "hidream"), (r"^qwen-image", "qwen_image"), (r"^wan", "wan"),
                  (r"^hunyuan-video", "hunyuan_video"), (r"^auraflow", "auraflow")],
    # kohya sd-scripts ss_base_model_version
    "kohya": [(r"^sdxl", "sdxl"), (r"^sd_v1", "sd1"), (r"^sd_v2", "sd2"), (r"^sd3", "sd3"),
              (r"^flux", "flux"), (r"^lumina", "lumina2"), (r"^hunyuan_video", "hunyuan_video"), (r"^wan", "wan")],
    # A1111/Forge "sd version" and Civitai baseModel labels that name no model line of BRANDS
    "label": [(r"^sd1$", "sd1"), (r"^sd2$", "sd2"), (r"^sdxl$", "sdxl"), (r"^hunyuan 1", "hunyuan_dit"),
              (r"^hunyuan video", "hunyuan_video"), (r"^kolors", "kolors"), (r"^wan video", "wan"),
              (r"^qwen", "qwen_image"), (r"^chroma", "chroma"), (r"^hidream", "hidream"), (r"^lumina", "lumina2"),
              (r"^aura ?flow", "auraflow"), (r"^pixart a", "pixart_alpha"), (r"^pixart (e|sigma)", "pixart_sigma"),
              (r"^stable cascade", "stable_cascade_c"), (r"^svd", "svd"), (r"^ltxv", "ltxv"), (r"^mochi", "mochi"),
              (r"^cosmos", "cosmos"), (r"^ssd 1b", "ssd1b")],
}


def family_of_label(kind: str, text) -> str | None:
    """The family an architecture label names (``kind``: modelspec, kohya or label)."""
    t = str(text or "").strip().lower() if kind != "label" else norm(text)
    for rx, fam in FAMILY_LABELS.get(kind, []):
        if re.search(rx, t):
            return fam
    return None


def norm(text) -> str:
    """Lower case, separators (``_ - . / :`` and runs of spaces) as one space."""
    return re.sub(r"[\s_\-./:\\()\[\],]+", " ", str(text or "").lower()).strip()


def _compact(text) -> str:
    return norm(text).replace(" ", "")


def brand_of(text) -> str | None:
    """The model line a text names (BRANDS, specific lines first), or None."""
    t = norm(text)
    for b, rx in _BRAND_RX:
        if rx.search(t):
            return b
    return None


def family_group(family: str | None) -> str | None:
    """SD1 inpainting and pix2pix are SD1 for what a claim says; SDXL inpainting is SDXL."""
    if not family:
        return None
    for suffix in ("_inpaint", "_pix2pix", "_depth", "_unclip"):
        if family.endswith(suffix):
            return family[:-len(suffix)]
    return family


def same_family(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and family_group(a) == family_group(b)


@dataclass
class Named:
    """What a claim names. ``ref``: a registered reference; ``known``: a known release's variant;
    ``file``: a scanned file (path); ``lineage``: registered ancestry from the root (the named
    model last, when it is registered); ``brand``: a model line of BRANDS."""
    text: str
    ref: str | None = None
    known: str | None = None
    file: str | None = None
    sha256: str | None = None
    family: str | None = None
    brand: str | None = None
    lineage: list[str] = field(default_factory=list)
    how: str = ""

    @property
    def label(self) -> str | None:
        """The name shown in ``refers_to``."""
        if self.ref:
            return self.ref
        if self.known:
            return self.known
        if self.file:
            import os
            return os.path.basename(self.file)
        return BRAND_INFO[self.brand]["name"] if self.brand else None

    @property
    def anchor(self) -> str | None:
        """The registered model the claim ties a file to: the deepest of its lineage."""
        return self.lineage[-1] if self.lineage else None


def _known_family(entry: dict) -> str | None:
    if "refiner" in (entry.get("variant") or "").lower():
        return "sdxl_refiner"
    return KNOWN_FAMILIES.get(entry.get("family"))


def known_lineage(entry: dict) -> list[str]:
    """A known release's ancestry (known_lineage.json parents, by variant), from the root."""
    by_variant = {e.get("variant"): e for e in known.table().values()}
    chain, cur, seen = [], entry, set()
    while cur is not None and cur.get("variant") not in seen:
        seen.add(cur.get("variant"))
        chain.append(cur["variant"])
        parent = known.parent_of(cur)
        cur = by_variant.get(parent) if parent else None
        if parent and cur is None:
            chain.append(parent)
            break
    return chain[::-1]


def _known_names(entry: dict) -> list[str]:
    """File names a known release goes by (its ``filename`` may list several)."""
    return re.findall(r"[\w.\-]+\.(?:safetensors|ckpt|sft|pt|bin)", entry.get("filename") or "")


#: a claim text longer than this is cut before its substrings are looked up (a long title)
MAX_NAME_TEXT = 200


@lru_cache(maxsize=1)
def _known_stems() -> dict[str, dict]:
    """Compact file stem -> known release, for the stems long enough to name one."""
    out = {}
    for entry in known.table().values():
        for f in _known_names(entry):
            c = _compact(re.sub(r"\.\w+$", "", f))
            if len(c) >= MIN_NAME:
                out.setdefault(c, entry)
    return out


class _RefIndex:
    """What name resolution needs of a reference set, computed once per set (a library of
    thousands is not scanned again for every claim of every file): compact names, model lines
    and the references of each line."""

    def __init__(self, db):
        refs = db.refs
        self.key = (id(refs), len(refs))
        self.by_compact: dict[str, str] = {}
        self.brand: dict[str, str | None] = {}
        self.of_brand: dict[str, list[str]] = {}
        for n, r in refs.items():
            c = _compact(n)
            if c:
                self.by_compact.setdefault(c, n)
            b = brand_of(n)
            if b is None and r.sha256:
                entry = known.lookup(r.sha256)
                b = brand_of(entry.get("family")) if entry else None
            self.brand[n] = b
            if b:
                self.of_brand.setdefault(b, []).append(n)


def _index(db) -> _RefIndex:
    ix = getattr(db, "_claims_index", None)
    if ix is None or ix.key != (id(db.refs), len(db.refs)):
        ix = _RefIndex(db)
        try:
            db._claims_index = ix
        except AttributeError:    # a stand-in reference set without attributes: computed each time
            pass
    return ix


class Resolver:
    """Resolves names and hashes against ``db`` (a RefDB), the known releases and ``store``
    (files it has hashed, with their cached reports); ``files``: {path: report} of a scan."""

    def __init__(self, db, store=None, files: dict | None = None):
        self.db, self.store, self.files = db, store, files or {}
        self.ix = _index(db)

    # -- references -----------------------------------------------------------------------
    def ref_brand(self, name: str) -> str | None:
        return self.ix.brand.get(name) if name in self.ix.brand else brand_of(name)

    def refs_of_brand(self, brand: str, family: str | None = None) -> list[str]:
        """Registered references of a model line (shallowest first), of ``family`` when given."""
        refs = self.db.refs
        out = [n for n in self.ix.of_brand.get(brand, []) if n in refs
               and (family is None or refs[n].family is None or same_family(refs[n].family, family))]
        return sorted(out, key=lambda n: (len(self.db.lineage(n)), n))

    def _ref(self, name: str, how: str) -> Named:
        r = self.db.refs[name]
        return Named(name, ref=name, sha256=r.sha256, family=r.family, brand=self.ref_brand(name),
                     lineage=self.db.lineage(name), how=how)

    # -- names ----------------------------------------------------------------------------
    def name(self, text: str, how: str = "") -> Named:
        """What ``text`` (a title, a file name, a base-model label) names."""
        stem = re.sub(r"\.(safetensors|ckpt|sft|pt|pth|bin|gguf)$", "", str(text or "").strip(), flags=re.I)
        t = _compact(stem)[:MAX_NAME_TEXT]
        if t:
            names = self.ix.by_compact
            best = t if t in names else None     # the whole text, else its longest part naming one
            for i in range(len(t)) if best is None else ():
                for j in range(len(t), i + MIN_NAME - 1, -1):
                    if t[i:j] in names and (best is None or j - i > len(best)):
                        best = t[i:j]
                        break
            if best is not None and names[best] in self.db.refs:
                return self._ref(names[best], how)
            if t in _known_stems():
                return self._known(_known_stems()[t], how)
        b = brand_of(text)
        return Named(str(text), brand=b, family=BRAND_INFO[b]["family"] if b else None, how=how)

    def _known(self, entry: dict, how: str) -> Named:
        sha = (entry.get("sha256") or "").lower() or None
        reg = next((n for n, r in self.db.refs.items() if sha and r.sha256 == sha), None)
        if reg is None and entry.get("variant") in self.db.refs:
            reg = entry["variant"]
        if reg is not None:
            return self._ref(reg, how)
        return Named(entry["variant"], known=entry["variant"], sha256=sha, family=_known_family(entry),
                     brand=brand_of(entry.get("family")) or brand_of(entry["variant"]), lineage=[], how=how)

    # -- hashes ---------------------------------------------------------------------------
    def hash(self, value: str, how: str = "") -> Named | None:
        """The model a hash names: SHA-256 (64 hex), AutoV2 (10 hex) or A1111's legacy hash (8 hex)."""
        h = str(value or "").strip().lower()
        if h.startswith("0x"):
            h = h[2:]
        if not re.fullmatch(r"[0-9a-f]{8}|[0-9a-f]{10}|[0-9a-f]{64}", h):
            return None
        for n, r in self.db.refs.items():
            if r.sha256 and (r.sha256 == h if len(h) == 64 else len(h) == 10 and r.sha256.startswith(h)):
                return self._ref(n, how)
        for entry in known.table().values():
            sha = (entry.get("sha256") or "").lower()
            if (len(h) == 64 and sha == h) or (len(h) == 10 and sha.startswith(h)) or \
                    (len(h) == 8 and (entry.get("legacy_a1111_hash") or "").lower() == h):
                return self._known(entry, how)
        for path, rep in self.files.items():
            sha = (rep.get("sha256") or "").lower()
            if sha and (sha == h or (len(h) == 10 and sha.startswith(h))):
                return self._file(path, rep, sha, how)
        if len(h) == 64 and self.store is not None and hasattr(self.store, "files_with_sha256"):
            for path, key in self.store.files_with_sha256(h):
                return self._file(path, self._stored_report(key), h, how)
        return None

    def _stored_report(self, key: str) -> dict:
        try:
            return self.store.get_report(key, self.db.token()) or {}
        except Exception:   # a store that cannot answer: the name without its lineage
            return {}

    def _file(self, path: str, rep: dict, sha: str, how: str) -> Named:
        v = (rep or {}).get("verdict") or {}
        lineage = list(v.get("lineage") or [])
        if v.get("relation") in ("identical", "same_weights") and v.get("base"):
            return self._ref(v["base"], how) if v["base"] in self.db.refs else Named(path, file=path, sha256=sha)
        fam = ((rep or {}).get("architecture") or {}).get("family")
        brands = [self.ref_brand(n) for n in lineage]
        brand = next((b for b in reversed(brands) if b), None)
        return Named(path, file=path, sha256=sha, family=fam, brand=brand,
                     lineage=lineage if v.get("relation") == "derivative" else [], how=how)

"""Architecture detection from the header alone: an ordered table of rules.

A rule lists canonical keys that must be present, keys that must be absent, and shape
checks ``(key, dim, value)`` where ``dim`` is an index or ``"ndim"``. The first rule
that matches wins; every result carries the rule that matched and, for ``--why``, the
reason each earlier rule was rejected. Widths are never checked, only dimensions that
do not scale with the model width (input channels, context and ADM sizes, layouts),
so reduced-width test models are detected like the real ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import layout

U = "unet:"
LABEL = U + "label_emb.0.0.weight"
IN0 = U + "input_blocks.0.0.weight"
PROJ_IN = U + "input_blocks.1.1.proj_in.weight"


@dataclass(frozen=True)
class Rule:
    id: str
    family: str
    variant: str | None = None
    require: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    shapes: tuple[tuple[str, int | str, int], ...] = ()
    prediction: str | None = None
    note: str | None = None


RULES: list[Rule] = [
    # --- SDXL family (ADM label embedding; 2816 = pooled bigG 1280 + 6 x 256 size embeddings) ---
    Rule("sdxl_refiner", "sdxl_refiner", require=(LABEL,), shapes=((LABEL, 1, 2560),), prediction="eps"),
    Rule("sdxl_inpaint", "sdxl_inpaint", require=(LABEL, IN0), shapes=((LABEL, 1, 2816), (IN0, 1, 9)), prediction="eps"),
    Rule("sdxl", "sdxl", require=(LABEL, IN0), shapes=((LABEL, 1, 2816), (IN0, 1, 4)), prediction="eps"),
    # --- SD2 (linear proj_in) and SD1 (1x1 conv proj_in); context width is not checked,
    #     so that reduced-width test models are detected like the real ones -----------------
    Rule("sd2_unclip", "sd2_unclip", require=(PROJ_IN, LABEL, IN0), shapes=((PROJ_IN, "ndim", 2),)),
    Rule("sd2_inpaint", "sd2_inpaint", require=(PROJ_IN, IN0), forbid=(LABEL,),
         shapes=((PROJ_IN, "ndim", 2), (IN0, 1, 9)), prediction="eps"),
    Rule("sd2_depth", "sd2_depth", require=(PROJ_IN, IN0), forbid=(LABEL,),
         shapes=((PROJ_IN, "ndim", 2), (IN0, 1, 5)), prediction="eps"),
    Rule("sd2", "sd2", require=(PROJ_IN, IN0), forbid=(LABEL,), shapes=((PROJ_IN, "ndim", 2), (IN0, 1, 4)),
         note="SD2 512 (eps) and 768 (v-prediction) share every shape: told apart only by metadata or the published hash"),
    Rule("sd1_inpaint", "sd1_inpaint", require=(PROJ_IN, IN0), forbid=(LABEL,),
         shapes=((PROJ_IN, "ndim", 4), (IN0, 1, 9)), prediction="eps"),
    Rule("sd1_pix2pix", "sd1_pix2pix", require=(PROJ_IN, IN0), forbid=(LABEL,),
         shapes=((PROJ_IN, "ndim", 4), (IN0, 1, 8)), prediction="eps"),
    Rule("sd1", "sd1", require=(PROJ_IN, IN0), forbid=(LABEL,), shapes=((PROJ_IN, "ndim", 4), (IN0, 1, 4)),
         prediction="eps"),
]

#: metadata and marker keys that state the prediction type
PREDICTION_KEYS = {"v_pred": "v", "edm_mean": "edm", "edm_std": "edm"}
MODELSPEC_PREDICTION = {"epsilon": "eps", "eps": "eps", "v": "v", "v_prediction": "v", "edm": "edm",
                        "flow": "flow", "rectified_flow": "flow"}


@dataclass
class ArchResult:
    family: str
    variant: str | None
    rule: str | None
    components: list[str]
    dtype: str | None
    prediction: str | None
    kind: str = "checkpoint"
    notes: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"family": self.family, "variant": self.variant, "kind": self.kind, "components": self.components,
                "dtype": self.dtype, "prediction": self.prediction, "rule": self.rule, "notes": self.notes}


def _check(rule: Rule, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """None if the rule matches, else why not."""
    for k in rule.require:
        if k not in shapes:
            return f"missing {k}"
    for k in rule.forbid:
        if k in shapes:
            return f"has {k}"
    for k, dim, want in rule.shapes:
        shp = shapes.get(k)
        if shp is None:
            return f"missing {k}"
        got = len(shp) if dim == "ndim" else (shp[dim] if isinstance(dim, int) and -len(shp) <= dim < len(shp) else None)
        if got != want:
            return f"{k} {'ndim' if dim == 'ndim' else f'dim {dim}'} is {got}, not {want}"
    return None


def detect(shapes: dict[str, tuple[int, ...]], dtypes_: dict[str, str] | None = None,
           metadata: dict[str, str] | None = None) -> ArchResult:
    """Detect the architecture from canonical key -> shape (and dtypes, metadata)."""
    rejected: list[tuple[str, str]] = []
    match: Rule | None = None
    for rule in RULES:
        why = _check(rule, shapes)
        if why is None:
            match = rule
            break
        rejected.append((rule.id, why))
    comps = layout.components_of(shapes)
    notes: list[str] = []
    if match is None:
        family, variant, prediction = "unknown", None, None
    else:
        family, variant, prediction = match.family, match.variant, match.prediction
        if match.note:
            notes.append(match.note)
    # prediction type from marker keys and metadata
    for k, pred in PREDICTION_KEYS.items():
        if f"other:{k}" in shapes:
            prediction = pred
    ms = (metadata or {}).get("modelspec.prediction_type")
    if ms and ms.lower() in MODELSPEC_PREDICTION:
        prediction = MODELSPEC_PREDICTION[ms.lower()]
    if "other:ztsnr" in shapes:
        notes.append("ztsnr marker key: trained with zero terminal SNR")
    kind = "checkpoint"
    if comps and not any(c in layout.DENOISERS for c in comps):
        kind = {"vae": "vae"}.get(comps[0], "text_encoder")
    elif comps and all(c in layout.DENOISERS for c in comps):
        kind = "unet_only" if comps == ["unet"] else "dit_only"
    dt = None
    if dtypes_:
        den = [d for k, d in dtypes_.items() if layout.split(k)[0] in layout.DENOISERS] or list(dtypes_.values())
        from . import dtypes as _dt
        counts: dict[str, int] = {}
        for d in den:
            counts[d] = counts.get(d, 0) + 1
        if counts:
            top = max(counts, key=counts.get)
            dt = _dt.DTYPES[top].short if top in _dt.DTYPES else top.lower()
    return ArchResult(family, variant, match.id if match else None, comps, dt, prediction, kind, notes, rejected)

"""What a verdict rests on (sampled values, tensors, the share of the parameters they
cover), and the evidence floor: a verdict about a sliver of a file is no verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import layout
from .decisions import EVIDENCE_MIN_SHARE, REPORTED_ONLY, SAME_MIN_SHARE, Code

SAME = ("identical", "same_weights")


def params_of(fp, comp: str = layout.WHOLE) -> int:
    """Parameters (elements of float tensors) of component ``comp`` of ``fp``; WHOLE: the
    file (EMA copies left out: they are not what gets loaded)."""
    return fp.params_of(comp)


@dataclass
class Evidence:
    values: int = 0               # sampled values compared
    tensors: int = 0              # tensors they come from
    params: int = 0               # parameters of those tensors
    share: float = 0.0            # ... as a share of the file's parameters
    component_share: float = 0.0  # ... as a share of the component's parameters

    def to_json(self) -> dict:
        return {"values": self.values, "tensors": self.tensors, "params": self.params,
                "share": round(self.share, 4), "component_share": round(self.component_share, 4)}


def evidence(fp, comp: str, keys, values: int) -> Evidence:
    """Evidence of comparing ``values`` sampled values of the tensors ``keys`` of ``fp``."""
    idx, p = fp.index, fp.params
    rows = [idx[k] for k in keys if k in idx]
    params = int(p[rows].sum()) if rows else 0
    tot, ctot = params_of(fp), params_of(fp, comp)
    return Evidence(int(values), len(keys), params, params / tot if tot else 0.0, params / ctot if ctot else 0.0)


def main_component(fp, comps: list[str]) -> str | None:
    """The component the whole-file verdict describes: the denoiser, else the largest (by
    parameters) of the components compared, so that it is the bulk of a partial file."""
    for c in comps:
        if c in layout.DENOISERS:
            return c
    return max(comps, key=lambda c: (params_of(fp, c), -comps.index(c))) if comps else None


def floor_file_verdict(result: dict, fp) -> bool:
    """Add what the whole-file verdict rests on (``verdict.evidence``) and make it unknown,
    "too little of the file is comparable", when that is a small share of the file's
    parameters (or, for same weights, not nearly all of them). True if it was made unknown."""
    v, comps = result["verdict"], result["components"]
    total = params_of(fp)
    evs = [e.get("evidence") or {} for e in comps.values()]
    params = sum(e.get("params", 0) for e in evs)
    same = sum((e.get("evidence") or {}).get("params", 0) for c, e in comps.items()
               if e.get("relation") in SAME or (c in REPORTED_ONLY and e.get("confidence") is not None))
    share = params / total if total else 0.0
    v["evidence"] = {"values": sum(e.get("values", 0) for e in evs), "tensors": sum(e.get("tensors", 0) for e in evs),
                     "params": params, "share": round(share, 4)}
    rel = v.get("relation")
    if rel in ("identical", "unknown", None):
        return False
    if rel == "same_weights" and same < SAME_MIN_SHARE * total:
        why = (f"the components with the same weights cover {same / max(total, 1):.1%} of its parameters; "
               f"same weights needs {SAME_MIN_SHARE:.0%}")
    elif share < EVIDENCE_MIN_SHARE:
        why = f"the compared tensors cover {share:.1%} of its parameters; a verdict needs {EVIDENCE_MIN_SHARE:.0%}"
    else:
        return False
    v.update(relation="unknown", base=None, lineage=[], confidence=None, code=Code.TOO_LITTLE_COMPARABLE,
             reason=f"too little of the file is comparable: {why}")
    return True

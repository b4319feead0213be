"""The verdict for one component: a short pipeline of named steps.

1. pool: references that have the component;
2. statistics: per reference, the share of values that differ after rounding, and on one
   joint alignment the cosine, its independence z-score and the distance;
3. the first step that applies decides: nothing comparable -> not related -> same
   weights -> merge of whole weights -> merge of trainings -> derivative (placed in the
   reference tree) or related-but-unplaced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..fingerprint import Fingerprint
from .. import layout
from .align import Aligned, align, common, finite_share, mismatch_fraction
from .decisions import (ALIGN_MIN_COVERAGE, ALIGN_MIN_FINITE, EVIDENCE_MIN_SHARE, MERGE_CONF_MAX, MERGE_MIN_WEIGHT,
                        RELATED_MIN_COS, RELATED_MIN_Z, SAME_CONF_AT_LIMIT, SAME_MAX_MISMATCH, SAME_MIN_COVERAGE,
                        SAME_MIN_SHARE, Code, Confidence)
from .descend import descend
from .evidence import Evidence, evidence
from .fits import delta_merge, excess, whole_merge


@dataclass
class Candidate:
    ref: str
    score: float
    cos: float
    z: float
    distance: float           # relative RMS difference after removing rounding noise
    mismatch: float | None    # fraction of elements differing after requantizing (None: not comparable)
    coverage: float
    share: float | None = None
    related: bool = False

    def to_json(self) -> dict:
        d = {"ref": self.ref, "score": round(self.score, 4), "cos": round(self.cos, 4), "z": round(self.z, 1),
             "distance": round(self.distance, 4), "coverage": round(self.coverage, 3), "related": self.related}
        if self.mismatch is not None:
            d["mismatch"] = round(self.mismatch, 5)
        if self.share is not None:
            d["share"] = round(self.share, 3)
        return d


@dataclass
class CompVerdict:
    component: str
    relation: str                          # same_weights | derivative | merge | unknown
    ref: str | None = None
    confidence: float | None = None        # see decisions.Confidence; None: no claim
    merge: list[tuple[str, float]] = field(default_factory=list)
    merge_blocks: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    reason: str = ""
    n_values: int = 0
    code: str = Code.NOT_RELATED           # decisions.Code: why (summaries are chosen from it)
    evidence: Evidence = field(default_factory=Evidence)   # what the verdict rests on

    # reason codes, also reachable from a verdict (``v.FAR_FROM_BASE``)
    IDENTICAL = Code.IDENTICAL
    SAME_WEIGHTS = Code.SAME_WEIGHTS
    MERGE = Code.MERGE
    BLOCK_MERGE = Code.BLOCK_MERGE
    DELTA_MERGE = Code.DELTA_MERGE
    DESCENDS = Code.DESCENDS
    SIBLING_AMBIGUOUS = Code.SIBLING_AMBIGUOUS
    FAR_FROM_BASE = Code.FAR_FROM_BASE
    PARENT_NOT_REGISTERED = Code.PARENT_NOT_REGISTERED
    NOT_RELATED = Code.NOT_RELATED
    NOTHING_COMPARABLE = Code.NOTHING_COMPARABLE
    NO_REFERENCE = Code.NO_REFERENCE
    TOO_LITTLE_COMPARABLE = Code.TOO_LITTLE_COMPARABLE


@dataclass
class _Stats:
    """What the decision steps share: candidates and the joint alignment."""
    fp: Fingerprint
    comp: str
    refs: dict                       # name -> reference
    cands: list[Candidate]           # related first, then by distance
    al: Aligned | None               # joint alignment over the references in col_of
    col_of: dict[str, int]
    n_file: int

    @property
    def related(self) -> list[Candidate]:
        return [c for c in self.cands if c.related]

    def al_of(self, cands: list[Candidate]) -> Aligned:
        return self.al.cols([self.col_of[c.ref] for c in cands])

    def aligned_evidence(self) -> Evidence:
        """What a decision on the joint alignment rests on."""
        return evidence(self.fp, self.comp, self.al.keys, self.al.n)

    def same_evidence(self, ref: str) -> Evidence:
        """What an elementwise comparison with ``ref`` rests on (every shared tensor)."""
        vf, vr = self.fp.view(self.comp, 0), self.refs[ref].fp.view(self.comp, 0)
        tf, _ = common(vf, [vr])
        return evidence(self.fp, self.comp, [vf.keys[t] for t in tf], int(vf.counts[tf].sum()) if len(tf) else 0)


# -- steps ----------------------------------------------------------------------------------
def _pool(refs: list, comp: str) -> list:
    return [r for r in refs if any(layout.in_component(k, comp) for k in r.fp.keys)]


def _statistics(fp: Fingerprint, comp: str, pool: list, n_file: int, exact: bool = True) -> _Stats:
    limit = None if exact else SAME_MAX_MISMATCH
    covered = [(r, *mismatch_fraction(fp, r.fp, comp, limit)) for r in pool]
    ok = [r for r, _, cov in covered if cov >= ALIGN_MIN_COVERAGE and finite_share(r.fp, comp) >= ALIGN_MIN_FINITE]
    al = align(fp, [r.fp for r in ok], comp) if ok else None
    col_of = {r.name: i for i, r in enumerate(ok)}
    cands = []
    for r, mm, cov in covered:
        if al is None or r.name not in col_of:
            cands.append(Candidate(r.name, 0.0, 0.0, 0.0, float("inf"), mm, cov))
            continue
        ci = col_of[r.name]
        g = al.centred_gram
        na, nb = math.sqrt(max(g[-1, -1], 0.0)), math.sqrt(max(g[ci, ci], 0.0))
        c = float(g[ci, -1]) / (na * nb) if na > 0 and nb > 0 else 0.0
        z = c * math.sqrt(al.n)
        unit = np.zeros(len(ok))
        unit[ci] = 1.0
        dist = math.sqrt(excess(al, unit))
        cands.append(Candidate(r.name, max(0.0, 1.0 - dist), c, z, dist, mm, cov,
                               related=(z >= RELATED_MIN_Z and c >= RELATED_MIN_COS)))
    cands.sort(key=lambda c: (-c.related, c.distance))
    return _Stats(fp, comp, {r.name: r for r in pool}, cands, al, col_of, n_file)


def _unknown(out: CompVerdict, code: str, confidence, reason: str) -> CompVerdict:
    out.code, out.confidence, out.reason = code, confidence, reason
    return out


def _not_related(out: CompVerdict, st: _Stats) -> CompVerdict:
    best = st.cands[0]
    return _unknown(out, Code.NOT_RELATED, round(min(1.0, 1.0 - max(0.0, best.cos)), 3),
                    f"not related to any reference (best {best.ref}: cos {best.cos:.3f}, z {best.z:.1f}, "
                    f"independent weights give |z| < {RELATED_MIN_Z:g})")


def _same_weights(out: CompVerdict, st: _Stats) -> CompVerdict | None:
    same = [c for c in st.related if c.mismatch is not None and c.mismatch <= SAME_MAX_MISMATCH
            and c.coverage >= SAME_MIN_COVERAGE]
    if not same:
        return None
    same.sort(key=lambda c: c.mismatch)
    evs = [st.same_evidence(c.ref) for c in same]
    ok = [(c, e) for c, e in zip(same, evs) if e.component_share >= SAME_MIN_SHARE]
    if not ok:
        s, ev = same[0], evs[0]
        out.evidence = ev
        return _unknown(out, Code.TOO_LITTLE_COMPARABLE, Confidence.NONE,
                        f"too little of the file is comparable: the {ev.tensors} tensors shared with {s.ref} (equal "
                        f"after rounding) hold {ev.component_share:.1%} of the parameters; same weights needs "
                        f"{SAME_MIN_SHARE:.0%}")
    s, out.evidence = ok[0]
    out.relation, out.ref, out.code = "same_weights", s.ref, Code.SAME_WEIGHTS
    out.confidence = round(1.0 - s.mismatch / SAME_MAX_MISMATCH * (1.0 - SAME_CONF_AT_LIMIT), 3)
    out.reason = (f"{(1 - s.mismatch) * 100:.2f}% of {st.n_file} sampled values equal {s.ref}'s "
                  f"after rounding to the coarser precision")
    return out


def _whole_merge(out: CompVerdict, st: _Stats) -> CompVerdict | None:
    related = st.related
    if len(related) < 2:
        return None
    names = [c.ref for c in related]
    fit = whole_merge(st.al_of(related))
    if fit is None:
        return None
    w = fit.weights
    if fit.blocks:
        out.merge_blocks = {g: [(names[c], round(float(wb[c]), 3)) for c in range(len(names))
                                if wb[c] >= MERGE_MIN_WEIGHT] for g, wb in fit.blocks.items()}
    recipe = sorted(((names[c], float(w[c])) for c in range(len(names)) if w[c] >= MERGE_MIN_WEIGHT),
                    key=lambda t: -t[1])
    tot = sum(v for _, v in recipe)
    out.merge = [(n, round(v / tot, 3)) for n, v in recipe]
    out.relation, out.ref = "merge", out.merge[0][0]
    out.code = Code.BLOCK_MERGE if fit.blocks else Code.MERGE
    out.confidence = round(float(min(MERGE_CONF_MAX, 1.0 - fit.ratio)), 3)
    out.reason = (f"a {'block-weighted ' if fit.blocks else ''}merge leaves {fit.ratio * 100:.1f}% of the "
                  f"difference the best single reference ({names[fit.best_single]}) leaves")
    return out


def _training_merge(out: CompVerdict, st: _Stats, tree) -> CompVerdict | None:
    """Merges that do not mix whole weights (TIES, DARE, merged then trained): several
    references' own training is present, each far beyond what shared directions explain."""
    related = st.related
    if tree is None or len(related) < 2:
        return None
    dm = delta_merge(st.al, [c.ref for c in related], st.col_of, tree)
    if dm is None:
        return None
    recipe, _root, reason = dm
    out.merge, out.relation, out.ref = recipe, "merge", recipe[0][0]
    out.code, out.confidence, out.reason = Code.DELTA_MERGE, Confidence.QUALIFIED, reason
    return out


def _derivative(out: CompVerdict, st: _Stats, tree) -> CompVerdict:
    related = st.related
    p = descend(related, {c.ref: c for c in st.cands}, tree, st.al_of(related))
    out.confidence, out.code, out.reason = p.confidence, p.code, p.reason
    if p.ref is not None:
        out.relation, out.ref = "derivative", p.ref
    return out


def analyse(fp: Fingerprint, comp: str, refs: list, tree=None, allow_merge: bool = True,
            exact_mismatch: bool = True) -> CompVerdict:
    """Classify component ``comp`` of ``fp`` against references (objects with ``.name``, ``.fp``).

    ``exact_mismatch=False``: a candidate's mismatch above SAME_MAX_MISMATCH may be a lower
    bound (the verdict is the same; for callers that do not show the candidates).

    ``tree`` (optional) maps a reference name to its registered parent name (or None)
    and to whether it declares an unregistered parent: ``tree.parent(name)``,
    ``tree.orphan(name)``.
    """
    n_file = int(fp.view(comp).counts.sum())    # the sampled float values of the component
    out = CompVerdict(comp, "unknown", n_values=n_file)
    pool = _pool(refs, comp)
    if not pool:
        return _unknown(out, Code.NO_REFERENCE, Confidence.NONE, "no reference has this component")
    st = _statistics(fp, comp, pool, n_file, exact_mismatch)
    out.candidates = st.cands
    if st.al is None:
        return _unknown(out, Code.NOTHING_COMPARABLE, Confidence.NONE,
                        "no weights that can be compared with any reference (none shared, or not finite)")
    out.evidence = st.aligned_evidence()
    if not st.related:
        return _not_related(out, st)
    return _floor(_same_weights(out, st)
                  or (allow_merge and _whole_merge(out, st))
                  or (allow_merge and _training_merge(out, st, tree))
                  or _derivative(out, st, tree))


def _floor(out: CompVerdict) -> CompVerdict:
    """A verdict resting on a sliver of the component is no verdict (EVIDENCE_MIN_SHARE)."""
    if out.relation == "unknown" or out.evidence.component_share >= EVIDENCE_MIN_SHARE:
        return out
    ev = out.evidence
    out.relation, out.ref, out.merge, out.merge_blocks = "unknown", None, [], {}
    return _unknown(out, Code.TOO_LITTLE_COMPARABLE, Confidence.NONE,
                    f"too little of the file is comparable: the compared tensors hold {ev.component_share:.1%} of "
                    f"the parameters; a verdict needs {EVIDENCE_MIN_SHARE:.0%}")

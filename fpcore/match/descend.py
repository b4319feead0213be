"""Placing a derivative in the reference tree.

For parent p and registered child c, the share a = <x - p, c - p> / |c - p|^2 is about 1
when the file contains c's training and about 0 for a sibling. Sibling fine-tunes share
part of their direction (weight decay, common data), bounded by RHO_MAX, so a share is only
taken as descent when it exceeds what that shared part can explain for the file's own
distance from p.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .align import Aligned, cos
from .decisions import (FAR_REL, RHO_MAX, RHO_NOISE_Z, SHARE_FULL_MARGIN, SHARE_MIN, Code, Confidence)


@dataclass
class Placement:
    ref: str | None          # None: related but not placeable
    confidence: float
    code: str
    reason: str


def _shared_bound(v: np.ndarray, al: Aligned, col: dict, edges: list, skip: set) -> float:
    """Cosine that directions shared by every fine-tune explain: measured on reference deltas
    unrelated to this step (the least of them: others may be merged in for real), plus its
    sampling noise, never above RHO_MAX; RHO_MAX when there are none."""
    others = [(q, r) for q, r in edges if r not in skip]
    if not others:
        return RHO_MAX
    rho = max(0.0, float(min(cos(v, al.ref_row(col[r]) - al.ref_row(col[q])) for q, r in others)))
    return min(rho + RHO_NOISE_Z / math.sqrt(len(v)), RHO_MAX)


def _step_confidence(excess: float) -> float:
    """UNPLACED just past SHARE_MIN, rising to CERTAIN at SHARE_MIN + SHARE_FULL_MARGIN
    (capped at CLEAR by the walk's starting confidence)."""
    lo = Confidence.UNPLACED
    return lo + (Confidence.CERTAIN - lo) * min(1.0, (excess - SHARE_MIN) / SHARE_FULL_MARGIN)


def descend(related, by_name: dict, tree, al: Aligned | None) -> Placement:
    """Find the deepest registered reference the file descends from.

    ``related``: candidates (closest first); ``al``: their joint alignment, columns in the
    order of ``related``."""
    names = [c.ref for c in related]
    rel_names = set(names)
    parent = (lambda n: tree.parent(n)) if tree else (lambda n: None)
    orphan = (lambda n: tree.orphan(n)) if tree else (lambda n: False)
    children: dict[str, list[str]] = {}
    for n in names:
        p = parent(n)
        if p in rel_names:
            children.setdefault(p, []).append(n)
    # roots of the related forest: related refs whose registered parent is not related
    roots = [n for n in names if parent(n) not in rel_names]
    if not children:
        al = None
    col = {n: i for i, n in enumerate(names)}
    edges = [(parent(n), n) for n in names if parent(n) in rel_names]

    def subtree(n):
        out, todo = set(), [n]
        while todo:
            m = todo.pop()
            out.add(m)
            todo.extend(children.get(m, []))
        return out

    best = None
    for root in roots:
        node, conf, notes, path, ambiguous = root, Confidence.CLEAR, [], [root], False
        while al is not None:
            v = al.file_row() - al.ref_row(col[node])
            nv = float(np.linalg.norm(v))
            step = None
            for c in children.get(node, []):
                d = al.ref_row(col[c]) - al.ref_row(col[node])
                nd = float(np.linalg.norm(d))
                if nd == 0 or nv == 0:
                    continue
                share = float(v @ d) / (nd * nd)
                rho = _shared_bound(v, al, col, edges, set(path) | subtree(c))
                excess = share - rho * nv / nd
                by_name[c].share = share
                if excess >= SHARE_MIN:
                    if step is None or excess > step[1]:
                        step = (c, excess)
                elif share >= SHARE_MIN:
                    notes.append(f"it may descend from {c} (share {share:.2f}), but its own changes are too large "
                                 f"to tell that from a sibling of {c}")
                    conf = min(conf, Confidence.AMBIGUOUS)
                    ambiguous = True
            if step is None:
                break
            node = step[0]
            path.append(node)
            conf = min(conf, _step_confidence(step[1]))
        cand = by_name[node]
        if best is None or cand.distance < best[1].distance:
            best = (node, cand, conf, notes, ambiguous)
    node, cand, conf, notes, ambiguous = best
    if orphan(node) and cand.distance > FAR_REL:
        return Placement(None, Confidence.UNPLACED, Code.PARENT_NOT_REGISTERED,
                         f"related to {node} (cos {cand.cos:.3f}) but far from it (distance {cand.distance:.2f}); "
                         f"{node}'s parent is not registered, so a sibling cannot be told from a descendant")
    code = Code.SIBLING_AMBIGUOUS if ambiguous else Code.DESCENDS
    if parent(node) is None and not orphan(node) and cand.distance > FAR_REL:
        notes.append(f"far from {node} (distance {cand.distance:.2f}): it may descend from an unregistered "
                     f"model of the same family")
        conf = min(conf, Confidence.QUALIFIED)
        code = Code.FAR_FROM_BASE
    reason = f"descends from {node} (distance {cand.distance:.3f}, cos {cand.cos:.3f})"
    if notes:
        reason += "; " + "; ".join(notes)
    return Placement(node, round(conf, 3), code, reason)

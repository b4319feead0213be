"""Groups of files holding the same model, and the bytes keeping one of each would free.

``_groups`` (served from the store by ``_cached_groups`` when the folder is unchanged):
``identical`` (same SHA-256), ``same_weights`` (every component the same up to precision:
reclaimable), ``same_denoiser`` (other components differ: reclaims nothing).
"""
from __future__ import annotations

import json

from .. import identify as ident
from .. import layout
from .families import family_of


def _same_component(fa, fb, comp: str) -> bool:
    """Whether component ``comp`` holds the same weights in both fingerprints (up to precision),
    each covering the other: the rule of a same_weights verdict, applied file to file."""
    from .. import match
    for x, y in ((fa, fb), (fb, fa)):
        mm, cov = match.mismatch_fraction(x, y, comp, limit=match.SAME_MAX_MISMATCH)
        if mm is None or mm > match.SAME_MAX_MISMATCH or cov < match.SAME_MIN_COVERAGE:
            return False
    return True


def _weighted_components(rep: dict) -> list[str]:
    return [c for c in (rep.get("architecture") or {}).get("components") or [] if c not in layout.IGNORED]


def _component_diff(reps: list[str], reports: dict, fps: dict) -> tuple[list[str], list[str], list[str]]:
    """(components the same in every file, present in every file but not the same, missing in some)."""
    comp_sets = [_weighted_components(reports[p]) for p in reps]
    order = [c for c in layout.ORDER if any(c in cs for cs in comp_sets)]
    every = [c for c in order if all(c in cs for cs in comp_sets)]
    same = [c for c in every if all(_same_component(fps[reps[0]], fps[q], c) for q in reps[1:])]
    return same, [c for c in every if c not in same], [c for c in order if c not in every]


def group_label(same: list[str], differ: list[str], missing: list[str]) -> str:
    """'same UNet and text encoders, VAE differs'."""
    text = f"same {ident.components_phrase(same)}" if same else "same weights in part"
    if differ:
        text += f"; {ident.components_phrase(differ)} " + ("differs" if len(differ) == 1 else "differ")
    if missing:
        text += f"; {ident.components_phrase(missing)} not in every file"
    return text


def _groups(reports: dict, sizes: dict, fps: dict | None = None) -> list[dict]:
    """Groups of files holding the same model. Bytes are reclaimable only where every component
    with weights is the same: ``identical`` (same SHA-256) and ``same_weights`` (every component
    the same up to precision). Files that share the denoiser but differ elsewhere (a swapped VAE,
    trained text encoders) form a ``same_denoiser`` group that reclaims nothing. The folder
    relations are corrected to match: ``same_weights`` only where every component is the same."""
    fps = fps or {}
    out = []
    size = lambda ps: sum(sizes.get(p, 0) for p in ps) - max(sizes.get(p, 0) for p in ps)  # noqa: E731
    by_sha: dict[str, list[str]] = {}
    for p, rep in reports.items():
        if rep.get("sha256") and not rep.get("error"):
            by_sha.setdefault(rep["sha256"], []).append(p)
    for sha, paths in by_sha.items():
        if len(paths) > 1:
            out.append({"relation": "identical", "paths": sorted(paths), "reclaimable_bytes": size(paths),
                        "label": "the same bytes"})
    # files whose denoiser is the same (the folder relation says so): union of the peer links
    parent: dict[str, str] = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x
    for p, rep in reports.items():
        f = rep.get("folder") or {}
        if f.get("relation") in ("same_weights", "same_denoiser") and f.get("peer") and f["peer"] in reports:
            a, b = find(p), find(f["peer"])
            if a != b:
                parent[a] = b
    classes: dict[str, list[str]] = {}
    for p in set(parent) | set(parent.values()):
        classes.setdefault(find(p), []).append(p)
    # one link per file can split one set of equal denoisers in two: join classes whose denoisers match
    roots = sorted(classes)
    den = {}
    for r in roots:
        comps = (reports[r].get("architecture") or {}).get("components") or []
        den[r] = next((c for c in comps if c in layout.DENOISERS), comps[0] if comps else None)
    for i, r in enumerate(roots):
        for q in roots[i + 1:]:
            if (find(r) != find(q) and den[r] and den[r] == den[q] and r in fps and q in fps
                    and family_of(reports[r]) == family_of(reports[q])
                    and _same_component(fps[r], fps[q], den[r])):
                parent[find(r)] = find(q)
    merged: dict[str, set] = {}
    for r, members in classes.items():
        merged.setdefault(find(r), set()).update(members)
    for members in merged.values():
        # exact duplicates of members belong to them; one representative per distinct content
        members |= {q for m in list(members) for q in (reports[m].get("folder") or {}).get("duplicates", [])}
        content = lambda p: reports[p].get("sha256") or p  # noqa: E731
        reps: dict[str, str] = {}
        for m in sorted(members):
            reps.setdefault(content(m), m)
        if len(reps) < 2 or any(r not in fps for r in reps.values()):
            continue
        # classes of contents where every component with weights is the same
        full: list[list[str]] = []
        for r in reps.values():
            for cls in full:
                if (set(_weighted_components(reports[r])) == set(_weighted_components(reports[cls[0]]))
                        and all(_same_component(fps[r], fps[cls[0]], c) for c in _weighted_components(reports[r]))):
                    cls.append(r)
                    break
            else:
                full.append([r])
        paths_of = lambda rs: sorted(m for m in members if reps[content(m)] in rs)  # noqa: E731
        for cls in full:
            if len(cls) > 1:
                ps = paths_of(cls)
                out.append({"relation": "same_weights", "paths": ps, "reclaimable_bytes": size(ps),
                            "label": "every component the same up to precision"})
        if len(full) > 1:
            same, differ, missing = _component_diff([c[0] for c in full], reports, fps)
            out.append({"relation": "same_denoiser", "paths": sorted(members), "reclaimable_bytes": 0,
                        "label": group_label(same, differ, missing), "differs": differ + missing})
        # the folder relation of each file follows the same rule
        for cls in full:
            partners = [r for r in cls]
            others = [c[0] for c in full if c is not cls]
            for r in cls:
                f_paths = paths_of([r])
                twin = next((q for q in partners if q != r), None)
                for p in f_paths:
                    f = reports[p].setdefault("folder", {})
                    if twin is not None:
                        f.update(relation="same_weights", peer=twin, differs=[], merge=[])
                    elif others:
                        s_, d_, m_ = _component_diff([r, others[0]], reports, fps)
                        f.update(relation="same_denoiser", peer=others[0], differs=d_ + m_, merge=[])
    return out


#: bump when _groups changes what it returns or how it rewrites the folder relations
GROUPS_VERSION = 1


def _cached_groups(reports: dict, sizes: dict, fps, store, root: str) -> list[dict]:
    """_groups(), served from the store when its inputs are unchanged: the same files (path,
    content, size, architecture, folder relation), so a rescan of an unchanged folder compares
    nothing. Not cached when a file has no content id (nothing in the store to tie it to)."""
    import hashlib
    keys = getattr(fps, "keys_by_path", {})
    if store is None or any(not (reports[p].get("sha256") or keys.get(p)) for p in reports
                            if not reports[p].get("error")):
        return _groups(reports, sizes, fps)
    inputs = [[p, reports[p].get("sha256") or keys.get(p), sizes.get(p, 0), reports[p].get("architecture"),
               reports[p].get("folder")] for p in sorted(reports) if not reports[p].get("error")]
    token = "peers:groups:" + hashlib.sha256(json.dumps([GROUPS_VERSION, inputs], sort_keys=True,
                                                        default=str).encode()).hexdigest()[:32]
    slot = "folder:" + hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    hit = store.get_report(slot, token)
    if hit and isinstance(hit.get("groups"), list) and isinstance(hit.get("folder"), dict) \
            and set(hit["folder"]) <= set(reports):
        for p, f in hit["folder"].items():
            reports[p]["folder"] = f
        return hit["groups"]
    groups = _groups(reports, sizes, fps)
    store.put_report(slot, token, {"groups": groups, "folder": {p: r["folder"] for p, r in reports.items()
                                                                 if r.get("folder") is not None}})
    return groups


def reclaimable_total(groups: list[dict]) -> int:
    """Bytes freed by keeping one file per group, each file counted once (an ``identical`` group
    inside a ``same_weights`` group is already counted there)."""
    covered: set[str] = set()
    total = 0
    for g in sorted(groups, key=lambda g: g["relation"] != "same_weights"):
        if not g.get("reclaimable_bytes") or set(g["paths"]) <= covered:
            continue
        covered |= set(g["paths"])
        total += g["reclaimable_bytes"]
    return total

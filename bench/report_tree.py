"""The HTML report's family tree with a large reference library: fingerprints read against sketches.

    python bench/report_tree.py [--refs 60]

Builds a library of N references (testkit.library: reduced-width SDXL siblings three levels
deep, plus a few SD1.5 and unknown-architecture ones), a folder of three files (a fine-tune of
the hub, a fine-tune of a sibling, a 50/50 merge of two siblings), scans it, then builds the
report's family trees twice in this process: reading every reference's fingerprint (the tree
as before, TREE_EXACT_MAX_REFS raised above N; the baseline) and from the catalog's sketches
(the default above TREE_EXACT_MAX_REFS). Prints the time of each, the cophenetic correlation
of the two trees, the clusters they share, and where each file lands (the smallest cluster
holding it) in each.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scipy.cluster.hierarchy import cophenet, linkage, to_tree  # noqa: E402
from scipy.spatial.distance import pdist  # noqa: E402

from fpcore import api, scan as _scan  # noqa: E402
from fpcore.scan import html as report_html
from fpcore.refs.library import RefDB  # noqa: E402
from testkit.library import Space, build_library  # noqa: E402


def _clusters(Z) -> set:
    out = set()

    def walk(nd):
        if nd.is_leaf():
            return frozenset([nd.id])
        s = walk(nd.left) | walk(nd.right)
        out.add(s)
        return s
    walk(to_tree(Z))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refs", type=int, default=60, help="references in the library (default 60)")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="fp-tree-")
    refs_dir, none = os.path.join(d, "refs"), os.path.join(d, "none")
    space = Space("sdxl")
    db = RefDB(refs_dir, builtin_dir=none)
    lib = build_library(a.refs, space, each=lambda name, parent, fam, fp: db.add(fp, name, parent=parent, family=fam))
    models = os.path.join(d, "models")
    os.makedirs(models)
    sibs = lib.siblings
    space.write_model(os.path.join(models, "ft_of_hub.safetensors"), space.finetune(lib.values[lib.hub], 0.08, 9))
    space.write_model(os.path.join(models, "ft_of_sib.safetensors"), space.finetune(lib.values[sibs[0]], 0.04, 10))
    space.write_model(os.path.join(models, "merge.safetensors"),
                      Space.merge([(lib.values[sibs[1]], 0.5), (lib.values[sibs[2]], 0.5)]))
    res = api.scan_folder(models, refs_dir=refs_dir, cache_dir=os.path.join(d, "cache"))
    reports = {r["path"]: r for r in res["reports"]}
    fps = dict(res["_fingerprints"])

    captured = {}
    real_svg = report_html._tree_svg

    def capture(labels, is_ref, X):
        captured[mode] = (labels, X)
        return real_svg(labels, is_ref, X)
    report_html._tree_svg = capture
    times = {}
    for mode, limit in (("fingerprints", a.refs + 1), ("sketches", report_html.TREE_EXACT_MAX_REFS)):
        report_html.TREE_EXACT_MAX_REFS = limit
        fresh = RefDB(refs_dir, builtin_dir=none)     # no fingerprint in memory
        fresh.refs
        t0 = time.perf_counter()
        report_html.family_trees(res, fresh)
        times[mode] = time.perf_counter() - t0
    report_html._tree_svg = real_svg
    (labels, Xo), (_, Xs) = captured["fingerprints"], captured["sketches"]
    Zo = linkage(pdist(Xo) / np.sqrt(Xo.shape[1]), "average")
    Zs = linkage(pdist(Xs) / np.sqrt(Xs.shape[1]), "average")
    co, cs = _clusters(Zo), _clusters(Zs)
    r = np.corrcoef(cophenet(Zo), cophenet(Zs))[0, 1]
    fam = next(iter(_scan.family_groups(reports, fps)))
    print(f"{fam[0]} tree, {len(labels)} leaves ({a.refs} references in the library)")
    print(f"family_trees: fingerprints read {times['fingerprints']:.2f} s, sketches {times['sketches']:.3f} s")
    print(f"cophenetic correlation {r:.3f}; clusters in both trees {len(co & cs)} of {len(co)}")
    print(f"tree height: fingerprints {Zo[:, 2].max():.3f}, sketches {Zs[:, 2].max():.3f}")
    for i, lab in enumerate(labels):
        if not lab.endswith(".safetensors"):
            continue
        near = [sorted(labels[j] for j in min((c for c in cl if i in c and len(c) > 1), key=len) if j != i)[:6]
                for cl in (co, cs)]
        print(f"  {lab}: with {near[0]} | sketches: with {near[1]}")


if __name__ == "__main__":
    main()

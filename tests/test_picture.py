"""The picture of a report (fpcore.picture): the SVG parsed as XML, on reports the engine made
from real files (derivative, same weights, block-weighted merge, unknown) and on hand-made
reports for a library of hundreds of references and for damaged reports; the Pillow drawing
of the same scene."""
from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET

import pytest

import testkit
from fpcore import picture
from fpcore.identify import identify

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    assert svg.startswith("<svg"), svg[:80]
    return ET.fromstring(svg)


def groups(root, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(NS + "g") if cls in (e.get("class") or "").split()]


def texts(el) -> str:
    return " ".join(t.text or "" for t in el.iter(NS + "text"))


def tree_names(root) -> set[str]:
    return {g.get("data-name") for g in groups(root, "mfp-node") if g.get("data-kind") == "ref"}


def edges(root, kind: str) -> list[ET.Element]:
    return [e for e in root.iter(NS + "polyline") if e.get("data-kind") == kind]


def check_legend_and_strip(root, rep):
    legend = groups(root, "mfp-legend")
    assert len(legend) == 1
    items = groups(legend[0], "mfp-legend-item")
    assert {g.get("data-relation") for g in items} - {None} == set(picture.RELATIONS) | {"not_compared"}
    assert {g.get("data-edge") for g in items} - {None} == {"parent", "derivative", "merge", "unrelated"}
    strip = {g.get("data-component"): g for g in groups(root, "mfp-comp")}
    assert list(strip) == rep["architecture"]["components"]
    for c, g in strip.items():
        e = rep["components"].get(c) or {}
        assert g.get("data-relation") == (e.get("relation") or "not_compared")
        assert g.get("data-ref") == (e.get("ref") or "")
        if e.get("ref"):
            assert e["ref"] in texts(g)


@pytest.fixture
def report(tmp_path, db):
    def make(name, sd, dtype="F16"):
        p = tmp_path / f"{name}.safetensors"
        testkit.write_safetensors(p, sd, dtype)
        return identify(p, db, hashes=False)
    return make


def test_derivative_hangs_under_its_base(report, lineage, db):
    rep = report("tuned", testkit.finetune(lineage["Child"], 0.1, 5, comps=("unet", "clip_l")))
    assert rep["verdict"]["relation"] == "derivative" and rep["verdict"]["base"] == "Child", rep["verdict"]
    root = parse(picture.svg(rep, picture.reference_tree(db)))
    assert tree_names(root) == {"Base", "Child", "Other"}
    (f,) = groups(root, "mfp-file")
    assert f.get("data-relation") == "derivative"
    # the edge runs from the base to the file and carries the distance and the confidence
    (e,) = edges(root, "derivative")
    assert (e.get("data-from"), e.get("data-to")) == ("Child", "tuned.safetensors")
    cand = next(c for c in rep["candidates"] if c["ref"] == "Child")
    assert float(f.get("data-distance")) == pytest.approx(cand["distance"], abs=1e-4)
    assert float(f.get("data-confidence")) == pytest.approx(rep["verdict"]["confidence"], abs=1e-3)
    assert f"distance {cand['distance']:.3f}" in texts(f) and f"confidence {rep['verdict']['confidence']:.2f}" in texts(f)
    # the file row sits right under Child, one level deeper
    nodes = [g.get("data-name") for g in groups(root, "mfp-node")]
    assert nodes.index("tuned.safetensors") == nodes.index("Child") + 1
    assert {(e.get("data-from"), e.get("data-to")) for e in edges(root, "parent")} >= {("Base", "Child"), ("Base", "Other")}
    assert not groups(root, "mfp-merge")
    check_legend_and_strip(root, rep)


def test_same_weights_sit_on_the_reference(report, lineage, db):
    rep = report("base_bf16", lineage["Base"], "BF16")
    assert rep["verdict"]["relation"] == "same_weights"
    root = parse(picture.svg(rep, picture.reference_tree(db)))
    (f,) = groups(root, "mfp-file")
    assert f.get("data-on") == "Base" and f.get("data-relation") == "same_weights"
    assert "same weights" in texts(f)
    assert not edges(root, "derivative") and not groups(root, "mfp-merge")
    check_legend_and_strip(root, rep)


def test_block_weighted_merge_bars(report, lineage, db):
    bw = {"input": [0.2, 0.8], "middle": [0.5, 0.5], "output": [0.9, 0.1]}
    rep = report("blend", testkit.merge([(lineage["Child"], 0.5), (lineage["Other"], 0.5)], bw))
    assert rep["verdict"]["relation"] == "merge" and rep.get("merge_blocks"), rep["verdict"]
    root = parse(picture.svg(rep, picture.reference_tree(db)))
    (bar,) = groups(root, "mfp-merge")
    bars = {g.get("data-group"): g for g in groups(bar, "mfp-bar")}
    assert list(bars) == ["whole model", "input", "middle", "output"]
    want = {"whole model": {m["ref"]: m["weight"] for m in rep["merge"]}}
    want.update({g: {m["ref"]: m["weight"] for m in ws} for g, ws in rep["merge_blocks"].items()})
    full = None
    for g, el in bars.items():
        segs = [r for r in el.iter(NS + "rect") if r.get("class") == "mfp-seg"]
        widths = {r.get("data-ref"): float(r.get("width")) for r in segs}
        total = sum(widths.values())
        full = full or total
        assert total == pytest.approx(full, abs=0.5)                  # every bar spans the same width
        tot_w = sum(want[g].values())
        for ref, w in want[g].items():                                # and each segment its share
            assert widths[ref] / total == pytest.approx(w / tot_w, abs=0.002), (g, ref)
        xs = sorted(float(r.get("x")) for r in segs)                  # side by side, no gaps
        assert all(b - a > 0 for a, b in zip(xs, xs[1:]))
    # the tree: a weighted edge from each member to the file; wider for the larger weight
    es = {e.get("data-from"): e for e in edges(root, "merge")}
    assert set(es) == {m["ref"] for m in rep["merge"]}
    ws = sorted((float(e.get("data-weight")), float(e.get("stroke-width"))) for e in es.values())
    assert ws[0][1] <= ws[-1][1]
    assert {g.get("data-name") for g in groups(root, "mfp-node") if g.get("data-role") == "member"} == set(es)
    check_legend_and_strip(root, rep)


def test_unknown_stands_apart_with_nearest_and_why(report, lineage, db):
    rep = report("indep", lineage["Indep"])
    assert rep["verdict"]["relation"] == "unknown"
    root = parse(picture.svg(rep, picture.reference_tree(db)))
    (f,) = groups(root, "mfp-file")
    assert f.get("data-relation") == "unknown"
    (e,) = edges(root, "unrelated")
    assert e.get("stroke-dasharray") and e.get("data-from") == rep["candidates"][0]["ref"]
    assert f"nearest: {rep['candidates'][0]['ref']}" in texts(f)
    assert "why:" in texts(f) and "cos" in texts(f)
    check_legend_and_strip(root, rep)


def _big_library(n=400):
    tree = {"Root": {"parent": None, "family": "sdxl"}, "Mid": {"parent": "Root", "family": "sdxl"},
            "Leaf": {"parent": "Mid", "family": "sdxl"}, "Other SD1": {"parent": None, "family": "sd1"}}
    parents = ["Root", "Mid", "Leaf"]
    for i in range(n):
        tree[f"tune {i:03d}"] = {"parent": parents[i % 3], "family": "sdxl"}
    for i in range(20):
        tree[f"root {i}"] = {"parent": None, "family": "sdxl"}
    return tree


def _report(rel, base=None, lineage=(), merge=(), cands=(), comps=None, blocks=None):
    rep = {"path": "/x/model.safetensors", "error": None,
           "architecture": {"family": "sdxl", "components": ["unet", "clip_l", "clip_g", "vae"]},
           "verdict": {"relation": rel, "base": base, "lineage": list(lineage), "confidence": 0.8, "summary": "s"},
           "merge": [{"ref": r, "weight": w} for r, w in merge], "candidates": list(cands),
           "components": comps if comps is not None else {"unet": {"relation": rel, "ref": base}}}
    if blocks:
        rep["merge_blocks"] = blocks
    return rep


def test_hundreds_of_references_fold_to_the_lineage_and_nearest_siblings():
    tree = _big_library(400)
    cands = [{"ref": f"tune {i:03d}", "distance": 0.1 + i / 1000, "related": True} for i in (2, 5, 8, 11, 14)]
    rep = _report("derivative", "Leaf", ["Root", "Mid", "Leaf"], cands=cands)
    root = parse(picture.svg(rep, tree))
    nodes = groups(root, "mfp-node")
    folds = groups(root, "mfp-fold")
    assert len(nodes) + len(folds) <= 30, len(nodes) + len(folds)
    shown = {g.get("data-name") for g in nodes if g.get("data-kind") == "ref"}
    assert {"Root", "Mid", "Leaf"} <= shown and "Other SD1" not in shown      # another family is left out
    # the nearest siblings are the ones shown (candidates 2, 5, 8 are children of Leaf)
    assert {"tune 002", "tune 005", "tune 008"} <= shown
    # every reference of the family is either drawn or counted in a fold
    family = sum(1 for v in tree.values() if v["family"] == "sdxl")
    assert len(shown) + sum(int(g.get("data-count")) for g in folds) == family
    assert float(root.get("height")) < 900


def test_small_library_is_drawn_whole():
    tree = {f"r{i}": {"parent": None if i == 0 else "r0", "family": "sdxl"} for i in range(picture.SMALL_TREE)}
    root = parse(picture.svg(_report("derivative", "r1", ["r0", "r1"]), tree))
    assert tree_names(root) == set(tree) and not groups(root, "mfp-fold")


def test_equal_block_weights_give_one_bar():
    same = [{"ref": "A", "weight": 0.5}, {"ref": "B", "weight": 0.5}]
    rep = _report("merge", "A", merge=[("A", 0.5), ("B", 0.5)], blocks={"input": same, "output": same})
    root = parse(picture.svg(rep, {"A": {"parent": None, "family": "sdxl"}, "B": {"parent": None, "family": "sdxl"}}))
    assert [g.get("data-group") for g in groups(root, "mfp-bar")] == ["whole model"]


@pytest.mark.parametrize("rep", [
    _report("merge", "A", merge=[("A", 3), ("B", 1)]) | {"merge": {"A": 3, "B": 1}},        # a dict recipe
    _report("merge", "A") | {"merge": [["A", 0.7], ["B", None], "junk", {"weight": 1}]},     # odd entries
    _report("merge", "A", merge=[("A", 1.0)], blocks={"input": "?", "output": None}),
    _report("derivative", "Gone", ["Old", "Gone"]) | {"components": None, "candidates": None},
    _report("bogus-relation") | {"architecture": None},
    _report("unknown") | {"verdict": {"relation": "unknown"}},
])
def test_damaged_reports_still_draw(rep):
    root = parse(picture.svg(rep, {"A": {"parent": "Missing", "family": None}}))
    assert groups(root, "mfp-legend") and groups(root, "mfp-file")


def test_unregistered_ancestor_is_marked():
    rep = _report("derivative", "Kid", ["Grandpa", "Kid"])
    root = parse(picture.svg(rep, {"Kid": {"parent": "Grandpa", "family": "sdxl"}}))
    kinds = {g.get("data-name"): g.get("data-kind") for g in groups(root, "mfp-node")}
    assert kinds["Grandpa"] == "unregistered" and kinds["Kid"] == "ref"
    assert "(not registered)" in texts(root)


def test_error_report_has_no_picture():
    assert picture.svg({"path": "x", "error": "truncated file", "verdict": None}) == ""
    assert picture.svg(None) == "" and picture.image({"error": "x"}) is None


def test_names_are_escaped_and_pattern_ids_kept_apart():
    evil = 'A <b>&"quote"</b>'
    rep = _report("merge", evil, merge=[(evil, 0.6), ("B", 0.4)])
    tree = {evil: {"parent": None, "family": "sdxl"}, "B": {"parent": None, "family": "sdxl"}}
    s1, s2 = picture.svg(rep, tree, uid="one"), picture.svg(rep, tree, uid="two")
    root = parse(s1)
    assert evil in {g.get("data-name") for g in groups(root, "mfp-node")}
    ids1 = set(re.findall(r'id="([^"]+)"', s1))
    ids2 = set(re.findall(r'id="([^"]+)"', s2))
    assert ids1 and not ids1 & ids2
    for ref in re.findall(r"url\(#([^)]+)\)", s1):                  # every pattern used is defined
        assert ref in ids1
    assert "<script" not in s1 and "http" not in s1.replace("http://www.w3.org/2000/svg", "")


def test_relation_styles_differ_in_pattern_not_only_colour():
    patterns = [p for _, _, p in picture.RELATIONS.values()]
    assert len(set(patterns)) == len(patterns)
    assert len({c for c, _ in picture.MEMBER_STYLES}) == len(picture.MEMBER_STYLES)


def _swatch_boxes(sc, cls):
    out = {}

    def walk(items, key):
        for it in items:
            if it["t"] == "g":
                d = it.get("data") or {}
                walk(it["items"], d.get("relation") or d.get("ref") if it.get("cls") == cls else key)
            elif it["t"] == "rect" and key and key not in out:
                out[key] = (it["x"], it["y"], it["w"], it["h"], it["fill"])
    walk(sc.items, None)
    return out


def test_pillow_draws_the_same_scene_readable_in_greyscale():
    pytest.importorskip("PIL")
    rep = _report("merge", "A", merge=[("A", 0.75), ("B", 0.25)])
    sc = picture.scene(rep, {"A": {"parent": None, "family": "sdxl"}, "B": {"parent": None, "family": "sdxl"}})
    img = picture.to_image(sc, scale=2)
    assert img.size == (sc.width * 2, sc.height * 2)
    # the whole-model bar: member A is solid orange over 75% of the bar, B patterned blue over 25%
    segs = [it for g in sc.items if g["t"] == "g" for it in _flat(g) if it.get("cls") == "mfp-seg"]
    a = next(s for s in segs if s["data"]["ref"] == "A")
    b = next(s for s in segs if s["data"]["ref"] == "B")
    assert b["w"] / (a["w"] + b["w"]) == pytest.approx(0.25, abs=1e-6)
    px = img.getpixel((int((a["x"] + 4) * 2), int((a["y"] + 3) * 2)))
    assert px == picture._rgb(picture.MEMBER_STYLES[0][0])
    region = img.crop((int(b["x"] * 2) + 2, int(b["y"] * 2) + 2, int((b["x"] + b["w"]) * 2) - 2,
                       int((b["y"] + 6) * 2)))
    colours = set(_pixels(region))
    assert picture._rgb(picture.MEMBER_STYLES[1][0]) in colours and len(colours) > 2   # colour + pattern
    # greyscale: each legend swatch differs from every other in mean grey or in texture
    grey = img.convert("L")
    sig = {}
    for key, (x, y, w, h, _) in _swatch_boxes(sc, "mfp-legend-item").items():
        box = grey.crop((int(x * 2) + 3, int(y * 2) + 3, int((x + w) * 2) - 3, int((y + h) * 2) - 3))
        vals = list(_pixels(box))
        mean = sum(vals) / len(vals)
        sig[key] = (mean, (sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5)
    assert set(sig) == set(picture.RELATIONS) | {"not_compared"}
    for (k1, s1), (k2, s2) in itertools.combinations(sig.items(), 2):
        assert abs(s1[0] - s2[0]) > 12 or abs(s1[1] - s2[1]) > 12, (k1, s1, k2, s2)


def _pixels(img):
    return list(getattr(img, "get_flattened_data", img.getdata)())      # Pillow 13 renamed getdata


def _flat(g):
    for it in g.get("items", []):
        yield it
        if it["t"] == "g":
            yield from _flat(it)

"""Verdicts a user can act on (issue 12): every component counts, merges are named by their
recipe, nothing reclaimable that differs, confidence explained, tags never downgraded."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import testkit
from fpcore import layout
from fpcore.cli import main
from fpcore.identify import identify
from fpcore.refs.library import RefDB
from fpcore.scan import scan_folder

_convert = testkit.convert


def _swap(sd: dict, donor: dict, comp: str) -> dict:
    """``sd`` with component ``comp`` taken from ``donor``."""
    return {k: (donor[k] if layout.canonical(k)[0] == comp else v) for k, v in sd.items()}


def _bf16(sd: dict) -> dict:
    return {k: _convert(v, "F16").astype(np.float32) if v.dtype == np.float32 else v for k, v in sd.items()}


@pytest.fixture(scope="module")
def variants(lineage):
    child = lineage["Child"]
    return {
        "child": child,
        "vae_swap": _swap(child, lineage["Indep"], "vae"),
        "te_trained": testkit.finetune(child, 0.05, 21, comps=("clip_l",)),
        "mix": testkit.merge([(lineage["Child"], 0.5), (lineage["Other"], 0.5)]),
    }


def _write(d, name, sd, dtype="F16"):
    testkit.write_safetensors(d / f"{name}.safetensors", sd, dtype)
    return d / f"{name}.safetensors"


# -- defect 2: trained text encoders are not "same weights" --------------------------------------
def test_trained_text_encoder_is_a_derivative_and_says_what_differs(tmp_path, variants, db):
    rep = identify(_write(tmp_path, "te", variants["te_trained"]), db, hashes=False)
    v = rep["verdict"]
    assert rep["components"]["unet"]["relation"] == "same_weights"
    assert rep["components"]["clip_l"]["relation"] == "derivative"
    assert (v["relation"], v["base"]) == ("derivative", "Child")
    assert "UNet" in v["summary"] and "text encoder" in v["summary"] and "fine-tuned" in v["summary"]
    assert "clip_l" in v["differs"] and "unet" not in v["differs"]


def test_vae_swap_keeps_the_relation_but_is_named(tmp_path, variants, db):
    rep = identify(_write(tmp_path, "vs", variants["vae_swap"]), db, hashes=False)
    v = rep["verdict"]
    assert (v["relation"], v["base"]) == ("same_weights", "Child")
    assert v["differs"] == ["vae"]
    assert "VAE" in v["summary"]


def test_plain_copy_differs_in_nothing(tmp_path, variants, db):
    rep = identify(_write(tmp_path, "c", variants["child"], "BF16"), db, hashes=False)
    assert rep["verdict"]["relation"] == "same_weights" and rep["verdict"]["differs"] == []


# -- defect 5: a shared component is named after its oldest carrier --------------------------------
def test_shared_vae_named_after_the_oldest_ancestor(tmp_path, lineage, zoo_dir):
    # the root's name sorts last, as SDXL's after Illustrious' and Pony's: Base's VAE, carried
    # unchanged by Child and Other, is still named after Base whatever the file
    from fpcore.identify import add_reference
    db = RefDB(tmp_path / "refs", builtin_dir=tmp_path / "none")
    for name, file, parent in (("Zeta base", "Base", None), ("Child", "Child", "Zeta base"),
                               ("Other", "Other", "Zeta base")):
        add_reference(db, zoo_dir / f"{file}.safetensors", name, parent=parent, hashes=False)
    for name in ("Child", "Other", "Base"):
        rep = identify(_write(tmp_path, name, lineage[name], "BF16"), db, hashes=False)
        vae = rep["components"]["vae"]
        assert (vae["relation"], vae["ref"]) == ("same_weights", "Zeta base"), name
        assert vae["also_in"] == ["Child", "Other"]


# -- defect 3: a merge is named by its recipe ------------------------------------------------------
def test_merge_lineage_is_the_common_ancestry(tmp_path, variants, db):
    rep = identify(_write(tmp_path, "mix", variants["mix"]), db, hashes=False)
    v = rep["verdict"]
    assert v["relation"] == "merge"
    assert v["lineage"] == ["Base"] and v["base"] == "Base"
    assert {m["ref"]: m["lineage"] for m in rep["merge"]} == {"Child": ["Base", "Child"], "Other": ["Base", "Other"]}
    assert "Child 50%" in v["summary"] and "Other 50%" in v["summary"]


def test_merge_sidecar_names_the_recipe(tmp_path, variants, db, capsys):
    d = tmp_path / "m"
    d.mkdir()
    _write(d, "mix", variants["mix"])
    assert main(["scan", str(d), "--write-tags", "--refs", str(db.user_dir)]) == 0
    out = capsys.readouterr().out
    side = json.loads((d / "mix.json").read_text())
    assert side["base_model"] == "merge: Child 50% + Other 50%"
    assert [m["ref"] for m in side["merge"]] == ["Child", "Other"]
    assert side["lineage"] == ["Base"]
    assert "Child 50% + Other 50%" in out.split("\n")[0]


def test_merge_everywhere_a_user_sees_it(tmp_path, variants, db):
    from fpcore.scan import html as report_html
    from fpcore import ui
    from fpcore.identify import base_label
    rep = identify(_write(tmp_path, "mix", variants["mix"]), db, hashes=False)
    assert base_label(rep) == "merge: Child 50% + Other 50%"
    assert "Child 50% + Other 50%" in ui.format_report(rep)
    res = {"root": str(tmp_path), "reports": [rep], "groups": [], "tags": [], "errors": []}
    assert "Child 50% + Other 50%" in report_html.render(res)
    assert ui.table_rows(res, str(tmp_path))[0][2] == "merge: Child 50% + Other 50%"


def test_comfy_base_output_names_the_recipe(tmp_path, variants, db, monkeypatch):
    import sys
    import types
    from test_comfy_glue import PACK, load_pack
    monkeypatch.setitem(sys.modules, "folder_paths", types.ModuleType("folder_paths"))
    load_pack()
    try:
        nodes = sys.modules[PACK + ".nodes"]
        rep = identify(_write(tmp_path, "mix", variants["mix"]), db, hashes=False)
        assert nodes._base(rep) == "merge: Child 50% + Other 50%"
        assert nodes._base({"verdict": None, "error": "x"}) == "unknown"
    finally:
        for k in [k for k in sys.modules if k.startswith(PACK)]:
            del sys.modules[k]


def test_cli_identify_line_names_the_recipe(tmp_path, variants, db, capsys):
    p = _write(tmp_path, "mix", variants["mix"])
    assert main(["identify", str(p), "--no-hash", "--no-cache", "--refs", str(db.user_dir)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "verdict:" in x)
    assert "Child 50% + Other 50%" in line


# -- defect 1: nothing reclaimable that differs --------------------------------------------------
@pytest.fixture(scope="module")
def scanned(tmp_path_factory, variants):
    d = tmp_path_factory.mktemp("folder")
    _write(d, "child", variants["child"])
    _write(d, "child_bf16", _bf16(variants["child"]), "BF16")
    _write(d, "child_vae_swap", variants["vae_swap"])
    _write(d, "child_te_trained", variants["te_trained"])
    refs = tmp_path_factory.mktemp("refs")
    res = scan_folder(d, db=RefDB(refs, builtin_dir=refs / "none"), cache_dir=tmp_path_factory.mktemp("cache"))
    return d, res


def test_reclaimable_only_where_every_component_is_the_same(scanned):
    d, res = scanned
    sizes = {p.name: p.stat().st_size for p in d.glob("*.safetensors")}
    names = lambda g: sorted(os.path.basename(p) for p in g["paths"])  # noqa: E731
    same = [g for g in res["groups"] if g["relation"] == "same_weights"]
    assert [names(g) for g in same] == [["child.safetensors", "child_bf16.safetensors"]]
    assert same[0]["reclaimable_bytes"] == min(sizes["child.safetensors"], sizes["child_bf16.safetensors"])
    den = [g for g in res["groups"] if g["relation"] == "same_denoiser"]
    assert len(den) == 1 and names(den[0]) == sorted(sizes)
    assert den[0]["reclaimable_bytes"] == 0
    assert den[0]["label"] == "same UNet; text encoder and VAE differ"
    for g in res["groups"]:
        if g["reclaimable_bytes"]:
            assert "child_vae_swap.safetensors" not in names(g) and "child_te_trained.safetensors" not in names(g)


def test_vae_swap_group_is_labelled(tmp_path, variants):
    _write(tmp_path, "child", variants["child"])
    _write(tmp_path, "child_vae_swap", variants["vae_swap"])
    res = scan_folder(tmp_path, db=RefDB(tmp_path / "r", builtin_dir=tmp_path / "n"), cache_dir=tmp_path / "c")
    assert [(g["relation"], g["label"], g["reclaimable_bytes"]) for g in res["groups"]] == [
        ("same_denoiser", "same UNet and text encoder; VAE differs", 0)]


def test_folder_relation_of_a_vae_swap_is_not_same_weights(scanned):
    d, res = scanned
    r = {os.path.basename(x["path"]): x for x in res["reports"]}
    f = r["child_vae_swap.safetensors"]["folder"]
    assert f["relation"] == "same_denoiser" and f["differs"] == ["vae"]
    assert r["child_bf16.safetensors"]["folder"]["relation"] == "same_weights"


def test_scan_outputs_follow_the_rule(scanned, tmp_path, capsys):
    from fpcore.scan import html as report_html
    from fpcore import ui
    d, res = scanned
    page = report_html.render(res)
    assert "same UNet; text encoder and VAE differ" in page
    assert "VAE differ" in ui.scan_summary(res, False)
    from fpcore.scan import reclaimable_total
    total = reclaimable_total(res["groups"])
    assert total == min(os.path.getsize(d / "child.safetensors"), os.path.getsize(d / "child_bf16.safetensors"))


# -- defect 6: confidence and evidence explained ----------------------------------------------------
def test_unknown_with_nothing_comparable_has_no_confidence(tmp_path, lineage):
    empty = RefDB(tmp_path / "r", builtin_dir=tmp_path / "n")
    rep = identify(_write(tmp_path, "c", lineage["Child"]), empty, hashes=False)
    assert rep["verdict"]["relation"] == "unknown" and rep["verdict"]["confidence"] is None


def test_reason_shown_when_confidence_below_one(tmp_path, lineage, db, capsys):
    p = _write(tmp_path, "ind", testkit.finetune(lineage["Indep"], 0.05, 3))
    assert main(["identify", str(p), "--no-hash", "--no-cache", "--refs", str(db.user_dir)]) == 0
    rep = identify(p, db, hashes=False)
    out = capsys.readouterr().out
    assert rep["verdict"]["confidence"] < 1 and rep["verdict"]["reason"]
    assert "why:" in out and rep["verdict"]["reason"] in out
    assert "z:" in out and "cos:" in out     # evidence words explained where shown


def test_html_and_ui_carry_a_legend_and_reasons(tmp_path, lineage, db):
    from fpcore.scan import html as report_html
    from fpcore import ui
    p = _write(tmp_path, "ind", testkit.finetune(lineage["Indep"], 0.05, 3))
    rep = identify(p, db, hashes=False)
    res = {"root": str(tmp_path), "reports": [rep], "groups": [], "tags": [], "errors": []}
    page = report_html.render(res)
    assert "Legend" in page and "same_weights" in page and "confidence" in page.lower()
    assert rep["verdict"]["reason"].split(" (")[0] in page
    md = ui.format_report(rep)
    assert "why:" in md and "Legend" in md


# -- defect 7: tags never downgraded ----------------------------------------------------------------
def test_unknown_never_replaces_what_the_user_set(tmp_path):
    from fpcore.scan import tags
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"")
    (tmp_path / "m.json").write_text(json.dumps({"sd_version_str": "SdVersion.SDXL", "sd version": "SDXL"}))
    unknown = {"architecture": {"family": "unknown", "kind": "checkpoint"},
               "verdict": {"relation": "unknown", "base": None, "lineage": []}, "merge": []}
    tags.write(model, tags.tags_for(unknown))
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["sd_version_str"] == "SdVersion.SDXL" and side["sd version"] == "SDXL"
    lora = dict(unknown, architecture={"family": "unknown", "kind": "lora"})
    tags.write(model, tags.tags_for(lora))
    assert json.loads((tmp_path / "m.json").read_text())["sd version"] == "SDXL"


def test_unknown_never_replaces_an_earlier_surer_run(tmp_path):
    from fpcore.scan import tags
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"")
    known = {"architecture": {"family": "sdxl", "kind": "checkpoint"},
             "verdict": {"relation": "derivative", "base": "SDXL base 1.0", "lineage": ["SDXL base 1.0"],
                         "confidence": 0.9}, "merge": []}
    tags.write(model, tags.tags_for(known))
    unknown = {"architecture": {"family": "unknown", "kind": "checkpoint"},
               "verdict": {"relation": "unknown", "base": None, "lineage": [], "confidence": None}, "merge": []}
    tags.write(model, tags.tags_for(unknown))
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["base_model"] == "SDXL base 1.0" and side["relation"] == "derivative"
    assert side["sd_version_str"] == "SdVersion.SDXL"
    # where nothing was set, the unknown is written
    other = tmp_path / "n.safetensors"
    other.write_bytes(b"")
    tags.write(other, tags.tags_for(unknown))
    assert json.loads((tmp_path / "n.json").read_text())["relation"] == "unknown"

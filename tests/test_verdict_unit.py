"""fpcore.identify.verdict on in-memory fingerprints (no model files): per-component verdicts and
the whole file's, its sentence, what differs, the oldest carrier of a shared component, merges,
and files with nothing to compare. The expected values are what the files were built to be:
a copy of Child, Child with its text encoder trained further, Child with a foreign VAE, a merge
of two siblings, unrelated weights."""
from __future__ import annotations

import math

import numpy as np
import pytest

from _fpmem import finetune, make_fp, shared_direction, weights
from fpcore import arch
from fpcore.identify import identify_fingerprint
from fpcore.identify.verdict import _json_safe
from fpcore.refs import RefDB


def _model(seed):
    sd = weights(seed, n=6, prefix="unet:input_blocks")
    sd.update(weights(seed + 1, n=4, prefix="clip_l:text_model.encoder.layers", shape=(32, 32)))
    sd.update(weights(seed + 2, n=2, prefix="vae:decoder.up", shape=(32, 32)))
    return sd


def _part(sd, comp):
    return {k: v for k, v in sd.items() if k.startswith(comp + ":")}


@pytest.fixture(scope="module")
def family():
    base = _model(1)
    sh = shared_direction(base)
    unet_a = finetune(_part(base, "unet"), 0.3, 11, sh)
    unet_b = finetune(_part(base, "unet"), 0.3, 12, sh)
    child = {**base, **unet_a}                          # Child: Base with its UNet trained
    sibling = {**base, **unet_b}
    return {"Base": base, "Child": child, "Sibling": sibling, "shared": sh, "Indep": _model(90)}


@pytest.fixture
def db(tmp_path, family):
    d = RefDB(tmp_path / "refs", builtin_dir=tmp_path / "none")
    d.add(make_fp(family["Base"]), "Base", family="sd1", sha256="b" * 64)
    d.add(make_fp(family["Child"]), "Child", parent="Base", family="sd1")
    d.add(make_fp(family["Sibling"]), "Sibling", parent="Base", family="sd1")
    return d


def _arch(fp, family="sd1", rule="sd1", kind="checkpoint", dtype="fp16"):
    return arch.ArchResult(family, None, rule, arch.components_for(rule, fp.keys), dtype, "eps", kind=kind)


def ident(sd, db, sha=None, **kw):
    fp = make_fp(sd)
    return identify_fingerprint(fp, _arch(fp, **kw), db, sha)


def test_a_copy_is_the_same_weights_and_shared_parts_are_named_after_the_oldest_carrier(family, db):
    rep = ident(family["Child"], db)
    v, c = rep["verdict"], rep["components"]
    assert (v["relation"], v["base"], v["lineage"], v["confidence"]) == ("same_weights", "Child", ["Base", "Child"], 1.0)
    assert v["differs"] == [] and v["summary"] == "Same weights as Child, stored as fp16."
    assert (c["unet"]["relation"], c["unet"]["ref"]) == ("same_weights", "Child") and "also_in" not in c["unet"]
    for comp in ("clip_l", "vae"):        # Base's, carried unchanged by Child and Sibling
        assert (c[comp]["relation"], c[comp]["ref"], c[comp]["also_in"]) == ("same_weights", "Base", ["Child", "Sibling"])
    assert [x["ref"] for x in rep["candidates"]][0] == "Child" and rep["merge"] == []
    assert rep["verdict"]["evidence"]["share"] == pytest.approx(1.0)


def test_same_sha256_is_identical_everywhere(family, db):
    rep = ident(family["Base"], db, sha="b" * 64)
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("identical", "Base")
    assert rep["verdict"]["summary"] == "Identical to Base (same SHA-256)."
    for comp, e in rep["components"].items():
        assert (e["relation"], e["ref"], e["confidence"], e["code"]) == ("identical", "Base", 1.0, "identical"), comp
        assert "also_in" not in e
    assert ident(family["Base"], db, sha="c" * 64)["verdict"]["relation"] == "same_weights"


def test_a_trained_text_encoder_makes_a_copy_of_the_unet_a_derivative(family, db):
    sd = {**family["Child"], **finetune(_part(family["Child"], "clip_l"), 0.3, 21, family["shared"])}
    rep = ident(sd, db)
    v, c = rep["verdict"], rep["components"]
    assert (c["unet"]["relation"], c["unet"]["ref"]) == ("same_weights", "Child")
    assert (c["clip_l"]["relation"], c["clip_l"]["ref"]) == ("derivative", "Base")
    assert (v["relation"], v["base"], v["lineage"]) == ("derivative", "Child", ["Base", "Child"])
    assert v["confidence"] == min(c["unet"]["confidence"], c["clip_l"]["confidence"]) < 1.0
    assert v["differs"] == ["clip_l"]
    assert v["summary"] == "UNet the same weights as Child; text encoder fine-tuned from Base."
    assert v["reason"].startswith("UNet: ") and "; CLIP-L: " in v["reason"]
    # the same text encoder on a file identical to Child
    v = ident(sd, db, sha=None)["verdict"]
    assert v["relation"] == "derivative"


def test_an_unrelated_text_encoder_and_a_foreign_vae_are_named(family, db):
    sd = {**family["Child"], **_part(family["Indep"], "clip_l"), **_part(family["Indep"], "vae")}
    rep = ident(sd, db)
    v, c = rep["verdict"], rep["components"]
    assert (c["clip_l"]["relation"], c["vae"]["relation"]) == ("unknown", "unknown")
    assert (v["relation"], v["base"]) == ("derivative", "Child") and v["differs"] == ["clip_l", "vae"]
    assert v["summary"] == ("UNet the same weights as Child; text encoder not related to any registered reference's. "
                            "Its baked-in VAE differs from Child's (not one a registered reference carries).")


def test_a_fine_tuned_vae_is_named_as_such(family, db):
    sd = {**family["Child"], **finetune(_part(family["Base"], "vae"), 0.3, 31, family["shared"])}
    v = ident(sd, db)["verdict"]
    assert (v["relation"], v["base"], v["differs"]) == ("same_weights", "Child", ["vae"])
    assert v["summary"] == ("Same weights as Child, stored as fp16. Its baked-in VAE differs from Child's "
                            "(a fine-tune of Base's).")


def test_a_merge_of_siblings_has_their_common_ancestry_as_its_base(family, db):
    sd = {k: 0.6 * family["Child"][k] + 0.4 * family["Sibling"][k] for k in family["Child"]}
    rep = ident(sd, db)
    v = rep["verdict"]
    assert (v["relation"], v["base"], v["lineage"]) == ("merge", "Base", ["Base"])
    assert [(m["ref"], m["lineage"]) for m in rep["merge"]] == [("Child", ["Base", "Child"]),
                                                                 ("Sibling", ["Base", "Sibling"])]
    assert [m["weight"] for m in rep["merge"]] == pytest.approx([0.6, 0.4], abs=0.02)
    assert v["summary"].startswith("A merge: Child 6") and v["summary"].endswith("(common ancestry: Base).")
    assert "merge_blocks" not in rep
    # the text encoder (Base's, in both) is not a merge: no merge verdict outside the denoiser
    assert rep["components"]["clip_l"]["relation"] == "same_weights"


def test_unrelated_and_unreferenced_files(family, db, tmp_path):
    rep = ident(family["Indep"], db)
    v = rep["verdict"]
    assert (v["relation"], v["base"], v["lineage"]) == ("unknown", None, [])
    assert v["summary"] == "This SD1.x model is not related to any registered SD1.x reference (unknown base)."
    assert v["differs"] == ["unet", "clip_l", "vae"]
    # no reference of its family
    rep = ident(family["Indep"], db, family="sdxl", rule="sdxl")
    assert rep["verdict"]["summary"] == ("This SDXL model: no SDXL reference is registered to compare it with "
                                         "(add one with `fpcore refs add`).")
    assert rep["components"]["unet"]["confidence"] is None and rep["components"]["unet"]["code"] == "no_reference"
    empty = RefDB(tmp_path / "empty", builtin_dir=tmp_path / "none2")
    assert ident(family["Indep"], empty)["verdict"]["relation"] == "unknown"


def test_a_file_without_a_denoiser_or_anything_to_compare(family, db):
    fp = make_fp({"other:lora_unet_x.lora_down.weight": np.ones((4, 8))})
    a = arch.ArchResult("sdxl", None, "lora", [], "fp16", None, kind="lora")
    rep = identify_fingerprint(fp, a, db)
    v = rep["verdict"]
    assert (v["relation"], v["confidence"], v["differs"]) == ("unknown", None, [])
    assert v["summary"] == "A LoRA for SDXL; it has no denoiser weights to compare with references."
    assert rep["components"] == {} and rep["candidates"] == []
    a = arch.ArchResult("unknown", None, "lora", [], None, None, kind="mystery")
    assert identify_fingerprint(fp, a, db)["verdict"]["summary"] == \
        "A mystery; it has no denoiser weights to compare with references."


def test_reports_are_strict_json():
    assert _json_safe({"a": [1.5, float("inf"), (float("nan"), "x")], "b": {"c": -math.inf}}) == \
        {"a": [1.5, None, [None, "x"]], "b": {"c": None}}

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
from fpcore.identify.verdict import _json_safe, _summary
from fpcore.refs.library import RefDB


def _model(seed):
    sd = {}
    for i, group in enumerate(("input_blocks", "middle_block", "output_blocks")):   # the UNet's block groups
        sd.update(weights(seed * 10 + i, n=4, prefix=f"unet:{group}"))
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


def test_identical_by_sha256_overrides_every_comparison(family, db):
    """A file with a reference's SHA-256 is that reference's bytes: identical, certain, whatever
    the sampled comparison said (here it compared unrelated weights)."""
    for sd in (family["Indep"], {**family["Child"], **finetune(_part(family["Child"], "unet"), 0.05, 44,
                                                                  family["shared"])}):
        rep = ident(sd, db, sha="b" * 64)
        for comp, e in rep["components"].items():
            assert (e["relation"], e["ref"], e["confidence"], e["reason"]) == ("identical", "Base", 1.0,
                                                                               "same SHA-256"), comp


def test_nothing_comparable_has_no_confidence(family, db):
    """References of the family whose tensors the file does not share: no claim either way."""
    other = {k.replace("unet:", "unet:other_"): v for k, v in family["Child"].items()}
    rep = ident(other, db)
    e = rep["components"]["unet"]
    assert (e["relation"], e["confidence"], e["code"]) == ("unknown", None, "nothing_comparable")


def test_a_block_weighted_merge_lists_its_blocks(family, db):
    w = {"input_blocks": 0.8, "middle_block": 0.5, "output_blocks": 0.2}
    sd = dict(family["Child"])
    for k in sd:
        if k.startswith("unet:"):
            a = w[k.split(":")[1].split(".")[0]]
            sd[k] = a * family["Child"][k] + (1 - a) * family["Sibling"][k]
    rep = ident(sd, db)
    assert rep["verdict"]["relation"] == "merge"
    blocks = {g: {m["ref"]: m["weight"] for m in ms} for g, ms in rep["merge_blocks"].items()}
    assert blocks["input"] == pytest.approx({"Child": 0.8, "Sibling": 0.2}, abs=0.03)
    assert blocks["output"] == pytest.approx({"Child": 0.2, "Sibling": 0.8}, abs=0.03)
    assert " with different weights per UNet block (common ancestry: Base)." in rep["verdict"]["summary"]


def test_a_merge_of_unrelated_references_has_no_base(tmp_path, family):
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "none")
    d.add(make_fp(family["Base"]), "A", family="sd1")
    d.add(make_fp(family["Indep"]), "B", family="sd1")
    sd = {k: 0.5 * family["Base"][k] + 0.5 * family["Indep"][k] for k in family["Base"]}
    v = ident(sd, d)["verdict"]
    assert (v["relation"], v["base"], v["lineage"]) == ("merge", None, [])
    assert v["summary"] in ("A merge: A 50% + B 50%.", "A merge: B 50% + A 50%.")


def test_a_fine_tune_of_a_child_names_its_lineage(family, db):
    sd = {**family["Child"], **finetune(_part(family["Child"], "unet"), 0.05, 41, family["shared"])}
    v = ident(sd, db)["verdict"]
    assert (v["relation"], v["base"]) == ("derivative", "Child")
    assert v["summary"] == "A fine-tune or other derivative of Child (lineage: Base → Child)."
    sd = {**family["Base"], **finetune(_part(family["Base"], "unet"), 0.05, 42, family["shared"])}
    v = ident(sd, db)["verdict"]
    assert v["summary"] == "A fine-tune or other derivative of Base."


def test_text_encoders_are_never_called_a_merge(tmp_path, family):
    """Only the denoiser (or a partial file's bulk) may be a merge: a text encoder that is the
    average of two references' is placed as the nearest, not split between them."""
    base = family["Base"]
    te_a = finetune(_part(base, "clip_l"), 0.3, 51, family["shared"])
    te_b = finetune(_part(base, "clip_l"), 0.3, 52, family["shared"])
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "none")
    d.add(make_fp(base), "Base", family="sd1")
    d.add(make_fp({**base, **te_a}), "TA", parent="Base", family="sd1")
    d.add(make_fp({**base, **te_b}), "TB", parent="Base", family="sd1")
    sd = {**base, **{k: 0.5 * te_a[k] + 0.5 * te_b[k] for k in te_a}}
    rep = ident(sd, d)
    e = rep["components"]["clip_l"]
    assert (e["relation"], e["ref"]) == ("derivative", "Base")
    assert rep["verdict"]["relation"] == "derivative"


def test_two_text_encoders_unrelated_and_trained_are_different(tmp_path, family):
    sh = family["shared"]
    base = {**family["Base"], **weights(7, n=3, prefix="clip_g:transformer.resblocks", shape=(32, 32))}
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "none")
    d.add(make_fp(base), "XL", family="sdxl")
    sd = {**base, **finetune(_part(base, "clip_l"), 0.3, 61, sh),
          **weights(70, n=3, prefix="clip_g:transformer.resblocks", shape=(32, 32))}
    v = ident(sd, d, family="sdxl", rule="sdxl")["verdict"]
    assert v["summary"] == "UNet the same weights as XL; text encoders different."
    sd = {**base, **weights(71, n=4, prefix="clip_l:text_model.encoder.layers", shape=(32, 32)),
          **weights(70, n=3, prefix="clip_g:transformer.resblocks", shape=(32, 32))}
    v = ident(sd, d, family="sdxl", rule="sdxl")["verdict"]
    assert v["summary"] == "UNet the same weights as XL; text encoders not related to any registered reference's."


def test_an_unknown_family_is_compared_by_layout(family, db):
    """A file whose family is not told is compared with every reference of the same keys and shapes."""
    rep = ident(family["Child"], db, family="unknown")
    assert (rep["verdict"]["relation"], rep["verdict"]["base"]) == ("same_weights", "Child")
    shifted = {k: np.zeros((v.shape[0] + 1,) + v.shape[1:]) for k, v in family["Child"].items()}
    rep = ident(shifted, db, family="unknown")
    assert rep["components"]["unet"]["code"] == "no_reference"


class _PlainDB:
    """A reference database with only what identify_fingerprint needs (no index, no layout pool)."""

    def __init__(self, db):
        self.refs = db.refs
        self.lineage, self.parent, self.orphan = db.lineage, db.parent, db.orphan


def test_a_database_without_an_index_gives_the_same_verdicts(family, db):
    plain = _PlainDB(db)
    for sd, kw in ((family["Child"], {}), (family["Child"], {"family": "unknown"}), (family["Indep"], {})):
        a, b = ident(sd, db, **kw), ident(sd, plain, **kw)
        assert a["verdict"] == b["verdict"] and a["components"] == b["components"]


def test_a_verdict_on_a_sliver_of_the_file_is_unknown(family, db):
    """Child's weights (or a fine-tune of them) next to a tensor nine times their size that no SD1
    component holds: the compared tensors are a tenth of the parameters."""
    n = sum(v.size for v in family["Child"].values())
    big = np.random.default_rng(3).normal(0, 0.05, (9 * n // 256, 256))
    share = n / (n + big.size)
    head = "Too little of this SD1.x model can be compared with a registered reference to tell (too little of the " \
           "file is comparable: "
    v = ident({**family["Child"], "t5:encoder.block.0.layer.0.weight": big}, db)["verdict"]
    assert (v["relation"], v["base"], v["code"]) == ("unknown", None, "too_little_comparable")
    assert v["summary"] == head + f"the components with the same weights cover {share:.1%} of its parameters; " \
                                  "same weights needs 95%)."
    tuned = {**family["Child"], **finetune(_part(family["Child"], "unet"), 0.05, 43, family["shared"])}
    v = ident({**tuned, "t5:encoder.block.0.layer.0.weight": big}, db)["verdict"]
    assert (v["relation"], v["code"]) == ("unknown", "too_little_comparable")
    # the trained UNet is compared on its 2-D weights (biases are not aligned); the copied parts on every tensor
    biases = sum(x.size for k, x in family["Child"].items() if x.ndim < 2 and k.startswith("unet:"))
    share = (n - biases) / (n + big.size)
    assert v["summary"] == head + f"the compared tensors cover {share:.1%} of its parameters; a verdict needs 20%)."


def test_no_denoiser_says_why():
    fp = make_fp({"other:lora_unet_x.lora_down.weight": np.ones((4, 8))})
    v = identify_fingerprint(fp, arch.ArchResult("sdxl", None, "lora", [], None, None, kind="lora"), _EmptyDB())["verdict"]
    assert (v["reason"], v["base"], v["lineage"]) == ("no weights to compare", None, [])
    assert v["evidence"] == {"values": 0, "tensors": 0, "params": 0, "share": 0.0, "component_share": 0.0}
    rep = identify_fingerprint(fp, arch.ArchResult("sdxl", None, "lora", [], None, None, kind=None), _EmptyDB())
    assert set(rep) == {"verdict", "merge", "components", "candidates", "delta", "health"} and rep["merge"] == []
    assert rep["delta"] is None                               # nothing derived, nothing changed
    assert rep["verdict"]["summary"] == "A file for SDXL; it has no denoiser weights to compare with references."


class _EmptyDB:
    refs: dict = {}

    def lineage(self, name):
        return []


@pytest.mark.parametrize("dtype,want", [("Q8_0", "Same weights as X, quantised Q8_0."),
                                        ("IQ4_XS", "Same weights as X, quantised IQ4_XS."),
                                        ("fp8 (scaled)", "Same weights as X, stored as fp8 (scaled)."),
                                        (None, "Same weights as X, stored as another format.")])
def test_same_weights_sentence_by_storage(dtype, want):
    a = arch.ArchResult("sdxl", None, "sdxl", ["unet"], dtype, None)
    assert _summary("same_weights", "X", ["X"], {}, a, 1, "r") == want


@pytest.mark.parametrize("case", ["mismatch at the limit", "coverage at the limit"])
def test_the_oldest_carrier_at_the_same_weights_limits(tmp_path, case):
    """A text encoder two references carry, compared exactly at SAME_MAX_MISMATCH (4 of 4,000
    sampled values differ) or at SAME_MIN_COVERAGE (the references hold 19 of its 20 tensors):
    still the same weights, so still named after the oldest carrier."""
    unet = weights(1, n=4, prefix="unet:input_blocks")
    te = weights(2, n=25 if case.startswith("mismatch") else 20, prefix="clip_l:text_model.encoder.layers",
                 shape=(64, 64))
    base = {**unet, **te}
    child = {**base, **finetune(unet, 0.3, 3)}
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "none")
    if case.startswith("mismatch"):
        n = int(make_fp(te).view("clip_l").counts.sum())
        assert n == 4000
        f = {k: v.copy() for k, v in base.items()}
        f["clip_l:text_model.encoder.layers.0.0.weight"][-1, -4:] += 0.5      # 4 sampled values: 0.001
        d.add(make_fp(base), "Base", family="sd1")
        d.add(make_fp(child), "Child", parent="Base", family="sd1")
    else:
        dropped = "clip_l:text_model.encoder.layers.19.0.weight"
        f = {k: v for k, v in base.items() if not k.endswith(".bias") or not k.startswith("clip_l:")}
        d.add(make_fp({k: v for k, v in f.items() if k != dropped}), "Base", family="sd1")
        d.add(make_fp({k: v for k, v in {**f, **finetune(unet, 0.3, 3)}.items() if k != dropped}), "Child",
              parent="Base", family="sd1")
    e = ident(f, d)["components"]["clip_l"]
    assert (e["relation"], e["ref"], e["also_in"]) == ("same_weights", "Base", ["Child"])

"""fpcore.identify.verdict, continued (the in-memory family of tests/test_verdict_unit.py): the file
report of a published release's SHA-256 (named, registered, identical even where it cannot be
registered; the hash from the published list shipped in refs/) and of a registered reference's
hash, the sentences of unplaceable and text-encoder cases, oldest carriers, candidates, partial
files and the same-layout pool."""
from __future__ import annotations

from _fpmem import finetune, make_fp, weights
from fpcore.identify.verdict import file_report
from fpcore.refs.library import RefDB
from test_verdict_unit import _arch, _part, db, family, ident  # noqa: F401  (fixtures)


def test_a_published_release_is_named_and_registered(tmp_path, family, monkeypatch):
    """SD 1.4's SHA-256 as published (refs/known_hashes.json, six sources): the report
    names the release, and it becomes a reference for the next files."""
    import time
    sha = "fe4efff1e174c627256e44ec2991ba279b3816e364b49f9be2abc0b3ff3f8556"
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "none")
    fp = make_fp(family["Base"])
    monkeypatch.setattr(time, "perf_counter", lambda: 102.1234567)
    t0 = 100.0                                                # as if the work had taken 2.1234567 s
    rep, registered = file_report("/m/sd-v1-4.ckpt", sha, "abc123", "computed", fp, _arch(fp),
                                  {"modelspec.title": "T", "x": "y"}, {"format": "ckpt"}, d, t0)
    assert set(rep) == {"path", "sha256", "autov2", "autov3", "hash", "format", "architecture", "verdict", "merge",
                        "components", "candidates", "known_release", "metadata", "stats", "error", "delta", "health"}
    assert rep["delta"] is None                               # identical to a release: nothing changed
    assert (rep["path"], rep["sha256"], rep["autov3"], rep["format"]) == ("/m/sd-v1-4.ckpt", sha, "abc123", "ckpt")
    assert rep["architecture"] == _arch(fp).to_json() and rep["metadata"] == {"modelspec": {"modelspec.title": "T"}}
    assert rep["stats"]["seconds"] == 2.1235
    assert registered and rep["autov2"] == "fe4efff1e1" and rep["hash"] == "computed"
    assert rep["known_release"] == {"family": "SD1.x", "variant": "SD 1.4 (EMA-pruned, CompVis)",
                                    "filename": "sd-v1-4.ckpt", "hf": "CompVis/stable-diffusion-v-1-4-original",
                                    "confidence": "2 sources"}
    ref = d.refs["SD 1.4 (EMA-pruned, CompVis)"]
    assert (ref.family, ref.sha256) == ("sd1", sha)
    assert all(e["relation"] == "identical" for e in rep["components"].values())
    assert rep["verdict"]["summary"] == ("Identical to the official SD 1.4 (EMA-pruned, CompVis) release "
                                         "(sd-v1-4.ckpt) (published SHA-256).")
    assert (rep["verdict"]["relation"], rep["verdict"]["confidence"]) == ("identical", 1.0)
    assert "SD 1.4 (EMA-pruned, CompVis)" in d.refs and rep["error"] is None
    rep, registered = file_report("/m/x.safetensors", None, None, "not computed", fp, _arch(fp), {"a": "b"},
                                  {"format": "safetensors"}, d, 0.0)
    assert not registered and rep["sha256"] is None and rep["autov2"] is None and rep["hash"] == "not computed"
    assert "known_release" not in rep and rep["stats"]["format"] == "safetensors"
    assert rep["stats"]["fingerprint_bytes"] == len(fp.raw)


def test_nothing_comparable_and_unplaceable_sentences(family, db, tmp_path):
    other = {k.replace("unet:", "unet:other_"): v for k, v in family["Child"].items()}
    v = ident(other, db)["verdict"]
    assert v["summary"] == ("None of this SD1.x model's weights can be compared with a registered reference (no "
                            "weights that can be compared with any reference (none shared, or not finite)).")
    # related only to a reference whose declared parent is not registered, and far from it
    d = RefDB(tmp_path / "o", builtin_dir=tmp_path / "none")
    d.add(make_fp(family["Child"]), "Orphan", parent="Unregistered", family="sd1")
    far = {**family["Child"], **finetune(_part(family["Child"], "unet"), 0.6, 45, family["shared"])}
    v = ident(far, d)["verdict"]
    assert v["summary"].startswith("This SD1.x model is related to a registered reference but not placeable: "
                                   "related to Orphan (cos ")
    assert v["summary"].endswith("Orphan's parent is not registered, so a sibling cannot be told from a descendant.")


def test_the_oldest_carrier_whatever_the_registration_order(tmp_path, family):
    """Child registered before its parent Base (and no Sibling): the VAE both carry is Base's."""
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "none")
    d.add(make_fp(family["Child"]), "Child", parent="Base", family="sd1")
    d.add(make_fp(family["Base"]), "Base", family="sd1")
    c = ident(family["Child"], d)["components"]
    assert (c["vae"]["ref"], c["vae"]["also_in"]) == ("Base", ["Child"])
    assert (c["unet"]["ref"], "also_in" in c["unet"]) == ("Child", False)


def test_candidates_are_the_eight_closest(tmp_path, family):
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "none")
    d.add(make_fp(family["Base"]), "Base", family="sd1")
    for i in range(9):
        d.add(make_fp({**family["Base"], **finetune(_part(family["Base"], "unet"), 0.2 + 0.05 * i, 60 + i,
                                                    family["shared"])}), f"T{i}", parent="Base", family="sd1")
    rep = ident(family["Base"], d)
    assert [c["ref"] for c in rep["candidates"]] == ["Base"] + [f"T{i}" for i in range(7)]


def test_a_merge_of_grandchildren_names_the_whole_common_ancestry(tmp_path, family):
    sh = family["shared"]
    g1 = {**family["Child"], **finetune(_part(family["Child"], "unet"), 0.3, 71, sh)}
    g2 = {**family["Child"], **finetune(_part(family["Child"], "unet"), 0.3, 72, sh)}
    d = RefDB(tmp_path / "r", builtin_dir=tmp_path / "none")
    d.add(make_fp(family["Base"]), "Base", family="sd1")
    d.add(make_fp(family["Child"]), "Child", parent="Base", family="sd1")
    d.add(make_fp(g1), "G1", parent="Child", family="sd1")
    d.add(make_fp(g2), "G2", parent="Child", family="sd1")
    v = ident({k: 0.5 * g1[k] + 0.5 * g2[k] for k in g1}, d)["verdict"]
    assert (v["relation"], v["base"], v["lineage"]) == ("merge", "Child", ["Base", "Child"])
    assert v["summary"].endswith("(common ancestry: Base → Child).")


def test_text_encoder_sentences_of_one_base(tmp_path, family):
    """The UNet is Base's and the text encoder a fine-tune of Base's: 'fine-tuned from it'; two
    text encoders fine-tuned from two references: both named."""
    sd = {**family["Base"], **finetune(_part(family["Base"], "clip_l"), 0.3, 81, family["shared"])}
    v = ident(sd, db := _db3(tmp_path, family))["verdict"]
    assert v["summary"] == "UNet the same weights as Base; text encoder fine-tuned from it."
    base = {**family["Base"], **weights(7, n=3, prefix="clip_g:transformer.resblocks", shape=(32, 32))}
    xl2 = {**base, **finetune(_part(base, "clip_g"), 0.3, 82)}
    d = RefDB(tmp_path / "xl", builtin_dir=tmp_path / "none")
    d.add(make_fp(base), "XL", family="sdxl")
    d.add(make_fp(xl2), "XL2", parent="XL", family="sdxl")
    sd = {**base, **finetune(_part(base, "clip_l"), 0.3, 83, family["shared"]),
          **finetune(_part(xl2, "clip_g"), 0.02, 84)}
    v = ident(sd, d, family="sdxl", rule="sdxl")["verdict"]
    assert v["summary"] == "UNet the same weights as XL; text encoders fine-tuned from XL and XL2."


def _db3(tmp_path, family):
    d = RefDB(tmp_path / "b3", builtin_dir=tmp_path / "none")
    d.add(make_fp(family["Base"]), "Base", family="sd1")
    return d


def test_partial_files_are_judged_by_their_bulk(tmp_path, family):
    """Text encoder and VAE only (no UNet): the larger one decides, and it may be a merge."""
    sh = family["shared"]
    te_a = finetune(_part(family["Base"], "clip_l"), 0.3, 91, sh)
    te_b = finetune(_part(family["Base"], "clip_l"), 0.3, 92, sh)
    d = RefDB(tmp_path / "p", builtin_dir=tmp_path / "none")
    d.add(make_fp(family["Base"]), "Base", family="sd1")
    d.add(make_fp({**family["Base"], **te_a}), "TA", parent="Base", family="sd1")
    d.add(make_fp({**family["Base"], **te_b}), "TB", parent="Base", family="sd1")
    sd = {**{k: 0.5 * te_a[k] + 0.5 * te_b[k] for k in te_a}, **_part(family["Base"], "vae")}
    rep = ident(sd, d)
    assert list(rep["components"]) == ["clip_l", "vae"]
    assert rep["verdict"]["relation"] == "merge" and {m["ref"] for m in rep["merge"]} == {"TA", "TB"}
    # a VAE-only file that is a merge of two VAEs: the sentence says what the VAE is
    va = finetune(_part(family["Base"], "vae"), 0.3, 93, sh)
    vb = finetune(_part(family["Base"], "vae"), 0.3, 94, sh)
    d2 = RefDB(tmp_path / "v", builtin_dir=tmp_path / "none")
    d2.add(make_fp(family["Base"]), "Base", family="sd1")
    d2.add(make_fp({**family["Base"], **va}), "VA", parent="Base", family="sd1")
    d2.add(make_fp({**family["Base"], **vb}), "VB", parent="Base", family="sd1")
    v = ident({k: 0.5 * va[k] + 0.5 * vb[k] for k in va}, d2)["verdict"]
    assert v["relation"] == "merge" and v["differs"] == ["vae"]
    assert v["summary"].endswith(f" Its baked-in VAE differs from {v['base']}'s (merge).")


def test_same_layout_needs_half_of_the_keys(tmp_path, family):
    """A file no rule knows is compared with references holding at least half of its keys with
    the same shapes: 5 of 10 is enough, 4 of 10 is not."""
    unet = {f"unet:input_blocks.{i}.0.weight": v for i, v in enumerate(weights(5, n=10).values()) if v.ndim == 2}
    assert len(unet) == 10
    keys = sorted(unet)
    d = RefDB(tmp_path / "l", builtin_dir=tmp_path / "none")
    d.add(make_fp({k: unet[k] for k in keys[:5]}), "Half", family="sd1")
    d.add(make_fp({k: unet[k] for k in keys[:4]}), "Less", family="sd1")
    rep = ident(unet, d, family="unknown", rule=None)
    assert [c["ref"] for c in rep["candidates"]] == ["Half"]


def test_a_known_release_is_identical_even_when_it_cannot_be_registered(tmp_path, family, monkeypatch):
    """A read-only reference folder: the release is not registered, the report still says identical."""
    sha = "fe4efff1e174c627256e44ec2991ba279b3816e364b49f9be2abc0b3ff3f8556"
    d = _db3(tmp_path, family)

    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(d, "add", refuse)
    fp = make_fp({**family["Base"], **finetune(_part(family["Base"], "unet"), 0.05, 95, family["shared"])})
    rep, _ = file_report("/m/sd-v1-4.ckpt", sha, None, "computed", fp, _arch(fp), {}, {"format": "ckpt"}, d, 0.0)
    assert (rep["verdict"]["relation"], rep["verdict"]["confidence"]) == ("identical", 1.0)
    assert rep["components"]["unet"]["relation"] == "derivative"       # what the weights alone said


def test_a_registered_references_hash_makes_a_file_identical(tmp_path, family, db):
    fp = make_fp(family["Base"])
    rep, registered = file_report("/m/base.safetensors", "b" * 64, None, "host", fp, _arch(fp), {},
                                  {"format": "safetensors"}, db, 0.0)
    assert not registered and rep["hash"] == "host" and rep["verdict"]["relation"] == "identical"
